"""``NodeContext``: what a graph body (or an ad-hoc session) sees as ``context``.

It carries the run's identity, the ``runner()`` facade for spawning/waiting/cancelling
runs (seed 002), and the services (``llm()``, ``kv()``, ``logger()``, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from .models import RunImportance, RunOrigin, RunRecord, RunVisibility
from .run_manager import LiveRun, RunManager


class RunnerFacade:
    """``context.runner()``: launch and control runs with this context's defaults.

    Defaults applied when an argument is None: ``session_id``, ``agent_id`` and ``app_id``
    from the context; ``origin`` = ``agent`` when an agent id is in effect, else ``app``;
    ``parent_run_id`` = the context's run id. Delegates to the context's RunManager.
    """

    __slots__ = ("_ctx",)

    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx

    def _identity(
        self,
        session_id: str | None,
        agent_id: str | None,
        app_id: str | None,
        origin: RunOrigin | str | None,
    ) -> dict[str, Any]:
        ctx = self._ctx
        agent = agent_id if agent_id is not None else ctx.agent_id
        return {
            "session_id": session_id if session_id is not None else ctx.session_id,
            "agent_id": agent,
            "app_id": app_id if app_id is not None else ctx.app_id,
            "origin": origin if origin is not None
            else (RunOrigin.agent if agent else RunOrigin.app),
            "parent_run_id": ctx.run_id,
        }

    async def spawn_run(
        self,
        graph_id: str,
        *,
        inputs: dict[str, Any],
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: RunVisibility | str | None = None,
        origin: RunOrigin | str | None = None,
        importance: RunImportance | str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Submit a child run and return its run id at once (it counts a concurrency slot).

        Raises:
          GraphNotFoundError, RunInputError, DuplicateRunIdError: see ``RunManager.submit_run``.
        """
        record = await self._ctx.manager.submit_run(
            graph_id,
            inputs=inputs,
            run_id=run_id,
            tags=tags,
            visibility=visibility,
            importance=importance,
            **self._identity(session_id, agent_id, app_id, origin),
        )
        return record.run_id

    async def wait_run(
        self, run_id: str, *, timeout_s: float | None = None, return_outputs: bool = False
    ) -> RunRecord | tuple[RunRecord, dict[str, Any] | None]:
        """Wait for a run to reach a terminal state; see ``RunManager.wait_run``.

        Returns the final record, or ``(record, outputs)`` with ``return_outputs=True``.

        Raises:
          RunNotFoundError: unknown run id (at once). TimeoutError: after ``timeout_s``
          seconds (the run keeps going). ValueError: non-positive ``timeout_s``.
        """
        return await self._ctx.manager.wait_run(
            run_id, timeout_s=timeout_s, return_outputs=return_outputs
        )

    async def run_and_wait(
        self,
        graph_id: str,
        *,
        inputs: dict[str, Any],
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: RunVisibility | str | None = None,
        origin: RunOrigin | str | None = None,
        importance: RunImportance | str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        run_id: str | None = None,
    ) -> tuple[str, dict[str, Any] | None, bool, list[dict[str, Any]]]:
        """Run a child graph as a tracked run and wait: ``(run_id, outputs, has_waits,
        continuations)``. Uses ``count_slot=False`` so nesting cannot deadlock the limit.

        Raises:
          GraphNotFoundError, RunInputError, DuplicateRunIdError: see ``RunManager.submit_run``.
        """
        record, outputs, has_waits, continuations = await self._ctx.manager.run_and_wait(
            graph_id,
            inputs=inputs,
            run_id=run_id,
            tags=tags,
            visibility=visibility,
            importance=importance,
            count_slot=False,
            **self._identity(session_id, agent_id, app_id, origin),
        )
        return record.run_id, outputs, has_waits, continuations

    async def cancel_run(self, run_id: str) -> None:
        """Request best-effort cancellation of ``run_id`` (see ``RunManager.cancel_run``).

        Raises:
          RunNotFoundError: unknown run id.
        """
        await self._ctx.manager.cancel_run(run_id)

    def is_cancel_requested(self) -> bool:
        """Whether cancellation of *this* context's run was requested.

        Sync graph bodies (worker threads) should poll this and stop early; it is safe to
        call from any thread. Always False in an ad-hoc session.
        """
        live = self._ctx._live
        return bool(live is not None and live.cancel_requested)

    def raise_if_cancel_requested(self) -> None:
        """Raise ``asyncio.CancelledError`` if this run was asked to stop.

        The run then ends ``canceled``. Safe to call from a sync body's worker thread.
        """
        if self.is_cancel_requested():
            raise asyncio.CancelledError(f"run {self._ctx.run_id} was asked to cancel")


class NodeContext:
    """The context of one running node: identity, ``runner()`` and services.

    Attributes (all ``str | None`` except ``run_id``/``graph_id``/``node_id``): ``run_id``,
    ``session_id``, ``graph_id``, ``node_id``, ``agent_id``, ``app_id``, and ``manager`` (the
    :class:`RunManager` that runs spawned from here go to).

    Services: ``llm()``, ``artifacts()``, ``memory()``, ``kv()``, ``logger()``, ``rag``,
    ``kb()``, ``mcp(name)`` and ``svc(name)`` for custom services. A service that is not configured
    raises ``ServiceNotConfiguredError`` at once, saying how to configure it.
    """

    __slots__ = (
        "_closers",
        "_live",
        "agent_id",
        "app_id",
        "graph_id",
        "manager",
        "node_id",
        "run_id",
        "services",
        "session_id",
    )

    def __init__(
        self,
        *,
        run_id: str,
        graph_id: str,
        manager: RunManager,
        node_id: str | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        services: Any = None,
        live: LiveRun | None = None,
    ) -> None:
        self.run_id = run_id
        self.graph_id = graph_id
        self.node_id = node_id if node_id is not None else graph_id
        self.session_id = session_id
        self.agent_id = agent_id
        self.app_id = app_id
        self.manager = manager
        self.services = services if services is not None else manager.services
        self._live = live
        self._closers: list[Callable[[], Awaitable[Any]]] | None = None

    def on_close(self, closer: Callable[[], Awaitable[Any]]) -> None:
        """Register an async clean-up for :meth:`aclose` (run in reverse order)."""
        if self._closers is None:
            self._closers = []
        self._closers.append(closer)

    async def aclose(self) -> None:
        """Run the registered clean-ups once, newest first; later calls do nothing.

        Every clean-up runs even if an earlier one raises; the first error is re-raised.
        """
        closers, self._closers = self._closers or [], None
        first_error: BaseException | None = None
        for closer in reversed(closers):
            try:
                await closer()
            except BaseException as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    def __repr__(self) -> str:
        return (
            f"NodeContext(run_id={self.run_id!r}, graph_id={self.graph_id!r}, "
            f"node_id={self.node_id!r}, session_id={self.session_id!r})"
        )

    def runner(self) -> RunnerFacade:
        """The run facade: ``spawn_run``, ``wait_run``, ``run_and_wait``, ``cancel_run``."""
        return RunnerFacade(self)

    # Services ---------------------------------------------------------------
    def svc(self, name: str) -> Any:
        """The service registered as ``name``, bound to this context.

        Raises:
          ServiceNotConfiguredError: if no service has that name.
        """
        return self.services.get(name, self)

    def logger(self) -> Any:
        """A ``logging.LoggerAdapter`` that tags records with this run's ids.

        Lines go to the ``ag_jupyter.runs`` logger and a per-run buffer
        (``context.services.logs(run_id)``), never straight into a notebook cell.
        """
        return self.svc("logger")

    def llm(self) -> Any:
        """The chat model client (OpenAI-compatible); raises ServiceNotConfiguredError."""
        return self.svc("llm")

    def artifacts(self) -> Any:
        """The artifact store of this workspace, scoped to this run/session."""
        return self.svc("artifacts")

    def memory(self) -> Any:
        """The event memory of this session."""
        return self.svc("memory")

    def kv(self) -> Any:
        """The key-value store, scoped to this session."""
        return self.svc("kv")

    @property
    def rag(self) -> Any:
        """The retrieval service: on a workspace, the embedded index (a ``NodeRAG``:
        ``upsert_docs``, ``search``, ``answer``...; also callable, ``context.rag()``, as
        AetherGraph's docs write it); else what ``register_context_service('rag', obj)``
        or ``open_session(rag=obj)`` gave.

        Raises:
          ServiceNotConfiguredError: on an in-memory manager with nothing registered.
        """
        return self.svc("rag")

    def kb(self) -> Any:
        """The knowledge base (AetherGraph 0.1.0a15's ``context.kb()``): a ``NodeKB`` over
        the same corpora as :attr:`rag`, or the registered ``'kb'`` service.

        Raises:
          ServiceNotConfiguredError: on an in-memory manager with nothing registered.
        """
        return self.svc("kb")

    def mcp(self, name: str | None = None) -> Any:
        """The MCP client registered as ``name`` (``await context.mcp("time").call(tool,
        params)``); its tool calls are recorded as steps of this run.

        With no name, the MCP service seen from this context, as AetherGraph's docs use it:
        ``await context.mcp().call("time", tool, params)``, ``.list_tools("time")``,
        ``.names()`` (0.1.0a15's code required a name).

        Raises:
          ServiceNotConfiguredError: if no client has that name (register one with
            ``register_mcp_client`` or pass ``open_session(mcp={name: client})``).
        """
        return self.services.mcp(name, self)


# The manager builds the contexts of graph bodies without importing this module.
RunManager.context_factory = NodeContext
