"""The durable run store: run records, inputs and outputs in the workspace's SQLite database.

:class:`SqliteRunStore` implements :class:`~ag_jupyter.runtime.store.run_store.RunStore`.
This module also owns the ``runs`` schema component: the tables, their SQL and the
recovery run when a workspace opens (runs left live by a dead process are marked failed,
"interrupted").

How a record reaches the disk: ``create``/``update`` queue it (several changes of one run
coalesce), and ``flush`` commits. A small batch (plain records, small outputs) is appended
to ``run_journal`` and committed right on the awaiting loop's thread (~10 µs a row here,
no index but the journal's own); anything large (outputs or inputs that are containers or
long strings) is encoded in the writer thread, never on the loop, and stored as a blob
file beside the artifacts when its JSON is over ``BLOB_THRESHOLD`` bytes. Journaled rows
are folded into ``runs`` (which carries the indexes listing needs) when the workspace is
idle, when the journal grows past ``FOLD_AT_ROWS`` rows (in chunks, so the loop can commit
in between), and when a workspace opens. Every row carries ``rev``, a per-process counter,
and a fold or upsert never replaces a record by an older one, whichever commit lands first.

A row that cannot be stored as given never fails its batch: free text UTF-8 cannot
encode is stored as bytes (read back as the same text, see ``codecs.db_text``), values JSON
cannot hold become previews, and a row SQLite still refuses is stored with a marker of
what was dropped (``meta["store_error"]``).

Outputs JSON cannot hold exactly (a set, a DataFrame...) are stored as previews
``{"__repr__": "...", "__type__": "module.Type"}``; the real objects stay available to this
process through ``get_outputs`` while they fit in ``object_cache_bytes`` (least recently
used first out). Once evicted, ``get_outputs`` returns the stored preview and a
``RuntimeWarning`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from ..errors import WorkspaceError
from ..models import LIVE_STATUSES, TERMINAL_STATUSES, RunRecord, RunStatus, utc_now
from .blobs import BlobError, BlobStore
from .codecs import (
    db_text,
    dumps_lenient,
    encode_light,
    encode_outputs_chunked,
    iso_utc,
    loads_yielding,
    text_from_db,
)
from .run_store import check_paging, status_set
from .schema import Migration, SchemaComponent
from .workspace import Workspace
from .writer import is_environment_error

log = logging.getLogger("ag_jupyter.workspace")

#: Finished runs whose record (and outputs) are kept in memory for quick reads.
DEFAULT_CACHE_SIZE = 256
#: Bytes of outputs kept in memory (objects JSON cannot hold, and recent JSON ones).
DEFAULT_OBJECT_CACHE_BYTES = 256 << 20
#: Outputs or inputs whose JSON is longer than this (bytes) are stored as blob files.
BLOB_THRESHOLD = 1 << 20
#: Journaled rows are folded into ``runs`` once there are this many, even under load (the
#: journal has no index but its key: appending stays cheap, reads scan it)...
FOLD_AT_ROWS = 32_768
#: ...else once no commit happened for this many seconds...
FOLD_IDLE_S = 0.1
#: ...in transactions of at most this many journal rows (~8 ms each here); a commit that
#: finds one under way is handed to the writer thread and waits for it (never the loop).
FOLD_CHUNK = 2_048
#: After a failed fold, wait this long before trying again (seconds).
_FOLD_RETRY_S = 5.0
#: Longest traceback text kept on a record (characters); longer ones keep head and tail.
MAX_TRACEBACK_CHARS = 100_000

LIVE_STATUS_VALUES = tuple(sorted(s.value for s in LIVE_STATUSES))
INTERRUPTED_ERROR = "interrupted: the process running it stopped before it finished"

# ---------------------------------------------------------------------------- schema
_RUN_TABLE_V1 = """CREATE TABLE IF NOT EXISTS {name} (
    {key}
    run_id TEXT NOT NULL{pk},
    graph_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    session_id TEXT,
    parent_run_id TEXT,
    origin TEXT NOT NULL,
    visibility TEXT NOT NULL,
    importance TEXT NOT NULL,
    agent_id TEXT,
    app_id TEXT,
    error TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    meta TEXT NOT NULL DEFAULT '{{}}',
    owner TEXT,
    outputs TEXT
)"""

_RUNS_V1 = (
    # One row per run. Timestamps are ISO 8601 UTC text with microseconds (so they sort);
    # tags/meta/outputs are JSON text; owner is owners.token of the process running it.
    _RUN_TABLE_V1.format(name="runs", key="", pk=" PRIMARY KEY"),
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at)",
    "CREATE INDEX IF NOT EXISTS runs_graph ON runs (graph_id, created_at)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at)",
    """CREATE INDEX IF NOT EXISTS runs_session ON runs (session_id, created_at)
        WHERE session_id IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS runs_live_owner ON runs (owner)
        WHERE status IN ('pending', 'running', 'waiting', 'cancellation_requested')""",
    # Redo log of run rows committed in a hurry (someone awaited them): appending here is
    # far cheaper than updating runs and its indexes. Rows are folded into runs later.
    _RUN_TABLE_V1.format(name="run_journal", key="seq INTEGER PRIMARY KEY,", pk=""),
)

_EXTRA_COLUMNS = (
    ("rev", "INTEGER NOT NULL DEFAULT 0"),  # per-process record version: newer wins
    ("inputs", "TEXT"),  # JSON of the run's inputs (or NULL with inputs_ref)
    ("inputs_ref", "TEXT"),  # sha256 of a blob holding the inputs' JSON
    ("outputs_ref", "TEXT"),  # sha256 of a blob holding the outputs' JSON
    ("outputs_exact", "INTEGER"),  # 1: the stored outputs are the outputs; 0: previews
)
_RUNS_V2 = (
    *(
        f"ALTER TABLE {table} ADD COLUMN {name} {decl}"
        for table in ("runs", "run_journal")
        for name, decl in _EXTRA_COLUMNS
    ),
    # Listing pages by (created_at, run_id): an index that gives that order.
    "DROP INDEX IF EXISTS runs_created",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL",
)

RUN_COLUMNS = (
    "run_id, graph_id, status, created_at, started_at, finished_at, session_id, "
    "parent_run_id, origin, visibility, importance, agent_id, app_id, error, tags, meta"
)
_WRITE_COLUMNS = (
    f"{RUN_COLUMNS}, owner, rev, inputs, inputs_ref, outputs, outputs_ref, outputs_exact"
)
_N_WRITE = 23
_KEEP_IF_NULL = """
    {col} = CASE WHEN excluded.{a} IS NULL AND excluded.{b} IS NULL THEN runs.{col}
        ELSE excluded.{col} END"""
_ON_CONFLICT_UPDATE = (
    """
ON CONFLICT (run_id) DO UPDATE SET
    graph_id = excluded.graph_id, status = excluded.status,
    created_at = excluded.created_at, started_at = excluded.started_at,
    finished_at = excluded.finished_at, session_id = excluded.session_id,
    parent_run_id = excluded.parent_run_id, origin = excluded.origin,
    visibility = excluded.visibility, importance = excluded.importance,
    agent_id = excluded.agent_id, app_id = excluded.app_id, error = excluded.error,
    tags = excluded.tags, meta = excluded.meta, owner = excluded.owner, rev = excluded.rev,"""
    + ",".join(
        _KEEP_IF_NULL.format(col=col, a=a, b=b)
        for col, a, b in (
            ("inputs", "inputs", "inputs_ref"),
            ("inputs_ref", "inputs", "inputs_ref"),
            ("outputs", "outputs", "outputs_ref"),
            ("outputs_ref", "outputs", "outputs_ref"),
            ("outputs_exact", "outputs", "outputs_ref"),
        )
    )
    + "\nWHERE excluded.rev >= runs.rev"
)
#: Insert or replace one run row (NULL inputs/outputs keep the stored ones); older revs
#: never replace newer ones.
UPSERT_RUN_SQL = (
    f"INSERT INTO runs ({_WRITE_COLUMNS}) VALUES ({', '.join('?' * _N_WRITE)})"
    + _ON_CONFLICT_UPDATE
)
#: Append one run row to the journal; same parameters.
JOURNAL_RUN_SQL = f"INSERT INTO run_journal ({_WRITE_COLUMNS}) VALUES ({', '.join('?' * _N_WRITE)})"
_FOLD_SQL = (
    f"INSERT INTO runs ({_WRITE_COLUMNS}) SELECT {_WRITE_COLUMNS} FROM run_journal "
    "WHERE seq <= ? ORDER BY seq" + _ON_CONFLICT_UPDATE
)


def fold_run_journal(conn: sqlite3.Connection, max_rows: int | None = None) -> int:
    """Move journaled run rows into ``runs`` (oldest first; a row never replaces a newer
    rev) and delete them from the journal. Call inside a write transaction.

    Args:
      max_rows: fold at most this many journal rows (None: all).

    Returns the number of journal rows folded.
    """
    if max_rows is None:
        last = conn.execute("SELECT max(seq) FROM run_journal").fetchone()[0]
    else:
        last = conn.execute(
            "SELECT max(seq) FROM (SELECT seq FROM run_journal ORDER BY seq LIMIT ?)",
            (max_rows,),
        ).fetchone()[0]
    if last is None:
        return 0
    conn.execute(_FOLD_SQL, (last,))
    return conn.execute("DELETE FROM run_journal WHERE seq <= ?", (last,)).rowcount


def _recover_runs(conn: sqlite3.Connection, workspace: Any) -> None:
    """Open hook: fold the journal, then mark runs that dead owners left live as failed
    ("interrupted"). Runs after the owners hook, so the owners table is current."""
    fold_run_journal(conn)
    live = ", ".join(f"'{s}'" for s in LIVE_STATUS_VALUES)
    orphan = f"status IN ({live}) AND (owner IS NULL OR owner NOT IN (SELECT token FROM owners))"
    run_ids = [r[0] for r in conn.execute(f"SELECT run_id FROM runs WHERE {orphan}")]
    if run_ids:
        conn.execute(
            f"""UPDATE runs SET status = 'failed', error = ?, finished_at = ?,
                meta = CASE WHEN json_valid(meta)
                    THEN json_set(meta, '$.interrupted', json('true')) ELSE meta END
                WHERE {orphan}""",
            (INTERRUPTED_ERROR, iso_utc(utc_now())),
        )
        log.info("workspace %s: %d interrupted run(s) marked failed", workspace.path, len(run_ids))
    workspace.interrupted_on_open = run_ids


RUNS_SCHEMA = SchemaComponent(
    "runs",
    (Migration(1, _RUNS_V1), Migration(2, _RUNS_V2)),
    on_open=_recover_runs,
)


# --------------------------------------------------------------------------- codecs
def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def row_to_record(row: sqlite3.Row | tuple[Any, ...]) -> RunRecord:
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
        error=text_from_db(row[13]),
        tags=json.loads(row[14] or "[]"),
        meta=json.loads(row[15] or "{}"),
    )


def _opt_iso(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


def clip_traceback(text: str) -> tuple[str, bool]:
    """``text`` cut to ``MAX_TRACEBACK_CHARS`` (head and tail kept), and whether it was."""
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text, False
    half = MAX_TRACEBACK_CHARS // 2
    dropped = len(text) - 2 * half
    return f"{text[:half]}\n... [{dropped} characters dropped] ...\n{text[-half:]}", True


def approx_size(value: Any, *, limit: int = 100_000) -> int:
    """Roughly how many bytes ``value`` holds (``sys.getsizeof`` summed over containers,
    at most ``limit`` objects visited; objects such as DataFrames and arrays report their
    buffers through ``__sizeof__``). Gives the GIL away as it goes (writer thread)."""
    total = 0
    seen: set[int] = set()
    stack = [value]
    visited = 0
    while stack and visited < limit:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        visited += 1
        if visited % 2048 == 0:
            time.sleep(0)
        try:
            total += sys.getsizeof(item)
        except Exception:
            total += 64
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return total


class _Pending:
    """A run's latest queued change: its record and, when given, its inputs/outputs
    (raw, then as JSON text or a blob reference once encoded)."""

    __slots__ = (
        "exact",
        "heavy",
        "inputs",
        "inputs_json",
        "inputs_ref",
        "outputs",
        "outputs_json",
        "outputs_ref",
        "record",
        "rev",
    )

    def __init__(self, record: RunRecord, rev: int) -> None:
        self.record = record
        self.rev = rev
        self.heavy = False
        self.inputs: Mapping[str, Any] | None = None
        self.inputs_json: str | None = None
        self.inputs_ref: str | None = None
        self.outputs: Mapping[str, Any] | None = None
        self.outputs_json: str | None = None
        self.outputs_ref: str | None = None
        self.exact: bool | None = None

    def has_outputs(self) -> bool:
        return self.outputs is not None

    def has_inputs(self) -> bool:
        return self.inputs is not None


class _OutputCache:
    """Recently finished runs' outputs, least recently used first out, bounded by bytes.

    Outputs JSON can hold are kept as given (charged their JSON length); others as the
    Python objects (charged :func:`approx_size`). ``evicted_inexact`` remembers (bounded)
    runs whose objects were dropped, so a later read can say it returns a preview.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self.bytes = 0
        self._items: OrderedDict[str, tuple[Mapping[str, Any], int, bool]] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted_inexact: OrderedDict[str, None] = OrderedDict()

    def put(self, run_id: str, outputs: Mapping[str, Any], nbytes: int, exact: bool) -> None:
        with self._lock:
            old = self._items.pop(run_id, None)
            if old is not None:
                self.bytes -= old[1]
            if nbytes > self.max_bytes:
                if not exact:
                    self._note_evicted(run_id)
                return
            self._items[run_id] = (outputs, nbytes, exact)
            self.bytes += nbytes
            while self.bytes > self.max_bytes and self._items:
                rid, (_, size, was_exact) = self._items.popitem(last=False)
                self.bytes -= size
                if not was_exact:
                    self._note_evicted(rid)

    def _note_evicted(self, run_id: str) -> None:
        self.evicted_inexact[run_id] = None
        if len(self.evicted_inexact) > 10_000:
            self.evicted_inexact.popitem(last=False)

    def get(self, run_id: str) -> Mapping[str, Any] | None:
        with self._lock:
            item = self._items.get(run_id)
            if item is None:
                return None
            self._items.move_to_end(run_id)
            return item[0]

    def discard(self, run_id: str) -> None:
        with self._lock:
            old = self._items.pop(run_id, None)
            if old is not None:
                self.bytes -= old[1]


_UNKNOWN: Any = object()  # cached record whose outputs must be read from the database
_rev_counter = itertools.count(1)


class SqliteRunStore:
    """A :class:`~ag_jupyter.runtime.store.run_store.RunStore` in a workspace's database.

    Call its methods from event-loop threads (any loop: a store may serve the managers of
    successive loops). Reads never block the loop; writes are committed as the module
    docstring says.

    Args:
      workspace: the open :class:`~ag_jupyter.runtime.store.workspace.Workspace` (opened
        with the ``runs`` schema component).
      owns_workspace: close the workspace in :meth:`close` (otherwise ``close`` only
        flushes, and the store stays usable).
      cache_size: finished runs whose record stays in memory for quick reads (default 256).
      object_cache_bytes: bytes of outputs kept in memory as Python objects (default
        256 MiB); outputs JSON cannot hold are readable as objects only while they fit.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        owns_workspace: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
        object_cache_bytes: int = DEFAULT_OBJECT_CACHE_BYTES,
    ) -> None:
        self.workspace = workspace
        self._owns = owns_workspace
        self._cache_size = max(0, int(cache_size))
        self._blobs = BlobStore(workspace.blobs_path)
        # Guarded by the workspace lock: queued changes, and those being committed.
        self._lock = workspace.lock
        self._queue: dict[str, _Pending] = {}
        self._inflight: dict[str, _Pending] = {}
        self._heavy_queued = 0
        self._journal_rows = 0
        self._last_commit = 0.0
        self._fold_retry_at: float | None = None
        self._enqueued_locked = workspace.engine.enqueued_locked
        # (loop, task) that committed a put in the loop's current iteration (see put()).
        self._window: tuple[asyncio.AbstractEventLoop, Any] | None = None
        # The manager awaits flush twice per run: skip two coroutine layers (the method
        # below documents it).
        self.flush = workspace.engine.flush  # type: ignore[method-assign]
        self._recent: OrderedDict[str, RunRecord] = OrderedDict()  # guarded by _lock
        self.outputs_cache = _OutputCache(object_cache_bytes)
        self._closed = False
        with self._lock:
            self._journal_rows = 1  # unknown after open: let the first idle fold check
            self._last_commit = time.monotonic()
        workspace.add_source(self)

    def __repr__(self) -> str:
        return f"SqliteRunStore({self.workspace!r})"

    # ------------------------------------------------------------------ writing
    def _queue_change(
        self,
        record: RunRecord,
        outputs: Mapping[str, Any] | None,
        inputs: Mapping[str, Any] | None,
    ) -> None:
        run_id = record.run_id
        rev = next(_rev_counter)
        terminal = record.status in TERMINAL_STATUSES
        if outputs is None and inputs is None:  # a status change: the common, cheap case
            with self._lock:
                pending = self._queue.get(run_id)
                if pending is None:
                    self._queue[run_id] = _Pending(record, rev)
                else:
                    pending.record = record
                    pending.rev = rev
                if terminal and self._cache_size:
                    self._remember_locked(record)
                self._enqueued_locked(self)
            return
        encoded_out = encode_light(outputs) if outputs is not None else None
        encoded_in = encode_light(inputs) if inputs is not None else None
        with self._lock:
            pending = self._queue.get(run_id)
            if pending is None:
                pending = self._queue[run_id] = _Pending(record, rev)
            else:
                pending.record = record
                pending.rev = rev
            if outputs is not None:
                pending.outputs = outputs
                pending.outputs_ref = None
                if encoded_out is not None:
                    pending.outputs_json, pending.exact = encoded_out, True
                else:
                    pending.outputs_json, pending.exact = None, None
            if inputs is not None:
                pending.inputs = inputs
                pending.inputs_ref = None
                pending.inputs_json = encoded_in
            heavy = (
                pending.outputs is not None
                and pending.outputs_json is None
                and pending.outputs_ref is None
            ) or (
                pending.inputs is not None
                and pending.inputs_json is None
                and pending.inputs_ref is None
            )
            if heavy and not pending.heavy:
                self._heavy_queued += 1
            pending.heavy = heavy
            if terminal and self._cache_size:
                self._remember_locked(record)
            self._enqueued_locked(self)
        if terminal and outputs is not None and encoded_out is not None:
            self.outputs_cache.put(run_id, outputs, len(encoded_out), True)

    def _remember_locked(self, record: RunRecord) -> None:
        recent = self._recent
        recent[record.run_id] = record
        recent.move_to_end(record.run_id)
        if len(recent) > self._cache_size:
            recent.popitem(last=False)

    async def put(
        self,
        record: RunRecord,
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> None:
        """Store ``record`` (with the run's ``inputs`` and/or ``outputs``) and return once
        it is durable: :meth:`create`/:meth:`update` then :meth:`flush`, with a short path
        for the common case (small values, nothing else of this run queued, the
        connection free): one journal row committed right here. Further puts in the same
        loop iteration (runs ending together) share one commit instead.

        Raises:
          WorkspaceWriteError, WorkspaceClosedError: as :meth:`flush`.
        """
        run_id = record.run_id
        encoded_in = encode_light(inputs) if inputs is not None else None
        encoded_out = encode_light(outputs) if outputs is not None else None
        fast = (inputs is None or encoded_in is not None) and (
            outputs is None or encoded_out is not None
        )
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        window = self._window
        if window is not None and window[0] is not loop:
            window = None  # left by a loop that ended before it could close it
        if window is not None and window[1] is not task:
            # Another task committed a put in this loop iteration already (runs ending
            # together): queue this one, let the others of the iteration queue theirs,
            # then one commit serves them all (group commit, inline). A task's own
            # sequential puts (spawning runs one by one) are never held back.
            self._queue_change(record, outputs, inputs)
            await asyncio.sleep(0)
            await self.workspace.engine.flush()
            return
        if fast:
            if window is None:
                self._window = (loop, task)
                loop.call_soon(self._close_window)
            with self._lock:
                queued = self._queue.get(run_id)
                if queued is not None and (queued.inputs is not None or queued.outputs is not None):
                    fast = False  # values of this run still waiting: the general path
                elif queued is not None or run_id in self._inflight:
                    fast = run_id not in self._inflight
                    if fast:
                        del self._queue[run_id]  # superseded by this record (a status change)
            if fast:
                pending = _Pending(record, next(_rev_counter))
                if inputs is not None:
                    pending.inputs, pending.inputs_json = inputs, encoded_in
                if outputs is not None:
                    pending.outputs, pending.outputs_json, pending.exact = (
                        outputs,
                        encoded_out,
                        True,
                    )
                row = self._row(pending, self.workspace.owner_token)
                if self.workspace.engine.execute_now(JOURNAL_RUN_SQL, row):
                    terminal = record.status in TERMINAL_STATUSES
                    with self._lock:
                        self._journal_rows += 1
                        self._last_commit = time.monotonic()
                        if terminal and self._cache_size:
                            self._remember_locked(record)
                        if self._journal_rows == 1 or self._journal_rows == FOLD_AT_ROWS:
                            self.workspace.engine.maintenance_changed_locked()
                    if terminal and outputs is not None:
                        self.outputs_cache.put(run_id, outputs, len(encoded_out or ""), True)
                    return
        self._queue_change(record, outputs, inputs)
        await self.workspace.engine.flush()

    def _close_window(self) -> None:
        self._window = None

    async def create(self, record: RunRecord, inputs: Mapping[str, Any] | None = None) -> None:
        """Queue a new record (and the run's ``inputs``). Returns at once; durable after
        :meth:`flush`."""
        self._queue_change(record, None, inputs)

    async def update(self, record: RunRecord, outputs: Mapping[str, Any] | None = None) -> None:
        """Queue ``record`` as the run's new record, with its ``outputs`` if given (None
        keeps the outputs stored before). Returns at once; durable after :meth:`flush`."""
        self._queue_change(record, outputs, None)

    async def flush(self) -> None:
        """Return once every record queued so far is committed.

        Raises:
          WorkspaceWriteError: if the commit failed (the records stay in memory, readable
            through this store, and are retried until they land).
          WorkspaceClosedError: if the workspace was closed with records unsaved.
        """
        await self.workspace.flush()

    @property
    def fault(self) -> Any:
        """The workspace's current write fault (a ``WorkspaceWriteError``) or None."""
        return self.workspace.fault

    # BatchSource: called by the write engine --------------------------------------
    def take_locked(self) -> dict[str, _Pending] | None:
        """Hand the queued records to a committer (workspace lock held)."""
        if not self._queue:
            return None
        batch, self._queue = self._queue, {}
        self._heavy_queued = 0
        self._inflight.update(batch)
        return batch

    def inline_ok_locked(self) -> bool:
        """True unless a queued record has inputs/outputs still to encode."""
        return not self._heavy_queued

    def prepare(self, batch: dict[str, _Pending]) -> None:
        """Encode large inputs/outputs and move the biggest to blob files (writer thread,
        no lock held), in steps that give the GIL away, so the event loop never stalls on
        them (``codecs.encode_outputs_chunked``)."""
        for pending in batch.values():
            if not pending.heavy:
                continue
            if pending.outputs is not None and pending.outputs_json is None:
                pieces, exact = encode_outputs_chunked(pending.outputs)
                pending.exact = exact
                if pending.record.status in TERMINAL_STATUSES:
                    size = sum(map(len, pieces)) if exact else approx_size(pending.outputs)
                    self.outputs_cache.put(pending.record.run_id, pending.outputs, size, exact)
                pending.outputs_json, pending.outputs_ref = self._maybe_blob(pieces)
            if pending.inputs is not None and pending.inputs_json is None:
                pieces, _ = encode_outputs_chunked(pending.inputs)
                pending.inputs_json, pending.inputs_ref = self._maybe_blob(pieces)

    def _maybe_blob(self, pieces: list[str]) -> tuple[str | None, str | None]:
        """The JSON text to store in the row, or (None, digest) of a blob holding it."""
        if sum(map(len, pieces)) <= BLOB_THRESHOLD:
            return "".join(pieces), None

        def chunks() -> Iterator[bytes]:
            batch: list[str] = []
            size = 0
            for piece in pieces:  # JSON text here is ASCII (\u escapes)
                batch.append(piece)
                size += len(piece)
                if size >= 1 << 20:
                    yield "".join(batch).encode("ascii")
                    time.sleep(0)  # give the GIL away between megabytes
                    batch, size = [], 0
            if batch:
                yield "".join(batch).encode("ascii")

        try:
            digest, _ = self._blobs.put_chunks(chunks())
            return None, digest
        except (OSError, BlobError) as exc:  # keep a marker rather than lose the row
            log.warning(
                "workspace %s: a large value could not be saved as a blob: %s",
                self.workspace.path,
                exc,
            )
            marker = {"__repr__": "".join(pieces)[:1000], "__store_error__": str(exc)}
            return json.dumps(marker), None

    def _row(self, pending: _Pending, owner: str) -> tuple[Any, ...]:
        record = pending.record
        outputs_given = pending.outputs is not None
        return (
            record.run_id,
            record.graph_id,
            record.status,  # str enums bind as their text
            iso_utc(record.created_at),
            _opt_iso(record.started_at),
            _opt_iso(record.finished_at),
            record.session_id,
            record.parent_run_id,
            record.origin,
            record.visibility,
            record.importance,
            record.agent_id,
            record.app_id,
            db_text(record.error),
            json.dumps(record.tags) if record.tags else "[]",
            dumps_lenient(record.meta),
            owner,
            pending.rev,
            pending.inputs_json if pending.inputs is not None else None,
            pending.inputs_ref,
            pending.outputs_json if outputs_given else None,
            pending.outputs_ref,
            (1 if pending.exact else 0) if outputs_given else None,
        )

    def _safe_row(self, pending: _Pending, owner: str, exc: BaseException) -> tuple[Any, ...]:
        """A row SQLite will take for a record it refused: the identifying fields kept,
        the rest replaced by a marker of what was dropped."""
        record = pending.record
        marker = {
            "store_error": f"{type(exc).__name__}: {exc}"[:500],
            "dropped": "meta and outputs could not be stored",
        }
        safe = record.model_copy(
            update={
                "meta": marker,
                "error": (None if record.error is None else record.error[:2000]),
            }
        )
        clone = _Pending(safe, pending.rev)
        if pending.outputs is not None:
            clone.outputs = {}
            clone.outputs_json = json.dumps({"__dropped__": marker["store_error"]})
            clone.exact = False
        return self._row(clone, owner)

    def single_statement(self, batch: dict[str, _Pending]) -> tuple[str, tuple[Any, ...]] | None:
        """The journal insert of a one-record batch (see ``BatchSource.single_statement``)."""
        if len(batch) != 1:
            return None
        for pending in batch.values():
            return JOURNAL_RUN_SQL, self._row(pending, self.workspace.owner_token)
        return None

    def write(
        self, conn: sqlite3.Connection, batch: dict[str, _Pending], urgent: bool, careful: bool
    ) -> None:
        """Write ``batch`` inside the committer's transaction: appended to ``run_journal``
        when someone awaits it (``urgent``), else upserted into ``runs``. ``careful`` (after
        a first attempt raised): row by row, and a row SQLite still refuses is stored with
        a marker of what was dropped, so it never fails the batch."""
        owner = self.workspace.owner_token
        sql = JOURNAL_RUN_SQL if urgent else UPSERT_RUN_SQL
        if not careful:
            conn.executemany(sql, [self._row(p, owner) for p in batch.values()])
            return
        for pending in batch.values():
            conn.execute("SAVEPOINT run_row")
            try:
                conn.execute(sql, self._row(pending, owner))
            except Exception as exc:
                if is_environment_error(exc):
                    raise
                conn.execute("ROLLBACK TO run_row")
                log.warning("run %s: record stored with a marker: %s", pending.record.run_id, exc)
                conn.execute(sql, self._safe_row(pending, owner, exc))
            conn.execute("RELEASE run_row")

    def committed_locked(self, batch: dict[str, _Pending], urgent: bool) -> bool:
        """Note a committed batch (workspace lock held); True when the journal just got
        its first rows or reached ``FOLD_AT_ROWS`` (maintenance is due sooner)."""
        inflight = self._inflight
        for run_id, pending in batch.items():
            if inflight.get(run_id) is pending:
                del inflight[run_id]
        self._last_commit = time.monotonic()
        if not urgent:
            return False
        before = self._journal_rows
        self._journal_rows = before + len(batch)
        return before == 0 or (before < FOLD_AT_ROWS <= self._journal_rows)

    def failed_locked(self, batch: dict[str, _Pending]) -> bool:
        """Queue a failed batch again, under any newer changes (workspace lock held)."""
        inflight = self._inflight
        for run_id, old in batch.items():
            if inflight.get(run_id) is old:
                del inflight[run_id]
            newer = self._queue.get(run_id)
            if newer is None:
                self._queue[run_id] = old
                if old.heavy:
                    self._heavy_queued += 1
                continue
            if newer.outputs is None and old.outputs is not None:
                newer.outputs, newer.outputs_json = old.outputs, old.outputs_json
                newer.outputs_ref, newer.exact = old.outputs_ref, old.exact
            if newer.inputs is None and old.inputs is not None:
                newer.inputs, newer.inputs_json = old.inputs, old.inputs_json
                newer.inputs_ref = old.inputs_ref
        return bool(batch)

    def maintenance_due_locked(self) -> float | None:
        """When (``time.monotonic()``) the journal should be folded, or None."""
        if not self._journal_rows:
            return None
        if self._fold_retry_at is not None:
            return self._fold_retry_at
        if self._journal_rows >= FOLD_AT_ROWS:
            return 0.0
        return self._last_commit + FOLD_IDLE_S

    def maintain(self, conn: sqlite3.Connection) -> None:
        """Fold up to ``FOLD_CHUNK`` journal rows into ``runs`` in a transaction of its own
        (writer thread, connection held); due again at once while rows remain."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                folded = fold_run_journal(conn, FOLD_CHUNK)
                left = conn.execute("SELECT count(*) FROM run_journal").fetchone()[0]
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except Exception:
            with self._lock:
                self._fold_retry_at = time.monotonic() + _FOLD_RETRY_S
            raise
        del folded
        with self._lock:
            self._fold_retry_at = None
            self._journal_rows = int(left)

    def journal_rows(self) -> int:
        """Journal rows this store knows are waiting to be folded (approximate)."""
        return self._journal_rows

    # ------------------------------------------------------------------ reading
    def _queued(self, run_id: str) -> _Pending | None:
        with self._lock:
            return self._queue.get(run_id) or self._inflight.get(run_id)

    def _cached(self, run_id: str) -> RunRecord | None:
        with self._lock:
            return self._recent.get(run_id)

    def is_durable(self, run_id: str) -> bool:
        """Whether the latest record this process gave for ``run_id`` is committed."""
        return self._queued(run_id) is None

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
            return cached

        def fetch(conn: sqlite3.Connection) -> RunRecord | None:
            # The journal first: a fold moves rows from there to runs, never back.
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM run_journal WHERE run_id = ? "
                "ORDER BY rev DESC, seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            return None if row is None else row_to_record(row)

        return await self.workspace.read(fetch)

    def _load_json(self, text: str | None, ref: str | None) -> Any:
        if ref is not None:
            return loads_yielding(self._blobs.read(ref))
        return None if text is None else loads_yielding(text)

    async def _fetch_column(self, run_id: str, which: str) -> tuple[Any, bool | None]:
        ref = f"{which}_ref"
        exact = "outputs_exact" if which == "outputs" else "1"

        def fetch(conn: sqlite3.Connection) -> tuple[Any, bool | None]:
            row = conn.execute(
                f"SELECT {which}, {ref}, {exact} FROM run_journal WHERE run_id = ? AND "
                f"({which} IS NOT NULL OR {ref} IS NOT NULL) ORDER BY rev DESC, seq DESC "
                "LIMIT 1",
                (run_id,),
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {which}, {ref}, {exact} FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            if row is None or (row[0] is None and row[1] is None):
                return None, None
            try:
                value = self._load_json(row[0], row[1])
            except (BlobError, OSError) as exc:
                raise WorkspaceError(
                    f"the {which} of run {run_id!r} are stored in a blob of the workspace "
                    f"{str(self.workspace.path)!r} that cannot be read ({exc})"
                ) from exc
            return value, None if row[2] is None else bool(row[2])

        return await self.workspace.read(fetch)

    async def get_outputs(self, run_id: str) -> dict[str, Any] | None:
        """The outputs saved for ``run_id``, or None.

        In the process that ran the run, the real objects while they are cached (see
        ``object_cache_bytes``); else their stored JSON form (a value JSON cannot hold is
        ``{"__repr__": ..., "__type__": ...}``; a ``RuntimeWarning`` says when objects
        this process had were evicted).

        Raises:
          WorkspaceError: if the database (or the blob holding large outputs) cannot be
            read.
        """
        cached = self.outputs_cache.get(run_id)
        if cached is not None:
            return cached  # type: ignore[return-value]
        queued = self._queued(run_id)
        if queued is not None and queued.outputs is not None:
            return queued.outputs  # type: ignore[return-value]
        value, exact = await self._fetch_column(run_id, "outputs")
        if exact is False and run_id in self.outputs_cache.evicted_inexact:
            warnings.warn(
                f"the outputs of run {run_id!r} held Python objects JSON cannot store; "
                f"they were dropped from memory (more than "
                f"{self.outputs_cache.max_bytes / 2**20:.0f} MiB of outputs kept), so this "
                "is their stored JSON preview",
                RuntimeWarning,
                stacklevel=3,
            )
        return value

    async def get_inputs(self, run_id: str) -> dict[str, Any] | None:
        """The inputs stored with ``run_id`` (JSON form), or None (unknown run, or a run
        stored before inputs were kept).

        Raises:
          WorkspaceError: if the database (or a blob) cannot be read.
        """
        queued = self._queued(run_id)
        if queued is not None and queued.inputs is not None:
            return dict(queued.inputs)
        value, _ = await self._fetch_column(run_id, "inputs")
        return value

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
        by ``created_at``, paged in SQL through an index of ``runs`` (only the page's rows
        become records, whatever the offset).

        The journal is folded into ``runs`` first, in the same transaction as the query
        (so nothing committed is missed), by the writer thread; during a write fault the
        page is read from ``runs`` and the journal's latest rows instead, with this
        process's unsaved changes merged in.

        Raises:
          ValueError: for a bad status, limit or offset.
          WorkspaceError: if the database cannot be read.
        """
        check_paging(limit, offset)
        statuses = status_set(status)
        wanted = list(dict.fromkeys(str(t) for t in tags)) if tags else []

        def where(table: str) -> tuple[str, list[Any]]:
            clauses: list[str] = []
            params: list[Any] = []
            if graph_id is not None:
                clauses.append(f"{table}.graph_id = ?")
                params.append(graph_id)
            if statuses is not None:
                clauses.append(f"{table}.status IN ({', '.join('?' * len(statuses))})")
                params.extend(s.value for s in statuses)
            if session_id is not None:
                clauses.append(f"{table}.session_id = ?")
                params.append(session_id)
            for tag in wanted:
                clauses.append(
                    f"EXISTS (SELECT 1 FROM json_each({table}.tags) WHERE json_each.value = ?)"
                )
                params.append(tag)
            return " AND ".join(clauses) or "1", params

        runs_where, runs_params = where("runs")
        page_sql = (
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {runs_where} "
            "ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        try:
            await self.flush()

            def fold_and_page(conn: sqlite3.Connection) -> list[RunRecord]:
                fold_run_journal(conn)
                rows = conn.execute(page_sql, [*runs_params, limit, offset]).fetchall()
                return [row_to_record(row) for row in rows]

            records = await self.workspace.write(fold_and_page)
            with self._lock:
                self._journal_rows = 0
            return records
        except WorkspaceError:
            pass  # cannot write now: read what is on disk and merge what is not
        with self._lock:
            overlay = {rid: p.record for rid, p in self._inflight.items()}
            overlay.update((rid, p.record) for rid, p in self._queue.items())
        j_where, j_params = where("j")
        sql = (
            f"SELECT {RUN_COLUMNS} FROM runs WHERE {runs_where} AND NOT EXISTS "
            "(SELECT 1 FROM run_journal WHERE run_journal.run_id = runs.run_id) "
            f"UNION ALL SELECT {RUN_COLUMNS} FROM (SELECT *, row_number() OVER "
            "(PARTITION BY run_id ORDER BY rev DESC, seq DESC) AS latest FROM run_journal) "
            f"AS j WHERE latest = 1 AND {j_where} "
            "ORDER BY 4 DESC, 1 DESC LIMIT ? OFFSET ?"
        )
        page = [offset + limit + len(overlay), 0] if overlay else [limit, offset]

        def fetch(conn: sqlite3.Connection) -> list[RunRecord]:
            rows = conn.execute(sql, [*runs_params, *j_params, *page]).fetchall()
            return [row_to_record(row) for row in rows]

        records = await self.workspace.read(fetch)
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
        merged.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return merged[offset : offset + limit]

    # ------------------------------------------------------------------ pruning
    async def prune(
        self,
        *,
        older_than_s: float | None = None,
        keep_last: int | None = None,
        statuses: Iterable[RunStatus] | None = None,
        protect: Iterable[str] = (),
    ) -> dict[str, int]:
        """Delete finished runs (see ``RunManager.prune``): their rows, what hangs off them
        (every schema component's ``run_tables``, and its ``on_prune`` clean-up: artifact
        rows and their unreferenced files), and output/input blobs nothing references
        any more. ``protect``: run ids never deleted (this process's live runs).

        Returns ``{"runs", "rows", "files", "bytes"}``: runs deleted, rows deleted from the
        tables hanging off them, files deleted, bytes freed by those files.

        Raises:
          ValueError: for a status that is not terminal, or a negative bound.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        wanted = {RunStatus(s).value for s in (statuses or TERMINAL_STATUSES)}
        if not wanted <= {s.value for s in TERMINAL_STATUSES}:
            raise ValueError(
                f"prune removes finished runs only; statuses must be among "
                f"{sorted(s.value for s in TERMINAL_STATUSES)}, got {sorted(wanted)}"
            )
        if older_than_s is not None and not older_than_s >= 0:
            raise ValueError(f"older_than_s must be a number of seconds >= 0, got {older_than_s!r}")
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 0):
            raise ValueError(f"keep_last must be an int >= 0, got {keep_last!r}")
        cutoff = (
            None
            if older_than_s is None
            else iso_utc(
                datetime.fromtimestamp(time.time() - float(older_than_s), utc_now().tzinfo)
            )
        )
        protected = set(protect)
        components = self.workspace.components
        blob_root = self._blobs
        await self.flush()

        def delete(conn: sqlite3.Connection) -> tuple[dict[str, int], list[Any], list[str]]:
            fold_run_journal(conn)
            clauses = [f"status IN ({', '.join('?' * len(wanted))})"]
            params: list[Any] = sorted(wanted)
            if cutoff is not None:
                clauses.append("finished_at IS NOT NULL AND finished_at < ?")
                params.append(cutoff)
            sql = f"SELECT run_id, inputs_ref, outputs_ref FROM runs WHERE {' AND '.join(clauses)}"
            if keep_last is not None:
                sql += (
                    " AND run_id NOT IN (SELECT run_id FROM runs ORDER BY created_at DESC, "
                    "run_id DESC LIMIT ?)"
                )
                params.append(int(keep_last))
            victims = [r for r in conn.execute(sql, params) if r[0] not in protected]
            ids = [r[0] for r in victims]
            id_rows = [(i,) for i in ids]
            refs = {ref for r in victims for ref in (r[1], r[2]) if ref}
            conn.executemany("DELETE FROM runs WHERE run_id = ?", id_rows)
            rows = 0
            files: list[Any] = []
            for component in components:
                for table in component.run_tables:
                    before = conn.total_changes
                    conn.executemany(f'DELETE FROM "{table}" WHERE run_id = ?', id_rows)
                    rows += conn.total_changes - before
                if component.on_prune is not None and ids:
                    files.extend(component.on_prune(conn, ids, self.workspace))
            files.extend(
                blob_root.path(ref)
                for ref in refs
                if conn.execute(
                    "SELECT 1 FROM runs WHERE inputs_ref = ? OR outputs_ref = ? LIMIT 1",
                    (ref, ref),
                ).fetchone()
                is None
            )
            return {"runs": len(ids), "rows": rows}, files, ids

        counts, files, deleted = await self.workspace.write(delete)
        with self._lock:
            for run_id in deleted:
                self._recent.pop(run_id, None)
        for run_id in deleted:
            self.outputs_cache.discard(run_id)

        def unlink_all() -> int:
            freed = 0
            for path in files:
                with contextlib.suppress(FileNotFoundError):
                    size = os.lstat(path).st_size
                    os.unlink(path)
                    freed += size
            return freed

        freed = await self.workspace.run_in_io_thread(unlink_all)
        with self._lock:
            self._journal_rows = 0
        counts.update(files=len(files), bytes=freed)
        return counts

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
