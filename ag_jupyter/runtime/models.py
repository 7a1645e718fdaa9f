"""Run record model and its enums (names and values from AetherGraph's run API)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class RunStatus(StrEnum):
    """Where a run is in its life.

    ``pending`` -> ``running`` -> (``waiting``) -> ``succeeded`` | ``failed`` | ``canceled``;
    ``cancellation_requested`` sits between a live status and ``canceled`` while a run is
    being stopped (an async run's task is cancelled; a sync run must notice a flag).
    """

    pending = "pending"
    running = "running"
    waiting = "waiting"
    cancellation_requested = "cancellation_requested"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"

    @property
    def is_terminal(self) -> bool:
        """True for ``succeeded``, ``failed`` and ``canceled``: the record will not change."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.succeeded, RunStatus.failed, RunStatus.canceled})
LIVE_STATUSES = frozenset(set(RunStatus) - TERMINAL_STATUSES)


class RunOrigin(StrEnum):
    """Who started a run."""

    app = "app"
    agent = "agent"
    chat = "chat"
    playground = "playground"
    api = "api"
    system = "system"
    schedule = "schedule"
    cli = "cli"
    local = "local"


class RunVisibility(StrEnum):
    """How prominently a UI should show a run."""

    normal = "normal"
    inline = "inline"
    hidden = "hidden"


class RunImportance(StrEnum):
    """Whether a run's record is worth keeping (``ephemeral`` runs may be pruned)."""

    normal = "normal"
    ephemeral = "ephemeral"


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC ``datetime``."""
    return datetime.now(UTC)


class RunRecord(BaseModel):
    """One run's metadata, as stored and as returned by the RunManager.

    Fields: ``run_id``, ``graph_id``, ``status`` (:class:`RunStatus`), ``created_at`` /
    ``started_at`` / ``finished_at`` (timezone-aware UTC), ``tags``, ``session_id``,
    ``parent_run_id``, ``origin``, ``visibility``, ``importance``, ``agent_id``, ``app_id``,
    ``error`` (``"ExcType: message"`` for failed runs, the reason for canceled ones) and
    ``meta`` (free-form JSON-able dict; the runtime keeps ``traceback``,
    ``cancel_reason``, ``cancel_requested_at`` there).

    Records are frozen snapshots: the manager replaces a run's record on every change.
    """

    # Frozen: every status change makes a new record, so a record handed out is a snapshot.
    model_config = ConfigDict(frozen=True)

    run_id: str
    graph_id: str
    status: RunStatus = RunStatus.pending
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    tags: list[str] = Field(default_factory=list)
    session_id: str | None = None
    parent_run_id: str | None = None
    origin: RunOrigin = RunOrigin.app
    visibility: RunVisibility = RunVisibility.normal
    importance: RunImportance = RunImportance.normal
    agent_id: str | None = None
    app_id: str | None = None
    error: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (or to now for a live run); None if not started."""
        if self.started_at is None:
            return None
        end = self.finished_at or utc_now()
        return (end - self.started_at).total_seconds()
