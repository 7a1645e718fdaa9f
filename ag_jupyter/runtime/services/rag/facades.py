"""What a node sees: ``context.rag`` (AetherGraph's ``NodeRAG``) and ``context.kb()``
(0.1.0a15's ``NodeKB``), both over one :class:`~.service.RagService`.

Scope, as in AetherGraph: ``upsert_docs`` stamps every document's labels with the node's
identity (``run_id``, ``session_id``, ``graph_id``, ``node_id``, ``agent_id``, ``app_id``)
and ``scope_id`` (``"session:<id>"``, or ``"run:<id>"`` without a session). Where ours
differs: AetherGraph's ``NodeRAG.search`` always filtered on the node's ``scope_id``, so a
later session (or kernel) never found documents an earlier one indexed; here a corpus is
workspace-wide and ``scope_id`` filters only when passed. ``bind_corpus()`` without an id
names the corpus ``mem:<scope_id>:<key>``, the scheme AetherGraph's code comments give
(its ``Scope.rag_corpus_id`` helper did not exist, so it raised ``AttributeError``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..kv import context_scope
from .checks import check_corpus_id, llm_client

# The service builds these facades (RagService.bind), so this module imports nothing of
# it: ``RagService`` and ``SearchHit`` below are named in docstrings and typed ``Any``.
RagService = Any
SearchHit = Any

_IDENTITY = ("app_id", "agent_id", "session_id", "run_id", "graph_id", "node_id")


def scope_labels(context: Any, scope_id: str | None = None) -> dict[str, Any]:
    """AetherGraph's ``Scope.rag_labels``: the context's identity labels plus
    ``scope_id`` (default: the context's memory scope, ``session:<id>``/``run:<id>``)."""
    out: dict[str, Any] = {}
    for name in _IDENTITY:
        value = getattr(context, name, None)
        if value:
            out[name] = value
    out["scope_id"] = scope_id or context_scope(context)
    return out


class NodeRAG:
    """``context.rag`` (also ``context.rag()``): AetherGraph's node-scoped RAG helper.

    ``bind_corpus``, ``upsert_docs``, ``search`` and ``answer`` take the node's scope;
    ``list_corpora``, ``list_docs``, ``delete_docs``, ``reembed``, ``stats``, ``retrieve``,
    ``resolve_citations``, ``add_corpus`` and ``get_doc_text`` are the service's
    (AetherGraph delegated them through ``__getattr__``; so does this class for anything
    else of :class:`RagService`).

    Attributes:
      service: the :class:`RagService`. context: the node's context.
    """

    __slots__ = ("context", "service")

    def __init__(self, service: RagService, context: Any) -> None:
        self.service = service
        self.context = context

    def __call__(self) -> NodeRAG:
        """``context.rag()`` is ``context.rag``: AetherGraph's docs write both."""
        return self

    def __repr__(self) -> str:
        return f"NodeRAG(run_id={getattr(self.context, 'run_id', None)!r}, {self.service!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)

    async def bind_corpus(
        self,
        *,
        corpus_id: str | None = None,
        key: str | None = None,
        create_if_missing: bool = True,
        labels: dict[str, Any] | None = None,
        scope_id: str | None = None,
    ) -> str:
        """Bind or create a corpus for this node's scope; returns its id.

        Args:
          corpus_id: an explicit id; else ``mem:<scope_id>:<key or 'default'>``.
          key: distinguishes corpora of one scope.
          create_if_missing: create it (with metadata ``{"scope": <scope labels>,
            **labels}``) if it does not exist; an existing corpus keeps its metadata.
          labels: extra JSON metadata.
          scope_id: overrides the node's scope id.

        Raises:
          TypeError: for a bad id or metadata that is not JSON.
        """
        labels_ = scope_labels(self.context, scope_id)
        cid = corpus_id or f"mem:{labels_['scope_id']}:{key or 'default'}"
        check_corpus_id(cid)
        if create_if_missing:
            await self.service.add_corpus(
                cid, {"scope": labels_, **(labels or {})}, scope_labels=labels_
            )
        return cid

    async def upsert_docs(
        self, corpus_id: str, docs: list[dict[str, Any]], *, scope_id: str | None = None
    ) -> dict[str, Any]:
        """Ingest documents (``{"text", "title", "labels"}`` or ``{"path", "labels"}``)
        into ``corpus_id``, labelled with this node's scope; see
        :meth:`RagService.upsert_docs` for the result and errors. Progress lines go to
        this run's ``logger()``."""
        return await self.service.upsert_docs(
            corpus_id, docs, context=self.context, scope_labels=scope_labels(self.context, scope_id)
        )

    async def search(
        self,
        corpus_id: str,
        query: str,
        *,
        k: int = 8,
        filters: dict[str, Any] | None = None,
        scope_id: str | None = None,
        mode: str = "hybrid",
    ) -> list[SearchHit]:
        """The ``k`` best chunks for ``query`` (``mode`` ``"hybrid"``, ``"dense"`` or
        ``"lexical"``); ``filters`` match labels; ``scope_id`` (if given) keeps documents
        of that scope only. See :meth:`RagService.search`."""
        merged = dict(filters or {})
        if scope_id is not None:
            merged["scope_id"] = scope_id
        return await self.service.search(
            corpus_id, query, k=k, filters=merged or None, mode=mode, context=self.context
        )

    async def answer(
        self,
        corpus_id: str,
        question: str,
        *,
        llm: Any = None,
        style: str = "concise",
        with_citations: bool = True,
        k: int = 6,
        scope_id: str | None = None,
    ) -> dict[str, Any]:
        """Answer from the corpus with ``context.llm()`` (or ``llm``): ``{"answer",
        "citations", "usage", "resolved_citations"}``; see :meth:`RagService.answer`."""
        return await self.service.answer(
            corpus_id,
            question,
            llm=llm,
            style=style,
            with_citations=with_citations,
            k=k,
            filters={"scope_id": scope_id} if scope_id is not None else None,
            context=self.context,
        )

    async def reembed(
        self, corpus_id: str, *, doc_ids: list[str] | None = None, batch: int = 64
    ) -> dict[str, Any]:
        """See :meth:`RagService.reembed`."""
        return await self.service.reembed(
            corpus_id, doc_ids=doc_ids, batch=batch, context=self.context
        )

    async def retrieve(
        self, corpus_id: str, query: str, k: int = 6, rerank: bool = True
    ) -> list[SearchHit]:
        """See :meth:`RagService.retrieve`."""
        return await self.service.retrieve(
            corpus_id, query, k=k, rerank=rerank, context=self.context
        )


# ---------------------------------------------------------------------------- the KB
@dataclass(repr=False)
class KBSearchHit:
    """0.1.0a15's ``KBSearchHit`` (same fields as :class:`SearchHit`); ``meta`` has
    ``doc_id``, ``corpus_id``, ``title``, ``chunk_index``, ``labels``, ``start``, ``end``,
    ``scores``."""

    chunk_id: str
    doc_id: str
    corpus_id: str | None
    score: float
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return f"KBSearchHit(score={self.score:.4g}, doc_id={self.doc_id!r}, text={text!r})"


@dataclass
class KBAnswer:
    """0.1.0a15's ``KBAnswer``: ``answer`` text, ``citations`` ``[{"chunk_id", "doc_id",
    "rank", "start", "end"}]``, ``usage``, ``resolved_citations`` (dicts as
    :meth:`RagService.answer` gives; a15's own code built dicts too, from files it never
    wrote, so every title came back ``"(untitled)"``)."""

    answer: str
    citations: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    resolved_citations: list[dict[str, Any]] | None = None


def _kb_mode(mode: str | None, lexical_rerank: bool) -> str:
    """0.1.0a15's ``SearchMode`` to ours: ``semantic`` (its default) is dense, fused with
    the lexical ranking when ``lexical_rerank`` (a15 re-scored its dense hits lexically);
    ``auto``/None as ``semantic``; ``lexical``, ``hybrid``, ``structural`` as named."""
    if mode in (None, "auto", "semantic"):
        return "hybrid" if lexical_rerank else "dense"
    if mode in ("lexical", "hybrid", "structural"):
        return mode
    raise ValueError(
        f"mode must be one of auto, semantic, lexical, hybrid, structural; got {mode!r}"
    )


_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _window_start(time_window: str | None) -> float | None:
    if time_window is None:
        return None
    import re
    import time

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(time_window))
    if m is None:
        raise ValueError(
            f"time_window must look like '30m', '24h', '7d' or '2w'; got {time_window!r}"
        )
    return time.time() - float(m.group(1)) * _WINDOW_UNITS[m.group(2)]


class NodeKB:
    """``context.kb()``: 0.1.0a15's knowledge-base facade (keyword-only arguments, as
    there) over the same corpora as ``context.rag``.

    ``kb_namespace`` is a document label (``labels["kb_namespace"]``) set on upsert and
    filtered on search; documents are de-duplicated by text within a namespace, as a15
    did; ``level`` is accepted and ignored (a15 reserved it too).
    """

    __slots__ = ("context", "service")

    def __init__(self, service: RagService, context: Any) -> None:
        self.service = service
        self.context = context

    def __repr__(self) -> str:
        return f"NodeKB(run_id={getattr(self.context, 'run_id', None)!r}, {self.service!r})"

    def _filters(
        self, kb_namespace: str | None, filters: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        merged = dict(filters or {})
        if kb_namespace:
            merged["kb_namespace"] = kb_namespace
        return {k: v for k, v in merged.items() if v is not None} or None

    async def upsert_docs(
        self, corpus_id: str, docs: list[dict[str, Any]], *, kb_namespace: str | None = None
    ) -> dict[str, Any]:
        """Ingest documents (skipping one whose text the namespace already has);
        returns ``{"added", "chunks", ...}``. See :meth:`RagService.upsert_docs`."""
        labels: dict[str, Any] = {}
        if kb_namespace:
            labels["kb_namespace"] = kb_namespace
        if not docs:
            return {"added": 0, "chunks": 0}
        return await self.service.upsert_docs(
            corpus_id,
            docs,
            context=self.context,
            scope_labels={**scope_labels(self.context), **labels},
            dedupe=True,
        )

    async def search(
        self,
        *,
        corpus_id: str,
        query: str,
        top_k: int = 10,
        kb_namespace: str | None = None,
        filters: Mapping[str, Any] | None = None,
        level: Any = None,
        time_window: str | None = None,
        created_at_min: float | None = None,
        created_at_max: float | None = None,
        mode: str | None = None,
        lexical_rerank: bool = True,
    ) -> list[KBSearchHit]:
        """Ranked chunks (see :func:`_kb_mode` for ``mode``); ``time_window`` ``"7d"``
        etc. and ``created_at_min``/``max`` (epoch seconds) bound when documents were
        added.

        Raises:
          CorpusNotFoundError, ValueError: as :meth:`RagService.search`.
        """
        del level
        start = _window_start(time_window)
        lo = (
            max(x for x in (start, created_at_min) if x is not None)
            if (start is not None or created_at_min is not None)
            else None
        )
        hits = await self.service.search(
            corpus_id,
            query,
            k=top_k,
            filters=self._filters(kb_namespace, filters),
            mode=_kb_mode(mode, lexical_rerank),
            context=self.context,
            created_at_min=lo,
            created_at_max=created_at_max,
        )
        out = []
        for h in hits:
            meta = dict(h.meta)
            meta["chunk_index"] = meta.pop("i")
            meta["corpus_id"] = h.corpus_id
            out.append(KBSearchHit(h.chunk_id, h.doc_id, h.corpus_id, h.score, h.text, meta))
        return out

    async def answer(
        self,
        *,
        corpus_id: str,
        question: str,
        style: str = "concise",
        kb_namespace: str | None = None,
        filters: Mapping[str, Any] | None = None,
        k: int = 10,
        level: Any = None,
        time_window: str | None = None,
        created_at_min: float | None = None,
        created_at_max: float | None = None,
        mode: str | None = None,
        lexical_rerank: bool = True,
    ) -> KBAnswer:
        """A :class:`KBAnswer` from the top ``k`` chunks with ``context.llm()``; an empty
        answer without asking the LLM when nothing is found (as 0.1.0a15)."""
        del level
        hits = await self.search(
            corpus_id=corpus_id,
            query=question,
            top_k=k,
            kb_namespace=kb_namespace,
            filters=filters,
            time_window=time_window,
            created_at_min=created_at_min,
            created_at_max=created_at_max,
            mode=mode,
            lexical_rerank=lexical_rerank,
        )
        if not hits:
            return KBAnswer(answer="", citations=[], usage=None, resolved_citations=[])
        result = await self.service.answer_from_hits(
            question, hits, llm=llm_client(None, self.context), style=style
        )
        return KBAnswer(
            answer=result["answer"],
            citations=result["citations"],
            usage=result["usage"],
            resolved_citations=result["resolved_citations"],
        )

    async def list_corpora(self) -> list[dict[str, Any]]:
        """See :meth:`RagService.list_corpora`."""
        return await self.service.list_corpora()

    async def list_docs(
        self, *, corpus_id: str, limit: int = 200, after: str | None = None
    ) -> list[dict[str, Any]]:
        """See :meth:`RagService.list_docs`."""
        return await self.service.list_docs(corpus_id, limit=limit, after=after)

    async def delete_docs(self, *, corpus_id: str, doc_ids: Sequence[str]) -> dict[str, Any]:
        """See :meth:`RagService.delete_docs`."""
        return await self.service.delete_docs(corpus_id, list(doc_ids))

    async def reembed(
        self, *, corpus_id: str, doc_ids: list[str] | None = None, batch: int = 64
    ) -> dict[str, Any]:
        """See :meth:`RagService.reembed`."""
        return await self.service.reembed(
            corpus_id, doc_ids=doc_ids, batch=batch, context=self.context
        )

    async def stats(self, *, corpus_id: str) -> dict[str, Any]:
        """See :meth:`RagService.stats`."""
        return await self.service.stats(corpus_id)
