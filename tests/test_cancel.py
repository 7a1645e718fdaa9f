"""Cancelling runs: pending, running async, running sync (cooperative), finished."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from typing import Any

import pytest

from ag_jupyter import graph_fn
from ag_jupyter.runtime import (
    GraphRegistry,
    RunEvent,
    RunManager,
    RunNotFoundError,
    RunStatus,
)
from ag_jupyter.runtime.models import utc_now


async def wait_thread_event(event: threading.Event, timeout_s: float = 5.0) -> None:
    """Await a threading.Event without blocking the loop."""
    assert await asyncio.to_thread(event.wait, timeout_s), "timed out waiting for the thread"


class Probe:
    """What graph bodies report back to the test."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.started_signal: dict[str, asyncio.Event] = {}
        self.cancelled: list[str] = []
        self.release = asyncio.Event()

    def signal(self, key: str) -> asyncio.Event:
        return self.started_signal.setdefault(key, asyncio.Event())


@pytest.fixture
def probe(registry: GraphRegistry) -> Probe:
    """Registers ``forever(key)`` (async, blocks until cancelled or ``probe.release``),
    ``swallow(key)`` (async, swallows CancelledError) and ``quick(x)``."""
    p = Probe()

    @graph_fn("forever", registry=registry)
    async def forever(key: str) -> str:
        p.started.append(key)
        p.signal(key).set()
        try:
            await p.release.wait()
        except asyncio.CancelledError:
            p.cancelled.append(key)
            raise
        return key

    @graph_fn("swallow", registry=registry)
    async def swallow(key: str) -> str:
        p.started.append(key)
        p.signal(key).set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            p.cancelled.append(key)
        return "kept going"

    @graph_fn("quick", registry=registry)
    async def quick(x: int = 0) -> int:
        p.started.append(f"quick{x}")
        return x

    return p


# ----------------------------------------------------------------------- pending
async def test_cancel_pending_run_never_starts(registry: GraphRegistry, probe: Probe) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    holder = await mgr.submit_run("forever", inputs={"key": "holder"})
    victim = await mgr.submit_run("forever", inputs={"key": "victim"})
    after = await mgr.submit_run("quick", inputs={"x": 1})
    await probe.signal("holder").wait()

    record = await asyncio.wait_for(mgr.cancel_run(victim.run_id), 1)
    assert record.status is RunStatus.canceled  # at once, not cancellation_requested
    assert record.started_at is None and record.finished_at is not None
    assert (await mgr.wait_run(victim.run_id, timeout_s=1)).status is RunStatus.canceled

    probe.release.set()
    assert (await mgr.wait_run(holder.run_id, timeout_s=5)).status is RunStatus.succeeded
    assert (await mgr.wait_run(after.run_id, timeout_s=5)).status is RunStatus.succeeded
    assert probe.started == ["holder", "quick1"]  # the victim never ran; the queue moved on
    assert (await mgr.get_record(victim.run_id)).status is RunStatus.canceled
    await mgr.close()


async def test_cancel_pending_run_emits_one_changed_event_to_canceled(
    registry: GraphRegistry, probe: Probe
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    await mgr.submit_run("forever", inputs={"key": "holder"})
    victim = await mgr.submit_run("quick", inputs={})
    events: list[RunEvent] = []
    mgr.subscribe(events.append)
    await mgr.cancel_run(victim.run_id)
    mine = [(e.kind, e.record.status) for e in events if e.record.run_id == victim.run_id]
    assert mine == [("changed", RunStatus.canceled)]
    probe.release.set()
    await mgr.close()


async def test_cancel_of_bypassing_run_before_its_first_step_never_starts_it(
    manager: RunManager, probe: Probe
) -> None:
    record = await manager.submit_run("quick", inputs={"x": 7}, count_slot=False)
    canceled = await manager.cancel_run(record.run_id)  # no await in between: not started
    assert canceled.status is RunStatus.canceled
    await asyncio.sleep(0)
    assert probe.started == []
    assert (await manager.wait_run(record.run_id)).status is RunStatus.canceled
    assert manager.active_count == 0


async def test_cancel_of_started_queued_run_before_its_first_step_frees_its_slot(
    registry: GraphRegistry, probe: Probe
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    first = await mgr.submit_run("quick", inputs={"x": 1})  # task created, not yet stepped
    assert mgr.active_count == 1
    await mgr.cancel_run(first.run_id)
    assert mgr.active_count == 0
    await asyncio.wait_for(mgr.run_and_wait("quick", inputs={"x": 2}), 5)
    third = await mgr.submit_run("quick", inputs={"x": 3})
    assert (await mgr.wait_run(third.run_id, timeout_s=5)).status is RunStatus.succeeded
    assert probe.started == ["quick2", "quick3"]
    await mgr.close()


# ------------------------------------------------------------------ running async
async def test_cancel_running_async_run_cancels_its_task(
    registry: GraphRegistry, probe: Probe
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    events: list[RunEvent] = []
    mgr.subscribe(events.append)
    record = await mgr.submit_run("forever", inputs={"key": "a"})
    queued = await mgr.submit_run("quick", inputs={"x": 1})
    await probe.signal("a").wait()

    requested = await mgr.cancel_run(record.run_id)
    assert requested.status is RunStatus.cancellation_requested
    final, outputs = await mgr.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    assert final.status is RunStatus.canceled
    assert final.error == "canceled (user_requested)"
    assert outputs is None
    assert probe.cancelled == ["a"]
    assert "cancel_ignored" not in final.meta
    # The slot is free again: the queued run runs.
    assert (await mgr.wait_run(queued.run_id, timeout_s=5)).status is RunStatus.succeeded
    assert [e.record.status for e in events if e.record.run_id == record.run_id] == [
        RunStatus.pending,
        RunStatus.running,
        RunStatus.cancellation_requested,
        RunStatus.canceled,
    ]
    await mgr.close()


async def test_async_graph_that_swallows_cancellation_ends_canceled(
    manager: RunManager, probe: Probe
) -> None:
    record = await manager.submit_run("swallow", inputs={"key": "s"})
    await probe.signal("s").wait()
    await manager.cancel_run(record.run_id)
    final, outputs = await manager.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    assert probe.cancelled == ["s"]
    assert final.status is RunStatus.canceled
    assert final.meta.get("cancel_ignored") is True
    assert outputs == {"result": "kept going"}


async def test_async_graph_can_check_the_cancel_flag_itself(
    registry: GraphRegistry, manager: RunManager
) -> None:
    seen: list[bool] = []
    started = asyncio.Event()

    @graph_fn("polite", registry=registry)
    async def polite(context) -> None:
        seen.append(context.runner().is_cancel_requested())
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append(context.runner().is_cancel_requested())
            raise

    record = await manager.submit_run("polite", inputs={})
    await started.wait()
    await manager.cancel_run(record.run_id)
    assert (await manager.wait_run(record.run_id, timeout_s=5)).status is RunStatus.canceled
    assert seen == [False, True]


# ------------------------------------------------------------------- running sync
async def test_cancel_sync_run_sets_a_cooperative_flag_it_can_raise_on(
    registry: GraphRegistry, manager: RunManager
) -> None:
    started = threading.Event()
    seen: list[Any] = []

    @graph_fn("cooperative", registry=registry)
    def cooperative(context) -> str:
        runner = context.runner()
        seen.append(runner.is_cancel_requested())
        runner.raise_if_cancel_requested()  # no request yet: does nothing
        started.set()
        deadline = time.monotonic() + 5
        while not runner.is_cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.002)
        seen.append(runner.is_cancel_requested())
        runner.raise_if_cancel_requested()
        return "not reached"

    record = await manager.submit_run("cooperative", inputs={})
    await wait_thread_event(started)
    requested = await manager.cancel_run(record.run_id, reason="enough")
    assert requested.status is RunStatus.cancellation_requested
    final, outputs = await manager.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    assert seen == [False, True]
    assert final.status is RunStatus.canceled
    assert final.error == "canceled (enough)"
    assert outputs is None
    assert "cancel_ignored" not in final.meta


async def test_sync_run_ignoring_the_flag_stays_cancellation_requested_until_it_returns(
    registry: GraphRegistry, probe: Probe
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    started = threading.Event()
    release = threading.Event()

    @graph_fn("stubborn", registry=registry)
    def stubborn() -> dict[str, str]:
        started.set()
        release.wait(10)
        return {"answer": "computed anyway"}

    record = await mgr.submit_run("stubborn", inputs={})
    queued = await mgr.submit_run("quick", inputs={"x": 1})
    await wait_thread_event(started)
    await mgr.cancel_run(record.run_id)

    with pytest.raises(TimeoutError):
        await mgr.wait_run(record.run_id, timeout_s=0.05)
    assert (await mgr.get_record(record.run_id)).status is RunStatus.cancellation_requested
    # Its thread still runs, so its slot stays taken.
    assert (await mgr.get_record(queued.run_id)).status is RunStatus.pending
    assert probe.started == []

    release.set()
    final, outputs = await mgr.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    assert final.status is RunStatus.canceled
    assert final.meta["cancel_ignored"] is True
    assert outputs == {"answer": "computed anyway"}
    assert (await mgr.wait_run(queued.run_id, timeout_s=5)).status is RunStatus.succeeded
    await mgr.close()


async def test_sync_run_that_raises_after_a_cancel_request_ends_canceled_with_the_error(
    registry: GraphRegistry, manager: RunManager
) -> None:
    started = threading.Event()

    @graph_fn("raises-late", registry=registry)
    def raises_late(context) -> None:
        started.set()
        deadline = time.monotonic() + 5
        while not context.runner().is_cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.002)
        raise ValueError("cleanup failed")

    record = await manager.submit_run("raises-late", inputs={})
    await wait_thread_event(started)
    await manager.cancel_run(record.run_id)
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.status is RunStatus.canceled
    assert "ValueError: cleanup failed" in final.error
    assert "cleanup failed" in final.meta["traceback"]


# ------------------------------------------------------------------------ finished
@pytest.mark.parametrize("outcome", ["succeeded", "failed", "canceled"])
async def test_cancelling_a_finished_run_changes_nothing(
    registry: GraphRegistry, manager: RunManager, probe: Probe, outcome: str
) -> None:
    @graph_fn("fails", registry=registry)
    async def fails() -> None:
        raise RuntimeError("x")

    if outcome == "canceled":
        record = await manager.submit_run("forever", inputs={"key": "c"})
        await probe.signal("c").wait()
        await manager.cancel_run(record.run_id, reason="first")
    else:
        graph = "quick" if outcome == "succeeded" else "fails"
        record = await manager.submit_run(graph, inputs={})
    final, outputs = await manager.wait_run(record.run_id, timeout_s=5, return_outputs=True)
    assert final.status.value == outcome

    events: list[RunEvent] = []
    manager.subscribe(events.append)
    again = await asyncio.wait_for(manager.cancel_run(record.run_id, reason="second"), 1)
    assert again == final
    assert await manager.get_record(record.run_id) == final
    assert await manager.wait_run(record.run_id, return_outputs=True) == (final, outputs)
    assert events == []


async def test_cancel_reason_and_time_are_kept_on_the_record(
    manager: RunManager, probe: Probe
) -> None:
    record = await manager.submit_run("forever", inputs={"key": "r"})
    await probe.signal("r").wait()
    before = utc_now()
    await manager.cancel_run(record.run_id, reason="too slow")
    after = utc_now()
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.meta["cancel_reason"] == "too slow"
    requested_at = datetime.fromisoformat(final.meta["cancel_requested_at"])
    assert requested_at.utcoffset() is not None
    assert before <= requested_at <= after
    assert "too slow" in final.error


async def test_default_cancel_reason_is_user_requested(
    manager: RunManager, probe: Probe
) -> None:
    record = await manager.submit_run("forever", inputs={"key": "d"})
    await probe.signal("d").wait()
    await manager.cancel_run(record.run_id)
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.meta["cancel_reason"] == "user_requested"


async def test_second_cancel_request_keeps_the_first_reason(
    registry: GraphRegistry, manager: RunManager
) -> None:
    started = threading.Event()
    release = threading.Event()

    @graph_fn("slow-sync", registry=registry)
    def slow_sync() -> None:
        started.set()
        release.wait(10)

    record = await manager.submit_run("slow-sync", inputs={})
    await wait_thread_event(started)
    first = await manager.cancel_run(record.run_id, reason="first")
    second = await manager.cancel_run(record.run_id, reason="second")
    assert second == first
    release.set()
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.meta["cancel_reason"] == "first"


async def test_cancel_unknown_run_raises_run_not_found_at_once(manager: RunManager) -> None:
    with pytest.raises(RunNotFoundError):
        await asyncio.wait_for(manager.cancel_run("nope"), 1)


# ------------------------------------------------------------------ via the facade
async def test_runner_cancel_run_returns_none_and_cancels_the_child(
    registry: GraphRegistry, manager: RunManager, probe: Probe
) -> None:
    @graph_fn("canceller", registry=registry)
    async def canceller(context) -> dict[str, Any]:
        runner = context.runner()
        child = await runner.spawn_run("forever", inputs={"key": "child"})
        await probe.signal("child").wait()
        returned = await runner.cancel_run(child)
        record = await runner.wait_run(child, timeout_s=5)
        return {"returned": returned, "status": record.status, "child": child}

    _, outputs, _, _ = await manager.run_and_wait("canceller", inputs={})
    assert outputs["returned"] is None
    assert outputs["status"] is RunStatus.canceled
    assert (await manager.get_record(outputs["child"])).parent_run_id is not None


# ---------------------------------------------------------------------- closing
async def test_closing_the_manager_cancels_live_runs(
    registry: GraphRegistry, probe: Probe
) -> None:
    mgr = RunManager(registry=registry, max_concurrency=1)
    running = await mgr.submit_run("forever", inputs={"key": "r"})
    pending = await mgr.submit_run("forever", inputs={"key": "p"})
    await probe.signal("r").wait()
    await asyncio.wait_for(mgr.close(), 5)
    for record in (running, pending):
        final = await mgr.get_record(record.run_id)
        assert final.status is RunStatus.canceled
        assert final.meta["cancel_reason"] == "manager_closed"
    assert probe.started == ["r"]
