"""AetherGraph 0.1.0a15 names that ag_jupyter does not provide (yet), importable from the
same paths so AetherGraph code imports unchanged; using one raises ``NotImplementedError``
saying what to use instead or which feature brings it.

Out of scope: ``graphify`` / ``TaskGraph`` (static graphs), the sidecar server
  (``start_server``, ``start_server_async``, ``stop_server``), the services container
  (``install_services``, ``ensure_services_installed``, ``current_logger_factory``), the
  skill registry, and ``set_rag_llm_client`` / ``set_rag_index_backend`` (listed in
  0.1.0a15's ``aethergraph.runtime.__all__`` but never defined there).

When a feature lands, its module's names replace these in the package exports.
"""

from __future__ import annotations

from typing import Any, NoReturn

_SERVER = (
    "ag_jupyter needs no sidecar server: its services (logger, kv, memory, artifacts, "
    "llm, custom services) are embedded and ready on import, runs are watched with %ag_runs "
    "in a notebook. Remove the call"
)
_CONTAINER = (
    "ag_jupyter has no services container to install: its services are embedded. Add your "
    "own with register_context_service(name, obj) (for every context) or "
    "open_session(services={name: obj}) (one session)"
)
_GRAPHIFY = (
    "@graphify static graphs (TaskGraph) are not supported by ag_jupyter; write the graph "
    "as a @graph_fn: its @tool calls are recorded as steps, and awaiting another graph "
    "function runs it as a child run"
)
_SKILLS = (
    "AetherGraph's skill registry is not part of ag_jupyter; keep prompt snippets in your "
    "own module, or wrap them in a custom service (register_context_service)"
)
_RAG_SETTERS = (
    "is listed in aethergraph.runtime.__all__ of 0.1.0a15 but never defined there (importing "
    "it fails in AetherGraph); configure retrieval with register_context_service('rag', obj) "
    "or open_session(rag=obj)"
)


def _unavailable(name: str, why: str) -> Any:
    def placeholder(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(f"{name}(): {why}.")

    placeholder.__name__ = placeholder.__qualname__ = name
    placeholder.__doc__ = f"Not available in ag_jupyter: {why}.\n\nRaises:\n  NotImplementedError"
    return placeholder


class TaskGraph:
    """AetherGraph's static graph object (built by ``@graphify``).

    Raises:
      NotImplementedError: when created; static graphs are out of scope.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"TaskGraph: {_GRAPHIFY}.")

    @classmethod
    def from_spec(cls, *args: Any, **kwargs: Any) -> NoReturn:
        """Raises NotImplementedError (static graphs are out of scope)."""
        raise NotImplementedError(f"TaskGraph.from_spec(): {_GRAPHIFY}.")


graphify = _unavailable("graphify", _GRAPHIFY)
start_server = _unavailable("start_server", _SERVER)
start_server_async = _unavailable("start_server_async", _SERVER)
stop_server = _unavailable("stop_server", _SERVER)
install_services = _unavailable("install_services", _CONTAINER)
ensure_services_installed = _unavailable("ensure_services_installed", _CONTAINER)
current_logger_factory = _unavailable(
    "current_logger_factory",
    "use context.logger() (lines kept per run) or logging.getLogger('ag_jupyter.runs')",
)
get_skill_registry = _unavailable("get_skill_registry", _SKILLS)
register_skill = _unavailable("register_skill", _SKILLS)
register_skill_file = _unavailable("register_skill_file", _SKILLS)
register_skill_inline = _unavailable("register_skill_inline", _SKILLS)
register_skills_from_path = _unavailable("register_skills_from_path", _SKILLS)
set_rag_llm_client = _unavailable("set_rag_llm_client", f"set_rag_llm_client {_RAG_SETTERS}")
set_rag_index_backend = _unavailable(
    "set_rag_index_backend", f"set_rag_index_backend {_RAG_SETTERS}"
)

__all__ = [
    "TaskGraph",
    "current_logger_factory",
    "ensure_services_installed",
    "get_skill_registry",
    "graphify",
    "install_services",
    "register_skill",
    "register_skill_file",
    "register_skill_inline",
    "register_skills_from_path",
    "set_rag_index_backend",
    "set_rag_llm_client",
    "start_server",
    "start_server_async",
    "stop_server",
]
