"""The durable workspace: one folder with a SQLite database and content-addressed artifacts.

Layout of a workspace folder (default ``./.ag_workspace``, or ``$AG_WORKSPACE``)::

    ag.sqlite3            run records and outputs, kv, memory events, artifact index (WAL)
    artifacts/ab/cdef...  artifact blobs, named by the sha256 of their content

Every write goes through one writer thread per :class:`Workspace`, which commits what was
queued in batches ("group commit"): callers enqueue and return, and a batch is committed
when someone awaits it (``flush``/``write``) or ``commit_interval_s`` seconds after its first
write. Reads (and artifact file work) run on a small pool of threads, each with its own
read-only connection (WAL lets them read while a write is in progress). Nothing here blocks
an event loop: results come back to the awaiting loop through ``loop.call_soon_threadsafe``.
Opening a workspace is the exception: it is synchronous (a few milliseconds, once).

Values are stored as JSON, never pickled.

Each process that opens a workspace registers an *owner* row (pid, process start time,
boot id, host name, heartbeat). Run records carry their owner; when a workspace is opened,
runs left live (pending, running, waiting, cancellation_requested) by an owner whose
process is gone are marked failed ("interrupted: ..."). Two kernels may share a workspace:
runs of a live process are left alone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

log = logging.getLogger("ag_jupyter.workspace")

WORKSPACE_ENV = "AG_WORKSPACE"
DEFAULT_WORKSPACE_DIR = ".ag_workspace"
DB_FILENAME = "ag.sqlite3"
ARTIFACTS_DIRNAME = "artifacts"
SCHEMA_VERSION = 1

#: Seconds after the first queued write that a batch is committed even if nobody waits.
DEFAULT_COMMIT_INTERVAL_S = 0.05
#: Seconds a write waits for another process's lock before failing.
DEFAULT_BUSY_TIMEOUT_S = 10.0
#: Seconds between owner heartbeats.
HEARTBEAT_INTERVAL_S = 30.0
#: An owner on another host/container is considered gone after this many seconds of silence.
OWNER_STALE_AFTER_S = 120.0
#: After this many seconds without writes the writer thread sleeps until woken.
_IDLE_AFTER_S = 1.0
#: Commits between two WAL checkpoints while busy (each commit appends a few pages to the
#: WAL; a checkpoint copies them into the database file and syncs it, a few milliseconds).
_CHECKPOINT_EVERY = 8000
#: Queued writes above which a commit starts at once.
_MAX_QUEUED = 4096
#: After a failed commit, queued records are retried on the next flush or after this delay.
_RETRY_AFTER_S = 5.0

LIVE_STATUS_VALUES = ("pending", "running", "waiting", "cancellation_requested")
INTERRUPTED_ERROR = "interrupted: the process running it stopped before it finished"

# SQLite primary result codes that mean "the database cannot be written right now" (the
# whole batch fails) rather than "this one statement is wrong".
_ENVIRONMENT_ERRORS = {
    3,  # SQLITE_PERM
    5,  # SQLITE_BUSY
    6,  # SQLITE_LOCKED
    7,  # SQLITE_NOMEM
    8,  # SQLITE_READONLY
    10,  # SQLITE_IOERR
    11,  # SQLITE_CORRUPT
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    26,  # SQLITE_NOTADB
}

T = TypeVar("T")


class WorkspaceError(OSError):
    """The workspace folder or its database cannot be used (missing, not a folder,
    read-only, full, locked by another process for too long, or closed).

    The message names the folder and says what to do.
    """


class WorkspaceWriteError(WorkspaceError):
    """A write to the workspace failed (read-only folder, full disk, lock held too long).

    Run records written by this process stay in memory (readable through the store) and
    are retried on the next flush; kv/memory/artifact writes that failed are not retried.
    """


class WorkspaceClosedError(WorkspaceError):
    """The workspace was closed; open it again with :func:`open_workspace`."""


# ---------------------------------------------------------------------------- JSON helpers
class _NotJSON(Exception):
    def __init__(self, obj: Any) -> None:
        super().__init__(type(obj).__name__)
        self.obj = obj


def _reject(obj: Any) -> Any:
    raise _NotJSON(obj)


# Built once: json.dumps() with non-default options builds a new encoder on every call.
_strict_encode = json.JSONEncoder(allow_nan=False, default=_reject).encode


def dumps_json(value: Any, what: str = "values") -> str:
    """Serialise ``value`` as JSON text (tuples become arrays).

    Args:
      value: any JSON-compatible value (dict with str keys, list, tuple, str, int, float,
        bool, None, nested).
      what: how the caller names the value in errors (e.g. ``"kv values"``).

    Raises:
      TypeError: naming the offending type, e.g. ``kv values must be JSON-serialisable;
        got set``; also for NaN/infinity and for dict keys JSON cannot hold.
    """
    try:
        return _strict_encode(value)
    except _NotJSON as exc:
        raise TypeError(
            f"{what} must be JSON-serialisable; got {type(exc.obj).__name__} "
            "(store a dict/list/str/number/bool/None, or convert it first, e.g. list(...) "
            "or str(...))"
        ) from None
    except ValueError:
        raise TypeError(
            f"{what} must be JSON-serialisable; got a float NaN or infinity, which JSON "
            "cannot represent (store None or a string instead)"
        ) from None
    except TypeError as exc:  # a dict key of a type JSON cannot hold
        raise TypeError(f"{what} must be JSON-serialisable; {exc}") from None


def preview(value: Any, max_chars: int = 1000) -> dict[str, str]:
    """A JSON stand-in for a value JSON cannot hold: ``{"__repr__": ..., "__type__": ...}``.

    The repr is cut to ``max_chars`` characters.
    """
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the rest of the record
        text = f"<unrepresentable: {type(exc).__name__}>"
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    kind = type(value)
    return {"__repr__": text, "__type__": f"{kind.__module__}.{kind.__qualname__}"}


def _sanitise(value: Any) -> Any:
    """Replace what JSON cannot hold (NaN, sets, objects...) by strings/previews."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {str(k): _sanitise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sanitise(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return preview(value)


def dumps_lenient(value: Any) -> str:
    """JSON text for ``value``; parts JSON cannot hold become previews (never raises)."""
    if not value:
        return "{}" if isinstance(value, dict) else _strict_encode(value)
    try:
        return _strict_encode(value)
    except (_NotJSON, TypeError, ValueError):
        return json.dumps(_sanitise(value), allow_nan=False)


# ----------------------------------------------------------------------- process identity
def _read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks) of ``pid`` from /proc, or None if it has no entry.

    Raises:
      OSError: if /proc is not available (not Linux).
    """
    if not os.path.isdir("/proc/self"):
        raise OSError("no /proc")
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); the start time is field 22.
    return fields[0], fields[19]


def _pid_exists(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Identity:
    __slots__ = ("boot_id", "hostname", "pid", "proc_start", "token")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.hostname = socket.gethostname()
        self.boot_id = _read_boot_id()
        try:
            stat = _proc_stat(self.pid)
            self.proc_start = stat[1] if stat else ""
        except OSError:
            self.proc_start = ""
        self.token = f"{self.pid}-{uuid.uuid4().hex[:12]}"


def owner_alive(row: sqlite3.Row | dict[str, Any], me: _Identity) -> bool:
    """Whether the process that registered owner ``row`` is still running.

    Same host and boot: the pid must exist, not be a zombie, and have the recorded start
    time (so a reused pid does not count). Another boot of this host: gone. Another host or
    container (same kernel, since SQLite WAL needs shared memory): alive while its
    heartbeat is younger than ``OWNER_STALE_AFTER_S`` seconds.
    """
    if row["token"] == me.token:
        return True
    if me.boot_id and row["boot_id"] and row["boot_id"] != me.boot_id:
        return False
    if row["hostname"] != me.hostname:
        return time.time() - float(row["heartbeat_at"]) < OWNER_STALE_AFTER_S
    pid = int(row["pid"])
    try:
        stat = _proc_stat(pid)
    except OSError:
        return _pid_exists(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return not row["proc_start"] or stat[1] == row["proc_start"]


# ----------------------------------------------------------------------------- schema
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS owners (
        token TEXT PRIMARY KEY,
        pid INTEGER NOT NULL,
        hostname TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        proc_start TEXT NOT NULL,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    )""",
    # One row per run. Timestamps are ISO 8601 UTC text with microseconds (so they sort);
    # tags/meta/outputs are JSON text; owner is owners.token of the process running it.
    """CREATE TABLE IF NOT EXISTS runs (
        run_id TEXT PRIMARY KEY,
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
        meta TEXT NOT NULL DEFAULT '{}',
        owner TEXT,
        outputs TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at)",
    "CREATE INDEX IF NOT EXISTS runs_graph ON runs (graph_id, created_at)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at)",
    """CREATE INDEX IF NOT EXISTS runs_session ON runs (session_id, created_at)
        WHERE session_id IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS runs_live_owner ON runs (owner)
        WHERE status IN ('pending', 'running', 'waiting', 'cancellation_requested')""",
    # Redo log of run rows committed in a hurry (someone awaited them): appending here is
    # far cheaper than updating runs and its five indexes. Rows are folded into runs (in
    # seq order) shortly after, in batches, by the writer, and on open.
    """CREATE TABLE IF NOT EXISTS run_journal (
        seq INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL,
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
        tags TEXT NOT NULL,
        meta TEXT NOT NULL,
        owner TEXT,
        outputs TEXT
    )""",
    # scope: 'global', 'session:<id>' or 'run:<id>'; value is JSON text; times are epoch s.
    """CREATE TABLE IF NOT EXISTS kv (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (scope, key)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS memory (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scope TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '[]',
        run_id TEXT,
        session_id TEXT,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS memory_scope ON memory (scope, id)",
    "CREATE INDEX IF NOT EXISTS memory_scope_kind ON memory (scope, kind, id)",
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
)


RUN_COLUMNS = (
    "run_id, graph_id, status, created_at, started_at, finished_at, session_id, "
    "parent_run_id, origin, visibility, importance, agent_id, app_id, error, tags, meta"
)
_RUN_WRITE_COLUMNS = f"{RUN_COLUMNS}, owner, outputs"
_ON_CONFLICT_UPDATE = """
ON CONFLICT (run_id) DO UPDATE SET
    graph_id = excluded.graph_id, status = excluded.status,
    created_at = excluded.created_at, started_at = excluded.started_at,
    finished_at = excluded.finished_at, session_id = excluded.session_id,
    parent_run_id = excluded.parent_run_id, origin = excluded.origin,
    visibility = excluded.visibility, importance = excluded.importance,
    agent_id = excluded.agent_id, app_id = excluded.app_id, error = excluded.error,
    tags = excluded.tags, meta = excluded.meta, owner = excluded.owner,
    outputs = COALESCE(excluded.outputs, runs.outputs)
"""
#: Insert or replace one run row (outputs NULL keeps the stored outputs); 18 parameters.
UPSERT_RUN_SQL = (
    f"INSERT INTO runs ({_RUN_WRITE_COLUMNS}) VALUES ({', '.join('?' * 18)})"
    + _ON_CONFLICT_UPDATE
)
#: Append one run row to the journal; same 18 parameters.
JOURNAL_RUN_SQL = (
    f"INSERT INTO run_journal ({_RUN_WRITE_COLUMNS}) VALUES ({', '.join('?' * 18)})"
)
_FOLD_SQL = (
    f"INSERT INTO runs ({_RUN_WRITE_COLUMNS}) SELECT {_RUN_WRITE_COLUMNS} FROM run_journal "
    "WHERE seq <= ? ORDER BY seq" + _ON_CONFLICT_UPDATE
)


def fold_run_journal(conn: sqlite3.Connection) -> int:
    """Move every journaled run row into ``runs`` (in journal order) and empty the journal.

    Call inside a write transaction. Returns the number of journal rows folded.
    """
    last, count = conn.execute("SELECT max(seq), count(*) FROM run_journal").fetchone()
    if last is None:
        return 0
    conn.execute(_FOLD_SQL, (last,))
    conn.execute("DELETE FROM run_journal WHERE seq <= ?", (last,))
    return int(count)


# ------------------------------------------------------------------------- write batches
class BatchSource(Protocol):
    """Something that queues writes in the workspace's writer (the run store does).

    ``take_locked``/``committed_locked``/``failed_locked``/``maintenance_due_locked`` are
    called with the workspace lock held; ``write`` and ``maintain`` in the writer thread.
    ``write`` runs inside the batch's transaction; ``urgent`` is True when someone awaits
    the batch (a flush), so the source may write a cheaper form now and tidy up later in
    ``maintain`` (its own transaction, run when ``maintenance_due_locked`` says so).
    """

    def take_locked(self) -> Any: ...

    def write(self, conn: sqlite3.Connection, payload: Any, urgent: bool) -> None: ...

    def committed_locked(self, payload: Any, urgent: bool) -> None: ...

    def failed_locked(self, payload: Any) -> bool: ...

    def maintenance_due_locked(self) -> float | None: ...

    def maintain(self, conn: sqlite3.Connection) -> None: ...


class _Op:
    __slots__ = ("error", "fn", "future", "loop", "result")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future
        self.result: Any = None
        self.error: BaseException | None = None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_many(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        _settle(future, result, error)


def _is_environment_error(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # be safe: treat unknown database errors as batch-wide
            return isinstance(exc, sqlite3.OperationalError)
        return (code & 0xFF) in _ENVIRONMENT_ERRORS
    return isinstance(exc, OSError)


class Workspace:
    """An open workspace folder: its SQLite database, writer thread and artifact folder.

    Opening creates the folder (and ``artifacts/``) if needed, the database in WAL mode and
    its tables, registers this process as an owner, and marks runs that a dead process
    left live as failed (``"interrupted: ..."``). Opening is synchronous (a few
    milliseconds; longer only if another process holds the write lock).

    Args:
      path: the folder (str or path-like). None: ``$AG_WORKSPACE`` if set, else
        ``./.ag_workspace`` in the current working directory (resolved to an absolute path
        when opened).
      commit_interval_s: seconds after the first queued write that a batch is committed
        when nobody awaits it (default 0.05).
      busy_timeout_s: seconds a write waits for another process's lock (default 10).

    Raises:
      WorkspaceError: if the folder cannot be created or written (the message names it and
        says what to do), or the database is damaged or from a newer version.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.path = resolve_workspace_path(path)
        self.db_path = self.path / DB_FILENAME
        self.artifacts_path = self.path / ARTIFACTS_DIRNAME
        self.commit_interval_s = float(commit_interval_s)
        self.busy_timeout_s = float(busy_timeout_s)
        self._identity = _Identity()
        self.interrupted_on_open: list[str] = []
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.artifacts_path.mkdir(exist_ok=True)
        except OSError as exc:
            raise self._open_error(exc) from exc
        if not self.path.is_dir():
            raise self._open_error(NotADirectoryError("not a folder"))
        try:
            self._conn = self._connect()
            self._setup(self._conn)
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(Exception):
                self._conn.close()
            raise self._open_error(exc) from exc
        # _cond guards the queue state; the writer sleeps on _wake, a lock kept acquired
        # that a writer of the queue releases to wake it (cheaper than a Condition).
        self._cond = threading.Lock()
        self._wake = threading.Lock()
        self._wake.acquire()
        self._sleeping = False
        self._sources: list[BatchSource] = []
        self._ops: list[_Op] = []
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._seq = 0  # bumped by every queued write
        self._done_seq = 0  # every write up to this one is committed (or failed)
        self._first_pending_at: float | None = None
        self._maintain_at: float | None = None
        self._commits_since_checkpoint = 0
        self._flush_requested = False
        self._idle = False
        self._closing = False
        self._closed = False
        self._last_activity = time.monotonic()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._read_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ag-ws-io")
        self._thread = threading.Thread(
            target=self._writer_main, name=f"ag-ws-writer:{self.path.name}", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # ------------------------------------------------------------------ opening
    def _open_error(self, exc: BaseException) -> WorkspaceError:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in (5, 6):
            what = (
                f"another process held the database lock for more than "
                f"{self.busy_timeout_s:g} s: retry, or give each kernel its own folder"
            )
        else:
            what = "make the folder writable or free some disk space"
        return WorkspaceError(
            f"cannot use {str(self.path)!r} as the ag_jupyter workspace ({reason}); {what}, "
            f"or choose another folder with the {WORKSPACE_ENV} environment variable or "
            "open_workspace(path=...)."
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.db_path,
            timeout=self.busy_timeout_s,
            isolation_level=None,  # transactions are explicit (BEGIN IMMEDIATE / COMMIT)
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("workspace %s: journal mode is %s, not WAL", self.path, mode)
        # NORMAL is safe with WAL: a commit survives a process crash; only a power cut can
        # lose the last transactions (never corrupt the database).
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints off the hot path
        conn.execute("PRAGMA journal_size_limit=67108864")  # WAL file kept under 64 MiB
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise WorkspaceError(
                    f"the workspace {str(self.path)!r} was written by a newer ag_jupyter "
                    f"(schema {version} > {SCHEMA_VERSION}); upgrade ag_jupyter or use "
                    f"another folder ({WORKSPACE_ENV})"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.interrupted_on_open = self._recover(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def _recover(self, conn: sqlite3.Connection) -> list[str]:
        """Fold the run journal, drop dead owners, register this process, and mark runs
        the dead owners left live as interrupted."""
        fold_run_journal(conn)
        me = self._identity
        dead = [
            row["token"]
            for row in conn.execute("SELECT * FROM owners").fetchall()
            if not owner_alive(row, me)
        ]
        conn.executemany("DELETE FROM owners WHERE token = ?", [(t,) for t in dead])
        now = time.time()
        conn.execute(
            "INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?, ?, ?, ?)",
            (me.token, me.pid, me.hostname, me.boot_id, me.proc_start, now, now),
        )
        live = ", ".join(f"'{s}'" for s in LIVE_STATUS_VALUES)
        orphan = (
            f"status IN ({live}) AND (owner IS NULL OR owner NOT IN (SELECT token FROM owners))"
        )
        run_ids = [r[0] for r in conn.execute(f"SELECT run_id FROM runs WHERE {orphan}")]
        if run_ids:
            from .models import utc_now

            conn.execute(
                f"""UPDATE runs SET status = 'failed', error = ?, finished_at = ?,
                    meta = CASE WHEN json_valid(meta)
                        THEN json_set(meta, '$.interrupted', json('true')) ELSE meta END
                    WHERE {orphan}""",
                (INTERRUPTED_ERROR, iso_utc(utc_now())),
            )
            log.info("workspace %s: %d interrupted run(s) marked failed", self.path, len(run_ids))
        return run_ids

    # --------------------------------------------------------------- properties
    @property
    def owner_token(self) -> str:
        """This process's owner token (stored on the run records it writes)."""
        return self._identity.token

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closing

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"Workspace({str(self.path)!r}, {state})"

    def _check_open(self) -> None:
        if self._closing:
            raise WorkspaceClosedError(
                f"the workspace {str(self.path)!r} is closed; open it again with "
                "open_workspace(path)"
            )

    # ---------------------------------------------------------------- writing
    def add_source(self, source: BatchSource) -> None:
        """Register a :class:`BatchSource` whose queued writes join every batch."""
        with self._cond:
            self._sources.append(source)

    def remove_source(self, source: BatchSource) -> None:
        """Stop taking writes from ``source`` (after flushing it yourself)."""
        with self._cond:
            with contextlib.suppress(ValueError):
                self._sources.remove(source)

    @property
    def lock(self) -> threading.Lock:
        """The lock guarding queued writes (sources hold it while changing their queue)."""
        return self._cond

    def enqueued_locked(self) -> None:
        """Note a newly queued write (call with :attr:`lock` held)."""
        self._seq += 1
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
            if self._idle:
                self._wake_writer_locked()
        elif self._seq - self._done_seq > _MAX_QUEUED and not self._flush_requested:
            self._flush_requested = True
            self._wake_writer_locked()

    def _wake_writer_locked(self) -> None:
        if self._sleeping:
            self._sleeping = False
            # Only wakers (holding _cond) release _wake; after a timed-out sleep it may
            # already be released, and the writer's next sleep then returns at once.
            if self._wake.locked():
                self._wake.release()

    def _sleep_unlocked(self, seconds: float) -> None:
        """Sleep up to ``seconds`` or until woken; called with _cond held, returns with it
        held again."""
        self._sleeping = True
        self._cond.release()
        try:
            self._wake.acquire(timeout=max(seconds, 0.0))
        finally:
            self._cond.acquire()
            # Timed out: nobody released _wake. Woken: _sleeping was cleared by the waker.
            self._sleeping = False

    async def flush(self) -> None:
        """Return once every write queued before this call is committed.

        Raises:
          WorkspaceWriteError: if the commit failed (read-only folder, full disk, lock held
            by another process longer than ``busy_timeout_s``). Queued run records are kept
            in memory and retried on the next flush.
          WorkspaceClosedError: if the workspace was closed with writes still unsaved.
        """
        with self._cond:
            if self._done_seq >= self._seq:
                return
            if self._closed:
                raise WorkspaceClosedError(
                    f"the workspace {str(self.path)!r} is closed with unsaved writes"
                )
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((self._seq, loop, future))
            if not self._flush_requested:
                self._flush_requested = True
                self._wake_writer_locked()
        await future

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread inside the next batch's transaction and
        return its result once that batch is committed.

        ``fn`` runs under a savepoint: if it raises, its changes are undone and the error is
        raised here, without affecting the rest of the batch.

        Raises:
          WorkspaceWriteError: if the batch could not be committed (nothing of ``fn`` was
            saved).
          WorkspaceClosedError: if the workspace is closed.
          Whatever ``fn`` raises.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            self._check_open()
            self._ops.append(_Op(fn, loop, future))
            self.enqueued_locked()
            if not self._flush_requested:
                self._flush_requested = True
                self._wake_writer_locked()
        return await future

    def _write_error(self, exc: BaseException) -> WorkspaceWriteError:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code == 8 or isinstance(exc, PermissionError):  # SQLITE_READONLY
            why = "the folder or its database is read-only: make it writable"
        elif code == 13:  # SQLITE_FULL
            why = "the disk is full: free some space"
        elif code in (5, 6):  # SQLITE_BUSY / SQLITE_LOCKED
            why = (
                f"another process held the database lock for more than "
                f"{self.busy_timeout_s:g} s: retry, or give each kernel its own workspace"
            )
        else:
            why = "the folder may be read-only or the disk full: check both"
        return WorkspaceWriteError(
            f"could not write to the ag_jupyter workspace {str(self.path)!r} ({exc}); {why}, "
            f"or choose another folder with {WORKSPACE_ENV}. Run records of this process "
            "are kept in memory and saved by the next successful flush."
        )

    def _writer_main(self) -> None:
        try:
            self._writer_loop()
        except BaseException as exc:  # a bug: never leave a waiter hanging
            log.exception("workspace %s: the writer thread stopped", self.path)
            error = WorkspaceError(
                f"the writer thread of the workspace {str(self.path)!r} stopped ({exc!r}); "
                "nothing more can be saved in this process: reopen the workspace"
            )
            with self._cond:
                self._closing = self._closed = True
                waiters, self._waiters = self._waiters, []
                ops, self._ops = self._ops, []
            for _, loop, future in waiters:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, None, error)
            for op in ops:
                with contextlib.suppress(RuntimeError):
                    op.loop.call_soon_threadsafe(_settle, op.future, None, error)

    def _writer_loop(self) -> None:
        next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
        while True:
            beat = settle = False
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._closing or self._flush_requested:
                        break
                    deadline = self._maintain_at
                    if self._first_pending_at is not None:
                        due = self._first_pending_at + self.commit_interval_s
                        deadline = due if deadline is None else min(deadline, due)
                    if deadline is not None and now >= deadline:
                        break
                    if now >= next_beat:
                        beat = True
                        break
                    if deadline is not None:
                        wait = deadline - now
                    elif now - self._last_activity > _IDLE_AFTER_S:
                        if self._commits_since_checkpoint:
                            settle = True  # going idle: checkpoint first
                            break
                        self._idle = True
                        wait = next_beat - now
                    else:  # recently busy: poll, so queued writes need no wake-up
                        wait = self.commit_interval_s
                    self._sleep_unlocked(min(wait, next_beat - now))
                    self._idle = False
                closing = self._closing
                urgent = self._flush_requested and not closing
                self._flush_requested = False
                batch_seq = self._seq
                payloads = [
                    (src, payload)
                    for src in self._sources
                    if (payload := src.take_locked()) is not None
                ]
                ops, self._ops = self._ops, []
                self._first_pending_at = None
            if beat or closing:
                next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
            error = self._commit(payloads, ops, urgent=urgent, heartbeat=beat, closing=closing)
            self._after_commit(payloads, ops, batch_seq, error, urgent)
            # Tidy-up work runs after the waiters were released, overlapping their loop's
            # next steps instead of delaying them.
            self._maintain(force=closing or settle)
            if closing:
                with self._cond:
                    if (not self._ops and self._done_seq >= self._seq) or error is not None:
                        self._closed = True
                        break

    def _commit(
        self,
        payloads: list[tuple[BatchSource, Any]],
        ops: list[_Op],
        *,
        urgent: bool,
        heartbeat: bool,
        closing: bool,
    ) -> BaseException | None:
        if not (ops or heartbeat or closing or payloads):
            return None
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for source, payload in payloads:
                    source.write(conn, payload, urgent)
                for op in ops:
                    conn.execute("SAVEPOINT op")
                    try:
                        op.result = op.fn(conn)
                    except Exception as exc:
                        if _is_environment_error(exc):
                            raise
                        conn.execute("ROLLBACK TO op")
                        op.error = exc
                    conn.execute("RELEASE op")
                me = self._identity
                if closing:
                    conn.execute("DELETE FROM owners WHERE token = ?", (me.token,))
                elif heartbeat:
                    now = time.time()
                    conn.execute(
                        "INSERT INTO owners VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(token) "
                        "DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
                        (me.token, me.pid, me.hostname, me.boot_id, me.proc_start, now, now),
                    )
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            log.warning("workspace %s: commit failed: %s", self.path, exc)
            return exc
        self._commits_since_checkpoint += 1
        return None

    def _after_commit(
        self,
        payloads: list[tuple[BatchSource, Any]],
        ops: list[_Op],
        batch_seq: int,
        error: BaseException | None,
        urgent: bool,
    ) -> None:
        write_error = self._write_error(error) if error is not None else None
        with self._cond:
            requeued = False
            for source, payload in payloads:
                if error is None:
                    source.committed_locked(payload, urgent)
                elif source.failed_locked(payload):
                    requeued = True
            if requeued:  # retried on the next flush, or after a pause
                self._seq += 1
                self._first_pending_at = time.monotonic() + _RETRY_AFTER_S
            if batch_seq > self._done_seq:
                self._done_seq = batch_seq
            waiters = self._waiters
            if waiters:
                if waiters[-1][0] <= batch_seq:
                    ready, self._waiters = waiters, []
                else:
                    ready = [w for w in waiters if w[0] <= batch_seq]
                    self._waiters = [w for w in waiters if w[0] > batch_seq]
            else:
                ready = waiters
            self._last_activity = time.monotonic()
            if payloads:
                self._update_maintain_at_locked()
        if not ops and len(ready) == 1:  # the common case: one flush waiting
            _, loop, future = ready[0]
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, None, write_error)
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for _, loop, future in ready:
            by_loop.setdefault(loop, []).append((future, None, write_error))
        for op in ops:
            op_error = write_error if error is not None else op.error
            by_loop.setdefault(op.loop, []).append((op.future, op.result, op_error))
        for loop, items in by_loop.items():
            # The loop may be closed by now (a script ended): then nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_many, items)

    def _update_maintain_at_locked(self) -> None:
        due = [d for d in (s.maintenance_due_locked() for s in self._sources) if d is not None]
        self._maintain_at = min(due) if due else None

    def _maintain(self, *, force: bool) -> None:
        maintain_at = self._maintain_at
        if not force and (maintain_at is None or maintain_at > time.monotonic()):
            if self._commits_since_checkpoint < _CHECKPOINT_EVERY:
                return
            sources = []
        else:
            with self._cond:
                now = time.monotonic()
                sources = [
                    s
                    for s in self._sources
                    if (due := s.maintenance_due_locked()) is not None and (force or due <= now)
                ]
        for source in sources:
            try:
                source.maintain(self._conn)
            except Exception as exc:  # retried later; the data is safe where it is
                log.warning("workspace %s: maintenance failed: %s", self.path, exc)
        if sources:
            with self._cond:
                self._update_maintain_at_locked()
        # Checkpoints copy the WAL back into the database file (automatic checkpoints are
        # off on this connection so that they never delay a commit someone awaits).
        if self._commits_since_checkpoint >= _CHECKPOINT_EVERY or (
            self._commits_since_checkpoint and force
        ):
            self._commits_since_checkpoint = 0
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as exc:
                log.warning("workspace %s: checkpoint failed: %s", self.path, exc)

    # ----------------------------------------------------------------- reading
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.db_path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._reader())
        except sqlite3.Error as exc:
            raise WorkspaceError(
                f"could not read the ag_jupyter workspace {str(self.path)!r} ({exc}); check "
                "that the folder and its ag.sqlite3 file are still there and readable"
            ) from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection in a worker thread and return its result.

        It sees everything committed before it starts (not writes still queued).

        Raises:
          WorkspaceError: if the database cannot be read.
          WorkspaceClosedError: if the workspace is closed.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._read_call, fn)

    def run_in_io_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run blocking file work (artifact blobs) on the workspace's reader threads."""
        self._check_open()
        return asyncio.get_running_loop().run_in_executor(self._read_pool, fn, *args)

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Commit what is queued, stop the writer thread, remove this process's owner row
        and close the database connections. Blocks until done (use :meth:`aclose` from
        async code). Idempotent; also run at interpreter exit.

        Runs this process left live stay as they are on disk and are marked interrupted
        by the next process that opens the workspace.
        """
        with self._cond:
            if self._closing:
                already = True
            else:
                already = False
                self._closing = True
                self._wake_writer_locked()
        if already:
            self._thread.join()
            return
        atexit.unregister(self.close)
        self._thread.join()
        self._read_pool.shutdown(wait=True)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in [*readers, self._conn]:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        with self._cond:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        error = WorkspaceClosedError(f"the workspace {str(self.path)!r} was closed")
        for _, loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, None, error)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)


# ------------------------------------------------------------------------- helpers
def iso_utc(value: datetime) -> str:
    """ISO 8601 text of a datetime in UTC with microseconds (sorts as time does)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")


def resolve_workspace_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The absolute workspace folder: ``path``, else ``$AG_WORKSPACE``, else
    ``./.ag_workspace`` (in the current working directory). ``~`` is expanded."""
    if path is None:
        path = os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE_DIR
    return Path(path).expanduser().absolute()


def open_workspace(
    path: str | os.PathLike[str] | None = None, **options: Any
) -> Workspace:
    """Open (creating if needed) the workspace at ``path`` (see :class:`Workspace`).

    Each call opens a new :class:`Workspace`; close it with ``close()``/``aclose()``.

    Raises:
      WorkspaceError: if the folder cannot be used (the message names it).
    """
    return Workspace(path, **options)


_default_lock = threading.Lock()
_default_workspace: Workspace | None = None
_default_store: Any = None


def default_workspace() -> Workspace:
    """The process-wide workspace at ``$AG_WORKSPACE`` or ``./.ag_workspace``.

    Opened on first use and shared by every later caller (managers of later event loops
    too); reopened if it was closed. Closed at interpreter exit.

    Raises:
      WorkspaceError: if the folder cannot be used.
    """
    global _default_workspace, _default_store
    with _default_lock:
        if _default_workspace is None or _default_workspace.closed:
            _default_workspace = Workspace()
            _default_store = None
        return _default_workspace


def install_workspace_services(hub: Any, workspace: Workspace) -> None:
    """Install the kv, memory and artifacts services of ``workspace`` as embedded defaults
    on ``hub`` (a :class:`~ag_jupyter.runtime.services.ServiceHub`)."""
    from .services.artifacts import ArtifactService
    from .services.kv import KVService
    from .services.memory import MemoryService

    hub.set_default("kv", KVService(workspace))
    hub.set_default("memory", MemoryService(workspace))
    hub.set_default("artifacts", ArtifactService(workspace))


def workspace_runtime(
    path: str | os.PathLike[str] | None = None, *, workspace: Workspace | None = None
) -> dict[str, Any]:
    """What a RunManager needs to run on a workspace: ``RunManager(**workspace_runtime())``.

    Returns ``{"store": SqliteRunStore, "services": ServiceHub}``, the hub having the
    workspace's ``kv``, ``memory`` and ``artifacts`` services installed as defaults.

    Args:
      path: open a new workspace there (None: ``$AG_WORKSPACE`` or ``./.ag_workspace``);
        the store owns it, so closing the manager (``manager.close()``) closes it.
      workspace: use this open workspace instead (the caller keeps owning it).

    Raises:
      WorkspaceError: if the folder cannot be used.
      TypeError: if both ``path`` and ``workspace`` are given.
    """
    from .services import ServiceHub
    from .sqlite_store import SqliteRunStore

    if path is not None and workspace is not None:
        raise TypeError("pass either path or workspace to workspace_runtime(), not both")
    owns = workspace is None
    ws = workspace if workspace is not None else open_workspace(path)
    store = SqliteRunStore(ws, owns_workspace=owns)
    hub = ServiceHub()
    install_workspace_services(hub, ws)
    return {"store": store, "services": hub}


def default_runtime() -> dict[str, Any]:
    """Like :func:`workspace_runtime` on the process-wide :func:`default_workspace`.

    Every call returns the same shared store (its cache covers runs of earlier event loops
    too) and a new service hub. Closing a manager built on it only flushes the store.

    Raises:
      WorkspaceError: if the folder cannot be used.
    """
    global _default_store
    from .services import ServiceHub
    from .sqlite_store import SqliteRunStore

    ws = default_workspace()
    with _default_lock:
        if _default_store is None or _default_store.workspace is not ws:
            _default_store = SqliteRunStore(ws, owns_workspace=False)
        store = _default_store
    hub = ServiceHub()
    install_workspace_services(hub, ws)
    return {"store": store, "services": hub}
