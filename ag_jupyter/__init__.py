"""ag_jupyter: build, run and watch agent runs from a Jupyter notebook.

``%load_ext ag_jupyter`` in a notebook; from a script, use the runtime directly::

    from ag_jupyter import graph_fn, open_session
"""

from __future__ import annotations

from typing import Any

from .runtime import build_adhoc_context, get_run_manager, graph_fn, open_session

__version__ = "0.1.0"
__all__ = [
    "__version__",
    "build_adhoc_context",
    "get_run_manager",
    "graph_fn",
    "load_ipython_extension",
    "open_session",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """Entry point of ``%load_ext ag_jupyter`` (see ``ag_jupyter.ipython.extension``)."""
    from .ipython.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Entry point of ``%unload_ext ag_jupyter``."""
    from .ipython.extension import unload_ipython_extension as unload

    unload(ipython)
