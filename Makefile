# jobq: `make demo` runs the seed's system, `make test` runs every test. Both install what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install system-deps demo stop clean-data test test-fast check fmt bench soak

$(STAMP): pyproject.toml uv.lock scripts/install-python.sh
	@bash scripts/install-python.sh $(VENV)
	@touch $@

install: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

demo: install system-deps
	@bash scripts/demo.sh

stop:
	@bash scripts/stop.sh

clean-data: stop
	rm -rf data/queue.db data/queue.db-wal data/queue.db-shm data/files
	umask 077 && mkdir -p data/files

# Two processes (pytest-xdist), a test file each at a time: a file's tests share its fixtures and
# run in order, as alone. Files are handed out as collected (tests/conftest.py puts the slowest
# first), not by their number of tests. TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 2
test: install system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Unit and contract tests on SQLite only: seconds, for the edit-run loop.
test-fast: install
	$(PY) -m pytest tests/unit tests/contract -k "not postgres" $(PYTEST_ARGS)

check: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

fmt: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

$(VENV)/.bench-stamp: pyproject.toml uv.lock $(STAMP)
	@bash scripts/install-python.sh $(VENV) bench
	@touch $@

bench: install system-deps $(VENV)/.bench-stamp
	$(PY) -m bench $(if $(QUICK),--quick,)

# The long reliability runs (minutes); rewrites the results table of docs/reliability.md, also when a test fails.
soak: install system-deps
	JOBQ_SOAK=1 $(PY) -m pytest tests/reliability -s -o timeout=1800 $(PYTEST_ARGS); status=$$?; \
	$(PY) tests/reliability/report.py; exit $$status
