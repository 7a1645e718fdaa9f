"""RunManager: statuses, queueing, waiting, failures, linkage, events, listing, records."""

from __future__ import annotations

import asyncio
import gc
import itertools
from datetime import UTC, timedelta
from typing import Any

import pydantic
import pytest

from ag_jupyter import graph_fn
from ag_jupyter.runtime import (
    DuplicateRunIdError,
    GraphRegistry,
    InMemoryRunStore,
    RunEvent,
    RunManager,
    RunNotFoundError,
    RunOrigin,
    RunRecord,
    RunStatus,
    RunVisibility,
)

QUICK_S = 1.0  # upper bound for calls that must return "at once"


class Gates:
    """One asyncio.Event per key: graph bodies block on them until the test opens them."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.started_event: dict[str, asyncio.Event] = {}

    def gate(self, key: str) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    def started_signal(self, key: str) -> asyncio.Event:
        return self.started_event.setdefault(key, asyncio.Event())

    async def enter(self, key: str) -> None:
        self.started.append(key)
        self.started_signal(key).set()
        await self.gate(key).wait()

    def open(self, key: str) -> None:
        self.gate(key).set()


@pytest.fixture
def gates(registry: GraphRegistry) -> Gates:
    """Registers ``gated(key)``: records that it started, then blocks until ``open(key)``."""
    g = Gates()

    @graph_fn("gated", registry=registry)
    async def gated(key: str) -> str:
        await g.enter(key)
        return key

    @graph_fn("quick", registry=registry)
    async def quick(x: int = 0) -> int:
        return x

    return g


async def settle() -> None:
    """Let every ready task take its steps (no wall-clock sleep)."""
    for _ in range(5):
        await asyncio.sleep(0)


# ---------------------------------------------------------------- status machine
async def test_status_goes_pending_running_succeeded(
    manager: RunManager, gates: Gates
) -> None:
    events: list[RunEvent] = []
    manager.subscribe(events.append)

    record = await manager.submit_run("gated", inputs={"key": "a"})
    assert record.status is RunStatus.pending
    assert record.started_at is None and record.finished_at is None
    await gates.started_signal("a").wait()
    running = await manager.get_record(record.run_id)
    assert running.status is RunStatus.running
    assert running.started_at is not None and running.finished_at is None
    gates.open("a")
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.status is RunStatus.succeeded
    assert final.finished_at is not None and final.error is None
    assert final.created_at <= final.started_at <= final.finished_at
    assert [(e.kind, e.record.status) for e in events] == [
        ("created", RunStatus.pending),
        ("changed", RunStatus.running),
        ("changed", RunStatus.succeeded),
    ]


async def test_submit_run_returns_at_once_with_a_pending_record(
    manager: RunManager, gates: Gates
) -> None:
    record = await asyncio.wait_for(
        manager.submit_run("gated", inputs={"key": "a"}), QUICK_S
    )
    assert record.status is RunStatus.pending
    gates.open("a")
    await manager.wait_run(record.run_id, timeout_s=5)


async def test_generated_run_ids_are_unique(manager: RunManager, gates: Gates) -> None:
    ids = [(await manager.submit_run("quick", inputs={})).run_id for _ in range(50)]
    assert len(set(ids)) == 50
    for run_id in ids:
        await manager.wait_run(run_id, timeout_s=5)


# -------------------------------------------------------------------- queueing
async def test_excess_runs_queue_as_pending_and_start_in_submit_order(
    registry: GraphRegistry, gates: Gates
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=2)
    keys = [f"k{i}" for i in range(6)]
    records = [await mgr.submit_run("gated", inputs={"key": k}) for k in keys]
    await settle()

    assert gates.started == ["k0", "k1"]
    statuses = [(await mgr.get_record(r.run_id)).status for r in records]
    assert statuses == [RunStatus.running] * 2 + [RunStatus.pending] * 4
    assert mgr.active_count == 2 and mgr.pending_count == 4

    # Finish them out of order: the queue still starts runs in submit order.
    for key in ["k1", "k0", "k3", "k2", "k5", "k4"]:
        await gates.started_signal(key).wait()
        gates.open(key)
    for r in records:
        assert (await mgr.wait_run(r.run_id, timeout_s=5)).status is RunStatus.succeeded
    assert gates.started == keys
    await mgr.close()


async def test_long_queue_is_never_rejected(registry: GraphRegistry, gates: Gates) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    records = [await mgr.submit_run("quick", inputs={"x": i}) for i in range(500)]
    assert all(r.status is RunStatus.pending for r in records)
    outputs = []
    for r in records:
        final, out = await mgr.wait_run(r.run_id, timeout_s=5, return_outputs=True)
        assert final.status is RunStatus.succeeded
        outputs.append(out["result"])
    assert outputs == list(range(500))
    await mgr.close()


async def test_count_slot_false_runs_bypass_the_limit(
    registry: GraphRegistry, gates: Gates
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    holder = await mgr.submit_run("gated", inputs={"key": "holder"})
    queued = await mgr.submit_run("gated", inputs={"key": "queued"})
    extra = await mgr.submit_run("gated", inputs={"key": "extra"}, count_slot=False)
    await gates.started_signal("extra").wait()

    assert gates.started == ["holder", "extra"]
    assert (await mgr.get_record(queued.run_id)).status is RunStatus.pending
    assert mgr.active_count == 1  # the bypassing run takes no slot

    gates.open("extra")
    await mgr.wait_run(extra.run_id, timeout_s=5)
    # Its end frees no slot either: the queued run still waits for the holder.
    await settle()
    assert (await mgr.get_record(queued.run_id)).status is RunStatus.pending
    gates.open("holder")
    gates.open("queued")
    assert (await mgr.wait_run(queued.run_id, timeout_s=5)).status is RunStatus.succeeded
    assert holder.run_id != queued.run_id
    await mgr.close()


async def test_parent_holding_the_only_slot_can_run_and_wait_a_child(
    registry: GraphRegistry,
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)

    @graph_fn("child", registry=registry)
    async def child(x: int) -> int:
        return x * 10

    @graph_fn("parent", registry=registry)
    async def parent(context, x: int) -> dict[str, Any]:
        run_id, outputs, has_waits, continuations = await context.runner().run_and_wait(
            "child", inputs={"x": x}
        )
        return {"child_run": run_id, "child_out": outputs, "waits": [has_waits, continuations]}

    record = await mgr.submit_run("parent", inputs={"x": 4})
    final, outputs = await asyncio.wait_for(
        mgr.wait_run(record.run_id, return_outputs=True), 5
    )
    assert final.status is RunStatus.succeeded
    assert outputs["child_out"] == {"result": 40}
    assert outputs["waits"] == [False, []]
    child_record = await mgr.get_record(outputs["child_run"])
    assert child_record.parent_run_id == record.run_id
    await mgr.close()


async def test_sync_parent_holding_the_only_slot_can_run_and_wait_via_the_loop(
    registry: GraphRegistry,
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    loop = asyncio.get_running_loop()

    @graph_fn("child2", registry=registry)
    async def child2() -> str:
        return "ok"

    @graph_fn("sync-parent", registry=registry)
    def sync_parent(context) -> Any:
        fut = asyncio.run_coroutine_threadsafe(
            context.runner().run_and_wait("child2", inputs={}), loop
        )
        return fut.result(5)[1]

    record, outputs, _, _ = await asyncio.wait_for(mgr.run_and_wait("sync-parent", inputs={}), 5)
    assert record.status is RunStatus.succeeded
    assert outputs == {"result": "ok"}  # the child's outputs dict, returned as is
    await mgr.close()


async def test_raising_max_concurrency_starts_queued_runs_at_once(
    registry: GraphRegistry, gates: Gates
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    for key in ["a", "b", "c"]:
        await mgr.submit_run("gated", inputs={"key": key})
    await settle()
    assert gates.started == ["a"]
    mgr.max_concurrency = 3
    await settle()
    assert gates.started == ["a", "b", "c"]
    for key in "abc":
        gates.open(key)
    await mgr.close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2", None])
def test_non_positive_or_non_int_max_concurrency_raises_value_error(
    registry: GraphRegistry, bad: Any
) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        RunManager(registry=registry, max_concurrency=bad)
    mgr = RunManager(registry=registry, max_concurrency=2)
    with pytest.raises(ValueError, match="max_concurrency"):
        mgr.max_concurrency = bad
    assert mgr.max_concurrency == 2


# --------------------------------------------------------------------- waiting
async def test_wait_run_returns_outputs_when_asked(manager: RunManager, gates: Gates) -> None:
    record = await manager.submit_run("quick", inputs={"x": 3})
    final, outputs = await manager.wait_run(record.run_id, return_outputs=True)
    assert final.status is RunStatus.succeeded
    assert outputs == {"result": 3}
    # A finished run: returns at once, same answer.
    again = await asyncio.wait_for(manager.wait_run(record.run_id), QUICK_S)
    assert again == final


async def test_run_and_wait_returns_record_outputs_and_no_waits(
    manager: RunManager, gates: Gates
) -> None:
    record, outputs, has_waits, continuations = await manager.run_and_wait(
        "quick", inputs={"x": 9}, tags=["t"]
    )
    assert isinstance(record, RunRecord)
    assert record.status is RunStatus.succeeded and record.tags == ["t"]
    assert outputs == {"result": 9}
    assert has_waits is False and continuations == []


async def test_wait_timeout_raises_timeout_error_and_the_run_goes_on(
    manager: RunManager, gates: Gates
) -> None:
    record = await manager.submit_run("gated", inputs={"key": "slow"})
    with pytest.raises(TimeoutError, match="keeps going"):
        await manager.wait_run(record.run_id, timeout_s=0.01)
    assert (await manager.get_record(record.run_id)).status is RunStatus.running
    gates.open("slow")
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.status is RunStatus.succeeded


async def test_waiter_timeout_does_not_affect_other_waiters(
    manager: RunManager, gates: Gates
) -> None:
    record = await manager.submit_run("gated", inputs={"key": "w"})
    patient = asyncio.create_task(manager.wait_run(record.run_id, timeout_s=5))
    with pytest.raises(TimeoutError):
        await manager.wait_run(record.run_id, timeout_s=0.01)
    await settle()
    assert not patient.done()
    gates.open("w")
    assert (await patient).status is RunStatus.succeeded


async def test_cancelled_waiter_does_not_affect_the_run_or_other_waiters(
    manager: RunManager, gates: Gates
) -> None:
    record = await manager.submit_run("gated", inputs={"key": "w"})
    waiters = [asyncio.create_task(manager.wait_run(record.run_id)) for _ in range(3)]
    await settle()
    waiters[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    await settle()
    assert (await manager.get_record(record.run_id)).status is RunStatus.running
    assert not waiters[1].done() and not waiters[2].done()
    gates.open("w")
    for waiter in waiters[1:]:
        assert (await waiter).status is RunStatus.succeeded


async def test_cancelled_run_and_wait_caller_leaves_the_run_going(
    manager: RunManager, gates: Gates
) -> None:
    caller = asyncio.create_task(
        manager.run_and_wait("gated", inputs={"key": "bg"}, run_id="bg-run")
    )
    await gates.started_signal("bg").wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert (await manager.get_record("bg-run")).status is RunStatus.running
    gates.open("bg")
    assert (await manager.wait_run("bg-run", timeout_s=5)).status is RunStatus.succeeded


@pytest.mark.parametrize("call", ["wait", "cancel", "get", "wait_outputs"])
async def test_unknown_run_id_raises_run_not_found_at_once(
    manager: RunManager, gates: Gates, call: str
) -> None:
    await manager.submit_run("gated", inputs={"key": "live"})  # something live to list
    coro = {
        "wait": lambda: manager.wait_run("no-such-run"),
        "wait_outputs": lambda: manager.wait_run("no-such-run", return_outputs=True),
        "cancel": lambda: manager.cancel_run("no-such-run"),
        "get": lambda: manager.get_record("no-such-run"),
    }[call]()
    with pytest.raises(RunNotFoundError, match="'no-such-run'"):
        await asyncio.wait_for(coro, QUICK_S)
    gates.open("live")


@pytest.mark.parametrize("bad", [0, -1, -0.5])
async def test_non_positive_timeout_raises_value_error(
    manager: RunManager, gates: Gates, bad: float
) -> None:
    record = await manager.submit_run("gated", inputs={"key": "t"})
    with pytest.raises(ValueError, match="timeout_s"):
        await manager.wait_run(record.run_id, timeout_s=bad)
    with pytest.raises(ValueError, match="timeout_s"):
        await manager.run_and_wait("quick", inputs={}, timeout_s=bad)
    assert [r.run_id for r in await manager.list_records()] == [record.run_id]
    gates.open("t")


async def test_duplicate_explicit_run_id_raises(manager: RunManager, gates: Gates) -> None:
    await manager.submit_run("gated", inputs={"key": "d"}, run_id="same")
    with pytest.raises(DuplicateRunIdError, match="'same'"):
        await manager.submit_run("quick", inputs={}, run_id="same")  # while live
    gates.open("d")
    await manager.wait_run("same")
    with pytest.raises(DuplicateRunIdError):
        await manager.run_and_wait("quick", inputs={}, run_id="same")  # once finished
    records = await manager.list_records()
    assert [(r.run_id, r.graph_id) for r in records] == [("same", "gated")]


async def test_explicit_run_id_is_used(manager: RunManager, gates: Gates) -> None:
    record, *_ = await manager.run_and_wait("quick", inputs={}, run_id="mine-1")
    assert record.run_id == "mine-1"
    assert (await manager.get_record("mine-1")).status is RunStatus.succeeded


# --------------------------------------------------------------------- linkage
async def test_runner_spawn_links_child_to_parent_with_context_defaults(
    registry: GraphRegistry, manager: RunManager, gates: Gates
) -> None:
    @graph_fn("spawner", registry=registry)
    async def spawner(context) -> str:
        child = await context.runner().spawn_run("quick", inputs={"x": 1})
        await context.runner().wait_run(child)
        return child

    record, outputs, _, _ = await manager.run_and_wait(
        "spawner", inputs={}, session_id="s1", agent_id="agent-7", app_id="app-3"
    )
    assert record.origin is RunOrigin.agent  # agent id set
    child = await manager.get_record(outputs["result"])
    assert child.parent_run_id == record.run_id
    assert child.session_id == "s1"
    assert child.agent_id == "agent-7"
    assert child.app_id == "app-3"
    assert child.origin is RunOrigin.agent


async def test_runner_origin_is_app_without_an_agent_id(
    registry: GraphRegistry, manager: RunManager, gates: Gates
) -> None:
    @graph_fn("app-spawner", registry=registry)
    async def app_spawner(context) -> str:
        run_id, _, _, _ = await context.runner().run_and_wait("quick", inputs={})
        return run_id

    record, outputs, _, _ = await manager.run_and_wait(
        "app-spawner", inputs={}, app_id="app-1"
    )
    assert record.origin is RunOrigin.app
    child = await manager.get_record(outputs["result"])
    assert child.origin is RunOrigin.app
    assert child.agent_id is None and child.app_id == "app-1"
    assert child.parent_run_id == record.run_id


async def test_runner_explicit_arguments_override_context_defaults(
    registry: GraphRegistry, manager: RunManager, gates: Gates
) -> None:
    @graph_fn("override-spawner", registry=registry)
    async def override_spawner(context) -> str:
        return await context.runner().spawn_run(
            "quick",
            inputs={},
            session_id="other-session",
            tags=["x"],
            visibility=RunVisibility.hidden,
            origin=RunOrigin.cli,
            agent_id="agent-override",
            app_id="app-override",
            run_id="explicit-child",
        )

    record, outputs, _, _ = await manager.run_and_wait(
        "override-spawner", inputs={}, session_id="s", agent_id="a"
    )
    assert outputs == {"result": "explicit-child"}
    child = await manager.wait_run("explicit-child")
    assert child.session_id == "other-session"
    assert child.tags == ["x"]
    assert child.visibility is RunVisibility.hidden
    assert child.origin is RunOrigin.cli
    assert (child.agent_id, child.app_id) == ("agent-override", "app-override")
    assert child.parent_run_id == record.run_id


async def test_submit_run_origin_defaults_from_agent_id(
    manager: RunManager, gates: Gates
) -> None:
    with_agent, *_ = await manager.run_and_wait("quick", inputs={}, agent_id="ag")
    without, *_ = await manager.run_and_wait("quick", inputs={})
    assert with_agent.origin is RunOrigin.agent
    assert without.origin is RunOrigin.app


async def test_context_identity_matches_the_record(
    registry: GraphRegistry, manager: RunManager
) -> None:
    seen: dict[str, Any] = {}

    @graph_fn("identity", registry=registry)
    async def identity(context) -> None:
        seen.update(
            run_id=context.run_id,
            session_id=context.session_id,
            graph_id=context.graph_id,
            agent_id=context.agent_id,
            app_id=context.app_id,
            manager=context.manager,
        )

    record, *_ = await manager.run_and_wait(
        "identity", inputs={}, session_id="sess", agent_id="ag", app_id="ap"
    )
    assert seen == {
        "run_id": record.run_id,
        "session_id": "sess",
        "graph_id": "identity",
        "agent_id": "ag",
        "app_id": "ap",
        "manager": manager,
    }


# --------------------------------------------------------------------- failures
async def test_raising_graph_fails_with_error_and_traceback_on_the_record(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("boom", registry=registry)
    async def boom(msg: str) -> None:
        raise KeyError(msg)

    @graph_fn("sync-boom", registry=registry)
    def sync_boom() -> None:
        raise RuntimeError("sync went wrong")

    record, outputs, _, _ = await manager.run_and_wait("boom", inputs={"msg": "missing"})
    assert record.status is RunStatus.failed
    assert record.error == "KeyError: 'missing'"
    assert outputs is None
    tb = record.meta["traceback"]
    assert "Traceback (most recent call last)" in tb
    assert "raise KeyError(msg)" in tb

    sync_record, _, _, _ = await manager.run_and_wait("sync-boom", inputs={})
    assert sync_record.status is RunStatus.failed
    assert sync_record.error == "RuntimeError: sync went wrong"
    assert "sync went wrong" in sync_record.meta["traceback"]


async def test_graph_raising_system_exit_only_fails_its_own_run(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("exits", registry=registry)
    async def exits() -> None:
        raise SystemExit(3)

    @graph_fn("exits-sync", registry=registry)
    def exits_sync() -> None:
        raise SystemExit("bye")

    for graph, error in [("exits", "SystemExit: 3"), ("exits-sync", "SystemExit: bye")]:
        record, *_ = await manager.run_and_wait(graph, inputs={})
        assert record.status is RunStatus.failed
        assert record.error == error
    assert not manager.closed


async def test_exception_without_message_is_recorded_by_type(
    registry: GraphRegistry, manager: RunManager
) -> None:
    @graph_fn("bare", registry=registry)
    async def bare() -> None:
        raise ValueError

    record, *_ = await manager.run_and_wait("bare", inputs={})
    assert record.error == "ValueError"


async def test_failed_run_does_not_affect_the_manager_or_other_runs(
    registry: GraphRegistry, manager: RunManager, gates: Gates
) -> None:
    @graph_fn("fails", registry=registry)
    async def fails() -> None:
        raise RuntimeError("no")

    neighbour = await manager.submit_run("gated", inputs={"key": "n"})
    failed = [await manager.submit_run("fails", inputs={}) for _ in range(20)]
    for r in failed:
        assert (await manager.wait_run(r.run_id)).status is RunStatus.failed
    assert (await manager.get_record(neighbour.run_id)).status is RunStatus.running
    assert manager.active_count == 1
    gates.open("n")
    assert (await manager.wait_run(neighbour.run_id)).status is RunStatus.succeeded
    after, *_ = await manager.run_and_wait("quick", inputs={"x": 1})
    assert after.status is RunStatus.succeeded


async def test_failed_run_exception_is_never_reported_elsewhere(
    registry: GraphRegistry, loop_errors: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    mgr = RunManager(registry=registry)

    @graph_fn("fails-async", registry=registry)
    async def fails_async() -> None:
        raise RuntimeError("async failure")

    @graph_fn("fails-sync", registry=registry)
    def fails_sync() -> None:
        raise RuntimeError("sync failure")

    ids = []
    for graph in ["fails-async", "fails-sync"] * 5:
        ids.append((await mgr.submit_run(graph, inputs={})).run_id)
    for run_id in ids:
        await mgr.wait_run(run_id, timeout_s=5)
    await mgr.close()
    del mgr
    await settle()
    gc.collect()
    await settle()
    assert loop_errors == []
    assert not [r for r in caplog.records if r.name == "asyncio"]


# --------------------------------------------------------------------- events
async def test_subscriber_gets_created_then_changed_events_in_order_per_run(
    manager: RunManager, gates: Gates
) -> None:
    events: list[RunEvent] = []
    manager.subscribe(events.append)
    a = await manager.submit_run("gated", inputs={"key": "a"})
    b = await manager.submit_run("quick", inputs={})
    await manager.wait_run(b.run_id)
    gates.open("a")
    await manager.wait_run(a.run_id)

    for record in (a, b):
        mine = [(e.kind, e.record.status) for e in events if e.record.run_id == record.run_id]
        assert mine == [
            ("created", RunStatus.pending),
            ("changed", RunStatus.running),
            ("changed", RunStatus.succeeded),
        ]
    assert all(isinstance(e.record, RunRecord) for e in events)


async def test_raising_subscriber_does_not_break_runs_or_other_subscribers(
    manager: RunManager, gates: Gates, caplog: pytest.LogCaptureFixture
) -> None:
    def bad(event: RunEvent) -> None:
        raise RuntimeError("subscriber bug")

    good: list[RunEvent] = []
    manager.subscribe(bad)
    manager.subscribe(good.append)
    record, outputs, _, _ = await manager.run_and_wait("quick", inputs={"x": 2})
    assert record.status is RunStatus.succeeded and outputs == {"result": 2}
    assert [e.record.status for e in good] == [
        RunStatus.pending,
        RunStatus.running,
        RunStatus.succeeded,
    ]
    assert any("subscriber" in r.getMessage() for r in caplog.records)


async def test_unsubscribe_stops_events_and_is_idempotent(
    manager: RunManager, gates: Gates
) -> None:
    events: list[RunEvent] = []
    unsubscribe = manager.subscribe(events.append)
    await manager.run_and_wait("quick", inputs={})
    count = len(events)
    assert count == 3
    unsubscribe()
    unsubscribe()
    await manager.run_and_wait("quick", inputs={})
    assert len(events) == count


# ------------------------------------------------------------------- listing
async def test_list_records_filters_by_graph_status_session_and_tags(
    registry: GraphRegistry, manager: RunManager, gates: Gates
) -> None:
    @graph_fn("fails", registry=registry)
    async def fails() -> None:
        raise RuntimeError("x")

    ok1, *_ = await manager.run_and_wait("quick", inputs={}, session_id="s1", tags=["a", "b"])
    ok2, *_ = await manager.run_and_wait("quick", inputs={}, session_id="s2", tags=["a"])
    bad, *_ = await manager.run_and_wait("fails", inputs={}, session_id="s1", tags=["b"])
    live = await manager.submit_run("gated", inputs={"key": "L"}, session_id="s2")
    await gates.started_signal("L").wait()

    async def ids(**filters: Any) -> list[str]:
        return [r.run_id for r in await manager.list_records(**filters)]

    assert await ids() == [live.run_id, bad.run_id, ok2.run_id, ok1.run_id]
    assert await ids(graph_id="quick") == [ok2.run_id, ok1.run_id]
    assert await ids(status="failed") == [bad.run_id]
    assert await ids(status=RunStatus.running) == [live.run_id]
    assert await ids(status=[RunStatus.failed, "running"]) == [live.run_id, bad.run_id]
    assert await ids(session_id="s1") == [bad.run_id, ok1.run_id]
    assert await ids(tags=["a"]) == [ok2.run_id, ok1.run_id]
    assert await ids(tags=["a", "b"]) == [ok1.run_id]
    assert await ids(graph_id="quick", session_id="s2", tags=["a"]) == [ok2.run_id]
    assert await ids(graph_id="nope") == []
    gates.open("L")


async def test_list_records_pages_newest_first(manager: RunManager, gates: Gates) -> None:
    ids = []
    for i in range(25):
        record, *_ = await manager.run_and_wait("quick", inputs={"x": i})
        ids.append(record.run_id)
    newest_first = ids[::-1]
    page1 = await manager.list_records(limit=10)
    page2 = await manager.list_records(limit=10, offset=10)
    page3 = await manager.list_records(limit=10, offset=20)
    assert [r.run_id for r in page1 + page2 + page3] == newest_first
    assert len(page3) == 5
    assert await manager.list_records(offset=25) == []
    assert len(await manager.list_records()) == 25  # default limit 100


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": -1}, {"offset": -1}, {"status": "finished"}],
)
async def test_list_records_rejects_bad_paging_and_unknown_status(
    manager: RunManager, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        await manager.list_records(**kwargs)


# -------------------------------------------------------------------- records
async def test_record_timestamps_are_timezone_aware_utc(
    manager: RunManager, gates: Gates
) -> None:
    record, *_ = await manager.run_and_wait("quick", inputs={})
    for stamp in (record.created_at, record.started_at, record.finished_at):
        assert stamp is not None
        assert stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
    assert record.created_at.tzinfo is UTC or record.created_at.tzname() == "UTC"
    assert record.duration_s is not None and record.duration_s >= 0
    # JSON round trip keeps the zone.
    again = RunRecord.model_validate_json(record.model_dump_json())
    assert again.finished_at == record.finished_at
    assert again.finished_at.utcoffset() == timedelta(0)


async def test_records_handed_out_are_frozen_snapshots(
    manager: RunManager, gates: Gates
) -> None:
    submitted = await manager.submit_run("gated", inputs={"key": "f"})
    with pytest.raises(pydantic.ValidationError):
        submitted.status = RunStatus.succeeded  # type: ignore[misc]
    await gates.started_signal("f").wait()
    running = await manager.get_record(submitted.run_id)
    gates.open("f")
    final = await manager.wait_run(submitted.run_id)
    # Earlier snapshots did not change when the run moved on.
    assert submitted.status is RunStatus.pending and submitted.started_at is None
    assert running.status is RunStatus.running and running.finished_at is None
    assert final.status is RunStatus.succeeded
    listed = (await manager.list_records())[0]
    assert listed == final


async def test_enum_fields_accept_their_string_values(
    manager: RunManager, gates: Gates
) -> None:
    record, *_ = await manager.run_and_wait(
        "quick", inputs={}, visibility="inline", origin="playground", importance="ephemeral"
    )
    assert record.visibility is RunVisibility.inline
    assert record.origin is RunOrigin.playground
    assert record.importance.value == "ephemeral"
    with pytest.raises(ValueError):
        await manager.submit_run("quick", inputs={}, visibility="loud")


# --------------------------------------------------------------- closing
async def test_closed_manager_refuses_new_runs(registry: GraphRegistry, gates: Gates) -> None:
    mgr = RunManager(registry=registry)
    await mgr.close()
    assert mgr.closed
    with pytest.raises(RuntimeError, match="closed"):
        await mgr.submit_run("quick", inputs={})


# ------------------------------------------------------ stores that yield
class YieldingStore(InMemoryRunStore):
    """An in-memory store whose writes yield to the loop, as a durable store's do."""

    async def create(self, record: RunRecord, inputs: dict[str, Any] | None = None) -> None:
        await asyncio.sleep(0)
        await super().create(record, inputs)

    async def update(self, record: RunRecord, outputs: dict[str, Any] | None = None) -> None:
        await asyncio.sleep(0)
        await super().update(record, outputs)

    async def flush(self) -> None:
        await asyncio.sleep(0)

    async def put(self, record: RunRecord, **values: Any) -> None:
        await asyncio.sleep(0)
        await super().put(record, **values)
        await asyncio.sleep(0)


async def test_events_stay_in_order_when_cancel_races_with_the_end_of_a_run(
    registry: GraphRegistry, gates: Gates
) -> None:
    mgr = RunManager(registry=registry, store=YieldingStore())
    events: list[RunEvent] = []
    mgr.subscribe(events.append)
    record = await mgr.submit_run("gated", inputs={"key": "r"})
    await gates.started_signal("r").wait()
    gates.open("r")  # the body finishes on its next step, while cancel awaits the store
    await mgr.cancel_run(record.run_id)
    final = await mgr.wait_run(record.run_id, timeout_s=5)
    assert final.status.is_terminal
    statuses = [e.record.status for e in events]
    assert statuses[-1] is final.status, statuses
    assert (await mgr.store.get(record.run_id)) == final
    await mgr.close()


async def test_cancel_while_a_run_is_being_finished_changes_nothing(
    registry: GraphRegistry, gates: Gates
) -> None:
    store = YieldingStore()
    mgr = RunManager(registry=registry, store=store)
    record = await mgr.submit_run("quick", inputs={"x": 5})
    cancels: list[asyncio.Task[RunRecord]] = []

    def on_event(event: RunEvent) -> None:
        # The terminal event is emitted before the final store write completes.
        if event.record.status.is_terminal:
            cancels.append(asyncio.ensure_future(mgr.cancel_run(record.run_id)))

    mgr.subscribe(on_event)
    final, outputs = await mgr.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    after_cancel = await cancels[0]
    assert final.status is RunStatus.succeeded
    assert after_cancel.status is RunStatus.succeeded
    assert outputs == {"result": 5}
    assert await store.get(record.run_id) == final
    assert await store.get_outputs(record.run_id) == {"result": 5}
    await mgr.close()


async def test_watch_coalesces_changes_at_a_bounded_rate(manager, registry):
    @graph_fn("w_sleep", registry=registry)
    async def w_sleep(seconds: float = 0.0):
        await asyncio.sleep(seconds)

    deliveries: list[tuple[float, dict]] = []
    loop = asyncio.get_running_loop()
    watch = manager.watch(lambda changes: deliveries.append((loop.time(), changes)),
                          interval_s=0.05)
    records = [await manager.submit_run("w_sleep", inputs={"seconds": 0.02}) for _ in range(200)]
    for record in records:
        await manager.wait_run(record.run_id)
    await asyncio.sleep(0.12)
    # the latest record of every run arrived, each run once per delivery
    latest: dict = {}
    for _, changes in deliveries:
        latest.update(changes)
    assert set(latest) == {r.run_id for r in records}
    assert {r.status for r in latest.values()} == {RunStatus.succeeded}
    # far fewer calls than the 600 changes, and never two within the interval
    assert len(deliveries) < 50
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(deliveries)]
    assert all(gap >= 0.05 - 1e-3 for gap in gaps), gaps
    # take() pulls what is pending now; close() stops deliveries
    record = await manager.submit_run("w_sleep", inputs={"seconds": 10})
    assert set(watch.take()) == {record.run_id}
    count = len(deliveries)
    watch.close()
    await manager.cancel_run(record.run_id)
    await manager.wait_run(record.run_id)
    await asyncio.sleep(0.1)
    assert len(deliveries) == count and not manager._watchers


async def test_watch_without_leading_edge_waits_one_interval(manager, registry):
    @graph_fn("w_quick2", registry=registry)
    async def w_quick2():
        return 1

    loop = asyncio.get_running_loop()
    deliveries: list[tuple[float, set]] = []
    leading = manager.watch(lambda ch: deliveries.append((loop.time(), set(ch))),
                            interval_s=0.1)
    trailing = manager.watch(lambda ch: deliveries.append((-loop.time(), set(ch))),
                             interval_s=0.1, leading=False)
    start = loop.time()
    record = (await manager.run_and_wait("w_quick2", inputs={}))[0]
    await asyncio.sleep(0.2)
    first_leading = min(t for t, _ in deliveries if t > 0)
    first_trailing = min(-t for t, _ in deliveries if t < 0)
    assert first_leading - start < 0.05  # the next loop iteration
    assert first_trailing - start >= 0.1 - 1e-3
    assert {record.run_id} == set().union(*(ids for t, ids in deliveries if t < 0))
    leading.close()
    trailing.close()


async def test_raising_watcher_does_not_break_runs(manager, registry, caplog):
    @graph_fn("w_quick", registry=registry)
    async def w_quick():
        return 1

    def boom(changes):
        raise RuntimeError("watcher bug")

    manager.watch(boom, interval_s=0.01)
    first = await manager.run_and_wait("w_quick", inputs={})
    await asyncio.sleep(0.03)
    second = await manager.run_and_wait("w_quick", inputs={})
    assert first[0].status is second[0].status is RunStatus.succeeded
    assert "watcher bug" in caplog.text or "run watcher" in caplog.text


def test_watch_rejects_a_non_positive_interval():
    manager = RunManager()
    with pytest.raises(ValueError, match="interval_s must be a positive number"):
        manager.watch(lambda changes: None, interval_s=0)
