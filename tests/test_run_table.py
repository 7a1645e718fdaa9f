"""The run panel's pure table and page builder (``widgets/run_table.py``), alone: no widget,
no comm, no manager. Records are built by hand; ``lookup`` stands in for the manager's
``find_record`` (the table reads live runs through it)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from ag_jupyter.runtime import RunRecord, RunStatus
from ag_jupyter.widgets import run_table
from ag_jupyter.widgets.run_table import (
    PAGE_SIZE,
    PanelView,
    RunTable,
    TokenBucket,
    ask_to_dict,
    check_answer,
    hides_parent,
    json_preview,
    log_page,
    progress_info,
    record_detail,
    record_to_row,
    step_page,
    transcript_entries,
    usage_badge,
    view_from_message,
)
from ag_jupyter.widgets.snapshot import format_started, html_table, text_table

T0 = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)
HOSTILE = "<img src=x onerror=alert(1)>"


def rec(run_id: str, status: str = "succeeded", i: int = 0, **fields) -> RunRecord:
    fields.setdefault("created_at", T0 + timedelta(seconds=i))
    if status != "pending":
        fields.setdefault("started_at", T0 + timedelta(seconds=i, milliseconds=5))
    if RunStatus(status).is_terminal:
        fields.setdefault("finished_at", T0 + timedelta(seconds=i + 1))
    return RunRecord(run_id=run_id, graph_id=fields.pop("graph_id", "g"),
                     status=RunStatus(status), **fields)


class Live(dict):
    """The manager's in-memory records, as ``find_record`` reads them."""

    def __call__(self, run_id: str) -> RunRecord | None:
        return self.get(run_id)


def table_of(records: list[RunRecord]) -> tuple[RunTable, Live]:
    live = Live({r.run_id: r for r in records})
    table = RunTable(live)
    table.add({r.run_id: r for r in records})
    return table, live


def ids(page: dict) -> list[str]:
    return [entry[0] for entry in page["order"]]


def test_run_table_imports_no_widget_library():
    code = ("import sys, ag_jupyter.widgets.run_table; "
            "bad = [m for m in ('anywidget', 'ipywidgets', 'comm') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pages_are_newest_first_and_clamped_to_the_last_page():
    records = [rec(f"r{i:03d}", i=i) for i in range(120)]
    table, _ = table_of(records)
    view = PanelView()
    page, rows = table.build_page(view)
    assert ids(page) == [f"r{i:03d}" for i in range(119, 69, -1)]
    assert page["total"] == 120 and page["matching"] == 120 and page["page_count"] == 3
    assert set(rows) == set(ids(page)) and page["page_size"] == PAGE_SIZE
    view.page = 2
    assert ids(table.build_page(view)[0]) == [f"r{i:03d}" for i in range(19, -1, -1)]
    view.page = 99
    page, _ = table.build_page(view)
    assert page["page"] == 2 and view.page == 2


def test_filters_graph_status_session_tag_and_search_combine():
    records = [
        rec("a", graph_id="fetch", session_id="s1", tags=["x"], i=1),
        rec("b", "failed", graph_id="fetch", session_id="s2", error="KeyError: 'Token'", i=2),
        rec("c", "running", graph_id="summarize", session_id="s1", tags=["x", "y"], i=3),
        rec("d", graph_id="summarize", i=4),
    ]
    table, _ = table_of(records)

    def matching(**message) -> list[str]:
        return ids(table.build_page(view_from_message({"type": "view", **message}))[0])

    assert matching(graph="fetch") == ["b", "a"]
    assert matching(graph="summarize", session="s1") == ["c"]
    assert matching(status="live") == ["c"]
    assert matching(session=None) == ["d"]
    assert matching(tag="x") == ["c", "a"]
    assert matching(search="TOKEN") == ["b"]  # the error, any case
    assert matching(graph="nope") == []
    page = table.build_page(view_from_message({"graph": "fetch"}))[0]
    assert page["view"]["graph"] == "fetch" and page["facets"]["graphs"] == ["fetch", "summarize"]


@pytest.mark.parametrize("message, error", [
    ({"page": -1}, "view.page must be an int >= 0"),
    ({"page": True}, "view.page must be an int >= 0"),
    ({"graph": 3}, "view.graph, view.tag and view.search must be strings"),
    ({"search": "x" * 501}, "500 chars at most"),
    ({"status": "exploded"}, "unknown status 'exploded'"),
    ({"status": ["running"]}, "view.status must be a string"),
    ({"expanded": "all"}, "view.expanded must be a list"),
    ({"session": {"x": 1}}, "view.session must be a string or null"),
])
def test_bad_view_messages_say_which_field(message, error):
    with pytest.raises(ValueError, match=error):
        view_from_message(message)


def test_cancel_all_set_is_every_live_matching_run_on_every_page_and_nothing_else():
    records = [rec(f"live{i:02d}", "running", i=i, tags=["batch"]) for i in range(60)]
    records += [rec("waiting", "waiting", i=61, tags=["batch"]),
                rec("pending", "pending", i=62, tags=["batch"]),
                rec("done", "succeeded", i=63, tags=["batch"]),
                rec("other", "running", i=64, tags=["other"]),
                rec("child", "running", i=65, tags=["batch"], parent_run_id="live00")]
    table, live = table_of(records)
    view = view_from_message({"tag": "batch"})
    page, _ = table.build_page(view)
    wanted = table.live_matching_ids(view)
    assert len(wanted) == page["live_matching"] == 63  # 60 + waiting + pending + child
    assert "done" not in wanted and "other" not in wanted and "child" in wanted
    assert len(page["order"]) < len(wanted), "more than one page: the set is not the page"
    # a run that finished since is read as it is now (through lookup) and left out
    live["live05"] = rec("live05", "failed", i=5, tags=["batch"])
    table.add({"live05": live["live05"]})
    assert "live05" not in table.live_matching_ids(view)
    assert len(table.live_matching_ids(PanelView())) == 63  # unfiltered: "other" too


def test_children_nest_under_their_parent_and_adhoc_parents_are_hidden():
    records = [
        rec("top", "running", i=1, session_id="demo", parent_run_id="adhoc-0123456789ab"),
        rec("kid", "running", i=2, session_id="demo", parent_run_id="top"),
        rec("own", i=3, session_id="my-session", parent_run_id="my-session"),
        rec("orphan", i=4, parent_run_id="run-gone"),
    ]
    table, _ = table_of(records)
    page, rows = table.build_page(PanelView())
    assert page["order"] == [["orphan", 0, 0, False], ["own", 0, 0, False],
                             ["top", 0, 1, True], ["kid", 1, 0, False]]
    shown = {r: table.row(rows[r])["parent_run_id"] for r in rows}
    # a session's own ad-hoc id (or its own session id) says nothing: hidden
    assert shown == {"top": None, "own": None, "kid": "top", "orphan": "run-gone"}
    # an adhoc-… id that is a real run is a real parent
    assert not hides_parent(rec("x", parent_run_id="adhoc-run"), lambda rid: rid == "adhoc-run")
    assert hides_parent(rec("x", parent_run_id="adhoc-run"))


def test_history_goes_in_front_and_is_not_added_twice():
    now = time.time()
    table, _ = table_of([rec("new", i=100, created_at=datetime.fromtimestamp(now, UTC))])
    stored = [rec("old2", i=2), rec("old1", i=1)]  # newest first, as list_records gives them
    assert table.add_history(stored, opened_at=now + 1) == 2
    assert ids(table.build_page(PanelView())[0]) == ["new", "old2", "old1"]
    assert table.add_history(stored, opened_at=now + 1) == 0
    assert table.build_page(PanelView())[0]["counts"] == {"succeeded": 3}


def test_the_table_keeps_at_most_max_runs():
    live = Live()
    table = RunTable(live, max_runs=10)
    table.add({f"r{i}": rec(f"r{i}", i=i) for i in range(25)})
    assert len(table) == 10 and "r14" not in table and "r24" in table
    assert sum(table.build_page(PanelView())[0]["counts"].values()) == 10


def test_dates_are_shown_for_runs_not_started_today():
    now = datetime(2025, 3, 4, 15, 0).astimezone()
    today = now.replace(hour=9, minute=5, second=7)
    assert format_started(today, now) == "09:05:07"
    assert format_started(today - timedelta(days=1), now) == (today - timedelta(days=1)).strftime(
        "%Y-%m-%d %H:%M")
    assert format_started(None, now) == ""
    old = rec("old", started_at=datetime(2020, 1, 2, 3, 4, tzinfo=UTC))
    assert "2020-01-0" in text_table([old])  # local date of a run of an earlier kernel


def test_rows_carry_badges_and_progress_only_when_the_run_has_them():
    plain = record_to_row(rec("plain"))
    assert not {"usage", "progress", "agent_id", "app_id", "retry_of", "open_asks"} & set(plain)
    busy = record_to_row(rec(
        "busy", "waiting", agent_id="agent-7", app_id="app-1",
        meta={"usage": {"calls": 2, "prompt_tokens": 1200, "completion_tokens": 300,
                        "cost": None}, "retry_of": "run-first", "asks": ["ask-1"],
              "progress": {"title": "Indexing", "current": 3, "total": 12, "eta_seconds": 9,
                           "phase": "embed", "status": "running",
                           "updated_at": "2025-03-04T12:00:05Z"}}))
    assert busy["agent_id"] == "agent-7" and busy["app_id"] == "app-1"
    assert busy["usage"]["total_tokens"] == 1500 and busy["usage"]["calls"] == 2
    assert busy["progress"]["percent"] == 25.0 and busy["progress"]["phase"] == "embed"
    assert busy["progress"]["updated_at"] == T0.timestamp() + 5
    assert busy["retry_of"] == "run-first" and busy["open_asks"] == 1
    assert progress_info({"progress": "50%"}) is None and usage_badge({"usage": {}}) is None
    assert progress_info({"progress": {"percent": 250}})["percent"] == 100.0


def test_row_tracebacks_are_cut_and_the_detail_sends_more():
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "ValueError: boom"
    record = rec("r", "failed", error="ValueError: boom", meta={"traceback": tb})
    row = record_to_row(record)
    assert len(row["traceback"]) == run_table.ROW_TRACEBACK_CHARS
    assert row["traceback"].endswith("ValueError: boom") and row["traceback"].startswith("…")
    detail = record_detail(record)
    assert len(detail["traceback"]) == run_table.DETAIL_TRACEBACK_CHARS
    assert detail["retryable"] is True and detail["timings"]["duration_s"] == pytest.approx(0.995)


def test_json_previews_are_bounded_whatever_the_value_and_show_reprs():
    deep: list = ["deep"]
    for _ in range(50):
        deep = [deep]
    huge = {"rows": list(range(1_000_000)), "text": "x" * 1_000_000, "nested": deep}
    start = time.perf_counter()
    preview = json_preview(huge)
    assert time.perf_counter() - start < 0.5
    assert len(preview["text"]) <= run_table.DETAIL_JSON_CHARS and not preview["exact"]
    assert "more items" in preview["text"]
    exact = json_preview({"total": 1.5, "names": ["a", HOSTILE]})
    assert exact["exact"] and json.loads(exact["text"]) == {"total": 1.5, "names": ["a", HOSTILE]}

    class Model:
        def __repr__(self) -> str:
            return "Model(weights=...)"

    shown = json.loads(json_preview({"model": Model(), "nan": float("nan")})["text"])
    assert shown["model"]["__repr__"] == "Model(weights=...)"
    assert shown["model"]["__type__"].endswith("Model") and shown["nan"] == "nan"
    cyclic: list = []
    cyclic.append(cyclic)
    assert "__repr__" in json_preview(cyclic)["text"]


def test_log_step_and_transcript_pages_are_cut():
    lines = [{"time": 1.0, "level": "INFO", "message": HOSTILE + "y" * 5000}] * 300
    page = log_page({"lines": lines, "total": 300}, offset=200, limit=100, search=None,
                    levels=None)
    assert len(page["lines"]) == 100 and page["total"] == 300 and page["offset"] == 200
    assert len(page["lines"][0]["message"]) == run_table.LOG_LINE_CHARS
    assert page["lines"][0]["message"].startswith(HOSTILE)  # as text; the UI escapes
    steps = [{"step_id": str(i), "kind": "tool", "name": f"t{i}", "inputs_preview": "i" * 3000,
              "outputs_preview": None, "started_at": "2025-03-04T12:00:00Z",
              "duration_s": 0.5, "error": None} for i in range(120)]
    newest = step_page(steps, None)
    assert newest["offset"] == 70 and [s["name"] for s in newest["items"]][-1] == "t119"
    assert len(newest["items"][0]["inputs_preview"]) == run_table.STEP_PREVIEW_CHARS
    assert step_page(steps, 0)["items"][0]["name"] == "t0"
    entries = [{"kind": "ask", "text": "t" * 9000, "ask_id": "a", "at": "2025-03-04T12:00:00Z"}
               for _ in range(150)]
    shown = transcript_entries(entries)
    assert shown["total"] == 150 and len(shown["items"]) == run_table.TRANSCRIPT_ENTRIES
    assert len(shown["items"][0]["text"]) == run_table.TRANSCRIPT_TEXT_CHARS
    assert shown["items"][0]["at"] == T0.timestamp()


class FakeAsk:
    """The shape of ``ag_jupyter.runtime.Ask`` (interface of issue 15), for the pure
    conversion only."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_asks_become_bounded_json():
    ask = FakeAsk(ask_id="ask-1", run_id="run-1", kind="choices", prompt=HOSTILE * 1000,
                  options=[{"id": f"o{i}", "label": HOSTILE} for i in range(80)],
                  created_at=T0, deadline=T0 + timedelta(minutes=5))
    shown = ask_to_dict(ask, graph_id="g")
    assert len(shown["prompt"]) == run_table.ASK_PROMPT_CHARS
    assert len(shown["options"]) == run_table.ASK_OPTIONS
    assert shown["deadline"] == T0.timestamp() + 300 and shown["max_bytes"] is None
    files = ask_to_dict(FakeAsk(ask_id="f", run_id="r", kind="files", prompt="p", options=[],
                                created_at=T0, deadline=None))
    assert files["max_bytes"] == run_table.FILES_MAX_BYTES and files["deadline"] is None
    assert ask_to_dict(FakeAsk(ask_id="x", run_id="r", kind="weird", prompt="p", options=None,
                               created_at=None, deadline=None))["kind"] == "text"


def test_snapshots_show_open_asks_escaped():
    asks = [{"ask_id": "ask-1", "run_id": "run-1", "kind": "choices", "prompt": HOSTILE,
             "options": [{"id": "a", "label": HOSTILE}]}]
    html = html_table([rec("r")], asks=asks)
    assert "<img" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") == 2
    text = text_table([rec("r")], asks=asks)
    assert "1 open ask(s)" in text and HOSTILE in text and "ask-1" in text


@pytest.mark.parametrize("value, error", [
    (None, "answer.value must be a string"),
    (["a"], "answer.value must be a string"),
    ("x" * 100_001, "100,000 characters at most"),
    ({"choice": 3}, "must be an option id"),
    ({"files": []}, "1 to 20 files"),
    ({"files": [{"name": "a"}]}, "a name and base64 data"),
    ({"files": [{"name": "a", "data": "***"}]}, "not base64"),
    ({"files": [{"name": "a", "data": base64.b64encode(b"x" * 2048).decode()}]}, "capped at"),
    ({"choice": "a", "extra": 1}, "answer.value must be"),
])
def test_bad_answers_are_refused_with_the_reason(value, error):
    with pytest.raises(ValueError, match=error):
        check_answer({"ask_id": "ask-1", "value": value}, max_bytes=1024)


def test_good_answers_pass_as_the_runtime_takes_them():
    assert check_answer({"ask_id": "a", "value": "yes"}) == ("a", "yes")
    assert check_answer({"ask_id": "a", "value": {"choice": "o1"}}) == ("a", {"choice": "o1"})
    data = base64.b64encode(b"hello").decode()
    _, value = check_answer({"ask_id": "a", "value": {"files": [
        {"name": "h.txt", "data": data, "mime": "text/plain"}]}})
    assert value == {"files": [{"name": "h.txt", "data": data, "mime": "text/plain"}]}
    for bad_id in (None, "", 3, "x" * 2000):
        with pytest.raises(ValueError, match="ask_id"):
            check_answer({"ask_id": bad_id, "value": "x"})


def test_token_bucket_refills_on_its_clock():
    now = [0.0]
    bucket = TokenBucket(3, 2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_s() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() and not bucket.take()
    now[0] = 100
    assert sum(bucket.take() for _ in range(10)) == 3  # never more than its capacity
