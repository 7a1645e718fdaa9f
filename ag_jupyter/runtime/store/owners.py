"""Which processes use a workspace, and whether they are still alive.

Each process that opens a workspace registers an *owner* row (pid, process start time, boot
id, host name, heartbeat); run records carry their owner's token. When a workspace opens,
owners whose process is gone are dropped, so the runs they left live can be marked
interrupted (see the runs component in ``sqlite_store``). Two kernels may share a
workspace: a live owner's runs are left alone.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from .schema import Migration, SchemaComponent

#: Seconds between owner heartbeats.
HEARTBEAT_INTERVAL_S = 30.0
#: An owner on another host/container is considered gone after this many seconds of silence.
OWNER_STALE_AFTER_S = 120.0


def _read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def proc_stat(pid: int) -> tuple[str, str] | None:
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


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (on any platform)."""
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


class ProcessIdentity:
    """This process as an owner row: pid, host, boot id, start time and a unique token."""

    __slots__ = ("boot_id", "hostname", "pid", "proc_start", "token")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.hostname = socket.gethostname()
        self.boot_id = _read_boot_id()
        try:
            stat = proc_stat(self.pid)
            self.proc_start = stat[1] if stat else ""
        except OSError:
            self.proc_start = ""
        self.token = f"{self.pid}-{uuid.uuid4().hex[:12]}"


def owner_alive(row: sqlite3.Row | dict[str, Any], me: ProcessIdentity) -> bool:
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
        stat = proc_stat(pid)
    except OSError:
        return pid_exists(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return not row["proc_start"] or stat[1] == row["proc_start"]


_UPSERT_OWNER = (
    "INSERT INTO owners VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(token) "
    "DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
)


def register_owner(conn: sqlite3.Connection, me: ProcessIdentity) -> None:
    """Insert (or refresh the heartbeat of) ``me``'s owner row. Call inside a transaction."""
    now = time.time()
    conn.execute(
        _UPSERT_OWNER, (me.token, me.pid, me.hostname, me.boot_id, me.proc_start, now, now)
    )


def unregister_owner(conn: sqlite3.Connection, me: ProcessIdentity) -> None:
    """Delete ``me``'s owner row (on a clean close). Call inside a transaction."""
    conn.execute("DELETE FROM owners WHERE token = ?", (me.token,))


def _recover_owners(conn: sqlite3.Connection, workspace: Any) -> None:
    """Open hook: drop owners whose process is gone, then register this process."""
    me: ProcessIdentity = workspace.identity
    dead = [
        row["token"]
        for row in conn.execute("SELECT * FROM owners").fetchall()
        if not owner_alive(row, me)
    ]
    conn.executemany("DELETE FROM owners WHERE token = ?", [(t,) for t in dead])
    register_owner(conn, me)


OWNERS_SCHEMA = SchemaComponent(
    "owners",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS owners (
                    token TEXT PRIMARY KEY,
                    pid INTEGER NOT NULL,
                    hostname TEXT NOT NULL,
                    boot_id TEXT NOT NULL,
                    proc_start TEXT NOT NULL,
                    started_at REAL NOT NULL,
                    heartbeat_at REAL NOT NULL
                )""",
            ),
        ),
    ),
    on_open=_recover_owners,
)
