"""The write engine of a workspace: one write connection, group commit, and commits on the
caller's thread when that is the faster way.

Writers queue their changes in *batch sources* (the run store queues run records) or as
*ops* (a function run in the next transaction: kv, memory and artifact writes), then await
:meth:`WriteEngine.flush` / :meth:`WriteEngine.write`. A batch is committed

- **inline**, on the awaiting event-loop thread, when it is small and the connection is
  free: a commit of a few rows costs ~10-25 µs here (WAL, ``synchronous=NORMAL``), several
  times less than waking a thread and being woken back (~80-110 µs on these VMs). The
  connection's busy timeout is 0, so an inline commit never waits for another process's
  lock: it hands the batch to the writer thread instead, and never stalls the loop;
- by the **writer thread** otherwise: large payloads (encoded outside any lock), ops,
  batches nobody awaits (``commit_interval_s`` after their first change), retries after a
  failure, and every slow job: journal folds (source maintenance), WAL checkpoints and
  owner heartbeats.

A batch whose commit fails for a reason of the environment (full disk, read-only or
deleted folder, I/O error, lock held too long) is kept by its sources and retried; the
engine records the fault (:attr:`fault`, with a serial number so callers can warn once
per fault) until a commit succeeds again. A single bad row never fails a batch: sources
handle that in ``write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ..errors import WorkspaceClosedError, WorkspaceError, WorkspaceWriteError

log = logging.getLogger("ag_jupyter.workspace")

T = TypeVar("T")

#: Seconds after the first queued write that a batch is committed even if nobody waits.
DEFAULT_COMMIT_INTERVAL_S = 0.05
#: Seconds a writer-thread commit waits for another process's lock before failing.
DEFAULT_BUSY_TIMEOUT_S = 10.0
#: After this many seconds without writes the writer thread sleeps until woken.
_IDLE_AFTER_S = 1.0
#: Queued writes above which a commit starts at once.
_MAX_QUEUED = 4096
#: After a failed commit, queued records are retried on the next flush or after this delay.
RETRY_AFTER_S = 2.0
#: The WAL is checkpointed in the writer thread, on a connection of its own and without
#: holding up commits (PASSIVE), once it is this big...
CHECKPOINT_AT_BYTES = 8 << 20
#: ...and restarted from empty (TRUNCATE: commits of this process wait meanwhile, handed
#: to the writer, never stalling the loop) once it is this big, so it stays under 64 MiB
#: whatever the load: a PASSIVE checkpoint cannot reset a WAL that is written to all along.
TRUNCATE_AT_BYTES = 32 << 20
#: The WAL's size is checked every this many commits (a stat costs ~1 µs).
_WAL_CHECK_EVERY = 64

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
_BUSY_CODES = {5, 6}


def is_environment_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be written now (rather than "this one
    statement is wrong"): SQLite's I/O, full, read-only, busy, corrupt... codes, or an
    ``OSError``."""
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None:  # be safe: treat unknown database errors as batch-wide
            return isinstance(exc, sqlite3.OperationalError)
        return (code & 0xFF) in _ENVIRONMENT_ERRORS
    return isinstance(exc, OSError)


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None) or 0
    return (code & 0xFF) in _BUSY_CODES


class FolderGoneError(OSError):
    """Raised by a pre-commit check when the workspace's database file was deleted or
    replaced under this process; the engine hands the batch to the writer thread, which
    asks the workspace to recreate the database (``recover``) and commits there."""


class BatchSource(Protocol):
    """Something that queues writes in the engine (the run store and the log store do).

    Methods named ``*_locked`` are called with :attr:`WriteEngine.lock` held; ``prepare``
    in the writer thread with no lock held; ``write`` and ``maintain`` with the connection
    held (in the writer thread, or inline on a loop thread for ``write``).
    """

    def take_locked(self) -> Any:
        """Hand over the queued changes (a payload), or None if there are none."""

    def inline_ok_locked(self) -> bool:
        """Whether every queued change is cheap to write on the caller's thread."""

    def prepare(self, payload: Any) -> None:
        """Do the slow work of ``payload`` before its transaction (encode large values,
        write blob files). Writer thread only."""

    def single_statement(self, payload: Any) -> tuple[str, tuple[Any, ...]] | None:
        """``(sql, params)`` when ``payload`` is one row an urgent write could store with a
        single statement (committed as SQLite's implicit transaction: the cheapest commit
        there is), else None."""

    def write(self, conn: sqlite3.Connection, payload: Any, urgent: bool, careful: bool) -> None:
        """Write ``payload`` inside the batch's transaction (``urgent``: someone waits).
        ``careful``: a first attempt raised; write row by row so that one bad row never
        fails the batch (it is stored with a marker of what was dropped)."""

    def committed_locked(self, payload: Any, urgent: bool) -> bool:
        """``payload`` is committed. Return True when that makes maintenance due sooner
        than before (the writer is then woken to look)."""

    def failed_locked(self, payload: Any) -> bool:
        """``payload``'s commit failed: queue it again; return whether anything was."""

    def maintenance_due_locked(self) -> float | None:
        """When (``time.monotonic()``) :meth:`maintain` should run, or None."""

    def maintain(self, conn: sqlite3.Connection) -> None:
        """Tidy up in a transaction of its own (writer thread)."""


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


_BUSY = object()  # an inline commit found the database locked: hand the batch over


class WriteEngine:
    """Commits what batch sources and ops queue, on one write connection.

    Args:
      conn: the write connection (``isolation_level=None``, ``check_same_thread=False``);
        its busy timeout is set to 0 here (the writer thread waits for locks itself).
      label: the workspace folder, for messages.
      wal_path: the WAL file, whose size decides when to checkpoint.
      describe_error: turns a commit's exception into the ``WorkspaceWriteError`` callers
        see (naming the folder and what to do).
      check_folder: called before every commit; raises :class:`FolderGoneError` when the
        database file is gone or replaced.
      recover: ``recover(exc) -> new connection`` in the writer thread after
        ``FolderGoneError`` (the workspace recreates its folder and database).
      connect: opens another connection to the database (for PASSIVE checkpoints that
        run beside commits); without it every checkpoint holds the write connection.
      heartbeat: ``heartbeat(conn)`` written in a batch every ``heartbeat_s`` seconds.
      on_close: ``on_close(conn)`` written in the last batch.
      commit_interval_s: seconds after the first queued write that a batch nobody awaits
        is committed.
      busy_timeout_s: seconds a writer-thread commit waits for another process's lock.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        label: str,
        wal_path: str,
        describe_error: Callable[[BaseException], WorkspaceWriteError],
        check_folder: Callable[[], None] | None = None,
        recover: Callable[[BaseException], sqlite3.Connection] | None = None,
        connect: Callable[[], sqlite3.Connection] | None = None,
        heartbeat: Callable[[sqlite3.Connection], None] | None = None,
        heartbeat_s: float = 30.0,
        on_close: Callable[[sqlite3.Connection], None] | None = None,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        conn.execute("PRAGMA busy_timeout=0")
        self._conn = conn
        self.label = label
        self._wal_path = wal_path
        self._describe_error = describe_error
        self._check_folder = check_folder
        self._recover = recover
        self._connect = connect
        self._checkpointer: sqlite3.Connection | None = None
        self._heartbeat = heartbeat
        self._heartbeat_s = float(heartbeat_s)
        self._on_close = on_close
        self.commit_interval_s = float(commit_interval_s)
        self.busy_timeout_s = float(busy_timeout_s)
        # `lock` guards the queue state below; `_conn_lock` the connection. The writer
        # sleeps on `_wake`, a lock kept acquired that a waker releases (cheaper than a
        # Condition).
        self.lock = threading.Lock()
        self._conn_lock = threading.Lock()
        self._wake = threading.Lock()
        self._wake.acquire()
        self._sleeping = False
        self._sources: list[BatchSource] = []
        self._dirty: dict[BatchSource, None] = {}  # sources with queued changes, in order
        self._ops: list[_Op] = []
        self._waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._seq = 0  # bumped by every queued write
        self._done_seq = 0  # every write up to this one is committed (or failed)
        self._first_pending_at: float | None = None
        self._maintain_at: float | None = None
        self._commits = 0
        self._checkpoint_due: str | None = None  # "PASSIVE" or "TRUNCATE"
        self._wal_checkpointed = 0  # WAL size at the last checkpoint (bytes)
        self._flush_requested = False
        self._idle = False
        self._closing = False
        self._closed = False
        self._last_activity = time.monotonic()
        self.fault: WorkspaceWriteError | None = None
        self.fault_serial = 0
        self.peak_wal_bytes = 0
        self.inline_commits = 0
        self.thread_commits = 0
        self._thread = threading.Thread(
            target=self._main, name=f"ag-ws-writer:{label}", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ queueing
    @property
    def closing(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closing

    def add_source(self, source: BatchSource) -> None:
        """Register a :class:`BatchSource` whose queued writes join every batch."""
        with self.lock:
            self._sources.append(source)

    def remove_source(self, source: BatchSource) -> None:
        """Stop taking writes from ``source`` (after flushing it yourself)."""
        with self.lock, contextlib.suppress(ValueError):
            self._sources.remove(source)

    def enqueued_locked(self, source: BatchSource | None = None) -> None:
        """Note a newly queued write of ``source`` (call with :attr:`lock` held); inline
        commits look only at the sources that queued something."""
        if source is not None:
            self._dirty[source] = None
        self._seq += 1
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
            if self._idle:
                self._wake_locked()
        elif self._seq - self._done_seq > _MAX_QUEUED and not self._flush_requested:
            self._flush_requested = True
            self._wake_locked()

    def maintenance_changed_locked(self) -> None:
        """A source's maintenance may be due sooner (call with :attr:`lock` held): the
        writer recomputes when to wake."""
        self._update_maintain_at_locked()
        self._wake_locked()

    def _wake_locked(self) -> None:
        if self._sleeping:
            self._sleeping = False
            # Only wakers (holding `lock`) release _wake; after a timed-out sleep it may
            # already be released, and the writer's next sleep then returns at once.
            if self._wake.locked():
                self._wake.release()

    def _sleep_unlocked(self, seconds: float) -> None:
        """Sleep up to ``seconds`` or until woken; called with `lock` held, returns with it
        held again."""
        self._sleeping = True
        self.lock.release()
        try:
            self._wake.acquire(timeout=max(seconds, 0.0))
        finally:
            self.lock.acquire()
            self._sleeping = False

    # ------------------------------------------------------------------ flushing
    async def flush(self) -> None:
        """Return once every write queued before this call is committed.

        Small batches are committed right here on the calling thread when the connection
        is free (see the module docstring); others are handed to the writer thread.

        Raises:
          WorkspaceWriteError: if the commit failed (read-only or deleted folder, full
            disk, lock held by another process longer than ``busy_timeout_s``). Queued
            run records are kept and retried until they land.
          WorkspaceClosedError: if the workspace was closed with writes still unsaved.
        """
        payloads = None
        with self.lock:
            if self._done_seq >= self._seq:
                return
            if self._closed:
                raise WorkspaceClosedError(
                    f"the workspace {self.label!r} is closed with unsaved writes"
                )
            # Inline: take the batch with the connection held, so no other committer can
            # slip an older change in between (a non-blocking acquire: no lock-order wait).
            dirty = self._dirty
            if (
                not self._ops
                and not self._closing
                and self._inline_ok_locked(dirty)
                and self._conn_lock.acquire(blocking=False)
            ):
                batch_seq = self._seq
                payloads = [(s, p) for s in dirty if (p := s.take_locked()) is not None]
                self._dirty = {}
                self._first_pending_at = None
        if payloads is not None:
            try:
                outcome = self._commit_inline(payloads, batch_seq)
            finally:
                self._conn_lock.release()
            if outcome is None:
                return
            if isinstance(outcome, WorkspaceWriteError):
                raise outcome
        with self.lock:
            if self._done_seq >= self._seq:
                return
            if self._closed:
                raise WorkspaceClosedError(
                    f"the workspace {self.label!r} is closed with unsaved writes"
                )
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((self._seq, loop, future))
            if not self._flush_requested:
                self._flush_requested = True
                self._wake_locked()
        await future

    @staticmethod
    def _inline_ok_locked(sources: Any) -> bool:
        for source in sources:
            if not source.inline_ok_locked():
                return False
        return True

    def _commit_inline(self, payloads: list[tuple[BatchSource, Any]], batch_seq: int) -> Any:
        """Commit a batch taken by :meth:`flush` on this thread (connection held).

        Returns None once committed, a ``WorkspaceWriteError`` if the commit failed, or
        ``_BUSY`` when the batch must go to the writer thread instead. The common case (a
        few rows, nothing wrong) takes the short path below; anything unusual is retried
        by the general :meth:`_commit`.
        """
        conn = self._conn
        try:
            if self._check_folder is not None:
                self._check_folder()
            statement = (
                payloads[0][0].single_statement(payloads[0][1]) if len(payloads) == 1 else None
            )
            if statement is not None:  # one row: SQLite's own implicit transaction
                conn.execute(*statement)
            else:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for source, payload in payloads:
                        source.write(conn, payload, True, False)
                    conn.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise
        except Exception:
            # Busy, a folder gone, a refused row, a full disk...: the general path sorts
            # it out (it starts a new transaction; this one was rolled back).
            error = self._commit(payloads, [], urgent=True, inline=True)
        else:
            error = None
        if error is _BUSY:
            with self.lock:
                for source, payload in payloads:
                    if source.failed_locked(payload):
                        self._dirty[source] = None
                if self._first_pending_at is None:
                    self._first_pending_at = time.monotonic()
            return _BUSY
        self.inline_commits += 1
        if error is not None:
            self._after_commit(payloads, [], batch_seq, error, urgent=True)
            return self._describe_error(error)
        self._commits += 1
        if self._commits % _WAL_CHECK_EVERY == 0:
            self._note_wal_size()
        ready = None
        with self.lock:
            sooner = False
            for source, payload in payloads:
                if source.committed_locked(payload, True):
                    sooner = True
            self.fault = None
            if batch_seq > self._done_seq:
                self._done_seq = batch_seq
            waiters = self._waiters
            if waiters and waiters[0][0] <= batch_seq:
                ready = [w for w in waiters if w[0] <= batch_seq]
                self._waiters = [w for w in waiters if w[0] > batch_seq]
            self._last_activity = time.monotonic()
            if sooner:  # e.g. the journal reached its fold bound: wake the writer
                self._update_maintain_at_locked()
                self._wake_locked()
        if ready:
            for _, loop, future in ready:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, None, None)
        return None

    def execute_now(self, sql: str, params: tuple[Any, ...]) -> bool:
        """Commit one statement on the calling thread, now, as SQLite's implicit
        transaction: the cheapest durable write there is (a run's record, ~10-20 µs).

        Returns False, having written nothing, when that is not possible at once (the
        engine is closing or in a write fault, the connection is in use, the database
        file is gone, another process holds the lock, or SQLite refused the statement):
        the caller then queues the change and flushes as usual, which handles each case.
        """
        if self._closing or self.fault is not None:
            return False
        if not self._conn_lock.acquire(blocking=False):
            return False
        try:
            if self._check_folder is not None:
                self._check_folder()
            self._conn.execute(sql, params)
        except Exception:
            return False
        finally:
            self._conn_lock.release()
        self.inline_commits += 1
        self._commits += 1
        if self._commits % _WAL_CHECK_EVERY == 0:
            self._note_wal_size()
        self._last_activity = time.monotonic()
        return True

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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self.lock:
            if self._closing:
                raise WorkspaceClosedError(
                    f"the workspace {self.label!r} is closed; open it again with "
                    "open_workspace(path)"
                )
            self._ops.append(_Op(fn, loop, future))
            self.enqueued_locked()
            if not self._flush_requested:
                self._flush_requested = True
                self._wake_locked()
        return await future

    # ------------------------------------------------------------------ committing
    def _begin(self, conn: sqlite3.Connection, inline: bool) -> None:
        """BEGIN IMMEDIATE; inline: never wait for a lock (raise); in the writer thread:
        retry with a short back-off for up to ``busy_timeout_s`` seconds."""
        deadline = None
        pause = 0.0005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or inline:
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.busy_timeout_s
                if now >= deadline:
                    raise
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, 0.05)

    def _commit(
        self,
        payloads: list[tuple[BatchSource, Any]],
        ops: list[_Op],
        *,
        urgent: bool,
        inline: bool = False,
        heartbeat: bool = False,
        closing: bool = False,
    ) -> Any:
        """Write and commit one batch; the connection lock is held. Returns None, the
        exception that failed the batch, or ``_BUSY`` (inline only)."""
        if not (ops or heartbeat or closing or payloads):
            return None
        try:
            if self._check_folder is not None:
                self._check_folder()
        except FolderGoneError as exc:
            if inline:
                return _BUSY
            try:
                self._conn = self._recover(exc) if self._recover is not None else self._conn
                self._drop_checkpointer()  # it points at the old file
            except Exception as recover_exc:
                log.warning(
                    "workspace %s: could not recreate the database: %s", self.label, recover_exc
                )
                return recover_exc
        conn = self._conn
        try:
            self._begin(conn, inline)
            try:
                try:
                    for source, payload in payloads:
                        source.write(conn, payload, urgent, False)
                except Exception as exc:
                    if is_environment_error(exc):
                        raise
                    # A row was refused: redo the batch carefully (row by row, under
                    # savepoints), so the fast path never pays for them.
                    conn.execute("ROLLBACK")
                    self._begin(conn, inline)
                    for source, payload in payloads:
                        source.write(conn, payload, urgent, True)
                for op in ops:
                    conn.execute("SAVEPOINT op")
                    try:
                        op.result = op.fn(conn)
                    except Exception as exc:
                        if is_environment_error(exc):
                            raise
                        conn.execute("ROLLBACK TO op")
                        op.error = exc
                    conn.execute("RELEASE op")
                if closing and self._on_close is not None:
                    self._on_close(conn)
                elif heartbeat and self._heartbeat is not None:
                    self._heartbeat(conn)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            if inline and _is_busy(exc):
                return _BUSY
            log.warning("workspace %s: commit failed: %s", self.label, exc)
            return exc
        self._commits += 1
        if self._commits % _WAL_CHECK_EVERY == 0:
            self._note_wal_size()
        return None

    def _note_wal_size(self) -> None:
        try:
            size = os.stat(self._wal_path).st_size
        except OSError:
            return
        if size > self.peak_wal_bytes:
            self.peak_wal_bytes = size
        if size >= TRUNCATE_AT_BYTES:
            mode: str | None = "TRUNCATE"
        elif size - self._wal_checkpointed >= CHECKPOINT_AT_BYTES:
            mode = "PASSIVE"  # another 8 MiB since the last checkpoint
        else:
            mode = None
        if mode is not None and self._checkpoint_due != mode:
            with self.lock:
                if self._checkpoint_due != "TRUNCATE":
                    self._checkpoint_due = mode
                self._wake_locked()

    def _after_commit(
        self,
        payloads: list[tuple[BatchSource, Any]],
        ops: list[_Op],
        batch_seq: int,
        error: BaseException | None,
        urgent: bool,
    ) -> None:
        write_error = self._describe_error(error) if error is not None else None
        with self.lock:
            requeued = False
            for source, payload in payloads:
                if error is None:
                    source.committed_locked(payload, urgent)
                elif source.failed_locked(payload):
                    requeued = True
                    self._dirty[source] = None
            if error is None:
                self.fault = None
            elif self.fault is None:
                self.fault = write_error
                self.fault_serial += 1
            if requeued:  # retried on the next flush, or after a pause
                self._seq += 1
                self._first_pending_at = time.monotonic() + RETRY_AFTER_S
            if batch_seq > self._done_seq:
                self._done_seq = batch_seq
            waiters = self._waiters
            if waiters and waiters[0][0] <= batch_seq:
                if waiters[-1][0] <= batch_seq:
                    ready, self._waiters = waiters, []
                else:
                    ready = [w for w in waiters if w[0] <= batch_seq]
                    self._waiters = [w for w in waiters if w[0] > batch_seq]
            else:
                ready = []
            self._last_activity = time.monotonic()
            if payloads:
                due = self._maintain_at
                self._update_maintain_at_locked()
                if self._maintain_at is not None and (due is None or self._maintain_at < due):
                    self._wake_locked()  # the writer may sleep past the new due time
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

    # ---------------------------------------------------------------- writer thread
    def _main(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a bug: never leave a waiter hanging
            log.exception("workspace %s: the writer thread stopped", self.label)
            error = WorkspaceError(
                f"the writer thread of the workspace {self.label!r} stopped ({exc!r}); "
                "nothing more can be saved in this process: reopen the workspace"
            )
            with self.lock:
                self._closing = self._closed = True
                waiters, self._waiters = self._waiters, []
                ops, self._ops = self._ops, []
            for _, loop, future in waiters:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, None, error)
            for op in ops:
                with contextlib.suppress(RuntimeError):
                    op.loop.call_soon_threadsafe(_settle, op.future, None, error)

    def _wait_for_work_locked(self, next_beat: float) -> tuple[bool, bool]:
        """Sleep until there is something to do; returns (heartbeat due, settle)."""
        while True:
            now = time.monotonic()
            if self._closing or self._flush_requested or self._checkpoint_due:
                return False, False
            deadline = self._maintain_at
            if self._first_pending_at is not None:
                due = self._first_pending_at + self.commit_interval_s
                deadline = due if deadline is None else min(deadline, due)
            if deadline is not None and now >= deadline:
                return False, False
            if now >= next_beat:
                return True, False
            if deadline is not None:
                wait = deadline - now
            elif now - self._last_activity > _IDLE_AFTER_S:
                if self._commits:
                    return False, True  # going idle: fold and checkpoint first
                self._idle = True
                wait = next_beat - now
            else:  # recently busy: poll, so queued writes need no wake-up
                wait = self.commit_interval_s
            self._sleep_unlocked(min(wait, next_beat - now))
            self._idle = False

    def _loop(self) -> None:
        next_beat = time.monotonic() + self._heartbeat_s
        while True:
            with self.lock:
                beat, settle = self._wait_for_work_locked(next_beat)
                closing = self._closing
                urgent = self._flush_requested and not closing
                self._flush_requested = False
                batch_seq = self._seq
                payloads = [(s, p) for s in self._sources if (p := s.take_locked()) is not None]
                self._dirty = {}
                ops, self._ops = self._ops, []
                self._first_pending_at = None
            if beat or closing:
                next_beat = time.monotonic() + self._heartbeat_s
            for source, payload in payloads:
                try:
                    source.prepare(payload)  # slow encoding, outside every lock
                except Exception:  # a bug in a source: write what it has
                    log.exception("workspace %s: preparing a batch failed", self.label)
            with self._conn_lock:
                error = self._commit(payloads, ops, urgent=urgent, heartbeat=beat, closing=closing)
                if error is _BUSY:  # not returned outside inline mode; kept for safety
                    error = sqlite3.OperationalError("database is locked")
            if payloads or ops:
                self.thread_commits += 1
            self._after_commit(payloads, ops, batch_seq, error, urgent)
            # Tidy-up work runs after the waiters were released, overlapping their loop's
            # next steps instead of delaying them.
            self._maintain(force=closing or settle)
            if closing:
                with self.lock:
                    if (not self._ops and self._done_seq >= self._seq) or error is not None:
                        self._closed = True
                        break

    def _maintain(self, *, force: bool) -> None:
        maintain_at = self._maintain_at
        if force or (maintain_at is not None and maintain_at <= time.monotonic()):
            with self.lock:
                now = time.monotonic()
                sources = [
                    s
                    for s in self._sources
                    if (due := s.maintenance_due_locked()) is not None and (force or due <= now)
                ]
            for source in sources:
                try:
                    with self._conn_lock:
                        source.maintain(self._conn)
                except Exception as exc:  # retried later; the data is safe where it is
                    log.warning("workspace %s: maintenance failed: %s", self.label, exc)
            with self.lock:
                self._update_maintain_at_locked()
        if force and self._commits:
            self.checkpoint("TRUNCATE")  # going idle or closing: nothing else writes
        elif self._checkpoint_due is not None:
            self.checkpoint(self._checkpoint_due)

    def checkpoint(self, mode: str = "TRUNCATE") -> tuple[int, int, int] | None:
        """Copy the WAL back into the database file (writer thread).

        ``"PASSIVE"``: on a connection of its own, beside commits (nothing waits); it
        cannot restart a WAL that keeps being written. ``"TRUNCATE"``: with the write
        connection held, so no commit of this process appends meanwhile and the WAL is
        emptied; commits attempted meanwhile go to the writer thread (never a loop stall).
        Returns SQLite's ``(busy, log frames, checkpointed frames)`` or None.
        """
        self._note_wal_size_peak()
        with contextlib.suppress(OSError):
            self._wal_checkpointed = os.stat(self._wal_path).st_size
        try:
            if mode == "PASSIVE" and self._connect is not None:
                if self._checkpointer is None:
                    self._checkpointer = self._connect()
                    self._checkpointer.execute("PRAGMA busy_timeout=0")
                row = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            else:
                with self._conn_lock:
                    row = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                    self._commits = 0
                    self._wal_checkpointed = 0
        except sqlite3.Error as exc:
            log.warning("workspace %s: checkpoint failed: %s", self.label, exc)
            return None
        finally:
            with self.lock:
                if self._checkpoint_due == mode or mode == "TRUNCATE":
                    self._checkpoint_due = None
        return tuple(row) if row else None  # type: ignore[return-value]

    def _drop_checkpointer(self) -> None:
        if self._checkpointer is not None:
            with contextlib.suppress(sqlite3.Error):
                self._checkpointer.close()
            self._checkpointer = None

    def _note_wal_size_peak(self) -> None:
        with contextlib.suppress(OSError):
            self.peak_wal_bytes = max(self.peak_wal_bytes, os.stat(self._wal_path).st_size)

    # ------------------------------------------------------------------- closing
    def close(self) -> None:
        """Commit what is queued (with the ``on_close`` write), stop the writer thread and
        fail any waiter left with ``WorkspaceClosedError``. Blocks until done."""
        with self.lock:
            already = self._closing
            self._closing = True
            self._wake_locked()
        self._thread.join()
        if already:
            return
        with self.lock:
            self._closed = True
            waiters, self._waiters = self._waiters, []
        error = WorkspaceClosedError(f"the workspace {self.label!r} was closed")
        for _, loop, future in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, None, error)

    def connection(self) -> sqlite3.Connection:
        """The write connection (for the owner to close after :meth:`close`)."""
        return self._conn

    def close_connections(self) -> None:
        """Close the write connection and the checkpointer (after :meth:`close`)."""
        self._drop_checkpointer()
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
