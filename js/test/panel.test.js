// Issue 15 on the front end: asks, the run detail, Retry, the browser clock,
// dates and the sticky actions column. Pure logic is called directly; the DOM
// parts run the real `render` against the fake DOM in ../test_support.
//
// The asks here are a minimal in-test fake of the kernel's messages (the
// runtime's asks are built by another engineer at the same time); the Python
// and browser tests of asks are completed after the merge.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { afterEach, beforeEach, describe, mock, test } from "node:test";

import { FakeDocument, FakeModel } from "../test_support/fake_dom.js";
import { row } from "../test_support/rows.js";
import {
  answerMessage,
  approvalOptions,
  cellTexts,
  countdownText,
  filesProblem,
  formatBytes,
  formatStarted,
  levelsFrom,
  logPagerOffsets,
  logRangeText,
  logsRequest,
  normalizeAsk,
  normalizeAsks,
  normalizeDetail,
  normalizeRow,
  optionValue,
  progressView,
  readFilesValue,
  SEARCH_DEBOUNCE_MS,
  TICK_MS,
  toBase64,
  tokensText,
} from "../../ag_jupyter/widgets/static/run_panel.js";

const MODULE = "../../ag_jupyter/widgets/static/run_panel.js";
const CSS = new URL("../../ag_jupyter/widgets/static/run_panel.css", import.meta.url);
const EVIL = "<img src=x onerror=alert(1)>";
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const frame = () => wait(40);

function ask(askId, extra = {}) {
  return {
    ask_id: askId,
    run_id: `run-${askId}`,
    graph_id: "agent",
    kind: "text",
    prompt: "What next?",
    options: [],
    created_at: 100,
    deadline: null,
    max_bytes: null,
    ...extra,
  };
}

function pageMsg(rows, fields = {}) {
  return {
    type: "page",
    reset: true,
    order: rows.map((r) => [r.run_id, 0, 0, false]),
    upsert: rows,
    counts: { running: rows.length },
    total: rows.length,
    matching: rows.length,
    live_matching: rows.length,
    page: 0,
    page_count: 1,
    page_size: 50,
    facets: { sessions: [], tags: [], graphs: [] },
    server_time: Date.now() / 1000,
    asks: null,
    ...fields,
  };
}

function detailMsg(runId, fields = {}) {
  return {
    type: "detail",
    run_id: runId,
    record: {
      ...row(runId, { status: "failed", finished_at: 103, error: "ValueError: no", traceback: "Traceback …" }),
      origin: "app",
      retryable: true,
      timings: { created_at: 99, started_at: 100, finished_at: 103, queued_s: 1, duration_s: 3 },
    },
    inputs: { text: '{\n  "x": 1\n}', truncated: false, exact: true },
    outputs: null,
    logs: {
      lines: [
        { time: 100, level: "INFO", message: "hello" },
        { time: 101, level: "ERROR", message: "boom" },
      ],
      total: 250,
      offset: 150,
      limit: 100,
      search: "",
      levels: [],
    },
    steps: { items: [], total: 0, offset: 0, limit: 50 },
    transcript: { items: [], total: 0 },
    artifacts: { items: [], total: 0, available: true },
    children: { items: [], total: 0 },
    usage: null,
    errors: {},
    server_time: Date.now() / 1000,
    ...fields,
  };
}

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

async function mount() {
  const panel = (await import(MODULE)).default;
  const doc = new FakeDocument();
  const el = doc.createElement("div");
  const model = new FakeModel({ title: "Runs" });
  cleanups.push(panel.render({ model, el }));
  const q = (sel) => el.querySelector(sel);
  const qa = (sel) => el.querySelectorAll(sel);
  const tr = (id) => qa("tr").find((t) => t.getAttribute("data-run-id") === id);
  const card = (id) => qa("div.ag-ask").find((c) => c.getAttribute("data-ask-id") === id);
  const send = async (msg, buffers = []) => {
    model.emit("msg:custom", msg, buffers);
    await frame();
  };
  const sent = (type) => model.sent.filter((m) => m.type === type);
  return { doc, el, model, q, qa, tr, card, send, sent };
}

// ---------------------------------------------------------------------------
describe("asks: pure logic", () => {
  test("normalizeAsk keeps what is usable, as text", () => {
    const a = normalizeAsk({
      ask_id: "a1",
      run_id: 7,
      kind: "bogus",
      prompt: EVIL,
      options: [{ id: "x", label: EVIL }, { id: "x", label: "dup" }, "plain", { label: "L" }, null],
      deadline: "soon",
      max_bytes: -4,
    });
    assert.equal(a.kind, "text", "unknown kinds fall back to a text ask");
    assert.equal(a.run_id, "7");
    assert.equal(a.prompt, EVIL);
    assert.deepEqual(a.options, [{ id: "x", label: EVIL }, { id: "", label: "L" }]);
    assert.equal(a.deadline, null);
    assert.equal(a.max_bytes, null);
    assert.equal(normalizeAsk({ ask_id: "" }), null);
    assert.deepEqual(normalizeAsks(null), { items: [], total: 0 });
    const asks = normalizeAsks({ items: [ask("a"), ask("a"), ask("b")], total: 30 });
    assert.deepEqual(asks.items.map((x) => x.ask_id), ["a", "b"]);
    assert.equal(asks.total, 30);
  });

  test("answer values: text as is, options by id (label without one)", () => {
    const a = normalizeAsk(ask("a", { kind: "choices", options: [{ id: "o1", label: "One" }] }));
    assert.deepEqual(answerMessage(a, "hi"), { type: "answer", ask_id: "a", value: "hi" });
    assert.deepEqual(optionValue(a.options[0]), { choice: "o1" });
    assert.equal(optionValue({ id: "", label: "Maybe" }), "Maybe");
    const approval = normalizeAsk(ask("b", { kind: "approval" }));
    assert.deepEqual(approvalOptions(approval).map((o) => o.label), ["Approve", "Reject"]);
  });

  test("countdown text from the deadline", () => {
    assert.equal(countdownText(null, 100), "");
    assert.equal(countdownText(145.5, 100), "45.5 s left");
    assert.equal(countdownText(100 + 245.7, 100), "4m 05s left");
    assert.equal(countdownText(99, 100), "time is up");
  });

  test("files: the cap is checked before reading, data is base64", async () => {
    assert.equal(filesProblem([], 10), "choose at least one file");
    assert.equal(filesProblem([{ size: 5 }, { size: 6 }], 10), "11 B chosen; this ask takes 10 B at most in all");
    assert.equal(filesProblem([{ size: 10 }], 10), null);
    assert.equal(formatBytes(5 * 1024 * 1024), "5.0 MiB");
    assert.equal(toBase64(new TextEncoder().encode("hello")), "aGVsbG8=");
    const big = new Uint8Array(200000).fill(65);
    assert.equal(Buffer.from(toBase64(big), "base64").length, 200000, "no call-stack limit on big files");
    const file = { name: EVIL, type: "", size: 2, arrayBuffer: async () => new TextEncoder().encode("hi").buffer };
    assert.deepEqual(await readFilesValue([file]), {
      files: [{ name: EVIL, data: "aGk=", mime: "application/octet-stream" }],
    });
  });
});

describe("asks: rendering and answering (fake DOM)", () => {
  test("open asks are shown at the top with their prompt and controls, as text", async () => {
    const { q, qa, card, send, el } = await mount();
    assert.ok(q("section.ag-asks").hidden, "no asks, no strip");
    await send(
      pageMsg([], {
        asks: {
          items: [
            ask("t", { prompt: EVIL }),
            ask("c", { kind: "choices", options: [{ id: "a", label: EVIL }, { id: "b", label: "B" }] }),
            ask("p", { kind: "approval" }),
            ask("f", { kind: "files", max_bytes: 1024 }),
          ],
          total: 5,
        },
      }),
    );
    assert.ok(!q("section.ag-asks").hidden);
    assert.equal(q(".ag-asks-title").textContent, "4 runs are waiting for your answer");
    assert.match(q(".ag-asks-more").textContent, /1 more/);
    assert.deepEqual(qa("div.ag-ask").map((c) => c.getAttribute("data-ask-id")), ["t", "c", "p", "f"]);
    assert.equal(card("t").querySelector(".ag-ask-prompt").textContent, EVIL);
    assert.ok(card("t").querySelector("textarea.ag-ask-input"));
    assert.deepEqual(card("c").querySelectorAll("button.ag-ask-choice").map((b) => b.textContent), [EVIL, "B"]);
    assert.deepEqual(card("p").querySelectorAll("button.ag-ask-choice").map((b) => b.textContent), ["Approve", "Reject"]);
    assert.ok(card("p").querySelector("button.ag-approve") && card("p").querySelector("button.ag-reject"));
    assert.ok(card("f").querySelector("input.ag-ask-files"));
    assert.equal(card("f").querySelector(".ag-ask-cap").textContent, "up to 1.0 KiB in all");
    assert.equal(card("t").querySelector(".ag-ask-run").textContent, "run-t");
    assert.equal(el.querySelectorAll("img").length, 0);
  });

  test("a text answer is sent on click or Enter; the card waits for the kernel", async () => {
    const { model, card, send, sent } = await mount();
    await send(pageMsg([], { asks: { items: [ask("t"), ask("u")], total: 2 } }));
    const input = card("t").querySelector("textarea.ag-ask-input");
    input.value = "ship it";
    card("t").querySelector("button.ag-ask-send").dispatch("click");
    assert.deepEqual(sent("answer").at(-1), { type: "answer", ask_id: "t", value: "ship it" });
    assert.ok(input.disabled, "busy until the kernel confirms");
    const other = card("u").querySelector("textarea.ag-ask-input");
    other.value = "line";
    const shifted = other.dispatch("keydown", { key: "Enter", shiftKey: true });
    assert.equal(shifted.defaultPrevented, false, "Shift+Enter is a new line");
    const entered = other.dispatch("keydown", { key: "Enter" });
    assert.ok(entered.defaultPrevented);
    assert.deepEqual(sent("answer").at(-1), { type: "answer", ask_id: "u", value: "line" });
    // the kernel confirms one: it disappears; the other is still open
    await send({ type: "answered", ask_id: "t" });
    assert.equal(card("t"), undefined);
    assert.ok(card("u"));
    assert.equal(model.sent.filter((m) => m.type === "answer").length, 2);
  });

  test("a refused answer re-opens its card and says why; typed text survives page updates", async () => {
    const { card, send } = await mount();
    await send(pageMsg([], { asks: { items: [ask("t")], total: 1 } }));
    const input = card("t").querySelector("textarea.ag-ask-input");
    input.value = "draft";
    await send(pageMsg([row("r")], { asks: { items: [ask("t")], total: 1 } }));
    assert.equal(card("t").querySelector("textarea.ag-ask-input"), input, "same element");
    assert.equal(input.value, "draft");
    card("t").querySelector("button.ag-ask-send").dispatch("click");
    await send({ type: "notice", level: "error", text: `could not answer t: ${EVIL}`, ask_id: "t" });
    assert.ok(!input.disabled);
    const error = card("t").querySelector(".ag-ask-error");
    assert.ok(!error.hidden);
    assert.equal(error.textContent, `could not answer t: ${EVIL}`);
    // the ask closes elsewhere (answered by %ag_answer, timed out): the card goes
    await send(pageMsg([], { asks: { items: [], total: 0 } }));
    assert.equal(card("t"), undefined);
  });

  test("choices and approval buttons answer with the option id", async () => {
    const { card, send, sent } = await mount();
    await send(
      pageMsg([], {
        asks: {
          items: [
            ask("c", { kind: "choices", options: [{ id: "o1", label: "One" }, { id: "o2", label: "Two" }] }),
            ask("p", { kind: "approval", options: [{ id: "yes", label: "Ship" }, { id: "no", label: "Hold" }] }),
          ],
          total: 2,
        },
      }),
    );
    card("c").querySelectorAll("button.ag-ask-choice")[1].dispatch("click");
    assert.deepEqual(sent("answer").at(-1), { type: "answer", ask_id: "c", value: { choice: "o2" } });
    card("p").querySelector("button.ag-reject").dispatch("click");
    assert.deepEqual(sent("answer").at(-1), { type: "answer", ask_id: "p", value: { choice: "no" } });
    assert.ok(card("p").querySelector("button.ag-approve").disabled, "one answer per ask");
  });

  test("files over the cap are refused in the browser; files within it are sent as base64", async () => {
    const { card, send, sent } = await mount();
    await send(pageMsg([], { asks: { items: [ask("f", { kind: "files", max_bytes: 4 })], total: 1 } }));
    const input = card("f").querySelector("input.ag-ask-files");
    const fake = (text) => ({ name: "a.txt", type: "text/plain", size: text.length, arrayBuffer: async () => new TextEncoder().encode(text).buffer });
    input.files = [fake("too long")];
    card("f").querySelector("button.ag-ask-send").dispatch("click");
    await frame();
    assert.equal(sent("answer").length, 0);
    assert.match(card("f").querySelector(".ag-ask-error").textContent, /takes 4 B at most/);
    input.files = [fake("ok")];
    card("f").querySelector("button.ag-ask-send").dispatch("click");
    await frame();
    assert.deepEqual(sent("answer").at(-1), {
      type: "answer",
      ask_id: "f",
      value: { files: [{ name: "a.txt", data: "b2s=", mime: "text/plain" }] },
    });
  });
});

// ---------------------------------------------------------------------------
describe("run detail", () => {
  test("detail messages are validated; log pager offsets", () => {
    assert.equal(normalizeDetail({ type: "detail", run_id: "a", record: row("b") }), null, "record of another run");
    const d = normalizeDetail(detailMsg("r"));
    assert.equal(d.record.retryable, true);
    assert.equal(d.logs.lines.length, 2);
    assert.equal(logRangeText(d.logs), "lines 151-152 of 250");
    assert.deepEqual(logPagerOffsets(d.logs), { older: 50, newer: 250 });
    assert.deepEqual(logPagerOffsets({ offset: 0, lines: [1], total: 1, limit: 100 }), { older: null, newer: null });
    assert.deepEqual(levelsFrom("WARNING"), ["WARNING", "ERROR", "CRITICAL"]);
    assert.deepEqual(levelsFrom(""), []);
    assert.deepEqual(logsRequest("r", { offset: -3, search: "  x ", levels: ["INFO", "LOUD"] }), {
      type: "logs", run_id: "r", offset: null, search: "x", levels: ["INFO"],
    });
  });

  test("clicking a row asks for its detail; the detail replaces the list until closed", async () => {
    const { q, tr, send, sent } = await mount();
    await send(pageMsg([row("a"), row("b")]));
    tr("b").querySelector(".ag-col-graph").dispatch("click");
    assert.deepEqual(sent("detail").at(-1), { type: "detail", run_id: "b", log_search: "", log_levels: [] });
    assert.ok(!q("section.ag-detail").hidden);
    assert.ok(q("div.ag-list").hidden);
    assert.equal(q(".ag-detail-id").textContent, "b");
    // an answer for another run (opened before) is ignored
    await send(detailMsg("a"));
    assert.ok(!q(".ag-detail-loading").hidden);
    await send(detailMsg("b"));
    assert.ok(q(".ag-detail-loading").hidden);
    q("button.ag-detail-close").dispatch("click");
    assert.deepEqual(sent("detail_close").length, 1);
    assert.ok(q("section.ag-detail").hidden);
    assert.ok(!q("div.ag-list").hidden);
    // the run id button opens it too; a click in the error cell does not
    tr("a").querySelector("button.ag-open").dispatch("click");
    assert.equal(sent("detail").at(-1).run_id, "a");
  });

  test("every section renders untrusted text as text", async () => {
    const { el, q, tr, send } = await mount();
    await send(pageMsg([row(EVIL)]));
    tr(EVIL).querySelector(".ag-col-duration").dispatch("click");
    await send(
      detailMsg(EVIL, {
        record: {
          ...row(EVIL, { status: "failed", error: EVIL, traceback: EVIL, graph_id: EVIL, tags: [EVIL], parent_run_id: `${EVIL}-parent` }),
          origin: "app",
          retryable: true,
          timings: { created_at: 99, started_at: 100, finished_at: 103, queued_s: 1 },
        },
        inputs: { text: EVIL, truncated: true, exact: false },
        outputs: { text: `{"note": "${EVIL}"}`, truncated: false, exact: true },
        logs: { lines: [{ time: 100, level: EVIL, message: EVIL }], total: 1, offset: 0, limit: 100, search: "", levels: [] },
        transcript: { items: [{ kind: "ask", text: EVIL, ask_id: "a", at: 100 }, { kind: "answer", text: EVIL, ask_id: "a", at: 101 }], total: 2 },
        steps: {
          items: [{ kind: "tool", name: EVIL, inputs_preview: EVIL, outputs_preview: EVIL, started_at: 100, duration_s: 0.5, error: EVIL }],
          total: 1, offset: 0, limit: 50,
        },
        artifacts: {
          items: [{ artifact_id: "sha", name: EVIL, kind: EVIL, mime: "text/plain", bytes: 5, uri: `ag://artifacts/${EVIL}`, path: `/ws/${EVIL}`, downloadable: true }],
          total: 1, available: true,
        },
        children: { items: [row(`${EVIL}-child`, { graph_id: EVIL })], total: 1 },
        errors: { usage: EVIL },
      }),
    );
    const text = (sel, inner) => (inner ? q(sel).querySelector(inner) : q(sel)).textContent;
    assert.equal(text(".ag-detail-inputs", "pre.ag-json"), EVIL);
    assert.match(text(".ag-detail-inputs", ".ag-detail-note"), /repr/);
    assert.equal(text(".ag-detail-outputs", "pre.ag-json"), `{"note": "${EVIL}"}`);
    assert.equal(text(".ag-detail-error", "pre.ag-detail-error-text"), EVIL);
    assert.equal(text(".ag-log-message"), EVIL);
    assert.equal(q(".ag-log-line").getAttribute("data-level"), EVIL.toUpperCase());
    assert.deepEqual(el.querySelectorAll(".ag-transcript-text").map((n) => n.textContent), [EVIL, EVIL]);
    assert.equal(text(".ag-step-name"), EVIL);
    assert.equal(text("pre.ag-step-inputs"), EVIL);
    assert.equal(text(".ag-artifact-name"), EVIL);
    assert.equal(text(".ag-artifact-path"), `/ws/${EVIL}`);
    assert.equal(text(".ag-child-graph"), EVIL);
    assert.equal(text("dd.ag-summary-parent", "button.ag-run-link"), `${EVIL}-parent`);
    assert.equal(el.querySelectorAll("img").length, 0);
  });

  test("logs are paged and searched by request; steps paged; downloads and links", async () => {
    const { q, tr, send, sent } = await mount();
    await send(pageMsg([row("r")]));
    tr("r").querySelector("button.ag-open").dispatch("click");
    await send(
      detailMsg("r", {
        steps: { items: [{ kind: "llm", name: "chat" }], total: 120, offset: 70, limit: 50 },
        artifacts: { items: [{ artifact_id: "sha1", name: "a.md", bytes: 5, downloadable: true }], total: 1, available: true },
        children: { items: [row("kid")], total: 1 },
      }),
    );
    assert.equal(q(".ag-log-range").textContent, "lines 151-152 of 250");
    q("button.ag-log-older").dispatch("click");
    assert.deepEqual(sent("logs").at(-1), { type: "logs", run_id: "r", offset: 50, search: "", levels: [] });
    q("button.ag-log-newest").dispatch("click");
    assert.equal(sent("logs").at(-1).offset, null, "null: the newest page");
    const search = q("input.ag-log-search");
    search.value = "boom";
    search.dispatch("input");
    search.value = "boom!";
    search.dispatch("input");
    await wait(SEARCH_DEBOUNCE_MS + 60);
    assert.deepEqual(sent("logs").at(-1), { type: "logs", run_id: "r", offset: null, search: "boom!", levels: [] });
    const searches = sent("logs").length;
    const level = q("select.ag-log-level");
    level.value = "WARNING";
    level.dispatch("change");
    assert.equal(sent("logs").length, searches + 1);
    assert.deepEqual(sent("logs").at(-1).levels, ["WARNING", "ERROR", "CRITICAL"]);
    // a logs reply redraws only the log section
    await send({ type: "logs", run_id: "r", logs: { lines: [{ time: 1, level: "ERROR", message: "only" }], total: 1, offset: 0, limit: 100, search: "boom!", levels: ["ERROR"] } });
    assert.equal(q(".ag-log-message").textContent, "only");
    q("button.ag-step-older").dispatch("click");
    assert.deepEqual(sent("steps").at(-1), { type: "steps", run_id: "r", offset: 20 });
    q("button.ag-download").dispatch("click");
    assert.deepEqual(sent("download").at(-1), { type: "download", run_id: "r", artifact_id: "sha1" });
    assert.equal(q("button.ag-download").textContent, "Downloading…");
    await send({ type: "download", artifact_id: "sha1", name: "a.md", mime: "text/plain", bytes: 5 }, [new Uint8Array([104, 105]).buffer]);
    assert.equal(q("button.ag-download").textContent, "Download");
    q("button.ag-run-link[data-run-id=\"kid\"]").dispatch("click");
    assert.equal(sent("detail").at(-1).run_id, "kid");
  });

  test("Retry: on failed and canceled rows only, and in the detail", async () => {
    const { tr, q, send, sent } = await mount();
    await send(
      pageMsg([
        row("f", { status: "failed", finished_at: 101 }),
        row("c", { status: "canceled", finished_at: 101 }),
        row("s", { status: "succeeded", finished_at: 101 }),
        row("r"),
      ]),
    );
    const retry = (id) => tr(id).querySelector("button.ag-retry");
    assert.ok(retry("f") && retry("c"));
    assert.equal(retry("s"), null);
    assert.equal(retry("r"), null);
    retry("f").dispatch("click");
    assert.deepEqual(sent("retry").at(-1), { type: "retry", run_id: "f" });
    assert.ok(retry("f").disabled);
    assert.equal(retry("f").textContent, "Retrying…");
    await send({ type: "retried", run_id: "f", new_run_id: "f2" });
    assert.ok(!retry("f").disabled, "the original stays failed and can be retried again");
    assert.equal(retry("f").textContent, "Retry");
    retry("c").dispatch("click");
    await send({ type: "notice", level: "error", text: "could not retry c: GraphNotFoundError" });
    assert.ok(!retry("c").disabled);
    assert.equal(sent("detail").length, 0, "a button click does not open the detail");
    tr("c").querySelector("button.ag-open").dispatch("click");
    await send(detailMsg("c", { record: { ...detailMsg("c").record, status: "canceled" } }));
    assert.ok(!q("button.ag-detail-retry").hidden);
    assert.ok(q("button.ag-detail-cancel").hidden);
    q("button.ag-detail-retry").dispatch("click");
    assert.deepEqual(sent("retry").at(-1), { type: "retry", run_id: "c" });
  });
});

// ---------------------------------------------------------------------------
describe("layout: the actions column", () => {
  test("Cancel and Retry sit in the first column, and the CSS makes it and the header sticky", async () => {
    const { q, qa, tr, send } = await mount();
    await send(pageMsg([row("a")]));
    assert.equal(qa("th")[0].className, "ag-col-actions");
    assert.equal(tr("a").children[0].className, "ag-col-actions");
    assert.ok(tr("a").children[0].querySelector("button.ag-cancel"));
    assert.ok(q("div.ag-table-wrap"), "the table scrolls inside its own box");
    const css = readFileSync(CSS, "utf8");
    const rule = (selector) => {
      const at = css.indexOf(`${selector} {`);
      assert.ok(at >= 0, `no rule for ${selector}`);
      return css.slice(at, css.indexOf("}", at));
    };
    assert.match(rule(".ag-run-panel .ag-table .ag-col-actions"), /position: sticky; left: 0/);
    assert.match(rule(".ag-run-panel .ag-table th"), /position: sticky; top: 0/);
    assert.match(rule(".ag-run-panel .ag-table-wrap"), /max-height: var\(--ag-panel-max-height\); overflow: auto/);
  });
});

// ---------------------------------------------------------------------------
describe("badges, progress and dates", () => {
  test("token and agent/app badges; a progress bar only when the run reports progress", async () => {
    const { tr, send } = await mount();
    await send(
      pageMsg([
        row("plain"),
        row("busy", {
          agent_id: EVIL,
          app_id: "app-1",
          usage: { calls: 2, prompt_tokens: 9000, completion_tokens: 3400, cost: null },
          retry_of: "run-0",
          progress: { title: "Indexing", current: 3, total: 12, eta_seconds: 30, phase: "embed", status: "running", updated_at: Date.now() / 1000 },
        }),
      ]),
    );
    assert.equal(tr("plain").querySelectorAll(".ag-badge").length, 0);
    assert.ok(tr("plain").querySelector(".ag-progress").hidden, "no progress, no bar");
    const badges = tr("busy").querySelectorAll(".ag-badge").map((b) => b.textContent);
    assert.deepEqual(badges, [`agent ${EVIL}`, "app app-1", "12k tok", "retry"]);
    assert.equal(tr("busy").querySelector(".ag-badge-tokens").getAttribute("title"), "2 LLM calls · 9000 prompt · 3400 completion");
    const progress = tr("busy").querySelector(".ag-progress");
    assert.ok(!progress.hidden);
    assert.equal(progress.querySelector(".ag-progress-fill").style.width, "25%");
    assert.equal(progress.querySelector(".ag-progress-text").textContent, "25% · ETA 30.0 s · embed: running");
  });

  test("progress without a percent shows a label and no bar", () => {
    const view = progressView({ percent: null, current: 7, total: null, eta_seconds: null, phase: null, status: null, subtitle: "crawling", title: "t", updated_at: null }, 0);
    assert.deepEqual(view, { percent: null, label: "7 · crawling" });
    assert.equal(progressView(null, 0), null);
    assert.equal(tokensText({ total_tokens: 950 }), "950 tok");
    assert.equal(tokensText({ total_tokens: 4_100_000 }), "4.1M tok");
    assert.equal(tokensText(null), "");
  });

  test("dates appear when a run did not start today", () => {
    const now = new Date(2025, 2, 4, 15, 0, 0).getTime() / 1000;
    const today = new Date(2025, 2, 4, 9, 5, 7).getTime() / 1000;
    const yesterday = new Date(2025, 2, 3, 23, 59, 0).getTime() / 1000;
    assert.equal(formatStarted(today, now), "09:05:07");
    assert.equal(formatStarted(yesterday, now), "2025-03-03 23:59");
    assert.equal(formatStarted(null, now), "");
    assert.equal(cellTexts(normalizeRow(row("x", { started_at: yesterday })), now).started, "2025-03-03 23:59");
  });
});

// ---------------------------------------------------------------------------
describe("the browser clock (mocked)", () => {
  const tick = (ms) => mock.timers.tick(ms);
  beforeEach(() => mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: 1_700_000_000_000 }));
  afterEach(() => {
    while (cleanups.length) cleanups.pop()();
    mock.timers.reset();
  });

  test("running durations tick every tenth of a second from the start time the kernel sent", async () => {
    const { model, tr } = await mount();
    const now = Date.now() / 1000;
    model.emit("msg:custom", pageMsg([row("live", { started_at: now - 2 })], { server_time: now }), []);
    tick(20);
    const duration = () => tr("live").querySelector(".ag-col-duration").textContent;
    assert.equal(duration(), "2.0 s");
    tick(TICK_MS);
    assert.equal(duration(), "2.1 s");
    tick(TICK_MS * 4);
    assert.equal(duration(), "2.5 s");
    // no kernel message in between: the browser computed every value
    assert.equal(model.sent.filter((m) => m.type !== "hello").length, 0);
  });

  test("ask countdowns and ETAs tick down on the same clock", async () => {
    const { model, el } = await mount();
    const now = Date.now() / 1000;
    model.emit(
      "msg:custom",
      pageMsg(
        [row("p", { progress: { percent: 50, eta_seconds: 10, updated_at: now } })],
        { server_time: now, asks: { items: [ask("a", { deadline: now + 65 })], total: 1 } },
      ),
      [],
    );
    tick(20);
    const countdown = () => el.querySelector(".ag-ask-countdown").textContent;
    const eta = () => el.querySelector(".ag-progress-text").textContent;
    assert.equal(countdown(), " · 1m 04s left");
    assert.equal(eta(), "50% · ETA 10.0 s");
    tick(6000);
    assert.equal(countdown(), " · 58.9 s left");
    assert.equal(eta(), "50% · ETA 4.0 s");
    tick(60000);
    assert.equal(countdown(), " · time is up");
    assert.equal(eta(), "50% · ETA 0 ms");
  });
});
