"""context.artifacts(): AetherGraph's artifact API (Artifact model, save_*/load_*, URIs,
list/search/best, pin, writer, local paths) on content-addressed files in the workspace."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import NodeContext, RunManager, build_adhoc_context, graph_fn
from ag_jupyter.runtime.errors import ArtifactURIError, WorkspaceWriteError
from ag_jupyter.runtime.services.artifacts import URI_PREFIX, Artifact, ArtifactNotFoundError

ContextFactory = Callable[..., Any]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


async def _run(manager: RunManager, graph: str, inputs: dict | None = None, **kw: Any) -> dict:
    final, outputs, _, _ = await manager.run_and_wait(graph, inputs=inputs or {}, **kw)
    assert final.status == "succeeded", final.error
    return outputs or {}


# ------------------------------------------------- a15 facade docstring examples
async def test_a15_facade_py_L794_L799_save_text(session: ContextFactory) -> None:
    context = await session(run_id="adhoc-r")
    plain = await context.artifacts().save_text("Hello, world!")
    assert isinstance(plain, Artifact)
    assert (plain.kind, plain.mime, plain.bytes, plain.name) == (
        "text",
        "text/plain",
        13,
        "text.txt",
    )
    assert plain.artifact_id == hashlib.sha256(b"Hello, world!").hexdigest() == plain.sha256
    assert plain.uri == URI_PREFIX + plain.artifact_id
    art = await context.artifacts().save_text(
        "Experiment results",
        name="results.txt",
        labels={"experiment": "A1"},
        metrics={"accuracy": 0.98},
        pin=True,
    )
    assert art.name == "results.txt" and art.pinned is True
    assert art.labels == {"experiment": "A1", "filename": "results.txt"}
    assert art.metrics == {"accuracy": 0.98}
    assert (art.run_id, art.session_id, art.graph_id, art.node_id) == (
        "adhoc-r",
        "s1",
        "adhoc",
        "adhoc",
    )
    assert await context.artifacts().load_text(art.uri) == "Experiment results"


async def test_a15_facade_py_L868_L873_save_json_and_load_json_by_id(
    session: ContextFactory,
) -> None:
    context = await session()
    a = await context.artifacts().save_json({"foo": "bar", "count": 42})
    b = await context.artifacts().save_json(
        {"results": [1, 2, 3]},
        name="results.json",
        labels={"experiment": "A1"},
        metrics={"accuracy": 0.98},
        pin=True,
    )
    assert (a.kind, a.mime) == ("json", "application/json")
    assert await context.artifacts().load_json_by_id(a.artifact_id) == {"foo": "bar", "count": 42}
    data = await context.artifacts().load_json_by_id(b.artifact_id)  # L1154
    assert data["results"] == [1, 2, 3]
    assert json.loads(await context.artifacts().load_text_by_id(b.artifact_id)) == data  # L1110


async def test_a15_facade_py_L674_L683_save_file(session: ContextFactory, tmp_path: Path) -> None:
    context = await session()
    output = tmp_path / "output.txt"
    output.write_text("log line\n")
    data_csv = tmp_path / "data.csv"
    data_csv.write_text("a,b\n1,2\n")
    artifact = await context.artifacts().save_file(
        path=str(output),
        kind="text",
        labels={"category": "logs"},
    )
    assert artifact.kind == "text" and artifact.labels == {
        "category": "logs",
        "filename": "output.txt",
    }
    artifact = await context.artifacts().save_file(
        path=str(data_csv),
        kind="dataset",
        name="data_backup.csv",
        pin=True,
    )
    assert (artifact.name, artifact.mime, artifact.pinned) == ("data_backup.csv", "text/csv", True)
    assert data_csv.exists()  # the user's file is kept (a15 deletes it by default)
    assert await context.artifacts().load_text(artifact) == "a,b\n1,2\n"


async def test_a15_facade_py_L945_L951_writer(session: ContextFactory) -> None:
    context = await session()
    async with context.artifacts().writer(kind="binary") as w:
        await w.write(b"some data")
    assert w.artifact is not None and w.artifact.kind == "binary"
    assert await context.artifacts().load_bytes(w.artifact.uri) == b"some data"
    async with context.artifacts().writer(kind="log", planned_ext=".log", pin=True) as w:
        await w.write(b"Log entry 1\n")
        w.add_labels({"source": "app"})
        w.add_metrics({"lines": 1})
    art = w.artifact
    assert art is not None
    assert (art.kind, art.name, art.pinned, art.labels, art.metrics) == (
        "log",
        "data.log",
        True,
        {"source": "app"},
        {"lines": 1},
    )
    with pytest.raises(RuntimeError, match="boom"):
        async with context.artifacts().writer(kind="x") as w:
            w.write(b"never saved")
            raise RuntimeError("boom")
    assert w.artifact is None
    assert [a.kind for a in await context.artifacts().list(kind="x")] == []


async def test_a15_facade_py_L1025_get_by_id_L1068_load_bytes_by_id(
    session: ContextFactory,
) -> None:
    context = await session()
    saved = await context.artifacts().save_bytes(b"\x00\x01", name="blob.bin")
    artifact = await context.artifacts().get_by_id(saved.artifact_id)
    if artifact:
        assert artifact.name == "blob.bin"
    assert artifact == saved
    assert await context.artifacts().get_by_id("artifact_123") is None
    data = await context.artifacts().load_bytes_by_id(saved.artifact_id)
    assert data == b"\x00\x01"
    missing = False
    try:
        data = await context.artifacts().load_bytes_by_id("artifact_456")
    except FileNotFoundError:
        missing = True  # "Artifact not found."
    assert missing


async def test_a15_facade_py_L1843_best_and_L1912_pin(session: ContextFactory) -> None:
    context = await session()
    arts = context.artifacts()
    for acc, loss, domain in ((0.7, 0.9, "finance"), (0.9, 0.4, "health"), (0.8, 0.2, "finance")):
        await arts.save_json(
            {"acc": acc},
            kind="model",
            metrics={"accuracy": acc, "loss": loss},
            labels={"domain": domain},
        )
    await arts.save_json({"no": "metric"}, kind="model")
    best_model = await context.artifacts().best(kind="model", metric="accuracy", metric_mode="max")
    assert best_model is not None and best_model.metrics["accuracy"] == 0.9
    best_loss = await context.artifacts().best(
        kind="model", metric="loss", metric_mode="min", level="run"
    )
    assert best_loss is not None and best_loss.metrics["loss"] == 0.2
    best_artifact = await context.artifacts().best(
        kind="model", metric="accuracy", metric_mode="max", filters={"domain": "finance"}
    )
    assert best_artifact is not None and best_artifact.metrics["accuracy"] == 0.8
    assert await arts.best(kind="model", metric="f1_score", metric_mode="max") is None
    await context.artifacts().pin(best_model.artifact_id, pinned=True)
    assert (await arts.get_by_id(best_model.artifact_id)).pinned is True  # type: ignore[union-attr]
    await context.artifacts().pin(best_model.artifact_id, pinned=False)
    assert (await arts.get_by_id(best_model.artifact_id)).pinned is False  # type: ignore[union-attr]
    assert [a.pinned for a in await arts.list(pinned=True)] == []


# ----------------------------------------------------------- AetherGraph's docs
async def test_docs_key_concepts_artifacts_memory_md_L64_produce_L75_search(
    manager: RunManager, tmp_path: Path
) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 fake")

    @graph_fn(name="produce_artifact", outputs=["report_uri"])
    async def produce_artifact(*, context):
        art = await context.artifacts().save_file(
            path=str(report), kind="report", labels={"exp": "A"}
        )
        results = await context.artifacts().search(kind="report", labels={"exp": "A"})
        assert [r.uri for r in results] == [art.uri]  # the same run finds it
        return {"report_uri": art.uri}

    @graph_fn(name="search_reports", outputs=["top_uri"])
    async def search_reports(*, context):
        results = await context.artifacts().search(kind="report", labels={"exp": "A"})
        return {"top_uri": results[0].uri if results else None}

    produced = await _run(manager, "produce_artifact")
    assert produced["report_uri"].startswith(URI_PREFIX)
    # a15 searches the current run by default: another run finds nothing, as in a15
    assert await _run(manager, "search_reports") == {"top_uri": None}


async def test_docs_tutorials_t4_md_L29_to_L139(session: ContextFactory, tmp_path: Path) -> None:
    context = await session()
    arts = context.artifacts()
    (tmp_path / "report.pdf").write_bytes(b"%PDF report")
    art = await arts.save_file(
        path=str(tmp_path / "report.pdf"),
        kind="report",  # a short noun; you'll filter/rank by this
        labels={"exp": "A"},  # 1–3 filters you actually plan to query
    )
    path = await arts.as_local_file(art)  # L37
    assert Path(path).read_bytes() == b"%PDF report"  # noqa: ASYNC240
    png_bytes = PNG
    async with arts.writer(kind="plot", planned_ext=".png") as w:  # L45
        w.write(png_bytes)
    assert w.artifact is not None and w.artifact.mime == "image/png"
    hits = await arts.search(kind="report", labels={"exp": "A"})  # L98
    assert [h.artifact_id for h in hits] == [art.artifact_id]
    for step, acc in ((1, 0.5), (2, 0.75)):
        await arts.save_text(f"ckpt {step}", kind="checkpoint", metrics={"val_acc": acc})
    best = await arts.best(  # L107
        kind="checkpoint",
        metric="val_acc",  # must exist in artifact.metrics
        mode="max",  # or "min"
        scope="run",  # limit to current run | graph | node
    )
    assert best is not None
    best_path = await arts.as_local_file(best)
    assert Path(best_path).read_text() == "ckpt 2"  # noqa: ASYNC240
    cfg_art = await arts.save_json({"lr": 1e-3, "batch": 64})  # L126
    log_art = await arts.save_text("training finished ok")
    all_run_outputs = await arts.list(scope="run")  # L133
    assert {a.artifact_id for a in all_run_outputs} >= {cfg_art.artifact_id, log_art.artifact_id}
    assert len(all_run_outputs) == 6
    await arts.pin(artifact_id=cfg_art.artifact_id)  # L139
    assert [a.artifact_id for a in await arts.list(pinned=True)] == [cfg_art.artifact_id]


async def test_docs_examples_memory_artifact_md_L137_to_L230(
    session: ContextFactory, tmp_path: Path
) -> None:
    context = await session()
    arts, mem = context.artifacts(), context.memory()
    log_art = await arts.save_text(
        "This is a tiny experiment log.",
        suggested_uri="./logs/experiment_001.txt",
    )
    assert log_art.name == "experiment_001.txt" and log_art.uri.startswith(URI_PREFIX)
    metrics_art = await arts.save_json(
        {"epoch": 3, "train_loss": 0.42, "val_loss": 0.55},
        suggested_uri="./metrics/exp001_epoch3.json",
    )
    checkpoint_path = tmp_path / "exp001_step100.pt"
    checkpoint_path.write_bytes(b"weights")
    ckpt_art = await arts.save(
        str(checkpoint_path),
        kind="model_checkpoint",
        labels={"experiment": "exp001", "step": "100"},
        metrics={"val_loss": 0.55},
        suggested_uri="./checkpoints/exp001_step100.pt",
        pin=True,  # mark as important/keep
    )
    assert ckpt_art.id == ckpt_art.artifact_id and ckpt_art.kind == "model_checkpoint"
    assert ckpt_art.labels == {
        "experiment": "exp001",
        "step": "100",
        "filename": "exp001_step100.pt",
    }
    arts_in_run = await arts.list(scope="run")
    assert len(arts_in_run) == 3
    exp_ckpts = await arts.search(
        kind="model_checkpoint", labels={"experiment": "exp001"}, scope="run"
    )
    assert [a.uri for a in exp_ckpts] == [ckpt_art.uri]
    best_ckpt = await arts.best(
        kind="model_checkpoint",
        metric="val_loss",
        mode="min",  # minimize validation loss
        scope="run",
        filters={"experiment": "exp001"},
    )
    assert best_ckpt is not None and best_ckpt.metrics == {"val_loss": 0.55}
    metrics = await arts.load_artifact(metrics_art.uri)  # a15 returns the bytes
    assert json.loads(metrics) == {"epoch": 3, "train_loss": 0.42, "val_loss": 0.55}
    ckpt_bytes = await arts.load_artifact_bytes(ckpt_art.uri)
    assert len(ckpt_bytes) == len(b"weights")
    local_ckpt_path = arts.to_local_file(ckpt_art)
    assert Path(local_ckpt_path).read_bytes() == b"weights"  # noqa: ASYNC240
    # §6: memory + artifacts
    await mem.write_result(
        topic="trainer.exp002",
        outputs=[
            {"name": "final_val_loss", "kind": "number", "value": 0.24},
            {"name": "metrics_uri", "kind": "uri", "value": metrics_art.uri},
        ],
        tags=["training", "exp002"],
        message="Training finished for exp002",
        metrics={"epoch": 10},
    )
    trainer_outs = await mem.get_last_outputs_for_topic("trainer.exp002")
    assert trainer_outs is not None
    loaded = await arts.load_artifact(trainer_outs["last_outputs"]["metrics_uri"])
    assert json.loads(loaded)["epoch"] == 3


async def test_examples_method_showcase_3_artifacts_save_txt_json_py(manager: RunManager) -> None:
    @graph_fn(name="save_text_json")
    async def save_text_json(*, context: NodeContext):
        arts = context.artifacts()
        sample_text = "This is a sample text to be saved as a JSON artifact."
        art_text = await arts.save_text(sample_text, suggested_uri="./sample.txt")
        sample_json = {"message": "Hello, World!", "value": 42, "items": [1, 2, 3]}
        art_json = await arts.save_json(sample_json, suggested_uri="./sample.json")
        return {"text_uri": art_text.uri, "json_uri": art_json.uri}

    @graph_fn(name="retrieve_artifacts")
    async def retrieve_artifacts_by_uri(text_uri, json_uri, *, context: NodeContext):
        arts = context.artifacts()
        art_text = await arts.load_text(text_uri)
        art_json = await arts.load_json(json_uri)
        assert art_json["value"] == 42
        path_text = arts.to_local_path(text_uri)
        path_json = arts.to_local_path(json_uri)
        with open(path_text) as f:  # noqa: ASYNC230 (the example's code)
            art_text = f.read()
        with open(path_json) as f:  # noqa: ASYNC230
            art_json = f.read()
        return {"text_content": art_text, "json_content": art_json}

    uris = await _run(manager, "save_text_json")
    contents = await _run(manager, "retrieve_artifacts", uris)
    assert contents["text_content"] == "This is a sample text to be saved as a JSON artifact."
    assert json.loads(contents["json_content"])["items"] == [1, 2, 3]


async def test_examples_method_showcase_4_artifacts_save_search_files_py(
    manager: RunManager,
) -> None:
    """The example draws its PNG with matplotlib (not a dependency here): the test writes
    PNG bytes into the same ``tmp_path`` instead; the rest is the example's code."""

    @graph_fn(name="save_and_search_image")
    async def save_and_search_image(*, context: NodeContext):
        arts = context.artifacts()
        tmp_path = await arts.tmp_path(suffix=".png")
        Path(tmp_path).write_bytes(PNG)  # noqa: ASYNC240 (for plt.savefig(tmp_path, ...))
        art_image = await arts.save(
            tmp_path,
            kind="image",
            suggested_uri="./red_dot.png",
            labels={"experiment": "exp001", "step": "100"},
            metrics={"val_loss": 0.55},
            pin=True,
        )
        assert not os.path.exists(tmp_path)  # noqa: ASYNC240 (moved into the store)
        results = await arts.search(kind="image", scope="run")
        results = await arts.search(kind="image", labels={"experiment": "exp001"}, scope="run")
        results = await arts.search(kind="image", metric="val_loss", mode="min", scope="run")
        best_art = await arts.best(
            kind="image", metric="val_loss", mode="min", filters={"experiment": "exp001"}
        )
        assert best_art is not None and best_art.uri == art_image.uri
        return {"found_count": len(results), "artifacts": [art.uri for art in results]}

    got = await _run(manager, "save_and_search_image")
    assert got["found_count"] == 1


# ------------------------------------------------------------------------ behaviour
async def test_uris_from_outside_the_workspace_are_refused(
    session: ContextFactory, tmp_path: Path
) -> None:
    arts = (await session()).artifacts()
    outside = tmp_path / "secret.txt"
    outside.write_text("not an artifact")
    art = await arts.save_text("inside")
    for uri in (
        str(outside),
        f"file://{outside}",
        "file:///tmp/model.bin",
        "s3://bucket/data.bin",
        "/etc/passwd",
        str(Path(await arts.as_local_file(art)).parent / ".." / ".." / "ag.sqlite3"),
    ):
        with pytest.raises(ArtifactURIError, match="save_file"):
            await arts.load_bytes(uri)
        with pytest.raises(ArtifactURIError):
            await arts.as_local_file(uri)
    with pytest.raises(ArtifactURIError, match="not an artifact URI"):
        await arts.load_text(URI_PREFIX + "../../etc/passwd")
    # an artifact's own file path (as as_local_file returns it) is accepted
    local = await arts.as_local_file(art)
    assert await arts.load_text(local) == "inside" == await arts.load_text(f"file://{local}")


async def test_same_content_is_one_artifact_newest_save_wins(
    session: ContextFactory, tmp_path: Path
) -> None:
    one = (await session("s1", run_id="r1")).artifacts()
    two = (await session("s2", run_id="r2")).artifacts()
    first = await one.save_text("same", name="a.txt")
    second = await two.save_text("same", name="b.txt", kind="other")
    assert first.artifact_id == second.artifact_id
    assert len(files_under(tmp_path / "ws" / "artifacts")) == 1
    assert [a.name for a in await one.list()] == ["a.txt"]
    assert [a.name for a in await two.list()] == ["b.txt"]
    assert [a.name for a in await one.list(level="all")] == ["b.txt"]
    assert (await one.get_by_id(first.artifact_id)).name == "b.txt"  # type: ignore[union-attr]


async def test_list_scopes_and_filters(session: ContextFactory) -> None:
    a = (await session("s1", run_id="r1")).artifacts()
    b = (await session("s1", run_id="r2")).artifacts()
    c = (await session("s2", run_id="r3")).artifacts()
    await a.save_text("1", name="one", tags=["x"], labels={"n": 1, "ok": True})
    await b.save_text("2", name="two", tags=["x", "y"], kind="note")
    await c.save_text("3", name="three")
    assert [x.name for x in await a.list()] == ["one"]  # this run (a15's default)
    assert [x.name for x in await a.list(level="session")] == ["two", "one"]
    assert [x.name for x in await a.list(level="all")] == ["three", "two", "one"]
    assert [x.name for x in await a.list(level="all", tags=["x"])] == ["two", "one"]
    assert [x.name for x in await a.list(level="all", tags=["y"])] == ["two"]
    assert [x.name for x in await a.list(level="all", kind="note")] == ["two"]
    assert [x.name for x in await a.list(level="all", labels={"n": 1})] == ["one"]
    assert [x.name for x in await a.list(level="all", labels={"ok": True})] == ["one"]
    assert [x.name for x in await a.list(level="all", limit=1)] == ["three"]
    assert [x.name for x in await a.list(run_id="r2")] == ["two"]  # older keyword
    assert [x.name for x in await a.list(session_id="s2")] == ["three"]
    assert [x.name for x in await a.search("THR", level="all")] == ["three"]  # content
    assert [x.name for x in await a.search("two", level="all")] == ["two"]  # name
    with pytest.raises(ValueError, match="limit"):
        await a.list(limit=0)
    with pytest.raises(ValueError, match="level"):
        await a.list(level="planet")


async def test_saves_made_inside_a_run_record_the_run(manager: RunManager) -> None:
    @graph_fn("report_run")
    async def report(context: NodeContext) -> str:
        art = await context.artifacts().save_json({"ok": True}, name="report.json")
        return art.artifact_id

    final, outputs, _, _ = await manager.run_and_wait("report_run", inputs={}, session_id="s9")
    ctx = await build_adhoc_context(session_id="s9", run_manager=manager)
    try:
        saved = await ctx.artifacts().list(run_id=final.run_id)
        assert [(a.artifact_id, a.run_id, a.session_id, a.graph_id) for a in saved] == [
            (outputs["result"], final.run_id, "s9", "report_run")  # type: ignore[index]
        ]
    finally:
        await ctx.aclose()


async def test_pinned_artifacts_survive_pruning(manager: RunManager, tmp_path: Path) -> None:
    @graph_fn("save_two")
    async def save_two(context: NodeContext) -> None:
        await context.artifacts().save_text("keep me", pin=True)
        await context.artifacts().save_text("drop me")

    await _run(manager, "save_two")
    pruned = await manager.prune(keep_last=0)
    assert pruned["files"] == 1
    ctx = await build_adhoc_context(run_manager=manager)
    try:
        left = await ctx.artifacts().list(level="all")
        assert [await ctx.artifacts().load_text(a) for a in left] == ["keep me"]
    finally:
        await ctx.aclose()


async def test_older_forms(session: ContextFactory) -> None:
    arts = (await session()).artifacts()
    raw = await arts.save_bytes(b"\x00\x01\xff", "blob.bin", meta={"source": "test"})
    assert (raw.mime, raw.size, raw.meta["source"]) == ("application/octet-stream", 3, "test")
    assert await arts.get(raw.id) == raw
    data = await arts.save_json({"a": 1}, "named.json")
    assert data.name == "named.json"
    with pytest.raises(TypeError, match="the other way round"):
        await arts.save_text("report.md", "# Report")
    assert await arts.load_bytes(raw.id) == b"\x00\x01\xff"
    assert await arts.path(raw.id) == Path(await arts.as_local_file(raw))


async def test_content_lives_at_its_sha256_path(session: ContextFactory, tmp_path: Path) -> None:
    arts = (await session()).artifacts()
    art = await arts.save_bytes(b"content")
    digest = hashlib.sha256(b"content").hexdigest()
    expected = tmp_path / "ws" / "artifacts" / digest[:2] / digest[2:]
    assert await arts.path(art.artifact_id) == expected
    assert expected.read_bytes() == b"content"
    assert arts.to_local_path(art.uri) == str(expected)


async def test_save_file_streams_a_copy(session: ContextFactory, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    payload = os.urandom(3 * 1024 * 1024 + 17)
    source.write_bytes(payload)
    arts = (await session()).artifacts()
    art = await arts.save_file(source)
    assert (art.name, art.bytes, art.kind) == ("big.bin", len(payload), "file")
    assert art.artifact_id == hashlib.sha256(payload).hexdigest()
    assert await arts.load_bytes(art.uri) == payload
    with pytest.raises(FileNotFoundError):
        await arts.save_file(tmp_path / "missing.bin")
    moved = await arts.save_file(source, cleanup=True)
    assert moved.artifact_id == art.artifact_id and not source.exists()
    assert [p for p in files_under(tmp_path / "ws") if p.name.startswith(".tmp-")] == []


async def test_path_like_names_are_labels_and_write_nothing_outside(
    session: ContextFactory, tmp_path: Path
) -> None:
    arts = (await session()).artifacts()
    before = files_under(tmp_path)
    art = await arts.save_text("escape?", name="../../x")
    art2 = await arts.save_bytes(b"abs", "/etc/passwd")
    assert art.name == "../../x" and art2.name == "/etc/passwd"
    artifact_root = tmp_path / "ws" / "artifacts"
    new_files = files_under(tmp_path) - before
    assert new_files and all(
        artifact_root in p.parents for p in new_files if "ag.sqlite3" not in p.name
    )
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("bad_id", ["0" * 64, "../../etc/passwd", "abc", "A" * 64, 12])
async def test_a_missing_or_malformed_id_raises_a_lookup_error_naming_it(
    session: ContextFactory, bad_id: Any
) -> None:
    arts = (await session()).artifacts()
    for load in (arts.load_bytes_by_id, arts.load_text_by_id, arts.load_json_by_id, arts.get):
        with pytest.raises(ArtifactNotFoundError) as info:
            await load(bad_id)
        assert repr(bad_id) in str(info.value)
        assert isinstance(info.value, LookupError) and isinstance(info.value, FileNotFoundError)


async def test_wrong_types_and_values_are_clear(session: ContextFactory) -> None:
    arts = (await session()).artifacts()
    with pytest.raises(TypeError, match="save_bytes\\(\\) takes bytes; got str"):
        await arts.save_bytes("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="save_text\\(\\) takes a str"):
        await arts.save_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got set"):
        await arts.save_json({1, 2})
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="circular"):
        await arts.save_json(cyclic)
    with pytest.raises(TypeError, match="names are str labels"):
        await arts.save_text("x", name=Path("a/b"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        await arts.save_text("x", name="a\x00b")
    with pytest.raises(TypeError, match="list of str"):
        await arts.save_text("x", tags="solo")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="metrics are numbers"):
        await arts.save_text("x", metrics={"acc": "high"})
    with pytest.raises(TypeError, match="takes bytes"):
        async with arts.writer(kind="k") as w:
            w.write("text")  # type: ignore[arg-type]
    assert await arts.list(level="all") == []


async def test_an_unwritable_artifact_folder_gives_a_clear_error(
    session: ContextFactory, tmp_path: Path
) -> None:
    arts = (await session()).artifacts()
    digest = hashlib.sha256(b"blocked").hexdigest()
    (tmp_path / "ws" / "artifacts" / digest[:2]).write_bytes(b"")
    with pytest.raises(WorkspaceWriteError) as info:
        await arts.save_bytes(b"blocked")
    assert str(tmp_path / "ws" / "artifacts") in str(info.value)
    assert await arts.list(level="all") == []
