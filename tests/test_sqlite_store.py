"""The durable run store: SqliteRunStore on real SQLite files in tmp_path."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import (
    GraphRegistry,
    RunManager,
    RunRecord,
    RunStatus,
    RunStore,
    graph_fn,
)
from ag_jupyter.runtime.defaults import open_workspace, workspace_runtime
from ag_jupyter.runtime.errors import WorkspaceWriteError
from ag_jupyter.runtime.store.codecs import LIGHT_STR_MAX
from ag_jupyter.runtime.store.sqlite_store import FOLD_AT_ROWS, FOLD_CHUNK, SqliteRunStore
from ag_jupyter.runtime.store.workspace import Workspace


@pytest.fixture
async def ws(tmp_path: Path) -> AsyncIterator[Workspace]:
    workspace = open_workspace(tmp_path / "ws")
    yield workspace
    await workspace.aclose()


@pytest.fixture
def store(ws: Workspace) -> SqliteRunStore:
    return SqliteRunStore(ws)


def disk_row(db: Path, run_id: str) -> dict[str, Any] | None:
    """The run's latest row as a separate plain sqlite3 connection sees it (journal first,
    since journaled rows are newer than the runs table's)."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = (
            conn.execute(
                "SELECT * FROM run_journal WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)
            ).fetchone()
            or conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        )
        return None if row is None else dict(row)
    finally:
        conn.close()


def record(run_id: str, **kw: Any) -> RunRecord:
    return RunRecord(run_id=run_id, graph_id=kw.pop("graph_id", "g"), **kw)


class Unjsonable:
    def __repr__(self) -> str:
        return "<Unjsonable thing>"


async def test_store_implements_the_run_store_protocol(store: SqliteRunStore) -> None:
    assert isinstance(store, RunStore)


async def test_record_round_trips_every_field(store: SqliteRunStore, ws: Workspace) -> None:
    now = datetime.now(UTC)
    original = record(
        "r1",
        status=RunStatus.failed,
        created_at=now - timedelta(seconds=2),
        started_at=now - timedelta(seconds=1),
        finished_at=now,
        tags=["a", "b"],
        session_id="s",
        parent_run_id="p",
        origin="agent",
        visibility="hidden",
        importance="ephemeral",
        agent_id="ag",
        app_id="app",
        error="ValueError: boom",
        meta={"traceback": "Traceback ...\nValueError: boom\n", "n": [1, 2]},
    )
    await store.create(original)
    await store.flush()
    other = SqliteRunStore(open_workspace(ws.path))  # a fresh process's view: no caches
    try:
        assert await other.get("r1") == original
    finally:
        await other.workspace.aclose()


async def test_reads_see_queued_writes_before_they_are_committed(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws", commit_interval_s=60)
    store = SqliteRunStore(ws)
    try:
        await store.create(record("r1", tags=["x"]))
        assert disk_row(ws.db_path, "r1") is None  # not committed yet
        assert (await store.get("r1")).run_id == "r1"  # type: ignore[union-attr]
        assert await store.exists("r1")
        assert [r.run_id for r in await store.list(tags=["x"])] == ["r1"]
        await store.flush()
        assert disk_row(ws.db_path, "r1") is not None
    finally:
        await ws.aclose()


async def test_create_and_update_return_before_the_commit(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws", commit_interval_s=60)
    store = SqliteRunStore(ws)
    try:
        for i in range(100):
            await store.create(record(f"r{i}"))
        assert ws.engine._done_seq < ws.engine._seq  # queued, nothing awaited the commit
        await store.flush()
        assert ws.engine._done_seq >= ws.engine._seq
    finally:
        await ws.aclose()


async def test_terminal_record_is_on_disk_when_wait_run_returns(tmp_path: Path) -> None:
    registry = GraphRegistry()

    @graph_fn("double", registry=registry)
    async def double(x: int) -> int:
        return 2 * x

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    db = manager.store.workspace.db_path  # type: ignore[attr-defined]
    try:
        for i in range(20):
            submitted = await manager.submit_run("double", inputs={"x": i})
            final = await manager.wait_run(submitted.run_id)
            row = disk_row(db, submitted.run_id)
            assert row is not None
            assert row["status"] == "succeeded" == final.status.value
            assert json.loads(row["outputs"]) == {"result": 2 * i}
    finally:
        await manager.close()


async def test_json_outputs_round_trip_and_others_are_previews(tmp_path: Path) -> None:
    registry = GraphRegistry()
    thing = Unjsonable()

    @graph_fn("mixed", registry=registry)
    async def mixed() -> dict[str, Any]:
        return {"n": 1, "pair": (1, 2), "thing": thing, "nested": {"a": [1, "x", None]}}

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    try:
        final, outputs, _, _ = await manager.run_and_wait("mixed", inputs={})
        assert final.status is RunStatus.succeeded
        assert outputs is not None
        assert outputs["thing"] is thing  # this process keeps the real objects
        assert outputs["pair"] == (1, 2)
    finally:
        await manager.close()
    other = SqliteRunStore(open_workspace(tmp_path / "ws"))
    try:
        stored = await other.get_outputs(final.run_id)
    finally:
        await other.workspace.aclose()
    assert stored == {
        "n": 1,
        "pair": [1, 2],
        "thing": {"__repr__": "<Unjsonable thing>", "__type__": f"{__name__}.Unjsonable"},
        "nested": {"a": [1, "x", None]},
    }


async def test_failed_run_keeps_error_and_traceback_on_disk(tmp_path: Path) -> None:
    registry = GraphRegistry()

    @graph_fn("boom", registry=registry)
    async def boom() -> None:
        raise ValueError("bad value 42")

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    try:
        final = await manager.run_and_wait("boom", inputs={})
    finally:
        await manager.close()
    other = SqliteRunStore(open_workspace(tmp_path / "ws"))
    try:
        stored = await other.get(final[0].run_id)
        assert await other.get_outputs(final[0].run_id) is None
    finally:
        await other.workspace.aclose()
    assert stored is not None
    assert stored.status is RunStatus.failed
    assert stored.error == "ValueError: bad value 42"
    assert "raise ValueError" in stored.meta["traceback"]


async def test_list_filters_orders_and_pages_in_sql(store: SqliteRunStore) -> None:
    base = datetime.now(UTC)
    specs = [
        ("r0", "g1", RunStatus.succeeded, "s1", ["a"]),
        ("r1", "g2", RunStatus.failed, "s1", ["a", "b"]),
        ("r2", "g1", RunStatus.running, "s2", ["b"]),
        ("r3", "g1", RunStatus.succeeded, None, ["a", "b", "c"]),
        ("r4", "g2", RunStatus.canceled, "s2", []),
    ]
    for i, (run_id, graph, status, session, tags) in enumerate(specs):
        await store.create(
            record(
                run_id,
                graph_id=graph,
                status=status,
                session_id=session,
                tags=tags,
                created_at=base + timedelta(seconds=i),
            )
        )
    await store.flush()

    async def ids(**kw: Any) -> list[str]:
        return [r.run_id for r in await store.list(**kw)]

    assert await ids() == ["r4", "r3", "r2", "r1", "r0"]
    assert await ids(graph_id="g1") == ["r3", "r2", "r0"]
    assert await ids(status=RunStatus.succeeded) == ["r3", "r0"]
    assert await ids(status=[RunStatus.failed, RunStatus.canceled]) == ["r4", "r1"]
    assert await ids(session_id="s2") == ["r4", "r2"]
    assert await ids(tags=["a", "b"]) == ["r3", "r1"]
    assert await ids(tags=["c"], graph_id="g1") == ["r3"]
    assert await ids(limit=2) == ["r4", "r3"]
    assert await ids(limit=2, offset=2) == ["r2", "r1"]
    assert await ids(offset=10) == []
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=0)


async def test_list_merges_queued_changes_with_stored_rows(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws", commit_interval_s=60)
    store = SqliteRunStore(ws)
    base = datetime.now(UTC)
    try:
        for i in range(6):
            await store.create(record(f"r{i}", created_at=base + timedelta(seconds=i)))
        await store.flush()
        # Not committed yet: r5 finishes, r6 is new.
        r5 = record("r5", status=RunStatus.succeeded, created_at=base + timedelta(seconds=5))
        await store.update(r5)
        await store.create(record("r6", created_at=base + timedelta(seconds=6)))
        pending = [r.run_id for r in await store.list(status=RunStatus.pending)]
        assert pending == ["r6", "r4", "r3", "r2", "r1", "r0"]
        page = await store.list(status=RunStatus.pending, limit=2, offset=1)
        assert [r.run_id for r in page] == ["r4", "r3"]
        assert [r.run_id for r in await store.list(status=RunStatus.succeeded)] == ["r5"]
    finally:
        await ws.aclose()


async def test_another_process_sees_journaled_runs_before_they_are_folded(
    tmp_path: Path,
) -> None:
    writer = SqliteRunStore(open_workspace(tmp_path / "ws"))
    reader = SqliteRunStore(open_workspace(tmp_path / "ws"))
    try:
        await writer.update(record("r1", status=RunStatus.succeeded), {"v": 1})
        await writer.flush()  # an awaited commit goes to the journal first
        assert disk_row(writer.workspace.db_path, "r1") is not None
        assert (await reader.get("r1")).status is RunStatus.succeeded  # type: ignore[union-attr]
        assert await reader.get_outputs("r1") == {"v": 1}
        assert await reader.exists("r1")
        assert [r.run_id for r in await reader.list()] == ["r1"]
    finally:
        await writer.workspace.aclose()
        await reader.workspace.aclose()
    conn = sqlite3.connect(tmp_path / "ws" / "ag.sqlite3")
    try:  # closing folds the journal into the runs table
        assert conn.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 0
        assert conn.execute("SELECT status FROM runs").fetchall() == [("succeeded",)]
    finally:
        conn.close()


async def test_update_without_outputs_keeps_stored_outputs(tmp_path: Path) -> None:
    store = SqliteRunStore(open_workspace(tmp_path / "ws"))
    try:
        await store.update(record("r1", status=RunStatus.running), {"partial": 1})
        await store.flush()
        await store.update(record("r1", status=RunStatus.succeeded))
        await store.flush()
    finally:
        await store.workspace.aclose()
    other = SqliteRunStore(open_workspace(tmp_path / "ws"))
    try:
        assert await other.get_outputs("r1") == {"partial": 1}
        assert await other.get_outputs("missing") is None
        assert await other.get("missing") is None
        assert not await other.exists("missing")
    finally:
        await other.workspace.aclose()


async def test_finished_records_do_not_pile_up_in_memory(tmp_path: Path) -> None:
    registry = GraphRegistry()

    @graph_fn("noop", registry=registry)
    async def noop(i: int) -> int:
        return i

    ws = open_workspace(tmp_path / "ws")
    store = SqliteRunStore(ws, owns_workspace=True, cache_size=10)
    manager = RunManager(registry=registry, store=store)
    try:
        run_ids = []
        for i in range(FOLD_AT_ROWS + 100):
            submitted = await manager.submit_run("noop", inputs={"i": i})
            await manager.wait_run(submitted.run_id)
            run_ids.append(submitted.run_id)
        assert len(store._recent) <= 10
        assert store.outputs_cache.bytes <= store.outputs_cache.max_bytes
        # Folded into the runs table as it goes, a chunk at a time, once past the bound.
        assert store.journal_rows() < FOLD_AT_ROWS + FOLD_CHUNK
        # Evicted records and outputs are read back from the database.
        assert (await manager.get_record(run_ids[0])).status is RunStatus.succeeded
        assert await store.get_outputs(run_ids[0]) == {"result": 0}
    finally:
        await manager.close()


async def test_concurrent_flushes_share_commits(ws: Workspace, store: SqliteRunStore) -> None:
    commits = 0
    real_commit = ws.engine._commit

    def counting_commit(*args: Any, **kwargs: Any) -> Any:
        nonlocal commits
        commits += 1
        return real_commit(*args, **kwargs)

    ws.engine._commit = counting_commit  # type: ignore[method-assign]
    big = "y" * (LIGHT_STR_MAX + 1)  # encoded in the writer thread: never inline

    async def one(i: int) -> None:
        await store.update(record(f"r{i}", status=RunStatus.succeeded), {"i": i, "big": big})
        await store.flush()

    await asyncio.gather(*(one(i) for i in range(200)))
    assert commits < 50  # group commit in the writer thread: far fewer commits than flushes
    assert len(await store.list(limit=500)) == 200
    assert await store.get_outputs("r7") == {"i": 7, "big": big}


async def test_small_flushes_commit_inline_on_the_loop_thread(
    ws: Workspace, store: SqliteRunStore
) -> None:
    threads: list[int] = []
    real_row = store._row  # every commit builds its rows, wherever it runs

    def recording_row(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real_row(*args, **kwargs)

    store._row = recording_row  # type: ignore[method-assign]
    before = ws.engine.thread_commits
    for i in range(20):
        await store.update(record(f"s{i}", status=RunStatus.succeeded), {"i": i})
        await store.flush()
    assert threads == [threading.get_ident()] * 20  # no thread hand-off for small batches
    assert ws.engine.thread_commits == before
    assert disk_row(ws.db_path, "s19") is not None  # committed for another connection to see


async def test_reads_run_off_the_event_loop_thread(ws: Workspace) -> None:
    reader_thread = await ws.read(lambda conn: threading.get_ident())
    assert reader_thread != threading.get_ident()


async def test_read_only_workspace_keeps_records_in_memory_and_manager_working(
    tmp_path: Path,
) -> None:
    registry = GraphRegistry()

    @graph_fn("inc", registry=registry)
    async def inc(x: int) -> int:
        return x + 1

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    ws: Workspace = manager.store.workspace  # type: ignore[attr-defined]
    # A real SQLite refusal at the writer's connection (as root, chmod cannot do it).
    await ws.write(lambda conn: None)
    conn = ws.engine.connection()
    conn.execute("PRAGMA query_only=ON")
    try:
        with pytest.warns(RuntimeWarning, match="not on disk") as seen:
            final, outputs, _, _ = await manager.run_and_wait("inc", inputs={"x": 1})
        assert str(ws.path) in str(seen[0].message)
        assert final.status is RunStatus.succeeded
        assert outputs == {"result": 2}
        assert final.meta["durable"] is False  # the record says it is not on disk
        assert (await manager.get_record(final.run_id)).meta["durable"] is False
        assert [r.run_id for r in await manager.list_records()] == [final.run_id]
        with pytest.raises(WorkspaceWriteError) as info:
            await manager.store.flush()
        message = str(info.value)
        assert str(ws.path) in message and "read-only" in message
        assert disk_row(ws.db_path, final.run_id) is None
        # Writable again: the record kept in memory is saved by the next flush.
        conn.execute("PRAGMA query_only=OFF")
        await manager.store.flush()
        assert disk_row(ws.db_path, final.run_id)["status"] == "succeeded"  # type: ignore[index]
        assert "durable" not in (await manager.get_record(final.run_id)).meta
        second = await manager.run_and_wait("inc", inputs={"x": 5})
        assert second[1] == {"result": 6}
        assert "durable" not in second[0].meta
    finally:
        conn.execute("PRAGMA query_only=OFF")
        await manager.close()


async def test_full_disk_gives_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    store = SqliteRunStore(ws, owns_workspace=True)
    try:
        await ws.write(lambda conn: None)
        conn = ws.engine.connection()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")  # the database cannot grow
        big = "x" * 200_000
        await store.update(record("big", status=RunStatus.succeeded), {"text": big})
        with pytest.raises(WorkspaceWriteError, match="disk is full: free some space"):
            await store.flush()
        assert await store.get_outputs("big") == {"text": big}  # still in memory
        conn.execute("PRAGMA max_page_count=1073741823")
        await store.flush()
        assert json.loads(disk_row(ws.db_path, "big")["outputs"]) == {"text": big}  # type: ignore[index]
    finally:
        await store.close()


async def test_store_serves_managers_of_successive_loops(tmp_path: Path) -> None:
    registry = GraphRegistry()

    @graph_fn("echo", registry=registry)
    async def echo(x: int) -> int:
        return x

    store = SqliteRunStore(open_workspace(tmp_path / "ws"))

    async def first() -> str:
        manager = RunManager(registry=registry, store=store)
        final = await manager.run_and_wait("echo", inputs={"x": 7})
        await manager.close()  # a store that does not own its workspace only flushes
        return final[0].run_id

    def run_in_new_loop() -> str:
        return asyncio.run(first())

    run_id = await asyncio.to_thread(run_in_new_loop)
    manager = RunManager(registry=registry, store=store)
    try:
        assert (await manager.get_record(run_id)).status is RunStatus.succeeded
        assert await store.get_outputs(run_id) == {"result": 7}
    finally:
        await manager.close()
        await store.workspace.aclose()


async def test_runs_ending_together_share_one_commit(tmp_path: Path) -> None:
    registry = GraphRegistry()

    @graph_fn("quick", registry=registry)
    async def quick(i: int) -> int:
        return i

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    engine = manager.store.workspace.engine  # type: ignore[attr-defined]
    try:
        ids = [(await manager.submit_run("quick", inputs={"i": i})).run_id for i in range(8)]
        after_spawns = engine.inline_commits
        assert after_spawns >= 8  # each spawn's pending record, committed before it returned
        finals = [await manager.wait_run(run_id) for run_id in ids]
        assert [f.status for f in finals] == [RunStatus.succeeded] * 8
        assert engine.inline_commits - after_spawns <= 2  # the 8 ends: one or two commits
        for run_id in ids:
            assert disk_row(tmp_path / "ws" / "ag.sqlite3", run_id)["status"] == "succeeded"  # type: ignore[index]
    finally:
        await manager.close()
