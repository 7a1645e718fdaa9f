"""The workspace folder: where it is, what it holds, owners, and the default RunManager."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ag_jupyter.runtime import GraphRegistry, RunManager, RunStatus, graph_fn
from ag_jupyter.runtime.defaults import open_workspace, workspace_runtime
from ag_jupyter.runtime.errors import WorkspaceError
from ag_jupyter.runtime.store.sqlite_store import INTERRUPTED_ERROR
from ag_jupyter.runtime.store.workspace import resolve_workspace_path

REPO = Path(__file__).resolve().parent.parent


def run_python(
    code: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (the same venv), returning its output."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_default_folder_is_dot_ag_workspace_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AG_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace_path() == tmp_path / ".ag_workspace"


def test_env_var_sets_the_folder_and_an_explicit_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AG_WORKSPACE", str(tmp_path / "from-env"))
    assert resolve_workspace_path() == tmp_path / "from-env"
    assert resolve_workspace_path(tmp_path / "explicit") == tmp_path / "explicit"


async def test_open_creates_a_wal_database_and_an_artifact_folder(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "new" / "ws")
    try:
        assert ws.db_path == tmp_path / "new" / "ws" / "ag.sqlite3"
        assert ws.artifacts_path.is_dir()
        conn = sqlite3.connect(ws.db_path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert {"runs", "run_journal", "kv", "memory", "artifacts", "owners"} <= tables
            owners = conn.execute("SELECT pid FROM owners").fetchall()
            assert owners == [(os.getpid(),)]
        finally:
            conn.close()
    finally:
        await ws.aclose()
    conn = sqlite3.connect(ws.db_path)
    try:  # closing removes this process's owner row
        assert conn.execute("SELECT count(*) FROM owners").fetchone()[0] == 0
    finally:
        conn.close()


def test_a_file_where_the_folder_should_be_gives_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "ws"
    blocker.write_text("not a folder")
    with pytest.raises(WorkspaceError) as info:
        open_workspace(blocker)
    message = str(info.value)
    assert str(blocker) in message
    assert "AG_WORKSPACE" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_a_read_only_folder_gives_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(WorkspaceError, match="AG_WORKSPACE") as info:
            open_workspace(folder)
        assert str(folder) in str(info.value)
    finally:
        folder.chmod(0o700)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    ws.close()
    conn = sqlite3.connect(ws.db_path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(WorkspaceError, match="newer ag_jupyter"):
        open_workspace(tmp_path / "ws")


async def test_closed_workspace_refuses_work_clearly(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    await ws.aclose()
    await ws.aclose()  # idempotent
    with pytest.raises(WorkspaceError, match="closed"):
        await ws.write(lambda conn: None)
    with pytest.raises(WorkspaceError, match="closed"):
        await ws.read(lambda conn: None)


async def test_workspace_runtime_gives_a_manager_with_kv_memory_and_artifacts(
    tmp_path: Path,
) -> None:
    registry = GraphRegistry()

    @graph_fn("uses_services", registry=registry)
    async def uses_services(context: object) -> dict[str, object]:
        await context.kv().set("k", [1, 2])  # type: ignore[attr-defined]
        await context.memory().record("note", {"n": 1})  # type: ignore[attr-defined]
        art = await context.artifacts().save_text("greeting.txt", name="hi")  # type: ignore[attr-defined]
        return {"kv": await context.kv().get("k"), "art": art.id}  # type: ignore[attr-defined]

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    try:
        final, outputs, _, _ = await manager.run_and_wait(
            "uses_services", inputs={}, session_id="s1"
        )
        assert final.status is RunStatus.succeeded, final.error
        assert outputs is not None and outputs["kv"] == [1, 2]
    finally:
        await manager.close()
    assert manager.store.workspace.closed  # type: ignore[attr-defined]


def test_workspace_runtime_takes_a_path_or_a_workspace_not_both(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    try:
        with pytest.raises(TypeError, match="not both"):
            workspace_runtime(tmp_path / "ws", workspace=ws)
    finally:
        ws.close()


def test_get_run_manager_defaults_to_one_durable_workspace_per_process(tmp_path: Path) -> None:
    """A script calling asyncio.run twice: one workspace opened, runs of the first loop
    visible from the second, and from the next process."""
    code = """
        import asyncio, json
        from ag_jupyter import graph_fn, get_run_manager
        from ag_jupyter.runtime.store import workspace as W

        opened = []
        real_init = W.Workspace.__init__
        def counting_init(self, *a, **k):
            opened.append(1)
            real_init(self, *a, **k)
        W.Workspace.__init__ = counting_init

        @graph_fn("sq")
        async def sq(x: int) -> int:
            return x * x

        async def first():
            final, outputs, _, _ = await get_run_manager().run_and_wait("sq", inputs={"x": 3})
            return final.run_id

        async def second(run_id):
            manager = get_run_manager()
            record = await manager.get_record(run_id)
            return record.status.value, manager.store.workspace.path.name

        run_id = asyncio.run(first())
        status, folder = asyncio.run(second(run_id))
        print(json.dumps({"run_id": run_id, "status": status, "folder": folder,
                          "opened": len(opened)}))
    """
    result = run_python(code, env={"AG_WORKSPACE": str(tmp_path / "shared")})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == "succeeded"
    assert report["folder"] == "shared"
    assert report["opened"] == 1
    check = run_python(
        f"""
        import asyncio
        from ag_jupyter import get_run_manager
        async def main():
            record = await get_run_manager().get_record({report["run_id"]!r})
            print(record.status.value)
        asyncio.run(main())
        """,
        cwd=tmp_path,
        env={"AG_WORKSPACE": str(tmp_path / "shared")},
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == "succeeded"


def test_get_run_manager_without_env_uses_dot_ag_workspace(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AG_WORKSPACE"}
    code = """
        import asyncio
        from ag_jupyter import get_run_manager
        async def main():
            print(get_run_manager().store.workspace.path)
        asyncio.run(main())
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / ".ag_workspace"
    assert (tmp_path / ".ag_workspace" / "ag.sqlite3").exists()


def test_get_run_manager_falls_back_to_memory_with_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the workspace folder should be")
    code = """
        import asyncio, warnings
        from ag_jupyter import graph_fn, get_run_manager
        from ag_jupyter.runtime import InMemoryRunStore

        @graph_fn("one")
        async def one() -> int:
            return 1

        async def main():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                manager = get_run_manager()
            final, outputs, _, _ = await manager.run_and_wait("one", inputs={})
            print(type(manager.store).__name__, final.status.value, outputs)
            print(caught[0].category.__name__, caught[0].message)
        asyncio.run(main())
    """
    result = run_python(code, env={"AG_WORKSPACE": str(blocker)})
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()[-2:]
    assert first == "InMemoryRunStore succeeded {'result': 1}"
    assert second.startswith("RuntimeWarning")
    assert str(blocker) in second and "kept in memory" in second


WRITER = """
    import asyncio, json, sys
    from ag_jupyter.runtime import GraphRegistry, RunManager, graph_fn
    from ag_jupyter.runtime.defaults import workspace_runtime

    tag = sys.argv[1]
    registry = GraphRegistry()

    @graph_fn("work", registry=registry)
    async def work(context, i: int) -> dict:
        await context.kv().global_scope().set(f"{tag}-{i}", {"i": i})
        await context.memory().record("step", {"i": i})
        return {"i": i, "tag": tag}

    async def main():
        manager = RunManager(registry=registry, **workspace_runtime(sys.argv[2]))
        run_ids = []
        for batch in range(10):
            records = [await manager.submit_run("work", inputs={"i": batch * 20 + k},
                                                 session_id=tag, tags=[tag])
                       for k in range(20)]
            for record in records:
                final = await manager.wait_run(record.run_id)
                assert final.status.value == "succeeded", final.error
                run_ids.append(record.run_id)
        await manager.close()
        print(json.dumps(run_ids))

    asyncio.run(main())
"""


def test_two_processes_write_one_workspace_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    open_workspace(folder).close()  # create it first so both children start alike
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), tag, str(folder)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("alpha", "beta")
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    run_ids = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert len(run_ids[0]) == len(run_ids[1]) == 200

    conn = sqlite3.connect(folder / "ag.sqlite3")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM run_journal").fetchone()[0] == 0
        rows = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status"))
        assert rows == {"succeeded": 400}
        assert conn.execute("SELECT count(*) FROM kv WHERE scope = 'global'").fetchone()[0] == 400
        for tag in ("alpha", "beta"):
            count = conn.execute(
                "SELECT count(*) FROM memory WHERE scope = ?", (f"session:{tag}",)
            ).fetchone()[0]
            assert count == 200
        assert conn.execute("SELECT count(*) FROM owners").fetchone()[0] == 0
    finally:
        conn.close()


def _boot_id() -> str:
    path = Path("/proc/sys/kernel/random/boot_id")
    return path.read_text().strip() if path.exists() else ""


def _has_proc() -> bool:
    return Path(f"/proc/{os.getpid()}/stat").exists()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_runs_of_a_dead_owner_are_marked_interrupted_on_open(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    ws = open_workspace(folder)
    me = ws.owner_token
    await ws.aclose()
    dead = _dead_pid()
    conn = sqlite3.connect(folder / "ag.sqlite3")
    now = time.time()
    conn.execute(
        "INSERT INTO owners VALUES ('dead-1', ?, ?, ?, '', ?, ?)",
        (
            dead,
            os.uname().nodename,
            _boot_id(),
            now,
            now,
        ),
    )
    conn.commit()
    # A live owner: this very process (pid and start time match).
    keeper = open_workspace(folder)
    columns = (
        "run_id, graph_id, status, created_at, origin, visibility, importance, tags, meta, owner"
    )
    rows = [
        ("dead-running", "running", "dead-1"),
        ("dead-pending", "pending", "dead-1"),
        ("dead-waiting", "waiting", "dead-1"),
        ("dead-cancelling", "cancellation_requested", "dead-1"),
        ("dead-done", "succeeded", "dead-1"),
        ("unknown-owner", "running", "gone-without-row"),
        ("alive-running", "running", keeper.owner_token),
    ]
    for run_id, status, owner in rows:
        conn.execute(
            f"INSERT INTO runs ({columns}) VALUES (?, 'g', ?, '2026-01-01T00:00:00.000000+00:00',"
            " 'app', 'normal', 'normal', '[]', '{\"keep\": 1}', ?)",
            (run_id, status, owner),
        )
    conn.commit()
    conn.close()

    reopened = open_workspace(folder)
    try:
        assert sorted(reopened.interrupted_on_open) == [
            "dead-cancelling",
            "dead-pending",
            "dead-running",
            "dead-waiting",
            "unknown-owner",
        ]
        conn = sqlite3.connect(folder / "ag.sqlite3")
        conn.row_factory = sqlite3.Row
        by_id = {r["run_id"]: r for r in conn.execute("SELECT * FROM runs")}
        owners = {r["token"] for r in conn.execute("SELECT token FROM owners")}
        conn.close()
    finally:
        await reopened.aclose()
        await keeper.aclose()
    for run_id in reopened.interrupted_on_open:
        row = by_id[run_id]
        assert row["status"] == "failed"
        assert row["error"] == INTERRUPTED_ERROR
        assert row["finished_at"] is not None
        assert json.loads(row["meta"]) == {"keep": 1, "interrupted": True}
    assert by_id["dead-done"]["status"] == "succeeded"
    assert by_id["alive-running"]["status"] == "running"
    assert "dead-1" not in owners and me not in owners


async def test_an_owner_whose_pid_was_reused_is_dead(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    open_workspace(folder).close()
    if not _has_proc():
        pytest.skip("needs /proc to tell a reused pid")
    conn = sqlite3.connect(folder / "ag.sqlite3")
    now = time.time()
    boot = _boot_id()
    # Our own pid, but another start time: the process that registered it is gone.
    conn.execute(
        "INSERT INTO owners VALUES ('old', ?, ?, ?, '1', ?, ?)",
        (os.getpid(), os.uname().nodename, boot, now, now),
    )
    conn.execute(
        "INSERT INTO runs (run_id, graph_id, status, created_at, origin, visibility, "
        "importance, owner) VALUES ('r', 'g', 'running', '2026-01-01T00:00:00.000000+00:00', "
        "'app', 'normal', 'normal', 'old')"
    )
    conn.commit()
    conn.close()
    ws = open_workspace(folder)
    try:
        assert ws.interrupted_on_open == ["r"]
    finally:
        await ws.aclose()


async def test_workspace_serves_several_event_loops(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")

    async def write_and_read(value: int) -> int:
        await ws.write(
            lambda conn: conn.execute(
                "INSERT INTO kv VALUES ('g', ?, ?, NULL, 0)", (f"k{value}", json.dumps(value))
            )
        )
        return await ws.read(lambda conn: conn.execute("SELECT count(*) FROM kv").fetchone()[0])

    counts = await asyncio.gather(
        asyncio.to_thread(asyncio.run, write_and_read(1)),
        asyncio.to_thread(asyncio.run, write_and_read(2)),
        write_and_read(3),
    )
    assert max(counts) == 3
    await ws.aclose()


async def test_a_broken_writer_fails_waiters_instead_of_hanging(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")

    class Broken:
        def take_locked(self) -> object:
            raise RuntimeError("bug in a batch source")

    ws.add_source(Broken())  # type: ignore[arg-type]
    with pytest.raises(WorkspaceError, match=r"writer thread .* stopped"):
        await asyncio.wait_for(ws.write(lambda conn: None), 5)
    with pytest.raises(WorkspaceError, match="closed"):
        await ws.write(lambda conn: None)
    await ws.aclose()
