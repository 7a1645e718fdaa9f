"""The embedded AetherGraph-style runtime: graphs, RunManager, run store, NodeContext,
ad-hoc sessions and services. Imports nothing from IPython or ipywidgets."""

from .errors import (
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
from .run_manager import (
    RunEvent,
    RunManager,
    RunWatch,
    current_run_managers,
    get_run_manager,
    open_workspace_manager,
    set_run_manager_factory,
)
from .run_store import InMemoryRunStore, RunStore
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
from .sqlite_store import SqliteRunStore
from .workspace import Workspace, WorkspaceError, open_workspace, workspace_runtime

__all__ = [
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
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
    "WorkspaceError",
    "build_adhoc_context",
    "close_all_mcp_clients",
    "close_all_mcp_clients_soon",
    "configure_mcp_servers",
    "current_run_managers",
    "default_registry",
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
