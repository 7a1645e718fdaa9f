import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  applyPageMessage,
  cancelMode,
  cellTexts,
  clockOffset,
  createPageState,
  defaultView,
  durationOf,
  firstLine,
  formatClock,
  formatDuration,
  isCancellable,
  isLive,
  MAX_SEARCH_LENGTH,
  normalizeRow,
  pagerText,
  statusLabel,
  summaryText,
  toText,
  viewFromKernel,
  viewMessage,
  withFilters,
  withPage,
  withToggle,
} from "../../ag_jupyter/widgets/static/run_panel.js";
import { row as kernelRow } from "../test_support/rows.js";

/** A complete, valid row (as normalizeRow returns it): the kernel's row with every
 * optional field at its default; `extra` overrides fields. */
function row(runId, extra = {}) {
  return kernelRow(runId, {
    agent_id: null,
    app_id: null,
    usage: null,
    progress: null,
    retry_of: null,
    open_asks: 0,
    executor: null,
    ...extra,
  });
}

/** A well-formed page message; `order` entries default to top-level leaves. */
function page(fields = {}) {
  return {
    type: "page",
    reset: false,
    order: [],
    upsert: [],
    counts: {},
    total: 0,
    matching: 0,
    live_matching: 0,
    page: 0,
    page_count: 1,
    page_size: 50,
    facets: { sessions: [], tags: [] },
    server_time: 1000,
    ...fields,
  };
}
const leaf = (id) => [id, 0, 0, false];
const orderIds = (state) => state.order.map((e) => e.id);
const cachedIds = (state) => [...state.rows.keys()].sort();

describe("applyPageMessage", () => {
  test("a reset page fills the cache and every page field", () => {
    const state = createPageState();
    state.rows.set("stale", row("stale"));
    const change = applyPageMessage(
      state,
      page({
        reset: true,
        order: [["p", 0, 2, true], ["c1", 1, 0, false], ["c2", 1, 1, false], leaf("q")],
        upsert: [row("p"), row("c1", { parent_run_id: "p" }), row("c2", { parent_run_id: "p" }), row("q")],
        counts: { running: 3, failed: 1 },
        total: 9,
        matching: 7,
        live_matching: 4,
        page: 1,
        page_count: 3,
        page_size: 2,
        facets: { sessions: ["s1", null], tags: ["t"] },
        server_time: 1005,
      }),
      1000,
    );
    assert.deepEqual(state.order, [
      { id: "p", depth: 0, childCount: 2, expanded: true },
      { id: "c1", depth: 1, childCount: 0, expanded: false },
      { id: "c2", depth: 1, childCount: 1, expanded: false },
      { id: "q", depth: 0, childCount: 0, expanded: false },
    ]);
    assert.deepEqual(cachedIds(state), ["c1", "c2", "p", "q"], "the stale row is forgotten");
    assert.equal(state.rows.get("c1").parent_run_id, "p");
    assert.deepEqual(state.counts, { running: 3, failed: 1 });
    assert.equal(state.total, 9);
    assert.equal(state.matching, 7);
    assert.equal(state.liveMatching, 4);
    assert.equal(state.page, 1);
    assert.equal(state.pageCount, 3);
    assert.equal(state.pageSize, 2);
    assert.deepEqual(state.facets, { sessions: ["s1", null], tags: ["t"], graphs: [] });
    assert.equal(state.offset, 5);
    assert.deepEqual([...change.changed].sort(), ["c1", "c2", "p", "q"]);
    assert.equal(change.orderChanged, true);
    assert.equal(change.facetsChanged, true);
  });

  test("reset forgets cached rows even when they stay in order", () => {
    const state = createPageState();
    applyPageMessage(state, page({ order: [leaf("a"), leaf("b")], upsert: [row("a"), row("b")] }));
    // A reset that re-sends only "a": "b" cannot be drawn, so it leaves the order too.
    applyPageMessage(state, page({ reset: true, order: [leaf("a"), leaf("b")], upsert: [row("a")] }));
    assert.deepEqual(orderIds(state), ["a"]);
    assert.deepEqual(cachedIds(state), ["a"]);
  });

  test("an incremental page keeps unchanged cached rows and reports only the changed ones", () => {
    const state = createPageState();
    applyPageMessage(state, page({ order: [leaf("a"), leaf("b")], upsert: [row("a"), row("b")] }));
    const cachedB = state.rows.get("b");
    const change = applyPageMessage(
      state,
      page({ order: [leaf("a"), leaf("b")], upsert: [row("a", { status: "failed" })] }),
    );
    assert.equal(state.rows.get("a").status, "failed");
    assert.equal(state.rows.get("b"), cachedB, "b was not re-sent, so the cached object stays");
    assert.deepEqual([...change.changed], ["a"]);
    assert.equal(change.orderChanged, false);
    assert.equal(change.facetsChanged, false);
  });

  test("rows that left the order are dropped; a re-ordered page reports orderChanged", () => {
    const state = createPageState();
    const abc = ["a", "b", "c"];
    applyPageMessage(state, page({ order: abc.map(leaf), upsert: abc.map((id) => row(id)) }));
    const change = applyPageMessage(state, page({ order: [leaf("n"), leaf("a")], upsert: [row("n")] }));
    assert.deepEqual(orderIds(state), ["n", "a"]);
    assert.deepEqual(cachedIds(state), ["a", "n"]);
    assert.equal(change.orderChanged, true);
  });

  test("same ids with another depth, child count or expanded flag is an order change", () => {
    const state = createPageState();
    applyPageMessage(state, page({ order: [["p", 0, 1, false], leaf("q")], upsert: [row("p"), row("q")] }));
    for (const order of [
      [["p", 0, 1, true], leaf("q")],
      [["p", 0, 2, true], leaf("q")],
      [["p", 0, 2, true], ["q", 1, 0, false]],
    ]) {
      assert.equal(applyPageMessage(state, page({ order })).orderChanged, true, JSON.stringify(order));
    }
    const same = page({ order: [["p", 0, 2, true], ["q", 1, 0, false]] });
    assert.equal(applyPageMessage(state, same).orderChanged, false);
    assert.deepEqual(state.order[0], { id: "p", depth: 0, childCount: 2, expanded: true });
  });

  test("upserted rows that are not in the order are not cached", () => {
    const state = createPageState();
    const change = applyPageMessage(state, page({ order: [leaf("a")], upsert: [row("a"), row("elsewhere")] }));
    assert.deepEqual(cachedIds(state), ["a"]);
    assert.deepEqual([...change.changed], ["a"]);
  });

  test("messages that are not page messages are ignored and leave the state alone", () => {
    const state = createPageState();
    applyPageMessage(state, page({ order: [leaf("keep")], upsert: [row("keep")], total: 1 }));
    const before = JSON.stringify([...state.rows], null) + JSON.stringify(state);
    for (const bad of [
      null,
      "page",
      [],
      { type: "notice", text: "x" },
      { type: "rows", reset: true, upsert: [row("n")], remove: [] },
      { type: "bogus", reset: true, order: [] },
      { type: "page", reset: true, upsert: [row("n")] }, // no order at all
      { type: "page", reset: true, order: "a,b" },
    ]) {
      assert.equal(applyPageMessage(state, bad), null, JSON.stringify(bad));
    }
    assert.equal(JSON.stringify([...state.rows], null) + JSON.stringify(state), before);
  });

  test("malformed order items and rows are skipped, the rest applies", () => {
    const state = createPageState();
    applyPageMessage(
      state,
      page({
        order: [
          ...[null, "a", 5, { 0: "a" }, [7, 0, 0, false], ["", 0, 0, false]],
          leaf("a"),
          leaf("a"),
          ["b", -1, "x", "yes"],
          leaf("ghost"),
        ],
        upsert: [null, 5, "x", [], { run_id: 7 }, { run_id: "" }, { graph_id: "g" }, row("a"), row("b")],
      }),
    );
    assert.deepEqual(state.order, [
      { id: "a", depth: 0, childCount: 0, expanded: false },
      // bad depth / child count become 0; "expanded" must be a real true on a parent
      { id: "b", depth: 0, childCount: 0, expanded: false },
    ]);
    assert.deepEqual(cachedIds(state), ["a", "b"], "no row for 'ghost', so it is not shown");
  });

  test("malformed counts, totals, paging and facets fall back to safe values", () => {
    const state = createPageState();
    applyPageMessage(
      state,
      page({
        order: [],
        counts: { running: 2, failed: -1, pending: "3", waiting: 1.5, ["__proto__"]: 4 },
        total: "9",
        matching: -3,
        live_matching: Number.NaN,
        page: 7,
        page_count: 0,
        page_size: null,
        facets: { sessions: ["s", "s", 3, "", null, null], tags: "t" },
        server_time: "soon",
      }),
    );
    assert.deepEqual(Object.keys(state.counts).sort(), ["__proto__", "running"]);
    assert.equal(Object.getPrototypeOf(state.counts), Object.prototype, "no prototype pollution");
    assert.equal(state.total, 0);
    assert.equal(state.matching, 0);
    assert.equal(state.liveMatching, 0);
    assert.equal(state.pageCount, 1);
    assert.equal(state.page, 0, "page clamped into the page count");
    assert.equal(state.pageSize, 50);
    assert.deepEqual(state.facets, { sessions: ["s", null], tags: [], graphs: [] });
    assert.equal(state.offset, 0);
  });

  test("a message without server_time keeps the previous clock offset", () => {
    const state = createPageState();
    applyPageMessage(state, page({ server_time: 1010 }), 1000);
    applyPageMessage(state, page({ server_time: undefined }), 1000);
    assert.equal(state.offset, 10);
  });

  test("row fields of the wrong type are coerced, not trusted", () => {
    const state = createPageState();
    applyPageMessage(
      state,
      page({
        order: [leaf("r")],
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
    const r = state.rows.get("r");
    assert.equal(r.graph_id, "");
    assert.equal(r.status, "unknown");
    assert.deepEqual(r.tags, ["a", "1"]);
    assert.equal(r.created_at, null);
    assert.equal(r.started_at, null);
    assert.equal(r.error, null);
    assert.equal(r.parent_run_id, null, "a run cannot be its own parent");
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

describe("view state and view messages", () => {
  test("the default view message", () => {
    assert.deepEqual(viewMessage(defaultView()), {
      type: "view",
      page: 0,
      status: "all",
      session: "",
      graph: "",
      tag: "",
      search: "",
      expanded: [],
      collapsed: [],
    });
    assert.deepEqual(viewMessage(), viewMessage(defaultView()), "missing fields get the defaults");
  });

  test("malformed view fields get the defaults; session null survives", () => {
    const msg = viewMessage({
      page: -2,
      status: 5,
      session: null,
      graph: "",
      tag: {},
      search: ["x"],
      expanded: "a",
      collapsed: [1, "c", "c"],
    });
    assert.deepEqual(msg, {
      type: "view",
      page: 0,
      status: "all",
      session: null,
      graph: "",
      tag: "",
      search: "",
      expanded: [],
      collapsed: ["c"],
    });
  });

  test("search is trimmed and cut to the kernel's limit", () => {
    assert.equal(viewMessage({ search: "  key error " }).search, "key error");
    assert.equal(viewMessage({ search: "x".repeat(600) }).search.length, MAX_SEARCH_LENGTH);
  });

  test("a filter change resets the page to 0 and keeps the toggles", () => {
    const before = { ...withToggle(withPage(defaultView(), 3), "p", true) };
    const after = withFilters(before, { status: "failed" });
    assert.deepEqual(viewMessage(after), {
      type: "view",
      page: 0,
      status: "failed",
      session: "",
      graph: "",
      tag: "",
      search: "",
      expanded: ["p"],
      collapsed: [],
    });
    assert.equal(before.page, 3, "the old view object is not mutated");
    assert.equal(withFilters(withPage(before, 2), { session: null }).session, null);
    assert.equal(withFilters(withPage(before, 2), { tag: "t" }).page, 0);
    assert.equal(withFilters(withPage(before, 2), { search: "abc" }).page, 0);
  });

  test("unchanged filters return the same view (no message needed, page kept)", () => {
    const view = withFilters(withPage(defaultView(), 2), { search: "abc" });
    const again = withPage(view, 2);
    assert.equal(withFilters(again, { status: "all", session: "", tag: "", search: " abc " }), again);
    assert.equal(withFilters(again, {}).page, 2);
  });

  test("toggles record explicit opens and closes, each id in one list only", () => {
    let view = defaultView();
    view = withToggle(view, "a", true);
    view = withToggle(view, "b", false);
    assert.deepEqual([view.expanded, view.collapsed], [["a"], ["b"]]);
    view = withToggle(view, "a", false);
    view = withToggle(view, "b", true);
    assert.deepEqual([view.expanded, view.collapsed], [["b"], ["a"]]);
    view = withToggle(view, "b", true);
    assert.deepEqual(view.expanded, ["b"], "no duplicates");
    const msg = viewMessage(withPage(view, 4));
    assert.equal(msg.page, 4, "a toggle keeps the page");
    assert.deepEqual([msg.expanded, msg.collapsed], [["b"], ["a"]]);
  });

  test("withPage accepts only whole non-negative pages", () => {
    assert.equal(withPage(defaultView(), 5).page, 5);
    assert.equal(withPage(defaultView(), -1).page, 0);
    assert.equal(withPage(defaultView(), 1.5).page, 0);
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

describe("summaryText / pagerText", () => {
  test("summary lists non-zero counts in a fixed order plus the kernel's total", () => {
    assert.equal(
      summaryText({ failed: 3, pending: 30, running: 12, succeeded: 100, canceled: 2, waiting: 0 }, 147),
      "12 running · 30 pending · 100 succeeded · 3 failed · 2 canceled · 147 total",
    );
    assert.equal(
      summaryText({ running: 2, mystery: 1, cancellation_requested: 1 }, 4),
      "2 running · 1 cancellation requested · 1 mystery · 4 total",
    );
  });

  test("the total is the kernel's, not the sum of the counts", () => {
    assert.equal(summaryText({ running: 1 }, 5), "1 running · 5 total");
  });

  test("a missing total falls back to the sum; nothing at all is 'no runs'", () => {
    assert.equal(summaryText({ running: 2, failed: 1 }), "2 running · 1 failed · 3 total");
    assert.equal(summaryText({}, 0), "no runs");
    assert.equal(summaryText(null), "no runs");
    assert.equal(summaryText({ running: "2", failed: -1 }, 0), "no runs");
  });

  test("pager text is 1-based and clamped", () => {
    assert.equal(pagerText(0, 1), "page 1 of 1");
    assert.equal(pagerText(2, 5), "page 3 of 5");
    assert.equal(pagerText(9, 3), "page 3 of 3");
    assert.equal(pagerText(-1, 0), "page 1 of 1");
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

  test("hostile ids and facets survive page application unchanged", () => {
    const state = createPageState();
    const facets = { sessions: [hostile], tags: [amp] };
    applyPageMessage(state, page({ order: [leaf(hostile)], upsert: [row(hostile)], facets }));
    assert.deepEqual(orderIds(state), [hostile]);
    assert.equal(state.rows.get(hostile).run_id, hostile);
    assert.deepEqual(state.facets, { sessions: [hostile], tags: [amp], graphs: [] });
  });
});

describe("viewFromKernel", () => {
  test("adopts the kernel's filters and keeps the current value for malformed fields", () => {
    const base = defaultView();
    const next = viewFromKernel(base, {
      status: "live", session: null, tag: "t", search: "  x  ", expanded: ["p", "p", 3], collapsed: "no",
    });
    assert.equal(next.status, "live");
    assert.equal(next.session, null);
    assert.equal(next.tag, "t");
    assert.equal(next.search, "x");
    assert.deepEqual(next.expanded, ["p"]);
    assert.deepEqual(next.collapsed, []);
    assert.notEqual(next, base);
    assert.equal(viewFromKernel(base, "nope"), base);
    assert.equal(viewFromKernel(base, { status: 7 }).status, "all");
  });
});
