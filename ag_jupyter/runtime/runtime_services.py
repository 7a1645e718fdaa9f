"""AetherGraph's process-level service helpers (``aethergraph.runtime``: ``current_services``,
``get_llm_service``, ``register_llm_client``) over ag_jupyter's service hubs.

AetherGraph keeps every service in one container its sidecar installs; here each RunManager
has a :class:`~ag_jupyter.runtime.services.ServiceHub` (sessions add a child hub) and
process-wide registrations (``register_context_service``) apply to all of them.
"""

from __future__ import annotations

from typing import Any

from . import current
from .defaults import get_run_manager
from .services import ServiceHub
from .services.llm import register_llm_client

__all__ = ["current_services", "get_llm_service", "register_llm_client", "set_llm_client"]


def current_services() -> ServiceHub:
    """The service hub of the current run or session, else of the running loop's manager
    (0.1.0a15's ``current_services()`` returns its container).

    Raises:
      RuntimeError: outside any run or session with no event loop running (0.1.0a15
        raises ``RuntimeError`` before its services are installed).
    """
    scope = current.current_scope()
    if scope is not None:
        return scope.services()  # type: ignore[no-any-return]
    try:
        return get_run_manager().services  # type: ignore[no-any-return]
    except RuntimeError:
        raise RuntimeError(
            "current_services() outside a run or session needs a running event loop (its "
            "RunManager holds the services): call it from async code or a notebook cell"
        ) from None


def get_llm_service() -> Any:
    """The ``llm`` service object behind ``context.llm()``, unbound: a registered one, or
    the embedded provider that reads ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` /
    ``AG_LLM_MODEL`` (0.1.0a15: ``current_services().llm``).

    Raises:
      RuntimeError: as :func:`current_services`.
    """
    return current_services().lookup("llm")


#: 0.1.0a15's alias of ``register_llm_client`` (profiles: ``services/llm/settings.py``).
set_llm_client = register_llm_client
