"""Ad-hoc sessions: ``open_session`` / ``build_adhoc_context`` defaults, overrides, clean-up,
services and the logger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ag_jupyter import build_adhoc_context, get_run_manager, graph_fn, open_session
from ag_jupyter.runtime import (
    NodeContext,
    RunManager,
    RunOrigin,
    RunStatus,
    ServiceNotConfiguredError,
    default_registry,
    register_context_service,
)
from ag_jupyter.runtime.services import unregister_context_service

SESSION_GRAPHS = ("session-test-wait", "session-test-echo")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[None]:
    """Run each test in its own folder (a default workspace lands there) and give it the
    graphs sessions spawn; the process-wide manager of this test's loop is fresh anyway."""
    monkeypatch.chdir(tmp_path)
    yield
    for name in SESSION_GRAPHS:
        default_registry.unregister(name)



@pytest.fixture
def release() -> asyncio.Event:
    """Registers ``session-test-wait`` (blocks until the returned event is set) and
    ``session-test-echo(x)``."""
    event = asyncio.Event()

    @graph_fn("session-test-wait")
    async def wait_graph() -> str:
        await event.wait()
        return "released"

    @graph_fn("session-test-echo")
    async def echo(x: int = 0) -> int:
        return x

    return event


# ----------------------------------------------------------------------- defaults
async def test_open_session_defaults() -> None:
    async with open_session() as context:
        assert isinstance(context, NodeContext)
        assert context.graph_id == "adhoc"
        assert context.node_id == "adhoc"
        assert isinstance(context.run_id, str) and context.run_id
        assert context.session_id == context.run_id
        assert context.agent_id is None and context.app_id is None
        assert context.manager is get_run_manager()
        first_id = context.run_id
    async with open_session() as other:
        assert other.run_id != first_id


async def test_open_session_positional_ids_and_identity_overrides() -> None:
    async with open_session(
        "my-run", "my-graph", "my-node", session_id="s-1", agent_id="agent-1", app_id="app-1"
    ) as context:
        assert (context.run_id, context.graph_id, context.node_id) == (
            "my-run",
            "my-graph",
            "my-node",
        )
        assert (context.session_id, context.agent_id, context.app_id) == (
            "s-1",
            "agent-1",
            "app-1",
        )


async def test_build_adhoc_context_has_the_same_defaults_and_closes_once() -> None:
    context = await build_adhoc_context()
    assert (context.graph_id, context.node_id) == ("adhoc", "adhoc")
    assert context.session_id == context.run_id
    calls: list[str] = []

    async def closer() -> None:
        calls.append("closed")

    context.on_close(closer)
    await context.aclose()
    await context.aclose()
    assert calls == ["closed"]


@pytest.mark.parametrize("opener", ["open_session", "build_adhoc_context"])
async def test_unknown_override_warns_naming_accepted_ones_and_is_kept(opener: str) -> None:
    # Contract changed by issue 13 (seed 001's own example passes foo="bar"): an unknown
    # override is kept in context.rt_overrides with a UserWarning, no longer a TypeError.
    with pytest.warns(UserWarning) as caught:
        if opener == "open_session":
            async with open_session(colour="blue") as context:
                kept = dict(context.rt_overrides)
        else:
            context = await build_adhoc_context(colour="blue")
            kept = dict(context.rt_overrides)
            await context.aclose()
    assert kept == {"colour": "blue"}
    [warning] = caught
    message = str(warning.message)
    assert "'colour'" in message
    for accepted in ("session_id", "agent_id", "app_id", "max_concurrency", "services", "llm"):
        assert accepted in message
    assert warning.filename == __file__  # it points at the caller's line


async def test_adhoc_context_is_never_cancel_requested() -> None:
    async with open_session() as context:
        # A CancelFlag since issue 13 (awaitable too): compare by value, not identity.
        assert context.runner().is_cancel_requested() == False  # noqa: E712
        assert await context.runner().is_cancel_requested() is False
        context.runner().raise_if_cancel_requested()  # does nothing


# ------------------------------------------------------------- runs from a session
async def test_runs_spawned_from_a_session_carry_its_identity(release: asyncio.Event) -> None:
    async with open_session(session_id="sess", agent_id="ag") as context:
        runner = context.runner()
        run_id = await runner.spawn_run("session-test-echo", inputs={"x": 3})
        record, outputs = await runner.wait_run(run_id, timeout_s=5, return_outputs=True)
    assert outputs == {"result": 3}
    assert record.parent_run_id == context.run_id
    assert record.session_id == "sess"
    assert record.agent_id == "ag"
    assert record.origin is RunOrigin.agent


async def test_runs_spawned_on_the_shared_manager_keep_going_after_the_session(
    release: asyncio.Event,
) -> None:
    async with open_session() as context:
        run_id = await context.runner().spawn_run("session-test-wait", inputs={})
    manager = get_run_manager()
    await asyncio.sleep(0)
    assert (await manager.get_record(run_id)).status is RunStatus.running
    release.set()
    assert (await manager.wait_run(run_id, timeout_s=5)).status is RunStatus.succeeded


async def test_run_manager_override_is_used_and_takes_the_session_limit() -> None:
    mine = RunManager()
    async with open_session(run_manager=mine) as context:
        assert context.manager is mine
    assert not mine.closed  # not the session's to close
    ctx = await build_adhoc_context(run_manager=mine, max_concurrency=2, session_id="lim")
    assert mine.session_limit("lim") == 2
    await ctx.aclose()
    assert mine.session_limit("lim") is None
    await mine.close()


# ------------------------------------------------------------- session limits
async def test_max_concurrency_limits_the_session_inside_the_one_manager(
    release: asyncio.Event,
) -> None:
    shared = get_run_manager()
    async with open_session(max_concurrency=2) as context:
        assert context.manager is shared
        ids = [
            await context.runner().spawn_run("session-test-wait", inputs={}) for _ in range(3)
        ]
        for _ in range(5):
            await asyncio.sleep(0)
        statuses = [(await shared.get_record(i)).status for i in ids]
        assert statuses == [RunStatus.running, RunStatus.running, RunStatus.pending]
        # Listed and found by the loop's manager, like any other run.
        assert {r.run_id for r in shared.live_records()} >= set(ids)
    # The session is gone; its runs are not, and its limit still holds them.
    assert not shared.closed
    await asyncio.sleep(0)
    assert (await shared.get_record(ids[2])).status is RunStatus.pending
    release.set()
    for run_id in ids:
        final = await shared.wait_run(run_id, timeout_s=5)
        assert final.status is RunStatus.succeeded
    assert shared.session_limit(context.session_id) is None  # dropped once idle


async def test_a_session_at_its_limit_does_not_block_other_sessions(
    release: asyncio.Event,
) -> None:
    shared = get_run_manager()
    async with (
        open_session(max_concurrency=1, session_id="narrow") as narrow,
        open_session(session_id="wide") as wide,
    ):
        first = await narrow.runner().spawn_run("session-test-wait", inputs={})
        held = await narrow.runner().spawn_run("session-test-wait", inputs={})
        other = await wide.runner().spawn_run("session-test-echo", inputs={"x": 7})
        record, outputs = await shared.wait_run(other, timeout_s=5, return_outputs=True)
        assert record.status is RunStatus.succeeded and outputs == {"result": 7}
        assert (await shared.get_record(first)).status is RunStatus.running
        assert (await shared.get_record(held)).status is RunStatus.pending
        release.set()
        assert (await shared.wait_run(held, timeout_s=5)).status is RunStatus.succeeded


async def test_runs_of_a_limited_session_are_waited_and_cancelled_by_the_loop_manager(
    release: asyncio.Event,
) -> None:
    shared = get_run_manager()
    async with open_session(max_concurrency=2) as context:
        waited_id = await context.runner().spawn_run("session-test-wait", inputs={})
        cancelled_id = await context.runner().spawn_run("session-test-wait", inputs={})
        queued_id = await context.runner().spawn_run("session-test-wait", inputs={})
        await asyncio.sleep(0)

        waiter = asyncio.create_task(shared.wait_run(waited_id, timeout_s=5))
        await asyncio.sleep(0)
        assert not waiter.done()

        requested = await shared.cancel_run(cancelled_id, reason="from the panel")
        assert requested.status is RunStatus.cancellation_requested
        final = await shared.wait_run(cancelled_id, timeout_s=5)
        assert final.status is RunStatus.canceled
        assert final.meta["cancel_reason"] == "from the panel"
        # Its session slot went to the queued run, which a cancel also reaches.
        assert (await shared.get_record(queued_id)).status is RunStatus.running
        release.set()
        assert (await waiter).status is RunStatus.succeeded
        assert (await shared.wait_run(queued_id, timeout_s=5)).status is RunStatus.succeeded


@pytest.mark.parametrize("bad", [0, -3])
async def test_non_positive_max_concurrency_override_raises_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        async with open_session(max_concurrency=bad):
            pass


async def test_session_cleans_up_when_the_block_raises(release: asyncio.Event) -> None:
    closed: list[bool] = []
    with pytest.raises(ZeroDivisionError):
        async with open_session(max_concurrency=1) as context:
            manager = context.manager

            async def closer() -> None:
                closed.append(True)

            context.on_close(closer)
            run_id = await context.runner().spawn_run("session-test-wait", inputs={})
            1 / 0  # noqa: B018
    assert closed == [True]
    assert not manager.closed
    # The run is the user's: it keeps going after the session, like any other run.
    await asyncio.sleep(0)
    assert (await manager.get_record(run_id)).status is RunStatus.running
    release.set()
    assert (await manager.wait_run(run_id, timeout_s=5)).status is RunStatus.succeeded


async def test_session_cleans_up_when_the_block_is_cancelled(release: asyncio.Event) -> None:
    entered = asyncio.Event()
    seen: dict[str, Any] = {}
    closed: list[bool] = []

    async def cell() -> None:
        async with open_session(max_concurrency=1) as context:
            seen["manager"] = context.manager

            async def closer() -> None:
                closed.append(True)

            context.on_close(closer)
            seen["run_id"] = await context.runner().spawn_run("session-test-wait", inputs={})
            entered.set()
            await asyncio.Event().wait()  # a long await, interrupted like a kernel interrupt

    task = asyncio.create_task(cell())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]
    assert not seen["manager"].closed
    record = await seen["manager"].get_record(seen["run_id"])
    assert record.status is RunStatus.running
    release.set()
    final = await seen["manager"].wait_run(seen["run_id"], timeout_s=5)
    assert final.status is RunStatus.succeeded


# ---------------------------------------------------------------------- services
class Weather:
    def forecast(self) -> str:
        return "sunny"


class Bindable:
    """A service with ``bind(context)``: each context gets its own view."""

    def bind(self, context: NodeContext) -> tuple[str, str]:
        return ("bound", context.run_id)


async def test_services_injected_into_a_session_are_reachable() -> None:
    weather, fake_llm, rag, tools = Weather(), object(), object(), object()
    async with open_session(
        services={"weather": weather, "scoped": Bindable()},
        llm=fake_llm,
        rag=rag,
        mcp={"tools": tools},
    ) as context:
        assert context.svc("weather").forecast() == "sunny"
        assert context.svc("scoped") == ("bound", context.run_id)
        assert context.llm() is fake_llm
        assert context.rag is rag
        assert context.mcp("tools") is tools
    async with open_session() as other:
        with pytest.raises(ServiceNotConfiguredError):
            other.svc("weather")  # injections are per session


async def test_register_context_service_reaches_sessions_and_graph_runs() -> None:
    name = "session-test-registered"
    register_context_service(name, Bindable())

    @graph_fn("session-test-echo")
    async def uses_service(context) -> Any:
        return list(context.svc(name))

    try:
        async with open_session() as context:
            assert context.svc(name) == ("bound", context.run_id)
            run_id, outputs, _, _ = await context.runner().run_and_wait(
                "session-test-echo", inputs={}
            )
        assert outputs == {"result": ["bound", run_id]}
    finally:
        unregister_context_service(name)
    async with open_session() as context:
        with pytest.raises(ServiceNotConfiguredError):
            context.svc(name)


def test_register_context_service_rejects_a_bad_name() -> None:
    with pytest.raises(TypeError):
        register_context_service("", object())


@pytest.fixture
def no_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AG_LLM_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("service", ["rag", "mcp", "llm", "custom"])
async def test_unconfigured_service_raises_service_not_configured_at_once(
    no_llm_env: None, service: str
) -> None:
    # On a workspace the embedded RAG index is configured: an in-memory manager has none.
    memory_manager = RunManager() if service == "rag" else None
    async with open_session(run_manager=memory_manager) as context:
        started = time.monotonic()
        with pytest.raises(ServiceNotConfiguredError) as info:
            if service == "rag":
                _ = context.rag
            elif service == "mcp":
                context.mcp("search")
            elif service == "llm":
                context.llm()
            else:
                context.svc("nonexistent")
        assert time.monotonic() - started < 1.0
    if memory_manager is not None:
        await memory_manager.close()
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    expected_hint = {
        "rag": "register_context_service",
        "mcp": "register_mcp_client",
        "llm": "OPENAI_API_KEY",
        "custom": "register_context_service",
    }[service]
    assert expected_hint in message


# ------------------------------------------------------------------------ logger
async def test_logger_lines_go_to_the_run_buffer_and_not_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with open_session() as context:
        log = context.logger()
        log.info("hello from adhoc")
        log.warning("careful %s", "now")
        try:
            raise ValueError("oops")
        except ValueError:
            log.exception("it failed")
        lines = context.services.logs(context.run_id)
    messages = [(line["level"], line["message"]) for line in lines]
    assert messages == [
        ("INFO", "hello from adhoc"),
        ("WARNING", "careful now"),
        ("ERROR", "it failed"),
    ]
    assert all(line["session_id"] == context.session_id for line in lines)
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out == ""


async def test_logger_in_a_graph_run_is_tagged_with_the_run_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @graph_fn("session-test-echo")
    async def logs(context, x: int = 0) -> int:
        context.logger().info("working on %d", x)
        return x

    async with open_session() as context:
        run_id, _, _, _ = await context.runner().run_and_wait("session-test-echo", inputs={"x": 5})
        run_lines = context.services.logs(run_id)
        session_lines = context.services.logs(context.run_id)
    assert [line["message"] for line in run_lines] == ["working on 5"]
    assert session_lines == []
    assert capsys.readouterr().err == ""


async def test_logger_output_reaches_python_logging_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ag_jupyter.runs")
    async with open_session(run_id="log-run") as context:
        context.logger().info("to logging")
    matching = [r for r in caplog.records if r.getMessage() == "to logging"]
    assert matching and matching[0].run_id == "log-run"  # type: ignore[attr-defined]


async def test_session_exit_leaves_injected_services_open():
    from ag_jupyter import open_session

    class Closable:
        closed = False

        async def aclose(self):
            self.closed = True

    mine = Closable()
    async with open_session(llm=mine, services={"extra": mine}) as context:
        assert context.llm() is mine
    assert mine.closed is False
