"""Retrieval: ``context.rag`` (AetherGraph's RAG facade) and ``context.kb()`` (0.1.0a15's
knowledge base) over an embedded index in the workspace.

Modules, each importing only those above it::

    chunking    TextSplitter: structure-aware chunks as exact (start, end) spans
    schema      RAG_SCHEMA: corpora, docs, chunks (+ vectors), the FTS5 index
    provider    RagProvider / KBProvider: what the composition root installs (light)
    embedders   WordLlama (offline, weights from its wheel), callables, LLM profiles
    parsers     text of a file (txt/md/rst, PDF through pypdf)
    service     RagService: ingestion, hybrid search, answer, management
    facades     NodeRAG (context.rag), NodeKB (context.kb())

``chunking``, ``schema`` and ``provider`` import no numpy; the other names below are
imported on first access (they need ``ag-jupyter[rag]``).
"""

from __future__ import annotations

import importlib
from typing import Any

from .chunking import TextSplitter
from .provider import KBProvider, RagProvider
from .schema import RAG_SCHEMA

_LAZY = {
    "EMBEDDER_ENV": "embedders",
    "CallableEmbedder": "embedders",
    "Embedder": "embedders",
    "LLMProfileEmbedder": "embedders",
    "WordLlamaEmbedder": "embedders",
    "resolve_embedder": "embedders",
    "set_default_embedder": "embedders",
    "wordllama_embedder": "embedders",
    "KBAnswer": "facades",
    "KBSearchHit": "facades",
    "NodeKB": "facades",
    "NodeRAG": "facades",
    "scope_labels": "facades",
    "CorpusNotFoundError": "service",
    "EmbedderMismatchError": "service",
    "RagService": "service",
    "SearchHit": "service",
    "rag_service_for": "service",
}

__all__ = ["RAG_SCHEMA", "KBProvider", "RagProvider", "TextSplitter", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
