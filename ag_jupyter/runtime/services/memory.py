"""The ``memory()`` service: a session's event log (and chat turns) in the workspace.

``context.memory()`` records events of the context's session (of its run when it has no
session): ``record(kind, data, tags=...)``, ``recent(n)``, ``query(...)``, and chat turns
(``add_chat_turn(role, content)``, ``chat_history(n)``). Event data must be JSON; anything
else raises ``TypeError`` naming its type. Every method is async; SQLite work runs in the
workspace's threads.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..store.codecs import check_tags, dumps_json
from ..store.schema import Migration, SchemaComponent
from ..store.workspace import Workspace
from .kv import context_scope

CHAT_KIND = "chat_turn"

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
    ),
)
_MAX_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class MemoryEvent:
    """One recorded event.

    Attributes:
      id: increasing number (later events have larger ids).
      kind: the event's kind label (``"chat_turn"`` for chat turns).
      data: its JSON data. tags: its tags.
      run_id, session_id: the context that recorded it.
      created_at: when it was recorded (timezone-aware UTC).
    """

    id: int
    kind: str
    data: Any
    tags: list[str] = field(default_factory=list)
    run_id: str | None = None
    session_id: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        """The event as a plain dict (``created_at`` as ISO 8601 text)."""
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return data


def _epoch(value: datetime | float | int | None, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive: taken as UTC
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be a datetime or epoch seconds; got {value!r}")


def _check_limit(limit: int, name: str = "limit") -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= _MAX_LIMIT:
        raise ValueError(f"{name} must be an int from 1 to {_MAX_LIMIT}, got {limit!r}")
    return limit


def _row_event(row: sqlite3.Row) -> MemoryEvent:
    return MemoryEvent(
        id=row["id"],
        kind=row["kind"],
        data=json.loads(row["data"]),
        tags=json.loads(row["tags"]),
        run_id=row["run_id"],
        session_id=row["session_id"],
        created_at=datetime.fromtimestamp(row["created_at"], UTC),
    )


class SessionMemory:
    """The event memory of one scope (what ``context.memory()`` returns).

    Attributes:
      scope: ``"session:<id>"`` (or ``"run:<id>"`` for a context without a session).
    """

    __slots__ = ("_run_id", "_session_id", "_ws", "scope")

    def __init__(
        self, workspace: Workspace, scope: str, *, run_id: str | None, session_id: str | None
    ) -> None:
        self._ws = workspace
        self.scope = scope
        self._run_id = run_id
        self._session_id = session_id

    def __repr__(self) -> str:
        return f"SessionMemory(scope={self.scope!r})"

    # ------------------------------------------------------------------ writing
    async def record(
        self, kind: str, data: Any = None, *, tags: Iterable[str] | None = None
    ) -> MemoryEvent:
        """Append an event of ``kind`` with JSON ``data``; returns it once committed.

        Raises:
          TypeError: if ``kind`` is not a non-empty str, a tag is not a str, or ``data`` is
            not JSON-serialisable (naming its type).
          WorkspaceWriteError: if the workspace cannot be written (nothing is saved).
        """
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"kind must be a non-empty str; got {kind!r}")
        tag_list = check_tags(tags)
        data_json = dumps_json(data, "memory data")
        tags_json = json.dumps(tag_list)
        now = time.time()
        values = (self.scope, kind, data_json, tags_json, self._run_id, self._session_id, now)

        def write(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO memory (scope, kind, data, tags, run_id, session_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return int(cursor.lastrowid or 0)

        event_id = await self._ws.write(write)
        return MemoryEvent(
            id=event_id,
            kind=kind,
            data=json.loads(data_json),
            tags=tag_list,
            run_id=self._run_id,
            session_id=self._session_id,
            created_at=datetime.fromtimestamp(now, UTC),
        )

    append = record

    async def add_chat_turn(
        self, role: str, content: Any, *, tags: Iterable[str] | None = None
    ) -> MemoryEvent:
        """Record a chat turn (kind ``"chat_turn"``, data ``{"role", "content"}``).

        Args:
          role: e.g. ``"user"``, ``"assistant"``, ``"system"``, ``"tool"``.
          content: the message text (or other JSON content).

        Raises:
          TypeError: if ``role`` is not a non-empty str or ``content`` is not JSON.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        if not isinstance(role, str) or not role:
            raise TypeError(f"role must be a non-empty str; got {role!r}")
        return await self.record(CHAT_KIND, {"role": role, "content": content}, tags=tags)

    # ------------------------------------------------------------------ reading
    async def recent(self, n: int = 20, *, kind: str | None = None) -> list[MemoryEvent]:
        """The last ``n`` events (of ``kind`` if given), oldest first.

        Raises:
          ValueError: if ``n`` is not an int from 1 to 10000.
          WorkspaceError: if the database cannot be read.
        """
        return await self.query(kind=kind, limit=_check_limit(n, "n"))

    async def query(
        self,
        kind: str | Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        limit: int = 100,
    ) -> list[MemoryEvent]:
        """Events of this scope matching every filter: the newest ``limit``, oldest first.

        Args:
          kind: one kind or several.
          tags: events must carry all of these.
          since: recorded at or after this time; until: before this time (datetimes, naive
            ones taken as UTC, or epoch seconds).
          limit: at most this many events (1 to 10000).

        Raises:
          TypeError: for a bad kind/tags/time type. ValueError: for a bad ``limit``.
          WorkspaceError: if the database cannot be read.
        """
        _check_limit(limit)
        where = ["scope = ?"]
        params: list[Any] = [self.scope]
        if kind is not None:
            kinds = [kind] if isinstance(kind, str) else list(kind)
            if not kinds:
                return []
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        for tag in check_tags(tags):
            where.append("EXISTS (SELECT 1 FROM json_each(memory.tags) WHERE value = ?)")
            params.append(tag)
        start, end = _epoch(since, "since"), _epoch(until, "until")
        if start is not None:
            where.append("created_at >= ?")
            params.append(start)
        if end is not None:
            where.append("created_at < ?")
            params.append(end)
        sql = (
            "SELECT id, kind, data, tags, run_id, session_id, created_at FROM memory "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        )
        params.append(limit)

        def read(conn: sqlite3.Connection) -> list[MemoryEvent]:
            return [_row_event(row) for row in conn.execute(sql, params)]

        events = await self._ws.read(read)
        events.reverse()
        return events

    async def chat_history(self, n: int = 20) -> list[dict[str, Any]]:
        """The last ``n`` chat turns as ``[{"role": ..., "content": ...}]``, oldest first
        (ready to pass to ``context.llm().chat(...)``).

        Raises:
          ValueError: if ``n`` is not an int from 1 to 10000.
          WorkspaceError: if the database cannot be read.
        """
        events = await self.query(kind=CHAT_KIND, limit=_check_limit(n, "n"))
        return [
            {"role": e.data.get("role"), "content": e.data.get("content")}
            for e in events
            if isinstance(e.data, dict)
        ]


class MemoryService:
    """The embedded ``memory`` service: ``context.memory()`` is a :class:`SessionMemory`
    for the context's session.

    Args:
      workspace: the open workspace holding the events.
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
        )
