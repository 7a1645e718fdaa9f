"""The code examples of the API documents (seeds 000, 001 and 002), run as written.

Only their import lines change (``aethergraph.runtime`` -> ``ag_jupyter`` /
``ag_jupyter.runtime``). The examples use names they do not define (``runner`` in seed 002,
``run_id`` from an earlier example, ``should_abort``); each test binds those first, and
registers the graph ``my-graph`` they launch. The example lines themselves are verbatim
between ``# --- example`` and ``# --- end`` markers.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from ag_jupyter import graph_fn
from ag_jupyter.runtime import NodeContext, RunRecord, RunStatus


@graph_fn("my-graph")
async def my_graph(prompt: str = "", payload: dict | None = None, x: int = 0) -> dict[str, Any]:
    """The graph seed 002's examples launch (they pass ``prompt``, ``payload`` or ``x``)."""
    return {"prompt": prompt, "payload": payload, "x": x}


@graph_fn("my-graph-id")
async def my_graph_id(x: int = 0) -> dict[str, Any]:
    """The graph seed 000's examples (0.1.0a15's NodeContext docstrings) launch."""
    return {"x": x}


@pytest.fixture(autouse=True)
def _in_tmp_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Each example gets its own folder, so a default workspace never carries run ids
    (the examples use fixed ones such as ``run-custom-001``) from one test to the next."""
    monkeypatch.chdir(tmp_path)



# ===================================================================== seed 000
# Seed 000 renders the docstrings of 0.1.0a15's NodeContext.spawn_run / wait_run /
# run_and_wait / cancel_run; their examples, with ``context`` an ad-hoc session's context.
@pytest.fixture
async def context() -> AsyncIterator[Any]:
    from ag_jupyter import open_session

    async with open_session() as ctx:
        yield ctx


async def test_seed000_spawn_through_the_context_and_the_preferred_equivalent(
    context: Any,
) -> None:
    # --- example (seed 000, context.spawn_run: legacy context API)
    run_id = await context.spawn_run("my-graph-id", inputs={"x": 1})
    # --- end
    first = run_id
    # --- example (seed 000, context.spawn_run: preferred equivalent)
    run_id = await context.runner().spawn_run("my-graph-id", inputs={"x": 1})
    # --- end
    for rid in (first, run_id):
        record, outputs = await context.wait_run(rid, timeout_s=5, return_outputs=True)
        assert record.status is RunStatus.succeeded and outputs == {"x": 1}
        assert record.parent_run_id == context.run_id
        assert record.session_id == context.session_id


async def test_seed000_wait_through_the_context_and_the_preferred_equivalent(
    context: Any,
) -> None:
    run_id = await context.spawn_run("my-graph-id", inputs={"x": 2})
    # --- example (seed 000, context.wait_run: legacy API)
    record = await context.wait_run(run_id)
    # --- end
    assert isinstance(record, RunRecord) and record.status is RunStatus.succeeded
    # --- example (seed 000, context.wait_run: preferred equivalent)
    record, outputs = await context.runner().wait_run(run_id, return_outputs=True)
    # --- end
    assert outputs == {"x": 2}


async def test_seed000_run_and_wait_through_the_context_and_the_preferred_equivalent(
    context: Any,
) -> None:
    # --- example (seed 000, context.run_and_wait: legacy API)
    run_id, outputs, has_waits, continuations = await context.run_and_wait(
        "my-graph-id",
        inputs={"x": 1},
    )
    # --- end
    assert outputs == {"x": 1} and has_waits is False and continuations == []
    # --- example (seed 000, context.run_and_wait: preferred equivalent)
    run_id, outputs, has_waits, continuations = await context.runner().run_and_wait(
        "my-graph-id",
        inputs={"x": 1},
    )
    # --- end
    assert (await context.wait_run(run_id)).status is RunStatus.succeeded


async def test_seed000_cancel_through_the_context_and_the_preferred_equivalent(
    context: Any,
) -> None:
    for preferred in (False, True):
        run_id = await context.spawn_run("my-graph-id", inputs={"x": 3})
        if not preferred:
            # --- example (seed 000, context.cancel_run: legacy API)
            await context.cancel_run(run_id)
            # --- end
        else:
            # --- example (seed 000, context.cancel_run: preferred equivalent)
            await context.runner().cancel_run(run_id)
            # --- end
        record = await context.wait_run(run_id, timeout_s=5)
        assert record.status is RunStatus.canceled


def test_seed000_signatures() -> None:
    import inspect

    from ag_jupyter.runtime import NodeContext as Ctx

    spawn = inspect.signature(Ctx.spawn_run).parameters
    assert list(spawn)[:3] == ["self", "graph_id", "inputs"]
    assert spawn["inputs"].kind is inspect.Parameter.KEYWORD_ONLY
    assert {"session_id", "tags"} <= set(spawn)
    wait = inspect.signature(Ctx.wait_run).parameters
    assert wait["timeout_s"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(Ctx.cancel_run).parameters) == ["self", "run_id"]


# ===================================================================== seed 001
class _ChatHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible ``/chat/completions`` endpoint."""

    answer = "Photons race the dark\nweightless light, no time to rest\nsunrise on my page"
    requests: ClassVar[list[dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:  # keep stderr clean
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        type(self).requests.append({"path": self.path, "body": body})
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self.send_response(404)
            self.end_headers()
            return
        usage = {"prompt_tokens": 9, "completion_tokens": 17, "total_tokens": 26}
        if body.get("stream"):
            chunks = [
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
                {"choices": [{"index": 0, "delta": {"content": self.answer}}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": usage},
            ]
            data = b"".join(
                b"data: "
                + json.dumps(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body.get("model", "test"),
                        **c,
                    }
                ).encode()
                + b"\n\n"
                for c in chunks
            ) + b"data: [DONE]\n\n"
            content_type = "text/event-stream"
        else:
            data = json.dumps(
                {
                    "id": "chatcmpl-test",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", "test"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": self.answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                }
            ).encode()
            content_type = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def chat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_ChatHandler]]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1, configured through the usual
    environment variables."""
    _ChatHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://{host}:{port}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("AG_LLM_MODEL", "test-model")
    try:
        yield _ChatHandler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(
    importlib.util.find_spec("ag_jupyter.runtime.services.llm") is None,
    reason="the llm service (ag_jupyter/runtime/services/llm.py) has not landed yet",
)
async def test_seed001_quick_start_logs_and_chats(
    chat_server: type[_ChatHandler], capsys: pytest.CaptureFixture[str]
) -> None:
    # --- example (seed 001, Quick Start)
    from ag_jupyter import open_session

    # Recommended: context manager form (handles cleanup)
    async with open_session(run_id="adhoc-demo", graph_id="adhoc", node_id="adhoc") as context:
        context.logger().info("hello from adhoc")
        txt, _ = await context.llm().chat([
            {"role": "user", "content": "Give me a haiku about photons."}
        ])
        print(txt)
    # --- end

    assert capsys.readouterr().out == _ChatHandler.answer + "\n"
    [request] = chat_server.requests
    assert request["body"]["messages"] == [
        {"role": "user", "content": "Give me a haiku about photons."}
    ]
    lines = context.services.logs("adhoc-demo")
    assert [line["message"] for line in lines] == ["hello from adhoc"]


async def test_seed001_basic_usage() -> None:
    from ag_jupyter import open_session

    # --- example (seed 001, open_session: basic usage)
    async with open_session() as ctx:
        # Use ctx as you would a NodeContext
        ...
    # --- end
    assert isinstance(ctx, NodeContext)


async def test_seed001_overriding_runtime_parameters_keeps_the_unknown_foo() -> None:
    """The example passes ``foo="bar"`` as a stand-in for a runtime override. It runs (issue
    13): ``foo`` is kept in ``ctx.rt_overrides`` and a ``UserWarning`` names it with the
    accepted overrides, so a typo stays visible."""
    from ag_jupyter import open_session

    with pytest.warns(UserWarning, match=r"'foo'.*accepted.*max_concurrency"):
        # --- example (seed 001, open_session: overriding runtime parameters)
        async with open_session(graph_id="mygraph", node_id="customnode", foo="bar") as ctx:
            ...
        # --- end
    assert ctx.rt_overrides == {"foo": "bar"}
    assert (ctx.graph_id, ctx.node_id) == ("mygraph", "customnode")
    # The same call with an accepted override works.
    async with open_session(graph_id="mygraph", node_id="customnode", max_concurrency=2) as ctx:
        assert (ctx.graph_id, ctx.node_id) == ("mygraph", "customnode")


async def test_seed001_build_adhoc_context_default_parameters() -> None:
    from ag_jupyter import build_adhoc_context

    # --- example (seed 001, build_adhoc_context: default parameters)
    node_ctx = await build_adhoc_context()
    # --- end
    assert (node_ctx.graph_id, node_ctx.node_id) == ("adhoc", "adhoc")
    await node_ctx.aclose()


async def test_seed001_build_adhoc_context_customising_run_and_session_ids() -> None:
    from ag_jupyter import build_adhoc_context

    # --- example (seed 001, build_adhoc_context: customizing the run and session IDs)
    node_ctx = await build_adhoc_context(run_id="test-run", session_id="dev-session")
    # --- end
    assert (node_ctx.run_id, node_ctx.session_id) == ("test-run", "dev-session")
    await node_ctx.aclose()


async def test_seed001_build_adhoc_context_overriding_runtime_parameters() -> None:
    from ag_jupyter import build_adhoc_context, get_run_manager

    # --- example (seed 001, build_adhoc_context: overriding runtime parameters)
    node_ctx = await build_adhoc_context(max_concurrency=4)
    # --- end
    # The limit is the session's own, inside the loop's one manager (issue 11, item 6).
    assert node_ctx.manager is get_run_manager()
    assert node_ctx.manager.session_limit(node_ctx.session_id) == 4
    await node_ctx.aclose()
    assert node_ctx.manager.session_limit(node_ctx.session_id) is None
    assert not node_ctx.manager.closed


# ===================================================================== seed 002
@pytest.fixture
async def runner() -> AsyncIterator[Any]:
    """The bare ``runner`` name the seed 002 examples call: a session context's ``runner``."""
    from ag_jupyter import open_session

    async with open_session() as context:
        yield context.runner


async def test_seed002_spawn_with_default_context_identity(runner: Any) -> None:
    # --- example (seed 002, spawn_run: default context identity/session)
    run_id = await runner().spawn_run(
        "my-graph",
        inputs={"prompt": "hello"},
    )
    # --- end
    assert isinstance(run_id, str)
    record, outputs = await runner().wait_run(run_id, timeout_s=5, return_outputs=True)
    assert record.status is RunStatus.succeeded
    assert outputs["prompt"] == "hello"


async def test_seed002_spawn_with_explicit_metadata_overrides(runner: Any) -> None:
    # --- example (seed 002, spawn_run: explicit metadata overrides)
    from ag_jupyter.runtime import RunVisibility

    run_id = await runner().spawn_run(
        "my-graph",
        inputs={"payload": {"a": 1}},
        tags=["batch", "priority"],
        visibility=RunVisibility.inline,
        agent_id="agent-123",
    )
    # --- end
    record = await runner().wait_run(run_id, timeout_s=5)
    assert record.tags == ["batch", "priority"]
    assert record.visibility is RunVisibility.inline
    assert record.agent_id == "agent-123"
    assert record.origin.value == "agent"


async def test_seed002_wait_for_a_run_record(runner: Any) -> None:
    run_id = await runner().spawn_run("my-graph", inputs={"x": 2})
    # --- example (seed 002, wait_run: wait for a run record)
    record = await runner().wait_run(run_id)
    # --- end
    assert isinstance(record, RunRecord)
    assert record.status is RunStatus.succeeded


async def test_seed002_wait_and_collect_outputs(runner: Any) -> None:
    run_id = await runner().spawn_run("my-graph", inputs={"x": 3})
    # --- example (seed 002, wait_run: wait and also collect outputs)
    record, outputs = await runner().wait_run(
        run_id,
        timeout_s=30,
        return_outputs=True,
    )
    # --- end
    assert record.status is RunStatus.succeeded
    assert outputs == {"prompt": "", "payload": None, "x": 3}


async def test_seed002_run_and_wait_for_a_child_graph(runner: Any) -> None:
    # --- example (seed 002, run_and_wait: wait for a child graph)
    run_id, outputs, has_waits, continuations = await runner().run_and_wait(
        "my-graph",
        inputs={"x": 1},
    )
    # --- end
    assert outputs == {"prompt": "", "payload": None, "x": 1}
    assert has_waits is False and continuations == []
    assert (await runner().wait_run(run_id)).status is RunStatus.succeeded


async def test_seed002_run_and_wait_with_explicit_run_metadata(runner: Any) -> None:
    # --- example (seed 002, run_and_wait: explicit run metadata)
    run_id, outputs, has_waits, continuations = await runner().run_and_wait(
        "my-graph",
        inputs={"x": 1},
        tags=["child"],
        run_id="run-custom-001",
    )
    # --- end
    assert run_id == "run-custom-001"
    record = await runner().wait_run(run_id)
    assert record.tags == ["child"]
    assert outputs["x"] == 1
    assert has_waits is False and continuations == []


async def test_seed002_cancel_a_spawned_run(runner: Any) -> None:
    run_id = await runner().spawn_run("my-graph", inputs={"x": 4})
    # --- example (seed 002, cancel_run: cancel a spawned run)
    await runner().cancel_run(run_id)
    # --- end
    record = await runner().wait_run(run_id, timeout_s=5)
    assert record.status is RunStatus.canceled
    assert record.started_at is None  # it was still queued: it never ran


@pytest.mark.parametrize("should_abort", [True, False])
async def test_seed002_cancel_based_on_condition(runner: Any, should_abort: bool) -> None:
    run_id = await runner().spawn_run("my-graph", inputs={"x": 5})
    # --- example (seed 002, cancel_run: cancel based on condition)
    if should_abort:
        await runner().cancel_run(run_id)
    # --- end
    record = await runner().wait_run(run_id, timeout_s=5)
    expected = RunStatus.canceled if should_abort else RunStatus.succeeded
    assert record.status is expected
