#!/usr/bin/env bash
# Set up a Python 3.12 virtual environment in .venv, install the plugin with its test extra, check the code
# style (ruff format + ruff check, configured in pyproject.toml), run the tests.
# Offline by design: HF_HUB_OFFLINE=1 makes any forgotten Hub access fail at once.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
  if python3.12 -c 'import sys' >/dev/null 2>&1; then echo python3.12; return; fi
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "Python 3.12 is required (LeRobot 0.6.1). Install it, or set PYTHON=/path/to/python3.12." >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  "$(find_python)" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/ruff format --check .
.venv/bin/ruff check .
HF_HUB_OFFLINE=1 .venv/bin/python -m pytest "$@"
