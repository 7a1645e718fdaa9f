"""LLM settings: profiles (from AetherGraph's environment variables, the usual OpenAI ones,
and runtime registrations) and the optional price table. No network, no ``openai`` import.

A **profile** is one OpenAI-compatible endpoint and model: OpenAI, vLLM, Ollama, LM Studio,
OpenRouter, DeepSeek... (``provider`` picks the default base URL). Where they come from,
for a profile named ``NAME`` (case-insensitive, as AetherGraph's pydantic settings are):

- ``AETHERGRAPH_LLM__DEFAULT__<FIELD>`` (the ``default`` profile) and
  ``AETHERGRAPH_LLM__PROFILES__<NAME>__<FIELD>``: AetherGraph 0.1.0a15's settings
  (``config/config.py``: prefix ``AETHERGRAPH_``, nested delimiter ``__``;
  ``config/llm.py``: ``LLMSettings.default`` / ``.profiles``). Its tutorial t5 also
  writes ``AETHERGRAPH_LLM__<NAME>__<FIELD>`` (without ``PROFILES``), which a15's code
  ignores; it is accepted here, as a user following the docs expects.
  Fields: ``PROVIDER``, ``MODEL``, ``EMBED_MODEL``, ``BASE_URL``, ``API_KEY``,
  ``API_KEY_REF`` (the name of another variable holding the key), ``TIMEOUT`` (seconds),
  ``REASONING_EFFORT``, ``MAX_RETRIES``. ``AETHERGRAPH_LLM__ENABLED=false`` turns every
  profile off.
- For ``default`` only, after those: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``,
  ``AG_LLM_MODEL`` (then ``OPENAI_MODEL``), ``AG_LLM_TIMEOUT_S``, ``AG_LLM_MAX_RETRIES``.
  As in a15's client, ``OPENAI_BASE_URL`` is also the default base URL of every profile
  whose provider is ``openai`` (``OLLAMA_BASE_URL`` of every ``ollama`` one, ...), and
  ``OPENAI_API_KEY`` the key of any ``openai`` profile that has none and talks to OpenAI
  or to ``OPENAI_BASE_URL``; it is never sent to an endpoint a profile names itself.
- At run time: :func:`configure_profile` (``context.llm(profile=..., model=..., ...)``),
  :func:`set_key` (``context.llm_set_key``) and :func:`register_llm_client`: kept in this
  process only, never written anywhere.

Variables are read when ``context.llm()`` is called, so setting them after import works.

Prices (optional): ``{"model": [input_per_mtok, output_per_mtok]}`` (a third number, the
price of cached input tokens, is optional), from :func:`set_llm_prices` (what
``%config AgJupyter.llm_prices`` sets) or the ``AG_LLM_PRICES`` variable (JSON). Without a
price for a call's model its cost is None: never a guessed price.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...errors import ServiceNotConfiguredError

DEFAULT_PROFILE = "default"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_EMBED_MODEL = "text-embedding-3-small"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 1
PLACEHOLDER_API_KEY = "not-needed"
"""Key sent to an endpoint that needs none (local servers), since the client must send one."""

ENV_PREFIX = "AETHERGRAPH_LLM__"
ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_MODEL = "AG_LLM_MODEL"
ENV_MODEL_FALLBACK = "OPENAI_MODEL"
ENV_TIMEOUT = "AG_LLM_TIMEOUT_S"
ENV_MAX_RETRIES = "AG_LLM_MAX_RETRIES"
ENV_EMBED_MODEL = "EMBED_MODEL"
ENV_PRICES = "AG_LLM_PRICES"

OPENAI_BASE_URL = "https://api.openai.com/v1"
#: provider -> (default base URL, variable that overrides it). All speak the OpenAI API.
PROVIDERS: dict[str, tuple[str | None, str | None]] = {
    "openai": (OPENAI_BASE_URL, ENV_BASE_URL),
    "vllm": ("http://localhost:8000/v1", "VLLM_BASE_URL"),
    "ollama": ("http://localhost:11434/v1", "OLLAMA_BASE_URL"),
    "lmstudio": ("http://localhost:1234/v1", "LMSTUDIO_BASE_URL"),
    "openrouter": ("https://openrouter.ai/api/v1", None),
    "deepseek": ("https://api.deepseek.com", "DEEPSEEK_BASE_URL"),
    # Their OpenAI-compatible endpoints (not a15's native APIs).
    "google": ("https://generativelanguage.googleapis.com/v1beta/openai", None),
    "anthropic": ("https://api.anthropic.com/v1", None),
    "azure": (None, None),  # give base_url: https://<resource>.openai.azure.com/openai/v1
}
#: Native API roots (as AetherGraph's docs give them) -> their OpenAI-compatible roots.
_NATIVE_ROOTS = {
    ("google", "https://generativelanguage.googleapis.com"): PROVIDERS["google"][0],
    ("anthropic", "https://api.anthropic.com"): PROVIDERS["anthropic"][0],
}
#: Providers that run on the user's machine: no key needed.
LOCAL_PROVIDERS = frozenset({"vllm", "ollama", "lmstudio"})
REASONING_EFFORTS = ("minimal", "low", "medium", "high", "xhigh", "max")
_FIELDS = {
    "provider",
    "model",
    "embed_model",
    "base_url",
    "api_key",
    "api_key_ref",
    "timeout",
    "reasoning_effort",
    "max_retries",
    "azure_deployment",
    "thinking_mode",
    "compatibility_policy",
    "thinking_budget",
    "reasoning_summary",
}
_RESERVED = {"enabled", "default", "profiles", "observability"}

HOW_TO_CONFIGURE = (
    f"set {ENV_API_KEY} (OpenAI), or {ENV_BASE_URL} (an OpenAI-compatible server such as "
    f"vLLM, Ollama or LM Studio, e.g. http://localhost:11434/v1; no key needed) and "
    f"{ENV_MODEL} (the model name); or AetherGraph's AETHERGRAPH_LLM__DEFAULT__API_KEY / "
    "__BASE_URL / __MODEL; or call context.llm_set_key(provider, model, api_key); or pass "
    "open_session(llm=LLMService(api_key=..., base_url=..., model=...))"
)


class Secret(str):
    """A str that never shows itself in a repr (API keys)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


@dataclass(frozen=True)
class LLMProfile:
    """One endpoint + model configuration (a15's ``LLMProfile`` fields that apply to an
    OpenAI-compatible endpoint).

    Attributes:
      name (str): the profile's name (lower case). provider (str): see ``PROVIDERS``.
      model (str): chat model. embed_model (str | None): embeddings model.
      base_url (str): the API root, e.g. ``http://localhost:8000/v1``.
      api_key (Secret | None): sent as ``Authorization: Bearer ...`` (never shown).
      timeout_s (float): seconds per request attempt. max_retries (int): retries of
        connection errors, 408/409/429 and 5xx answers.
      reasoning_effort (str | None): sent with every chat unless a call gives its own.
      source (str): where it came from (``"env"``, ``"runtime"``, ``"service"``).
    """

    name: str
    provider: str = "openai"
    model: str = DEFAULT_MODEL
    embed_model: str | None = None
    base_url: str = OPENAI_BASE_URL
    api_key: Secret | None = field(default=None, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_retries: int = DEFAULT_MAX_RETRIES
    reasoning_effort: str | None = None
    source: str = "env"

    def __repr__(self) -> str:
        key = "set" if self.api_key else "none"
        return (
            f"LLMProfile({self.name!r}, provider={self.provider!r}, model={self.model!r}, "
            f"base_url={self.base_url!r}, api_key={key})"
        )

    @property
    def key_to_send(self) -> str:
        """The key the client sends (a placeholder when the endpoint needs none)."""
        return str(self.api_key) if self.api_key else PLACEHOLDER_API_KEY

    def cache_key(self) -> tuple[Any, ...]:
        """What identifies a client for this profile (the key by its hash only)."""
        return (
            self.provider,
            self.base_url,
            hash(self.api_key or ""),
            self.timeout_s,
            self.max_retries,
        )


# ---------------------------------------------------------------------------- parsing
def _norm_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"an LLM profile name must be a non-empty str, got {name!r}")
    return name.strip().lower()


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _float(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, got {value!r}") from None
    if not number > 0 or math.isinf(number):
        raise ValueError(f"{what} must be a positive number of seconds, got {value!r}")
    return number


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    return number


def _aethergraph_vars(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """``{profile: {field: (variable, value)}}`` from ``AETHERGRAPH_LLM__*`` variables."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var, raw in environ.items():
        upper = var.upper()
        if not upper.startswith(ENV_PREFIX) or raw is None or not raw.strip():
            continue
        parts = upper[len(ENV_PREFIX) :].split("__")
        if parts[0] == "PROFILES" and len(parts) == 3:
            profile, fld = parts[1].lower(), parts[2].lower()
        elif parts[0] == "DEFAULT" and len(parts) == 2:
            profile, fld = DEFAULT_PROFILE, parts[1].lower()
        elif len(parts) == 2 and parts[0].lower() not in _RESERVED:
            profile, fld = parts[0].lower(), parts[1].lower()  # tutorial t5's form
        else:
            continue
        if fld in _FIELDS and profile:
            found.setdefault(profile, {})[fld] = (var, raw.strip())
    return found


def _enabled(environ: Mapping[str, str]) -> bool:
    for var, raw in environ.items():
        if var.upper() == ENV_PREFIX + "ENABLED":
            return raw.strip().lower() not in ("0", "false", "no", "off")
    return True


def _provider(value: str | None, where: str) -> str:
    provider = (value or "openai").strip().lower()
    if provider == "dummy":
        provider = "openai"
    if provider not in PROVIDERS:
        raise ValueError(
            f"{where}: unknown LLM provider {value!r}; ag_jupyter speaks the OpenAI-compatible "
            f"API of: {', '.join(PROVIDERS)}"
        )
    return provider


def _label(where: str, field: str) -> str:
    """How an error names a field: the variable (``AETHERGRAPH_LLM__DEFAULT__TIMEOUT``)
    when ``where`` is a variable prefix, else ``"<where> <field>"``."""
    if where.startswith("AETHERGRAPH_"):
        return f"{where}__{field.upper()}"
    return f"{where} {field}"


def _build(
    name: str,
    values: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    source: str,
    where: str,
    base: LLMProfile | None = None,
) -> LLMProfile | None:
    """A profile from field ``values`` on top of ``base``; None when it names a hosted
    endpoint (its provider's default URL) without any key, i.e. is not configured.

    Raises:
      ValueError: for an unknown provider or reasoning effort, a bad number, or a provider
        without a default URL and no ``base_url``.
    """
    provider = _provider(values.get("provider") or (base.provider if base else None), where)
    if base is not None and provider != base.provider:
        base = None  # another endpoint: nothing of the old one carries over but the model
    default_url, url_var = PROVIDERS[provider]
    explicit_url = values.get("base_url")
    if explicit_url:
        base_url = str(explicit_url)
    elif base is not None:
        base_url = base.base_url
    else:
        # As a15's GenericLLMClient: OPENAI_BASE_URL is every openai profile's default,
        # OLLAMA_BASE_URL every ollama profile's, ...
        from_env = _env(environ, url_var) if url_var else None
        base_url = from_env or default_url or ""
    base_url = _NATIVE_ROOTS.get((provider, base_url.rstrip("/")), base_url.rstrip("/"))
    if not base_url:
        raise ValueError(f"{where}: provider {provider!r} needs a base URL (BASE_URL)")
    api_key = values.get("api_key")
    if api_key is None and values.get("api_key_ref"):
        api_key = _env(environ, str(values["api_key_ref"]))
    if api_key is None and base is not None and base.base_url == base_url:
        api_key = base.api_key
    openai_urls = {OPENAI_BASE_URL, (_env(environ, ENV_BASE_URL) or "").rstrip("/")}
    if api_key is None and provider == "openai" and base_url in openai_urls:
        # OPENAI_API_KEY goes to OpenAI or to the server OPENAI_BASE_URL names, never
        # to an endpoint a profile names for itself.
        api_key = _env(environ, ENV_API_KEY)
    hosted_default = provider not in LOCAL_PROVIDERS and base_url == (default_url or "")
    if not api_key and hosted_default:
        return None
    effort = values.get("reasoning_effort") or (base.reasoning_effort if base else None)
    if effort is not None and str(effort).lower() not in REASONING_EFFORTS:
        raise ValueError(
            f"{_label(where, 'reasoning_effort')} must be one of {', '.join(REASONING_EFFORTS)}, "
            f"got {effort!r}"
        )
    timeout = values.get("timeout")
    retries = values.get("max_retries")
    return LLMProfile(
        name=name,
        provider=provider,
        model=str(values.get("model") or (base.model if base else DEFAULT_MODEL)),
        embed_model=values.get("embed_model") or (base.embed_model if base else None),
        base_url=base_url,
        api_key=Secret(api_key) if api_key else None,
        timeout_s=_float(timeout, _label(where, "timeout"))
        if timeout is not None
        else (base.timeout_s if base else DEFAULT_TIMEOUT_S),
        max_retries=_int(retries, _label(where, "max_retries"))
        if retries is not None
        else (base.max_retries if base else DEFAULT_MAX_RETRIES),
        reasoning_effort=str(effort).lower() if effort else None,
        source=source,
    )


def profiles_from_env(environ: Mapping[str, str] | None = None) -> dict[str, LLMProfile]:
    """Every profile the environment configures, by (lower-case) name.

    Raises:
      ValueError: for a malformed value (a timeout that is not a number, an unknown
        provider...), naming the variable.
    """
    env = os.environ if environ is None else environ
    if not _enabled(env):
        return {}
    out: dict[str, LLMProfile] = {}
    grouped = _aethergraph_vars(env)
    default_values: dict[str, Any] = {
        k: v for k, (_, v) in grouped.get(DEFAULT_PROFILE, {}).items()
    }
    openai_key, openai_url = _env(env, ENV_API_KEY), _env(env, ENV_BASE_URL)
    default_provider = str(default_values.get("provider") or "openai").lower()
    if default_provider == "openai":
        # OPENAI_BASE_URL / OPENAI_API_KEY: the usual variables of the default profile. The
        # key goes to OpenAI or to the server OPENAI_BASE_URL names, nowhere else.
        if "base_url" not in default_values and openai_url:
            default_values["base_url"] = openai_url
        url = str(default_values.get("base_url") or OPENAI_BASE_URL).rstrip("/")
        keyless = "api_key" not in default_values and "api_key_ref" not in default_values
        if keyless and openai_key and url in (OPENAI_BASE_URL, (openai_url or "").rstrip("/")):
            default_values["api_key"] = openai_key
    if "model" not in default_values:
        model = _env(env, ENV_MODEL) or _env(env, ENV_MODEL_FALLBACK)
        if model:
            default_values["model"] = model
    if "timeout" not in default_values and _env(env, ENV_TIMEOUT):
        default_values["timeout"] = _env(env, ENV_TIMEOUT)
        _float(default_values["timeout"], ENV_TIMEOUT)
    if "max_retries" not in default_values and _env(env, ENV_MAX_RETRIES):
        default_values["max_retries"] = _env(env, ENV_MAX_RETRIES)
        _int(default_values["max_retries"], ENV_MAX_RETRIES)
    if (
        default_values.get("api_key")
        or default_values.get("base_url")
        or default_values.get("api_key_ref")
        or default_values.get("provider")
    ):
        built = _build(
            DEFAULT_PROFILE,
            default_values,
            env,
            source="env",
            where="AETHERGRAPH_LLM__DEFAULT",
        )
        if built is not None:
            out[DEFAULT_PROFILE] = built
    for name, fields in grouped.items():
        if name == DEFAULT_PROFILE:
            continue
        values = {k: v for k, (_, v) in fields.items()}
        var = next(iter(fields.values()))[0].rsplit("__", 1)[0]
        built = _build(name, values, env, source="env", where=var)
        if built is not None:
            out[name] = built
    return out


# --------------------------------------------------------------- runtime registrations
_runtime: dict[str, LLMProfile] = {}
_runtime_lock = threading.Lock()


def runtime_profiles() -> dict[str, LLMProfile]:
    """Profiles registered at run time in this process (a copy)."""
    with _runtime_lock:
        return dict(_runtime)


def configure_profile(
    profile: str = DEFAULT_PROFILE,
    *,
    provider: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    embed_model: str | None = None,
    reasoning_effort: str | None = None,
    max_retries: int | None = None,
    azure_deployment: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> LLMProfile:
    """Create or update profile ``profile`` in this process (a15's
    ``LLMService.configure_profile``): fields not given keep the profile's current values
    (from the environment or an earlier call). Nothing is written anywhere.

    Args:
      timeout: seconds. azure_deployment: accepted for a15 (Azure's OpenAI-compatible v1
        endpoint needs only ``base_url``).

    Returns the profile now in effect.

    Raises:
      TypeError: for a bad profile name. ValueError: for an unknown provider or
        reasoning effort, a non-positive timeout, or an endpoint without a base URL.
    """
    del azure_deployment
    name = _norm_name(profile)
    env = os.environ if environ is None else environ
    with _runtime_lock:
        base = _runtime.get(name)
    if base is None:
        base = profiles_from_env(env).get(name)
    values = {
        k: v
        for k, v in {
            "provider": provider,
            "model": model,
            "base_url": base_url,
            "api_key": api_key,
            "timeout": timeout,
            "embed_model": embed_model,
            "reasoning_effort": reasoning_effort,
            "max_retries": max_retries,
        }.items()
        if v is not None
    }
    built = _build(name, values, env, source="runtime", where=f"profile {name!r}", base=base)
    if built is None:
        raise ServiceNotConfiguredError(
            f"LLM profile {name!r} would send requests to a hosted endpoint without an API "
            "key: pass api_key=... (or base_url=... for a local server such as vLLM, Ollama "
            "or LM Studio)"
        )
    with _runtime_lock:
        _runtime[name] = built
    return built


def set_key(
    provider: str,
    model: str | None = None,
    api_key: str | None = None,
    profile: str = DEFAULT_PROFILE,
) -> LLMProfile:
    """Set the provider, model and API key of ``profile`` in this process (a15's
    ``llm_set_key``; ``model`` may be omitted, as AetherGraph's tutorial t5 writes it).

    Raises:
      TypeError: if ``api_key`` is missing or not a str. ValueError: as
        :func:`configure_profile`.
    """
    if not isinstance(api_key, str) or not api_key:
        raise TypeError("llm_set_key() needs api_key=<the key> (a non-empty str)")
    return configure_profile(profile, provider=provider, model=model, api_key=api_key)


def forget_runtime_profiles() -> None:
    """Drop every profile registered at run time (tests, or to start over)."""
    with _runtime_lock:
        _runtime.clear()


def resolve_profile(name: str, environ: Mapping[str, str] | None = None) -> LLMProfile:
    """The profile ``name`` in effect now: a run-time registration, else the environment's.

    Raises:
      ServiceNotConfiguredError: if no such profile is configured (at once; the message
        lists the known ones and how to configure one).
      ValueError: for a malformed environment variable.
    """
    key = _norm_name(name)
    with _runtime_lock:
        found = _runtime.get(key)
    if found is not None:
        return found
    env_profiles = profiles_from_env(environ)
    if key in env_profiles:
        return env_profiles[key]
    known = sorted(set(env_profiles) | set(runtime_profiles()))
    if key == DEFAULT_PROFILE:
        raise ServiceNotConfiguredError(f"the 'llm' service is not configured: {HOW_TO_CONFIGURE}")
    raise ServiceNotConfiguredError(
        f"no LLM profile named {name!r} is configured (known: {', '.join(known) or 'none'}); "
        f"set AETHERGRAPH_LLM__PROFILES__{key.upper()}__MODEL / __BASE_URL / __API_KEY, or "
        f"create it with context.llm(profile={name!r}, provider=..., model=..., base_url=...)"
    )


# ----------------------------------------------------------------------------- prices
_prices: dict[str, tuple[float, float, float | None]] | None = None
_prices_lock = threading.Lock()


def _check_prices(table: Any, where: str) -> dict[str, tuple[float, float, float | None]]:
    if not isinstance(table, Mapping):
        raise TypeError(f"{where} must be a dict {{model: [input_per_mtok, output_per_mtok]}}")
    out: dict[str, tuple[float, float, float | None]] = {}
    for model, price in table.items():
        if not isinstance(model, str) or not model:
            raise TypeError(f"{where}: model names must be non-empty str, got {model!r}")
        if isinstance(price, Mapping):
            price = [price.get("input"), price.get("output"), price.get("cached_input")]
            if price[2] is None:
                price = price[:2]
        if not isinstance(price, list | tuple) or len(price) not in (2, 3):
            raise ValueError(
                f"{where}[{model!r}] must be [input_per_mtok, output_per_mtok] (optionally a "
                f"third number, cached input per Mtok), got {price!r}"
            )
        numbers = []
        for p in price:
            if (
                isinstance(p, bool)
                or not isinstance(p, int | float)
                or p < 0
                or math.isinf(p)
                or math.isnan(p)
            ):
                raise ValueError(f"{where}[{model!r}]: prices are numbers >= 0, got {p!r}")
            numbers.append(float(p))
        out[model] = (numbers[0], numbers[1], numbers[2] if len(numbers) == 3 else None)
    return out


def set_llm_prices(table: Mapping[str, Any] | None) -> None:
    """Set this process's price table (``%config AgJupyter.llm_prices`` calls this):
    ``{"model": [input_per_mtok, output_per_mtok]}`` or with a third number for cached
    input tokens, in your currency per million tokens; None goes back to ``AG_LLM_PRICES``.

    Raises:
      TypeError, ValueError: for a malformed table (nothing is changed).
    """
    global _prices
    checked = None if table is None else _check_prices(table, "llm_prices")
    with _prices_lock:
        _prices = checked


def llm_prices(
    environ: Mapping[str, str] | None = None,
) -> dict[str, tuple[float, float, float | None]]:
    """The price table in effect: :func:`set_llm_prices`'s, else ``AG_LLM_PRICES``'s, else
    ``{}``.

    Raises:
      ValueError: if ``AG_LLM_PRICES`` is not valid JSON of that shape.
    """
    with _prices_lock:
        if _prices is not None:
            return dict(_prices)
    raw = _env(os.environ if environ is None else environ, ENV_PRICES)
    if raw is None:
        return {}
    try:
        table = json.loads(raw)
    except ValueError:
        raise ValueError(f'{ENV_PRICES} must be JSON like {{"model": [0.15, 0.6]}}') from None
    return _check_prices(table, ENV_PRICES)


def call_cost(
    model: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    *,
    response_model: str | None = None,
) -> float | None:
    """The cost of one call from the price table (exact model names: the requested one,
    then the one the endpoint reported), or None without a price. Cached input tokens are
    billed at the cached price when the table has one, else at the input price."""
    try:
        table = llm_prices()
    except ValueError:
        return None
    price = table.get(model or "") or table.get(response_model or "")
    if price is None:
        return None
    per_in, per_out, per_cached = price
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    cost = (prompt_tokens - cached) * per_in + completion_tokens * per_out
    cost += cached * (per_cached if per_cached is not None else per_in)
    return cost / 1_000_000
