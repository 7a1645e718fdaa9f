"""``NodeContext``: what a graph body (or an ad-hoc session) sees as ``context``.

It carries the run's identity, the ``runner()`` facade for spawning/waiting/cancelling
runs (seed 002), and the services (``llm()``, ``kv()``, ``logger()``, ...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any

from .errors import ServiceNotConfiguredError
from .models import RunImportance, RunOrigin, RunRecord, RunVisibility
from .run_manager import LiveRun, RunManager
from .services.artifacts import ArtifactStore
from .services.base import ServiceHandle
from .services.channel import ChannelSession
from .services.kv import KVStore
from .services.llm import BoundLLM
from .services.logger import RunLoggerAdapter
from .services.memory import SessionMemory


class CancelFlag:
    """The answer of ``is_cancel_requested()``: a truth value that can also be awaited.

    AetherGraph 0.1.0a15 makes ``is_cancel_requested()`` a coroutine (``if await
    runner.is_cancel_requested():``); sync bodies (worker threads) cannot await, and this
    runtime's docs poll it plainly (``while not runner.is_cancel_requested():``). Both work:
    ``bool(flag)`` and ``await flag`` give the same ``bool``, and ``flag == True`` /
    ``flag == False`` compare as that bool. (``flag is True`` does not: ``bool`` cannot be
    subclassed; use ``bool(flag)``.)
    """

    __slots__ = ("_value",)

    def __init__(self, value: bool) -> None:
        self._value = bool(value)

    def __bool__(self) -> bool:
        return self._value

    def __await__(self) -> Generator[Any, None, bool]:
        if False:  # a generator that never suspends
            yield None
        return self._value

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CancelFlag):
            return self._value == other._value
        if isinstance(other, bool | int):
            return self._value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return repr(self._value)


class _Done:
    """An awaitable that is already done (``await raise_if_cancel_requested()`` when no
    cancellation was requested)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        if False:
            yield None
        return None

    def __repr__(self) -> str:
        return "None"


_DONE = _Done()

# AetherGraph NodeContext methods this runtime does not have (yet), and what to do instead.
_NOT_AVAILABLE = {
    "kb": "AetherGraph's knowledge base is not available; use context.rag when one is "
    "registered",
    "planner": "AetherGraph's planner service is not part of ag_jupyter",
    "viz": "AetherGraph's viz service is not part of ag_jupyter; save figures with "
    "context.artifacts()",
}


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

    def is_cancel_requested(self) -> CancelFlag:
        """Whether cancellation of *this* context's run was requested, as a
        :class:`CancelFlag`: ``if runner.is_cancel_requested():`` and (AetherGraph
        0.1.0a15's form, where it is async) ``if await runner.is_cancel_requested():`` both
        work.

        Sync graph bodies (worker threads) should poll this and stop early; it is safe to
        call from any thread. Always false in an ad-hoc session.
        """
        live = self._ctx._live
        return CancelFlag(live is not None and live.cancel_requested)

    def raise_if_cancel_requested(self) -> Awaitable[None]:
        """Raise ``asyncio.CancelledError`` at once if this run was asked to stop; else
        return an awaitable that does nothing, so ``runner.raise_if_cancel_requested()``
        and 0.1.0a15's ``await runner.raise_if_cancel_requested()`` both work.

        The run then ends ``canceled``. Safe to call from a sync body's worker thread.

        Raises:
          asyncio.CancelledError: if cancellation of this run was requested.
        """
        if self.is_cancel_requested():
            raise asyncio.CancelledError(f"run {self._ctx.run_id} was asked to cancel")
        return _DONE


class NodeContext:
    """The context of one running node: identity, ``runner()`` and services.

    Attributes (all ``str | None`` except ``run_id``/``graph_id``/``node_id``): ``run_id``,
    ``session_id``, ``graph_id``, ``node_id``, ``agent_id``, ``app_id``, and ``manager`` (the
    :class:`RunManager` that runs spawned from here go to).

    Services: ``llm()``, ``artifacts()``, ``memory()``, ``kv()``, ``logger()``, ``rag``,
    ``kb()``, ``mcp(name)``, and custom services registered with
    ``register_context_service(name, svc)``: ``context.<name>()`` or ``context.svc(name)``.
    A service that is not configured
    raises ``ServiceNotConfiguredError`` at once, saying how to configure it.

    ``rt_overrides``: the unknown runtime knobs an ad-hoc session was opened with (dict).
    """

    __slots__ = (
        "_closers",
        "_live",
        "agent_id",
        "app_id",
        "graph_id",
        "manager",
        "node_id",
        "rt_overrides",
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
        self.rt_overrides: dict[str, Any] = {}

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

    # The older form (seed 000): the runner's methods on the context itself. -------
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
        """The older form of ``context.runner().spawn_run(...)`` (seed 000): submit a child
        run and return its run id at once. AetherGraph 0.1.0a15 marks it deprecated with a
        ``DeprecationWarning``; seed 000 documents it as current, so it warns nothing here.

        Raises:
          GraphNotFoundError, RunInputError, DuplicateRunIdError: see ``RunManager.submit_run``.
        """
        return await self.runner().spawn_run(
            graph_id,
            inputs=inputs,
            session_id=session_id,
            tags=tags,
            visibility=visibility,
            origin=origin,
            importance=importance,
            agent_id=agent_id,
            app_id=app_id,
            run_id=run_id,
        )

    async def wait_run(
        self, run_id: str, *, timeout_s: float | None = None, return_outputs: bool = False
    ) -> RunRecord | tuple[RunRecord, dict[str, Any] | None]:
        """The older form of ``context.runner().wait_run(...)`` (seed 000): wait until the
        run is terminal; the record, or ``(record, outputs)`` with ``return_outputs``.

        Raises:
          RunNotFoundError: unknown run id (at once). TimeoutError: after ``timeout_s``
          seconds (the run keeps going). ValueError: non-positive ``timeout_s``.
        """
        return await self.runner().wait_run(
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
        """The older form of ``context.runner().run_and_wait(...)`` (seed 000): run a child
        graph and wait; ``(run_id, outputs, has_waits, continuations)``. Holds no
        concurrency slot (``count_slot=False``).

        Raises:
          GraphNotFoundError, RunInputError, DuplicateRunIdError: see ``RunManager.submit_run``.
        """
        return await self.runner().run_and_wait(
            graph_id,
            inputs=inputs,
            session_id=session_id,
            tags=tags,
            visibility=visibility,
            origin=origin,
            importance=importance,
            agent_id=agent_id,
            app_id=app_id,
            run_id=run_id,
        )

    async def cancel_run(self, run_id: str) -> None:
        """The older form of ``context.runner().cancel_run(run_id)`` (seed 000): request
        best-effort cancellation.

        Raises:
          RunNotFoundError: unknown run id.
        """
        await self.runner().cancel_run(run_id)

    # Services ---------------------------------------------------------------
    def svc(self, name: str) -> Any:
        """The service registered as ``name``, bound to this context (``service.bind(
        context=self)`` when it has ``bind``); the same as ``context.<name>()``.

        Raises:
          ServiceNotConfiguredError: if no service has that name (a ``RuntimeError``;
            AetherGraph 0.1.0a15 raises ``KeyError``).
        """
        return self.services.get(name, self)

    def __getattr__(self, name: str) -> ServiceHandle:
        """``context.<name>`` for a custom service (``register_context_service(name,
        svc)``): a :class:`ServiceHandle`, so ``context.name()`` is the bound service,
        ``context.name(args)`` calls a callable service and ``context.name.method()``
        reaches its methods (AetherGraph 0.1.0a15's ``NodeContext.__getattr__``).

        Raises:
          AttributeError: if no service has that name.
        """
        if name.startswith("_") or name in NodeContext.__slots__:
            raise AttributeError(name)
        try:
            bound = self.svc(name)
        except ServiceNotConfiguredError:
            hint = _NOT_AVAILABLE.get(name) or (
                f"register a service with register_context_service({name!r}, obj)"
            )
            raise AttributeError(
                f"NodeContext has no attribute or service {name!r}; {hint}"
            ) from None
        return ServiceHandle(name, bound)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        try:
            names.update(self.services.names())
        except Exception:
            pass
        return sorted(names)

    def logger(self) -> RunLoggerAdapter:
        """A ``logging.LoggerAdapter`` that tags records with this run's ids.

        Lines go to the ``ag_jupyter.runs`` logger and a per-run buffer
        (``context.services.logs(run_id)``), never straight into a notebook cell.
        """
        return self.svc("logger")

    def llm(
        self,
        profile: str = "default",
        *,
        provider: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        azure_deployment: str | None = None,
        timeout: float | None = None,
    ) -> BoundLLM:
        """The LLM client of ``profile`` (a15's ``context.llm(profile="default", *, ...)``;
        ``context.llm("name")`` too). Overrides create or update the profile in this process
        first. Its calls are steps of this run (see ``services/llm``).

        Raises:
          ServiceNotConfiguredError: if the profile is not configured (at once), or a
            profile other than the default is asked of an injected service without profiles.
        """
        service = self.svc("llm")
        overrides = {
            k: v
            for k, v in (("provider", provider), ("model", model), ("base_url", base_url),
                         ("api_key", api_key), ("azure_deployment", azure_deployment),
                         ("timeout", timeout))
            if v is not None
        }
        select = getattr(service, "select", None)
        if callable(select):
            return select(profile, **overrides)
        if profile != "default" or overrides:
            raise ServiceNotConfiguredError(
                f"the llm service of this context ({type(service).__name__}, injected) has no "
                f"profiles; ask for context.llm() without profile={profile!r} or overrides"
            )
        return service

    def llm_set_key(
        self,
        provider: str,
        model: str | None = None,
        api_key: str | None = None,
        profile: str = "default",
    ) -> None:
        """Set ``profile``'s provider, model and API key in this process (a15; ``model``
        may be left out, as AetherGraph's tutorial t5 writes it). The key is kept in
        memory only and never shown.

        Raises:
          TypeError: if ``api_key`` is missing. ServiceNotConfiguredError: if this context's
            llm service (an injected one) has no profiles.
        """
        setter = getattr(self.svc("llm"), "set_key", None)
        if not callable(setter):
            raise ServiceNotConfiguredError(
                "the llm service of this context (injected) has no profiles to set a key on"
            )
        setter(provider, model, api_key, profile)

    def channel(self, channel_key: str | None = None) -> ChannelSession:
        """A channel session (AetherGraph's ``context.channel(channel_key=None)``): send
        messages, ask a person (``ask_text``, ``ask_approval``, ``ask_choices``,
        ``ask_files``...), report progress (``progress()``, ``send_phase``).

        Without a key, the default channel (``"notebook:panel"``: asks are shown in the
        run panel, answered there or with ``%ag_answer`` / ``manager.answer``, and on
        stdin in a terminal script); ``"console:stdin"`` is the same channel,
        ``"file:path"`` appends to a file under the workspace, other prefixes need
        ``register_channel_adapter``. While a run waits on an ask its status is
        ``waiting`` and it holds no concurrency slot (AetherGraph keeps it ``running``).

        Raises:
          TypeError: for a key that is not a str.
          ServiceNotOnWorkerError: in a body running on a Dask worker (``executor="dask"``).
        """
        if channel_key is not None and not isinstance(channel_key, str):
            raise TypeError(f"channel_key must be a str or None, got {channel_key!r}")
        # Asks live in the kernel's manager: a Dask worker body has no channel.
        self.services.require_kernel("context.channel()")
        return ChannelSession(self, channel_key)

    def artifacts(self) -> ArtifactStore:
        """The artifact store of this workspace (AetherGraph's API), stamped with this
        run/session."""
        return self.svc("artifacts")

    def memory(self) -> SessionMemory:
        """The event memory of this session (of this run without a session)."""
        return self.svc("memory")

    def kv(self) -> KVStore:
        """The key-value store: the workspace's global scope, shared by every run and
        session (as AetherGraph's kv); ``.session_scope()`` for this session's own keys."""
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
