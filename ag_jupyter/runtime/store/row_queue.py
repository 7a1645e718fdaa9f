"""A batch source that appends rows to one table: what run logs and steps need.

Rows are queued from any thread and committed with the next batch of the workspace's write
engine (nobody awaits them: a run's records are what flushes wait for). A row SQLite
refuses (a value past its size limit) is dropped with a warning, never failing the batch.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any, ClassVar

from .workspace import Workspace
from .writer import is_environment_error

log = logging.getLogger("ag_jupyter.workspace")


class RowQueue:
    """Queued rows for ``INSERT_SQL`` (subclasses set it, and ``INLINE_MAX_ROWS``: above
    that many queued rows an inline commit hands its batch to the writer thread)."""

    INSERT_SQL: ClassVar[str]
    INLINE_MAX_ROWS: ClassVar[int] = 64

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._rows_lock = workspace.lock
        self._queued: list[tuple[Any, ...]] = []
        workspace.add_source(self)

    def queue_row_locked(self, row: tuple[Any, ...]) -> None:
        """Queue ``row`` (call with the workspace lock held)."""
        self._queued.append(row)
        self.workspace.enqueued_locked(self)

    def queued_rows(self) -> list[tuple[Any, ...]]:
        """The rows queued and not yet taken by a commit (a copy)."""
        with self._rows_lock:
            return list(self._queued)

    # BatchSource ---------------------------------------------------------------
    def take_locked(self) -> list[tuple[Any, ...]] | None:
        if not self._queued:
            return None
        batch, self._queued = self._queued, []
        return batch

    def inline_ok_locked(self) -> bool:
        return len(self._queued) <= self.INLINE_MAX_ROWS

    def prepare(self, batch: list[tuple[Any, ...]]) -> None:
        return None

    def single_statement(self, batch: list[tuple[Any, ...]]) -> None:
        return None  # rows go with run records, or in the writer's batches

    def write(
        self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]], urgent: bool, careful: bool
    ) -> None:
        if not careful:
            conn.executemany(self.INSERT_SQL, batch)
            return
        for row in batch:
            conn.execute("SAVEPOINT queued_row")
            try:
                conn.execute(self.INSERT_SQL, row)
            except Exception as exc:
                if is_environment_error(exc):
                    raise
                conn.execute("ROLLBACK TO queued_row")
                log.warning("a %s row was refused and dropped: %s", type(self).__name__, exc)
            conn.execute("RELEASE queued_row")

    def committed_locked(self, batch: list[tuple[Any, ...]], urgent: bool) -> bool:
        return False

    def failed_locked(self, batch: list[tuple[Any, ...]]) -> bool:
        self._queued[:0] = batch
        return bool(batch)

    def maintenance_due_locked(self) -> float | None:
        return None

    def maintain(self, conn: sqlite3.Connection) -> None:
        return None
