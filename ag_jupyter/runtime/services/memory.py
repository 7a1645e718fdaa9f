"""The ``memory()`` service: AetherGraph's event memory, kept in the workspace.

``context.memory()`` is a :class:`SessionMemory` with AetherGraph's ``MemoryFacade`` API
(0.1.0a15 ``services/memory/facade/``; 0.1.0a17 names too) whose events are
:class:`Event` objects with a15's fields (``event_id``, ``ts``, ``kind``, ``stage``,
``text``, ``tags``, ``data``, ``metrics``, ``tool``, ``topic``, ``severity``, ``signal``,
``inputs``, ``outputs``, run/session/graph/node ids, ...)::

    await mem.record(kind="train_log", data={"epoch": 1, "loss": 0.25}, tags=["train"])
    events = await mem.recent(kinds=["train_log"], limit=3)        # newest first
    logs = await mem.recent_data(kinds=["train_log"], limit=3)      # just the data
    await mem.record_tool_result(tool="train.step", outputs=[{"name": "acc", "value": 0.9}])
    await mem.last_by_name("acc")                                   # {"value": 0.9, ...}

Scope (as a15's ``Scope.memory_scope_id``): the events of the context's session
(``session:<id>``; ``open_session`` contexts always have one), or of its run
(``run:<id>``) for a graph run without a session. ``level="session"`` / ``level="run"``
narrow a query to this session's / this run's events inside that scope.

Storage: one row per event in the workspace database; every query is SQL (filters by
kinds, tags, time, stage, severity, tool/topic, run/session/graph/node ids). Events are
durable at once, so a15's ``use_persistence=`` and hot-log limits change nothing here.
``data`` follows a15's ``append_event``: a dict is kept as the data, a str becomes the
``text`` (data None), any other JSON value is wrapped as ``{"value": ...}``; ``text``
defaults to the data's JSON text, cut at 2,000 characters as a15 does. Values must be
JSON (``store.codecs.dumps_json``: precise errors for other types, NaN, cycles, nesting
too deep); data is at most :data:`MAX_DATA_BYTES` of JSON.

Older ag_jupyter names kept as aliases (their docstrings say so): ``append`` (=
``record``), ``query`` (oldest first, as before), ``add_chat_turn`` / ``chat_history``
(chat turns as ``{"role", "content"}`` messages, oldest first), ``MemoryEvent`` (=
``Event``) with ``.id`` / ``.created_at``. Workspaces written before this change are
migrated when opened: their events get ids and text, and their chat turns become a15
``chat.turn`` events.

Every method is async; SQLite work runs in the workspace's threads.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..store.codecs import check_identifier, check_tags, db_text, dumps_json, text_from_db
from ..store.schema import Migration, SchemaComponent
from ..store.workspace import Workspace
from .kv import context_scope

CHAT_KIND = "chat.turn"
"""Kind of chat turns (a15 ``append_chat_turn``)."""
LEGACY_CHAT_KIND = "chat_turn"
"""Kind of chat turns written by ag_jupyter before it followed a15 (migrated on open)."""
TOOL_RESULT_KIND = "tool_result"
STATE_KIND = "state.snapshot"
#: Longest ``text`` kept (characters), as a15's ``append_event``.
MAX_TEXT_CHARS = 2_000
#: Largest JSON text of an event's data (bytes).
MAX_DATA_BYTES = 16 * 1024 * 1024
_MAX_LIMIT = 10_000

_V2_COLUMNS = (
    ("event_id", "TEXT"),
    ("stage", "TEXT"),
    ("text", "TEXT"),
    ("metrics", "TEXT"),
    ("graph_id", "TEXT"),
    ("node_id", "TEXT"),
    ("agent_id", "TEXT"),
    ("app_id", "TEXT"),
    ("tool", "TEXT"),
    ("topic", "TEXT"),
    ("severity", "INTEGER NOT NULL DEFAULT 2"),
    ("signal", "REAL NOT NULL DEFAULT 0"),
    ("inputs", "TEXT"),
    ("outputs", "TEXT"),
)


def _a15_data(value: Any) -> tuple[Any, str | None]:
    """``(data, text)`` as a15's ``append_event`` derives them from ``data=``."""
    if value is None:
        return None, None
    if isinstance(value, str):
        return None, value
    text = json.dumps(value, ensure_ascii=False)
    return (value if isinstance(value, dict) else {"value": value}), text


def _cut(text: str | None) -> str | None:
    if text is not None and len(text) > MAX_TEXT_CHARS:
        return text[:MAX_TEXT_CHARS] + " ...[truncated]"
    return text


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """Give events written by the landed (version 1) code a15's fields."""
    for name, decl in _V2_COLUMNS:
        conn.execute(f"ALTER TABLE memory ADD COLUMN {name} {decl}")
    rows = conn.execute("SELECT id, kind, data, tags FROM memory").fetchall()
    for seq, kind, data_json, tags_json in rows:
        value = json.loads(data_json)
        tags = json.loads(tags_json)
        stage = None
        if kind == LEGACY_CHAT_KIND and isinstance(value, dict):
            # {"role", "content"} -> a15's chat.turn: {"role", "text"}, stage = role
            role, content = value.get("role"), value.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            kind, stage = CHAT_KIND, role
            data, text = {"role": role, "text": text}, text
            tags = ["chat", *[t for t in tags if t != "chat"]]
        else:
            data, text = _a15_data(value)
        conn.execute(
            "UPDATE memory SET event_id = ?, kind = ?, stage = ?, data = ?, text = ?, "
            "tags = ? WHERE id = ?",
            (
                f"evt-{seq:012d}",
                kind,
                stage,
                json.dumps(data),
                db_text(_cut(text)),
                json.dumps(tags),
                seq,
            ),
        )
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS memory_event_id ON memory (event_id)")
    conn.execute("CREATE INDEX IF NOT EXISTS memory_scope_tool ON memory (scope, tool, id)")


MEMORY_SCHEMA = SchemaComponent(
    "memory",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS memory (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    scope TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    data TEXT NOT NULL,
                    tags TEXT NOT NULL DEFAULT '[]',
                    run_id TEXT,
                    session_id TEXT,
                    created_at REAL NOT NULL
                )""",
                "CREATE INDEX IF NOT EXISTS memory_scope ON memory (scope, id)",
                "CREATE INDEX IF NOT EXISTS memory_scope_kind ON memory (scope, kind, id)",
            ),
        ),
        # a15's Event fields; events of version 1 get ids, text and a15's chat turns.
        Migration(2, apply=_migrate_v2),
    ),
)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class Event:
    """One memory event, with AetherGraph 0.1.0a15's ``Event`` fields
    (``contracts/services/memory.py``).

    Attributes:
      event_id (str): unique id. ts (str): when it was recorded, ISO 8601 UTC
        (``...Z``, microseconds). run_id, scope_id (``session:<id>`` / ``run:<id>``),
        session_id, graph_id, node_id, agent_id, app_id: who recorded it.
      kind (str): its type label. stage (str | None): a phase label (a chat turn's role).
      text (str | None): human-readable content (at most 2,000 characters + a mark).
      tags (list[str]), data (dict | None), metrics (dict[str, float] | None).
      tool, topic (str | None): a tool result's tool. severity (int, 1 low - 3 high).
      signal (float, 0-1): estimated importance. inputs, outputs (lists of
        ``{"name", "kind"/"vtype", "value"}`` dicts, or None).
      user_id, org_id, client_id, embedding, pii_flags: always None here (a15 fields for
        multi-tenant servers). version (int): 2, as a15.
      seq (int): ag_jupyter's increasing number (later events have larger ones).
    """

    event_id: str
    ts: str
    run_id: str | None
    scope_id: str
    user_id: str | None = None
    org_id: str | None = None
    client_id: str | None = None
    session_id: str | None = None
    kind: str | None = None
    stage: str | None = None
    text: str | None = None
    tags: list[str] | None = None
    data: dict[str, Any] | None = None
    metrics: dict[str, float] | None = None
    graph_id: str | None = None
    node_id: str | None = None
    tool: str | None = None
    topic: str | None = None
    severity: int = 2
    signal: float = 0.0
    inputs: list[Any] | None = None
    outputs: list[Any] | None = None
    app_id: str | None = None
    agent_id: str | None = None
    embedding: list[float] | None = None
    pii_flags: dict[str, bool] | None = None
    version: int = 2
    seq: int = field(default=0, compare=False)

    @property
    def id(self) -> int:
        """ag_jupyter's older name for :attr:`seq`."""
        return self.seq

    @property
    def created_at(self) -> datetime:
        """:attr:`ts` as a timezone-aware datetime (ag_jupyter's older field)."""
        return datetime.fromisoformat(self.ts.replace("Z", "+00:00"))

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict of its fields."""
        return asdict(self)


MemoryEvent = Event
"""ag_jupyter's older name of :class:`Event`."""

_COLUMNS = (
    "id, event_id, scope, kind, stage, data, text, tags, metrics, run_id, session_id, "
    "graph_id, node_id, agent_id, app_id, tool, topic, severity, signal, inputs, outputs, "
    "created_at"
)

_QUALIFIED = ", ".join(f"memory.{c.strip()}" for c in _COLUMNS.split(","))


def _loads(value: Any) -> Any:
    return None if value is None else json.loads(value)


def _row_event(row: sqlite3.Row) -> Event:
    return Event(
        event_id=row["event_id"],
        ts=_iso(row["created_at"]),
        run_id=row["run_id"],
        scope_id=row["scope"],
        session_id=row["session_id"],
        kind=row["kind"],
        stage=row["stage"],
        text=text_from_db(row["text"]),
        tags=json.loads(row["tags"]),
        data=_loads(row["data"]),
        metrics=_loads(row["metrics"]),
        graph_id=row["graph_id"],
        node_id=row["node_id"],
        tool=row["tool"],
        topic=row["topic"],
        severity=row["severity"],
        signal=row["signal"],
        inputs=_loads(row["inputs"]),
        outputs=_loads(row["outputs"]),
        app_id=row["app_id"],
        agent_id=row["agent_id"],
        seq=row["id"],
    )


def _epoch(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise TypeError(
                f"{name} must be a datetime, ISO 8601 text or epoch seconds; got {value!r}"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive: taken as UTC
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be a datetime, ISO 8601 text or epoch seconds; got {value!r}")


def _check_limit(limit: Any, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= _MAX_LIMIT:
        raise ValueError(f"{name} must be an int from 1 to {_MAX_LIMIT}, got {limit!r}")
    return limit


def _json_field(value: Any, what: str) -> str | None:
    if value is None:
        return None
    text = dumps_json(value, what)
    if len(text) > MAX_DATA_BYTES:
        raise ValueError(
            f"{what} are at most {MAX_DATA_BYTES} bytes of JSON; this one is {len(text)} "
            "bytes. Save large data with context.artifacts() and record its uri"
        )
    return text


def _kinds(kinds: str | Iterable[str] | None) -> list[str] | None:
    if kinds is None:
        return None
    if isinstance(kinds, str):
        return [kinds]
    return [check_identifier("each of kinds", k, allow_none=False) for k in kinds]  # type: ignore[misc]


def _tags(tags: Iterable[str] | None) -> list[str]:
    return list(dict.fromkeys(check_tags(tags)))


def _estimate_signal(text: str | None, metrics: Mapping[str, Any] | None, severity: int) -> float:
    """a15's ``MemoryFacade._estimate_signal``."""
    score = 0.15 + 0.1 * severity
    if text:
        score += min(len(text) / 400.0, 0.4)
    if metrics:
        score += 0.2
    return max(0.0, min(1.0, score))


class SessionMemory:
    """The event memory of one scope (what ``context.memory()`` returns); see the module
    docstring.

    Attributes:
      scope: ``"session:<id>"`` (or ``"run:<id>"`` for a run without a session); a15's
        ``memory_scope_id`` / ``timeline_id``.
      run_id, session_id, graph_id, node_id, agent_id, app_id: the context's ids,
        stamped on every event it records.
    """

    __slots__ = (
        "_ws",
        "agent_id",
        "app_id",
        "graph_id",
        "node_id",
        "run_id",
        "scope",
        "session_id",
    )

    def __init__(
        self,
        workspace: Workspace,
        scope: str,
        *,
        run_id: str | None,
        session_id: str | None,
        graph_id: str | None = None,
        node_id: str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
    ) -> None:
        self._ws = workspace
        self.scope = scope
        self.run_id = run_id
        self.session_id = session_id
        self.graph_id = graph_id
        self.node_id = node_id
        self.agent_id = agent_id
        self.app_id = app_id

    def __repr__(self) -> str:
        return f"SessionMemory(scope={self.scope!r})"

    # a15 introspection -----------------------------------------------------------
    @property
    def memory_scope_id(self) -> str:
        """a15's name for :attr:`scope`."""
        return self.scope

    @property
    def timeline_id(self) -> str:
        """a15's partition key: the same as :attr:`scope` here."""
        return self.scope

    def scope_id(self) -> str:
        """The memory scope id (``session:<id>`` or ``run:<id>``), as a15."""
        return self.scope

    def timeline(self) -> str:
        """The timeline id, as a15 (the scope id here)."""
        return self.scope

    def scope_info(self) -> dict[str, Any]:
        """A dict describing this memory's scope (a15's ``scope_info``)."""
        return {
            "timeline_id": self.scope,
            "memory_scope_id": self.scope,
            "memory_level": None,
            "bucket_level": self.scope.split(":", 1)[0],
            "has_indices": False,
            "run_id": self.run_id,
            "session_id": self.session_id,
            "graph_id": self.graph_id,
            "node_id": self.node_id,
        }

    def event_to_dict(self, e: Event) -> dict[str, Any]:
        """An event as a15's normalised dict (``event_id, ts, kind, stage, text, tags,
        data, metrics, tool, topic, severity, signal, inputs, outputs`` and the ids)."""
        out = e.to_dict()
        out.pop("seq", None)
        out["timeline_id"] = self.scope
        return out

    def normalize_recent_output(
        self, events: list[Event], *, return_event: bool = True
    ) -> list[Any]:
        """``events`` as they are, or as dicts (:meth:`event_to_dict`) when not
        ``return_event`` (a15)."""
        return list(events) if return_event else [self.event_to_dict(e) for e in events]

    # ------------------------------------------------------------------ writing
    async def record_raw(
        self,
        *,
        base: Mapping[str, Any],
        text: str | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> Event:
        """Append an event built from ``base`` (a15): keys ``kind`` (default ``"misc"``),
        ``stage``, ``severity``, ``signal``, ``tags``, ``data``, ``inputs``, ``outputs``,
        ``tool``, ``topic``, ``event_id``; ``text`` and ``metrics`` as given (``text`` cut
        at 2,000 characters). Returns the stored event once committed.

        Raises:
          TypeError: a field of the wrong type, or a value that is not JSON (naming its
            type). ValueError: NUL / lone surrogates in an identifier, a cycle, nesting too
            deep, data larger than ``MAX_DATA_BYTES``, or a severity outside 1-3.
          WorkspaceWriteError: if the workspace cannot be written (nothing is saved).
        """
        if not isinstance(base, Mapping):
            raise TypeError(f"base must be a dict, got {type(base).__name__}")
        kind = base.get("kind") or "misc"
        check_identifier("kind", kind, allow_none=False)
        stage = check_identifier("stage", base.get("stage"))
        tool = check_identifier("tool", base.get("tool"))
        topic = check_identifier("topic", base.get("topic"))
        event_id = check_identifier("event_id", base.get("event_id")) or uuid.uuid4().hex[:24]
        severity = base.get("severity", 2)
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 3:
            raise ValueError(f"severity must be 1 (low), 2 (medium) or 3 (high), got {severity!r}")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"text must be a str or None, got {type(text).__name__}")
        text = _cut(text)
        tag_list = _tags(base.get("tags"))
        data = base.get("data")
        if data is not None and not isinstance(data, dict):
            raise TypeError(f"base['data'] must be a dict or None, got {type(data).__name__}")
        data_json = _json_field(data, "memory data") or "null"
        metrics_json = _json_field(dict(metrics) if metrics else None, "memory metrics")
        inputs_json = _json_field(base.get("inputs"), "memory inputs")
        outputs_json = _json_field(base.get("outputs"), "memory outputs")
        signal = base.get("signal")
        if signal is None:
            signal = _estimate_signal(text, metrics, severity)
        if isinstance(signal, bool) or not isinstance(signal, int | float):
            raise TypeError(f"signal must be a number, got {signal!r}")
        now = time.time()
        values = (
            event_id,
            self.scope,
            kind,
            stage,
            data_json,
            db_text(text),
            json.dumps(tag_list),
            metrics_json,
            self.run_id,
            self.session_id,
            self.graph_id,
            self.node_id,
            self.agent_id,
            self.app_id,
            tool,
            topic,
            severity,
            float(signal),
            inputs_json,
            outputs_json,
            now,
        )

        def write(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO memory (event_id, scope, kind, stage, data, text, tags, metrics, "
                "run_id, session_id, graph_id, node_id, agent_id, app_id, tool, topic, "
                "severity, signal, inputs, outputs, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cursor.lastrowid or 0)

        try:
            seq = await self._ws.write(write)
        except sqlite3.IntegrityError:
            raise ValueError(f"an event with event_id {event_id!r} already exists") from None
        return Event(
            event_id=event_id,
            ts=_iso(now),
            run_id=self.run_id,
            scope_id=self.scope,
            session_id=self.session_id,
            kind=kind,
            stage=stage,
            text=text,
            tags=tag_list,
            data=json.loads(data_json),
            metrics=_loads(metrics_json),
            graph_id=self.graph_id,
            node_id=self.node_id,
            tool=tool,
            topic=topic,
            severity=severity,
            signal=float(signal),
            inputs=_loads(inputs_json),
            outputs=_loads(outputs_json),
            app_id=self.app_id,
            agent_id=self.agent_id,
            seq=seq,
        )

    async def append_event(
        self,
        *,
        kind: str,
        data: Any,
        tags: Iterable[str] | None = None,
        severity: int = 2,
        stage: str | None = None,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        signal: float | None = None,
        text: str | None = None,
        topic: str | None = None,
        tool: str | None = None,
        event_id: str | None = None,
    ) -> Event:
        """Append an event (a15 / 0.1.0a17 ``append_event``). ``data``: a dict is kept;
        a str becomes ``text``; other JSON values are kept as ``{"value": data}``.
        ``text`` defaults to the data's JSON text. Errors: as :meth:`record_raw`."""
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"kind must be a non-empty str; got {kind!r}")
        dumps_json(data, "memory data")  # the precise error before anything else
        stored, derived = _a15_data(data)
        base = {
            "kind": kind,
            "stage": stage,
            "severity": severity,
            "tags": tags,
            "data": stored,
            "inputs": inputs,
            "outputs": outputs,
            "topic": topic,
            "tool": tool,
            "signal": signal,
            "event_id": event_id,
        }
        return await self.record_raw(
            base=base, text=text if text is not None else derived, metrics=metrics
        )

    async def record(
        self,
        kind: str,
        data: Any = None,
        tags: Iterable[str] | None = None,
        severity: int = 2,
        stage: str | None = None,
        inputs_ref: list[Any] | None = None,
        outputs_ref: list[Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        signal: float | None = None,
        text: str | None = None,
    ) -> Event:
        """Append an event of ``kind`` (a15 ``record``: :meth:`append_event` with
        ``inputs_ref`` / ``outputs_ref`` as ``inputs`` / ``outputs``); returns it once
        committed. a15 warns that ``record`` is deprecated; its docs use it throughout, so
        it stays here without a warning.

        Raises:
          TypeError: if ``kind`` is not a non-empty str, a tag is not a str (or ``tags`` is
            a bare str), or ``data`` is not JSON-serialisable (naming its type).
          ValueError, WorkspaceWriteError: as :meth:`record_raw`.
        """
        return await self.append_event(
            kind=kind,
            data=data,
            tags=tags,
            severity=severity,
            stage=stage,
            inputs=inputs_ref,
            outputs=outputs_ref,
            metrics=metrics,
            signal=signal,
            text=text,
        )

    async def append(
        self, kind: str, data: Any = None, *, tags: Iterable[str] | None = None, **kw: Any
    ) -> Event:
        """ag_jupyter's older alias of :meth:`record`."""
        return await self.record(kind, data, tags, **kw)

    async def append_chat_turn(
        self,
        role: str,
        text: str,
        *,
        tags: Iterable[str] | None = None,
        data: Mapping[str, Any] | None = None,
        severity: int = 2,
        signal: float | None = None,
    ) -> Event:
        """Record a chat turn as a15: kind ``"chat.turn"``, ``stage`` = ``role``, data
        ``{"role", "text", **data}``, tags ``["chat", *tags]``.

        Raises:
          TypeError: if ``role`` is not a non-empty str or ``text`` not a str.
          ValueError, WorkspaceWriteError: as :meth:`record_raw`.
        """
        if not isinstance(role, str) or not role:
            raise TypeError(f"role must be a non-empty str; got {role!r}")
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        payload: dict[str, Any] = {"role": role, "text": text}
        if data:
            payload.update(data)
        return await self.append_event(
            kind=CHAT_KIND,
            data=payload,
            tags=["chat", *_tags(tags)],
            severity=severity,
            stage=role,
            signal=signal,
            text=text,
        )

    async def record_chat(self, role: str, text: str, **kw: Any) -> Event:
        """a15's alias of :meth:`append_chat_turn`."""
        return await self.append_chat_turn(role, text, **kw)

    async def record_chat_user(self, text: str, **kw: Any) -> Event:
        """A user chat turn (a15)."""
        return await self.append_chat_turn("user", text, **kw)

    async def record_chat_assistant(self, text: str, **kw: Any) -> Event:
        """An assistant chat turn (a15)."""
        return await self.append_chat_turn("assistant", text, **kw)

    async def record_chat_system(self, text: str, **kw: Any) -> Event:
        """A system chat turn (a15)."""
        return await self.append_chat_turn("system", text, **kw)

    async def add_chat_turn(
        self, role: str, content: Any, *, tags: Iterable[str] | None = None
    ) -> Event:
        """ag_jupyter's older form of :meth:`append_chat_turn`: ``content`` may be any JSON
        (non-str content is stored as its JSON text).

        Raises:
          TypeError: if ``role`` is not a non-empty str or ``content`` is not JSON.
        """
        if not isinstance(content, str):
            dumps_json(content, "memory data")  # the precise error for non-JSON content
            content = json.dumps(content, ensure_ascii=False)
        return await self.append_chat_turn(role, content, tags=tags)

    async def append_tool_result(
        self,
        *,
        tool: str,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        tags: Iterable[str] | None = None,
        metrics: Mapping[str, float] | None = None,
        message: str | None = None,
        severity: int = 3,
    ) -> Event:
        """Record a tool's result (a15): kind ``"tool_result"``, ``tool`` = ``topic`` =
        ``tool``, data ``{"tool": tool}``, ``inputs`` / ``outputs`` as lists of
        ``{"name", "kind"/"vtype", "value"}`` dicts, ``text`` = ``message``.

        Raises:
          TypeError: if ``tool`` is not a non-empty str; as :meth:`record_raw` otherwise.
        """
        if not isinstance(tool, str) or not tool:
            raise TypeError(f"tool must be a non-empty str; got {tool!r}")
        return await self.append_event(
            kind=TOOL_RESULT_KIND,
            data={"tool": tool},
            tags=tags,
            severity=severity,
            inputs=list(inputs or []),
            outputs=list(outputs or []),
            metrics=metrics,
            text=message,
            tool=tool,
            topic=tool,
        )

    async def record_tool_result(self, **kw: Any) -> Event:
        """a15's name of :meth:`append_tool_result` (same keywords)."""
        return await self.append_tool_result(**kw)

    async def write_result(
        self,
        *,
        tool: str | None = None,
        inputs: list[Any] | None = None,
        outputs: list[Any] | None = None,
        tags: Iterable[str] | None = None,
        metrics: Mapping[str, float] | None = None,
        message: str | None = None,
        severity: int = 3,
        topic: str | None = None,
    ) -> Event:
        """The older AetherGraph name of :meth:`record_tool_result` (in its docs;
        ``topic=`` is the older name of ``tool=``).

        Raises:
          ValueError: if neither ``tool`` nor ``topic`` is given.
        """
        tool = tool if tool is not None else topic
        if tool is None:
            raise ValueError("write_result requires a 'tool' (or legacy 'topic') name")
        return await self.append_tool_result(
            tool=tool,
            inputs=inputs,
            outputs=outputs,
            tags=tags,
            metrics=metrics,
            message=message,
            severity=severity,
        )

    async def write_tool_result(self, **kw: Any) -> Event:
        """Older AetherGraph alias of :meth:`record_tool_result`."""
        return await self.append_tool_result(**kw)

    async def append_state_snapshot(
        self,
        key: str,
        value: Any,
        *,
        tags: Iterable[str] | None = None,
        meta: Mapping[str, Any] | None = None,
        severity: int = 2,
        signal: float | None = None,
        kind: str = STATE_KIND,
        stage: str | None = None,
    ) -> Event:
        """Record the value of state ``key`` (a15 / 0.1.0a17): kind ``"state.snapshot"``,
        data ``{"key", "value", "meta"}``, tags ``["state", "state:<key>", *tags]``.
        Pydantic models and dataclasses are stored as their dicts. Read it back with
        :meth:`get_latest_state`.

        Raises:
          TypeError: if ``key`` is not a non-empty str or ``value`` is not JSON.
        """
        if not isinstance(key, str) or not key:
            raise TypeError(f"key must be a non-empty str; got {key!r}")
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        elif hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
            value = asdict(value)
        payload = {"key": key, "value": value, "meta": dict(meta or {})}
        value_json = dumps_json(value, "state values")
        return await self.append_event(
            kind=kind,
            data=payload,
            tags=["state", f"state:{key}", *_tags(tags)],
            severity=severity,
            stage=stage,
            signal=signal,
            text=f"state:{key} {value_json}",
        )

    async def record_state(self, key: str, value: Any, **kw: Any) -> Event:
        """a15's alias of :meth:`append_state_snapshot`."""
        return await self.append_state_snapshot(key, value, **kw)

    # ------------------------------------------------------------------ reading
    async def query_events(
        self,
        *,
        kinds: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int | None = 50,
        level: str | None = None,
        use_persistence: bool = False,
        since: datetime | float | str | None = None,
        until: datetime | float | str | None = None,
        offset: int = 0,
        return_event: bool = True,
        session_id: str | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
        client_id: str | None = None,
        graph_id: str | None = None,
        node_id: str | None = None,
        topic: str | None = None,
        tool: str | None = None,
        order_dir: str = "desc",
        stage: str | None = None,
        severity: int | None = None,
        min_severity: int | None = None,
        text_contains: str | None = None,
    ) -> list[Any]:
        """Events of this scope matching every filter, as a15's ``query_events``: newest
        first (``order_dir="asc"``: oldest first), after skipping ``offset``.

        Args:
          kinds: event kinds (one str or several). tags: events carry all of these.
          limit: at most this many (1 to 10000; None: 10000).
          level: ``"session"`` / ``"run"``: only this context's session's / run's events;
            ``None`` / ``"scope"`` (and a15's ``"user"`` / ``"org"``): the whole scope.
          since / until: recorded at or after / at or before (datetime, naive = UTC; ISO
            8601 text; or epoch seconds).
          session_id, run_id, agent_id, graph_id, node_id, topic, tool: exact matches.
          stage, severity (exact), min_severity, text_contains (case-insensitive for
            ASCII letters): ag_jupyter's extra filters.
          return_event: False gives a15's dicts (:meth:`event_to_dict`).
          use_persistence, client_id: accepted for a15; every event is durable here and
            there are no clients.

        Raises:
          TypeError: for a bad kinds/tags/time type. ValueError: for a bad ``limit`` /
            ``offset`` / ``order_dir``. WorkspaceError: if the database cannot be read.
        """
        del use_persistence, client_id
        limit = _MAX_LIMIT if limit is None else _check_limit(limit)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"offset must be an int >= 0, got {offset!r}")
        direction = str(order_dir).lower()
        if direction not in ("asc", "desc"):
            raise ValueError(f"order_dir must be 'asc' or 'desc', got {order_dir!r}")
        where = ["scope = ?"]
        params: list[Any] = [self.scope]
        kind_list = _kinds(kinds)
        if kind_list is not None:
            if not kind_list:
                return []
            where.append(f"kind IN ({', '.join('?' * len(kind_list))})")
            params.extend(kind_list)
        for tag in _tags(tags):
            where.append("EXISTS (SELECT 1 FROM json_each(memory.tags) WHERE value = ?)")
            params.append(tag)
        if level == "session" and self.session_id:
            session_id = session_id if session_id is not None else self.session_id
        elif level == "run" and self.run_id:
            run_id = run_id if run_id is not None else self.run_id
        for column, value in (
            ("session_id", session_id),
            ("run_id", run_id),
            ("agent_id", agent_id),
            ("graph_id", graph_id),
            ("node_id", node_id),
            ("topic", topic),
            ("tool", tool),
            ("stage", stage),
            ("severity", severity),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if min_severity is not None:
            where.append("severity >= ?")
            params.append(min_severity)
        if text_contains:
            where.append("instr(lower(text), lower(?)) > 0")
            params.append(text_contains)
        start, end = _epoch(since, "since"), _epoch(until, "until")
        # ts has microseconds: half a microsecond of slack makes since=event.ts match it
        if start is not None:
            where.append("created_at >= ?")
            params.append(start - 5e-7)
        if end is not None:
            where.append("created_at <= ?")
            params.append(end + 5e-7)
        sql = (
            f"SELECT {_COLUMNS} FROM memory WHERE {' AND '.join(where)} "
            f"ORDER BY id {direction.upper()} LIMIT ? OFFSET ?"
        )
        params.extend((limit, offset))

        def read(conn: sqlite3.Connection) -> list[Event]:
            return [_row_event(row) for row in conn.execute(sql, params)]

        return self.normalize_recent_output(await self._ws.read(read), return_event=return_event)

    async def recent(
        self,
        n: int | None = None,
        *,
        kinds: str | Iterable[str] | None = None,
        limit: int = 50,
        level: str | None = None,
        return_event: bool = True,
        kind: str | None = None,
    ) -> list[Any]:
        """The newest ``limit`` events (of ``kinds``), **newest first**, as a15's
        ``recent``.

        ``recent(n)`` (a positional count) and ``kind=`` are ag_jupyter's older form;
        the order is now a15's (it used to be oldest first: use :meth:`query` for that).

        Raises:
          ValueError: if the count is not an int from 1 to 10000. WorkspaceError: as
            :meth:`query_events`.
        """
        if n is not None:
            limit = _check_limit(n, "n")
        if kind is not None:
            kinds = [kind] if kinds is None else [*(_kinds(kinds) or []), kind]
        return await self.query_events(
            kinds=kinds, limit=limit, level=level, return_event=return_event
        )

    async def recent_events(
        self,
        *,
        kinds: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int = 50,
        overfetch: int = 5,
        level: str | None = None,
        use_persistence: bool = False,
        return_event: bool = True,
    ) -> list[Any]:
        """The newest ``limit`` events matching ``kinds`` and ``tags``, newest first
        (0.1.0a17's ``recent_events``; a15's ``overfetch`` is accepted and not needed:
        tags are filtered in SQL). Errors: as :meth:`query_events`."""
        return await self.query_events(
            kinds=kinds, tags=tags, limit=limit, level=level, return_event=return_event
        )

    async def recent_data(
        self,
        *,
        kinds: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int = 50,
        level: str | None = None,
    ) -> list[Any]:
        """The data of the newest ``limit`` events, newest first (AetherGraph's docs):
        each event's ``data``, else its ``text`` parsed as JSON when it looks like JSON,
        else the text. Data that a15 wrapped as ``{"value": x}`` comes back as it was
        recorded (``x``). Errors: as :meth:`query_events`."""
        out: list[Any] = []
        for e in await self.query_events(kinds=kinds, tags=tags, limit=limit, level=level):
            if e.data is not None:
                wrapped = set(e.data) == {"value"} and e.text == json.dumps(
                    e.data["value"], ensure_ascii=False
                )
                out.append(e.data["value"] if wrapped else e.data)
            elif e.text:
                stripped = e.text.strip()
                if stripped[:1] in "{[" and stripped[-1:] in "}]":
                    try:
                        out.append(json.loads(stripped))
                        continue
                    except ValueError:
                        pass
                out.append(e.text)
        return out

    async def query(
        self,
        kind: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        since: datetime | float | str | None = None,
        until: datetime | float | str | None = None,
        limit: int = 100,
    ) -> list[Event]:
        """ag_jupyter's older query: the newest ``limit`` matching events, **oldest
        first** (``until`` exclusive). Prefer :meth:`query_events`.

        Raises:
          TypeError, ValueError, WorkspaceError: as :meth:`query_events`.
        """
        _check_limit(limit)
        end = _epoch(until, "until")
        events = await self.query_events(
            kinds=kind,
            tags=tags,
            since=since,
            until=None if end is None else end - 1e-6,
            limit=limit,
        )
        events.reverse()
        return events

    async def get_event(self, event_id: str) -> Event | None:
        """The event with this id in this scope, or None (a15)."""
        scope = self.scope

        def read(conn: sqlite3.Connection) -> Event | None:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM memory WHERE scope = ? AND event_id = ?",
                (scope, event_id),
            ).fetchone()
            return None if row is None else _row_event(row)

        return await self._ws.read(read)

    # ------------------------------------------------------------ tool results
    async def recent_tool_results(
        self, *, tool: str, limit: int = 10, return_event: bool = True
    ) -> list[Any]:
        """The newest ``limit`` ``tool_result`` events of ``tool``, newest first (a15)."""
        return await self.query_events(
            kinds=[TOOL_RESULT_KIND], tool=tool, limit=limit, return_event=return_event
        )

    async def recent_tool_result_data(self, *, tool: str, limit: int = 10) -> list[dict[str, Any]]:
        """:meth:`recent_tool_results` as dicts (older AetherGraph helper)."""
        return await self.recent_tool_results(tool=tool, limit=limit, return_event=False)

    async def _outputs(
        self, where: str, params: Sequence[Any], limit: int
    ) -> list[tuple[Event, dict[str, Any]]]:
        scope = self.scope
        sql = (
            f"SELECT {_QUALIFIED}, o.value AS output FROM memory, json_each(memory.outputs) o "
            f"WHERE scope = ? AND memory.outputs IS NOT NULL AND {where} "
            "ORDER BY memory.id DESC, o.key DESC LIMIT ?"
        )

        def read(conn: sqlite3.Connection) -> list[tuple[Event, dict[str, Any]]]:
            return [
                (_row_event(row), json.loads(row["output"]))
                for row in conn.execute(sql, (scope, *params, limit))
            ]

        return await self._ws.read(read)

    async def last_by_name(self, name: str) -> dict[str, Any] | None:
        """The newest output named ``name`` among this scope's events (AetherGraph's
        docs; a15's index kept it per run): ``{"ts", "event_id", "name", "kind", "vtype",
        "value"}``, or None."""
        found = await self._outputs("json_extract(o.value, '$.name') = ?", (name,), 1)
        if not found:
            return None
        event, output = found[0]
        return {
            "ts": event.ts,
            "event_id": event.event_id,
            "name": output.get("name"),
            "kind": output.get("kind"),
            "vtype": output.get("vtype"),
            "value": output.get("value"),
        }

    async def get_last_value(self, name: str) -> dict[str, Any] | None:
        """AetherGraph's alias of :meth:`last_by_name`."""
        return await self.last_by_name(name)

    async def latest_refs_by_kind(self, kind: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` outputs whose ``kind`` is ``kind`` (or references, vtype
        ``"ref"``, whose value's ``kind`` is), newest first: ``{"ts", "event_id", "name",
        "kind", "value", "uri"}`` (``uri`` for references, else None)."""
        found = await self._outputs(
            "(json_extract(o.value, '$.kind') = ? OR (json_extract(o.value, '$.vtype') = "
            "'ref' AND json_extract(o.value, '$.value.kind') = ?))",
            (kind, kind),
            _check_limit(limit),
        )
        out = []
        for event, output in found:
            value = output.get("value")
            uri = value.get("uri") if isinstance(value, dict) else None
            out.append(
                {
                    "ts": event.ts,
                    "event_id": event.event_id,
                    "name": output.get("name"),
                    "kind": output.get("kind"),
                    "value": value,
                    "uri": uri,
                }
            )
        return out

    async def get_latest_values_by_kind(
        self, kind: str, *, limit: int = 50
    ) -> list[dict[str, Any]]:
        """AetherGraph's alias of :meth:`latest_refs_by_kind`."""
        return await self.latest_refs_by_kind(kind, limit=limit)

    async def last_outputs_by_topic(self, topic: str) -> dict[str, Any] | None:
        """The outputs of the newest event of ``topic`` (a tool result's tool) that has
        outputs: ``{"ts", "event_id", "last_outputs": {name: value}}``, or None."""
        events = [e for e in await self.query_events(topic=topic, limit=50) if e.outputs][:1]
        if not events:
            return None
        e = events[0]
        outputs = {
            o["name"]: o.get("value")
            for o in e.outputs or []
            if isinstance(o, dict) and o.get("name")
        }
        return {"ts": e.ts, "event_id": e.event_id, "last_outputs": outputs}

    async def get_last_outputs_for_topic(self, topic: str) -> dict[str, Any] | None:
        """AetherGraph's alias of :meth:`last_outputs_by_topic`."""
        return await self.last_outputs_by_topic(topic)

    # -------------------------------------------------------------------- chat
    async def recent_chat(
        self,
        *,
        limit: int = 50,
        roles: Sequence[str] | None = None,
        tags: Iterable[str] | None = None,
        level: str | None = None,
        use_persistence: bool = False,
        return_event: bool = False,
        include_tags: bool = False,
        include_ts: bool = False,
    ) -> list[Any]:
        """The last ``limit`` chat turns (of ``roles``) **oldest first**, ready for a
        prompt: ``[{"role", "text"}]`` (plus ``tags`` / ``ts`` when asked), or events.

        The order is 0.1.0a17's ("chronological prompt order"); 0.1.0a15 returned them
        newest first, which feeds a conversation backwards to a model.
        """
        if isinstance(roles, str):
            roles = [roles]
        wanted = None if roles is None else set(roles)
        events: list[Event] = []
        offset = 0
        while len(events) < limit:
            page = await self.query_events(
                kinds=[CHAT_KIND],
                tags=tags,
                level=level,
                limit=min(_MAX_LIMIT, max(limit, 200)),
                offset=offset,
            )
            if not page:
                break
            offset += len(page)
            events.extend(e for e in page if wanted is None or (e.stage or "user") in wanted)
            if wanted is None:
                break
        events = events[:limit]
        events.reverse()
        if return_event:
            return events
        out = []
        for e in events:
            item: dict[str, Any] = {
                "role": e.stage or (e.data or {}).get("role") or "user",
                "text": e.text or (e.data or {}).get("text") or "",
            }
            if include_ts:
                item["ts"] = e.ts
            if include_tags:
                item["tags"] = list(e.tags or [])
            out.append(item)
        return out

    async def chat_history_for_llm(
        self, *, limit: int = 20, level: str | None = None, **_ignored: Any
    ) -> dict[str, Any]:
        """``{"summary": "", "messages": [{"role", "content"}]}`` from the last ``limit``
        chat turns, oldest first (a15; there are no stored summaries here, so
        ``summary`` is always "" and summary keywords are ignored)."""
        messages = [
            {
                "role": t["role"] if t["role"] in ("user", "assistant", "system") else "assistant",
                "content": t["text"],
            }
            for t in await self.recent_chat(limit=limit, level=level)
        ]
        return {"summary": "", "messages": messages}

    async def chat_history(self, n: int = 20) -> list[dict[str, Any]]:
        """ag_jupyter's older form: the last ``n`` chat turns as ``[{"role", "content"}]``,
        oldest first (ready for ``context.llm().chat(...)``).

        Raises:
          ValueError: if ``n`` is not an int from 1 to 10000.
        """
        turns = await self.recent_chat(limit=_check_limit(n, "n"))
        return [{"role": t["role"], "content": t["text"]} for t in turns]

    # ------------------------------------------------------------------- state
    async def get_latest_state(
        self,
        key: str,
        *,
        tags: Iterable[str] | None = None,
        level: str | None = None,
        use_persistence: bool = False,
        kind: str = STATE_KIND,
    ) -> Any | None:
        """The value of the newest :meth:`append_state_snapshot` of ``key``, or None."""
        events = await self.list_state_history(key, tags=tags, limit=1, level=level, kind=kind)
        return (events[0].data or {}).get("value") if events else None

    async def latest_state(self, key: str, **kw: Any) -> Any | None:
        """a15's alias of :meth:`get_latest_state`."""
        kw.pop("user_persistence", None)
        return await self.get_latest_state(key, **kw)

    async def list_state_history(
        self,
        key: str,
        *,
        tags: Iterable[str] | None = None,
        limit: int = 50,
        level: str | None = None,
        kind: str = STATE_KIND,
        use_persistence: bool = False,
    ) -> list[Event]:
        """The snapshots of ``key``, newest first (a15)."""
        return await self.query_events(
            kinds=[kind], tags=["state", f"state:{key}", *_tags(tags)], limit=limit, level=level
        )

    async def state_history(self, key: str, **kw: Any) -> list[Event]:
        """a15's alias of :meth:`list_state_history`."""
        return await self.list_state_history(key, **kw)

    # ------------------------------------------------------------------ search
    async def search_events(
        self,
        *,
        query: str | None = None,
        kinds: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        limit: int = 100,
        level: str | None = None,
        mode: str | None = None,
        top_k: int | None = None,
        **_ignored: Any,
    ) -> list[Event]:
        """Events whose text contains ``query`` (case-insensitive for ASCII letters),
        newest first; with no query, the newest events (a15's lexical path; there is no
        vector index here, so ``mode`` / ``use_embedding`` / ``time_window`` are
        ignored). Where a15 returns *every* event when nothing matches, this returns
        ``[]``. ``top_k`` (0.1.0a17) is accepted for ``limit``.

        Raises:
          TypeError: if ``query`` is not a str. ValueError, WorkspaceError: as
            :meth:`query_events`.
        """
        limit = _check_limit(top_k if top_k is not None else limit)
        if not query:
            return await self.query_events(kinds=kinds, tags=tags, limit=limit, level=level)
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        return await self.query_events(
            kinds=kinds, tags=tags, limit=limit, level=level, text_contains=query
        )

    async def search(self, **kw: Any) -> list[Event]:
        """a15's alias of :meth:`search_events`."""
        return await self.search_events(**kw)


class MemoryService:
    """The embedded ``memory`` service: ``context.memory()`` is a :class:`SessionMemory`
    for the context's session (its run without a session).

    Args:
      workspace: the open workspace holding the events (with :data:`MEMORY_SCHEMA`).
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def bind(self, context: Any) -> SessionMemory:
        """The memory of ``context``'s session (of its run without a session)."""
        return SessionMemory(
            self.workspace,
            context_scope(context),
            run_id=getattr(context, "run_id", None),
            session_id=getattr(context, "session_id", None),
            graph_id=getattr(context, "graph_id", None),
            node_id=getattr(context, "node_id", None),
            agent_id=getattr(context, "agent_id", None),
            app_id=getattr(context, "app_id", None),
        )
