"""context.channel() (issue 15): asks, the waiting status and its slots, answers,
timeouts, cancel, transcripts (durable), progress, %ag_answer, the console on a terminal."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ag_jupyter.runtime import (
    Ask,
    AskAnswerError,
    AskClosedError,
    AskNotFoundError,
    AskTimeoutError,
    AskUploadTooLargeError,
    GraphRegistry,
    RunManager,
    RunStatus,
    build_adhoc_context,
    graph_fn,
)
from ag_jupyter.runtime.defaults import workspace_runtime


async def until(predicate: Any, timeout_s: float = 5.0) -> Any:
    """Poll ``predicate()`` on the loop until it is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await asyncio.sleep(0.001)


async def open_ask(manager: RunManager, run_id: str | None = None, n: int = 1) -> list[Ask]:
    return await until(lambda: (a := manager.pending_asks(run_id)) and len(a) >= n and a)


def status(manager: RunManager, run_id: str) -> RunStatus:
    record = manager.find_record(run_id)
    assert record is not None
    return record.status


@pytest.fixture
def graphs(registry: GraphRegistry) -> GraphRegistry:
    @graph_fn("ask_name", registry=registry)
    async def ask_name(context):
        name = await context.channel().ask_text("What is your name?")
        await context.channel().send_text(f"Hello, {name}!")
        return {"name": name}

    @graph_fn("approve", registry=registry)
    async def approve(context, options: list[str] | None = None):
        if options is None:
            return dict(await context.channel().ask_approval("Ship it?"))
        return dict(await context.channel().ask_approval("Ship it?", options=options))

    @graph_fn("choose", registry=registry)
    async def choose(context):
        return dict(
            await context.channel().ask_choices(
                "Pick a colour",
                ["red", {"id": "g", "label": "Green", "aliases": ["verde"]}],
            )
        )

    @graph_fn("quick", registry=registry)
    async def quick(x: int = 1):
        return x

    @graph_fn("gate", registry=registry)
    async def gate(context):
        await context.channel().ask_text("go?")
        return "through"

    @graph_fn("timeout_ask", registry=registry)
    async def timeout_ask(context, timeout_s: float = 0.05, catch: bool = False):
        try:
            return await context.channel().ask_text("anyone?", timeout_s=timeout_s)
        except TimeoutError as exc:
            if not catch:
                raise
            return f"no answer ({type(exc).__name__})"

    @graph_fn("files", registry=registry)
    async def files(context, multiple: bool = True):
        return await context.channel().ask_files("Upload the data", multiple=multiple)

    return registry


# ----------------------------------------------------------------- the life of an ask
async def test_ask_makes_the_run_waiting_and_the_answer_makes_it_running_again(
    graphs: GraphRegistry,
):
    manager = RunManager(registry=graphs)
    seen: list[tuple[RunStatus, list[str] | None]] = []
    manager.subscribe(lambda ev: seen.append((ev.record.status, ev.record.meta.get("asks"))))
    record = await manager.submit_run("ask_name", inputs={})
    [ask] = await open_ask(manager)
    assert ask.run_id == record.run_id and ask.kind == "text"
    assert ask.prompt == "What is your name?" and ask.options == []
    assert ask.created_at.tzinfo is not None and ask.deadline is not None
    assert 3599 < (ask.deadline - ask.created_at).total_seconds() <= 3600
    live = manager.find_record(record.run_id)
    assert live.status is RunStatus.waiting and live.meta["asks"] == [ask.ask_id]
    reply = await manager.answer(ask.ask_id, "Ada")
    assert reply == {"text": "Ada"}
    final, outputs = await manager.wait_run(record.run_id, return_outputs=True)
    assert final.status is RunStatus.succeeded and outputs == {"name": "Ada"}
    assert "asks" not in final.meta and "answered_at" not in final.meta
    statuses = [s for s, _ in seen]
    assert statuses[:4] == [
        RunStatus.pending, RunStatus.running, RunStatus.waiting, RunStatus.running
    ]
    assert seen[2][1] == [ask.ask_id] and seen[3][1] is None
    assert manager.pending_asks() == []
    transcript = await manager.transcript(record.run_id)
    assert [(e["kind"], e["text"], e["ask_id"]) for e in transcript] == [
        ("ask", "What is your name?", ask.ask_id),
        ("answer", "Ada", ask.ask_id),
        ("sent", "Hello, Ada!", None),
    ]
    assert all(set(e) == {"kind", "text", "ask_id", "at"} for e in transcript)
    assert all(e["at"].endswith("+00:00") for e in transcript)
    await manager.close()


async def test_ask_approval_returns_a15s_dict_and_unpacks(graphs: GraphRegistry):
    manager = RunManager(registry=graphs)
    rid = (await manager.submit_run("approve", inputs={})).run_id
    [ask] = await open_ask(manager)
    assert ask.kind == "approval"
    assert ask.options == [
        {"id": "Approve", "label": "Approve"}, {"id": "Reject", "label": "Reject"}
    ]
    await manager.answer(ask.ask_id, "approve")  # a label, case-insensitively
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out == {"approved": True, "choice": "Approve", "choice_label": "Approve",
                   "text": "approve", "matched": True}

    rid = (await manager.submit_run("approve", inputs={"options": ["Yes", "No", "Defer"]})).run_id
    [ask] = await open_ask(manager)
    await manager.answer(ask.ask_id, {"choice": "No", "text": "too risky"})
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out == {"approved": False, "choice": "No", "choice_label": "No",
                   "text": "too risky", "matched": True}
    transcript = await manager.transcript(rid)
    assert transcript[-1]["text"] == "No: too risky"

    rid = (await manager.submit_run("approve", inputs={})).run_id
    [ask] = await open_ask(manager)
    await manager.answer(ask.ask_id, "maybe later")  # free text, as a15
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out == {"approved": False, "choice": None, "choice_label": None,
                   "text": "maybe later", "matched": False}

    # tuple unpacking, a15's _ChannelResult
    @graph_fn("unpack", registry=graphs)
    async def unpack(context):
        approved, choice, label, text, matched = await context.channel().ask_approval("ok?")
        return [approved, choice, label, text, matched]

    rid = (await manager.submit_run("unpack", inputs={})).run_id
    [ask] = await open_ask(manager)
    await manager.answer(ask.ask_id, "2")  # by number, as a15's console
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out == {"result": [False, "Reject", "Reject", "2", True]}
    await manager.close()


async def test_ask_choices_matches_ids_labels_aliases(graphs: GraphRegistry):
    manager = RunManager(registry=graphs)
    for value, choice in (("RED", "red"), ("verde", "g"), ({"choice": "Green"}, "g"),
                          ({"choice": "g"}, "g")):
        rid = (await manager.submit_run("choose", inputs={})).run_id
        [ask] = await open_ask(manager, rid)
        assert ask.kind == "choices" and ask.options[1] == {"id": "g", "label": "Green"}
        await manager.answer(ask.ask_id, value)
        _, out = await manager.wait_run(rid, return_outputs=True)
        assert out["choice"] == choice and out["matched"] is True
    await manager.close()


# ------------------------------------------------------------- slots while waiting
async def test_a_waiting_run_gives_its_slot_back_and_goes_ahead_of_never_started_runs(
    graphs: GraphRegistry,
):
    manager = RunManager(max_concurrency=1, registry=graphs)
    asker = (await manager.submit_run("gate", inputs={})).run_id
    [ask] = await open_ask(manager)
    assert status(manager, asker) is RunStatus.waiting and manager.active_count == 0

    # a second run starts and finishes while the first waits
    second = (await manager.submit_run("quick", inputs={"x": 2})).run_id
    assert (await manager.wait_run(second)).status is RunStatus.succeeded

    # a run holding the slot; one queued behind it that never started
    hold = asyncio.Event()

    @graph_fn("hold", registry=graphs)
    async def hold_graph():
        await hold.wait()
        return "held"

    holder = (await manager.submit_run("hold", inputs={})).run_id
    await until(lambda: status(manager, holder) is RunStatus.running)
    never_started = (await manager.submit_run("quick", inputs={"x": 3})).run_id
    assert status(manager, never_started) is RunStatus.pending

    await manager.answer(ask.ask_id, "yes")
    await asyncio.sleep(0.01)
    waiting = manager.find_record(asker)
    assert waiting.status is RunStatus.waiting  # answered, but no slot yet
    assert "answered_at" in waiting.meta and "asks" not in waiting.meta

    order: list[str] = []
    manager.subscribe(
        lambda ev: ev.record.status is RunStatus.running and order.append(ev.record.run_id)
    )
    hold.set()
    assert (await manager.wait_run(asker)).status is RunStatus.succeeded
    await manager.wait_run(never_started)
    assert order == [asker, never_started]  # the answered run first
    await manager.close()


async def test_eight_runs_waiting_for_a_person_do_not_stall_other_runs(graphs: GraphRegistry):
    manager = RunManager(max_concurrency=8, registry=graphs)
    askers = [(await manager.submit_run("gate", inputs={})).run_id for _ in range(8)]
    asks = await open_ask(manager, n=8)
    others = [(await manager.submit_run("quick", inputs={"x": i})).run_id for i in range(20)]
    for rid in others:
        assert (await manager.wait_run(rid, timeout_s=5)).status is RunStatus.succeeded
    for ask in asks:
        await manager.answer(ask.ask_id, "ok")
    for rid in askers:
        assert (await manager.wait_run(rid, timeout_s=5)).status is RunStatus.succeeded
    assert manager.active_count == 0
    await manager.close()


async def test_the_session_limiter_slot_is_given_back_too(graphs: GraphRegistry):
    manager = RunManager(max_concurrency=8, registry=graphs)
    manager.set_session_limit("s", 1)
    asker = (await manager.submit_run("gate", inputs={}, session_id="s")).run_id
    [ask] = await open_ask(manager)
    # the session's only slot is free while it waits: another run of the session runs
    other = (await manager.submit_run("quick", inputs={}, session_id="s")).run_id
    assert (await manager.wait_run(other, timeout_s=5)).status is RunStatus.succeeded

    hold = asyncio.Event()

    @graph_fn("hold_s", registry=graphs)
    async def hold_s():
        await hold.wait()

    holder = (await manager.submit_run("hold_s", inputs={}, session_id="s")).run_id
    await until(lambda: status(manager, holder) is RunStatus.running)
    queued = (await manager.submit_run("quick", inputs={}, session_id="s")).run_id
    await manager.answer(ask.ask_id, "go")
    await asyncio.sleep(0.01)
    assert status(manager, asker) is RunStatus.waiting  # the session slot is taken
    assert status(manager, queued) is RunStatus.pending
    order: list[str] = []
    manager.subscribe(
        lambda ev: ev.record.status is RunStatus.running and order.append(ev.record.run_id)
    )
    hold.set()
    await manager.wait_run(asker, timeout_s=5)
    await manager.wait_run(queued, timeout_s=5)
    assert order == [asker, queued]
    manager.release_session_limit("s")
    assert manager.session_limit("s") is None  # dropped once idle
    await manager.close()


async def test_an_answered_run_takes_a_session_slot_back_from_a_never_started_run(
    graphs: GraphRegistry,
):
    """Global slots full, a never-started run of the session holding the session's slot
    in the global queue: the answered run gets the slot first all the same."""
    manager = RunManager(max_concurrency=1, registry=graphs)
    manager.set_session_limit("s", 1)
    asker = (await manager.submit_run("gate", inputs={}, session_id="s")).run_id
    [ask] = await open_ask(manager)
    hold = asyncio.Event()

    @graph_fn("hold_g", registry=graphs)
    async def hold_g():
        await hold.wait()

    holder = (await manager.submit_run("hold_g", inputs={})).run_id  # the global slot
    await until(lambda: status(manager, holder) is RunStatus.running)
    queued = (await manager.submit_run("quick", inputs={}, session_id="s")).run_id
    assert status(manager, queued) is RunStatus.pending
    await manager.answer(ask.ask_id, "go")
    order: list[str] = []
    manager.subscribe(
        lambda ev: ev.record.status is RunStatus.running and order.append(ev.record.run_id)
    )
    hold.set()
    await manager.wait_run(queued, timeout_s=5)
    assert (await manager.wait_run(asker)).status is RunStatus.succeeded
    assert order == [asker, queued]
    await manager.close()


async def test_count_slot_false_runs_hold_no_slot_to_give_back(graphs: GraphRegistry):
    manager = RunManager(max_concurrency=1, registry=graphs)
    rid = (await manager.submit_run("gate", inputs={}, count_slot=False)).run_id
    [ask] = await open_ask(manager)
    assert status(manager, rid) is RunStatus.waiting and manager.active_count == 0
    await manager.answer(ask.ask_id, "x")
    assert (await manager.wait_run(rid)).status is RunStatus.succeeded
    assert manager.active_count == 0
    await manager.close()


# ---------------------------------------------------------------- timeouts, cancel
async def test_a_timeout_raises_in_the_run(graphs: GraphRegistry):
    manager = RunManager(registry=graphs)
    record = await manager.run_and_wait("timeout_ask", inputs={})
    final = record[0]
    assert final.status is RunStatus.failed
    assert final.error.startswith("AskTimeoutError: nobody answered ask ask-")
    assert "within 0.05 s" in final.error
    caught = await manager.run_and_wait("timeout_ask", inputs={"catch": True})
    assert caught[1] == {"result": "no answer (AskTimeoutError)"}
    assert issubclass(AskTimeoutError, TimeoutError)
    transcript = await manager.transcript(final.run_id)
    assert [e["kind"] for e in transcript] == ["ask", "timeout"]
    assert transcript[1]["text"] == "no answer within 0.05 s"
    ask_id = transcript[0]["ask_id"]
    with pytest.raises(AskClosedError, match="timed out") as raised:
        await manager.answer(ask_id, "late")
    assert raised.value.state == "timeout" and raised.value.run_id == final.run_id
    await manager.close()


async def test_cancelling_a_waiting_run_cancels_its_ask(graphs: GraphRegistry):
    manager = RunManager(max_concurrency=1, registry=graphs)
    rid = (await manager.submit_run("gate", inputs={})).run_id
    [ask] = await open_ask(manager)
    await manager.cancel_run(rid, reason="changed my mind")
    final = await manager.wait_run(rid)
    assert final.status is RunStatus.canceled
    assert manager.pending_asks() == [] and manager.active_count == 0
    transcript = await manager.transcript(rid)
    assert transcript[-1] == {
        "kind": "canceled", "text": "canceled: the run was canceled (changed my mind)",
        "ask_id": ask.ask_id, "at": transcript[-1]["at"],
    }
    with pytest.raises(AskClosedError, match="was canceled") as raised:
        await manager.answer(ask.ask_id, "too late")
    assert raised.value.state == "canceled"
    # the slot it gave back is not returned twice
    assert (await manager.run_and_wait("quick", inputs={}, count_slot=True))[0].status is (
        RunStatus.succeeded
    )
    assert manager.active_count == 0
    await manager.close()


async def test_cancelling_an_answered_run_waiting_for_its_slot(graphs: GraphRegistry):
    manager = RunManager(max_concurrency=1, registry=graphs)
    rid = (await manager.submit_run("gate", inputs={})).run_id
    [ask] = await open_ask(manager)
    hold = asyncio.Event()

    @graph_fn("hold_c", registry=graphs)
    async def hold_c():
        await hold.wait()

    holder = (await manager.submit_run("hold_c", inputs={})).run_id
    await until(lambda: status(manager, holder) is RunStatus.running)
    await manager.answer(ask.ask_id, "yes")
    await asyncio.sleep(0.01)
    assert status(manager, rid) is RunStatus.waiting
    await manager.cancel_run(rid)
    assert (await manager.wait_run(rid)).status is RunStatus.canceled
    hold.set()
    await manager.wait_run(holder)
    after = (await manager.submit_run("quick", inputs={})).run_id
    assert (await manager.wait_run(after, timeout_s=5)).status is RunStatus.succeeded
    assert manager.active_count == 0
    await manager.close()


async def test_a_body_that_bounds_an_ask_itself_goes_on_running(graphs: GraphRegistry):
    """asyncio.wait_for around an ask cancels the ask, not the run: it takes its slot back."""
    manager = RunManager(max_concurrency=1, registry=graphs)

    @graph_fn("own_timeout", registry=graphs)
    async def own_timeout(context):
        try:
            await asyncio.wait_for(context.channel().ask_text("quick?"), 0.05)
        except TimeoutError:
            pass
        await asyncio.sleep(0.01)
        return "went on"

    record, outputs, _, _ = await manager.run_and_wait("own_timeout", inputs={}, count_slot=True)
    assert record.status is RunStatus.succeeded and outputs == {"result": "went on"}
    transcript = await manager.transcript(record.run_id)
    assert [e["kind"] for e in transcript] == ["ask", "canceled"]
    assert transcript[1]["text"] == "canceled: the ask was cancelled"
    assert manager.active_count == 0
    await manager.close()


# --------------------------------------------------------------------- bad answers
async def test_bad_answers_raise_clear_errors_and_lose_nothing(graphs: GraphRegistry):
    manager = RunManager(registry=graphs)
    rid = (await manager.submit_run("approve", inputs={"options": ["Yes", "No"]})).run_id
    [ask] = await open_ask(manager)
    with pytest.raises(AskAnswerError, match=r"names no option.*'Yes', 'No'"):
        await manager.answer(ask.ask_id, {"choice": "Maybe"})
    with pytest.raises(AskAnswerError, match="answer with a str"):
        await manager.answer(ask.ask_id, 42)
    assert manager.pending_asks() == [ask]  # still open
    assert status(manager, rid) is RunStatus.waiting
    with pytest.raises(AskNotFoundError, match=rf"no open ask with id 'ask-nope'.*{ask.ask_id}"):
        await manager.answer("ask-nope", "Yes")
    with pytest.raises(TypeError):
        await manager.answer(None, "Yes")  # type: ignore[arg-type]
    await manager.answer(ask.ask_id, "Yes")
    with pytest.raises(AskClosedError, match=r"answered already.*'Yes'.*first answer wins"):
        await manager.answer(ask.ask_id, "No")
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out["approved"] is True
    transcript = await manager.transcript(rid)
    assert [e["kind"] for e in transcript] == ["ask", "answer"]
    with pytest.raises(AskAnswerError, match="asks for text"):
        rid2 = (await manager.submit_run("gate", inputs={})).run_id
        [ask2] = await open_ask(manager, rid2)
        await manager.answer(ask2.ask_id, {"files": []})
    await manager.answer(ask2.ask_id, "fine")
    await manager.wait_run(rid2)
    await manager.close()


async def test_answering_from_a_second_task_and_the_first_answer_wins(graphs: GraphRegistry):
    manager = RunManager(registry=graphs)
    rid = (await manager.submit_run("ask_name", inputs={})).run_id
    [ask] = await open_ask(manager, rid)

    async def answerer(name: str) -> str:
        await asyncio.sleep(0)
        try:
            await manager.answer(ask.ask_id, name)
            return "won"
        except AskClosedError:
            return "lost"

    results = await asyncio.gather(*(answerer(f"n{i}") for i in range(5)))
    assert sorted(results) == ["lost"] * 4 + ["won"]
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out["name"] == f"n{results.index('won')}"
    await manager.close()


async def test_a_hundred_concurrent_asks_answered_in_random_order(graphs: GraphRegistry):
    manager = RunManager(max_concurrency=4, registry=graphs)

    @graph_fn("echo", registry=graphs)
    async def echo(i: int, context):
        reply = await context.channel().ask_text(f"question {i}")
        return {"i": i, "reply": reply}

    run_ids = [(await manager.submit_run("echo", inputs={"i": i})).run_id for i in range(100)]
    asks = await open_ask(manager, n=100)  # 100 waiting with max_concurrency=4
    assert manager.active_count == 0
    random.Random(15).shuffle(asks)
    by_run = {a.run_id: a for a in asks}
    for ask in asks:
        await manager.answer(ask.ask_id, f"answer to {ask.prompt}")
    for i, rid in enumerate(run_ids):
        record, out = await manager.wait_run(rid, timeout_s=10, return_outputs=True)
        assert record.status is RunStatus.succeeded
        assert out == {"i": i, "reply": f"answer to question {i}"}
        assert by_run[rid].prompt == f"question {i}"
    assert manager.pending_asks() == [] and manager.active_count == 0
    await manager.close()


async def test_ag_docs_key_concepts_channels_interaction_md_L73_concurrent_asks(
    registry: GraphRegistry,
):
    """AetherGraph's docs/key-concepts/channels-interaction.md L73 (verbatim but for the
    registry): asyncio.gather of two asks on one channel session."""
    manager = RunManager(max_concurrency=1, registry=registry)

    @graph_fn(name="concurrent_asks", registry=registry)
    async def concurrent_asks(*, context):
        ch = context.channel()

        async def one(tag):
            name = await ch.ask_text(f"[{tag}] What’s your name?")
            await ch.send_text(f"[{tag}] Thanks, {name}!")
            return {tag: name}

        a, b = await asyncio.gather(one("A"), one("B"))
        return {"names": a | b}

    rid = (await manager.submit_run("concurrent_asks", inputs={})).run_id
    first, second = await open_ask(manager, n=2)
    assert manager.find_record(rid).meta["asks"] == [first.ask_id, second.ask_id]
    await manager.answer(second.ask_id, "Bea")
    await asyncio.sleep(0.01)
    record = manager.find_record(rid)
    assert record.status is RunStatus.waiting and record.meta["asks"] == [first.ask_id]
    await manager.answer(first.ask_id, "Al")
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out == {"names": {"A": "Al", "B": "Bea"}}
    assert manager.active_count == 0
    await manager.close()


# ------------------------------------------------------------------------ files
async def test_ask_files_saves_uploads_as_artifacts_of_the_run(
    graphs: GraphRegistry, tmp_path: Path
):
    manager = RunManager(registry=graphs, **workspace_runtime(tmp_path / "ws"))
    rid = (await manager.submit_run("files", inputs={})).run_id
    [ask] = await open_ask(manager)
    assert ask.kind == "files" and ask.multiple is True
    reply = await manager.answer(ask.ask_id, {
        "text": "here",
        "files": [
            {"name": "a.csv", "data": b"x,y\n1,2\n", "mime": "text/csv"},
            {"name": "b.bin", "data": base64.b64encode(b"\x00\x01").decode()},
        ],
    })
    record, out = await manager.wait_run(rid, return_outputs=True)
    assert record.status is RunStatus.succeeded
    assert out["text"] == "here" and [f["name"] for f in out["files"]] == ["a.csv", "b.bin"]
    first = out["files"][0]
    assert first["mimetype"] == "text/csv" and first["size"] == 8
    assert first["uri"].startswith("ag://artifacts/") and first["platform"] == "notebook"
    assert reply["files"] == out["files"]
    ctx = await build_adhoc_context(run_id=rid, run_manager=manager)
    assert await ctx.artifacts().load_bytes(first["uri"]) == b"x,y\n1,2\n"
    saved = await ctx.artifacts().list(kind="upload", include_node=False)
    assert {a.name for a in saved} == {"a.csv", "b.bin"}
    transcript = await manager.transcript(rid)
    assert transcript[-1]["text"] == "here | files: a.csv, b.bin"
    await ctx.aclose()
    await manager.close()


async def test_uploads_past_the_caps_are_refused_and_the_ask_stays_open(
    graphs: GraphRegistry, tmp_path: Path
):
    from ag_jupyter.runtime.services.channel import MAX_UPLOAD_FILE_BYTES

    manager = RunManager(registry=graphs, **workspace_runtime(tmp_path / "ws"))
    rid = (await manager.submit_run("files", inputs={"multiple": False})).run_id
    [ask] = await open_ask(manager)
    big = b"\0" * (MAX_UPLOAD_FILE_BYTES + 1)
    with pytest.raises(AskUploadTooLargeError, match="capped at 10 MiB per file and 20 MiB"):
        await manager.answer(ask.ask_id, {"files": [{"name": "big.bin", "data": big}]})
    with pytest.raises(AskUploadTooLargeError, match="10 MiB"):
        await manager.answer(ask.ask_id, {"files": [
            {"name": "big.b64", "data": base64.b64encode(big).decode()}]})
    with pytest.raises(AskAnswerError, match="takes one file"):
        await manager.answer(ask.ask_id, {"files": [{"name": "a", "data": b"1"},
                                                    {"name": "b", "data": b"2"}]})
    with pytest.raises(AskAnswerError, match="not valid base64"):
        await manager.answer(ask.ask_id, {"files": [{"name": "a", "data": "%%%"}]})
    assert manager.pending_asks() == [ask]
    await manager.answer(ask.ask_id, "no file after all")
    _, out = await manager.wait_run(rid, return_outputs=True)
    assert out == {"text": "no file after all", "files": []}
    await manager.close()


# -------------------------------------------------------------- memory and sending
async def test_asks_log_prompt_and_reply_to_memory_as_chat_turns(tmp_path: Path):
    manager = RunManager(**workspace_runtime(tmp_path / "ws"))
    told: list[tuple[str, str]] = []
    manager.asks.subscribe(lambda event, ask: told.append((event, ask.prompt)))
    ctx = await build_adhoc_context(session_id="chat", run_manager=manager)
    task = asyncio.ensure_future(ctx.channel().ask_text("Your name?", memory_tags=["intro"]))
    [ask] = await open_ask(manager)
    assert ask.run_id == ctx.run_id
    manager.answer_nowait(ask.ask_id, "Grace")
    assert await task == "Grace"
    assert told == [("opened", "Your name?"), ("closed", "Your name?")]  # no run record
    quiet = asyncio.ensure_future(ctx.channel().ask_text(
        "Secret?", memory_log_prompt=False, memory_log_reply=False))
    [ask] = await open_ask(manager)
    manager.answer_nowait(ask.ask_id, "hush")
    assert await quiet == "hush"
    await ctx.channel().send_text("Noted.")
    turns = await ctx.memory().recent_chat(limit=10)
    texts = [(t["role"], t["text"]) for t in turns] if isinstance(turns[0], dict) else [
        (t.stage, t.text) for t in turns]
    assert ("assistant", "Your name?") in texts and ("user", "Grace") in texts
    assert ("assistant", "Noted.") in texts
    assert all("Secret" not in text and text != "hush" for _, text in texts)
    events = await ctx.memory().recent(kinds=["chat.turn"], limit=10)
    prompt = next(e for e in events if e.text == "Your name?")
    assert {"chat", "channel:notebook:panel", "intro", "ask_text", "prompt"} <= set(prompt.tags)
    await ctx.aclose()
    await manager.close()


async def test_transcript_keeps_text_exactly_as_given(registry: GraphRegistry):
    manager = RunManager(registry=registry)
    xss = '<img src=x onerror="alert(1)"> & \u2028 \U0001F680'

    @graph_fn("xss", registry=registry)
    async def xss_graph(context):
        await context.channel().send_text(xss)
        return await context.channel().ask_text(xss)

    rid = (await manager.submit_run("xss", inputs={})).run_id
    [ask] = await open_ask(manager)
    assert ask.prompt == xss
    await manager.answer(ask.ask_id, xss)
    await manager.wait_run(rid)
    assert [e["text"] for e in await manager.transcript(rid)] == [xss, xss, xss]
    await manager.close()


async def test_progress_and_phase_go_on_the_record_coalesced(registry: GraphRegistry):
    manager = RunManager(registry=registry)
    changes: list[dict[str, Any] | None] = []
    manager.subscribe(lambda ev: changes.append(ev.record.meta.get("progress")))

    @graph_fn("progress", registry=registry)
    async def progress_graph(context):
        ch = context.channel()
        async with ch.progress(title="Training", total=1000) as p:
            for _ in range(1000):
                await p.update(inc=1, eta_seconds=3.5, subtitle="epoch 1")
            mid = dict(context.manager.find_record(context.run_id).meta["progress"])
            await p.end(subtitle="all done")
        await ch.send_phase("evaluate", "active", label="Evaluating")
        return mid

    @graph_fn("no_progress", registry=registry)
    async def no_progress():
        return 1

    record, mid, _, _ = await manager.run_and_wait("progress", inputs={})
    assert mid["current"] == 1000 and mid["percent"] == 100.0 and mid["eta_seconds"] == 3.5
    final = record.meta["progress"]
    assert set(final) == {"title", "current", "total", "percent", "eta_seconds", "subtitle",
                          "phase", "status", "updated_at"}
    assert final["title"] == "Training" and final["current"] == 1000 and final["total"] == 1000
    assert final["subtitle"] == "all done" and final["phase"] == "Evaluating"
    assert final["status"] == "active"
    emitted = [c for c in changes if c is not None]
    assert len(emitted) < 30  # 1000 updates in well under a second: coalesced
    assert any(c["subtitle"] == "all done" and c["status"] == "done" for c in emitted)
    quiet, _, _, _ = await manager.run_and_wait("no_progress", inputs={})
    assert "progress" not in quiet.meta  # never a fake bar
    await manager.close()


async def test_percent_without_total_and_none_without_either(registry: GraphRegistry):
    manager = RunManager(registry=registry)

    @graph_fn("pct", registry=registry)
    async def pct(context):
        seen = []
        async with context.channel().progress(title="Fetch") as p:
            seen.append(context.manager.find_record(context.run_id).meta["progress"]["percent"])
            await p.update(percent=0.25)
            seen.append(context.manager.find_record(context.run_id).meta["progress"]["percent"])
        return seen

    _, out, _, _ = await manager.run_and_wait("pct", inputs={})
    assert out == {"result": [None, 25.0]}
    await manager.close()


# ------------------------------------------------------------------- adapters
async def test_register_channel_adapter_routes_a_prefix_and_answers_inline(
    registry: GraphRegistry,
):
    from ag_jupyter.runtime import (
        get_channel_service,
        register_channel_adapter,
        set_channel_alias,
    )

    class Inline:
        capabilities: ClassVar[set[str]] = {"text", "input", "buttons"}

        def __init__(self) -> None:
            self.events: list[Any] = []

        async def send(self, event):
            self.events.append(event)
            if event.type == "session.need_input":
                return {"payload": {"text": "from the adapter"}}
            return None

    adapter = Inline()
    register_channel_adapter("inline", adapter)
    set_channel_alias("ops", "inline:room/1")
    try:
        manager = RunManager(registry=registry)

        @graph_fn("via_adapter", registry=registry)
        async def via_adapter(context):
            ch = context.channel("ops")
            await ch.send_text("hello")
            return await ch.ask_text("who?")

        _, out, _, _ = await manager.run_and_wait("via_adapter", inputs={})
        assert out == {"result": "from the adapter"}
        assert [e.type for e in adapter.events] == ["agent.message", "session.need_input"]
        assert adapter.events[0].channel == "inline:room/1"
        assert adapter.events[1].meta["ask_id"].startswith("ask-")
        with pytest.raises(RuntimeError, match="no channel adapter for prefix 'nowhere'"):
            set_channel_alias("x", "nowhere:1")

        @graph_fn("slack", registry=registry)
        async def slack(context):
            await context.channel("slack:team/T:chan/C").send_text("hi")

        rec, _, _, _ = await manager.run_and_wait("slack", inputs={})
        assert "ServiceNotConfiguredError: no channel adapter for 'slack:team/T:chan/C'" in (
            rec.error
        )
        await manager.close()
    finally:
        bus = get_channel_service()
        bus.adapters.pop("inline", None)
        bus.channel_aliases.pop("ops", None)


async def test_file_channel_appends_under_the_workspace(registry: GraphRegistry, tmp_path: Path):
    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))

    @graph_fn("file_log", registry=registry)
    async def file_log(context):
        await context.channel("file:logs/exp.txt").send_text("Run began")
        await context.channel("file:logs/exp.txt").send_text("acc=0.93")

    @graph_fn("escape", registry=registry)
    async def escape(context):
        await context.channel("file:../../outside.txt").send_text("no")

    await manager.run_and_wait("file_log", inputs={})
    lines = (tmp_path / "ws" / "channel_files" / "logs" / "exp.txt").read_text().splitlines()
    assert lines[0].endswith("agent.message: Run began") and "acc=0.93" in lines[2]
    rec, _, _, _ = await manager.run_and_wait("escape", inputs={})
    assert rec.status is RunStatus.failed and "leaves the channel folder" in rec.error
    assert not (tmp_path / "outside.txt").exists()
    await manager.close()


# ------------------------------------------------------------ transcript durability
KILLED_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from ag_jupyter.runtime import RunManager, graph_fn
    from ag_jupyter.runtime.defaults import workspace_runtime

    @graph_fn("asker")
    async def asker(context):
        await context.channel().send_text("about to ask")
        return await context.channel().ask_text("still there?")

    async def main():
        m = RunManager(**workspace_runtime(sys.argv[1]))
        rec = await m.submit_run("asker", inputs={}, run_id="run-killed")
        while not m.pending_asks():
            await asyncio.sleep(0.01)
        await m.store.flush()
        await asyncio.sleep(0.3)  # the transcript rows are committed with the next batch
        print("asked", flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


async def test_transcript_after_a_restart_and_an_ask_left_open_by_a_killed_process(
    graphs: GraphRegistry, tmp_path: Path
):
    ws = tmp_path / "ws"
    first = RunManager(registry=graphs, **workspace_runtime(ws))
    rid = (await first.submit_run("ask_name", inputs={})).run_id
    [ask] = await open_ask(first)
    await first.answer(ask.ask_id, "Lin")
    await first.wait_run(rid)
    await first.close()
    second = RunManager(registry=graphs, **workspace_runtime(ws))
    assert [e["kind"] for e in await second.transcript(rid)] == ["ask", "answer", "sent"]
    await second.close()

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_SCRIPT, str(ws), stdout=subprocess.PIPE
    )
    lines = []
    while not lines or lines[-1] != b"asked":
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 30)).strip())
    assert lines == [b"[console] agent.message :: about to ask", b"asked"]
    os.kill(proc.pid, signal.SIGKILL)
    await proc.wait()
    third = RunManager(registry=graphs, **workspace_runtime(ws))
    entries = await third.transcript("run-killed")
    assert [e["kind"] for e in entries] == ["sent", "ask", "canceled"]
    assert entries[1]["text"] == "still there?"
    assert entries[2]["text"].startswith("interrupted")
    assert entries[2]["ask_id"] == entries[1]["ask_id"]
    record = await third.get_record("run-killed")
    assert record.status is RunStatus.failed and record.meta.get("interrupted") is True
    await third.close()
    fourth = RunManager(registry=graphs, **workspace_runtime(ws))  # marked only once
    assert [e["kind"] for e in await fourth.transcript("run-killed")] == [
        "sent", "ask", "canceled"]
    await fourth.close()


async def test_a_second_live_process_keeps_its_asks_open(graphs: GraphRegistry, tmp_path: Path):
    """Opening the workspace again while the asking process lives marks nothing."""
    ws = tmp_path / "ws"
    first = RunManager(registry=graphs, **workspace_runtime(ws))
    rid = (await first.submit_run("gate", inputs={})).run_id
    [ask] = await open_ask(first)
    await first.store.flush()
    await asyncio.sleep(0.2)
    other = RunManager(registry=graphs, **workspace_runtime(ws))
    assert [e["kind"] for e in await other.transcript(rid)] == ["ask"]
    await other.close()
    await first.answer(ask.ask_id, "ok")
    await first.wait_run(rid)
    assert [e["kind"] for e in await first.transcript(rid)] == ["ask", "answer"]
    await first.close()


async def test_prune_removes_transcripts(graphs: GraphRegistry, tmp_path: Path):
    manager = RunManager(registry=graphs, **workspace_runtime(tmp_path / "ws"))
    rid = (await manager.submit_run("ask_name", inputs={})).run_id
    [ask] = await open_ask(manager)
    await manager.answer(ask.ask_id, "Kai")
    await manager.wait_run(rid)
    await manager.store.flush()
    await asyncio.sleep(0.2)
    await manager.prune(keep_last=0)
    assert await manager.transcript(rid) == []
    await manager.close()


# --------------------------------------------------------------- %ag_answer in IPython
@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    from ag_jupyter.runtime import default_registry

    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance()
    sh.run_line_magic("config", "AgJupyter.workspace = 'memory'")
    sh.run_line_magic("load_ext", "ag_jupyter")
    sh.run_cell(
        "import asyncio\n"
        "from ag_jupyter import graph_fn, get_run_manager\n"
        "@graph_fn('hitl_name')\n"
        "async def hitl_name(context):\n"
        "    return await context.channel().ask_text('Your name?')\n"
        "@graph_fn('hitl_two')\n"
        "async def hitl_two(context):\n"
        "    ch = context.channel()\n"
        "    a, b = await asyncio.gather(ch.ask_text('first?'), ch.ask_approval('second?'))\n"
        "    return [a, b['choice']]\n"
    )
    yield sh
    sh.run_line_magic("unload_ext", "ag_jupyter")
    for name in ("hitl_name", "hitl_two"):
        default_registry.unregister(name)
    InteractiveShell.clear_instance()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ag_answer_in_terminal_ipython(shell, capsys):
    from IPython.core.error import UsageError

    cell = shell.run_cell(
        "%%ag_session\n"
        "rid = await context.runner().spawn_run('hitl_name', inputs={})\n"
        "two = await context.runner().spawn_run('hitl_two', inputs={})\n"
        "await asyncio.sleep(0.1)\n"
    )
    assert cell.error_in_exec is None
    rid, two = shell.user_ns["rid"], shell.user_ns["two"]
    capsys.readouterr()
    shell.run_line_magic("ag_answer", "")
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 3 and any("'Your name?'" in ln and f"run={rid}" in ln for ln in listed)
    assert any("[approval]" in ln and "options: Approve, Reject" in ln for ln in listed)
    with pytest.raises(UsageError, match=rf"run {two} has 2 open asks; answer one by its ask"):
        shell.run_line_magic("ag_answer", f"{two} yes")
    with pytest.raises(UsageError, match="no open ask with id 'nope'"):
        shell.run_line_magic("ag_answer", "nope hello")
    with pytest.raises(UsageError, match="needs the answer"):
        shell.run_line_magic("ag_answer", rid)
    shell.run_line_magic("ag_answer", f"{rid} Ada  Lovelace ")
    assert f"(run {rid}): answered 'Ada  Lovelace'" in capsys.readouterr().out
    with pytest.raises(UsageError, match=f"run {rid} has no open ask"):
        shell.run_line_magic("ag_answer", f"{rid} again")
    from ag_jupyter.runtime import get_run_manager

    async def get() -> RunManager:
        return get_run_manager()

    first, second = shell.loop_runner(get()).pending_asks(two)
    shell.run_line_magic("ag_answer", f"{second.ask_id} 1")
    assert "-> Approve" in capsys.readouterr().out
    shell.run_line_magic("ag_answer", f"{first.ask_id} \"\"")
    with pytest.raises(UsageError, match="answered already"):
        shell.run_line_magic("ag_answer", f"{first.ask_id} late")
    cell = shell.run_cell(
        "rec, out = await get_run_manager().wait_run(rid, return_outputs=True)\n"
        "rec2, out2 = await get_run_manager().wait_run(two, return_outputs=True)\n"
    )
    assert cell.error_in_exec is None
    assert shell.user_ns["out"] == {"result": "Ada  Lovelace"}
    assert shell.user_ns["out2"] == {"result": ["", "Approve"]}


# ------------------------------------------------------- the console on a terminal
CONSOLE_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from ag_jupyter import graph_fn
    from ag_jupyter.runtime import get_run_manager

    @graph_fn("console_demo")
    async def console_demo(context):
        ch = context.channel()
        await ch.send_text("Starting demo")
        name = await ch.ask_text("Your name?")
        res = await ch.ask_approval("Deploy?", options=["Yes", "No"])
        other = await ch.ask_text("Answered elsewhere?")
        last = await ch.ask_text("Last one?")
        await ch.send_text(f"Nice to meet you, {name}!")
        return [name, res["approved"], other, last]

    async def answer_elsewhere(m):
        while True:
            asks = [a for a in m.pending_asks() if a.prompt == "Answered elsewhere?"]
            if asks:
                await asyncio.sleep(0.2)
                await m.answer(asks[0].ask_id, "from the panel")
                return
            await asyncio.sleep(0.01)

    async def main():
        m = get_run_manager()
        helper = asyncio.ensure_future(answer_elsewhere(m))
        rec, out, _, _ = await m.run_and_wait("console_demo", inputs={})
        await helper
        print("RESULT", rec.status.value, out["result"], flush=True)

    asyncio.run(main())
    """
)


def test_the_console_channel_prompts_on_a_terminal_and_the_first_answer_wins(tmp_path: Path):
    import select

    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSOLE_SCRIPT],
        stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=tmp_path,
        env={**os.environ, "AG_WORKSPACE": str(tmp_path / "ws")},
    )
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout_s: float = 30.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout_s
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                raise AssertionError(f"{marker!r} not seen; got {seen!r}")
            ready, _, _ = select.select([master], [], [], left)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break

    try:
        read_until(b"Your name? ")
        os.write(master, b"Ada\n")
        read_until(b"Reply with number or label: ")
        assert b"  1. Yes" in seen and b"  2. No" in seen
        os.write(master, b"1\n")
        read_until(b"Answered elsewhere? ")
        read_until(b"Last one? ")  # answered through manager.answer: the prompt moved on
        os.write(master, b"\n")  # an empty line is ignored (the prompt is shown again)
        os.write(master, b"done\n")
        read_until(b"'done']")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = seen.decode()
    assert "[console] agent.message :: Starting demo" in text
    assert "[console] agent.message :: Nice to meet you, Ada!" in text
    assert "RESULT succeeded ['Ada', True, 'from the panel', 'done']" in text, text
    assert "Answered elsewhere? \r\nLast one? " in text
    assert proc.returncode == 0, proc.stderr.read().decode()


# ============================================ AetherGraph's documented channel examples
# From AIperture/aethergraph-docs at HEAD, each test named after its file and the line
# its code block starts on; the example lines are verbatim (``aethergraph`` ->
# ``ag_jupyter`` in imports) between ``# --- example`` and ``# --- end``. A person's
# answers come from a helper task through ``manager.answer`` (what the panel does).
# Blocks that cannot run here, and why, are listed in the README ("Human in the loop").


@pytest.fixture
def answers():
    """``answers({"prompt part": value, ...})``: answer every ask whose prompt contains a
    key with its value as soon as it opens (on the loop's default manager)."""
    from ag_jupyter.runtime import get_run_manager

    tasks: list[asyncio.Task[None]] = []
    answered: list[Ask] = []

    def start(mapping: dict[str, Any]) -> list[Ask]:
        async def person() -> None:
            manager = get_run_manager()
            done: set[str] = set()
            while True:
                for ask in manager.pending_asks():
                    if ask.ask_id in done:
                        continue
                    for part, value in mapping.items():
                        if part in ask.prompt:
                            done.add(ask.ask_id)
                            answered.append(ask)
                            await manager.answer(ask.ask_id, value)
                            break
                await asyncio.sleep(0.002)

        tasks.append(asyncio.ensure_future(person()))
        return answered

    yield start
    for task in tasks:
        task.cancel()


async def sent(run_id: str) -> list[str]:
    from ag_jupyter.runtime import get_run_manager

    return [e["text"] for e in await get_run_manager().transcript(run_id) if e["kind"] == "sent"]


async def last_run(graph_id: str) -> Any:
    from ag_jupyter.runtime import get_run_manager

    [record] = await get_run_manager().list_records(graph_id=graph_id, limit=1)
    return record


@pytest.fixture
def _fresh_graphs():
    from ag_jupyter.runtime import default_registry

    before = set(default_registry.names())
    yield
    for name in set(default_registry.names()) - before:
        default_registry.unregister(name)


pytestmark_docs = pytest.mark.usefixtures("_fresh_graphs")


@pytestmark_docs
async def test_ag_docs_examples_channel_md_L11_getting_a_channel():
    from ag_jupyter import open_session
    from ag_jupyter.runtime import ChannelSession

    async with open_session() as context:
        # --- example (docs/examples/channel.md:11)
        chan = context.channel()                # default channel (often console or a default chat)
        chan_slack = context.channel("slack:team/T:chan/C")
        chan_file  = context.channel("file:runs/demo.log")
        # --- end
        assert all(isinstance(c, ChannelSession) for c in (chan, chan_slack, chan_file))
        await chan.send_text("hi")
        await chan_file.send_text("to the file")
        with pytest.raises(RuntimeError, match="register_channel_adapter\\('slack'"):
            await chan_slack.send_text("no Slack adapter here")


@pytestmark_docs
async def test_ag_docs_examples_channel_md_L53_ask_text(answers):
    from ag_jupyter import open_session

    answers({"What is your name?": "Ada"})
    async with open_session() as context:
        chan = context.channel()
        # --- example (docs/examples/channel.md:53)
        name = await context.channel().ask_text("What is your name?")
        await context.channel().send_text(f"Nice to meet you, {name}!")
        # --- end
        assert name == "Ada"
        assert await sent(context.run_id) == ["Nice to meet you, Ada!"]
        del chan


@pytestmark_docs
@pytest.mark.parametrize(("reply", "said"), [("Approve", "Deployment approved ✅"),
                                             ("Reject", "Deployment cancelled ❌")])
async def test_ag_docs_examples_channel_md_L80_ask_approval(answers, reply, said):
    from ag_jupyter import open_session

    answers({"Deploy the model": reply})
    async with open_session() as context:
        # --- example (docs/examples/channel.md:80)
        res = await context.channel().ask_approval(
            "Deploy the model to production?",
            options=["Approve", "Reject"],
        )

        if res["approved"]:
            await context.channel().send_text("Deployment approved ✅")
        else:
            await context.channel().send_text("Deployment cancelled ❌")
        # --- end
        assert await sent(context.run_id) == [said]


@pytestmark_docs
async def test_ag_docs_examples_channel_md_L176_train_with_progress():
    from ag_jupyter import NodeContext, graph_fn

    # --- example (docs/examples/channel.md:176)
    @graph_fn(name="train_with_progress")
    async def train_with_progress(*, context: NodeContext):
        await context.channel().send_text("Training started ⏳")

        total_steps = 5
        for step in range(1, total_steps + 1):
            # Do some work here...
            await context.channel().send_text(f"Progress: {step}/{total_steps}")

        await context.channel().send_text("Training finished ✅")
    # --- end
    await train_with_progress()
    record = await last_run("train_with_progress")
    assert record.status is RunStatus.succeeded
    assert await sent(record.run_id) == [
        "Training started ⏳", *(f"Progress: {i}/5" for i in range(1, 6)), "Training finished ✅"
    ]


@pytestmark_docs
async def test_ag_docs_examples_channel_md_L195_simple_run(answers):
    from ag_jupyter.runtime import get_run_manager

    answers({"What should we name this experiment?": "exp-42"})
    # --- example (docs/examples/channel.md:195)
    from ag_jupyter import graph_fn, NodeContext  # noqa: I001

    @graph_fn(name="simple_run")
    async def simple_run(*, context: NodeContext):
        # 1) Notify in the default channel
        await context.channel().send_text("Run started 🚀")

        # 2) Ask the user a question (console/Slack/Telegram)
        name = await context.channel().ask_text("What should we name this experiment?")

        # 3) Log the name to a file channel
        await context.channel("file:runs/experiment_names.log").send_text(name)

        # 4) Optionally notify an external system via webhook
        # await context.channel("webhook:https://hooks.zapier.com/hooks/catch/.../").send_text(
        #     f"New experiment: {name}"
        # )

        await context.channel().send_text(f"All set, {name} ✅")
        return {"experiment_name": name}
    # --- end
    assert await simple_run() == {"experiment_name": "exp-42"}
    record = await last_run("simple_run")
    transcript = await get_run_manager().transcript(record.run_id)
    assert [e["kind"] for e in transcript] == ["sent", "ask", "answer", "sent", "sent"]
    folder = Path(get_run_manager().store.workspace.path) / "channel_files"
    assert "agent.message: exp-42" in (folder / "runs" / "experiment_names.log").read_text()


@pytestmark_docs
@pytest.mark.parametrize(("reply", "ok"), [("Yes", True), ("No", False)])
async def test_ag_docs_tutorials_t3_talk_to_your_graph_channels_waits_md_L72_cooperative_wait(
    answers, reply, ok
):
    answers({"Continue?": reply})
    # --- example (docs/tutorials/t3-talk-to-your-graph-channels-waits.md:72)
    from ag_jupyter import graph_fn

    @graph_fn(name="cooperative_wait")
    async def cooperative_wait(*, context):
        ch = context.channel()
        await ch.send_text("Processing...")
        ans = await ch.ask_approval("Continue?", options=["Yes", "No"])
        if ans["approved"]:
            await ch.send_text("✅ Proceeding.")
        else:
            await ch.send_text("❌ Stopped.")
        return {"ok": ans["approved"]}
    # --- end
    assert await cooperative_wait() == {"ok": ok}


@pytestmark_docs
async def test_ag_docs_tutorials_t3_talk_to_your_graph_channels_waits_md_L13_greet(answers):
    answers({"Your name?": "Grace"})
    # --- example (docs/tutorials/t3-talk-to-your-graph-channels-waits.md:13)
    from ag_jupyter import graph_fn

    @graph_fn(name="greet")
    async def greet(*, context):
        ch = context.channel()
        await ch.send_text("Starting demo…")
        name = await ch.ask_text("Your name?")    # cooperative wait
        await ch.send_text(f"Nice to meet you, {name}!")
        return {"user": name}
    # --- end
    assert await greet() == {"user": "Grace"}
    record = await last_run("greet")
    assert await sent(record.run_id) == ["Starting demo…", "Nice to meet you, Grace!"]


@pytestmark_docs
async def test_ag_docs_key_concepts_channels_interaction_md_L33_channel_demo(answers):
    answers({"Proceed?": "yes"})
    # --- example (docs/key-concepts/channels-interaction.md:33)
    from ag_jupyter import graph_fn

    @graph_fn(name="channel_demo")
    async def channel_demo(*, context):
        ch = context.channel()
        await ch.send_text("Starting experiment…")
        resp = await ch.ask_approval("Proceed?", options=["Yes", "No"])
        if resp["approved"]:
            await ch.send_text("✅ Launching run.")
    # --- end
    await channel_demo()
    record = await last_run("channel_demo")
    assert await sent(record.run_id) == ["Starting experiment…", "✅ Launching run."]


@pytestmark_docs
async def test_ag_docs_key_concepts_event_driven_waits_md_L20_cooperative_demo(answers):
    answers({"Your name?": "Lin"})
    # --- example (docs/key-concepts/event-driven-waits.md:20)
    from ag_jupyter import graph_fn

    @graph_fn(name="cooperative_demo", outputs=["msg"])
    async def cooperative_demo(*, context):
        name = await context.channel().ask_text("Your name?")
        await context.channel().send_text(f"Hi, {name}!")
        return {"msg": f"greeted:{name}"}
    # --- end
    assert await cooperative_demo() == {"msg": "greeted:Lin"}


@pytestmark_docs
async def test_ag_docs_channel_setup_console_setup_md_L13_L40_L56(answers):
    from ag_jupyter import open_session

    answers({"What is your name?": "Kai"})
    async with open_session() as context:
        # --- example (docs/channel-setup/console-setup.md:13)
        # Default: uses console if no other channel is configured
        await context.channel().send_text("Hello from AetherGraph 👋")

        # Explicit reference
        chan = context.channel("console:stdin")
        await chan.send_text("This goes to the terminal")
        # --- end
        # --- example (docs/channel-setup/console-setup.md:40)
        await context.channel().send_text("Hello 👋")
        # --- end
        # --- example (docs/channel-setup/console-setup.md:56)
        name = await context.channel().ask_text("What is your name?")
        await context.channel().send_text(f"Nice to meet you, {name}!")
        # --- end
        assert await sent(context.run_id) == [
            "Hello from AetherGraph 👋", "This goes to the terminal", "Hello 👋",
            "Nice to meet you, Kai!",
        ]


@pytestmark_docs
async def test_ag_docs_channel_setup_file_setup_md_L32_and_L49():
    from ag_jupyter import open_session
    from ag_jupyter.runtime import get_run_manager

    async with open_session() as context:
        # --- example (docs/channel-setup/file-setup.md:32)
        chan = context.channel("file:runs/demo_run.log")
        await chan.send_text("Demo run started")
        # --- end
    # --- example (docs/channel-setup/file-setup.md:49)
    from ag_jupyter import graph_fn, NodeContext  # noqa: I001

    @graph_fn(name="file_channel_demo")
    async def file_channel_demo(*, context: NodeContext):
        chan = context.channel("file:logs/experiment_01.txt")
        await chan.send_text("Run began")
        await chan.send_text("Metric: acc=0.93, loss=0.12")
        return {"logged": True}
    # --- end
    assert await file_channel_demo() == {"logged": True}
    folder = Path(get_run_manager().store.workspace.path) / "channel_files"
    assert "Demo run started" in (folder / "runs" / "demo_run.log").read_text()
    text = (folder / "logs" / "experiment_01.txt").read_text()
    assert "agent.message: Run began" in text and "acc=0.93, loss=0.12" in text


@pytestmark_docs
async def test_ag_docs_channel_setup_introduction_md_L63_needs_slack_and_webhook_adapters():
    """Console and file lines run; Slack and webhook need adapters
    (``register_channel_adapter``), which the test registers after the first try."""
    from ag_jupyter import open_session
    from ag_jupyter.runtime import get_channel_service, register_channel_adapter

    # --- example (docs/channel-setup/introduction.md:63)
    async def run_with_notifications(context):
        await context.channel("console:stdin").send_text("Run started")
        await context.channel("file:runs/exp_01.log").send_text("Run started")
        await context.channel("slack:team/T:chan/C").send_text("Run started (Slack)")
        await context.channel("webhook:https://hooks.zapier.com/hooks/catch/.../").send_text("Run started (Webhook)")  # noqa: E501
    # --- end

    class Collect:
        capabilities: ClassVar[set[str]] = {"text"}

        def __init__(self) -> None:
            self.texts: list[str] = []

        async def send(self, event):
            self.texts.append(event.text)

    async with open_session() as context:
        with pytest.raises(RuntimeError, match="no channel adapter for 'slack:team/T:chan/C'"):
            await run_with_notifications(context)
        slack, hook = Collect(), Collect()
        register_channel_adapter("slack", slack)
        register_channel_adapter("webhook", hook)
        try:
            await run_with_notifications(context)
        finally:
            get_channel_service().adapters.pop("slack")
            get_channel_service().adapters.pop("webhook")
    assert slack.texts == ["Run started (Slack)"] and hook.texts == ["Run started (Webhook)"]


@pytestmark_docs
async def test_ag_docs_key_concepts_context_services_md_L26_hello_context():
    # --- example (docs/key-concepts/context-services.md:26)
    from ag_jupyter import graph_fn

    @graph_fn(name="hello_context")
    async def hello_context(*, context):
        await context.channel().send_text("Hello from AetherGraph!")
        await context.memory().record(
            kind="chat_data",
            data={"message": "Hello from AetherGraph!"},
        ) # remember key events
        context.logger().info("finished", extra={"stage": "done"})
        return {"ok": True}
    # --- end
    assert await hello_context() == {"ok": True}
    assert await sent((await last_run("hello_context")).run_id) == ["Hello from AetherGraph!"]


@pytestmark_docs
async def test_ag_docs_key_concepts_context_services_md_L117_ask_then_send_a_str(answers):
    """``send(f"...")`` with a str: a15 raises AttributeError; here it is send_text."""
    from ag_jupyter import open_session

    answers({"Provide a dataset path": "/data/x.csv"})
    async with open_session() as context:
        # --- example (docs/key-concepts/context-services.md:117)
        text = await context.channel().ask_text("Provide a dataset path")
        # wait for external input and resume when done
        await context.channel().send(f"you provided the dataset path {text}")
        # --- end
        assert await sent(context.run_id) == ["you provided the dataset path /data/x.csv"]


@pytestmark_docs
async def test_ag_docs_key_concepts_concurrency_orchestration_md_L13_batch_agent():
    # --- example (docs/key-concepts/concurrency-orchestration.md:13)
    import asyncio  # noqa: I001
    from ag_jupyter import graph_fn

    sem = asyncio.Semaphore(4)  # cap concurrent jobs (user-managed)

    async def run_capped(fn, **kw):
        async with sem:
            return await fn(**kw)

    @graph_fn(name="batch_agent")
    async def batch_agent(items: list[str], *, context):
        async def one(x):
            await context.channel().send_text(f"processing {x}")
            return {"y": x.upper()}

        # fan‑out with manual cap
        tasks = [run_capped(one, x=v) for v in items]
        results = await asyncio.gather(*tasks)

        # fan‑in
        return {"ys": [r["y"] for r in results]}
    # --- end
    assert await batch_agent(items=["a", "b", "c"]) == {"ys": ["A", "B", "C"]}
    assert sorted(await sent((await last_run("batch_agent")).run_id)) == [
        "processing a", "processing b", "processing c"]


@pytestmark_docs
async def test_ag_docs_graph_fn_md_L70_L156_and_reference_graph_graph_fn_md_L116():
    from ag_jupyter import NodeContext, graph_fn

    # --- example (docs/graph_fn.md:70)
    @graph_fn(name="example", inputs=["x"], outputs=["y"])
    async def example(x: int, *, context):
        # use services via context: channel/memory/artifacts/kv/llm/rag/mcp/logger
        await context.channel().send_text(f"x={x}")
        return {"y": x + 1}
    # --- end
    assert await example(x=1) == {"y": 2}
    # --- example (docs/graph_fn.md:156)
    @graph_fn(name="hello")
    async def hello(name: str, *, context):
        await context.channel().send_text(f"Hi {name}")
        return {"greeting": f"Hello, {name}"}
    # --- end
    assert await hello(name="Ada") == {"greeting": "Hello, Ada"}
    # --- example (docs/reference/graph-graph-fn.md:116)
    @graph_fn(name="example")
    async def example(x: int, *, context: NodeContext):
        # `context` is injected automatically
        await context.channel().send_text(f"x={x}")
        return {"y": x + 1}
    # --- end
    assert await example(x=2) == {"y": 3}
    assert await sent((await last_run("example")).run_id) == ["x=2"]


@pytestmark_docs
async def test_ag_docs_reference_decorators_md_L48_hello_world(capsys):
    # --- example (docs/reference/decorators.md:48)
    from ag_jupyter import graph_fn, NodeContext  # noqa: I001

    @graph_fn(name="hello.world", inputs=["name"], outputs=["greeting"], version="0.1.0")
    async def hello_world(name: str, *, context: NodeContext):
        await context.channel().send_text(f"👋 Hello {name}")
        return {"greeting": f"Hello, {name}!"}

    # Run (async)
    res = await hello_world(name="Aether")
    print(res["greeting"])  # → "Hello, Aether!"
    # --- end
    out = capsys.readouterr().out
    assert "Hello, Aether!" in out and "[console] agent.message :: 👋 Hello Aether" in out


@pytestmark_docs
async def test_ag_docs_reference_graph_graph_fn_md_L164_tool_usage():
    from ag_jupyter import NodeContext, graph_fn  # noqa: I001

    # --- example (docs/reference/graph-graph-fn.md:164)
    from ag_jupyter import tool

    @tool(outputs=["total"])
    def sum_vec(xs: list[float]) -> dict:
        return {"total": sum(xs)}

    @graph_fn(name="tool_usage")
    async def tool_usage(xs: list[float], *, context: NodeContext):
        stats = {"n": len(xs)}           # plain Python
        out = sum_vec(xs=xs)             # becomes a node (NodeHandle)
        await context.channel().send_text(
            f"n={stats['n']}, total={out['total']}"
        )
        return {"total": out["total"]}
    # --- end
    assert await tool_usage(xs=[1.0, 2.0]) == {"total": 3.0}
    assert await sent((await last_run("tool_usage")).run_id) == ["n=2, total=3.0"]


@pytestmark_docs
async def test_ag_docs_key_concepts_event_driven_waits_md_L82_notify_and_tag_tool():
    from ag_jupyter import open_session  # noqa: I001

    # --- example (docs/key-concepts/event-driven-waits.md:82)
    from ag_jupyter import tool

    @tool(outputs=["ok"])
    async def notify_and_tag(*, context):
        await context.channel().send_text("Started node…")
        await context.memory().record(kind="status", data={"stage":"start"})
        return {"ok": True}
    # --- end
    async with open_session() as context:
        assert await notify_and_tag(context=context) == {"ok": True}
        assert await sent(context.run_id) == ["Started node…"]


async def test_progress_bookkeeping_stays_bounded(registry: GraphRegistry):
    from ag_jupyter.runtime.services.channel.session import progress_board

    manager = RunManager(registry=registry, max_concurrency=64)

    @graph_fn("tick", registry=registry)
    async def tick(context):
        async with context.channel().progress(title="t", total=1) as p:
            await p.update(current=1)
            await p.end()

    ids = [(await manager.submit_run("tick", inputs={})).run_id for _ in range(1100)]
    for rid in ids:
        assert (await manager.wait_run(rid)).meta["progress"]["status"] == "done"
    assert len(progress_board._last) <= progress_board._PRUNE_AT + 1
    await manager.close()


async def test_a_second_ask_opened_while_queued_for_a_slot(registry: GraphRegistry):
    """One task of a run is answered and queues for the slot; another opens and closes an
    ask meanwhile: the run is queued once, and both tasks go on."""
    manager = RunManager(max_concurrency=1, registry=registry)
    second_may_ask = asyncio.Event()

    @graph_fn("two_tasks", registry=registry)
    async def two_tasks(context):
        ch = context.channel()

        async def first():
            return await ch.ask_text("first?")

        async def second():
            await second_may_ask.wait()
            return await ch.ask_text("second?")

        return await asyncio.gather(first(), second())

    hold = asyncio.Event()

    @graph_fn("hold_t", registry=registry)
    async def hold_t():
        await hold.wait()

    rid = (await manager.submit_run("two_tasks", inputs={})).run_id
    [first] = await open_ask(manager, rid)
    holder = (await manager.submit_run("hold_t", inputs={})).run_id
    await until(lambda: status(manager, holder) is RunStatus.running)
    await manager.answer(first.ask_id, "one")  # queued for the slot (held)
    second_may_ask.set()
    [second] = await until(lambda: manager.pending_asks(rid))
    await manager.answer(second.ask_id, "two")
    hold.set()
    _, out = await manager.wait_run(rid, timeout_s=5, return_outputs=True)
    assert out == {"result": ["one", "two"]}
    assert manager.active_count == 0
    await manager.close()
