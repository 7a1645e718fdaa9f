"""Transcripts: what a run said and was told through ``context.channel()``, kept beside
the run and read with ``RunManager.transcript(run_id)``.

An entry is a dict with exactly ``kind`` (``"sent"``: a message the run sent; ``"ask"``:
a question it asked; ``"answer"``: the reply; ``"timeout"``: the ask's ``timeout_s``
passed; ``"canceled"``: the ask was canceled, or left open by a process that died, whose
text then starts with ``"interrupted"``), ``text`` (str, exactly as given: never escaped,
the UI escapes; at most ``MAX_TEXT_CHARS`` characters), ``ask_id`` (None for sent
messages) and ``at`` (UTC ISO string).

:class:`TranscriptBook` keeps entries in memory (bounded per run, for an in-memory
manager); :class:`WorkspaceTranscripts` keeps them in the workspace database (a batch
source of its write engine, committed with the next batch; readable after a restart).
The ``run_transcripts`` component's open hook marks the asks a dead process left open
(their owner token is gone from ``owners``) as interrupted, so a transcript never shows
a question as still waiting for an answer nobody can give.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
import weakref
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, ClassVar

from .codecs import db_text, text_from_db
from .schema import Migration, SchemaComponent
from .workspace import Workspace

log = logging.getLogger("ag_jupyter.workspace")

#: The kinds an entry may have.
TRANSCRIPT_KINDS = ("sent", "ask", "answer", "timeout", "canceled")
#: The keys of an entry, in order.
TRANSCRIPT_KEYS = ("kind", "text", "ask_id", "at")
#: Kinds that close an ask.
CLOSING_KINDS = frozenset({"answer", "timeout", "canceled"})
#: Longest text kept per entry (characters); longer text is cut and marked.
MAX_TEXT_CHARS = 100_000
#: Entries kept per run in memory (the newest), and runs kept.
ENTRIES_PER_RUN_IN_MEMORY = 5_000
_RUNS_IN_MEMORY = 2_000
#: The text of the ``canceled`` entry added for an ask a dead process left open.
INTERRUPTED_TEXT = (
    "interrupted: the process that asked stopped before the ask was answered"
)


def _recover_open_asks(conn: sqlite3.Connection, workspace: Any) -> None:
    """Open hook: close the asks whose process is gone (owners ran first) with a
    ``canceled`` entry saying they were interrupted."""
    orphan = "open = 1 AND (owner IS NULL OR owner NOT IN (SELECT token FROM owners))"
    rows = conn.execute(f"SELECT run_id, ask_id FROM run_transcripts WHERE {orphan}").fetchall()
    if not rows:
        return
    at = now_iso()
    conn.executemany(
        "INSERT INTO run_transcripts (entry_id, run_id, kind, text, ask_id, at) "
        "VALUES (?, ?, 'canceled', ?, ?, ?)",
        [(_entry_id(), r[0], INTERRUPTED_TEXT, r[1], at) for r in rows],
    )
    conn.execute(f"UPDATE run_transcripts SET open = 0 WHERE {orphan}")


TRANSCRIPTS_SCHEMA = SchemaComponent(
    "run_transcripts",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS run_transcripts (
                    seq INTEGER PRIMARY KEY,
                    entry_id TEXT NOT NULL,
                    run_id TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    text TEXT,
                    ask_id TEXT,
                    at TEXT NOT NULL,
                    owner TEXT,
                    open INTEGER
                )""",
                "CREATE INDEX IF NOT EXISTS run_transcripts_run ON run_transcripts (run_id, seq)",
                # Open asks only (a few rows): what the open hook scans.
                """CREATE INDEX IF NOT EXISTS run_transcripts_open ON run_transcripts (ask_id)
                    WHERE open = 1""",
            ),
        ),
    ),
    on_open=_recover_open_asks,
    run_tables=("run_transcripts",),
)


def now_iso() -> str:
    """Now, as a UTC ISO 8601 string with microseconds (what ``at`` holds)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _entry_id() -> str:
    return uuid.uuid4().hex[:20]


def clip_text(text: str) -> str:
    """``text`` as kept in a transcript: unchanged up to ``MAX_TEXT_CHARS`` characters,
    else its head and a marker saying how much was cut."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    cut = len(text) - MAX_TEXT_CHARS
    return text[:MAX_TEXT_CHARS] + f"\n[... {cut} more characters not kept]"


def make_entry(kind: str, text: str, ask_id: str | None = None) -> dict[str, Any]:
    """A transcript entry (the keys of the module docstring) stamped now.

    Raises:
      ValueError: for a kind not in ``TRANSCRIPT_KINDS``.
      TypeError: if ``text`` is not a str.
    """
    if kind not in TRANSCRIPT_KINDS:
        raise ValueError(f"transcript kind must be one of {TRANSCRIPT_KINDS}, got {kind!r}")
    if not isinstance(text, str):
        raise TypeError(f"transcript text must be a str, got {type(text).__name__}")
    return {"kind": kind, "text": clip_text(text), "ask_id": ask_id, "at": now_iso()}


class TranscriptBook:
    """Transcript entries in this process's memory, per run (thread-safe; bounded per run
    and in runs kept)."""

    def __init__(self, per_run: int = ENTRIES_PER_RUN_IN_MEMORY) -> None:
        self.per_run = int(per_run)
        self._runs: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, run_id: str, entry: dict[str, Any]) -> None:
        """Keep ``entry`` (from :func:`make_entry`) for ``run_id``."""
        with self._lock:
            entries = self._runs.get(run_id)
            if entries is None:
                entries = self._runs[run_id] = []
                if len(self._runs) > _RUNS_IN_MEMORY:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(run_id)
            entries.append(dict(entry))
            if len(entries) > self.per_run:
                del entries[: len(entries) - self.per_run]

    async def entries(self, run_id: str) -> list[dict[str, Any]]:
        """``run_id``'s entries, oldest first (an unknown run has none)."""
        with self._lock:
            return [{k: e[k] for k in TRANSCRIPT_KEYS} for e in self._runs.get(run_id, ())]


class WorkspaceTranscripts(TranscriptBook):
    """Transcript entries in the workspace database (a batch source of its write engine).

    Entries are queued from the loop and committed with the next batch (nobody awaits
    them); reads see queued and in-flight entries too. Use :meth:`for_workspace`: one
    per open workspace, shared by every manager on it.

    Args:
      workspace: opened with :data:`TRANSCRIPTS_SCHEMA`.
    """

    _by_workspace: ClassVar[weakref.WeakKeyDictionary[Workspace, WorkspaceTranscripts]] = (
        weakref.WeakKeyDictionary()
    )
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self._qlock = workspace.lock
        self._queue: list[tuple[Any, ...]] = []
        self._inflight: list[tuple[Any, ...]] = []
        workspace.add_source(self)

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> WorkspaceTranscripts:
        """The transcripts of ``workspace`` (created on first use)."""
        with cls._registry_lock:
            found = cls._by_workspace.get(workspace)
            if found is None:
                found = cls._by_workspace[workspace] = cls(workspace)
            return found

    def add(self, run_id: str, entry: dict[str, Any]) -> None:
        """Queue ``entry`` for the database. An ``ask`` entry is stored open (with this
        process's owner token) until an entry of a closing kind for it is stored."""
        kind = entry["kind"]
        row = (
            _entry_id(),
            run_id,
            kind,
            db_text(entry["text"]),
            entry.get("ask_id"),
            entry["at"],
            self.workspace.owner_token if kind == "ask" else None,
            1 if kind == "ask" else None,
        )
        with self._qlock:
            self._queue.append(row)
            self.workspace.enqueued_locked()

    # BatchSource ---------------------------------------------------------------
    def take_locked(self) -> list[tuple[Any, ...]] | None:
        if not self._queue:
            return None
        batch, self._queue = self._queue, []
        self._inflight.extend(batch)
        return batch

    def inline_ok_locked(self) -> bool:
        return len(self._queue) <= 64

    def prepare(self, batch: list[tuple[Any, ...]]) -> None:
        return None

    def single_statement(self, batch: list[tuple[Any, ...]]) -> None:
        return None

    def write(
        self, conn: sqlite3.Connection, batch: list[tuple[Any, ...]], urgent: bool, careful: bool
    ) -> None:
        insert = (
            "INSERT INTO run_transcripts (entry_id, run_id, kind, text, ask_id, at, owner, "
            "open) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        if careful:  # a first attempt failed: one bad row must not lose the others
            for row in batch:
                try:
                    conn.execute(insert, row)
                except sqlite3.Error:
                    log.exception("a transcript entry of run %s could not be stored", row[1])
        else:
            conn.executemany(insert, batch)
        closed = [(r[4],) for r in batch if r[2] in CLOSING_KINDS and r[4] is not None]
        if closed:
            conn.executemany(
                "UPDATE run_transcripts SET open = 0 WHERE ask_id = ? AND open = 1", closed
            )

    def _drop_inflight_locked(self, batch: list[tuple[Any, ...]]) -> None:
        done = {r[0] for r in batch}
        self._inflight = [r for r in self._inflight if r[0] not in done]

    def committed_locked(self, batch: list[tuple[Any, ...]], urgent: bool) -> bool:
        self._drop_inflight_locked(batch)
        return False

    def failed_locked(self, batch: list[tuple[Any, ...]]) -> bool:
        self._drop_inflight_locked(batch)
        self._queue[:0] = batch
        return bool(batch)

    def maintenance_due_locked(self) -> float | None:
        return None

    def maintain(self, conn: sqlite3.Connection) -> None:
        return None

    # reading -------------------------------------------------------------------
    async def entries(self, run_id: str) -> list[dict[str, Any]]:
        """``run_id``'s entries from the workspace (and those not committed yet), oldest
        first.

        Raises:
          WorkspaceError: if the workspace cannot be read.
        """
        with self._qlock:
            pending = [r for r in (*self._inflight, *self._queue) if r[1] == run_id]

        def fetch(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return [
                tuple(r)
                for r in conn.execute(
                    "SELECT entry_id, run_id, kind, text, ask_id, at FROM run_transcripts "
                    "WHERE run_id = ? ORDER BY seq",
                    (run_id,),
                )
            ]

        rows = await self.workspace.read(fetch)
        seen = {r[0] for r in rows}
        rows.extend(r for r in pending if r[0] not in seen)
        return [
            {"kind": r[2], "text": text_from_db(r[3]), "ask_id": r[4], "at": r[5]} for r in rows
        ]
