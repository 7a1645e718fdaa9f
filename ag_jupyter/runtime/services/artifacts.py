"""The ``artifacts()`` service: content-addressed files in the workspace.

``context.artifacts().save_text(...)`` / ``save_json`` / ``save_bytes`` / ``save_file``
store the content once under ``artifacts/<2 hex>/<62 hex>`` (its sha256) and index the
save (name, mime type, size, run, session, time) in the workspace database. The artifact
id is the sha256 of the content, so saving the same content twice gives the same id (and
two index entries). Names are labels only: they never become file paths. Blobs are written
to a temporary file in the same folder and moved into place with ``os.replace``, so a
reader never sees half a file.

Every method is async: file and SQLite work run in the workspace's threads.
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ArtifactNotFoundError, WorkspaceWriteError
from ..store.blobs import BlobMissingError, BlobStore
from ..store.codecs import dumps_json
from ..store.schema import Migration, SchemaComponent
from ..store.workspace import Workspace

_ID_RE = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 1024


def _prune_artifacts(conn: sqlite3.Connection, run_ids: list[str], workspace: Any) -> list[Path]:
    """Prune hook: drop the index rows of pruned runs; return the content files that no
    index row references any more (deleted once the pruning transaction commits)."""
    marks = ", ".join("?" * len(run_ids))
    ids = {
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT artifact_id FROM artifacts WHERE run_id IN ({marks})", run_ids
        )
    }
    conn.execute(f"DELETE FROM artifacts WHERE run_id IN ({marks})", run_ids)
    blobs = BlobStore(workspace.artifacts_path)
    return [
        blobs.path(artifact_id)
        for artifact_id in sorted(ids)
        if conn.execute(
            "SELECT 1 FROM artifacts WHERE artifact_id = ? LIMIT 1", (artifact_id,)
        ).fetchone() is None
    ]


ARTIFACTS_SCHEMA = SchemaComponent(
    "artifacts",
    (
        Migration(
            1,
            (
                # One row per save; artifact_id is the sha256 of the content (the blob's name).
                """CREATE TABLE IF NOT EXISTS artifacts (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    artifact_id TEXT NOT NULL,
                    name TEXT NOT NULL,
                    mime TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    run_id TEXT,
                    session_id TEXT,
                    created_at REAL NOT NULL,
                    meta TEXT NOT NULL DEFAULT '{}'
                )""",
                "CREATE INDEX IF NOT EXISTS artifacts_id ON artifacts (artifact_id)",
                "CREATE INDEX IF NOT EXISTS artifacts_run ON artifacts (run_id, seq)",
                "CREATE INDEX IF NOT EXISTS artifacts_session ON artifacts (session_id, seq)",
            ),
        ),
    ),
    on_prune=_prune_artifacts,
)


@dataclass(frozen=True, slots=True)
class Artifact:
    """One saved artifact.

    Attributes:
      id: sha256 of the content (64 hex digits); load it with ``load_bytes(id)`` etc.
      name: the label it was saved under (never a path).
      mime: its media type. size: its length in bytes.
      run_id, session_id: the context that saved it.
      created_at: when it was saved (timezone-aware UTC).
      meta: JSON metadata given at save time.
    """

    id: str
    name: str
    mime: str
    size: int
    run_id: str | None = None
    session_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """The sha256 hex digest of the content (same as ``id``)."""
        return self.id

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (``created_at`` as ISO 8601 text)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


def _check_name(name: Any, default: str) -> str:
    if name is None or name == "":
        return default
    if not isinstance(name, str):
        raise TypeError(f"artifact names are str labels; got {type(name).__name__} {name!r}")
    if len(name) > _MAX_NAME:
        raise ValueError(f"artifact names are at most {_MAX_NAME} characters; got {len(name)}")
    return name


def _check_id(artifact_id: Any) -> None:
    if not isinstance(artifact_id, str) or not _ID_RE.fullmatch(artifact_id):
        raise ArtifactNotFoundError(
            f"{artifact_id!r} is not an artifact id (ids are 64 hex digits, the sha256 of "
            "the content, as in Artifact.id)"
        )


def _mime(name: str, given: str | None, default: str) -> str:
    if given:
        return given
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or default


def _row_artifact(row: sqlite3.Row) -> Artifact:
    return Artifact(
        id=row["artifact_id"],
        name=row["name"],
        mime=row["mime"],
        size=row["size"],
        run_id=row["run_id"],
        session_id=row["session_id"],
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
        meta=json.loads(row["meta"]),
    )


class ArtifactStore:
    """The artifacts of a workspace as seen from one context (``context.artifacts()``).

    Saves are stamped with the context's ``run_id`` and ``session_id``; loads work for any
    artifact id in the workspace.
    """

    __slots__ = ("_ws", "run_id", "session_id")

    def __init__(
        self, workspace: Workspace, *, run_id: str | None = None, session_id: str | None = None
    ) -> None:
        self._ws = workspace
        self.run_id = run_id
        self.session_id = session_id

    def __repr__(self) -> str:
        return f"ArtifactStore(run_id={self.run_id!r}, session_id={self.session_id!r})"

    @property
    def root(self) -> Path:
        """The artifact folder (``<workspace>/artifacts``)."""
        return self._ws.artifacts_path

    def _write_error(self, exc: OSError) -> WorkspaceWriteError:
        return WorkspaceWriteError(
            f"could not write an artifact into {str(self.root)!r} ({exc.strerror or exc}). "
            "The folder may be read-only or the disk full: free some space or make it "
            "writable, or choose another workspace folder with AG_WORKSPACE."
        )

    # ------------------------------------------------------------ blob writing
    def _store_bytes(self, data: bytes) -> str:
        try:
            return BlobStore(self.root).put_bytes(data)
        except OSError as exc:  # BlobError too: a planted symlink or file
            raise self._write_error(exc) from exc

    def _store_file(self, source: Path) -> tuple[str, int]:
        if not source.is_file():
            # Open it anyway for the precise error (FileNotFoundError, IsADirectoryError).
            open(source, "rb").close()
        try:
            return BlobStore(self.root).put_file(source)
        except OSError as exc:  # BlobError too: a planted symlink or file
            raise self._write_error(exc) from exc

    async def _index(
        self, artifact_id: str, name: str, mime: str, size: int, meta: dict[str, Any] | None
    ) -> Artifact:
        meta_json = dumps_json(meta or {}, "artifact meta")
        now = time.time()
        values = (artifact_id, name, mime, size, self.run_id, self.session_id, now, meta_json)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO artifacts (artifact_id, name, mime, size, run_id, session_id, "
                "created_at, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

        await self._ws.write(write)
        return Artifact(
            id=artifact_id,
            name=name,
            mime=mime,
            size=size,
            run_id=self.run_id,
            session_id=self.session_id,
            created_at=datetime.fromtimestamp(now, UTC),
            meta=json.loads(meta_json),
        )

    # ------------------------------------------------------------------ saving
    async def save_bytes(
        self,
        data: bytes | bytearray | memoryview,
        name: str = "data.bin",
        *,
        mime: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Artifact:
        """Save ``data``; returns its :class:`Artifact` once content and index are durable.

        Args:
          name: a label (never used as a path; ``"../x"`` is just a label).
          mime: media type (default: guessed from ``name``, else
            ``application/octet-stream``).
          meta: JSON metadata kept with this save.

        Raises:
          TypeError: if ``data`` is not bytes-like, ``name`` not a str or ``meta`` not JSON.
          ValueError: if ``name`` is longer than 1024 characters.
          WorkspaceWriteError: if the workspace cannot be written (names the folder).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"save_bytes() takes bytes; got {type(data).__name__} (use save_text or "
                "save_json for str and JSON values)"
            )
        label = _check_name(name, "data.bin")
        media = _mime(label, mime, "application/octet-stream")
        dumps_json(meta or {}, "artifact meta")
        payload = bytes(data)
        artifact_id = await self._ws.run_in_io_thread(self._store_bytes, payload)
        return await self._index(artifact_id, label, media, len(payload), meta)

    async def save_text(
        self,
        text: str,
        name: str = "text.txt",
        *,
        mime: str | None = None,
        encoding: str = "utf-8",
        meta: dict[str, Any] | None = None,
    ) -> Artifact:
        """Save ``text`` encoded with ``encoding`` (default UTF-8); see :meth:`save_bytes`.

        The default media type is guessed from ``name``, else ``text/plain``.

        Raises:
          TypeError: if ``text`` is not a str; as :meth:`save_bytes` otherwise.
        """
        if not isinstance(text, str):
            raise TypeError(f"save_text() takes a str; got {type(text).__name__}")
        label = _check_name(name, "text.txt")
        media = _mime(label, mime, "text/plain")
        return await self.save_bytes(text.encode(encoding), label, mime=media, meta=meta)

    async def save_json(
        self,
        value: Any,
        name: str = "data.json",
        *,
        meta: dict[str, Any] | None = None,
    ) -> Artifact:
        """Save ``value`` as JSON text (``application/json``); see :meth:`save_bytes`.

        Raises:
          TypeError: if ``value`` is not JSON-serialisable (naming its type).
        """
        text = dumps_json(value, "artifact JSON values")
        label = _check_name(name, "data.json")
        return await self.save_bytes(
            text.encode("utf-8"), label, mime="application/json", meta=meta
        )

    async def save_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        mime: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Artifact:
        """Copy the file at ``path`` into the workspace (streamed, any size).

        Args:
          name: label (default: the file's own name).

        Raises:
          FileNotFoundError / IsADirectoryError / PermissionError: if ``path`` cannot be
            read.
          TypeError, ValueError, WorkspaceWriteError: as :meth:`save_bytes`.
        """
        source = Path(path)
        label = _check_name(name, source.name or "file")
        media = _mime(label, mime, "application/octet-stream")
        dumps_json(meta or {}, "artifact meta")
        artifact_id, size = await self._ws.run_in_io_thread(self._store_file, source)
        return await self._index(artifact_id, label, media, size, meta)

    # ----------------------------------------------------------------- loading
    def _not_found(self, artifact_id: Any) -> ArtifactNotFoundError:
        return ArtifactNotFoundError(
            f"no artifact with id {artifact_id!r} in the workspace {str(self._ws.path)!r}; "
            "list saved ones with context.artifacts().list()"
        )

    def _checked_blob(self, artifact_id: Any) -> Path:
        _check_id(artifact_id)
        blobs = BlobStore(self.root)
        try:
            blobs.verify(artifact_id)  # a modified or planted file is refused
        except BlobMissingError:
            raise self._not_found(artifact_id) from None
        return blobs.path(artifact_id)

    async def path(self, artifact_id: str) -> Path:
        """The file holding the artifact's content (read it, do not modify it); its
        content is checked against the id first.

        Raises:
          ArtifactNotFoundError: if no artifact has this id (or it is not an id).
          BlobError: if the file was replaced by a symlink or its content changed.
        """
        return await self._ws.run_in_io_thread(self._checked_blob, artifact_id)

    async def load_bytes(self, artifact_id: str) -> bytes:
        """The artifact's content (checked against its id, the sha256 of the content).

        Raises:
          ArtifactNotFoundError: if no artifact has this id (or it is not an id).
          BlobError: if the file was replaced by a symlink or its content changed.
        """
        _check_id(artifact_id)

        def load() -> bytes:
            try:
                return BlobStore(self.root).read(artifact_id)
            except BlobMissingError:
                raise self._not_found(artifact_id) from None

        return await self._ws.run_in_io_thread(load)

    async def load_text(self, artifact_id: str, encoding: str = "utf-8") -> str:
        """The artifact's content decoded with ``encoding``.

        Raises:
          ArtifactNotFoundError: if no artifact has this id.
          UnicodeDecodeError: if the content is not valid in ``encoding``.
        """
        return (await self.load_bytes(artifact_id)).decode(encoding)

    async def load_json(self, artifact_id: str) -> Any:
        """The artifact's content parsed as JSON.

        Raises:
          ArtifactNotFoundError: if no artifact has this id.
          json.JSONDecodeError (a ValueError): if the content is not JSON.
        """
        return json.loads(await self.load_bytes(artifact_id))

    async def get(self, artifact_id: str) -> Artifact:
        """The latest index record of ``artifact_id``.

        Raises:
          ArtifactNotFoundError: if no artifact has this id.
        """
        _check_id(artifact_id)

        def read(conn: sqlite3.Connection) -> Artifact | None:
            row = conn.execute(
                "SELECT * FROM artifacts WHERE artifact_id = ? ORDER BY seq DESC LIMIT 1",
                (artifact_id,),
            ).fetchone()
            return None if row is None else _row_artifact(row)

        found = await self._ws.read(read)
        if found is None:
            raise ArtifactNotFoundError(
                f"no artifact with id {artifact_id!r} in the workspace {str(self._ws.path)!r}; "
                "list saved ones with context.artifacts().list()"
            )
        return found

    async def list(
        self,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        limit: int = 100,
    ) -> list[Artifact]:
        """Saved artifacts, newest first.

        Args:
          run_id: those saved by this run; session_id: those saved in this session. With
            neither, this context's session (or its run when it has no session).
          limit: at most this many (positive int).

        Raises:
          ValueError: if ``limit`` is not a positive int.
          WorkspaceError: if the database cannot be read.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if run_id is None and session_id is None:
            if self.session_id is not None:
                session_id = self.session_id
            else:
                run_id = self.run_id
        where, params = [], []
        if run_id is not None:
            where.append("run_id = ?")
            params.append(run_id)
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        sql = "SELECT * FROM artifacts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"

        def read(conn: sqlite3.Connection) -> list[Artifact]:
            return [_row_artifact(row) for row in conn.execute(sql, (*params, limit))]

        return await self._ws.read(read)


class ArtifactService:
    """The embedded ``artifacts`` service: ``context.artifacts()`` is an
    :class:`ArtifactStore` stamped with the context's run and session.

    Args:
      workspace: the open workspace holding the artifacts.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def bind(self, context: Any) -> ArtifactStore:
        """The artifact store as seen from ``context``."""
        return ArtifactStore(
            self.workspace,
            run_id=getattr(context, "run_id", None),
            session_id=getattr(context, "session_id", None),
        )
