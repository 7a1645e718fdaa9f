"""Exceptions raised by the embedded runtime.

Each message says what was wrong, with the offending value, and what to do next.
"""

from __future__ import annotations


class GraphNotFoundError(LookupError):
    """No graph is registered under the requested id.

    Raised by ``RunManager.submit_run`` / ``run_and_wait`` (and the ``runner()`` facade)
    before any run record is created.
    """


class RunNotFoundError(LookupError):
    """No run has the requested run id.

    Raised at once by ``wait_run`` / ``cancel_run`` / ``get_record``: never after a wait.
    """


class RunInputError(ValueError):
    """A run's inputs are missing, unexpected or of the wrong type.

    Raised when the run is submitted, before any run record is created or any code runs.
    """


class DuplicateRunIdError(ValueError):
    """An explicit ``run_id`` is already used by another run in this run store."""


class ServiceNotConfiguredError(RuntimeError):
    """A context service (llm, rag, mcp, ...) was asked for but is not configured.

    Raised at once (never after a network time-out); the message says which environment
    variables or ``open_session`` overrides configure it.
    """


# MCP (context.mcp(name)) --------------------------------------------------------------
# MCPError (RuntimeError: AetherGraph 0.1.0a15 raised RuntimeError for every MCP failure)
# ├── MCPConfigError (also ValueError)       a configured server's settings are invalid
# ├── MCPServerStartError                    the server would not start or handshake
# ├── MCPConnectionError (also ConnectionError)  it died again right after a restart
# ├── MCPTimeoutError (also TimeoutError)    no answer within the client's timeout
# ├── MCPRequestError                        a JSON-RPC error answer (unknown tool, ...)
# └── MCPToolError                           a tool result with ``isError: true``
# Messages never contain ``env`` values or HTTP header values: they are secrets.


class MCPError(RuntimeError):
    """Base of every error raised by ``context.mcp(name)`` clients.

    Attributes: ``server`` (the client's name, e.g. ``"time"``) and ``tool`` (the tool name,
    or None when the request was not a tool call).
    """

    def __init__(self, message: str, *, server: str | None = None, tool: str | None = None):
        super().__init__(message)
        self.server = server
        self.tool = tool


class MCPConfigError(MCPError, ValueError):
    """An MCP server's configuration is invalid (``configure_mcp_servers``, client arguments).

    Raised before anything starts; the message names the server and the offending key.
    """


class MCPServerStartError(MCPError):
    """An MCP server did not start: the command is missing, exited at once, or the MCP
    handshake failed or timed out (or, for HTTP, the URL could not be reached).

    The message names the server and the command (or URL) and ends with the server's last
    stderr lines. Attributes: ``command`` (list of str, or None for HTTP), ``url`` (str or
    None; user info and query string removed), ``stderr_tail`` (str).
    """

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        command: list[str] | None = None,
        url: str | None = None,
        stderr_tail: str = "",
    ):
        super().__init__(message, server=server)
        self.command = command
        self.url = url
        self.stderr_tail = stderr_tail


class MCPConnectionError(MCPError, ConnectionError):
    """An MCP server closed the connection (its process died) during a request, and did so
    again after the one automatic restart that request gets."""


class MCPTimeoutError(MCPError, TimeoutError):
    """An MCP request got no answer within the client's ``timeout`` (seconds).

    The SDK sends the server a cancellation for the abandoned request; the server keeps
    running. Attributes: ``timeout_s`` (float, seconds).
    """

    def __init__(
        self, message: str, *, server: str | None = None, tool: str | None = None,
        timeout_s: float | None = None,
    ):
        super().__init__(message, server=server, tool=tool)
        self.timeout_s = timeout_s


class MCPRequestError(MCPError):
    """The MCP server answered a request with a JSON-RPC error (for example -32602 for an
    unknown tool or invalid arguments).

    Attributes: ``method`` (e.g. ``"tools/call"``), ``code`` (int), ``data`` (the error's data,
    or None).
    """

    def __init__(
        self, message: str, *, server: str | None = None, tool: str | None = None,
        method: str = "", code: int = 0, data: object = None,
    ):
        super().__init__(message, server=server, tool=tool)
        self.method = method
        self.code = code
        self.data = data


class MCPToolError(MCPError):
    """A tool call returned a result with ``isError: true`` (the tool itself failed).

    AetherGraph 0.1.0a15 returned such results like any other; we raise, so a failed tool
    never passes for a result. Attributes: ``result`` (the whole result dict, as ``call``
    would have returned it).
    """

    def __init__(
        self, message: str, *, server: str | None = None, tool: str | None = None,
        result: dict | None = None,
    ):
        super().__init__(message, server=server, tool=tool)
        self.result = result
