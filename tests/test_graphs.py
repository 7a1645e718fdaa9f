"""``graph_fn`` and the graph registry: inputs, context injection, outputs, validation."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from ag_jupyter import graph_fn
from ag_jupyter.runtime import (
    GraphNotFoundError,
    GraphRegistry,
    NodeContext,
    RunInputError,
    RunManager,
    RunStatus,
    default_registry,
)


async def run(manager: RunManager, graph_id: str, **inputs: Any) -> tuple[Any, Any]:
    """Run ``graph_id`` to the end; return ``(record, outputs)``."""
    record, outputs, _, _ = await manager.run_and_wait(graph_id, inputs=inputs)
    return record, outputs


# ------------------------------------------------------------------------- inputs
def test_inputs_default_to_function_parameters(registry: GraphRegistry) -> None:
    @graph_fn("add", registry=registry)
    async def add(a: int, b: int = 2) -> int:
        return a + b

    assert registry.get("add").inputs == ("a", "b")


def test_graph_fn_returns_a_graph_function_keeping_the_function(
    registry: GraphRegistry,
) -> None:
    # Contract changed by issue 13: graph_fn returns AetherGraph's GraphFunction (awaiting
    # it runs the graph); the decorated function is its ``fn``.
    @graph_fn("double", registry=registry)
    def double(x: int) -> int:
        return 2 * x

    assert double.fn(4) == 8
    assert double.__graph_spec__ is registry.get("double")
    assert registry.get("double").function is double.fn


def test_graph_fn_registers_in_default_registry_without_registry_argument() -> None:
    name = "test-graphs-default-registry"

    @graph_fn(name)
    async def g() -> None:
        return None

    try:
        assert name in default_registry
        assert default_registry.get(name).function is g.fn
    finally:
        default_registry.unregister(name)


@pytest.mark.parametrize("param", ["context", "ctx"])
async def test_context_param_by_name_is_injected_and_not_an_input(
    registry: GraphRegistry, manager: RunManager, param: str
) -> None:
    seen: dict[str, Any] = {}

    async def body(x: int, **kw: Any) -> int:
        seen["ctx"] = kw[param]
        return x

    # Build "async def g(x, <param>)" so the name is exactly the parametrised one.
    namespace: dict[str, Any] = {"body": body}
    exec(
        f"async def g(x: int, {param}):\n    return await body(x, {param}={param})\n",
        namespace,
    )
    graph_fn("ctx-graph", registry=registry)(namespace["g"])

    assert registry.get("ctx-graph").inputs == ("x",)
    record, outputs = await run(manager, "ctx-graph", x=5)
    assert record.status is RunStatus.succeeded
    assert outputs == {"result": 5}
    ctx = seen["ctx"]
    assert isinstance(ctx, NodeContext)
    assert ctx.run_id == record.run_id
    assert ctx.graph_id == "ctx-graph"


async def test_param_annotated_node_context_is_injected_whatever_its_name(
    registry: GraphRegistry, manager: RunManager
) -> None:
    seen: list[Any] = []

    @graph_fn("annotated", registry=registry)
    async def annotated(node: NodeContext, y: str) -> str:
        seen.append(node)
        return y

    assert registry.get("annotated").inputs == ("y",)
    record, outputs = await run(manager, "annotated", y="hi")
    assert outputs == {"result": "hi"}
    assert isinstance(seen[0], NodeContext) and seen[0].run_id == record.run_id


async def test_context_cannot_be_passed_as_an_input(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("takes-ctx", registry=registry)
    async def takes_ctx(context, x: int) -> int:
        return x

    with pytest.raises(RunInputError, match="context"):
        await manager.submit_run("takes-ctx", inputs={"x": 1, "context": "fake"})


async def test_sync_graph_receives_context_too(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("sync-ctx", registry=registry)
    def sync_ctx(ctx) -> str:
        return ctx.run_id

    record, outputs = await run(manager, "sync-ctx")
    assert outputs == {"result": record.run_id}


# ------------------------------------------------------------------------ outputs
async def test_dict_return_is_filtered_to_declared_outputs(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("filtered", outputs=["a", "b"], registry=registry)
    async def filtered() -> dict[str, int]:
        return {"a": 1, "b": 2, "scratch": 3}

    record, outputs = await run(manager, "filtered")
    assert record.status is RunStatus.succeeded
    assert outputs == {"a": 1, "b": 2}


async def test_dict_return_without_declared_outputs_is_kept_whole(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("whole", registry=registry)
    async def whole() -> dict[str, int]:
        return {"a": 1, "scratch": 3}

    _, outputs = await run(manager, "whole")
    assert outputs == {"a": 1, "scratch": 3}


async def test_missing_declared_output_fails_the_run_with_the_name_on_the_record(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("lacking", outputs=["answer", "score"], registry=registry)
    async def lacking() -> dict[str, int]:
        return {"answer": 42}

    record, outputs = await run(manager, "lacking")
    assert record.status is RunStatus.failed
    assert record.error is not None
    assert record.error.startswith("ValueError: ")
    assert "score" in record.error
    assert outputs is None


async def test_single_declared_output_wraps_a_non_dict_return(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("single", outputs=["summary"], registry=registry)
    def single(text: str) -> str:
        return text.upper()

    _, outputs = await run(manager, "single", text="abc")
    assert outputs == {"summary": "ABC"}


async def test_non_dict_return_becomes_result_when_no_output_is_declared(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("plain", registry=registry)
    async def plain() -> list[int]:
        return [1, 2]

    _, outputs = await run(manager, "plain")
    assert outputs == {"result": [1, 2]}


async def test_non_dict_return_with_two_declared_outputs_fails_naming_them(
    registry: GraphRegistry, manager: RunManager
) -> None:
    # Contract changed by issue 13 (as AetherGraph documents and 0.1.0a15 does): a plain
    # value with two or more declared outputs is an error, no longer {"result": value}.
    @graph_fn("plain2", outputs=["a", "b"], registry=registry)
    async def plain2() -> list[int]:
        return [1, 2]

    record, outputs = await run(manager, "plain2")
    assert record.status is RunStatus.failed and outputs is None
    assert record.error.startswith("ValueError: graph 'plain2' declares outputs ['a', 'b']")


async def test_none_return_becomes_result_none(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("nothing", registry=registry)
    async def nothing() -> None:
        return None

    record, outputs = await run(manager, "nothing")
    assert record.status is RunStatus.succeeded
    assert outputs == {"result": None}


# --------------------------------------------------------------------- validation
@pytest.fixture
def typed_graph(registry: GraphRegistry) -> str:
    @graph_fn("typed", registry=registry)
    async def typed(n: int, label: str = "x") -> str:
        return f"{label}{n}"

    return "typed"


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({}, "missing input 'n'"),
        ({"n": 1, "colour": "red"}, "unexpected input 'colour'"),
        ({"n": "not a number"}, "input 'n'"),
        ({"n": [1]}, "input 'n'"),
    ],
    ids=["missing", "unexpected", "ill-typed-str", "ill-typed-list"],
)
async def test_bad_inputs_raise_run_input_error_before_any_record_exists(
    manager: RunManager, typed_graph: str, inputs: dict[str, Any], match: str
) -> None:
    events: list[Any] = []
    manager.subscribe(events.append)

    with pytest.raises(RunInputError, match=match) as info:
        await manager.submit_run(typed_graph, inputs=inputs)

    assert "Accepted inputs: n, label" in str(info.value)
    assert await manager.list_records() == []
    assert events == []
    assert manager.live_records() == []


async def test_non_mapping_inputs_raise_run_input_error(
    manager: RunManager, typed_graph: str
) -> None:
    with pytest.raises(RunInputError, match="must be a dict"):
        await manager.submit_run(typed_graph, inputs=[("n", 1)])  # type: ignore[arg-type]
    assert await manager.list_records() == []


async def test_run_and_wait_validates_inputs_before_starting(
    manager: RunManager, typed_graph: str
) -> None:
    with pytest.raises(RunInputError):
        await manager.run_and_wait(typed_graph, inputs={"n": "x"})
    assert await manager.list_records() == []


async def test_inputs_are_coerced_to_their_annotations(
    manager: RunManager, typed_graph: str
) -> None:
    _, outputs = await run(manager, typed_graph, n="7")
    assert outputs == {"result": "x7"}


async def test_declared_inputs_subset_uses_defaults_for_the_rest(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("subset", inputs=["a"], registry=registry)
    async def subset(a: int, b: int = 10) -> int:
        return a + b

    assert registry.get("subset").inputs == ("a",)
    _, outputs = await run(manager, "subset", a=1)
    assert outputs == {"result": 11}
    with pytest.raises(RunInputError, match="unexpected input 'b'"):
        await manager.submit_run("subset", inputs={"a": 1, "b": 2})


def test_declared_input_without_parameter_is_a_type_error(registry: GraphRegistry) -> None:
    with pytest.raises(TypeError, match="no parameter"):

        @graph_fn("bad-decl", inputs=["nope"], registry=registry)
        async def bad_decl(a: int = 1) -> int:
            return a


async def test_unknown_graph_raises_graph_not_found_listing_registered_graphs(
    manager: RunManager, typed_graph: str
) -> None:
    with pytest.raises(GraphNotFoundError, match=r"'typd'.*typed"):
        await manager.submit_run("typd", inputs={})
    assert await manager.list_records() == []


# ------------------------------------------------------------------- registration
async def test_registering_a_name_again_replaces_the_graph(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("cell", registry=registry)
    async def first() -> str:
        return "first"

    @graph_fn("cell", registry=registry)
    async def second(extra: int = 0) -> str:
        return "second"

    assert len(registry) == 1
    assert registry.get("cell").function is second.fn
    _, outputs = await run(manager, "cell", extra=1)
    assert outputs == {"result": "second"}


# ---------------------------------------------------------------------- threading
async def test_sync_graph_body_runs_in_a_worker_thread_not_the_loop_thread(
    registry: GraphRegistry, manager: RunManager
) -> None:
    threads: list[threading.Thread] = []

    @graph_fn("where-sync", registry=registry)
    def where_sync() -> None:
        threads.append(threading.current_thread())

    record, _ = await run(manager, "where-sync")
    assert record.status is RunStatus.succeeded
    assert threads and threads[0] is not threading.current_thread()


async def test_async_graph_body_runs_on_the_loop_thread(
    registry: GraphRegistry, manager: RunManager
) -> None:
    threads: list[threading.Thread] = []

    @graph_fn("where-async", registry=registry)
    async def where_async() -> None:
        threads.append(threading.current_thread())

    await run(manager, "where-async")
    assert threads == [threading.current_thread()]


async def test_blocking_sync_graph_does_not_block_the_loop(
    registry: GraphRegistry, manager: RunManager
) -> None:
    release = threading.Event()

    @graph_fn("blocking", registry=registry)
    def blocking() -> str:
        release.wait(5)
        return "done"

    record = await manager.submit_run("blocking", inputs={})
    # The loop keeps turning while the graph blocks its thread.
    for _ in range(3):
        await asyncio.sleep(0)
    assert (await manager.get_record(record.run_id)).status is RunStatus.running
    release.set()
    final, outputs = await manager.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    assert final.status is RunStatus.succeeded
    assert outputs == {"result": "done"}
