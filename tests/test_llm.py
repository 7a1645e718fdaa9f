"""The ``llm()`` service against a real OpenAI-compatible HTTP server on 127.0.0.1
(``tests/llm_server.py``), which records every request it receives."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import (
    DEFAULT_CHUNKS,
    USER_MSG,
    FakeOpenAIServer,
    configure_env,
    free_port,
    reset_llm_state,
    running_server,
)

from ag_jupyter import open_session
from ag_jupyter.runtime import ServiceNotConfiguredError
from ag_jupyter.runtime.services.llm import (
    PLACEHOLDER_API_KEY,
    RUN_ID_HEADER,
    SESSION_ID_HEADER,
    BoundLLM,
    ChatStream,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMService,
    LLMTimeoutError,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from reset_llm_state(monkeypatch)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    yield from running_server()


@pytest.fixture
def closed_port() -> int:
    return free_port()


# --------------------------------------------------------------------------------- chat
async def test_chat_sends_request_and_returns_text_and_usage(server: FakeOpenAIServer) -> None:
    llm = LLMService(api_key="sk-abc", base_url=server.url, model="m-1")
    try:
        text, usage = await llm.chat(USER_MSG, temperature=0.25, max_tokens=40)
    finally:
        await llm.aclose()
    assert text == server.text
    assert usage == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert len(server.requests) == 1
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["authorization"] == "Bearer sk-abc"
    assert req["body"]["model"] == "m-1"
    assert req["body"]["messages"] == USER_MSG
    assert req["body"]["temperature"] == 0.25
    assert req["body"]["max_tokens"] == 40
    assert "stream" not in req["body"] or req["body"]["stream"] is False


async def test_chat_model_override_and_extra_params(server: FakeOpenAIServer) -> None:
    llm = LLMService(api_key="k", base_url=server.url + "/", model="default-model")
    text, _ = await llm.chat(USER_MSG, model="other-model", top_k=7, seed=3)
    assert text == server.text
    body = server.requests[0]["body"]
    assert body["model"] == "other-model"
    assert body["top_k"] == 7  # not an OpenAI parameter: sent in the body as it is
    assert body["seed"] == 3
    await llm.aclose()


async def test_chat_usage_empty_when_server_omits_it(server: FakeOpenAIServer) -> None:
    server.usage = None
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    text, usage = await llm.chat(USER_MSG)
    assert (text, usage) == (server.text, {})
    await llm.aclose()


async def test_service_reopens_after_aclose_and_works_on_other_loops(
    server: FakeOpenAIServer,
) -> None:
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    assert (await llm.chat(USER_MSG))[0] == server.text
    await llm.aclose()
    assert (await llm.chat(USER_MSG))[0] == server.text

    def in_thread() -> list[str]:  # e.g. a sync graph body: a fresh loop per asyncio.run
        return [asyncio.run(llm.chat(USER_MSG))[0] for _ in range(2)]

    assert await asyncio.to_thread(in_thread) == [server.text] * 2
    assert len(server.requests) == 4
    await llm.aclose()


# ------------------------------------------------------------------------------ streaming
async def test_stream_yields_deltas_in_order_with_usage(server: FakeOpenAIServer) -> None:
    llm = LLMService(api_key="sk-abc", base_url=server.url, model="m-stream")
    stream = llm.stream(USER_MSG, temperature=0.5)
    assert isinstance(stream, ChatStream)
    assert server.requests == []  # nothing is sent before iterating
    deltas = [d async for d in stream]
    assert deltas == DEFAULT_CHUNKS
    assert "".join(deltas) == server.text == stream.text
    assert stream.usage == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert stream.finish_reason == "stop"
    body = server.requests[0]["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.5
    assert body["model"] == "m-stream"
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-abc"

    # stream text equals the non-streamed text of the same request
    text, usage = await llm.chat(USER_MSG)
    assert text == stream.text and usage == stream.usage
    await llm.aclose()


async def test_stream_collect_and_context_manager(server: FakeOpenAIServer) -> None:
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    async with llm.stream(USER_MSG) as stream:
        assert await stream.collect() == (server.text, server.usage)
    async with llm.stream(USER_MSG) as stream:  # leaving early closes the connection
        async for first in stream:
            assert first == DEFAULT_CHUNKS[0]
            break
    await llm.aclose()


async def test_stream_tolerates_server_rejecting_stream_options(
    server: FakeOpenAIServer,
) -> None:
    server.reject_stream_options = True
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    stream = llm.stream(USER_MSG)
    assert [d async for d in stream] == DEFAULT_CHUNKS
    assert stream.usage == {}
    assert len(server.requests) == 2
    assert "stream_options" in server.requests[0]["body"]
    assert "stream_options" not in server.requests[1]["body"]
    # remembered: the next stream does not try again
    assert await llm.stream(USER_MSG).collect() == (server.text, {})
    assert len(server.requests) == 3
    assert "stream_options" not in server.requests[2]["body"]
    await llm.aclose()


async def test_stream_error_event_raises(server: FakeOpenAIServer) -> None:
    server.stream_error = "model crashed mid-answer"
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    got: list[str] = []
    with pytest.raises(LLMError, match="model crashed mid-answer"):
        async for delta in llm.stream(USER_MSG):
            got.append(delta)
    assert got == DEFAULT_CHUNKS[:1]
    await llm.aclose()


# ------------------------------------------------------------ configuration via sessions
async def test_env_configuration_through_open_session(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)  # set after ag_jupyter was imported
    async with open_session(run_id="llm-env-run", session_id="sess-1") as context:
        llm = context.llm()
        assert isinstance(llm, BoundLLM)
        assert llm.model == "test-model" and llm.base_url == server.url
        text, usage = await llm.chat(USER_MSG, temperature=0)
        deltas = [d async for d in context.llm().stream(USER_MSG)]
    assert text == server.text == "".join(deltas)
    assert usage["total_tokens"] == 16
    assert len(server.requests) == 2
    for req in server.requests:
        assert req["headers"]["authorization"] == "Bearer sk-test-123"
        assert req["headers"][RUN_ID_HEADER.lower()] == "llm-env-run"
        assert req["headers"][SESSION_ID_HEADER.lower()] == "sess-1"
        assert req["body"]["model"] == "test-model"
        assert req["body"]["messages"] == USER_MSG
    assert server.requests[0]["body"]["temperature"] == 0


async def test_env_changes_take_effect_and_model_fallback(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # a local server: no key needed
    monkeypatch.setenv("OPENAI_MODEL", "fallback-model")
    async with open_session() as context:
        await context.llm().chat(USER_MSG)
        monkeypatch.setenv("AG_LLM_MODEL", "preferred-model")
        await context.llm().chat(USER_MSG)
    assert server.requests[0]["body"]["model"] == "fallback-model"
    assert server.requests[1]["body"]["model"] == "preferred-model"
    for req in server.requests:
        assert req["headers"]["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


async def test_env_timeout_and_retries(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    monkeypatch.setenv("AG_LLM_TIMEOUT_S", "7.5")
    monkeypatch.setenv("AG_LLM_MAX_RETRIES", "0")
    async with open_session() as context:
        svc = context.llm().service
        assert (svc.timeout_s, svc.max_retries) == (7.5, 0)
        monkeypatch.setenv("AG_LLM_MAX_RETRIES", "lots")
        with pytest.raises(ValueError, match="AG_LLM_MAX_RETRIES"):
            context.llm()
    assert server.requests == []


async def test_unconfigured_raises_at_once_naming_variables() -> None:
    async with open_session() as context:
        started = time.monotonic()
        with pytest.raises(ServiceNotConfiguredError) as info:
            context.llm()
        assert time.monotonic() - started < 1.0
    message = str(info.value)
    assert "OPENAI_API_KEY" in message and "OPENAI_BASE_URL" in message
    assert "AG_LLM_MODEL" in message
    assert isinstance(info.value, RuntimeError)

    started = time.monotonic()
    with pytest.raises(ServiceNotConfiguredError, match="OPENAI_API_KEY"):
        LLMService()
    assert time.monotonic() - started < 1.0


async def test_open_session_injection_overrides_default(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)

    class CannedLLM:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict]:
            self.calls.append(messages)
            return "canned", {}

    canned = CannedLLM()
    async with open_session(llm=canned) as context:
        assert context.llm() is canned
        assert await context.llm().chat(USER_MSG) == ("canned", {})
    assert canned.calls == [USER_MSG]
    assert server.requests == []  # the env-configured default was never used

    # an LLMService injected for one session is bound to that session's context
    other = LLMService(api_key="sk-other", base_url=server.url, model="injected-model")
    async with open_session(llm=other, run_id="inj-run") as context:
        await context.llm().chat(USER_MSG)
    req = server.requests[0]
    assert req["body"]["model"] == "injected-model"
    assert req["headers"]["authorization"] == "Bearer sk-other"
    assert req["headers"][RUN_ID_HEADER.lower()] == "inj-run"


async def test_unconfigured_default_does_not_block_injection() -> None:
    class Echo:
        async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict]:
            return messages[-1]["content"], {}

    async with open_session(llm=Echo()) as context:
        assert await context.llm().chat(USER_MSG) == (USER_MSG[0]["content"], {})


# ------------------------------------------------------------------------------- failures
async def test_connection_refused_is_quick_and_names_base_url(closed_port: int) -> None:
    base = f"http://127.0.0.1:{closed_port}/v1"
    llm = LLMService(api_key="k", base_url=base, model="m")
    started = time.monotonic()
    with pytest.raises(LLMConnectionError) as info:
        await llm.chat(USER_MSG)
    assert time.monotonic() - started < 5.0
    assert base in str(info.value)
    assert info.value.base_url == base
    assert isinstance(info.value, ConnectionError)

    with pytest.raises(LLMConnectionError, match=str(closed_port)):
        async for _ in llm.stream(USER_MSG):
            pass
    await llm.aclose()


async def test_connection_refused_through_env(
    closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port}/v1")
    async with open_session() as context:
        started = time.monotonic()
        with pytest.raises(LLMConnectionError, match=f"127.0.0.1:{closed_port}"):
            await context.llm().chat(USER_MSG)
        assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("status", [500, 400])
async def test_http_error_carries_status_and_server_message(
    server: FakeOpenAIServer, status: int
) -> None:
    server.fail_status = status
    server.fail_message = f"the server says no ({status})"
    llm = LLMService(api_key="k", base_url=server.url, model="m", max_retries=0)
    with pytest.raises(LLMHTTPError) as info:
        await llm.chat(USER_MSG)
    err = info.value
    assert err.status_code == status
    assert err.server_message == f"the server says no ({status})"
    assert str(status) in str(err) and "the server says no" in str(err)
    assert server.url in str(err)
    assert len(server.requests) == 1

    with pytest.raises(LLMHTTPError) as info:
        await llm.stream(USER_MSG).collect()
    assert info.value.status_code == status
    await llm.aclose()


async def test_server_error_is_retried_max_retries_times(server: FakeOpenAIServer) -> None:
    server.fail_status = 503
    llm = LLMService(api_key="k", base_url=server.url, model="m")  # default: 1 retry
    with pytest.raises(LLMHTTPError, match="503"):
        await llm.chat(USER_MSG)
    assert len(server.requests) == 2
    await llm.aclose()


async def test_wrong_path_gives_404_with_hint(server: FakeOpenAIServer) -> None:
    llm = LLMService(api_key="k", base_url=server.root, model="m")  # forgot /v1
    with pytest.raises(LLMHTTPError) as info:
        await llm.chat(USER_MSG)
    assert info.value.status_code == 404
    assert "/v1" in str(info.value)
    await llm.aclose()


async def test_non_api_answer_is_a_clear_error(server: FakeOpenAIServer) -> None:
    server.raw_body = "<html><body>Welcome to my web server</body></html>"
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    with pytest.raises(LLMError, match="did not answer with a chat completion"):
        await llm.chat(USER_MSG)
    await llm.aclose()


async def test_timeout_is_reported(server: FakeOpenAIServer) -> None:
    server.delay_s = 1.5
    llm = LLMService(api_key="k", base_url=server.url, model="m", timeout_s=0.3, max_retries=0)
    started = time.monotonic()
    with pytest.raises(LLMTimeoutError, match=r"127\.0\.0\.1"):
        await llm.chat(USER_MSG)
    assert time.monotonic() - started < 1.4
    await llm.aclose()


@pytest.mark.parametrize(
    ("messages", "exc"),
    [
        ("Give me a haiku", TypeError),
        ({"role": "user", "content": "hi"}, TypeError),
        ([], ValueError),
        ([("user", "hi")], TypeError),
        (["hi"], TypeError),
        ([{"content": "hi"}], ValueError),
        ([{"role": "user"}], ValueError),
        ([{"role": "", "content": "hi"}], TypeError),
        ([{"role": "user", "content": 42}], TypeError),
        ([{"role": "user", "content": None}], TypeError),
        (None, TypeError),
    ],
)
async def test_invalid_messages_rejected_before_any_request(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, messages: Any, exc: type
) -> None:
    configure_env(monkeypatch, server)
    async with open_session() as context:
        with pytest.raises(exc):
            await context.llm().chat(messages)
        with pytest.raises(exc):
            context.llm().stream(messages)
    assert server.requests == []


async def test_message_shapes_accepted(server: FakeOpenAIServer) -> None:
    llm = LLMService(api_key="k", base_url=server.url, model="m")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    text, _ = await llm.chat(tuple(messages))  # type: ignore[arg-type]
    assert text == server.text
    assert server.requests[0]["body"]["messages"] == messages
    await llm.aclose()


async def test_bad_arguments(server: FakeOpenAIServer) -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        LLMService(base_url=server.url, timeout_s=0)
    with pytest.raises(ValueError, match="max_retries"):
        LLMService(base_url=server.url, max_retries=-1)
    llm = LLMService(base_url=server.url)
    with pytest.raises(TypeError, match="stream"):
        await llm.chat(USER_MSG, stream=True)
    assert server.requests == []
    assert "sk-" not in repr(llm)


# ------------------------------------------------------------------------------ seed 001
SEED_001_QUICK_START = """
from ag_jupyter import open_session

# Recommended: context manager form (handles cleanup)
async with open_session(run_id="adhoc-demo", graph_id="adhoc", node_id="adhoc") as context:
    context.logger().info("hello from adhoc")
    txt, _ = await context.llm().chat([
        {"role": "user", "content": "Give me a haiku about photons."}
    ])
    print(txt)
"""
"""Seed 001's quick start, verbatim except ``from aethergraph.runtime`` -> ``from ag_jupyter``."""


async def test_seed_001_quick_start_runs(
    server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_env(monkeypatch, server)
    # Top-level `async with`/`await` as in a notebook cell: run it as an async function body.
    source = "async def __seed_cell():\n" + textwrap.indent(SEED_001_QUICK_START, "    ")
    namespace: dict[str, Any] = {}
    exec(compile(source, "<seed-001>", "exec"), namespace)
    await namespace["__seed_cell"]()
    assert capsys.readouterr().out == server.text + "\n"
    req = server.requests[0]
    assert req["body"]["messages"] == USER_MSG
    assert req["body"]["model"] == "test-model"
    assert req["headers"][RUN_ID_HEADER.lower()] == "adhoc-demo"
