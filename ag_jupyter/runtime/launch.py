"""Running graphs the way AetherGraph code does: ``await graph(...)``, ``run_async(graph,
inputs)`` and the blocking ``run(graph, inputs)`` (``aethergraph.runner``).

Every such call is a tracked run of the loop's one RunManager (so the panel, ``%ag_cancel``
and ``list_records`` see it) that the caller waits for; the outputs dict is returned and
the body's own exception raised. From inside a run (or with an explicit ``context=``), the
run is a child of the caller's: ``parent_run_id``, the caller's session, no concurrency slot.

The blocking ``run()`` never blocks a running event loop by surprise: from a thread whose
loop is running (a notebook cell) it raises, saying to ``await run_async(...)``, unless
blocking waits were opted in (:func:`set_blocking_waits`, or ``AG_BLOCKING_WAITS``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import warnings
from collections.abc import Coroutine, Mapping
from typing import Any, Literal

from . import current
from .defaults import get_run_manager
from .errors import RunInputError
from .graphs import GraphFunction, GraphSpec, forget_exceptions_of, keep_exceptions_of
from .models import RunRecord, RunStatus

__all__ = ["blocking_waits", "run", "run_async", "set_blocking_waits", "shutdown_runner_loop"]

BlockingMode = Literal["error", "nest_asyncio2"]
#: Environment variable read when :func:`set_blocking_waits` was never called.
BLOCKING_ENV = "AG_BLOCKING_WAITS"
_BLOCKING_MODES = ("error", "nest_asyncio2")
_blocking_mode: str | None = None

#: ``run_async`` / ``run`` keyword arguments (AetherGraph's ``**rt_overrides``) that mean
#: something here; ``max_concurrency`` and ``retry`` apply to AetherGraph's TaskGraphs
#: only, and are accepted and ignored for graph functions, as 0.1.0a15 does.
RUN_OVERRIDES = (
    "run_id",
    "session_id",
    "agent_id",
    "app_id",
    "tags",
    "visibility",
    "origin",
    "importance",
    "max_concurrency",
    "retry",
)
_IGNORED_OVERRIDES = ("max_concurrency", "retry")


# ---------------------------------------------------------------- blocking waits
def set_blocking_waits(mode: BlockingMode | None) -> None:
    """Choose what the blocking ``run()`` / ``graph.sync()`` do when called from a thread
    whose event loop is running (a notebook cell): ``"error"`` (the default) raises
    a ``RuntimeError`` saying to ``await run_async(...)``; ``"nest_asyncio2"`` patches that
    loop with nest-asyncio2 (on first use only) and waits re-entrantly. None goes back to
    the ``AG_BLOCKING_WAITS`` environment variable (default ``"error"``). The IPython
    extension's ``AgJupyter.blocking_waits`` setting is meant to drive this.

    Raises:
      ValueError: for another mode.
    """
    global _blocking_mode
    if mode is not None and mode not in _BLOCKING_MODES:
        raise ValueError(f"blocking waits mode must be one of {_BLOCKING_MODES}, got {mode!r}")
    _blocking_mode = mode


def blocking_waits() -> str:
    """The current blocking-waits mode (see :func:`set_blocking_waits`)."""
    if _blocking_mode is not None:
        return _blocking_mode
    env = os.environ.get(BLOCKING_ENV, "").strip()
    return env if env in _BLOCKING_MODES else "error"


# ------------------------------------------------------------------ resolution
def _spec_of(target: Any) -> tuple[str, GraphSpec | None]:
    if isinstance(target, GraphFunction):
        return target.name, target.spec
    if isinstance(target, GraphSpec):
        return target.name, target
    if isinstance(target, str):
        return target, None
    spec = getattr(target, "__graph_spec__", None)
    if isinstance(spec, GraphSpec):
        return spec.name, spec
    raise TypeError(
        "run_async/run need a graph: a @graph_fn GraphFunction or the name of a registered "
        f"graph, got {type(target).__name__}. @graphify TaskGraphs are not supported here."
    )


def _pop_context(inputs: dict[str, Any], spec: GraphSpec | None) -> Any:
    """Pop an explicit ``context``/``ctx`` (AetherGraph's ``pop_explicit_node_context``),
    unless the graph has an input of that name."""
    names = set(spec.inputs) if spec is not None else set()
    found = [k for k in ("context", "ctx") if k in inputs and k not in names]
    if len(found) > 1:
        raise TypeError(
            "pass only one of 'context' or 'ctx' when providing an explicit NodeContext"
        )
    return inputs.pop(found[0]) if found else None


def _map_positional(spec: GraphSpec | None, name: str, args: tuple[Any, ...],
                    inputs: dict[str, Any]) -> None:
    if not args:
        return
    names = list(spec.inputs) if spec is not None else []
    if len(args) > len(names):
        raise RunInputError(
            f"graph {name!r} takes {len(names)} input(s) {names} but got {len(args)} "
            "positional arguments; pass inputs by name"
        )
    for iname, value in zip(names, args, strict=False):
        if iname in inputs:
            raise RunInputError(f"graph {name!r} got input {iname!r} both by position and by name")
        inputs[iname] = value


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(RUN_OVERRIDES))
    if unknown:
        warnings.warn(
            f"run_async/run: ignoring unknown runtime override(s) {', '.join(map(repr, unknown))}"
            f"; accepted: {', '.join(RUN_OVERRIDES)}",
            UserWarning,
            stacklevel=4,
        )
    return {
        k: v for k, v in overrides.items() if k in RUN_OVERRIDES and k not in _IGNORED_OVERRIDES
    }


# --------------------------------------------------------------------- running
async def _launch(
    name: str,
    spec: GraphSpec | None,
    inputs: dict[str, Any],
    parent: Any,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """Submit a run of ``name``, wait for it, return its outputs or raise its exception."""
    if parent is None:
        parent = current.current_context()
    manager = getattr(parent, "manager", None) or get_run_manager()
    parent_is_run = getattr(parent, "_live", None) is not None
    own_agent = spec.agent_id if spec is not None else None
    own_app = spec.app_id if spec is not None else None
    kwargs: dict[str, Any] = {
        "session_id": getattr(parent, "session_id", None),
        "agent_id": own_agent or getattr(parent, "agent_id", None),
        "app_id": own_app or getattr(parent, "app_id", None),
        "parent_run_id": getattr(parent, "run_id", None),
    }
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    record = await manager.submit_run(
        name, inputs=inputs, count_slot=not parent_is_run, **kwargs
    )
    run_id = record.run_id
    # The body cannot have started yet: submit_run returns before its task takes a step.
    raised = keep_exceptions_of(run_id)
    try:
        try:
            final, outputs = await manager.wait_run(run_id, return_outputs=True)
        except asyncio.CancelledError:
            # The caller was cancelled (an interrupt, its own run canceled): so is the run.
            manager.request_cancel(run_id, reason="caller_cancelled")
            raise
        return _outcome(final, outputs, raised)
    finally:
        forget_exceptions_of(run_id)


def _outcome(
    record: RunRecord, outputs: dict[str, Any] | None, raised: list[BaseException]
) -> dict[str, Any]:
    if record.status is RunStatus.succeeded:
        return dict(outputs or {})
    if record.status is RunStatus.canceled:
        if outputs is not None:  # it ran to completion after the request: keep its result
            return dict(outputs)
        raise asyncio.CancelledError(f"run {record.run_id} of graph {record.graph_id!r} was "
                                     f"canceled: {record.error}")
    if raised:
        raise raised[0]
    raise RuntimeError(f"run {record.run_id} of graph {record.graph_id!r} failed: {record.error}")


async def _call_graph(
    graph: GraphFunction, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """``await graph(*args, **kwargs)`` (installed as ``GraphFunction.launcher``)."""
    inputs = dict(kwargs)
    parent = _pop_context(inputs, graph.spec)
    _map_positional(graph.spec, graph.name, args, inputs)
    if "max_concurrency" in inputs and "max_concurrency" not in graph.spec.inputs:
        # The concurrency docs pass it as a call knob; graph functions ignore it (0.1.0a15).
        inputs.pop("max_concurrency")
    return await _launch(graph.name, graph.spec, inputs, parent, {})


async def run_async(
    target: GraphFunction | str,
    inputs: Mapping[str, Any] | None = None,
    identity: Any = None,
    **rt_overrides: Any,
) -> dict[str, Any]:
    """Run a graph as a tracked run and return its outputs dict (``aethergraph.runner.
    run_async``).

    Args:
      target: a ``@graph_fn`` :class:`GraphFunction`, or the name of a registered graph.
      inputs: the graph's inputs (dict). A ``"context"`` (or ``"ctx"``) entry holding a
        NodeContext makes the run a child of that context's run, as in 0.1.0a15.
      identity: AetherGraph's ``RequestIdentity`` (server requests only); ignored.
      **rt_overrides: ``run_id``, ``session_id``, ``agent_id``, ``app_id``, ``tags``,
        ``visibility``, ``origin``, ``importance``; ``max_concurrency`` and ``retry`` are
        accepted and ignored (TaskGraph knobs in 0.1.0a15). Another name gives a
        ``UserWarning`` naming the accepted ones (0.1.0a15 silently ignores names its
        container lacks).

    Inside a graph body, the run is a child of the current run (see :class:`GraphFunction`).

    Raises:
      TypeError: if ``target`` is neither a GraphFunction nor a str.
      GraphNotFoundError, RunInputError, DuplicateRunIdError: see ``RunManager.submit_run``.
      Whatever the body raised; ``asyncio.CancelledError`` if the run was canceled.
    """
    name, spec = _spec_of(target)
    given = dict(inputs or {})
    parent = _pop_context(given, spec)
    return await _launch(name, spec, given, parent, _check_overrides(rt_overrides))


def run(
    target: GraphFunction | str,
    inputs: Mapping[str, Any] | None = None,
    identity: Any = None,
    **rt_overrides: Any,
) -> dict[str, Any]:
    """Blocking form of :func:`run_async` (``aethergraph.runner.run``): run the graph and
    return its outputs dict.

    - From a script (no event loop in this thread): the run goes to a background event
      loop thread shared by every such call (as 0.1.0a15 does), so runs it spawns keep
      going between calls. Ctrl-C cancels the run and re-raises ``KeyboardInterrupt``.
    - From a sync graph body (a worker thread): the run is a child run on the body's own
      manager; the thread waits for it.
    - From a thread whose loop is running (a notebook cell): raises, since waiting there
      would stop the loop that runs the run; ``await run_async(...)`` instead. With
      blocking waits opted in (:func:`set_blocking_waits`), the loop is patched with
      nest-asyncio2 and the call waits.

    Raises:
      RuntimeError: called on a running loop's thread without blocking waits opted in.
      And as :func:`run_async`.
    """
    coro = run_async(target, inputs, identity, **rt_overrides)
    return _block_on(coro, what="run()", alternative="`await run_async(graph, inputs)`")


def _sync_graph(graph: GraphFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``graph.sync(*args, **kwargs)`` (installed as ``GraphFunction.sync_runner``)."""
    coro = _call_graph(graph, args, kwargs)
    return _block_on(coro, what=f"{graph.name}.sync()", alternative=f"`await {graph.name}(...)`")


def _block_on(coro: Coroutine[Any, Any, Any], *, what: str, alternative: str) -> Any:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        if blocking_waits() == "nest_asyncio2":
            import nest_asyncio2

            nest_asyncio2.apply(loop)
            return loop.run_until_complete(coro)
        coro.close()
        raise RuntimeError(
            f"{what} would block this thread's running event loop (a notebook cell runs "
            f"on it, and so do the runs); use {alternative} instead. To allow blocking "
            "waits from synchronous code, set %config AgJupyter.blocking_waits = "
            "'nest_asyncio2' (or ag_jupyter.runtime.set_blocking_waits('nest_asyncio2'))."
        )
    scope = current.current_scope()
    target_loop = getattr(scope.manager, "loop", None) if scope is not None else None
    if target_loop is not None and target_loop.is_running():
        # A sync body's worker thread: its manager's loop runs in another thread.
        return asyncio.run_coroutine_threadsafe(coro, target_loop).result()
    return _background_loop().submit(coro)


class _LoopThread:
    """A daemon thread running an event loop for the blocking ``run()`` from scripts."""

    def __init__(self) -> None:
        ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

        def main() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            ready.set()
            loop.run_forever()

        self.thread = threading.Thread(target=main, name="ag_jupyter-runner", daemon=True)
        self.thread.start()
        ready.wait()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            while True:
                try:
                    return future.result(timeout=0.2)  # a short wait keeps Ctrl-C working
                except concurrent.futures.TimeoutError:
                    continue
        except KeyboardInterrupt:
            future.cancel()
            raise


    def shutdown(self, timeout_s: float) -> None:
        assert self.loop is not None
        loop = self.loop

        async def close_manager() -> None:
            with contextlib.suppress(RuntimeError):
                await get_run_manager(create=False).close(timeout_s=timeout_s)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close_manager(), loop).result(timeout_s + 1)
        loop.call_soon_threadsafe(loop.stop)
        self.thread.join(timeout_s)
        if not self.thread.is_alive():
            loop.close()


_loop_thread: _LoopThread | None = None
_loop_lock = threading.Lock()


def shutdown_runner_loop(timeout_s: float = 5.0) -> None:
    """Stop the background loop the blocking ``run()`` uses from scripts (if started): its
    manager is closed (live runs cancelled, reason ``manager_closed``, up to ``timeout_s``
    seconds), then the loop. The next ``run()`` starts a new one. For tests and for
    scripts that want to end their runs before exiting."""
    global _loop_thread
    with _loop_lock:
        thread, _loop_thread = _loop_thread, None
    if thread is not None and thread.thread.is_alive():
        thread.shutdown(timeout_s)


def _background_loop() -> _LoopThread:
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None or not _loop_thread.thread.is_alive():
            _loop_thread = _LoopThread()
        return _loop_thread


GraphFunction.launcher = _call_graph
GraphFunction.sync_runner = _sync_graph
