"""context.kv(): JSON values in the workspace, scoped to the session, with TTLs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import NodeContext, RunManager, build_adhoc_context
from ag_jupyter.runtime.defaults import workspace_runtime
from ag_jupyter.runtime.services.kv import KVStore

ContextFactory = Callable[..., Any]


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


async def test_set_get_delete_exists(session: ContextFactory) -> None:
    kv = (await session()).kv()
    assert isinstance(kv, KVStore)
    assert await kv.get("missing") is None
    assert await kv.get("missing", "fallback") == "fallback"
    await kv.set("k", {"a": [1, 2.5, "x", None, True]})
    assert await kv.get("k") == {"a": [1, 2.5, "x", None, True]}
    assert await kv.exists("k")
    await kv.set("k", "replaced")
    assert await kv.get("k") == "replaced"
    assert await kv.delete("k") is True
    assert await kv.delete("k") is False
    assert not await kv.exists("k")


async def test_mget_mset_and_scan_by_prefix(session: ContextFactory) -> None:
    kv = (await session()).kv()
    await kv.mset({"user:1": "ann", "user:2": "bob", "team:1": "red"})
    assert await kv.mget(["user:1", "nope", "team:1"]) == {
        "user:1": "ann",
        "nope": None,
        "team:1": "red",
    }
    assert await kv.mget(["nope"], default=0) == {"nope": 0}
    assert await kv.scan("user:") == {"user:1": "ann", "user:2": "bob"}
    assert await kv.scan() == {"team:1": "red", "user:1": "ann", "user:2": "bob"}
    assert await kv.scan("user:", limit=1) == {"user:1": "ann"}
    assert await kv.scan("zzz") == {}
    assert await kv.mget([]) == {}


async def test_keys_are_scoped_to_the_session_unless_global(session: ContextFactory) -> None:
    one = (await session("s1")).kv()
    two = (await session("s2")).kv()
    await one.set("shared-name", 1)
    await two.set("shared-name", 2)
    assert await one.get("shared-name") == 1
    assert await two.get("shared-name") == 2
    assert one.scope == "session:s1"
    await one.global_scope().set("everyone", "hi")
    assert await two.global_scope().get("everyone") == "hi"
    assert await two.get("everyone") is None
    assert await two.session_scope("s1").get("shared-name") == 1


async def test_a_run_without_session_gets_its_own_scope(manager: RunManager) -> None:
    from ag_jupyter.runtime import GraphRegistry, graph_fn

    registry = GraphRegistry()
    manager.registry = registry

    @graph_fn("scoped", registry=registry)
    async def scoped(context: NodeContext) -> str:
        await context.kv().set("mine", context.run_id)
        return context.kv().scope

    final, outputs, _, _ = await manager.run_and_wait("scoped", inputs={})
    assert outputs == {"result": f"run:{final.run_id}"}


async def test_ttl_expires_keys(session: ContextFactory) -> None:
    kv = (await session()).kv()
    # TTL long enough that a loaded machine still reads "short" before it expires
    await kv.set("short", 1, ttl_s=0.5)
    await kv.mset({"a": 1, "b": 2}, ttl_s=0.5)
    await kv.set("long", 2, ttl_s=60)
    await kv.set("forever", 3)
    assert await kv.get("short") == 1
    await asyncio.sleep(0.6)
    assert await kv.get("short") is None
    assert not await kv.exists("short")
    assert await kv.mget(["a", "b", "long"]) == {"a": None, "b": None, "long": 2}
    assert await kv.scan() == {"forever": 3, "long": 2}
    assert await kv.delete("short") is False
    await kv.set("short", "again")  # an expired key can be set again
    assert await kv.get("short") == "again"


@pytest.mark.parametrize("bad", [0, -1, "10", True, math.inf * 0])
async def test_bad_ttl_is_a_value_error(session: ContextFactory, bad: Any) -> None:
    kv = (await session()).kv()
    with pytest.raises(ValueError, match="ttl_s"):
        await kv.set("k", 1, ttl_s=bad)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (b"bytes", "bytes"),
        ({"nested": [1, {"deep": {3}}]}, "set"),
        (lambda: None, "function"),
    ],
)
async def test_non_json_values_raise_type_error_naming_the_type(
    session: ContextFactory, value: Any, type_name: str
) -> None:
    kv = (await session()).kv()
    with pytest.raises(TypeError, match=f"kv values must be JSON-serialisable; got {type_name}"):
        await kv.set("k", value)
    assert not await kv.exists("k")


async def test_nan_and_bad_keys_are_refused(session: ContextFactory) -> None:
    kv = (await session()).kv()
    with pytest.raises(TypeError, match="NaN or infinity"):
        await kv.set("k", float("nan"))
    with pytest.raises(TypeError, match="keys must be non-empty str"):
        await kv.set("", 1)
    with pytest.raises(TypeError, match="keys must be non-empty str"):
        await kv.get(3)  # type: ignore[arg-type]


async def test_mset_is_all_or_nothing(session: ContextFactory) -> None:
    kv = (await session()).kv()
    with pytest.raises(TypeError, match="got set"):
        await kv.mset({"good": 1, "bad": {1}})
    assert await kv.mget(["good", "bad"]) == {"good": None, "bad": None}


async def test_tuples_are_stored_as_lists(session: ContextFactory) -> None:
    kv = (await session()).kv()
    await kv.set("t", (1, (2, 3)))
    assert await kv.get("t") == [1, [2, 3]]


async def test_values_survive_reopening_the_workspace(tmp_path: Path) -> None:
    first = RunManager(**workspace_runtime(tmp_path / "ws"))
    ctx = await build_adhoc_context(session_id="keep", run_manager=first)
    await ctx.kv().set("answer", 42)
    await ctx.kv().global_scope().set("g", "global")
    await ctx.aclose()
    await first.close()
    second = RunManager(**workspace_runtime(tmp_path / "ws"))
    try:
        ctx = await build_adhoc_context(session_id="keep", run_manager=second)
        assert await ctx.kv().get("answer") == 42
        assert await ctx.kv().global_scope().get("g") == "global"
        await ctx.aclose()
    finally:
        await second.close()


async def test_concurrent_writers_all_land(session: ContextFactory) -> None:
    kv = (await session()).kv()
    await asyncio.gather(*(kv.set(f"k{i:03d}", i) for i in range(200)))
    values = await kv.scan("k")
    assert values == {f"k{i:03d}": i for i in range(200)}
