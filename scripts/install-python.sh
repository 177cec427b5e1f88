#!/usr/bin/env bash
# Create the virtualenv and install jobq with every extra. Prefers uv (seconds), falls back to pip.
set -euo pipefail
venv=${1:-.venv}
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install -q uv >/dev/null 2>&1 || true
fi
if command -v uv >/dev/null 2>&1; then
  [ -x "$venv/bin/python" ] || uv venv -q "$venv"
  VIRTUAL_ENV="$PWD/$venv" uv pip install -q -e '.[postgres,web,demo,dev]'
else
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q -e '.[postgres,web,demo,dev]'
fi
