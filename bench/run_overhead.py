"""Per-run overhead of the embedded runtime against plain asyncio.

Runs N trivial runs of one trivial async graph body, one at a time, through:

  (a) ``spawn_run`` + ``wait_run`` via an ad-hoc session's ``runner()``,
  (b) ``run_and_wait`` via the same facade,
  (c) plain ``asyncio.create_task`` + ``await`` of the same function,

and reports microseconds per run (median of ``--repeat`` timed passes after one untimed
warm-up pass) and the ratio to plain asyncio. It also measures the memory the process holds
per finished run (record + outputs kept by the store, plus the manager's bookkeeping) with
``tracemalloc``.

Each runtime measurement takes a *manager factory* (a zero-argument callable returning a fresh
:class:`RunManager`), one per store column in ``FACTORIES``: the in-memory store, the durable
SQLite store (a fresh workspace folder per pass; each run's ``pending`` record is committed
before ``spawn_run`` returns, its terminal record before ``wait_run`` returns it), and the
*two-commit floor*: the in-memory store plus, per run, exactly the two commits durability
needs (one journal row each, built and committed inline on the loop thread like the durable
store's own fast path) and nothing else, so ``floor ÷ in-memory`` is the physical limit of
the durable path on this machine. Passes are interleaved (plain, each store, again...) so
the noise of these shared 2-core VMs hits every column alike, and ratios are the median of
per-pass ratios. CPU time of the loop thread is reported beside wall time.

Usage: ``python bench/run_overhead.py [--n 10000] [--repeat 5] [--check]``.
Targets: in-memory paths within 10x of plain asyncio; durable spawn_run + wait_run within 2x
of in-memory, or, where the two-commit floor itself is above 2x here, within 10% of the
floor; < 2 KiB held per finished in-memory run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ag_jupyter import graph_fn, open_session
from ag_jupyter.runtime import GraphRegistry, RunManager, RunRecord, RunStatus
from ag_jupyter.runtime.defaults import open_workspace, workspace_runtime
from ag_jupyter.runtime.store.run_store import InMemoryRunStore
from ag_jupyter.runtime.store.sqlite_store import JOURNAL_RUN_SQL, SqliteRunStore, _Pending

GRAPH_ID = "bench-trivial"
REGISTRY = GraphRegistry()
TARGET_RATIO = 10.0
TARGET_DURABLE_RATIO = 2.0  # durable store against the in-memory store, per run
FLOOR_SLACK = 1.10  # ...or within 10% of the two-commit floor when that is above 2x
TARGET_BYTES_PER_RUN = 2048

ManagerFactory = Callable[[], RunManager]


@graph_fn(GRAPH_ID, registry=REGISTRY)
async def trivial(x: int) -> int:
    """The graph body every variant runs: returns its input."""
    return x


def in_memory_manager() -> RunManager:
    """A fresh manager with the in-memory run store (the default store)."""
    return RunManager(registry=REGISTRY)


_WORKSPACES = tempfile.TemporaryDirectory(prefix="ag-bench-")


def sqlite_manager() -> RunManager:
    """A fresh manager on a new durable workspace (SQLite store + services)."""
    folder = tempfile.mkdtemp(dir=_WORKSPACES.name)
    return RunManager(registry=REGISTRY, **workspace_runtime(folder))


class FloorStore(InMemoryRunStore):
    """The in-memory store plus exactly the two commits a durable run needs (the pending
    record, the terminal record): one journal row each, built and committed inline, no
    other bookkeeping. The physical floor of the durable path."""

    def __init__(self) -> None:
        super().__init__()
        folder = tempfile.mkdtemp(dir=_WORKSPACES.name)
        self._workspace = open_workspace(folder)
        self._conn = self._workspace.engine.connection()
        self._rows = SqliteRunStore(self._workspace)
        self._last: RunRecord | None = None

    async def create(self, record: RunRecord, inputs: Any = None) -> None:
        await super().create(record, inputs)
        self._last = record

    async def update(self, record: RunRecord, outputs: Any = None) -> None:
        await super().update(record, outputs)
        self._last = record

    async def flush(self) -> None:
        if self._last is not None:
            row = self._rows._row(_Pending(self._last, 0), "floor")
            self._conn.execute(JOURNAL_RUN_SQL, row)  # one implicit transaction
            self._last = None

    async def put(self, record: RunRecord, **values: Any) -> None:
        await super().put(record, **values)
        self._last = record
        await self.flush()

    async def close(self) -> None:
        await self._workspace.aclose()


def floor_manager() -> RunManager:
    """In-memory manager whose store makes the two commits per run and nothing else."""
    return RunManager(registry=REGISTRY, store=FloorStore())


# Column name -> manager factory.
FACTORIES: dict[str, ManagerFactory] = {
    "in-memory": in_memory_manager,
    "floor": floor_manager,
    "sqlite": sqlite_manager,
}


# ------------------------------------------------------------------- variants
Timing = tuple[float, float]  # (wall seconds, loop-thread CPU seconds)


def _clock() -> Timing:
    return time.perf_counter(), time.thread_time()


def _since(start: Timing) -> Timing:
    return time.perf_counter() - start[0], time.thread_time() - start[1]


async def plain_asyncio(n: int) -> Timing:
    """(wall, CPU) seconds for ``n`` sequential ``create_task(trivial(i))`` + ``await``."""
    started = _clock()
    for i in range(n):
        await asyncio.create_task(trivial.fn(i))
    return _since(started)


async def spawn_then_wait(factory: ManagerFactory, n: int) -> Timing:
    """(wall, CPU) seconds for ``n`` sequential ``spawn_run`` + ``wait_run`` through
    ``runner()``."""
    manager = factory()
    try:
        async with open_session(run_manager=manager) as context:
            runner = context.runner()
            started = _clock()
            for i in range(n):
                run_id = await runner.spawn_run(GRAPH_ID, inputs={"x": i})
                await runner.wait_run(run_id)
            elapsed = _since(started)
            await _check_last(manager, run_id)
    finally:
        await manager.close()
    return elapsed


async def run_and_wait(factory: ManagerFactory, n: int) -> Timing:
    """(wall, CPU) seconds for ``n`` sequential ``run_and_wait`` through ``runner()``."""
    manager = factory()
    try:
        async with open_session(run_manager=manager) as context:
            runner = context.runner()
            started = _clock()
            for i in range(n):
                run_id, _outputs, _waits, _conts = await runner.run_and_wait(
                    GRAPH_ID, inputs={"x": i}
                )
            elapsed = _since(started)
            await _check_last(manager, run_id)
    finally:
        await manager.close()
    return elapsed


async def _check_last(manager: RunManager, run_id: str) -> None:
    record, outputs = await manager.wait_run(run_id, return_outputs=True)
    if record.status is not RunStatus.succeeded or outputs is None:
        raise RuntimeError(f"benchmark run ended {record.status}: {record.error}")


async def bytes_per_run(factory: ManagerFactory, n: int) -> float:
    """Bytes the process still holds per finished run, after ``n`` sequential runs.

    Traced growth from before the manager exists to after its ``n`` runs finished (and a
    ``gc.collect()``), divided by ``n``: the store's record + outputs per run, plus the
    manager's own per-run bookkeeping. The manager's fixed cost is spread over ``n``.
    """
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        manager = factory()
        async with open_session(run_manager=manager) as context:
            runner = context.runner()
            for i in range(n):
                await runner.wait_run(await runner.spawn_run(GRAPH_ID, inputs={"x": i}))
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - baseline
        await manager.close()
    finally:
        tracemalloc.stop()
    return held / n


# -------------------------------------------------------------------- driver
@dataclass
class Row:
    """One line of the report: a variant, its store column, and per pass its wall and CPU
    seconds per run."""

    variant: str
    store: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def us_per_run(self) -> float:
        """Median wall microseconds per run over the timed passes."""
        return statistics.median(self.wall) * 1e6

    @property
    def cpu_us_per_run(self) -> float:
        """Median loop-thread CPU microseconds per run."""
        return statistics.median(self.cpu) * 1e6


def pair_ratio(row: Row, base: Row) -> float:
    """Median over passes of ``row``'s wall time ÷ ``base``'s wall time in the same pass."""
    return statistics.median(a / b for a, b in zip(row.wall, base.wall, strict=False))


async def main(n: int, repeat: int) -> tuple[list[Row], dict[str, float]]:
    """Run every measurement, interleaved; return the rows and bytes per run per store."""
    plain = Row("plain asyncio task", "-")
    rows = [plain]
    jobs: list[tuple[Row, Callable[[int], Awaitable[Timing]]]] = [(plain, plain_asyncio)]
    for variant, fn in (("spawn_run + wait_run", spawn_then_wait), ("run_and_wait", run_and_wait)):
        for store, factory in FACTORIES.items():
            row = Row(variant, store)
            rows.append(row)

            def job(k: int, f: ManagerFactory = factory, g: Any = fn) -> Awaitable[Timing]:
                return g(f, k)

            jobs.append((row, job))
    for _, job in jobs:  # warm-up, untimed
        await job(min(n, 1000))
    for rep in range(repeat):
        order = jobs[rep % len(jobs):] + jobs[: rep % len(jobs)]  # rotate the order
        for row, job in order:
            gc.collect()
            wall, cpu = await job(n)
            row.wall.append(wall / n)
            row.cpu.append(cpu / n)
    memory = {
        store: await bytes_per_run(factory, n)
        for store, factory in FACTORIES.items()
        if store != "floor"
    }
    return rows, memory


def report(rows: list[Row], memory: dict[str, float], n: int, repeat: int) -> bool:
    """Print the table; return whether every target is met."""
    plain = rows[0]
    by = {(r.variant, r.store): r for r in rows}
    ok = True
    print(f"N = {n} sequential runs, {repeat} interleaved passes (warm-up excluded); ratios "
          "are medians of per-pass ratios")
    print(f"{'variant':<24}{'store':<12}{'us/run':>9}{'cpu us':>9}{'runs/s':>9}"
          f"{'x plain':>9}{'x in-mem':>10}")
    for row in rows:
        ratio = pair_ratio(row, plain)
        base = by.get((row.variant, "in-memory"))
        vs_memory = pair_ratio(row, base) if base is not None and row is not base else None
        flag = ""
        if row.store == "in-memory" and ratio > TARGET_RATIO:
            flag, ok = f"  > {TARGET_RATIO:.0f}x plain", False
        if row.store == "sqlite" and row.variant == "spawn_run + wait_run" and vs_memory:
            floor = pair_ratio(by[(row.variant, "floor")], base)  # type: ignore[arg-type]
            allowed = max(TARGET_DURABLE_RATIO, floor * FLOOR_SLACK)
            if vs_memory > allowed:
                flag, ok = f"  > {allowed:.2f}x in-memory (floor {floor:.2f}x)", False
        column = f"{vs_memory:>10.2f}" if vs_memory is not None else f"{'-':>10}"
        print(f"{row.variant:<24}{row.store:<12}{row.us_per_run:>9.1f}"
              f"{row.cpu_us_per_run:>9.1f}{1e6 / row.us_per_run:>9.0f}{ratio:>9.1f}"
              f"{column}{flag}")
    print()
    print(f"{'memory held per finished run':<36}{'bytes':>10}{'KiB':>8}")
    for store, size in memory.items():
        flag = ""
        # The durable store keeps finished runs on disk; the target is the in-memory one.
        if store == "in-memory" and size > TARGET_BYTES_PER_RUN:
            flag, ok = "  > target", False
        print(f"{store:<36}{size:>10.0f}{size / 1024:>8.2f}{flag}")
    print(f"targets: in-memory within {TARGET_RATIO:.0f}x of plain asyncio, durable spawn_run"
          f" + wait_run within {TARGET_DURABLE_RATIO:.0f}x of in-memory (or within "
          f"{(FLOOR_SLACK - 1) * 100:.0f}% of the two-commit floor), < "
          f"{TARGET_BYTES_PER_RUN // 1024} KiB per in-memory run: {'met' if ok else 'MISSED'}")
    return ok


def cli(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table. Exit status 1 with ``--check``
    when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="runs per pass (default 10000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (default 5)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    if args.n <= 0 or args.repeat <= 0:
        parser.error("--n and --repeat must be positive")
    rows, memory = asyncio.run(main(args.n, args.repeat))
    ok = report(rows, memory, args.n, args.repeat)
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(cli())
