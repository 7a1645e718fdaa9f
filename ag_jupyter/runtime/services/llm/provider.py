"""The embedded ``llm`` service: profiles resolved when ``context.llm(...)`` is called, one
:class:`~.client.LLMService` kept per profile configuration."""

from __future__ import annotations

import threading
from typing import Any

from .client import BoundLLM, LLMService
from .settings import (
    DEFAULT_PROFILE,
    LLMProfile,
    configure_profile,
    profiles_from_env,
    resolve_profile,
    runtime_profiles,
    set_key,
)

_OVERRIDES = (
    "provider",
    "model",
    "base_url",
    "api_key",
    "timeout",
    "embed_model",
    "reasoning_effort",
    "max_retries",
    "azure_deployment",
)


class EnvLLMProvider:
    """The embedded default ``llm`` service (installed on every root service hub).

    ``context.llm(profile="default", **overrides)`` resolves the profile (a run-time
    registration, else AetherGraph's / OpenAI's environment variables; see
    ``settings.py``) when it is called, so variables set after import count. Overrides
    (``provider``, ``model``, ``base_url``, ``api_key``, ``timeout``...) create or update
    the profile in this process first, as a15's ``context.llm(profile, *, ...)`` does.

    Raises (from :meth:`get`):
      ServiceNotConfiguredError: no such profile is configured (at once, naming the
        variables that configure one).
      ValueError: a malformed variable (timeout, retries, provider).
    """

    def __init__(self) -> None:
        self._services: dict[LLMProfile, LLMService] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "EnvLLMProvider()"

    def service(self, profile: str = DEFAULT_PROFILE, **overrides: Any) -> LLMService:
        """The :class:`LLMService` of ``profile`` now (after applying ``overrides``)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = sorted(set(given) - set(_OVERRIDES))
        if unknown:
            raise TypeError(
                f"unknown llm() override(s) {', '.join(unknown)}; accepted: {', '.join(_OVERRIDES)}"
            )
        found = configure_profile(profile, **given) if given else resolve_profile(profile)
        with self._lock:
            svc = self._services.get(found)
            if svc is None:
                svc = LLMService(profile=found)
                self._services[found] = svc
            return svc

    def resolve(self) -> LLMService:
        """The default profile's service (ag_jupyter's older name)."""
        return self.service(DEFAULT_PROFILE)

    def get(self, context: Any, profile: str = DEFAULT_PROFILE, **overrides: Any) -> BoundLLM:
        """``context.llm(profile, **overrides)``: that profile's service bound to
        ``context``."""
        return self.service(profile, **overrides).bind(context)

    def bind(self, context: Any) -> LLMRouter:
        """What the service hub hands to ``context``: a :class:`LLMRouter` (it resolves
        a profile only when asked)."""
        return LLMRouter(self, context)

    def set_key(
        self,
        provider: str,
        model: str | None = None,
        api_key: str | None = None,
        profile: str = DEFAULT_PROFILE,
    ) -> LLMService:
        """a15's ``LLMService.set_key``: set ``profile``'s provider, model and key in this
        process; returns its service."""
        set_key(provider, model, api_key, profile)
        return self.service(profile)

    def profiles(self) -> dict[str, LLMProfile]:
        """Every profile configured now (environment, then run-time registrations)."""
        return {**profiles_from_env(), **runtime_profiles()}

    async def aclose(self) -> None:
        """Close the connections of every service built so far."""
        with self._lock:
            services = list(self._services.values())
        for svc in services:
            await svc.aclose()


class LLMRouter:
    """``context.svc("llm")`` for the embedded service: ``select(profile, **overrides)``
    gives a :class:`BoundLLM` (what ``context.llm(...)`` returns); attribute access
    (``.chat``...) goes to the default profile."""

    __slots__ = ("_context", "provider")

    def __init__(self, provider: EnvLLMProvider, context: Any) -> None:
        self.provider = provider
        self._context = context

    def __repr__(self) -> str:
        return f"LLMRouter(run_id={getattr(self._context, 'run_id', None)!r})"

    def select(self, profile: str = DEFAULT_PROFILE, **overrides: Any) -> BoundLLM:
        """The bound client of ``profile`` (see :meth:`EnvLLMProvider.service`)."""
        return self.provider.get(self._context, profile, **overrides)

    def set_key(
        self,
        provider: str,
        model: str | None = None,
        api_key: str | None = None,
        profile: str = DEFAULT_PROFILE,
    ) -> None:
        """``context.llm_set_key(...)``."""
        self.provider.set_key(provider, model, api_key, profile)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.select(), name)


def register_llm_client(
    profile: str,
    provider: str | None = None,
    model: str | None = None,
    embed_model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    *,
    reasoning_effort: str | None = None,
    **ignored: Any,
) -> LLMService:
    """Create or update profile ``profile`` for every context of this process and return
    its client (a15's ``aethergraph.runtime.register_llm_client``); ``context.llm(profile)``
    then uses it. Kept in memory only.

    Raises:
      ValueError: for an unknown provider; ServiceNotConfiguredError: for a hosted
        endpoint without a key.
    """
    found = configure_profile(
        profile,
        provider=provider,
        model=model,
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        embed_model=embed_model,
        reasoning_effort=reasoning_effort,
    )
    return LLMService(profile=found)
