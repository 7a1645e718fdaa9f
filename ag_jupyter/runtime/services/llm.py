"""The ``llm()`` service: an OpenAI-compatible chat client (OpenAI, vLLM, Ollama, LM Studio...).

``context.llm()`` returns an :class:`LLMService` bound to the context::

    txt, usage = await context.llm().chat([{"role": "user", "content": "Hi"}])
    async for delta in context.llm().stream([{"role": "user", "content": "Hi"}]):
        print(delta, end="")

Configuration, read when ``context.llm()`` is called (so variables set after import count):

- ``OPENAI_API_KEY``: the API key (sent as ``Authorization: Bearer <key>``).
- ``OPENAI_BASE_URL``: the server's API root, e.g. ``http://localhost:11434/v1`` (Ollama),
  ``http://localhost:8000/v1`` (vLLM), ``http://localhost:1234/v1`` (LM Studio). Default
  ``https://api.openai.com/v1``. Local servers usually ignore the key, but the client must send
  one: when ``OPENAI_BASE_URL`` is set and ``OPENAI_API_KEY`` is not, the placeholder key
  ``"not-needed"`` is sent.
- ``AG_LLM_MODEL`` (fallback ``OPENAI_MODEL``): the model name (default ``gpt-4o-mini``).
- ``AG_LLM_TIMEOUT_S`` (seconds, default 120) and ``AG_LLM_MAX_RETRIES`` (default 1).

With neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` set, ``context.llm()`` raises
:class:`~ag_jupyter.runtime.errors.ServiceNotConfiguredError` at once: there is no network
time-out. The ``openai`` package is imported on first use only.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import threading
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..errors import (
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMTimeoutError,
    ServiceNotConfiguredError,
)

if TYPE_CHECKING:
    from openai import AsyncOpenAI

__all__ = [
    "DEFAULT_MODEL",
    "PLACEHOLDER_API_KEY",
    "BoundLLM",
    "ChatStream",
    "EnvLLMProvider",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMService",
    "LLMTimeoutError",
    "llm_settings_from_env",
    "validate_messages",
]

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_RETRIES = 1
PLACEHOLDER_API_KEY = "not-needed"
"""Key sent to a server given by ``OPENAI_BASE_URL`` when no ``OPENAI_API_KEY`` is set."""

RUN_ID_HEADER = "X-AG-Run-Id"
SESSION_ID_HEADER = "X-AG-Session-Id"

ENV_API_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_MODEL = "AG_LLM_MODEL"
ENV_MODEL_FALLBACK = "OPENAI_MODEL"
ENV_TIMEOUT = "AG_LLM_TIMEOUT_S"
ENV_MAX_RETRIES = "AG_LLM_MAX_RETRIES"

HOW_TO_CONFIGURE = (
    f"set {ENV_API_KEY} (OpenAI), or {ENV_BASE_URL} (an OpenAI-compatible server such as "
    f"vLLM, Ollama or LM Studio, e.g. http://localhost:11434/v1; no key needed) and "
    f"{ENV_MODEL} (the model name), or pass open_session(llm=LLMService(api_key=..., "
    "base_url=..., model=...))"
)


def _server_message(body: Any) -> str:
    """The human message inside an error body (OpenAI, Ollama, FastAPI shapes), else its text."""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if key in body:
                val = body[key]
                return val if isinstance(val, str) else json.dumps(val, default=str)[:500]
        return json.dumps(body, default=str)[:500]
    if body is None:
        return "(no body)"
    text = str(body).strip()
    return text[:500] or "(empty body)"


def _translate_error(exc: BaseException, base_url: str, model: str | None) -> LLMError | None:
    """Map an ``openai`` exception to an :class:`LLMError` naming the server; else None."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return LLMTimeoutError(
            f"the LLM server at {base_url} did not answer in time (model {model!r}); raise "
            f"the time-out with {ENV_TIMEOUT} / LLMService(timeout_s=...) or check the server",
            base_url=base_url,
            model=model,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        return LLMConnectionError(
            f"cannot reach the LLM server at {base_url} ({detail}); is it running, and is "
            f"{ENV_BASE_URL} right?",
            base_url=base_url,
            model=model,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        msg = _server_message(exc.body)
        hint = ""
        if status == 401:
            hint = f" (check {ENV_API_KEY})"
        elif status == 404:
            hint = (
                f" (check that {ENV_BASE_URL} includes the API prefix, usually /v1, and that "
                f"the model exists; set it with {ENV_MODEL})"
            )
        return LLMHTTPError(
            f"the LLM server at {base_url} answered HTTP {status} for model {model!r}: {msg}{hint}",
            base_url=base_url,
            model=model,
            status_code=status,
            server_message=msg,
            body=exc.body,
        )
    if isinstance(exc, openai.APIError):  # e.g. an error event inside a stream
        msg = _server_message(exc.body) if exc.body is not None else exc.message
        return LLMError(
            f"the LLM server at {base_url} reported an error for model {model!r}: {msg}",
            base_url=base_url,
            model=model,
        )
    return None


# ---------------------------------------------------------------------------- settings
def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def llm_settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The LLM settings given by environment variables, or None if none configure a server.

    Args:
      environ: the variables to read (default ``os.environ``).

    Returns ``{"api_key", "base_url", "model", "timeout_s", "max_retries"}`` (values None when
    unset), or None when neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` is set.

    Raises:
      ValueError: if ``AG_LLM_TIMEOUT_S`` or ``AG_LLM_MAX_RETRIES`` is not a number.
    """
    env = os.environ if environ is None else environ
    api_key = _env(env, ENV_API_KEY)
    base_url = _env(env, ENV_BASE_URL)
    if api_key is None and base_url is None:
        return None
    timeout_s: float | None = None
    max_retries: int | None = None
    if (raw := _env(env, ENV_TIMEOUT)) is not None:
        try:
            timeout_s = float(raw)
        except ValueError:
            raise ValueError(f"{ENV_TIMEOUT} must be a number of seconds, got {raw!r}") from None
    if (raw := _env(env, ENV_MAX_RETRIES)) is not None:
        try:
            max_retries = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_MAX_RETRIES} must be an integer, got {raw!r}") from None
    return {
        "api_key": api_key,
        "base_url": base_url,
        "model": _env(env, ENV_MODEL) or _env(env, ENV_MODEL_FALLBACK),
        "timeout_s": timeout_s,
        "max_retries": max_retries,
    }


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
            ok = isinstance(content, str | list) or (content is None and tool_call)
            if not ok:
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


def _usage_dict(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    if hasattr(usage, "model_dump"):
        data = usage.model_dump(mode="json", exclude_none=True)
    elif isinstance(usage, Mapping):
        data = dict(usage)
    else:
        return {}
    return {k: v for k, v in data.items() if v is not None}


# ----------------------------------------------------------------------------- service
class LLMService:
    """An OpenAI-compatible chat-completions client (the ``llm()`` service).

    Args (keyword-only; each None falls back to its environment variable when ``use_env``,
    then to the default):
      api_key (str): API key, ``OPENAI_API_KEY``. When only ``base_url`` is known the
        placeholder ``"not-needed"`` is sent (local servers ignore it).
      base_url (str): API root such as ``http://localhost:8000/v1``, ``OPENAI_BASE_URL``;
        default ``https://api.openai.com/v1``.
      model (str): default model, ``AG_LLM_MODEL`` then ``OPENAI_MODEL``; default
        ``gpt-4o-mini``. A ``model=`` keyword on a call overrides it.
      timeout_s (float, seconds): time-out of one request attempt, ``AG_LLM_TIMEOUT_S``;
        default 120 (connecting gets at most 10 s of it).
      max_retries (int): retries of connection errors, 408/409/429 and 5xx answers,
        ``AG_LLM_MAX_RETRIES``; default 1.
      default_headers (dict): extra HTTP headers sent with every request.
      use_env (bool): read the environment for missing arguments (default True).

    Raises:
      ServiceNotConfiguredError: neither an API key nor a base URL was given or found in the
        environment (raised here, before any network activity).
      ValueError: non-positive ``timeout_s`` or negative ``max_retries``.

    The ``openai`` client is created lazily, one per event loop, and reopened after
    :meth:`aclose`, so the service stays usable.
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
        use_env: bool = True,
    ) -> None:
        env = (llm_settings_from_env() or {}) if use_env else {}
        api_key = api_key if api_key is not None else env.get("api_key")
        base_url = base_url if base_url is not None else env.get("base_url")
        if not api_key and not base_url:
            raise ServiceNotConfiguredError(
                f"the 'llm' service is not configured: {HOW_TO_CONFIGURE}"
            )
        model = model if model is not None else env.get("model")
        timeout_s = timeout_s if timeout_s is not None else env.get("timeout_s")
        max_retries = max_retries if max_retries is not None else env.get("max_retries")
        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        max_retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        self.api_key: str = api_key or PLACEHOLDER_API_KEY
        self.base_url: str = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.model: str = model or DEFAULT_MODEL
        self.timeout_s: float = float(timeout_s)
        self.max_retries: int = max_retries
        self.default_headers: dict[str, str] = dict(default_headers or {})
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncOpenAI] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # None: unknown; False: the server rejected stream_options (don't send it again).
        self._stream_usage_ok: bool | None = None

    def __repr__(self) -> str:
        return f"LLMService(base_url={self.base_url!r}, model={self.model!r})"

    # -- plumbing ------------------------------------------------------------------------
    def _client(self) -> AsyncOpenAI:
        """The ``AsyncOpenAI`` client of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                import openai

                client = openai.AsyncOpenAI(
                    api_key=self.api_key,
                    base_url=self.base_url,
                    timeout=openai.Timeout(
                        self.timeout_s, connect=min(DEFAULT_CONNECT_TIMEOUT_S, self.timeout_s)
                    ),
                    max_retries=self.max_retries,
                    default_headers=self.default_headers or None,
                )
                self._clients[loop] = client
            return client

    def _params(
        self,
        messages: Any,
        kw: dict[str, Any],
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """Validate the input and build ``create`` keywords (no network)."""
        if "stream" in kw:
            raise TypeError("chat() does not stream: use `async for delta in llm.stream(...)`")
        msgs = validate_messages(messages)
        model = kw.pop("model", None) or self.model
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, got {model!r}")
        known = _create_params()
        params: dict[str, Any] = {"model": model, "messages": msgs}
        extra_body = dict(kw.pop("extra_body", None) or {})
        for key, value in kw.items():
            if key in known:
                params[key] = value
            else:  # server-specific sampling options (top_k, repetition_penalty, ...)
                extra_body[key] = value
        if extra_body:
            params["extra_body"] = extra_body
        if headers:
            params["extra_headers"] = {**headers, **(params.get("extra_headers") or {})}
        return params

    def _translate(self, exc: BaseException, model: str | None) -> LLMError | None:
        return _translate_error(exc, self.base_url, model)

    # -- API -----------------------------------------------------------------------------
    async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict[str, Any]]:
        """Send a chat-completions request and return ``(text, usage)``.

        Args:
          messages: ``[{"role": "system"|"user"|"assistant"|..., "content": str}, ...]``.
          **kw: passed to the server: ``model`` (overrides the default), ``temperature``,
            ``max_tokens``, ``top_p``, ``stop``, ``response_format``, ``tools``, ``seed``,
            ``extra_headers``, ``timeout`` (seconds, this call only)... Keywords the OpenAI
            API does not define (e.g. ``top_k``) are sent in the request body as they are.

        Returns:
          ``text`` (str, the first choice's content; "" if it has none) and ``usage``
          (dict with ``prompt_tokens``, ``completion_tokens``, ``total_tokens``; ``{}`` when
          the server omits it).

        Raises:
          TypeError, ValueError: bad ``messages`` or ``stream=``, before any request.
          LLMConnectionError: the server could not be reached (names the base URL).
          LLMTimeoutError: no answer within ``timeout_s`` seconds.
          LLMHTTPError: the server answered 4xx/5xx (``status_code``, ``server_message``).
          LLMError: the answer was not a chat completion.
        """
        return await self._chat(messages, kw, None)

    async def _chat(
        self, messages: Any, kw: dict[str, Any], headers: Mapping[str, str] | None
    ) -> tuple[str, dict[str, Any]]:
        params = self._params(messages, dict(kw), headers)
        client = self._client()
        try:
            resp = await client.chat.completions.create(**params)
        except Exception as exc:
            err = self._translate(exc, params["model"])
            if err is None:
                raise
            raise err from exc
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list):
            raise LLMError(
                f"the server at {self.base_url} did not answer with a chat completion (got "
                f"{str(resp)[:200]!r}); check that {ENV_BASE_URL} is the API root, usually "
                "ending in /v1",
                base_url=self.base_url,
                model=params["model"],
            )
        text = ""
        if choices:
            message = getattr(choices[0], "message", None)
            text = getattr(message, "content", None) or ""
        return text, _usage_dict(getattr(resp, "usage", None))

    def stream(self, messages: list[dict[str, Any]], **kw: Any) -> ChatStream:
        """Stream a chat completion: ``async for delta in llm.stream(messages): ...``.

        The input is checked here; the request is sent when iteration starts. The returned
        :class:`ChatStream` yields text deltas (str) in order; afterwards its ``text`` is their
        concatenation and ``usage`` the token counts if the server sent them (requested with
        ``stream_options={"include_usage": True}`` unless ``stream_options`` is given; a
        server that rejects that option is asked again without it).

        Args and errors: as :meth:`chat` (errors other than TypeError/ValueError are raised
        while iterating).
        """
        return self._stream(messages, kw, None)

    def _stream(
        self, messages: Any, kw: dict[str, Any], headers: Mapping[str, str] | None
    ) -> ChatStream:
        kw = dict(kw)
        if kw.pop("stream", True) is not True:
            raise TypeError("stream() always streams: use chat() for a single answer")
        auto_usage = "stream_options" not in kw
        params = self._params(messages, kw, headers)
        return ChatStream(self, params, auto_usage)

    def bind(self, context: Any) -> BoundLLM:
        """A view that tags every request with the context's run and session ids
        (headers ``X-AG-Run-Id`` / ``X-AG-Session-Id``). Used by ``context.llm()``."""
        headers: dict[str, str] = {}
        run_id = getattr(context, "run_id", None)
        session_id = getattr(context, "session_id", None)
        if run_id:
            headers[RUN_ID_HEADER] = str(run_id)
        if session_id:
            headers[SESSION_ID_HEADER] = str(session_id)
        return BoundLLM(self, headers)

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


class BoundLLM:
    """``context.llm()``: an :class:`LLMService` whose requests carry the run's ids.

    Same API as the service: :meth:`chat`, :meth:`stream`; ``model``, ``base_url`` and
    ``service`` (the underlying :class:`LLMService`) as attributes.
    """

    __slots__ = ("headers", "service")

    def __init__(self, service: LLMService, headers: Mapping[str, str]) -> None:
        self.service = service
        self.headers = dict(headers)

    @property
    def model(self) -> str:
        """The default model name."""
        return self.service.model

    @property
    def base_url(self) -> str:
        """The server's API root."""
        return self.service.base_url

    def __repr__(self) -> str:
        return f"BoundLLM({self.service!r}, run_id={self.headers.get(RUN_ID_HEADER)!r})"

    async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict[str, Any]]:
        """``(text, usage)`` for ``messages``; see :meth:`LLMService.chat`."""
        return await self.service._chat(messages, kw, self.headers)

    def stream(self, messages: list[dict[str, Any]], **kw: Any) -> ChatStream:
        """Text deltas for ``messages``; see :meth:`LLMService.stream`."""
        return self.service._stream(messages, kw, self.headers)


def _rejects_stream_options(exc: BaseException) -> bool:
    """Whether an error says the server does not accept ``stream_options``."""
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 422):
        return False
    text = (str(exc) + " " + json.dumps(exc.body, default=str)).lower()
    return "stream_options" in text or "include_usage" in text


class ChatStream:
    """An async iterator of text deltas from a streamed chat completion.

    Use ``async for delta in stream`` (once). Afterwards: ``text`` (str, all deltas joined),
    ``usage`` (dict, ``{}`` if the server sent none), ``finish_reason`` (str | None). Also an
    async context manager; :meth:`aclose` stops reading and closes the connection.

    Iteration raises the errors listed in :meth:`LLMService.chat`.
    """

    def __init__(self, service: LLMService, params: dict[str, Any], auto_usage: bool) -> None:
        self._service = service
        self._params = params
        self._auto_usage = auto_usage
        self._parts: list[str] = []
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

    async def collect(self) -> tuple[str, dict[str, Any]]:
        """Read the rest of the stream and return ``(text, usage)`` like ``chat()``."""
        async for _ in self:
            pass
        return self.text, self.usage

    async def _open(self) -> Any:
        svc = self._service
        client = svc._client()
        params = dict(self._params)
        want_usage = self._auto_usage and svc._stream_usage_ok is not False
        if want_usage:
            params["stream_options"] = {"include_usage": True}
        try:
            return await client.chat.completions.create(stream=True, **params)
        except Exception as exc:
            if not (want_usage and _rejects_stream_options(exc)):
                err = svc._translate(exc, self.model)
                if err is None:
                    raise
                raise err from exc
            svc._stream_usage_ok = False
        params.pop("stream_options", None)
        try:
            return await client.chat.completions.create(stream=True, **params)
        except Exception as exc:
            err = svc._translate(exc, self.model)
            if err is None:
                raise
            raise err from exc

    async def _run(self) -> AsyncIterator[str]:
        svc = self._service
        stream = await self._open()
        try:
            async for chunk in stream:
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    self.usage = _usage_dict(usage)
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
            if err is None:
                raise
            raise err from exc
        finally:
            await stream.close()
        if self._auto_usage and self.usage and svc._stream_usage_ok is None:
            svc._stream_usage_ok = True


# ---------------------------------------------------------------------------- provider
class EnvLLMProvider:
    """The embedded default ``llm`` service: an :class:`LLMService` built from the
    environment when ``context.llm()`` is called.

    Variables set (or changed) after import take effect on the next ``context.llm()``; one
    service is kept per distinct configuration.

    Raises (from :meth:`bind` / :meth:`resolve`):
      ServiceNotConfiguredError: neither ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` is set.
      ValueError: a malformed ``AG_LLM_TIMEOUT_S`` / ``AG_LLM_MAX_RETRIES``.
    """

    def __init__(self) -> None:
        self._services: dict[tuple[Any, ...], LLMService] = {}
        self._lock = threading.Lock()

    def resolve(self) -> LLMService:
        """The :class:`LLMService` for the current environment."""
        settings = llm_settings_from_env()
        if settings is None:
            raise ServiceNotConfiguredError(
                f"the 'llm' service is not configured: {HOW_TO_CONFIGURE}"
            )
        key = tuple(settings[k] for k in sorted(settings))
        with self._lock:
            service = self._services.get(key)
            if service is None:
                service = LLMService(**settings, use_env=False)
                self._services[key] = service
            return service

    def bind(self, context: Any) -> BoundLLM:
        """``context.llm()``: the environment's service bound to ``context``."""
        return self.resolve().bind(context)

    async def aclose(self) -> None:
        """Close the connections of every service built so far."""
        with self._lock:
            services = list(self._services.values())
        for service in services:
            await service.aclose()
