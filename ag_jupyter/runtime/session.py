"""Ad-hoc sessions: a fully wired ``NodeContext`` outside any graph run (seed 001).

``open_session(...)`` is the async context manager; ``build_adhoc_context(...)`` returns
the context and leaves clean-up (``await context.aclose()``) to the caller.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from . import current
from .defaults import get_run_manager
from .executors import check_executor, use_session_executor
from .node_context import NodeContext
from .run_manager import RunManager

# Names of services that may be injected directly as overrides (open_session(llm=...)).
SERVICE_OVERRIDES = ("llm", "kv", "memory", "artifacts", "logger", "rag")
IDENTITY_OVERRIDES = ("session_id", "agent_id", "app_id")
OTHER_OVERRIDES = ("max_concurrency", "services", "mcp", "run_manager", "executor")
ACCEPTED_OVERRIDES = IDENTITY_OVERRIDES + OTHER_OVERRIDES + SERVICE_OVERRIDES


def _split_overrides(
    overrides: dict[str, Any], stacklevel: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(accepted, unknown)``; warns about the unknown ones (seed 001 passes ``foo="bar"``
    as a runtime knob: it is kept, and a typo stays visible)."""
    unknown = {k: v for k, v in overrides.items() if k not in ACCEPTED_OVERRIDES}
    if unknown:
        warnings.warn(
            f"open_session/build_adhoc_context: unknown runtime override(s) "
            f"{', '.join(map(repr, sorted(unknown)))} kept in context.rt_overrides and "
            f"otherwise unused; accepted: {', '.join(ACCEPTED_OVERRIDES)}. Register other "
            "services with register_context_service(name, obj) or pass services={name: obj}.",
            UserWarning,
            stacklevel=stacklevel,
        )
    accepted = {k: v for k, v in overrides.items() if k in ACCEPTED_OVERRIDES}
    return accepted, unknown


async def build_adhoc_context(
    run_id: str | None = None,
    graph_id: str = "adhoc",
    node_id: str = "adhoc",
    **rt_overrides: Any,
) -> NodeContext:
    """Build a ``NodeContext`` for a single ad-hoc node outside any scheduled graph.

    Args:
      run_id: this session's id (default: ``"adhoc-<hex>"``). Runs spawned from the context
        get it as their ``parent_run_id``.
      graph_id, node_id: labels for the context (default ``"adhoc"``).
      **rt_overrides: ``session_id``, ``agent_id``, ``app_id`` (identity defaults for runs
        spawned from here; ``session_id`` defaults to ``run_id``); ``max_concurrency`` (int:
        at most that many of this session's slot-counted runs at once, inside the loop's
        one manager and its global limit; the limit keeps applying to runs submitted
        before the session closed, which keep running like any other run);
        ``run_manager`` (use this manager); ``executor`` (``"local"`` or ``"dask"``:
        where the session's runs execute, for runs submitted under its session id while it
        is open, unless their graph chose its own; see ``runtime/executors``);
        ``services`` (dict name ->
        object) and ``mcp`` (dict name -> client) injected for this context only; and the
        service names ``llm``, ``kv``, ``memory``, ``artifacts``, ``logger``, ``rag`` to
        inject one directly.

      Any other name is a runtime knob this runtime does not use (AetherGraph passes
      them to its container): it is kept in ``context.rt_overrides`` and a ``UserWarning``
      names it with the accepted ones (0.1.0a15 accepts them silently).

    Returns a context; release what it opened with ``await ctx.aclose()``.

    Raises:
      ValueError: for a non-positive ``max_concurrency`` or an unknown ``executor``.
      ExecutorNotAvailableError: for ``executor="dask"`` without ``distributed``
        installed (``pip install 'ag-jupyter[dask]'``).
      RuntimeError: if no event loop is running.
    """
    return await _build(run_id, graph_id, node_id, rt_overrides, warn_stacklevel=4)


async def _build(
    run_id: str | None,
    graph_id: str,
    node_id: str,
    rt_overrides: dict[str, Any],
    *,
    warn_stacklevel: int,
) -> NodeContext:
    ov, unknown = _split_overrides(rt_overrides, warn_stacklevel)
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    manager: RunManager | None = ov.pop("run_manager", None)
    max_concurrency = ov.pop("max_concurrency", None)
    if max_concurrency is not None:
        RunManager.check_concurrency(max_concurrency)
    executor = check_executor(ov.pop("executor", None), where="open_session(executor=...)")
    if manager is None:
        manager = get_run_manager()
    injected = dict(ov.pop("services", None) or {})
    for name in SERVICE_OVERRIDES:
        if name in ov:
            injected[name] = ov.pop(name)
    hub = manager.services.child(injected, mcp=ov.pop("mcp", None))
    ctx = NodeContext(
        run_id=run_id,
        graph_id=graph_id,
        node_id=node_id,
        session_id=ov.pop("session_id", None) or run_id,
        agent_id=ov.pop("agent_id", None),
        app_id=ov.pop("app_id", None),
        manager=manager,
        services=hub,
    )
    ctx.rt_overrides = unknown
    ctx.on_close(hub.aclose)
    if max_concurrency is not None:
        session_id = ctx.session_id
        assert session_id is not None
        manager.set_session_limit(session_id, max_concurrency)

        async def release() -> None:
            manager.release_session_limit(session_id)

        ctx.on_close(release)
    if executor is not None:
        assert ctx.session_id is not None
        release_executor = use_session_executor(ctx.session_id, executor)

        async def forget_executor() -> None:
            release_executor()

        ctx.on_close(forget_executor)
    return ctx


@asynccontextmanager
async def open_session(
    run_id: str | None = None,
    graph_id: str = "adhoc",
    node_id: str = "adhoc",
    **rt_overrides: Any,
) -> AsyncIterator[NodeContext]:
    """Open an ad-hoc session: ``async with open_session() as context: ...``.

    Yields a fully wired :class:`NodeContext` (see :func:`build_adhoc_context` for the
    arguments and overrides; an unknown override warns and is kept in
    ``context.rt_overrides``). Inside the block the context is the current one, so
    ``@tool`` calls record steps under the session's id, ``Service.ctx()`` finds it and
    graphs awaited there are children of the session (``parent_run_id``, its session id).
    On exit, normal or by an exception or a cancellation (a kernel interrupt), the
    session's own resources are closed; runs spawned on the shared manager keep going and
    stay listed.

    Raises:
      ValueError: for a non-positive ``max_concurrency`` or an unknown ``executor``.
      ExecutorNotAvailableError: for ``executor="dask"`` without ``distributed``.
    """
    ctx = await _build(run_id, graph_id, node_id, rt_overrides, warn_stacklevel=5)
    token = current.enter_session(ctx)
    try:
        yield ctx
    finally:
        current.leave(token)
        await ctx.aclose()
