"""Context services and the hub that hands them to ``NodeContext``.

A service is any object. If it has a ``bind(context=...)`` method, ``context.svc(name)``
returns ``service.bind(context=context)`` (a view scoped to that run/session); otherwise the
object itself. Register a custom service for every context with
:func:`register_context_service` (then ``context.<name>()`` reaches it too; subclass
:class:`~ag_jupyter.runtime.services.base.Service` for ``self.ctx()``, ``critical()`` and
``run_blocking``), or for one session with ``open_session(services={"name": obj})``.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ServiceNotConfiguredError
from ..store.steps import StepBook
from .llm import EnvLLMProvider
from .logger import RunLogBuffer, RunLoggerService
from .mcp import (
    ContextMCPService,
    bind_client,
    list_mcp_clients,
    lookup_mcp_client,
)
from .mcp import register_mcp_client as register_mcp_client  # re-exported: its old home

_HOW_TO_CONFIGURE = {
    "llm": "set OPENAI_API_KEY (and OPENAI_BASE_URL / AG_LLM_MODEL for a local server such "
    "as vLLM, Ollama or LM Studio), or pass open_session(llm=...)",
    "rag": "the embedded RAG index lives in a workspace, and this run manager keeps "
    "everything in memory (workspace 'memory'): use a workspace folder (AG_WORKSPACE, or "
    "%config AgJupyter.workspace = '/path'), or register one with "
    "register_context_service('rag', obj) or pass open_session(rag=...)",
    "kb": "the embedded knowledge base lives in a workspace, and this run manager keeps "
    "everything in memory: use a workspace folder (AG_WORKSPACE), or register one with "
    "register_context_service('kb', obj)",
    "mcp": "register a client with register_mcp_client(name, StdioMCPClient([...])), "
    "configure_mcp_servers({name: {'command': [...]}}) (%config AgJupyter.mcp_servers in a "
    "notebook), or pass open_session(mcp={name: client})",
}

_global_services: dict[str, Any] = {}
_global_lock = threading.Lock()


def register_context_service(name: str, service: Any) -> None:
    """Make ``service`` reachable as ``context.svc(name)`` and ``context.<name>()`` from
    every context (AetherGraph's ``register_context_service``; no sidecar needed).

    Built-in names (``llm``, ``kv``, ``memory``, ``artifacts``, ``logger``, ``rag``) may be
    replaced this way too. A service with a ``bind(context)`` method is bound per context.

    Raises:
      TypeError: if ``name`` is not a non-empty str.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"service name must be a non-empty str, got {name!r}")
    with _global_lock:
        _global_services[name] = service


def unregister_context_service(name: str) -> None:
    """Remove a service registered with :func:`register_context_service` (if any)."""
    with _global_lock:
        _global_services.pop(name, None)


def get_ext_context_service(name: str) -> Any:
    """The service registered as ``name`` with :func:`register_context_service`, unbound,
    or None if there is none (AetherGraph 0.1.0a15's ``get_ext_context_service``; it
    raises ``RuntimeError`` before its sidecar is started, this never does)."""
    with _global_lock:
        return _global_services.get(name)


def list_ext_context_services() -> list[str]:
    """Names registered with :func:`register_context_service`, in registration order (as
    0.1.0a15's ``list_ext_context_services``; built-in services are not listed)."""
    with _global_lock:
        return list(_global_services)


class ServiceHub:
    """Resolves service names to service objects for contexts.

    Lookup order: this hub's own services (``open_session`` injections), then the
    process-wide registrations, then the embedded defaults the hub was built with.

    Args:
      services: name -> service object for this hub only.
      mcp: name -> MCP client for this hub only.
      parent: the hub this one adds to (sessions build children of the manager's hub).
      log_sink: where the ``logger()`` lines of a root hub go (default: memory only; see
        :class:`~ag_jupyter.runtime.services.logger.RunLogBuffer`).
      step_sink: where a root hub keeps runs' steps (``record_step``): a
        :class:`~ag_jupyter.runtime.store.steps.StepBook` (memory, the default) or a
        :class:`~ag_jupyter.runtime.store.steps.WorkspaceSteps`.
    """

    def __init__(
        self,
        services: dict[str, Any] | None = None,
        *,
        mcp: dict[str, Any] | None = None,
        parent: ServiceHub | None = None,
        log_sink: Any = None,
        step_sink: Any = None,
    ) -> None:
        self._services = dict(services or {})
        self._mcp = dict(mcp or {})
        # Injected MCP clients that were not started yet: the ones this hub's contexts start
        # are closed with the hub (see aclose); already-running ones belong to someone else.
        self._mcp_closed_at_start = {
            name for name, client in self._mcp.items() if getattr(client, "is_open", None) is False
        }
        self._parent = parent
        if parent is None:
            self.log_buffer = RunLogBuffer(log_sink)
            self.steps = step_sink if step_sink is not None else StepBook()
            self._defaults: dict[str, Any] = {"logger": RunLoggerService(self.log_buffer)}
            # Reads OPENAI_API_KEY / OPENAI_BASE_URL / AG_LLM_MODEL at context.llm() time.
            self._defaults["llm"] = EnvLLMProvider()
        else:
            self.log_buffer = parent.log_buffer
            self.steps = parent.steps
            self._defaults = {}

    def child(self, services: dict[str, Any] | None = None, **kw: Any) -> ServiceHub:
        """A hub that adds ``services`` on top of this one (used by sessions)."""
        return ServiceHub(services, parent=self, **kw)

    def set_default(self, name: str, service: Any) -> None:
        """Install an embedded default service (lowest priority)."""
        self._defaults[name] = service

    def _lookup(self, name: str) -> Any:
        if name in self._services:
            return self._services[name]
        if name in _global_services:
            return _global_services[name]
        if self._parent is not None:
            return self._parent._lookup(name)
        return self._defaults.get(name)

    def lookup(self, name: str) -> Any:
        """The service object registered or installed as ``name``, unbound, or None."""
        return self._lookup(name)

    def get(self, name: str, context: Any) -> Any:
        """The service ``name`` bound to ``context``.

        Raises:
          ServiceNotConfiguredError: if nothing is registered under ``name``.
        """
        service = self._lookup(name)
        if service is None:
            how = _HOW_TO_CONFIGURE.get(
                name, f"register one with register_context_service({name!r}, obj)"
            )
            raise ServiceNotConfiguredError(f"the {name!r} service is not configured: {how}")
        bind = getattr(service, "bind", None)
        # By keyword: AetherGraph services define ``bind(self, *, context)``.
        return bind(context=context) if callable(bind) else service

    def names(self) -> list[str]:
        """Every service name this hub resolves (its own, registered, its parent's and the
        embedded defaults), sorted; for ``dir(context)`` and completion."""
        found = set(self._services) | set(_global_services) | set(self._defaults)
        if self._parent is not None:
            found |= set(self._parent.names())
        return sorted(found)

    def _mcp_lookup(self, name: str) -> Any:
        if name in self._mcp:
            return self._mcp[name]
        client = lookup_mcp_client(name)
        if client is not None:
            return client
        return self._parent._mcp_lookup(name) if self._parent is not None else None

    def mcp_names(self) -> list[str]:
        """Names ``mcp(name)`` resolves: this hub's (and its parents') clients, then the
        process-wide ones."""
        names: list[str] = []
        hub: ServiceHub | None = self
        while hub is not None:
            names.extend(n for n in hub._mcp if n not in names)
            hub = hub._parent
        names.extend(n for n in list_mcp_clients() if n not in names)
        return names

    def require_kernel(self, what: str) -> None:
        """Nothing: this hub is the kernel's. (A Dask worker body's hub raises
        ``ServiceNotOnWorkerError`` naming ``what``, e.g. ``"context.channel()"``.)"""

    def mcp(self, name: str | None, context: Any) -> Any:
        """The MCP client ``name`` as ``context`` sees it (its tool calls are recorded as
        steps of the context's run); with ``name`` None, the MCP service seen from
        ``context`` (AetherGraph's docs' ``context.mcp().call(name, tool, params)``).

        Raises:
          ServiceNotConfiguredError: if no client is registered under ``name``.
        """
        if name is None:
            return ContextMCPService(self, context)
        client = self._mcp_lookup(name)
        if client is None:
            known = ", ".join(self.mcp_names()) or "(none)"
            raise ServiceNotConfiguredError(
                f"no MCP client named {name!r} is configured (configured: {known}): "
                f"{_HOW_TO_CONFIGURE['mcp']}"
            )
        return bind_client(client, context, name)

    def record_step(self, step: dict[str, Any]) -> None:
        """Keep a step of a run (a dict from ``store.steps.make_step``); any thread."""
        self.steps.add(step)

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        """Recent log lines of ``run_id`` (see :class:`RunLogBuffer`)."""
        return self.log_buffer.lines(run_id)

    async def aclose(self) -> None:
        """Close the embedded defaults this hub created (those with an ``aclose`` method).

        Services injected by the caller (``open_session(llm=...)``, ``services={...}``) are
        the caller's to close: a session's clean-up leaves them open. The exception is MCP
        servers: a client passed as ``open_session(mcp={name: client})`` whose server was not
        running when the session opened, and that the session started, is stopped here (its
        server would otherwise outlive everything that uses it); one that was already
        running is left running.
        """
        for name in self._mcp_closed_at_start:
            client = self._mcp[name]
            if getattr(client, "is_open", False):
                await client.aclose()
        for service in list(self._defaults.values()):
            closer = getattr(service, "aclose", None)
            if callable(closer):
                await closer()
