"""A process killed (SIGKILL) in the middle of runs and writes loses nothing it committed.

A child Python process writes runs (finished ones with outputs, live ones sleeping), kv,
memory and artifacts, then keeps writing; the test kills it, reopens the workspace and
checks what is there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import RunStatus
from ag_jupyter.runtime.defaults import open_workspace
from ag_jupyter.runtime.store.sqlite_store import INTERRUPTED_ERROR, SqliteRunStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")

REPO = Path(__file__).resolve().parent.parent

CHILD = """
    import asyncio, json, sys, time
    from ag_jupyter.runtime import GraphRegistry, RunManager, graph_fn
    from ag_jupyter.runtime.defaults import workspace_runtime

    registry = GraphRegistry()

    @graph_fn("quick", registry=registry)
    async def quick(i: int) -> dict:
        return {"i": i, "square": i * i, "pair": (i, -i), "tags": {"set-is-not-json"}}

    @graph_fn("sleeper", registry=registry)
    async def sleeper(context) -> None:
        await context.kv().set("sleeper-started", True)
        await asyncio.sleep(600)

    @graph_fn("sync_sleeper", registry=registry)
    def sync_sleeper() -> None:
        time.sleep(600)

    async def main():
        manager = RunManager(registry=registry, max_concurrency=6,
                             **workspace_runtime(sys.argv[1]))
        finished = []
        for i in range(20):
            record = await manager.submit_run("quick", inputs={"i": i}, session_id="crash")
            await manager.wait_run(record.run_id)
            finished.append(record.run_id)
        ctx_kv = manager.services.get("kv", type("Ctx", (), {"session_id": "crash",
                                                             "run_id": "x"})())
        await ctx_kv.global_scope().set("before-kill", {"finished": len(finished)})
        live = []
        for _ in range(4):
            live.append((await manager.submit_run("sleeper", inputs={})).run_id)
        for _ in range(4):  # 6 slots: two of these stay pending
            live.append((await manager.submit_run("sync_sleeper", inputs={})).run_id)
        await asyncio.sleep(0.2)
        await manager.store.flush()
        print("READY " + json.dumps({"finished": finished, "live": live}), flush=True)
        arts = manager.services.get("artifacts", type("Ctx", (), {"session_id": "crash",
                                                                   "run_id": "writer"})())
        mem = manager.services.get("memory", type("Ctx", (), {"session_id": "crash",
                                                               "run_id": "writer"})())
        n = 0
        while True:  # keep writing until killed
            n += 1
            await ctx_kv.global_scope().set(f"loop-{n}", {"n": n, "pad": "x" * 500})
            await mem.record("tick", {"n": n})
            await arts.save_bytes(bytes([n % 256]) * (1000 + n), f"blob-{n}")
            record = await manager.submit_run("quick", inputs={"i": 1000 + n})
            await manager.wait_run(record.run_id)

    asyncio.run(main())
"""


def start_child(folder: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(folder)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("READY "):
        child.kill()
        _, err = child.communicate(timeout=30)
        pytest.fail(f"child did not start: {line!r} {err}")
    return child, json.loads(line[len("READY ") :])


def kill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.communicate(timeout=30)  # reaped: a zombie would still look alive
    assert child.returncode == -signal.SIGKILL


def statuses(db: Path) -> dict[str, str]:
    conn = sqlite3.connect(db)
    try:
        rows = dict(conn.execute("SELECT run_id, status FROM runs"))
        rows.update(conn.execute("SELECT run_id, status FROM run_journal ORDER BY seq"))
        return rows
    finally:
        conn.close()


async def test_killed_process_keeps_finished_runs_and_marks_live_ones_interrupted(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ws"
    child, report = start_child(folder)
    await asyncio.sleep(0.3)  # the child is now writing kv, memory, artifacts and runs in a loop
    kill(child)

    ws = open_workspace(folder)
    store = SqliteRunStore(ws, owns_workspace=True)
    try:
        assert set(report["live"]) <= set(ws.interrupted_on_open)
        for run_id in report["live"]:
            record = await store.get(run_id)
            assert record is not None
            assert record.status is RunStatus.failed
            assert record.error == INTERRUPTED_ERROR
            assert record.finished_at is not None
            assert record.meta["interrupted"] is True
        for i, run_id in enumerate(report["finished"]):
            record = await store.get(run_id)
            assert record is not None and record.status is RunStatus.succeeded
            outputs = await store.get_outputs(run_id)
            assert outputs is not None
            assert outputs["i"] == i and outputs["square"] == i * i
            assert outputs["pair"] == [i, -i]
            assert outputs["tags"]["__type__"] == "builtins.set"
        # Nothing is left live: whatever the loop had started is interrupted too.
        live = await store.list(
            status=[RunStatus.pending, RunStatus.running, RunStatus.cancellation_requested]
        )
        assert live == []

        def check(conn: sqlite3.Connection) -> dict[str, Any]:
            return {
                "integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
                "kv": conn.execute("SELECT key, value FROM kv WHERE scope = 'global'").fetchall(),
                "memory": conn.execute("SELECT count(*) FROM memory").fetchone()[0],
                "artifacts": conn.execute("SELECT artifact_id, size FROM artifacts").fetchall(),
            }

        found = await ws.read(check)
    finally:
        await store.close()
    assert found["integrity"] == "ok"
    kv = {key: json.loads(value) for key, value in found["kv"]}
    assert kv["before-kill"] == {"finished": 20}
    assert len(kv) > 1 and found["memory"] > 0 and found["artifacts"]  # the loop got going
    for key, value in kv.items():
        if key.startswith("loop-"):
            assert value == {"n": int(key[5:]), "pad": "x" * 500}
    for artifact_id, size in found["artifacts"]:
        blob = folder / "artifacts" / artifact_id[:2] / artifact_id[2:]
        data = blob.read_bytes()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == artifact_id


async def test_runs_of_a_live_process_sharing_the_workspace_are_left_alone(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "ws"
    child, report = start_child(folder)
    try:
        ws = open_workspace(folder)  # a second kernel opens the same workspace
        try:
            assert not set(report["live"]) & set(ws.interrupted_on_open)
        finally:
            await ws.aclose()
        current = statuses(folder / "ag.sqlite3")
        assert {current[r] for r in report["live"]} <= {"running", "pending"}
        assert {current[r] for r in report["finished"]} == {"succeeded"}
    finally:
        kill(child)
    ws = open_workspace(folder)
    try:
        assert set(report["live"]) <= set(ws.interrupted_on_open)
    finally:
        await ws.aclose()
    final = statuses(folder / "ag.sqlite3")
    assert {final[r] for r in report["live"]} == {"failed"}
