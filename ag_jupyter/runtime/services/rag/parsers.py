"""Text of a document given by path: what ``upsert_docs([{"path": ...}])`` indexes.

As AetherGraph's RAG parsers (``services/rag/parsers/``): ``.pdf`` through ``pypdf``
(pages joined by blank lines; ``{"pages": n}`` as extra metadata), ``.md``/``.markdown``/
``.mkd``/``.rst``/``.txt`` and anything else as UTF-8 text. Undecodable bytes become
U+FFFD (AetherGraph dropped them): chunk spans are offsets into the decoded text either way.
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import ServiceNotConfiguredError


def extract_text(path: str) -> tuple[str, dict[str, Any]]:
    """``(text, extra_meta)`` of the file at ``path`` (blocking).

    Raises:
      FileNotFoundError / IsADirectoryError / PermissionError: from opening it.
      ServiceNotConfiguredError: for a PDF when ``pypdf`` is not installed.
    """
    lower = path.lower()
    if lower.endswith(".pdf"):
        try:
            from pypdf import PdfReader
        except ImportError:
            raise ServiceNotConfiguredError(
                f"reading the PDF {path!r} needs pypdf: pip install 'ag-jupyter[rag]' (or "
                "pip install pypdf), or pass its text as {'text': ..., 'title': ...}"
            ) from None
        reader = PdfReader(path)
        pages = []
        for page in reader.pages:
            try:
                pages.append(page.extract_text() or "")
            except Exception:  # a damaged page: skip it, as AetherGraph does
                continue
        return "\n\n".join(pages), {"pages": len(reader.pages)}
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(), {}


def file_uri(path: str) -> str:
    """``file://`` URI of ``path`` (absolute)."""
    from pathlib import Path

    return Path(os.path.abspath(path)).as_uri()
