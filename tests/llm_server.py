"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the LLM tests (stdlib
``http.server`` in a thread), recording every request it receives.

Routes: ``POST /v1/chat/completions`` (JSON and SSE streaming), ``POST /v1/embeddings``,
``POST /v1/responses`` (a canned Responses API answer), ``GET /v1/models``; anything else
answers 404 ("no route").
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

ENV_VARS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_MODEL",
    "AG_LLM_MODEL",
    "AG_LLM_TIMEOUT_S",
    "AG_LLM_MAX_RETRIES",
    "AG_LLM_PRICES",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "EMBED_MODEL",
    "VLLM_BASE_URL",
    "OLLAMA_BASE_URL",
    "LMSTUDIO_BASE_URL",
)

USER_MSG = [{"role": "user", "content": "Give me a haiku about photons."}]
DEFAULT_CHUNKS = ["Photons ", "race ", "through ", "the ", "dark"]


class _QuietServer(ThreadingHTTPServer):
    """Ignores clients that hang up early (time-out tests); keeps other handler errors."""

    daemon_threads = True
    block_on_close = False
    errors: list[BaseException]

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, ConnectionError):
            self.errors.append(exc)


class FakeOpenAIServer:
    """A minimal OpenAI-compatible server with request recording.

    Knobs (set by tests): ``chunks`` (the reply, as stream deltas), ``reply`` (a whole
    reply text instead of the chunks), ``usage`` (None: omit), ``fail_status`` /
    ``fail_message`` / ``fail_code`` / ``fail_headers`` (answer every request with that
    HTTP error), ``fail_times`` (only the first N requests fail), ``reject_stream_options``
    (400 when a request carries ``stream_options``), ``delay_s`` (sleep before answering),
    ``raw_body`` (answer 200 with this text/html), ``stream_error`` (an SSE error event
    after the first delta).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.chunks: list[str] = list(DEFAULT_CHUNKS)
        self.reply: str | None = None
        self.usage: dict[str, Any] | None = {
            "prompt_tokens": 11,
            "completion_tokens": 5,
            "total_tokens": 16,
        }
        self.fail_status: int | None = None
        self.fail_message = "something broke"
        self.fail_code: str | None = None
        self.fail_headers: dict[str, str] = {}
        self.fail_times: int | None = None
        self.reject_stream_options = False
        self.delay_s = 0.0
        self.raw_body: str | None = None
        self.stream_error: str | None = None
        self.handler_errors: list[BaseException] = []
        self.httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.errors = self.handler_errors
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.root}/v1"

    @property
    def text(self) -> str:
        return self.reply if self.reply is not None else "".join(self.chunks)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def record(self, entry: dict[str, Any]) -> int:
        with self._lock:
            self.requests.append(entry)
            return len(self.requests)

    def bodies(self, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["path"] == path]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, code: str | None = None) -> None:
                self._json(
                    status,
                    {"error": {"message": message, "type": "server_error", "code": code}},
                    server.fail_headers,
                )

            def do_GET(self) -> None:
                server.record(
                    {
                        "method": "GET",
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": None,
                    }
                )
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": "test-model"}]})
                else:
                    self._error(404, f"no route {self.path}")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"_raw": raw.decode(errors="replace")}
                n = server.record(
                    {
                        "method": "POST",
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                if server.delay_s:
                    time.sleep(server.delay_s)
                if self.path not in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses"):
                    self._error(404, f"no route {self.path}")
                    return
                failing = server.fail_times is None or n <= server.fail_times
                if server.fail_status is not None and failing:
                    self._error(server.fail_status, server.fail_message, server.fail_code)
                    return
                if self.path == "/v1/responses":  # a Responses API answer, for raw()
                    self._json(
                        200,
                        {
                            "id": "resp-test",
                            "object": "response",
                            "output": [
                                {
                                    "type": "message",
                                    "content": [{"type": "output_text", "text": server.text}],
                                }
                            ],
                            "usage": {"input_tokens": 9, "output_tokens": 4},
                        },
                    )
                    return
                if self.path == "/v1/embeddings":
                    inputs = body.get("input")
                    inputs = [inputs] if isinstance(inputs, str) else inputs
                    self._json(
                        200,
                        {
                            "object": "list",
                            "model": body.get("model"),
                            "data": [
                                {
                                    "object": "embedding",
                                    "index": i,
                                    "embedding": [float(len(t)), float(i), 0.5],
                                }
                                for i, t in enumerate(inputs)
                            ],
                            "usage": {"prompt_tokens": 7, "total_tokens": 7},
                        },
                    )
                    return
                if server.raw_body is not None:
                    data = server.raw_body.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if body.get("stream"):
                    if server.reject_stream_options and "stream_options" in body:
                        self._error(400, "stream_options: Extra inputs are not permitted")
                        return
                    self._stream(body)
                    return
                payload: dict[str, Any] = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": server.text},
                            "finish_reason": "stop",
                        }
                    ],
                }
                if server.usage is not None:
                    payload["usage"] = server.usage
                self._json(200, payload)

            def _sse(self, payload: Any) -> None:
                text = payload if isinstance(payload, str) else json.dumps(payload)
                self.wfile.write(f"data: {text}\n\n".encode())
                self.wfile.flush()

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                base = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": body.get("model"),
                }

                def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                    choice = {"index": 0, "delta": delta, "finish_reason": finish}
                    return {**base, "choices": [choice]}

                self._sse(chunk({"role": "assistant", "content": ""}))
                for i, piece in enumerate(server.chunks):
                    self._sse(chunk({"content": piece}))
                    if i == 0 and server.stream_error:
                        self._sse({"error": {"message": server.stream_error}})
                        return
                self._sse(chunk({}, "stop"))
                include = (body.get("stream_options") or {}).get("include_usage")
                if include and server.usage is not None:
                    self._sse({**base, "choices": [], "usage": server.usage})
                self._sse("[DONE]")

        return Handler


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.upper().startswith("AETHERGRAPH_"):
            monkeypatch.delenv(name, raising=False)


def reset_llm_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OPENAI_* / AG_LLM_* / AETHERGRAPH_* variable of the developer's machine reaches a
    test, and no profile or price table registered by one test reaches the next (use as an
    autouse fixture: ``yield from reset_llm_state(monkeypatch)``)."""
    from ag_jupyter.runtime.services.llm import forget_runtime_profiles, set_llm_prices

    _clean_env(monkeypatch)
    forget_runtime_profiles()
    set_llm_prices(None)
    yield
    forget_runtime_profiles()
    set_llm_prices(None)


def running_server() -> Iterator[FakeOpenAIServer]:
    """A started server, stopped afterwards (``yield from running_server()``); fails the
    test if a request handler raised."""
    srv = FakeOpenAIServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
    assert srv.handler_errors == []


def free_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configure_env(monkeypatch: pytest.MonkeyPatch, srv: FakeOpenAIServer) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")
    monkeypatch.setenv("AG_LLM_MODEL", "test-model")
