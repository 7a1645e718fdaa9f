// Drives the real `render` against the tiny fake DOM in ../test_support.
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { FakeDocument, FakeModel } from "../test_support/fake_dom.js";

const frame = () => new Promise((resolve) => setTimeout(resolve, 40));

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

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

async function mount(title = "Runs") {
  const panel = (await import("../run_panel.js")).default;
  const doc = new FakeDocument();
  const el = doc.createElement("div");
  const model = new FakeModel({ title });
  const cleanup = panel.render({ model, el });
  cleanups.push(cleanup);
  const q = (sel) => el.querySelector(sel);
  const trs = () => el.querySelectorAll("tr").filter((tr) => tr.getAttribute("data-run-id") !== null);
  const tr = (id) => trs().find((t) => t.getAttribute("data-run-id") === id);
  const send = async (msg) => {
    model.emit("msg:custom", msg, []);
    await frame();
  };
  const rows = (upsert, extra = {}) =>
    send({ type: "rows", reset: false, upsert, remove: [], server_time: Date.now() / 1000, ...extra });
  return { doc, el, model, cleanup, q, trs, tr, send, rows };
}

describe("module", () => {
  test("imports in node without a DOM and exposes render", async () => {
    const mod = await import("../run_panel.js");
    assert.equal(typeof mod.default.render, "function");
    assert.equal(mod.default.render, mod.render);
  });
});

describe("render (fake DOM)", () => {
  test("says hello, injects one style, shows the empty text", async () => {
    const { el, model, q } = await mount();
    assert.deepEqual(model.sent, [{ type: "hello" }]);
    assert.equal(el.querySelectorAll("style").length, 1);
    assert.ok(q("div.ag-run-panel"));
    assert.ok(!q(".ag-empty").hidden);
    assert.match(q(".ag-empty").textContent, /No runs yet\. Spawn one with context\.runner\(\)\.spawn_run/);
    assert.equal(q(".ag-title").textContent, "Runs");
  });

  test("renders rows newest first with header counts and status chips", async () => {
    const { q, trs, rows } = await mount();
    await rows(
      [row("a", { created_at: 1 }), row("b", { created_at: 2, status: "failed", finished_at: 101 })],
      { reset: true },
    );
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["b", "a"]);
    assert.ok(q(".ag-empty").hidden);
    assert.equal(q(".ag-counts").textContent, "1 running · 1 failed · 2 total");
    const chip = trs()[0].querySelector(".ag-status");
    assert.equal(chip.getAttribute("data-status"), "failed");
    assert.equal(chip.textContent, "failed");
    assert.equal(trs()[0].querySelector(".ag-col-duration").textContent, "1.0 s");
  });

  test("hostile strings render as literal text only", async () => {
    const { el, tr, rows } = await mount();
    const evil = "<img src=x onerror=alert(1)>";
    await rows([row(evil, { tags: [evil], error: evil, traceback: evil, session_id: evil })]);
    const r = tr(evil);
    assert.ok(r, "row keyed by the literal id");
    assert.equal(r.querySelector(".ag-id").textContent, evil);
    assert.equal(r.querySelector(".ag-tag").textContent, evil);
    assert.equal(r.querySelector("summary").textContent, evil);
    assert.equal(r.querySelector("pre.ag-traceback").textContent, evil);
    assert.equal(el.querySelectorAll("img").length, 0);
  });

  test("field updates patch the row in place", async () => {
    const { doc, tr, rows } = await mount();
    await rows([row("a", { created_at: 1 }), row("b", { created_at: 2 })]);
    const before = tr("a");
    const cell = before.querySelector(".ag-col-graph");
    const mutations = doc.mutations;
    await rows([row("a", { created_at: 1, graph_id: "changed" })]);
    assert.equal(tr("a"), before, "same <tr> element");
    assert.equal(before.querySelector(".ag-col-graph"), cell, "same cell");
    assert.equal(cell.textContent, "changed");
    assert.equal(doc.mutations - mutations, 1, "only the cell's text node was swapped");
  });

  test("cancel buttons follow the status; a click sends cancel", async () => {
    const { model, tr, rows } = await mount();
    await rows([row("live"), row("done", { status: "succeeded", finished_at: 102 })]);
    assert.equal(tr("done").querySelector("button.ag-cancel"), null);
    const button = tr("live").querySelector("button.ag-cancel");
    assert.equal(button.textContent, "Cancel");
    button.dispatch("mousedown");
    button.dispatch("click");
    assert.deepEqual(model.sent.at(-1), { type: "cancel", run_id: "live" });
    await frame();
    assert.ok(button.disabled, "disabled while the request is in flight");
    await rows([row("live", { status: "cancellation_requested" })]);
    assert.equal(tr("live").querySelector("button.ag-cancel"), button, "same button element");
    assert.equal(button.textContent, "Cancelling…");
    assert.ok(button.disabled);
    await rows([row("live", { status: "canceled", finished_at: 103 })]);
    assert.equal(tr("live").querySelector("button.ag-cancel"), null);
  });

  test("rows stay put while the mouse is down, then re-order", async () => {
    const { trs, tr, rows } = await mount();
    await rows([row("old", { created_at: 1 })]);
    tr("old").querySelector("button.ag-cancel").dispatch("mousedown");
    await rows([row("new", { created_at: 2 })]);
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["old"]);
    tr("old").querySelector("button.ag-cancel").dispatch("click");
    await frame();
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["new", "old"]);
  });

  test("children sit under their parent and collapse with the toggle", async () => {
    const { trs, tr, rows } = await mount();
    await rows([
      row("p", { created_at: 1 }),
      row("c", { created_at: 2, parent_run_id: "p" }),
      row("other", { created_at: 3 }),
    ]);
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["other", "p", "c"]);
    assert.ok(tr("c").classList.contains("ag-child"));
    assert.ok(!tr("c").querySelector(".ag-child-marker").hidden);
    const toggle = tr("p").querySelector("button.ag-toggle");
    assert.ok(!toggle.hidden);
    assert.ok(tr("other").querySelector("button.ag-toggle").hidden);
    toggle.dispatch("click");
    await frame();
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["other", "p"]);
    toggle.dispatch("click");
    await frame();
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["other", "p", "c"]);
  });

  test("filters, search and cancel-all-visible", async () => {
    const { model, q, trs, rows } = await mount();
    await rows([
      row("a", { session_id: "s1", tags: ["x"] }),
      row("b", { session_id: "s2", status: "pending" }),
      row("c", { session_id: "s1", status: "failed" }),
    ]);
    const values = (sel) => q(sel).querySelectorAll("option").map((o) => o.value);
    assert.deepEqual(values("select.ag-filter-session"), ["", "s1", "s2"]);
    assert.deepEqual(values("select.ag-filter-tag"), ["", "x"]);

    const session = q("select.ag-filter-session");
    session.value = "s1";
    session.dispatch("change");
    await frame();
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")).sort(), ["a", "c"]);

    const button = q("button.ag-cancel-visible");
    assert.ok(!button.disabled);
    button.dispatch("click");
    assert.deepEqual(model.sent.at(-1), { type: "cancel_many", run_ids: ["a"] });

    const status = q("select.ag-filter-status");
    status.value = "failed";
    status.dispatch("change");
    await frame();
    assert.ok(button.disabled, "no live row visible");

    status.value = "all";
    status.dispatch("change");
    session.value = "";
    session.dispatch("change");
    const search = q("input.ag-search");
    search.value = "B";
    search.dispatch("input");
    await frame();
    assert.deepEqual(trs().map((t) => t.getAttribute("data-run-id")), ["b"]);
    search.value = "zzz";
    search.dispatch("input");
    await frame();
    assert.equal(trs().length, 0);
    assert.equal(q(".ag-empty").textContent, "No runs match the current filters.");
  });

  test("pages of 50 top-level rows", async () => {
    const { q, trs, rows } = await mount();
    await rows(Array.from({ length: 120 }, (_, i) => row(`r${i}`, { created_at: i })), { reset: true });
    assert.equal(trs().length, 50);
    assert.equal(q(".ag-page-info").textContent, "page 1 of 3");
    assert.ok(q(".ag-prev").disabled);
    q(".ag-next").dispatch("click");
    q(".ag-next").dispatch("click");
    await frame();
    assert.equal(q(".ag-page-info").textContent, "page 3 of 3");
    assert.equal(trs().length, 20);
    assert.ok(q(".ag-next").disabled);
    await rows([], { remove: Array.from({ length: 100 }, (_, i) => `r${i + 20}`) });
    assert.equal(q(".ag-page-info").textContent, "page 1 of 1", "clamped after rows vanished");
    assert.equal(trs().length, 20);
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

  test("cleanup removes listeners, handlers and the panel", async () => {
    const { el, model, cleanup, rows } = await mount();
    await rows([row("a")]);
    const panel = el.querySelector(".ag-run-panel");
    cleanup();
    cleanups.pop();
    assert.equal(model.handlerCount(), 0);
    assert.equal(panel.listenerCount(), 0);
    assert.equal(el.querySelector(".ag-run-panel"), null);
    model.emit("msg:custom", { type: "rows", reset: true, upsert: [] }, []);
  });
});
