#!/usr/bin/env bash
# Create the virtualenv: jobq (editable) with every extra (postgres, web) and the development
# dependency groups (dev, demo; a second argument adds one more, e.g. "bench").
# With uv (installed here if missing): exactly the versions pinned in uv.lock, the ones CI tested;
# `--locked` refuses a uv.lock that no longer matches pyproject.toml (run `uv lock` after changing
# dependencies). Without uv: pip resolves the ranges in pyproject.toml (newest allowed versions).
# Both write the bytecode of every installed module, and compileall that of jobq's own source
# (an editable install): where PYTHONDONTWRITEBYTECODE is set (as on our development machines)
# nothing else writes it, and each process compiled its imports from source again: 1.6 s for
# `import streamlit` against 0.5 s, 0.6 s for `jobq --help` against 0.3 s. A source edited later
# is compiled in memory again (its .pyc no longer matches its time and size), as without any .pyc.
set -euo pipefail
venv=${1:-.venv}
groups=(dev demo ${2:+"$2"})
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q uv >/dev/null 2>&1 || true
fi
if command -v uv >/dev/null 2>&1; then
  [ -x "$venv/bin/python" ] || uv venv -q "$venv"  # the Python on PATH, as before the lock file
  # --inexact: keep what is installed beyond these groups (e.g. bench's peers after `make bench`).
  UV_PROJECT_ENVIRONMENT="$venv" uv sync -q --locked --inexact --compile-bytecode --all-extras "${groups[@]/#/--group=}"
else
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q "pip>=25.1"  # dependency groups (--group) need pip 25.1
  "$venv/bin/pip" install -q -e ".[postgres,web]" "${groups[@]/#/--group=}"
fi
"$venv/bin/python" -m compileall -q src >/dev/null
