"""Stored run history for the panel and the text snapshots: runs of earlier kernels.

A durable workspace keeps every run's record; a new kernel's RunManager holds only its own
runs in memory. The panel (``RunPanel.load_history``) and ``%ag_runs --text`` read the
newest stored records with the manager's async ``list_records`` (SQL-filtered and paged in
the workspace's threads, never on the loop's critical path) and show them beside the
manager's own. The newest page read is remembered per manager, so a snapshot taken later
(the panel's ``text/html``, ``%ag_runs --text``) can include it at once.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from ..runtime import RunManager, RunRecord, RunStatus

HISTORY_RUNS = 500  # newest stored runs read for a panel or a text snapshot

_cache: weakref.WeakKeyDictionary[RunManager, list[RunRecord]] = weakref.WeakKeyDictionary()


def remember(manager: RunManager, stored: list[RunRecord]) -> None:
    """Keep ``stored`` (the newest stored records, newest first, unfiltered) for
    :func:`cached`."""
    _cache[manager] = list(stored)


def cached(manager: RunManager) -> list[RunRecord] | None:
    """The newest stored records last read for ``manager`` (newest first), or None if none
    were read in this process yet."""
    return _cache.get(manager)


async def read_stored(
    manager: RunManager,
    *,
    graph_id: str | None = None,
    statuses: Iterable[RunStatus] | None = None,
    session_id: str | None = None,
    limit: int = HISTORY_RUNS,
) -> list[RunRecord]:
    """The newest ``limit`` stored records matching the filters, newest first (the
    manager's ``list_records``); an unfiltered read is remembered for :func:`cached`.

    Raises:
      WorkspaceError: if the workspace cannot be read.
    """
    status: Any = set(statuses) if statuses is not None else None
    stored = await manager.list_records(
        graph_id=graph_id, status=status, session_id=session_id, limit=limit
    )
    if graph_id is None and status is None and session_id is None:
        remember(manager, stored)
    return stored


def merge(memory: Iterable[RunRecord], stored: Iterable[RunRecord]) -> list[RunRecord]:
    """The manager's in-memory records and stored ones as one list, oldest first, each
    run once (the in-memory record wins: it is the newer)."""
    merged = {r.run_id: r for r in stored}
    merged.update((r.run_id, r) for r in memory)
    return sorted(merged.values(), key=lambda r: r.created_at)
