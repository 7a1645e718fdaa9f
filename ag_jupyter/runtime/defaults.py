"""The composition root: how the runtime's parts are put together by default.

Everything else in ``runtime/`` takes its collaborators as arguments; this module decides
which ones a plain ``get_run_manager()`` or ``open_workspace()`` gets:

- the schema components a workspace database holds (:data:`SCHEMA_COMPONENTS`; later
  features add theirs here);
- the workspace folder (``$AG_WORKSPACE`` or ``./.ag_workspace``), opened once per
  process and shared by the managers of successive event loops;
- the store, log sink and services a RunManager on a workspace uses;
- one RunManager per running event loop (:func:`get_run_manager`), built by a factory
  the IPython extension may replace (:func:`set_run_manager_factory`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

from .errors import WorkspaceError
from .executors import set_dask_executor_factory
from .executors.dask import DaskExecutor
from .run_manager import DEFAULT_MAX_CONCURRENCY, RunManager
from .services import ServiceHub
from .services.artifacts import ARTIFACTS_SCHEMA, ArtifactService
from .services.kv import KV_SCHEMA, KVService
from .services.mcp import close_all_mcp_clients
from .services.memory import MEMORY_SCHEMA, MemoryService
from .services.rag import RAG_SCHEMA, KBProvider, RagProvider
from .store.owners import OWNERS_SCHEMA
from .store.run_logs import LOGS_SCHEMA, WorkspaceRunLogs
from .store.schema import SchemaComponent
from .store.sqlite_store import RUNS_SCHEMA, SqliteRunStore
from .store.steps import STEPS_SCHEMA, WorkspaceSteps
from .store.transcripts import TRANSCRIPTS_SCHEMA
from .store.workspace import Workspace

#: What a workspace database holds, in the order components are migrated and recovered
#: (owners before runs and transcripts: their recovery needs the live owners).
SCHEMA_COMPONENTS: tuple[SchemaComponent, ...] = (
    OWNERS_SCHEMA,
    RUNS_SCHEMA,
    LOGS_SCHEMA,
    STEPS_SCHEMA,
    TRANSCRIPTS_SCHEMA,
    KV_SCHEMA,
    MEMORY_SCHEMA,
    ARTIFACTS_SCHEMA,
    RAG_SCHEMA,
)

MEMORY_WORKSPACE = "memory"

# A loop's manager builds its Dask executor on its first Dask run (distributed is imported
# then, not here); the executor registers its own closing with the manager (on_close).
set_dask_executor_factory(DaskExecutor)


# ------------------------------------------------------------------------- workspaces
def open_workspace(path: str | os.PathLike[str] | None = None, **options: Any) -> Workspace:
    """Open (creating if needed) the workspace at ``path`` with every schema component
    (see :class:`~ag_jupyter.runtime.store.workspace.Workspace` for ``options``).

    Each call opens a new :class:`Workspace`; close it with ``close()``/``aclose()``.

    Raises:
      WorkspaceCorruptError: if its database is damaged (left untouched).
      WorkspaceError: if the folder cannot be used (the message names it).
    """
    return Workspace(path, components=SCHEMA_COMPONENTS, **options)


_default_lock = threading.Lock()
_default_workspace: Workspace | None = None
_default_parts: dict[str, Any] | None = None


def default_workspace() -> Workspace:
    """The process-wide workspace at ``$AG_WORKSPACE`` or ``./.ag_workspace``.

    Opened on first use and shared by every later caller (managers of later event loops
    too); reopened if it was closed. Closed at interpreter exit.

    Raises:
      WorkspaceError: if the folder cannot be used.
    """
    global _default_workspace, _default_parts
    with _default_lock:
        if _default_workspace is None or _default_workspace.closed:
            _default_workspace = open_workspace()
            _default_parts = None
        return _default_workspace


def close_default_workspace() -> None:
    """Close the process-wide workspace if it is open (the next use reopens it)."""
    global _default_workspace, _default_parts
    with _default_lock:
        opened, _default_workspace, _default_parts = _default_workspace, None, None
    if opened is not None and not opened.closed:
        opened.close()


def install_workspace_services(hub: ServiceHub, workspace: Workspace) -> None:
    """Install the kv, memory, artifacts, rag and kb services of ``workspace`` as embedded
    defaults on ``hub``."""
    hub.set_default("kv", KVService(workspace))
    hub.set_default("memory", MemoryService(workspace))
    hub.set_default("artifacts", ArtifactService(workspace))
    hub.set_default("rag", RagProvider(workspace))
    hub.set_default("kb", KBProvider(workspace))


def _hub_for(workspace: Workspace, log_sink: Any, step_sink: Any) -> ServiceHub:
    hub = ServiceHub(log_sink=log_sink, step_sink=step_sink)
    install_workspace_services(hub, workspace)
    return hub


def workspace_runtime(
    path: str | os.PathLike[str] | None = None, *, workspace: Workspace | None = None
) -> dict[str, Any]:
    """What a RunManager needs to run on a workspace: ``RunManager(**workspace_runtime())``.

    Returns ``{"store": SqliteRunStore, "services": ServiceHub}``; the hub has the
    workspace's ``kv``, ``memory`` and ``artifacts`` services installed as defaults and
    keeps ``logger()`` lines and runs' steps in the workspace.

    Args:
      path: open a new workspace there (None: ``$AG_WORKSPACE`` or ``./.ag_workspace``);
        the store owns it, so closing the manager (``manager.close()``) closes it.
      workspace: use this open workspace instead (the caller keeps owning it).

    Raises:
      WorkspaceError: if the folder cannot be used.
      TypeError: if both ``path`` and ``workspace`` are given.
    """
    if path is not None and workspace is not None:
        raise TypeError("pass either path or workspace to workspace_runtime(), not both")
    owns = workspace is None
    ws = workspace if workspace is not None else open_workspace(path)
    store = SqliteRunStore(ws, owns_workspace=owns)
    hub = _hub_for(ws, WorkspaceRunLogs(ws), WorkspaceSteps(ws))
    return {"store": store, "services": hub}


def default_runtime() -> dict[str, Any]:
    """Like :func:`workspace_runtime` on the process-wide :func:`default_workspace`.

    Every call returns the same shared store and log sink (so they cover runs of earlier
    event loops too) and a new service hub. Closing a manager built on it only flushes the
    store.

    Raises:
      WorkspaceError: if the folder cannot be used.
    """
    global _default_parts
    ws = default_workspace()
    with _default_lock:
        if _default_parts is None or _default_parts["store"].workspace is not ws:
            _default_parts = {
                "store": SqliteRunStore(ws, owns_workspace=False),
                "logs": WorkspaceRunLogs(ws),
                "steps": WorkspaceSteps(ws),
            }
        parts = _default_parts
    hub = _hub_for(ws, parts["logs"], parts["steps"])
    return {"store": parts["store"], "services": hub}


def open_workspace_manager(
    workspace: str | os.PathLike[str] | None = None,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> RunManager:
    """A RunManager on a durable workspace folder.

    ``workspace`` None means the process's default workspace (``$AG_WORKSPACE`` or
    ``./.ag_workspace``), opened on first use and shared by the managers of later loops; a
    path opens that folder (the manager owns it). If the folder cannot be used, a
    ``RuntimeWarning`` says why and the manager keeps its runs in memory.

    Raises:
      ValueError: if ``max_concurrency`` is not a positive int.
    """
    RunManager.check_concurrency(max_concurrency)
    try:
        runtime = default_runtime() if workspace is None else workspace_runtime(workspace)
    except WorkspaceError as exc:
        warnings.warn(
            f"{exc} Runs of this process are kept in memory only.", RuntimeWarning, stacklevel=3
        )
        return RunManager(max_concurrency=max_concurrency)
    return RunManager(max_concurrency=max_concurrency, **runtime)


def build_manager(
    *, workspace: str = "", max_concurrency: int = DEFAULT_MAX_CONCURRENCY
) -> RunManager:
    """A RunManager from plain settings (what the IPython extension's ``AgJupyter``
    holds): ``workspace`` ``'memory'`` keeps runs in memory; ``''`` uses the default
    workspace; otherwise that folder.

    Raises:
      ValueError: if ``max_concurrency`` is not a positive int.
    """
    if workspace == MEMORY_WORKSPACE:
        return RunManager(max_concurrency=max_concurrency)
    return open_workspace_manager(workspace or None, max_concurrency=max_concurrency)


# ------------------------------------------------------------------- one per loop
_managers: dict[asyncio.AbstractEventLoop, RunManager] = {}
_managers_lock = threading.Lock()
_manager_factory: Callable[[], RunManager] | None = None


def set_run_manager_factory(factory: Callable[[], RunManager] | None) -> None:
    """Choose how :func:`get_run_manager` builds a loop's manager (None: the default,
    :func:`open_workspace_manager` on the default workspace).

    The IPython extension uses this to apply its configuration (concurrency, workspace).
    """
    global _manager_factory
    _manager_factory = factory


def get_run_manager(*, create: bool = True) -> RunManager:
    """The RunManager of the running event loop, created on first use.

    One manager per loop: in a kernel that is the kernel's loop, so runs keep going between
    cells; in a script, each ``asyncio.run(...)`` gets its own. Unless a factory was set
    with :func:`set_run_manager_factory`, managers keep their runs in the default durable
    workspace (``$AG_WORKSPACE`` or ``./.ag_workspace``), opened once per process.

    Raises:
      RuntimeError: if no event loop is running (call it from async code, or ``await`` in
        a notebook cell), or if ``create`` is False and there is no manager yet.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "get_run_manager() needs a running asyncio event loop: call it from async code "
            "(an `async def`, or a notebook cell using `await`)"
        ) from None
    with _managers_lock:
        manager = _managers.get(loop)
        if manager is None or manager.closed:
            if not create:
                raise RuntimeError("no RunManager exists for this event loop yet")
            for old_loop in [lp for lp in _managers if lp.is_closed()]:
                del _managers[old_loop]
            manager = (
                _manager_factory() if _manager_factory is not None else open_workspace_manager()
            )
            manager.bind(loop)
            # The loop's manager owns the process's MCP servers: closed with it.
            manager.on_close(close_all_mcp_clients)
            _managers[loop] = manager
        return manager


def current_run_managers() -> list[RunManager]:
    """Every manager created by :func:`get_run_manager` whose loop is still open."""
    with _managers_lock:
        return [m for loop, m in _managers.items() if not loop.is_closed()]
