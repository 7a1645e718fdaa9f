"""RAG index benchmark: indexing throughput, query latency, retrieval quality, loop stalls.

Corpora (real, offline, written by nobody here):

- **stdlib docstrings**: every module, class and function docstring of the installed
  standard library, read with ``ast`` (nothing is imported), ``test/`` and ``idlelib/``
  left out. Title: the qualified name.
- **python3.11-doc**: Debian's HTML documentation of Python 3.11
  (``/usr/share/doc/python3.11/html``; ``--setup`` installs it with apt), one document
  per ``<section>`` (its own text, without subsections).

Labelled queries, built from the corpora's structure (nobody labelled them by hand):

- docstrings: the query is a docstring's summary line; the indexed text of every
  docstring has its first paragraph removed, so the summary is never in the index
  verbatim; the answer is that docstring's document (eligible: a summary of >= 4 words
  and >= 25 words left after it);
- HTML: the query is a section's heading (``4.2. Built-in Functions`` -> ``Built-in
  Functions``); headings are not indexed; the answer is that section (eligible: headings
  of >= 2 words that appear once in the corpus, and >= 25 words of section text).

``recall@5``: the answer document is among the top 5 chunks' documents; ``MRR``: mean of
1/rank of its first chunk within the top 10 (0 if absent). Modes: lexical (FTS5 BM25),
dense (WordLlama cosine), hybrid (RRF).

Scale: query latency at 10k and 100k chunks. The two corpora together are smaller than
100k chunks, so the large sizes repeat them (copies with their own doc ids; said in the
table). Loop stall: the longest delay of a 1 ms asyncio ticker beyond its sleep while
indexing.

Usage: ``python bench/rag.py [--setup] [--queries 300] [--sizes 10000,100000]
[--chunk-tokens 400]``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import html
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from _workloads import Ticker

from ag_jupyter.runtime import RunManager, open_session
from ag_jupyter.runtime.defaults import workspace_runtime

HTML_ROOT = Path("/usr/share/doc/python3.11/html")
MODES = ("lexical", "dense", "hybrid")
WORD = re.compile(r"\S+")


# ------------------------------------------------------------------------- corpora
def stdlib_docstrings() -> list[dict[str, Any]]:
    """``[{"title", "text", "query"}]``: docstrings without their first paragraph; query
    = the summary line when the docstring is eligible (else None)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[dict[str, Any]] = []
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not {"test", "tests", "idlelib", "site-packages", "lib2to3"}
        & set(p.relative_to(root).parts)
    )
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        nodes: list[tuple[str, ast.AST]] = [(module, tree)]
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                nodes.append((f"{module}.{node.name}", node))
        for name, node in nodes:
            doc = ast.get_docstring(node)  # type: ignore[arg-type]
            if not doc:
                continue
            parts = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)
            summary = " ".join(parts[0].split())
            body = parts[1].strip() if len(parts) > 1 else ""
            if len(WORD.findall(body)) < 8:
                continue
            eligible = len(summary.split()) >= 4 and len(WORD.findall(body)) >= 25
            out.append({"title": name, "text": body, "query": summary if eligible else None})
    return out


class _Sections(HTMLParser):
    """Sections of a Sphinx page: heading text and own text (no subsections)."""

    SKIP = frozenset({"script", "style", "nav"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[dict[str, Any]] = []
        self.done: list[dict[str, Any]] = []
        self.in_heading = 0
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
        if tag == "section":
            self.stack.append({"heading": [], "text": []})
        elif tag in ("h1", "h2", "h3", "h4") and self.stack:
            self.in_heading += 1
        elif tag in ("p", "li", "dt", "dd", "pre", "div", "tr", "br") and self.stack:
            self.stack[-1]["text"].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        if tag == "section" and self.stack:
            self.done.append(self.stack.pop())
        elif tag in ("h1", "h2", "h3", "h4") and self.in_heading:
            self.in_heading -= 1

    def handle_data(self, data: str) -> None:
        if self.skip or not self.stack:
            return
        if data.strip() == "¶":
            return
        target = "heading" if self.in_heading else "text"
        self.stack[-1][target].append(data)


def python_html_sections() -> list[dict[str, Any]]:
    """``[{"title", "text", "query"}]`` from the HTML docs (empty if not installed)."""
    if not HTML_ROOT.is_dir():
        return []
    rows: list[dict[str, Any]] = []
    for page in sorted(HTML_ROOT.rglob("*.html")):
        if (
            page.name in ("genindex.html", "search.html", "py-modindex.html")
            or "genindex" in page.name
        ):
            continue
        parser = _Sections()
        try:
            parser.feed(page.read_text(encoding="utf-8", errors="replace"))
        except Exception:
            continue
        for sec in parser.done:
            heading = html.unescape(" ".join("".join(sec["heading"]).split())).strip("¶ ")
            heading = re.sub(r"^[\d.]+\s+", "", heading)
            text = re.sub(r"[ \t]+", " ", "".join(sec["text"]))
            text = re.sub(r"\n\s*\n+", "\n\n", text).strip()
            if heading and len(WORD.findall(text)) >= 8:
                rows.append({"title": heading, "text": text, "page": page.name})
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["title"].lower()] = counts.get(r["title"].lower(), 0) + 1
    for r in rows:
        eligible = (
            len(r["title"].split()) >= 2
            and counts[r["title"].lower()] == 1
            and len(WORD.findall(r["text"])) >= 25
        )
        r["query"] = r["title"] if eligible else None
    return rows


# ---------------------------------------------------------------------------- bench
async def index(context: Any, corpus: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    ticker = Ticker()
    ticker.start()
    started = time.perf_counter()
    result = await context.rag.upsert_docs(corpus, docs)
    elapsed = time.perf_counter() - started
    await ticker.stop()
    return {
        "docs": len(docs),
        "chunks": result["chunks"],
        "seconds": elapsed,
        "docs_per_s": len(docs) / elapsed,
        "chunks_per_s": result["chunks"] / elapsed,
        "stall_ms": ticker.worst_ms(),
        "stall_p99_ms": ticker.p99_ms(),
        "doc_ids": result["doc_ids"],
    }


async def quality(
    context: Any, corpus: str, docs: list[dict[str, Any]], doc_ids: list[str], n: int, seed: int
) -> dict[str, dict[str, float]]:
    pairs = [(d["query"], doc_id) for d, doc_id in zip(docs, doc_ids, strict=True) if d["query"]]
    random.Random(seed).shuffle(pairs)
    pairs = pairs[:n]
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        hits5 = 0
        rr = 0.0
        for query, target in pairs:
            hits = await context.rag.search(corpus, query, k=10, mode=mode)
            ranked = [h.doc_id for h in hits]
            if target in ranked[:5]:
                hits5 += 1
            if target in ranked:
                rr += 1.0 / (ranked.index(target) + 1)
        out[mode] = {"recall@5": hits5 / len(pairs), "mrr": rr / len(pairs), "n": len(pairs)}
    return out


async def latency(context: Any, corpus: str, queries: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        await context.rag.search(corpus, queries[0], k=8, mode=mode)  # warm (cache loaded)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            await context.rag.search(corpus, q, k=8, mode=mode)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[mode] = {
            "p50_ms": 1000 * statistics.median(times),
            "p99_ms": 1000 * times[int(0.99 * (len(times) - 1))],
        }
    return out


def grow(
    base: list[dict[str, Any]], chunks_per_doc: float, target_chunks: int
) -> list[dict[str, Any]]:
    """``base`` repeated (copies labelled ``copy=n``) until about ``target_chunks``."""
    want_docs = int(target_chunks / max(chunks_per_doc, 1e-9))
    out = []
    n = 0
    while len(out) < want_docs:
        for d in base:
            if len(out) >= want_docs:
                break
            out.append({"title": d["title"], "text": d["text"], "labels": {"copy": n}})
        n += 1
    return out


def setup() -> None:
    if HTML_ROOT.is_dir():
        print(f"{HTML_ROOT} is there")
        return
    if shutil.which("apt-get") is None:
        print(
            "apt-get is not available: the HTML corpus is skipped; "
            "larger sizes repeat the docstrings"
        )
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "python3.11-doc"], check=True, env=env)


async def main(args: argparse.Namespace) -> None:
    import numpy as np  # noqa: F401  (fail early without the rag extra)

    t0 = time.perf_counter()
    stdlib = stdlib_docstrings()
    htmldocs = python_html_sections()
    folder = Path(tempfile.mkdtemp(prefix="ag-rag-bench-"))
    mgr = RunManager(**workspace_runtime(folder))
    rows: list[str] = []
    try:
        async with open_session(run_manager=mgr) as context:
            context.rag.service.chunk_tokens = args.chunk_tokens
            # First use loads the embedder (~0.1 s): not part of the figures.
            await context.rag.upsert_docs("warm", [{"text": "warm up the embedder"}])
            ix_std = await index(
                context, "stdlib", [{"title": d["title"], "text": d["text"]} for d in stdlib]
            )
            q_std = await quality(context, "stdlib", stdlib, ix_std["doc_ids"], args.queries, 1)
            ix_html = q_html = None
            if htmldocs:
                ix_html = await index(
                    context, "pydoc", [{"title": d["title"], "text": d["text"]} for d in htmldocs]
                )
                q_html = await quality(
                    context, "pydoc", htmldocs, ix_html["doc_ids"], args.queries, 2
                )

            base = [*htmldocs, *stdlib]
            total_chunks = ix_std["chunks"] + (ix_html["chunks"] if ix_html else 0)
            per_doc = total_chunks / len(base)
            queries = [d["query"] for d in base if d["query"]]
            random.Random(3).shuffle(queries)
            queries = queries[: args.latency_queries]
            scale = []
            for size in args.sizes:
                # A workspace of its own per size: BM25 runs over a workspace's whole FTS
                # table, so other corpora's matches would add to the lexical latency.
                sub = Path(tempfile.mkdtemp(prefix=f"ag-rag-bench-{size}-"))
                sub_mgr = RunManager(**workspace_runtime(sub))
                try:
                    async with open_session(run_manager=sub_mgr) as sub_ctx:
                        sub_ctx.rag.service.chunk_tokens = args.chunk_tokens
                        docs = grow(base, per_doc, size)
                        ix = await index(sub_ctx, f"scale-{size}", docs)
                        lat = await latency(sub_ctx, f"scale-{size}", queries)
                finally:
                    await sub_mgr.close()
                    shutil.rmtree(sub, ignore_errors=True)
                scale.append((size, ix, lat, len(docs) / len(base)))
    finally:
        await mgr.close()
        shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------- report
    import numpy

    rows.append(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; numpy {numpy.__version__}; "
        f"SQLite {__import__('sqlite3').sqlite_version}; chunk_tokens {args.chunk_tokens}; "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    rows.append("")
    rows.append(
        "| corpus | docs | chunks | index s | docs/s | chunks/s | worst loop stall ms "
        "| stall p99 ms |"
    )
    rows.append("|---|---|---|---|---|---|---|---|")

    def ix_row(name: str, ix: dict[str, Any]) -> str:
        return (
            f"| {name} | {ix['docs']:,} | {ix['chunks']:,} | {ix['seconds']:.1f} | "
            f"{ix['docs_per_s']:,.0f} | {ix['chunks_per_s']:,.0f} | {ix['stall_ms']:.1f} | "
            f"{ix['stall_p99_ms']:.2f} |"
        )

    rows.append(ix_row("stdlib docstrings", ix_std))
    if ix_html:
        rows.append(ix_row("python3.11-doc HTML sections", ix_html))
    for size, ix, _lat, repeats in scale:
        rows.append(ix_row(f"scale {size:,} (corpora x{repeats:.1f})", ix))
    rows.append("")
    rows.append("| corpus | queries | mode | recall@5 | MRR@10 |")
    rows.append("|---|---|---|---|---|")
    for name, q in (
        ("stdlib docstrings (summary line -> docstring)", q_std),
        ("python3.11-doc (heading -> section)", q_html),
    ):
        if q is None:
            continue
        for mode in MODES:
            rows.append(
                f"| {name} | {q[mode]['n']} | {mode} | {q[mode]['recall@5']:.3f} "
                f"| {q[mode]['mrr']:.3f} |"
            )
    rows.append("")
    rows.append("| chunks | mode | p50 ms | p99 ms |")
    rows.append("|---|---|---|---|")
    for _size, ix, lat, _ in scale:
        for mode in MODES:
            rows.append(
                f"| {ix['chunks']:,} | {mode} | {lat[mode]['p50_ms']:.2f} "
                f"| {lat[mode]['p99_ms']:.2f} |"
            )
    if not htmldocs:
        rows.append(
            "\npython3.11-doc is not installed (run with --setup): "
            "scale sizes repeat the docstrings"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--setup", action="store_true", help="install python3.11-doc with apt, then exit"
    )
    parser.add_argument("--queries", type=int, default=300, help="labelled queries per corpus")
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--sizes", default="10000,100000", help="chunk counts for latency")
    parser.add_argument("--chunk-tokens", type=int, default=400)
    ns = parser.parse_args()
    ns.sizes = [int(s) for s in ns.sizes.split(",") if s]
    if ns.setup:
        setup()
        sys.exit(0)
    asyncio.run(main(ns))
