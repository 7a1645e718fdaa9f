"""Versioned schema of the workspace database, by component.

Each job that keeps tables in the workspace (owners, runs, logs, kv, memory, artifacts, and
what later features add) declares a :class:`SchemaComponent`: its name, its migrations
(version 1 creates its tables; version *n* + 1 changes them) and an optional hook run
every time a workspace opens (recovery). The workspace applies, in one transaction when it
opens, every migration newer than the version stored for that component in the
``schema_components`` table, so a workspace written by an older ag_jupyter opens and is
brought forward; a workspace written by a newer one is refused.

``PRAGMA user_version`` holds the format of the version bookkeeping itself:

- 0: a new, empty database;
- 1: written by ag_jupyter 0.1 wave 1, before components had versions: its owners, runs,
  kv, memory and artifacts tables are their version 1 (``LEGACY_COMPONENTS``);
- 2: component versions are in ``schema_components`` (this module).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 2
#: What a user_version-1 workspace holds, as component versions.
LEGACY_COMPONENTS = {"owners": 1, "runs": 1, "kv": 1, "memory": 1, "artifacts": 1}


class NewerSchemaError(Exception):
    """The database was written by a newer ag_jupyter (a format or component version this
    code does not know). Carries ``what`` (e.g. ``"runs 4 > 3"``)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True)
class Migration:
    """One step of a component's schema.

    Attributes:
      version: the component version this step produces (1, 2, ...).
      statements: SQL statements run in order.
      apply: or a function ``apply(conn)`` for steps SQL alone cannot express.
    """

    version: int
    statements: tuple[str, ...] = ()
    apply: Callable[[sqlite3.Connection], None] | None = None


OpenHook = Callable[[sqlite3.Connection, Any], None]
PruneHook = Callable[[sqlite3.Connection, list[str], Any], list[Any]]


@dataclass(frozen=True)
class SchemaComponent:
    """The tables of one job in the workspace, with their migrations.

    Attributes:
      name: the component's key in ``schema_components`` (e.g. ``"runs"``).
      migrations: in increasing ``version`` order, starting at 1.
      on_open: ``hook(conn, workspace)`` run inside the opening transaction after every
        component is migrated, in the order the components were given (recovery work:
        folding journals, marking interrupted runs).
      run_tables: tables with a ``run_id`` column whose rows belong to a run: deleted with
        it when history is pruned.
      on_prune: ``hook(conn, run_ids, workspace) -> [path, ...]`` run in the pruning transaction
        after the runs' rows are gone; returns files no longer referenced, deleted once
        the transaction is committed (artifact blobs).
    """

    name: str
    migrations: tuple[Migration, ...]
    on_open: OpenHook | None = field(default=None, compare=False)
    run_tables: tuple[str, ...] = ()
    on_prune: PruneHook | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        versions = [m.version for m in self.migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise ValueError(
                f"schema component {self.name!r}: migrations must be versions 1..n in "
                f"order, got {versions}"
            )

    @property
    def version(self) -> int:
        """The newest version this code knows."""
        return len(self.migrations)


_BOOKKEEPING = """CREATE TABLE IF NOT EXISTS schema_components (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID"""


def stored_versions(conn: sqlite3.Connection) -> dict[str, int]:
    """Component versions recorded in the database (for a user_version-1 database, the
    legacy layout). Call inside a transaction.

    Raises:
      NewerSchemaError: if the bookkeeping format is newer than this code's.
    """
    fmt = conn.execute("PRAGMA user_version").fetchone()[0]
    if fmt > FORMAT_VERSION:
        raise NewerSchemaError(f"format {fmt} > {FORMAT_VERSION}")
    if fmt == 0:
        return {}
    if fmt == 1:
        return dict(LEGACY_COMPONENTS)
    return {name: int(v) for name, v in conn.execute("SELECT name, version FROM schema_components")}


def migrate(
    conn: sqlite3.Connection, components: Sequence[SchemaComponent], workspace: Any
) -> dict[str, tuple[int, int]]:
    """Bring every component to its newest version, then run the open hooks.

    Call inside a write transaction (the caller commits or rolls back). Components the
    database has but this code does not know are left as they are.

    Returns ``{name: (from_version, to_version)}`` for the components that changed.

    Raises:
      NewerSchemaError: if a component is stored at a newer version than this code knows.
      sqlite3.Error: from a migration (the caller rolls back: nothing is changed).
    """
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise ValueError(f"schema components must have distinct names, got {names}")
    current = stored_versions(conn)
    conn.execute(_BOOKKEEPING)
    changed: dict[str, tuple[int, int]] = {}
    for component in components:
        have = current.get(component.name, 0)
        if have > component.version:
            raise NewerSchemaError(f"{component.name} {have} > {component.version}")
        for step in component.migrations[have:]:
            for statement in step.statements:
                conn.execute(statement)
            if step.apply is not None:
                step.apply(conn)
        if have != component.version or component.name not in current:
            changed[component.name] = (have, component.version)
    # Record every version (the legacy ones too, which had no rows yet).
    conn.executemany(
        "INSERT INTO schema_components (name, version) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET version = excluded.version",
        [(c.name, c.version) for c in components]
        + [(n, v) for n, v in current.items() if n not in names],
    )
    conn.execute(f"PRAGMA user_version={FORMAT_VERSION}")
    for component in components:
        if component.on_open is not None:
            component.on_open(conn, workspace)
    return changed
