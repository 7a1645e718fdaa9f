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
:class:`RunManager`), one per store column in ``FACTORIES``: the in-memory store and the
durable SQLite store (a fresh workspace folder per pass; every terminal record is committed
before ``wait_run`` returns it).

Usage: ``python bench/run_overhead.py [--n 10000] [--repeat 5] [--check]``.
Targets: in-memory paths within 10x of plain asyncio; durable paths within 3x of the
in-memory ones; < 2 KiB held per finished in-memory run.
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
from dataclasses import dataclass

from ag_jupyter import graph_fn, open_session
from ag_jupyter.runtime import GraphRegistry, RunManager, RunStatus
from ag_jupyter.runtime.defaults import workspace_runtime

GRAPH_ID = "bench-trivial"
REGISTRY = GraphRegistry()
TARGET_RATIO = 10.0
TARGET_DURABLE_RATIO = 3.0  # durable store against the in-memory store, per run
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


# Column name -> manager factory.
FACTORIES: dict[str, ManagerFactory] = {"in-memory": in_memory_manager, "sqlite": sqlite_manager}


# ------------------------------------------------------------------- variants
async def plain_asyncio(n: int) -> float:
    """Seconds for ``n`` sequential ``create_task(trivial(i))`` + ``await``."""
    started = time.perf_counter()
    for i in range(n):
        await asyncio.create_task(trivial.fn(i))
    return time.perf_counter() - started


async def spawn_then_wait(factory: ManagerFactory, n: int) -> float:
    """Seconds for ``n`` sequential ``spawn_run`` + ``wait_run`` through ``runner()``."""
    manager = factory()
    try:
        async with open_session(run_manager=manager) as context:
            runner = context.runner()
            started = time.perf_counter()
            for i in range(n):
                run_id = await runner.spawn_run(GRAPH_ID, inputs={"x": i})
                await runner.wait_run(run_id)
            elapsed = time.perf_counter() - started
            await _check_last(manager, run_id)
    finally:
        await manager.close()
    return elapsed


async def run_and_wait(factory: ManagerFactory, n: int) -> float:
    """Seconds for ``n`` sequential ``run_and_wait`` through ``runner()``."""
    manager = factory()
    try:
        async with open_session(run_manager=manager) as context:
            runner = context.runner()
            started = time.perf_counter()
            for i in range(n):
                run_id, _outputs, _waits, _conts = await runner.run_and_wait(
                    GRAPH_ID, inputs={"x": i}
                )
            elapsed = time.perf_counter() - started
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
    """One line of the report: a variant, its store column and its median time."""

    variant: str
    store: str
    seconds: list[float]

    @property
    def us_per_run(self) -> float:
        """Median microseconds per run over the timed passes."""
        return statistics.median(self.seconds) * 1e6


async def measure(
    name: str, store: str, fn: Callable[[int], Awaitable[float]], n: int, repeat: int
) -> Row:
    """Warm up once (untimed), then time ``repeat`` passes of ``n`` runs."""
    await fn(min(n, 1000))
    seconds = []
    for _ in range(repeat):
        gc.collect()
        seconds.append(await fn(n) / n)
    return Row(name, store, seconds)


async def main(n: int, repeat: int) -> tuple[list[Row], dict[str, float]]:
    """Run every measurement; return the timing rows and bytes per run per store."""
    rows = [await measure("plain asyncio task", "-", plain_asyncio, n, repeat)]
    for store, factory in FACTORIES.items():

        def spawn_wait_fn(k: int, f: ManagerFactory = factory) -> Awaitable[float]:
            return spawn_then_wait(f, k)

        def run_wait_fn(k: int, f: ManagerFactory = factory) -> Awaitable[float]:
            return run_and_wait(f, k)

        rows.append(await measure("spawn_run + wait_run", store, spawn_wait_fn, n, repeat))
        rows.append(await measure("run_and_wait", store, run_wait_fn, n, repeat))
    memory = {store: await bytes_per_run(factory, n) for store, factory in FACTORIES.items()}
    return rows, memory


def report(rows: list[Row], memory: dict[str, float], n: int, repeat: int) -> bool:
    """Print the table; return whether every target is met."""
    plain = rows[0].us_per_run
    in_memory = {r.variant: r.us_per_run for r in rows if r.store == "in-memory"}
    ok = True
    print(f"N = {n} sequential runs, median of {repeat} passes (warm-up excluded)")
    print(f"{'variant':<24}{'store':<12}{'us/run':>10}{'runs/s':>10}{'x plain':>10}"
          f"{'x in-mem':>10}")
    for row in rows:
        ratio = row.us_per_run / plain
        vs_memory = row.us_per_run / in_memory[row.variant] if row.variant in in_memory else None
        flag = ""
        if row.store == "in-memory" and ratio > TARGET_RATIO:
            flag, ok = f"  > {TARGET_RATIO:.0f}x plain", False
        if row.store == "sqlite" and vs_memory and vs_memory > TARGET_DURABLE_RATIO:
            flag, ok = f"  > {TARGET_DURABLE_RATIO:.0f}x in-memory", False
        column = f"{vs_memory:>10.2f}" if vs_memory is not None else f"{'-':>10}"
        print(f"{row.variant:<24}{row.store:<12}{row.us_per_run:>10.1f}"
              f"{1e6 / row.us_per_run:>10.0f}{ratio:>10.1f}{column}{flag}")
    print()
    print(f"{'memory held per finished run':<36}{'bytes':>10}{'KiB':>8}")
    for store, size in memory.items():
        flag = ""
        # The durable store keeps finished runs on disk; the target is the in-memory one.
        if store == "in-memory" and size > TARGET_BYTES_PER_RUN:
            flag, ok = "  > target", False
        print(f"{store:<36}{size:>10.0f}{size / 1024:>8.2f}{flag}")
    print(f"targets: in-memory within {TARGET_RATIO:.0f}x of plain asyncio, durable within "
          f"{TARGET_DURABLE_RATIO:.0f}x of in-memory, < {TARGET_BYTES_PER_RUN // 1024} KiB per "
          f"in-memory run: {'met' if ok else 'MISSED'}")
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
