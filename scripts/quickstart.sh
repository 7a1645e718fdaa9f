#!/usr/bin/env bash
# Set up .venv with JupyterLab, then open the quick-start notebook in JupyterLab,
# or with --headless run it in a real kernel and print what each cell printed.
# As root, JupyterLab gets --allow-root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[lab]'
if [ "${1:-}" = "--headless" ]; then
  exec .venv/bin/python scripts/run_notebook.py notebooks/quickstart.ipynb
fi
# Jupyter refuses to start as root ("Running as root is not recommended") unless told to;
# containers and CI machines run as root.
root_flag=()
if [ "$(id -u)" = "0" ]; then
  root_flag=(--allow-root)
fi
exec .venv/bin/jupyter lab ${root_flag[@]+"${root_flag[@]}"} notebooks/quickstart.ipynb "$@"
