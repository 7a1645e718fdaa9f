"""The embedded RAG service: corpora, documents and chunks in the workspace SQLite, an FTS5
index for lexical (BM25) search, and vectors for dense (cosine) search.

:class:`RagService` is AetherGraph's ``RAGFacade`` (``services/rag/facade.py`` before commit
``2ddc331``) on the workspace: ``add_corpus``, ``upsert_docs``, ``search``, ``retrieve``,
``answer``, ``resolve_citations``, ``list_corpora``, ``list_docs``, ``delete_docs``,
``reembed``, ``stats``. ``context.rag`` is its node-scoped view
(:class:`~ag_jupyter.runtime.services.rag.facades.NodeRAG`), ``context.kb()`` the
0.1.0a15 knowledge-base view over the same store.

How a search runs (all of it in a worker thread, off the event loop):

- **dense**: the query's vector (the corpus's embedder) against every chunk's vector: a
  matrix product with the corpus's in-memory float32 matrix (loaded from the workspace on
  first use, kept in step with the workspace by a version number each change bumps, so a
  second process's changes are seen too). Scores are cosine similarities.
- **lexical**: FTS5 ``MATCH`` of the query's words (OR-ed, common English stop words
  dropped), ranked by ``bm25()``; the hit score is ``-bm25`` (larger is better). BM25's
  document frequencies are counted over the workspace's whole FTS table (every corpus).
- **hybrid** (the default, as AetherGraph): reciprocal-rank fusion of the two rankings,
  ``score = 1/(60 + dense_rank) + 1/(60 + lexical_rank)`` over the top ``max(50, 5k)`` of
  each (a ranking a chunk is absent from adds nothing). AetherGraph instead re-scored its
  dense top 24 as ``0.8 * cosine + 0.2 * word-overlap``; RRF needs no calibration between
  cosine and BM25 and lets a lexical-only match in.

Every hit's ``meta`` carries ``scores``: ``{"dense": cosine, "lexical": -bm25 or None,
"dense_rank", "lexical_rank"}`` (ranks from 1; None when outside that ranking's top).

Indexing runs in batches: files are read and chunked in a worker thread, embedded in a
worker thread in steps (see ``embedders.TOKENS_PER_STEP``), written by the workspace's
writer thread; the run's ``logger()`` gets a progress line every ``progress_every`` docs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import CorpusNotFoundError, EmbedderMismatchError
from ...store.codecs import dumps_json
from ...store.workspace import Workspace
from .checks import check_corpus_id, llm_client
from .chunking import DEFAULT_OVERLAP_TOKENS, DEFAULT_TARGET_TOKENS, TextSplitter
from .embedders import Embedder, EmbedderSpec, resolve_embedder
from .parsers import extract_text, file_uri

log = logging.getLogger("ag_jupyter.rag")

SEARCH_MODES = ("hybrid", "dense", "lexical")
#: Reciprocal-rank fusion constant (Cormack et al. 2009).
RRF_K = 60
#: Chunks embedded per worker-thread call while indexing.
EMBED_BATCH = 128
#: Documents read and chunked per worker-thread call while indexing.
DOC_BATCH = 64
#: At most this many characters of documents per batch.
BATCH_CHARS = 1_000_000
_MAX_K = 1_000
_SNIPPET_CHARS = 220
_STOP_WORDS = frozenset(
    "a an and are as at be but by for from has have how i if in into is it its of on or "
    "that the their then there these this to was what when where which who why will with "
    "you your does do can".split()
)
_QUERY_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_QUERY_TERMS = 32


# ------------------------------------------------------------------------------ hits
@dataclass(repr=False)
class SearchHit:
    """A single search hit (AetherGraph's ``SearchHit``, same fields).

    Attributes:
      chunk_id, doc_id, corpus_id: identifiers (str).
      score: the ranking score (float; larger is better; its scale depends on the mode:
        RRF for ``hybrid``, cosine for ``dense``, ``-bm25`` for ``lexical``).
      text: the chunk's text, exactly ``document_text[meta["start"]:meta["end"]]``. Plain
        data: never rendered as HTML here.
      meta: ``{"doc_id", "title", "i", "labels", "uri", "start", "end", "scores"}``
        (AetherGraph's chunk metadata plus the document's URI, the chunk's span in
        characters of the document's text, and the per-ranking scores).
    """

    chunk_id: str
    doc_id: str
    corpus_id: str
    score: float
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return (
            f"SearchHit(score={self.score:.4g}, doc_id={self.doc_id!r}, "
            f"title={self.meta.get('title')!r}, text={text!r})"
        )


# --------------------------------------------------------------------------- helpers
def _now_iso(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def stable_id(parts: Mapping[str, Any]) -> str:
    """AetherGraph's ``_stable_id``: the first 24 hex digits of the sha256 of the
    parts' sorted JSON."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:24]


def _check_k(k: Any, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= _MAX_K:
        raise ValueError(f"{name} must be an int from 1 to {_MAX_K}; got {k!r}")
    return k


def fts_query(text: str) -> str | None:
    """The FTS5 ``MATCH`` expression for free text: its words, quoted (so punctuation and
    FTS5 operators in the text are plain words), OR-ed; English stop words dropped unless
    nothing else is left. None if the text has no word."""
    words: list[str] = []
    for word in _QUERY_WORD.findall(text.lower()):
        if word not in words:
            words.append(word)
    kept = [w for w in words if w not in _STOP_WORDS] or words
    if not kept:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in kept[:_MAX_QUERY_TERMS])


_MISSING = object()


@dataclass(slots=True)
class _DocInfo:
    doc_id: str
    title: str
    uri: str | None
    labels: dict[str, Any]
    created_at: float


def matches_filters(doc: _DocInfo, filters: Mapping[str, Any]) -> bool:
    """Whether a document's labels satisfy ``filters`` (AetherGraph's ``_apply_filters``).

    Each key is a label name (``"labels.<name>"`` as 0.1.0a15's KB wrote it is the same
    label; ``doc_id``/``title``/``uri`` match the document's own fields when no label has
    that name); a missing label is None. A list/tuple/set value means "one of these";
    any other value must be equal.
    """
    for key, want in filters.items():
        name = key[7:] if key.startswith("labels.") else key
        value = doc.labels.get(name, _MISSING)
        if value is _MISSING:
            value = getattr(doc, name, None) if name in ("doc_id", "title", "uri") else None
        if isinstance(want, list | tuple | set | frozenset):
            if value not in want:
                return False
        elif value != want:
            return False
    return True


@dataclass
class _Prepared:
    doc_id: str
    title: str
    uri: str | None
    labels: dict[str, Any]
    meta: dict[str, Any]
    text: str
    content_hash: str
    spans: list[tuple[int, int]]
    created_at: float
    replace: bool = False  # an explicit doc_id: replace a doc of that id


@dataclass
class _Snapshot:
    """A consistent view of a corpus's vectors (arrays never mutated in place)."""

    version: int
    embedder: str | None
    dim: int | None
    pks: np.ndarray  # (n,) int64 chunk_pk
    doc_of: np.ndarray  # (n,) int64 doc_pk
    matrix: np.ndarray  # (n, dim) float32
    docs: dict[int, _DocInfo]


class _CorpusCache:
    """The in-memory vectors of one corpus, with appends queued until the next search."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot: _Snapshot | None = None
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.version = -1


def _vectors_from_blobs(blobs: Sequence[bytes | None], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    joined = b"".join(b if b is not None else bytes(4 * dim) for b in blobs)
    return np.frombuffer(joined, dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


# ------------------------------------------------------------------------- service
class RagService:
    """The embedded RAG index of a workspace (see the module docstring).

    ``context.rag`` is ``RagService.bind(context)``; the composition root installs one per
    workspace (:func:`rag_service_for`). Every method is async unless said otherwise and
    keeps the event loop free: SQLite, file and numpy work run in worker threads.

    Args:
      workspace: the open workspace holding the index.
      embedder: None (the process default: ``set_default_embedder`` /
        ``$AG_RAG_EMBEDDER`` / WordLlama), ``"wordllama"``, ``"llm:<profile>"``, an
        ``Embedder`` or an async callable ``texts -> list[list[float]]``.
      chunk_tokens, overlap_tokens: the splitter's budget and overlap in words
        (AetherGraph's defaults, 400 and 60).
      progress_every: a progress line to the run's logger every this many documents.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        embedder: EmbedderSpec = None,
        chunk_tokens: int = DEFAULT_TARGET_TOKENS,
        overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
        progress_every: int = 200,
    ) -> None:
        self.workspace = workspace
        self._embedder_spec = embedder
        self._embedder: Embedder | None = None if embedder is None else resolve_embedder(embedder)
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        self.progress_every = max(1, int(progress_every))
        self._caches: dict[str, _CorpusCache] = {}
        self._caches_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RagService({str(self.workspace.path)!r}, embedder={self.embedder.name!r})"

    @property
    def embedder(self) -> Embedder:
        """The embedder new vectors come from (resolved at each use when none was given,
        so ``set_default_embedder`` applies)."""
        return self._embedder if self._embedder is not None else resolve_embedder(None)

    def bind(self, context: Any) -> Any:
        """``context.rag``: a :class:`NodeRAG` of this service for ``context``."""
        from .facades import NodeRAG

        return NodeRAG(self, context)

    # ------------------------------------------------------------------ corpora
    def _cache(self, corpus_id: str) -> _CorpusCache:
        with self._caches_lock:
            cache = self._caches.get(corpus_id)
            if cache is None:
                cache = self._caches[corpus_id] = _CorpusCache()
            return cache

    async def add_corpus(
        self,
        corpus_id: str,
        meta: dict[str, Any] | None = None,
        *,
        scope_labels: dict[str, Any] | None = None,
    ) -> None:
        """Create a corpus if it does not exist (AetherGraph's ``add_corpus``; an existing
        corpus keeps its metadata).

        Args:
          corpus_id: its id (non-empty str).
          meta: JSON metadata kept with it (``scope_labels`` go to ``meta["scope"]``).

        Raises:
          TypeError: for a bad id or metadata JSON cannot hold.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        check_corpus_id(corpus_id)
        full = dict(meta or {})
        if scope_labels:
            full["scope"] = dict(scope_labels)
        meta_json = dumps_json(full, "corpus metadata")
        now = time.time()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO rag_corpora (corpus_id, meta, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (corpus_id) DO NOTHING",
                (corpus_id, meta_json, now),
            )

        await self.workspace.write(write)

    @staticmethod
    def _corpus_record(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "corpus_id": row["corpus_id"],
            "created_at": _now_iso(row["created_at"]),
            "meta": json.loads(row["meta"]),
            "embedder": row["embedder"],
            "dim": row["dim"],
        }

    def _missing(self, conn: sqlite3.Connection, corpus_id: str) -> CorpusNotFoundError:
        names = [
            r[0] for r in conn.execute("SELECT corpus_id FROM rag_corpora ORDER BY 1 LIMIT 21")
        ]
        shown = ", ".join(map(repr, names[:20])) + (", ..." if len(names) > 20 else "")
        return CorpusNotFoundError(
            f"no RAG corpus {corpus_id!r} in the workspace {str(self.workspace.path)!r} "
            f"(corpora: {shown or 'none'}); create it with upsert_docs({corpus_id!r}, docs) "
            "or bind_corpus(corpus_id=...)"
        )

    def _corpus_row(self, conn: sqlite3.Connection, corpus_id: str) -> sqlite3.Row:
        row = conn.execute(
            "SELECT corpus_id, meta, embedder, dim, version, created_at FROM rag_corpora "
            "WHERE corpus_id = ?",
            (corpus_id,),
        ).fetchone()
        if row is None:
            raise self._missing(conn, corpus_id)
        return row

    async def list_corpora(self) -> list[dict[str, Any]]:
        """Every corpus: ``[{"corpus_id", "meta": {"corpus_id", "created_at" (ISO UTC),
        "meta" (its metadata), "embedder", "dim"}}]`` sorted by id (AetherGraph's shape,
        whose ``meta`` was the corpus's ``corpus.json``).

        Raises:
          WorkspaceError: if the database cannot be read.
        """

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT corpus_id, meta, embedder, dim, version, created_at FROM rag_corpora "
                "ORDER BY corpus_id"
            ).fetchall()
            return [{"corpus_id": r["corpus_id"], "meta": self._corpus_record(r)} for r in rows]

        return await self.workspace.read(read)

    async def stats(self, corpus_id: str) -> dict[str, Any]:
        """``{"corpus_id", "docs": int, "chunks": int, "meta": <the corpus record of
        list_corpora>}`` (AetherGraph's shape).

        Raises:
          CorpusNotFoundError: if there is no such corpus.
        """
        check_corpus_id(corpus_id)

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            row = self._corpus_row(conn, corpus_id)
            docs = conn.execute(
                "SELECT count(*) FROM rag_docs WHERE corpus_id = ?", (corpus_id,)
            ).fetchone()[0]
            chunks = conn.execute(
                "SELECT count(*) FROM rag_chunks WHERE corpus_id = ?", (corpus_id,)
            ).fetchone()[0]
            return {
                "corpus_id": corpus_id,
                "docs": int(docs),
                "chunks": int(chunks),
                "meta": self._corpus_record(row),
            }

        return await self.workspace.read(read)

    async def list_docs(
        self, corpus_id: str, limit: int = 200, after: str | None = None
    ) -> list[dict[str, Any]]:
        """Documents of a corpus in the order they were added, ``limit`` at a time, after
        the doc id ``after`` (AetherGraph's pagination: an unknown ``after`` gives ``[]``).

        Returns ``[{"doc_id", "corpus_id", "uri", "title", "meta": {"labels", ...extra
        (e.g. "pages")}, "created_at" (ISO UTC)}]`` (AetherGraph's ``docs.jsonl`` records).

        Raises:
          CorpusNotFoundError: if there is no such corpus.
          ValueError: if ``limit`` is not an int from 1 to 1000.
        """
        check_corpus_id(corpus_id)
        _check_k(limit, "limit")

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            self._corpus_row(conn, corpus_id)
            floor = 0
            if after is not None:
                row = conn.execute(
                    "SELECT doc_pk FROM rag_docs WHERE corpus_id = ? AND doc_id = ?",
                    (corpus_id, after),
                ).fetchone()
                if row is None:
                    return []
                floor = row[0]
            rows = conn.execute(
                "SELECT doc_id, uri, title, labels, meta, created_at FROM rag_docs "
                "WHERE corpus_id = ? AND doc_pk > ? ORDER BY doc_pk LIMIT ?",
                (corpus_id, floor, limit),
            ).fetchall()
            return [
                {
                    "doc_id": r["doc_id"],
                    "corpus_id": corpus_id,
                    "uri": r["uri"],
                    "title": r["title"],
                    "meta": {"labels": json.loads(r["labels"]), **json.loads(r["meta"])},
                    "created_at": _now_iso(r["created_at"]),
                }
                for r in rows
            ]

        return await self.workspace.read(read)

    async def get_doc_text(self, corpus_id: str, doc_id: str) -> str:
        """The text a document was indexed from (chunk spans are offsets into it).

        Ours (AetherGraph kept the source as an artifact).

        Raises:
          CorpusNotFoundError: no such corpus. KeyError: no such document in it.
        """
        check_corpus_id(corpus_id)

        def read(conn: sqlite3.Connection) -> str:
            self._corpus_row(conn, corpus_id)
            row = conn.execute(
                "SELECT text FROM rag_docs WHERE corpus_id = ? AND doc_id = ?", (corpus_id, doc_id)
            ).fetchone()
            if row is None:
                raise KeyError(f"no document {doc_id!r} in the RAG corpus {corpus_id!r}")
            return str(row[0])

        return await self.workspace.read(read)

    # ---------------------------------------------------------------- ingestion
    def _splitter(self) -> TextSplitter:
        return TextSplitter(self.chunk_tokens, self.overlap_tokens)

    @staticmethod
    def _check_docs(docs: Any) -> list[dict[str, Any]]:
        if not isinstance(docs, list | tuple):
            raise TypeError(f"docs must be a list of dicts; got {type(docs).__name__}")
        checked: list[dict[str, Any]] = []
        for n, d in enumerate(docs):
            if not isinstance(d, Mapping):
                raise TypeError(f"docs[{n}] must be a dict with 'text' or 'path'; got {d!r:.80}")
            path = d.get("path")
            if path:
                if not isinstance(path, str | os.PathLike):
                    raise TypeError(f"docs[{n}]['path'] must be a str path; got {path!r}")
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f"docs[{n}]['path'] {os.fspath(path)!r} is not a readable file; "
                        "check the path (relative paths are from the current folder "
                        f"{os.getcwd()!r}) or pass the text as {{'text': ...}}"
                    )
            elif not isinstance(d.get("text", ""), str):
                raise TypeError(f"docs[{n}]['text'] must be a str; got {type(d['text']).__name__}")
            labels = d.get("labels") or {}
            if not isinstance(labels, Mapping):
                raise TypeError(f"docs[{n}]['labels'] must be a dict; got {labels!r:.80}")
            dumps_json(dict(labels), f"docs[{n}]['labels']")
            doc_id = d.get("doc_id")
            if doc_id is not None and (not isinstance(doc_id, str) or not doc_id):
                raise TypeError(f"docs[{n}]['doc_id'] must be a non-empty str; got {doc_id!r}")
            checked.append(dict(d))
        return checked

    @staticmethod
    def _batches(docs: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        chars = 0
        for d in docs:
            size = len(d.get("text") or "") if not d.get("path") else 200_000
            if batch and (len(batch) >= DOC_BATCH or chars + size > BATCH_CHARS):
                yield batch
                batch, chars = [], 0
            batch.append(d)
            chars += size
        if batch:
            yield batch

    def _prepare(
        self, batch: list[dict[str, Any]], scope_labels: Mapping[str, Any]
    ) -> tuple[list[_Prepared], list[str]]:
        """Worker thread: read, strip and chunk a batch of docs."""
        splitter = self._splitter()
        out: list[_Prepared] = []
        empty: list[str] = []
        for d in batch:
            labels = {**scope_labels, **dict(d.get("labels") or {})}
            path = d.get("path")
            path = os.fspath(path) if path else None
            title = str(d.get("title") or (os.path.basename(path) if path else "") or "untitled")
            extra: dict[str, Any] = {}
            if path:
                text, extra = extract_text(path)
                uri: str | None = file_uri(path)
            else:
                text = d.get("text") or ""
                uri = d.get("uri") if isinstance(d.get("uri"), str) else None
            text = text.strip()
            if not text:
                empty.append(title)
                continue
            content_hash = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
            explicit = d.get("doc_id")
            now = time.time()
            doc_id = explicit or stable_id(
                {"title": title, "labels": labels, "ts": _now_iso(now), "n": uuid.uuid4().hex}
            )
            out.append(
                _Prepared(
                    doc_id=doc_id,
                    title=title,
                    uri=uri,
                    labels=labels,
                    meta=extra,
                    text=text,
                    content_hash=content_hash,
                    spans=splitter.split_spans(text),
                    created_at=now,
                    replace=bool(explicit),
                )
            )
        return out, empty

    async def _embed(self, texts: list[str], context: Any, embedder: Embedder) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), EMBED_BATCH):
            parts.append(await embedder.embed_batch(texts[i : i + EMBED_BATCH], context))
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.vstack(parts) if len(parts) > 1 else parts[0]

    async def _check_embedder(self, corpus_id: str, embedder: Embedder) -> None:
        def read(conn: sqlite3.Connection) -> tuple[str | None, int | None]:
            row = self._corpus_row(conn, corpus_id)
            return row["embedder"], row["dim"]

        stored, _dim = await self.workspace.read(read)
        if stored is not None and stored != embedder.name:
            raise EmbedderMismatchError(
                f"the RAG corpus {corpus_id!r} holds vectors of the embedder {stored!r}, not "
                f"{embedder.name!r} (this service's); re-embed it first with "
                f"reembed({corpus_id!r}), or use the embedder {stored!r} for it"
            )

    async def upsert_docs(
        self,
        corpus_id: str,
        docs: list[dict[str, Any]],
        *,
        context: Any = None,
        scope_labels: Mapping[str, Any] | None = None,
        dedupe: bool = False,
    ) -> dict[str, Any]:
        """Chunk, embed and index documents into a corpus (created if missing).

        Args:
          corpus_id: the corpus.
          docs: ``[{"text": str, "title": str, "labels": dict}, {"path": str, ...}]``
            (AetherGraph's shapes). Ours too: ``"doc_id"`` (str) replaces the document of
            that id if there is one (a true upsert; AetherGraph always added a new doc);
            ``"uri"`` (str) for an inline text's source.
          context: the context indexing (its logger gets progress lines; an
            ``llm:<profile>`` embedder uses its ``llm()``).
          scope_labels: merged under each doc's labels (the node's identity labels).
          dedupe: skip a doc whose text (sha256) is already in the corpus with the same
            ``kb_namespace`` label (0.1.0a15's KB does that; AetherGraph's RAG did not).

        Returns ``{"added": docs added, "chunks": chunks added, "index":
        "SqliteFtsVectorIndex", "doc_ids": [...]}`` (AetherGraph's keys, plus ``doc_ids``).
        A doc whose text is empty is skipped with a warning, as AetherGraph does.

        Raises:
          TypeError: for a malformed doc (naming its index).
          FileNotFoundError: for a ``path`` that is not a file (nothing is indexed).
          EmbedderMismatchError: if the corpus was filled by another embedder.
          WorkspaceWriteError: if the workspace cannot be written (batches committed
            before stay indexed).
        """
        check_corpus_id(corpus_id)
        if not isinstance(docs, list | tuple):
            raise TypeError(f"docs must be a list of dicts; got {type(docs).__name__}")
        # In a worker thread: a list of 100k docs takes a while to check (paths are stat'ed).
        checked = await self.workspace.run_in_io_thread(self._check_docs, list(docs))
        embedder = self.embedder
        await self.add_corpus(corpus_id, None, scope_labels=scope_labels)
        await self._check_embedder(corpus_id, embedder)
        logger = _logger_of(context)
        labels_base = dict(scope_labels or {})
        total = len(checked)
        added_ids: list[str] = []
        added_chunks = 0
        done = 0
        started = time.monotonic()
        next_report = self.progress_every
        if total >= self.progress_every:
            logger.info("rag: indexing %d docs into corpus %r", total, corpus_id)
        for batch in self._batches(checked):
            prepared, empty = await self.workspace.run_in_io_thread(
                self._prepare, batch, labels_base
            )
            for title in empty:
                logger.warning("rag: empty text for doc %r; skipped", title)
            if dedupe and prepared:
                prepared = await self._drop_duplicates(corpus_id, prepared)
            texts = [p.text[a:b] for p in prepared for a, b in p.spans]
            vectors = await self._embed(texts, context, embedder)
            if prepared:
                result = await self.workspace.write(
                    lambda conn, p=prepared, v=vectors: self._insert(
                        conn, corpus_id, p, v, embedder
                    )
                )
                await self.workspace.run_in_io_thread(self._cache_apply, corpus_id, result)
                added_ids.extend(p.doc_id for p in prepared)
                added_chunks += len(texts)
            done += len(batch)
            if done >= next_report and total >= self.progress_every:
                next_report = done + self.progress_every
                elapsed = max(time.monotonic() - started, 1e-9)
                logger.info(
                    "rag: corpus %r: %d/%d docs, %d chunks (%.0f docs/s)",
                    corpus_id,
                    done,
                    total,
                    added_chunks,
                    done / elapsed,
                )
        if total >= self.progress_every:
            logger.info(
                "rag: corpus %r: indexed %d docs, %d chunks in %.1f s",
                corpus_id,
                len(added_ids),
                added_chunks,
                time.monotonic() - started,
            )
        return {
            "added": len(added_ids),
            "chunks": added_chunks,
            "index": "SqliteFtsVectorIndex",
            "doc_ids": added_ids,
        }

    async def _drop_duplicates(self, corpus_id: str, prepared: list[_Prepared]) -> list[_Prepared]:
        hashes = sorted({p.content_hash for p in prepared})

        def read(conn: sqlite3.Connection) -> set[tuple[str, Any]]:
            rows = conn.execute(
                "SELECT content_hash, json_extract(labels, '$.kb_namespace') FROM rag_docs "
                "WHERE corpus_id = ? AND content_hash IN (SELECT value FROM json_each(?))",
                (corpus_id, json.dumps(hashes)),
            )
            return {(r[0], r[1]) for r in rows}

        seen = await self.workspace.read(read)
        kept = []
        for p in prepared:
            key = (p.content_hash, p.labels.get("kb_namespace"))
            if key in seen:
                continue
            seen.add(key)
            kept.append(p)
        return kept

    @staticmethod
    def _insert(
        conn: sqlite3.Connection,
        corpus_id: str,
        prepared: list[_Prepared],
        vectors: np.ndarray,
        embedder: Embedder,
    ) -> dict[str, Any]:
        """Writer thread: one batch of docs, their chunks and vectors; bumps the version."""
        dim = int(vectors.shape[1]) if vectors.size else None
        row = conn.execute(
            "SELECT embedder, dim, version FROM rag_corpora WHERE corpus_id = ?", (corpus_id,)
        ).fetchone()
        if row["embedder"] is not None and (
            row["embedder"] != embedder.name or (dim is not None and row["dim"] != dim)
        ):
            raise EmbedderMismatchError(
                f"the RAG corpus {corpus_id!r} holds vectors of {row['embedder']!r} "
                f"(dim {row['dim']}); this batch is {embedder.name!r} (dim {dim}): "
                f"reembed({corpus_id!r}) first"
            )
        removed: list[int] = []
        docs: dict[int, _DocInfo] = {}
        chunk_pks: list[int] = []
        chunk_docs: list[int] = []
        offset = 0
        data = np.ascontiguousarray(vectors, dtype="<f4")
        for p in prepared:
            if p.replace:
                old = conn.execute(
                    "SELECT doc_pk FROM rag_docs WHERE corpus_id = ? AND doc_id = ?",
                    (corpus_id, p.doc_id),
                ).fetchone()
                if old is not None:
                    conn.execute("DELETE FROM rag_chunks WHERE doc_pk = ?", (old[0],))
                    conn.execute("DELETE FROM rag_docs WHERE doc_pk = ?", (old[0],))
                    removed.append(int(old[0]))
            cursor = conn.execute(
                "INSERT INTO rag_docs (corpus_id, doc_id, title, uri, labels, meta, text, "
                "content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    corpus_id,
                    p.doc_id,
                    p.title,
                    p.uri,
                    dumps_json(p.labels, "document labels"),
                    dumps_json(p.meta, "document metadata"),
                    p.text,
                    p.content_hash,
                    p.created_at,
                ),
            )
            doc_pk = int(cursor.lastrowid or 0)
            docs[doc_pk] = _DocInfo(p.doc_id, p.title, p.uri, p.labels, p.created_at)
            rows = []
            for i, (a, b) in enumerate(p.spans):
                rows.append(
                    (
                        corpus_id,
                        doc_pk,
                        stable_id({"doc": p.doc_id, "i": i}),
                        i,
                        a,
                        b,
                        p.text[a:b],
                        data[offset + i].tobytes(),
                    )
                )
            offset += len(p.spans)
            conn.executemany(
                'INSERT INTO rag_chunks (corpus_id, doc_pk, chunk_id, i, start, "end", text, '
                "vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            pks = [
                r[0]
                for r in conn.execute(
                    "SELECT chunk_pk FROM rag_chunks WHERE doc_pk = ? ORDER BY i", (doc_pk,)
                )
            ]
            chunk_pks.extend(pks)
            chunk_docs.extend([doc_pk] * len(pks))
        new_version = conn.execute(
            "UPDATE rag_corpora SET version = version + 1, embedder = coalesce(embedder, ?), "
            "dim = coalesce(dim, ?) WHERE corpus_id = ? RETURNING version",
            (embedder.name if dim is not None else None, dim, corpus_id),
        ).fetchone()[0]
        return {
            "version": int(new_version),
            "removed": removed,
            "docs": docs,
            "pks": np.array(chunk_pks, dtype=np.int64),
            "doc_of": np.array(chunk_docs, dtype=np.int64),
            "matrix": data[: len(chunk_pks)] if dim is not None else None,
            "embedder": embedder.name if dim is not None else None,
            "dim": dim,
        }

    def _cache_apply(self, corpus_id: str, change: dict[str, Any]) -> None:
        """Worker thread: bring a loaded cache forward by one committed change, if it was
        at the version just before it (otherwise the next search reloads it)."""
        cache = self._cache(corpus_id)
        with cache.lock:
            snap = cache.snapshot
            if snap is None or cache.version != change["version"] - 1:
                return
            if change["removed"]:
                self._consolidate(cache)
                snap = cache.snapshot
                assert snap is not None
                gone = np.isin(snap.doc_of, np.array(change["removed"], dtype=np.int64))
                docs = {k: v for k, v in snap.docs.items() if k not in set(change["removed"])}
                cache.snapshot = snap = _Snapshot(
                    snap.version,
                    snap.embedder,
                    snap.dim,
                    snap.pks[~gone],
                    snap.doc_of[~gone],
                    snap.matrix[~gone],
                    docs,
                )
            if change.get("docs"):
                snap.docs = {**snap.docs, **change["docs"]}
            if change.get("matrix") is not None and len(change["pks"]):
                if snap.dim is not None and snap.dim != change["dim"]:
                    cache.version = -1  # inconsistent: reload
                    return
                if snap.dim is None:
                    cache.snapshot = snap = _Snapshot(
                        snap.version,
                        change["embedder"],
                        change["dim"],
                        np.zeros(0, np.int64),
                        np.zeros(0, np.int64),
                        np.zeros((0, change["dim"]), np.float32),
                        snap.docs,
                    )
                cache.pending.append((change["pks"], change["doc_of"], change["matrix"]))
            cache.version = change["version"]
            snap.version = change["version"]

    @staticmethod
    def _consolidate(cache: _CorpusCache) -> None:
        snap = cache.snapshot
        if snap is None or not cache.pending:
            return
        pks = np.concatenate([snap.pks, *(p[0] for p in cache.pending)])
        doc_of = np.concatenate([snap.doc_of, *(p[1] for p in cache.pending)])
        matrix = np.vstack([snap.matrix, *(p[2] for p in cache.pending)])
        cache.pending = []
        cache.snapshot = _Snapshot(
            snap.version, snap.embedder, snap.dim, pks, doc_of, matrix, snap.docs
        )

    def _load(self, conn: sqlite3.Connection, corpus_id: str) -> _Snapshot:
        """Read a corpus's docs and vectors in one read transaction."""
        conn.execute("BEGIN")
        try:
            row = self._corpus_row(conn, corpus_id)
            docs = {
                int(r["doc_pk"]): _DocInfo(
                    r["doc_id"], r["title"], r["uri"], json.loads(r["labels"]), r["created_at"]
                )
                for r in conn.execute(
                    "SELECT doc_pk, doc_id, title, uri, labels, created_at FROM rag_docs "
                    "WHERE corpus_id = ?",
                    (corpus_id,),
                )
            }
            dim = row["dim"]
            rows = conn.execute(
                "SELECT chunk_pk, doc_pk, vector FROM rag_chunks WHERE corpus_id = ? "
                "ORDER BY chunk_pk",
                (corpus_id,),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        pks = np.array([r[0] for r in rows], dtype=np.int64)
        doc_of = np.array([r[1] for r in rows], dtype=np.int64)
        matrix = (
            _vectors_from_blobs([r[2] for r in rows], int(dim))
            if dim
            else np.zeros((len(rows), 0), np.float32)
        )
        return _Snapshot(int(row["version"]), row["embedder"], dim, pks, doc_of, matrix, docs)

    def _synced(self, conn: sqlite3.Connection, corpus_id: str) -> _Snapshot:
        """Worker thread: the corpus's snapshot, reloaded if the workspace moved on."""
        row = self._corpus_row(conn, corpus_id)
        cache = self._cache(corpus_id)
        with cache.lock:
            if cache.snapshot is None or cache.version != row["version"]:
                cache.snapshot = self._load(conn, corpus_id)
                cache.pending = []
                cache.version = cache.snapshot.version
            self._consolidate(cache)
            assert cache.snapshot is not None
            return cache.snapshot

    # ---------------------------------------------------------------- retrieval
    async def search(
        self,
        corpus_id: str,
        query: str,
        k: int = 8,
        filters: Mapping[str, Any] | None = None,
        mode: str = "hybrid",
        *,
        context: Any = None,
        created_at_min: float | None = None,
        created_at_max: float | None = None,
    ) -> list[SearchHit]:
        """The ``k`` chunks of a corpus that best match ``query`` (AetherGraph's
        ``RAGFacade.search``), best first.

        Args:
          corpus_id: the corpus.
          query: free text (any punctuation is fine: it is never FTS5 syntax).
          k: how many hits (1 to 1000).
          filters: label filters (see :func:`matches_filters`); applied before ranking,
            so ``k`` hits come back whenever ``k`` chunks match (AetherGraph filtered its
            dense top 24 after the fact).
          mode: ``"hybrid"`` (RRF of dense and lexical), ``"dense"`` (cosine) or
            ``"lexical"`` (BM25; ours: AetherGraph had dense and hybrid only). Also
            ``"structural"``: the newest chunks, ignoring the query (0.1.0a15's KB).
          context: the searching context (an ``llm:<profile>`` embedder uses it).
          created_at_min, created_at_max: documents added within these epoch seconds.

        Raises:
          CorpusNotFoundError: no such corpus.
          ValueError: for a bad ``k`` or ``mode``.
          EmbedderMismatchError: dense/hybrid on a corpus of another embedder.
        """
        check_corpus_id(corpus_id)
        _check_k(k)
        if mode not in (*SEARCH_MODES, "structural"):
            raise ValueError(
                f"mode must be one of {', '.join(SEARCH_MODES)} (or 'structural'); got {mode!r}"
            )
        if not isinstance(query, str):
            raise TypeError(f"query must be a str; got {type(query).__name__}")
        if filters is not None and not isinstance(filters, Mapping):
            raise TypeError(f"filters must be a dict of label -> value; got {filters!r:.80}")
        qvec: np.ndarray | None = None
        embedder = self.embedder
        if mode in ("hybrid", "dense") and query.strip():
            qvec = (await embedder.embed_batch([query], context))[0]
        window = (created_at_min, created_at_max)

        def run(conn: sqlite3.Connection) -> list[SearchHit]:
            return self._search_sync(
                conn, corpus_id, query, qvec, embedder.name, k, dict(filters or {}), mode, window
            )

        return await self.workspace.read(run)

    def _search_sync(
        self,
        conn: sqlite3.Connection,
        corpus_id: str,
        query: str,
        qvec: np.ndarray | None,
        embedder_name: str,
        k: int,
        filters: dict[str, Any],
        mode: str,
        window: tuple[float | None, float | None],
    ) -> list[SearchHit]:
        snap = self._synced(conn, corpus_id)
        allowed_docs: list[int] | None = None
        lo, hi = window
        if filters or lo is not None or hi is not None:
            allowed_docs = [
                pk
                for pk, doc in snap.docs.items()
                if matches_filters(doc, filters)
                and (lo is None or doc.created_at >= lo)
                and (hi is None or doc.created_at <= hi)
            ]
            if not allowed_docs:
                return []
        mask = None
        if allowed_docs is not None:
            mask = np.isin(snap.doc_of, np.array(allowed_docs, dtype=np.int64))

        n = len(snap.pks)
        depth = max(50, 5 * k)
        dense_scores: np.ndarray | None = None
        dense_rank: dict[int, int] = {}
        if qvec is not None and n and mode in ("hybrid", "dense"):
            if snap.embedder is not None and snap.embedder != embedder_name:
                raise EmbedderMismatchError(
                    f"the RAG corpus {corpus_id!r} holds vectors of {snap.embedder!r}; the "
                    f"query was embedded with {embedder_name!r}: reembed({corpus_id!r}) or "
                    f"search it in mode='lexical'"
                )
            if snap.dim is not None and qvec.shape[0] != snap.dim:
                raise EmbedderMismatchError(
                    f"the RAG corpus {corpus_id!r} has {snap.dim}-dimensional vectors; the "
                    f"query vector has {qvec.shape[0]}: reembed({corpus_id!r})"
                )
            dense_scores = snap.matrix @ qvec.astype(np.float32)
            ranked = dense_scores if mask is None else np.where(mask, dense_scores, -np.inf)
            m = min(depth if mode == "hybrid" else k, n)
            top = np.argpartition(-ranked, m - 1)[:m]
            top = top[np.argsort(-ranked[top], kind="stable")]
            if mask is not None:
                top = top[mask[top]]
            dense_rank = {int(snap.pks[i]): r + 1 for r, i in enumerate(top)}

        lexical: dict[int, float] = {}
        lexical_rank: dict[int, int] = {}
        if mode in ("hybrid", "lexical"):
            match = fts_query(query)
            if match is not None:
                sql = (
                    "SELECT rag_fts.rowid, bm25(rag_fts) AS s FROM rag_fts "
                    "JOIN rag_chunks c ON c.chunk_pk = rag_fts.rowid "
                    "WHERE rag_fts MATCH ? AND c.corpus_id = ?"
                )
                params: list[Any] = [match, corpus_id]
                if allowed_docs is not None:
                    sql += " AND c.doc_pk IN (SELECT value FROM json_each(?))"
                    params.append(json.dumps(allowed_docs))
                sql += " ORDER BY s LIMIT ?"
                params.append(depth if mode == "hybrid" else k)
                for r, (pk, s) in enumerate(conn.execute(sql, params)):
                    lexical[int(pk)] = -float(s)
                    lexical_rank[int(pk)] = r + 1

        if mode == "structural":
            order = np.arange(n)[::-1] if mask is None else np.nonzero(mask)[0][::-1]
            chosen = [(int(snap.pks[i]), 0.0) for i in order[:k]]
        elif mode == "dense":
            assert dense_scores is not None or not dense_rank
            chosen = [
                (pk, float(dense_scores[self._position(snap, pk)]))  # type: ignore[index]
                for pk in dense_rank
            ]
        elif mode == "lexical":
            chosen = list(lexical.items())
        else:
            fused: dict[int, float] = {}
            for pk, r in dense_rank.items():
                fused[pk] = fused.get(pk, 0.0) + 1.0 / (RRF_K + r)
            for pk, r in lexical_rank.items():
                fused[pk] = fused.get(pk, 0.0) + 1.0 / (RRF_K + r)
            chosen = sorted(fused.items(), key=lambda item: -item[1])
        chosen = chosen[:k]
        if not chosen:
            return []

        pks = [pk for pk, _ in chosen]
        rows = {
            int(r["chunk_pk"]): r
            for r in conn.execute(
                'SELECT chunk_pk, chunk_id, doc_pk, i, start, "end", text FROM rag_chunks '
                "WHERE chunk_pk IN (SELECT value FROM json_each(?))",
                (json.dumps(pks),),
            )
        }
        hits: list[SearchHit] = []
        for pk, score in chosen:
            row = rows.get(pk)
            if row is None:
                continue  # deleted meanwhile
            doc = snap.docs.get(int(row["doc_pk"]))
            if doc is None:
                continue
            dense = None
            if dense_scores is not None:
                pos = self._position(snap, pk)
                if pos is not None:
                    dense = float(dense_scores[pos])
            meta = {
                "doc_id": doc.doc_id,
                "title": doc.title,
                "i": int(row["i"]),
                "labels": dict(doc.labels),
                "uri": doc.uri,
                "start": int(row["start"]),
                "end": int(row["end"]),
                "scores": {
                    "dense": dense,
                    "lexical": lexical.get(pk),
                    "dense_rank": dense_rank.get(pk),
                    "lexical_rank": lexical_rank.get(pk),
                },
            }
            hits.append(
                SearchHit(
                    chunk_id=row["chunk_id"],
                    doc_id=doc.doc_id,
                    corpus_id=corpus_id,
                    score=float(score),
                    text=row["text"],
                    meta=meta,
                )
            )
        return hits

    @staticmethod
    def _position(snap: _Snapshot, pk: int) -> int | None:
        """The row of chunk ``pk`` in the snapshot (its pks are increasing)."""
        pos = int(np.searchsorted(snap.pks, pk))
        return pos if pos < len(snap.pks) and int(snap.pks[pos]) == pk else None

    async def retrieve(
        self, corpus_id: str, query: str, k: int = 6, rerank: bool = True, *, context: Any = None
    ) -> list[SearchHit]:
        """AetherGraph's ``retrieve``: :meth:`search` in hybrid mode (``rerank`` ignored,
        as there)."""
        return await self.search(corpus_id, query, k=k, mode="hybrid", context=context)

    async def answer(
        self,
        corpus_id: str,
        question: str,
        *,
        llm: Any = None,
        style: str = "concise",
        with_citations: bool = True,
        k: int = 6,
        filters: Mapping[str, Any] | None = None,
        mode: str = "hybrid",
        context: Any = None,
    ) -> dict[str, Any]:
        """Answer ``question`` from the corpus's top ``k`` chunks with an LLM
        (AetherGraph's ``RAGFacade.answer``: the same prompt, numbered context chunks,
        the model asked to cite them as [1], [2]).

        Args:
          llm: a client with ``async chat(messages) -> (text, usage)``; a str is an LLM
            profile name (``context.llm(profile=...)``); None: ``context.llm()``.
          style: ``"concise"`` or ``"detailed"`` (adds "Be structured and explain
            reasoning briefly.").
          with_citations: add ``resolved_citations``.
          k: chunks retrieved. filters, mode: as :meth:`search`.

        Returns ``{"answer": str, "citations": [{"chunk_id", "doc_id", "rank", "start",
        "end", "text", "score"}], "usage": dict, "resolved_citations": [{"rank",
        "doc_id", "title", "uri", "chunk_id", "snippet", "start", "end", "score"}]}`` --
        AetherGraph's shape. Ours: ``start``/``end``, the chunk's character span in the
        document's text (``get_doc_text``); ``text``/``score`` in citations, which
        AetherGraph's own docstring example reads (its code did not put them there). As
        AetherGraph, the LLM is asked even if nothing was found.

        Raises:
          CorpusNotFoundError: no such corpus.
          ServiceNotConfiguredError: no ``llm`` given and the context has none.
          LLMError: from the model.
        """
        client = llm_client(llm, context)
        hits = await self.search(
            corpus_id, question, k=k, filters=filters, mode=mode, context=context
        )
        return await self.answer_from_hits(
            question, hits, llm=client, style=style, with_citations=with_citations
        )

    @staticmethod
    async def answer_from_hits(
        question: str,
        hits: Sequence[Any],
        *,
        llm: Any,
        style: str = "concise",
        with_citations: bool = True,
    ) -> dict[str, Any]:
        """The LLM step of :meth:`answer` over hits already retrieved (``SearchHit``-like:
        ``chunk_id``, ``doc_id``, ``score``, ``text``, ``meta`` with ``start``/``end``)."""
        chunks = "\n\n".join(f"[{i + 1}] {h.text}" for i, h in enumerate(hits))
        system = (
            "You answer strictly from the provided context. Cite chunk numbers like [1],[2]. "
            "If insufficient, say you don't know."
        )
        if style == "detailed":
            system += " Be structured and explain reasoning briefly."
        user = f"Question: {question}\n\nContext:\n{chunks}"
        text, usage = await llm.chat(
            [{"role": "system", "content": system}, {"role": "user", "content": user}]
        )
        out: dict[str, Any] = {
            "answer": text,
            "citations": [
                {
                    "chunk_id": h.chunk_id,
                    "doc_id": h.doc_id,
                    "rank": i + 1,
                    "start": h.meta.get("start"),
                    "end": h.meta.get("end"),
                    "text": h.text,
                    "score": h.score,
                }
                for i, h in enumerate(hits)
            ],
            "usage": usage,
        }
        if with_citations:
            out["resolved_citations"] = [_resolved(i + 1, h) for i, h in enumerate(hits)]
        return out

    def resolve_citations(
        self, corpus_id: str, citations: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``[{"rank", "doc_id", "title", "uri", "chunk_id", "snippet", "start", "end"}]``
        sorted by rank, for citations ``[{"chunk_id", "doc_id", "rank"}]``
        (AetherGraph's, synchronous as there).

        Blocking: a short read of the workspace on the calling thread. On an event loop
        prefer ``answer()``'s ``resolved_citations``.
        """
        check_corpus_id(corpus_id)
        ids = [c["chunk_id"] for c in citations]

        def read(conn: sqlite3.Connection) -> dict[str, sqlite3.Row]:
            return {
                r["chunk_id"]: r
                for r in conn.execute(
                    'SELECT c.chunk_id, c.start, c."end", c.text, d.doc_id, d.title, d.uri '
                    "FROM rag_chunks c JOIN rag_docs d ON d.doc_pk = c.doc_pk "
                    "WHERE c.corpus_id = ? AND c.chunk_id IN (SELECT value FROM json_each(?))",
                    (corpus_id, json.dumps(ids)),
                )
            }

        found = self.workspace.read_sync(read)
        out = []
        for c in sorted(citations, key=lambda x: x["rank"]):
            row = found.get(c["chunk_id"])
            text = (row["text"] if row is not None else "").strip().replace("\n", " ")
            out.append(
                {
                    "rank": c["rank"],
                    "doc_id": c["doc_id"],
                    "title": row["title"] if row is not None else "(untitled)",
                    "uri": row["uri"] if row is not None else None,
                    "chunk_id": c["chunk_id"],
                    "snippet": _snippet(text),
                    "start": row["start"] if row is not None else None,
                    "end": row["end"] if row is not None else None,
                }
            )
        return out

    # ----------------------------------------------------------------- deletion
    async def delete_docs(self, corpus_id: str, doc_ids: list[str]) -> dict[str, Any]:
        """Remove documents with their chunks, vectors and FTS rows (AetherGraph's
        ``delete_docs``).

        Returns ``{"removed_docs": int, "removed_chunks": int}``: the documents actually
        removed (AetherGraph reported ``len(doc_ids)`` whatever it found).

        Raises:
          CorpusNotFoundError: no such corpus. TypeError: if ``doc_ids`` is a str.
        """
        check_corpus_id(corpus_id)
        if isinstance(doc_ids, str) or not isinstance(doc_ids, Iterable):
            raise TypeError(f"doc_ids must be a list of str; got {doc_ids!r:.80}")
        wanted = json.dumps([str(d) for d in doc_ids])

        def write(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute(
                "SELECT version FROM rag_corpora WHERE corpus_id = ?", (corpus_id,)
            ).fetchone()
            if row is None:
                raise self._missing(conn, corpus_id)
            pks = [
                int(r[0])
                for r in conn.execute(
                    "SELECT doc_pk FROM rag_docs WHERE corpus_id = ? AND doc_id IN "
                    "(SELECT value FROM json_each(?))",
                    (corpus_id, wanted),
                )
            ]
            if not pks:
                return {"version": int(row[0]) + 1, "removed": [], "chunks": 0, "noop": True}
            chunks = conn.execute(
                "DELETE FROM rag_chunks WHERE doc_pk IN (SELECT value FROM json_each(?))",
                (json.dumps(pks),),
            ).rowcount
            conn.execute(
                "DELETE FROM rag_docs WHERE doc_pk IN (SELECT value FROM json_each(?))",
                (json.dumps(pks),),
            )
            version = conn.execute(
                "UPDATE rag_corpora SET version = version + 1 WHERE corpus_id = ? "
                "RETURNING version",
                (corpus_id,),
            ).fetchone()[0]
            return {"version": int(version), "removed": pks, "chunks": int(chunks)}

        change = await self.workspace.write(write)
        if not change.get("noop"):
            await self.workspace.run_in_io_thread(self._cache_apply, corpus_id, change)
        return {"removed_docs": len(change["removed"]), "removed_chunks": change["chunks"]}

    async def reembed(
        self,
        corpus_id: str,
        *,
        doc_ids: list[str] | None = None,
        batch: int = 64,
        context: Any = None,
    ) -> dict[str, Any]:
        """Recompute the vectors of a corpus's chunks (of ``doc_ids`` only if given) with
        this service's embedder (AetherGraph's ``reembed``). Re-embedding every chunk
        switches the corpus to this embedder; a subset must already be of it.

        Returns ``{"reembedded": int, "model": embedder name}``.

        Raises:
          CorpusNotFoundError: no such corpus.
          EmbedderMismatchError: a subset of a corpus filled by another embedder.
        """
        check_corpus_id(corpus_id)
        _check_k(batch, "batch")
        embedder = self.embedder
        if doc_ids is not None:
            await self._check_embedder(corpus_id, embedder)
        wanted = None if doc_ids is None else json.dumps([str(d) for d in doc_ids])

        def read(conn: sqlite3.Connection) -> list[tuple[int, str]]:
            self._corpus_row(conn, corpus_id)
            sql = "SELECT c.chunk_pk, c.text FROM rag_chunks c WHERE c.corpus_id = ?"
            params: list[Any] = [corpus_id]
            if wanted is not None:
                sql += (
                    " AND c.doc_pk IN (SELECT doc_pk FROM rag_docs WHERE corpus_id = ? AND "
                    "doc_id IN (SELECT value FROM json_each(?)))"
                )
                params += [corpus_id, wanted]
            return [(int(r[0]), r[1]) for r in conn.execute(sql + " ORDER BY c.chunk_pk", params)]

        targets = await self.workspace.read(read)
        done = 0
        for i in range(0, len(targets), batch):
            part = targets[i : i + batch]
            vectors = np.ascontiguousarray(
                await embedder.embed_batch([t for _, t in part], context), dtype="<f4"
            )
            dim = int(vectors.shape[1])
            rows = [(vectors[j].tobytes(), pk) for j, (pk, _) in enumerate(part)]
            last = i + batch >= len(targets)

            def write(
                conn: sqlite3.Connection, rows: list[Any] = rows, dim: int = dim, last: bool = last
            ) -> None:
                conn.executemany("UPDATE rag_chunks SET vector = ? WHERE chunk_pk = ?", rows)
                if last and wanted is None:
                    conn.execute(
                        "UPDATE rag_corpora SET embedder = ?, dim = ? WHERE corpus_id = ?",
                        (embedder.name, dim, corpus_id),
                    )
                conn.execute(
                    "UPDATE rag_corpora SET version = version + 1 WHERE corpus_id = ?",
                    (corpus_id,),
                )

            await self.workspace.write(write)
            done += len(part)
        return {"reembedded": done, "model": embedder.name}


# ----------------------------------------------------------------------- functions
def _snippet(text: str) -> str:
    return (text[:_SNIPPET_CHARS] + "…") if len(text) > _SNIPPET_CHARS else text


def _resolved(rank: int, hit: SearchHit) -> dict[str, Any]:
    return {
        "rank": rank,
        "doc_id": hit.doc_id,
        "title": hit.meta.get("title", "(untitled)"),
        "uri": hit.meta.get("uri"),
        "chunk_id": hit.chunk_id,
        "snippet": _snippet(hit.text.strip().replace("\n", " ")),
        "start": hit.meta.get("start"),
        "end": hit.meta.get("end"),
        "score": hit.score,
    }


def _logger_of(context: Any) -> Any:
    getter = getattr(context, "logger", None)
    if callable(getter):
        try:
            return getter()
        except Exception:
            pass
    return log


_services: weakref.WeakKeyDictionary[Workspace, RagService] = weakref.WeakKeyDictionary()
_services_lock = threading.Lock()


def rag_service_for(workspace: Workspace) -> RagService:
    """The one :class:`RagService` of ``workspace`` in this process (shared by the hubs of
    every manager on it, so a corpus's vectors are loaded once)."""
    with _services_lock:
        service = _services.get(workspace)
        if service is None:
            service = _services[workspace] = RagService(workspace)
        return service
