"""Where the runtime keeps things: the run store protocol and its in-memory and SQLite
implementations, the workspace folder and its write engine, schema components, blobs,
run logs and the JSON codecs. Imports nothing above ``runtime/models.py`` and
``runtime/errors.py``.

Layers inside (each imports only those below it)::

    sqlite_store, run_logs     the runs and run_logs tables (schema, SQL, recovery)
    blobs                      content-addressed files
    workspace                  the folder, its database, readers; builds a WriteEngine
    writer                     the write connection, group commit, inline commits
    owners, schema, run_store  process liveness, migrations, the store protocol
    codecs                     JSON / text / identifier codecs (a leaf)
"""

from .blobs import BlobError, BlobStore
from .run_logs import LOGS_SCHEMA, RunLogBook, WorkspaceRunLogs
from .run_store import InMemoryRunStore, RunStore
from .schema import Migration, SchemaComponent
from .sqlite_store import INTERRUPTED_ERROR, RUNS_SCHEMA, SqliteRunStore
from .workspace import Workspace, resolve_workspace_path

__all__ = [
    "INTERRUPTED_ERROR",
    "LOGS_SCHEMA",
    "RUNS_SCHEMA",
    "BlobError",
    "BlobStore",
    "InMemoryRunStore",
    "Migration",
    "RunLogBook",
    "RunStore",
    "SchemaComponent",
    "SqliteRunStore",
    "Workspace",
    "WorkspaceRunLogs",
    "resolve_workspace_path",
]
