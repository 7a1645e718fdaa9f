"""A workspace written by the landed code (ag_jupyter at 9ec6fcf, before kv, memory and
artifacts followed AetherGraph) opens with this code and its rows still read correctly.

The old code itself writes the workspace: ``git archive`` of that commit runs in a
subprocess (skipped outside a git checkout)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ag_jupyter.runtime import RunManager, build_adhoc_context
from ag_jupyter.runtime.defaults import workspace_runtime

LANDED = "9ec6fcf"
REPO = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    # The editable install's import hook would find this checkout's ag_jupyter first.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, sys.argv[2])
    import ag_jupyter
    assert ag_jupyter.__file__.startswith(sys.argv[2]), ag_jupyter.__file__
    from ag_jupyter.runtime import RunManager, build_adhoc_context
    from ag_jupyter.runtime.defaults import workspace_runtime

    async def main(path):
        manager = RunManager(**workspace_runtime(path))
        ctx = await build_adhoc_context(session_id="old", run_id="old-run", run_manager=manager)
        await ctx.kv().set("answer", {"value": 42})
        await ctx.kv().global_scope().set("g", [1, 2])
        await ctx.memory().record("note", {"i": 1}, tags=["t"])
        await ctx.memory().record("plain", "just text")
        await ctx.memory().record("number", 5)
        await ctx.memory().add_chat_turn("user", "hello from the past")
        await ctx.memory().add_chat_turn("assistant", "hi")
        art = await ctx.artifacts().save_text("old report", "report.md", meta={"k": "v"})
        print(art.id)
        await ctx.aclose()
        await manager.close()

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def landed_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace folder written by the landed code; returns a fresh copy per test."""
    if shutil.which("git") is None:
        pytest.skip("git is not available")
    root = tmp_path_factory.mktemp("landed")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", LANDED, "ag_jupyter"],
        capture_output=True,
    )
    if archive.returncode != 0:
        pytest.skip(f"cannot read commit {LANDED}: {archive.stderr.decode()[:200]}")
    code = root / "code"
    code.mkdir()
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    ws = root / "ws"
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(ws), str(code)],
        env={"PATH": "/usr/bin:/bin", "AG_WORKSPACE": str(root / "x")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (root / "artifact_id").write_text(done.stdout.strip())
    return ws


@pytest.fixture
async def reopened(landed_workspace: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(landed_workspace, ws)
    manager = RunManager(**workspace_runtime(ws))
    ctx = await build_adhoc_context(session_id="old", run_id="new-run", run_manager=manager)
    yield ctx, manager, (landed_workspace.parent / "artifact_id").read_text()
    await ctx.aclose()
    await manager.close()


async def test_landed_kv_rows_read_in_their_scopes(reopened) -> None:
    ctx, manager, _ = reopened
    assert manager.store.workspace.migrated_on_open.get("memory") == (1, 2)
    assert await ctx.kv().session_scope().get("answer") == {"value": 42}
    assert await ctx.kv().get("g") == [1, 2]  # the old global scope is the default now


async def test_landed_memory_events_have_a15_fields(reopened) -> None:
    ctx, _, _ = reopened
    mem = ctx.memory()
    events = await mem.query_events(order_dir="asc")
    assert [e.kind for e in events] == ["note", "plain", "number", "chat.turn", "chat.turn"]
    assert all(e.event_id and e.ts.endswith("Z") for e in events)
    assert len({e.event_id for e in events}) == 5
    note, plain, number = events[:3]
    assert (note.data, json.loads(note.text), note.tags) == ({"i": 1}, {"i": 1}, ["t"])
    assert (plain.data, plain.text) == (None, "just text")
    assert number.data == {"value": 5}
    assert note.run_id == "old-run" and note.session_id == "old"
    assert await mem.recent_data(kinds=["note", "plain", "number"]) == [5, "just text", {"i": 1}]
    assert await mem.recent_chat() == [
        {"role": "user", "text": "hello from the past"},
        {"role": "assistant", "text": "hi"},
    ]
    assert await mem.chat_history() == [
        {"role": "user", "content": "hello from the past"},
        {"role": "assistant", "content": "hi"},
    ]
    new = await mem.record("after", {"ok": True})
    assert (await mem.recent(limit=1))[0] == new


async def test_landed_artifacts_read_with_a15_fields(reopened) -> None:
    ctx, manager, artifact_id = reopened
    arts = ctx.artifacts()
    assert manager.store.workspace.migrated_on_open.get("artifacts") == (1, 2)
    art = await arts.get_by_id(artifact_id)
    assert art is not None
    assert art.artifact_id == hashlib.sha256(b"old report").hexdigest()
    assert (art.name, art.kind, art.mime, art.bytes) == ("report.md", "text", "text/markdown", 10)
    assert (art.labels, art.metrics, art.tags, art.pinned) == ({"k": "v"}, {}, [], False)
    assert (art.run_id, art.session_id) == ("old-run", "old")
    assert await arts.load_text(art.uri) == "old report"
    assert [a.artifact_id for a in await arts.list(level="session")] == [artifact_id]
    await arts.pin(artifact_id)
    assert (await arts.get_by_id(artifact_id)).pinned is True
