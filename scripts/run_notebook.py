"""Run a notebook headless in a real kernel (nbclient) and print each cell's text output.

Usage: python scripts/run_notebook.py NOTEBOOK.ipynb [--save OUT.ipynb]
Exit status 1 if a cell raised.
"""

from __future__ import annotations

import argparse
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook")
    parser.add_argument("--save", help="write the executed notebook here")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per cell")
    args = parser.parse_args()
    nb = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3")
    failed = False
    try:
        client.execute()
    except CellExecutionError as exc:
        failed = True
        print(exc, file=sys.stderr)
    for index, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        print(f"--- [{index + 1}] {cell.source.splitlines()[0] if cell.source else ''}")
        for out in cell.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            if out.get("output_type") == "error":
                text = f"{out['ename']}: {out['evalue']}"
            if text:
                print(text.rstrip())
    if args.save:
        nbformat.write(nb, args.save)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
