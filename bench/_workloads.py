"""The workloads of ``bench/compare.py``, written once and run on every side.

Standard library only: this module is imported both by the project's interpreter (plain
asyncio and ag_jupyter sides) and by the AetherGraph virtual environment's interpreter
(``bench/aethergraph_side.py``). The runtime workloads only use the seed API that
ag_jupyter and AetherGraph share (``open_session()`` and ``context.runner()``'s
``spawn_run`` / ``wait_run`` / ``run_and_wait`` / ``cancel_run``), so the *same code* times
both runtimes; plain asyncio gets the equivalent ``create_task`` + ``await`` code (the floor).

Every run reads its outputs back and checks them (``{"y": x + 1}``); a wrong or missing
output raises :class:`BenchError`, so a side cannot look fast by skipping work.

A worker process (one per side and repetition) calls :func:`run_side`, which warms up,
times each workload once, measures memory last and returns a JSON-able dict.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

# Graph ids (the same on both runtimes).
PLUS_ONE = "bench-plus-one"
SLEEPER = "bench-sleeper"
PARENT = "bench-parent"

#: Runs spawned at once by the batched workloads (ag_jupyter's default max_concurrency).
BATCH = 8
#: Children spawned and awaited by one parent run in the nested workload.
CHILDREN = 10
#: Seconds the cancel workload's graph body sleeps (it is cancelled long before).
SLEEP_S = 60.0
#: Seconds a freshly spawned sleeper is given to start before it is cancelled.
SETTLE_S = 0.002

#: µs of loop work between two hand-offs in the floor measurement (about what a durable
#: sequential run does on the loop between two commits).
FLOOR_BUSY_US = 100.0

#: Workload sizes a worker receives (one dict per side, see ``compare.py``).
SIZE_KEYS = (
    "warmup",
    "seq_small",
    "seq_large",
    "batch_small",
    "batch_large",
    "run_and_wait",
    "nested_parents",
    "cancel_samples",
    "session_samples",
    "memory_runs",
    "memory_turnover",
    "floor_samples",
)


class BenchError(RuntimeError):
    """A run ended wrong (bad status, missing or wrong outputs): the figures are void."""


# ----------------------------------------------------------------- graph bodies
async def plus_one(x: int) -> int:
    """The trivial graph body every side runs: returns its input + 1."""
    return x + 1


async def sleeper(x: int) -> int:
    """The cancel workload's body: awaits ``asyncio.sleep(SLEEP_S)``, then returns ``x``."""
    await asyncio.sleep(SLEEP_S)
    return x


async def parent(x: int, context: Any) -> int:
    """The nested workload's body: spawns ``CHILDREN`` ``plus_one`` runs through
    ``context.runner()``, waits for each and returns the sum of their ``y`` outputs."""
    runner = context.runner()
    run_ids = [await runner.spawn_run(PLUS_ONE, inputs={"x": x + k}) for k in range(CHILDREN)]
    total = 0
    for run_id in run_ids:
        _record, outputs = await runner.wait_run(run_id, return_outputs=True)
        total += outputs["y"]
    return total


def parent_total(x: int) -> int:
    """What :func:`parent` must return for input ``x``."""
    return sum(x + k + 1 for k in range(CHILDREN))


# -------------------------------------------------------------------- helpers
def status_text(status: Any) -> str:
    """A status enum (either runtime's) or string as its plain value, e.g. ``"canceled"``."""
    return str(getattr(status, "value", status))


def _check(record: Any, outputs: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    status = status_text(record.status) if record is not None else "succeeded"
    if status != "succeeded" or outputs != expected:
        error = getattr(record, "error", None)
        raise BenchError(f"run ended {status} with outputs {outputs!r}, expected {expected!r}"
                         f" (error: {error})")


class Ticker:
    """Measures event-loop stalls as a task on the loop sees them: ``lateness`` holds how
    late each 1 ms sleep woke, in seconds. ``start()`` on the running loop, then
    ``await stop()``."""

    def __init__(self) -> None:
        self.lateness: list[float] = []
        self._stop = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.lateness.append(max(0.0, now - last - 0.001))
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        if self._task is not None:
            await self._task

    def worst_ms(self) -> float:
        return 1000 * max(self.lateness, default=0.0)

    def p99_ms(self) -> float:
        if not self.lateness:
            return 0.0
        ordered = sorted(self.lateness)
        return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Side:
    """How a worker reaches one runtime.

    Attributes:
      name: the side's column name.
      open_session: ``open_session`` of the runtime (None for plain asyncio).
      get_status: ``await get_status(context, run_id)`` -> the run's current status.
      close: awaited once at the end (closes managers/stores); may be None.
    """

    name: str
    open_session: Callable[[], AbstractAsyncContextManager[Any]] | None
    get_status: Callable[[Any, str], Awaitable[Any]] | None = None
    close: Callable[[], Awaitable[None]] | None = None


# ------------------------------------------------------- runtime workloads
async def seq_runs(runner: Any, n: int) -> float:
    """Seconds for ``n`` sequential ``spawn_run`` + ``wait_run(return_outputs=True)``."""
    started = time.perf_counter()
    for i in range(n):
        run_id = await runner.spawn_run(PLUS_ONE, inputs={"x": i})
        record, outputs = await runner.wait_run(run_id, return_outputs=True)
        _check(record, outputs, {"y": i + 1})
    return time.perf_counter() - started


async def batch_runs(runner: Any, n: int) -> float:
    """Seconds for ``n`` runs in batches of ``BATCH``: spawn ``BATCH``, then wait each."""
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        xs = range(first, min(first + BATCH, n))
        run_ids = [await runner.spawn_run(PLUS_ONE, inputs={"x": x}) for x in xs]
        for x, run_id in zip(xs, run_ids, strict=True):
            record, outputs = await runner.wait_run(run_id, return_outputs=True)
            _check(record, outputs, {"y": x + 1})
    return time.perf_counter() - started


async def run_and_wait_runs(runner: Any, n: int) -> float:
    """Seconds for ``n`` sequential ``run_and_wait``."""
    started = time.perf_counter()
    for i in range(n):
        _run_id, outputs, _waits, _conts = await runner.run_and_wait(PLUS_ONE, inputs={"x": i})
        _check(None, outputs, {"y": i + 1})
    return time.perf_counter() - started


async def nested_runs(runner: Any, parents: int) -> float:
    """Seconds for ``parents`` sequential parent runs, each spawning and awaiting
    ``CHILDREN`` child runs (so ``parents * (CHILDREN + 1)`` runs in all)."""
    started = time.perf_counter()
    for i in range(parents):
        run_id = await runner.spawn_run(PARENT, inputs={"x": i})
        record, outputs = await runner.wait_run(run_id, return_outputs=True)
        _check(record, outputs, {"total": parent_total(i)})
    return time.perf_counter() - started


async def cancel_runs(
    side: Side, context: Any, samples: int, timeout_s: float
) -> dict[str, Any]:
    """Cancel latency: for each sample spawn a :func:`sleeper` run, let it start (it is
    then awaiting ``asyncio.sleep``), and time ``cancel_run`` until ``wait_run`` returns
    the record ``canceled``.

    Stops at the first sample whose run is not ``canceled`` within ``timeout_s`` seconds
    and reports that (``canceled: False`` with the status it had), since a runtime that
    does not stop an awaiting run has no cancel latency to report.
    """
    assert side.get_status is not None
    runner = context.runner()
    latencies: list[float] = []
    call_ms: list[float] = []
    for _ in range(samples):
        run_id = await runner.spawn_run(SLEEPER, inputs={"x": 0})
        await asyncio.sleep(SETTLE_S)
        before = status_text(await side.get_status(context, run_id))
        if before != "running":
            raise BenchError(f"sleeper run is {before} before cancel, expected running")
        started = time.perf_counter()
        await runner.cancel_run(run_id)
        call_ms.append((time.perf_counter() - started) * 1e3)
        try:
            record = await runner.wait_run(run_id, timeout_s=timeout_s)
        except TimeoutError:
            status = status_text(await side.get_status(context, run_id))
            return {"canceled": False, "status_after_timeout": status, "timeout_s": timeout_s,
                    "cancel_call_ms": statistics.median(call_ms), "samples": len(call_ms)}
        latencies.append((time.perf_counter() - started) * 1e3)
        if status_text(record.status) != "canceled":
            return {"canceled": False, "status_after_timeout": status_text(record.status),
                    "timeout_s": timeout_s, "cancel_call_ms": statistics.median(call_ms),
                    "samples": len(call_ms)}
    return {"canceled": True, "latency_ms": statistics.median(latencies),
            "cancel_call_ms": statistics.median(call_ms), "samples": len(latencies)}


async def session_open_close(side: Side, samples: int) -> float:
    """Median microseconds of one ``async with open_session(): pass`` (enter + exit)."""
    assert side.open_session is not None
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        async with side.open_session():
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


# ------------------------------------------------------- plain asyncio floor
async def plain_seq(n: int) -> float:
    """Seconds for ``n`` sequential ``create_task(plus_one(i))`` + ``await``."""
    started = time.perf_counter()
    for i in range(n):
        y = await asyncio.create_task(plus_one(i))
        _check(None, {"y": y}, {"y": i + 1})
    return time.perf_counter() - started


async def plain_batch(n: int) -> float:
    """Seconds for ``n`` tasks in batches of ``BATCH``: create ``BATCH``, await each."""
    started = time.perf_counter()
    for first in range(0, n, BATCH):
        xs = range(first, min(first + BATCH, n))
        tasks = [asyncio.create_task(plus_one(x)) for x in xs]
        for x, task in zip(xs, tasks, strict=True):
            _check(None, {"y": await task}, {"y": x + 1})
    return time.perf_counter() - started


async def _plain_parent(x: int) -> int:
    tasks = [asyncio.create_task(plus_one(x + k)) for k in range(CHILDREN)]
    total = 0
    for task in tasks:
        total += await task
    return total


async def plain_nested(parents: int) -> float:
    """Seconds for ``parents`` parent tasks, each creating and awaiting ``CHILDREN``."""
    started = time.perf_counter()
    for i in range(parents):
        total = await asyncio.create_task(_plain_parent(i))
        _check(None, {"total": total}, {"total": parent_total(i)})
    return time.perf_counter() - started


async def plain_cancel(samples: int) -> dict[str, Any]:
    """Median milliseconds from ``task.cancel()`` to the task being done (cancelled)."""
    latencies = []
    for _ in range(samples):
        task = asyncio.create_task(sleeper(0))
        await asyncio.sleep(SETTLE_S)
        started = time.perf_counter()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        latencies.append((time.perf_counter() - started) * 1e3)
        if not task.cancelled():
            raise BenchError("plain asyncio task was not cancelled")
    return {"canceled": True, "latency_ms": statistics.median(latencies),
            "samples": len(latencies)}


# -------------------------------------------------------------------- memory
async def memory_per_run(
    runs: Callable[[int], Awaitable[Any]], n: int, turnover: int
) -> dict[str, float]:
    """Memory the process keeps per additional finished run, in bytes (steady state).

    On the already warm runtime (records of earlier runs stay wherever it keeps them):

    1. RSS: the resident set size's growth over ``n`` more runs. It counts everything
       (SQLite's C-level caches too) but moves in allocator-arena steps and hides reuse of
       memory freed earlier, so it is coarse.
    2. tracemalloc: tracing starts, ``turnover`` runs replace what bounded in-memory caches
       hold (a cache entry allocated before tracing and evicted later would otherwise not
       count as freed), then the growth of traced Python allocations over ``n`` more runs.
       Exact for Python objects, blind to memory C libraries allocate themselves.

    Each growth is divided by ``n``.
    """
    gc.collect()
    rss_before = rss_bytes()
    await runs(n)
    gc.collect()
    rss_growth = rss_bytes() - rss_before
    tracemalloc.start()
    try:
        await runs(turnover)
        gc.collect()
        baseline = tracemalloc.get_traced_memory()[0]
        await runs(n)
        gc.collect()
        traced_growth = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    return {"rss_bytes_per_run": rss_growth / n, "traced_bytes_per_run": traced_growth / n}


# -------------------------------------------------------------------- driver
async def _timed(fn: Callable[[], Awaitable[float]]) -> float:
    gc.collect()
    return await fn()


# ------------------------------------------------------- the machine's floor
async def loop_thread_hop_us(samples: int, *, busy_us: float = 0.0) -> float:
    """Median µs of one asyncio loop → worker thread → loop round trip: the loop wakes a
    sleeping thread (a lock release, as ag_jupyter's workspace writer is woken) and awaits
    a future the thread settles with ``call_soon_threadsafe``. Any durable wait whose write
    happens in a worker thread pays this at least once.

    ``busy_us``: µs the loop computes before each hand-off (untimed), as a run manager
    does between two commits; on virtual machines a thread (CPU) that idled longer is
    slower to wake."""
    loop = asyncio.get_running_loop()
    wake = threading.Lock()
    wake.acquire()
    job: list[asyncio.Future[None] | None] = [None]

    def worker() -> None:
        while True:
            wake.acquire()
            future = job[0]
            if future is None:
                return
            loop.call_soon_threadsafe(future.set_result, None)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    times = []
    for _ in range(samples):
        if busy_us:
            until = time.perf_counter() + busy_us * 1e-6
            while time.perf_counter() < until:
                pass
        future = loop.create_future()
        job[0] = future
        start = time.perf_counter()
        wake.release()
        await future
        times.append(time.perf_counter() - start)
    job[0] = None
    wake.release()
    thread.join()
    return statistics.median(times) * 1e6


def sqlite_commit_us(samples: int) -> float:
    """Median µs of one small SQLite transaction on the calling thread (WAL,
    ``synchronous=NORMAL``, one 18-column row inserted), the cheapest durable write."""
    with tempfile.TemporaryDirectory(prefix="ag-bench-floor-") as folder:
        conn = sqlite3.connect(os.path.join(folder, "floor.db"), isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE t (" + ", ".join(f"c{i}" for i in range(18)) + ")")
            row = ("run-0123456789abcdef", "bench-plus-one", "succeeded",
                   "2026-01-01T00:00:00.000000+00:00", None, None, None, None, "app", "normal",
                   "normal", None, None, None, "[]", "{}", "owner", '{"y": 1}')
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t VALUES (" + ", ".join("?" * 18) + ")", row)
                conn.execute("COMMIT")
                times.append(time.perf_counter() - start)
        finally:
            conn.close()
    return statistics.median(times) * 1e6


def pipe_ping_pong_us(samples: int, *, same_cpu: bool) -> float | None:
    """Median µs of a round trip between two threads blocked on pipes, both pinned to one
    CPU or to two different CPUs (None where CPU affinity cannot be set): how much of a
    thread hand-off is the OS waking a thread on another, idle CPU."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if not same_cpu and len(allowed) < 2:
        return None
    mine, theirs = allowed[0], allowed[0] if same_cpu else allowed[1]
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()

    def echo() -> None:
        os.sched_setaffinity(0, {theirs})
        for _ in range(samples):
            os.read(r1, 1)
            os.write(w2, b"x")

    os.sched_setaffinity(0, {mine})
    try:
        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            os.write(w1, b"x")
            os.read(r2, 1)
            times.append(time.perf_counter() - start)
        thread.join()
    finally:
        os.sched_setaffinity(0, set(allowed))
        for fd in (r1, w1, r2, w2):
            os.close(fd)
    return statistics.median(times) * 1e6


async def machine_floor(samples: int) -> dict[str, float | None]:
    """The hand-off and commit costs that bound any durable run manager on this machine."""
    await loop_thread_hop_us(min(samples, 200))  # warm-up
    return {
        "hop_us": await loop_thread_hop_us(samples),
        "hop_busy_us": await loop_thread_hop_us(samples, busy_us=FLOOR_BUSY_US),
        "commit_us": sqlite_commit_us(samples),
        "ping_pong_cross_cpu_us": pipe_ping_pong_us(samples, same_cpu=False),
        "ping_pong_same_cpu_us": pipe_ping_pong_us(samples, same_cpu=True),
    }


async def run_plain(sizes: dict[str, int]) -> dict[str, Any]:
    """Every plain-asyncio workload once, after a warm-up: the floor's figures."""
    await plain_seq(sizes["warmup"])
    await plain_batch(sizes["warmup"])
    await plain_nested(max(1, sizes["warmup"] // 10))
    await plain_cancel(2)
    result: dict[str, Any] = {"us": {}}
    us = result["us"]
    for key, fn in (
        ("seq_small", plain_seq),
        ("seq_large", plain_seq),
        ("batch_small", plain_batch),
        ("batch_large", plain_batch),
        ("nested_parents", plain_nested),
    ):
        n = sizes[key]
        us[key] = await _timed(lambda fn=fn, n=n: fn(n)) / n * 1e6
    us["run_and_wait"] = await _timed(lambda: plain_seq(sizes["run_and_wait"])) / sizes[
        "run_and_wait"] * 1e6
    result["cancel"] = await plain_cancel(sizes["cancel_samples"])
    result["floor"] = await machine_floor(sizes["floor_samples"])
    return result


async def run_runtime(side: Side, sizes: dict[str, int], cancel_timeout_s: float) -> dict[str, Any]:
    """Every runtime workload once on ``side``, in a fresh process.

    Order: the first ``open_session`` of the process (cold: builds the runtime), a warm-up
    of every workload (untimed), the timed workloads, warm ``open_session`` samples, the
    cancel workload, and memory last (tracemalloc slows what runs under it).
    ``sizes`` maps every key of ``SIZE_KEYS`` to a count.
    """
    assert side.open_session is not None
    started = time.perf_counter()
    async with side.open_session():
        pass
    result: dict[str, Any] = {"session_cold_ms": (time.perf_counter() - started) * 1e3, "us": {}}
    us = result["us"]
    try:
        async with side.open_session() as context:
            runner = context.runner()
            warm = sizes["warmup"]
            await seq_runs(runner, warm)
            await batch_runs(runner, max(BATCH, warm // BATCH * BATCH))
            await run_and_wait_runs(runner, warm)
            await nested_runs(runner, max(1, warm // 20))
            await session_open_close(side, max(1, warm // 10))

            for key, fn in (
                ("seq_small", seq_runs),
                ("seq_large", seq_runs),
                ("batch_small", batch_runs),
                ("batch_large", batch_runs),
                ("run_and_wait", run_and_wait_runs),
                ("nested_parents", nested_runs),
            ):
                n = sizes[key]
                us[key] = await _timed(lambda fn=fn, n=n: fn(runner, n)) / n * 1e6
            us["session"] = await session_open_close(side, sizes["session_samples"])
            result["cancel"] = await cancel_runs(
                side, context, sizes["cancel_samples"], cancel_timeout_s
            )

            async def more_runs(k: int) -> None:
                await seq_runs(runner, k)

            result["memory"] = await memory_per_run(
                more_runs, sizes["memory_runs"], sizes["memory_turnover"]
            )
    finally:
        if side.close is not None:
            await side.close()
    return result
