"""The run panel's kernel side: state, coalescing, front-end messages, display bundle.

ipywidgets' comm is replaced by a recording comm (the real one needs a kernel); the
browser side is covered by js/test (logic) and tests/test_browser.py (real JupyterLab).
"""

from __future__ import annotations

import asyncio
import time

import comm
import pytest
from comm.base_comm import BaseComm

from ag_jupyter.runtime import GraphRegistry, RunManager, RunStatus, graph_fn
from ag_jupyter.widgets.run_panel import RunPanel, record_to_row


class RecordingComm(BaseComm):
    """A comm that keeps every custom message the widget sends."""

    def __init__(self, **kwargs):
        self.sent: list[dict] = []
        super().__init__(**kwargs)

    def publish_msg(self, msg_type, data=None, metadata=None, buffers=None, **keys):
        if msg_type == "comm_msg" and data and data.get("method") == "custom":
            self.sent.append(data["content"])


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


def rows_seen(panel: RunPanel) -> dict[str, dict]:
    """Replay the panel's messages the way the front end merges them."""
    rows: dict[str, dict] = {}
    for msg in panel.comm.sent:
        if msg["type"] != "rows":
            continue
        if msg["reset"]:
            rows = {}
        for row in msg["upsert"]:
            rows[row["run_id"]] = row
        for run_id in msg["remove"]:
            rows.pop(run_id, None)
    return rows


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


async def test_hello_gets_a_full_snapshot(registry):
    manager = RunManager(registry=registry)
    done = await manager.run_and_wait("p_sleep", inputs={})
    panel = RunPanel(manager, refresh_s=0.02)
    panel.handle_message({"type": "hello"})
    reset = panel.comm.sent[-1]
    assert reset["type"] == "rows" and reset["reset"] is True
    assert [r["run_id"] for r in reset["upsert"]] == [done[0].run_id]
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


async def test_cancel_many_and_bad_messages_are_refused_clearly(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02)
    a = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    b = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    panel.handle_message({"type": "delete_everything"})
    panel.handle_message("not a dict")
    panel.handle_message({"type": "cancel", "run_id": "no-such-run"})
    panel.handle_message({"type": "cancel", "run_id": {"evil": 1}})
    panel.handle_message({"type": "cancel_many", "run_ids": "nope"})
    texts = notices(panel)
    assert any("unknown panel action 'delete_everything'" in t for t in texts)
    assert any("no run with id 'no-such-run'" in t for t in texts)
    assert any("invalid run id" in t for t in texts)
    assert any("cancel_many needs a list" in t for t in texts)
    assert not manager.find_record(a.run_id).status.is_terminal  # nothing was touched
    assert not manager.is_cancel_requested(a.run_id)
    panel.handle_message({"type": "cancel_many", "run_ids": [a.run_id, b.run_id]})
    records = [await manager.wait_run(r.run_id, timeout_s=5) for r in (a, b)]
    assert {r.status for r in records} == {RunStatus.canceled}
    panel.handle_message({"type": "cancel", "run_id": a.run_id})
    assert "already canceled" in notices(panel)[-1]
    panel.close()


async def test_updates_are_coalesced_under_a_thousand_concurrent_runs(registry):
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
    row_messages = [m for m in panel.comm.sent if m["type"] == "rows"]
    # at most one message per refresh period (plus the one that opens a period)
    assert len(row_messages) <= elapsed / refresh_s + 2, (len(row_messages), elapsed)
    # ~4,000 record changes travelled in those few messages, none lost
    rows = rows_seen(panel)
    assert len(rows) == 1000
    assert {r["status"] for r in rows.values()} == {"succeeded"}
    # and each message carried only rows that changed since the previous one
    assert max(len(m["upsert"]) for m in row_messages) <= 1000
    panel.close()


async def test_status_filter_removes_rows_that_leave_it(registry):
    manager = RunManager(registry=registry)
    panel = RunPanel(manager, refresh_s=0.02, status="live")
    record = await manager.submit_run("p_sleep", inputs={"seconds": 30})
    await settle(panel)
    assert record.run_id in rows_seen(panel)
    await manager.cancel_run(record.run_id)
    await manager.wait_run(record.run_id)
    await settle(panel)
    assert record.run_id not in rows_seen(panel)
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
    assert not [m for m in recording.sent if m["type"] == "rows"]
    assert not manager._subscribers


def test_row_times_are_epoch_seconds():
    from ag_jupyter.runtime import RunRecord

    record = RunRecord(run_id="r", graph_id="g")
    row = record_to_row(record)
    assert abs(row["created_at"] - time.time()) < 5
    assert row["started_at"] is None and row["status"] == "pending"
