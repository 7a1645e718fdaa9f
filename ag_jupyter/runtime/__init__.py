"""The embedded AetherGraph-style runtime: graphs, RunManager, run store, NodeContext,
ad-hoc sessions and services. Imports nothing from IPython or ipywidgets.

Layers, each importing only those below it::

    defaults                    the composition root (get_run_manager, workspaces)
    session                     open_session / build_adhoc_context
    node_context                NodeContext and its runner() facade
    run_manager                 the run state machine
    services/                   kv, memory, artifacts, logger, llm
    store/                      run stores, the workspace, its write engine, codecs
    graphs, models, errors      graph registry, records and enums, exceptions
"""

from .defaults import (
    current_run_managers,
    default_workspace,
    get_run_manager,
    open_workspace,
    open_workspace_manager,
    set_run_manager_factory,
    workspace_runtime,
)
from .errors import (
    AgJupyterError,
    ArtifactNotFoundError,
    DuplicateRunIdError,
    GraphNotFoundError,
    MCPConfigError,
    MCPConnectionError,
    MCPError,
    MCPRequestError,
    MCPServerStartError,
    MCPTimeoutError,
    MCPToolError,
    RunInputError,
    RunNotFoundError,
    ServiceNotConfiguredError,
    WorkspaceClosedError,
    WorkspaceCorruptError,
    WorkspaceError,
    WorkspaceWriteError,
)
from .graphs import GraphRegistry, GraphSpec, default_registry, graph_fn
from .models import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    RunImportance,
    RunOrigin,
    RunRecord,
    RunStatus,
    RunVisibility,
)
from .node_context import NodeContext, RunnerFacade
from .run_manager import RunEvent, RunManager, RunWatch
from .services import ServiceHub, register_context_service, register_mcp_client
from .services.mcp import (
    close_all_mcp_clients,
    close_all_mcp_clients_soon,
    configure_mcp_servers,
    get_mcp_service,
    list_mcp_clients,
    set_mcp_service,
)
from .session import build_adhoc_context, open_session
from .store import InMemoryRunStore, RunStore, SqliteRunStore, Workspace

__all__ = [
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
    "AgJupyterError",
    "ArtifactNotFoundError",
    "DuplicateRunIdError",
    "GraphNotFoundError",
    "GraphRegistry",
    "GraphSpec",
    "InMemoryRunStore",
    "MCPConfigError",
    "MCPConnectionError",
    "MCPError",
    "MCPRequestError",
    "MCPServerStartError",
    "MCPTimeoutError",
    "MCPToolError",
    "NodeContext",
    "RunEvent",
    "RunImportance",
    "RunInputError",
    "RunManager",
    "RunNotFoundError",
    "RunOrigin",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "RunVisibility",
    "RunWatch",
    "RunnerFacade",
    "ServiceHub",
    "ServiceNotConfiguredError",
    "SqliteRunStore",
    "Workspace",
    "WorkspaceClosedError",
    "WorkspaceCorruptError",
    "WorkspaceError",
    "WorkspaceWriteError",
    "build_adhoc_context",
    "close_all_mcp_clients",
    "close_all_mcp_clients_soon",
    "configure_mcp_servers",
    "current_run_managers",
    "default_registry",
    "default_workspace",
    "get_mcp_service",
    "get_run_manager",
    "graph_fn",
    "list_mcp_clients",
    "open_session",
    "open_workspace",
    "open_workspace_manager",
    "register_context_service",
    "register_mcp_client",
    "set_mcp_service",
    "set_run_manager_factory",
    "workspace_runtime",
]
