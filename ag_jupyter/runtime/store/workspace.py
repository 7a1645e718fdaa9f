"""The durable workspace: one folder with a SQLite database and content-addressed files.

Layout of a workspace folder (default ``./.ag_workspace``, or ``$AG_WORKSPACE``)::

    ag.sqlite3            run records, logs, kv, memory events, artifact index (WAL mode)
    artifacts/ab/cdef...  artifact blobs, named by the sha256 of their content
    blobs/ab/cdef...      large run outputs and inputs, by the sha256 of their JSON text

A folder the workspace creates is ``0700``; every file it writes (the database, its WAL
and SHM, blobs, temporary files) is ``0600``. Nothing below the folder is followed through
a symbolic link. Temporary files left by a process killed during a save are removed when
a workspace opens.

Writes go through a :class:`~ag_jupyter.runtime.store.writer.WriteEngine` (one write
connection, group commit, inline commits of small batches); reads and file work run on a
small pool of threads, each with its own read-only connection (WAL lets them read while a
write is in progress), and come back to the awaiting loop through
``loop.run_in_executor``. Opening is synchronous (a few milliseconds, once).

What the database holds is declared by schema components (``store/schema.py``) given to
:class:`Workspace`; the composition root (``runtime/defaults.py``) passes all of them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sqlite3
import stat
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    WorkspaceClosedError,
    WorkspaceCorruptError,
    WorkspaceError,
    WorkspaceWriteError,
)
from .owners import (
    HEARTBEAT_INTERVAL_S,
    OWNERS_SCHEMA,
    ProcessIdentity,
    pid_exists,
    register_owner,
    unregister_owner,
)
from .schema import NewerSchemaError, SchemaComponent, migrate
from .writer import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_COMMIT_INTERVAL_S,
    BatchSource,
    FolderGoneError,
    WriteEngine,
)

log = logging.getLogger("ag_jupyter.workspace")

T = TypeVar("T")

WORKSPACE_ENV = "AG_WORKSPACE"
DEFAULT_WORKSPACE_DIR = ".ag_workspace"
DB_FILENAME = "ag.sqlite3"
ARTIFACTS_DIRNAME = "artifacts"
BLOBS_DIRNAME = "blobs"
#: Prefix of temporary files (``.tmp-<pid>-<random>``): removed on open once their
#: process is gone.
TMP_PREFIX = ".tmp-"
DIR_MODE = 0o700
FILE_MODE = 0o600

_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def resolve_workspace_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The absolute workspace folder: ``path``, else ``$AG_WORKSPACE``, else
    ``./.ag_workspace`` (in the current working directory). ``~`` is expanded."""
    if path is None:
        path = os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE_DIR
    return Path(path).expanduser().absolute()


def _sqlite_code(exc: BaseException) -> int:
    return (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF


def make_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700; missing parents with the default mode) if missing;
    refuse a symlink or a non-folder.

    Raises:
      OSError: if it cannot be created, or is a symlink / not a folder.
    """
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise OSError(f"{str(path)!r} is a symbolic link; the workspace never follows links")
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{str(path)!r} is not a folder")


def remove_stale_temp_files(root: Path) -> int:
    """Remove the ``.tmp-<pid>-*`` files in ``root`` and its subfolders whose process is
    gone (a save interrupted by a kill). Returns how many were removed."""
    removed = 0
    me = os.getpid()
    folders = [root]
    with contextlib.suppress(OSError):
        folders += [Path(e.path) for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    for folder in folders:
        try:
            entries = [e for e in os.scandir(folder) if e.name.startswith(TMP_PREFIX)]
        except OSError:
            continue
        for entry in entries:
            pid_text = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
            pid = int(pid_text) if pid_text.isdigit() else None
            if pid is not None and (pid == me or pid_exists(pid)):
                continue  # a live process (maybe this one) is saving it right now
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


class Workspace:
    """An open workspace folder: its SQLite database, write engine and file folders.

    Opening creates the folder (0700) and its database (0600, WAL mode) if needed, brings
    every schema component up to date (see ``store/schema.py``), registers this process as
    an owner and runs the components' recovery hooks (marking runs that a dead process left
    live as interrupted).

    Args:
      path: the folder (str or path-like). None: ``$AG_WORKSPACE`` if set, else
        ``./.ag_workspace`` in the current working directory (resolved to an absolute path
        when opened).
      components: the schema components to keep in the database (default: only the
        owners table; ``runtime.defaults.open_workspace`` passes every component).
      commit_interval_s: seconds after the first queued write that a batch is committed
        when nobody awaits it (default 0.05).
      busy_timeout_s: seconds a write waits for another process's lock (default 10).

    Raises:
      WorkspaceCorruptError: if the database file is damaged (it is left untouched).
      WorkspaceError: if the folder cannot be created or written (the message names it and
        says what to do), or the database is from a newer ag_jupyter.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        components: Sequence[SchemaComponent] = (),
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    ) -> None:
        self.path = resolve_workspace_path(path)
        self.db_path = self.path / DB_FILENAME
        self._db_path_text = str(self.db_path)
        self.artifacts_path = self.path / ARTIFACTS_DIRNAME
        self.blobs_path = self.path / BLOBS_DIRNAME
        self.busy_timeout_s = float(busy_timeout_s)
        names = [c.name for c in components]
        self.components: tuple[SchemaComponent, ...] = (
            tuple(components) if "owners" in names else (OWNERS_SCHEMA, *components)
        )
        self.identity = ProcessIdentity()
        self.interrupted_on_open: list[str] = []
        self.migrated_on_open: dict[str, tuple[int, int]] = {}
        self._opened_at = time.time()
        conn = self._open_database()
        self._db_fd = self._watch_db_file()
        self._generation = 0
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._read_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ag-ws-io")
        self.engine = WriteEngine(
            conn,
            label=str(self.path),
            wal_path=str(self.db_path) + "-wal",
            describe_error=self._write_error,
            check_folder=self._check_folder,
            recover=self._recreate,
            connect=self._connect,
            heartbeat=lambda c: register_owner(c, self.identity),
            heartbeat_s=HEARTBEAT_INTERVAL_S,
            on_close=lambda c: unregister_owner(c, self.identity),
            commit_interval_s=commit_interval_s,
            busy_timeout_s=busy_timeout_s,
        )
        atexit.register(self.close)

    # ------------------------------------------------------------------ opening
    def _open_error(self, exc: BaseException) -> WorkspaceError:
        code = _sqlite_code(exc)
        if code in _CORRUPT_CODES:
            return self._corrupt_error(exc)
        if isinstance(exc, NewerSchemaError):
            return WorkspaceError(
                f"the workspace {str(self.path)!r} was written by a newer ag_jupyter "
                f"(schema {exc.what}); upgrade ag_jupyter or use another folder "
                f"({WORKSPACE_ENV})"
            )
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if code in (5, 6):
            what = (
                f"another process held the database lock for more than "
                f"{self.busy_timeout_s:g} s: retry, or give each kernel its own folder"
            )
        elif isinstance(exc, PermissionError) or code in (3, 8):
            what = "make the folder and its files writable by this user"
        elif code == 13 or getattr(exc, "errno", None) == 28:
            what = "free some disk space"
        elif "symbolic link" in str(exc) or "not a folder" in str(exc):
            what = "remove or rename it"
        else:
            what = "check that the folder exists and is writable, and that the disk has space"
        return WorkspaceError(
            f"cannot use {str(self.path)!r} as the ag_jupyter workspace ({reason}); {what}, "
            f"or choose another folder with the {WORKSPACE_ENV} environment variable or "
            "open_workspace(path=...)."
        )

    def _corrupt_error(self, exc: BaseException) -> WorkspaceCorruptError:
        return WorkspaceCorruptError(
            f"the workspace database {str(self.db_path)!r} is corrupted ({exc}); it was "
            "left untouched. To start afresh, move it aside (e.g. `mv "
            f"{self.db_path} {self.db_path}.corrupt`, with its -wal and -shm files) and "
            "open the workspace again; or choose another folder with "
            f"{WORKSPACE_ENV}."
        )

    def _open_database(self) -> sqlite3.Connection:
        try:
            self._prepare_folders()
            self._prepare_db_file()
        except OSError as exc:
            raise self._open_error(exc) from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self._setup(conn)
        except (sqlite3.Error, OSError, NewerSchemaError) as exc:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            raise self._open_error(exc) from exc
        return conn

    def _prepare_folders(self) -> None:
        make_private_dir(self.path)
        for sub in (self.artifacts_path, self.blobs_path):
            make_private_dir(sub)
            remove_stale_temp_files(sub)

    def _prepare_db_file(self) -> None:
        # Create the file ourselves so it is 0600: SQLite gives its -wal and -shm files the
        # database file's permissions. O_NOFOLLOW: a planted symlink is refused.
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.db_path, flags, FILE_MODE)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
                os.fchmod(fd, FILE_MODE)  # written by an older version: tighten it
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.db_path) + suffix)
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(side)
                if stat.S_ISLNK(info.st_mode):
                    raise OSError(f"{str(side)!r} is a symbolic link; remove it")
                if stat.S_IMODE(info.st_mode) & 0o077:
                    os.chmod(side, FILE_MODE)

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
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer thread checkpoints
        conn.execute("PRAGMA journal_size_limit=67108864")  # WAL file kept under 64 MiB
        conn.execute("BEGIN IMMEDIATE")
        try:
            self.migrated_on_open = migrate(conn, self.components, self)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        for changed, (old, new) in self.migrated_on_open.items():
            if old:
                log.info("workspace %s: %s schema %d -> %d", self.path, changed, old, new)

    # -------------------------------------------------------- folder deleted under us
    def _watch_db_file(self) -> int | None:
        """An fd on the database file: once the file is deleted or replaced, its link
        count drops to 0 (an ``fstat`` costs less than a ``stat`` of the path)."""
        try:
            return os.open(self._db_path_text, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None

    def _check_folder(self) -> None:
        fd = self._db_fd
        if fd is None:
            return
        try:
            links = os.fstat(fd).st_nlink
        except OSError:
            return  # the commit itself reports a real problem
        if links == 0:
            raise FolderGoneError(f"{str(self.db_path)!r} was deleted or replaced")

    def _recreate(self, exc: BaseException) -> sqlite3.Connection:
        """Writer thread: the database file went away. Warn, recreate the folder and an
        empty database, and carry on writing there (what the old one held is gone; this
        process's later changes, including every live run's record, land in the new one)."""
        message = (
            f"ag_jupyter: the workspace database {str(self.db_path)!r} was deleted or "
            f"replaced while this process used it ({exc}); recreating an empty workspace "
            "there. Records saved before that are gone with it; runs still live in this "
            "process are saved again as they change."
        )
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        old = self.engine.connection()
        conn = self._open_database()
        old_fd, self._db_fd = self._db_fd, self._watch_db_file()
        if old_fd is not None:
            with contextlib.suppress(OSError):
                os.close(old_fd)
        with self._readers_lock:
            self._generation += 1
        with contextlib.suppress(sqlite3.Error):
            old.close()
        return conn

    # --------------------------------------------------------------- properties
    @property
    def owner_token(self) -> str:
        """This process's owner token (stored on the run records it writes)."""
        return self.identity.token

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self.engine.closing

    @property
    def lock(self) -> threading.Lock:
        """The lock guarding queued writes (sources hold it while changing their queue)."""
        return self.engine.lock

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Workspace({str(self.path)!r}, {state})"

    def _check_open(self) -> None:
        if self.engine.closing:
            raise WorkspaceClosedError(
                f"the workspace {str(self.path)!r} is closed; open it again with "
                "open_workspace(path)"
            )

    # ---------------------------------------------------------------- writing
    def add_source(self, source: BatchSource) -> None:
        """Register a :class:`BatchSource` whose queued writes join every batch."""
        self.engine.add_source(source)

    def remove_source(self, source: BatchSource) -> None:
        """Stop taking writes from ``source`` (after flushing it yourself)."""
        self.engine.remove_source(source)

    def enqueued_locked(self, source: BatchSource | None = None) -> None:
        """Note a newly queued write of ``source`` (call with :attr:`lock` held)."""
        self.engine.enqueued_locked(source)

    async def flush(self) -> None:
        """Return once every write queued before this call is committed (see
        :meth:`WriteEngine.flush`).

        Raises:
          WorkspaceWriteError: if the commit failed; queued run records are retried.
          WorkspaceClosedError: if the workspace was closed with writes still unsaved.
        """
        await self.engine.flush()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer thread inside the next batch's transaction and
        return its result once committed (see :meth:`WriteEngine.write`).

        Raises:
          WorkspaceWriteError: if the batch could not be committed (nothing of ``fn`` was
            saved).
          WorkspaceClosedError: if the workspace is closed.
          Whatever ``fn`` raises.
        """
        return await self.engine.write(fn)

    @property
    def fault(self) -> WorkspaceWriteError | None:
        """The error of the last failed commit, until a commit succeeds again."""
        return self.engine.fault

    def _write_error(self, exc: BaseException) -> WorkspaceWriteError:
        code = _sqlite_code(exc)
        if code in _CORRUPT_CODES:
            corrupt = self._corrupt_error(exc)
            return WorkspaceWriteError(str(corrupt))
        if code == 8 or isinstance(exc, PermissionError):  # SQLITE_READONLY
            why = "the folder or its database is read-only: make it writable"
        elif code == 13 or getattr(exc, "errno", None) == 28:  # SQLITE_FULL / ENOSPC
            why = "the disk is full: free some space"
        elif code in (5, 6):  # SQLITE_BUSY / SQLITE_LOCKED
            why = (
                f"another process held the database lock for more than "
                f"{self.busy_timeout_s:g} s: retry, or give each kernel its own workspace"
            )
        elif code in (10, 14) and not self.path.exists():  # SQLITE_IOERR / CANTOPEN
            why = "the folder was deleted: it is recreated on the next write"
        elif code == 10:
            why = "the disk reported an I/O error: check the disk and its free space"
        else:
            why = "the folder may be read-only or the disk full: check both"
        return WorkspaceWriteError(
            f"could not write to the ag_jupyter workspace {str(self.path)!r} ({exc}); {why}, "
            f"or choose another folder with {WORKSPACE_ENV}. Run records of this process "
            "are kept in memory and saved once a write succeeds again."
        )

    # ----------------------------------------------------------------- reading
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation == self._generation:
            return conn
        if conn is not None:  # the database was recreated: drop the old connection
            with self._readers_lock, contextlib.suppress(ValueError):
                self._readers.remove(conn)
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        conn = sqlite3.connect(
            self.db_path,
            timeout=self.busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only=ON")
        self._local.conn = conn
        self._local.generation = self._generation
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def _read_call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._reader())
        except sqlite3.Error as exc:
            if _sqlite_code(exc) in _CORRUPT_CODES:
                raise self._corrupt_error(exc) from exc
            raise WorkspaceError(
                f"could not read the ag_jupyter workspace {str(self.path)!r} ({exc}); check "
                "that the folder and its ag.sqlite3 file are still there and readable"
            ) from exc

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on this thread's reader connection (for worker threads and
        tools; never call it on an event loop thread).

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        self._check_open()
        return self._read_call(fn)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection in a worker thread and return its result.

        It sees everything committed before it starts (not writes still queued).

        Raises:
          WorkspaceError: if the database cannot be read (WorkspaceCorruptError if it is
            damaged).
          WorkspaceClosedError: if the workspace is closed.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self._read_call, fn)

    def run_in_io_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run blocking file work (artifact blobs) on the workspace's reader threads."""
        self._check_open()
        return asyncio.get_running_loop().run_in_executor(self._read_pool, fn, *args)

    # ------------------------------------------------------------------- stats
    def stats_sync(self) -> dict[str, Any]:
        """What the workspace holds (see :meth:`stats`); blocking."""

        def query(conn: sqlite3.Connection) -> dict[str, Any]:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            rows = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
            sizes: dict[str, int] = {}
            with contextlib.suppress(sqlite3.Error):  # dbstat is optional in SQLite
                for name, tbl, size in conn.execute(
                    "SELECT s.name, m.tbl_name, sum(s.pgsize) FROM dbstat s "
                    "JOIN sqlite_master m ON m.name = s.name GROUP BY s.name"
                ):
                    sizes[tbl] = sizes.get(tbl, 0) + int(size)
                    del name
            return {"rows": rows, "table_bytes": sizes}

        found = self.read_sync(query)

        def folder_bytes(root: Path) -> tuple[int, int]:
            count = total = 0
            for folder, _dirs, files in os.walk(root):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(folder, name)).st_size
                        count += 1
            return count, total

        def size(path: Path) -> int:
            try:
                return os.stat(path).st_size
            except OSError:
                return 0

        art_files, art_bytes = folder_bytes(self.artifacts_path)
        blob_files, blob_bytes = folder_bytes(self.blobs_path)
        return {
            "path": str(self.path),
            "rows": found["rows"],
            "table_bytes": found["table_bytes"],
            "bytes": {
                "database": size(self.db_path),
                "wal": size(Path(str(self.db_path) + "-wal")),
                "artifacts": art_bytes,
                "blobs": blob_bytes,
            },
            "files": {"artifacts": art_files, "blobs": blob_files},
            "peak_wal_bytes": self.engine.peak_wal_bytes,
        }

    async def stats(self) -> dict[str, Any]:
        """What the workspace holds: ``{"path", "rows": {table: count}, "table_bytes":
        {table: bytes incl. its indexes}, "bytes": {"database", "wal", "artifacts",
        "blobs"}, "files": {"artifacts", "blobs"}, "peak_wal_bytes"}`` (sizes in bytes).

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._read_pool, self.stats_sync)

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Commit what is queued, stop the writer thread, remove this process's owner row
        and close the database connections. Blocks until done (use :meth:`aclose` from
        async code). Idempotent; also run at interpreter exit.

        Runs this process left live stay as they are on disk and are marked interrupted
        by the next process that opens the workspace.
        """
        if self.engine.closing:
            self.engine.close()  # joins the writer if another thread is closing
            return
        atexit.unregister(self.close)
        self.engine.close()
        self._read_pool.shutdown(wait=True)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self.engine.close_connections()
        if self._db_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._db_fd)
            self._db_fd = None

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)
