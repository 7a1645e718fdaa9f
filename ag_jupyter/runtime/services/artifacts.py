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

import hashlib
import json
import mimetypes
import os
import re
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..workspace import Workspace, WorkspaceWriteError, dumps_json

_ID_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_MAX_NAME = 1024


class ArtifactNotFoundError(LookupError):
    """No artifact has the requested id in this workspace (or the id is not one)."""


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


def _fsync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def _blob_path(self, artifact_id: str) -> Path:
        return self.root / artifact_id[:2] / artifact_id[2:]

    def _write_error(self, exc: OSError) -> WorkspaceWriteError:
        return WorkspaceWriteError(
            f"could not write an artifact into {str(self.root)!r} ({exc.strerror or exc}). "
            "The folder may be read-only or the disk full: free some space or make it "
            "writable, or choose another workspace folder with AG_WORKSPACE."
        )

    # ------------------------------------------------------------ blob writing
    def _store_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        final = self._blob_path(digest)
        if final.is_file() and final.stat().st_size == len(data):
            return digest
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-")
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except BaseException:
                os.close(fd)
                os.unlink(tmp)
                raise
            try:
                _fsync_close(fd)
                os.replace(tmp, final)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            raise self._write_error(exc) from exc
        return digest

    def _store_file(self, source: Path) -> tuple[str, int]:
        # The digest is only known after reading, so the temporary file lives in the
        # artifact folder itself (same file system, so os.replace stays atomic).
        digest = hashlib.sha256()
        size = 0
        with open(source, "rb") as src:
            try:
                fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
            except OSError as exc:
                raise self._write_error(exc) from exc
            try:
                try:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                finally:
                    _fsync_close(fd)
                hexdigest = digest.hexdigest()
                final = self._blob_path(hexdigest)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
            except OSError as exc:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise self._write_error(exc) from exc
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return hexdigest, size

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
    def _checked_blob(self, artifact_id: Any) -> Path:
        _check_id(artifact_id)
        blob = self._blob_path(artifact_id)
        if not blob.is_file():
            raise ArtifactNotFoundError(
                f"no artifact with id {artifact_id!r} in the workspace {str(self._ws.path)!r}; "
                "list saved ones with context.artifacts().list()"
            )
        return blob

    async def path(self, artifact_id: str) -> Path:
        """The file holding the artifact's content (read it, do not modify it).

        Raises:
          ArtifactNotFoundError: if no artifact has this id (or it is not an id).
        """
        return await self._ws.run_in_io_thread(self._checked_blob, artifact_id)

    async def load_bytes(self, artifact_id: str) -> bytes:
        """The artifact's content.

        Raises:
          ArtifactNotFoundError: if no artifact has this id (or it is not an id).
        """

        def load() -> bytes:
            return self._checked_blob(artifact_id).read_bytes()

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
