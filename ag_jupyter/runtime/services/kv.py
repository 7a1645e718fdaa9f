"""The ``kv()`` service: a JSON key-value store in the workspace, scoped to the session.

``context.kv()`` is scoped to the context's session (to its run when it has no session);
``context.kv().global_scope()`` is shared by every session and every process using the
workspace. Values must be JSON (dict with str keys, list, tuple -> list, str, int, float,
bool, None); anything else raises ``TypeError`` naming its type. ``set``/``mset`` take an
optional ``ttl_s`` (seconds) after which the key reads as missing.

Every method is async: SQLite work runs in the workspace's threads, never on the loop.
A write returns once it is committed (concurrent writes share one commit).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..store.codecs import dumps_json
from ..store.schema import Migration, SchemaComponent
from ..store.workspace import Workspace

GLOBAL_SCOPE = "global"

KV_SCHEMA = SchemaComponent(
    "kv",
    (
        Migration(
            1,
            (
                # scope: 'global', 'session:<id>' or 'run:<id>'; value is JSON text; epoch s.
                """CREATE TABLE IF NOT EXISTS kv (
                    scope TEXT NOT NULL,
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    expires_at REAL,
                    updated_at REAL NOT NULL,
                    PRIMARY KEY (scope, key)
                ) WITHOUT ROWID""",
                "CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) "
                "WHERE expires_at IS NOT NULL",
            ),
        ),
    ),
)


def context_scope(context: Any) -> str:
    """The scope name of a context: ``session:<id>``, or ``run:<id>`` without a session."""
    session_id = getattr(context, "session_id", None)
    if session_id:
        return f"session:{session_id}"
    return f"run:{getattr(context, 'run_id', None) or 'none'}"


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"kv keys must be non-empty str; got {key!r}")
    return key


def _expiry(ttl_s: float | None) -> float | None:
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
        raise ValueError(f"ttl_s must be a positive number of seconds or None, got {ttl_s!r}")
    return time.time() + float(ttl_s)


_MISSING: Any = object()
_ALIVE = "(expires_at IS NULL OR expires_at > ?)"


class KVStore:
    """A key-value view of the workspace for one scope (what ``context.kv()`` returns).

    Attributes:
      scope: ``"global"``, ``"session:<id>"`` or ``"run:<id>"``.
    """

    __slots__ = ("_ws", "scope")

    def __init__(self, workspace: Workspace, scope: str) -> None:
        self._ws = workspace
        self.scope = scope

    def __repr__(self) -> str:
        return f"KVStore(scope={self.scope!r})"

    def global_scope(self) -> KVStore:
        """The same store in the global scope, shared by every session and process."""
        return KVStore(self._ws, GLOBAL_SCOPE)

    def session_scope(self, session_id: str) -> KVStore:
        """The store of another session, by its id.

        Raises:
          TypeError: if ``session_id`` is not a non-empty str.
        """
        if not isinstance(session_id, str) or not session_id:
            raise TypeError(f"session_id must be a non-empty str; got {session_id!r}")
        return KVStore(self._ws, f"session:{session_id}")

    # ------------------------------------------------------------------ reading
    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired.

        Raises:
          TypeError: if ``key`` is not a non-empty str.
          WorkspaceError: if the database cannot be read.
        """
        _check_key(key)
        scope = self.scope

        def read(conn: sqlite3.Connection) -> Any:
            row = conn.execute(
                f"SELECT value FROM kv WHERE scope = ? AND key = ? AND {_ALIVE}",
                (scope, key, time.time()),
            ).fetchone()
            return _MISSING if row is None else json.loads(row[0])

        value = await self._ws.read(read)
        return default if value is _MISSING else value

    async def mget(self, keys: Iterable[str], default: Any = None) -> dict[str, Any]:
        """``{key: value}`` for every key asked for (``default`` for missing/expired ones).

        Raises:
          TypeError: if a key is not a non-empty str.
          WorkspaceError: if the database cannot be read.
        """
        wanted = [_check_key(k) for k in keys]
        if not wanted:
            return {}
        scope = self.scope

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            now = time.time()
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, value FROM kv WHERE scope = ? AND key IN ({marks}) "
                    f"AND {_ALIVE}",
                    (scope, *chunk, now),
                )
                found.update((k, json.loads(v)) for k, v in rows)
            return found

        found = await self._ws.read(read)
        return {k: found.get(k, default) for k in wanted}

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is set (and not expired).

        Raises:
          TypeError: if ``key`` is not a non-empty str.
          WorkspaceError: if the database cannot be read.
        """
        _check_key(key)
        scope = self.scope

        def read(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                f"SELECT 1 FROM kv WHERE scope = ? AND key = ? AND {_ALIVE}",
                (scope, key, time.time()),
            ).fetchone()
            return row is not None

        return await self._ws.read(read)

    async def scan(self, prefix: str = "", *, limit: int | None = None) -> dict[str, Any]:
        """``{key: value}`` of the keys starting with ``prefix``, sorted by key.

        Args:
          prefix: key prefix ("" for all keys of this scope).
          limit: at most this many keys (None: all).

        Raises:
          TypeError: if ``prefix`` is not a str. ValueError: if ``limit`` is not positive.
          WorkspaceError: if the database cannot be read.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str; got {prefix!r}")
        if limit is not None and (not isinstance(limit, int) or limit <= 0):
            raise ValueError(f"limit must be a positive int or None, got {limit!r}")
        scope = self.scope

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                f"SELECT key, value FROM kv WHERE scope = ? AND substr(key, 1, ?) = ? "
                f"AND {_ALIVE} ORDER BY key LIMIT ?",
                (scope, len(prefix), prefix, time.time(), -1 if limit is None else limit),
            )
            return {k: json.loads(v) for k, v in rows}

        return await self._ws.read(read)

    # ------------------------------------------------------------------ writing
    async def set(self, key: str, value: Any, *, ttl_s: float | None = None) -> None:
        """Set ``key`` to ``value``; returns once committed.

        Args:
          value: JSON data (tuples are stored as lists).
          ttl_s: seconds until the key expires (None: never).

        Raises:
          TypeError: if ``key`` is not a non-empty str, or ``value`` is not
            JSON-serialisable (naming its type).
          ValueError: if ``ttl_s`` is not a positive number.
          WorkspaceWriteError: if the workspace cannot be written (nothing is saved).
        """
        await self.mset({key: value}, ttl_s=ttl_s)

    async def mset(self, items: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        """Set several keys in one commit (all or none); ``ttl_s`` applies to each.

        Raises:
          TypeError, ValueError, WorkspaceWriteError: as :meth:`set`.
        """
        expires_at = _expiry(ttl_s)
        rows = [
            (self.scope, _check_key(k), dumps_json(v, "kv values"), expires_at)
            for k, v in dict(items).items()
        ]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            conn.executemany(
                "INSERT INTO kv (scope, key, value, expires_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at, "
                "updated_at = excluded.updated_at",
                [(*row, now) for row in rows],
            )

        await self._ws.write(write)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was set (and not expired).

        Raises:
          TypeError: if ``key`` is not a non-empty str.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        _check_key(key)
        scope = self.scope

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                f"DELETE FROM kv WHERE scope = ? AND key = ? AND {_ALIVE}",
                (scope, key, time.time()),
            )
            conn.execute("DELETE FROM kv WHERE scope = ? AND key = ?", (scope, key))
            return cursor.rowcount > 0

        return await self._ws.write(write)


class KVService:
    """The embedded ``kv`` service: ``context.kv()`` is a :class:`KVStore` scoped to the
    context's session.

    Args:
      workspace: the open workspace holding the values.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def bind(self, context: Any) -> KVStore:
        """The store scoped to ``context``'s session (its run without a session)."""
        return KVStore(self.workspace, context_scope(context))

    def global_scope(self) -> KVStore:
        """The global store (no context needed)."""
        return KVStore(self.workspace, GLOBAL_SCOPE)
