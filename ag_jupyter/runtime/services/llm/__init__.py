"""The ``llm()`` service: AetherGraph's LLM client on any OpenAI-compatible endpoint (OpenAI,
vLLM, Ollama, LM Studio, OpenRouter...), with named profiles and token usage per run.

::

    text, usage = await context.llm().chat([{"role": "user", "content": "Hi"}])
    local = context.llm("local")                      # another profile
    text, usage = await local.chat(msgs, output_format="json")
    vectors = await context.llm().embed(["first", "second"])
    context.llm_set_key(provider="openai", model="gpt-4o-mini", api_key="sk-...")

Layers (each imports only those above it): ``settings`` (profiles from the environment and
run-time registrations, prices), ``errors`` (endpoint errors translated, in one place),
``output`` (``output_format`` / ``json_schema`` / pydantic to ``response_format``, and the
answer checked), ``client`` (:class:`LLMService`, :class:`BoundLLM`, :class:`ChatStream`),
``provider`` (the embedded service: :class:`EnvLLMProvider`).

Every call made through ``context.llm()`` is a step of the run (``kind="llm"``; model,
profile, prompt / completion / cached tokens, latency, cost), summed into the run's
``meta["usage"]``; ``RunManager.usage(...)`` sums them over runs and sessions. API keys
never leave the process but to their endpoint: not in records, steps, logs, errors or
reprs. The ``openai`` package is imported on first use only.
"""

from ...errors import (
    LLMAuthError,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMTimeoutError,
)
from .client import (
    RUN_ID_HEADER,
    SESSION_ID_HEADER,
    BoundLLM,
    ChatStream,
    LLMService,
    usage_dict,
    usage_numbers,
    validate_messages,
)
from .provider import EnvLLMProvider, LLMRouter, register_llm_client
from .settings import (
    DEFAULT_MODEL,
    DEFAULT_PROFILE,
    HOW_TO_CONFIGURE,
    PLACEHOLDER_API_KEY,
    PROVIDERS,
    LLMProfile,
    call_cost,
    configure_profile,
    forget_runtime_profiles,
    llm_prices,
    profiles_from_env,
    resolve_profile,
    set_key,
    set_llm_prices,
)

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_PROFILE",
    "HOW_TO_CONFIGURE",
    "PLACEHOLDER_API_KEY",
    "PROVIDERS",
    "RUN_ID_HEADER",
    "SESSION_ID_HEADER",
    "BoundLLM",
    "ChatStream",
    "EnvLLMProvider",
    "LLMAuthError",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMModelNotFoundError",
    "LLMOutputError",
    "LLMProfile",
    "LLMRateLimitError",
    "LLMRouter",
    "LLMService",
    "LLMTimeoutError",
    "call_cost",
    "configure_profile",
    "forget_runtime_profiles",
    "llm_prices",
    "llm_settings_from_env",
    "profiles_from_env",
    "register_llm_client",
    "resolve_profile",
    "set_key",
    "set_llm_prices",
    "usage_dict",
    "usage_numbers",
    "validate_messages",
]


def llm_settings_from_env(environ=None):  # type: ignore[no-untyped-def]
    """ag_jupyter's older helper: the default profile from the environment as a dict
    ``{"api_key", "base_url", "model", "timeout_s", "max_retries"}``, or None when it is
    not configured.

    Raises:
      ValueError: for a malformed variable.
    """
    profile = profiles_from_env(environ).get(DEFAULT_PROFILE)
    if profile is None:
        return None
    return {
        "api_key": profile.api_key,
        "base_url": profile.base_url,
        "model": profile.model,
        "timeout_s": profile.timeout_s,
        "max_retries": profile.max_retries,
    }
