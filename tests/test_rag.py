"""``context.rag`` / ``context.kb()``: the embedded index in the workspace (FTS5 + WordLlama
vectors), against real code paths: real workspaces on disk, the real embedder (its weights
from the wordllama wheel), subprocesses for restarts and for the offline check, and a
loopback OpenAI-compatible server (tests/test_llm.py's) for ``answer``.

AetherGraph's documented examples are at the end, named after their source file and line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_llm import FakeOpenAIServer, configure_env

from ag_jupyter import graph_fn, open_session
from ag_jupyter.runtime import RunManager, ServiceNotConfiguredError, register_context_service
from ag_jupyter.runtime.defaults import open_workspace, workspace_runtime
from ag_jupyter.runtime.services import unregister_context_service
from ag_jupyter.runtime.services.rag import (
    CallableEmbedder,
    CorpusNotFoundError,
    EmbedderMismatchError,
    KBAnswer,
    KBSearchHit,
    NodeKB,
    NodeRAG,
    RagService,
    SearchHit,
    TextSplitter,
    WordLlamaEmbedder,
    rag_service_for,
)
from ag_jupyter.runtime.services.rag.service import RRF_K, fts_query

REPO = Path(__file__).resolve().parent.parent

GEO = "Paris is the capital of France. The Eiffel tower stands beside the Seine."
CAR = "The mechanic repaired the car engine and replaced the brakes."
BREAD = "Bake the banana bread for forty minutes at medium heat."
MUSIC = "The violinist performed a concerto with the orchestra."


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[RunManager]:
    mgr = RunManager(**workspace_runtime(tmp_path / "ws"))
    yield mgr
    await mgr.close()


@pytest.fixture
async def ctx(manager: RunManager) -> AsyncIterator[Any]:
    async with open_session(run_manager=manager, session_id="s1") as context:
        yield context


async def _fill(rag: Any, corpus: str = "c") -> dict[str, str]:
    result = await rag.upsert_docs(
        corpus,
        [
            {"text": GEO, "title": "geo", "labels": {"topic": "geo", "week": 1}},
            {"text": CAR, "title": "car", "labels": {"topic": "cars", "week": 2}},
            {"text": BREAD, "title": "bread", "labels": {"topic": "food", "week": 2}},
            {"text": MUSIC, "title": "music", "labels": {"topic": "music", "week": 3}},
        ],
    )
    return dict(zip(["geo", "car", "bread", "music"], result["doc_ids"], strict=True))


# ------------------------------------------------------------------------ wiring
async def test_context_rag_is_the_embedded_index_and_also_callable(ctx: Any) -> None:
    rag = ctx.rag
    assert isinstance(rag, NodeRAG)
    assert rag() is rag
    assert isinstance(ctx.kb(), NodeKB)
    assert rag.service is rag_service_for(ctx.manager.store.workspace)


async def test_in_memory_manager_says_rag_needs_a_workspace() -> None:
    mgr = RunManager()
    try:
        async with open_session(run_manager=mgr) as context:
            with pytest.raises(ServiceNotConfiguredError, match="workspace"):
                _ = context.rag
            with pytest.raises(ServiceNotConfiguredError, match="workspace"):
                context.kb()
    finally:
        await mgr.close()


async def test_open_session_and_register_context_service_override_the_embedded_rag(
    manager: RunManager,
) -> None:
    mine = object()
    async with open_session(run_manager=manager, rag=mine) as context:
        assert context.rag is mine
    register_context_service("rag", mine)
    try:
        async with open_session(run_manager=manager) as context:
            assert context.rag is mine
    finally:
        unregister_context_service("rag")
    async with open_session(run_manager=manager) as context:
        assert isinstance(context.rag, NodeRAG)


# ---------------------------------------------------------- upsert/search/delete
async def test_upsert_search_stats_list_and_delete(ctx: Any) -> None:
    rag = ctx.rag
    ids = await _fill(rag)
    stats = await rag.stats("c")
    assert (stats["corpus_id"], stats["docs"], stats["chunks"]) == ("c", 4, 4)
    assert stats["meta"]["embedder"] == WordLlamaEmbedder.name
    hits = await rag.search("c", "What is the capital of France?", k=2)
    assert hits[0].doc_id == ids["geo"] and hits[0].text == GEO
    assert isinstance(hits[0], SearchHit) and hits[0].corpus_id == "c"
    assert hits[0].meta["title"] == "geo" and hits[0].meta["labels"]["topic"] == "geo"
    assert hits[0].meta["labels"]["session_id"] == "s1"  # scope labels, as AetherGraph
    docs = await rag.list_docs("c")
    assert [d["doc_id"] for d in docs] == list(ids.values())
    assert docs[0]["meta"]["labels"]["topic"] == "geo" and docs[0]["title"] == "geo"
    page = await rag.list_docs("c", limit=2, after=ids["car"])
    assert [d["doc_id"] for d in page] == [ids["bread"], ids["music"]]
    assert [c["corpus_id"] for c in await rag.list_corpora()] == ["c"]

    removed = await rag.delete_docs("c", [ids["geo"], "no-such-doc"])
    assert removed == {"removed_docs": 1, "removed_chunks": 1}
    for mode in ("hybrid", "dense", "lexical"):
        found = await rag.search("c", "capital of France Eiffel", k=4, mode=mode)
        assert ids["geo"] not in {h.doc_id for h in found}, mode
    assert (await rag.stats("c"))["docs"] == 3


async def test_delete_removes_chunks_vectors_and_fts_rows(ctx: Any) -> None:
    rag = ctx.rag
    ids = await _fill(rag)
    await rag.search("c", "warm the cache", mode="dense")  # the vectors are in memory now
    await rag.delete_docs("c", [ids["bread"]])
    db = ctx.manager.store.workspace.db_path
    with sqlite3.connect(db) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM rag_docs WHERE doc_id = ?", (ids["bread"],)
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute("SELECT count(*) FROM rag_chunks WHERE corpus_id = 'c'").fetchone()[0] == 3
        )
        assert (
            conn.execute("SELECT rowid FROM rag_fts WHERE rag_fts MATCH 'banana'").fetchall() == []
        )
        conn.execute("INSERT INTO rag_fts(rag_fts) VALUES ('integrity-check')")
    dense = await rag.search("c", "baking a cake in the oven", k=4, mode="dense")
    assert len(dense) == 3 and ids["bread"] not in {h.doc_id for h in dense}


async def test_unknown_corpus_raises_naming_the_known_ones(ctx: Any) -> None:
    await _fill(ctx.rag, "known")
    with pytest.raises(CorpusNotFoundError, match="'known'"):
        await ctx.rag.search("knwon", "x")
    with pytest.raises(LookupError):
        await ctx.rag.stats("knwon")


async def test_upsert_with_a_doc_id_replaces_that_document(ctx: Any) -> None:
    rag = ctx.rag
    await rag.upsert_docs("c", [{"doc_id": "d1", "text": "apples and pears"}])
    await rag.search("c", "fruit", mode="dense")
    await rag.upsert_docs("c", [{"doc_id": "d1", "text": "volcanoes erupt lava"}])
    assert (await rag.stats("c"))["docs"] == 1
    hits = await rag.search("c", "apples", k=5, mode="lexical")
    assert hits == []
    (hit,) = await rag.search("c", "lava", k=5, mode="dense")
    assert hit.doc_id == "d1" and hit.text == "volcanoes erupt lava"


async def test_bad_docs_are_refused_before_anything_is_indexed(ctx: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        await ctx.rag.upsert_docs("c", [{"text": "fine"}, {"path": str(tmp_path / "missing.txt")}])
    with pytest.raises(TypeError, match=r"docs\[0\]"):
        await ctx.rag.upsert_docs("c", ["just a string"])
    await _fill(ctx.rag)
    with pytest.raises(ValueError, match="mode"):
        await ctx.rag.search("c", "x", mode="fuzzy")
    assert (await ctx.rag.stats("c"))["docs"] == 4  # only _fill's


async def test_path_docs_are_read_and_an_empty_doc_is_skipped(ctx: Any, tmp_path: Path) -> None:
    note = tmp_path / "notes.md"
    note.write_text("# Volcanoes\n\nMagma rises and erupts as lava.\n", encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("   \n", encoding="utf-8")
    result = await ctx.rag.upsert_docs("c", [{"path": str(note)}, {"path": str(empty)}])
    assert (result["added"], result["chunks"]) == (1, 1)
    (doc,) = await ctx.rag.list_docs("c")
    assert doc["title"] == "notes.md" and doc["uri"] == note.as_uri()
    (hit,) = await ctx.rag.search("c", "lava", k=3)
    assert hit.text == "# Volcanoes\n\nMagma rises and erupts as lava."


# -------------------------------------------------------------------- modes
async def test_lexical_dense_and_hybrid_modes_rank_differently(ctx: Any) -> None:
    rag = ctx.rag
    ids = await _fill(rag)
    # No shared word: lexical finds nothing, dense finds the paraphrase.
    assert await rag.search("c", "automobile maintenance", mode="lexical") == []
    dense = await rag.search("c", "automobile maintenance", k=4, mode="dense")
    assert dense[0].doc_id == ids["car"] and len(dense) == 4
    assert [h.score for h in dense] == sorted((h.score for h in dense), reverse=True)
    assert all(-1.0001 <= h.score <= 1.0001 for h in dense)
    # A rare word: lexical returns only the document containing it.
    lexical = await rag.search("c", "concerto", k=4, mode="lexical")
    assert [h.doc_id for h in lexical] == [ids["music"]]
    assert lexical[0].meta["scores"]["lexical"] > 0
    # Hybrid: reciprocal-rank fusion of both rankings.
    hybrid = await rag.search("c", "concerto", k=4, mode="hybrid")
    assert hybrid[0].doc_id == ids["music"] and len(hybrid) == 4
    for h in hybrid:
        s = h.meta["scores"]
        expect = sum(1 / (RRF_K + r) for r in (s["dense_rank"], s["lexical_rank"]) if r)
        assert h.score == pytest.approx(expect)


def test_fts_query_quotes_words_and_drops_stop_words() -> None:
    assert fts_query('What is "os.path" AND NOT x-y?') == '"os" OR "path" OR "not" OR "x" OR "y"'
    assert fts_query("the") == '"the"'
    assert fts_query("  ... ") is None


async def test_filters_match_labels_before_ranking(ctx: Any) -> None:
    rag = ctx.rag
    ids = await _fill(rag)
    only_week2 = await rag.search("c", "capital of France", k=5, filters={"week": 2})
    assert {h.doc_id for h in only_week2} == {ids["car"], ids["bread"]}
    either = await rag.search("c", "capital", k=5, filters={"topic": ["geo", "music"]})
    assert {h.doc_id for h in either} == {ids["geo"], ids["music"]}
    a15_style = await rag.search(
        "c", "bread", k=5, filters={"labels.topic": "food"}, mode="lexical"
    )
    assert [h.doc_id for h in a15_style] == [ids["bread"]]
    assert await rag.search("c", "anything", filters={"topic": "none"}) == []
    assert await rag.search("c", "anything", filters={"missing": 1}) == []
    by_scope = await rag.search("c", "music", k=5, scope_id="session:s1")
    assert len(by_scope) == 4
    assert await rag.search("c", "music", k=5, scope_id="session:other") == []


# ------------------------------------------------------------- chunks and spans
def test_chunks_are_exact_spans_of_the_document() -> None:
    paragraphs = [" ".join(f"word{i}_{j}" for j in range(120)) for i in range(9)]
    text = "# Title\n\n" + "\n\n".join(paragraphs) + "\n\n## Part two\n\nshort tail"
    splitter = TextSplitter(target_tokens=200, overlap_tokens=30)
    spans = splitter.split_spans(text)
    assert len(spans) > 3
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert splitter.split(text) == [text[a:b] for a, b in spans]
    covered = set()
    for a, b in spans:
        assert text[a:b] == text[a:b].strip()
        covered.update(range(a, b))
    assert all(i in covered or text[i].isspace() for i in range(len(text)))
    huge = " ".join(f"w{i}" for i in range(1000))  # one block: word windows
    windows = TextSplitter(100, 10).split_spans(huge)
    assert all(len(huge[a:b].split()) <= 100 for a, b in windows)
    assert windows[-1][1] == len(huge)


async def test_search_hits_point_at_real_spans_of_long_documents(ctx: Any) -> None:
    sections = [
        f"## Section {i}\n\n" + " ".join(f"topic{i} detail{j}" for j in range(150))
        for i in range(6)
    ]
    text = "\n\n".join(sections)
    (doc_id,) = (await ctx.rag.upsert_docs("long", [{"text": text, "title": "long"}]))["doc_ids"]
    stored = await ctx.rag.get_doc_text("long", doc_id)
    assert stored == text.strip()
    hits = await ctx.rag.search("long", "topic3", k=3, mode="lexical")
    assert hits and all(stored[h.meta["start"] : h.meta["end"]] == h.text for h in hits)
    assert "topic3" in hits[0].text


# --------------------------------------------------------------------- answer
async def test_answer_against_a_loopback_openai_server_cites_real_spans(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = FakeOpenAIServer()
    srv.chunks = ["Paris ", "[1]."]
    srv.start()
    try:
        configure_env(monkeypatch, srv)
        ids = await _fill(ctx.rag)
        result = await ctx.rag.answer("c", "What is the capital of France?", k=2)
    finally:
        srv.stop()
    assert result["answer"] == "Paris [1]."
    assert result["usage"]["total_tokens"] == 16
    assert set(result) == {"answer", "citations", "usage", "resolved_citations"}
    first = result["citations"][0]
    assert (first["doc_id"], first["rank"]) == (ids["geo"], 1)
    text = await ctx.rag.get_doc_text("c", first["doc_id"])
    assert text[first["start"] : first["end"]] == GEO
    resolved = result["resolved_citations"][0]
    assert resolved["title"] == "geo" and resolved["snippet"] == GEO and resolved["rank"] == 1
    (request,) = srv.requests
    system, user = request["body"]["messages"]
    assert system["role"] == "system" and "Cite chunk numbers" in system["content"]
    assert user["content"].startswith("Question: What is the capital of France?")
    assert f"[1] {GEO}" in user["content"]


async def test_answer_uses_the_llm_passed_in() -> None:
    class Echo:
        def __init__(self) -> None:
            self.seen: list[Any] = []

        async def chat(self, messages: list[dict[str, Any]], **kw: Any) -> tuple[str, dict]:
            self.seen.append(messages)
            return "ok", {"prompt_tokens": 1}

    llm = Echo()
    async with open_session() as context:  # the default workspace
        await context.rag.upsert_docs("c", [{"text": CAR}])
        out = await context.rag.answer(
            "c", "brakes", llm=llm, style="detailed", with_citations=False
        )
    assert out["answer"] == "ok" and "resolved_citations" not in out
    assert "explain reasoning briefly" in llm.seen[0][0]["content"]


# ------------------------------------------------------------------------ XSS
async def test_chunk_text_with_markup_comes_back_unchanged_as_data(ctx: Any) -> None:
    evil = 'Look: <img src=x onerror=alert(1)> and <script>alert("x")</script> done.'
    await ctx.rag.upsert_docs("c", [{"text": evil, "title": "<b>t</b>"}])
    (hit,) = await ctx.rag.search("c", "img onerror", k=1)
    assert hit.text == evil and hit.meta["title"] == "<b>t</b>"
    assert not hasattr(hit, "_repr_html_") and not hasattr(ctx.rag, "_repr_html_")
    assert "<img src=x onerror=alert(1)>" in repr(hit)  # plain text, never HTML
    (doc,) = await ctx.rag.list_docs("c")
    assert doc["title"] == "<b>t</b>"


# ---------------------------------------------------------------- persistence
_SEARCH_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from ag_jupyter.runtime import RunManager, open_session
    from ag_jupyter.runtime.defaults import workspace_runtime

    async def main():
        mgr = RunManager(**workspace_runtime(sys.argv[1]))
        async with open_session(run_manager=mgr) as context:
            hits = await context.rag.search("c", sys.argv[2], k=2, mode=sys.argv[3])
            corpora = [c["corpus_id"] for c in await context.rag.list_corpora()]
        await mgr.close()
        print(json.dumps({"corpora": corpora, "hits": [[h.doc_id, h.text] for h in hits]}))

    asyncio.run(main())
    """
)


def _search_in_subprocess(folder: Path, query: str, mode: str = "hybrid", **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SEARCH_SCRIPT, str(folder), query, mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


async def test_corpora_survive_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    mgr = RunManager(**workspace_runtime(folder))
    async with open_session(run_manager=mgr) as context:
        ids = await _fill(context.rag)
    await mgr.close()
    found = await asyncio.to_thread(
        _search_in_subprocess, folder, "automobile maintenance", "dense"
    )
    assert found["corpora"] == ["c"] and found["hits"][0] == [ids["car"], CAR]
    found = await asyncio.to_thread(_search_in_subprocess, folder, "concerto", "lexical")
    assert found["hits"] == [[ids["music"], MUSIC]]


async def test_a_second_manager_on_the_same_folder_sees_changes(tmp_path: Path) -> None:
    folder = tmp_path / "ws"
    first = RunManager(**workspace_runtime(folder))
    second_ws = open_workspace(folder)
    other = RagService(second_ws)  # another process's view: its own vector cache
    try:
        async with open_session(run_manager=first) as context:
            ids = await _fill(context.rag)
            assert (await other.search("c", "violin orchestra", k=1, mode="dense"))[
                0
            ].doc_id == ids["music"]
            await context.rag.delete_docs("c", [ids["music"]])
            await context.rag.upsert_docs(
                "c", [{"text": "A symphony for strings.", "doc_id": "sym"}]
            )
        hits = await other.search("c", "violin orchestra", k=4, mode="dense")
        assert ids["music"] not in {h.doc_id for h in hits} and "sym" in {h.doc_id for h in hits}
    finally:
        await first.close()
        await second_ws.aclose()


async def test_pruning_runs_leaves_corpora_alone(manager: RunManager) -> None:
    @graph_fn("rag-indexer")
    async def indexer(context) -> int:
        return (await context.rag.upsert_docs("kept", [{"text": BREAD}]))["chunks"]

    _, outputs, _, _ = await manager.run_and_wait("rag-indexer", inputs={})
    assert outputs == {"result": 1}
    assert (await manager.prune(keep_last=0))["runs"] == 1
    async with open_session(run_manager=manager) as context:
        assert (await context.rag.stats("kept"))["chunks"] == 1
        assert (await context.rag.search("kept", "banana", k=1))[0].text == BREAD


# --------------------------------------------------------------------- offline
_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import json, sys
    import numpy as np
    from ag_jupyter.runtime.services.rag import wordllama_embedder

    vectors = wordllama_embedder().embed_sync(["offline embedding works", ""])
    print(json.dumps({
        "shape": list(vectors.shape),
        "norm": float(np.linalg.norm(vectors[0])),
        "empty": float(np.abs(vectors[1]).sum()),
        "wordllama_imported": "wordllama" in sys.modules,
    }))
    """
)


def test_the_embedder_works_with_no_network(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HOME=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["shape"] == [2, 256]
    assert found["norm"] == pytest.approx(1.0, abs=1e-5)
    assert found["empty"] == 0.0
    assert found["wordllama_imported"] is False  # its import calls logging.basicConfig
    assert not (tmp_path / ".cache").exists()


_COMPARE_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from safetensors import safe_open
    from tokenizers import Tokenizer

    from ag_jupyter.runtime.services.rag import WordLlamaEmbedder
    from ag_jupyter.runtime.services.rag.embedders import wordllama_files

    texts = ["short", "a somewhat longer sentence about the standard library", "x " * 300]
    ours = WordLlamaEmbedder().embed_sync(texts)
    from wordllama.inference import WordLlamaInference  # its import configures logging

    weights, tokenizer = wordllama_files()
    with safe_open(str(weights), framework="np") as f:
        matrix = f.get_tensor("embedding.weight")
    theirs = WordLlamaInference(matrix, Tokenizer.from_file(str(tokenizer)))
    np.testing.assert_allclose(ours, theirs.embed(texts, norm=True), atol=1e-5)
    print("same")
    """
)


def test_wordllama_vectors_match_the_packages_own_inference() -> None:
    """Our loader + pooling computes what ``WordLlamaInference.embed(norm=True)`` does (in a
    subprocess: importing ``wordllama`` calls ``logging.basicConfig``)."""
    out = subprocess.run(
        [sys.executable, "-c", _COMPARE_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"


# --------------------------------------------------------------- embedders
async def test_another_embedder_is_refused_on_a_corpus_until_reembedded(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    try:
        calls: list[int] = []

        async def endpoint(texts: list[str]) -> list[list[float]]:
            calls.append(len(texts))
            return [[float(len(t)), 1.0, float(t.count("e"))] for t in texts]

        default = RagService(ws)
        await default.upsert_docs("c", [{"text": CAR}, {"text": BREAD}])
        custom = RagService(ws, embedder=CallableEmbedder(endpoint, name="test-endpoint"))
        with pytest.raises(EmbedderMismatchError, match="reembed"):
            await custom.search("c", "car", mode="dense")
        with pytest.raises(EmbedderMismatchError):
            await custom.upsert_docs("c", [{"text": MUSIC}])
        assert (await custom.search("c", "brakes", mode="lexical"))[0].text == CAR
        assert await custom.reembed("c") == {"reembedded": 2, "model": "test-endpoint"}
        hits = await custom.search("c", "bread", k=2, mode="dense")
        assert len(hits) == 2 and (await custom.stats("c"))["meta"]["dim"] == 3
        assert calls == [1, 2, 1]  # the refused query, the 2 chunks, the query
        with pytest.raises(EmbedderMismatchError):
            await default.search("c", "car", mode="dense")
    finally:
        await ws.aclose()


async def test_an_embedder_returning_the_wrong_count_is_a_clear_error(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    try:
        service = RagService(ws, embedder=lambda texts: [[1.0, 0.0]])
        with pytest.raises(ValueError, match="one vector per text"):
            await service.upsert_docs("c", [{"text": CAR}, {"text": BREAD}])
    finally:
        await ws.aclose()


# --------------------------------------------------------- progress and loop
async def test_indexing_logs_progress_and_keeps_the_loop_responsive(ctx: Any) -> None:
    service = ctx.rag.service
    service.progress_every = 100
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    docs = [
        {"text": " ".join(words[(i + j) % len(words)] for j in range(300)), "title": f"d{i}"}
        for i in range(400)
    ]
    stalls: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            stalls.append(now - last - 0.005)
            last = now

    task = asyncio.create_task(ticker())
    try:
        result = await ctx.rag.upsert_docs("big", docs)
    finally:
        stop.set()
        await task
    assert result["added"] == 400
    lines = [line["message"] for line in ctx.services.logs(ctx.run_id)]
    progress = [m for m in lines if "docs," in m and "big" in m]
    assert len(progress) >= 3, lines
    assert max(stalls) < 0.5, f"event loop stalled {max(stalls):.3f} s while indexing"


# -------------------------------------------------------------------------- kb
async def test_kb_has_a15_signatures_dedupes_and_filters_namespaces(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = ctx.kb()
    first = await kb.upsert_docs("kb", [{"text": GEO}, {"text": CAR}], kb_namespace="ns1")
    again = await kb.upsert_docs("kb", [{"text": GEO}], kb_namespace="ns1")
    other_ns = await kb.upsert_docs("kb", [{"text": GEO}], kb_namespace="ns2")
    assert (first["added"], again["added"], other_ns["added"]) == (2, 0, 1)
    hits = await kb.search(corpus_id="kb", query="capital France", top_k=5, kb_namespace="ns1")
    assert isinstance(hits[0], KBSearchHit) and hits[0].text == GEO
    assert {h.doc_id for h in hits} <= set(first["doc_ids"])
    assert hits[0].meta["chunk_index"] == 0 and hits[0].meta["corpus_id"] == "kb"
    lexical = await kb.search(corpus_id="kb", query="brakes", mode="lexical")
    assert [h.text for h in lexical] == [CAR]
    recent = await kb.search(corpus_id="kb", query="", mode="structural", top_k=1)
    assert recent[0].doc_id == other_ns["doc_ids"][0]
    assert await kb.search(corpus_id="kb", query="x", created_at_min=time.time() + 60) == []
    assert len(await kb.search(corpus_id="kb", query="x", time_window="1h")) == 3
    assert (await kb.stats(corpus_id="kb"))["docs"] == 3
    assert [d["doc_id"] for d in await kb.list_docs(corpus_id="kb", limit=1)] == first["doc_ids"][
        :1
    ]
    nothing = await kb.answer(corpus_id="kb", question="x", filters={"kb_namespace": "none"})
    assert nothing == KBAnswer(answer="", citations=[], usage=None, resolved_citations=[])
    srv = FakeOpenAIServer()
    srv.start()
    try:
        configure_env(monkeypatch, srv)
        answer = await kb.answer(corpus_id="kb", question="Where is the Eiffel tower?", k=2)
    finally:
        srv.stop()
    assert isinstance(answer, KBAnswer) and answer.answer == srv.text
    assert answer.resolved_citations and answer.resolved_citations[0]["snippet"] == GEO
    assert await kb.delete_docs(corpus_id="kb", doc_ids=first["doc_ids"]) == {
        "removed_docs": 2,
        "removed_chunks": 2,
    }


# ------------------------------------------------ AetherGraph's documented examples
# node_rag.py / facade.py: src/aethergraph/services/rag/ at commit 8437d61 (the last with
# node_rag.py); node_kb.py: src/aethergraph/services/knowledge/ at 154b13c (0.1.0a15);
# t5: aethergraph-docs docs/tutorials/t5-add-intelligence-llm-rag.md. Bodies as written
# there, only the imports changed; setup lines (the corpus they assume) are marked.


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    srv = FakeOpenAIServer()
    srv.start()
    configure_env(monkeypatch, srv)
    try:
        yield srv
    finally:
        srv.stop()


async def test_node_rag_py_53_and_58_bind_corpus(ctx: Any) -> None:
    context = ctx
    corpus_id = await context.rag().bind_corpus()
    assert corpus_id == "mem:session:s1:default"
    corpus_id = await context.rag().bind_corpus(key="my-data", labels={"source": "user-upload"})
    assert corpus_id == "mem:session:s1:my-data"
    (meta,) = [c["meta"] for c in await context.rag().list_corpora() if c["corpus_id"] == corpus_id]
    assert meta["meta"]["source"] == "user-upload"


async def test_node_rag_py_114_and_125_upsert_docs(
    ctx: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = ctx
    await context.rag().upsert_docs(
        corpus_id="my-corpus",
        docs=[
            {"text": "Document content...", "title": "Doc Title"},
            {"text": "Another doc", "labels": {"source": "user-upload"}},
        ],
    )
    _write_pdf(tmp_path / "path/to/file.pdf", "Quarterly report: revenue grew 12 percent.")
    monkeypatch.chdir(tmp_path)  # setup: the example's relative-looking path, under tmp
    await context.rag().upsert_docs(
        corpus_id="my-corpus", docs=[{"path": "path/to/file.pdf", "labels": {"type": "pdf"}}]
    )
    docs = await context.rag().list_docs("my-corpus")
    assert [d["title"] for d in docs] == ["Doc Title", "untitled", "file.pdf"]
    assert docs[2]["meta"]["pages"] == 1
    (hit,) = await context.rag().search("my-corpus", "revenue", k=1, mode="lexical")
    assert "revenue grew 12 percent" in hit.text


async def test_node_rag_py_174_and_182_search(ctx: Any) -> None:
    context = ctx
    await context.rag().upsert_docs(  # setup
        "my-corpus",
        [{"text": GEO}, {"text": "Roadmap: ship v2 in May.", "labels": {"type": "meeting-notes"}}],
    )
    hits = await context.rag().search(corpus_id="my-corpus", query="What is the capital of France?")
    assert hits[0].text == GEO
    hits = await context.rag().search(
        corpus_id="my-corpus", query="project roadmap", k=3, filters={"type": "meeting-notes"}
    )
    assert [h.text for h in hits] == ["Roadmap: ship v2 in May."]


async def test_node_rag_py_246_answer_detailed_with_citations(
    ctx: Any, llm_server: FakeOpenAIServer, capsys: pytest.CaptureFixture[str]
) -> None:
    context = ctx
    await context.rag().upsert_docs(  # setup
        "my-corpus", [{"text": "Photosynthesis turns light, water and CO2 into sugar."}]
    )
    result = await context.rag().answer(
        corpus_id="my-corpus",
        question="Explain the process of photosynthesis.",
        style="detailed",
        with_citations=True,
        k=8,
    )
    print("Answer:", result["answer"])
    for cite in result["citations"]:
        print(f"Citation: {cite['text']} (Score: {cite['score']})")
    # AetherGraph's citations had no 'text'/'score' (KeyError there); ours carry both.
    out = capsys.readouterr().out
    assert out.startswith("Answer: Photons race") and "Citation: Photosynthesis turns" in out


async def test_facade_py_551_list_corpora(ctx: Any, capsys: pytest.CaptureFixture[str]) -> None:
    context = ctx
    await context.rag().upsert_docs("my-corpus", [{"text": CAR}])  # setup
    corpora = await context.rag().list_corpora()
    for c in corpora:
        print(c["corpus_id"], c["meta"].get("created_at"))
    assert capsys.readouterr().out.startswith("my-corpus 20")


async def test_facade_py_594_599_641_646_711_716_768_management(
    ctx: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    context = ctx
    await context.rag().upsert_docs(  # setup: the doc ids the examples name
        "my-corpus",
        [
            {"text": f"document {d}", "doc_id": d}
            for d in ("doc_123", "doc_456", "doc_1", "doc_2", "doc_3")
        ],
    )
    docs = await context.rag().list_docs("my-corpus", limit=100)
    assert len(docs) == 5
    docs = await context.rag().list_docs("my-corpus", after="doc_123")
    assert [d["doc_id"] for d in docs] == ["doc_456", "doc_1", "doc_2", "doc_3"]
    await context.rag().reembed("my-corpus")
    await context.rag().reembed("my-corpus", doc_ids=["doc_123", "doc_456"])
    await context.rag().delete_docs("my-corpus", ["doc_123"])
    await context.rag().delete_docs("my-corpus", ["doc_1", "doc_2", "doc_3"])
    stats = await context.rag().stats("my-corpus")
    print(stats["docs"], stats["chunks"])
    assert capsys.readouterr().out == "1 1\n"


async def test_t5_md_20_to_21_rag_accessor(ctx: Any) -> None:
    context = ctx
    rag = context.rag()  # corpora, upsert, search, answer
    assert isinstance(rag, NodeRAG) and rag.service is context.rag.service


async def test_t5_md_184_203_204_upsert_search_answer(
    ctx: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, llm_server: FakeOpenAIServer
) -> None:
    context = ctx
    _write_pdf(tmp_path / "data/report.pdf", "Key findings: accuracy 91.2 percent on CIFAR-10.")
    monkeypatch.chdir(tmp_path)  # setup: data/report.pdf exists
    await context.rag().upsert_docs(
        corpus_id="my_docs",
        docs=[
            {"path": "data/report.pdf", "labels": {"type": "report"}},
            {"text": "Experiment hit 91.2% accuracy on CIFAR-10.", "title": "exp-log"},
        ],
    )
    hits = await context.rag().search("my_docs", "key findings", k=8, mode="hybrid")
    ans = await context.rag().answer(
        corpus_id="my_docs",
        question="Summarize the main findings and list key metrics.",
        style="concise",
        with_citations=True,
        k=6,
    )
    # ans → { "answer": str, "citations": [...], "resolved_citations": [...], "usage": {...} }
    assert "Key findings" in hits[0].text
    assert set(ans) == {"answer", "citations", "resolved_citations", "usage"}
    assert {c["title"] for c in ans["resolved_citations"]} == {"report.pdf", "exp-log"}


async def test_node_kb_py_90_99_152_162_236_246_kb_examples(
    ctx: Any, tmp_path: Path, llm_server: FakeOpenAIServer
) -> None:
    context = ctx
    refund = tmp_path / "refund.md"  # setup: the example's C:/docs/refund.md
    refund.write_text("# Refund Policy\n\nRefunds are paid within 14 days.", encoding="utf-8")
    result = await context.kb().upsert_docs(
        corpus_id="product_docs",
        docs=[{"text": "Returns accepted for 30 days.", "labels": {"topic": "policy"}}],
        kb_namespace="support",
    )
    assert result["added"] == 1
    result = await context.kb().upsert_docs(
        corpus_id="product_docs",
        docs=[{"path": str(refund), "title": "Refund Policy"}],
    )
    assert result["added"] == 1
    hits = await context.kb().search(
        corpus_id="product_docs",
        query="refund timeline",
        top_k=5,
        kb_namespace="support",
    )
    assert [h.text for h in hits] == ["Returns accepted for 30 days."]
    await context.kb().upsert_docs(  # setup for the second example
        corpus_id="engineering_runbook",
        docs=[
            {
                "text": "Rotate credentials with the vault CLI.",
                "labels": {"env": "prod", "team": "platform"},
            }
        ],
    )
    hits = await context.kb().search(
        corpus_id="engineering_runbook",
        query="how to rotate credentials",
        filters={"labels.env": "prod"},
        mode="hybrid",
        lexical_rerank=True,
        created_at_min=1735707600.0,
    )
    assert len(hits) == 1
    result = await context.kb().answer(
        corpus_id="product_docs",
        question="What is the refund window?",
        style="concise",
        kb_namespace="support",
    )
    assert result.answer == llm_server.text
    result = await context.kb().answer(
        corpus_id="engineering_runbook",
        question="How should I recover from token leak?",
        style="detailed",
        filters={"labels.team": "platform"},
        k=8,
        mode="semantic",
    )
    assert result.citations and result.citations[0]["rank"] == 1


async def test_node_kb_py_306_311_342_347_387_395_434_439_474_479_kb_management(ctx: Any) -> None:
    context = ctx
    await context.kb().upsert_docs(  # setup
        "product_docs", [{"text": f"doc {d}", "doc_id": d} for d in ("doc_abc123", "doc_def456")]
    )
    await context.kb().upsert_docs(
        "engineering_runbook",
        [{"text": f"step {d}", "doc_id": d} for d in ("doc_1", "doc_2", "doc_3")],
    )
    corpora = await context.kb().list_corpora()
    corpus_ids = [row["corpus_id"] for row in await context.kb().list_corpora()]
    assert corpus_ids == ["engineering_runbook", "product_docs"] and len(corpora) == 2
    docs = await context.kb().list_docs(corpus_id="product_docs", limit=50)
    next_docs = await context.kb().list_docs(
        corpus_id="product_docs",
        limit=50,
        after="doc_abc123",
    )
    assert len(docs) == 2 and [d["doc_id"] for d in next_docs] == ["doc_def456"]
    result = await context.kb().reembed(corpus_id="product_docs")
    assert result["reembedded"] == 2
    result = await context.kb().reembed(
        corpus_id="engineering_runbook",
        doc_ids=["doc_abc123", "doc_def456"],
        batch=16,
    )
    assert result["reembedded"] == 0  # those ids are product_docs'
    result = await context.kb().delete_docs(
        corpus_id="product_docs",
        doc_ids=["doc_abc123"],
    )
    result = await context.kb().delete_docs(
        corpus_id="engineering_runbook",
        doc_ids=["doc_1", "doc_2", "doc_3"],
    )
    assert result == {"removed_docs": 3, "removed_chunks": 3}
    stats = await context.kb().stats(corpus_id="product_docs")
    stats = await context.kb().stats(corpus_id="engineering_runbook")
    docs = stats.get("docs", 0)
    chunks = stats.get("chunks", 0)
    assert (docs, chunks) == (0, 0)


def _write_pdf(path: Path, text: str) -> None:
    """A one-page PDF whose text layer is ``text`` (Helvetica, hand-written objects)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))
