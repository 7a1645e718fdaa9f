"""The ``artifacts()`` service: AetherGraph's artifact store, content-addressed in the workspace.

``context.artifacts()`` is an :class:`ArtifactStore` with the API of AetherGraph 0.1.0a15's
``ArtifactFacade`` (``services/artifacts/facade.py``)::

    art = await arts.save_text("hello", name="notes.md", kind="note", labels={"exp": "A"})
    art.artifact_id, art.uri                   # sha256 of the content, "ag://artifacts/<sha256>"
    await arts.load_text(art.uri)              # or load_text_by_id(art.artifact_id)
    best = await arts.best(kind="checkpoint", metric="val_acc", metric_mode="max")
    path = await arts.as_local_file(best)      # the verified file in the workspace

Content. Each save stores its bytes once under ``<workspace>/artifacts/ab/cdef...`` (named by
their sha256, written to a temporary file and moved into place, never through a symbolic
link, hash checked on every load: ``store/blobs.py``). The artifact id is that sha256, so
the same content saved twice is one artifact (as a15) with two saves in the index; the
index row of the newest save gives its name, kind, labels and metrics. Names are labels,
never paths.

URIs. ``Artifact.uri`` is ``ag://artifacts/<sha256>``: stable (it names the content, not
a place), valid in every kernel that opens the workspace. Wherever a URI is taken, an
artifact id, an :class:`Artifact` or the path of an artifact file inside this workspace
(as :meth:`ArtifactStore.as_local_file` returns it, also as ``file://``) are accepted too;
anything else (a file elsewhere, an ``s3://`` URI) is refused with
:class:`~ag_jupyter.runtime.errors.ArtifactURIError`: bring outside files in with
:meth:`ArtifactStore.save_file`.

Scope of ``list`` / ``search`` / ``best``: as a15, the current run by default
(``level="run"``; ``list`` also narrows to the current graph and node, ``include_node``);
``level="session"``, ``"scope"`` (this session's scope, as memory's) or ``"all"`` (the
whole workspace; a15's ``"user"`` / ``"org"`` mean the same here). AetherGraph's docs
write ``scope="run" | "graph" | "node" | "all"``: accepted too.

Every method that touches a file or the database is async and does that work in the
workspace's threads (``to_local_path`` and ``to_local_file``, synchronous in a15, only
compute a path and check it exists).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import mimetypes
import os
import re
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import unquote, urlparse

from ..errors import ArtifactNotFoundError, ArtifactURIError, WorkspaceWriteError
from ..store.blobs import BlobMissingError, BlobStore, is_digest
from ..store.codecs import check_identifier, check_tags, dumps_json
from ..store.schema import Migration, SchemaComponent
from ..store.workspace import TMP_PREFIX, Workspace
from .kv import context_scope

URI_PREFIX = "ag://artifacts/"
_ID_RE = re.compile(r"[0-9a-f]{64}")
_MAX_NAME = 1024
#: Characters of a text/JSON payload kept for ``search(query)``.
SEARCH_TEXT_CHARS = 65_536
_LEVELS = ("run", "session", "scope", "graph", "node", "all", "user", "org")


def _prune_artifacts(conn: sqlite3.Connection, run_ids: list[str], workspace: Any) -> list[Path]:
    """Prune hook: drop the index rows of pruned runs (pinned artifacts are kept); return
    the content files that no index row references any more (deleted once the pruning
    transaction commits)."""
    marks = ", ".join("?" * len(run_ids))
    pinned = "AND pinned = 0" if _has_column(conn, "pinned") else ""
    ids = {
        r[0]
        for r in conn.execute(
            f"SELECT DISTINCT artifact_id FROM artifacts WHERE run_id IN ({marks}) {pinned}",
            run_ids,
        )
    }
    conn.execute(f"DELETE FROM artifacts WHERE run_id IN ({marks}) {pinned}", run_ids)
    blobs = BlobStore(workspace.artifacts_path)
    return [
        blobs.path(artifact_id)
        for artifact_id in sorted(ids)
        if conn.execute(
            "SELECT 1 FROM artifacts WHERE artifact_id = ? LIMIT 1", (artifact_id,)
        ).fetchone()
        is None
    ]


def _has_column(conn: sqlite3.Connection, name: str) -> bool:
    return any(row[1] == name for row in conn.execute("PRAGMA table_info(artifacts)"))


def _legacy_kind(mime: str) -> str:
    if mime == "application/json":
        return "json"
    if mime.startswith("text/"):
        return "text"
    return "file"


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """a15's Artifact fields; saves of version 1 keep their name, mime and size, get a
    kind from their mime type, and their ``meta`` becomes their labels."""
    for name, decl in (
        ("kind", "TEXT"),
        ("labels", "TEXT NOT NULL DEFAULT '{}'"),
        ("metrics", "TEXT NOT NULL DEFAULT '{}'"),
        ("tags", "TEXT NOT NULL DEFAULT '[]'"),
        ("pinned", "INTEGER NOT NULL DEFAULT 0"),
        ("graph_id", "TEXT"),
        ("node_id", "TEXT"),
        ("agent_id", "TEXT"),
        ("app_id", "TEXT"),
        ("search_text", "TEXT"),
    ):
        conn.execute(f"ALTER TABLE artifacts ADD COLUMN {name} {decl}")
    for seq, mime, meta in conn.execute("SELECT seq, mime, meta FROM artifacts").fetchall():
        conn.execute(
            "UPDATE artifacts SET kind = ?, labels = ? WHERE seq = ?",
            (_legacy_kind(mime), meta if isinstance(json.loads(meta), dict) else "{}", seq),
        )
    conn.execute("CREATE INDEX IF NOT EXISTS artifacts_kind ON artifacts (kind, seq)")


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
        Migration(2, apply=_migrate_v2),
    ),
    on_prune=_prune_artifacts,
)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Artifact:
    """One saved artifact, with AetherGraph 0.1.0a15's ``Artifact`` fields
    (``contracts/services/artifacts.py``).

    Attributes:
      artifact_id (str): sha256 of the content (64 hex digits). uri (str):
        ``ag://artifacts/<artifact_id>``. sha256 (str): the same digest.
      kind (str): what it is (``"text"``, ``"json"``, ``"report"``...). name (str): the
        label it was saved under (never a path). mime (str): media type.
      bytes (int): size in bytes. labels (dict): labels to filter by (a given ``name`` /
        ``suggested_uri`` is also ``labels["filename"]``, as a15). metrics (dict[str,
        number]): to rank by (:meth:`ArtifactStore.best`). tags (list[str]). pinned
        (bool): kept when run history is pruned.
      run_id, session_id, graph_id, node_id, app_id: the context that saved it.
      created_at (str): when, ISO 8601 UTC (``...Z``).
      occurrence_id (str): this save (one artifact may have several).
      tool_name, tool_version, preview_uri, org_id, user_id, client_id: a15 fields,
        None here.
    """

    artifact_id: str
    run_id: str | None = None
    graph_id: str | None = None
    node_id: str | None = None
    tool_name: str | None = None
    tool_version: str | None = None
    kind: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    mime: str | None = None
    created_at: str | None = None
    tags: list[str] | None = None
    labels: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    pinned: bool = False
    uri: str | None = None
    preview_uri: str | None = None
    org_id: str | None = None
    user_id: str | None = None
    client_id: str | None = None
    app_id: str | None = None
    session_id: str | None = None
    occurrence_id: str | None = None
    name: str | None = None

    @property
    def id(self) -> str:
        """ag_jupyter's older name of :attr:`artifact_id`."""
        return self.artifact_id

    @property
    def size(self) -> int:
        """ag_jupyter's older name of :attr:`bytes` (size in bytes)."""
        return self.bytes or 0

    @property
    def mimetype(self) -> str | None:
        """a15's alias of :attr:`mime`."""
        return self.mime

    @property
    def meta(self) -> dict[str, Any]:
        """ag_jupyter's older name of :attr:`labels`."""
        return dict(self.labels or {})

    def to_dict(self) -> dict[str, Any]:
        """The artifact as a plain dict (a15's keys, plus ``mimetype`` and ``name``)."""
        data = asdict(self)
        data["mimetype"] = self.mime
        return data


def _row_artifact(row: sqlite3.Row) -> Artifact:
    digest = row["artifact_id"]
    return Artifact(
        artifact_id=digest,
        run_id=row["run_id"],
        graph_id=row["graph_id"],
        node_id=row["node_id"],
        kind=row["kind"],
        sha256=digest,
        bytes=row["size"],
        mime=row["mime"],
        created_at=_iso(row["created_at"]),
        tags=json.loads(row["tags"]),
        labels=json.loads(row["labels"]),
        metrics=json.loads(row["metrics"]),
        pinned=bool(row["pinned"]),
        uri=URI_PREFIX + digest,
        app_id=row["app_id"],
        session_id=row["session_id"],
        occurrence_id=str(row["seq"]),
        name=row["name"],
    )


def _check_name(name: Any, default: str) -> str:
    if name is None or name == "":
        return default
    if not isinstance(name, str):
        raise TypeError(f"artifact names are str labels; got {type(name).__name__} {name!r}")
    if len(name) > _MAX_NAME:
        raise ValueError(f"artifact names are at most {_MAX_NAME} characters; got {len(name)}")
    check_identifier("artifact names", name, allow_none=False)
    return name


def _check_id(artifact_id: Any) -> str:
    if not isinstance(artifact_id, str) or not _ID_RE.fullmatch(artifact_id):
        raise ArtifactNotFoundError(
            f"{artifact_id!r} is not an artifact id (ids are 64 hex digits, the sha256 of "
            "the content, as in Artifact.artifact_id)"
        )
    return artifact_id


def _mime(name: str, given: str | None, default: str) -> str:
    if given:
        return given
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or default


def _check_dict(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    out = json.loads(dumps_json(dict(value), what))
    for key in out:
        check_identifier(f"keys of {what}", key, allow_none=False)
    return out


def _check_metrics(value: Any) -> dict[str, Any]:
    out = _check_dict(value, "artifact metrics")
    for key, number in out.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise TypeError(f"artifact metrics are numbers; {key!r} is {number!r}")
    return out


class _Immediate:
    """The result of a call that is already done, usable with or without ``await``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return self.value
        yield  # pragma: no cover  (makes this a generator)


class ArtifactWriter:
    """What ``async with artifacts().writer(...) as w`` yields (as a15's writer).

    ``w.write(data)`` appends bytes (``await w.write(...)`` works too); ``add_labels`` /
    ``add_metrics`` attach metadata; after the block, ``w.artifact`` is the saved
    :class:`Artifact`. The bytes are kept in memory until the block ends, then stored
    in one go (in the workspace's threads) and indexed; if the block raises, nothing is
    saved.
    """

    __slots__ = ("_chunks", "_labels", "_metrics", "artifact", "size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._labels: dict[str, Any] = {}
        self._metrics: dict[str, Any] = {}
        self.artifact: Artifact | None = None
        self.size = 0

    def write(self, chunk: builtins.bytes | bytearray | memoryview) -> _Immediate:
        """Append ``chunk``; returns its length (awaitable, as a15's docs await it).

        Raises:
          TypeError: if ``chunk`` is not bytes-like (encode text first).
        """
        if not isinstance(chunk, builtins.bytes | bytearray | memoryview):
            raise TypeError(
                f"writer.write() takes bytes, got {type(chunk).__name__} (encode text first, "
                "e.g. text.encode('utf-8'))"
            )
        data = builtins.bytes(chunk)
        self._chunks.append(data)
        self.size += len(data)
        return _Immediate(len(data))

    def add_labels(self, labels: Mapping[str, Any]) -> None:
        """Add labels to the artifact being written."""
        self._labels.update(labels or {})

    def add_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Add metrics to the artifact being written."""
        self._metrics.update(metrics or {})


class ArtifactStore:
    """The artifacts of a workspace as seen from one context (``context.artifacts()``);
    see the module docstring.

    Saves are stamped with the context's run, session, graph and node ids; loads work for
    any artifact of the workspace.
    """

    __slots__ = (
        "_ws",
        "agent_id",
        "app_id",
        "graph_id",
        "last_artifact",
        "node_id",
        "run_id",
        "scope",
        "session_id",
    )

    def __init__(
        self,
        workspace: Workspace,
        *,
        run_id: str | None = None,
        session_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
    ) -> None:
        self._ws = workspace
        self.run_id = run_id
        self.session_id = session_id
        self.graph_id = graph_id
        self.node_id = node_id
        self.agent_id = agent_id
        self.app_id = app_id
        self.scope = context_scope(self)
        self.last_artifact: Artifact | None = None

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
    def _store_bytes(self, data: builtins.bytes) -> str:
        try:
            return BlobStore(self.root).put_bytes(data)
        except OSError as exc:  # BlobError too: a planted symlink or file
            raise self._write_error(exc) from exc

    def _store_chunks(self, chunks: list[builtins.bytes]) -> tuple[str, int]:
        try:
            return BlobStore(self.root).put_chunks(chunks)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def _store_file(self, source: Path, remove: bool) -> tuple[str, int]:
        if not source.is_file():
            # Open it anyway for the precise error (FileNotFoundError, IsADirectoryError).
            open(source, "rb").close()
        try:
            digest, size = BlobStore(self.root).put_file(source)
        except OSError as exc:  # BlobError too: a planted symlink or file
            raise self._write_error(exc) from exc
        if remove:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(source)
        return digest, size

    async def _index(
        self,
        artifact_id: str,
        *,
        name: str,
        mime: str,
        size: int,
        kind: str,
        labels: dict[str, Any],
        metrics: dict[str, Any],
        tags: list[str],
        pin: bool,
        search_text: str | None,
    ) -> Artifact:
        now = time.time()
        values = (
            artifact_id,
            name,
            mime,
            size,
            self.run_id,
            self.session_id,
            now,
            json.dumps(labels),
            kind,
            json.dumps(labels),
            json.dumps(metrics),
            json.dumps(tags),
            self.graph_id,
            self.node_id,
            self.agent_id,
            self.app_id,
            search_text,
        )

        def write(conn: sqlite3.Connection) -> tuple[int, bool]:
            row = conn.execute(
                "SELECT max(pinned) FROM artifacts WHERE artifact_id = ?", (artifact_id,)
            ).fetchone()
            pinned = bool(pin or (row is not None and row[0]))
            cursor = conn.execute(
                "INSERT INTO artifacts (artifact_id, name, mime, size, run_id, session_id, "
                "created_at, meta, kind, labels, metrics, tags, graph_id, node_id, agent_id, "
                "app_id, search_text, pinned) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, int(pinned)),
            )
            if pinned:
                conn.execute(
                    "UPDATE artifacts SET pinned = 1 WHERE artifact_id = ?", (artifact_id,)
                )
            return int(cursor.lastrowid or 0), pinned

        seq, pinned = await self._ws.write(write)
        art = Artifact(
            artifact_id=artifact_id,
            run_id=self.run_id,
            graph_id=self.graph_id,
            node_id=self.node_id,
            kind=kind,
            sha256=artifact_id,
            bytes=size,
            mime=mime,
            created_at=_iso(now),
            tags=tags,
            labels=labels,
            metrics=metrics,
            pinned=pinned,
            uri=URI_PREFIX + artifact_id,
            app_id=self.app_id,
            session_id=self.session_id,
            occurrence_id=str(seq),
            name=name,
        )
        self.last_artifact = art
        return art

    def _describe(
        self,
        *,
        name: str | None,
        suggested_uri: str | None,
        default_name: str,
        kind: Any,
        labels: Any,
        metrics: Any,
        tags: Any,
        meta: Any,
        file_name: str | None = None,
    ) -> dict[str, Any]:
        """Check and normalise the metadata of a save (no I/O). ``file_name``: the saved
        file's own name, a15's last fallback for the ``filename`` label."""
        if suggested_uri is not None and not isinstance(suggested_uri, str):
            raise TypeError(f"suggested_uri must be a str, got {type(suggested_uri).__name__}")
        label_name = name or (PurePath(suggested_uri).name if suggested_uri else None)
        label_name = label_name or file_name
        eff_labels = _check_dict(meta, "artifact meta")
        eff_labels.update(_check_dict(labels, "artifact labels"))
        tag_list = list(dict.fromkeys(check_tags(tags)))
        if tag_list:
            eff_labels.setdefault("tags", tag_list)
        if label_name and "filename" not in eff_labels and "name" not in eff_labels:
            eff_labels["filename"] = label_name  # as a15's CAS store does
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"kind must be a non-empty str; got {kind!r}")
        check_identifier("kind", kind, allow_none=False)
        return {
            "name": _check_name(label_name, default_name),
            "kind": kind,
            "labels": eff_labels,
            "metrics": _check_metrics(metrics),
            "tags": tag_list,
        }

    # ------------------------------------------------------------------ saving
    async def save_bytes(
        self,
        data: builtins.bytes | bytearray | memoryview,
        name: str | None = None,
        *,
        kind: str = "bytes",
        mime: str | None = None,
        labels: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Iterable[str] | None = None,
        suggested_uri: str | None = None,
        pin: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Save ``data``; returns its :class:`Artifact` once content and index are durable.

        (a15 has no ``save_bytes``; this is ag_jupyter's, with a15's keywords.)

        Args:
          name: a label (never used as a path; ``"../x"`` is just a label); default
            ``"data.bin"``, or the last part of ``suggested_uri``.
          kind: what it is (default ``"bytes"``).
          mime: media type (default: guessed from the name, else
            ``application/octet-stream``).
          labels: JSON dict to filter by. metrics: ``{name: number}`` to rank by.
          tags: list of str. suggested_uri: a15's "logical" name (its last part becomes
            the name). pin: keep it when history is pruned.
          meta: ag_jupyter's older name for ``labels`` (merged in).

        Raises:
          TypeError: if ``data`` is not bytes-like, a name/label/metric has the wrong type,
            or labels are not JSON.
          ValueError: if the name is longer than 1024 characters or holds NUL / a lone
            surrogate.
          WorkspaceWriteError: if the workspace cannot be written (names the folder).
        """
        if not isinstance(data, builtins.bytes | bytearray | memoryview):
            raise TypeError(
                f"save_bytes() takes bytes; got {type(data).__name__} (use save_text or "
                "save_json for str and JSON values)"
            )
        info = self._describe(
            name=name,
            suggested_uri=suggested_uri,
            default_name="data.bin",
            kind=kind,
            labels=labels,
            metrics=metrics,
            tags=tags,
            meta=meta,
        )
        media = _mime(info["name"], mime, "application/octet-stream")
        payload = builtins.bytes(data)
        artifact_id = await self._ws.run_in_io_thread(self._store_bytes, payload)
        return await self._index(
            artifact_id, mime=media, size=len(payload), pin=pin, search_text=None, **info
        )

    async def save_text(
        self,
        payload: str,
        *args: Any,
        suggested_uri: str | None = None,
        name: str | None = None,
        kind: str = "text",
        tags: Iterable[str] | None = None,
        labels: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        pin: bool = False,
        mime: str | None = None,
        encoding: str = "utf-8",
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Save ``payload`` (text, encoded with ``encoding``, UTF-8 by default), as a15's
        ``save_text(payload, *, suggested_uri=, name=, kind="text", tags=, labels=,
        metrics=, pin=)``; see :meth:`save_bytes` for the keywords. The media type is
        guessed from the name, else ``text/plain``.

        Raises:
          TypeError: if ``payload`` is not a str, or a second positional argument is given
            (ag_jupyter's older ``save_text(name, text)`` had them the other way round:
            write ``save_text(text, name=name)``); as :meth:`save_bytes` otherwise.
          UnicodeEncodeError: if ``payload`` cannot be encoded (lone surrogates in UTF-8).
        """
        if args:
            raise TypeError(
                "save_text(payload, *, name=...) takes the text first and everything else as "
                f"keywords, as AetherGraph does; got a second positional argument {args[0]!r}. "
                "ag_jupyter's older save_text(name, text) had the two the other way round: "
                "write save_text(text, name=name)"
            )
        if not isinstance(payload, str):
            raise TypeError(f"save_text() takes a str; got {type(payload).__name__}")
        info = self._describe(
            name=name,
            suggested_uri=suggested_uri,
            default_name="text.txt",
            kind=kind,
            labels=labels,
            metrics=metrics,
            tags=tags,
            meta=meta,
        )
        data = payload.encode(encoding)
        media = _mime(info["name"], mime, "text/plain")
        artifact_id = await self._ws.run_in_io_thread(self._store_bytes, data)
        return await self._index(
            artifact_id,
            mime=media,
            size=len(data),
            pin=pin,
            search_text=payload[:SEARCH_TEXT_CHARS],
            **info,
        )

    async def save_json(
        self,
        payload: Any,
        name: str | None = None,
        *,
        suggested_uri: str | None = None,
        kind: str = "json",
        tags: Iterable[str] | None = None,
        labels: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        pin: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Save ``payload`` as JSON text (``application/json``, kind ``"json"``), as a15's
        ``save_json``; see :meth:`save_bytes` for the keywords (``name`` may also be
        given second, as ag_jupyter's older form did).

        Raises:
          TypeError / ValueError: if ``payload`` is not JSON (naming the type), contains
            itself or nests too deeply; as :meth:`save_bytes` otherwise.
        """
        text = dumps_json(payload, "artifact JSON values")
        info = self._describe(
            name=name,
            suggested_uri=suggested_uri,
            default_name="data.json",
            kind=kind,
            labels=labels,
            metrics=metrics,
            tags=tags,
            meta=meta,
        )
        data = text.encode("utf-8")
        artifact_id = await self._ws.run_in_io_thread(self._store_bytes, data)
        return await self._index(
            artifact_id,
            mime="application/json",
            size=len(data),
            pin=pin,
            search_text=text[:SEARCH_TEXT_CHARS],
            **info,
        )

    async def save_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        kind: str = "file",
        tags: Iterable[str] | None = None,
        mime: str | None = None,
        labels: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        suggested_uri: str | None = None,
        pin: bool = False,
        cleanup: bool | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Artifact:
        """Copy the file at ``path`` into the workspace (streamed, any size) and index it,
        as a15's ``save_file(path, *, kind, ...)``.

        Args:
          name: label (default: the last part of ``suggested_uri``, else the file's name).
          kind: what it is (a15 requires it; default ``"file"`` here).
          cleanup: delete ``path`` after saving. a15 deletes it by default; here the file
            is kept unless you ask (a file a user saves is theirs), except a path from
            :meth:`stage_path`, which is removed once saved.
          other keywords: as :meth:`save_bytes`.

        Raises:
          FileNotFoundError / IsADirectoryError / PermissionError: if ``path`` cannot be
            read.
          TypeError, ValueError, WorkspaceWriteError: as :meth:`save_bytes`.
        """
        source = Path(path)
        staged = source.parent == self.root and source.name.startswith(TMP_PREFIX)
        info = self._describe(
            name=name,
            suggested_uri=suggested_uri,
            file_name=None if staged else (source.name or None),
            default_name=source.name or "file",
            kind=kind,
            labels=labels,
            metrics=metrics,
            tags=tags,
            meta=meta,
        )
        if staged and name is None and suggested_uri is None:
            info["name"] = "file" + source.suffix
        media = _mime(info["name"], mime, "application/octet-stream")
        remove = staged if cleanup is None else bool(cleanup)
        artifact_id, size = await self._ws.run_in_io_thread(self._store_file, source, remove)
        return await self._index(
            artifact_id, mime=media, size=size, pin=pin, search_text=None, **info
        )

    async def save(self, path: str | os.PathLike[str], **kw: Any) -> Artifact:
        """a15's older name of :meth:`save_file`."""
        return await self.save_file(path, **kw)

    async def stage_path(self, ext: str = "") -> str:
        """A new, empty file path inside the workspace for a library to write into
        (``plt.savefig(path)``), then :meth:`save_file`, which moves it into the store
        (a15). A staged file never saved is removed when the workspace is next opened
        by a process after this one ended.

        Raises:
          ValueError: if ``ext`` contains a path separator.
          WorkspaceWriteError: if the folder cannot be written.
        """
        if not isinstance(ext, str) or "/" in ext or os.sep in ext or "\x00" in ext:
            raise ValueError(f"ext must be a file suffix such as '.png', got {ext!r}")

        def make() -> str:
            path = self.root / f"{TMP_PREFIX}{os.getpid()}-stage-{secrets.token_hex(8)}{ext}"
            try:
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
                )
            except OSError as exc:
                raise self._write_error(exc) from exc
            os.close(fd)
            return str(path)

        return await self._ws.run_in_io_thread(make)

    async def tmp_path(self, suffix: str = "") -> str:
        """a15's older name of :meth:`stage_path`."""
        return await self.stage_path(suffix)

    @contextlib.asynccontextmanager
    async def writer(
        self,
        *,
        kind: str = "bytes",
        planned_ext: str | None = None,
        pin: bool = False,
        name: str | None = None,
        labels: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Iterable[str] | None = None,
        mime: str | None = None,
    ) -> AsyncIterator[ArtifactWriter]:
        """``async with artifacts().writer(kind="plot", planned_ext=".png") as w:
        w.write(png_bytes)``: saves what was written when the block ends (a15). After it,
        ``w.artifact`` is the :class:`Artifact`. If the block raises, nothing is saved.

        Args:
          kind: what it is (a15 requires it). planned_ext: the file suffix (names it
            ``"data<ext>"`` unless ``name`` is given, and guides the media type).
          pin, name, labels, metrics, tags, mime: as :meth:`save_bytes`.

        Raises:
          TypeError, ValueError, WorkspaceWriteError: as :meth:`save_bytes`.
        """
        default = "data" + (planned_ext or ".bin")
        info = self._describe(
            name=name,
            suggested_uri=None,
            default_name=default,
            kind=kind,
            labels=labels,
            metrics=metrics,
            tags=tags,
            meta=None,
        )
        w = ArtifactWriter()
        yield w
        info["labels"].update(_check_dict(w._labels, "artifact labels"))
        info["metrics"].update(_check_metrics(w._metrics))
        media = _mime(info["name"], mime, "application/octet-stream")
        artifact_id, size = await self._ws.run_in_io_thread(self._store_chunks, w._chunks)
        w._chunks = []
        w.artifact = await self._index(
            artifact_id, mime=media, size=size, pin=pin, search_text=None, **info
        )

    # ----------------------------------------------------------------- resolving
    def _digest_of(self, ref: Any) -> str:
        """The artifact id a URI / id / Artifact / in-workspace path names (no I/O).

        Raises:
          ArtifactURIError: for a URI or path that is not an artifact of this workspace.
        """
        if isinstance(ref, Artifact):
            return _check_id(ref.artifact_id)
        if isinstance(ref, os.PathLike):
            ref = os.fspath(ref)
        if not isinstance(ref, str):
            raise TypeError(
                f"expected an artifact URI, id or Artifact, got {type(ref).__name__} {ref!r}"
            )
        if _ID_RE.fullmatch(ref):
            return ref
        if ref.startswith(URI_PREFIX):
            digest = ref[len(URI_PREFIX) :]
            if is_digest(digest):
                return digest
            raise ArtifactURIError(
                f"{ref!r} is not an artifact URI (they are {URI_PREFIX}<64 hex digits>, as "
                "in Artifact.uri)"
            )
        parsed = urlparse(ref)
        if parsed.scheme.lower() == "file":
            candidate = unquote(parsed.path)
        elif parsed.scheme and len(parsed.scheme) > 1:
            raise ArtifactURIError(
                f"{ref!r} is not an artifact of this workspace: ag_jupyter resolves only "
                f"{URI_PREFIX}... URIs (and files inside {str(self.root)!r}); "
                f"{parsed.scheme}:// storage is not reachable from here. Download the file "
                "and save it with context.artifacts().save_file(path)"
            )
        else:
            candidate = ref
        path = Path(os.path.abspath(candidate))
        root = Path(os.path.abspath(self.root))
        if path.parent.parent == root and is_digest(path.parent.name + path.name):
            return path.parent.name + path.name
        raise ArtifactURIError(
            f"{ref!r} is outside the workspace's artifacts ({str(root)!r}); ag_jupyter only "
            f"resolves its own artifacts ({URI_PREFIX}<sha256>). To use that file, save it "
            "first: art = await context.artifacts().save_file(path)"
        )

    def _not_found(self, artifact_id: Any) -> ArtifactNotFoundError:
        return ArtifactNotFoundError(
            f"no artifact with id {artifact_id!r} in the workspace {str(self._ws.path)!r}; "
            "list saved ones with context.artifacts().list(level='all')"
        )

    def _checked_blob(self, artifact_id: str) -> Path:
        blobs = BlobStore(self.root)
        try:
            blobs.verify(artifact_id)  # a modified or planted file is refused
        except BlobMissingError:
            raise self._not_found(artifact_id) from None
        return blobs.path(artifact_id)

    def _load(self, artifact_id: str) -> builtins.bytes:
        try:
            return BlobStore(self.root).read(artifact_id)  # refuses links, checks the hash
        except BlobMissingError:
            raise self._not_found(artifact_id) from None

    # ----------------------------------------------------------------- loading
    async def load_bytes(self, uri: Any) -> builtins.bytes:
        """The content of the artifact named by ``uri`` (an ``ag://artifacts/...`` URI,
        an artifact id, an :class:`Artifact` or its file path), checked against its
        sha256.

        Raises:
          ArtifactURIError: if ``uri`` is not an artifact of this workspace.
          ArtifactNotFoundError (a FileNotFoundError): if no artifact has this id.
          BlobError: if the file was replaced by a symlink or its content changed.
        """
        try:
            digest = self._digest_of(uri)
        except TypeError as exc:
            raise ArtifactNotFoundError(str(exc)) from None
        return await self._ws.run_in_io_thread(self._load, digest)

    async def load_text(self, uri: Any, encoding: str = "utf-8", *, errors: str = "strict") -> str:
        """The content decoded with ``encoding`` (a15 ``load_text(uri, *, encoding,
        errors)``). Raises: as :meth:`load_bytes`; UnicodeDecodeError."""
        return (await self.load_bytes(uri)).decode(encoding, errors=errors)

    async def load_json(self, uri: Any, *, encoding: str = "utf-8", errors: str = "strict") -> Any:
        """The content parsed as JSON. Raises: as :meth:`load_bytes`;
        json.JSONDecodeError (a ValueError) if it is not JSON."""
        return json.loads(await self.load_text(uri, encoding, errors=errors))

    async def load_bytes_by_id(self, artifact_id: str) -> builtins.bytes:
        """The content of artifact ``artifact_id`` (a15). Raises: ArtifactNotFoundError
        (a FileNotFoundError, as a15 raises) if there is none; as :meth:`load_bytes`."""
        return await self.load_bytes(_check_id(artifact_id))

    async def load_text_by_id(
        self, artifact_id: str, *, encoding: str = "utf-8", errors: str = "strict"
    ) -> str:
        """The content of ``artifact_id`` as text (a15). Raises: as
        :meth:`load_bytes_by_id`."""
        return await self.load_text(_check_id(artifact_id), encoding, errors=errors)

    async def load_json_by_id(
        self, artifact_id: str, *, encoding: str = "utf-8", errors: str = "strict"
    ) -> Any:
        """The content of ``artifact_id`` parsed as JSON (a15)."""
        return await self.load_json(_check_id(artifact_id), encoding=encoding, errors=errors)

    async def load_artifact(self, uri: Any) -> builtins.bytes:
        """a15's older loader (its bytes here)."""
        return await self.load_bytes(uri)

    async def load_artifact_bytes(self, uri: Any) -> builtins.bytes:
        """a15's older name of :meth:`load_bytes`."""
        return await self.load_bytes(uri)

    async def path(self, artifact_id: Any) -> Path:
        """The file holding the artifact's content (read it, never modify it: it is
        shared by every save of that content); checked against its sha256 first.

        Raises:
          ArtifactNotFoundError, ArtifactURIError, BlobError: as :meth:`load_bytes`.
        """
        try:
            digest = self._digest_of(artifact_id)
        except TypeError as exc:
            raise ArtifactNotFoundError(str(exc)) from None
        return await self._ws.run_in_io_thread(self._checked_blob, digest)

    async def as_local_file(self, artifact_or_uri: Any, *, must_exist: bool = True) -> str:
        """The absolute path of the artifact's file in the workspace (a15). Read it, never
        modify it (its content is verified on every load). ``must_exist`` is accepted for
        a15; an artifact whose file is gone always raises.

        Raises:
          ArtifactNotFoundError, ArtifactURIError, BlobError: as :meth:`path`.
        """
        return str(await self.path(artifact_or_uri))

    async def as_local_file_by_id(self, artifact_id: str, *, must_exist: bool = True) -> str:
        """:meth:`as_local_file` of ``artifact_id`` (a15)."""
        return await self.as_local_file(_check_id(artifact_id))

    def to_local_path(self, uri_or_path: Any, *, must_exist: bool = True) -> str:
        """The file path of an artifact, synchronously as a15's (deprecated there)
        ``to_local_path``: the path is computed, and with ``must_exist`` checked with
        one ``lstat`` (the content is not verified; prefer ``await as_local_file(...)``).

        Raises:
          ArtifactURIError: if it is not an artifact of this workspace.
          FileNotFoundError: if ``must_exist`` and the file is missing.
        """
        digest = self._digest_of(uri_or_path)
        path = BlobStore(self.root).path(digest)
        if must_exist and not os.path.lexists(path):
            raise FileNotFoundError(f"Local path not found: {path}")
        return str(path)

    def to_local_file(self, uri_or_path: Any, *, must_exist: bool = True) -> str:
        """a15's alias of :meth:`to_local_path` for files."""
        return self.to_local_path(uri_or_path, must_exist=must_exist)

    # ----------------------------------------------------------------- index
    async def get_by_id(self, artifact_id: str) -> Artifact | None:
        """The artifact ``artifact_id`` (its newest save), or None if there is none
        (a15).

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        if not isinstance(artifact_id, str) or not _ID_RE.fullmatch(artifact_id):
            return None

        def read(conn: sqlite3.Connection) -> Artifact | None:
            row = conn.execute(
                "SELECT * FROM artifacts WHERE artifact_id = ? ORDER BY seq DESC LIMIT 1",
                (artifact_id,),
            ).fetchone()
            return None if row is None else _row_artifact(row)

        return await self._ws.read(read)

    async def get(self, artifact_id: str) -> Artifact:
        """ag_jupyter's older form of :meth:`get_by_id`, which raises instead of
        returning None.

        Raises:
          ArtifactNotFoundError: if no artifact has this id.
        """
        found = await self.get_by_id(_check_id(artifact_id))
        if found is None:
            raise self._not_found(artifact_id)
        return found

    async def pin(self, artifact_id: str | Artifact, pinned: bool = True) -> None:
        """Mark (or with ``pinned=False`` unmark) an artifact as pinned: pinned artifacts
        are kept when run history is pruned (a15).

        Raises:
          ArtifactNotFoundError: if no artifact has this id.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        digest = _check_id(
            artifact_id.artifact_id if isinstance(artifact_id, Artifact) else artifact_id
        )

        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE artifacts SET pinned = ? WHERE artifact_id = ?", (int(pinned), digest)
            ).rowcount

        if not await self._ws.write(write):
            raise self._not_found(digest)

    def _scope_filters(self, level: Any, scope: Any) -> list[tuple[str, Any]]:
        chosen = scope if scope is not None else level
        if chosen is None or chosen in ("all", "user", "org"):
            return []
        if chosen not in _LEVELS:
            raise ValueError(
                f"level/scope must be one of {', '.join(_LEVELS)} (or None), got {chosen!r}"
            )
        if chosen == "run":
            return [("run_id", self.run_id)]
        if chosen == "session":
            return (
                [("session_id", self.session_id)] if self.session_id else [("run_id", self.run_id)]
            )
        if chosen == "scope":
            return (
                [("session_id", self.session_id)] if self.session_id else [("run_id", self.run_id)]
            )
        if chosen == "graph":
            return [("graph_id", self.graph_id)]
        return [("graph_id", self.graph_id), ("node_id", self.node_id)]  # node

    async def _query(
        self,
        *,
        filters: list[tuple[str, Any]],
        kind: str | None = None,
        tags: Iterable[str] | None = None,
        labels: Mapping[str, Any] | None = None,
        pinned: bool | None = None,
        metric: str | None = None,
        metric_mode: str | None = None,
        text: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in filters:
            if value is None:
                where.append(f"{column} IS NULL")
            else:
                where.append(f"{column} = ?")
                params.append(value)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if pinned is not None:
            where.append("pinned = ?")
            params.append(int(bool(pinned)))
        label_filter = dict(labels or {})
        tag_list = check_tags(tags) if tags is not None else []
        if "tags" in label_filter:
            extra = label_filter.pop("tags")
            tag_list += check_tags([extra] if isinstance(extra, str) else extra)
        for tag in tag_list:
            where.append("EXISTS (SELECT 1 FROM json_each(artifacts.tags) WHERE value = ?)")
            params.append(tag)
        for key, value in label_filter.items():
            if isinstance(value, dict | list | tuple):
                raise TypeError(
                    f"label filters match str, number, bool or None values; {key!r} is "
                    f"{type(value).__name__}"
                )
            if value is None:
                where.append(
                    "EXISTS (SELECT 1 FROM json_each(artifacts.labels) WHERE key = ? AND "
                    "type = 'null')"
                )
                params.append(key)
            else:
                where.append(
                    "EXISTS (SELECT 1 FROM json_each(artifacts.labels) WHERE key = ? AND "
                    "value = ? AND type != 'object' AND type != 'array')"
                )
                params.extend((key, int(value) if isinstance(value, bool) else value))
        if text:
            where.append(
                "instr(lower(name || ' ' || coalesce(kind, '') || ' ' || labels || ' ' || "
                "coalesce(search_text, '')), lower(?)) > 0"
            )
            params.append(text)
        order = "a.seq DESC"
        metric_params: list[Any] = []
        if metric is not None:
            mode = metric_mode or "max"
            if mode not in ("max", "min"):
                raise ValueError(f"metric_mode must be 'max' or 'min', got {metric_mode!r}")
            where.append(
                "EXISTS (SELECT 1 FROM json_each(artifacts.metrics) WHERE key = ? AND "
                "type IN ('integer', 'real'))"
            )
            params.append(metric)
            order = (
                "(SELECT value FROM json_each(a.metrics) WHERE key = ?) "
                f"{'DESC' if mode == 'max' else 'ASC'}, a.seq DESC"
            )
            metric_params.append(metric)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
        ):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        inner = "SELECT max(seq) FROM artifacts"
        if where:
            inner += " WHERE " + " AND ".join(where)
        inner += " GROUP BY artifact_id"
        sql = f"SELECT a.* FROM artifacts a WHERE a.seq IN ({inner}) ORDER BY {order} LIMIT ?"
        all_params = [*params, *metric_params, -1 if limit is None else limit]

        def read(conn: sqlite3.Connection) -> list[Artifact]:
            return [_row_artifact(row) for row in conn.execute(sql, all_params)]

        return await self._ws.read(read)

    async def list(
        self,
        *,
        level: str | None = "run",
        include_node: bool = True,
        tags: Iterable[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        limit: int | None = None,
        kind: str | None = None,
        labels: Mapping[str, Any] | None = None,
        pinned: bool | None = None,
        scope: str | None = None,
        run_id: str | None = None,
        session_id: str | None = None,
    ) -> list[Artifact]:
        """Saved artifacts, newest first, one per artifact (its newest matching save).

        Args:
          level: as a15: ``"run"`` (default: this run's), ``"session"``, ``"scope"``,
            ``"all"`` (the whole workspace; also a15's ``"user"`` / ``"org"``, and None).
          include_node: with a run-level scope, only saves of this graph and node (a15).
          scope: AetherGraph's docs' spelling (``"run" | "graph" | "node" | "session" |
            "all"``); wins over ``level``.
          kind, tags (all of them), labels / filters (exact matches; ``"tags"`` as a
            label means tags), pinned: filters. limit: at most this many.
          run_id, session_id: ag_jupyter's older filters (saves of that run / session; the
            scope then defaults to the whole workspace).

        Raises:
          ValueError: for an unknown level or a non-positive limit. TypeError: for a
            label filter that is a list or dict. WorkspaceError: if the database cannot be
            read.
        """
        if run_id is not None or session_id is not None:
            conds = [
                (c, v) for c, v in (("run_id", run_id), ("session_id", session_id)) if v is not None
            ]
            if scope is None and level == "run":
                level = "all"
        else:
            conds = []
        conds += self._scope_filters(level, scope)
        if include_node and scope is None and level == "run":
            conds += [("graph_id", self.graph_id), ("node_id", self.node_id)]
        merged = {**dict(filters or {}), **dict(labels or {})}
        return await self._query(
            filters=conds, kind=kind, tags=tags, labels=merged, pinned=pinned, limit=limit
        )

    async def search(
        self,
        query: str | None = None,
        *,
        kind: str | None = None,
        tags: Iterable[str] | None = None,
        labels: Mapping[str, Any] | None = None,
        metric: str | None = None,
        metric_mode: str | None = None,
        level: str | None = "run",
        extra_scope_labels: Mapping[str, Any] | None = None,
        limit: int | None = None,
        include_graph: bool = False,
        include_node: bool = False,
        mode: str | None = None,
        scope: str | None = None,
        pinned: bool | None = None,
        **_ignored: Any,
    ) -> list[Artifact]:
        """Artifacts matching every filter, newest first, or by ``metric`` (a15's
        structured search).

        ``query`` (optional, also positional) keeps artifacts whose name, kind, labels or
        text content (the first 64 K characters of ``save_text`` / ``save_json``
        payloads) contain it, ignoring ASCII case: there is no semantic index here, so
        a15's ``mode="semantic" | "lexical" | "hybrid"`` and ``time_window`` change
        nothing. ``mode="max" | "min"`` (as AetherGraph's docs write it) is taken as
        ``metric_mode``. Scope, ``labels``, ``tags``: as :meth:`list`.

        Raises:
          ValueError, TypeError, WorkspaceError: as :meth:`list`.
        """
        if mode in ("max", "min") and metric_mode is None:
            metric_mode = mode
        if query is not None and not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        conds = self._scope_filters(level, scope)
        if include_graph:
            conds.append(("graph_id", self.graph_id))
        if include_node:
            conds.append(("node_id", self.node_id))
        merged = {**dict(labels or {}), **dict(extra_scope_labels or {})}
        return await self._query(
            filters=conds,
            kind=kind,
            tags=tags,
            labels=merged,
            metric=metric,
            metric_mode=metric_mode,
            text=query or None,
            limit=limit,
            pinned=pinned,
        )

    async def best(
        self,
        *,
        kind: str | None = None,
        metric: str,
        metric_mode: str | None = None,
        mode: str | None = None,
        level: str | None = "run",
        tags: Iterable[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        scope: str | None = None,
        labels: Mapping[str, Any] | None = None,
    ) -> Artifact | None:
        """The artifact (of ``kind``) with the highest (``metric_mode="max"``, the default)
        or lowest (``"min"``) value of ``metric``, among those that have it; None if none
        does (a15). ``mode=`` is AetherGraph's docs' spelling of ``metric_mode``; scope
        and filters as :meth:`list`.

        Raises:
          ValueError: for a mode other than "max" / "min"; as :meth:`list` otherwise.
        """
        chosen = metric_mode if metric_mode is not None else (mode or "max")
        merged = {**dict(filters or {}), **dict(labels or {})}
        found = await self._query(
            filters=self._scope_filters(level, scope),
            kind=kind,
            tags=tags,
            labels=merged,
            metric=metric,
            metric_mode=chosen,
            limit=1,
        )
        return found[0] if found else None


class ArtifactService:
    """The embedded ``artifacts`` service: ``context.artifacts()`` is an
    :class:`ArtifactStore` stamped with the context's run, session, graph and node.

    Args:
      workspace: the open workspace holding the artifacts (with
        :data:`ARTIFACTS_SCHEMA`).
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def bind(self, context: Any) -> ArtifactStore:
        """The artifact store as seen from ``context``."""
        return ArtifactStore(
            self.workspace,
            run_id=getattr(context, "run_id", None),
            session_id=getattr(context, "session_id", None),
            graph_id=getattr(context, "graph_id", None),
            node_id=getattr(context, "node_id", None),
            agent_id=getattr(context, "agent_id", None),
            app_id=getattr(context, "app_id", None),
        )
