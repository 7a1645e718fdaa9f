"""The embedded AetherGraph-style runtime: graphs, RunManager, run store, NodeContext,
ad-hoc sessions and services. Imports nothing from IPython or ipywidgets.

Layers, each importing only those below it::

    launch, runtime_services    await graph(...), run_async / run; current_services...
    defaults                    the composition root (get_run_manager, workspaces)
    session                     open_session / build_adhoc_context
    tools                       @tool: calls recorded as steps of the current run
    node_context                NodeContext and its runner() facade
    run_manager                 the run state machine
    services/, executors/       kv, memory, artifacts, logger, llm; base.Service; where
                                bodies execute (local threads, a Dask cluster)
    store/                      run stores, the workspace, its write engine, codecs
    graphs, models, errors      GraphFunction and registry, records and enums, exceptions
    current, output_capture     the current run (a context variable); print() routing
    placeholders                AetherGraph names not provided (NotImplementedError)

``services/channel`` is ``context.channel()``: asks (``Ask``, ``RunManager.pending_asks /
answer / transcript``), the channel bus and adapters (``register_channel_adapter``...).

Every name AetherGraph 0.1.0a15 exports from ``aethergraph.runtime`` imports from here.
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
    ArtifactURIError,
    AskAnswerError,
    AskClosedError,
    AskError,
    AskNotFoundError,
    AskTimeoutError,
    AskUploadTooLargeError,
    BlobError,
    BlobMissingError,
    CorpusNotFoundError,
    DuplicateRunIdError,
    EmbedderMismatchError,
    ExecutorError,
    ExecutorNotAvailableError,
    GraphNotFoundError,
    LLMAuthError,
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMModelNotFoundError,
    LLMOutputError,
    LLMRateLimitError,
    LLMTimeoutError,
    MCPConfigError,
    MCPConnectionError,
    MCPError,
    MCPRequestError,
    MCPServerStartError,
    MCPTimeoutError,
    MCPToolError,
    RunInputError,
    RunNotFoundError,
    SchedulerLostError,
    ServiceNotConfiguredError,
    ServiceNotOnWorkerError,
    WorkerLostError,
    WorkspaceClosedError,
    WorkspaceCorruptError,
    WorkspaceError,
    WorkspaceWriteError,
)
from .executors import (
    close_dask_executors,
    configure_dask,
    dask_executor_for,
    default_executor,
    set_dask_address,
    set_dask_client,
    set_default_executor,
)
from .graphs import GraphFunction, GraphRegistry, GraphSpec, default_registry, graph_fn
from .launch import blocking_waits, run, run_async, set_blocking_waits
from .models import (
    LIVE_STATUSES,
    TERMINAL_STATUSES,
    RunImportance,
    RunOrigin,
    RunRecord,
    RunStatus,
    RunVisibility,
)
from .node_context import CancelFlag, NodeContext, RunnerFacade
from .placeholders import (
    current_logger_factory,
    ensure_services_installed,
    get_skill_registry,
    install_services,
    register_skill,
    register_skill_file,
    register_skill_inline,
    register_skills_from_path,
    set_rag_index_backend,
    set_rag_llm_client,
)
from .run_manager import RunEvent, RunManager, RunWatch
from .runtime_services import (
    current_services,
    get_llm_service,
    register_llm_client,
    set_llm_client,
)
from .services import (
    ServiceHub,
    get_ext_context_service,
    list_ext_context_services,
    register_context_service,
    register_mcp_client,
)
from .services.base import AsyncRWLock, BaseContextService, Service
from .services.channel import (
    Ask,
    Button,
    ChannelSession,
    get_channel_service,
    get_default_channel,
    register_channel_adapter,
    set_channel_alias,
    set_default_channel,
)
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
from .tools import tool

#: The names AetherGraph's docs use for ``get_ext_context_service`` /
#: ``list_ext_context_services`` (docs/external-context-services.md, section 4.2).
get_context_service = get_ext_context_service
list_context_services = list_ext_context_services

__all__ = [
    "LIVE_STATUSES",
    "TERMINAL_STATUSES",
    "AgJupyterError",
    "ArtifactNotFoundError",
    "ArtifactURIError",
    "Ask",
    "AskAnswerError",
    "AskClosedError",
    "AskError",
    "AskNotFoundError",
    "AskTimeoutError",
    "AskUploadTooLargeError",
    "AsyncRWLock",
    "BaseContextService",
    "BlobError",
    "BlobMissingError",
    "Button",
    "CancelFlag",
    "ChannelSession",
    "CorpusNotFoundError",
    "DuplicateRunIdError",
    "EmbedderMismatchError",
    "ExecutorError",
    "ExecutorNotAvailableError",
    "GraphFunction",
    "GraphNotFoundError",
    "GraphRegistry",
    "GraphSpec",
    "InMemoryRunStore",
    "LLMAuthError",
    "LLMConnectionError",
    "LLMError",
    "LLMHTTPError",
    "LLMModelNotFoundError",
    "LLMOutputError",
    "LLMRateLimitError",
    "LLMTimeoutError",
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
    "SchedulerLostError",
    "Service",
    "ServiceHub",
    "ServiceNotConfiguredError",
    "ServiceNotOnWorkerError",
    "SqliteRunStore",
    "WorkerLostError",
    "Workspace",
    "WorkspaceClosedError",
    "WorkspaceCorruptError",
    "WorkspaceError",
    "WorkspaceWriteError",
    "blocking_waits",
    "build_adhoc_context",
    "close_all_mcp_clients",
    "close_all_mcp_clients_soon",
    "close_dask_executors",
    "configure_dask",
    "configure_mcp_servers",
    "current_logger_factory",
    "current_run_managers",
    "current_services",
    "dask_executor_for",
    "default_executor",
    "default_registry",
    "default_workspace",
    "ensure_services_installed",
    "get_channel_service",
    "get_context_service",
    "get_default_channel",
    "get_ext_context_service",
    "get_llm_service",
    "get_mcp_service",
    "get_run_manager",
    "get_skill_registry",
    "graph_fn",
    "install_services",
    "list_context_services",
    "list_ext_context_services",
    "list_mcp_clients",
    "open_session",
    "open_workspace",
    "open_workspace_manager",
    "register_channel_adapter",
    "register_context_service",
    "register_llm_client",
    "register_mcp_client",
    "register_skill",
    "register_skill_file",
    "register_skill_inline",
    "register_skills_from_path",
    "run",
    "run_async",
    "set_blocking_waits",
    "set_channel_alias",
    "set_dask_address",
    "set_dask_client",
    "set_default_channel",
    "set_default_executor",
    "set_llm_client",
    "set_mcp_service",
    "set_rag_index_backend",
    "set_rag_llm_client",
    "set_run_manager_factory",
    "tool",
    "workspace_runtime",
]
