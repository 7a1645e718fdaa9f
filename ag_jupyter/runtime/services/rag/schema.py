"""The RAG index's tables in the workspace database: the ``rag`` schema component.

- ``rag_corpora``: one row per corpus (its metadata, which embedder filled it and the
  vectors' dimension, and a ``version`` bumped by every change, so a process can tell its
  in-memory vector matrix is stale);
- ``rag_docs``: one row per document: ``doc_id``, title, labels (JSON, what filters
  match), the extracted text (chunk spans are offsets into it);
- ``rag_chunks``: one row per chunk: its span ``[start, end)`` in the document, its text,
  its vector (float32 little-endian BLOB, length 1);
- ``rag_fts``: an FTS5 index over the chunks' text (external content, kept by triggers;
  porter stemming over ``unicode61`` tokens), whose ``bm25()`` is the lexical score.

Chunks belong to corpora, not runs: pruning run history leaves them alone. Deleting a
document deletes its chunks (``ON DELETE CASCADE`` is not relied on: the service deletes
them explicitly, and the FTS trigger removes their index rows).
"""

from __future__ import annotations

from ...store.schema import Migration, SchemaComponent

RAG_SCHEMA = SchemaComponent(
    "rag",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS rag_corpora (
                    corpus_id TEXT PRIMARY KEY,
                    meta TEXT NOT NULL DEFAULT '{}',
                    embedder TEXT,
                    dim INTEGER,
                    version INTEGER NOT NULL DEFAULT 0,
                    created_at REAL NOT NULL
                ) WITHOUT ROWID""",
                """CREATE TABLE IF NOT EXISTS rag_docs (
                    doc_pk INTEGER PRIMARY KEY,
                    corpus_id TEXT NOT NULL,
                    doc_id TEXT NOT NULL,
                    title TEXT NOT NULL,
                    uri TEXT,
                    labels TEXT NOT NULL DEFAULT '{}',
                    meta TEXT NOT NULL DEFAULT '{}',
                    text TEXT NOT NULL,
                    content_hash TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    UNIQUE (corpus_id, doc_id)
                )""",
                "CREATE INDEX IF NOT EXISTS rag_docs_hash ON rag_docs (corpus_id, content_hash)",
                """CREATE TABLE IF NOT EXISTS rag_chunks (
                    chunk_pk INTEGER PRIMARY KEY,
                    corpus_id TEXT NOT NULL,
                    doc_pk INTEGER NOT NULL,
                    chunk_id TEXT NOT NULL,
                    i INTEGER NOT NULL,
                    start INTEGER NOT NULL,
                    "end" INTEGER NOT NULL,
                    text TEXT NOT NULL,
                    vector BLOB
                )""",
                "CREATE INDEX IF NOT EXISTS rag_chunks_doc ON rag_chunks (doc_pk)",
                "CREATE INDEX IF NOT EXISTS rag_chunks_corpus ON rag_chunks (corpus_id, chunk_pk)",
                "CREATE INDEX IF NOT EXISTS rag_chunks_id ON rag_chunks (corpus_id, chunk_id)",
                """CREATE VIRTUAL TABLE IF NOT EXISTS rag_fts USING fts5(
                    text, content='rag_chunks', content_rowid='chunk_pk',
                    tokenize='porter unicode61 remove_diacritics 2'
                )""",
                """CREATE TRIGGER IF NOT EXISTS rag_chunks_ai AFTER INSERT ON rag_chunks BEGIN
                    INSERT INTO rag_fts (rowid, text) VALUES (new.chunk_pk, new.text);
                END""",
                """CREATE TRIGGER IF NOT EXISTS rag_chunks_ad AFTER DELETE ON rag_chunks BEGIN
                    INSERT INTO rag_fts (rag_fts, rowid, text)
                    VALUES ('delete', old.chunk_pk, old.text);
                END""",
            ),
        ),
    ),
)
