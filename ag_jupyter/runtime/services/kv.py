"""The ``kv()`` service: JSON key-value pairs in the workspace, as AetherGraph's ``kv()``.

Scope. AetherGraph 0.1.0a15's ``context.kv()`` is one process-wide ``EphemeralKV``
(``services/kv/ephemeral.py``): every run and session of the process reads and writes the
same keys. Ours is durable, so ``context.kv()`` is the workspace's **global scope**: shared
by every run and session, and by every kernel or script that opens the same workspace
folder, and kept across restarts. A session of its own is an explicit choice:
``context.kv().session_scope()`` (this context's session) or ``session_scope("other")``;
``global_scope()`` goes back. Keys written by ag_jupyter before this change live in the
session scopes (``session:<id>``; ``run:<id>`` for a run without a session) and stay
readable there.

Values are JSON (dict with str keys, list, tuple -> list, str, int, float, bool, None),
stored exactly or refused with a precise error (``store.codecs.dumps_json``): a type JSON
cannot hold, NaN, a cycle or nesting too deep. A value's JSON text is at most
:data:`MAX_VALUE_BYTES` (larger data belongs in ``context.artifacts()``). Keys are
non-empty text without NUL or lone surrogates.

TTLs are in seconds, measured by the service's ``clock`` (``time.time`` unless given):
an expired key reads as missing, is replaced by the next write and is removed by
:meth:`KVStore.purge_expired` (or any write).

Every method is async: SQLite work runs in the workspace's threads, never on the loop. A
write returns once it is committed (concurrent writes share one commit); read-modify-write
helpers (:meth:`KVStore.list_append_unique`, :meth:`KVStore.list_pop_all`,
:meth:`KVStore.incr`) run in one transaction, so they are atomic across processes too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..store.codecs import check_identifier, dumps_json
from ..store.schema import Migration, SchemaComponent
from ..store.workspace import Workspace

GLOBAL_SCOPE = "global"
#: Largest JSON text of one value, in bytes (UTF-8; JSON text is ASCII here).
MAX_VALUE_BYTES = 16 * 1024 * 1024
#: Seconds since the epoch; tests pass a clock of their own.
Clock = Callable[[], float]

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
    """The session scope name of a context: ``session:<id>``, or ``run:<id>`` without a
    session (the scope ag_jupyter's kv and memory used before they followed AetherGraph)."""
    session_id = getattr(context, "session_id", None)
    if session_id:
        return f"session:{session_id}"
    return f"run:{getattr(context, 'run_id', None) or 'none'}"


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise TypeError(f"kv keys must be non-empty str; got {key!r}")
    return check_identifier("kv keys", key, allow_none=False)  # type: ignore[return-value]


def _check_ttl(ttl_s: float | None) -> float | None:
    if ttl_s is None:
        return None
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int | float) or not ttl_s > 0:
        raise ValueError(f"ttl_s must be a positive number of seconds or None, got {ttl_s!r}")
    if ttl_s == float("inf"):
        return None
    return float(ttl_s)


def _encode(value: Any) -> str:
    text = dumps_json(value, "kv values")
    if len(text) > MAX_VALUE_BYTES:
        raise ValueError(
            f"kv values are at most {MAX_VALUE_BYTES} bytes of JSON; this one is {len(text)} "
            "bytes. Store large data with context.artifacts().save_json(...) and keep its "
            "artifact_id in kv"
        )
    return text


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    return limit


_MISSING: Any = object()
_ALIVE = "(expires_at IS NULL OR expires_at > ?)"


class KVStore:
    """A key-value view of the workspace for one scope (what ``context.kv()`` returns).

    Method names, arguments and return shapes follow AetherGraph 0.1.0a15's ``EphemeralKV``
    (``get``, ``set``, ``delete``, ``mget`` -> list, ``mset``, ``list_append_unique``,
    ``list_pop_all``, ``expire``, ``purge_expired``) and its ``AsyncKV`` protocol
    (``exists``, ``incr``, ``scan_prefix``); ``scan`` is ag_jupyter's.

    Attributes:
      scope: ``"global"`` (the default of ``context.kv()``), ``"session:<id>"`` or
        ``"run:<id>"``.
      service: the :class:`KVService` it belongs to (its ``clock`` times TTLs).
    """

    __slots__ = ("_default_session", "_ws", "scope", "service")

    def __init__(
        self,
        service: KVService,
        scope: str,
        *,
        default_session: str | None = None,
    ) -> None:
        self.service = service
        self._ws = service.workspace
        self.scope = scope
        self._default_session = default_session

    def __repr__(self) -> str:
        return f"KVStore(scope={self.scope!r})"

    def _now(self) -> float:
        return float(self.service.clock())

    # ------------------------------------------------------------------ scopes
    def global_scope(self) -> KVStore:
        """The global scope: shared by every run, session and process using the workspace
        (what ``context.kv()`` is by default)."""
        return KVStore(self.service, GLOBAL_SCOPE, default_session=self._default_session)

    def session_scope(self, session_id: str | None = None) -> KVStore:
        """The keys of one session only: this context's session by default, or
        ``session_id``'s.

        Raises:
          TypeError: if ``session_id`` is given and is not a non-empty str.
          ValueError: if there is no session to default to (a store built without a
            context) and ``session_id`` is None.
        """
        if session_id is None:
            if self._default_session is None:
                raise ValueError(
                    "this kv store has no session of its own; pass session_scope(session_id)"
                )
            scope = self._default_session
        elif not isinstance(session_id, str) or not session_id:
            raise TypeError(f"session_id must be a non-empty str; got {session_id!r}")
        else:
            scope = f"session:{session_id}"
        return KVStore(self.service, scope, default_session=self._default_session)

    # ------------------------------------------------------------------ reading
    async def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` if it is missing or expired.

        Raises:
          TypeError: if ``key`` is not a non-empty str. ValueError: for NUL or a lone
            surrogate in it.
          WorkspaceError: if the database cannot be read.
        """
        _check_key(key)
        scope, now = self.scope, self._now()

        def read(conn: sqlite3.Connection) -> Any:
            row = conn.execute(
                f"SELECT value FROM kv WHERE scope = ? AND key = ? AND {_ALIVE}",
                (scope, key, now),
            ).fetchone()
            return _MISSING if row is None else json.loads(row[0])

        value = await self._ws.read(read)
        return default if value is _MISSING else value

    async def mget(self, keys: Iterable[str], default: Any = None) -> list[Any]:
        """The values of ``keys``, in their order: a list with ``default`` (None) for
        missing or expired keys (as a15's ``EphemeralKV.mget``).

        Raises:
          TypeError, ValueError: for a bad key, as :meth:`get`.
          WorkspaceError: if the database cannot be read.
        """
        if isinstance(keys, str):
            raise TypeError(f"mget() takes a list of keys, not a str ({keys!r}); write [{keys!r}]")
        wanted = [_check_key(k) for k in keys]
        if not wanted:
            return []
        scope, now = self.scope, self._now()
        distinct = list(dict.fromkeys(wanted))

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            found: dict[str, Any] = {}
            for start in range(0, len(distinct), 500):
                chunk = distinct[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, value FROM kv WHERE scope = ? AND key IN ({marks}) AND {_ALIVE}",
                    (scope, *chunk, now),
                )
                found.update((k, json.loads(v)) for k, v in rows)
            return found

        found = await self._ws.read(read)
        return [found.get(k, default) for k in wanted]

    async def exists(self, key: str) -> bool:
        """Whether ``key`` is set (and not expired).

        Raises:
          TypeError, ValueError: for a bad key. WorkspaceError: if the database cannot be
            read.
        """
        return await self.get(key, _MISSING) is not _MISSING

    async def scan(self, prefix: str = "", *, limit: int | None = None) -> dict[str, Any]:
        """``{key: value}`` of the live keys starting with ``prefix``, sorted by key.

        Args:
          prefix: key prefix ("" for all keys of this scope).
          limit: at most this many keys (None: all).

        Raises:
          TypeError: if ``prefix`` is not a str. ValueError: if ``limit`` is not positive.
          WorkspaceError: if the database cannot be read.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str; got {prefix!r}")
        if limit is not None:
            _check_limit(limit)
        scope, now = self.scope, self._now()

        def read(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                f"SELECT key, value FROM kv WHERE scope = ? AND substr(key, 1, ?) = ? "
                f"AND {_ALIVE} ORDER BY key LIMIT ?",
                (scope, len(prefix), prefix, now, -1 if limit is None else limit),
            )
            return {k: json.loads(v) for k, v in rows}

        return await self._ws.read(read)

    async def scan_prefix(self, prefix: str, limit: int = 1000) -> list[str]:
        """The live keys starting with ``prefix``, sorted (AetherGraph's ``AsyncKV``
        protocol); at most ``limit`` of them.

        Raises:
          TypeError, ValueError, WorkspaceError: as :meth:`scan`.
        """
        return list(await self.scan(prefix, limit=limit))

    # ------------------------------------------------------------------ writing
    async def _write(self, fn: Callable[[sqlite3.Connection, float], Any]) -> Any:
        now = self._now()

        def write(conn: sqlite3.Connection) -> Any:
            conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
            return fn(conn, now)

        return await self._ws.write(write)

    async def set(self, key: str, value: Any, *, ttl_s: float | None = None) -> None:
        """Set ``key`` to ``value``; returns once committed.

        Args:
          value: JSON data (tuples are stored as lists).
          ttl_s: seconds until the key expires (None: never).

        Raises:
          TypeError: if ``key`` is not a non-empty str, or ``value`` is not
            JSON-serialisable (naming its type).
          ValueError: if ``ttl_s`` is not a positive number, the key holds NUL or a lone
            surrogate, the value contains itself or nests too deeply, or its JSON text is
            longer than ``MAX_VALUE_BYTES``.
          WorkspaceWriteError: if the workspace cannot be written (nothing is saved).
        """
        await self.mset({key: value}, ttl_s=ttl_s)

    async def mset(self, kv: Mapping[str, Any], *, ttl_s: float | None = None) -> None:
        """Set several keys in one commit (all or none); ``ttl_s`` applies to each.

        Raises:
          TypeError, ValueError, WorkspaceWriteError: as :meth:`set`.
        """
        ttl = _check_ttl(ttl_s)
        rows = [(self.scope, _check_key(k), _encode(v)) for k, v in dict(kv).items()]
        if not rows:
            return

        def write(conn: sqlite3.Connection, now: float) -> None:
            expires_at = None if ttl is None else now + ttl
            conn.executemany(
                "INSERT INTO kv (scope, key, value, expires_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at, "
                "updated_at = excluded.updated_at",
                [(*row, expires_at, now) for row in rows],
            )

        await self._write(write)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it was set (and not expired). (a15 returns
        None; a missing key is no error in either.)

        Raises:
          TypeError, ValueError: for a bad key. WorkspaceWriteError: if the workspace
            cannot be written.
        """
        _check_key(key)
        scope = self.scope

        def write(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute("DELETE FROM kv WHERE scope = ? AND key = ?", (scope, key))
            return cursor.rowcount > 0

        return await self._write(write)

    async def expire(self, key: str, ttl_s: float) -> bool:
        """Make ``key`` expire ``ttl_s`` seconds from now; returns whether the key was set
        (a missing key is left missing, as a15).

        Raises:
          ValueError: if ``ttl_s`` is not a positive number. TypeError: for a bad key.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        _check_key(key)
        ttl = _check_ttl(ttl_s)
        scope = self.scope

        def write(conn: sqlite3.Connection, now: float) -> bool:
            cursor = conn.execute(
                "UPDATE kv SET expires_at = ?, updated_at = ? WHERE scope = ? AND key = ?",
                (None if ttl is None else now + ttl, now, scope, key),
            )
            return cursor.rowcount > 0

        return await self._write(write)

    async def purge_expired(self, limit: int = 1000) -> int:
        """Remove at most ``limit`` expired keys of every scope; returns how many.

        Raises:
          ValueError: if ``limit`` is not a positive int.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        _check_limit(limit)
        now = self._now()

        def write(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "DELETE FROM kv WHERE (scope, key) IN (SELECT scope, key FROM kv "
                "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (now, limit),
            )
            return cursor.rowcount

        return await self._ws.write(write)

    # ------------------------------------------------------------ list helpers
    async def list_append_unique(
        self,
        key: str,
        items: Iterable[Any],
        *,
        id_key: str = "id",
        ttl_s: float | None = None,
    ) -> list[Any]:
        """Append the ``items`` not yet in the list at ``key`` (created if missing); returns
        the whole list after the append. Atomic (one transaction).

        Dicts are the same item when their ``id_key`` values are equal (as a15); other
        values when they are equal (a15 drops non-dict items silently; keeping them is
        what the method's name promises). Duplicates inside ``items`` are appended once.
        ``ttl_s`` sets the key's expiry (None: never expires, as a15).

        Raises:
          TypeError: if the stored value is not a list, ``items`` is a str/dict, or an
            item is not JSON. ValueError, WorkspaceWriteError: as :meth:`set`.
        """
        if isinstance(items, str | bytes | Mapping):
            raise TypeError(
                f"items must be a list of values, got {type(items).__name__}; wrap one item "
                "in a list"
            )
        new = json.loads(_encode(list(items)))  # the values exactly as they will be stored
        _check_key(key)
        ttl = _check_ttl(ttl_s)
        scope = self.scope

        def identity(item: Any) -> str:
            if isinstance(item, dict):
                return "id:" + json.dumps(item.get(id_key), sort_keys=True)
            return "value:" + json.dumps(item, sort_keys=True)

        def write(conn: sqlite3.Connection, now: float) -> list[Any]:
            row = conn.execute(
                "SELECT value FROM kv WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            current = [] if row is None else json.loads(row[0])
            if not isinstance(current, list):
                raise TypeError(
                    f"kv key {key!r} holds a {type(current).__name__}, not a list; "
                    "list_append_unique() needs a list (delete the key or use another one)"
                )
            seen = {identity(x) for x in current}
            for item in new:
                ident = identity(item)
                if ident not in seen:
                    seen.add(ident)
                    current.append(item)
            conn.execute(
                "INSERT INTO kv (scope, key, value, expires_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at, "
                "updated_at = excluded.updated_at",
                (scope, key, _encode(current), None if ttl is None else now + ttl, now),
            )
            return current

        return await self._write(write)

    async def list_pop_all(self, key: str) -> list[Any]:
        """Remove ``key`` and return its list (``[]`` if it is missing, expired or not a
        list, as a15; a non-list value is left in place). Atomic.

        Raises:
          TypeError, ValueError: for a bad key. WorkspaceWriteError: as :meth:`set`.
        """
        _check_key(key)
        scope = self.scope

        def write(conn: sqlite3.Connection, now: float) -> list[Any]:
            row = conn.execute(
                "SELECT value FROM kv WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            value = None if row is None else json.loads(row[0])
            if not isinstance(value, list):
                return []
            conn.execute("DELETE FROM kv WHERE scope = ? AND key = ?", (scope, key))
            return value

        return await self._write(write)

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if missing) and return the result;
        atomic. ``ttl_s`` (when given) resets the expiry; otherwise it is kept.

        Raises:
          TypeError: if ``amount`` or the stored value is not an int.
          ValueError, WorkspaceWriteError: as :meth:`set`.
        """
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise TypeError(f"amount must be an int, got {amount!r}")
        _check_key(key)
        ttl = _check_ttl(ttl_s)
        scope = self.scope

        def write(conn: sqlite3.Connection, now: float) -> int:
            row = conn.execute(
                "SELECT value, expires_at FROM kv WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            value = 0 if row is None else json.loads(row[0])
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"kv key {key!r} holds {value!r}, not an int; incr() needs one")
            value += amount
            expires_at = (now + ttl) if ttl is not None else (None if row is None else row[1])
            conn.execute(
                "INSERT INTO kv (scope, key, value, expires_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
                "value = excluded.value, expires_at = excluded.expires_at, "
                "updated_at = excluded.updated_at",
                (scope, key, json.dumps(value), expires_at, now),
            )
            return value

        return await self._write(write)


class KVService:
    """The embedded ``kv`` service: ``context.kv()`` is a :class:`KVStore` on the
    workspace's global scope (as AetherGraph's one process-wide kv; see the module
    docstring), whose ``session_scope()`` is the context's session.

    Args:
      workspace: the open workspace holding the values.
      clock: ``clock() -> float``, seconds since the epoch, used for TTLs (default
        ``time.time``; tests pass one they can move forward). Replaceable later by
        assigning ``service.clock``.
    """

    def __init__(self, workspace: Workspace, *, clock: Clock | None = None) -> None:
        self.workspace = workspace
        self.clock: Clock = clock if clock is not None else time.time

    def bind(self, context: Any) -> KVStore:
        """The global store, knowing ``context``'s session (for ``session_scope()``)."""
        return KVStore(self, GLOBAL_SCOPE, default_session=context_scope(context))

    def global_scope(self) -> KVStore:
        """The global store (no context needed)."""
        return KVStore(self, GLOBAL_SCOPE)
