"""AetherGraph's ``aethergraph.services`` import path: the MCP clients and service.

``from ag_jupyter.services import StdioMCPClient, MCPService`` works as AetherGraph's
``from aethergraph.services import ...`` did (0.1.0a15 also exported ``Service`` here; it is
not provided yet). The implementation lives in ``ag_jupyter.runtime.services.mcp``.
"""

from .mcp import HttpMCPClient, MCPService, StdioMCPClient, WsMCPClient

__all__ = ["HttpMCPClient", "MCPService", "StdioMCPClient", "WsMCPClient"]
