"""The client of one profile (:class:`LLMService`), its per-context view that records every
call as a step (:class:`BoundLLM`), and streaming (:class:`ChatStream`).

Requests go through the official ``openai`` client (imported on first use), one per event
loop, to the chat-completions and embeddings APIs of any OpenAI-compatible endpoint.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ...errors import LLMError, LLMOutputError, ServiceNotConfiguredError
from ...store.steps import make_step
from .errors import translate
from .output import OutputSpec, output_spec, validate_answer, with_json_directive
from .settings import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_EMBED_MODEL,
    DEFAULT_MAX_RETRIES,
    DEFAULT_MODEL,
    DEFAULT_PROFILE,
    DEFAULT_TIMEOUT_S,
    ENV_BASE_URL,
    ENV_EMBED_MODEL,
    HOW_TO_CONFIGURE,
    OPENAI_BASE_URL,
    LLMProfile,
    Secret,
    call_cost,
    profiles_from_env,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

RUN_ID_HEADER = "X-AG-Run-Id"
SESSION_ID_HEADER = "X-AG-Session-Id"
_SECRET_WORDS = (
    "authorization",
    "api_key",
    "api-key",
    "apikey",
    "secret",
    "password",
    "access_token",
    "auth_token",
)
_SECRET_NAMES = frozenset({"token", "key", "bearer"})

Recorder = Callable[..., None]


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Check chat messages and return them as a list of plain dicts (shallow copies).

    Each message is a mapping with a non-empty str ``role`` and a ``content`` that is a str
    or a list of content parts; an ``assistant`` message carrying ``tool_calls`` (or
    ``function_call``) may have ``content`` None or absent.

    Raises:
      TypeError: ``messages`` is not a list/tuple of mappings, or a field has the wrong type.
      ValueError: the list is empty, or a message lacks ``role``/``content``.
    """
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        hint = ' (wrap a prompt as [{"role": "user", "content": text}])'
        raise TypeError(
            f"messages must be a list of {{'role', 'content'}} dicts, got "
            f"{type(messages).__name__}{hint if isinstance(messages, str) else ''}"
        )
    if not messages:
        raise ValueError("messages must contain at least one message")
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise TypeError(
                f"messages[{i}] must be a dict with 'role' and 'content', got "
                f"{type(msg).__name__}: {msg!r:.80}"
            )
        if "role" not in msg:
            raise ValueError(f"messages[{i}] has no 'role' (keys: {sorted(msg)})")
        role = msg["role"]
        if not isinstance(role, str) or not role:
            raise TypeError(f"messages[{i}]['role'] must be a non-empty str, got {role!r}")
        tool_call = role == "assistant" and bool(msg.get("tool_calls") or msg.get("function_call"))
        if "content" not in msg:
            if not tool_call:
                raise ValueError(f"messages[{i}] ({role}) has no 'content' (keys: {sorted(msg)})")
        else:
            content = msg["content"]
            if not (isinstance(content, str | list) or (content is None and tool_call)):
                raise TypeError(
                    f"messages[{i}]['content'] must be a str or a list of content parts, got "
                    f"{type(content).__name__}"
                )
        out.append(dict(msg))
    return out


_CREATE_PARAMS: frozenset[str] | None = None


def _create_params() -> frozenset[str]:
    """Keyword names ``chat.completions.create`` accepts (read once from the openai package)."""
    global _CREATE_PARAMS
    if _CREATE_PARAMS is None:
        from openai.resources.chat.completions import AsyncCompletions

        params = inspect.signature(AsyncCompletions.create).parameters
        _CREATE_PARAMS = frozenset(n for n in params if n not in ("self", "messages", "stream"))
    return _CREATE_PARAMS


def usage_dict(usage: Any) -> dict[str, Any]:
    """The usage the endpoint reported, with the keys it used (AetherGraph returns the
    endpoint's dict as it is): ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
    ``prompt_tokens_details`` ... (``{}`` when there was none)."""
    if usage is None:
        return {}
    if hasattr(usage, "model_dump"):
        data = usage.model_dump(mode="json", exclude_none=True)
    elif isinstance(usage, Mapping):
        data = dict(usage)
    else:
        return {}
    return {k: v for k, v in data.items() if v is not None}


def usage_numbers(usage: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(prompt_tokens, completion_tokens, cached_tokens)`` of a usage dict (chat
    completions' names, or the Responses API's ``input_tokens`` / ``output_tokens``)."""

    def as_int(value: Any) -> int:
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    prompt = as_int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = as_int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    cached = as_int(details.get("cached_tokens") if isinstance(details, Mapping) else 0)
    cached = cached or as_int(usage.get("cached_tokens"))
    return prompt, completion, cached


def _is_secret(name: str) -> bool:
    low = name.lower()
    return low in _SECRET_NAMES or any(w in low for w in _SECRET_WORDS)


def _redacted(value: Any) -> Any:
    """``value`` with the values of secret-looking keys replaced (request previews)."""
    if isinstance(value, Mapping):
        return {k: "***" if _is_secret(str(k)) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _reasoning(provider: str, effort: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(create params, extra body)`` for a reasoning effort (a15's translation by
    provider; the chat API spells it ``reasoning_effort``)."""
    if effort is None:
        return {}, {}
    effort = str(effort).lower()
    if provider == "openrouter":
        return {}, {"reasoning": {"effort": effort}}
    if provider == "deepseek":  # a15's _map_deepseek_reasoning_effort
        return {"reasoning_effort": "max" if effort in ("xhigh", "max") else "high"}, {}
    if provider == "openai" and effort in ("xhigh", "max"):
        effort = "high"
    return {"reasoning_effort": effort}, {}


# ----------------------------------------------------------------------------- service
class LLMService:
    """The client of one LLM profile: an OpenAI-compatible endpoint and model.

    ``context.llm()`` / ``context.llm("name")`` give a :class:`BoundLLM` over one of these
    (recording each call as a step of the run); build one yourself to inject it with
    ``open_session(llm=LLMService(...))``.

    Args (keyword-only; None means: the ``default`` profile's value from the environment
    when ``use_env``, then the default):
      api_key (str): sent as ``Authorization: Bearer <key>``; never shown in reprs, logs,
        records or errors. Endpoints that need none get the placeholder ``"not-needed"``.
      base_url (str): API root such as ``http://localhost:8000/v1``; default
        ``https://api.openai.com/v1``.
      model (str): default chat model (``gpt-4o-mini``). embed_model (str): embeddings
        model (``EMBED_MODEL``, then ``text-embedding-3-small``).
      timeout_s (float, seconds): time-out of one request attempt (default 60; connecting
        gets at most 10 s of it). max_retries (int): retries of connection errors,
        408/409/429 and 5xx answers (default 1).
      default_headers (dict): extra HTTP headers sent with every request.
      provider (str): ``openai``, ``vllm``, ``ollama``, ``lmstudio``, ``openrouter``,
        ``deepseek``... (selects provider-specific translations; default ``openai``).
      reasoning_effort (str): default for every chat.
      profile (LLMProfile): take every setting from this profile instead.
      use_env (bool): read the environment for missing arguments (default True).

    Raises:
      ServiceNotConfiguredError: neither an API key nor a base URL was given or found
        (raised here, before any network activity).
      ValueError: non-positive ``timeout_s`` or negative ``max_retries``.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        timeout_s: float | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        provider: str | None = None,
        embed_model: str | None = None,
        reasoning_effort: str | None = None,
        profile: LLMProfile | None = None,
        use_env: bool = True,
    ) -> None:
        if profile is None:
            env = profiles_from_env().get(DEFAULT_PROFILE) if use_env else None
            given_url = base_url.rstrip("/") if base_url else None
            api_key = (
                api_key
                if api_key is not None
                else (
                    env.api_key if env is not None and (given_url in (None, env.base_url)) else None
                )
            )
            base_url = given_url or (env.base_url if env is not None else None)
            if not api_key and not base_url:
                raise ServiceNotConfiguredError(
                    f"the 'llm' service is not configured: {HOW_TO_CONFIGURE}"
                )
            timeout_s = (
                timeout_s
                if timeout_s is not None
                else (env.timeout_s if env is not None else DEFAULT_TIMEOUT_S)
            )
            max_retries = (
                max_retries
                if max_retries is not None
                else (env.max_retries if env is not None else DEFAULT_MAX_RETRIES)
            )
            if (
                isinstance(timeout_s, bool)
                or not isinstance(timeout_s, int | float)
                or not timeout_s > 0
            ):
                raise ValueError(
                    f"timeout_s must be a positive number of seconds, got {timeout_s!r}"
                )
            if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
                raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
            profile = LLMProfile(
                name=env.name if env is not None else DEFAULT_PROFILE,
                provider=(provider or (env.provider if env is not None else "openai")).lower(),
                model=model or (env.model if env is not None else DEFAULT_MODEL),
                embed_model=embed_model or (env.embed_model if env is not None else None),
                base_url=base_url or OPENAI_BASE_URL,
                api_key=Secret(api_key) if api_key else None,
                timeout_s=float(timeout_s),
                max_retries=max_retries,
                reasoning_effort=reasoning_effort
                or (env.reasoning_effort if env is not None else None),
                source="service",
            )
        self.profile: LLMProfile = profile
        self.default_headers: dict[str, str] = dict(default_headers or {})
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # None: unknown; False: the endpoint rejected stream_options (don't send it again).
        self._stream_usage_ok: bool | None = None

    # settings, readable ---------------------------------------------------------------
    @property
    def profile_name(self) -> str:
        """The profile's name."""
        return self.profile.name

    @property
    def provider(self) -> str:
        """The provider (``openai``, ``vllm``, ...)."""
        return self.profile.provider

    @property
    def model(self) -> str:
        """The default chat model."""
        return self.profile.model

    @property
    def embed_model(self) -> str | None:
        """The embeddings model of the profile (None: ``EMBED_MODEL`` or the default)."""
        return self.profile.embed_model

    @property
    def base_url(self) -> str:
        """The endpoint's API root."""
        return self.profile.base_url

    @property
    def api_key(self) -> Secret:
        """The key sent (a str whose repr is ``'***'``)."""
        return Secret(self.profile.key_to_send)

    @property
    def timeout_s(self) -> float:
        """Seconds per request attempt."""
        return self.profile.timeout_s

    @property
    def max_retries(self) -> int:
        """Retries of failed requests."""
        return self.profile.max_retries

    def __repr__(self) -> str:
        return (
            f"LLMService(profile={self.profile.name!r}, base_url={self.base_url!r}, "
            f"model={self.model!r})"
        )

    # plumbing ---------------------------------------------------------------------------
    def _client(self) -> AsyncOpenAI:
        """The ``AsyncOpenAI`` client of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                import openai

                client = openai.AsyncOpenAI(
                    api_key=self.profile.key_to_send,
                    base_url=self.base_url,
                    timeout=openai.Timeout(
                        self.timeout_s, connect=min(DEFAULT_CONNECT_TIMEOUT_S, self.timeout_s)
                    ),
                    max_retries=self.max_retries,
                    default_headers=self.default_headers or None,
                )
                self._clients[loop] = client
            return client

    @property
    def client(self) -> AsyncOpenAI:
        """The official ``openai.AsyncOpenAI`` client of this profile for the running loop
        (the raw client, for APIs this service does not wrap)."""
        return self._client()

    def _translate(self, exc: BaseException, model: str | None) -> LLMError | None:
        return translate(
            exc,
            profile=self.profile.name,
            base_url=self.base_url,
            model=model,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            secrets=[self.profile.api_key, *self.default_headers.values()],
        )

    def _params(
        self, messages: Any, kw: dict[str, Any], headers: Mapping[str, str] | None
    ) -> tuple[dict[str, Any], OutputSpec, str | None]:
        """Validate the input and build ``create`` keywords (no network):
        ``(params, output spec, call name)``."""
        kw = dict(kw)
        if "stream" in kw:
            raise TypeError(
                "chat() does not stream: use chat_stream(...) or `async for delta in "
                "llm.stream(...)`"
            )
        msgs = validate_messages(messages)
        model = kw.pop("model", None) or self.model
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, got {model!r}")
        spec, response_format = output_spec(
            output_format=kw.pop("output_format", "text"),
            json_schema=kw.pop("json_schema", None),
            response_format=kw.pop("response_format", None),
            schema_name=kw.pop("schema_name", "output"),
            strict_schema=kw.pop("strict_schema", True),
            validate_json=kw.pop("validate_json", True),
        )
        call_name = kw.pop("call_name", None)
        for ignored in (
            "fail_on_unsupported",
            "trace_payload",
            "thinking_mode",
            "thinking_budget",
            "reasoning_summary",
            "thinking",
        ):
            kw.pop(ignored, None)
        effort = kw.pop("reasoning_effort", None) or self.profile.reasoning_effort
        max_output = kw.pop("max_output_tokens", None)
        reasoning_params, reasoning_body = _reasoning(self.provider, effort)
        params: dict[str, Any] = {
            "model": model,
            "messages": with_json_directive(msgs, spec),
            **reasoning_params,
        }
        if response_format is not None:
            params["response_format"] = response_format
        if max_output is not None and "max_tokens" not in kw and "max_completion_tokens" not in kw:
            key = "max_completion_tokens" if self.provider == "openai" else "max_tokens"
            params[key] = max_output
        known = _create_params()
        extra_body = {**reasoning_body, **dict(kw.pop("extra_body", None) or {})}
        for key, value in kw.items():
            if key in known:
                params[key] = value
            else:  # server-specific sampling options (top_k, repetition_penalty, ...)
                extra_body[key] = value
        if extra_body:
            params["extra_body"] = extra_body
        if headers:
            params["extra_headers"] = {**headers, **(params.get("extra_headers") or {})}
        return params, spec, call_name

    def _preview(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """What a step shows of a request: profile, model, messages and options, never
        headers or anything named like a secret."""
        shown = {k: v for k, v in params.items() if k not in ("extra_headers", "timeout")}
        return _redacted({"profile": self.profile.name, **shown})

    # API --------------------------------------------------------------------------------
    async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict[str, Any]]:
        """Send a chat request and return ``(text, usage)`` (as a15's ``chat``).

        Args:
          messages: ``[{"role": "system"|"user"|"assistant"|..., "content": str}, ...]``.
          output_format: ``"text"`` (default), ``"json"`` / ``"json_object"`` (sent as
            ``response_format={"type": "json_object"}``), ``"json_schema"``, ``"raw"``
            (the whole response as JSON text), or a pydantic model class.
          json_schema: a JSON Schema dict or a pydantic model class: sent as
            ``response_format={"type": "json_schema", ...}``; the answer is checked
            against it (``strict_schema``, default True) and returned as canonical JSON
            text (``Model.model_validate_json(text)`` gives the object).
          schema_name (str), strict_schema (bool), validate_json (bool): as a15.
          reasoning_effort: ``"minimal" | "low" | "medium" | "high"`` (a15's ``"xhigh"`` /
            ``"max"`` are sent as ``"high"`` to OpenAI), sent as the chat API's
            ``reasoning_effort`` (OpenRouter: ``reasoning.effort``).
          max_output_tokens: sent as ``max_completion_tokens`` (OpenAI) / ``max_tokens``.
          model, temperature, top_p, stop, tools, tool_choice, seed, response_format,
            extra_headers, timeout (seconds, this call)...: passed through; keywords the
            OpenAI API does not define (e.g. ``top_k``) go in the request body as they are.

        Returns:
          ``text`` (str) and ``usage``: the endpoint's usage dict with its own keys
          (``prompt_tokens``, ``completion_tokens``, ``total_tokens``, ...; ``{}`` when it
          sent none).

        Raises:
          TypeError, ValueError: bad ``messages`` / keywords, before any request.
          LLMConnectionError / LLMTimeoutError: the endpoint could not be reached / did not
            answer in time. LLMAuthError (401/403), LLMModelNotFoundError (404 model),
            LLMRateLimitError (429), LLMHTTPError (other 4xx/5xx): each names the profile,
            the URL and what to do. LLMOutputError: the answer is not the JSON asked for.
          LLMError: the answer was not a chat completion.
        """
        return await self._chat(messages, kw, None, None)

    async def _chat(
        self,
        messages: Any,
        kw: dict[str, Any],
        headers: Mapping[str, str] | None,
        record: Recorder | None,
    ) -> tuple[str, dict[str, Any]]:
        params, spec, call_name = self._params(messages, kw, headers)
        model = params["model"]
        started, t0 = datetime.now(UTC), time.perf_counter()
        usage: dict[str, Any] = {}
        text = ""
        response_model = None
        try:
            try:
                resp = await self._client().chat.completions.create(**params)
            except Exception as exc:
                err = self._translate(exc, model)
                if err is None:
                    raise
                raise err from None  # the cause may quote a key
            choices = getattr(resp, "choices", None)
            if not isinstance(choices, list):
                raise LLMError(
                    f"LLM profile {self.profile.name!r}: the endpoint at {self.base_url} did "
                    f"not answer with a chat completion (got {str(resp)[:200]!r}); check that "
                    f"its base URL ({ENV_BASE_URL} / BASE_URL) is the API root, usually "
                    "ending in /v1",
                    base_url=self.base_url,
                    model=model,
                    profile=self.profile.name,
                )
            usage = usage_dict(getattr(resp, "usage", None))
            response_model = getattr(resp, "model", None)
            if spec.fmt == "raw":
                text = json.dumps(resp.model_dump(mode="json"), ensure_ascii=False)
            elif choices:
                message = getattr(choices[0], "message", None)
                text = getattr(message, "content", None) or ""
            text = validate_answer(
                text, spec, base_url=self.base_url, model=model, profile=self.profile.name
            )
        except BaseException as exc:
            if record is not None:
                record(call_name or "chat", params, text, usage, started, t0, exc, response_model)
            raise
        if record is not None:
            record(call_name or "chat", params, text, usage, started, t0, None, response_model)
        return text, usage

    async def chat_stream(
        self,
        messages: list[dict[str, Any]],
        *,
        on_delta: Callable[[str], Awaitable[Any] | Any] | None = None,
        on_thinking_delta: Callable[[str], Awaitable[Any] | Any] | None = None,
        **kw: Any,
    ) -> tuple[str, dict[str, Any]]:
        """Stream a chat and return ``(text, usage)`` at the end (a15's ``chat_stream``);
        ``on_delta(text_delta)`` (sync or async) is called for each piece as it arrives.
        The endpoint is asked for the usage (``stream_options={"include_usage": true}``).
        Keywords and errors: as :meth:`chat`; streams are text only (as a15).

        Raises:
          ValueError: for a structured ``output_format`` / ``json_schema``.
        """
        return await self._chat_stream(messages, kw, None, None, on_delta)

    async def _chat_stream(
        self,
        messages: Any,
        kw: dict[str, Any],
        headers: Mapping[str, str] | None,
        record: Recorder | None,
        on_delta: Callable[[str], Any] | None,
    ) -> tuple[str, dict[str, Any]]:
        kw = dict(kw)
        fmt = kw.get("output_format", "text")
        if fmt != "text" or kw.get("json_schema") is not None:
            raise ValueError(
                "chat_stream() streams text only (as AetherGraph's): use chat(..., "
                "output_format=...) for JSON answers"
            )
        stream = self._stream(messages, kw, headers, record, name="chat_stream")
        async with stream:
            async for delta in stream:
                if on_delta is not None:
                    result = on_delta(delta)
                    if inspect.isawaitable(result):
                        await result
        return stream.text, stream.usage

    def stream(self, messages: list[dict[str, Any]], **kw: Any) -> ChatStream:
        """Stream a chat completion: ``async for delta in llm.stream(messages): ...``.

        The input is checked here; the request is sent when iteration starts. The returned
        :class:`ChatStream` yields text deltas (str) in order; afterwards its ``text`` is
        their concatenation and ``usage`` the endpoint's usage if it sent it (requested with
        ``stream_options={"include_usage": True}`` unless ``stream_options`` is given; an
        endpoint that rejects that option is asked again without it).

        Args and errors: as :meth:`chat` (errors other than TypeError/ValueError are raised
        while iterating).
        """
        return self._stream(messages, kw, None, None)

    def _stream(
        self,
        messages: Any,
        kw: dict[str, Any],
        headers: Mapping[str, str] | None,
        record: Recorder | None,
        *,
        name: str = "stream",
    ) -> ChatStream:
        kw = dict(kw)
        if kw.pop("stream", True) is not True:
            raise TypeError("stream() always streams: use chat() for a single answer")
        auto_usage = "stream_options" not in kw
        params, spec, call_name = self._params(messages, kw, headers)
        if spec.fmt != "text":
            raise ValueError("streams are text only: use chat(..., output_format=...)")
        return ChatStream(self, params, auto_usage, record, call_name or name)

    async def embed(self, texts: Sequence[str], **kw: Any) -> list[list[float]]:
        """Embeddings of ``texts`` from the embeddings API, in order (a15's ``embed``).

        The model: ``model=``, else the profile's ``embed_model``
        (``AETHERGRAPH_LLM__<PROFILE>__EMBED_MODEL``), else ``EMBED_MODEL``, else
        ``text-embedding-3-small``. Other keywords (``dimensions``, ``extra_headers``...)
        are passed through.

        Raises:
          TypeError: if ``texts`` is a single str or holds a non-str.
          ValueError: if it is empty. The LLM errors of :meth:`chat`.
        """
        return await self._embed(texts, kw, None, None)

    async def _embed(
        self,
        texts: Any,
        kw: dict[str, Any],
        headers: Mapping[str, str] | None,
        record: Recorder | None,
    ) -> list[list[float]]:
        if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
            raise TypeError(
                f"embed() takes a list of str, got {type(texts).__name__} (wrap one text as [text])"
            )
        items = list(texts)
        if not items:
            raise ValueError("embed() needs at least one text")
        for i, text in enumerate(items):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(text).__name__}")
        kw = dict(kw)
        model = (
            kw.pop("model", None)
            or self.embed_model
            or os.environ.get(ENV_EMBED_MODEL)
            or DEFAULT_EMBED_MODEL
        )
        kw.setdefault("encoding_format", "float")
        if headers:
            kw["extra_headers"] = {**headers, **(kw.get("extra_headers") or {})}
        params = {"model": model, "input": items, **kw}
        started, t0 = datetime.now(UTC), time.perf_counter()
        usage: dict[str, Any] = {}
        try:
            try:
                resp = await self._client().embeddings.create(**params)
            except Exception as exc:
                err = self._translate(exc, model)
                if err is None:
                    raise
                raise err from None  # the cause may quote a key
            usage = usage_dict(getattr(resp, "usage", None))
            vectors = [list(d.embedding) for d in sorted(resp.data, key=lambda d: d.index)]
        except BaseException as exc:
            if record is not None:
                record("embed", params, None, usage, started, t0, exc, None)
            raise
        if record is not None:
            record(
                "embed",
                params,
                f"{len(vectors)} vectors",
                usage,
                started,
                t0,
                None,
                getattr(resp, "model", None),
            )
        return vectors

    async def raw(
        self,
        *,
        method: str = "POST",
        path: str | None = None,
        url: str | None = None,
        json: Any | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        return_response: bool = False,
    ) -> Any:
        """A low-level HTTP request to this profile's endpoint with its key (a15's
        ``raw``): ``await llm.raw(method="GET", path="models")``. Returns the decoded JSON
        (the ``httpx.Response`` with ``return_response=True``).

        ``url`` must be on the profile's own endpoint (same scheme, host and port): the
        request carries the API key, which is never sent elsewhere (a15 sends it to any
        URL). Calls through ``raw`` are not counted in token usage.

        Raises:
          ValueError: neither ``path`` nor ``url``, or a ``url`` on another host.
          The LLM errors of :meth:`chat`.
        """
        import httpx

        if not url and not path:
            raise ValueError("Either `url` or `path` must be provided to raw().")
        target = path or ""
        if url:
            ours, theirs = urlparse(self.base_url), urlparse(url)
            if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
                raise ValueError(
                    f"raw(url={url!r}) would send profile {self.profile.name!r}'s API key to "
                    f"another host than its endpoint {self.base_url}; call that host with "
                    "httpx yourself"
                )
            target = url
        options: dict[str, Any] = {}
        if params:
            options["params"] = dict(params)
        if headers:
            options["headers"] = dict(headers)
        verb = method.lower()
        client = self._client()
        cast: Any = httpx.Response if return_response else object
        try:
            if verb in ("get", "delete"):
                return await getattr(client, verb)(target, cast_to=cast, options=options)
            if verb in ("post", "put", "patch"):
                return await getattr(client, verb)(target, cast_to=cast, body=json, options=options)
        except Exception as exc:
            err = self._translate(exc, None)
            if err is None:
                raise
            raise err from None  # the cause may quote a key
        raise ValueError(f"raw() method must be GET, POST, PUT, PATCH or DELETE, got {method!r}")

    def bind(self, context: Any) -> BoundLLM:
        """A view that tags every request with the context's run and session ids
        (headers ``X-AG-Run-Id`` / ``X-AG-Session-Id``) and records each call as a step
        of its run. Used by ``context.llm()``."""
        headers: dict[str, str] = {}
        run_id = getattr(context, "run_id", None)
        session_id = getattr(context, "session_id", None)
        if run_id:
            headers[RUN_ID_HEADER] = str(run_id)
        if session_id:
            headers[SESSION_ID_HEADER] = str(session_id)
        return BoundLLM(self, headers, context)

    async def aclose(self) -> None:
        """Close the HTTP connections (of the running loop's client; others are dropped).

        The service stays usable: the next call opens a new client.
        """
        with self._lock:
            clients, self._clients = dict(self._clients), weakref.WeakKeyDictionary()
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        client = clients.get(loop) if loop is not None else None
        if client is not None:
            await client.close()


# ---------------------------------------------------------------------------- bound view
class BoundLLM:
    """``context.llm()``: an :class:`LLMService` whose requests carry the run's ids and
    whose calls are steps of the run (``kind="llm"``, with the model, profile, prompt /
    completion / cached tokens, latency in seconds and cost in ``extra``; summed into the
    run's ``meta["usage"]`` when it finishes).

    Same API as the service: :meth:`chat`, :meth:`chat_stream`, :meth:`stream`,
    :meth:`embed`, :meth:`raw`; ``model``, ``base_url``, ``profile``, ``client`` and
    ``service`` (the :class:`LLMService`) as attributes.
    """

    __slots__ = ("_context", "headers", "service")

    def __init__(
        self, service: LLMService, headers: Mapping[str, str], context: Any = None
    ) -> None:
        self.service = service
        self.headers = dict(headers)
        self._context = context

    @property
    def model(self) -> str:
        """The default model name."""
        return self.service.model

    @property
    def base_url(self) -> str:
        """The endpoint's API root."""
        return self.service.base_url

    @property
    def profile(self) -> str:
        """The profile's name."""
        return self.service.profile.name

    @property
    def provider(self) -> str:
        """The provider."""
        return self.service.provider

    @property
    def client(self) -> AsyncOpenAI:
        """The raw ``openai.AsyncOpenAI`` client (its calls are not recorded)."""
        return self.service.client

    def __repr__(self) -> str:
        return f"BoundLLM({self.service!r}, run_id={self.headers.get(RUN_ID_HEADER)!r})"

    def _record(
        self,
        name: str,
        params: Mapping[str, Any],
        output: Any,
        usage: Mapping[str, Any],
        started: datetime,
        t0: float,
        error: BaseException | None,
        response_model: str | None,
    ) -> None:
        ctx = self._context
        services = getattr(ctx, "services", None)
        record_step = getattr(services, "record_step", None)
        run_id = getattr(ctx, "run_id", None)
        if not callable(record_step) or not run_id:
            return
        latency = time.perf_counter() - t0
        extra = None
        if usage or error is None or isinstance(error, LLMOutputError):
            prompt, completion, cached = usage_numbers(usage)
            model = str(params.get("model"))
            extra = {
                "model": model,
                "profile": self.service.profile.name,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached_tokens": cached,
                "latency_s": round(latency, 6),
                "cost": call_cost(model, prompt, completion, cached, response_model=response_model),
                "session_id": getattr(ctx, "session_id", None),
            }
        try:
            record_step(
                make_step(
                    run_id=str(run_id),
                    kind="llm",
                    name=name,
                    inputs=self.service._preview(params),
                    outputs=output,
                    started_at=started,
                    duration_s=latency,
                    error=error,
                    extra=extra,
                )
            )
        except Exception:  # a step that cannot be kept never fails the call
            import logging

            logging.getLogger("ag_jupyter.runtime").exception("could not record an LLM step")

    async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict[str, Any]]:
        """``(text, usage)`` for ``messages``; see :meth:`LLMService.chat`."""
        return await self.service._chat(messages, kw, self.headers, self._record)

    async def chat_stream(
        self,
        messages: list[dict[str, Any]],
        *,
        on_delta: Callable[[str], Any] | None = None,
        on_thinking_delta: Callable[[str], Any] | None = None,
        **kw: Any,
    ) -> tuple[str, dict[str, Any]]:
        """Streamed ``(text, usage)``; see :meth:`LLMService.chat_stream`."""
        return await self.service._chat_stream(messages, kw, self.headers, self._record, on_delta)

    def stream(self, messages: list[dict[str, Any]], **kw: Any) -> ChatStream:
        """Text deltas for ``messages``; see :meth:`LLMService.stream`."""
        return self.service._stream(messages, kw, self.headers, self._record)

    async def embed(self, texts: Sequence[str], **kw: Any) -> list[list[float]]:
        """Embeddings of ``texts``; see :meth:`LLMService.embed`."""
        return await self.service._embed(texts, kw, self.headers, self._record)

    async def raw(self, **kw: Any) -> Any:
        """A low-level request; see :meth:`LLMService.raw`."""
        headers = {**self.headers, **dict(kw.pop("headers", None) or {})}
        return await self.service.raw(headers=headers, **kw)


def _rejects_stream_options(exc: BaseException) -> bool:
    """Whether an error says the endpoint does not accept ``stream_options``."""
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422):
        return False
    text = (str(exc) + " " + json.dumps(exc.body, default=str)).lower()
    return "stream_options" in text or "include_usage" in text


class ChatStream:
    """An async iterator of text deltas from a streamed chat completion.

    Use ``async for delta in stream`` (once). Afterwards: ``text`` (str, all deltas joined),
    ``usage`` (dict, ``{}`` if the endpoint sent none), ``finish_reason`` (str | None). Also
    an async context manager; :meth:`aclose` stops reading and closes the connection.

    Iteration raises the errors listed in :meth:`LLMService.chat`.
    """

    def __init__(
        self,
        service: LLMService,
        params: dict[str, Any],
        auto_usage: bool,
        record: Recorder | None = None,
        name: str = "stream",
    ) -> None:
        self._service = service
        self._params = params
        self._auto_usage = auto_usage
        self._record = record
        self._name = name
        self._parts: list[str] = []
        self._recorded = False
        self._started = datetime.now(UTC)
        self._t0 = time.perf_counter()
        self._response_model: str | None = None
        self.usage: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.model: str = params["model"]
        self._gen = self._run()

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        return await self._gen.__anext__()

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and release its connection."""
        await self._gen.aclose()
        self._done(None)

    async def collect(self) -> tuple[str, dict[str, Any]]:
        """Read the rest of the stream and return ``(text, usage)`` like ``chat()``."""
        async for _ in self:
            pass
        return self.text, self.usage

    def _done(self, error: BaseException | None) -> None:
        if self._recorded or self._record is None:
            return
        self._recorded = True
        self._record(
            self._name,
            self._params,
            self.text,
            self.usage,
            self._started,
            self._t0,
            error,
            self._response_model,
        )

    async def _open(self) -> Any:
        svc = self._service
        client = svc._client()
        params = dict(self._params)
        want_usage = self._auto_usage and svc._stream_usage_ok is not False
        if want_usage:
            params["stream_options"] = {"include_usage": True}
        self._started, self._t0 = datetime.now(UTC), time.perf_counter()
        try:
            return await client.chat.completions.create(stream=True, **params)
        except Exception as exc:
            if not (want_usage and _rejects_stream_options(exc)):
                err = svc._translate(exc, self.model)
                if err is None:
                    raise
                raise err from None  # the cause may quote a key
            svc._stream_usage_ok = False
        params.pop("stream_options", None)
        try:
            return await client.chat.completions.create(stream=True, **params)
        except Exception as exc:
            err = svc._translate(exc, self.model)
            if err is None:
                raise
            raise err from None  # the cause may quote a key

    async def _run(self) -> AsyncIterator[str]:
        svc = self._service
        try:
            stream = await self._open()
        except BaseException as exc:
            self._done(exc)
            raise
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    self.usage = usage_dict(usage)
                self._response_model = getattr(chunk, "model", None) or self._response_model
                for choice in getattr(chunk, "choices", None) or []:
                    if getattr(choice, "index", 0) != 0:
                        continue
                    if choice.finish_reason:
                        self.finish_reason = choice.finish_reason
                    delta = getattr(choice.delta, "content", None) if choice.delta else None
                    if delta:
                        self._parts.append(delta)
                        yield delta
        except Exception as exc:
            err = svc._translate(exc, self.model)
            self._done(err or exc)
            if err is None:
                raise
            raise err from None  # the cause may quote a key
        finally:
            await stream.close()
        if self._auto_usage and self.usage and svc._stream_usage_ok is None:
            svc._stream_usage_ok = True
        self._done(None)
