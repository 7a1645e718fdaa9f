"""context.memory(): a session's event log and chat turns in the workspace."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ag_jupyter.runtime import RunManager, build_adhoc_context
from ag_jupyter.runtime.defaults import workspace_runtime
from ag_jupyter.runtime.services.memory import MemoryEvent, SessionMemory

ContextFactory = Callable[..., Any]


@pytest.fixture
def manager(workspace_manager: RunManager) -> RunManager:
    return workspace_manager


async def test_record_returns_the_stored_event(session: ContextFactory) -> None:
    ctx = await session(run_id="adhoc-1")
    mem = ctx.memory()
    assert isinstance(mem, SessionMemory)
    event = await mem.record("tool_call", {"tool": "search", "q": "photons"}, tags=["tools"])
    assert isinstance(event, MemoryEvent)
    assert event.kind == "tool_call"
    assert event.data == {"tool": "search", "q": "photons"}
    assert event.tags == ["tools"]
    assert event.run_id == "adhoc-1" and event.session_id == "s1"
    assert event.created_at.tzinfo is not None
    assert (await mem.recent(1)) == [event]
    assert event.to_dict()["created_at"] == event.created_at.isoformat()


async def test_recent_is_oldest_first_and_append_is_record(session: ContextFactory) -> None:
    mem = (await session()).memory()
    for i in range(5):
        await mem.append("step", {"i": i})
    recent = await mem.recent(3)
    assert [e.data["i"] for e in recent] == [2, 3, 4]
    assert [e.id for e in recent] == sorted(e.id for e in recent)
    assert len(await mem.recent()) == 5


async def test_query_filters_by_kind_tags_and_time(session: ContextFactory) -> None:
    mem = (await session()).memory()
    await mem.record("a", 1, tags=["x"])
    await mem.record("b", 2, tags=["x", "y"])
    middle = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await mem.record("a", 3, tags=["y"])
    await mem.record("c", 4)

    async def data(**kw: Any) -> list[Any]:
        return [e.data for e in await mem.query(**kw)]

    assert await data() == [1, 2, 3, 4]
    assert await data(kind="a") == [1, 3]
    assert await data(kind=["a", "c"]) == [1, 3, 4]
    assert await data(tags=["x"]) == [1, 2]
    assert await data(tags=["x", "y"]) == [2]
    assert await data(since=middle) == [3, 4]
    assert await data(until=middle) == [1, 2]
    assert await data(since=middle.timestamp(), kind="a") == [3]
    assert await data(limit=2) == [3, 4]  # the newest two, oldest first
    assert await data(since=middle + timedelta(days=1)) == []


async def test_chat_turns_and_history(session: ContextFactory) -> None:
    mem = (await session()).memory()
    await mem.add_chat_turn("user", "Give me a haiku about photons.")
    await mem.record("note", {"not": "chat"})
    await mem.add_chat_turn("assistant", "Light folds into waves")
    await mem.add_chat_turn("user", "Another?")
    assert await mem.chat_history() == [
        {"role": "user", "content": "Give me a haiku about photons."},
        {"role": "assistant", "content": "Light folds into waves"},
        {"role": "user", "content": "Another?"},
    ]
    assert await mem.chat_history(1) == [{"role": "user", "content": "Another?"}]
    with pytest.raises(TypeError, match="role"):
        await mem.add_chat_turn("", "x")


async def test_memory_is_scoped_to_the_session(session: ContextFactory) -> None:
    one = (await session("s1")).memory()
    two = (await session("s2")).memory()
    await one.record("k", "from one")
    await two.add_chat_turn("user", "from two")
    assert [e.data for e in await one.recent()] == ["from one"]
    assert await one.chat_history() == []
    assert [e.data for e in await two.recent()] == [{"role": "user", "content": "from two"}]


@pytest.mark.parametrize(
    ("data", "type_name"), [({1}, "set"), (object(), "object"), ({"k": b"v"}, "bytes")]
)
async def test_non_json_data_raises_type_error_naming_the_type(
    session: ContextFactory, data: Any, type_name: str
) -> None:
    mem = (await session()).memory()
    with pytest.raises(TypeError, match=f"memory data must be JSON-serialisable; got {type_name}"):
        await mem.record("bad", data)
    with pytest.raises(TypeError, match=f"got {type_name}"):
        await mem.add_chat_turn("user", data)
    assert await mem.recent() == []


async def test_bad_arguments_are_clear(session: ContextFactory) -> None:
    mem = (await session()).memory()
    with pytest.raises(TypeError, match="kind"):
        await mem.record("", 1)
    with pytest.raises(TypeError, match="list of str"):
        await mem.record("k", 1, tags="solo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must be"):
        await mem.recent(0)
    with pytest.raises(ValueError, match="limit"):
        await mem.query(limit=10**9)
    with pytest.raises(TypeError, match="since"):
        await mem.query(since="yesterday")  # type: ignore[arg-type]


async def test_events_survive_reopening_the_workspace(tmp_path: Path) -> None:
    first = RunManager(**workspace_runtime(tmp_path / "ws"))
    ctx = await build_adhoc_context(session_id="keep", run_manager=first)
    await ctx.memory().add_chat_turn("user", "remember me")
    await ctx.aclose()
    await first.close()
    second = RunManager(**workspace_runtime(tmp_path / "ws"))
    try:
        ctx = await build_adhoc_context(session_id="keep", run_manager=second)
        assert await ctx.memory().chat_history() == [{"role": "user", "content": "remember me"}]
        await ctx.aclose()
    finally:
        await second.close()
