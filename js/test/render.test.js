// Drives the real `render` against the tiny fake DOM in ../test_support.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, mock, test } from "node:test";

import { FakeDocument, FakeModel } from "../test_support/fake_dom.js";
import { row } from "../test_support/rows.js";
import { SEARCH_DEBOUNCE_MS } from "../../ag_jupyter/widgets/static/run_panel.js";

const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const frame = () => wait(40); // longer than the 16 ms frame fallback

const leaf = (id) => [id, 0, 0, false];

/** A page message; by default a reset showing `rows` as top-level leaves. */
function pageMsg(rows, fields = {}) {
  return {
    type: "page",
    reset: true,
    order: rows.map((r) => leaf(r.run_id)),
    upsert: rows,
    counts: { running: rows.length },
    total: rows.length,
    matching: rows.length,
    live_matching: rows.length,
    page: 0,
    page_count: 1,
    page_size: 50,
    facets: { sessions: [], tags: [] },
    server_time: Date.now() / 1000,
    ...fields,
  };
}

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

async function mount(title = "Runs") {
  const panel = (await import("../../ag_jupyter/widgets/static/run_panel.js")).default;
  const doc = new FakeDocument();
  const el = doc.createElement("div");
  const model = new FakeModel({ title });
  const cleanup = panel.render({ model, el });
  cleanups.push(cleanup);
  const q = (sel) => el.querySelector(sel);
  const trs = () => el.querySelectorAll("tr").filter((tr) => tr.getAttribute("data-run-id") !== null);
  const ids = () => trs().map((t) => t.getAttribute("data-run-id"));
  const tr = (id) => trs().find((t) => t.getAttribute("data-run-id") === id);
  const send = async (msg) => {
    model.emit("msg:custom", msg, []);
    await frame();
  };
  const views = () => model.sent.filter((m) => m.type === "view");
  return { doc, el, model, cleanup, q, trs, ids, tr, send, views };
}

/** Change a <select>/<input> the way a user would. */
function choose(control, value, event = "change") {
  control.value = value;
  control.dispatch(event);
}

describe("module", () => {
  test("imports in node without a DOM and exposes render", async () => {
    const mod = await import("../../ag_jupyter/widgets/static/run_panel.js");
    assert.equal(typeof mod.default.render, "function");
    assert.equal(mod.default.render, mod.render);
  });
});

describe("render (fake DOM)", () => {
  test("says hello, injects no style (run_panel.css is the widget's _css), shows the empty text", async () => {
    const { el, model, q } = await mount();
    assert.deepEqual(model.sent, [{ type: "hello" }]);
    assert.equal(el.querySelectorAll("style").length, 0);
    assert.ok(q("div.ag-run-panel"));
    assert.ok(!q(".ag-empty").hidden);
    assert.match(q(".ag-empty").textContent, /No runs yet\. Spawn one with context\.runner\(\)\.spawn_run/);
    assert.equal(q(".ag-title").textContent, "Runs");
    assert.equal(q(".ag-counts").textContent, "no runs");
    assert.equal(q("span.ag-page-info").textContent, "page 1 of 1");
    assert.ok(q("button.ag-cancel-visible").disabled);
  });

  test("a reset page's view sets the controls to the kernel's filters", async () => {
    const { q, send, views, model } = await mount();
    await send(
      pageMsg([row("a", { session_id: "s1", tags: ["t"] })], {
        facets: { sessions: ["s1"], tags: ["t"] },
        view: { status: "live", session: "s1", tag: "t", search: "abc", expanded: [], collapsed: [] },
      }),
    );
    assert.equal(q("select.ag-filter-status").value, "live");
    assert.equal(q("select.ag-filter-session").value, "s1");
    assert.equal(q("select.ag-filter-tag").value, "t");
    assert.equal(q("input.ag-search").value, "abc");
    // the next view message keeps those filters instead of silently dropping them
    q("button.ag-next").dispatch("click");
    choose(q("select.ag-filter-tag"), "");
    const last = views().at(-1);
    assert.equal(last.status, "live");
    assert.equal(last.session, "s1");
    assert.equal(last.search, "abc");
    assert.ok(model.sent.length >= 2);
  });

  test("renders rows in the kernel's order with depth, toggles and header", async () => {
    const { q, ids, tr, send } = await mount();
    await send(
      pageMsg(
        [
          row("top", { status: "failed", finished_at: 101 }),
          row("p"),
          row("c", { parent_run_id: "p" }),
          row("g", { parent_run_id: "c" }),
          row("shut"),
        ],
        {
          // deliberately not sorted by anything the browser could compute
          order: [leaf("top"), ["p", 0, 1, true], ["c", 1, 1, true], ["g", 2, 0, false], ["shut", 0, 3, false]],
          counts: { running: 12, failed: 3, succeeded: 5 },
          total: 20,
          matching: 3,
          live_matching: 4,
          page: 1,
          page_count: 4,
        },
      ),
    );
    assert.deepEqual(ids(), ["top", "p", "c", "g", "shut"]);
    assert.ok(q(".ag-empty").hidden);
    assert.equal(q(".ag-counts").textContent, "12 running · 5 succeeded · 3 failed · 20 total");
    assert.equal(q("span.ag-page-info").textContent, "page 2 of 4");
    assert.ok(!q("button.ag-prev").disabled);
    assert.ok(!q("button.ag-next").disabled);
    assert.equal(q("button.ag-cancel-visible").textContent, "Cancel all (4)");

    const chip = tr("top").querySelector(".ag-status");
    assert.equal(chip.getAttribute("data-status"), "failed");
    assert.equal(tr("top").querySelector(".ag-col-duration").textContent, "1.0 s");

    // depth: class, marker and indentation grow with depth
    assert.ok(!tr("p").classList.contains("ag-child"));
    assert.ok(tr("p").querySelector(".ag-child-marker").hidden);
    assert.ok(tr("c").classList.contains("ag-child"));
    assert.ok(!tr("g").querySelector(".ag-child-marker").hidden);
    const pad = (id) => parseFloat(tr(id).querySelector(".ag-col-id").style.paddingLeft);
    assert.ok(pad("p") < pad("c") && pad("c") < pad("g"), "deeper rows are indented more");
    // toggles: only parents, arrow and aria follow `expanded`
    assert.ok(tr("top").querySelector("button.ag-toggle").hidden);
    assert.ok(tr("g").querySelector("button.ag-toggle").hidden);
    const open = tr("p").querySelector("button.ag-toggle");
    const shut = tr("shut").querySelector("button.ag-toggle");
    assert.ok(!open.hidden && !shut.hidden);
    assert.equal(open.textContent, "▾");
    assert.equal(open.getAttribute("aria-expanded"), "true");
    assert.equal(shut.textContent, "▸");
    assert.equal(shut.getAttribute("aria-expanded"), "false");
    assert.equal(shut.getAttribute("title"), "Show 3 child runs");
  });

  test("a Dask run's graph cell names its worker on hover", async () => {
    const { tr, send } = await mount();
    await send(pageMsg([row("d", { worker: "tcp://10.0.0.7:40123" }), row("l")]));
    const dask = tr("d").querySelector(".ag-col-graph");
    assert.equal(dask.getAttribute("title"), "ran on Dask worker tcp://10.0.0.7:40123");
    assert.equal(tr("l").querySelector(".ag-col-graph").getAttribute("title"), null);
  });

  test("a Dask run carries a badge with its executor and worker; a local run none", async () => {
    const { tr, send } = await mount();
    await send(pageMsg([
      row("d", { executor: "dask", worker: "tcp://10.0.0.7:40123" }),
      row("q", { executor: "dask" }),
      row("long", { executor: "dask", worker: "tls://scheduler-node-17.cluster.example.org:8786" }),
      row("l"),
    ]));
    const badge = (id) => tr(id).querySelector(".ag-badge-executor");
    assert.equal(badge("d").textContent, "dask 10.0.0.7:40123");
    assert.equal(badge("d").getAttribute("title"), "ran on dask worker tcp://10.0.0.7:40123");
    assert.equal(badge("q").textContent, "dask");
    assert.equal(badge("q").getAttribute("title"), "runs on dask (no worker yet)");
    assert.equal(badge("long").textContent, "dask scheduler-node-17.clust…");
    assert.equal(badge("l"), null);
  });

  test("an incremental page patches the changed row in place", async () => {
    const { doc, tr, ids, send } = await mount();
    await send(pageMsg([row("a"), row("b")]));
    const before = tr("a");
    const cell = before.querySelector(".ag-col-graph");
    const mutations = doc.mutations;
    await send(
      pageMsg([row("a", { graph_id: "changed" })], {
        reset: false,
        order: [leaf("a"), leaf("b")],
        counts: { running: 2 },
        total: 2,
        matching: 2,
        live_matching: 2,
      }),
    );
    assert.deepEqual(ids(), ["a", "b"], "b is still shown from the cache");
    assert.equal(tr("a"), before, "same <tr> element");
    assert.equal(before.querySelector(".ag-col-graph"), cell, "same cell");
    assert.equal(cell.textContent, "changed");
    assert.equal(doc.mutations - mutations, 1, "only the cell's text node was swapped");
  });

  test("a new order moves existing rows, adds new ones and drops leavers", async () => {
    const { tr, ids, send } = await mount();
    await send(pageMsg([row("a"), row("b"), row("c")]));
    const b = tr("b");
    await send(pageMsg([row("n")], { reset: false, order: [leaf("n"), leaf("b"), leaf("a")] }));
    assert.deepEqual(ids(), ["n", "b", "a"]);
    assert.equal(tr("b"), b, "rows that stay keep their element");
  });

  test("a reset page reuses rows still shown", async () => {
    const { tr, ids, send } = await mount();
    await send(pageMsg([row("a"), row("b")]));
    const a = tr("a");
    await send(pageMsg([row("a", { status: "succeeded", finished_at: 101 })]));
    assert.deepEqual(ids(), ["a"]);
    assert.equal(tr("a"), a);
    assert.equal(a.querySelector(".ag-status").getAttribute("data-status"), "succeeded");
  });

  test("empty texts: no runs at all vs nothing matching", async () => {
    const { q, send } = await mount();
    await send(pageMsg([], { total: 0, matching: 0 }));
    assert.ok(!q(".ag-empty").hidden);
    assert.match(q(".ag-empty").textContent, /^No runs yet/);
    await send(pageMsg([], { counts: { failed: 2 }, total: 2, matching: 0 }));
    assert.ok(!q(".ag-empty").hidden);
    assert.equal(q(".ag-empty").textContent, "No runs match the current filters.");
    assert.equal(q(".ag-counts").textContent, "2 failed · 2 total");
  });

  test("hostile strings render as literal text only", async () => {
    const { el, q, tr, send } = await mount();
    const evil = "<img src=x onerror=alert(1)>";
    await send(
      pageMsg([row(evil, { tags: [evil], error: evil, traceback: evil, session_id: evil, graph_id: evil })], {
        facets: { sessions: [evil], tags: [evil] },
        counts: { [evil]: 1 },
        total: 1,
      }),
    );
    const r = tr(evil);
    assert.ok(r, "row keyed by the literal id");
    assert.equal(r.querySelector(".ag-id").textContent, evil);
    assert.equal(r.querySelector(".ag-col-graph").textContent, evil);
    assert.equal(r.querySelector(".ag-tag").textContent, evil);
    assert.equal(r.querySelector("summary").textContent, evil);
    assert.equal(r.querySelector("pre.ag-traceback").textContent, evil);
    assert.ok(r.querySelector("details.ag-error-details"));
    assert.equal(q(".ag-counts").textContent, `1 ${evil} · 1 total`);
    const labels = (sel) => q(sel).querySelectorAll("option").map((o) => o.textContent);
    assert.ok(labels("select.ag-filter-session").includes(evil));
    assert.ok(labels("select.ag-filter-tag").includes(evil));
    assert.equal(el.querySelectorAll("img").length, 0);
  });

  test("cancel buttons follow the status; a click sends cancel", async () => {
    const { model, tr, send } = await mount();
    await send(pageMsg([row("live"), row("done", { status: "succeeded", finished_at: 102 })]));
    assert.equal(tr("done").querySelector("button.ag-cancel"), null);
    const button = tr("live").querySelector("button.ag-cancel");
    assert.equal(button.textContent, "Cancel");
    button.dispatch("mousedown");
    button.dispatch("click");
    assert.deepEqual(model.sent.at(-1), { type: "cancel", run_id: "live" });
    await frame();
    assert.ok(button.disabled, "disabled while the request is in flight");
    assert.equal(button.textContent, "Cancelling…");
    const order = [leaf("live"), leaf("done")];
    await send(pageMsg([row("live", { status: "cancellation_requested" })], { reset: false, order }));
    assert.equal(tr("live").querySelector("button.ag-cancel"), button, "same button element");
    assert.equal(button.textContent, "Cancelling…");
    assert.ok(button.disabled);
    await send(pageMsg([row("live", { status: "canceled", finished_at: 103 })], { reset: false, order }));
    assert.equal(tr("live").querySelector("button.ag-cancel"), null);
  });

  test("rows stay put while the mouse is down, then re-order", async () => {
    const { ids, tr, send } = await mount();
    await send(pageMsg([row("old")]));
    tr("old").querySelector("button.ag-cancel").dispatch("mousedown");
    await send(pageMsg([row("new")], { reset: false, order: [leaf("new"), leaf("old")] }));
    assert.deepEqual(ids(), ["old"], "held");
    // cell patches still happen while held
    await send(pageMsg([row("old", { graph_id: "patched" })], { reset: false, order: [leaf("new"), leaf("old")] }));
    assert.equal(tr("old").querySelector(".ag-col-graph").textContent, "patched");
    assert.deepEqual(ids(), ["old"]);
    tr("old").querySelector("button.ag-cancel").dispatch("click");
    await frame();
    assert.deepEqual(ids(), ["new", "old"]);
  });

  test("a status filter change sends a view on page 0 and keeps toggles", async () => {
    const { q, tr, send, views } = await mount();
    const order = [["p", 0, 1, true], ["c", 1, 0, false]];
    await send(pageMsg([row("p"), row("c", { parent_run_id: "p" })], { order, page: 2, page_count: 3 }));
    tr("p").querySelector("button.ag-toggle").dispatch("click");
    choose(q("select.ag-filter-status"), "failed");
    assert.deepEqual(views().at(-1), {
      type: "view",
      page: 0,
      status: "failed",
      session: "",
      graph: "",
      tag: "",
      search: "",
      expanded: [],
      collapsed: ["p"],
    });
  });

  test("session and tag selects list the facets, keep the choice, and send views", async () => {
    const { q, send, views } = await mount();
    await send(pageMsg([row("a")], { facets: { sessions: ["s1", "s2", null], tags: ["x", "y"] } }));
    const values = (sel) => q(sel).querySelectorAll("option").map((o) => o.value);
    const session = q("select.ag-filter-session");
    assert.equal(values("select.ag-filter-session").length, 4, "all, (no session), s1, s2");
    assert.deepEqual(values("select.ag-filter-session").filter((v) => v.startsWith("s")), ["s1", "s2"]);
    assert.equal(session.querySelectorAll("option")[1].textContent, "(no session)");
    assert.deepEqual(values("select.ag-filter-tag"), ["", "x", "y"]);

    choose(session, "s2");
    assert.equal(views().at(-1).session, "s2");
    // the kernel's answer no longer lists s2 (its runs are gone): the choice stays
    await send(pageMsg([], { total: 3, facets: { sessions: ["s1"], tags: ["x"] } }));
    assert.deepEqual(values("select.ag-filter-session"), ["", "s1", "s2"]);
    assert.equal(session.value, "s2");

    choose(session, session.querySelectorAll("option")[0].value);
    assert.equal(views().at(-1).session, "", "all sessions");
    await frame();
    assert.deepEqual(values("select.ag-filter-session"), ["", "s1"], "the vanished s2 goes once unselected");

    await send(pageMsg([], { total: 3, facets: { sessions: ["s1", null], tags: ["x"] } }));
    choose(session, session.querySelectorAll("option")[1].value);
    assert.equal(views().at(-1).session, null, "(no session) is sent as null");

    choose(q("select.ag-filter-tag"), "x");
    assert.deepEqual(views().at(-1), {
      type: "view",
      page: 0,
      status: "all",
      session: null,
      graph: "",
      tag: "x",
      search: "",
      expanded: [],
      collapsed: [],
    });
    await send(pageMsg([], { total: 3, facets: { sessions: [], tags: [] } }));
    assert.deepEqual(values("select.ag-filter-tag"), ["", "x"], "the chosen tag stays listed");
    assert.equal(q("select.ag-filter-tag").value, "x");
    assert.equal(session.querySelectorAll("option")[1].textContent, "(no session)", "so does (no session)");
  });

  test("search is debounced: one view after typing stops", async () => {
    const { q, send, views } = await mount();
    await send(pageMsg([row("a")], { page: 1, page_count: 2 }));
    const search = q("input.ag-search");
    choose(search, "b", "input");
    choose(search, "bo", "input");
    choose(search, " boom ", "input");
    assert.equal(views().length, 0, "nothing sent while typing");
    await wait(SEARCH_DEBOUNCE_MS / 2);
    assert.equal(views().length, 0, "still waiting");
    await wait(SEARCH_DEBOUNCE_MS + 60);
    assert.equal(views().length, 1, "exactly one view");
    assert.deepEqual(views()[0], {
      type: "view",
      page: 0,
      status: "all",
      session: "",
      graph: "",
      tag: "",
      search: "boom",
      expanded: [],
      collapsed: [],
    });
    // typed and erased again before the pause: no new request
    choose(search, "boomx", "input");
    choose(search, "boom", "input");
    await wait(SEARCH_DEBOUNCE_MS + 60);
    assert.equal(views().length, 1);
  });

  test("a filter change while a search is pending sends one view with both", async () => {
    const { q, views } = await mount();
    choose(q("input.ag-search"), "err", "input");
    choose(q("select.ag-filter-status"), "live");
    assert.equal(views().length, 1);
    assert.equal(views()[0].search, "err");
    assert.equal(views()[0].status, "live");
    await wait(SEARCH_DEBOUNCE_MS + 60);
    assert.equal(views().length, 1, "the pending search was folded in, not sent again");
  });

  test("the pager asks for the next and previous page", async () => {
    const { q, send, views } = await mount();
    const prev = q("button.ag-prev");
    const next = q("button.ag-next");
    await send(pageMsg([row("a")], { page: 0, page_count: 3, matching: 120 }));
    assert.equal(q("span.ag-page-info").textContent, "page 1 of 3");
    assert.ok(prev.disabled);
    assert.ok(!next.disabled);
    prev.dispatch("click");
    assert.equal(views().length, 0, "no page before the first");
    next.dispatch("click");
    assert.equal(views().at(-1).page, 1);
    next.dispatch("click");
    assert.equal(views().at(-1).page, 1, "counted from the page shown, not from an unanswered request");
    await send(pageMsg([row("b")], { page: 2, page_count: 3, matching: 120 }));
    assert.equal(q("span.ag-page-info").textContent, "page 3 of 3");
    assert.ok(next.disabled);
    next.dispatch("click");
    assert.equal(views().length, 2, "no page after the last");
    prev.dispatch("click");
    assert.equal(views().at(-1).page, 1);
  });

  test("the toggle asks the kernel to close or open a parent, on the same page", async () => {
    const { tr, send, views } = await mount();
    const order = [["p", 0, 2, true], ["c1", 1, 0, false], ["c2", 1, 0, false], ["q", 0, 1, false]];
    const rows = [row("p"), row("c1", { parent_run_id: "p" }), row("c2", { parent_run_id: "p" }), row("q")];
    await send(pageMsg(rows, { order, page: 1, page_count: 2 }));
    tr("p").querySelector("button.ag-toggle").dispatch("click");
    assert.deepEqual(views().at(-1), {
      type: "view",
      page: 1,
      status: "all",
      session: "",
      graph: "",
      tag: "",
      search: "",
      expanded: [],
      collapsed: ["p"],
    });
    tr("q").querySelector("button.ag-toggle").dispatch("click");
    assert.deepEqual([views().at(-1).expanded, views().at(-1).collapsed], [["q"], ["p"]]);
    // the kernel answers with the children of p gone
    const answer = [["p", 0, 2, false], ["q", 0, 1, true]];
    await send(pageMsg([row("p"), row("q")], { order: answer, page: 1, page_count: 2 }));
    assert.equal(tr("c1"), undefined);
    assert.equal(tr("p").querySelector("button.ag-toggle").textContent, "▸");
    tr("p").querySelector("button.ag-toggle").dispatch("click");
    assert.deepEqual([views().at(-1).expanded, views().at(-1).collapsed], [["q", "p"], []]);
  });

  test("Cancel all asks the kernel for its exact set, states the number, and waits for a yes", async () => {
    const { model, q, tr, send } = await mount();
    const button = q("button.ag-cancel-visible");
    await send(pageMsg([row("a"), row("b", { status: "failed", finished_at: 101 })], { live_matching: 7 }));
    assert.ok(!button.disabled);
    assert.equal(button.textContent, "Cancel all (7)");
    assert.match(button.getAttribute("title"), /7 live runs matching the current filters, on every page/);
    button.dispatch("click");
    assert.deepEqual(model.sent.at(-1), { type: "cancel_matching_prepare" }, "nothing is cancelled yet");
    assert.ok(q("div.ag-confirm").hidden, "no question before the kernel says how many");
    // the kernel's count is what the question states (here 6: one finished meanwhile)
    await send({ type: "cancel_offer", token: "tok", count: 6, sample: ["a", "r2"], view: {} });
    assert.ok(!q("div.ag-confirm").hidden);
    assert.equal(q(".ag-confirm-text").textContent, "Cancel 6 live runs matching the current filters (on every page)?");
    assert.equal(q(".ag-confirm-sample").textContent, " a, r2, …");
    assert.equal(q("button.ag-confirm-yes").textContent, "Cancel 6 runs");
    // "Keep them" sends nothing
    const before = model.sent.length;
    q("button.ag-confirm-no").dispatch("click");
    assert.equal(model.sent.length, before);
    assert.ok(q("div.ag-confirm").hidden);
    // ask again, say yes: the token goes back, exactly once
    button.dispatch("click");
    await send({ type: "cancel_offer", token: "tok2", count: 6, sample: [], view: {} });
    q("button.ag-confirm-yes").dispatch("click");
    assert.deepEqual(model.sent.at(-1), { type: "cancel_matching", token: "tok2" });
    assert.ok(q("div.ag-confirm").hidden);
    q("button.ag-confirm-yes").dispatch("click");
    assert.equal(model.sent.filter((m) => m.type === "cancel_matching").length, 1);
    await frame();
    assert.equal(tr("a").querySelector("button.ag-cancel").textContent, "Cancelling…", "shown at once");

    await send(pageMsg([row("b", { status: "failed", finished_at: 101 })], { live_matching: 0 }));
    assert.ok(button.disabled);
    assert.equal(button.textContent, "Cancel all");
    const sent = model.sent.length;
    button.dispatch("click");
    assert.equal(model.sent.length, sent, "nothing sent when nothing is live");
  });

  test("an offer of nothing shows no question, and a filter change drops a pending one", async () => {
    const { q, send } = await mount();
    await send(pageMsg([row("a")], { live_matching: 1 }));
    await send({ type: "cancel_offer", token: "t", count: 0, sample: [] });
    assert.ok(q("div.ag-confirm").hidden);
    await send({ type: "cancel_offer", token: "t", count: 1, sample: ["a"] });
    assert.ok(!q("div.ag-confirm").hidden);
    assert.equal(q("button.ag-confirm-yes").textContent, "Cancel 1 run");
    choose(q("select.ag-filter-status"), "failed");
    assert.ok(q("div.ag-confirm").hidden, "the offer was for the old filters");
  });

  test("live durations tick with the server clock offset", async () => {
    const { tr, send } = await mount();
    const serverNow = Date.now() / 1000 + 3600; // the kernel's clock is an hour ahead
    await send(pageMsg([row("a", { started_at: serverNow - 5 })], { server_time: serverNow }));
    assert.equal(tr("a").querySelector(".ag-col-duration").textContent, "5.0 s");
  });

  test("malformed messages change nothing", async () => {
    const { ids, send } = await mount();
    await send(pageMsg([row("a")]));
    for (const bad of [null, "page", { type: "rows", reset: true, upsert: [] }, { type: "page", reset: true }]) {
      await send(bad);
    }
    assert.deepEqual(ids(), ["a"]);
  });

  test("notice and title updates", async () => {
    const { model, q, send } = await mount();
    await send({ type: "notice", level: "error", text: "run x is already finished" });
    assert.ok(!q(".ag-notice").hidden);
    assert.equal(q(".ag-notice").textContent, "run x is already finished");
    assert.equal(q(".ag-notice").getAttribute("data-level"), "error");
    model.set("title", "<b>New</b>");
    await frame();
    assert.equal(q(".ag-title").textContent, "<b>New</b>");
  });

  test("cleanup removes listeners, handlers, timers and the panel", async () => {
    const { el, q, model, cleanup, send } = await mount();
    await send(pageMsg([row("a")]));
    choose(q("input.ag-search"), "pending", "input");
    const panel = el.querySelector(".ag-run-panel");
    cleanup();
    cleanups.pop();
    assert.equal(model.handlerCount(), 0);
    assert.equal(panel.listenerCount(), 0);
    assert.equal(el.querySelector(".ag-run-panel"), null);
    model.emit("msg:custom", pageMsg([]), []);
    await wait(SEARCH_DEBOUNCE_MS + 60);
    assert.equal(model.sent.filter((m) => m.type === "view").length, 0, "the pending search was dropped");
  });
});

// Timer-driven behaviour, on node's mocked clock so no test sleeps for seconds.
// With mocked timers the real-time helpers (frame, send) would never resolve:
// these tests emit messages directly and advance the clock with tick().
describe("timers (mocked clock)", () => {
  const tick = (ms) => mock.timers.tick(ms);
  const emitPage = (model, rows, fields) => {
    model.emit("msg:custom", pageMsg(rows, { server_time: Date.now() / 1000, ...fields }), []);
    tick(20); // one frame
  };

  beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_700_000_000_000 }));
  afterEach(() => {
    while (cleanups.length) cleanups.pop()(); // clear the panel's timers while they are still mocked
    mock.timers.reset();
  });

  test("a held table re-orders after 1.5 s even without a click", async () => {
    const { model, ids, tr } = await mount();
    emitPage(model, [row("old")]);
    tr("old").querySelector("button.ag-cancel").dispatch("mousedown");
    emitPage(model, [row("new")], { reset: false, order: [leaf("new"), leaf("old")] });
    tick(1400);
    assert.deepEqual(ids(), ["old"], "still held");
    tick(150);
    tick(20);
    assert.deepEqual(ids(), ["new", "old"]);
  });

  test("a notice hides itself after 6 s", async () => {
    const { model, q } = await mount();
    model.emit("msg:custom", { type: "notice", level: "info", text: "cancelled 3 runs" }, []);
    tick(5900);
    assert.ok(!q(".ag-notice").hidden);
    assert.equal(q(".ag-notice").getAttribute("data-level"), "info");
    tick(200);
    assert.ok(q(".ag-notice").hidden);
  });

  test("live durations tick every second; finished ones stay put", async () => {
    const { model, tr } = await mount();
    const now = Date.now() / 1000;
    emitPage(model, [
      row("live", { started_at: now - 1 }),
      row("done", { status: "succeeded", started_at: now - 9, finished_at: now - 7 }),
    ]);
    const duration = (id) => tr(id).querySelector(".ag-col-duration").textContent;
    assert.equal(duration("live"), "1.0 s");
    tick(1000);
    assert.equal(duration("live"), "2.0 s");
    tick(2000);
    assert.equal(duration("live"), "4.0 s");
    assert.equal(duration("done"), "2.0 s");
  });

  test("a local Cancelling… gives way to Cancel after 10 s without news", async () => {
    const { model, tr } = await mount();
    emitPage(model, [row("a")]);
    const button = tr("a").querySelector("button.ag-cancel");
    button.dispatch("click");
    tick(20);
    assert.equal(button.textContent, "Cancelling…");
    tick(9000);
    assert.ok(button.disabled);
    tick(2000);
    assert.equal(button.textContent, "Cancel");
    assert.ok(!button.disabled);
  });
});
