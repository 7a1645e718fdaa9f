"""The context as AetherGraph code uses it (issue 13, items 3 and 5): seed 000's run methods on
the context, cancel checks called plainly or awaited, custom services (``Service``,
``context.<name>()``, ``svc``, ``get_ext_context_service``) and typed service accessors."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import typing
from typing import Any

import pytest

from ag_jupyter import NodeContext, Service, graph_fn
from ag_jupyter.runtime import (
    AsyncRWLock,
    RunStatus,
    ServiceNotConfiguredError,
    current_services,
    default_registry,
    get_ext_context_service,
    get_llm_service,
    get_run_manager,
    list_ext_context_services,
    open_session,
    register_context_service,
    register_llm_client,
)
from ag_jupyter.runtime.services import unregister_context_service
from ag_jupyter.runtime.services.kv import KVStore


@pytest.fixture
def services() -> Any:
    """``register(name, svc)``; every registration is removed after the test."""
    names: list[str] = []

    def register(name: str, svc: Any) -> Any:
        register_context_service(name, svc)
        names.append(name)
        return svc

    yield register
    for name in names:
        unregister_context_service(name)


@pytest.fixture
def graph_names() -> Any:
    names: list[str] = []
    yield names
    for name in names:
        default_registry.unregister(name)


# ---------------------------------------------------------- seed 000 on the context
async def test_run_methods_on_the_context_delegate_to_the_runner(graph_names: list[str]) -> None:
    graph_names += ["ctx-seed000-child", "ctx-seed000-slow"]

    @graph_fn("ctx-seed000-child")
    async def child(x: int) -> dict[str, int]:
        return {"y": x + 1}

    @graph_fn("ctx-seed000-slow")
    async def slow() -> None:
        await asyncio.sleep(30)

    async with open_session(session_id="s000", agent_id="ag") as context:
        run_id = await context.spawn_run("ctx-seed000-child", inputs={"x": 1}, tags=["t"])
        record, outputs = await context.wait_run(run_id, timeout_s=5, return_outputs=True)
        assert outputs == {"y": 2} and record.tags == ["t"]
        assert (record.session_id, record.agent_id, record.parent_run_id) == (
            "s000", "ag", context.run_id
        )
        rid, outputs, has_waits, continuations = await context.run_and_wait(
            "ctx-seed000-child", inputs={"x": 2}
        )
        assert outputs == {"y": 3} and has_waits is False and continuations == []
        assert (await context.wait_run(rid)).parent_run_id == context.run_id
        slow_id = await context.spawn_run("ctx-seed000-slow", inputs={})
        assert await context.cancel_run(slow_id) is None
        assert (await context.wait_run(slow_id, timeout_s=5)).status is RunStatus.canceled
    sig = inspect.signature(NodeContext.spawn_run)
    assert list(sig.parameters)[1:] == [
        "graph_id", "inputs", "session_id", "tags", "visibility", "origin", "importance",
        "agent_id", "app_id", "run_id",
    ]


# -------------------------------------------------------------- cancel checks
async def test_is_cancel_requested_works_plainly_and_awaited_in_async_bodies(
    graph_names: list[str],
) -> None:
    graph_names.append("ctx-cancel-async")
    seen: list[Any] = []
    started = asyncio.Event()

    @graph_fn("ctx-cancel-async")
    async def body(context: NodeContext) -> None:
        runner = context.runner()
        seen.append((bool(runner.is_cancel_requested()), await runner.is_cancel_requested()))
        await runner.raise_if_cancel_requested()  # a15's awaited form: nothing to raise
        runner.raise_if_cancel_requested()
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            flag = runner.is_cancel_requested()
            seen.append((bool(flag), await flag, flag == True))  # noqa: E712
            raise

    manager = get_run_manager()
    record = await manager.submit_run("ctx-cancel-async", inputs={})
    await asyncio.wait_for(started.wait(), 5)
    await manager.cancel_run(record.run_id)
    assert (await manager.wait_run(record.run_id, timeout_s=5)).status is RunStatus.canceled
    assert seen == [(False, False), (True, True, True)]


async def test_sync_bodies_poll_the_flag_plainly_and_raise_on_it(graph_names: list[str]) -> None:
    graph_names.append("ctx-cancel-sync")
    started = threading.Event()
    seen: list[bool] = []

    @graph_fn("ctx-cancel-sync")
    def body(context: NodeContext) -> str:
        runner = context.runner()
        started.set()
        deadline = time.monotonic() + 5
        while not runner.is_cancel_requested() and time.monotonic() < deadline:
            time.sleep(0.002)
        if runner.is_cancel_requested():
            seen.append(True)
        runner.raise_if_cancel_requested()
        return "not reached"

    manager = get_run_manager()
    record = await manager.submit_run("ctx-cancel-sync", inputs={})
    await asyncio.to_thread(started.wait, 5)
    await manager.cancel_run(record.run_id)
    final = await manager.wait_run(record.run_id, timeout_s=5)
    assert final.status is RunStatus.canceled and seen == [True]


def test_cancel_flag_compares_hashes_and_prints_as_its_bool() -> None:
    from ag_jupyter.runtime import CancelFlag

    yes, no = CancelFlag(True), CancelFlag(False)
    assert yes == True and no == False and yes != no  # noqa: E712
    assert not no and yes and repr(no) == "False" and hash(yes) == hash(True)
    assert [no, yes] == [False, True]


# ------------------------------------------------------------- custom services
class Counter(Service):
    def __init__(self) -> None:
        super().__init__()
        self._value = 0
        self.incr = self.critical()(self.incr)  # the docs' pattern

    async def incr(self, n: int = 1) -> int:
        value = self._value
        await asyncio.sleep(0)
        self._value = value + n
        return self._value


class Whoami(Service):
    def run_id(self) -> str:
        return self.ctx().run_id

    async def later(self) -> str:
        await asyncio.sleep(0.01)
        return self.ctx().run_id

    async def in_thread(self) -> str:
        return await self.run_blocking(lambda: self.ctx().run_id)


async def test_context_name_call_gives_the_bound_service_and_ctx_sees_each_run(
    services: Any, graph_names: list[str]
) -> None:
    graph_names.append("ctx-whoami")
    svc = services("whoami", Whoami())

    @graph_fn("ctx-whoami")
    async def body(context: NodeContext) -> dict[str, Any]:
        handle = context.whoami
        return {
            "same": handle() is svc and context.svc("whoami") is svc,
            "ids": [handle().run_id(), await context.whoami.later(),
                    await context.whoami().in_thread()],
            "own": context.run_id,
        }

    results = await asyncio.gather(*(body() for _ in range(4)))
    for result in results:
        assert result["same"] is True
        assert result["ids"] == [result["own"]] * 3
    assert len({r["own"] for r in results}) == 4


async def test_a_service_fetched_in_a_session_still_sees_each_runs_context(
    services: Any, graph_names: list[str]
) -> None:
    graph_names.append("ctx-shared-instance")
    services("whoami", Whoami())

    async with open_session() as session:
        instance = session.whoami()  # bound to the session here
        assert instance.run_id() == session.run_id

        @graph_fn("ctx-shared-instance")
        async def body(context: NodeContext) -> list[str]:
            return [instance.run_id(), context.run_id]

        got, own = (await body())["result"]
        assert got == own != session.run_id


def test_service_bind_and_ctx_outside_any_run() -> None:
    class Fake:
        run_id = "fake-run"

    svc = Whoami()
    with pytest.raises(RuntimeError, match=r"no context is bound.*bind\(context=ctx\)"):
        svc.ctx()
    assert svc.bind(context=Fake()) is svc  # a15's keyword form, as its docs' tests do
    assert svc.run_id() == "fake-run"
    assert Whoami().bind(Fake()).ctx().run_id == "fake-run"


async def test_critical_serialises_concurrent_callers(
    services: Any, graph_names: list[str]
) -> None:
    # method_showcase/6_extending_services/5_critical_mutex_usage.py, as a test.
    graph_names.append("ctx-counter")
    services("counter", Counter())

    @graph_fn("ctx-counter")
    async def counter_demo(*, context: NodeContext) -> dict[str, int]:
        counter = context.counter()

        async def worker() -> None:
            for _ in range(100):
                await counter.incr(1)

        await asyncio.gather(*[worker() for _ in range(10)])
        return {"final_value": await counter.incr(0)}

    assert await counter_demo() == {"final_value": 1000}


async def test_critical_as_a_class_decorator_and_rw_lock() -> None:
    class Table(Service):
        def __init__(self) -> None:
            self.rows: list[int] = []  # no super().__init__(): still works
            self.rw = AsyncRWLock()

        @Service.critical
        async def add(self, n: int) -> int:
            size = len(self.rows)
            await asyncio.sleep(0)
            self.rows.append(n)
            return size

        async def snapshot(self) -> list[int]:
            async with await self.rw.read():
                return list(self.rows)

    table = Table()
    sizes = await asyncio.gather(*(table.add(i) for i in range(20)))
    assert sorted(sizes) == list(range(20))
    async with await table.rw.write():
        pass
    assert await table.snapshot() == list(range(20))


def test_the_service_lock_works_on_successive_event_loops() -> None:
    counter = Counter()
    assert asyncio.run(counter.incr(1)) == 1
    assert asyncio.run(counter.incr(1)) == 2  # an asyncio.Lock bound to the first loop fails


async def test_callable_services_and_handles(services: Any) -> None:
    class Predictor(Service):
        async def __call__(self, prompt: str) -> str:
            return await self.generate(prompt)

        async def generate(self, prompt: str) -> str:
            return prompt.upper()

    services("predictor", Predictor())
    services("plain", {"k": 1})
    async with open_session() as context:
        assert await context.predictor("hello") == "HELLO"
        assert await context.predictor().generate("hi") == "HI"
        assert context.plain() == {"k": 1} and context.plain.get("k") == 1
        with pytest.raises(TypeError, match="'plain' is not callable"):
            context.plain("x")
        assert "predictor" in dir(context)
        with pytest.raises(AttributeError, match="register_context_service"):
            context.nothing_here  # noqa: B018
        assert not hasattr(context, "nothing_here")
        with pytest.raises(ServiceNotConfiguredError):
            context.svc("nothing_here")


def test_get_and_list_ext_context_services(services: Any) -> None:
    svc = services("ext-one", Whoami())
    assert get_ext_context_service("ext-one") is svc
    assert get_ext_context_service("ext-missing") is None
    assert "ext-one" in list_ext_context_services()
    assert "kv" not in list_ext_context_services()


async def test_current_services_and_llm_helpers(services: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with open_session(session_id="svc") as context:
        assert current_services() is context.services
    assert current_services() is get_run_manager().services
    assert get_llm_service() is not None  # the embedded provider (reads the environment)
    # Named profiles, as a15's register_llm_client(profile, provider, model, ...) makes them.
    with pytest.raises(ServiceNotConfiguredError, match="without an API key"):
        register_llm_client("fast", "openai", "gpt-4o-mini")  # hosted, no key: refused
    with pytest.raises(ValueError, match="provider"):
        register_llm_client("odd", "no-such-provider", "m")
    client = register_llm_client(
        "local", "ollama", "llama3", None, "http://127.0.0.1:9/v1", None, 5
    )  # a15's positional order: profile, provider, model, embed_model, base_url, key, timeout
    try:
        async with open_session() as context:
            bound = context.llm("local")
            assert bound.model == "llama3" == client.model
            assert bound.base_url == "http://127.0.0.1:9/v1"
    finally:
        from ag_jupyter.runtime.services.llm import forget_runtime_profiles

        forget_runtime_profiles()


def test_current_services_outside_a_loop_says_why() -> None:
    with pytest.raises(RuntimeError, match="running event loop"):
        current_services()


# ------------------------------------------------------------------- typing
def test_service_accessors_are_typed_with_the_real_classes() -> None:
    hints = typing.get_type_hints(NodeContext.kv)
    assert hints["return"] is KVStore
    for accessor in ("llm", "kv", "memory", "artifacts", "logger"):
        annotation = typing.get_type_hints(getattr(NodeContext, accessor))["return"]
        assert isinstance(annotation, type) and annotation is not typing.Any
        assert any(not name.startswith("_") for name in dir(annotation))


async def test_notebook_completion_on_context_kv_lists_its_methods() -> None:
    pytest.importorskip("jedi")
    from IPython.core.completer import provisionalcompleter
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    try:
        async with open_session() as context:
            shell.user_ns["context"] = context
            shell.Completer.use_jedi = True
            code = "context.kv()."
            with provisionalcompleter():
                found = {c.text for c in shell.Completer.completions(code, len(code))}
    finally:
        InteractiveShell.clear_instance()
    assert {"get", "set", "delete"} <= found
