"""``GraphFunction``, ``run_async`` / ``run``, the current run and context injection as
AetherGraph code uses them (issue 13, items 2 and 3)."""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
import time
import traceback
from typing import Any, Optional

import pytest

from ag_jupyter import NodeContext, graph_fn
from ag_jupyter.runner import run, run_async
from ag_jupyter.runtime import (
    GraphFunction,
    GraphNotFoundError,
    RunInputError,
    RunManager,
    RunStatus,
    default_registry,
    get_run_manager,
    open_session,
    output_capture,
    set_blocking_waits,
)
from ag_jupyter.runtime import current as current_mod
from ag_jupyter.runtime.launch import shutdown_runner_loop

_names: list[str] = []


def unique(name: str) -> str:
    """A graph name no other test uses (graphs go to the process-wide registry here, as in
    AetherGraph code)."""
    full = f"compat-{name}-{len(_names)}"
    _names.append(full)
    return full


@pytest.fixture(autouse=True)
def _forget_graphs() -> Any:
    yield
    for name in _names:
        default_registry.unregister(name)
    _names.clear()


async def records_of(graph_id: str) -> list[Any]:
    return await get_run_manager().list_records(graph_id=graph_id)


# ------------------------------------------------------------------ the object
def test_graph_fn_returns_a_graph_function_with_aethergraphs_attributes() -> None:
    name = unique("attrs")

    @graph_fn(name=name, inputs=["x"], outputs=["y"], version="1.2.0")
    async def example(x: int, *, context: NodeContext) -> dict[str, int]:
        """Add one."""
        return {"y": x + 1}

    assert isinstance(example, GraphFunction)
    assert (example.name, example.graph_id, example.version) == (name, name, "1.2.0")
    assert example.inputs == ["x"] and example.outputs == ["y"]
    assert example.fn.__name__ == "example" and example.__doc__ == "Add one."
    assert example.registry_key is None and example.last_graph is None
    assert default_registry.get(name) is example.__graph_spec__ is example.spec
    assert example.io_signature() == {
        "inputs": [{"name": "x", "type": "int", "required": True, "default": None}],
        "outputs": [{"name": "y", "type": "dict[str, int]", "required": True}],
    }
    assert name in repr(example)


def test_inputs_default_to_the_parameters_and_outputs_to_an_empty_list() -> None:
    @graph_fn(unique("defaults"))
    async def g(a: int, b: str = "x", *, context: NodeContext) -> None: ...

    assert g.inputs == ["a", "b"] and g.outputs == []


# ------------------------------------------------------------------- awaiting
async def test_awaiting_a_call_runs_a_tracked_run_and_returns_its_outputs() -> None:
    name = unique("add")

    @graph_fn(name)
    async def add(x: int, y: int = 1) -> int:
        return x + y

    assert await add(x=2, y=3) == {"result": 5}
    [record] = await records_of(name)
    assert record.status is RunStatus.succeeded and record.parent_run_id is None


async def test_positional_arguments_fill_the_inputs_in_declaration_order() -> None:
    @graph_fn(unique("pos"), outputs=["s"])
    def concat(a: str, b: str, c: str = "!") -> str:
        return a + b + c

    assert await concat("x", "y") == {"s": "xy!"}
    assert await concat("x", c="?", b="z") == {"s": "xz?"}
    with pytest.raises(RunInputError, match="3 input"):
        await concat("a", "b", "c", "d")
    with pytest.raises(RunInputError, match="both by position and by name"):
        await concat("a", a="b")


async def test_bad_inputs_raise_run_input_error_before_any_run() -> None:
    name = unique("typed")

    @graph_fn(name)
    async def typed(n: int) -> int:
        return n

    with pytest.raises(RunInputError, match="'n'"):
        await typed(n="not a number")
    assert await records_of(name) == []


async def test_the_bodys_own_exception_is_raised_and_kept_on_the_record() -> None:
    name = unique("boom")

    class Oops(Exception):
        pass

    @graph_fn(name)
    def boom(x: int) -> None:
        raise Oops(f"bad {x}")

    with pytest.raises(Oops, match="bad 7") as info:
        await boom(x=7)
    assert "raise Oops" in "".join(traceback.format_tb(info.value.__traceback__))
    [record] = await records_of(name)
    assert record.status is RunStatus.failed
    assert record.error == "Oops: bad 7"
    assert "Oops: bad 7" in record.meta["traceback"]


async def test_a_wrong_return_shape_is_raised_as_the_bodys_value_error() -> None:
    @graph_fn(unique("shape"), outputs=["a", "b"])
    async def shape() -> int:
        return 1

    with pytest.raises(ValueError, match=r"declares outputs \['a', 'b'\].*single int"):
        await shape()


async def test_awaiting_from_a_graph_body_is_a_child_run_in_the_callers_session() -> None:
    child_name, parent_name = unique("child"), unique("parent")
    seen: dict[str, Any] = {}

    @graph_fn(child_name)
    async def child(x: int, *, context: NodeContext) -> dict[str, int]:
        seen["child_ctx"] = (context.run_id, context.session_id)
        return {"y": x * 2}

    @graph_fn(parent_name)
    async def parent(x: int, *, context: NodeContext) -> dict[str, int]:
        seen["parent"] = context.run_id
        a = await child(x)
        b, c = await asyncio.gather(child(x=1), child(x=2))
        return {"z": a["y"] + b["y"] + c["y"]}

    manager = get_run_manager()
    record, outputs, _, _ = await manager.run_and_wait(
        parent_name, inputs={"x": 5}, session_id="sess-1"
    )
    rid = record.run_id
    assert outputs == {"z": 16}
    children = await records_of(child_name)
    assert len(children) == 3
    for record in children:
        assert record.parent_run_id == rid == seen["parent"]
        assert record.session_id == "sess-1"
        assert record.status is RunStatus.succeeded
    assert seen["child_ctx"][1] == "sess-1"


async def test_child_runs_hold_no_slot_so_a_full_limit_cannot_deadlock_them() -> None:
    child_name, parent_name = unique("slotchild"), unique("slotparent")

    @graph_fn(child_name)
    async def child() -> str:
        return "ok"

    @graph_fn(parent_name)
    async def parent() -> dict[str, Any]:
        return await child()

    manager = get_run_manager()
    manager.max_concurrency = 1  # the parent takes the only slot
    assert await asyncio.wait_for(parent(), 5) == {"result": "ok"}


async def test_an_explicit_context_makes_the_call_a_child_of_that_context() -> None:
    name = unique("explicit")

    @graph_fn(name)
    async def echo(x: int, *, context: NodeContext) -> int:
        return x

    async with open_session(session_id="explicit-sess") as session:
        other = await run_async(echo, {"x": 1})  # the current session: its child too
        assert other == {"result": 1}
    # Outside the session, passing it explicitly (0.1.0a15: inputs["context"]).
    assert await echo(x=2, context=session) == {"result": 2}
    assert await run_async(echo, {"x": 3, "ctx": session}) == {"result": 3}
    records = await records_of(name)
    assert {r.parent_run_id for r in records} == {session.run_id}
    assert {r.session_id for r in records} == {"explicit-sess"}
    with pytest.raises(TypeError, match="only one of 'context' or 'ctx'"):
        await echo(x=1, context=session, ctx=session)


async def test_cancelling_the_awaiting_caller_cancels_the_run() -> None:
    name = unique("sleepy")
    started = asyncio.Event()

    @graph_fn(name)
    async def sleepy() -> None:
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(sleepy())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [record] = await records_of(name)
    final = await get_run_manager().wait_run(record.run_id, timeout_s=5)
    assert final.status is RunStatus.canceled
    assert final.meta["cancel_reason"] == "caller_cancelled"


async def test_a_canceled_run_raises_cancelled_error_in_its_awaiting_caller() -> None:
    name = unique("victim")
    started = asyncio.Event()

    @graph_fn(name)
    async def victim() -> None:
        started.set()
        await asyncio.sleep(30)

    async def caller() -> Any:
        return await victim()

    task = asyncio.ensure_future(caller())
    await asyncio.wait_for(started.wait(), 5)
    [record] = await records_of(name)
    await get_run_manager().cancel_run(record.run_id)
    with pytest.raises(asyncio.CancelledError, match="canceled"):
        await task


async def test_as_agent_and_as_app_are_kept_and_carried_by_the_runs() -> None:
    agent_name, app_name, plain = unique("agent"), unique("app"), unique("plain")

    @graph_fn(agent_name, as_agent={"id": "helper", "title": "Helper"})
    async def agent(*, context: NodeContext) -> dict[str, Any]:
        return {"agent_id": context.agent_id, "app_id": context.app_id}

    @graph_fn(app_name, as_app={"name": "Gallery app"})  # no id: the graph's name
    async def app(*, context: NodeContext) -> dict[str, Any]:
        return await agent()

    @graph_fn(plain, agent="docs-form")  # docs' older keyword
    async def plain_fn() -> None: ...

    assert agent.agent_id == "helper" and agent.app_id is None
    assert app.app_id == app_name and app.agent_id is None
    assert agent.spec.meta["as_agent"] == {"id": "helper", "title": "Helper"}
    assert plain_fn.agent_id == "docs-form"
    # A child with its own agent id keeps it; it inherits the caller's app id.
    assert await app() == {"agent_id": "helper", "app_id": app_name}
    [record] = await records_of(agent_name)
    assert (record.agent_id, record.app_id, record.origin.value) == ("helper", app_name, "agent")
    [app_record] = await records_of(app_name)
    assert (app_record.agent_id, app_record.app_id, app_record.origin.value) == (
        None, app_name, "app"
    )
    with pytest.raises(TypeError, match="as_agent"):
        graph_fn(unique("bad"), as_agent="helper")  # type: ignore[arg-type]


async def test_call_knob_max_concurrency_is_accepted_and_ignored() -> None:
    # docs/key-concepts/concurrency-orchestration.md writes graph_fn1(a=1, max_concurrency=N)
    @graph_fn(unique("knob"), max_concurrency=2)
    async def knob(a: int) -> int:
        return a

    assert await knob(a=1, max_concurrency=4) == {"result": 1}
    assert knob.spec.meta["max_concurrency"] == 2


async def test_graph_function_run_method_as_in_aethergraph() -> None:
    @graph_fn(unique("runmethod"))
    async def g(x: int) -> int:
        return x

    assert await g.run(x=4) == {"result": 4}
    with pytest.raises(NotImplementedError, match="RuntimeEnv"):
        await g.run(env=object(), x=1)


# ----------------------------------------------------------------- run_async / run
async def test_run_async_takes_a_graph_function_or_a_registered_name() -> None:
    name = unique("named")

    @graph_fn(name, outputs=["y"])
    async def named(x: int) -> int:
        return x + 1

    assert await run_async(named, {"x": 1}) == {"y": 2}
    assert await run_async(name, inputs={"x": 2}) == {"y": 3}
    assert await run_async(named, {"x": 3}, run_id="custom-run-123", tags=["t"]) == {"y": 4}
    record = await get_run_manager().get_record("custom-run-123")
    assert record.tags == ["t"]
    with pytest.raises(GraphNotFoundError):
        await run_async("no-such-graph", {})
    with pytest.raises(TypeError, match="GraphFunction or the name"):
        await run_async(object(), {})  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match=r"'colour'.*accepted: run_id"):
        assert await run_async(named, {"x": 0}, colour="blue", max_concurrency=8) == {"y": 1}


async def test_run_on_a_running_loops_thread_raises_pointing_to_await() -> None:
    @graph_fn(unique("blocked"))
    async def g() -> None: ...

    with pytest.raises(RuntimeError, match=r"await run_async\(graph, inputs\)"):
        run(g, {})
    with pytest.raises(RuntimeError, match="blocking_waits"):
        g.sync()


async def test_run_with_blocking_waits_opted_in_waits_on_the_running_loop() -> None:
    @graph_fn(unique("nested"))
    async def g(x: int) -> int:
        return x

    set_blocking_waits("nest_asyncio2")
    try:
        assert run(g, {"x": 9}) == {"result": 9}
    finally:
        set_blocking_waits(None)
    with pytest.raises(ValueError, match="blocking waits mode"):
        set_blocking_waits("yes")  # type: ignore[arg-type]


def test_run_from_a_script_uses_a_background_loop_and_keeps_one_manager() -> None:
    name = unique("script")

    @graph_fn(name)
    def g(x: int) -> int:
        return x * 3

    try:
        assert run(g, {"x": 2}) == {"result": 6}
        assert g.sync(x=3) == {"result": 9}
        loops = {id(t) for t in threading.enumerate() if t.name == "ag_jupyter-runner"}
        assert len(loops) == 1
    finally:
        shutdown_runner_loop()
    assert not any(t.name == "ag_jupyter-runner" for t in threading.enumerate())


async def test_run_from_a_sync_body_is_a_child_run_on_the_bodys_manager() -> None:
    child_name, parent_name = unique("tchild"), unique("tparent")

    @graph_fn(child_name)
    async def child(x: int) -> int:
        return x + 1

    @graph_fn(parent_name)
    def parent(x: int, *, context: NodeContext) -> dict[str, Any]:
        return {"a": run(child, {"x": x})["result"], "b": child.sync(x=x + 1)["result"]}

    manager = get_run_manager()
    record, outputs, _, _ = await manager.run_and_wait(parent_name, inputs={"x": 1})
    rid = record.run_id
    assert outputs == {"a": 2, "b": 3}
    children = await records_of(child_name)
    assert {r.parent_run_id for r in children} == {rid}


# ------------------------------------------------------------------ the current run
async def test_the_current_run_reaches_sync_bodies_threads_and_tasks() -> None:
    name = unique("where")
    seen: dict[str, Any] = {}

    @graph_fn(name)
    def sync_body() -> None:
        seen["sync"] = current_mod.current_context().run_id

    @graph_fn(unique("where-async"))
    async def async_body() -> None:
        async def inner() -> str:
            return current_mod.current_context().run_id

        seen["task"] = await asyncio.create_task(inner())
        seen["thread"] = await asyncio.to_thread(lambda: current_mod.current_context().run_id)
        seen["own"] = current_mod.current_context().run_id

    await sync_body()
    await async_body()
    [sync_record] = await records_of(name)
    assert seen["sync"] == sync_record.run_id
    assert seen["task"] == seen["thread"] == seen["own"]
    assert current_mod.current_context() is None  # never leaks into the caller


async def test_the_sync_worker_thread_runs_in_a_copy_of_the_submitters_context() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    seen: list[str] = []

    @graph_fn(unique("copied"))
    def body() -> None:
        seen.append(marker.get())

    marker.set("from the caller")
    await body()
    assert seen == ["from the caller"]


# --------------------------------------------------------------------- injection
async def test_a_parameter_annotated_node_context_or_none_receives_the_context() -> None:
    seen: list[Any] = []

    @graph_fn(unique("optional"))
    async def optional(x: int, services: NodeContext | None = None) -> int:
        seen.append(services)
        return x

    @graph_fn(unique("typing-optional"))
    async def typing_optional(x: int, c: Optional[NodeContext] = None) -> int:  # noqa: UP045
        seen.append(c)
        return x

    assert optional.inputs == ["x"] and typing_optional.inputs == ["x"]
    await optional(x=1)
    await typing_optional(x=2)
    assert all(isinstance(c, NodeContext) for c in seen) and len(seen) == 2


async def test_an_annotated_parameter_wins_over_one_named_context() -> None:
    seen: list[Any] = []

    @graph_fn(unique("typed-wins"))
    async def g(context: str, node: NodeContext) -> str:
        seen.append(node)
        return context

    assert g.inputs == ["context"]
    assert await g(context="data") == {"result": "data"}
    assert isinstance(seen[0], NodeContext)


def test_two_context_parameters_are_rejected_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"several NodeContext parameters: \['a', 'b'\]"):

        @graph_fn(unique("two-typed"))
        async def two(a: NodeContext, b: NodeContext) -> None: ...

    with pytest.raises(TypeError, match="both 'context' and 'ctx'"):

        @graph_fn(unique("two-named"))
        async def named(context, ctx) -> None: ...  # type: ignore[no-untyped-def]


def test_string_annotations_are_recognised() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\n"
        "async def g(x: int, c: NodeContext | None = None, *, other: Missing = None): ...\n",
        namespace,
    )
    gf = graph_fn(unique("strings"))(namespace["g"])
    assert gf.spec.context_param == "c" and gf.inputs == ["x", "other"]


# ------------------------------------------------------------------ print routing
async def test_print_and_stderr_of_a_graph_body_go_to_its_run_log() -> None:
    name = unique("printer")

    @graph_fn(name)
    def printer() -> None:
        print("hello", "world")
        print("progress 10%", end="\r", file=sys.stderr)
        print("progress 100%", file=sys.stderr)
        try:
            raise ValueError("shown")
        except ValueError:
            traceback.print_exc()
        print("unfinished", end="")

    @graph_fn(unique("aprinter"))
    async def aprinter() -> None:
        print("from async")
        await asyncio.to_thread(print, "from to_thread")

    await printer()
    [record] = await records_of(name)
    lines = (await get_run_manager().logs(record.run_id))["lines"]
    messages = [(line["level"], line["message"]) for line in lines]
    assert messages[:2] == [("INFO", "hello world"), ("WARNING", "progress 100%")]
    assert ("WARNING", "ValueError: shown") in messages
    assert messages[-1] == ("INFO", "unfinished")
    assert all(line["run_id"] == record.run_id for line in lines)
    await aprinter()
    [arecord] = [r for r in await get_run_manager().list_records() if r.graph_id != name][:1]
    amessages = [ln["message"] for ln in (await get_run_manager().logs(arecord.run_id))["lines"]]
    assert amessages == ["from async", "from to_thread"]


async def test_output_outside_runs_reaches_the_real_stream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @graph_fn(unique("quiet"))
    async def quiet() -> None:
        print("in the run")

    await quiet()
    assert output_capture.installed()
    print("in the caller")
    sys.stderr.write("caller stderr\n")
    captured = capsys.readouterr()
    assert captured.out == "in the caller\n"
    assert captured.err == "caller stderr\n"


async def test_the_proxy_reinstalls_over_a_replaced_stream_and_uninstalls() -> None:
    import io

    @graph_fn(unique("replaced"))
    async def g() -> None:
        print("routed")

    await g()
    saved = sys.stdout
    replacement = io.StringIO()
    sys.stdout = replacement  # e.g. %%capture, or ipykernel's OutStream
    try:
        await g()
        assert isinstance(sys.stdout, output_capture.RunOutputProxy)
        print("caller text")
        assert replacement.getvalue() == "caller text\n"  # routed output never lands here
        output_capture.uninstall()
        assert sys.stdout is replacement
    finally:
        sys.stdout = saved


async def test_writes_of_concurrent_runs_never_mix() -> None:
    name = unique("mixer")

    @graph_fn(name)
    def mixer(tag: str) -> None:
        for i in range(50):
            print(f"{tag}-{i}")
            time.sleep(0)

    await asyncio.gather(*(mixer(tag=t) for t in "abcd"))
    manager: RunManager = get_run_manager()
    for record in await records_of(name):
        messages = [ln["message"] for ln in (await manager.logs(record.run_id))["lines"]]
        tag = messages[0].split("-")[0]
        assert messages == [f"{tag}-{i}" for i in range(50)]
