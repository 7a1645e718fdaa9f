"""Where run records and outputs live: the store interface and its in-memory implementation.

The RunManager talks to a store only through :class:`RunStore`. The in-memory store keeps
everything in dicts for this process; the durable SQLite store implements the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..models import TERMINAL_STATUSES, RunRecord, RunStatus, utc_now


@runtime_checkable
class RunStore(Protocol):
    """Persistence for run records and outputs.

    All methods are called on the event loop thread. ``create``/``update`` may queue the write
    and return before it is durable; ``flush`` returns once everything written so far is
    durable (the manager awaits it before ``submit_run`` returns a new run and before
    ``wait_run`` returns a terminal record).
    """

    async def create(self, record: RunRecord, inputs: Mapping[str, Any] | None = None) -> None:
        """Store a new record (its run_id is new to this store) and the run's inputs."""

    async def update(self, record: RunRecord, outputs: dict[str, Any] | None = None) -> None:
        """Replace the stored record for ``record.run_id`` (and its outputs if given)."""

    async def flush(self) -> None:
        """Return when every earlier create/update is durable."""

    async def put(
        self,
        record: RunRecord,
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> None:
        """``create`` (with ``inputs``) or ``update`` (with ``outputs``), then ``flush``:
        return once ``record`` is durable (the manager's two writes per run)."""

    async def get(self, run_id: str) -> RunRecord | None:
        """The record for ``run_id``, or None."""

    async def get_outputs(self, run_id: str) -> dict[str, Any] | None:
        """The outputs saved for ``run_id``, or None."""

    async def get_inputs(self, run_id: str) -> dict[str, Any] | None:
        """The inputs stored with ``run_id``, or None."""

    def is_durable(self, run_id: str) -> bool:
        """Whether the latest record given for ``run_id`` is stored for good."""

    async def prune(
        self,
        *,
        older_than_s: float | None = None,
        keep_last: int | None = None,
        statuses: Iterable[RunStatus] | None = None,
        protect: Iterable[str] = (),
    ) -> dict[str, int]:
        """Delete finished runs; see ``RunManager.prune``."""

    async def exists(self, run_id: str) -> bool:
        """Whether any record has this run id."""

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
        """Records matching every given filter (tags: all must be present), newest first."""

    async def close(self) -> None:
        """Release resources (flushes first)."""


def status_set(status: RunStatus | str | Iterable[RunStatus | str] | None) -> set[RunStatus] | None:
    """Normalise a status filter (one status or several) to a set, or None for "any".

    Raises:
      ValueError: naming the valid statuses, if one is unknown.
    """
    if status is None:
        return None
    items = [status] if isinstance(status, str) else list(status)
    try:
        return {RunStatus(s) for s in items}
    except ValueError:
        raise ValueError(
            f"unknown run status in {items!r}; valid statuses: {', '.join(RunStatus)}"
        ) from None


def check_paging(limit: int, offset: int) -> None:
    """Raises ValueError unless ``limit`` > 0 and ``offset`` >= 0."""
    if not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset must be an int >= 0, got {offset!r}")


class InMemoryRunStore:
    """A :class:`RunStore` that keeps records, inputs and outputs in this process's memory
    (nothing is bounded: prune it, or use the durable store, in long-lived processes)."""

    fault = None

    def __init__(self) -> None:
        self._records: dict[str, RunRecord] = {}
        self._outputs: dict[str, dict[str, Any]] = {}
        self._inputs: dict[str, dict[str, Any]] = {}

    async def create(self, record: RunRecord, inputs: Mapping[str, Any] | None = None) -> None:
        self._records[record.run_id] = record
        if inputs:
            # The manager's own validated dict, never mutated: kept, not copied.
            self._inputs[record.run_id] = inputs  # type: ignore[assignment]

    async def update(self, record: RunRecord, outputs: dict[str, Any] | None = None) -> None:
        self._records[record.run_id] = record
        if outputs is not None:
            self._outputs[record.run_id] = outputs

    async def flush(self) -> None:
        return None

    async def put(
        self,
        record: RunRecord,
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> None:
        self._records[record.run_id] = record
        if inputs:
            self._inputs[record.run_id] = inputs  # type: ignore[assignment]
        if outputs is not None:
            self._outputs[record.run_id] = outputs  # type: ignore[assignment]

    async def get(self, run_id: str) -> RunRecord | None:
        return self._records.get(run_id)

    async def get_outputs(self, run_id: str) -> dict[str, Any] | None:
        return self._outputs.get(run_id)

    async def get_inputs(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self._records:
            return None
        return dict(self._inputs.get(run_id, {}))

    def is_durable(self, run_id: str) -> bool:
        return True  # nothing is durable here, and nothing is waiting to be

    async def prune(
        self,
        *,
        older_than_s: float | None = None,
        keep_last: int | None = None,
        statuses: Iterable[RunStatus] | None = None,
        protect: Iterable[str] = (),
    ) -> dict[str, int]:
        wanted = set(status_set(statuses) or TERMINAL_STATUSES)
        if not wanted <= TERMINAL_STATUSES:
            raise ValueError(
                f"prune removes finished runs only; statuses must be among "
                f"{sorted(s.value for s in TERMINAL_STATUSES)}, got {sorted(wanted)}"
            )
        now = utc_now()
        kept = set(protect)
        if keep_last:
            kept.update(list(self._records)[-int(keep_last) :])
        doomed = [
            run_id
            for run_id, record in self._records.items()
            if run_id not in kept
            and record.status in wanted
            and (
                older_than_s is None
                or (
                    record.finished_at is not None
                    and (now - record.finished_at).total_seconds() > older_than_s
                )
            )
        ]
        for run_id in doomed:
            del self._records[run_id]
            self._outputs.pop(run_id, None)
            self._inputs.pop(run_id, None)
        return {"runs": len(doomed), "rows": 0, "files": 0, "bytes": 0}

    async def exists(self, run_id: str) -> bool:
        return run_id in self._records

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
        check_paging(limit, offset)
        statuses = status_set(status)
        wanted_tags = set(tags or ())
        matched = []
        # dicts keep insertion order, so reversed() is newest-created first.
        for record in reversed(self._records.values()):
            if graph_id is not None and record.graph_id != graph_id:
                continue
            if statuses is not None and record.status not in statuses:
                continue
            if session_id is not None and record.session_id != session_id:
                continue
            if wanted_tags and not wanted_tags.issubset(record.tags):
                continue
            matched.append(record)
            if len(matched) >= offset + limit:
                break
        return matched[offset:]

    async def close(self) -> None:
        return None
