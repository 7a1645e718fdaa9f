"""Where graph bodies execute: ``local`` (this process: async bodies on the loop, sync
ones in threads) or ``dask`` (a Dask cluster). The kernel's RunManager keeps every run
whichever executor runs its body.

Choosing, per run at submit (first found wins):

1. ``submit_run(..., meta={"executor": "dask"})`` (an explicit per-run choice);
2. the graph's own ``@graph_fn(..., executor="dask")``;
3. its session's ``open_session(executor="dask")`` (runs submitted under that session id
   while the session is open);
4. the process default: :func:`set_default_executor` (``%config AgJupyter.executor``),
   else ``$AG_EXECUTOR``, else ``"local"``.

Where Dask runs go: :func:`configure_dask` / :func:`set_dask_address` (a scheduler
address; ``%config AgJupyter.dask_address``) or :func:`set_dask_client` (an existing
``distributed.Client``'s scheduler); with neither, a ``LocalCluster`` with one worker
process per core, started on the first Dask run and closed with the loop's manager
(``%unload_ext`` closes it once its runs end; an interpreter exit closes it too).
``distributed`` is imported on the first Dask run only.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .base import Executor
from .local import LOCAL_EXECUTOR, LocalExecutor
from .names import EXECUTOR_NAMES, INSTALL_HINT, check_executor, dask_installed

__all__ = [
    "EXECUTOR_NAMES",
    "INSTALL_HINT",
    "LOCAL_EXECUTOR",
    "DaskSettings",
    "Executor",
    "LocalExecutor",
    "check_executor",
    "choose_executor",
    "close_dask_executors",
    "configure_dask",
    "dask_executor_for",
    "dask_installed",
    "dask_settings",
    "default_executor",
    "set_dask_address",
    "set_dask_client",
    "set_dask_executor_factory",
    "set_default_executor",
    "use_session_executor",
]

#: Environment variable read when :func:`set_default_executor` was never called.
EXECUTOR_ENV = "AG_EXECUTOR"

_lock = threading.Lock()
_default: str | None = None
_dask_address: str | None = None
_dask_client: Any = None
_cluster_options: dict[str, Any] = {}
_sessions: dict[str, list[str]] = {}
_dask_executors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: Builds a manager's Dask executor: ``factory(manager, settings_getter)``. Installed by the
#: composition root (``defaults.py``: ``executors/dask.py`` sits above the manager, which
#: imports this package, so this package never imports it).
_dask_factory: Callable[[Any, Callable[[], DaskSettings]], Any] | None = None


@dataclass(frozen=True)
class DaskSettings:
    """Where Dask runs go (see :func:`configure_dask`).

    Attributes:
      address: a scheduler address (``tcp://host:8786``), or None.
      client: a ``distributed.Client`` whose scheduler to use, or None.
      cluster_options: keyword arguments for the ``LocalCluster`` started when neither
        is given (defaults: one single-threaded worker process per core, processes=True).
    """

    address: str | None = None
    client: Any = None
    cluster_options: tuple[tuple[str, Any], ...] = ()

    def key(self) -> tuple[Any, ...]:
        """What identifies a connection: settings with the same key share one."""
        return (self.address, id(self.client) if self.client is not None else None,
                self.cluster_options)


def set_dask_executor_factory(
    factory: Callable[[Any, Callable[[], DaskSettings]], Any] | None,
) -> None:
    """Install what builds a manager's Dask executor (``defaults.py`` installs
    ``DaskExecutor``)."""
    global _dask_factory
    _dask_factory = factory


def set_default_executor(name: str | None) -> None:
    """Set the executor of runs that choose none (``%config AgJupyter.executor``); None
    goes back to ``$AG_EXECUTOR``, else ``"local"``. Applies to runs submitted after.

    Raises:
      ValueError, ExecutorNotAvailableError: see :func:`check_executor`.
    """
    global _default
    checked = check_executor(name, where="the default executor")
    with _lock:
        _default = checked


def default_executor() -> str:
    """The executor of runs that choose none (see :func:`set_default_executor`)."""
    with _lock:
        if _default is not None:
            return _default
    env = os.environ.get(EXECUTOR_ENV, "").strip()
    return env if env in EXECUTOR_NAMES else "local"


def configure_dask(
    *,
    address: str | None = None,
    client: Any = None,
    cluster_options: Mapping[str, Any] | None = None,
) -> None:
    """Say where Dask runs go (for runs submitted from now on; live ones stay where they
    are, and a connection left behind closes once its runs end).

    Args:
      address: a scheduler address, e.g. ``"tcp://scheduler:8786"`` (dask-jobqueue's
        ``cluster.scheduler_address``, dask-gateway's, a ``dask scheduler``'s). None or
        ``""``: none.
      client: an existing ``distributed.Client``: its scheduler is used (the kernel opens
        its own asynchronous client to it, with the client's ``security``). Wins over
        ``address``.
      cluster_options: keyword arguments for the ``LocalCluster`` started when neither is
        given (e.g. ``{"n_workers": 2, "memory_limit": "2GiB"}``).

    Raises:
      TypeError: for an address that is not a str, or options that are not a dict.
    """
    global _dask_address, _dask_client, _cluster_options
    if address is not None and not isinstance(address, str):
        raise TypeError(f"the Dask address must be a str like 'tcp://host:8786', got {address!r}")
    if cluster_options is not None and not isinstance(cluster_options, Mapping):
        raise TypeError(f"cluster_options must be a dict, got {type(cluster_options).__name__}")
    with _lock:
        _dask_address = (address or "").strip() or None
        _dask_client = client
        if cluster_options is not None:
            _cluster_options = dict(cluster_options)


def set_dask_address(address: str | None) -> None:
    """Send Dask runs to the scheduler at ``address`` (None / ``""``: a LocalCluster of
    this process's own); see :func:`configure_dask`."""
    with _lock:
        client, options = _dask_client, dict(_cluster_options)
    del client
    configure_dask(address=address, client=None, cluster_options=options)


def set_dask_client(client: Any) -> None:
    """Send Dask runs to ``client``'s scheduler (a ``distributed.Client``; None: back to
    the address or a LocalCluster); see :func:`configure_dask`."""
    with _lock:
        address, options = _dask_address, dict(_cluster_options)
    configure_dask(address=address, client=client, cluster_options=options)


def dask_settings() -> DaskSettings:
    """The Dask settings in effect now."""
    with _lock:
        return DaskSettings(
            address=_dask_address,
            client=_dask_client,
            cluster_options=tuple(sorted(_cluster_options.items())),
        )


def use_session_executor(session_id: str, name: str) -> Callable[[], None]:
    """Make ``name`` the executor of ``session_id``'s runs (submitted from now on) until
    the returned function is called (``open_session(executor=...)`` does both).

    Raises:
      ValueError, ExecutorNotAvailableError: see :func:`check_executor`.
    """
    checked = check_executor(name, where="open_session(executor=...)")
    assert checked is not None
    with _lock:
        _sessions.setdefault(session_id, []).append(checked)
    released = False

    def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        with _lock:
            stack = _sessions.get(session_id)
            if stack:
                stack.remove(checked)
                if not stack:
                    del _sessions[session_id]

    return release


def session_executor(session_id: str | None) -> str | None:
    """The executor chosen by an open session for ``session_id``, or None."""
    if session_id is None:
        return None
    with _lock:
        stack = _sessions.get(session_id)
        return stack[-1] if stack else None


def choose_executor(
    manager: Any,
    spec: Any,
    session_id: str | None,
    meta: Mapping[str, Any] | None,
) -> Executor:
    """The executor of a run being submitted (see the module docs for the order).

    Raises:
      ValueError, ExecutorNotAvailableError: for a bad explicit ``meta["executor"]``.
    """
    name = check_executor((meta or {}).get("executor"), where='meta["executor"]')
    name = name or getattr(spec, "executor", None) or session_executor(session_id)
    name = name or default_executor()
    if name == "local":
        return LOCAL_EXECUTOR
    return dask_executor_for(manager)


def dask_executor_for(manager: Any, *, create: bool = True) -> Any:
    """The Dask executor (``executors.dask.DaskExecutor``) of ``manager``, a RunManager:
    created on first use, connected on its first run, closed with the manager; None when
    ``create`` is False and there is none.

    Raises:
      RuntimeError: if no Dask executor factory is installed (import ``ag_jupyter.runtime``).
    """
    with _lock:
        executor = _dask_executors.get(manager)
        if executor is not None and not executor.closed:
            return executor
        if not create:
            return None
        if _dask_factory is None:
            raise RuntimeError("no Dask executor factory: import ag_jupyter.runtime first")
        executor = _dask_factory(manager, dask_settings)
        _dask_executors[manager] = executor
    manager.on_close(executor.aclose)
    return executor


def close_dask_executors(*, when_idle: bool = True) -> None:
    """Close every manager's Dask executor: once its runs end (``when_idle``, what
    ``%unload_ext`` does), or now (their live Dask runs then end failed). Call it on the
    loop's thread; the closing itself happens in the background."""
    with _lock:
        executors = [e for e in _dask_executors.values() if not e.closed]
    for executor in executors:
        if when_idle:
            executor.close_when_idle()
        else:
            executor.close_soon()
