"""Run record model and its enums (names and values from AetherGraph's run API)."""

from __future__ import annotations

import html
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

    def __repr__(self) -> str:
        """One line, status first after the ids, as distributed's ``Future`` does:
        ``<RunRecord run-1 graph=fetch status=failed 1.2 s error='ValueError: boom'>``.

        The error is cut to :data:`REPR_ERROR_CHARS` characters; the traceback (in
        ``meta``) and the other fields are left out (they are attributes).
        """
        parts = [f"<RunRecord {self.run_id} graph={self.graph_id} status={self.status.value}"]
        duration = format_duration(self.duration_s)
        if duration:
            parts.append(duration)
        if self.error:
            parts.append(f"error={_shorten(self.error, REPR_ERROR_CHARS)!r}")
        return " ".join(parts) + ">"

    __str__ = __repr__

    def _repr_html_(self) -> str:
        """A small HTML card for notebooks: id, graph, status, session, times, duration,
        tags, parent and error (cut to :data:`HTML_ERROR_CHARS` characters; never the
        traceback). Every value is HTML-escaped."""
        rows = [
            ("graph", self.graph_id),
            ("session", self.session_id),
            ("parent", self.parent_run_id),
            ("created", _format_time(self.created_at)),
            ("started", _format_time(self.started_at)),
            ("finished", _format_time(self.finished_at)),
            ("duration", format_duration(self.duration_s)),
            ("tags", ", ".join(self.tags)),
            ("error", _shorten(self.error, HTML_ERROR_CHARS) if self.error else None),
        ]
        cells = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(name)}</th>"
            f"<td style='text-align:left'>{html.escape(str(value))}</td></tr>"
            for name, value in rows
            if value
        )
        return (
            "<div class='ag-run-record' style='border:1px solid #ccc;border-radius:4px;"
            "padding:4px 8px;display:inline-block'>"
            f"<strong>RunRecord</strong> <code>{html.escape(self.run_id)}</code> "
            f"<span class='ag-status ag-status-{html.escape(self.status.value)}'>"
            f"{html.escape(self.status.value)}</span>"
            f"<table style='margin:0'>{cells}</table></div>"
        )


REPR_ERROR_CHARS = 80
"""Characters of ``RunRecord.error`` kept by ``repr()``."""
HTML_ERROR_CHARS = 300
"""Characters of ``RunRecord.error`` kept by the HTML card."""


def _shorten(text: str, limit: int) -> str:
    """The first line of ``text``, cut to ``limit`` characters with an ellipsis."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if len(first) > limit or first != text.strip():
        return first[: limit - 1].rstrip() + "…"
    return first


def format_duration(seconds: float | None) -> str:
    """A duration in seconds as people read it: ``850 ms``, ``12.3 s``, ``4m 05s``,
    ``1h 02m``; empty for None (records' reprs, the panel, the magics)."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes}m {secs:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h {rest // 60:02d}m"


def _format_time(ts: datetime | None) -> str:
    return ts.isoformat(sep=" ", timespec="seconds") if ts is not None else ""
