"""context.mcp(name) against real MCP servers: the reference ``mcp-server-time`` over stdio,
a demo server written here (the SDK's ``MCPServer``) over stdio, and the same kind of server
over streamable HTTP on 127.0.0.1, started in a thread by the tests. Nothing is mocked."""

from __future__ import annotations

import ast
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ag_jupyter import graph_fn, open_session
from ag_jupyter.runtime import (
    MCPConfigError,
    MCPConnectionError,
    MCPError,
    MCPRequestError,
    MCPServerStartError,
    MCPTimeoutError,
    MCPToolError,
    NodeContext,
    ServiceNotConfiguredError,
    close_all_mcp_clients,
    configure_mcp_servers,
    get_mcp_service,
    get_run_manager,
    list_mcp_clients,
    register_mcp_client,
    set_mcp_service,
)
from ag_jupyter.runtime.services import mcp as mcp_module
from ag_jupyter.services import MCPService
from ag_jupyter.services.mcp import HttpMCPClient, StdioMCPClient, WsMCPClient

_BIN = Path(sys.executable).parent
TIME_CMD = [str(_BIN / "mcp-server-time")] if (_BIN / "mcp-server-time").exists() else [
    "mcp-server-time"
]

# A stdio/HTTP server on the SDK's MCPServer with the tools the tests and AetherGraph's
# documented examples call.
DEMO_SERVER = '''
import asyncio, os, sys
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

if "--exit-at-once" in sys.argv:
    print("demo server: bad config, token " + os.environ.get("DEMO_TOKEN", "-"), file=sys.stderr)
    sys.exit(3)

server = MCPServer("demo")

@server.tool()
def sum(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b

@server.tool()
def summarize_text(text: str) -> str:
    """The first words of a text."""
    return " ".join(text.split()[:3])

@server.tool()
def get_weather(city: str) -> dict:
    """A made-up weather report."""
    return {"city": city, "report": "sunny"}

@server.tool(name="fs.read_text")
def read_text(path: str) -> str:
    """Read a text file."""
    with open(path, encoding="utf-8") as f:
        return f.read()

@server.tool()
def echo_env(name: str) -> str:
    """The value of one environment variable."""
    return os.environ.get(name, "")

@server.tool()
def fail_with_env(name: str) -> str:
    """Fail, quoting an environment variable."""
    raise ToolError("cannot go on with " + os.environ.get(name, ""))

@server.tool()
def whoami(ctx: Context) -> str:
    """The Authorization header this request came with (HTTP only)."""
    return (ctx.headers or {}).get("authorization", "")

@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"

@server.tool()
def crash() -> str:
    """Kill the server process."""
    os._exit(1)

@server.resource("resource://foo/bar")
def foo_bar() -> str:
    """A fixed text resource."""
    return "foo bar contents"

if __name__ == "__main__":
    if os.environ.get("DEMO_STDERR"):
        print("demo server starting", file=sys.stderr, flush=True)
    asyncio.run(server.run_stdio_async())
'''


# ------------------------------------------------------------------------- fixtures
@pytest.fixture
def demo_path(tmp_path: Path) -> Path:
    path = tmp_path / "demo_server.py"
    path.write_text(DEMO_SERVER)
    return path


@pytest.fixture
def demo_cmd(demo_path: Path) -> list[str]:
    return [sys.executable, str(demo_path)]


@pytest.fixture(autouse=True)
async def forget_mcp_clients() -> AsyncIterator[None]:
    """Every test starts with no registered client and leaves no server running."""
    saved = get_mcp_service()
    set_mcp_service(MCPService())
    yield
    await close_all_mcp_clients()
    configure_mcp_servers({})
    set_mcp_service(saved)
    assert not mcp_module._open_clients, "a test left an MCP server running"


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every step record, as (run_id, step), on its way to the real record_step."""
    recorded: list[tuple[str, dict[str, Any]]] = []
    original = mcp_module.record_step

    def capture(context: Any, step: dict[str, Any]) -> None:
        recorded.append((context.run_id, step))
        original(context, step)

    monkeypatch.setattr(mcp_module, "record_step", capture)
    return recorded


class HttpServer:
    """The demo server's tools over streamable HTTP, in a uvicorn thread on 127.0.0.1."""

    def __init__(self, demo_path: Path) -> None:
        import importlib.util

        import uvicorn

        spec = importlib.util.spec_from_file_location(f"demo_{uuid.uuid4().hex}", demo_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        app = module.server.streamable_http_app()
        self.headers_seen: list[dict[str, str]] = []

        async def recording_app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.headers_seen.append(
                    {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                )
            await app(scope, receive, send)

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._server = uvicorn.Server(uvicorn.Config(
            recording_app, host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="on",
        ))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the test HTTP server did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


@pytest.fixture
def http_server(demo_path: Path) -> Iterator[HttpServer]:
    server = HttpServer(demo_path)
    yield server
    server.stop()


async def _gone(pid: int, timeout_s: float = 8.0) -> bool:
    """Whether ``pid`` exits (or is a zombie waiting for a reaper) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.05)
    return False


def _servers_running(needle: str) -> list[int]:
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(
                needle in part for part in child.cmdline()
            ):
                out.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return out


# ------------------------------------------------------------ mcp-server-time, stdio
async def test_time_server_in_a_graph_run_lists_tools_and_calls_with_a_timezone(steps):
    register_mcp_client("time", StdioMCPClient(TIME_CMD))

    @graph_fn("mcp_time_now")
    async def now(timezone: str, context: NodeContext) -> dict:
        tools = await context.mcp("time").list_tools()
        result = await context.mcp("time").call("get_current_time", {"timezone": timezone})
        return {"tools": tools, "result": result}

    record, outputs, _, _ = await get_run_manager().run_and_wait(
        "mcp_time_now", inputs={"timezone": "Asia/Tokyo"}
    )
    run_id = record.run_id
    tools = outputs["tools"]
    assert {t["name"] for t in tools["tools"]} == {"get_current_time", "convert_time"}
    schema = next(t for t in tools["tools"] if t["name"] == "get_current_time")["inputSchema"]
    assert schema["required"] == ["timezone"] and "description" in tools["tools"][0]
    result = outputs["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["timezone"] == "Asia/Tokyo"
    assert result["content"][0]["type"] == "text" and "Asia/Tokyo" in result["content"][0]["text"]
    # The call is a step of the run that made it (list_tools is not a tool call).
    [(step_run, step)] = steps
    assert step_run == run_id == step["run_id"]
    assert step["kind"] == "mcp" and step["name"] == "time/get_current_time"
    assert step["inputs_preview"] == '{"timezone": "Asia/Tokyo"}'
    assert "Asia/Tokyo" in step["outputs_preview"] and step["error"] is None
    assert step["started_at"].endswith("+00:00") and 0 < step["duration_s"] < 60
    # ...kept with the run, as manager.steps(run_id) reads it.
    [stored] = await get_run_manager().steps(run_id)
    assert {k: stored[k] for k in step} == step and stored["step_id"].startswith("step-")


async def test_bad_timezone_raises_tool_error_naming_server_and_tool(steps):
    register_mcp_client("time", StdioMCPClient(TIME_CMD))
    async with open_session() as context:
        with pytest.raises(MCPToolError) as info:
            await context.mcp("time").call("get_current_time", {"timezone": "Mars/Olympus"})
    exc = info.value
    assert "time/get_current_time" in str(exc) and "Mars/Olympus" in str(exc)
    assert (exc.server, exc.tool) == ("time", "get_current_time")
    assert exc.result["isError"] is True and exc.result["content"]
    assert isinstance(exc, MCPError) and isinstance(exc, RuntimeError)
    [(_, step)] = steps
    assert step["error"].startswith("MCPToolError: MCP tool time/get_current_time failed")
    assert "Mars/Olympus" in step["outputs_preview"]


async def test_unknown_tool_is_the_servers_error_translated_with_its_tools():
    register_mcp_client("time", StdioMCPClient(TIME_CMD))
    async with open_session() as context:
        with pytest.raises(MCPRequestError) as info:
            await context.mcp("time").call("get_curent_time", {"timezone": "UTC"})
    message = str(info.value)
    assert "no tool named 'get_curent_time'" in message and "-32602" in message
    assert "convert_time, get_current_time" in message
    assert (info.value.code, info.value.method, info.value.tool) == (
        -32602, "tools/call", "get_curent_time")


async def test_open_session_client_is_closed_when_the_session_that_started_it_ends():
    client = StdioMCPClient(TIME_CMD)
    async with open_session(mcp={"time": client}) as context:
        result = await context.mcp("time").call("get_current_time", {"timezone": "UTC"})
        assert result["structuredContent"]["timezone"] == "UTC"
        pid = client.pid
        assert pid is not None and psutil.pid_exists(pid)
        assert "time" in context.mcp().names() and "time" not in list_mcp_clients()
    assert not client.is_open
    assert await _gone(pid)


async def test_open_session_leaves_running_a_server_it_did_not_start():
    client = StdioMCPClient(TIME_CMD)
    await client.open()
    async with open_session(mcp={"time": client}) as context:
        await context.mcp("time").call("get_current_time", {"timezone": "UTC"})
    assert client.is_open and psutil.pid_exists(client.pid)
    await client.aclose()


async def test_server_killed_mid_run_is_restarted_by_the_next_call(steps):
    client = StdioMCPClient(TIME_CMD)
    register_mcp_client("time", client)

    @graph_fn("mcp_kill_midrun")
    async def kill_midrun(context: NodeContext) -> dict:
        first = await context.mcp("time").call("get_current_time", {"timezone": "UTC"})
        old_pid = context.mcp("time").pid
        os.kill(old_pid, signal.SIGKILL)
        assert await _gone(old_pid)
        second = await context.mcp("time").call("get_current_time", {"timezone": "UTC"})
        return {"old_pid": old_pid, "new_pid": context.mcp("time").pid,
                "ok": not first["isError"] and not second["isError"]}

    _, outputs, _, _ = await get_run_manager().run_and_wait("mcp_kill_midrun", inputs={})
    assert outputs["ok"] and outputs["new_pid"] not in (None, outputs["old_pid"])
    assert client.starts == 2
    assert [s["error"] for _, s in steps] == [None, None]


async def test_calls_in_flight_when_the_server_dies_are_sent_again_to_one_new_server(
    demo_cmd, caplog
):
    client = StdioMCPClient(demo_cmd)
    await client.open()
    first_pid = client.pid
    calls = [asyncio.ensure_future(client.call("slow", {"seconds": 1.0})) for _ in range(10)]
    await asyncio.sleep(0.3)
    os.kill(first_pid, signal.SIGKILL)
    results = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert [r["structuredContent"] for r in results] == [{"result": "done"}] * 10
    assert client.starts == 2 and client.pid != first_pid
    restarts = [r for r in caplog.records if "restarting it" in r.getMessage()]
    assert len(restarts) == 1 and restarts[0].levelno == logging.WARNING
    await client.aclose()


async def test_server_dying_again_after_its_restart_raises_connection_error(demo_cmd):
    client = StdioMCPClient(demo_cmd, name="demo")
    with pytest.raises(MCPConnectionError) as info:
        await client.call("crash")
    assert "demo/crash" in str(info.value) and "again" in str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert client.starts == 2
    # The client stays usable: the next call starts a fresh server.
    assert (await client.call("sum", {"a": 2, "b": 3}))["structuredContent"] == {"result": 5}
    await client.aclose()


async def test_twenty_concurrent_runs_share_one_server_process(steps):
    client = StdioMCPClient(TIME_CMD)
    register_mcp_client("time", client)
    seen_pids: set[int] = set()

    @graph_fn("mcp_many")
    async def many(i: int, context: NodeContext) -> list:
        zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Africa/Cairo"]
        results = await asyncio.gather(*(
            context.mcp("time").call("get_current_time", {"timezone": z}) for z in zones
        ))
        seen_pids.add(context.mcp("time").pid)
        seen_pids.update(_servers_running("mcp-server-time"))
        return [r["structuredContent"]["timezone"] for r in results]

    manager = get_run_manager()
    records = [await manager.submit_run("mcp_many", inputs={"i": i}) for i in range(20)]
    outs = [await manager.wait_run(r.run_id, return_outputs=True) for r in records]
    for record, outputs in outs:
        assert record.status == "succeeded", record.error
        assert outputs["result"][2] == "Asia/Tokyo"
    assert client.starts == 1 and len(seen_pids) == 1
    assert len(steps) == 100 and len({run for run, _ in steps}) == 20


# --------------------------------------------------------------------- start errors
async def test_missing_command_raises_start_error_quickly():
    client = StdioMCPClient(["no-such-mcp-server-zz", "--flag"])
    register_mcp_client("nothere", client)
    t0 = time.monotonic()
    async with open_session() as context:
        with pytest.raises(MCPServerStartError) as info:
            await context.mcp("nothere").call("anything")
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert "'nothere' did not start" in message and "not found" in message
    assert "no-such-mcp-server-zz" in message and info.value.command[0] == "no-such-mcp-server-zz"
    assert not client.is_open


async def test_server_exiting_at_once_raises_start_error_with_its_stderr(demo_cmd):
    client = StdioMCPClient([*demo_cmd, "--exit-at-once"], name="demo")
    t0 = time.monotonic()
    with pytest.raises(MCPServerStartError) as info:
        await client.list_tools()
    assert time.monotonic() - t0 < 10
    assert "exited before completing the MCP handshake" in str(info.value)
    assert "demo server: bad config" in str(info.value)
    assert "demo server: bad config" in info.value.stderr_tail


async def test_server_not_answering_the_handshake_times_out_and_is_stopped():
    client = StdioMCPClient([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_timeout=1.5, name="mute")
    t0 = time.monotonic()
    with pytest.raises(MCPServerStartError,
                       match=r"did not complete the MCP handshake within 1.5 s"):
        await client.open()
    assert time.monotonic() - t0 < 3
    [pid] = _servers_running("time.sleep(60)")
    await client.aclose()  # waits for the SDK's teardown: stdin closed, then SIGTERM
    assert await _gone(pid, 1)


async def test_timeout_raises_mcp_timeout_error_and_the_server_keeps_serving(demo_cmd):
    client = StdioMCPClient(demo_cmd, timeout=0.5, name="demo")
    await client.open()
    pid = client.pid
    with pytest.raises(MCPTimeoutError) as info:
        await client.call("slow", {"seconds": 5})
    assert isinstance(info.value, TimeoutError)
    assert "demo/slow" in str(info.value) and "0.5 s" in str(info.value)
    assert info.value.timeout_s == 0.5
    # A per-call timeout overrides the client's.
    assert (await client.call("slow", {"seconds": 0.7}, timeout_s=5))["isError"] is False
    assert client.pid == pid and client.starts == 1
    await client.aclose()


# ------------------------------------------------------------------ streamable HTTP
async def test_http_server_lists_calls_and_receives_the_headers(http_server, steps):
    client = HttpMCPClient(http_server.url, headers={"X-Api-Key": "k-12345678"})
    register_mcp_client("web", client)
    async with open_session() as context:
        tools = await context.mcp("web").list_tools()
        assert "summarize_text" in {t["name"] for t in tools["tools"]}
        result = await context.mcp("web").call("summarize_text", {"text": "one two three four"})
        assert result["structuredContent"] == {"result": "one two three"}
        resources = await context.mcp("web").list_resources()
        assert resources["resources"][0]["uri"] == "resource://foo/bar"
        read = await context.mcp("web").read_resource("resource://foo/bar")
        assert read["contents"][0]["text"] == "foo bar contents"
    assert http_server.headers_seen and all(
        h.get("x-api-key") == "k-12345678" for h in http_server.headers_seen)
    assert [s["name"] for _, s in steps] == ["web/summarize_text"]
    await client.aclose()


async def test_http_timeout_raises_mcp_timeout_error(http_server):
    client = HttpMCPClient(http_server.url, timeout=0.5, name="web")
    with pytest.raises(MCPTimeoutError, match=r"web/slow did not answer within 0.5 s"):
        await client.call("slow", {"seconds": 3})
    assert (await client.call("sum", {"a": 1, "b": 1}))["structuredContent"] == {"result": 2}
    await client.aclose()


async def test_unreachable_http_server_raises_start_error_naming_the_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = HttpMCPClient(f"http://127.0.0.1:{port}/mcp?token=abcdef123", name="gone")
    with pytest.raises(MCPServerStartError) as info:
        await client.list_tools()
    assert f"http://127.0.0.1:{port}/mcp" in str(info.value)
    assert "abcdef123" not in str(info.value) and "ConnectError" in str(info.value)


# -------------------------------------------------------------------------- secrets
async def test_env_and_header_secrets_never_reach_steps_logs_reprs_or_errors(
    demo_cmd, http_server, steps, caplog
):
    env_secret = f"envsecret-{uuid.uuid4().hex}"
    header_secret = f"hdrsecret-{uuid.uuid4().hex}"
    secrets = (env_secret, header_secret)
    caplog.set_level(logging.DEBUG)
    stdio = StdioMCPClient([*demo_cmd], env={"DEMO_TOKEN": env_secret, "DEMO_STDERR": "1"})
    web = HttpMCPClient(http_server.url, headers={"Authorization": f"Bearer {header_secret}"})
    register_mcp_client("demo", stdio)
    register_mcp_client("web", web)
    texts: list[str] = [repr(stdio), repr(web)]

    async with open_session() as context:
        # 1. Nothing echoes a secret: no log line of anyone (SDK, HTTP client) may hold one.
        await context.mcp("demo").list_tools()
        await context.mcp("web").call("sum", {"a": 1, "b": 2})
        await context.mcp("demo").call("sum", {"a": 1, "b": 2})
        texts += [repr(context.mcp("demo")), repr(context.mcp("web")), repr(context.mcp())]
        all_logs = [r.getMessage() for r in caplog.records]
        assert not [line for line in all_logs if any(s in line for s in secrets)]
        # 2. The servers echo the secrets: what we show of it is masked.
        echoed = await context.mcp("demo").call("echo_env", {"name": "DEMO_TOKEN"})
        assert echoed["structuredContent"] == {"result": env_secret}  # the caller's own data
        whoami = await context.mcp("web").call("whoami")
        assert whoami["structuredContent"] == {"result": f"Bearer {header_secret}"}
        with pytest.raises(MCPToolError) as tool_error:
            await context.mcp("demo").call("fail_with_env", {"name": "DEMO_TOKEN"})
        texts.append(str(tool_error.value))
    start_fail = StdioMCPClient([*demo_cmd, "--exit-at-once"], env={"DEMO_TOKEN": env_secret})
    with pytest.raises(MCPServerStartError) as start_error:
        await start_fail.open()
    texts += [str(start_error.value), start_error.value.stderr_tail]
    assert "token ***" in start_error.value.stderr_tail
    texts += [repr(step) for _, step in steps]
    texts += [r.getMessage() for r in caplog.records if r.name.startswith("ag_jupyter")]
    texts += [str(line) for line in context.services.log_buffer.lines()]
    assert len(steps) == 5 and any("***" in (s["outputs_preview"] or "") for _, s in steps)
    leaked = [t for t in texts if any(s in t for s in secrets)]
    assert leaked == []
    with pytest.raises(MCPConfigError) as config_error:
        configure_mcp_servers({"x": {"command": ["y"], "env": {"K": 12345678}}})
    assert "12345678" not in str(config_error.value)


# ------------------------------------------------------------------ no orphans
async def test_close_all_leaves_no_server_process(demo_cmd):
    a = StdioMCPClient(TIME_CMD)
    b = StdioMCPClient(demo_cmd)
    register_mcp_client("time", a)
    await a.open()
    await b.open()
    pids = [a.pid, b.pid]
    assert all(psutil.pid_exists(p) for p in pids)
    await close_all_mcp_clients()
    assert not a.is_open and not b.is_open
    assert [await _gone(p) for p in pids] == [True, True]
    assert "time" in list_mcp_clients()  # registrations stay; the next use starts again


_OWNER_SCRIPT = """
import asyncio, sys
from ag_jupyter.services.mcp import StdioMCPClient

async def main():
    client = StdioMCPClient({cmd!r})
    result = await client.call("get_current_time", {{"timezone": "UTC"}})
    print(client.pid, result["isError"], flush=True)
    if {wait!r}:
        await asyncio.sleep(120)
    # else: return with the client open; asyncio.run's ending must close it quietly

asyncio.run(main())
print("exited", flush=True)
"""


def test_server_exits_when_its_owning_process_is_sigkilled(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(_OWNER_SCRIPT.format(cmd=TIME_CMD, wait=True))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
        pid_text, is_error = line.split()
        server_pid = int(pid_text)
        assert is_error == "False" and psutil.Process(server_pid).ppid() == owner.pid
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert asyncio.run(_gone(server_pid, 10)), "the server outlived its killed owner"
    finally:
        owner.kill()
        owner.wait()


def test_script_ending_with_an_open_client_closes_it_quietly(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(_OWNER_SCRIPT.format(cmd=TIME_CMD, wait=False))
    done = subprocess.run([sys.executable, "-X", "dev", "-W", "default", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    server_pid = int(done.stdout.split()[0])
    assert done.stdout.split()[-1] == "exited"
    for noise in ("Task was destroyed", "never retrieved", "ResourceWarning", "unclosed",
                  "Exception ignored", "Traceback"):
        assert noise not in done.stderr, done.stderr
    assert asyncio.run(_gone(server_pid, 5))


@pytest.mark.kernel
@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_no_server_outlives_its_kernel(how, tmp_path):
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        msg_id = kc.execute(textwrap.dedent(f"""
            from ag_jupyter import open_session
            from ag_jupyter.runtime import register_mcp_client
            from ag_jupyter.services.mcp import StdioMCPClient
            client = StdioMCPClient({TIME_CMD!r})
            register_mcp_client("time", client)
            async with open_session() as context:
                result = await context.mcp("time").call("get_current_time", {{"timezone": "UTC"}})
            server_pid = client.pid
        """))
        deadline = time.monotonic() + 60
        while True:
            reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "ok", reply["content"]
        msg_id = kc.execute("", user_expressions={"v": "server_pid"})
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        server_pid = int(reply["content"]["user_expressions"]["v"]["data"]["text/plain"])
        assert psutil.pid_exists(server_pid)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=(how == "kill"))
    assert asyncio.run(_gone(server_pid, 10)), f"the MCP server outlived its kernel ({how})"


def test_one_client_used_by_two_asyncio_runs_starts_a_server_on_each_loop(tmp_path):
    script = tmp_path / "two_runs.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio
        from ag_jupyter.services.mcp import StdioMCPClient
        client = StdioMCPClient({TIME_CMD!r})

        async def main():
            await client.call("get_current_time", {{"timezone": "UTC"}})
            print(client.pid, flush=True)

        asyncio.run(main())
        asyncio.run(main())
        print(client.starts, client.is_open, flush=True)
    """))
    done = subprocess.run([sys.executable, "-X", "dev", str(script)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first, second, summary = done.stdout.splitlines()
    assert first != second and summary == "2 False"
    assert "Traceback" not in done.stderr and "Task was destroyed" not in done.stderr
    assert not psutil.pid_exists(int(first)) or psutil.Process(int(first)).status() == "zombie"


async def test_closing_during_a_call_fails_that_call_without_restarting(demo_cmd):
    client = StdioMCPClient(demo_cmd, name="demo")
    await client.open()
    call = asyncio.ensure_future(client.call("slow", {"seconds": 5}))
    await asyncio.sleep(0.3)
    await client.aclose()
    with pytest.raises(MCPConnectionError, match="demo/slow: the client was closed"):
        await call
    assert client.starts == 1 and not client.is_open


# -------------------------------------------------------- configuration, registry
async def test_configure_mcp_servers_validates_registers_and_replaces(demo_cmd):
    for bad, message in [
        ({"t": {"command": ["x"], "url": "http://h/mcp"}}, "exactly one of 'command'"),
        ({"t": {"comand": ["x"]}}, "exactly one of 'command'"),
        ({"t": {"command": ["x"], "timout": 3}}, "unknown key(s) 'timout'"),
        ({"t": {"command": []}}, "'command' must be a non-empty list"),
        ({"t": {"command": ["x"], "timeout": 0}}, "timeout must be a positive number"),
        ({"t": {"url": "ftp://h/x"}}, "url must be an http:// or https:// URL"),
        ({"t": {"url": "http://h/mcp", "type": "sse"}}, "transport 'sse' is not supported"),
        ({"t": ["mcp-server-time"]}, "settings must be a dict"),
    ]:
        with pytest.raises(MCPConfigError) as info:
            configure_mcp_servers(bad)
        assert message in str(info.value) and "MCP server 't'" in str(info.value)
    assert list_mcp_clients() == []  # nothing registered by a failed configuration

    clients = configure_mcp_servers({
        "time": {"command": TIME_CMD},
        "demo": {"command": sys.executable, "args": demo_cmd[1:], "timeout": 30},
    })
    assert list_mcp_clients() == ["time", "demo"] and clients["demo"].cmd == demo_cmd
    async with open_session() as context:
        await context.mcp("demo").call("sum", {"a": 1, "b": 1})
    demo_pid = clients["demo"].pid
    # Unchanged settings keep the client (and its server); changed or removed ones go.
    again = configure_mcp_servers({"demo": {"command": sys.executable, "args": demo_cmd[1:],
                                            "timeout": 30}})
    assert again["demo"] is clients["demo"] and clients["demo"].pid == demo_pid
    assert list_mcp_clients() == ["demo"]
    configure_mcp_servers({"demo": {"command": demo_cmd, "timeout": 31}})
    assert get_mcp_service().get("demo") is not clients["demo"]
    assert await _gone(demo_pid)
    configure_mcp_servers(None)
    assert list_mcp_clients() == []


async def test_close_all_waits_for_a_close_already_in_flight(demo_cmd):
    # Replacing a configured server closes the old one in the background; closing
    # everything right after must wait for that close too, not return while its server
    # is still stopping (seen under load: a closed client still counted as open).
    clients = configure_mcp_servers({"demo": {"command": demo_cmd}})
    await clients["demo"].call("sum", {"a": 1, "b": 2})
    old_pid = clients["demo"].pid
    configure_mcp_servers({"demo": {"command": demo_cmd, "timeout": 31}})  # closes it soon
    await close_all_mcp_clients()
    assert not mcp_module._open_clients
    assert await _gone(old_pid, timeout_s=0.01)
    assert clients["demo"].pid is None


async def test_unknown_client_name_says_how_to_configure_one():
    register_mcp_client("time", StdioMCPClient(TIME_CMD))
    async with open_session() as context:
        with pytest.raises(ServiceNotConfiguredError, match=r"no MCP client named 'tiem'.*"
                           r"configured: time.*register_mcp_client"):
            context.mcp("tiem")


def test_client_arguments_are_checked_at_construction():
    with pytest.raises(MCPConfigError, match=r"cmd must be a list of str.*\['mcp-server-time', "
                                             r"'--local-timezone', 'UTC'\]"):
        StdioMCPClient("mcp-server-time --local-timezone UTC")  # type: ignore[arg-type]
    with pytest.raises(MCPConfigError, match="timeout must be a positive number"):
        StdioMCPClient(TIME_CMD, timeout=-1)
    with pytest.raises(MCPConfigError, match=r"env\['K'\] must be a str"):
        StdioMCPClient(TIME_CMD, env={"K": 1})  # type: ignore[dict-item]
    with pytest.raises(MCPConfigError, match="url must be an http"):
        HttpMCPClient("127.0.0.1:8000/mcp")
    assert HttpMCPClient(base_url="http://h:1/mcp").url == "http://h:1/mcp"


def test_ws_client_raises_not_implemented_pointing_to_http():
    with pytest.raises(NotImplementedError, match="HttpMCPClient"):
        WsMCPClient("wss://mcp.example.com/ws", headers={"Authorization": "Bearer t"})


# ------------------------------------------- AetherGraph's documented examples, ported
# Each snippet is copied verbatim from its source (only ``aethergraph`` -> ``ag_jupyter`` in
# imports) and run with ``context`` from open_session. "python" resolves to this
# interpreter and "mcp_server.py" / "my_mcp_server.py" to the demo server (cwd and PATH
# are arranged so; the text is unchanged). Not runnable, and why:
# - aethergraph-docs docs/reference/context-mcp.md:173 (registering clients): needs
#   start_server (out of scope), the module path aethergraph.plugins.mcp (not kept) and
#   a15's fs_server (a hand-written server that skips the MCP handshake).
# - docs/tutorials/t6-use-external-tools-mcp.md:35 and :76: `[t.name for t in tools]` on
#   list_tools()'s dict (a15's code returns the JSON-RPC result dict too, so they fail
#   there as well), `asyncio` not imported, `result['summary']` on a call result, and :62
#   needs start_server.
# - a15 src services/mcp/ws_client.py:36: a syntax error (unclosed parenthesis); :27 and
#   t6:118 construct a WsMCPClient, which raises NotImplementedError (tested below).
# - a15 src core/runtime/runtime_services.py:361: `HttpMCPClient("...", ...)` passes an
#   Ellipsis placeholder as an argument.
# aethergraph-examples has no MCP example.

def _run_snippet(code: str, namespace: dict[str, Any]) -> Any:
    compiled = compile(textwrap.dedent(code), "<snippet>", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    return eval(compiled, namespace)  # a coroutine when the snippet awaits


async def _exec(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    result = _run_snippet(code, namespace)
    if asyncio.iscoroutine(result):
        await result
    return namespace


@pytest.fixture
def doc_env(demo_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd holds mcp_server.py / my_mcp_server.py (the demo server); "python" on PATH is us."""
    for name in ("mcp_server.py", "my_mcp_server.py"):
        (demo_path.parent / name).write_text(DEMO_SERVER)
    monkeypatch.chdir(demo_path.parent)
    monkeypatch.setenv("PATH", f"{_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return demo_path.parent


async def test_ag_src_stdio_client_py_L20_basic_usage(doc_env):
    ns = await _exec('''
        from ag_jupyter.services.mcp import StdioMCPClient
        client = StdioMCPClient(["python", "mcp_server.py"])
        await client.open()
        tools = await client.list_tools()
        await client.close()
    ''', {})
    assert "sum" in {t["name"] for t in ns["tools"]["tools"]}
    assert not ns["client"].is_open


async def test_ag_src_stdio_client_py_L29_custom_environment_and_timeout(doc_env):
    ns = await _exec('''
        from ag_jupyter.services.mcp import StdioMCPClient
        client = StdioMCPClient(
            ["python", "mcp_server.py"],
            env={"MY_ENV_VAR": "value"},
            timeout=30.0
        )
    ''', {})
    client = ns["client"]
    assert (await client.call("echo_env", {"name": "MY_ENV_VAR"}))["structuredContent"] == {
        "result": "value"}
    assert client.timeout == 30.0
    await client.aclose()


async def test_ag_src_http_client_py_L22_and_L28_construct_clients():
    ns = await _exec('''
        from ag_jupyter.services.mcp import HttpMCPClient
        client = HttpMCPClient("https://api.example.com")
    ''', {})
    ns2 = await _exec('''
        from ag_jupyter.services.mcp import HttpMCPClient
        client = HttpMCPClient(
            "https://api.example.com",
            headers={"Authorization": "Bearer <token>"},
            timeout=30.0
        )
    ''', {})
    assert ns["client"].url == "https://api.example.com" and not ns["client"].is_open
    assert ns2["client"].header_names == ["Authorization"] and ns2["client"].timeout == 30.0


async def test_ag_src_ws_client_py_L27_and_docs_t6_L118_ws_client_is_not_supported(doc_env):
    with pytest.raises(NotImplementedError, match="HttpMCPClient"):
        await _exec('''
            from ag_jupyter.services.mcp import WsMCPClient
            client = WsMCPClient("wss://mcp.example.com/ws")
            await client.open()
            tools = await client.list_tools()
            await client.close()
        ''', {})


# service.py docstring examples (``context.mcp()`` is the service); "default" is the demo
# server over stdio, or over HTTP for set_header (a stdio client has no headers, in a15 too).
SERVICE_SNIPPETS = {
    "L23": 'service = MCPService()',
    "L28": 'service = MCPService(clients={"default": my_client})',
    "L45": 'context.mcp().register("myserver", my_client)',
    "L60": 'context.mcp().remove("myserver")',
    "L74": 'if context.mcp().has("default"):\n    print("Client exists")',
    "L92": 'names = context.mcp().names()',
    "L106": 'clients = context.mcp().list_clients()',
    "L120": 'client = context.mcp().get("default")',
    "L143": 'await context.mcp().open("default")',
    "L157": 'await context.mcp().close("default")',
    "L174": 'await context.mcp().open_all()',
    "L187": 'await context.mcp().close_all()',
    "L206": 'result = await context.mcp().call("default", "sum", {"a": 1, "b": 2})',
    "L228": 'tools = await context.mcp().list_tools("default")',
    "L247": 'resources = await context.mcp().list_resources("default")',
    "L266": 'data = await context.mcp().read_resource("default", "resource://foo/bar")',
    "L287": 'context.mcp().set_header("default", "Authorization", "Bearer token")',
    "L311": 'context.mcp().persist_secret("API_KEY", "my-secret-value")',
}


@pytest.mark.parametrize("line", list(SERVICE_SNIPPETS))
async def test_ag_src_service_py_examples(line, doc_env, demo_cmd, http_server, capsys):
    default: Any = (HttpMCPClient(http_server.url) if line == "L287"
                    else StdioMCPClient(demo_cmd))
    register_mcp_client("default", default)
    my_client = StdioMCPClient(demo_cmd)
    async with open_session() as context:
        ns = {"context": context, "my_client": my_client, "MCPService": MCPService}
        if line == "L60":
            register_mcp_client("myserver", my_client)
        if line == "L157":
            await default.open()
        if line == "L311":  # a15's default MCPService has no secrets provider either
            with pytest.raises(RuntimeError, match="Secrets provider is not writable"):
                await _exec(SERVICE_SNIPPETS[line], ns)
            return
        await _exec(SERVICE_SNIPPETS[line], ns)
        checks = {
            "L23": lambda: ns["service"].names() == [],
            "L28": lambda: ns["service"].get("default") is my_client,
            "L45": lambda: get_mcp_service().get("myserver") is my_client,
            "L60": lambda: "myserver" not in list_mcp_clients(),
            "L74": lambda: capsys.readouterr().out == "Client exists\n",
            "L92": lambda: ns["names"] == ["default"],
            "L106": lambda: ns["clients"] == ["default"],
            "L120": lambda: ns["client"].server == "default",
            "L143": lambda: default.is_open,
            "L157": lambda: not default.is_open,
            "L174": lambda: default.is_open,
            "L187": lambda: not default.is_open,
            "L206": lambda: ns["result"]["structuredContent"] == {"result": 3},
            "L228": lambda: "sum" in {t["name"] for t in ns["tools"]["tools"]},
            "L247": lambda: ns["resources"]["resources"][0]["uri"] == "resource://foo/bar",
            "L266": lambda: ns["data"]["contents"][0]["text"] == "foo bar contents",
        }
        if line == "L287":
            await default.call("sum", {"a": 1, "b": 1})
            assert http_server.headers_seen[-1]["authorization"] == "Bearer token"
        else:
            assert checks[line]()
    await default.aclose()
    await my_client.aclose()


async def test_ag_src_runtime_services_py_L305_L332_L393_service_helpers(capsys):
    class MyMCPService(MCPService):
        pass

    ns = await _exec('''
        from ag_jupyter.runtime import set_mcp_service
        set_mcp_service(MyMCPService())
    ''', {"MyMCPService": MyMCPService})
    await _exec('mcp = get_mcp_service()', ns := {**ns, "get_mcp_service": get_mcp_service})
    assert isinstance(ns["mcp"], MyMCPService)
    register_mcp_client("myclient", StdioMCPClient(TIME_CMD))
    await _exec('''
        from ag_jupyter.runtime import list_mcp_clients
        clients = list_mcp_clients()
        print(clients)
    ''', {})
    assert capsys.readouterr().out == "['myclient']\n"


async def test_ag_docs_context_mcp_md_L219_examples(doc_env, demo_cmd, http_server, steps):
    # "local" is a stdio server with an fs.read_text tool; "ws" is the HTTP server (a
    # WsMCPClient cannot be built, see above).
    register_mcp_client("local", StdioMCPClient(demo_cmd))
    register_mcp_client("ws", HttpMCPClient(http_server.url))
    async with open_session() as context:
        ns = await _exec('''
            # Get tool list and call a tool
            mcp = context.mcp()

            tools = await mcp.list_tools("local")
            res = await mcp.call("local", tool="fs.read_text", params={"path": "/etc/hosts"})

            # Read a resource listing from WS backend
            await mcp.open("ws")
            resources = await mcp.list_resources("ws")

            # Set a header on the WS client (e.g., late‑bound token)
            mcp.set_header("ws", "Authorization", "Bearer NEW_TOKEN")

            # Clean up
            await mcp.close_all()
        ''', {"context": context})
    assert "fs.read_text" in {t["name"] for t in ns["tools"]["tools"]}
    hosts = Path("/etc/hosts").read_text(encoding="utf-8")  # noqa: ASYNC240 - a small file
    assert ns["res"]["structuredContent"] == {"result": hosts}
    assert ns["resources"]["resources"][0]["uri"] == "resource://foo/bar"
    assert [s["name"] for _, s in steps] == ["local/fs.read_text"]
    assert not mcp_module._open_clients


@pytest.mark.skipif(not hasattr(NodeContext, "channel"),
                    reason="context.channel() is not in this branch yet")
async def test_ag_docs_t6_use_external_tools_mcp_md_L131_fetch_weather(demo_cmd):
    register_mcp_client("default", StdioMCPClient(demo_cmd))
    ns = await _exec('''
        from ag_jupyter import graph_fn, NodeContext

        @graph_fn(name="fetch_weather")
        async def fetch_weather(city: str, *, context: NodeContext):
            # Connect to HTTP MCP backend
            result = await context.mcp("default").call("get_weather", {"city": city})

            report = result.get("report", "No data returned.")
            await context.channel().send_text(f"Weather in {city}: {report}")
            return {"city": city, "report": report}
    ''', {})
    assert ns["fetch_weather"] is not None
    _, outputs, _, _ = await get_run_manager().run_and_wait(
        "fetch_weather", inputs={"city": "Paris"})
    assert outputs == {"city": "Paris", "report": "No data returned."}
