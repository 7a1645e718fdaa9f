"""AetherGraph's ``aethergraph.services.mcp`` import path.

``from ag_jupyter.services.mcp import StdioMCPClient, HttpMCPClient`` (and ``WsMCPClient``,
which raises ``NotImplementedError``). The clients run on the official ``mcp`` SDK
(``pip install 'ag-jupyter[mcp]'``); see ``ag_jupyter.runtime.services.mcp`` for how they
differ from 0.1.0a15's.
"""

from ..runtime.services.mcp import (
    HttpMCPClient,
    MCPService,
    StdioMCPClient,
    WsMCPClient,
)

__all__ = ["HttpMCPClient", "MCPService", "StdioMCPClient", "WsMCPClient"]
