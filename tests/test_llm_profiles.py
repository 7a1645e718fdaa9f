"""context.llm() as AetherGraph documents it: profiles from its environment variables and at
run time, structured output, reasoning effort, embeddings, raw calls, endpoint errors, token
usage per run (steps, ``meta["usage"]``, ``manager.usage``), and secrets that never leave
the process. Against the real OpenAI-compatible server of ``tests/llm_server.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llm_server import (
    USER_MSG,
    FakeOpenAIServer,
    configure_env,
    reset_llm_state,
    running_server,
)
from pydantic import BaseModel

from ag_jupyter import open_session
from ag_jupyter.runtime import NodeContext, RunManager, ServiceNotConfiguredError, graph_fn
from ag_jupyter.runtime.defaults import workspace_runtime
from ag_jupyter.runtime.errors import (
    LLMAuthError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMTimeoutError,
)
from ag_jupyter.runtime.services.llm import (
    PLACEHOLDER_API_KEY,
    LLMService,
    register_llm_client,
    resolve_profile,
    set_llm_prices,
)

PLANTED = "sk-planted-SECRET-4f1c9e77a2b3"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from reset_llm_state(monkeypatch)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    yield from running_server()


@pytest.fixture
def other_server() -> Iterator[FakeOpenAIServer]:
    yield from running_server()


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


def auth(req: dict[str, Any]) -> str:
    return req["headers"]["authorization"]


async def _run(manager: RunManager, graph: str, inputs: dict | None = None, **kw: Any) -> Any:
    final, outputs, _, _ = await manager.run_and_wait(graph, inputs=inputs or {}, **kw)
    assert final.status == "succeeded", final.error
    return final, outputs


MESSAGES = [
    {"role": "system", "content": "You are a concise and helpful assistant."},
    {"role": "user", "content": "In one sentence, what is an attention layer in neural networks?"},
]


# ------------------------------------------------------------ docs/llm-setup/llm-setup.md
async def test_docs_llm_setup_md_L11_env_default_profile_and_L100_profile_default(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AETHERGRAPH_LLM__ENABLED": "true",
        "AETHERGRAPH_LLM__DEFAULT__PROVIDER": "openai",
        "AETHERGRAPH_LLM__DEFAULT__MODEL": "gpt-4o-mini",
        "AETHERGRAPH_LLM__DEFAULT__TIMEOUT": "60",
        "AETHERGRAPH_LLM__DEFAULT__API_KEY": "sk-docs-default",
        "AETHERGRAPH_LLM__DEFAULT__EMBED_MODEL": "text-embedding-3-small",
        "AETHERGRAPH_LLM__DEFAULT__BASE_URL": server.url,  # the test's endpoint
    }.items():
        monkeypatch.setenv(name, value)
    async with open_session() as context:
        llm_client = context.llm(profile="default")
        assert llm_client.service.timeout_s == 60.0
        text, usage = await llm_client.chat(MESSAGES)
        vectors = await context.llm().embed(["a", "bb"])
    assert text == server.text and usage["total_tokens"] == 16
    chat, embed = server.requests
    assert auth(chat) == auth(embed) == "Bearer sk-docs-default"
    assert chat["body"]["model"] == "gpt-4o-mini"
    assert embed["path"] == "/v1/embeddings" and embed["body"]["model"] == "text-embedding-3-small"
    assert vectors == [[1.0, 0.0, 0.5], [2.0, 1.0, 0.5]]


async def test_docs_llm_setup_md_L28_extra_profiles(
    server: FakeOpenAIServer, other_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    for name, value in {
        "AETHERGRAPH_LLM__PROFILES__GEMINI__PROVIDER": "google",
        "AETHERGRAPH_LLM__PROFILES__GEMINI__MODEL": "gemini-2.5-flash-lite",
        "AETHERGRAPH_LLM__PROFILES__GEMINI__TIMEOUT": "60",
        "AETHERGRAPH_LLM__PROFILES__GEMINI__API_KEY": "AIzaSy-test-key",
        "AETHERGRAPH_LLM__PROFILES__GEMINI__EMBED_MODEL": "text-embedding-004",
        "AETHERGRAPH_LLM__PROFILES__GEMINI__BASE_URL": other_server.url,
    }.items():
        monkeypatch.setenv(name, value)
    async with open_session() as context:
        await context.llm(profile="gemini").chat(USER_MSG)
        await context.llm(profile="GEMINI").embed(["x"])  # names are case-insensitive
        await context.llm().chat(USER_MSG)
        with pytest.raises(ServiceNotConfiguredError, match="gemeni"):
            context.llm(profile="gemeni")  # the page's own typo (L35) names no profile
    assert [auth(r) for r in other_server.requests] == ["Bearer AIzaSy-test-key"] * 2
    assert other_server.requests[0]["body"]["model"] == "gemini-2.5-flash-lite"
    assert other_server.requests[1]["body"]["model"] == "text-embedding-004"
    assert [auth(r) for r in server.requests] == ["Bearer sk-test-123"]  # the default


async def test_docs_llm_setup_md_L98_inline_overrides_and_llm_set_key(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # where openai profiles go (as a15)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    async with open_session() as context:
        llm_client = context.llm(profile="default")
        await llm_client.chat(USER_MSG)
        llm_client = context.llm(
            profile="temp_profile",
            provider="openai",
            model="gpt-4o-mini",
            api_key="sk-temp",
            timeout=60,
        )
        await llm_client.chat(USER_MSG)
        context.llm_set_key(
            provider="openai", model="gpt-4o-mini", api_key="sk-swapped", profile="default"
        )
        await context.llm().chat(USER_MSG)
        await context.llm("temp_profile").chat(USER_MSG)  # kept for the process
    assert [auth(r) for r in server.requests] == [
        "Bearer sk-env",
        "Bearer sk-temp",
        "Bearer sk-swapped",
        "Bearer sk-temp",
    ]
    assert server.requests[1]["body"]["model"] == "gpt-4o-mini"


async def test_docs_llm_setup_md_L162_multiple_profile_demo(
    server: FakeOpenAIServer,
    other_server: FakeOpenAIServer,
    manager: RunManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_env(monkeypatch, server)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__LOCAL__PROVIDER", "vllm")
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__LOCAL__BASE_URL", other_server.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__LOCAL__MODEL", "qwen")

    @graph_fn(name="llm.multiple.profile.demo")
    async def llm_multiple_profile_demo(profile: str, *, context: NodeContext):
        llm_client = context.llm(profile=profile)
        messages = [
            {"role": "system", "content": "You are a concise and helpful assistant."},
            {"role": "user", "content": "In one sentence, what is an attention layer?"},
        ]
        text, usage = await llm_client.chat(messages)
        return {"profile": profile, "answer": text, "usage": usage}

    for profile in ("default", "local"):
        _, outputs = await _run(manager, "llm.multiple.profile.demo", {"profile": profile})
        assert outputs["answer"] == server.text and outputs["usage"]["prompt_tokens"] == 11
    assert server.requests[0]["body"]["model"] == "test-model"
    # a local server gets the placeholder, never OPENAI_API_KEY
    assert [auth(r) for r in other_server.requests] == [f"Bearer {PLACEHOLDER_API_KEY}"]
    assert other_server.requests[0]["body"]["model"] == "qwen"


# ---------------------------------------------------------------- docs/examples/llm.md
async def test_docs_examples_llm_md_L68_hello_L82_multi_vendor_L105_embed(
    server: FakeOpenAIServer,
    other_server: FakeOpenAIServer,
    manager: RunManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_env(monkeypatch, server)
    for profile in ("GEMINI", "ANTHROPIC"):
        monkeypatch.setenv(
            f"AETHERGRAPH_LLM__PROFILES__{profile}__PROVIDER",
            profile.lower().replace("gemini", "google"),
        )
        monkeypatch.setenv(f"AETHERGRAPH_LLM__PROFILES__{profile}__API_KEY", f"key-{profile}")
        monkeypatch.setenv(f"AETHERGRAPH_LLM__PROFILES__{profile}__BASE_URL", other_server.url)

    async def hello_world(*, context: NodeContext, input_text: str):
        llm = context.llm()  # same as context.llm("default")
        text, usage = await llm.chat(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Say hi back to: {input_text}"},
            ]
        )
        return {"reply": text, "usage": usage}

    async def multi_vendor_demo(*, context: NodeContext, query: str):
        openai_client = context.llm("default")  # e.g. OpenAI
        gemini_client = context.llm("gemini")  # Google Gemini profile
        anthropic_client = context.llm("anthropic")  # Claude profile
        o_text, _ = await openai_client.chat([{"role": "user", "content": f"OpenAI: {query}"}])
        g_text, _ = await gemini_client.chat([{"role": "user", "content": f"Gemini: {query}"}])
        a_text, _ = await anthropic_client.chat([{"role": "user", "content": f"Claude: {query}"}])
        return {"openai": o_text, "gemini": g_text, "anthropic": a_text}

    async def embed_example(*, context: NodeContext, texts: list[str]):
        client = context.llm()
        vectors = await client.embed(texts)
        return {"embeddings": vectors}

    for fn in (hello_world, multi_vendor_demo, embed_example):
        graph_fn(fn.__name__)(fn)
    _, out = await _run(manager, "hello_world", {"input_text": "Ann"})
    assert out["reply"] == server.text
    _, out = await _run(manager, "multi_vendor_demo", {"query": "q"})
    assert set(out.values()) == {server.text}
    assert [auth(r) for r in other_server.requests] == ["Bearer key-GEMINI", "Bearer key-ANTHROPIC"]
    _, out = await _run(manager, "embed_example", {"texts": ["one", "three"]})
    assert out == {"embeddings": [[3.0, 0.0, 0.5], [5.0, 1.0, 0.5]]}
    assert server.requests[-1]["body"]["model"] == "text-embedding-3-small"


async def test_docs_examples_llm_md_L120_reasoning_effort_and_L217_embed_model(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    async with open_session() as context:
        client = context.llm("default")  # configured with a gpt-5-* model
        text, usage = await client.chat(  # noqa: RUF059
            [
                {"role": "system", "content": "Think step-by-step."},
                {"role": "user", "content": "Explain why 2 + 2 = 4."},
            ],
            reasoning_effort="high",  # "low" | "medium" | "high" (OpenAI GPT‑5 only)
        )
        await client.chat(USER_MSG, reasoning_effort="xhigh", max_output_tokens=50)
        texts = ["t"]
        vectors = await context.llm().embed(texts, model="text-embedding-3-large")
    first, second, embed = (r["body"] for r in server.requests)
    assert first["reasoning_effort"] == "high"
    assert second["reasoning_effort"] == "high" and second["max_completion_tokens"] == 50
    assert "output_format" not in first and "reasoning" not in first
    assert embed["model"] == "text-embedding-3-large" and len(vectors) == 1


async def test_docs_examples_llm_md_L231_runtime_profile_demo(
    server: FakeOpenAIServer, manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)

    @graph_fn("runtime_profile_demo")
    async def runtime_profile_demo(*, context: NodeContext):
        context.llm_set_key(
            provider="openai",
            model="gpt-4o-mini",  # NEW: model included for convenience
            api_key="sk-proj-runtime",  # in-memory only
            profile="runtime-openai",
        )
        client = context.llm("runtime-openai")
        text, _ = await client.chat([{"role": "user", "content": "Hello from runtime profile!"}])
        return {"reply": text}

    _, out = await _run(manager, "runtime_profile_demo")
    assert out == {"reply": server.text}
    assert auth(server.requests[0]) == "Bearer sk-proj-runtime"


# ------------------------------------------------------ docs/tutorials/t5 (LLM & RAG)
async def test_docs_tutorials_t5_md_L43_profile_vars_L53_profile_L87_ask_L109_embed(
    server: FakeOpenAIServer, manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # t5 writes AETHERGRAPH_LLM__<NAME>__... (a15's code wants __PROFILES__<NAME>__)
    monkeypatch.setenv("AETHERGRAPH_LLM__MY_OPENAI__PROVIDER", "openai")
    monkeypatch.setenv("AETHERGRAPH_LLM__MY_OPENAI__MODEL", "gpt-4o-mini")
    monkeypatch.setenv("AETHERGRAPH_LLM__MY_OPENAI__TIMEOUT", "60")
    monkeypatch.setenv("AETHERGRAPH_LLM__MY_OPENAI__API_KEY", "sk-t5")
    monkeypatch.setenv("AETHERGRAPH_LLM__MY_OPENAI__EMBED_MODEL", "text-embedding-3-small")
    monkeypatch.setenv("AETHERGRAPH_LLM__MY_OPENAI__BASE_URL", server.url)

    @graph_fn(name="ask_llm")
    async def ask_llm(question: str, *, context):
        llm = context.llm(profile="my_openai")  # or omit profile for default
        messages = [
            {"role": "system", "content": "You are concise and helpful."},
            {"role": "user", "content": question},
        ]
        reply, usage = await llm.chat(messages)
        vectors = await context.llm(profile="my_openai").embed(
            ["First text chunk", "Second text chunk"]
        )
        return {"answer": reply, "usage": usage, "n": len(vectors)}

    _, out = await _run(manager, "ask_llm", {"question": "why?"})
    assert out["answer"] == server.text and out["n"] == 2
    assert [auth(r) for r in server.requests] == ["Bearer sk-t5"] * 2
    async with open_session() as context:
        context.llm_set_key(provider="openai", api_key="sk-t5-oneoff")  # L83, no model
        assert context.llm().model == "gpt-4o-mini"


async def test_examples_method_showcase_4_llm_2_and_3_register_and_inline_profiles(
    server: FakeOpenAIServer, manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    openai_profile = "my_openai"
    open_ai_client = register_llm_client(
        profile=openai_profile, provider="openai", model="gpt-4o-mini", api_key="sk-reg"
    )
    register_llm_client(
        profile="my_lmstudio",
        provider="lmstudio",
        model="qwen/qwen2.5-vl-7b",
        base_url="http://localhost:1234/v1",
    )
    assert isinstance(open_ai_client, LLMService)
    assert resolve_profile("my_lmstudio").base_url == "http://localhost:1234/v1"

    @graph_fn(name="llm.multiple.profile.demo2")
    async def llm_multiple_profile_demo(profile: str, *, context: NodeContext):
        llm_client = context.llm(profile=profile)
        llm_text, llm_usage = await llm_client.chat(MESSAGES)
        return {"profile": profile, "answer": llm_text, "usage": llm_usage}

    @graph_fn(name="inline_llm_setup_demo")
    async def inline_llm_setup_demo(*, context: NodeContext):
        llm_client = context.llm(
            profile="runtime_openai",
            provider="openai",
            model="gpt-4o-mini",
            api_key="sk-inline",
            timeout=60.0,  # optional timeout in seconds
        )
        reply, usage = await llm_client.chat(MESSAGES)
        return {"answer": reply, "usage": usage}

    await _run(manager, "llm.multiple.profile.demo2", {"profile": openai_profile})
    await _run(manager, "inline_llm_setup_demo")
    assert [auth(r) for r in server.requests] == ["Bearer sk-reg", "Bearer sk-inline"]


async def test_examples_method_showcase_4_llm_4_passing_raw_api_py(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's body without its last ``context.channel().send_text`` line (channels
    belong to another issue)."""
    configure_env(monkeypatch, server)
    async with open_session() as context:
        openai = context.llm(profile="default")  # assumes base_url+api key set
        payload = {
            "model": "gpt-4o-mini",
            "input": [
                {"role": "system", "content": "You are concise."},
                {"role": "user", "content": "What is attention layer in neural networks?"},
            ],
            "max_output_tokens": 128,
            "temperature": 0.3,
        }
        data = await openai.raw(path="/responses", json=payload)  # base_url + /responses
        out = data.get("output")
        text = ""
        if isinstance(out, dict) and out.get("type") == "message":
            parts = (out.get("message") or out).get("content") or []
            text = "".join(p.get("text", "") for p in parts if "text" in p)
        elif isinstance(out, list) and out:
            parts = out[0].get("content", [])
            text = "".join(p.get("text", "") for p in parts if "text" in p)
        models = await openai.raw(method="GET", path="models")
        with pytest.raises(ValueError, match="another host"):
            await openai.raw(url="https://example.com/v1/models", method="GET")
    assert text == server.text
    assert models["data"][0]["id"] == "test-model"
    assert server.requests[0]["path"] == "/v1/responses"
    assert server.requests[0]["body"] == payload
    assert auth(server.requests[0]) == "Bearer sk-test-123"


# ------------------------------------------------------- a15 generic_client docstrings
async def test_a15_generic_client_py_L700_chat_and_L706_json_schema(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    async with open_session() as context:
        response, usage = await context.llm().chat(
            [{"role": "user", "content": "Hello, assistant!"}]
        )
        assert response == server.text
        server.reply = 'Sure! ```json\n{"summary": "short"}\n```'
        response, usage = await context.llm().chat(  # noqa: RUF059
            messages=[{"role": "user", "content": "Summarize this text."}],
            output_format="json",
            json_schema={"type": "object", "properties": {"summary": {"type": "string"}}},
        )
    assert json.loads(response) == {"summary": "short"}
    body = server.requests[1]["body"]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "output",
            "schema": {"type": "object", "properties": {"summary": {"type": "string"}}},
            "strict": True,
        },
    }
    assert body["messages"][0]["content"].startswith("Return ONLY valid JSON")
    assert "output_format" not in body and "json_schema" not in body


async def test_a15_generic_client_py_L920_chat_stream_and_L924_on_delta(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    seen: list[str] = []
    async with open_session() as context:
        response, usage = await context.llm().chat_stream(
            messages=[{"role": "user", "content": "Hello, assistant!"}]
        )

        async def on_delta(delta):
            seen.append(delta)

        response2, usage2 = await context.llm().chat_stream(
            messages=[{"role": "user", "content": "Tell me a joke."}], on_delta=on_delta
        )
    assert response == response2 == server.text
    assert usage == usage2 == server.usage
    assert "".join(seen) == server.text
    for body in server.bodies():
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_a15_node_context_py_L662_L671_llm_set_key(monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_session() as context:
        context.llm_set_key(provider="openai", model="gpt-4-turbo", api_key="sk-a15-doc")
        context.llm_set_key(
            provider="anthropic",
            model="claude-3-opus",
            api_key="sk-ant-doc",
            profile="anthropic-profile",
        )
        assert context.llm().model == "gpt-4-turbo"
        claude = context.llm("anthropic-profile")
        assert claude.base_url == "https://api.anthropic.com/v1"  # its OpenAI-compatible API
        assert "sk-ant-doc" not in repr(claude) + repr(claude.service.profile)
        with pytest.raises(TypeError, match="api_key"):
            context.llm_set_key(provider="openai", model="m")


# ----------------------------------------------------------------- structured output
class Verdict(BaseModel):
    label: str
    score: float


async def test_output_formats_translate_to_response_format_and_are_checked(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    async with open_session() as context:
        llm = context.llm()
        server.reply = '{"a": 1}'
        text, _ = await llm.chat(
            [{"role": "user", "content": "Answer in JSON"}], output_format="json"
        )
        assert json.loads(text) == {"a": 1}
        server.reply = '{"label": "good", "score": 0.9}'
        text, _ = await llm.chat(USER_MSG, json_schema=Verdict)
        assert Verdict.model_validate_json(text) == Verdict(label="good", score=0.9)
        text, _ = await llm.chat(USER_MSG, output_format=Verdict)
        server.reply = '{"label": "good"}'
        with pytest.raises(LLMOutputError, match="Verdict") as info:
            await llm.chat(USER_MSG, json_schema=Verdict)
        assert info.value.text == '{"label": "good"}' and info.value.profile == "default"
        server.reply = "not json at all"
        with pytest.raises(LLMOutputError, match="valid JSON"):
            await llm.chat(USER_MSG, output_format="json")
        with pytest.raises(ValueError, match="output_format"):
            await llm.chat(USER_MSG, output_format="yaml")
        raw, _ = await llm.chat(USER_MSG, output_format="raw")
        assert json.loads(raw)["id"] == "chatcmpl-test"
    json_object, schema, *_ = server.bodies()
    assert json_object["response_format"] == {"type": "json_object"}
    assert json_object["messages"] == [{"role": "user", "content": "Answer in JSON"}]
    fmt = schema["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "output"
    assert fmt["json_schema"]["schema"]["required"] == ["label", "score"]
    assert fmt["json_schema"]["schema"]["additionalProperties"] is False  # OpenAI strict mode


async def test_reasoning_effort_by_provider_and_profile_default(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__ROUTER__PROVIDER", "openrouter")
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__ROUTER__BASE_URL", server.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__ROUTER__API_KEY", "or-key")
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__THINKER__PROVIDER", "vllm")
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__THINKER__BASE_URL", server.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__THINKER__REASONING_EFFORT", "low")
    async with open_session() as context:
        await context.llm("router").chat(USER_MSG, reasoning_effort="medium")
        await context.llm("thinker").chat(USER_MSG)
        await context.llm("thinker").chat(USER_MSG, reasoning_effort="high", max_output_tokens=9)
    router, default, override = server.bodies()
    assert router["reasoning"] == {"effort": "medium"} and "reasoning_effort" not in router
    assert default["reasoning_effort"] == "low"
    assert override["reasoning_effort"] == "high" and override["max_tokens"] == 9


# ------------------------------------------------------------------------- profiles
async def test_profiles_keys_and_base_urls_stay_apart(
    server: FakeOpenAIServer, other_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-only")  # no OPENAI_BASE_URL: OpenAI's
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__OLLAMA__PROVIDER", "ollama")
    monkeypatch.setenv("OLLAMA_BASE_URL", other_server.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__MINE__BASE_URL", server.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__MINE__API_KEY_REF", "MY_SERVER_KEY")
    monkeypatch.setenv("MY_SERVER_KEY", "sk-by-ref")
    async with open_session() as context:
        assert context.llm().base_url == "https://api.openai.com/v1"
        assert context.llm("ollama").base_url == other_server.url
        await context.llm("ollama").chat(USER_MSG)
        await context.llm("mine").chat(USER_MSG)
        with pytest.raises(ServiceNotConfiguredError, match="known: default, mine, ollama"):
            context.llm("nope")
    assert auth(other_server.requests[0]) == f"Bearer {PLACEHOLDER_API_KEY}"
    assert auth(server.requests[0]) == "Bearer sk-by-ref"


async def test_disabled_and_malformed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("AETHERGRAPH_LLM__DEFAULT__TIMEOUT", "soon")
    async with open_session() as context:
        with pytest.raises(ValueError, match="TIMEOUT"):
            context.llm()
        monkeypatch.setenv("AETHERGRAPH_LLM__DEFAULT__TIMEOUT", "5")
        monkeypatch.setenv("AETHERGRAPH_LLM__DEFAULT__PROVIDER", "skynet")
        with pytest.raises(ValueError, match="unknown LLM provider 'skynet'"):
            context.llm()
        monkeypatch.delenv("AETHERGRAPH_LLM__DEFAULT__PROVIDER")
        monkeypatch.setenv("AETHERGRAPH_LLM__ENABLED", "false")
        with pytest.raises(ServiceNotConfiguredError):
            context.llm()
        with pytest.raises(ServiceNotConfiguredError, match="api_key"):
            context.llm(profile="hosted", provider="openrouter", model="m")


# -------------------------------------------------------------------------- errors
@pytest.fixture
def strict_llm(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__STRICT__BASE_URL", server.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__STRICT__API_KEY", PLANTED)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__STRICT__MODEL", "gpt-x")
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__STRICT__MAX_RETRIES", "0")
    return server


async def test_401_names_profile_url_and_the_key_to_check(strict_llm: FakeOpenAIServer) -> None:
    strict_llm.fail_status = 401
    strict_llm.fail_message = f"Incorrect API key provided: {PLANTED}"
    async with open_session() as context:
        with pytest.raises(LLMAuthError) as info:
            await context.llm("strict").chat(USER_MSG)
    err = info.value
    message = str(err)
    assert "'strict'" in message and strict_llm.url in message and "gpt-x" in message
    assert "AETHERGRAPH_LLM__PROFILES__STRICT__API_KEY" in message
    assert PLANTED not in message + json.dumps(err.body) + err.server_message
    assert isinstance(err, PermissionError) and err.status_code == 401


async def test_404_model_names_the_model_and_how_to_choose(strict_llm: FakeOpenAIServer) -> None:
    strict_llm.fail_status = 404
    strict_llm.fail_message = "The model `gpt-x` does not exist"
    strict_llm.fail_code = "model_not_found"
    async with open_session() as context:
        with pytest.raises(LLMModelNotFoundError) as info:
            await context.llm("strict").chat(USER_MSG)
    message = str(info.value)
    assert "'gpt-x'" in message and "AETHERGRAPH_LLM__PROFILES__STRICT__MODEL" in message
    assert f"{strict_llm.url}/models" in message
    assert isinstance(info.value, LookupError)


async def test_429_is_retried_then_says_what_to_do(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    monkeypatch.setenv("AG_LLM_MAX_RETRIES", "1")
    server.fail_status = 429
    server.fail_message = "Rate limit reached"
    server.fail_headers = {"retry-after-ms": "10"}
    async with open_session() as context:
        with pytest.raises(LLMRateLimitError) as info:
            await context.llm().chat(USER_MSG)
        assert len(server.requests) == 2  # retried once
        server.fail_times = 3  # fails once more, then answers
        assert (await context.llm().chat(USER_MSG))[0] == server.text
    assert info.value.retry_after_s == 0.01
    assert "'default'" in str(info.value) and "wait and retry" in str(info.value)


async def test_timeout_names_the_profile_and_the_setting(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    monkeypatch.setenv("AG_LLM_TIMEOUT_S", "0.3")
    monkeypatch.setenv("AG_LLM_MAX_RETRIES", "0")
    server.delay_s = 1.0
    async with open_session() as context:
        with pytest.raises(LLMTimeoutError) as info:
            await context.llm().chat(USER_MSG)
    message = str(info.value)
    assert "'default'" in message and server.url in message and "0.3 s" in message
    assert "AG_LLM_TIMEOUT_S" in message and info.value.profile == "default"


# ---------------------------------------------------------------------- token usage
async def test_usage_per_run_on_the_record_and_from_the_manager(
    server: FakeOpenAIServer, manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    server.usage = {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 40},
    }

    @graph_fn("llm_usage_run")
    async def llm_usage_run(context: NodeContext) -> str:
        llm = context.llm()
        await llm.chat(USER_MSG)
        await llm.chat_stream(USER_MSG)
        async for _ in llm.stream(USER_MSG):
            pass
        await llm.embed(["x"])  # embeddings report 7 prompt tokens
        return "ok"

    first, _ = await _run(manager, "llm_usage_run", session_id="usage-s")
    expected = {
        "calls": 4,
        "prompt_tokens": 307,
        "completion_tokens": 60,
        "cached_tokens": 120,
        "cost": None,
    }
    assert first.meta["usage"] == expected
    assert await manager.usage(run_id=first.run_id) == expected
    steps = [s for s in await manager.steps(first.run_id) if s["kind"] == "llm"]
    assert [s["name"] for s in steps] == ["chat", "chat_stream", "stream", "embed"]
    assert all("sk-test-123" not in json.dumps(s) for s in steps)
    for body in server.bodies()[1:3]:
        assert body["stream_options"] == {"include_usage": True}
    # prices: input / output / cached input per million tokens
    set_llm_prices({"test-model": [1.0, 10.0, 0.5], "text-embedding-3-small": [0.1, 0.0]})
    second, _ = await _run(manager, "llm_usage_run", session_id="usage-s")
    chat_cost = (60 * 1.0 + 20 * 10.0 + 40 * 0.5) / 1e6
    assert second.meta["usage"]["cost"] == pytest.approx(3 * chat_cost + 7 * 0.1 / 1e6)
    session = await manager.usage(session_id="usage-s")
    assert session["calls"] == 8 and session["prompt_tokens"] == 614
    assert session["cost"] is None  # the first run's calls had no price: never a partial sum
    assert (await manager.usage())["calls"] == 8
    assert await manager.usage(run_id="run-unknown") == {
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cost": None,
    }
    with pytest.raises(TypeError, match="not both"):
        await manager.usage(run_id=first.run_id, session_id="usage-s")


async def test_prices_from_the_environment_and_failed_calls_cost_nothing(
    server: FakeOpenAIServer, manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)
    monkeypatch.setenv("AG_LLM_PRICES", json.dumps({"test-model": [2.0, 4.0]}))
    monkeypatch.setenv("AG_LLM_MAX_RETRIES", "0")

    @graph_fn("llm_priced")
    async def llm_priced(context: NodeContext) -> None:
        await context.llm().chat(USER_MSG)
        server.fail_status = 500
        try:
            await context.llm().chat(USER_MSG)
        except Exception:
            pass

    final, _ = await _run(manager, "llm_priced")
    assert final.meta["usage"] == {
        "calls": 1,
        "prompt_tokens": 11,
        "completion_tokens": 5,
        "cached_tokens": 0,
        "cost": pytest.approx(42 / 1e6),
    }
    steps = await manager.steps(final.run_id)
    assert steps[-1]["error"] is not None and "HTTP 500" in steps[-1]["error"]


async def test_usage_survives_a_restart(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)

    @graph_fn("llm_once")
    async def llm_once(context: NodeContext) -> None:
        await context.llm().chat(USER_MSG)

    first = RunManager(**workspace_runtime(tmp_path / "ws"))
    final, _ = await _run(first, "llm_once", session_id="s")
    await first.close()
    again = RunManager(**workspace_runtime(tmp_path / "ws"))
    try:
        assert (await again.usage(session_id="s"))["prompt_tokens"] == 11
        assert (await again.get_record(final.run_id)).meta["usage"]["calls"] == 1
    finally:
        await again.close()


# -------------------------------------------------------------------------- secrets
async def test_a_planted_key_is_nowhere_in_the_workspace(
    server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("AG_LLM_MAX_RETRIES", "0")
    manager = RunManager(**workspace_runtime(tmp_path / "ws"))

    @graph_fn("leaky")
    async def leaky(context: NodeContext) -> dict:
        context.logger().info("llm is %r / %r", context.llm(), context.llm().service.profile)
        text, usage = await context.llm().chat(USER_MSG, extra_headers={"X-Api-Key": PLANTED})
        context.llm_set_key(provider="openai", model="m2", api_key=PLANTED + "-2", profile="p2")
        await context.llm("p2").chat(USER_MSG)
        server.fail_status = 401
        server.fail_message = f"Incorrect API key provided: {PLANTED}"
        try:
            await context.llm().chat(USER_MSG)
        except Exception as exc:
            context.logger().error("failed: %s", exc)
            await context.memory().record("error", {"message": str(exc)})
        return {"text": text, "usage": usage, "llm": repr(context.llm())}

    @graph_fn("leaky_fails")
    async def leaky_fails(context: NodeContext) -> None:
        await context.llm().chat(USER_MSG)  # the 401 above, uncaught: the run fails

    try:
        final, _ = await _run(manager, "leaky")
        assert auth(server.requests[0]) == f"Bearer {PLANTED}"  # it did reach the endpoint
        assert [s["error"] for s in await manager.steps(final.run_id)][-1] is not None
        failed, _, _, _ = await manager.run_and_wait("leaky_fails", inputs={})
        assert failed.status == "failed" and "LLMAuthError" in failed.error
        assert "Traceback" in json.dumps(failed.meta)
    finally:
        await manager.close()
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file():
            assert PLANTED.encode() not in path.read_bytes(), path


async def test_a_step_previews_the_request_without_secrets(
    server: FakeOpenAIServer, manager: RunManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, server)

    @graph_fn("llm_preview")
    async def llm_preview(context: NodeContext) -> None:
        await context.llm().chat(
            USER_MSG,
            max_tokens=33,
            extra_headers={"Authorization": f"Bearer {PLANTED}"},
            extra_body={"api_key": PLANTED, "top_k": 4},
        )

    final, _ = await _run(manager, "llm_preview")
    (step,) = await manager.steps(final.run_id)
    preview = json.loads(step["inputs_preview"])
    assert preview["profile"] == "default" and preview["model"] == "test-model"
    assert preview["max_tokens"] == 33 and preview["messages"] == USER_MSG
    assert preview["extra_body"] == {"api_key": "***", "top_k": 4}
    assert PLANTED not in step["inputs_preview"] and "extra_headers" not in preview
    assert step["outputs_preview"] == server.text
    assert server.requests[0]["body"]["api_key"] == PLANTED  # sent where it was asked to go


async def test_docs_examples_llm_md_L256_inline_config_native_root_is_mapped() -> None:
    """The example's base URL is Gemini's native API root; requests go to its
    OpenAI-compatible API under it (no request is made here: that needs the network)."""
    async with open_session() as context:
        client = context.llm(
            profile="lab",
            provider="google",
            model="gemini-1.5-pro-latest",
            api_key="AIzaSy...",
            base_url="https://generativelanguage.googleapis.com",
            timeout=60.0,
        )
    assert client.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert (client.model, client.provider, client.service.timeout_s) == (
        "gemini-1.5-pro-latest",
        "google",
        60.0,
    )
