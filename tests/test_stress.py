"""10,000 runs through one manager with random cancels and failures (seeded RNG)."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from ag_jupyter import graph_fn
from ag_jupyter.runtime import GraphRegistry, RunEvent, RunManager, RunStatus

N_RUNS = 10_000
MAX_CONCURRENCY = 8
SEED = 20_260_521
SLOT_STATUSES = {RunStatus.running, RunStatus.cancellation_requested}


class Tracker:
    """Counts bodies executing at once (async ones on the loop, sync ones in threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.bodies_started = 0

    def enter(self) -> None:
        with self._lock:
            self.current += 1
            self.bodies_started += 1
            self.peak = max(self.peak, self.current)

    def leave(self) -> None:
        with self._lock:
            self.current -= 1


@pytest.mark.timeout(120)
async def test_ten_thousand_runs_with_random_cancels_and_failures_all_end_accounted_for(
    registry: GraphRegistry, loop_errors: list[Any]
) -> None:
    rng = random.Random(SEED)
    tracker = Tracker()

    @graph_fn("stress-async", registry=registry)
    async def stress_async(i: int, plan: str) -> int:
        tracker.enter()
        try:
            await asyncio.sleep(0)
            if plan == "fail":
                raise RuntimeError(f"planned failure {i}")
            if plan == "cancel":
                try:
                    await asyncio.Event().wait()  # until cancelled
                except asyncio.CancelledError:
                    if i % 5 == 0:  # some bodies swallow it: they still end canceled
                        return -i
                    raise
            return i
        finally:
            tracker.leave()

    @graph_fn("stress-sync", registry=registry)
    def stress_sync(context, i: int, plan: str) -> int:
        tracker.enter()
        try:
            if plan == "fail":
                raise ValueError(f"planned failure {i}")
            if plan == "cancel":
                runner = context.runner()
                deadline = time.monotonic() + 30
                while not runner.is_cancel_requested() and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if i % 3 == 0:  # some ignore the flag and return anyway
                    return -i
                runner.raise_if_cancel_requested()
            return i
        finally:
            tracker.leave()

    mgr = RunManager(registry=registry, max_concurrency=MAX_CONCURRENCY)

    # Peak of runs holding a slot, as the event stream shows it.
    in_slot: set[str] = set()
    event_peak = 0
    kinds: Counter[str] = Counter()
    terminal_events: Counter[RunStatus] = Counter()

    def on_event(event: RunEvent) -> None:
        nonlocal event_peak
        kinds[event.kind] += 1
        record = event.record
        if record.status in SLOT_STATUSES:
            in_slot.add(record.run_id)
            event_peak = max(event_peak, len(in_slot))
        elif record.status.is_terminal:
            in_slot.discard(record.run_id)
            terminal_events[record.status] += 1

    mgr.subscribe(on_event)

    started = time.perf_counter()
    plans: dict[str, str] = {}
    numbers: dict[str, int] = {}
    outstanding: list[str] = []  # cancel-planned runs not cancelled yet
    for i in range(N_RUNS):
        plan = rng.choices(["ok", "fail", "cancel"], weights=[70, 15, 15])[0]
        graph = "stress-sync" if rng.random() < 0.05 else "stress-async"
        record = await mgr.submit_run(graph, inputs={"i": i, "plan": plan})
        plans[record.run_id] = plan
        numbers[record.run_id] = i
        if plan == "cancel":
            outstanding.append(record.run_id)
        if outstanding and rng.random() < 0.15:
            victim = outstanding.pop(rng.randrange(len(outstanding)))
            await mgr.cancel_run(victim, reason="stress")
        if rng.random() < 0.25:
            await asyncio.sleep(0)  # let queued runs progress while we keep submitting
    for victim in outstanding:
        await mgr.cancel_run(victim, reason="stress")

    finals = await asyncio.wait_for(
        asyncio.gather(*(mgr.wait_run(rid, return_outputs=True) for rid in plans)), 60
    )
    elapsed = time.perf_counter() - started

    expected = Counter(plans.values())
    got = Counter(record.status for record, _ in finals)
    assert all(record.status.is_terminal for record, _ in finals)
    assert got[RunStatus.succeeded] == expected["ok"]
    assert got[RunStatus.failed] == expected["fail"]
    assert got[RunStatus.canceled] == expected["cancel"]
    assert sum(got.values()) == N_RUNS
    for (record, outputs), (run_id, plan) in zip(finals, plans.items(), strict=True):
        assert record.run_id == run_id
        if plan == "ok":
            assert outputs == {"result": numbers[run_id]}
        elif plan == "fail":
            assert record.error is not None and "planned failure" in record.error
            assert outputs is None
        else:
            assert record.meta["cancel_reason"] == "stress"

    # The random cancels hit queued runs, running async runs and running sync runs.
    canceled = [record for record, _ in finals if record.status is RunStatus.canceled]
    assert any(r.started_at is None for r in canceled)
    assert any(r.started_at is not None and r.graph_id == "stress-async" for r in canceled)
    assert any(r.started_at is not None and r.graph_id == "stress-sync" for r in canceled)
    assert any(r.meta.get("cancel_ignored") for r in canceled)

    # The store agrees with what the waiters saw.
    listed: Counter[RunStatus] = Counter()
    for status in (RunStatus.succeeded, RunStatus.failed, RunStatus.canceled):
        listed[status] = len(await mgr.list_records(status=status, limit=N_RUNS))
    assert listed == got

    # Never more than MAX_CONCURRENCY at once, by both measures.
    assert tracker.peak <= MAX_CONCURRENCY
    assert event_peak <= MAX_CONCURRENCY
    assert event_peak == MAX_CONCURRENCY  # and the limit was actually used
    assert tracker.current == 0 and not in_slot
    assert mgr.active_count == 0 and mgr.pending_count == 0 and mgr.live_records() == []
    assert kinds["created"] == N_RUNS
    assert terminal_events == got

    # Cancelling finished runs afterwards changes nothing.
    for record, _ in rng.sample(finals, 100):
        assert await mgr.cancel_run(record.run_id) == record

    await mgr.close()
    del finals
    gc.collect()
    await asyncio.sleep(0)
    assert loop_errors == []
    assert elapsed < 60, f"{N_RUNS} runs took {elapsed:.1f} s"
