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
from .services import ServiceHub, register_context_service
from .services.llm import LLMService

__all__ = ["OPENAI_COMPATIBLE_PROVIDERS", "current_services", "get_llm_service",
           "register_llm_client", "set_llm_client"]

#: AetherGraph provider names this runtime's LLM client can talk to (the OpenAI chat API).
OPENAI_COMPATIBLE_PROVIDERS = ("openai", "openrouter", "lmstudio", "ollama", "vllm", "azure")


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


def register_llm_client(
    profile: str,
    provider: str,
    model: str,
    embed_model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
) -> LLMService:
    """Configure the LLM client ``context.llm()`` uses (0.1.0a15's
    ``register_llm_client``; alias ``set_llm_client``) and return it.

    Args:
      profile: ``"default"`` (named profiles are not available in this version).
      provider: an OpenAI-compatible provider (:data:`OPENAI_COMPATIBLE_PROVIDERS`), or any
        name when ``base_url`` points at an OpenAI-compatible server.
      model: the chat model.
      embed_model: accepted; embeddings are not available in this version.
      base_url: the API root (e.g. ``http://localhost:11434/v1``); default OpenAI's.
      api_key: the key (kept in memory only).
      timeout: seconds per request attempt.

    Raises:
      NotImplementedError: for a profile other than ``"default"``.
      ValueError: for a provider that does not speak the OpenAI chat API, without
        ``base_url``.
    """
    if profile != "default":
        raise NotImplementedError(
            f"register_llm_client(profile={profile!r}): named LLM profiles are not available "
            "in this version; register the 'default' profile, or pass open_session(llm=...) "
            "for one session"
        )
    if base_url is None and str(provider).lower() not in OPENAI_COMPATIBLE_PROVIDERS:
        raise ValueError(
            f"provider {provider!r} does not speak the OpenAI chat API this runtime uses; "
            f"use one of {', '.join(OPENAI_COMPATIBLE_PROVIDERS)} or pass the base_url of an "
            "OpenAI-compatible endpoint"
        )
    service = LLMService(api_key=api_key, base_url=base_url, model=model, timeout_s=timeout)
    register_context_service("llm", service)
    return service


#: 0.1.0a15's alias.
set_llm_client = register_llm_client
