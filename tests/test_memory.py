"""context.memory(): AetherGraph's event memory (Event model, record/recent/query_events,
tool results, chat turns, state snapshots), stored and queried in the workspace."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import NodeContext, RunManager, build_adhoc_context, graph_fn
from ag_jupyter.runtime.defaults import workspace_runtime
from ag_jupyter.runtime.services.memory import Event, MemoryEvent, SessionMemory

ContextFactory = Callable[..., Any]


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


async def _run(manager: RunManager, graph: str, **kw: Any) -> dict[str, Any]:
    final, outputs, _, _ = await manager.run_and_wait(graph, inputs={}, **kw)
    assert final.status == "succeeded", final.error
    return outputs or {}


# ------------------------------------------------------------- AetherGraph's examples
async def test_docs_key_concepts_artifacts_memory_md_L122_record_and_L133_recent(
    manager: RunManager,
) -> None:
    @graph_fn(name="remember_output", outputs=["y"])
    async def remember_output(x: int, *, context):
        y = x + 1
        await context.memory().record(kind="cal.result", data={"y": y})
        return {"y": y}

    final, outputs, _, _ = await manager.run_and_wait(
        "remember_output", inputs={"x": 1}, session_id="calc"
    )
    assert outputs == {"y": 2}
    context = await build_adhoc_context(session_id="calc", run_manager=manager)
    try:
        recent = await context.memory().recent(limit=10)  # return list of events
        assert [e.data for e in recent] == [{"y": 2}]
        assert isinstance(recent[0], Event)
        assert recent[0].run_id == final.run_id and recent[0].graph_id == "remember_output"
    finally:
        await context.aclose()


async def test_docs_tutorials_t4_md_L61_record_tool_result_L69_recent_tool_results(
    session: ContextFactory,
) -> None:
    mem = (await session()).memory()
    uri = "file:///ckpt/1"
    await mem.record_tool_result(
        tool="train.step",
        outputs=[
            {"name": "val_acc", "kind": "number", "value": 0.912},
            {"name": "ckpt_uri", "kind": "uri", "value": uri},
        ],
    )
    await mem.record_tool_result(tool="other", outputs=[{"name": "x", "value": 1}])
    recent = await mem.recent_tool_results(tool="train.step", limit=10)
    assert len(recent) == 1
    assert recent[0].kind == "tool_result" and recent[0].tool == "train.step"
    assert recent[0].outputs[0] == {"name": "val_acc", "kind": "number", "value": 0.912}
    assert recent[0].severity == 3


async def test_docs_tutorials_t4_md_L75_record_L80_recent_L88_recent_data(
    session: ContextFactory,
) -> None:
    mem = (await session()).memory()
    for epoch in (1, 2):
        await mem.record(
            kind="train_log",
            data={"epoch": epoch, "loss": 0.25, "acc": 0.91},
        )
    await mem.record(kind="other", data={"no": True})
    recent = await mem.recent(kinds=["train_log"], limit=3)  # recent is an Event
    assert [e.data["epoch"] for e in recent] == [2, 1]  # newest first, as a15
    assert json.loads(recent[0].text) == {"epoch": 2, "loss": 0.25, "acc": 0.91}
    logs = await mem.recent_data(kinds=["train_log"], limit=3)
    assert logs == [
        {"epoch": 2, "loss": 0.25, "acc": 0.91},
        {"epoch": 1, "loss": 0.25, "acc": 0.91},
    ]


async def test_docs_examples_memory_artifact_md_L20_record_L51_recent_L56_recent_data(
    session: ContextFactory,
) -> None:
    mem = (await session(run_id="r-1", graph_id="g", node_id="n")).memory()
    evt = await mem.record(
        kind="user_msg",
        data={"role": "user", "text": "How do I use AetherGraph?"},
        tags=["chat", "demo"],
        severity=2,
        stage="observe",
    )
    assert isinstance(evt.event_id, str) and evt.event_id
    assert evt.kind == "user_msg"
    assert json.loads(evt.text) == {"role": "user", "text": "How do I use AetherGraph?"}
    assert (evt.session_id, evt.run_id, evt.graph_id, evt.node_id) == ("s1", "r-1", "g", "n")
    assert evt.stage == "observe" and evt.tags == ["chat", "demo"]
    events: list[Event] = await mem.recent(kinds=["user_msg"], limit=10)
    assert [e.event_id for e in events] == [evt.event_id]
    assert events[0] == evt
    data_items = await mem.recent_data(kinds=["user_msg"], limit=10)
    assert data_items == [{"role": "user", "text": "How do I use AetherGraph?"}]


async def test_docs_examples_memory_artifact_md_L87_write_result_L105_indices(
    session: ContextFactory,
) -> None:
    mem = (await session()).memory()
    inputs = [{"name": "expression", "kind": "text", "value": "1 + 2 * 3"}]
    outputs = [{"name": "result", "kind": "number", "value": 7}]
    evt = await mem.write_result(
        topic="tool.calculator",
        inputs=inputs,
        outputs=outputs,
        tags=["tool", "calculator"],
        metrics={"latency_ms": 12.3},
        message="Evaluated 1 + 2 * 3",
    )
    assert (evt.kind, evt.tool, evt.text) == (
        "tool_result",
        "tool.calculator",
        "Evaluated 1 + 2 * 3",
    )
    assert evt.metrics == {"latency_ms": 12.3}
    last_result = await mem.get_last_value("result")
    assert last_result is not None
    assert (last_result["name"], last_result["kind"], last_result["value"]) == (
        "result",
        "number",
        7,
    )
    assert last_result["event_id"] == evt.event_id
    number_refs = await mem.get_latest_values_by_kind("number", limit=5)
    assert [r["value"] for r in number_refs] == [7]
    calc_outputs = await mem.get_last_outputs_for_topic("tool.calculator")
    assert calc_outputs == {"ts": evt.ts, "event_id": evt.event_id, "last_outputs": {"result": 7}}
    assert await mem.last_by_name("nothing") is None


async def test_docs_key_concepts_context_services_md_L130_record_L136_recent(
    session: ContextFactory,
) -> None:
    context = await session()
    evt = await context.memory().record(kind="checkpoint", data={"info": "experiment A saved"})
    evts = await context.memory().recent(kinds=["checkpoint"], limit=100)
    assert evts == [evt]


async def test_examples_method_showcase_2_artifacts_memory_1_memory_record_py(
    manager: RunManager,
) -> None:
    @graph_fn(name="memory_record_graph")
    async def memory_record_graph(context: NodeContext):
        mem = context.memory()
        evt = await mem.record(
            kind="note",
            data={"text_note": "This is a test note."},
            tags=["test", "note"],
            severity=2,  # optional severity level
            stage="initial",
        )
        return {"event_id": evt.event_id}

    @graph_fn(name="memory_retrieve_graph")
    async def memory_retrieve_graph(context: NodeContext):
        mem = context.memory()
        events = await mem.recent(kinds=["note"], limit=5)
        event_data = await mem.recent_data(kinds=["note"], limit=5)
        return {"retrieved_count": len(events), "event_data": event_data}

    # The example shares memory through a fixed run id; here runs share a session.
    written = await _run(manager, "memory_record_graph", session_id="tutorial_memory_record")
    read = await _run(manager, "memory_retrieve_graph", session_id="tutorial_memory_record")
    assert written["event_id"]
    assert read == {"retrieved_count": 1, "event_data": [{"text_note": "This is a test note."}]}


async def test_examples_method_showcase_2_artifacts_memory_2_memory_write_result_py(
    manager: RunManager,
) -> None:
    @graph_fn(name="write_memory_result_graph")
    async def write_memory_result_graph(*, context: NodeContext):
        mem = context.memory()
        inputs = [{"name": "expression", "kind": "text", "value": "1 + 2 * 3"}]
        outputs = [
            {"name": "result", "kind": "number", "vtype": "integer", "value": 7},
            {"name": "explanation", "kind": "text", "vtype": "string", "value": "precedence"},
        ]
        evt = await mem.write_result(
            topic="tool.calculator",
            inputs=inputs,
            outputs=outputs,
            tags=["tool", "calculation"],
            metrics={"latency_ms": 12.3},
            message="Evaluated 1 + 2 * 3",
        )
        return {"event_id": evt.event_id, "status": "result stored in memory"}

    @graph_fn(name="read_memory_result_graph")
    async def read_memory_result_graph(*, context: NodeContext):
        mem = context.memory()
        events = await mem.recent(kinds=["tool_result"], limit=5)
        return {"retrieved_count": len(events)}

    @graph_fn(name="retrieve_last_calculation_result")
    async def retrieve_last_calculation_result(*, context: NodeContext):
        mem = context.memory()
        last_output_by_name = await mem.last_by_name("result")
        last_calc_outputs = await mem.get_last_outputs_for_topic("tool.calculator")
        return {"last_result": last_output_by_name, "last_calc_outputs": last_calc_outputs}

    sid = "tutorial_memory_write_result"
    written = await _run(manager, "write_memory_result_graph", session_id=sid)
    assert await _run(manager, "read_memory_result_graph", session_id=sid) == {"retrieved_count": 1}
    got = await _run(manager, "retrieve_last_calculation_result", session_id=sid)
    assert got["last_result"]["value"] == 7 and got["last_result"]["vtype"] == "integer"
    assert got["last_result"]["event_id"] == written["event_id"]
    assert got["last_calc_outputs"]["last_outputs"] == {"result": 7, "explanation": "precedence"}


async def test_docs_examples_1_chat_with_memory_md_L95_seed_L120_load_history(
    session: ContextFactory,
) -> None:
    mem = (await session()).memory()
    await mem.record(
        kind="chat_turn",
        data={"role": "user", "text": "We talked about integrating AetherGraph into my project."},
        tags=["chat", "user", "seed"],
        severity=2,
        stage="observe",
    )
    await mem.record(
        kind="chat_turn",
        data={"role": "assistant", "text": "Start with a simple graph_fn and add services later."},
        tags=["chat", "assistant", "seed"],
        severity=2,
        stage="act",
    )
    previous_turns = await mem.recent_data(kinds=["chat_turn"], limit=50)
    conversation = []
    for d in previous_turns:
        if isinstance(d, dict) and d.get("role") in ("user", "assistant") and d.get("text"):
            conversation.append({"role": d["role"], "text": d["text"]})
    assert [c["role"] for c in conversation] == ["assistant", "user"]  # newest first


async def test_a17_append_chat_turn_and_recent_chat_in_prompt_order(
    session: ContextFactory,
) -> None:
    """0.1.0a17 ``canonical_public.py`` append_chat_turn / ``canonical_prompt.py``
    recent_chat examples: turns come back oldest first."""
    memory = (await session()).memory()
    event = await memory.append_chat_turn("user", "Hello")
    assert (event.kind, event.stage, event.text) == ("chat.turn", "user", "Hello")
    assert event.data == {"role": "user", "text": "Hello"} and event.tags == ["chat"]
    await memory.record_chat_assistant("Hi! How can I help?")
    await memory.record_chat_user("Tell me a joke", tags=["fun"])
    messages = await memory.recent_chat(limit=20)
    assert messages == [
        {"role": "user", "text": "Hello"},
        {"role": "assistant", "text": "Hi! How can I help?"},
        {"role": "user", "text": "Tell me a joke"},
    ]
    assert await memory.recent_chat(limit=2, roles=["user"]) == [
        {"role": "user", "text": "Hello"},
        {"role": "user", "text": "Tell me a joke"},
    ]
    events = await memory.recent_chat(roles=["user"], return_event=True, include_ts=True)
    assert [e.text for e in events] == ["Hello", "Tell me a joke"]
    history = await memory.chat_history_for_llm(limit=2)
    assert history == {
        "summary": "",
        "messages": [
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Tell me a joke"},
        ],
    }


async def test_state_snapshots(session: ContextFactory) -> None:
    mem = (await session()).memory()
    assert await mem.get_latest_state("plan") is None
    await mem.append_state_snapshot("plan", {"step": 1})
    snap = await mem.append_state_snapshot("plan", {"step": 2}, meta={"by": "me"})
    assert snap.kind == "state.snapshot" and snap.tags == ["state", "state:plan"]
    assert snap.data == {"key": "plan", "value": {"step": 2}, "meta": {"by": "me"}}
    assert await mem.get_latest_state("plan") == {"step": 2}
    assert [e.data["value"] for e in await mem.list_state_history("plan")] == [
        {"step": 2},
        {"step": 1},
    ]
    assert await mem.latest_state("plan") == {"step": 2}


# ------------------------------------------------------------------ queries, scope
async def test_query_events_filters_in_sql(session: ContextFactory) -> None:
    mem = (await session(run_id="r1")).memory()
    await mem.record("a", {"n": 1}, ["x"], stage="plan", severity=1)
    await mem.record("b", {"n": 2}, ["x", "y"], severity=3)
    middle = datetime.now(UTC)
    await mem.record("a", {"n": 3}, ["y"], stage="act")
    await mem.record_tool_result(tool="search", outputs=[{"name": "hits", "value": 3}])

    async def ns(**kw: Any) -> list[Any]:
        return [(e.data or {}).get("n") for e in await mem.query_events(**kw)]

    assert await ns() == [None, 3, 2, 1]
    assert await ns(order_dir="asc") == [1, 2, 3, None]
    assert await ns(kinds=["a"]) == [3, 1]
    assert await ns(kinds="a", limit=1) == [3]
    assert await ns(kinds=["a"], offset=1) == [1]
    assert await ns(tags=["x"]) == [2, 1]
    assert await ns(tags=["x", "y"]) == [2]
    assert await ns(since=middle) == [None, 3]
    assert await ns(until=middle) == [2, 1]
    assert await ns(since=middle.isoformat(), kinds=["a"]) == [3]
    assert await ns(since=middle.timestamp() + 86400) == []
    assert await ns(stage="plan") == [1]
    assert await ns(severity=3) == [None, 2]
    assert await ns(min_severity=2, kinds=["a", "b"]) == [3, 2]
    assert await ns(tool="search") == [None]
    assert await ns(run_id="other") == []
    dicts = await mem.query_events(kinds=["b"], return_event=False)
    assert dicts[0]["data"] == {"n": 2} and dicts[0]["timeline_id"] == "session:s1"
    assert [e.data for e in await mem.search_events(query='"N": 3')] == [{"n": 3}]
    assert await mem.search_events(query="nowhere") == []


async def test_memory_is_scoped_to_the_session_and_level_narrows_to_the_run(
    manager: RunManager,
) -> None:
    one = await build_adhoc_context(session_id="s1", run_id="r1", run_manager=manager)
    same_session = await build_adhoc_context(session_id="s1", run_id="r2", run_manager=manager)
    two = await build_adhoc_context(session_id="s2", run_manager=manager)
    try:
        await one.memory().record("k", "from r1")
        await same_session.memory().record("k", "from r2")
        await two.memory().record("k", "from s2")
        assert [e.text for e in await one.memory().recent()] == ["from r2", "from r1"]
        assert [e.text for e in await one.memory().recent(level="run")] == ["from r1"]
        assert [e.text for e in await two.memory().recent()] == ["from s2"]
        assert one.memory().scope_id() == "session:s1"
    finally:
        for ctx in (one, same_session, two):
            await ctx.aclose()


async def test_data_shapes_follow_a15_append_event(session: ContextFactory) -> None:
    mem = (await session()).memory()
    text_event = await mem.record("note", "plain string")
    list_event = await mem.record("note", [1, 2])
    none_event = await mem.record("note")
    assert (text_event.data, text_event.text) == (None, "plain string")
    assert (list_event.data, list_event.text) == ({"value": [1, 2]}, "[1, 2]")
    assert (none_event.data, none_event.text) == (None, None)
    assert await mem.recent_data(kinds=["note"]) == [[1, 2], "plain string"]
    long = await mem.record("note", "x" * 5000)
    assert long.text is not None and long.text.endswith("...[truncated]")
    assert len(long.text) == 2000 + len(" ...[truncated]")


async def test_older_names_kept_as_aliases(session: ContextFactory) -> None:
    mem = (await session()).memory()
    for i in range(3):
        await mem.append("step", {"i": i})
    assert [e.data["i"] for e in await mem.query(kind="step")] == [0, 1, 2]  # oldest first
    assert [e.data["i"] for e in await mem.recent(2)] == [2, 1]  # a15's order now
    assert MemoryEvent is Event
    e = (await mem.recent(1))[0]
    assert isinstance(e.id, int) and e.created_at.tzinfo is not None
    await mem.add_chat_turn("user", "Give me a haiku about photons.")
    await mem.add_chat_turn("assistant", {"structured": True})
    assert await mem.chat_history() == [
        {"role": "user", "content": "Give me a haiku about photons."},
        {"role": "assistant", "content": '{"structured": true}'},
    ]


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("data", "type_name"), [({1}, "set"), (object(), "object"), ({"k": b"v"}, "bytes")]
)
async def test_non_json_data_raises_type_error_naming_the_type(
    session: ContextFactory, data: Any, type_name: str
) -> None:
    mem = (await session()).memory()
    with pytest.raises(TypeError, match=f"memory data must be JSON-serialisable; got {type_name}"):
        await mem.record("bad", data)
    with pytest.raises(TypeError, match=f"got {type_name}"):
        await mem.add_chat_turn("user", data)
    assert await mem.recent() == []


async def test_values_that_cannot_be_stored_as_given(session: ContextFactory) -> None:
    mem = (await session()).memory()
    cyclic: dict[str, Any] = {}
    cyclic["me"] = cyclic
    with pytest.raises(ValueError, match="circular reference"):
        await mem.record("bad", cyclic)
    with pytest.raises(TypeError, match="list of str"):
        await mem.record("k", 1, tags="solo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        await mem.record("k", 1, tags=["a\x00"])
    with pytest.raises(ValueError, match="lone surrogate"):
        await mem.record("caf\udce9", 1)
    with pytest.raises(ValueError, match="severity"):
        await mem.record("k", 1, severity=7)
    with pytest.raises(ValueError, match="at most"):
        await mem.record("k", {"big": "x" * (16 * 1024 * 1024)})
    with pytest.raises(TypeError, match="kind"):
        await mem.record("", 1)
    with pytest.raises(ValueError, match="n must be"):
        await mem.recent(0)
    with pytest.raises(ValueError, match="limit"):
        await mem.query_events(limit=10**9)
    with pytest.raises(TypeError, match="since"):
        await mem.query_events(since="yesterday")
    assert await mem.recent() == []
    # text with lone surrogates and NUL is stored losslessly
    odd = await mem.record("odd", "caf\udce9 \x00 end")
    assert (await mem.recent(kinds=["odd"]))[0].text == "caf\udce9 \x00 end" == odd.text


async def test_events_survive_reopening_the_workspace(tmp_path: Path) -> None:
    first = RunManager(**workspace_runtime(tmp_path / "ws"))
    ctx = await build_adhoc_context(session_id="keep", run_manager=first)
    await ctx.memory().append_chat_turn("user", "remember me")
    await ctx.aclose()
    await first.close()
    second = RunManager(**workspace_runtime(tmp_path / "ws"))
    try:
        ctx = await build_adhoc_context(session_id="keep", run_manager=second)
        assert await ctx.memory().recent_chat() == [{"role": "user", "text": "remember me"}]
        assert isinstance(ctx.memory(), SessionMemory)
        await ctx.aclose()
    finally:
        await second.close()


async def test_time_filters_accept_a15_forms(session: ContextFactory) -> None:
    mem = (await session()).memory()
    e = await mem.record("t", {"x": 1})
    ts = datetime.fromisoformat(e.ts.replace("Z", "+00:00"))
    assert await mem.query_events(since=e.ts) == [e]
    assert await mem.query_events(until=ts - timedelta(seconds=1)) == []
    assert await mem.query_events(since=ts.replace(tzinfo=None)) == [e]  # naive is UTC
