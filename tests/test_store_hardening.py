"""The workspace as a hostile user finds it: file modes, planted symlinks, leftovers of a
kill, a folder deleted under a live kernel, a corrupted database, odd values, deep pages,
bodies that swallow cancellation, an old workspace to migrate, pruning and stats."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import (
    GraphRegistry,
    NodeContext,
    RunManager,
    RunStatus,
    WorkspaceCorruptError,
    WorkspaceWriteError,
    graph_fn,
)
from ag_jupyter.runtime.defaults import open_workspace, workspace_runtime
from ag_jupyter.runtime.store import sqlite_store
from ag_jupyter.runtime.store.blobs import BlobError

REPO = Path(__file__).resolve().parent.parent
LANDED = "8852662"  # the last commit before the store was split: its workspace layout


def mode(path: Path) -> str:
    return oct(path.stat().st_mode & 0o777)


def registry_with_echo() -> GraphRegistry:
    registry = GraphRegistry()

    @graph_fn("echo", registry=registry)
    async def echo(x: Any = None) -> Any:
        return x

    @graph_fn("save", registry=registry)
    async def save(text: str, context: NodeContext) -> str:
        art = await context.artifacts().save_bytes(text.encode(), "note.txt")
        return art.id

    return registry


class Ctx:
    run_id = "tester"
    session_id = "s"
    graph_id = node_id = "t"
    agent_id = app_id = None


# ------------------------------------------------------------------ file modes
async def test_a_new_workspace_is_private_to_its_user(tmp_path: Path) -> None:
    manager = RunManager(registry=registry_with_echo(), **workspace_runtime(tmp_path / "ws"))
    try:
        await manager.run_and_wait("echo", inputs={"x": 1})
        art_id = (await manager.run_and_wait("save", inputs={"text": "hello"}))[1]["result"]
        big = "b" * (sqlite_store.BLOB_THRESHOLD + 1)
        await manager.run_and_wait("echo", inputs={"x": big})
        ws = tmp_path / "ws"
        assert mode(ws) == "0o700"
        for name in ("ag.sqlite3", "ag.sqlite3-wal", "ag.sqlite3-shm"):
            assert mode(ws / name) == "0o600", name
        for sub in ("artifacts", "blobs"):
            assert mode(ws / sub) == "0o700"
            files = [p for p in (ws / sub).rglob("*") if p.is_file()]
            assert files and all(mode(p) == "0o600" for p in files), sub
            assert all(mode(p) == "0o700" for p in (ws / sub).iterdir() if p.is_dir())
        assert (ws / "artifacts" / art_id[:2] / art_id[2:]).is_file()
    finally:
        await manager.close()


def test_an_older_world_readable_database_is_tightened_on_open(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    ws.close()
    db = tmp_path / "ws" / "ag.sqlite3"
    os.chmod(db, 0o644)
    open_workspace(tmp_path / "ws").close()
    assert mode(db) == "0o600"


# ----------------------------------------------------------- planted symlinks
async def test_artifact_saves_and_loads_never_follow_planted_symlinks(
    tmp_path: Path, session: Any
) -> None:
    ctx = await session()
    arts = ctx.artifacts()
    outside = tmp_path / "outside"
    outside.mkdir()
    saved = await arts.save_bytes(b"original", "a.bin")
    digest = saved.id
    folder = Path(arts.root) / digest[:2]
    blob = folder / digest[2:]
    # 1. The blob file replaced by a link to a file of the attacker's.
    (outside / "evil").write_bytes(b"original")
    blob.unlink()
    blob.symlink_to(outside / "evil")
    with pytest.raises(BlobError, match="symbolic link"):
        await arts.load_bytes(digest)
    # 2. A two-hex folder replaced by a link to a folder outside: saves refuse to write
    #    through it, loads refuse to read through it.
    target = b"new content"
    import hashlib

    new_digest = hashlib.sha256(target).hexdigest()
    link = Path(arts.root) / new_digest[:2]
    if link.exists():
        link.rename(link.with_name(link.name + ".bak"))
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(WorkspaceWriteError, match="symbolic link"):
        await arts.save_bytes(target, "b.bin")
    assert list(outside.iterdir()) == [outside / "evil"]  # nothing written outside


async def test_a_load_checks_the_content_against_its_hash(session: Any) -> None:
    arts = (await session()).artifacts()
    saved = await arts.save_text("t.txt", "trusted") if False else await arts.save_bytes(
        b"trusted", "t.txt"
    )
    blob = Path(arts.root) / saved.id[:2] / saved.id[2:]
    os.chmod(blob, 0o600)
    blob.write_bytes(b"tampered")
    with pytest.raises(BlobError, match="modified on disk"):
        await arts.load_bytes(saved.id)


def test_temp_files_of_a_killed_save_are_removed_when_the_workspace_opens(
    tmp_path: Path,
) -> None:
    open_workspace(tmp_path / "ws").close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    leftover = tmp_path / "ws" / "artifacts" / "ab"
    leftover.mkdir()
    stale = leftover / f".tmp-{dead_pid}-deadbeef"
    stale.write_bytes(b"half a file")
    live = tmp_path / "ws" / "blobs" / f".tmp-{os.getppid()}-cafe"  # a live process's
    live.write_bytes(b"being written")
    open_workspace(tmp_path / "ws").close()
    assert not stale.exists()
    assert live.exists()


# ------------------------------------------------- folder deleted, corrupted file
async def test_a_workspace_deleted_under_a_live_manager_is_reported_and_recreated(
    tmp_path: Path,
) -> None:
    import shutil

    manager = RunManager(registry=registry_with_echo(), **workspace_runtime(tmp_path / "ws"))
    try:
        first = (await manager.run_and_wait("echo", inputs={"x": 1}))[0]
        shutil.rmtree(tmp_path / "ws")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            second, outputs, _, _ = await manager.run_and_wait("echo", inputs={"x": 2})
            await manager.store.flush()
        messages = [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)]
        assert any("deleted or replaced" in m and str(tmp_path / "ws") in m for m in messages)
        assert second.status is RunStatus.succeeded and outputs == {"result": 2}
        assert (tmp_path / "ws" / "ag.sqlite3").is_file()
        assert mode(tmp_path / "ws") == "0o700"
        await manager.store.flush()
        conn = sqlite3.connect(tmp_path / "ws" / "ag.sqlite3")
        try:
            ids = {r[0] for r in conn.execute("SELECT run_id FROM runs")} | {
                r[0] for r in conn.execute("SELECT run_id FROM run_journal")
            }
        finally:
            conn.close()
        assert second.run_id in ids  # written to the new database
        assert first.run_id not in ids  # gone with the folder, as the warning says
        third = (await manager.run_and_wait("echo", inputs={"x": 3}))[0]
        assert "durable" not in third.meta
    finally:
        await manager.close()


def test_a_corrupted_database_is_named_kept_untouched_and_explained(tmp_path: Path) -> None:
    open_workspace(tmp_path / "ws").close()
    db = tmp_path / "ws" / "ag.sqlite3"
    for side in ("ag.sqlite3-wal", "ag.sqlite3-shm"):
        (tmp_path / "ws" / side).unlink(missing_ok=True)
    garbage = b"this is not a database at all " * 200
    db.write_bytes(garbage)
    with pytest.raises(WorkspaceCorruptError) as info:
        open_workspace(tmp_path / "ws")
    message = str(info.value)
    assert "corrupted" in message and str(db) in message and "move it aside" in message
    assert "free" not in message  # never "free some disk space"
    assert db.read_bytes() == garbage


# -------------------------------------------------------------- odd values
async def test_cyclic_and_too_deep_values_get_precise_errors(session: Any) -> None:
    kv = (await session()).kv()
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="circular reference"):
        await kv.set("c", cyclic)
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nest too deeply"):
        await kv.set("d", deep)
    with pytest.raises(TypeError, match="NaN"):
        await kv.set("n", float("nan"))
    mem = (await session()).memory()
    with pytest.raises(TypeError, match=r"tags=\['urgent'\]"):
        await mem.record("note", {"x": 1}, tags="urgent")


async def test_free_text_with_odd_unicode_round_trips(session: Any) -> None:
    odd = "caf\udce9 \x00 \U0001f600 \u202e"
    ctx = await session()
    await ctx.kv().set("odd", {"v": odd})
    assert await ctx.kv().get("odd") == {"v": odd}
    event = await ctx.memory().record("note", {"text": odd})
    assert (await ctx.memory().recent(1))[0].data == {"text": odd} == event.data


# -------------------------------------------------------------- deep pages
async def test_deep_pages_build_only_the_page(tmp_path: Path, monkeypatch: Any) -> None:
    ws = open_workspace(tmp_path / "ws")
    store = sqlite_store.SqliteRunStore(ws, owns_workspace=True)
    conn = ws.engine.connection()
    rows = [
        (f"run-{i:08d}", "g", "succeeded", f"2026-01-01T00:{i // 6000 % 60:02d}:"
         f"{i // 100 % 60:02d}.{i:06d}+00:00", None, None, None, None, "app", "normal",
         "normal", None, None, None, "[]", "{}", "tok", i, None, None, None, None, None)
        for i in range(100_000)
    ]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sqlite_store.UPSERT_RUN_SQL, rows)
    conn.execute("COMMIT")
    built = 0
    real = sqlite_store.row_to_record

    def counting(row: Any) -> Any:
        nonlocal built
        built += 1
        return real(row)

    monkeypatch.setattr(sqlite_store, "row_to_record", counting)
    try:
        page = await store.list(limit=50, offset=99_800)
        assert len(page) == 50 and built == 50
        everything = sorted((r[3], r[0]) for r in rows)
        expected = [run_id for _, run_id in reversed(everything)][99_800:99_850]
        assert [r.run_id for r in page] == expected
    finally:
        await store.close()


# ------------------------------------------------------ swallowed cancellation
def swallowing_registry(release: asyncio.Event | None = None) -> GraphRegistry:
    registry = GraphRegistry()

    @graph_fn("stubborn", registry=registry)
    async def stubborn(times: int) -> str:
        swallowed = 0
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed >= times:
                    raise
                if release is not None and release.is_set():
                    return "gave up swallowing"

    return registry


async def test_a_body_that_swallows_cancellation_is_cancelled_again_until_it_stops() -> None:
    manager = RunManager(registry=swallowing_registry(), cancel_timeout_s=5)
    try:
        record = await manager.submit_run("stubborn", inputs={"times": 3})
        await asyncio.sleep(0.01)
        await manager.cancel_run(record.run_id)
        final = await manager.wait_run(record.run_id, timeout_s=3)
        assert final.status is RunStatus.canceled
        assert "cancel_ignored" not in final.meta
    finally:
        await manager.close()


async def test_a_body_that_never_stops_is_left_and_marked_after_the_timeout() -> None:
    release = asyncio.Event()
    manager = RunManager(registry=swallowing_registry(release), cancel_timeout_s=0.3)
    try:
        record = await manager.submit_run("stubborn", inputs={"times": 10**9})
        await asyncio.sleep(0.01)
        await manager.cancel_run(record.run_id)
        with pytest.raises(TimeoutError):
            await manager.wait_run(record.run_id, timeout_s=1.0)
        current = await manager.get_record(record.run_id)
        assert current.status is RunStatus.cancellation_requested
        assert current.meta["cancel_ignored"] is True
        # When it finally returns, it ends canceled (its outputs kept, as it ignored us).
        release.set()
        record.run_id in manager._live and manager._live[record.run_id].task.cancel()
        final = await manager.wait_run(record.run_id, timeout_s=5)
        assert final.status is RunStatus.canceled and final.meta["cancel_ignored"] is True
    finally:
        await manager.close(timeout_s=0.2)


# -------------------------------------------------------------- migration
LANDED_WRITER = """
    import asyncio, sys
    from ag_jupyter.runtime import GraphRegistry, RunManager, graph_fn
    from ag_jupyter.runtime.workspace import workspace_runtime

    registry = GraphRegistry()

    @graph_fn("old", registry=registry)
    async def old(x: int, context) -> dict:
        await context.kv().set("old-key", {"v": x})
        await context.memory().record("old-kind", {"n": x}, tags=["t"])
        art = await context.artifacts().save_bytes(b"old bytes", "old.bin")
        return {"x": x, "art": art.id}

    async def main():
        manager = RunManager(registry=registry, **workspace_runtime(sys.argv[1]))
        final, outputs, _, _ = await manager.run_and_wait(
            "old", inputs={"x": 5}, session_id="legacy")
        print(final.run_id, outputs["art"])
        await manager.close()

    asyncio.run(main())
"""


def _export_landed(dest: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", LANDED, "ag_jupyter"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


async def test_a_workspace_written_by_the_landed_code_opens_and_reads(tmp_path: Path) -> None:
    present = await asyncio.to_thread(
        subprocess.run, ["git", "-C", str(REPO), "cat-file", "-e", LANDED], capture_output=True
    )
    if present.returncode:
        pytest.skip(f"commit {LANDED} is not in this clone")
    old_code = tmp_path / "landed"
    old_code.mkdir()
    await asyncio.to_thread(_export_landed, old_code)
    folder = tmp_path / "ws"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", textwrap.dedent(LANDED_WRITER), str(folder)],
        env={**os.environ, "PYTHONPATH": str(old_code)},
        cwd=tmp_path,  # not the repo: "-c" puts the working folder first on sys.path
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    run_id, art_id = done.stdout.split()
    old_conn = sqlite3.connect(folder / "ag.sqlite3")
    assert old_conn.execute("PRAGMA user_version").fetchone()[0] == 1
    old_conn.close()

    manager = RunManager(registry=registry_with_echo(), **workspace_runtime(folder))
    try:
        ws = manager.store.workspace  # type: ignore[attr-defined]
        assert ws.migrated_on_open["runs"] == (1, 2)
        record, outputs = await manager.wait_run(run_id, return_outputs=True)
        assert record.status is RunStatus.succeeded and outputs == {"x": 5, "art": art_id}
        assert await manager.get_inputs(run_id) == {}  # runs stored before inputs were kept
        ctx = Ctx()
        ctx.session_id = "legacy"
        # The landed kv was session-scoped: its keys are in that session's scope now.
        kv = manager.services.get("kv", ctx)
        assert await kv.session_scope("legacy").get("old-key") == {"v": 5}
        events = await manager.services.get("memory", ctx).recent(5)
        assert [e.kind for e in events] == ["old-kind"]
        assert await manager.services.get("artifacts", ctx).load_bytes(art_id) == b"old bytes"
        new = (await manager.run_and_wait("echo", inputs={"x": 9}))[0]
        assert await manager.get_inputs(new.run_id) == {"x": 9}
        versions = ws.read_sync(
            lambda c: dict(c.execute("SELECT name, version FROM schema_components"))
        )
        assert versions["runs"] == 2 and versions["kv"] >= 1 and "run_logs" in versions
    finally:
        await manager.close()
    # And the landed code is refused cleanly? No: it has no way to know; the format
    # version (2) is newer than its schema (1), which it reports as written by a newer
    # ag_jupyter.
    check = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import sys; from ag_jupyter.runtime.workspace import "
         "open_workspace; open_workspace(sys.argv[1])", str(folder)],
        env={**os.environ, "PYTHONPATH": str(old_code)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode != 0 and "newer ag_jupyter" in check.stderr


# ---------------------------------------------------------- pruning and stats
async def test_prune_removes_finished_runs_and_what_hangs_off_them(tmp_path: Path) -> None:
    manager = RunManager(registry=registry_with_echo(), **workspace_runtime(tmp_path / "ws"))
    try:
        big = "q" * (sqlite_store.BLOB_THRESHOLD + 1)
        old_runs = [(await manager.run_and_wait("echo", inputs={"x": big + str(i)}))[0]
                    for i in range(3)]
        saved = await manager.run_and_wait("save", inputs={"text": "only this run"})
        kept = [(await manager.run_and_wait("echo", inputs={"x": i}))[0] for i in range(2)]
        ws = manager.store.workspace  # type: ignore[attr-defined]
        before = await ws.stats()
        assert before["rows"]["runs"] + before["rows"]["run_journal"] >= 6
        assert before["files"]["blobs"] >= 3 and before["files"]["artifacts"] == 1
        result = await manager.prune(keep_last=2)
        assert result["runs"] == 4 and result["files"] >= 4 and result["bytes"] > 3 * len(big)
        after = await ws.stats()
        assert after["files"] == {"artifacts": 0, "blobs": 0}
        assert after["rows"]["runs"] == 2 and after["rows"]["artifacts"] == 0
        for record in [*old_runs, saved[0]]:
            with pytest.raises(LookupError):
                await manager.get_record(record.run_id)
        assert [r.run_id for r in await manager.list_records()] == [k.run_id for k in
                                                                    reversed(kept)]
        with pytest.raises(ValueError, match="finished runs only"):
            await manager.prune(statuses=["running"])
    finally:
        await manager.close()


async def test_prune_never_removes_a_live_run(tmp_path: Path) -> None:
    registry = GraphRegistry()
    gate = asyncio.Event()

    @graph_fn("wait_gate", registry=registry)
    async def wait_gate() -> None:
        await gate.wait()

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    try:
        live = await manager.submit_run("wait_gate", inputs={})
        await asyncio.sleep(0)
        result = await manager.prune(older_than_s=0)
        assert result["runs"] == 0
        gate.set()
        assert (await manager.wait_run(live.run_id, timeout_s=5)).status is RunStatus.succeeded
    finally:
        await manager.close()
