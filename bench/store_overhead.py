"""How much the durable SQLite run store costs per run, compared with the in-memory store.

Runs N trivial runs (an async graph returning its input) one after another, each
``submit_run`` + ``wait_run``, with:

- ``asyncio``: plain ``asyncio.create_task`` + ``await`` of the same coroutine (the floor);
- ``memory``: a RunManager on the in-memory store;
- ``sqlite``: a RunManager on a fresh workspace in a temporary folder (every terminal
  record committed to SQLite before ``wait_run`` returns).

Repetitions are interleaved (asyncio, memory, sqlite, asyncio, ...) so that a noisy machine
affects all three alike; the medians of the repetitions are reported in microseconds per run,
with the ratios sqlite/memory and memory/asyncio. Target: sqlite within 3x of memory.

    python bench/store_overhead.py [-n 5000] [--reps 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ag_jupyter.runtime import GraphRegistry, RunManager, graph_fn
from ag_jupyter.runtime.workspace import workspace_runtime

TARGET_RATIO = 3.0


async def trivial(x: int = 0) -> int:
    """The benchmark's graph body: returns its input."""
    return x


def make_registry() -> GraphRegistry:
    """A registry holding the ``trivial`` graph only."""
    registry = GraphRegistry()
    graph_fn("trivial", registry=registry)(trivial)
    return registry


async def bench_asyncio(n: int) -> float:
    """Seconds for ``n`` sequential ``create_task`` + ``await`` of the graph body."""
    start = time.perf_counter()
    for i in range(n):
        await asyncio.create_task(trivial(i))
    return time.perf_counter() - start


async def _bench_manager(manager: RunManager, n: int) -> float:
    for i in range(50):  # warm-up: first-call costs (imports, statement caches)
        record = await manager.submit_run("trivial", inputs={"x": i})
        await manager.wait_run(record.run_id)
    start = time.perf_counter()
    for i in range(n):
        record = await manager.submit_run("trivial", inputs={"x": i})
        await manager.wait_run(record.run_id)
    elapsed = time.perf_counter() - start
    await manager.close()
    return elapsed


async def bench_memory(n: int) -> float:
    """Seconds for ``n`` sequential spawn+wait runs on the in-memory store."""
    return await _bench_manager(RunManager(registry=make_registry()), n)


async def bench_sqlite(n: int) -> float:
    """Seconds for ``n`` sequential spawn+wait runs on a fresh SQLite workspace."""
    with tempfile.TemporaryDirectory(prefix="ag-bench-") as folder:
        manager = RunManager(registry=make_registry(), **workspace_runtime(folder))
        return await _bench_manager(manager, n)


BENCHES: dict[str, Callable[[int], Awaitable[float]]] = {
    "asyncio": bench_asyncio,
    "memory": bench_memory,
    "sqlite": bench_sqlite,
}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures; exit status 1 if sqlite/memory > 3."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5000, help="runs per repetition (5000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    per_run: dict[str, list[float]] = {name: [] for name in BENCHES}
    for _ in range(args.reps):
        for name, bench in BENCHES.items():
            seconds = asyncio.run(bench(args.n))
            per_run[name].append(seconds / args.n * 1e6)
    medians = {name: statistics.median(values) for name, values in per_run.items()}
    ratio = medians["sqlite"] / medians["memory"]
    result = {
        "runs": args.n,
        "repetitions": args.reps,
        "us_per_run_median": {k: round(v, 1) for k, v in medians.items()},
        "us_per_run_all": {k: [round(x, 1) for x in v] for k, v in per_run.items()},
        "sqlite_over_memory": round(ratio, 2),
        "memory_over_asyncio": round(medians["memory"] / medians["asyncio"], 2),
        "target_sqlite_over_memory": TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.n} sequential runs, median of {args.reps} repetitions (us per run)")
        for name, value in medians.items():
            spread = ", ".join(f"{x:.1f}" for x in per_run[name])
            print(f"  {name:8s} {value:8.1f}   [{spread}]")
        print(f"  sqlite / memory  = {ratio:.2f}x (target <= {TARGET_RATIO}x)")
        print(f"  memory / asyncio = {result['memory_over_asyncio']:.2f}x")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
