"""ag_jupyter: build, run and watch agent runs from a Jupyter notebook.

``%load_ext ag_jupyter`` in a notebook; from a script, use the runtime directly::

    from ag_jupyter import graph_fn, open_session

AetherGraph code imports from here what it imports from ``aethergraph`` (``graph_fn``,
``tool``, ``Service``, ``NodeContext``, ...), from ``ag_jupyter.runtime`` what it imports
from ``aethergraph.runtime`` and from ``ag_jupyter.runner`` ``run`` / ``run_async``.
``graphify``, ``TaskGraph`` and the sidecar server (``start_server``...) import, and raise
``NotImplementedError`` saying what to use instead.
"""

from __future__ import annotations

from typing import Any

from .runtime import (
    Button,
    NodeContext,
    Service,
    build_adhoc_context,
    get_run_manager,
    graph_fn,
    open_session,
    run,
    run_async,
    tool,
)
from .runtime.placeholders import (
    TaskGraph,
    graphify,
    start_server,
    start_server_async,
    stop_server,
)

__version__ = "0.1.0"
__all__ = [
    "Button",
    "NodeContext",
    "Service",
    "TaskGraph",
    "__version__",
    "build_adhoc_context",
    "get_run_manager",
    "graph_fn",
    "graphify",
    "load_ipython_extension",
    "open_session",
    "run",
    "run_async",
    "start_server",
    "start_server_async",
    "stop_server",
    "tool",
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
