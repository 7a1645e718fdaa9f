"""The run store loses nothing and claims nothing untrue (issue: "A run store you can
trust"): odd strings, oversized rows, failed commits, crashes right after spawn_run, bounded
memory for outputs JSON cannot hold, and large outputs encoded off the event loop."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import GraphRegistry, NodeContext, RunManager, RunStatus, graph_fn
from ag_jupyter.runtime.defaults import open_workspace, workspace_runtime
from ag_jupyter.runtime.store.sqlite_store import BLOB_THRESHOLD, SqliteRunStore

REPO = Path(__file__).resolve().parent.parent
ODD = os.fsdecode(b"caf\xe9")  # 'caf\udce9': a lone surrogate, as undecodable bytes become


class Opaque:
    """An output JSON cannot hold."""

    def __init__(self, n: int, size: int = 0) -> None:
        self.n = n
        self.payload = bytearray(size)

    def __repr__(self) -> str:
        return f"<Opaque {self.n}>"

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + len(self.payload)


def make_registry() -> GraphRegistry:
    registry = GraphRegistry()

    @graph_fn("odd_error", registry=registry)
    async def odd_error() -> None:
        raise ValueError(f"cannot open {ODD}\x00 file")

    @graph_fn("echo", registry=registry)
    async def echo(x: Any = None) -> Any:
        return x

    @graph_fn("opaque", registry=registry)
    async def opaque(n: int, size: int = 0) -> Any:
        return Opaque(n, size)

    @graph_fn("chatty", registry=registry)
    async def chatty(n: int, tag: str, context: NodeContext) -> int:
        for i in range(n):
            context.logger().info("%s line %d %s", tag, i, ODD)
        return n

    return registry


@pytest.fixture
async def durable(tmp_path: Path) -> Any:
    manager = RunManager(registry=make_registry(), **workspace_runtime(tmp_path / "ws"))
    yield manager
    await manager.close()


def reopen(tmp_path: Path) -> RunManager:
    return RunManager(registry=make_registry(), **workspace_runtime(tmp_path / "ws"))


# ------------------------------------------------------------------ odd strings
async def test_a_lone_surrogate_in_an_error_is_stored_losslessly_and_saving_goes_on(
    durable: RunManager, tmp_path: Path
) -> None:
    failed = await durable.run_and_wait("odd_error", inputs={})
    record = failed[0]
    assert record.status is RunStatus.failed
    assert record.error == f"ValueError: cannot open {ODD}\x00 file"
    assert "durable" not in record.meta
    # Everything after it still saves: runs, kv, memory.
    after, outputs, _, _ = await durable.run_and_wait("echo", inputs={"x": ODD})
    assert outputs == {"result": ODD} and "durable" not in after.meta
    ctx = await durable.services.get("kv", _Ctx()).set("odd", {"v": ODD})
    del ctx
    await durable.close()
    again = reopen(tmp_path)
    try:
        stored = await again.get_record(record.run_id)
        assert stored.error == record.error  # read back exactly
        assert ODD in stored.meta["traceback"]
        assert (await again.wait_run(after.run_id, return_outputs=True))[1] == {"result": ODD}
        assert await again.services.get("kv", _Ctx()).get("odd") == {"v": ODD}
    finally:
        await again.close()


class _Ctx:
    run_id = "tester"
    session_id = "s"
    graph_id = node_id = "t"
    agent_id = app_id = None


@pytest.mark.parametrize(
    "field,value",
    [
        ("session_id", ODD),
        ("agent_id", "a\x00b"),
        ("app_id", ODD),
        ("run_id", "run\x00x"),
        ("parent_run_id", ODD),
    ],
)
async def test_identifiers_with_nul_or_lone_surrogates_are_refused_at_submit(
    durable: RunManager, field: str, value: str
) -> None:
    with pytest.raises(ValueError, match=field):
        await durable.submit_run("echo", inputs={}, **{field: value})
    assert durable.live_records() == []


async def test_tags_must_be_a_list_of_plain_strings(durable: RunManager) -> None:
    with pytest.raises(TypeError, match=r"tags=\['urgent'\]"):
        await durable.submit_run("echo", inputs={}, tags="urgent")
    with pytest.raises(ValueError, match="tags"):
        await durable.submit_run("echo", inputs={}, tags=["ok", "bad\x00tag"])
    record = await durable.submit_run("echo", inputs={}, tags=["urgent", "caf\u00e9"])
    await durable.wait_run(record.run_id)
    found = await durable.list_records(tags=["caf\u00e9"])
    assert [r.run_id for r in found] == [record.run_id]


# ------------------------------------------------------------- oversized values
async def test_large_outputs_and_inputs_go_to_blob_files_and_read_back(
    durable: RunManager, tmp_path: Path
) -> None:
    big = "z" * (BLOB_THRESHOLD + 10)
    final, outputs, _, _ = await durable.run_and_wait("echo", inputs={"x": [big, 1]})
    assert outputs == {"result": [big, 1]}
    db = tmp_path / "ws" / "ag.sqlite3"
    conn = sqlite3.connect(db)
    try:
        await durable.store.flush()
        row = conn.execute(
            "SELECT outputs, outputs_ref, inputs, inputs_ref FROM run_journal WHERE run_id = ? "
            "AND outputs_ref IS NOT NULL",
            (final.run_id,),
        ).fetchone()
        inputs_row = conn.execute(
            "SELECT inputs_ref FROM run_journal WHERE run_id = ? AND inputs_ref IS NOT NULL",
            (final.run_id,),
        ).fetchone()
    finally:
        conn.close()
    assert row is not None and row[0] is None and len(row[1]) == 64  # not in the database
    assert inputs_row is not None
    blob = tmp_path / "ws" / "blobs" / row[1][:2] / row[1][2:]
    assert blob.is_file() and oct(blob.stat().st_mode & 0o777) == "0o600"
    await durable.close()
    again = reopen(tmp_path)
    try:
        assert (await again.wait_run(final.run_id, return_outputs=True))[1] == {"result": [big, 1]}
        assert await again.get_inputs(final.run_id) == {"x": [big, 1]}
    finally:
        await again.close()


async def test_a_row_sqlite_refuses_is_stored_with_a_marker_and_never_blocks_the_others(
    durable: RunManager,
) -> None:
    conn = durable.store.workspace.engine.connection()  # type: ignore[attr-defined]
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 50_000)  # so a 60 kB meta is "too big"
    try:
        records = [
            await durable.submit_run("echo", inputs={"x": i}, meta={"note": "n" * 60_000} if i == 1
                                     else None)
            for i in range(3)
        ]
        finals = [await durable.wait_run(r.run_id) for r in records]
        assert [f.status for f in finals] == [RunStatus.succeeded] * 3
        assert all("durable" not in f.meta for f in finals)  # each one is on disk
    finally:
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000_000)
    store = durable.store
    assert isinstance(store, SqliteRunStore)
    store._recent.clear()  # read from the database, not the cache
    durable._recent.clear()
    stored = [await durable.get_record(r.run_id) for r in records]
    assert "store_error" in stored[1].meta and "too big" in stored[1].meta["store_error"]
    assert stored[1].status is RunStatus.succeeded and stored[1].run_id == records[1].run_id
    assert "store_error" not in stored[0].meta and "store_error" not in stored[2].meta
    # Later writes are unaffected.
    last = await durable.run_and_wait("echo", inputs={"x": "after"})
    assert last[1] == {"result": "after"}


# --------------------------------------------------------------- failed commits
async def test_a_failed_commit_is_never_reported_durable_and_lands_later(
    durable: RunManager, tmp_path: Path
) -> None:
    conn = durable.store.workspace.engine.connection()  # type: ignore[attr-defined]
    await durable.store.flush()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # the database file cannot grow: "full"
    pad = "p" * 3000
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            results = [await durable.run_and_wait("echo", inputs={"x": pad + str(i)})
                       for i in range(30)]
        faults = [w for w in seen if issubclass(w.category, RuntimeWarning)]
        assert len(faults) == 1  # once per fault, naming the folder and the cause
        assert str(tmp_path / "ws") in str(faults[0].message)
        assert "disk is full" in str(faults[0].message)
        not_durable = [r for r, *_ in results if r.meta.get("durable") is False]
        assert not_durable, "some records must say they are not on disk"
        for record, outputs, _, _ in results:
            assert record.status is RunStatus.succeeded  # the wait itself never raised
            assert outputs is not None
    finally:
        conn.execute("PRAGMA max_page_count=1073741823")
    await durable.store.flush()  # the fault cleared: everything kept lands
    for record, *_ in results:
        assert "durable" not in (await durable.get_record(record.run_id)).meta
    ids = [r.run_id for r, *_ in results]
    await durable.close()
    check = sqlite3.connect(tmp_path / "ws" / "ag.sqlite3")
    try:
        on_disk = {r[0] for r in check.execute("SELECT run_id FROM runs")} | {
            r[0] for r in check.execute("SELECT run_id FROM run_journal")
        }
    finally:
        check.close()
    assert set(ids) <= on_disk


# ------------------------------------------------------- objects JSON cannot hold
async def test_outputs_json_cannot_hold_are_kept_by_bytes_then_read_as_previews(
    tmp_path: Path,
) -> None:
    ws = open_workspace(tmp_path / "ws")
    store = SqliteRunStore(ws, owns_workspace=True, object_cache_bytes=3_000_000)
    manager = RunManager(registry=make_registry(), store=store)
    try:
        runs = [await manager.run_and_wait("opaque", inputs={"n": i, "size": 1_000_000})
                for i in range(6)]
        assert store.outputs_cache.bytes <= 3_000_000
        newest = runs[-1][0].run_id
        _, outputs = await manager.wait_run(newest, return_outputs=True)
        assert isinstance(outputs["result"], Opaque)  # still the real object
        oldest = runs[0][0].run_id
        with pytest.warns(RuntimeWarning, match="dropped from memory"):
            record, outputs = await manager.wait_run(oldest, return_outputs=True)
        assert outputs == {"result": {"__repr__": "<Opaque 0>", "__type__": f"{__name__}.Opaque"}}
        assert record.status is RunStatus.succeeded and "outputs" not in record.meta
    finally:
        await manager.close()


async def test_a_large_output_is_encoded_off_the_event_loop(durable: RunManager) -> None:
    # ~60 MB of JSON: encoding it takes a few hundred ms; the loop must keep ticking.
    payload = [{"k": i, "v": "x" * 50} for i in range(900_000)]
    gaps: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    final, outputs, _, _ = await durable.run_and_wait("echo", inputs={"x": payload})
    await asyncio.sleep(0.01)
    stop = True
    await tick
    assert final.status is RunStatus.succeeded and outputs["result"] is payload
    # Generous bound (the bench reports the real figure, ~2 ms target): encoding this on
    # the loop would stall it for hundreds of milliseconds.
    assert max(gaps) < 0.15, f"loop stalled {max(gaps) * 1000:.0f} ms"


# ---------------------------------------------------------------- crash safety
SPAWNER = """
    import asyncio, sys
    from ag_jupyter.runtime import GraphRegistry, RunManager, graph_fn
    from ag_jupyter.runtime.defaults import workspace_runtime

    registry = GraphRegistry()

    @graph_fn("nap", registry=registry)
    async def nap(i: int) -> int:
        await asyncio.sleep(0.02)
        return i

    async def main():
        manager = RunManager(registry=registry, max_concurrency=4,
                             **workspace_runtime(sys.argv[1]))
        i = 0
        while True:
            record = await manager.submit_run("nap", inputs={"i": i})
            sys.stdout.write(record.run_id + "\\n")
            sys.stdout.flush()
            i += 1
            await asyncio.sleep(0)

    asyncio.run(main())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")
def test_every_run_id_returned_by_spawn_survives_a_kill_within_50_ms(tmp_path: Path) -> None:
    rng = random.Random(11)
    lost: list[str] = []
    total = 0
    for attempt in range(20):
        folder = tmp_path / f"ws{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(SPAWNER), str(folder)],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # the first run id: spawn_run has returned
        assert first.startswith("run-"), child.stderr.read() if child.stderr else first
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
        ids = [first.strip(), *(line for line in rest.splitlines() if line.startswith("run-"))]
        total += len(ids)
        conn = sqlite3.connect(folder / "ag.sqlite3")
        try:
            known = {r[0] for r in conn.execute("SELECT run_id FROM runs")}
            known |= {r[0] for r in conn.execute("SELECT run_id FROM run_journal")}
        finally:
            conn.close()
        lost.extend(i for i in ids if i not in known)
        # And the next process sees each of them terminal or failed "interrupted".
        if attempt % 5 == 0:
            ws = open_workspace(folder)
            try:
                rows = ws.read_sync(
                    lambda c: dict(c.execute("SELECT run_id, status FROM runs").fetchall())
                )
            finally:
                ws.close()
            assert all(rows[i] in ("succeeded", "failed") for i in ids)
    assert total >= 20
    assert lost == []


# ----------------------------------------------------------------------- logs
async def test_logs_are_kept_per_run_bounded_and_readable_after_a_restart(
    tmp_path: Path,
) -> None:
    manager = reopen(tmp_path)
    log_sink = manager.services.log_buffer.sink
    log_sink.max_lines_per_run = 50
    log_sink.book.max_lines_per_run = 50
    try:
        quiet = (await manager.run_and_wait("chatty", inputs={"n": 3, "tag": "quiet"}))[0]
        loud = (await manager.run_and_wait("chatty", inputs={"n": 400, "tag": "loud"}))[0]
        page = await manager.logs(quiet.run_id)
        assert [ln["message"] for ln in page["lines"]] == [
            f"quiet line {i} {ODD}" for i in range(3)
        ]  # the chatty run evicted nothing of it
    finally:
        await manager.close()
    again = reopen(tmp_path)
    try:
        quiet_page = await again.logs(quiet.run_id)
        assert quiet_page["total"] == 3
        assert quiet_page["lines"][0]["message"] == f"quiet line 0 {ODD}"
        loud_page = await again.logs(loud.run_id, limit=1000)
        assert loud_page["total"] <= 50 + 256  # trimmed to its bound (plus one batch)
        assert loud_page["lines"][-1]["message"] == f"loud line 399 {ODD}"  # newest kept
        found = await again.logs(loud.run_id, search="LINE 399")
        assert [ln["message"] for ln in found["lines"]] == [f"loud line 399 {ODD}"]
    finally:
        await again.close()


async def test_inputs_are_stored_with_the_run(durable: RunManager, tmp_path: Path) -> None:
    final = (await durable.run_and_wait("echo", inputs={"x": {"a": [1, 2]}}))[0]
    assert await durable.get_inputs(final.run_id) == {"x": {"a": [1, 2]}}
    await durable.close()
    again = reopen(tmp_path)
    try:
        assert await again.get_inputs(final.run_id) == {"x": {"a": [1, 2]}}
    finally:
        await again.close()


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


async def test_a_submit_cancelled_while_its_record_is_stored_leaves_no_live_run(
    durable: RunManager,
) -> None:
    """An interrupt landing in spawn_run's store write (the caller never gets the run id):
    the run never starts and ends canceled, on disk, instead of staying pending forever
    (found by tests/test_session_cell_kernel.py's fifty random interrupts)."""
    # Two submits in one loop iteration: the second one's put joins the first one's
    # group commit, so it awaits; the interrupt lands there.
    first = asyncio.create_task(durable.submit_run("echo", inputs={"x": 1}))
    task = asyncio.create_task(durable.submit_run("echo", inputs={"x": 2}))
    await asyncio.sleep(0)
    assert first.done() and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await durable.wait_run(first.result().run_id)).status is RunStatus.succeeded
    for _ in range(100):
        if not durable.live_records():
            break
        await asyncio.sleep(0.01)
    assert durable.live_records() == []
    records = await durable.list_records()
    assert len(records) == 2
    (record,) = [r for r in records if r.run_id != first.result().run_id]
    assert record.status is RunStatus.canceled and record.started_at is None
    assert record.meta["cancel_reason"] == "submit_cancelled"
    assert (await durable.wait_run(record.run_id)).status is RunStatus.canceled


async def test_a_submit_abandoned_while_its_record_is_stored_leaves_no_live_run(
    durable: RunManager,
) -> None:
    """The same when the caller's coroutine is closed mid-await instead of cancelled (an
    await chain dropped, as an interrupt raised at the wrong opcode once did): the run
    ends canceled instead of staying pending forever."""
    first = asyncio.create_task(durable.submit_run("echo", inputs={"x": 1}))
    await asyncio.sleep(0)
    assert first.done()
    coro = durable.submit_run("echo", inputs={"x": 2})
    coro.send(None)  # suspends in the store write (the group commit of `first`'s loop step)
    (live,) = [r for r in durable.live_records() if r.run_id != first.result().run_id]
    coro.close()  # GeneratorExit at that await
    for _ in range(100):
        if not durable.live_records():
            break
        await asyncio.sleep(0.01)
    assert durable.live_records() == []
    record = await durable.wait_run(live.run_id)
    assert record.status is RunStatus.canceled and record.started_at is None
    assert record.meta["cancel_reason"] == "submit_cancelled"


async def test_a_fault_that_clears_and_comes_back_soon_is_not_warned_again(
    durable: RunManager,
) -> None:
    """A nearly full disk flips between failing and landing commits (a fold frees pages):
    the same cause is warned about once, not at every flip (FAULT_WARN_REPEAT_S)."""
    conn = durable.store.workspace.engine.connection()  # type: ignore[attr-defined]
    pad = "p" * 3000
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for flip in range(3):
            await durable.store.flush()
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={pages}")  # full
            try:
                for i in range(10):
                    await durable.run_and_wait("echo", inputs={"x": f"{pad}{flip}-{i}"})
            finally:
                conn.execute("PRAGMA max_page_count=1073741823")
            await durable.store.flush()  # lands: the fault cleared
            assert durable.store.fault is None
    faults = [w for w in seen if issubclass(w.category, RuntimeWarning)]
    assert len(faults) == 1 and "disk is full" in str(faults[0].message)
    assert durable.store.workspace.engine.fault_serial >= 3  # three faults really happened
