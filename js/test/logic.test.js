import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  applyRowsMessage,
  cancelMode,
  cellTexts,
  clockOffset,
  countByStatus,
  durationOf,
  filterRows,
  firstLine,
  formatClock,
  formatDuration,
  isCancellable,
  isLive,
  NO_SESSION,
  normalizeRow,
  orderRows,
  paginate,
  statusLabel,
  summaryText,
  toText,
  visibleLiveRunIds,
} from "../run_panel.js";

/** A complete, valid row; `extra` overrides fields. */
function row(runId, extra = {}) {
  return {
    run_id: runId,
    graph_id: "g",
    status: "running",
    session_id: null,
    tags: [],
    created_at: 100,
    started_at: 100,
    finished_at: null,
    error: null,
    traceback: null,
    parent_run_id: null,
    ...extra,
  };
}

const ids = (list) => list.map((x) => (x.row ? x.row.run_id : x.run_id));
const rowsMsg = (fields) => ({ type: "rows", reset: false, upsert: [], remove: [], ...fields });

describe("applyRowsMessage", () => {
  test("reset replaces every row", () => {
    const map = new Map([["old", row("old")]]);
    const out = applyRowsMessage(map, rowsMsg({ reset: true, upsert: [row("a"), row("b")] }));
    assert.equal(out, map);
    assert.deepEqual([...map.keys()].sort(), ["a", "b"]);
  });

  test("reset with no upserts empties the table", () => {
    const map = new Map([["old", row("old")]]);
    applyRowsMessage(map, { type: "rows", reset: true });
    assert.equal(map.size, 0);
  });

  test("merge upserts by run_id and keeps other rows", () => {
    const map = new Map([["a", row("a")], ["b", row("b")]]);
    applyRowsMessage(map, rowsMsg({ upsert: [row("a", { status: "failed" }), row("c")] }));
    assert.deepEqual([...map.keys()].sort(), ["a", "b", "c"]);
    assert.equal(map.get("a").status, "failed");
    assert.equal(map.get("b").status, "running");
  });

  test("remove deletes listed ids; unknown ids are harmless", () => {
    const map = new Map([["a", row("a")], ["b", row("b")]]);
    applyRowsMessage(map, rowsMsg({ remove: ["a", "nope"] }));
    assert.deepEqual([...map.keys()], ["b"]);
  });

  test("an id both upserted and removed ends up removed", () => {
    const map = new Map();
    applyRowsMessage(map, rowsMsg({ upsert: [row("a")], remove: ["a"] }));
    assert.equal(map.size, 0);
  });

  test("malformed rows and messages are ignored", () => {
    const map = new Map([["keep", row("keep")]]);
    applyRowsMessage(map, { type: "notice", text: "x", upsert: [row("n")] });
    applyRowsMessage(map, null);
    applyRowsMessage(map, "rows");
    applyRowsMessage(map, { type: "bogus", reset: true });
    applyRowsMessage(map, { type: "rows", upsert: "not a list", remove: { a: 1 } });
    applyRowsMessage(
      map,
      rowsMsg({
        upsert: [null, 5, "x", [], { run_id: 7 }, { run_id: "" }, { graph_id: "g" }, row("ok")],
        remove: [null, 3, { run_id: "keep" }],
      }),
    );
    assert.deepEqual([...map.keys()].sort(), ["keep", "ok"]);
  });

  test("fields of the wrong type are coerced, not trusted", () => {
    const map = new Map();
    applyRowsMessage(
      map,
      rowsMsg({
        upsert: [
          {
            run_id: "r",
            graph_id: { evil: 1 },
            status: 3,
            tags: ["a", 1, null, { x: 1 }],
            created_at: "yesterday",
            started_at: Number.NaN,
            error: ["boom"],
            parent_run_id: "r",
          },
        ],
      }),
    );
    const r = map.get("r");
    assert.equal(r.graph_id, "");
    assert.equal(r.status, "unknown");
    assert.deepEqual(r.tags, ["a", "1"]);
    assert.equal(r.created_at, null);
    assert.equal(r.started_at, null);
    assert.equal(r.error, null);
    assert.equal(r.parent_run_id, null, "a run cannot be its own parent");
  });

  test("onChange reports added, changed and removed rows (not for resets)", () => {
    const map = new Map([["a", row("a")], ["b", row("b")]]);
    const seen = [];
    const record = (id, before, after) => seen.push([id, Boolean(before), Boolean(after)]);
    applyRowsMessage(map, rowsMsg({ upsert: [row("a"), row("c")], remove: ["b"] }), record);
    assert.deepEqual(seen, [["a", true, true], ["c", false, true], ["b", true, false]]);
    seen.length = 0;
    applyRowsMessage(map, rowsMsg({ reset: true, upsert: [row("z")] }), record);
    assert.deepEqual(seen, []);
  });
});

describe("normalizeRow", () => {
  test("keeps a valid row as is", () => {
    const r = row("x", { tags: ["t"], session_id: "s", error: "e", parent_run_id: "p" });
    assert.deepEqual(normalizeRow(r), r);
  });

  test("rejects rows without a string run_id", () => {
    for (const bad of [undefined, null, [], {}, { run_id: 1 }, { run_id: "" }]) {
      assert.equal(normalizeRow(bad), null);
    }
  });
});

describe("status helpers", () => {
  test("isLive is true exactly for unfinished statuses", () => {
    for (const s of ["pending", "running", "waiting", "cancellation_requested"]) assert.ok(isLive(s), s);
    for (const s of ["succeeded", "failed", "canceled", "unknown", undefined]) assert.ok(!isLive(s), s);
  });

  test("isCancellable excludes cancellation_requested", () => {
    assert.ok(isCancellable("waiting"));
    assert.ok(!isCancellable("cancellation_requested"));
    assert.ok(!isCancellable("failed"));
  });

  test("cancelMode maps status (and a local request) to the button state", () => {
    assert.equal(cancelMode("running"), "cancel");
    assert.equal(cancelMode("pending", true), "cancelling");
    assert.equal(cancelMode("cancellation_requested"), "cancelling");
    assert.equal(cancelMode("succeeded"), "none");
    assert.equal(cancelMode("canceled", true), "none");
  });

  test("statusLabel spells underscores as spaces", () => {
    assert.equal(statusLabel("cancellation_requested"), "cancellation requested");
    assert.equal(statusLabel(""), "unknown");
  });
});

describe("countByStatus / summaryText", () => {
  const rows = [
    row("1", { status: "running" }),
    row("2", { status: "running" }),
    row("3", { status: "pending" }),
    row("4", { status: "failed" }),
    row("5", { status: "mystery" }),
  ];

  test("counts only statuses present", () => {
    assert.deepEqual(countByStatus(rows), { running: 2, pending: 1, failed: 1, mystery: 1 });
    assert.deepEqual(countByStatus(new Map(rows.map((r) => [r.run_id, r])).values()), {
      running: 2,
      pending: 1,
      failed: 1,
      mystery: 1,
    });
  });

  test("summary lists non-zero counts in a fixed order plus the total", () => {
    assert.equal(
      summaryText({ failed: 3, pending: 30, running: 12, succeeded: 100, canceled: 2, waiting: 0 }),
      "12 running · 30 pending · 100 succeeded · 3 failed · 2 canceled · 147 total",
    );
    assert.equal(summaryText(countByStatus(rows)), "2 running · 1 pending · 1 failed · 1 mystery · 5 total");
    assert.equal(summaryText({}), "no runs");
  });
});

describe("filterRows", () => {
  const rows = [
    row("run-A", { status: "running", session_id: "s1", tags: ["alpha", "beta"], graph_id: "Summarize" }),
    row("run-B", { status: "pending", session_id: "s2", tags: ["beta"] }),
    row("run-C", { status: "failed", session_id: null, error: "KeyError: 'Missing'" }),
    row("run-D", { status: "cancellation_requested", session_id: "s1" }),
    row("run-E", { status: "succeeded", session_id: "s2", tags: ["gamma"] }),
  ];
  const f = (filters) => ids(filterRows(rows, filters)).sort();

  test("no filters keep everything", () => {
    assert.equal(f({}).length, 5);
    assert.equal(f({ status: "all", session: "", tag: "", search: "" }).length, 5);
  });

  test("status: exact status, and 'live'", () => {
    assert.deepEqual(f({ status: "failed" }), ["run-C"]);
    assert.deepEqual(f({ status: "live" }), ["run-A", "run-B", "run-D"]);
  });

  test("session: exact id, and rows without a session", () => {
    assert.deepEqual(f({ session: "s1" }), ["run-A", "run-D"]);
    assert.deepEqual(f({ session: NO_SESSION }), ["run-C"]);
  });

  test("tag", () => {
    assert.deepEqual(f({ tag: "beta" }), ["run-A", "run-B"]);
    assert.deepEqual(f({ tag: "bet" }), [], "tags match exactly, not as substrings");
  });

  test("search is a case-insensitive substring over id, graph, session, tags, error", () => {
    assert.deepEqual(f({ search: "RUN-b" }), ["run-B"]);
    assert.deepEqual(f({ search: "summar" }), ["run-A"]);
    assert.deepEqual(f({ search: "S2" }), ["run-B", "run-E"]);
    assert.deepEqual(f({ search: "GAMM" }), ["run-E"]);
    assert.deepEqual(f({ search: "missing" }), ["run-C"]);
    assert.deepEqual(f({ search: "  keyerror  " }), ["run-C"], "surrounding spaces ignored");
    assert.deepEqual(f({ search: "nothing-like-this" }), []);
  });

  test("filters combine", () => {
    assert.deepEqual(f({ status: "live", session: "s1", search: "run-a" }), ["run-A"]);
  });

  test("visibleLiveRunIds: cancellable rows that pass the filters", () => {
    assert.deepEqual(visibleLiveRunIds(rows, {}).sort(), ["run-A", "run-B"]);
    assert.deepEqual(visibleLiveRunIds(rows, { session: "s2" }), ["run-B"]);
    assert.deepEqual(visibleLiveRunIds(rows, { status: "failed" }), []);
  });
});

describe("orderRows", () => {
  test("newest first by created_at, then run_id (descending); missing time last", () => {
    const rows = [
      row("a", { created_at: 1 }),
      row("b", { created_at: 3 }),
      row("c", { created_at: 2 }),
      row("d", { created_at: 2 }),
      row("e", { created_at: null }),
    ];
    assert.deepEqual(ids(orderRows(rows)), ["b", "d", "c", "a", "e"]);
  });

  test("children follow their parent (oldest child first), nested, with depth", () => {
    const rows = [
      row("p1", { created_at: 10 }),
      row("p2", { created_at: 20 }),
      row("c1b", { created_at: 13, parent_run_id: "p1" }),
      row("c1a", { created_at: 12, parent_run_id: "p1" }),
      row("g1", { created_at: 14, parent_run_id: "c1a" }),
    ];
    const out = orderRows(rows);
    assert.deepEqual(ids(out), ["p2", "p1", "c1a", "g1", "c1b"]);
    assert.deepEqual(out.map((e) => e.depth), [0, 0, 1, 2, 1]);
    assert.deepEqual(out.map((e) => e.childCount), [0, 2, 1, 0, 0]);
  });

  test("a child whose parent is absent is a top-level row", () => {
    const out = orderRows([row("orphan", { created_at: 5, parent_run_id: "gone" }), row("x", { created_at: 1 })]);
    assert.deepEqual(ids(out), ["orphan", "x"]);
    assert.deepEqual(out.map((e) => e.depth), [0, 0]);
  });

  test("collapsed parents hide descendants but keep their child count", () => {
    const rows = [
      row("p", { created_at: 1 }),
      row("c", { created_at: 2, parent_run_id: "p" }),
      row("g", { created_at: 3, parent_run_id: "c" }),
    ];
    const out = orderRows(rows, new Set(["p"]));
    assert.deepEqual(ids(out), ["p"]);
    assert.equal(out[0].childCount, 1);
    assert.equal(out[0].collapsed, true);
  });

  test("parent cycles do not drop rows", () => {
    const rows = [row("a", { parent_run_id: "b" }), row("b", { parent_run_id: "a" })];
    assert.deepEqual(ids(orderRows(rows)).sort(), ["a", "b"]);
  });

  test("a 5000-deep chain does not overflow the stack", () => {
    const rows = Array.from({ length: 5000 }, (_, i) => row(`r${i}`, { parent_run_id: i ? `r${i - 1}` : null }));
    const out = orderRows(rows);
    assert.equal(out.length, 5000);
    assert.equal(out[4999].depth, 4999);
  });
});

describe("paginate", () => {
  const items = Array.from({ length: 7 }, (_, i) => i);

  test("plain items page by pageSize", () => {
    assert.deepEqual(paginate(items, 0, 3), { items: [0, 1, 2], page: 0, pageCount: 3, topLevelCount: 7 });
    assert.deepEqual(paginate(items, 2, 3).items, [6]);
  });

  test("page past the end clamps to the last page; negative or junk to the first", () => {
    assert.equal(paginate(items, 99, 3).page, 2);
    assert.deepEqual(paginate(items, 99, 3).items, [6]);
    assert.equal(paginate(items, -4, 3).page, 0);
    assert.equal(paginate(items, Number.NaN, 3).page, 0);
  });

  test("empty input is one empty page", () => {
    assert.deepEqual(paginate([], 5, 50), { items: [], page: 0, pageCount: 1, topLevelCount: 0 });
  });

  test("page size counts top-level rows; children stay with their parent", () => {
    const entries = [
      { id: "a", depth: 0 },
      { id: "a1", depth: 1 },
      { id: "a2", depth: 2 },
      { id: "b", depth: 0 },
      { id: "c", depth: 0 },
      { id: "c1", depth: 1 },
    ];
    const p0 = paginate(entries, 0, 2);
    assert.deepEqual(p0.items.map((e) => e.id), ["a", "a1", "a2", "b"]);
    assert.equal(p0.pageCount, 2);
    assert.deepEqual(paginate(entries, 1, 2).items.map((e) => e.id), ["c", "c1"]);
  });

  test("10,000 rows: order + page stays fast and returns one page", () => {
    const rows = Array.from({ length: 10000 }, (_, i) =>
      row(`r${String(i).padStart(5, "0")}`, { created_at: i, parent_run_id: i % 10 ? `r${String(i - (i % 10)).padStart(5, "0")}` : null }),
    );
    const start = performance.now();
    const page = paginate(orderRows(filterRows(rows, { status: "live" })), 0, 50);
    const elapsed = performance.now() - start;
    assert.equal(page.pageCount, 20);
    assert.equal(page.items.length, 500);
    assert.equal(page.items[0].row.run_id, "r09990");
    assert.ok(elapsed < 500, `took ${elapsed} ms`);
  });
});

describe("durations and times", () => {
  test("formatDuration edge cases", () => {
    assert.equal(formatDuration(0), "0 ms");
    assert.equal(formatDuration(0.85), "850 ms");
    assert.equal(formatDuration(0.9996), "1.0 s");
    assert.equal(formatDuration(12.34), "12.3 s");
    assert.equal(formatDuration(59.9), "59.9 s");
    assert.equal(formatDuration(59.96), "1m 00s");
    assert.equal(formatDuration(61), "1m 01s");
    assert.equal(formatDuration(245), "4m 05s");
    assert.equal(formatDuration(3599.9), "59m 59s");
    assert.equal(formatDuration(3725), "1h 02m");
    assert.equal(formatDuration(-3), "0 ms");
    assert.equal(formatDuration(null), "");
    assert.equal(formatDuration(Number.NaN), "");
  });

  test("durationOf: finished, live, never started, terminal without finish", () => {
    assert.equal(durationOf(row("a", { started_at: 10, finished_at: 12.5, status: "succeeded" }), 99), 2.5);
    assert.equal(durationOf(row("b", { started_at: 10, status: "running" }), 15), 5);
    assert.equal(durationOf(row("c", { started_at: null, status: "pending" }), 15), null);
    assert.equal(durationOf(row("d", { started_at: 10, status: "failed" }), 15), null);
    assert.equal(durationOf(row("e", { started_at: 10, status: "running" }), 8), 0, "clock skew clamps");
  });

  test("clockOffset is server minus browser", () => {
    assert.equal(clockOffset(1005, 1000), 5);
    assert.equal(clockOffset(undefined, 1000), 0);
  });

  test("formatClock gives local HH:MM:SS", () => {
    const epoch = new Date(2024, 0, 2, 3, 4, 5).getTime() / 1000;
    assert.equal(formatClock(epoch), "03:04:05");
    assert.equal(formatClock(null), "");
  });

  test("firstLine takes the first non-blank line", () => {
    assert.equal(firstLine("\n  boom  \nmore"), "boom");
    assert.equal(firstLine(null), "");
  });
});

describe("untrusted text stays text", () => {
  const hostile = "<img src=x onerror=alert(1)>";
  const amp = "&lt;b&gt;&amp;";

  test("cellTexts returns the literal strings", () => {
    const r = normalizeRow(
      row(hostile, {
        graph_id: `<script>alert(2)</script>`,
        session_id: amp,
        tags: [`"><svg onload=alert(3)>`, amp],
        error: `<b>bold</b>\nsecond line`,
        traceback: "<pre>x</pre>",
        parent_run_id: `</td><td>`,
      }),
    );
    const t = cellTexts(r, 200);
    assert.equal(t.run_id, hostile);
    assert.equal(t.graph_id, "<script>alert(2)</script>");
    assert.equal(t.session, amp);
    assert.equal(t.tags, `"><svg onload=alert(3)>, ${amp}`);
    assert.equal(t.error, "<b>bold</b>");
    assert.equal(t.parent, "</td><td>");
    assert.equal(t.status, "running");
  });

  test("toText passes strings through and drops objects", () => {
    assert.equal(toText(hostile), hostile);
    assert.equal(toText(3), "3");
    assert.equal(toText({ toString: () => "<b>" }), "");
    assert.equal(toText(null), "");
  });

  test("hostile ids survive the store and the filters unchanged", () => {
    const map = applyRowsMessage(new Map(), rowsMsg({ upsert: [row(hostile)] }));
    assert.ok(map.has(hostile));
    assert.deepEqual(ids(filterRows(map.values(), { search: "ONERROR" })), [hostile]);
    assert.deepEqual(visibleLiveRunIds(map.values(), {}), [hostile]);
  });
});
