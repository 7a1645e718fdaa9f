"""``@tool`` (issue 13, item 6): sync and async tools callable from a graph body, each call a
step of the current run (``manager.steps(run_id)``), as AetherGraph 0.1.0a15's immediate mode."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from ag_jupyter import NodeContext, graph_fn, tool
from ag_jupyter.runtime import RunStatus, default_registry, get_run_manager, open_session
from ag_jupyter.runtime.store.steps import STEP_KEYS
from ag_jupyter.runtime.tools import ToolOutputs


@pytest.fixture
def graph_names() -> Any:
    names: list[str] = []
    yield names
    for name in names:
        default_registry.unregister(name)


@tool(outputs=["y"])
def double(x: int) -> dict[str, int]:
    return {"y": x * 2}


@tool(outputs=["text"], name="fetch")
async def fetch_text(url: str, *, context: NodeContext) -> dict[str, str]:
    context.logger().info("fetching %s", url)
    await asyncio.sleep(0)
    return {"text": f"<{url} for {context.run_id}>"}


@tool(outputs=["out0", "out1"])
def pair(a: int) -> tuple[int, int]:
    return a, -a


@tool(outputs=["never"])
def broken(a: int) -> dict[str, int]:
    return {"other": a}


@tool(outputs=["y"])
def fails(a: int) -> dict[str, int]:
    raise ZeroDivisionError(f"cannot {a}")


async def run_graph(name: str, **inputs: Any) -> tuple[Any, list[dict[str, Any]]]:
    manager = get_run_manager()
    record, _, _, _ = await manager.run_and_wait(name, inputs=inputs)
    return record, await manager.steps(record.run_id)


async def test_each_tool_call_in_a_graph_body_is_a_step_of_the_run(
    graph_names: list[str],
) -> None:
    graph_names.append("tools-steps")

    @graph_fn("tools-steps", outputs=["total"])
    async def body(x: int, *, context: NodeContext) -> dict[str, Any]:
        a = double(x=x)
        b = double(a["y"])  # positional, as docs/key-concepts/agent-via-graph-fn.md does
        c = await fetch_text(url="https://example.com")
        return {"total": a.y + b["y"] + len(c.text)}

    record, steps = await run_graph("tools-steps", x=3)
    assert record.status is RunStatus.succeeded
    assert [s["name"] for s in steps] == ["double", "double", "fetch"]
    assert all(list(s) == list(STEP_KEYS) for s in steps)
    first = steps[0]
    assert (first["kind"], first["run_id"], first["error"]) == ("tool", record.run_id, None)
    assert first["inputs_preview"] == '{"x": 3}' and first["outputs_preview"] == '{"y": 6}'
    assert datetime.fromisoformat(first["started_at"]).tzinfo is not None
    assert first["duration_s"] >= 0
    assert "context" not in steps[2]["inputs_preview"]
    logs = (await get_run_manager().logs(record.run_id))["lines"]
    assert [ln["message"] for ln in logs] == ["fetching https://example.com"]


async def test_a_sync_graph_body_records_its_tool_steps_from_the_worker_thread(
    graph_names: list[str],
) -> None:
    graph_names.append("tools-sync-body")

    @graph_fn("tools-sync-body")
    def body(x: int) -> int:
        return double(x=x)["y"] + pair(x)["out1"]

    record, steps = await run_graph("tools-sync-body", x=5)
    assert record.status is RunStatus.succeeded
    assert [(s["name"], s["outputs_preview"]) for s in steps] == [
        ("double", '{"y": 10}'), ("pair", '{"out0": 5, "out1": -5}'),
    ]


async def test_a_failing_tool_is_a_step_with_its_error_and_raises_in_the_body(
    graph_names: list[str],
) -> None:
    graph_names.append("tools-fail")
    caught: list[str] = []

    @graph_fn("tools-fail")
    async def body() -> None:
        try:
            fails(a=1)
        except ZeroDivisionError as exc:
            caught.append(str(exc))
        broken(a=2)  # missing declared output: a ValueError the run fails with

    record, steps = await run_graph("tools-fail")
    assert caught == ["cannot 1"]
    assert [(s["name"], s["error"], s["outputs_preview"]) for s in steps] == [
        ("fails", "ZeroDivisionError: cannot 1", None),
        ("broken", "ValueError: Tool broken missing outputs: ['never']", None),
    ]
    assert record.status is RunStatus.failed
    assert record.error == "ValueError: Tool broken missing outputs: ['never']"


def test_immediate_mode_outside_any_run_just_runs() -> None:
    # docs/reference/graph-tool.md "1. Simple synchronous tool", verbatim lines
    result = double(x=21)
    assert result == {"y": 42}
    assert isinstance(result, dict) and isinstance(result, ToolOutputs)
    assert pair(2) == {"out0": 2, "out1": -2}


def test_result_normalisation_follows_0_1_0a15() -> None:
    @tool(outputs=[])
    def nothing() -> None:
        return None

    @tool(outputs=["result"])
    def single() -> int:
        return 7

    assert nothing() == {} and single() == {"result": 7} and single().result == 7
    with pytest.raises(AttributeError, match=r"no 'missing'; they are \['result'\]"):
        single().missing  # noqa: B018


def test_control_keywords_are_refused_outside_graphify() -> None:
    with pytest.raises(RuntimeError, match=r"build_mode_only.*_after"):
        double(x=1, _after=None)


def test_tool_attributes_and_classes_refused() -> None:
    assert double.__aether_outputs__ == ["y"] and double.__aether_inputs__ == ["x"]
    assert fetch_text.inputs == ["url"] and fetch_text.tool_name == "fetch"
    assert double.__name__ == "double"

    with pytest.raises(TypeError, match="DualStageTool"):

        @tool(outputs=["y"])
        class Waitable:
            pass


async def test_tools_in_a_session_record_steps_under_the_sessions_id() -> None:
    async with open_session(run_id="tool-session"):
        out = await fetch_text(url="u")
        assert out.text == "<u for tool-session>"
        double(x=1)
    steps = await get_run_manager().steps("tool-session")
    assert [s["name"] for s in steps] == ["fetch", "double"]


async def test_an_explicit_context_is_used_for_the_tool_and_its_step() -> None:
    async with open_session(run_id="explicit-tool") as context:
        pass
    out = await fetch_text(url="v", context=context)
    assert out == {"text": "<v for explicit-tool>"}
    assert [s["name"] for s in await get_run_manager().steps("explicit-tool")] == ["fetch"]


async def test_an_async_tool_outside_any_run_is_awaitable_and_needs_its_context() -> None:
    @tool(outputs=["text"])
    async def plain(url: str) -> dict[str, str]:
        return {"text": url}

    assert await plain(url="x") == {"text": "x"}
    with pytest.raises(TypeError, match="context"):
        await fetch_text(url="no context here")
