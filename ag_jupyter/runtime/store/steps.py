"""Steps: the shared record of what a run did (``@tool`` calls, MCP tool calls, LLM calls),
kept beside the run and read with ``RunManager.steps(run_id)``.

A step is a dict with exactly ``step_id`` (str), ``run_id``, ``kind`` (``"tool"``,
``"mcp"``, ``"llm"``), ``name``, ``inputs_preview`` / ``outputs_preview`` (str, at most
``PREVIEW_CHARS`` characters, never escaped: the UI escapes), ``started_at`` (UTC ISO
string), ``duration_s`` (float seconds) and ``error`` (None or ``"ExcType: message"``).
Writers may attach ``extra`` (a JSON-able dict, e.g. an LLM call's model and token counts)
which is stored but not part of the step dict; :meth:`StepBook.extras` reads it.

:class:`StepBook` keeps steps in memory (bounded per run); :class:`WorkspaceSteps` keeps them
in the workspace (a batch source of its write engine, committed with the next batch;
readable after a restart).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .codecs import db_text, dumps_lenient, sanitise, text_from_db
from .row_queue import RowQueue
from .schema import Migration, SchemaComponent
from .workspace import Workspace

#: Longest preview kept for a step's inputs or outputs (characters).
PREVIEW_CHARS = 2_000
#: Steps kept per run in memory (the newest).
STEPS_PER_RUN_IN_MEMORY = 5_000
_RUNS_IN_MEMORY = 2_000
STEP_KEYS = (
    "step_id",
    "run_id",
    "kind",
    "name",
    "inputs_preview",
    "outputs_preview",
    "started_at",
    "duration_s",
    "error",
)

STEPS_SCHEMA = SchemaComponent(
    "steps",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS run_steps (
                    seq INTEGER PRIMARY KEY,
                    step_id TEXT NOT NULL,
                    run_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    name TEXT NOT NULL,
                    inputs_preview TEXT,
                    outputs_preview TEXT,
                    started_at TEXT NOT NULL,
                    duration_s REAL NOT NULL,
                    error TEXT,
                    extra TEXT
                )""",
                "CREATE INDEX IF NOT EXISTS run_steps_run ON run_steps (run_id, seq)",
            ),
        ),
    ),
    run_tables=("run_steps",),
)


def preview_text(value: Any, max_chars: int = PREVIEW_CHARS) -> str:
    """A short text preview of ``value``: JSON when it is JSON-able (objects become their
    repr), cut to ``max_chars`` characters with ``...`` at the end."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = dumps_lenient(value) if isinstance(value, Mapping | list | tuple) else None
        except Exception:
            text = None
        if text is None:
            try:
                text = json.dumps(sanitise(value), ensure_ascii=False)
            except Exception:
                text = repr(value)
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return text


def make_step(
    *,
    run_id: str,
    kind: str,
    name: str,
    inputs: Any = None,
    outputs: Any = None,
    started_at: datetime,
    duration_s: float,
    error: BaseException | str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A step dict (the keys of the module docstring, plus ``extra`` when given).

    Args:
      inputs, outputs: any values; stored as previews (:func:`preview_text`).
      started_at: when the call started (a timezone-aware datetime; naive is taken as UTC).
      duration_s: seconds it took.
      error: the exception it raised (or its text), None if it returned.
    """
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=UTC)
    if isinstance(error, BaseException):
        message = str(error)
        error = f"{type(error).__name__}: {message}" if message else type(error).__name__
    step: dict[str, Any] = {
        "step_id": f"step-{uuid.uuid4().hex[:16]}",
        "run_id": run_id,
        "kind": kind,
        "name": name,
        "inputs_preview": None if inputs is None else preview_text(inputs),
        "outputs_preview": None if outputs is None else preview_text(outputs),
        "started_at": started_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "duration_s": float(duration_s),
        "error": error,
    }
    if extra:
        step["extra"] = dict(extra)
    return step


USAGE_KEYS = ("calls", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")


def sum_usage(extras: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Token usage summed over LLM step extras: ``{"calls", "prompt_tokens",
    "completion_tokens", "cached_tokens", "cost"}``; ``cost`` is None unless every call
    had a price (a partial sum would understate it)."""
    total: dict[str, Any] = {
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "cost": 0.0,
    }
    priced = True
    for extra in extras:
        total["calls"] += 1
        for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            total[key] += int(extra.get(key) or 0)
        cost = extra.get("cost")
        if cost is None:
            priced = False
        else:
            total["cost"] += float(cost)
    if not priced or not total["calls"]:
        total["cost"] = None
    return total


class StepBook:
    """Steps in this process's memory, per run (thread-safe; bounded per run and in
    runs kept)."""

    def __init__(self, per_run: int = STEPS_PER_RUN_IN_MEMORY) -> None:
        self.per_run = int(per_run)
        self._runs: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, step: Mapping[str, Any]) -> None:
        """Keep ``step`` (a dict from :func:`make_step`)."""
        run_id = str(step["run_id"])
        with self._lock:
            steps = self._runs.get(run_id)
            if steps is None:
                steps = self._runs[run_id] = []
                if len(self._runs) > _RUNS_IN_MEMORY:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(run_id)
            steps.append(dict(step))
            if len(steps) > self.per_run:
                del steps[: len(steps) - self.per_run]

    def _all(self, run_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(s) for s in self._runs.get(run_id, ())]

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        """``run_id``'s steps, oldest first (the keys of the module docstring)."""
        return [{k: s.get(k) for k in STEP_KEYS} for s in self._all(run_id)]

    def usage_in_memory(self, run_id: str) -> dict[str, Any] | None:
        """:func:`sum_usage` of ``run_id``'s LLM steps kept in memory, or None if it made
        no LLM call (what the manager puts in a finished run's ``meta["usage"]``)."""
        with self._lock:
            extras = [
                s["extra"]
                for s in self._runs.get(run_id, ())
                if s["kind"] == "llm" and "extra" in s
            ]
        return sum_usage(extras) if extras else None

    async def extras(self, run_id: str | None = None, kind: str | None = None) -> list[Any]:
        """The ``extra`` dicts of the steps of ``run_id`` (every run's when None), of
        ``kind`` when given, oldest first."""
        with self._lock:
            runs = [run_id] if run_id is not None else list(self._runs)
            found = [s for r in runs for s in self._runs.get(r, ())]
        return [s["extra"] for s in found if "extra" in s and (kind is None or s["kind"] == kind)]


class WorkspaceSteps(StepBook, RowQueue):
    """Steps in the workspace database (a batch source of its write engine); also kept
    in memory (:class:`StepBook`) for quick reads.

    Args:
      workspace: opened with :data:`STEPS_SCHEMA`.
    """

    INSERT_SQL = (
        "INSERT INTO run_steps (step_id, run_id, kind, name, inputs_preview, "
        "outputs_preview, started_at, duration_s, error, extra) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )

    def __init__(self, workspace: Workspace) -> None:
        StepBook.__init__(self)
        RowQueue.__init__(self, workspace)

    def add(self, step: Mapping[str, Any]) -> None:
        """Queue ``step`` for the database and keep it in memory (any thread)."""
        super().add(step)
        extra = step.get("extra")
        row = (
            step["step_id"],
            step["run_id"],
            step["kind"],
            db_text(str(step["name"])),
            db_text(step.get("inputs_preview")),
            db_text(step.get("outputs_preview")),
            step["started_at"],
            float(step["duration_s"]),
            db_text(step.get("error")),
            None if extra is None else dumps_lenient(extra),
        )
        with self._rows_lock:
            self.queue_row_locked(row)

    # reading ------------------------------------------------------------------
    async def _rows(self, run_id: str | None, kind: str | None) -> list[tuple[Any, ...]]:
        """Stored and queued rows of ``run_id`` (all runs: None) and ``kind``, in order."""
        queued = [
            r
            for r in self.queued_rows()
            if (run_id is None or r[1] == run_id) and (kind is None or r[2] == kind)
        ]
        clauses, params = ["1"], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if kind is not None:
            clauses.append("kind = ?")
            params.append(kind)

        def fetch(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return [
                tuple(r)
                for r in conn.execute(
                    "SELECT step_id, run_id, kind, name, inputs_preview, outputs_preview, "
                    f"started_at, duration_s, error, extra FROM run_steps "
                    f"WHERE {' AND '.join(clauses)} ORDER BY seq",
                    params,
                )
            ]

        rows = await self.workspace.read(fetch)
        seen = {r[0] for r in rows}
        rows.extend(r for r in queued if r[0] not in seen)
        return rows

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        """``run_id``'s steps from the workspace, oldest first.

        Raises:
          WorkspaceError: if the workspace cannot be read.
        """
        rows = await self._rows(run_id, None)
        return [
            {
                "step_id": r[0],
                "run_id": r[1],
                "kind": r[2],
                "name": text_from_db(r[3]),
                "inputs_preview": text_from_db(r[4]),
                "outputs_preview": text_from_db(r[5]),
                "started_at": r[6],
                "duration_s": r[7],
                "error": text_from_db(r[8]),
            }
            for r in rows
        ]

    async def extras(self, run_id: str | None = None, kind: str | None = None) -> list[Any]:
        """The ``extra`` dicts of stored steps (see :meth:`StepBook.extras`).

        Raises:
          WorkspaceError: if the workspace cannot be read.
        """
        rows = await self._rows(run_id, kind)
        return [json.loads(r[9]) for r in rows if r[9] is not None]
