"""MCP tool servers for ``context.mcp(name)``, on the official ``mcp`` SDK (2.x).

Install with ``pip install 'ag-jupyter[mcp]'``. The SDK is imported when a client first
connects, so this module (and ``ag_jupyter.services.mcp``) imports without it.

Shape (AetherGraph 0.1.0a15's, as its code returns it): ``StdioMCPClient(cmd, env=None,
timeout=60.0)``, ``HttpMCPClient(url, headers=None, timeout=60.0)``; ``list_tools()`` ->
``{"tools": [{"name", "description", "inputSchema", ...}], ...}``, ``call(tool,
params=None)`` -> the call's result dict (``{"content": [...], "isError": false,
"structuredContent"?: {...}, ...}``), ``list_resources()``, ``read_resource(uri)``, ``open()``,
``close()``: the JSON-RPC results, as dicts (the SDK's result models dumped with
``model_dump(mode="json", by_alias=True, exclude_none=True)``).

Where we differ from 0.1.0a15, and why:

- a15 wrote JSON-RPC by hand and skipped the ``initialize`` handshake, so real servers
  answered ``-32602``; the SDK's ``mcp.Client`` negotiates (``server/discover`` for
  2026-07-28 servers, else ``initialize``), multiplexes concurrent requests on one
  connection and applies the per-request ``timeout``.
- A result with ``isError: true`` raises :class:`MCPToolError` (a15 returned it); a JSON-RPC
  error raises :class:`MCPRequestError`, a timeout :class:`MCPTimeoutError` (a15: a bare
  ``RuntimeError`` / ``asyncio.TimeoutError``). All are ``MCPError``, a ``RuntimeError``.
- ``HttpMCPClient`` speaks MCP streamable HTTP to the endpoint URL itself (a15 posted to
  ``{base_url}/rpc``); ``WsMCPClient`` raises ``NotImplementedError``.
- A stdio server inherits only the SDK's safe environment (``HOME``, ``PATH``, ``USER``...)
  plus ``env`` (a15 passed the whole ``os.environ``: every key of the kernel to a third-party
  process); ``inherit_env=True`` restores a15's behaviour.

Lifecycle (ours): a client starts its server on first use, on the calling event loop, and
keeps one connection (one process for stdio) shared by every run and session of that loop.
The SDK's transports are anyio context managers that must be entered and exited by one task,
so each connection has an *owner task* that enters ``stdio_client``/``streamable_http_client``
and ``mcp.Client`` and waits; callers from any task send requests through the connected
``mcp.Client`` (its session multiplexes them), and closing wakes the owner, which exits the
contexts (the SDK closes stdin, waits, then terminates the process group). If the server dies,
the next request (or the one in flight) restarts it and is retried once; a second death in the
same request raises :class:`MCPConnectionError`. ``aclose()`` stops it (a later request starts
it again); :func:`close_all_mcp_clients` stops every open server of the process. A server
whose owning Python process is killed sees its stdin close and exits (MCP servers end on
stdin EOF). When the loop ends (a script's ``asyncio.run`` returning), the owner task is
cancelled and closes the server on its way out.

Secrets: ``env`` values and HTTP header values are never put in reprs, log lines, error
messages or step records; values of 6 characters or more are also masked (``***``) wherever
the server's own output (its stderr, a tool result preview) is shown by us.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import (
    MCPConfigError,
    MCPConnectionError,
    MCPError,
    MCPRequestError,
    MCPServerStartError,
    MCPTimeoutError,
    MCPToolError,
    ServiceNotConfiguredError,
)

__all__ = [
    "BoundMCPClient",
    "ContextMCPService",
    "HttpMCPClient",
    "MCPService",
    "StdioMCPClient",
    "WsMCPClient",
    "close_all_mcp_clients",
    "close_all_mcp_clients_soon",
    "configure_mcp_servers",
    "get_mcp_service",
    "list_mcp_clients",
    "record_step",
    "register_mcp_client",
    "set_mcp_service",
]

logger = logging.getLogger("ag_jupyter.mcp")

DEFAULT_TIMEOUT_S = 60.0
# JSON-RPC codes (mcp_types.jsonrpc); copied so this module imports without the SDK.
_CONNECTION_CLOSED = -32000
_REQUEST_TIMEOUT = -32001
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_PREVIEW_CHARS = 2000  # inputs/outputs previews in step records (the steps table's limit)
_STDERR_TAIL_BYTES = 8192
_STDERR_TAIL_LINES = 20
_SECRET_MIN_CHARS = 6  # shorter env/header values ("1", "true") are not masked in output
_STDERR_DRAIN_S = 0.5  # after a failed start, how long to wait for the last stderr bytes
_MIN_START_TIMEOUT_S = 10.0  # default start_timeout: max(timeout, this)


_SDK_MODULES = ("mcp", "mcp.client.stdio", "mcp.client.streamable_http", "jsonschema")
_sdk_imported = False


def _import_sdk() -> None:
    import importlib

    for module in _SDK_MODULES:
        importlib.import_module(module)


async def _ensure_sdk() -> None:
    """Import the SDK in a worker thread the first time: ``mcp`` takes ~0.35 s and
    ``jsonschema`` (which the SDK imports on a first tool call with an output schema)
    ~0.8 s here, which would otherwise stall the loop.

    Raises:
      ImportError: if the ``mcp`` extra is not installed, saying how to install it.
    """
    global _sdk_imported
    if _sdk_imported:
        return
    try:
        await asyncio.to_thread(_import_sdk)
    except ImportError as exc:
        raise ImportError(
            f"MCP clients need the official MCP SDK ({exc}): pip install 'ag-jupyter[mcp]' "
            "(it installs mcp>=2.3,<3)"
        ) from exc
    _sdk_imported = True


def _sdk_error_class() -> type[Exception]:
    try:
        from mcp.shared.exceptions import MCPError as SDKMCPError
    except ImportError as exc:  # pragma: no cover - the mcp extra is in the test extras
        raise ImportError(
            "MCP clients need the official MCP SDK: pip install 'ag-jupyter[mcp]' "
            "(it installs mcp>=2.3,<3)"
        ) from exc
    return SDKMCPError


# ----------------------------------------------------------------------------- helpers
def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def _secret_values(values: Iterable[str]) -> tuple[str, ...]:
    """The strings to mask: each value, and each word of it ("Bearer <token>")."""
    out: set[str] = set()
    for value in values:
        for candidate in (value, *value.split()):
            if len(candidate) >= _SECRET_MIN_CHARS:
                out.add(candidate)
    # Longest first, so a value is masked whole before any of its words.
    return tuple(sorted(out, key=len, reverse=True))


def _display_url(url: str) -> str:
    """The URL without user info, query or fragment (they may carry credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _preview(value: Any, secrets: Iterable[str]) -> str | None:
    if value is None:
        return None
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    text = _redact(text, secrets)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


def _leaves(exc: BaseException) -> list[BaseException]:
    """The innermost exceptions of an (anyio) exception group, in order."""
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for sub in exc.exceptions:
            out.extend(_leaves(sub))
        return out
    return [exc]


def _result_text(result: Mapping[str, Any], limit: int = 300) -> str:
    texts = [
        str(block.get("text", ""))
        for block in result.get("content") or []
        if isinstance(block, Mapping) and block.get("type") == "text"
    ]
    text = " ".join(t.strip() for t in texts if t.strip()) or "(no text content)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_timeout(timeout: Any, where: str) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise MCPConfigError(
            f"{where}: timeout must be a positive number of seconds, got {timeout!r}"
        )
    return float(timeout)


def _check_url(url: Any, where: str) -> str:
    try:
        ok = isinstance(url, str) and urlsplit(url).scheme in ("http", "https") and bool(
            urlsplit(url).hostname)
    except ValueError:
        ok = False
    if not ok:
        shown = _display_url(url) if isinstance(url, str) else repr(url)
        raise MCPConfigError(f"{where}: url must be an http:// or https:// URL of the MCP "
                             f"endpoint (e.g. http://127.0.0.1:8000/mcp), got {shown}")
    return url


def _check_str_map(value: Any, what: str, where: str) -> dict[str, str]:
    """Validate env/headers without ever echoing a value (they are secrets)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MCPConfigError(f"{where}: {what} must be a dict of str to str, got a "
                             f"{type(value).__name__}")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key:
            raise MCPConfigError(f"{where}: {what} keys must be non-empty str, got {key!r}")
        if not isinstance(item, str):
            raise MCPConfigError(
                f"{where}: {what}[{key!r}] must be a str, got a {type(item).__name__} "
                "(the value is not shown: it may be a secret)"
            )
        out[key] = item
    return out


# --------------------------------------------------------------- child process helpers
def _child_pid_with_stderr(pipe_inode: int) -> int | None:
    """The pid of our child process whose stderr (fd 2) is the pipe ``pipe_inode``.

    The SDK does not expose the server's process; its stderr is a pipe we made, so the
    child holding that pipe on fd 2 is the server (Linux /proc; None elsewhere).
    """
    target = f"pipe:[{pipe_inode}]"
    candidates: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                candidates.update(int(p) for p in f.read().split())
    if not candidates:  # kernels without /proc/<pid>/task/<tid>/children: scan for our ppid
        me = os.getpid()
        with contextlib.suppress(OSError):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                        candidates.add(int(entry))
    for pid in sorted(candidates):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/2") == target:
                return pid
    return None


def _terminate_group(pid: int | None) -> None:
    """SIGTERM the server's process group (the SDK starts it in a session of its own)."""
    if pid is None or sys.platform == "win32":
        return
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(pid, signal.SIGTERM)


class _StderrTail(asyncio.Protocol):
    """Reads the server's stderr pipe on the loop: keeps the last bytes for error messages
    and logs lines at DEBUG (masked) on ``ag_jupyter.mcp``. Never writes to a cell."""

    def __init__(self, label: str, secrets: tuple[str, ...]) -> None:
        self._label = label
        self._secrets = secrets
        self._buf = bytearray()
        self.closed = asyncio.Event()
        self.transport: asyncio.BaseTransport | None = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > _STDERR_TAIL_BYTES:
            del self._buf[: len(self._buf) - _STDERR_TAIL_BYTES]
        if logger.isEnabledFor(logging.DEBUG):
            for line in data.decode("utf-8", "replace").splitlines():
                if line.strip():
                    logger.debug("mcp %s stderr: %s", self._label, _redact(line, self._secrets))

    def eof_received(self) -> bool:
        self.closed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()

    def text(self) -> str:
        lines = self._buf.decode("utf-8", "replace").splitlines()
        tail = "\n".join(line for line in lines[-_STDERR_TAIL_LINES:])
        return _redact(tail, self._secrets)


# ---------------------------------------------------------------- the SDK's streams
class _WatchedReadStream:
    """The transport's read stream, reporting when it ends (the server exited or the
    connection broke), so a dead server is noticed without waiting for a request.

    Implements the SDK's ``ReadStream`` protocol (``mcp.shared._stream_protocols``).
    """

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        import anyio

        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()


class _Connection:
    """One started server: its owner task, the connected ``mcp.Client`` and its state."""

    __slots__ = ("client", "ended", "errlog", "finished", "loop", "pid", "pipe_inode", "ready",
                 "restart_noted", "start_timer", "stderr", "stopping", "task", "wake")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        # A start error nobody awaited (all callers cancelled) must not be logged at GC.
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.wake = asyncio.Event()
        self.client: Any = None  # mcp.Client once connected
        self.task: asyncio.Task[None] | None = None
        self.start_timer: asyncio.TimerHandle | None = None
        self.pid: int | None = None
        self.stderr: _StderrTail | None = None
        self.errlog: Any = None  # our copy of the write end of the server's stderr pipe
        self.pipe_inode: int | None = None
        self.ended = False  # the transport ended: the server exited or the connection broke
        self.stopping = False  # aclose() asked the owner task to stop
        self.finished = False  # the owner task is done; nothing of it is left running
        self.restart_noted = False  # logged once, however many requests were in flight

    @property
    def usable(self) -> bool:
        return not (self.ended or self.stopping or self.finished)

    def mark_ended(self) -> None:
        self.ended = True
        self.wake.set()


# Clients with a started server, kept strongly: an open server must have an owner even if
# the user dropped the client (its owner task would otherwise be garbage-collected pending).
_open_clients: set[_MCPClientBase] = set()


# -------------------------------------------------------------------------- clients
class _MCPClientBase:
    """What the stdio and HTTP clients share: lifecycle, requests, error translation."""

    _kind = "mcp"

    def __init__(self, *, timeout: float, start_timeout: float | None, name: str | None
                 ) -> None:
        self.timeout = _check_timeout(timeout, f"{type(self).__name__}")
        # The SDK's server/discover probe has a fixed 10 s timeout of its own; the whole
        # start (spawn, probe, initialize) is bounded by start_timeout.
        self.start_timeout = (
            _check_timeout(start_timeout, f"{type(self).__name__} start_timeout")
            if start_timeout is not None else max(self.timeout, _MIN_START_TIMEOUT_S)
        )
        if name is not None and (not isinstance(name, str) or not name):
            raise MCPConfigError(f"{type(self).__name__}: name must be a non-empty str, "
                                 f"got {name!r}")
        self.name = name
        self.starts = 0  # servers started so far (a restart adds one)
        self._conn: _Connection | None = None
        self._closing: _Connection | None = None  # being stopped by an aclose() in flight
        self._secrets: tuple[str, ...] = ()

    # ---- subclass hooks
    def _label(self) -> str:
        raise NotImplementedError

    def _target(self) -> str:
        """The command line or URL, for messages (no secrets)."""
        raise NotImplementedError

    async def _connect(self, stack: AsyncExitStack, conn: _Connection) -> Any:
        """Enter the transport and ``mcp.Client`` on ``stack`` (in the owner task); return
        the connected ``mcp.Client``."""
        raise NotImplementedError

    def _start_error(self, conn: _Connection, exc: BaseException, server: str) -> MCPError:
        raise NotImplementedError

    # ---- state
    @property
    def is_open(self) -> bool:
        """Whether a server is started (or starting) for this client."""
        conn = self._conn
        return conn is not None and not conn.finished

    @property
    def pid(self) -> int | None:
        """The server's process id while one runs (stdio on Linux), else None."""
        conn = self._conn
        return conn.pid if conn is not None and not conn.finished else None

    def _state(self) -> str:
        conn = self._conn
        if conn is None or conn.finished:
            return "closed"
        if not conn.ready.done():
            return "starting"
        return "running" if conn.usable else "stopping"

    # ---- lifecycle
    def _current_conn(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = self._conn
        if conn is not None and conn.loop is not loop:
            if not conn.finished and not conn.loop.is_closed() and conn.loop.is_running():
                raise RuntimeError(
                    f"MCP client {self._label()!r} is open on another running event loop; "
                    "close it there first (await client.aclose()) or use one client per loop"
                )
            # The loop that owned it is gone (a finished asyncio.run): stop what is left.
            if not conn.finished:
                _terminate_group(conn.pid)
                _open_clients.discard(self)
            conn = self._conn = None
        if conn is None or not conn.usable:
            conn = self._conn = _Connection(loop)
            self.starts += 1
            _open_clients.add(self)
            conn.task = loop.create_task(self._own(conn), name=f"ag_jupyter.mcp:{self._label()}")
            conn.start_timer = loop.call_later(self.start_timeout, self._start_timed_out, conn)
        return conn

    def _start_timed_out(self, conn: _Connection) -> None:
        if conn.ready.done():
            return
        conn.ready.set_exception(self._start_error(conn, TimeoutError(), self._label()))
        conn.stopping = True
        if conn.task is not None:
            conn.task.cancel()  # the SDK's teardown (stop the process) is shielded

    async def _connected(self, server: str) -> _Connection:
        conn = self._current_conn()
        if not conn.ready.done():
            # shield: a caller cancelled while the server starts leaves the start to others.
            await asyncio.shield(conn.ready)
        else:
            conn.ready.result()  # re-raises the start error (the next call starts anew)
        return conn

    async def _own(self, conn: _Connection) -> None:
        """The owner task: enters the SDK's contexts, waits, and exits them (same task)."""
        try:
            await _ensure_sdk()
            async with AsyncExitStack() as stack:
                conn.client = await self._connect(stack, conn)
                if conn.start_timer is not None:
                    conn.start_timer.cancel()
                conn.ready.set_result(None)
                while not (conn.stopping or conn.ended):
                    await conn.wake.wait()
                    conn.wake.clear()
                if conn.ended and not (conn.stopping or conn.restart_noted):
                    logger.warning("MCP server %r ended (its process exited or the connection "
                                   "closed); the next request restarts it", self._label())
        except ImportError as exc:
            if not conn.ready.done():
                conn.ready.set_exception(exc)
        except Exception as exc:
            if not conn.ready.done():
                if conn.stderr is not None:  # the last lines may still be in the pipe
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(conn.stderr.closed.wait(), _STDERR_DRAIN_S)
                conn.ready.set_exception(self._start_error(conn, exc, self._label()))
            else:
                logger.warning("MCP server %r: connection failed: %s", self._label(),
                               _redact("; ".join(f"{type(e).__name__}: {e}"
                                                 for e in _leaves(exc)), self._secrets))
        finally:
            if conn.start_timer is not None:
                conn.start_timer.cancel()
            if conn.stderr is not None:
                conn.stderr.close()
            conn.ended = conn.finished = True
            conn.client = None
            if not conn.ready.done():  # cancelled (the loop is ending) or KeyboardInterrupt
                conn.ready.set_exception(MCPServerStartError(
                    f"MCP server {self._label()!r} was closed while starting",
                    server=self._label()))
            if self._conn is conn or self._conn is None:
                _open_clients.discard(self)

    async def open(self) -> None:
        """Start the server now (otherwise the first request starts it). Idempotent.

        Raises:
          MCPServerStartError: if it cannot be started (see the message for why).
        """
        await self._connected(self._label())

    async def aclose(self) -> None:
        """Stop the server (if started) and wait until its process is gone.

        The SDK closes the server's stdin, waits up to 2 s, then terminates its process
        group. Later requests start a new server. Safe to call more than once, from any
        loop (a server owned by a loop that has ended is terminated by signal); a call
        made while another one is stopping the server waits for that one.
        """
        conn, self._conn = self._conn, None
        if conn is None:
            conn = self._closing
        if conn is None or conn.finished:
            return
        self._closing = conn
        try:
            await self._stop(conn)
        finally:
            if conn.finished and self._closing is conn:
                self._closing = None

    async def _stop(self, conn: _Connection) -> None:
        conn.stopping = True
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if conn.loop is running:
            if not conn.ready.done() and conn.task is not None:
                conn.task.cancel()  # still handshaking: the SDK's teardown is shielded
            conn.wake.set()
            if conn.task is not None:
                # wait() never raises the task's outcome and never cancels it.
                await asyncio.wait({conn.task})
        elif not conn.loop.is_closed() and conn.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._stop_on_own_loop(conn), conn.loop)
            await asyncio.wrap_future(future)
        else:
            _terminate_group(conn.pid)
            conn.finished = True
            _open_clients.discard(self)

    async def _stop_on_own_loop(self, conn: _Connection) -> None:
        conn.stopping = True
        conn.wake.set()
        if conn.task is not None:
            await asyncio.wait({conn.task})

    async def close(self) -> None:
        """AetherGraph's name for :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> _MCPClientBase:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    # ---- requests
    async def _request(
        self,
        method: str,
        send: Callable[[Any], Awaitable[Any]],
        *,
        server: str,
        tool: str | None = None,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Send one request through the connected ``mcp.Client`` and dump its result.

        A request that finds the connection closed (the server died) restarts the server
        and is sent once more.
        """
        for attempt in (0, 1):
            conn = await self._connected(server)  # imports the SDK (in a thread) first
            sdk_error = _sdk_error_class()
            import anyio

            client = conn.client
            try:
                if client is None:
                    raise anyio.ClosedResourceError
                result = await send(client)
            except sdk_error as exc:
                code = getattr(exc, "code", None)
                if code == _CONNECTION_CLOSED and conn.stopping:
                    raise self._closed_during(server, method, tool) from None
                # "Connection closed" is the SDK's own answer to waiters when the transport
                # ends (EOF, or an HTTP transport torn down by an error before EOF is seen).
                if code == _CONNECTION_CLOSED and (
                    conn.ended or getattr(exc, "message", None) == "Connection closed"
                ):
                    if attempt == 0:
                        self._note_restart(conn, server)
                        continue
                    raise self._died_again(server, method, tool) from None
                if code == _REQUEST_TIMEOUT:
                    raise self._timeout_error(server, method, tool, timeout_s) from None
                raise await self._request_error(exc, server, method, tool) from None
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                if conn.stopping:
                    raise self._closed_during(server, method, tool) from None
                conn.mark_ended()
                if attempt == 0:
                    self._note_restart(conn, server)
                    continue
                raise self._died_again(server, method, tool) from None
            return result.model_dump(mode="json", by_alias=True, exclude_none=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _note_restart(self, conn: _Connection, server: str) -> None:
        conn.mark_ended()
        if conn.restart_noted:
            return
        conn.restart_noted = True
        logger.warning("MCP server %r closed the connection during a request; restarting it "
                       "and sending the request once more", server)

    def _closed_during(self, server: str, method: str, tool: str | None) -> MCPConnectionError:
        what = f"tool {server}/{tool}" if tool else f"{method} on MCP server {server!r}"
        return MCPConnectionError(
            f"{what}: the client was closed (aclose(), or close_all_mcp_clients()) while the "
            "request was in flight; it was not sent again. Call it again to start the server.",
            server=server, tool=tool,
        )

    def _died_again(self, server: str, method: str, tool: str | None) -> MCPConnectionError:
        what = f"tool {server}/{tool}" if tool else f"{method} on MCP server {server!r}"
        tail = self._conn.stderr.text() if self._conn and self._conn.stderr else ""
        return MCPConnectionError(
            f"{what}: the server closed the connection again after being restarted for this "
            f"request ({self._target()}). It may crash on this input; run the command in a "
            "terminal to see why." + (f"\nLast stderr lines:\n{tail}" if tail else ""),
            server=server, tool=tool,
        )

    def _timeout_error(
        self, server: str, method: str, tool: str | None, timeout: float | None
    ) -> MCPTimeoutError:
        seconds = timeout if timeout is not None else self.timeout
        what = f"MCP tool {server}/{tool}" if tool else f"MCP server {server!r} ({method})"
        return MCPTimeoutError(
            f"{what} did not answer within {seconds:g} s (the request's timeout); the server "
            f"was asked to cancel it and keeps running. Pass a longer timeout "
            f"({type(self).__name__}(..., timeout=...) or call(..., timeout_s=...)) if the tool "
            "is slow.",
            server=server, tool=tool, timeout_s=seconds,
        )

    async def _request_error(
        self, exc: Exception, server: str, method: str, tool: str | None
    ) -> MCPRequestError:
        code = getattr(exc, "code", 0)
        message = _redact(str(getattr(exc, "message", exc)), self._secrets)
        data = getattr(getattr(exc, "error", None), "data", None)
        if method == "tools/call" and code in (_INVALID_PARAMS, _METHOD_NOT_FOUND):
            names = await self._tool_names(server)
            if names is not None and tool not in names:
                return MCPRequestError(
                    f"MCP server {server!r} has no tool named {tool!r} (it answered JSON-RPC "
                    f"{code}: {message}). Its tools: {', '.join(sorted(names)) or '(none)'}.",
                    server=server, tool=tool, method=method, code=code, data=data,
                )
            return MCPRequestError(
                f"MCP server {server!r} rejected the arguments of tool {tool!r} (JSON-RPC "
                f"{code}: {message}). See the tool's inputSchema in list_tools().",
                server=server, tool=tool, method=method, code=code, data=data,
            )
        what = f"tool {tool!r}" if tool else method
        return MCPRequestError(
            f"MCP server {server!r} answered {what} with JSON-RPC error {code}: {message}",
            server=server, tool=tool, method=method, code=code, data=data,
        )

    async def _tool_names(self, server: str) -> set[str] | None:
        with contextlib.suppress(Exception):
            listing = await asyncio.wait_for(self.list_tools(), min(self.timeout, 5.0))
            return {t.get("name") for t in listing.get("tools", [])}
        return None

    # ---- the MCP API (AetherGraph 0.1.0a15's, plus the SDK's prompts and templates)
    async def list_tools(self, *, cursor: str | None = None) -> dict[str, Any]:
        """The server's tools: ``{"tools": [{"name", "description", "inputSchema", ...}],
        "nextCursor"?: str}`` (one page; pass ``cursor`` for the next).

        Raises:
          MCPServerStartError, MCPTimeoutError, MCPRequestError, MCPConnectionError.
        """
        return await self._request("tools/list", lambda c: c.list_tools(cursor=cursor),
                                   server=self._label())

    async def call(
        self, tool: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Call ``tool`` with ``params`` (its arguments, a dict; None means ``{}``).

        Returns the result dict: ``{"content": [{"type": "text", "text": ...}, ...],
        "isError": False, "structuredContent"?: {...}, ...}``. ``timeout_s`` (seconds)
        overrides the client's ``timeout`` for this call. Called through
        ``context.mcp(name)``, the call is also recorded as a step of the run.

        Raises:
          MCPToolError: the result has ``isError: true`` (``exc.result`` keeps it).
          MCPRequestError: a JSON-RPC error (unknown tool, invalid arguments).
          MCPTimeoutError: no answer within the timeout.
          MCPServerStartError, MCPConnectionError: the server would not start, or died twice.
        """
        return await self._call(tool, params, timeout_s=timeout_s, server=self._label())

    async def _call(
        self, tool: str, params: dict[str, Any] | None, *, timeout_s: float | None, server: str
    ) -> dict[str, Any]:
        if not isinstance(tool, str) or not tool:
            raise TypeError(f"tool must be a non-empty str, got {tool!r}")
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(f"params of MCP tool {server}/{tool} must be a dict or None, got "
                            f"a {type(params).__name__}")
        seconds = _check_timeout(timeout_s, "call") if timeout_s is not None else None
        arguments = dict(params or {})
        result = await self._request(
            "tools/call",
            lambda c: c.call_tool(tool, arguments, read_timeout_seconds=seconds),
            server=server, tool=tool, timeout_s=seconds,
        )
        if result.get("isError"):
            raise MCPToolError(
                f"MCP tool {server}/{tool} failed: {_redact(_result_text(result), self._secrets)}",
                server=server, tool=tool, result=result,
            )
        return result

    async def list_resources(self, *, cursor: str | None = None) -> dict[str, Any]:
        """The server's resources: ``{"resources": [{"uri", "name", "mimeType"?, ...}]}``."""
        return await self._request("resources/list", lambda c: c.list_resources(cursor=cursor),
                                   server=self._label())

    async def read_resource(self, uri: str) -> dict[str, Any]:
        """Read a resource: ``{"contents": [{"uri", "text" | "blob", "mimeType"?}]}``."""
        return await self._request("resources/read", lambda c: c.read_resource(uri),
                                   server=self._label())

    async def list_resource_templates(self, *, cursor: str | None = None) -> dict[str, Any]:
        """The server's resource templates (the SDK's; not in AetherGraph)."""
        return await self._request("resources/templates/list",
                                   lambda c: c.list_resource_templates(cursor=cursor),
                                   server=self._label())

    async def list_prompts(self, *, cursor: str | None = None) -> dict[str, Any]:
        """The server's prompts: ``{"prompts": [...]}`` (the SDK's; not in AetherGraph)."""
        return await self._request("prompts/list", lambda c: c.list_prompts(cursor=cursor),
                                   server=self._label())

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None
                         ) -> dict[str, Any]:
        """One prompt, rendered: ``{"messages": [...]}`` (the SDK's; not in AetherGraph)."""
        return await self._request("prompts/get", lambda c: c.get_prompt(name, arguments),
                                   server=self._label())

    def bind(self, context: Any, name: str | None = None) -> BoundMCPClient:
        """This client seen from ``context``: its tool calls are recorded as the context's
        run steps (``context.mcp(name)`` returns this)."""
        return BoundMCPClient(self, context, name or self._label())

    def _sdk_client(self, transport: Any) -> Any:
        from mcp import Client, Implementation

        from ... import __version__

        return Client(
            transport,
            read_timeout_seconds=self.timeout,
            client_info=Implementation(name="ag_jupyter", version=__version__),
        )

    def _watch(self, transport: Any, conn: _Connection) -> Any:
        @asynccontextmanager
        async def watched() -> AsyncIterator[tuple[Any, Any]]:
            async with transport as (read_stream, write_stream):
                await self._after_spawn(conn)
                yield _WatchedReadStream(read_stream, conn.mark_ended), write_stream

        return watched()

    async def _after_spawn(self, conn: _Connection) -> None:
        """Called in the owner task once the transport is open, before the handshake."""


class StdioMCPClient(_MCPClientBase):
    """An MCP server run as a subprocess, spoken to over its stdin/stdout (MCP stdio).

    Args:
      cmd: the command line, a list of str (``["mcp-server-time"]``,
        ``[sys.executable, "server.py"]``); the first item is looked up on ``PATH``.
      env: extra environment variables for the server (str to str). Secrets: their values
        never appear in reprs, logs, errors or steps.
      timeout: seconds to wait for each request's answer.
      start_timeout: seconds for the server to start and complete the MCP handshake
        (default ``max(timeout, 10)``); past it the start fails and the process is stopped.
      inherit_env: also pass the whole ``os.environ`` (AetherGraph 0.1.0a15's behaviour);
        by default the server gets only the SDK's safe variables (``HOME``, ``PATH``,
        ``USER``, ``SHELL``, ``TERM``, ``LOGNAME``) plus ``env``.
      cwd: the server's working directory (default: ours).
      name: a label for messages when the client is used without registering it (the
        registration name is used otherwise).

    The server starts on the first request (or :meth:`open`), on the calling loop, and is
    shared by every caller on that loop; its stderr is kept (last lines, for errors) and
    logged at DEBUG on ``ag_jupyter.mcp``, never printed. See the module docstring for
    restarts and closing.

    Raises:
      MCPConfigError: if ``cmd``, ``env`` or ``timeout`` is malformed (at construction).
    """

    _kind = "stdio"

    def __init__(
        self,
        cmd: list[str],
        env: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        inherit_env: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        start_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(timeout=timeout, start_timeout=start_timeout, name=name)
        where = f"StdioMCPClient({name!r})" if name else "StdioMCPClient"
        if isinstance(cmd, str):
            raise MCPConfigError(
                f"{where}: cmd must be a list of str (the command line), got the str {cmd!r}; "
                f"write it as {cmd.split()!r}"
            )
        if not isinstance(cmd, list | tuple) or not cmd or not all(
            isinstance(part, str) and part for part in cmd
        ):
            raise MCPConfigError(f"{where}: cmd must be a non-empty list of non-empty str, "
                                 f"got {cmd!r}")
        self.cmd = list(cmd)
        self._env = _check_str_map(env, "env", where)
        self.inherit_env = bool(inherit_env)
        self.cwd = os.fspath(cwd) if cwd is not None else None
        self._secrets = _secret_values(self._env.values())

    @property
    def env_keys(self) -> list[str]:
        """The names of the extra environment variables (their values are secret)."""
        return sorted(self._env)

    def _label(self) -> str:
        return self.name or os.path.basename(self.cmd[0])

    def _target(self) -> str:
        return f"command {self.cmd!r}"

    def __repr__(self) -> str:
        pid = f", pid={self.pid}" if self.pid is not None else ""
        env = f", env_keys={self.env_keys!r}" if self._env else ""
        return (f"<StdioMCPClient {self._label()!r}: {self._state()}{pid}, cmd={self.cmd!r}"
                f"{env}, timeout={self.timeout:g}s>")

    async def _connect(self, stack: AsyncExitStack, conn: _Connection) -> Any:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        env = {**os.environ, **self._env} if self.inherit_env else dict(self._env)
        params = StdioServerParameters(
            command=self.cmd[0], args=self.cmd[1:], env=env, cwd=self.cwd
        )
        errlog = conn.errlog = await self._stderr_pipe(stack, conn)
        stack.callback(errlog.close)
        client = self._sdk_client(self._watch(stdio_client(params, errlog=errlog), conn))
        return await stack.enter_async_context(client)

    async def _stderr_pipe(self, stack: AsyncExitStack, conn: _Connection) -> Any:
        """A pipe for the server's stderr, read on the loop into ``conn.stderr``; returns
        the write end (a file object, as the SDK's ``errlog`` wants)."""
        if sys.platform == "win32":  # pragma: no cover - no pipe protocol there
            return open(os.devnull, "w")  # noqa: ASYNC230 - closed by the exit stack
        read_fd, write_fd = os.pipe()
        write_file = os.fdopen(write_fd, "w")
        read_file = os.fdopen(read_fd, "rb", buffering=0)
        conn.stderr = _StderrTail(self._label(), self._secrets)
        conn.pipe_inode = os.fstat(read_fd).st_ino
        # Closed by the owner task at its very end, after the last bytes were read.
        conn.stderr.transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: conn.stderr, read_file
        )
        return write_file

    async def _after_spawn(self, conn: _Connection) -> None:
        # The server holds its copy of the write end now: close ours, so the pipe ends
        # (and the tail is complete) when the server does.
        if conn.errlog is not None:
            conn.errlog.close()
        if conn.pipe_inode is not None and sys.platform.startswith("linux"):
            conn.pid = await asyncio.to_thread(_child_pid_with_stderr, conn.pipe_inode)

    def _start_error(self, conn: _Connection, exc: BaseException, server: str) -> MCPError:
        sdk_error = _sdk_error_class()
        tail = conn.stderr.text() if conn.stderr is not None else ""
        leaves = _leaves(exc)
        first = leaves[0] if leaves else exc
        if isinstance(first, TimeoutError):
            reason = (f"it did not complete the MCP handshake within {self.start_timeout:g} s "
                      "(start_timeout; is it an MCP stdio server? it must read JSON-RPC on "
                      "stdin)")
        elif isinstance(first, FileNotFoundError):
            reason = (f"the command {self.cmd[0]!r} was not found (is it installed, and on "
                      "PATH? pass the full path or [sys.executable, 'server.py'])")
        elif isinstance(first, PermissionError):
            reason = f"the command {self.cmd[0]!r} is not executable ({first})"
        elif isinstance(first, sdk_error) and getattr(first, "code", None) == _REQUEST_TIMEOUT:
            reason = (f"it did not answer the MCP handshake within {self.timeout:g} s (is it an "
                      "MCP stdio server? it must read JSON-RPC on stdin)")
        elif isinstance(first, sdk_error) and getattr(first, "code", None) == _CONNECTION_CLOSED:
            reason = "it exited before completing the MCP handshake"
        else:
            reason = _redact(f"the MCP handshake failed ({type(first).__name__}: {first})",
                             self._secrets)
        return MCPServerStartError(
            f"MCP server {server!r} did not start: {reason}. Command: {self.cmd!r}."
            + (f"\nLast stderr lines:\n{tail}" if tail else "\n(it wrote nothing to stderr)")
            + "\nRun the command in a terminal to check it starts (it should wait for input).",
            server=server, command=list(self.cmd), stderr_tail=tail,
        )


class HttpMCPClient(_MCPClientBase):
    """An MCP server reached over streamable HTTP (the SDK's ``streamable_http_client``).

    Args:
      url: the MCP endpoint, e.g. ``"http://127.0.0.1:8000/mcp"`` (AetherGraph 0.1.0a15 took
        a ``base_url`` and posted to ``{base_url}/rpc``; we talk to ``url`` itself, so pass
        the endpoint; ``base_url=`` is accepted as another name for it).
      headers: HTTP headers sent with every request (e.g. ``{"Authorization": "Bearer
        ..."}``). Secrets: their values never appear in reprs, logs, errors or steps.
      timeout: seconds to wait for each request's answer (and to connect).
      start_timeout: seconds to connect and complete the MCP handshake (default
        ``max(timeout, 10)``).
      name: a label for messages when used without registering it.

    Raises:
      MCPConfigError: if ``url`` is not an http(s) URL, or ``headers``/``timeout`` is
        malformed (at construction).
    """

    _kind = "http"

    def __init__(
        self,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        base_url: str | None = None,
        start_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(timeout=timeout, start_timeout=start_timeout, name=name)
        where = f"HttpMCPClient({name!r})" if name else "HttpMCPClient"
        if url is None:
            url = base_url
        elif base_url is not None:
            raise MCPConfigError(f"{where}: pass url or base_url, not both")
        self.url = _check_url(url, where)
        self._headers = _check_str_map(headers, "headers", where)
        self._live_http: Any = None
        self._secrets = _secret_values(self._headers.values())
        # The URL's user info and query may carry credentials too.
        parts = urlsplit(url)
        self._secrets += _secret_values(
            v for v in (parts.password or "", parts.query) if v
        )

    @property
    def header_names(self) -> list[str]:
        """The names of the configured headers (their values are secret)."""
        return sorted(self._headers)

    def set_header(self, key: str, value: str) -> None:
        """Set a header for later requests (also on the open connection), e.g. a refreshed
        token. AetherGraph's ``MCPService.set_header(name, key, value)`` calls this."""
        self._headers.update(_check_str_map({key: value}, "headers", "set_header"))
        self._secrets = _secret_values([*self._secrets, value])
        if self._live_http is not None:
            self._live_http.headers[key] = value

    def _label(self) -> str:
        return self.name or (urlsplit(self.url).hostname or "http")

    def _target(self) -> str:
        return f"URL {_display_url(self.url)}"

    def __repr__(self) -> str:
        headers = f", header_names={self.header_names!r}" if self._headers else ""
        return (f"<HttpMCPClient {self._label()!r}: {self._state()}, "
                f"url={_display_url(self.url)!r}{headers}, timeout={self.timeout:g}s>")

    async def _connect(self, stack: AsyncExitStack, conn: _Connection) -> Any:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # The SDK's defaults (30 s connect, 300 s read for held-open event streams); the
        # per-request timeout is the session's.
        http = httpx2.AsyncClient(
            headers=dict(self._headers),
            timeout=httpx2.Timeout(min(self.timeout, 30.0), read=max(self.timeout, 300.0)),
        )
        await stack.enter_async_context(http)
        self._live_http = http

        def forget() -> None:
            if self._live_http is http:
                self._live_http = None

        stack.callback(forget)
        transport = streamable_http_client(self.url, http_client=http)
        client = self._sdk_client(self._watch(transport, conn))
        return await stack.enter_async_context(client)

    def _start_error(self, conn: _Connection, exc: BaseException, server: str) -> MCPError:
        sdk_error = _sdk_error_class()
        leaves = _leaves(exc)
        first = leaves[0] if leaves else exc
        if isinstance(first, TimeoutError):
            reason = (f"it did not complete the MCP handshake within {self.start_timeout:g} s "
                      "(start_timeout)")
        elif isinstance(first, sdk_error) and getattr(first, "code", None) == _REQUEST_TIMEOUT:
            reason = f"it did not answer the MCP handshake within {self.timeout:g} s"
        else:
            reason = _redact(f"{type(first).__name__}: {first}", self._secrets)
        url = _display_url(self.url)
        return MCPServerStartError(
            f"MCP server {server!r} at {url} could not be reached or refused the MCP "
            f"handshake: {reason}. Check that the server runs and that the URL is its MCP "
            "endpoint (often ending in /mcp).",
            server=server, url=url,
        )


class WsMCPClient:
    """Not supported: MCP has no WebSocket transport in the official SDK.

    AetherGraph 0.1.0a15 had a hand-written one; use :class:`HttpMCPClient` (streamable
    HTTP) or :class:`StdioMCPClient` instead.

    Raises:
      NotImplementedError: always, at construction.
    """

    def __init__(self, url: str = "", *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "WsMCPClient is not supported: the official MCP SDK has no WebSocket transport. "
            "Use HttpMCPClient('http://host:port/mcp', headers={...}) for a remote server "
            "(streamable HTTP) or StdioMCPClient([...]) for a local one."
        )


# ------------------------------------------------------------------- steps of a run
class _StepOutcome:
    __slots__ = ("outputs",)

    def __init__(self) -> None:
        self.outputs: Any = None


def record_step(context: Any, step: dict[str, Any]) -> None:
    """Record one MCP tool call as a step of ``context``'s run (``manager.steps(run_id)``,
    see ``store/steps.py``); the one place where tool calls leave the client.

    ``step`` has the step keys but ``step_id``: ``run_id``, ``kind`` ("mcp"), ``name``
    ("server/tool"), ``inputs_preview`` and ``outputs_preview`` (JSON text, at most 2,000
    characters, secrets masked, or None), ``started_at`` (UTC ISO 8601), ``duration_s``
    (float seconds) and ``error`` ("ExcType: message" or None). A context without a step
    sink (a bare object) only logs it at DEBUG.
    """
    services = getattr(context, "services", None)
    recorder = getattr(services, "record_step", None)
    if recorder is None:
        context.logger().debug("step %s", json.dumps(step, ensure_ascii=False))
        return
    recorder({"step_id": f"step-{uuid.uuid4().hex[:16]}", **step})


@asynccontextmanager
async def _tool_step(
    context: Any, server: str, tool: str, params: Any, secrets: tuple[str, ...]
) -> AsyncIterator[_StepOutcome]:
    """Measure one tool call and hand its step record to :func:`record_step`."""
    outcome = _StepOutcome()
    started_at = datetime.now(UTC)
    t0 = time.perf_counter()
    error: str | None = None
    try:
        yield outcome
    except BaseException as exc:
        if isinstance(exc, MCPToolError):
            outcome.outputs = exc.result
        error = _redact(f"{type(exc).__name__}: {exc}", secrets)
        raise
    finally:
        step = {
            "run_id": getattr(context, "run_id", None),
            "kind": "mcp",
            "name": f"{server}/{tool}",
            "inputs_preview": _preview(params if params is not None else {}, secrets),
            "outputs_preview": _preview(outcome.outputs, secrets),
            "started_at": started_at.isoformat(),
            "duration_s": time.perf_counter() - t0,
            "error": error,
        }
        try:
            record_step(context, step)
        except Exception:  # recording must never fail the call
            logger.exception("could not record MCP step %s/%s", server, tool)


class BoundMCPClient:
    """An MCP client as ``context.mcp(name)`` returns it: the same server, with each tool
    call recorded as a step of the context's run and errors naming ``name``.

    Every other attribute (``list_tools``, ``timeout``, ``pid``, ``aclose``...) is the
    client's.
    """

    __slots__ = ("_client", "_context", "server")

    def __init__(self, client: _MCPClientBase, context: Any, server: str) -> None:
        self._client = client
        self._context = context
        self.server = server

    async def call(
        self, tool: str, params: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.call`; also records the call as a step."""
        client = self._client
        async with _tool_step(self._context, self.server, tool, params, client._secrets) as out:
            out.outputs = await client._call(tool, params, timeout_s=timeout_s, server=self.server)
        return out.outputs

    async def list_tools(self, *, cursor: str | None = None) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.list_tools`."""
        return await self._client._request(
            "tools/list", lambda c: c.list_tools(cursor=cursor), server=self.server)

    async def list_resources(self, *, cursor: str | None = None) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.list_resources`."""
        return await self._client._request(
            "resources/list", lambda c: c.list_resources(cursor=cursor), server=self.server)

    async def read_resource(self, uri: str) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.read_resource`."""
        return await self._client._request(
            "resources/read", lambda c: c.read_resource(uri), server=self.server)

    async def list_resource_templates(self, *, cursor: str | None = None) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.list_resource_templates`."""
        return await self._client._request(
            "resources/templates/list", lambda c: c.list_resource_templates(cursor=cursor),
            server=self.server)

    async def list_prompts(self, *, cursor: str | None = None) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.list_prompts`."""
        return await self._client._request(
            "prompts/list", lambda c: c.list_prompts(cursor=cursor), server=self.server)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None
                         ) -> dict[str, Any]:
        """See :meth:`StdioMCPClient.get_prompt`."""
        return await self._client._request(
            "prompts/get", lambda c: c.get_prompt(name, arguments), server=self.server)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __repr__(self) -> str:
        return f"<BoundMCPClient {self.server!r} for run {self._context.run_id!r}: " \
               f"{self._client!r}>"


def bind_client(client: Any, context: Any, name: str) -> Any:
    """What ``context.mcp(name)`` returns for ``client``: ours bound (steps recorded),
    another object's ``bind(context)`` if it has one, else the object itself."""
    if isinstance(client, _MCPClientBase):
        return client.bind(context, name)
    bind = getattr(client, "bind", None)
    return bind(context) if callable(bind) else client


# ----------------------------------------------------------- registry (AetherGraph's)
class MCPService:
    """Named MCP clients, with lifecycle and call helpers (AetherGraph 0.1.0a15's
    ``MCPService``; ``get_mcp_service()`` returns the process's).

    Args:
      clients: name -> client to start with.
      secrets: a secrets provider with ``set(name, value)`` for :meth:`persist_secret`.
    """

    def __init__(self, clients: Mapping[str, Any] | None = None, *, secrets: Any = None):
        self._clients: dict[str, Any] = dict(clients or {})
        self._secrets = secrets

    def __repr__(self) -> str:
        return f"<MCPService: {', '.join(self.names()) or '(no clients)'}>"

    def register(self, name: str, client: Any) -> None:
        """Register ``client`` under ``name`` (replacing any client of that name).

        Raises:
          TypeError: if ``name`` is not a non-empty str.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"MCP client name must be a non-empty str, got {name!r}")
        if isinstance(client, _MCPClientBase) and client.name is None:
            client.name = name
        self._clients[name] = client

    def remove(self, name: str) -> None:
        """Forget the client ``name`` (it is not closed; see :meth:`close`)."""
        self._clients.pop(name, None)

    def has(self, name: str) -> bool:
        """Whether a client is registered as ``name``."""
        return name in self._clients

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._clients)

    def list_clients(self) -> list[str]:
        """The registered names (AetherGraph's other name for :meth:`names`)."""
        return self.names()

    def get(self, name: str = "default") -> Any:
        """The client registered as ``name``.

        Raises:
          KeyError: if there is none (the message lists the registered names).
        """
        try:
            return self._clients[name]
        except KeyError:
            raise KeyError(
                f"no MCP client named {name!r}; registered: "
                f"{', '.join(self.names()) or '(none)'}. Register one with "
                "register_mcp_client(name, client)"
            ) from None

    async def open(self, name: str) -> None:
        """Start the server of ``name`` now (it otherwise starts on first use)."""
        await self.get(name).open()

    async def close(self, name: str) -> None:
        """Stop the server of ``name``; a failure is logged, never raised (as in a15)."""
        try:
            await self.get(name).close()
        except Exception:
            logger.warning("failed to close MCP client %r", name, exc_info=True)

    async def open_all(self) -> None:
        """Start every registered server."""
        for name in self.names():
            await self.open(name)

    async def close_all(self) -> None:
        """Stop every registered server (they restart if used again)."""
        for name in self.names():
            await self.close(name)

    async def call(self, name: str, tool: str, params: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
        """``get(name).call(tool, params)``."""
        return await self.get(name).call(tool, params or {})

    async def list_tools(self, name: str) -> dict[str, Any]:
        """``get(name).list_tools()``."""
        return await self.get(name).list_tools()

    async def list_resources(self, name: str) -> dict[str, Any]:
        """``get(name).list_resources()``."""
        return await self.get(name).list_resources()

    async def read_resource(self, name: str, uri: str) -> dict[str, Any]:
        """``get(name).read_resource(uri)``."""
        return await self.get(name).read_resource(uri)

    def set_header(self, name: str, key: str, value: str) -> None:
        """Set an HTTP header on the client ``name`` (e.g. a late-bound token).

        Raises:
          RuntimeError: if that client has no headers (a stdio client).
        """
        client = self.get(name)
        client = getattr(client, "_client", client)  # a BoundMCPClient's client
        setter = getattr(client, "set_header", None)
        if callable(setter):
            setter(key, value)
        elif isinstance(getattr(client, "headers", None), dict):
            client.headers[key] = value
        else:
            raise RuntimeError(f"MCP client {name!r} does not support headers")

    def persist_secret(self, secret_name: str, value: str) -> None:
        """Store a secret with the secrets provider given at construction.

        Raises:
          RuntimeError: if there is no writable provider (as in AetherGraph).
        """
        if not self._secrets or not hasattr(self._secrets, "set"):
            raise RuntimeError("Secrets provider is not writable")
        self._secrets.set(secret_name, value)


class ContextMCPService(MCPService):
    """``context.mcp()`` with no name: the service seen from one context (session clients
    first), handing out bound clients so calls are recorded as the run's steps."""

    def __init__(self, hub: Any, context: Any) -> None:
        super().__init__()
        self._hub = hub
        self._context = context

    def __repr__(self) -> str:
        return f"<MCPService for {self._context.run_id!r}: {', '.join(self.names()) or '-'}>"

    def register(self, name: str, client: Any) -> None:
        register_mcp_client(name, client)

    def remove(self, name: str) -> None:
        get_mcp_service().remove(name)

    def has(self, name: str) -> bool:
        return name in self.names()

    def names(self) -> list[str]:
        return self._hub.mcp_names()

    def get(self, name: str = "default") -> Any:
        try:
            return self._hub.mcp(name, self._context)
        except ServiceNotConfiguredError as exc:
            raise KeyError(str(exc)) from None


_service: Any = MCPService()


def get_mcp_service() -> Any:
    """The process's MCP service (an :class:`MCPService` unless replaced with
    :func:`set_mcp_service`): what ``register_mcp_client`` and ``context.mcp(name)`` use."""
    return _service


def set_mcp_service(mcp_service: Any) -> None:
    """Replace the process's MCP service (AetherGraph's name). ``mcp_service`` needs
    ``register(name, client)``, ``get(name)`` (raising KeyError) and ``list_clients()``.

    Raises:
      TypeError: if it lacks one of those.
    """
    for attr in ("register", "get", "list_clients"):
        if not callable(getattr(mcp_service, attr, None)):
            raise TypeError(f"an MCP service needs a {attr}() method; got {mcp_service!r}")
    global _service
    _service = mcp_service


def register_mcp_client(name: str, client: Any) -> None:
    """Make ``client`` reachable as ``context.mcp(name)`` from every context.

    ``client`` is a :class:`StdioMCPClient` / :class:`HttpMCPClient` (or any object with
    AetherGraph's client methods). Its server starts on first use. Replacing a client does
    not close the old one (``await old.aclose()``).

    Raises:
      TypeError: if ``name`` is not a non-empty str.
    """
    get_mcp_service().register(name, client)


def list_mcp_clients() -> list[str]:
    """The names of the process-wide MCP clients (``register_mcp_client`` and configured
    servers; a session's ``open_session(mcp=...)`` clients are not listed)."""
    return list(get_mcp_service().list_clients())


def lookup_mcp_client(name: str) -> Any:
    """The process-wide client ``name``, or None."""
    try:
        return get_mcp_service().get(name)
    except KeyError:
        return None


# ------------------------------------------------------------------ configured servers
_STDIO_KEYS = ("command", "args", "env", "cwd", "timeout", "start_timeout", "inherit_env",
               "type")
_HTTP_KEYS = ("url", "headers", "timeout", "start_timeout", "type")
_configured: dict[str, tuple[dict[str, Any], _MCPClientBase]] = {}


def _normalize_spec(name: Any, spec: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise MCPConfigError(f"MCP server names must be non-empty str, got {name!r}")
    where = f"MCP server {name!r}"
    if not isinstance(spec, Mapping):
        raise MCPConfigError(f"{where}: settings must be a dict such as "
                             "{'command': ['mcp-server-time']} or {'url': 'http://host/mcp'}, "
                             f"got a {type(spec).__name__}")
    kind = spec.get("type", spec.get("transport"))
    spec = {k: v for k, v in spec.items() if k != "transport"}
    if kind is not None:
        if kind in ("sse", "ws", "websocket"):
            raise MCPConfigError(f"{where}: transport {kind!r} is not supported; use a "
                                 "'command' (stdio) or a streamable HTTP 'url'")
        if kind not in ("stdio", "http", "streamable-http", "streamable_http"):
            raise MCPConfigError(f"{where}: unknown type {kind!r}; use 'stdio' or 'http'")
    if ("command" in spec) == ("url" in spec):
        raise MCPConfigError(f"{where}: give exactly one of 'command' (a stdio server's "
                             "command line, a list of str) or 'url' (a streamable HTTP "
                             f"endpoint); got keys {sorted(spec)}")
    allowed = _STDIO_KEYS if "command" in spec else _HTTP_KEYS
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise MCPConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"accepted: {', '.join(allowed)}")
    out: dict[str, Any] = {"timeout": _check_timeout(spec.get("timeout", DEFAULT_TIMEOUT_S),
                                                     where)}
    start = spec.get("start_timeout")
    out["start_timeout"] = _check_timeout(start, f"{where} start_timeout") if start else None
    if "command" in spec:
        command = spec["command"]
        args = spec.get("args", [])
        if isinstance(command, str):
            command = [command]
        if not isinstance(args, list | tuple) or not all(isinstance(a, str) for a in args):
            raise MCPConfigError(f"{where}: 'args' must be a list of str, got {args!r}")
        if not isinstance(command, list | tuple) or not command or not all(
            isinstance(p, str) and p for p in command
        ):
            raise MCPConfigError(f"{where}: 'command' must be a non-empty list of str (or "
                                 f"a str with 'args'), got {command!r}")
        out["command"] = [*command, *args]
        out["env"] = _check_str_map(spec.get("env"), "'env'", where)
        cwd = spec.get("cwd")
        if cwd is not None and not isinstance(cwd, str | os.PathLike):
            raise MCPConfigError(f"{where}: 'cwd' must be a path, got {cwd!r}")
        out["cwd"] = os.fspath(cwd) if cwd is not None else None
        inherit = spec.get("inherit_env", False)
        if not isinstance(inherit, bool):
            raise MCPConfigError(f"{where}: 'inherit_env' must be True or False, got "
                                 f"{inherit!r}")
        out["inherit_env"] = inherit
    else:
        out["url"] = _check_url(spec["url"], where)
        out["headers"] = _check_str_map(spec.get("headers"), "'headers'", where)
    return out


def _client_from_spec(name: str, spec: dict[str, Any]) -> _MCPClientBase:
    if "command" in spec:
        return StdioMCPClient(spec["command"], spec["env"], spec["timeout"],
                              inherit_env=spec["inherit_env"], cwd=spec["cwd"],
                              start_timeout=spec["start_timeout"], name=name)
    return HttpMCPClient(spec["url"], spec["headers"], spec["timeout"],
                         start_timeout=spec["start_timeout"], name=name)


def configure_mcp_servers(servers: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """Set the configured MCP servers (``%config AgJupyter.mcp_servers = {...}``).

    ``servers`` maps a name to either a stdio server, ``{"command": ["mcp-server-time"],
    "env": {...}, "timeout": 60, "start_timeout": 60, "cwd": ..., "inherit_env": False}``
    (``command`` may also be a str with ``"args": [...]``, as in other MCP hosts' configs),
    or a streamable HTTP
    server, ``{"url": "http://127.0.0.1:8000/mcp", "headers": {...}, "timeout": 60}``; an
    optional ``"type"`` is ``"stdio"`` or ``"http"``. Each becomes a client registered under
    its name (as :func:`register_mcp_client`); nothing starts until it is used.

    Calling it again replaces the configuration: a server whose settings did not change keeps
    its client (and its running process); a changed or removed one is unregistered and
    closed (in the background if it runs on a loop). All entries are validated before
    anything changes. ``None`` or ``{}`` removes every configured server.

    Returns name -> client.

    Raises:
      MCPConfigError: naming the server and the key, for a malformed entry (values of
        ``env`` and ``headers`` are never shown).
    """
    global _configured
    if servers is None:
        servers = {}
    if not isinstance(servers, Mapping):
        raise MCPConfigError(f"MCP servers must be a dict of name -> settings, got a "
                             f"{type(servers).__name__}")
    specs = {name: _normalize_spec(name, spec) for name, spec in servers.items()}
    service = get_mcp_service()
    kept: dict[str, tuple[dict[str, Any], _MCPClientBase]] = {}
    for name, spec in specs.items():
        old = _configured.get(name)
        if old is not None and old[0] == spec and lookup_mcp_client(name) is old[1]:
            kept[name] = old
        else:
            kept[name] = (spec, _client_from_spec(name, spec))
    for name, (_, client) in _configured.items():
        if kept.get(name, (None, None))[1] is not client:
            if lookup_mcp_client(name) is client:
                service.remove(name)
            _close_soon(client)
    for name, (_, client) in kept.items():
        service.register(name, client)
    _configured = kept
    return {name: client for name, (_, client) in kept.items()}


# ---------------------------------------------------------------------------- closing
_background: set[asyncio.Task[None]] = set()


def _close_soon(client: _MCPClientBase) -> None:
    """Close ``client`` without waiting: on its own loop if that runs, else by signal."""
    conn = client._conn
    if conn is None or conn.finished:
        return
    loop = conn.loop
    if loop.is_closed() or not loop.is_running():
        client._conn = None
        _terminate_group(conn.pid)
        _open_clients.discard(client)
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task = loop.create_task(client.aclose())
        _background.add(task)
        task.add_done_callback(_background.discard)
    else:
        asyncio.run_coroutine_threadsafe(client.aclose(), loop)


async def close_all_mcp_clients(*, timeout_s: float = 10.0) -> None:
    """Stop every started MCP server of the process and wait (up to ``timeout_s`` seconds)
    until their processes are gone.

    For ``RunManager.close()`` of the loop's main manager, kernel shutdown and
    ``%unload_ext``. Registrations stay: a client used again starts its server again.
    """
    clients = list(_open_clients)
    if clients:
        await asyncio.wait([asyncio.ensure_future(c.aclose()) for c in clients],
                           timeout=timeout_s)


def close_all_mcp_clients_soon() -> None:
    """Like :func:`close_all_mcp_clients`, from sync code: schedules the closes on their
    loops (or terminates servers whose loop has ended) and returns at once."""
    for client in list(_open_clients):
        _close_soon(client)


@atexit.register
def _terminate_leftovers() -> None:
    # Servers also exit on their own when our end of their stdin closes with this process;
    # this covers one that ignores EOF, when no loop got to close it.
    for client in list(_open_clients):
        conn = client._conn
        if conn is not None and not conn.finished:
            _terminate_group(conn.pid)
