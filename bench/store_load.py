"""The durable store under sustained load: 100,000 runs, and outputs up to 100 MB.

Reports, for ``--runs`` trivial runs (default 100,000) through one durable RunManager
(``spawn_run`` + ``wait_run`` in batches of ``--batch`` concurrent runs, default 1 = one at
a time):

- runs/s for each block of 10,000 runs (the journal fold and WAL checkpoints show here);
- RSS retained per finished run (growth of the process's resident memory, after
  ``gc.collect()``, divided by the runs);
- bytes on disk per run (database + WAL + blob files, divided by the runs);
- the peak WAL size (sampled every 500 runs, and the write engine's own high-water mark);
- the worst loop stall caused by the store: the longest single store step on the loop
  thread (queueing a change, an inline commit), timed around the calls;

then, for outputs of 1, 10 and 100 MB (a list of small dicts), the worst gap seen by a
1 ms ticker task while such a run finishes (the JSON encoding runs in the writer thread
in steps that give the GIL away).

Targets (issue "A run store you can trust"): peak WAL < 64 MiB over 100k runs; no store
step on the loop over 2 ms, at any payload size.

Usage: ``python bench/store_load.py [--runs 100000] [--batch 1] [--big 1,10,100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ag_jupyter.runtime import GraphRegistry, RunManager, graph_fn  # noqa: E402
from ag_jupyter.runtime.defaults import workspace_runtime  # noqa: E402

REGISTRY = GraphRegistry()
WAL_TARGET = 64 << 20
STALL_TARGET_S = 0.002


@graph_fn("load-trivial", registry=REGISTRY)
async def trivial(x: int) -> int:
    return x


@graph_fn("load-big", registry=REGISTRY)
async def big(items: int) -> list[dict[str, Any]]:
    return [{"k": i, "v": "x" * 80} for i in range(items)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def folder_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class StallMeter:
    """Times the store's synchronous steps on the loop thread (the longest is the worst
    stall the store causes)."""

    def __init__(self, manager: RunManager) -> None:
        self.worst = 0.0
        self.where = ""
        store = manager.store
        engine = store.workspace.engine  # type: ignore[attr-defined]
        self._wrap(store, "_queue_change")
        self._wrap(engine, "_commit_inline")

    def _wrap(self, obj: Any, name: str) -> None:
        real = getattr(obj, name)
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = clock()
            try:
                return real(*args, **kwargs)
            finally:
                took = clock() - started
                if took > self.worst:
                    self.worst, self.where = took, name

        setattr(obj, name, timed)


async def load(runs: int, batch: int, folder: Path) -> dict[str, Any]:
    manager = RunManager(registry=REGISTRY, max_concurrency=max(8, batch),
                         **workspace_runtime(folder))
    meter = StallMeter(manager)
    engine = manager.store.workspace.engine  # type: ignore[attr-defined]
    wal = folder / "ag.sqlite3-wal"
    gc.collect()
    rss0 = rss_bytes()
    blocks: list[float] = []
    peak_wal = 0
    done = 0
    block_start = time.perf_counter()
    try:
        while done < runs:
            ids = [
                (await manager.submit_run("load-trivial", inputs={"x": done + i})).run_id
                for i in range(min(batch, runs - done))
            ]
            for run_id in ids:
                await manager.wait_run(run_id)
            before = done
            done += len(ids)
            if done // 500 != before // 500:
                try:
                    peak_wal = max(peak_wal, wal.stat().st_size)
                except OSError:
                    pass
            if done // 10_000 != before // 10_000 or done == runs:
                now = time.perf_counter()
                size = (done - 1) % 10_000 + 1
                blocks.append(size / (now - block_start))
                block_start = now
        await manager.store.flush()
        gc.collect()
        rss1 = rss_bytes()
        await asyncio.sleep(0.5)  # let the writer fold the journal while idle
        disk = folder_bytes(folder)
        result = {
            "blocks": blocks,
            "rss_per_run": (rss1 - rss0) / runs,
            "disk_per_run": disk / runs,
            "peak_wal": max(peak_wal, engine.peak_wal_bytes),
            "stall_s": meter.worst,
            "stall_where": meter.where,
            "inline": engine.inline_commits,
            "thread": engine.thread_commits,
        }
    finally:
        await manager.close()
    return result


async def big_output(megabytes: int, folder: Path) -> dict[str, float]:
    manager = RunManager(registry=REGISTRY, **workspace_runtime(folder))
    meter = StallMeter(manager)
    items = megabytes * 1_000_000 // 100  # ~100 bytes of JSON per item
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last - 0.001)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.05)
        # Time from the body's return to the durable record: the body itself builds the
        # list on the loop, so the gap measured is that of the store's part.
        started = time.perf_counter()
        record = await manager.submit_run("load-big", inputs={"items": items})
        await manager.wait_run(record.run_id)
        elapsed = time.perf_counter() - started
        gaps.clear()
        stop_at = time.perf_counter()
        # A second read of the stored outputs from the workspace (not the cache).
        manager.store.outputs_cache.discard(record.run_id)  # type: ignore[attr-defined]
        read_started = time.perf_counter()
        outputs = await manager.store.get_outputs(record.run_id)
        read_s = time.perf_counter() - read_started
        assert outputs is not None and len(outputs["result"]) == items
        read_gap = max(gaps) if gaps else 0.0
        del stop_at
    finally:
        stop = True
        await tick
        await manager.close()
    return {"mb": megabytes, "finish_s": elapsed, "store_step_s": meter.worst,
            "read_s": read_s, "read_gap_s": read_gap}


async def big_output_gaps(megabytes: int, folder: Path) -> float:
    """The worst ticker gap while a run's ``megabytes`` MB output is stored (the body's
    own list building excluded: the output is built before the run starts)."""
    payload = [{"k": i, "v": "x" * 80} for i in range(megabytes * 1_000_000 // 100)]
    registry = GraphRegistry()

    @graph_fn("give", registry=registry)
    async def give() -> Any:
        return payload

    manager = RunManager(registry=registry, **workspace_runtime(folder))
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last - 0.001)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.05)
        gaps.clear()
        await manager.run_and_wait("give", inputs={})
        await asyncio.sleep(0.05)
    finally:
        stop = True
        await tick
        await manager.close()
    return max(gaps)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--big", default="1,10,100", help="output sizes in MB ('' for none)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ag-store-load-"))
    result = asyncio.run(load(args.runs, args.batch, scratch / "load"))
    blocks = result["blocks"]
    print(f"{args.runs} runs, batches of {args.batch}")
    print("runs/s per 10k: " + ", ".join(f"{b:.0f}" for b in blocks))
    print(f"runs/s median {statistics.median(blocks):.0f}, min {min(blocks):.0f}")
    print(f"RSS retained per run: {result['rss_per_run']:.0f} B")
    print(f"bytes on disk per run: {result['disk_per_run']:.0f} B")
    wal_ok = result["peak_wal"] < WAL_TARGET
    print(f"peak WAL: {result['peak_wal'] / 2**20:.1f} MiB "
          f"({'<' if wal_ok else '>='} 64 MiB target)")
    stall_ok = result["stall_s"] < STALL_TARGET_S
    print(f"worst store step on the loop: {result['stall_s'] * 1000:.2f} ms "
          f"({result['stall_where']}; {'<' if stall_ok else '>='} 2 ms target)")
    print(f"commits: {result['inline']} inline, {result['thread']} in the writer thread")
    for mb in [int(x) for x in args.big.split(",") if x.strip()]:
        gap = asyncio.run(big_output_gaps(mb, scratch / f"big{mb}"))
        stall_ok = stall_ok and gap < STALL_TARGET_S
        print(f"{mb:>4} MB output: worst loop gap {gap * 1000:.2f} ms while it is stored")
    return 0 if wal_ok and stall_ok else 1


if __name__ == "__main__":
    sys.exit(main())
