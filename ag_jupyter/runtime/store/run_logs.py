"""Logger lines kept per run: bounded in memory (:class:`RunLogBook`) and, on a workspace,
in its database (:class:`WorkspaceRunLogs`, readable after a restart).

A line is a dict ``{"time": epoch seconds (float), "level": "INFO", "run_id",
"session_id", "message"}``, plus ``"traceback"`` (text) for lines logged with an
exception. Both keep at most ``max_lines_per_run`` lines of each run (the newest), so one
chatty run never evicts the others; the in-memory book also keeps at most ``max_runs``
runs (least recently written out first), the workspace at most ``max_total_lines`` lines
in all (oldest out first).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict, deque
from typing import Any

from .codecs import db_text, text_from_db
from .row_queue import RowQueue
from .schema import Migration, SchemaComponent
from .workspace import Workspace

DEFAULT_LINES_PER_RUN = 2_000
DEFAULT_RUNS_IN_MEMORY = 2_000
DEFAULT_TOTAL_LINES = 1_000_000
#: Lines queued above which a flush hands the batch to the writer thread.

LOGS_SCHEMA = SchemaComponent(
    "run_logs",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS run_logs (
                    id INTEGER PRIMARY KEY,
                    run_id TEXT NOT NULL,
                    session_id TEXT,
                    at REAL NOT NULL,
                    level TEXT NOT NULL,
                    message TEXT NOT NULL,
                    traceback TEXT
                )""",
                "CREATE INDEX IF NOT EXISTS run_logs_run ON run_logs (run_id, id)",
            ),
        ),
    ),
    run_tables=("run_logs",),
)


def _matches(line: dict[str, Any], search: str | None, levels: set[str] | None) -> bool:
    if levels is not None and line["level"] not in levels:
        return False
    return search is None or search.lower() in str(line["message"]).lower()


def _line(
    at: float, level: str, run_id: str, session_id: str | None, message: Any, tb: Any
) -> dict[str, Any]:
    line = {
        "time": at,
        "level": level,
        "run_id": run_id,
        "session_id": session_id,
        "message": text_from_db(message),
    }
    if tb is not None:
        line["traceback"] = text_from_db(tb)
    return line


class RunLogBook:
    """The last lines of each run, in this process's memory (thread-safe).

    Args:
      max_lines_per_run: lines kept per run (newest).
      max_runs: runs kept (least recently written run dropped first).
    """

    def __init__(
        self,
        max_lines_per_run: int = DEFAULT_LINES_PER_RUN,
        max_runs: int = DEFAULT_RUNS_IN_MEMORY,
    ) -> None:
        self.max_lines_per_run = int(max_lines_per_run)
        self.max_runs = int(max_runs)
        self._runs: OrderedDict[str | None, deque[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def append(self, line: dict[str, Any]) -> None:
        """Keep ``line`` (a dict as in the module docstring)."""
        run_id = line.get("run_id")
        with self._lock:
            lines = self._runs.get(run_id)
            if lines is None:
                lines = self._runs[run_id] = deque(maxlen=self.max_lines_per_run)
                if len(self._runs) > self.max_runs:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(run_id)
            lines.append(line)

    def lines(
        self,
        run_id: str | None = None,
        *,
        search: str | None = None,
        levels: set[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Kept lines, oldest first: ``run_id``'s only when given, else every run's (in
        time order). ``search``: case-insensitive substring of the message; ``levels``:
        e.g. ``{"WARNING", "ERROR"}``."""
        with self._lock:
            if run_id is not None:
                found = list(self._runs.get(run_id, ()))
            else:
                found = sorted(
                    (ln for lines in self._runs.values() for ln in lines),
                    key=lambda ln: ln["time"],
                )
        if search is None and levels is None:
            return found
        return [ln for ln in found if _matches(ln, search, levels)]

    def count(self, run_id: str) -> int:
        """Lines kept for ``run_id``."""
        with self._lock:
            return len(self._runs.get(run_id, ()))


class WorkspaceRunLogs(RowQueue):
    """Run log lines in the workspace database (a :class:`RowQueue` of its write engine).

    Lines are queued from any thread and committed with the next batch (nobody awaits
    them); reads see queued lines too. Also keeps a :class:`RunLogBook` for quick
    synchronous reads by UIs.

    Args:
      workspace: opened with :data:`LOGS_SCHEMA`.
      max_lines_per_run, max_total_lines: the bounds of the module docstring.
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        max_lines_per_run: int = DEFAULT_LINES_PER_RUN,
        max_total_lines: int = DEFAULT_TOTAL_LINES,
    ) -> None:
        self.max_lines_per_run = int(max_lines_per_run)
        self.max_total_lines = int(max_total_lines)
        self.book = RunLogBook(max_lines_per_run)
        self._lock = workspace.lock
        self._counts: dict[str, int] = {}  # lines written per run by this process
        self._over: set[str] = set()  # runs over their bound: trimmed in maintenance
        self._written = 0
        self._trim_total = False
        super().__init__(workspace)

    def append(self, line: dict[str, Any]) -> None:
        """Queue ``line`` for the database and keep it in memory (any thread)."""
        self.book.append(line)
        run_id = line.get("run_id") or ""
        row = (
            run_id,
            line.get("session_id"),
            float(line["time"]),
            str(line["level"]),
            db_text(str(line["message"])),
            db_text(line.get("traceback")),
        )
        with self._lock:
            count = self._counts.get(run_id, 0) + 1
            self._counts[run_id] = count
            if count > self.max_lines_per_run:
                self._over.add(run_id)
            self.queue_row_locked(row)

    # BatchSource (the rest from RowQueue) -----------------------------------------
    INSERT_SQL = (
        "INSERT INTO run_logs (run_id, session_id, at, level, message, traceback) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    #: Queued lines above which a flush hands the batch to the writer thread.
    INLINE_MAX_ROWS = 256

    def committed_locked(self, batch: list[tuple[Any, ...]], urgent: bool) -> bool:
        self._written += len(batch)
        if self._written >= 10_000:
            self._written = 0
            self._trim_total = True
        return bool(self._trim_total or self._over)

    def maintenance_due_locked(self) -> float | None:
        return 0.0 if (self._over or self._trim_total) else None

    def maintain(self, conn: sqlite3.Connection) -> None:
        """Trim runs over their bound (oldest lines first) and the table to its total."""
        with self._lock:
            over, self._over = self._over, set()
            trim_total, self._trim_total = self._trim_total, False
        conn.execute("BEGIN IMMEDIATE")
        try:
            for run_id in over:
                conn.execute(
                    "DELETE FROM run_logs WHERE run_id = ? AND id < (SELECT id FROM run_logs "
                    "WHERE run_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (run_id, run_id, self.max_lines_per_run - 1),
                )
            if trim_total:
                conn.execute(
                    "DELETE FROM run_logs WHERE id <= (SELECT max(id) FROM run_logs) - ?",
                    (self.max_total_lines,),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            with self._lock:
                self._over |= over
            raise

    # reading -------------------------------------------------------------------
    async def read(
        self,
        run_id: str,
        *,
        offset: int = 0,
        limit: int = 200,
        search: str | None = None,
        levels: set[str] | None = None,
    ) -> dict[str, Any]:
        """A page of ``run_id``'s lines, oldest first: ``{"lines": [...], "total": n}``
        (``total`` counts the lines matching ``search``/``levels``).

        Raises:
          WorkspaceError: if the database cannot be read.
        """
        queued = [r for r in self.queued_rows() if r[0] == run_id]
        clauses = ["run_id = ?"]
        params: list[Any] = [run_id]
        if levels:
            clauses.append(f"level IN ({', '.join('?' * len(levels))})")
            params.extend(sorted(levels))
        if search:
            clauses.append("instr(lower(message), lower(?)) > 0")
            params.append(search)
        where = " AND ".join(clauses)

        def fetch(conn: sqlite3.Connection) -> tuple[int, list[Any]]:
            total = conn.execute(f"SELECT count(*) FROM run_logs WHERE {where}", params).fetchone()[
                0
            ]
            rows = conn.execute(
                f"SELECT at, level, run_id, session_id, message, traceback FROM run_logs "
                f"WHERE {where} "
                "ORDER BY id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            return total, rows

        total, rows = await self.workspace.read(fetch)
        lines = [_line(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]
        extra = [_line(r[2], r[3], r[0], r[1], r[4], r[5]) for r in queued]
        extra = [ln for ln in extra if _matches(ln, search, levels)]
        if len(lines) < limit:
            skip = max(0, offset - total)
            lines.extend(extra[skip : skip + limit - len(lines)])
        return {"lines": lines, "total": total + len(extra)}
