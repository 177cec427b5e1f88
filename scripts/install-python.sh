#!/usr/bin/env bash
# Create the virtualenv and install jobq with every extra. Prefers uv (seconds), falls back to pip.
set -euo pipefail
venv=${1:-.venv}
# Extras beyond the defaults, e.g. "bench" (the peer queues the benchmark compares with).
extras="postgres,web,demo,dev${2:+,$2}"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q uv >/dev/null 2>&1 || true
fi
if command -v uv >/dev/null 2>&1; then
  [ -x "$venv/bin/python" ] || uv venv -q "$venv"
  VIRTUAL_ENV="$PWD/$venv" uv pip install -q -e ".[$extras]"
else
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q -e ".[$extras]"
fi
