"""Error translation, in one place: an ``openai`` exception becomes an
:class:`~ag_jupyter.runtime.errors.LLMError` naming the profile, the endpoint's URL and the
model, and saying what to do. Secrets are scrubbed from every message (an endpoint may echo
part of a key back)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ...errors import (
    LLMAuthError,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMModelNotFoundError,
    LLMRateLimitError,
    LLMTimeoutError,
)
from .settings import DEFAULT_PROFILE, ENV_API_KEY, ENV_BASE_URL, ENV_MODEL, ENV_TIMEOUT

_KEYLIKE = re.compile(r"\b(sk|pk|rk|ak)-[A-Za-z0-9_\-*.]{6,}")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every given secret, and anything that looks like an API key
    (``sk-...``), replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: m.group(1) + "-***", text)


def _var(profile: str, field: str) -> str:
    if profile == DEFAULT_PROFILE:
        return f"AETHERGRAPH_LLM__DEFAULT__{field}"
    return f"AETHERGRAPH_LLM__PROFILES__{profile.upper()}__{field}"


def server_message(body: Any) -> str:
    """The human message inside an error body (OpenAI, Ollama, FastAPI shapes), else its
    text (at most 500 characters)."""
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
    return str(body).strip()[:500] or "(empty body)"


def _error_code(body: Any) -> str:
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping):
            return str(err.get("code") or err.get("type") or "")
        return str(body.get("code") or "")
    return ""


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in ("retry-after-ms", "retry-after"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        return seconds / 1000 if name.endswith("-ms") else seconds
    return None


def translate(
    exc: BaseException,
    *,
    profile: str | None,
    base_url: str,
    model: str | None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    secrets: Iterable[str | None] = (),
) -> LLMError | None:
    """Map an ``openai`` exception to an :class:`LLMError`; None for anything else."""
    import openai

    name = profile or DEFAULT_PROFILE
    secrets = list(secrets)
    where = f"LLM profile {name!r} ({base_url}, model {model!r})"
    common: dict[str, Any] = {"base_url": base_url, "model": model, "profile": name}
    if isinstance(exc, openai.APITimeoutError):
        limit = f" within {timeout_s:g} s" if timeout_s else " in time"
        return LLMTimeoutError(
            f"{where}: the endpoint did not answer{limit}. Check that the server is up and "
            f"not overloaded, or raise the time-out ({_var(name, 'TIMEOUT')}"
            f"{', ' + ENV_TIMEOUT if name == DEFAULT_PROFILE else ''}, or "
            f"context.llm({name!r}, timeout=<seconds>))",
            **common,
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
        url_vars = f"{_var(name, 'BASE_URL')}" + (
            f" / {ENV_BASE_URL}" if name == DEFAULT_PROFILE else ""
        )
        return LLMConnectionError(
            redact(
                f"{where}: cannot reach the endpoint ({detail}). Is the server running, and "
                f"is the profile's base URL right ({url_vars})?",
                secrets,
            ),
            **common,
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        body = exc.body
        msg = redact(server_message(body), secrets)
        head = f"{where}: HTTP {status}: {msg}"
        fields: dict[str, Any] = {
            **common,
            "status_code": status,
            "server_message": msg,
            "body": json.loads(redact(json.dumps(body, default=str), secrets))
            if isinstance(body, Mapping)
            else body,
        }
        if status in (401, 403):
            keys = _var(name, "API_KEY") + (f" or {ENV_API_KEY}" if name == DEFAULT_PROFILE else "")
            return LLMAuthError(
                f"{head}. The endpoint refused the API key: check {keys}, or set it with "
                f"context.llm_set_key(provider, model, api_key, profile={name!r})",
                **fields,
            )
        if status == 404:
            code = _error_code(body).lower()
            text = msg.lower()
            if "model" in code or ("model" in text and ("not" in text or "exist" in text)):
                models = _var(name, "MODEL") + (
                    f" / {ENV_MODEL}" if name == DEFAULT_PROFILE else ""
                )
                return LLMModelNotFoundError(
                    f"{head}. The endpoint does not serve model {model!r}: set the profile's "
                    f"model to one it has ({models}, or context.llm({name!r}, model=...)); "
                    f"GET {base_url}/models lists them",
                    **fields,
                )
            return LLMHTTPError(
                f"{head}. Check that the base URL includes the API prefix (usually /v1) "
                f"({_var(name, 'BASE_URL')}) and that the model exists",
                **fields,
            )
        if status == 429:
            wait = _retry_after(exc)
            said = f" (it asked to wait {wait:g} s)" if wait is not None else ""
            tried = (
                f" after {max_retries} retr{'y' if max_retries == 1 else 'ies'}"
                if max_retries
                else ""
            )
            return LLMRateLimitError(
                f"{head}. Too many requests or the quota is used up{said}{tried}: wait and "
                "retry, make fewer calls at once (a lower max_concurrency), or check the "
                "account's limits",
                retry_after_s=wait,
                **fields,
            )
        return LLMHTTPError(head, **fields)
    if isinstance(exc, openai.APIError):  # e.g. an error event inside a stream
        body = getattr(exc, "body", None)
        msg = server_message(body) if body is not None else exc.message
        return LLMError(
            redact(f"{where}: the endpoint reported an error: {msg}", secrets), **common
        )
    return None
