"""Ad-hoc sessions: a fully wired ``NodeContext`` outside any graph run (seed 001).

``open_session(...)`` is the async context manager; ``build_adhoc_context(...)`` returns
the context and leaves clean-up (``await context.aclose()``) to the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from .node_context import NodeContext
from .run_manager import RunManager, get_run_manager

# Names of services that may be injected directly as overrides (open_session(llm=...)).
SERVICE_OVERRIDES = ("llm", "kv", "memory", "artifacts", "logger", "rag")
IDENTITY_OVERRIDES = ("session_id", "agent_id", "app_id")
OTHER_OVERRIDES = ("max_concurrency", "services", "mcp", "run_manager")
ACCEPTED_OVERRIDES = IDENTITY_OVERRIDES + OTHER_OVERRIDES + SERVICE_OVERRIDES


def _check_overrides(overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(ACCEPTED_OVERRIDES))
    if unknown:
        raise TypeError(
            f"unknown open_session override(s) {', '.join(map(repr, unknown))}; accepted: "
            f"{', '.join(ACCEPTED_OVERRIDES)}. Register other services with "
            "register_context_service(name, obj) or pass services={name: obj}."
        )


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
        a private RunManager with that limit, sharing the process's run store, closed with
        the session); ``run_manager`` (use this manager); ``services`` (dict name ->
        object) and ``mcp`` (dict name -> client) injected for this context only; and the
        service names ``llm``, ``kv``, ``memory``, ``artifacts``, ``logger``, ``rag`` to
        inject one directly.

    Returns a context; release what it opened with ``await ctx.aclose()``.

    Raises:
      TypeError: for an unknown override, naming the accepted ones.
      ValueError: for a non-positive ``max_concurrency``.
      RuntimeError: if no event loop is running.
    """
    _check_overrides(rt_overrides)
    ov = dict(rt_overrides)
    run_id = run_id or f"adhoc-{uuid.uuid4().hex[:12]}"
    manager: RunManager | None = ov.pop("run_manager", None)
    owns_manager = False
    max_concurrency = ov.pop("max_concurrency", None)
    if manager is None:
        if max_concurrency is not None:
            manager = _private_manager(max_concurrency)
            owns_manager = True
        else:
            manager = get_run_manager()
    elif max_concurrency is not None:
        raise TypeError("pass either run_manager or max_concurrency, not both")
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
    ctx.on_close(hub.aclose)
    if owns_manager:
        # The private manager shares the process's store: flush it, never close it.
        ctx.on_close(lambda: manager.close(close_store=False))
    return ctx


def _private_manager(max_concurrency: int) -> RunManager:
    base = get_run_manager()
    return RunManager(
        max_concurrency=max_concurrency,  # validated there: 0 or -1 raise ValueError
        registry=base.registry,
        store=base.store,
        services=base.services,
    )


@asynccontextmanager
async def open_session(
    run_id: str | None = None,
    graph_id: str = "adhoc",
    node_id: str = "adhoc",
    **rt_overrides: Any,
) -> AsyncIterator[NodeContext]:
    """Open an ad-hoc session: ``async with open_session() as context: ...``.

    Yields a fully wired :class:`NodeContext` (see :func:`build_adhoc_context` for the
    arguments and overrides). On exit, normal or by an exception or a cancellation (a kernel
    interrupt), the session's own resources are closed; runs spawned on the shared manager
    keep going and stay listed.

    Raises:
      TypeError: for an unknown override, naming the accepted ones.
    """
    ctx = await build_adhoc_context(run_id, graph_id, node_id, **rt_overrides)
    try:
        yield ctx
    finally:
        await ctx.aclose()
