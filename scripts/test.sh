#!/usr/bin/env bash
# Set up .venv (if needed) with the test extras, then run ruff, the JS unit tests and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/ruff check .
if command -v node >/dev/null 2>&1; then
  (cd js && node --test)
fi
exec .venv/bin/python -m pytest "$@"
