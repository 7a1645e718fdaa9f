"""The run panel's kernel side: state, coalescing, front-end messages, display bundle.

ipywidgets' comm is replaced by a recording comm (the real one needs a kernel); the
browser side is covered by js/test (logic) and tests/test_browser.py (real JupyterLab).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import weakref
from collections import Counter

import comm
import pytest
from comm.base_comm import BaseComm

from ag_jupyter.runtime import GraphRegistry, RunManager, RunStatus, graph_fn
from ag_jupyter.widgets.run_panel import PAGE_SIZE, RunPanel, record_to_row


class RecordingComm(BaseComm):
    """A comm that keeps every custom message the widget sends (and binary buffers)."""

    def __init__(self, **kwargs):
        self.sent: list[dict] = []
        self.buffers: list[list] = []
        super().__init__(**kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        if msg_type == "comm_msg" and data and data.get("method") == "custom":
            self.sent.append(data["content"])
            self.buffers.append(list(buffers or []))


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch):
    monkeypatch.setattr(comm, "create_comm", lambda **kw: RecordingComm(**kw))


@pytest.fixture
def registry():
    reg = GraphRegistry()

    @graph_fn("p_sleep", registry=reg)
    async def p_sleep(seconds: float = 0.0):
        await asyncio.sleep(seconds)
        return seconds

    @graph_fn("p_fail", registry=reg)
    async def p_fail():
        raise ValueError("bad <b>input</b>")

    return reg


def page_state(panel: RunPanel, comm_=None) -> dict:
    """Replay the panel's page messages the way the front end applies them."""
    rows: dict[str, dict] = {}
    last: dict = {}
    for msg in (comm_ or panel.comm).sent:
        if msg["type"] != "page":
            continue
        if msg["reset"]:
            rows = {}
        for row in msg["upsert"]:
            rows[row["run_id"]] = row
        order = [entry[0] for entry in msg["order"]]
        rows = {run_id: rows[run_id] for run_id in order}  # every shown row was sent
        last = msg
    return {"rows": rows, "order": [e for e in last.get("order", [])], **{
        k: last.get(k) for k in ("counts", "total", "matching", "live_matching", "page",
                                 "page_count", "facets")}}


def rows_seen(panel: RunPanel) -> dict[str, dict]:
    return page_state(panel)["rows"]


def notices(panel: RunPanel) -> list[str]:
    return [m["text"] for m in panel.comm.sent if m["type"] == "notice"]


async def settle(panel: RunPanel) -> None:
    await asyncio.sleep(panel._refresh_s * 2 + 0.05)


async def test_panel_rows_follow_runs_through_their_lives(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02)
    ok = await manager.submit_run("p_sleep", inputs={"seconds": 0.01}, tags=["t1"])
    bad = await manager.submit_run("p_fail", inputs={})
    long = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    await settle(panel)
    assert rows_seen(panel)[long.run_id]["status"] == "running"
    await manager.cancel_run(long.run_id)
    await manager.wait_run(ok.run_id)
    await manager.wait_run(bad.run_id)
    await manager.wait_run(long.run_id)
    await settle(panel)
    rows = rows_seen(panel)
    assert rows[ok.run_id]["status"] == "succeeded" and rows[ok.run_id]["tags"] == ["t1"]
    assert rows[bad.run_id]["status"] == "failed"
    assert rows[bad.run_id]["error"] == "ValueError: bad <b>input</b>"
    assert "Traceback" in rows[bad.run_id]["traceback"]
    assert rows[long.run_id]["status"] == "canceled"
    panel.close()


async def test_hello_gets_a_full_page(registry):
    manager = RunManager(registry=registry)
    done = await manager.run_and_wait("p_sleep", inputs={})
    panel = RunPanel(manager, refresh_s=0.02)
    panel.handle_message({"type": "hello"})
    reset = panel.comm.sent[-1]
    assert reset["type"] == "page" and reset["reset"] is True
    assert [r["run_id"] for r in reset["upsert"]] == [done[0].run_id]
    assert reset["order"] == [[done[0].run_id, 0, 0, False]]
    assert reset["counts"] == {"succeeded": 1} and reset["total"] == 1
    assert isinstance(reset["server_time"], float)
    panel.close()


async def test_frontend_cancel_message_cancels_the_run(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02)
    long = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    await asyncio.sleep(0.01)
    # the path a browser click takes: a custom comm message handled by on_msg
    panel._handle_custom_msg({"type": "cancel", "run_id": long.run_id}, [])
    record = await manager.wait_run(long.run_id, timeout_s=5)
    assert record.status is RunStatus.canceled
    assert record.meta["cancel_reason"] == "panel_cancel"
    await settle(panel)
    assert rows_seen(panel)[long.run_id]["status"] == "canceled"
    panel.close()


async def test_cancel_all_cancels_exactly_the_offered_set_after_confirmation(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02)
    a = await manager.submit_run("p_sleep", inputs={"seconds": 30}, tags=["x"])
    b = await manager.submit_run("p_sleep", inputs={"seconds": 30}, tags=["x"])
    other = await manager.submit_run("p_sleep", inputs={"seconds": 30}, tags=["y"])
    panel.handle_message({"type": "delete_everything"})
    panel.handle_message("not a dict")
    panel.handle_message({"type": "cancel", "run_id": "no-such-run"})
    panel.handle_message({"type": "cancel", "run_id": {"evil": 1}})
    panel.handle_message({"type": "cancel_many", "run_ids": [a.run_id]})  # the dead action
    panel.handle_message({"type": "view", "page": -1})
    panel.handle_message({"type": "view", "status": "exploded"})
    panel.handle_message({"type": "view", "expanded": "all"})
    panel.handle_message({"type": "cancel_matching"})  # no confirmation asked for
    texts = notices(panel)
    assert any("unknown panel action 'delete_everything'" in t for t in texts)
    assert any("unknown panel action 'cancel_many'" in t for t in texts)
    assert any("no run with id 'no-such-run'" in t for t in texts)
    assert any("invalid run id" in t for t in texts)
    assert any("view.page must be an int >= 0" in t for t in texts)
    assert any("unknown status 'exploded'" in t for t in texts)
    assert any("view.expanded must be a list" in t for t in texts)
    assert any("confirmation is no longer valid" in t for t in texts)
    assert not any(manager.is_cancel_requested(r.run_id) for r in (a, b, other))
    # "Cancel all" is offered for the live runs matching the view, on every page ...
    panel.handle_message({"type": "view", "tag": "x"})
    assert page_state(panel)["live_matching"] == 2
    panel.handle_message({"type": "cancel_matching_prepare"})
    panel.handle_message({"type": "cancel_matching", "token": "forged"})  # consumes the offer
    assert not manager.is_cancel_requested(a.run_id)
    panel.handle_message({"type": "cancel_matching_prepare"})
    offer = panel.comm.sent[-1]
    assert offer["type"] == "cancel_offer" and offer["count"] == 2
    assert set(offer["sample"]) == {a.run_id, b.run_id}
    # ... and cancels exactly that set: a run matching the filters since is left alone
    late = await manager.submit_run("p_sleep", inputs={"seconds": 30}, tags=["x"])
    await settle(panel)
    panel.handle_message({"type": "cancel_matching", "token": offer["token"]})
    records = [await manager.wait_run(r.run_id, timeout_s=5) for r in (a, b)]
    assert {r.status for r in records} == {RunStatus.canceled}
    assert not manager.find_record(other.run_id).status.is_terminal
    assert not manager.find_record(late.run_id).status.is_terminal
    assert "cancel requested for 2 run(s)" in notices(panel)[-1]
    # a token is good once
    panel.handle_message({"type": "cancel_matching", "token": offer["token"]})
    assert "no longer valid" in notices(panel)[-1]
    panel.handle_message({"type": "cancel", "run_id": a.run_id})
    assert "already canceled" in notices(panel)[-1]
    await manager.cancel_run(other.run_id)
    await manager.cancel_run(late.run_id)
    panel.close()


async def test_updates_are_coalesced_and_small_under_a_thousand_concurrent_runs(registry):
    manager = RunManager(registry=registry, max_concurrency=1000)
    refresh_s = 0.1
    panel = RunPanel(manager, refresh_s=refresh_s)
    start = time.monotonic()
    records = [
        await manager.submit_run("p_sleep", inputs={"seconds": 0.05 + (i % 10) * 0.03})
        for i in range(1000)
    ]
    for record in records:
        await manager.wait_run(record.run_id)
    await settle(panel)
    elapsed = time.monotonic() - start
    pages = [m for m in panel.comm.sent if m["type"] == "page"]
    # at most one message per refresh period (plus the one that opens a period)
    assert len(pages) <= elapsed / refresh_s + 2, (len(pages), elapsed)
    # each carries at most one page of rows, never the whole run table
    assert max(len(m["upsert"]) for m in pages) <= PAGE_SIZE
    state = page_state(panel)
    assert state["counts"] == {"succeeded": 1000} and state["total"] == 1000
    assert state["page_count"] == 1000 // PAGE_SIZE
    newest = [r.run_id for r in records[::-1][:PAGE_SIZE]]
    assert [e[0] for e in state["order"]] == newest
    assert {r["status"] for r in state["rows"].values()} == {"succeeded"}
    panel.close()


async def test_quiet_panel_sends_nothing(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02)
    await manager.run_and_wait("p_sleep", inputs={})
    await settle(panel)
    sent = len(panel.comm.sent)
    await settle(panel)
    panel._on_changes({})  # a delivery with nothing new to show stays silent
    assert len(panel.comm.sent) == sent
    panel.close()


async def test_views_filter_search_and_page_in_the_kernel(registry):
    manager = RunManager(registry=registry)
    for i in range(120):
        await manager.run_and_wait(
            "p_sleep", inputs={}, session_id=f"s{i % 2}", tags=["even" if i % 2 == 0 else "odd"]
        )
    failed = await manager.run_and_wait("p_fail", inputs={}, session_id="s9")
    panel = RunPanel(manager, refresh_s=0.02)
    panel.handle_message({"type": "hello"})
    state = page_state(panel)
    assert state["total"] == 121 and state["page_count"] == 3 and len(state["order"]) == 50
    assert state["facets"] == {"sessions": ["s0", "s1", "s9"], "tags": ["even", "odd"],
                               "graphs": ["p_fail", "p_sleep"]}
    panel.handle_message({"type": "view", "page": 2})
    assert page_state(panel)["page"] == 2 and len(page_state(panel)["order"]) == 21
    panel.handle_message({"type": "view", "page": 99})  # clamped to the last page
    assert page_state(panel)["page"] == 2
    panel.handle_message({"type": "view", "session": "s1", "tag": "odd"})
    state = page_state(panel)
    assert state["matching"] == 60
    assert {r["session_id"] for r in state["rows"].values()} == {"s1"}
    panel.handle_message({"type": "view", "status": "failed"})
    assert list(page_state(panel)["rows"]) == [failed[0].run_id]
    panel.handle_message({"type": "view", "search": "BAD <B>"})  # error text, any case
    assert list(page_state(panel)["rows"]) == [failed[0].run_id]
    panel.handle_message({"type": "view", "status": "live"})
    assert page_state(panel)["matching"] == 0 and page_state(panel)["total"] == 121
    panel.close()


async def test_children_are_listed_under_their_parent_and_collapse(registry):
    @graph_fn("p_parent", registry=registry)
    async def p_parent(n: int, context):
        ids = [await context.runner().spawn_run("p_sleep", inputs={}) for _ in range(n)]
        for child in ids:
            await context.runner().wait_run(child)
        return n

    manager = RunManager(registry=registry)
    small = await manager.run_and_wait("p_parent", inputs={"n": 3})
    big = await manager.run_and_wait("p_parent", inputs={"n": 25})
    panel = RunPanel(manager, refresh_s=0.02)
    panel.handle_message({"type": "hello"})
    order = page_state(panel)["order"]
    # newest parent first; 25 children start collapsed, 3 start expanded (oldest first)
    assert order[0] == [big[0].run_id, 0, 25, False]
    assert order[1] == [small[0].run_id, 0, 3, True]
    assert [e[1] for e in order[2:5]] == [1, 1, 1]
    assert all(rows_seen(panel)[e[0]]["parent_run_id"] == small[0].run_id for e in order[2:5])
    panel.handle_message({"type": "view", "expanded": [big[0].run_id],
                         "collapsed": [small[0].run_id]})
    order = page_state(panel)["order"]
    assert order[0] == [big[0].run_id, 0, 25, True] and len(order) == 1 + 25 + 1
    assert order[-1] == [small[0].run_id, 0, 3, False]
    panel.close()


async def test_status_filter_drops_rows_that_leave_it(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, status="live")
    record = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    await settle(panel)
    assert record.run_id in rows_seen(panel)
    await manager.cancel_run(record.run_id)
    await manager.wait_run(record.run_id)
    await settle(panel)
    assert record.run_id not in rows_seen(panel)
    panel.handle_message({"type": "hello"})
    assert panel.comm.sent[-1]["view"]["status"] == "live"  # the controls can show it
    with pytest.raises(ValueError, match="unknown status"):
        RunPanel(manager, status="bogus")
    panel.close()


async def test_display_bundle_has_escaped_html_and_text_snapshots(registry):
    manager = RunManager(registry=registry)
    hostile = "<img src=x onerror=alert(1)>"
    await manager.run_and_wait("p_sleep", inputs={}, run_id=hostile, tags=["<script>"])
    panel = RunPanel(manager)
    bundle = panel._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "application/vnd.jupyter.widget-view+json" in data
    html = data["text/html"]
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>" not in html
    assert hostile in data["text/plain"] and "succeeded" in data["text/plain"]
    panel.close()


async def test_close_stops_watching(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02)
    recording = panel.comm
    panel.close()
    await manager.run_and_wait("p_sleep", inputs={})
    await asyncio.sleep(0.1)
    assert not [m for m in recording.sent if m["type"] == "page"]
    assert not manager._subscribers and not manager._watchers


def test_row_times_are_epoch_seconds():
    from ag_jupyter.runtime import RunRecord

    record = RunRecord(run_id="r", graph_id="g")
    row = record_to_row(record)
    assert abs(row["created_at"] - time.time()) < 5
    assert row["started_at"] is None and row["status"] == "pending"


async def test_unfiltered_fast_path_agrees_with_a_full_scan(registry, monkeypatch):
    import ag_jupyter.widgets.run_table as run_table_module
    from ag_jupyter.widgets.run_panel import PanelView

    @graph_fn("p_fan", registry=registry)
    async def p_fan(n: int, context):
        for _ in range(n):
            await context.runner().run_and_wait("p_sleep", inputs={})
        return n

    manager = RunManager(registry=registry)
    for i in range(40):
        await manager.run_and_wait("p_fan" if i % 3 == 0 else "p_sleep",
                                   inputs={"n": 2} if i % 3 == 0 else {})
    # a small cap makes the panel drop its oldest runs, parents before their children
    monkeypatch.setattr(run_table_module, "MAX_RUNS", 45)
    panel = RunPanel(manager, refresh_s=0.02)
    for _ in range(3):
        await manager.run_and_wait("p_fan", inputs={"n": 2})
    for page in range(3):
        panel._view = PanelView(page=page)
        fast = panel.compute_page()
        panel._view = PanelView(page=page, statuses=frozenset(RunStatus))  # matches all
        scanned = panel.compute_page()
        for key in ("order", "matching", "live_matching", "page", "page_count", "total"):
            assert fast[key] == scanned[key], (key, page)
    assert panel.compute_page()["total"] == 45
    # the status counts kept in bulk as runs change agree with a recount of the rows
    held = panel.records()
    recount = dict(Counter(record.status.value for record in held))
    assert panel.compute_page()["counts"] == recount and len(held) == 45
    panel.close()


async def test_panel_shows_runs_of_an_earlier_kernel_from_the_store(registry, tmp_path):
    from ag_jupyter.runtime.defaults import workspace_runtime

    earlier = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    old = [(await earlier.run_and_wait("p_sleep", inputs={}))[0] for _ in range(3)]
    await earlier.close()
    # a new kernel on the same workspace
    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    new = await manager.run_and_wait("p_sleep", inputs={})
    panel = RunPanel(manager, refresh_s=0.02)
    await panel._history_task
    panel.handle_message({"type": "hello"})
    state = page_state(panel)
    # newest first: this kernel's run, then the earlier kernel's, newest to oldest
    assert [e[0] for e in state["order"]] == [new[0].run_id] + [r.run_id for r in old[::-1]]
    assert state["total"] == 4 and state["counts"] == {"succeeded": 4}
    assert await panel.load_history() == 0  # nothing twice
    panel.close()
    await manager.close()


async def test_panel_holds_no_superseded_record_of_a_live_run():
    # A live run's rows are read from the manager: once the manager replaces a run's record,
    # the panel must not keep the old snapshot alive until its next refresh (a burst of runs
    # would pay for thousands of them in garbage collection and fresh memory).
    registry = GraphRegistry()
    gate, started = asyncio.Event(), asyncio.Event()

    @graph_fn("p_gate", registry=registry)
    async def p_gate():
        started.set()
        await gate.wait()

    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=60)  # no timed refresh during the test
    run = await manager.submit_run("p_gate", inputs={})
    await started.wait()
    assert [r.status for r in panel.records()] == [RunStatus.running]  # taken in now
    running = weakref.ref(manager.find_record(run.run_id))
    gate.set()
    final = await manager.wait_run(run.run_id)
    gc.collect()
    assert running() is None
    assert panel.records() == [final]
    assert panel.compute_page()["counts"] == {"succeeded": 1}
    panel.close()


def test_hand_off_is_a_no_op_outside_a_kernel():
    from ag_jupyter.widgets.iopub import hand_off, iopub_thread

    assert iopub_thread() is None
    assert hand_off() == 0.0


# --------------------------------------------------------------------------- issue 15
HOSTILE = "<img src=x onerror=alert(1)>"


def sent_of(panel: RunPanel, kind: str) -> list[dict]:
    return [m for m in panel.comm.sent if m["type"] == kind]


async def until(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def workspace_manager(registry, tmp_path):
    from ag_jupyter.runtime import tool
    from ag_jupyter.runtime.defaults import workspace_runtime

    @tool(outputs=["result"], name="shout")
    async def shout(text: str) -> str:
        return text.upper() + HOSTILE

    @graph_fn("p_busy", registry=registry)
    async def p_busy(lines: int, context):
        log = context.logger()
        for i in range(lines):
            log.info("line %d %s", i, HOSTILE)
        log.warning("almost done %s", "x" * 5000)
        await shout(HOSTILE)
        await context.artifacts().save_text("hello", name=f"{HOSTILE}.md", kind="report")
        child = await context.runner().spawn_run("p_sleep", inputs={"seconds": 0})
        await context.runner().wait_run(child)
        return {"rows": list(range(10_000)), "note": HOSTILE}

    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    yield manager
    await manager.close()


async def test_detail_request_gets_one_bounded_reply_for_that_run(workspace_manager):
    manager = workspace_manager
    record, _outputs, _, _ = await manager.run_and_wait("p_busy", inputs={"lines": 300},
                                                        session_id="s")
    await asyncio.sleep(0.05)
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    panel.handle_message({"type": "detail", "run_id": record.run_id})
    await until(lambda: sent_of(panel, "detail"))
    detail = sent_of(panel, "detail")[-1]
    assert detail["run_id"] == record.run_id and detail["errors"] == {}
    assert detail["record"]["status"] == "succeeded" and detail["record"]["retryable"] is False
    assert json.loads(detail["inputs"]["text"]) == {"lines": 300}
    outputs = detail["outputs"]
    assert HOSTILE in outputs["text"] and "more items" in outputs["text"] and not outputs["exact"]
    logs = detail["logs"]  # the newest page of 301 lines, each line cut
    assert logs["total"] == 301 and len(logs["lines"]) == 100 and logs["offset"] == 201
    assert logs["lines"][-1]["level"] == "WARNING" and len(logs["lines"][-1]["message"]) <= 1000
    assert logs["lines"][0]["message"] == f"line 201 {HOSTILE}"
    steps = detail["steps"]["items"]
    assert [s["name"] for s in steps] == ["shout"] and HOSTILE in steps[0]["outputs_preview"]
    artifact = detail["artifacts"]["items"][0]
    assert artifact["name"] == f"{HOSTILE}.md" and artifact["kind"] == "report"
    assert artifact["bytes"] == 5 and artifact["uri"].startswith("ag://artifacts/")
    assert artifact["path"] and artifact["downloadable"]
    children = detail["children"]
    assert children["total"] == 1 and children["items"][0]["graph_id"] == "p_sleep"
    assert detail["usage"] is None  # no LLM calls
    assert detail["transcript"] == {"items": [], "total": 0}  # no channel
    assert len(json.dumps(detail)) < 200_000
    # paging and searching the logs sends only that section
    panel.handle_message({"type": "logs", "run_id": record.run_id, "offset": 0,
                          "search": "line 1", "levels": ["info"]})
    await until(lambda: sent_of(panel, "logs"))
    page = sent_of(panel, "logs")[-1]["logs"]
    assert page["offset"] == 0 and page["search"] == "line 1" and page["levels"] == ["INFO"]
    assert all("line 1" in line["message"] for line in page["lines"])
    assert page["total"] == 111  # line 1, 10-19, 100-199
    panel.handle_message({"type": "steps", "run_id": record.run_id, "offset": 0})
    await until(lambda: sent_of(panel, "steps"))
    assert sent_of(panel, "steps")[-1]["steps"]["total"] == 1
    # closing stops it; a page request for a run that is not open is refused
    panel.handle_message({"type": "detail_close"})
    panel.handle_message({"type": "logs", "run_id": record.run_id, "offset": 0})
    assert "is not the open detail" in notices(panel)[-1]
    panel.close()


async def test_detail_of_a_failed_run_has_its_error_and_traceback_and_bad_requests_notice(
        registry):
    manager = RunManager(registry=registry)
    failed, _, _, _ = await manager.run_and_wait("p_fail", inputs={})
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    panel.handle_message({"type": "detail", "run_id": failed.run_id})
    await until(lambda: sent_of(panel, "detail"))
    detail = sent_of(panel, "detail")[-1]
    assert detail["record"]["error"] == "ValueError: bad <b>input</b>"
    assert "Traceback" in detail["record"]["traceback"] and detail["record"]["retryable"]
    assert detail["outputs"] is None
    assert detail["artifacts"] == {"items": [], "total": 0, "more": False,
                                   "available": False}  # an in-memory runtime
    for bad in ({"type": "detail"}, {"type": "detail", "run_id": 5},
                {"type": "detail", "run_id": "x" * 5000},
                {"type": "detail", "run_id": failed.run_id, "log_levels": ["LOUD"]},
                {"type": "logs", "run_id": failed.run_id, "offset": -1}):
        panel.handle_message(bad)
    panel.handle_message({"type": "detail", "run_id": "no-such-run"})
    await until(lambda: any("no run with id 'no-such-run'" in t for t in notices(panel)))
    texts = notices(panel)
    assert sum("ignored a bad detail request" in t for t in texts) == 4
    assert any("offset must be null or an int" in t for t in texts)
    panel.close()


async def test_the_open_detail_of_a_live_run_is_refreshed(registry):
    gate = asyncio.Event()

    @graph_fn("p_gated", registry=registry)
    async def p_gated(context):
        context.logger().info("started")
        await gate.wait()
        context.logger().info("finished")
        return 1

    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    run = await manager.submit_run("p_gated", inputs={})
    await settle(panel)
    panel.handle_message({"type": "detail", "run_id": run.run_id})
    await until(lambda: sent_of(panel, "detail"))
    assert sent_of(panel, "detail")[-1]["record"]["status"] == "running"
    gate.set()
    await manager.wait_run(run.run_id)
    await until(lambda: sent_of(panel, "detail")[-1]["record"]["status"] == "succeeded")
    last = sent_of(panel, "detail")[-1]
    assert [line["message"] for line in last["logs"]["lines"]] == ["started", "finished"]
    count = len(sent_of(panel, "detail"))
    await asyncio.sleep(2.5)
    assert len(sent_of(panel, "detail")) == count, "a finished run's detail is not re-sent"
    panel.close()


async def test_retry_starts_a_linked_run_with_the_same_inputs_and_session(registry):
    @graph_fn("p_flaky", registry=registry)
    async def p_flaky(n: int, tries: list):
        tries.append(n)
        if len(tries) == 1:
            raise RuntimeError("first try fails")
        return n * 2

    manager = RunManager(registry=registry)
    tries: list = []
    original, _, _, _ = await manager.run_and_wait(
        "p_flaky", inputs={"n": 21, "tries": tries}, session_id="s1", tags=["t"])
    assert original.status is RunStatus.failed
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    panel.handle_message({"type": "retry", "run_id": original.run_id})
    await until(lambda: sent_of(panel, "retried"))
    new_id = sent_of(panel, "retried")[-1]["new_run_id"]
    record, outputs = await manager.wait_run(new_id, return_outputs=True)
    assert record.status is RunStatus.succeeded and outputs == {"result": 42}
    assert record.meta["retry_of"] == original.run_id
    assert record.session_id == "s1" and record.tags == ["t"]
    assert await manager.get_record(original.run_id) == original  # left as it was
    await settle(panel)
    assert rows_seen(panel)[new_id]["retry_of"] == original.run_id
    assert any(f"retrying {original.run_id} as {new_id}" in t for t in notices(panel))
    # only failed or canceled runs; unknown ids get a notice, never an exception
    panel.handle_message({"type": "retry", "run_id": new_id})
    panel.handle_message({"type": "retry", "run_id": "no-such-run"})
    panel.handle_message({"type": "retry", "run_id": None})
    await until(lambda: sum("could not retry" in t for t in notices(panel)) == 2)
    texts = notices(panel)
    assert any("is succeeded; only failed or canceled runs can be retried" in t for t in texts)
    assert any("RunNotFoundError" in t for t in texts)
    assert any("ignored a bad retry request" in t for t in texts)
    panel.close()


async def test_retry_run_refuses_live_and_succeeded_runs(registry):
    manager = RunManager(registry=registry)
    done, _, _, _ = await manager.run_and_wait("p_sleep", inputs={})
    live = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    for run_id in (done.run_id, live.run_id):
        with pytest.raises(ValueError, match="only failed or canceled runs"):
            await manager.retry_run(run_id)
    await manager.cancel_run(live.run_id)
    retried = await manager.retry_run(live.run_id)
    assert retried.meta == {"retry_of": live.run_id} and retried.graph_id == "p_sleep"
    assert (await manager.get_inputs(retried.run_id)) == {"seconds": 30}
    await manager.cancel_run(retried.run_id)


async def test_answers_are_validated_in_the_kernel_and_never_raise(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    panel.handle_message({"type": "hello"})
    assert panel.comm.sent[-1]["asks"] == {"items": [], "total": 0}
    for bad in ({"type": "answer"}, {"type": "answer", "ask_id": 3, "value": "x"},
                {"type": "answer", "ask_id": "a", "value": None},
                {"type": "answer", "ask_id": "a", "value": "x" * 200_000},
                {"type": "answer", "ask_id": "a", "value": {"files": [{"name": "f",
                                                                       "data": "%%%"}]}}):
        panel.handle_message(bad)
    bad_notices = [m for m in sent_of(panel, "notice") if "ignored a bad answer" in m["text"]]
    assert len(bad_notices) == 5
    assert [m.get("ask_id") for m in bad_notices] == [None, None, "a", "a", "a"]
    # A well-formed answer to an ask that does not exist: the runtime's error, shown.
    panel.handle_message({"type": "answer", "ask_id": "a", "value": "yes"})
    for _ in range(50):
        if "could not answer a" in " ".join(notices(panel)):
            break
        await asyncio.sleep(0.01)
    assert "could not answer a" in notices(panel)[-1]
    panel.close()


async def test_page_requests_are_rate_limited_and_the_latest_view_wins(registry):
    manager = RunManager(registry=registry)
    for i in range(3):
        await manager.run_and_wait("p_sleep", inputs={}, tags=[f"t{i}"])
    now = [0.0]
    panel = RunPanel(manager, refresh_s=0.02, history=0, clock=lambda: now[0])
    start = time.perf_counter()
    for _ in range(1000):
        panel.handle_message({"type": "hello"})
    for i in range(3):
        panel.handle_message({"type": "view", "tag": f"t{i}"})
    assert time.perf_counter() - start < 1.0
    assert len(sent_of(panel, "page")) == 10  # the burst; the rest wait for the limit
    now[0] = 1.0  # tokens again
    await until(lambda: len(sent_of(panel, "page")) == 11)
    await asyncio.sleep(0.05)
    pages = sent_of(panel, "page")
    assert len(pages) == 11 and pages[-1]["reset"] and pages[-1]["view"]["tag"] == "t2"
    panel.close()


async def test_a_flood_of_unknown_cancels_is_cheap_and_sends_few_notices(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    start = time.perf_counter()
    for i in range(50_000):
        panel.handle_message({"type": "cancel", "run_id": f"nope-{i}"})
    panel.handle_message({"type": "cancel_many", "run_ids": [f"nope-{i}" for i in range(50_000)]})
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, elapsed  # was ~37 s for cancel_many of 50k ids
    assert len(sent_of(panel, "notice")) <= 25
    assert sum("unknown panel action 'cancel_many'" in t for t in notices(panel)) <= 1
    panel.close()


async def test_downloads_send_the_bytes_of_an_artifact_that_run_saved(workspace_manager):
    manager = workspace_manager
    record, _, _, _ = await manager.run_and_wait("p_busy", inputs={"lines": 1})
    other, _, _, _ = await manager.run_and_wait("p_sleep", inputs={})
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    panel.handle_message({"type": "detail", "run_id": record.run_id})
    await until(lambda: sent_of(panel, "detail"))
    artifact = sent_of(panel, "detail")[-1]["artifacts"]["items"][0]
    panel.handle_message({"type": "download", "run_id": record.run_id,
                          "artifact_id": artifact["artifact_id"]})
    await until(lambda: sent_of(panel, "download"))
    index = next(i for i, m in enumerate(panel.comm.sent) if m["type"] == "download")
    message = panel.comm.sent[index]
    assert message["name"] == f"{HOSTILE}.md" and message["bytes"] == 5
    assert bytes(panel.comm.buffers[index][0]) == b"hello"
    # another run's artifact id, or a made-up one: refused with a notice
    panel.handle_message({"type": "download", "run_id": other.run_id,
                          "artifact_id": artifact["artifact_id"]})
    await until(lambda: any("saved no artifact" in t for t in notices(panel)))
    assert len(sent_of(panel, "download")) == 1
    panel.close()


async def test_graph_filter_of_ag_runs_applies_to_the_panel(registry):
    manager = RunManager(registry=registry)
    await manager.run_and_wait("p_sleep", inputs={})
    failed, _, _, _ = await manager.run_and_wait("p_fail", inputs={})
    panel = RunPanel(manager, refresh_s=0.02, graph="p_fail", history=0)
    panel.handle_message({"type": "hello"})
    state = page_state(panel)
    assert list(state["rows"]) == [failed.run_id]
    assert panel.comm.sent[-1]["view"]["graph"] == "p_fail"
    bundle = panel._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "p_sleep" not in data["text/plain"] and failed.run_id in data["text/plain"]
    panel.close()


async def test_snapshots_read_the_stored_history_after_a_restart(registry, tmp_path):
    from ag_jupyter.runtime.defaults import workspace_runtime
    from ag_jupyter.widgets import history

    earlier = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    old = [(await earlier.run_and_wait("p_sleep", inputs={}))[0] for _ in range(3)]
    await earlier.close()
    manager = RunManager(registry=registry, **workspace_runtime(tmp_path / "ws"))
    panel = RunPanel(manager, refresh_s=0.02)
    await panel._history_task
    bundle = panel._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["text/plain"].startswith("3 runs:")  # not "0 runs"
    for record in old:
        assert record.run_id in data["text/plain"] and record.run_id in data["text/html"]
    # a panel opened later takes the history read already at once
    assert len(history.cached(manager)) == 3
    later = RunPanel(manager, refresh_s=0.02, history=500)
    assert len(later.records()) == 3
    later.close()
    panel.close()
    await manager.close()


def test_ag_runs_text_reads_the_stored_history_after_a_restart(registry, tmp_path, capsys):
    from IPython.core.interactiveshell import InteractiveShell

    from ag_jupyter.runtime.defaults import workspace_runtime

    workspace = tmp_path / "ws"

    async def earlier_kernel():
        manager = RunManager(registry=registry, **workspace_runtime(workspace))
        done = [(await manager.run_and_wait("p_sleep", inputs={}))[0] for _ in range(2)]
        failed = (await manager.run_and_wait("p_fail", inputs={}))[0]
        await manager.close()
        return done, failed

    async def close_loop_manager() -> None:
        # IPython runs every shell's cells on one loop, whose manager outlives a shell:
        # close it so this "new kernel" builds its own on the workspace (and so do later tests).
        from ag_jupyter import get_run_manager

        try:
            manager = get_run_manager(create=False)
        except RuntimeError:
            return
        await manager.close()

    done, failed = asyncio.run(earlier_kernel())
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "ag_jupyter")
    shell.run_line_magic("config", f"AgJupyter.workspace = {str(workspace)!r}")
    shell.loop_runner(close_loop_manager())
    try:
        capsys.readouterr()
        shell.run_line_magic("ag_runs", "--text")
        table = capsys.readouterr().out
        assert table.startswith("3 runs:"), table
        assert all(r.run_id in table for r in [*done, failed])
        shell.run_line_magic("ag_runs", "--text --graph p_fail")
        table = capsys.readouterr().out
        assert failed.run_id in table and done[0].run_id not in table
        shell.run_line_magic("ag_runs", "--text --status succeeded")
        assert failed.run_id not in capsys.readouterr().out
    finally:
        shell.loop_runner(close_loop_manager())
        shell.run_line_magic("unload_ext", "ag_jupyter")
        InteractiveShell.clear_instance()


# ------------------------------------------------------------ asks


def last_asks(panel: RunPanel) -> dict:
    return [m for m in sent_of(panel, "page") if m.get("asks") is not None][-1]["asks"]


async def test_open_asks_are_sent_with_pages_and_answered_from_the_panel(registry):
    @graph_fn("p_ask", registry=registry)
    async def p_ask(context):
        return await context.channel().ask_text(f"{HOSTILE} your name?", timeout_s=30)

    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    run = await manager.submit_run("p_ask", inputs={})
    await until(lambda: manager.pending_asks(run.run_id))
    await settle(panel)
    shown = last_asks(panel)
    assert shown["total"] == 1
    ask = shown["items"][0]
    assert ask["run_id"] == run.run_id and ask["kind"] == "text" and ask["graph_id"] == "p_ask"
    assert ask["prompt"] == f"{HOSTILE} your name?" and ask["deadline"] is not None
    assert rows_seen(panel)[run.run_id]["status"] == "waiting"
    bundle = panel._repr_mimebundle_()
    html = (bundle[0] if isinstance(bundle, tuple) else bundle)["text/html"]
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt; your name?" in html
    panel.handle_message({"type": "answer", "ask_id": ask["ask_id"], "value": "Ada"})
    record, outputs = await manager.wait_run(run.run_id, timeout_s=5, return_outputs=True)
    assert record.status is RunStatus.succeeded and outputs == {"result": "Ada"}
    await until(lambda: sent_of(panel, "answered"))
    assert sent_of(panel, "answered")[-1] == {"type": "answered", "ask_id": ask["ask_id"]}
    await settle(panel)
    assert last_asks(panel) == {"items": [], "total": 0}
    # answering again is a notice naming the ask, never an exception
    panel.handle_message({"type": "answer", "ask_id": ask["ask_id"], "value": "again"})
    panel.handle_message({"type": "answer", "ask_id": "no-such-ask", "value": "x"})
    await until(lambda: sum("could not answer" in t for t in notices(panel)) == 2)
    refused = [m for m in sent_of(panel, "notice") if "could not answer" in m["text"]]
    assert {m["ask_id"] for m in refused} == {ask["ask_id"], "no-such-ask"}
    # the detail carries the transcript
    panel.handle_message({"type": "detail", "run_id": run.run_id})
    await until(lambda: sent_of(panel, "detail"))
    transcript = sent_of(panel, "detail")[-1]["transcript"]["items"]
    assert [e["kind"] for e in transcript] == ["ask", "answer"]
    assert transcript[0]["text"] == f"{HOSTILE} your name?" and transcript[1]["text"] == "Ada"
    panel.close()


async def test_choices_and_approval_are_answered_by_option_and_bad_choices_keep_the_ask(
        registry):
    @graph_fn("p_choose", registry=registry)
    async def p_choose(context):
        channel = context.channel()
        picked = await channel.ask_choices("Which?", options=["red", "green"], timeout_s=30)
        approved = await channel.ask_approval("Ship it?", timeout_s=30)
        return {"picked": picked, "approved": approved}

    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, history=0)
    run = await manager.submit_run("p_choose", inputs={})
    await until(lambda: manager.pending_asks(run.run_id))
    await settle(panel)
    ask = last_asks(panel)["items"][0]
    assert ask["kind"] == "choices" and [o["label"] for o in ask["options"]] == ["red", "green"]
    panel.handle_message({"type": "answer", "ask_id": ask["ask_id"], "value": {"choice": "nope"}})
    await until(lambda: any("could not answer" in t for t in notices(panel)))
    assert manager.pending_asks(run.run_id), "a bad choice leaves the ask open"
    green = ask["options"][1]["id"]
    panel.handle_message({"type": "answer", "ask_id": ask["ask_id"], "value": {"choice": green}})
    await until(lambda: manager.pending_asks(run.run_id)
                and manager.pending_asks(run.run_id)[0].kind == "approval")
    await settle(panel)
    approval = last_asks(panel)["items"][0]
    assert approval["kind"] == "approval" and len(approval["options"]) == 2
    panel.handle_message({"type": "answer", "ask_id": approval["ask_id"],
                          "value": {"choice": approval["options"][0]["id"]}})
    record, outputs = await manager.wait_run(run.run_id, timeout_s=5, return_outputs=True)
    assert record.status is RunStatus.succeeded
    assert "green" in json.dumps(outputs["picked"]) and outputs["approved"]["approved"] is True
    panel.close()


async def test_detail_requests_over_the_limit_wait_and_the_latest_of_each_kind_wins(registry):
    manager = RunManager(registry=registry)
    runs = [(await manager.run_and_wait("p_sleep", inputs={}))[0] for _ in range(3)]
    now = [0.0]
    panel = RunPanel(manager, refresh_s=0.02, history=0, clock=lambda: now[0])
    for _ in range(30):  # a flood: 10 go through, the rest wait
        panel.handle_message({"type": "detail", "run_id": runs[0].run_id})
    panel.handle_message({"type": "detail", "run_id": runs[1].run_id})
    panel.handle_message({"type": "logs", "run_id": runs[1].run_id, "offset": 0})
    now[0] = 10.0
    await until(lambda: any(m["run_id"] == runs[1].run_id for m in sent_of(panel, "detail")))
    await until(lambda: sent_of(panel, "logs"))  # the deferred logs page was not dropped
    assert sent_of(panel, "logs")[-1]["run_id"] == runs[1].run_id
    # the flood of the first run was superseded: none of it outlived the newer request
    assert [m["run_id"] for m in sent_of(panel, "detail")] == [runs[1].run_id]
    panel.close()
