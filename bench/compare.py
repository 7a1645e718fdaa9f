"""Run-manager overhead side by side: plain asyncio, ag_jupyter and AetherGraph (issue 6).

Runs the same workloads (``bench/_workloads.py``) on four sides, on the same machine in
one invocation:

- ``asyncio``: plain ``asyncio.create_task`` + ``await`` of the same graph body (the floor);
- ``memory``: ag_jupyter's RunManager with the in-memory run store;
- ``sqlite``: ag_jupyter's RunManager on a durable workspace (SQLite store) in a fresh
  temporary folder;
- ``aethergraph``: ``aethergraph==0.1.0a15`` from PyPI, installed by ``--setup`` into its own
  virtual environment (``bench/.venv-aethergraph``) and driven by ``bench/aethergraph_side.py``
  in a subprocess; the project never depends on it.

Every side runs in a fresh worker process per repetition (the runtime sides through
``open_session()`` and ``context.runner()``, the seed API both runtimes share), warms up,
times each workload once and reports JSON back. Repetitions are interleaved (asyncio,
memory, sqlite, aethergraph, asyncio, ...) so machine noise hits every side alike; each
figure in the table is the median over the repetitions. Every run's outputs are read back
and checked (``{"y": x + 1}``). AetherGraph costs tens of milliseconds per run, so its side
runs fewer runs per workload (the table states N per side) and figures are per run.

``bench/run_overhead.py`` (runtime vs asyncio, with a ``--check`` gate) and
``bench/store_overhead.py`` (SQLite vs in-memory store) stay the focused benches; this one
is the cross-runtime comparison users read when choosing a run manager.

Usage::

    .venv/bin/python bench/compare.py --setup   # once: create bench/.venv-aethergraph
    .venv/bin/python bench/compare.py           # full bench (~10 min), writes bench/RESULTS.md
    .venv/bin/python bench/compare.py --quick   # ~1-2 min, prints the table only

Targets (reported, not tuned for): durable ag_jupyter at least 100x faster per trivial run
than aethergraph 0.1.0a15; cancel latency under 10 ms; ``open_session`` enter+exit under 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import _workloads as wl  # noqa: E402

AETHERGRAPH_VERSION = "0.1.0a15"
AETHERGRAPH_VENV = BENCH_DIR / ".venv-aethergraph"
AETHERGRAPH_SCRIPT = BENCH_DIR / "aethergraph_side.py"
#: AetherGraph rejects (HTTP 429) a run beyond this many at once instead of queueing it;
#: its default is 8, which the nested workload (a parent and 10 children) can exceed.
AETHERGRAPH_MAX_CONCURRENT_RUNS = 64
RESULTS_MD = BENCH_DIR / "RESULTS.md"
WORKER_TIMEOUT_S = 900

SIDES = ("asyncio", "memory", "sqlite", "aethergraph")
LABELS = {
    "asyncio": "plain asyncio",
    "memory": "ag_jupyter in-memory",
    "sqlite": "ag_jupyter SQLite",
    "aethergraph": f"aethergraph {AETHERGRAPH_VERSION}",
}

#: Runs that replace the contents of ag_jupyter's bounded in-memory caches (the RunManager
#: keeps its last 10,000 finished records; the SQLite store caches 256) before tracemalloc
#: measures, so a record evicted during the measurement counts as freed.
RECENT_RECORDS = 10_000

TARGET_SPEEDUP = 100.0
#: The per-trivial-run rows the speed-up target is checked on.
TRIVIAL_ROWS = ("seq_small", "seq_large", "batch_small", "batch_large", "run_and_wait")
TARGET_CANCEL_MS = 10.0
TARGET_SESSION_MS = 5.0


@dataclass(frozen=True)
class Profile:
    """How much to run: repetitions, workload sizes per side, cancel time-out."""

    reps: int
    runtime_sizes: dict[str, int]  # plain asyncio and both ag_jupyter sides
    aethergraph_sizes: dict[str, int]
    cancel_timeout_s: float = 1.0

    def sizes(self, side: str) -> dict[str, int]:
        """The workload sizes of ``side``."""
        return self.aethergraph_sizes if side == "aethergraph" else self.runtime_sizes


PROFILES = {
    "full": Profile(
        reps=5,
        runtime_sizes={
            "warmup": 500, "seq_small": 1_000, "seq_large": 10_000, "batch_small": 1_000,
            "batch_large": 10_000, "run_and_wait": 10_000, "nested_parents": 1_000,
            "cancel_samples": 200, "session_samples": 1_000, "memory_runs": 10_000,
            "memory_turnover": RECENT_RECORDS, "floor_samples": 2_000,
        },
        aethergraph_sizes={
            "warmup": 40, "seq_small": 100, "seq_large": 400, "batch_small": 96,
            "batch_large": 400, "run_and_wait": 200, "nested_parents": 20,
            "cancel_samples": 3, "session_samples": 200, "memory_runs": 200,
            "memory_turnover": 200, "floor_samples": 0,
        },
    ),
    "quick": Profile(
        reps=3,
        runtime_sizes={
            "warmup": 200, "seq_small": 1_000, "seq_large": 3_000, "batch_small": 1_000,
            "batch_large": 3_000, "run_and_wait": 3_000, "nested_parents": 200,
            "cancel_samples": 50, "session_samples": 300, "memory_runs": 3_000,
            "memory_turnover": RECENT_RECORDS, "floor_samples": 1_000,
        },
        aethergraph_sizes={
            "warmup": 20, "seq_small": 30, "seq_large": 60, "batch_small": 32,
            "batch_large": 64, "run_and_wait": 40, "nested_parents": 5,
            "cancel_samples": 1, "session_samples": 50, "memory_runs": 50,
            "memory_turnover": 50, "floor_samples": 0,
        },
    ),
}


# ============================================================== worker (one side)
def durable_manager(folder: Path) -> Any:
    """A RunManager on a new durable workspace in ``folder``: SQLite run store plus the
    workspace's kv/memory/artifacts services, as a kernel with a workspace gets."""
    from ag_jupyter.runtime import RunManager
    from ag_jupyter.runtime.defaults import workspace_runtime

    return RunManager(**workspace_runtime(folder))


def in_memory_manager() -> Any:
    """A RunManager with the in-memory run store."""
    from ag_jupyter.runtime import RunManager
    from ag_jupyter.runtime.store.run_store import InMemoryRunStore

    return RunManager(store=InMemoryRunStore())


async def _ag_status(context: Any, run_id: str) -> Any:
    """The status of ``run_id`` as ag_jupyter's manager has it."""
    return (await context.manager.get_record(run_id)).status


async def worker(side_name: str, sizes: dict[str, int], cancel_timeout_s: float) -> dict[str, Any]:
    """One repetition of every workload on ``asyncio``, ``memory`` or ``sqlite``.

    The ag_jupyter sides install their manager as the loop's default
    (``set_run_manager_factory``), so the plain ``open_session()`` users write is what is
    timed, and the first one (cold) includes building the manager (and, for ``sqlite``,
    opening the workspace).
    """
    if side_name == "asyncio":
        return await wl.run_plain(sizes)
    from ag_jupyter.runtime import (
        get_run_manager,
        graph_fn,
        open_session,
        set_run_manager_factory,
    )

    graph_fn(wl.PLUS_ONE, inputs=["x"], outputs=["y"])(wl.plus_one)
    graph_fn(wl.SLEEPER, inputs=["x"], outputs=["y"])(wl.sleeper)
    graph_fn(wl.PARENT, inputs=["x"], outputs=["total"])(wl.parent)
    folder: Path | None = None
    factory: Callable[[], Any]
    if side_name == "memory":
        factory = in_memory_manager
    elif side_name == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="ag-bench-compare-"))
        factory = partial(durable_manager, folder)
    else:
        raise ValueError(f"unknown side {side_name!r}; expected one of {', '.join(SIDES)}")
    set_run_manager_factory(factory)

    async def close() -> None:
        await get_run_manager().close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    side = wl.Side(side_name, open_session, _ag_status, close)
    return await wl.run_runtime(side, sizes, cancel_timeout_s)


def ag_versions() -> dict[str, str]:
    """Versions of the interpreter and the packages the ag_jupyter sides run on."""
    return {
        "python": platform.python_version(),
        "ag_jupyter": importlib.metadata.version("ag-jupyter"),
        "pydantic": importlib.metadata.version("pydantic"),
        "sqlite": sqlite3.sqlite_version,
    }


# ============================================================== setup
def aethergraph_python() -> Path:
    """The interpreter of the AetherGraph virtual environment."""
    return AETHERGRAPH_VENV / "bin" / "python"


def installed_aethergraph() -> str | None:
    """The aethergraph version installed in the bench venv, or None."""
    python = aethergraph_python()
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('aethergraph'))"],
        capture_output=True, text=True, check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def setup() -> int:
    """Create ``bench/.venv-aethergraph`` and pip install aethergraph there (idempotent)."""
    version = installed_aethergraph()
    if version == AETHERGRAPH_VERSION:
        print(f"{AETHERGRAPH_VENV} already has aethergraph {version}")
        return 0
    if not aethergraph_python().exists():
        print(f"creating {AETHERGRAPH_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(AETHERGRAPH_VENV)], check=True)
    print(f"installing aethergraph=={AETHERGRAPH_VERSION} (pip, from PyPI)")
    subprocess.run(
        [str(aethergraph_python()), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", f"aethergraph=={AETHERGRAPH_VERSION}"],
        check=True,
    )
    version = installed_aethergraph()
    if version != AETHERGRAPH_VERSION:
        print(f"setup failed: the venv has aethergraph {version}", file=sys.stderr)
        return 1
    print(f"ready: {aethergraph_python()} has aethergraph {version}")
    return 0


# ============================================================== orchestrator
def run_worker(side: str, profile: Profile, scratch: Path) -> dict[str, Any]:
    """Run one repetition of ``side`` in a fresh subprocess; return its JSON result.

    Raises:
      RuntimeError: if the worker fails (its output tail is in the message).
    """
    out = scratch / f"{side}.json"
    sizes = json.dumps(profile.sizes(side))
    env = dict(os.environ)
    if side == "aethergraph":
        workspace = scratch / "aethergraph_workspace"
        cmd = [str(aethergraph_python()), str(AETHERGRAPH_SCRIPT), "--sizes", sizes,
               "--cancel-timeout", str(profile.cancel_timeout_s), "--out", str(out)]
        env["AETHERGRAPH_WORKSPACE"] = str(workspace)
        env["AETHERGRAPH_RATE_LIMIT__MAX_CONCURRENT_RUNS"] = str(AETHERGRAPH_MAX_CONCURRENT_RUNS)
        env.pop("PYTHONPATH", None)  # nothing of the project's environment leaks in
        cwd = scratch  # AetherGraph reads .env from its working directory
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
               "--sizes", sizes, "--cancel-timeout", str(profile.cancel_timeout_s),
               "--out", str(out)]
        cwd = ROOT
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"{side} worker failed (exit {proc.returncode}):\n{tail}")
    return json.loads(out.read_text())


@dataclass
class Results:
    """Per-side lists of per-repetition results, and what is needed to report them."""

    profile: Profile
    sides: tuple[str, ...]
    reps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    wall_s: float = 0.0
    revision: str = "unknown"  # of the checkout when the run started (and ended, if changed)

    def values(self, side: str, *path: str) -> list[float]:
        """The value at ``path`` (e.g. ``"us", "seq_large"``) of each repetition of ``side``
        that has one."""
        found = []
        for rep in self.reps.get(side, []):
            value: Any = rep
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                found.append(float(value))
        return found

    def median(self, side: str, *path: str) -> float | None:
        """Median over repetitions of the value at ``path``; None if no repetition has it."""
        found = self.values(side, *path)
        return statistics.median(found) if found else None

    def first(self, side: str, *path: str) -> Any:
        """The value at ``path`` in the first repetition of ``side`` (None if absent)."""
        value: Any = (self.reps.get(side) or [None])[0]
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value


def run_all(profile: Profile, sides: tuple[str, ...]) -> Results:
    """Run ``profile.reps`` interleaved repetitions of every side."""
    results = Results(profile, sides, {side: [] for side in sides})
    revision = git_revision()
    started = time.perf_counter()
    for rep in range(profile.reps):
        with tempfile.TemporaryDirectory(prefix="ag-compare-") as tmp:
            for side in sides:
                scratch = Path(tmp) / side
                scratch.mkdir()
                t0 = time.perf_counter()
                results.reps[side].append(run_worker(side, profile, scratch))
                print(f"rep {rep + 1}/{profile.reps} {side:<12} {time.perf_counter() - t0:6.1f} s",
                      file=sys.stderr, flush=True)
    results.wall_s = time.perf_counter() - started
    at_end = git_revision()
    results.revision = revision if at_end == revision else f"{revision} (at the end: {at_end})"
    return results


# ============================================================== report
@dataclass(frozen=True)
class Row:
    """A table row: where its value lives in a worker result, its label and unit."""

    path: tuple[str, ...]
    label: str
    unit: str
    size_key: str | None = None


ROWS = (
    Row(("us", "seq_small"), "sequential spawn_run + wait_run (small N)", "µs/run", "seq_small"),
    Row(("us", "seq_large"), "sequential spawn_run + wait_run (large N)", "µs/run", "seq_large"),
    Row(("us", "batch_small"), "batches of 8: spawn 8, wait 8 (small N)", "µs/run",
        "batch_small"),
    Row(("us", "batch_large"), "batches of 8: spawn 8, wait 8 (large N)", "µs/run",
        "batch_large"),
    Row(("us", "run_and_wait"), "sequential run_and_wait", "µs/run", "run_and_wait"),
    Row(("us", "nested_parents"), "nested: parent spawns + waits 10 children", "µs/parent",
        "nested_parents"),
    Row(("cancel", "latency_ms"), "cancel latency: cancel_run → record canceled", "ms",
        "cancel_samples"),
    Row(("cancel", "cancel_call_ms"), "cancel_run() call returns", "ms", "cancel_samples"),
    Row(("us", "session"), "open_session() enter + exit (warm)", "µs", "session_samples"),
    Row(("session_cold_ms",), "first open_session() in a fresh process (cold)", "ms"),
    Row(("memory", "traced_bytes_per_run"), "memory per finished run (tracemalloc)", "bytes",
        "memory_runs"),
    Row(("memory", "rss_bytes_per_run"), "memory per finished run (RSS growth)", "bytes",
        "memory_runs"),
)


def fmt(value: float | None) -> str:
    """A figure with sensible precision (thousands separators above 1000)."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    """``num / den`` as ``12.3×`` (blank when either is missing or ``den`` is not > 0)."""
    if num is None or den is None or den <= 0:
        return ""
    ratio = num / den
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    return f"{ratio:.1f}×" if ratio >= 1 else f"{ratio:.2g}×"


def na_reason(results: Results, side: str, row: Row) -> str:
    """The cell of a side without a figure for ``row``, with its footnote mark."""
    if side not in results.reps:
        return "not run"
    if side == "asyncio" and row.path[0] in ("memory", "session_cold_ms", "us", "cancel"):
        return "n/a¹"  # the only rows plain asyncio lacks: memory, sessions, cancel_call_ms
    if side == "aethergraph" and row.path == ("cancel", "latency_ms"):
        return "n/a²"
    return "n/a"


def sizes_cell(results: Results, row: Row) -> str:
    """The N of ``row`` per side: ``runtime sides / aethergraph``."""
    if row.size_key is None:
        return "1 per rep"
    runtime = results.profile.runtime_sizes[row.size_key]
    text = f"{runtime:,}"
    if "aethergraph" in results.sides:
        text += f" / {results.profile.aethergraph_sizes[row.size_key]:,}"
    return text


def table(results: Results) -> list[str]:
    """The markdown result table: medians per side and the ratios."""
    header = ["workload", "unit", "N (asyncio & ag_jupyter / aethergraph)"]
    header += [LABELS[s] for s in SIDES]
    header += ["in-memory ÷ asyncio", "SQLite ÷ asyncio", "aethergraph ÷ in-memory",
               "aethergraph ÷ SQLite"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in ROWS:
        med = {side: results.median(side, *row.path) for side in SIDES}
        cells = [row.label, row.unit, sizes_cell(results, row)]
        cells += [fmt(med[s]) if med[s] is not None else na_reason(results, s, row)
                  for s in SIDES]
        cells += [
            fmt_ratio(med["memory"], med["asyncio"]),
            fmt_ratio(med["sqlite"], med["asyncio"]),
            fmt_ratio(med["aethergraph"], med["memory"]),
            fmt_ratio(med["aethergraph"], med["sqlite"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def targets(results: Results) -> list[tuple[str, bool | None, str]]:
    """``(target, met, detail)`` for each target; ``met`` is None when not measurable."""
    out: list[tuple[str, bool | None, str]] = []
    name = "durable ag_jupyter ≥ 100× faster per trivial run than aethergraph (every row)"
    ratios = {}
    for key in TRIVIAL_ROWS:
        aeth, sqlite = results.median("aethergraph", "us", key), results.median("sqlite", "us", key)
        if aeth is not None and sqlite:
            ratios[key] = aeth / sqlite
    if not ratios:
        out.append((name, None, "the aethergraph or SQLite side did not run"))
    else:
        missed = [key for key, ratio in ratios.items() if ratio < TARGET_SPEEDUP]
        detail = ", ".join(f"{key} {ratio:,.0f}×" for key, ratio in ratios.items())
        if missed:
            detail += f"; below 100× on {', '.join(missed)}"
        out.append((name, not missed and len(ratios) == len(TRIVIAL_ROWS), detail))
    for name, path, limit, unit, scale in (
        ("cancel latency < 10 ms", ("cancel", "latency_ms"), TARGET_CANCEL_MS, "ms", 1.0),
        ("open_session enter+exit < 5 ms", ("us", "session"), TARGET_SESSION_MS, "ms", 1e-3),
    ):
        parts, met = [], True
        for side in ("memory", "sqlite"):
            value = results.median(side, *path)
            if value is None:
                met = False
                parts.append(f"{LABELS[side]}: not measured")
                continue
            value *= scale
            met = met and value < limit
            parts.append(f"{LABELS[side]} {value:.3f} {unit}")
        out.append((name, met, "; ".join(parts)))
    return out


def floor_section(results: Results) -> list[str]:
    """What bounds the durable path here: a terminal record is committed before
    ``wait_run`` returns it and SQLite runs in a worker thread, so a sequential durable run
    costs at least the in-memory run plus one loop → thread → loop hop plus one commit."""
    hop_idle = results.median("asyncio", "floor", "hop_us")
    hop = results.median("asyncio", "floor", "hop_busy_us")
    commit = results.median("asyncio", "floor", "commit_us")
    if hop is None or hop_idle is None or commit is None:
        return []
    cross = results.median("asyncio", "floor", "ping_pong_cross_cpu_us")
    same = results.median("asyncio", "floor", "ping_pong_same_cpu_us")
    lines = [
        "## What bounds the durable path on this machine",
        "",
        "A terminal record is on disk before `wait_run` returns it, and SQLite is used from "
        "a worker thread so that the event loop never blocks on it. A sequential durable run "
        "therefore costs at least the in-memory run, plus one hand-off from the loop to a "
        "sleeping thread and back, plus one commit. Measured in the plain-asyncio worker, "
        "same run (medians):",
        "",
        f"- loop → thread → loop hand-off (lock release, `call_soon_threadsafe`): "
        f"**{hop_idle:.1f} µs** back to back; **{hop:.1f} µs** when the loop has computed "
        f"for {wl.FLOOR_BUSY_US:.0f} µs before each one, as a run manager does between two "
        "commits (the floor below uses this one)",
        f"- one SQLite transaction on the calling thread (WAL, `synchronous=NORMAL`, one row):"
        f" **{commit:.1f} µs**",
    ]
    if cross is not None and same is not None:
        lines.append(
            f"- thread ping-pong over pipes, threads on two CPUs: **{cross:.1f} µs** per round "
            f"trip; both on one CPU: **{same:.1f} µs**. Waking a thread on another (idle) "
            "CPU is what makes the hand-off expensive here."
        )
    lines += [
        "",
        "| workload | ag_jupyter in-memory | + hand-off + commit = floor | ag_jupyter SQLite "
        "(measured) | aethergraph | aethergraph ÷ floor (best possible) |",
        "|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        key = row.path[-1]
        if key not in ("seq_small", "seq_large", "run_and_wait"):
            continue
        memory = results.median("memory", *row.path)
        sqlite = results.median("sqlite", *row.path)
        aeth = results.median("aethergraph", *row.path)
        if memory is None:
            continue
        floor = memory + hop + commit
        lines.append(
            f"| {row.label} | {fmt(memory)} | {fmt(floor)} | {fmt(sqlite)} | {fmt(aeth)} | "
            f"{fmt_ratio(aeth, floor)} |"
        )
    return [*lines, ""]


def machine() -> list[str]:
    """Lines describing the machine and software the figures come from."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return [
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({affinity} usable by this process)",
        f"- OS: {platform.platform()}",
        f"- Python {platform.python_version()} ({sys.executable})",
    ]


def git_revision() -> str:
    """``<short hash>`` of the checkout, noting uncommitted changes to the runtime (the only
    part of ag_jupyter the bench runs)."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "ag_jupyter/runtime"], cwd=ROOT,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" + uncommitted changes in ag_jupyter/runtime/" if dirty else "")


def report(results: Results, command: str) -> str:
    """The full markdown report (RESULTS.md)."""
    p = results.profile
    ag_versions_ = results.first("memory", "versions") or results.first("sqlite", "versions") or {}
    ae_versions = results.first("aethergraph", "versions") or {}
    ae_settings = results.first("aethergraph", "settings") or {}
    cancel_ae = results.reps.get("aethergraph", [])
    lines = [
        "# Run-manager overhead: plain asyncio vs ag_jupyter vs AetherGraph",
        "",
        f"Measured {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} by "
        f"`bench/compare.py` in one invocation ({results.wall_s / 60:.1f} min), "
        f"{p.reps} repetitions per side, interleaved; every figure is the median of the "
        "repetitions (each repetition a fresh worker process, warm-up excluded).",
        "",
        "Reproduce (from the repository root):",
        "",
        "```sh",
        ".venv/bin/python bench/compare.py --setup   # once: bench/.venv-aethergraph",
        command,
        "```",
        "",
        "## Machine",
        "",
        *machine(),
        f"- ag_jupyter {ag_versions_.get('ag_jupyter', '?')} at git {results.revision}; "
        f"pydantic {ag_versions_.get('pydantic', '?')}; SQLite {ag_versions_.get('sqlite', '?')}",
        f"- aethergraph {ae_versions.get('aethergraph', 'not run')} in bench/.venv-aethergraph "
        f"(Python {ae_versions.get('python', '?')}, pydantic {ae_versions.get('pydantic', '?')}, "
        f"SQLite {ae_versions.get('sqlite', '?')}); run store {ae_settings.get('run_store', '?')},"
        f" result store {ae_settings.get('result_store', '?')}, max_concurrent_runs "
        f"{ae_settings.get('max_concurrent_runs', '?')}",
        "",
        "## Results",
        "",
        "Per-run figures (µs) are wall time of the whole workload divided by its runs; "
        "\"÷\" columns are ratios of the medians (aethergraph ÷ X: how many times the time, "
        "or memory, aethergraph takes).",
        "",
        *table(results),
        "",
        "¹ plain asyncio has no session, no cancel API beyond `task.cancel()` (its cancel "
        "latency is `task.cancel()` → task done) and keeps no run records.",
    ]
    cancels = [rep.get("cancel", {}) for rep in cancel_ae]
    if cancels and not any(c.get("canceled") for c in cancels):
        statuses = sorted({str(c.get("status_after_timeout")) for c in cancels})
        lines.append(
            f"² aethergraph never reached `canceled`: in all {len(cancels)} repetitions the "
            f"first sample was still `{'`/`'.join(statuses)}` "
            f"{cancels[0].get('timeout_s', '?')} s after `cancel_run`, and the workload stops "
            "there (so the `cancel_run() call returns` figure is from that one sample). In "
            "0.1.0a15 cancelling a `graph_fn` run only sets a cooperative flag "
            "(`runner().is_cancel_requested()`); a body awaiting `asyncio.sleep(60)` is not "
            "interrupted and the run later ends `succeeded` (checked by hand with a 3 s "
            "sleep). `@graphify` graphs are no different here: `ForwardScheduler.terminate()` "
            "lets running nodes complete."
        )
    lines += ["", "## Targets", ""]
    for name, met, detail in targets(results):
        state = "not measured" if met is None else ("**met**" if met else "**not met**")
        lines.append(f"- {name}: {state} ({detail})")
    lines += ["", *floor_section(results)]
    lines += [
        "## Method and caveats",
        "",
        "- Same graph body everywhere: `async def plus_one(x) -> x + 1`, registered as "
        "`graph_fn(\"bench-plus-one\", inputs=[\"x\"], outputs=[\"y\"])`; every run's outputs "
        "are read back (`wait_run(..., return_outputs=True)` or the outputs of "
        "`run_and_wait`) and checked against `{\"y\": x + 1}` on every side.",
        "- The runtime workloads are one piece of code (`bench/_workloads.py`) run on both "
        "runtimes through `open_session()` and `context.runner()`; plain asyncio runs the "
        "same body with `create_task` + `await`. Nested: a parent graph spawns 10 children "
        "with `runner().spawn_run`, waits for each and returns the sum of their outputs.",
        "- ag_jupyter sides install their RunManager as the loop's default "
        "(`set_run_manager_factory`), so the cold `open_session()` includes creating the "
        "manager (and opening the SQLite workspace). Durable side: a fresh temporary "
        "workspace per repetition, built with `RunManager(**workspace_runtime(folder))`.",
        "- AetherGraph is driven as a library, no server (`start_server` is only needed for "
        "channels and resumable waits): `open_session()` builds its default service "
        "container on first use, and its RunManager keeps run records and results in SQLite "
        "files under `AETHERGRAPH_WORKSPACE` (a fresh temporary folder per repetition; the "
        "worker also runs there, since AetherGraph loads `.env` from its working directory). "
        f"`AETHERGRAPH_RATE_LIMIT__MAX_CONCURRENT_RUNS={AETHERGRAPH_MAX_CONCURRENT_RUNS}`: with "
        "the default 8 a run beyond the limit is rejected (HTTP 429 error) rather than "
        "queued, which the nested workload can hit. AetherGraph validates the source of the "
        "module a graph function is defined in, so `bench/aethergraph_side.py` registers "
        "one-line decorated wrappers that await the shared bodies.",
        "- AetherGraph runs fewer runs per workload (the N column: ag_jupyter and asyncio / "
        "aethergraph) to keep the bench short; figures are per run or per parent.",
        "- Memory per finished run is the steady-state growth over N more sequential runs "
        "on the warm runtime (earlier runs' records still held wherever the runtime keeps "
        "them), divided by N. RSS growth counts everything (SQLite's C-level caches too) but "
        "moves in allocator-arena steps and hides reuse of memory freed earlier, so it is "
        "coarse, small-N figures most. tracemalloc counts Python allocations exactly (not C "
        "libraries' own); before it measures, a turnover pass (ag_jupyter: "
        f"{RECENT_RECORDS:,} runs, the size of the RunManager's recent-records list; "
        "aethergraph: N runs) replaces what bounded caches hold, so evictions count as "
        "frees. The in-memory store keeps every record and its outputs; the SQLite store "
        "keeps them on disk plus a bounded cache.",
        "- The machine is shared and noisy; compare the ratios more than the absolute "
        "figures, and the spread below.",
        "",
        "<details><summary>Every repetition (same units as the table)</summary>",
        "",
        "| workload | " + " | ".join(LABELS[s] for s in results.sides) + " |",
        "|" + "---|" * (len(results.sides) + 1),
    ]
    for row in ROWS:
        cells = [", ".join(fmt(v) for v in results.values(side, *row.path)) or "n/a"
                 for side in results.sides]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


# ============================================================== the durable store
def store_section(quick: bool) -> list[str]:
    """Run the durable store's own benches (``run_overhead.py``: durable ÷ in-memory and
    the two-commit floor; ``store_load.py``: 100k runs, WAL, loop stalls with outputs up to
    100 MB) in subprocesses and return their tables as markdown."""
    benches = [
        ("run_overhead.py",
         ["--n", "1000" if quick else "5000", "--repeat", "3" if quick else "5"]),
        ("store_load.py", ["--runs", "10000" if quick else "100000",
                           "--big", "1" if quick else "1,10,100"]),
    ]
    lines = [
        "## The durable store",
        "",
        "Run in the same invocation. `run_overhead.py`: sequential `spawn_run` + `wait_run`, "
        "interleaved passes, durable ÷ in-memory against the two-commit floor (the in-memory "
        "store plus exactly the two journal commits a durable run needs, inline). "
        "`store_load.py`: runs/s per 10k runs, memory and disk per run, peak WAL, and the "
        "store's steps on the loop thread (wall and CPU time), then the loop gaps (p99 and "
        "worst) while a run's large output is stored, beside two baselines over the same "
        "time: the idle loop, and the loop beside a thread doing pure-Python work that gives "
        "the GIL away as often as the store's encoder (the floor for any work in a thread).",
        "",
    ]
    for script, args in benches:
        done = subprocess.run(
            [sys.executable, str(BENCH_DIR / script), *args],
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
        )
        out = done.stdout.strip() or done.stderr.strip()[-2000:]
        lines += [f"`bench/{script} {' '.join(args)}`:", "", "```", out, "```", ""]
    return lines


# ============================================================== CLI
def cli(argv: list[str] | None = None) -> int:
    """Parse arguments; set up, run a worker, or run the whole comparison."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setup", action="store_true",
                        help=f"create {AETHERGRAPH_VENV.name} with aethergraph=="
                             f"{AETHERGRAPH_VERSION}, then exit")
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    parser.add_argument("--reps", type=int, help="repetitions (default: 5, --quick: 3)")
    parser.add_argument("--no-store", action="store_true",
                        help="leave out the durable store's benches (run_overhead, store_load)")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated subset of {','.join(SIDES)}")
    parser.add_argument("--out", type=Path,
                        help="write the markdown report here (default: bench/RESULTS.md for a "
                             "full run; a --quick run only prints)")
    parser.add_argument("--worker", choices=SIDES[:3], help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--cancel-timeout", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        result = asyncio.run(worker(args.worker, json.loads(args.sizes), args.cancel_timeout))
        result["versions"] = ag_versions()
        Path(args.out).write_text(json.dumps(result))
        return 0
    if args.setup:
        return setup()

    sides = tuple(s.strip() for s in args.sides.split(",") if s.strip())
    unknown = [s for s in sides if s not in SIDES]
    if unknown or not sides:
        parser.error(f"--sides: unknown {unknown}; choose from {', '.join(SIDES)}")
    if "aethergraph" in sides and installed_aethergraph() != AETHERGRAPH_VERSION:
        parser.error(f"aethergraph {AETHERGRAPH_VERSION} is not installed in {AETHERGRAPH_VENV}; "
                     "run `.venv/bin/python bench/compare.py --setup` first, or leave it out "
                     "with --sides asyncio,memory,sqlite")
    profile = PROFILES["quick" if args.quick else "full"]
    if args.reps is not None:
        if args.reps <= 0:
            parser.error("--reps must be positive")
        profile = Profile(args.reps, profile.runtime_sizes, profile.aethergraph_sizes,
                          profile.cancel_timeout_s)
    results = run_all(profile, sides)
    command = " ".join([".venv/bin/python", "bench/compare.py", *(argv or sys.argv[1:])])
    text = report(results, command)
    if not args.no_store:
        text = text.rstrip("\n") + "\n\n" + "\n".join(store_section(args.quick)) + "\n"
    print(text)
    out = args.out if args.out is not None else (None if args.quick else RESULTS_MD)
    if out is not None:
        out.write_text(text)
        print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
