"""context.artifacts(): content-addressed files in the workspace."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import NodeContext, RunManager, build_adhoc_context
from ag_jupyter.runtime.errors import WorkspaceWriteError
from ag_jupyter.runtime.services.artifacts import Artifact, ArtifactNotFoundError

ContextFactory = Callable[..., Any]


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def test_save_and_load_text_json_bytes(session: ContextFactory) -> None:
    arts = (await session(run_id="r1")).artifacts()
    text = await arts.save_text("héllo", "notes.md")
    assert isinstance(text, Artifact)
    assert text.id == hashlib.sha256("héllo".encode()).hexdigest() == text.sha256
    assert (text.name, text.mime, text.size) == ("notes.md", "text/markdown", 6)
    assert (text.run_id, text.session_id) == ("r1", "s1")
    assert await arts.load_text(text.id) == "héllo"

    data = await arts.save_json({"a": [1, 2], "b": None})
    assert (data.name, data.mime) == ("data.json", "application/json")
    assert await arts.load_json(data.id) == {"a": [1, 2], "b": None}

    raw = await arts.save_bytes(b"\x00\x01\xff", "blob.bin", meta={"source": "test"})
    assert (raw.mime, raw.size, raw.meta) == ("application/octet-stream", 3, {"source": "test"})
    assert await arts.load_bytes(raw.id) == b"\x00\x01\xff"
    assert await arts.get(raw.id) == raw


async def test_content_lives_at_its_sha256_path(session: ContextFactory, tmp_path: Path) -> None:
    arts = (await session()).artifacts()
    art = await arts.save_bytes(b"content")
    digest = hashlib.sha256(b"content").hexdigest()
    expected = tmp_path / "ws" / "artifacts" / digest[:2] / digest[2:]
    assert await arts.path(art.id) == expected
    assert expected.read_bytes() == b"content"


async def test_same_content_twice_is_stored_once_and_indexed_twice(
    session: ContextFactory, tmp_path: Path
) -> None:
    one = (await session("s1", run_id="r1")).artifacts()
    two = (await session("s2", run_id="r2")).artifacts()
    first = await one.save_text("same", "a.txt")
    second = await two.save_text("same", "b.txt")
    assert first.id == second.id
    assert len(files_under(tmp_path / "ws" / "artifacts")) == 1
    assert [a.name for a in await one.list()] == ["a.txt"]
    assert [a.name for a in await two.list()] == ["b.txt"]
    assert (await one.get(first.id)).name == "b.txt"  # the latest save of that content


async def test_save_file_streams_a_copy(session: ContextFactory, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(payload)
    arts = (await session()).artifacts()
    art = await arts.save_file(source)
    assert (art.name, art.size) == ("big.bin", len(payload))
    assert art.id == hashlib.sha256(payload).hexdigest()
    assert await arts.load_bytes(art.id) == payload
    renamed = await arts.save_file(source, "renamed.dat", mime="application/x-test")
    assert (renamed.name, renamed.mime, renamed.id) == ("renamed.dat", "application/x-test", art.id)
    with pytest.raises(FileNotFoundError):
        await arts.save_file(tmp_path / "missing.bin")
    leftovers = [p for p in files_under(tmp_path / "ws") if p.name.startswith(".tmp-")]
    assert leftovers == []


async def test_path_like_names_are_labels_and_write_nothing_outside(
    session: ContextFactory, tmp_path: Path
) -> None:
    arts = (await session()).artifacts()
    before = files_under(tmp_path)
    art = await arts.save_text("escape?", "../../x")
    art2 = await arts.save_bytes(b"abs", "/etc/passwd")
    assert art.name == "../../x" and art2.name == "/etc/passwd"
    new_files = files_under(tmp_path) - before
    artifact_root = tmp_path / "ws" / "artifacts"
    assert new_files and all(
        artifact_root in p.parents for p in new_files if "ag.sqlite3" not in p.name
    )
    assert not (tmp_path / "x").exists()
    assert await arts.load_text(art.id) == "escape?"


@pytest.mark.parametrize("bad_id", ["0" * 64, "../../etc/passwd", "abc", "A" * 64, 12])
async def test_a_missing_or_malformed_id_raises_a_lookup_error_naming_it(
    session: ContextFactory, bad_id: Any
) -> None:
    arts = (await session()).artifacts()
    for load in (arts.load_bytes, arts.load_text, arts.load_json, arts.path, arts.get):
        with pytest.raises(ArtifactNotFoundError) as info:
            await load(bad_id)
        assert repr(bad_id) in str(info.value)
        assert isinstance(info.value, LookupError)


async def test_list_by_run_or_session(session: ContextFactory) -> None:
    a = (await session("s1", run_id="r1")).artifacts()
    b = (await session("s1", run_id="r2")).artifacts()
    c = (await session("s2", run_id="r3")).artifacts()
    await a.save_text("1", "one")
    await b.save_text("2", "two")
    await c.save_text("3", "three")
    assert [x.name for x in await a.list()] == ["two", "one"]  # this session, newest first
    assert [x.name for x in await a.list(run_id="r2")] == ["two"]
    assert [x.name for x in await a.list(session_id="s2")] == ["three"]
    assert [x.name for x in await a.list(limit=1)] == ["two"]
    with pytest.raises(ValueError, match="limit"):
        await a.list(limit=0)


async def test_wrong_types_are_clear(session: ContextFactory) -> None:
    arts = (await session()).artifacts()
    with pytest.raises(TypeError, match="save_bytes\\(\\) takes bytes; got str"):
        await arts.save_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="save_text\\(\\) takes a str"):
        await arts.save_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got set"):
        await arts.save_json({1, 2})
    with pytest.raises(TypeError, match="names are str labels"):
        await arts.save_text("x", name=Path("a/b"))  # type: ignore[arg-type]


async def test_an_unwritable_artifact_folder_gives_a_clear_error(
    session: ContextFactory, tmp_path: Path
) -> None:
    arts = (await session()).artifacts()
    digest = hashlib.sha256(b"blocked").hexdigest()
    # A file where the blob's folder must go: a real OS refusal, even for root.
    (tmp_path / "ws" / "artifacts" / digest[:2]).write_bytes(b"")
    with pytest.raises(WorkspaceWriteError) as info:
        await arts.save_bytes(b"blocked")
    assert str(tmp_path / "ws" / "artifacts") in str(info.value)
    assert await arts.list() == []  # nothing indexed


async def test_saves_made_inside_a_run_record_the_run(manager: RunManager) -> None:
    from ag_jupyter.runtime import GraphRegistry, graph_fn

    registry = GraphRegistry()
    manager.registry = registry

    @graph_fn("report", registry=registry)
    async def report(context: NodeContext) -> str:
        art = await context.artifacts().save_json({"ok": True}, "report.json")
        return art.id

    final, outputs, _, _ = await manager.run_and_wait("report", inputs={}, session_id="s9")
    ctx = await build_adhoc_context(session_id="s9", run_manager=manager)
    try:
        saved = await ctx.artifacts().list(run_id=final.run_id)
        assert [(a.id, a.run_id, a.session_id) for a in saved] == [
            (outputs["result"], final.run_id, "s9")  # type: ignore[index]
        ]
    finally:
        await ctx.aclose()
