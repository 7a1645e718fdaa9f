"""The durable run store: run records and outputs in the workspace's SQLite database.

:class:`SqliteRunStore` implements :class:`~ag_jupyter.runtime.run_store.RunStore`.
``create``/``update`` only queue the record (coalescing several changes of one run into one
row write) and return at once; the workspace's writer thread commits queued records in
batches, and ``flush`` awaits that commit (the RunManager awaits it before ``wait_run``
returns a terminal record). Reads see this process's queued writes first (an in-memory
overlay), then a small cache of recently finished runs, then the database, which they read
in a worker thread.

Outputs are stored as JSON. An output JSON cannot hold exactly (a set, a DataFrame, a
tuple...) is stored as JSON when it converts (a tuple as an array) or else as a preview
``{"__repr__": "...", "__type__": "module.Type"}``; the real objects stay available through
``get_outputs`` in the process that ran the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .models import RunRecord, RunStatus
from .run_store import check_paging, status_set
from .workspace import (
    JOURNAL_RUN_SQL,
    RUN_COLUMNS,
    UPSERT_RUN_SQL,
    Workspace,
    WorkspaceError,
    dumps_lenient,
    fold_run_journal,
    iso_utc,
    preview,
)

log = logging.getLogger("ag_jupyter.workspace")

#: Finished runs whose record and outputs are kept in memory for quick reads.
DEFAULT_CACHE_SIZE = 256
#: Journaled run rows are folded into ``runs`` once there are this many...
FOLD_AT_ROWS = 512
#: ...or this many seconds after the first of them was journaled.
FOLD_AFTER_S = 0.25
#: After a failed fold, wait this long before trying again (seconds).
_FOLD_RETRY_S = 5.0


_encode = json.JSONEncoder(allow_nan=False).encode
_SCALARS = frozenset({str, int, bool, type(None)})


def encode_outputs(outputs: dict[str, Any]) -> tuple[str, bool]:
    """JSON text to store for a run's ``outputs``, and whether it round-trips exactly.

    Values JSON cannot hold become previews ``{"__repr__": ..., "__type__": ...}``;
    values that convert with a change (tuples, non-str dict keys) are stored converted.
    Never raises for odd values.
    """
    try:
        text = _encode(outputs)
        if all(type(v) in _SCALARS for v in outputs.values()):
            return text, True  # plain scalars (and str keys) always round-trip
        return text, json.loads(text) == outputs
    except (TypeError, ValueError, RecursionError):
        pass
    stored: dict[str, Any] = {}
    for key, value in outputs.items():
        try:
            stored[str(key)] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError, RecursionError):
            stored[str(key)] = preview(value)
    return json.dumps(stored), False


_UNKNOWN: Any = object()  # cached record whose outputs must be read from the database


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _row_to_record(row: sqlite3.Row | tuple[Any, ...]) -> RunRecord:
    """A RunRecord from a row of ``RUN_COLUMNS`` (runs or run_journal)."""
    return RunRecord(
        run_id=row[0],
        graph_id=row[1],
        status=row[2],
        created_at=datetime.fromisoformat(row[3]),
        started_at=_dt(row[4]),
        finished_at=_dt(row[5]),
        session_id=row[6],
        parent_run_id=row[7],
        origin=row[8],
        visibility=row[9],
        importance=row[10],
        agent_id=row[11],
        app_id=row[12],
        error=row[13],
        tags=json.loads(row[14] or "[]"),
        meta=json.loads(row[15] or "{}"),
    )


def _opt_iso(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


class _Pending:
    """A run's latest record (and outputs) queued for, or written by, a batch."""

    __slots__ = ("outputs", "outputs_json", "record")

    def __init__(
        self, record: RunRecord, outputs: dict[str, Any] | None, outputs_json: str | None
    ) -> None:
        self.record = record
        self.outputs = outputs
        self.outputs_json = outputs_json


class SqliteRunStore:
    """A :class:`~ag_jupyter.runtime.run_store.RunStore` in a workspace's SQLite database.

    Call its methods from event-loop threads (any loop: a store may serve the managers of
    successive loops). Writes are group-committed by the workspace's writer thread; reads
    never block the loop.

    How a record reaches the disk: ``create``/``update`` queue it in memory (several
    changes of one run coalesce). When someone awaits the batch (``flush``), the writer
    appends the rows to ``run_journal`` (one cheap append per run) and commits; when
    nobody waits (the commit interval elapsed), it upserts them into ``runs`` directly.
    Journaled rows are folded into ``runs`` in batches soon after (``FOLD_AT_ROWS`` rows or
    ``FOLD_AFTER_S`` seconds), after the waiters were released, and on the next open after
    a crash. Reads check this process's queued and journaled rows, then ``run_journal``,
    then ``runs``.

    Args:
      workspace: the open :class:`~ag_jupyter.runtime.workspace.Workspace`.
      owns_workspace: close the workspace in :meth:`close` (otherwise ``close`` only
        flushes, and the store stays usable).
      cache_size: finished runs whose record and outputs stay in memory (default 256).
        Outputs JSON cannot hold exactly are kept for the life of the process regardless.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        owns_workspace: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.workspace = workspace
        self._owns = owns_workspace
        self._cache_size = max(0, int(cache_size))
        # Guarded by the workspace lock: queued, being written, and journaled-not-folded.
        self._lock = workspace.lock
        self._pending: dict[str, _Pending] = {}
        self._inflight: dict[str, _Pending] = {}
        self._journaled: dict[str, _Pending] = {}
        self._journal_rows = 0
        self._journal_since: float | None = None
        self._fold_retry_at: float | None = None
        self._cache_lock = threading.Lock()
        self._recent: OrderedDict[str, tuple[RunRecord, Any]] = OrderedDict()
        self._objects: dict[str, dict[str, Any]] = {}
        self._closed = False
        workspace.add_source(self)

    def __repr__(self) -> str:
        return f"SqliteRunStore({self.workspace!r})"

    # ------------------------------------------------------------------ writing
    def _queue(self, record: RunRecord, outputs: dict[str, Any] | None) -> None:
        run_id = record.run_id
        outputs_json: str | None = None
        if outputs is not None:
            outputs_json, exact = encode_outputs(outputs)
            if not exact:
                self._objects[run_id] = outputs
        known: Any = outputs
        with self._lock:
            pending = self._pending.get(run_id)
            if pending is None:
                pending = self._pending[run_id] = _Pending(record, outputs, outputs_json)
            else:
                pending.record = record
                if outputs_json is not None:
                    pending.outputs, pending.outputs_json = outputs, outputs_json
            if known is None and record.status.is_terminal:
                known = pending.outputs
                for older in (self._inflight.get(run_id), self._journaled.get(run_id)):
                    if known is None and older is not None:
                        known = older.outputs
                if known is None:
                    known = _UNKNOWN  # outputs may have been stored earlier: ask the db
            self.workspace.enqueued_locked()
        if record.status.is_terminal and self._cache_size:
            with self._cache_lock:
                self._recent[run_id] = (record, known)
                self._recent.move_to_end(run_id)
                if len(self._recent) > self._cache_size:
                    self._recent.popitem(last=False)

    async def create(self, record: RunRecord) -> None:
        """Queue a new record (returns at once; durable after :meth:`flush`)."""
        self._queue(record, None)

    async def update(self, record: RunRecord, outputs: dict[str, Any] | None = None) -> None:
        """Queue ``record`` as the run's new record, with its ``outputs`` if given (None
        keeps the outputs stored before). Returns at once; durable after :meth:`flush`."""
        self._queue(record, outputs)

    async def flush(self) -> None:
        """Return once every record queued so far is committed.

        Raises:
          WorkspaceWriteError: if the commit failed (the records stay in memory, readable
            through this store, and are retried on the next flush).
          WorkspaceClosedError: if the workspace was closed with records unsaved.
        """
        await self.workspace.flush()

    # BatchSource: called by the workspace's writer thread ---------------------------
    def take_locked(self) -> dict[str, _Pending] | None:
        """Hand the queued records to the writer (workspace lock held)."""
        if not self._pending:
            return None
        batch, self._pending = self._pending, {}
        self._inflight = batch
        return batch

    def write(self, conn: sqlite3.Connection, batch: dict[str, _Pending], urgent: bool) -> None:
        """Write ``batch`` inside the writer's transaction: appended to ``run_journal`` when
        someone awaits it (``urgent``), else upserted into ``runs`` (after folding the
        journal, so that rows keep their order)."""
        owner = self.workspace.owner_token
        rows = []
        for pending in batch.values():
            try:
                rows.append(self._row(pending.record, owner, pending.outputs_json))
            except Exception as exc:  # never lose the batch over one odd record
                log.warning("run %s: record not fully serialisable: %s", pending.record.run_id, exc)
                fallback = pending.record.model_copy(update={"meta": {"__repr__": repr(exc)}})
                rows.append(self._row(fallback, owner, pending.outputs_json))
        if urgent:
            conn.executemany(JOURNAL_RUN_SQL, rows)
        else:
            fold_run_journal(conn)
            conn.executemany(UPSERT_RUN_SQL, rows)

    @staticmethod
    def _row(record: RunRecord, owner: str, outputs_json: str | None) -> tuple[Any, ...]:
        return (
            record.run_id,
            record.graph_id,
            record.status.value,
            iso_utc(record.created_at),
            _opt_iso(record.started_at),
            _opt_iso(record.finished_at),
            record.session_id,
            record.parent_run_id,
            record.origin.value,
            record.visibility.value,
            record.importance.value,
            record.agent_id,
            record.app_id,
            record.error,
            json.dumps(record.tags) if record.tags else "[]",
            dumps_lenient(record.meta),
            owner,
            outputs_json,
        )

    def committed_locked(self, batch: dict[str, _Pending], urgent: bool) -> None:
        """Note a committed batch (workspace lock held)."""
        self._inflight = {}
        if urgent:
            self._journaled.update(batch)
            self._journal_rows += len(batch)
            if self._journal_since is None:
                self._journal_since = time.monotonic()
        else:  # the journal was folded in the same transaction
            self._forget_journal_locked()

    def _forget_journal_locked(self) -> None:
        self._journaled = {}
        self._journal_rows = 0
        self._journal_since = None
        self._fold_retry_at = None

    def failed_locked(self, batch: dict[str, _Pending]) -> bool:
        """Queue a failed batch again, under any newer changes (workspace lock held)."""
        self._inflight = {}
        for run_id, old in batch.items():
            newer = self._pending.get(run_id)
            if newer is None:
                self._pending[run_id] = old
            elif newer.outputs_json is None and old.outputs_json is not None:
                newer.outputs, newer.outputs_json = old.outputs, old.outputs_json
        return bool(batch)

    def maintenance_due_locked(self) -> float | None:
        """When (``time.monotonic()``) the journal should be folded, or None."""
        if not self._journal_rows:
            return None
        if self._fold_retry_at is not None:
            return self._fold_retry_at
        if self._journal_rows >= FOLD_AT_ROWS:
            return 0.0
        assert self._journal_since is not None
        return self._journal_since + FOLD_AFTER_S

    def maintain(self, conn: sqlite3.Connection) -> None:
        """Fold the journal into ``runs`` in its own transaction (writer thread)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                fold_run_journal(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except Exception:
            with self._lock:
                self._fold_retry_at = time.monotonic() + _FOLD_RETRY_S
            raise
        with self._lock:
            self._forget_journal_locked()

    # ------------------------------------------------------------------ reading
    def _queued(self, run_id: str) -> _Pending | None:
        with self._lock:
            return (
                self._pending.get(run_id)
                or self._inflight.get(run_id)
                or self._journaled.get(run_id)
            )

    def _cached(self, run_id: str) -> tuple[RunRecord, Any] | None:
        with self._cache_lock:
            return self._recent.get(run_id)

    async def get(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id`` (this process's queued version first), or None.

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        queued = self._queued(run_id)
        if queued is not None:
            return queued.record
        cached = self._cached(run_id)
        if cached is not None:
            return cached[0]

        def fetch(conn: sqlite3.Connection) -> RunRecord | None:
            # The journal first: a fold moves rows from there to runs, never back.
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM run_journal WHERE run_id = ? "
                "ORDER BY seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            return None if row is None else _row_to_record(row)

        return await self.workspace.read(fetch)

    async def get_outputs(self, run_id: str) -> dict[str, Any] | None:
        """The outputs saved for ``run_id``, or None.

        In the process that ran the run, the real objects; elsewhere their JSON form (a
        value JSON cannot hold is ``{"__repr__": ..., "__type__": ...}``).

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        objects = self._objects.get(run_id)
        if objects is not None:
            return objects
        queued = self._queued(run_id)
        if queued is not None and queued.outputs is not None:
            return queued.outputs
        cached = self._cached(run_id)
        if cached is not None and cached[1] is not _UNKNOWN:
            return cached[1]

        def fetch(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                "SELECT outputs FROM run_journal WHERE run_id = ? AND outputs IS NOT NULL "
                "ORDER BY seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT outputs FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            return None if row is None or row[0] is None else json.loads(row[0])

        return await self.workspace.read(fetch)

    async def exists(self, run_id: str) -> bool:
        """Whether any record (queued or stored) has this run id.

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        if self._queued(run_id) is not None or self._cached(run_id) is not None:
            return True

        def fetch(conn: sqlite3.Connection) -> bool:
            return (
                conn.execute("SELECT 1 FROM run_journal WHERE run_id = ?", (run_id,)).fetchone()
                or conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            ) is not None

        return await self.workspace.read(fetch)

    async def list(
        self,
        *,
        graph_id: str | None = None,
        status: RunStatus | Iterable[RunStatus] | None = None,
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Records matching every given filter (tags: all must be present), newest first
        by ``created_at``. Filtered, ordered and paged in SQL; rows not yet in ``runs``
        (queued in this process, or journaled) are merged in.

        Raises:
          ValueError: for a bad status, limit or offset.
          WorkspaceError: if the database cannot be read.
        """
        check_paging(limit, offset)
        statuses = status_set(status)
        wanted = list(dict.fromkeys(str(t) for t in tags)) if tags else []
        with self._lock:
            overlay = {rid: p.record for rid, p in self._journaled.items()}
            overlay.update((rid, p.record) for rid, p in self._inflight.items())
            overlay.update((rid, p.record) for rid, p in self._pending.items())

        where: list[str] = []
        params: list[Any] = []
        if graph_id is not None:
            where.append("graph_id = ?")
            params.append(graph_id)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(s.value for s in statuses)
        if session_id is not None:
            where.append("session_id = ?")
            params.append(session_id)
        for tag in wanted:
            where.append("EXISTS (SELECT 1 FROM json_each(runs.tags) WHERE json_each.value = ?)")
            params.append(tag)
        sql = f"SELECT {RUN_COLUMNS} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"

        def fetch(conn: sqlite3.Connection) -> tuple[list[RunRecord], dict[str, RunRecord]]:
            conn.execute("BEGIN")  # one snapshot for the journal and runs
            try:
                journal: dict[str, RunRecord] = {}
                for row in conn.execute(f"SELECT {RUN_COLUMNS} FROM run_journal ORDER BY seq"):
                    if row[0] not in overlay:
                        journal[row[0]] = _row_to_record(row)
                extra = len(overlay) + len(journal)
                page = [offset + limit + extra, 0] if extra else [limit, offset]
                records = [_row_to_record(row) for row in conn.execute(sql, [*params, *page])]
            finally:
                conn.execute("COMMIT")
            return records, journal

        records, journal = await self.workspace.read(fetch)
        overlay.update(journal)
        if not overlay:
            return records

        def matches(record: RunRecord) -> bool:
            return (
                (graph_id is None or record.graph_id == graph_id)
                and (statuses is None or record.status in statuses)
                and (session_id is None or record.session_id == session_id)
                and (not wanted or set(wanted).issubset(record.tags))
            )

        merged = [r for r in records if r.run_id not in overlay]
        merged.extend(r for r in overlay.values() if matches(r))
        merged.sort(key=lambda r: r.created_at, reverse=True)
        return merged[offset : offset + limit]

    # ------------------------------------------------------------------ closing
    async def close(self) -> None:
        """Flush; then, if the store owns its workspace, close the workspace.

        A store that does not own its workspace stays usable after ``close`` (managers of
        later event loops may share it). A failed final flush is logged, not raised.
        """
        if self._closed:
            return
        try:
            await self.flush()
        except WorkspaceError as exc:
            log.warning("run records could not be saved on close: %s", exc)
        if self._owns:
            self._closed = True
            await self.workspace.aclose()
