"""context.kv(): JSON values in the workspace with AetherGraph's semantics (one scope shared
by every run and session by default, a session scope on request), TTLs on a clock the
tests move (no sleeps)."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import NodeContext, RunManager, build_adhoc_context, graph_fn
from ag_jupyter.runtime.defaults import workspace_runtime
from ag_jupyter.runtime.services.kv import KVService, KVStore

ContextFactory = Callable[..., Any]


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


@pytest.fixture
def clock(workspace_manager: RunManager) -> FakeClock:
    """The workspace kv service's clock, replaced by one the test controls."""
    fake = FakeClock()
    ctx_kv = workspace_manager.services.get("kv", None)
    ctx_kv.service.clock = fake
    return fake


async def _run(manager: RunManager, graph: Any, **kw: Any) -> dict[str, Any]:
    final, outputs, _, _ = await manager.run_and_wait(graph, inputs={}, **kw)
    assert final.status == "succeeded", final.error
    return outputs or {}


# ------------------------------------------------------------- AetherGraph's examples
async def test_a15_services_kv_ephemeral_py_L37_to_L108_get_set_delete(
    session: ContextFactory, clock: FakeClock
) -> None:
    context = await session()
    # ephemeral.py L73, L78
    await context.kv().set("session_token", "abc123")
    await context.kv().set("user_id", 42, ttl_s=600)
    # L37, L42
    value = await context.kv().get("session_token")
    user_id = await context.kv().get("user_id", default=None)
    assert (value, user_id) == ("abc123", 42)
    clock.advance(601)
    assert await context.kv().get("user_id", default=None) is None
    # L103, L108
    await context.kv().delete("session_token")
    user_id = 42
    await context.kv().delete(f"user_cache:{user_id}")  # a missing key is no error
    assert await context.kv().get("session_token") is None


async def test_a15_services_kv_ephemeral_py_L134_L139_list_append_unique(
    session: ContextFactory, clock: FakeClock
) -> None:
    context = await session()
    got = await context.kv().list_append_unique("recent_users", [{"id": 1, "name": "Alice"}])
    assert got == [{"id": 1, "name": "Alice"}]
    got = await context.kv().list_append_unique(
        "recent_users", [{"id": 1, "name": "Alice again"}, {"id": 2, "name": "Bob"}]
    )
    assert got == [{"id": 1, "name": "Alice"}, {"id": 2, "name": "Bob"}]
    got = await context.kv().list_append_unique(
        "tasks", [{"task_id": 42, "desc": "Review PR"}], id_key="task_id", ttl_s=3600
    )
    assert await context.kv().list_append_unique(
        "tasks", [{"task_id": 42, "desc": "dup"}], id_key="task_id", ttl_s=3600
    ) == [{"task_id": 42, "desc": "Review PR"}]
    clock.advance(3601)
    assert await context.kv().get("tasks") is None


async def test_a15_services_kv_ephemeral_py_L189_L194_list_pop_all(session: ContextFactory) -> None:
    context = await session()
    await context.kv().list_append_unique("recent_events", [{"id": "a"}, {"id": "b"}])
    items = await context.kv().list_pop_all("recent_events")
    assert items == [{"id": "a"}, {"id": "b"}]
    assert await context.kv().get("recent_events") is None
    logs = await context.kv().list_pop_all("logs")  # returns [] if "logs" is missing
    assert logs == []


async def test_a15_services_kv_ephemeral_py_L220_to_L254_mget_mset_lists(
    session: ContextFactory, clock: FakeClock
) -> None:
    context = await session()
    await context.kv().mset({"foo": 1, "bar": "baz"})  # L249
    await context.kv().mset({"session": "abc", "count": 42}, ttl_s=60)  # L254
    await context.kv().set("user_id", 7)
    values = await context.kv().mget(["user_id", "session_token", "profile"])  # L220
    assert values == [7, None, None]
    results = await context.kv().mget(["foo", "bar"])  # L225
    assert results == [1, "baz"]
    clock.advance(61)
    assert await context.kv().mget(["session", "count", "foo"]) == [None, None, 1]


async def test_a15_services_kv_ephemeral_py_L278_to_L315_expire_and_purge(
    session: ContextFactory, clock: FakeClock
) -> None:
    context = await session()
    await context.kv().set("session_token", "t")
    await context.kv().set("user_profile:42", {"name": "x"})
    assert await context.kv().expire("session_token", ttl_s=300) is True  # L278
    assert await context.kv().expire("user_profile:42", ttl_s=60) is True  # L283
    assert await context.kv().expire("missing", ttl_s=60) is False
    clock.advance(61)
    assert await context.kv().get("user_profile:42") is None
    assert await context.kv().get("session_token") == "t"
    clock.advance(300)
    removed = await context.kv().purge_expired()  # L310
    assert removed == 2
    removed = await context.kv().purge_expired(limit=500)  # L315
    assert removed == 0


async def test_docs_other_services_overview_md_L14_kv_demo(manager: RunManager) -> None:
    @graph_fn(name="kv_demo", outputs=["ok"])
    async def kv_demo(*, context):
        kv = context.kv()
        await kv.set("stage", "preflight", ttl_s=300)
        stage = await kv.get("stage")  # → "preflight"
        return {"ok": stage == "preflight"}

    assert await _run(manager, "kv_demo") == {"ok": True}


async def test_examples_method_showcase_3_logger_kv_2_kv_usage_py_global_across_runs(
    manager: RunManager,
) -> None:
    """ "KV is global across all graph nodes": a reader run (its own run, no session)
    finds what a writer run set."""
    KV_KEY = "demo:greeting"

    @graph_fn(name="kv.writer_usage")
    async def kv_writer_usage(*, context: NodeContext):
        kv = context.kv()
        value = "hello from writer_usage"
        await kv.set(KV_KEY, value)
        return {"set": True, "key": KV_KEY}

    @graph_fn(name="kv.reader_usage")
    async def kv_reader_usage(*, context: NodeContext):
        kv = context.kv()
        got = await kv.get(KV_KEY, default="<missing>")
        return {"key": KV_KEY, "value": got}

    assert await _run(manager, "kv.writer_usage") == {"set": True, "key": KV_KEY}
    assert await _run(manager, "kv.reader_usage", session_id="someone-else") == {
        "key": KV_KEY,
        "value": "hello from writer_usage",
    }


# ---------------------------------------------------------------------------- scopes
async def test_default_scope_is_global_and_session_scope_is_explicit(
    session: ContextFactory,
) -> None:
    one = (await session("s1")).kv()
    two = (await session("s2")).kv()
    assert isinstance(one, KVStore) and one.scope == "global"
    await one.set("shared", 1)
    assert await two.get("shared") == 1
    mine = one.session_scope()
    assert mine.scope == "session:s1"
    await mine.set("shared", "only s1")
    assert await mine.get("shared") == "only s1"
    assert await two.get("shared") == 1
    assert await two.session_scope().get("shared") is None
    assert await two.session_scope("s1").get("shared") == "only s1"
    assert await mine.global_scope().get("shared") == 1
    assert mine.session_scope().scope == "session:s1"


async def test_shared_by_kernels_that_open_the_workspace(tmp_path: Path) -> None:
    first = RunManager(**workspace_runtime(tmp_path / "ws"))
    second = RunManager(**workspace_runtime(tmp_path / "ws"))  # another kernel's view
    try:
        a = await build_adhoc_context(session_id="a", run_manager=first)
        b = await build_adhoc_context(session_id="b", run_manager=second)
        await a.kv().set("answer", 42)
        assert await b.kv().get("answer") == 42
        await a.aclose()
        await b.aclose()
    finally:
        await first.close()
        await second.close()


async def test_a_run_without_session_reads_the_global_scope(manager: RunManager) -> None:
    @graph_fn("kv_scoped_run")
    async def scoped(context: NodeContext) -> list[Any]:
        await context.kv().set("from-run", context.run_id)
        return [context.kv().scope, context.kv().session_scope().scope]

    final, outputs, _, _ = await manager.run_and_wait("kv_scoped_run", inputs={})
    assert outputs == {"result": ["global", f"run:{final.run_id}"]}
    ctx = await build_adhoc_context(run_manager=manager)
    try:
        assert await ctx.kv().get("from-run") == final.run_id
    finally:
        await ctx.aclose()


# ------------------------------------------------------------------------ behaviour
async def test_set_get_delete_exists_scan(session: ContextFactory) -> None:
    kv = (await session()).kv()
    assert await kv.get("missing", "fallback") == "fallback"
    await kv.set("k", {"a": [1, 2.5, "x", None, True]})
    assert await kv.get("k") == {"a": [1, 2.5, "x", None, True]}
    assert await kv.exists("k")
    assert await kv.delete("k") is True
    assert await kv.delete("k") is False
    await kv.mset({"user:1": "ann", "user:2": "bob", "team:1": "red"})
    assert await kv.scan("user:") == {"user:1": "ann", "user:2": "bob"}
    assert await kv.scan("user:", limit=1) == {"user:1": "ann"}
    assert await kv.scan_prefix("user:") == ["user:1", "user:2"]
    assert await kv.mget([]) == []
    assert await kv.mget(["nope", "team:1", "nope"], default=0) == [0, "red", 0]


async def test_ttl_follows_the_clock_and_is_reset_by_set(
    session: ContextFactory, clock: FakeClock
) -> None:
    kv = (await session()).kv()
    await kv.set("short", 1, ttl_s=5)
    await kv.set("forever", 3)
    clock.advance(4.9)
    assert await kv.get("short") == 1
    clock.advance(0.2)
    assert await kv.get("short") is None
    assert not await kv.exists("short")
    assert await kv.scan() == {"forever": 3}
    assert await kv.delete("short") is False
    await kv.set("short", "again")  # an expired key can be set again, without a TTL
    clock.advance(10**6)
    assert await kv.get("short") == "again"


async def test_incr_and_list_helpers_are_atomic(session: ContextFactory) -> None:
    kv = (await session()).kv()
    results = await asyncio.gather(*(kv.incr("n") for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    await asyncio.gather(*(kv.list_append_unique("l", [i % 10]) for i in range(40)))
    assert sorted(await kv.get("l")) == list(range(10))
    await kv.set("not-a-list", {"a": 1})
    with pytest.raises(TypeError, match="not a list"):
        await kv.list_append_unique("not-a-list", [1])
    assert await kv.list_pop_all("not-a-list") == []
    assert await kv.get("not-a-list") == {"a": 1}
    with pytest.raises(TypeError, match="not an int"):
        await kv.incr("not-a-list")


@pytest.mark.parametrize("bad", [0, -1, "10", True, math.inf * 0])
async def test_bad_ttl_is_a_value_error(session: ContextFactory, bad: Any) -> None:
    kv = (await session()).kv()
    with pytest.raises(ValueError, match="ttl_s"):
        await kv.set("k", 1, ttl_s=bad)
    with pytest.raises(ValueError, match="ttl_s"):
        await kv.expire("k", bad)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [({1, 2}, "set"), (object(), "object"), (b"bytes", "bytes"), (lambda: None, "function")],
)
async def test_non_json_values_raise_type_error_naming_the_type(
    session: ContextFactory, value: Any, type_name: str
) -> None:
    kv = (await session()).kv()
    with pytest.raises(TypeError, match=f"kv values must be JSON-serialisable; got {type_name}"):
        await kv.set("k", value)
    assert not await kv.exists("k")


async def test_values_that_cannot_be_stored_as_given_get_clear_errors(
    session: ContextFactory,
) -> None:
    kv = (await session()).kv()
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="circular reference"):
        await kv.set("k", cyclic)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nest too deeply"):
        await kv.set("k", deep)
    with pytest.raises(TypeError, match="NaN or infinity"):
        await kv.set("k", float("nan"))
    with pytest.raises(ValueError, match="lone surrogate"):
        await kv.set("caf\udce9", 1)
    with pytest.raises(ValueError, match="NUL"):
        await kv.get("a\x00b")
    with pytest.raises(TypeError, match="keys must be non-empty str"):
        await kv.set("", 1)
    with pytest.raises(ValueError, match="at most"):
        await kv.set("huge", "x" * (16 * 1024 * 1024 + 1))
    # text values JSON can hold are stored exactly, lone surrogates and NUL included
    await kv.set("odd", "caf\udce9 \x00 ok")
    assert await kv.get("odd") == "caf\udce9 \x00 ok"


async def test_mset_is_all_or_nothing(session: ContextFactory) -> None:
    kv = (await session()).kv()
    with pytest.raises(TypeError, match="got set"):
        await kv.mset({"good": 1, "bad": {1}})
    assert await kv.mget(["good", "bad"]) == [None, None]


async def test_values_survive_reopening_the_workspace(tmp_path: Path) -> None:
    first = RunManager(**workspace_runtime(tmp_path / "ws"))
    ctx = await build_adhoc_context(session_id="keep", run_manager=first)
    await ctx.kv().set("answer", 42)
    await ctx.kv().session_scope().set("mine", "s")
    await ctx.aclose()
    await first.close()
    second = RunManager(**workspace_runtime(tmp_path / "ws"))
    try:
        ctx = await build_adhoc_context(session_id="keep", run_manager=second)
        assert await ctx.kv().get("answer") == 42
        assert await ctx.kv().session_scope().get("mine") == "s"
        await ctx.aclose()
    finally:
        await second.close()


async def test_keys_written_by_the_landed_code_stay_readable_in_their_session(
    tmp_path: Path,
) -> None:
    """Before kv followed AetherGraph, context.kv() wrote to ``session:<id>``: those rows
    are the session scope now."""
    ws = tmp_path / "ws"
    first = RunManager(**workspace_runtime(ws))
    await first.close()
    conn = sqlite3.connect(ws / "ag.sqlite3")
    with conn:
        conn.execute(
            "INSERT INTO kv (scope, key, value, expires_at, updated_at) VALUES "
            "('session:old', 'answer', '{\"value\": 42}', NULL, 0)"
        )
    conn.close()
    second = RunManager(**workspace_runtime(ws))
    try:
        ctx = await build_adhoc_context(session_id="old", run_manager=second)
        assert await ctx.kv().session_scope().get("answer") == {"value": 42}
        assert await ctx.kv().get("answer") is None
        await ctx.aclose()
    finally:
        await second.close()


async def test_a_service_with_its_own_clock_can_be_injected(
    manager: RunManager, tmp_path: Path
) -> None:
    clock = FakeClock(100.0)
    service = KVService(manager.store.workspace, clock=clock)
    ctx = await build_adhoc_context(run_manager=manager, kv=service)
    try:
        await ctx.kv().set("k", 1, ttl_s=1)
        clock.advance(2)
        assert await ctx.kv().get("k") is None
    finally:
        await ctx.aclose()


async def test_concurrent_writers_all_land(session: ContextFactory) -> None:
    kv = (await session()).kv()
    await asyncio.gather(*(kv.set(f"k{i:03d}", i) for i in range(200)))
    assert await kv.scan("k") == {f"k{i:03d}": i for i in range(200)}
