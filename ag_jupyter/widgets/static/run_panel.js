// Run panel front end for ag_jupyter (anywidget ESM; its styles are in
// run_panel.css beside it, which anywidget loads as the widget's _css).
//
// anywidget loads this file from a string/blob URL, so it must stay ONE
// self-contained module with no imports. The pure logic is exported by name
// so `node --test` can exercise it without a DOM; nothing at module top level
// touches `document` or `window`.
//
// Division of labour: the kernel keeps every run, filters, orders and pages
// them, and sends only the page to show ("page" messages: display order plus
// the rows that are new or changed, and the open asks). This file caches the
// rows of that one page, renders them, and reports the view the user wants
// ("view" messages). It never filters, sorts or counts runs itself. A run's
// detail (inputs, outputs, logs, steps, transcript, artifacts, children) is
// asked for when the user opens it and sent for that run only, paged and cut.
// Durations, countdowns and ETAs tick on a browser clock from the times the
// kernel sends (corrected by the kernel's clock offset).
//
// Security rule for the whole file: run data (ids, graph ids, tags, errors,
// tracebacks, prompts, options, log lines, transcript lines, step previews,
// artifact names) is untrusted. It only ever reaches the DOM through
// textContent / createTextNode / setAttribute. There is no innerHTML anywhere.

// ---------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------

export const STATUSES = [
  "pending",
  "running",
  "waiting",
  "cancellation_requested",
  "succeeded",
  "failed",
  "canceled",
];

/** Statuses of a run that has not finished yet. */
export const LIVE_STATUSES = ["pending", "running", "waiting", "cancellation_requested"];

/** Live statuses that can still be asked to cancel (a cancel is not already pending). */
export const CANCELLABLE_STATUSES = ["pending", "running", "waiting"];

/** Order of the header counts: what is happening now first, outcomes last. */
export const SUMMARY_ORDER = [
  "running",
  "waiting",
  "pending",
  "cancellation_requested",
  "succeeded",
  "failed",
  "canceled",
];

/** Page size assumed until the kernel says otherwise (it owns paging). */
export const PAGE_SIZE = 50;

/**
 * Value of the "(no session)" <option>. A select can only hold strings, so
 * this stands in for the view's `session: null`; it cannot collide with a
 * real session id.
 */
export const NO_SESSION = "\u0000no-session";

/** The kernel refuses longer searches; cut them here instead of getting a notice. */
export const MAX_SEARCH_LENGTH = 500;

export const EMPTY_TEXT = "No runs yet. Spawn one with context.runner().spawn_run(...)";
export const NO_MATCH_TEXT = "No runs match the current filters.";

const NOTICE_MS = 6000;
// A local cancel request keeps the button disabled this long while we wait for
// the status to change; after that the user may try again.
const CANCEL_PENDING_MS = 10000;
// Structural re-renders wait while a mouse button is down in the table (see
// the hold logic in createView) but never longer than this.
const HOLD_MAX_MS = 1500;
/** How often live durations, countdowns and ETAs are redrawn (only changed text is written). */
export const TICK_MS = 100;
/** Explicit open/closed parents sent in a view message, at most. */
export const MAX_TOGGLES = 1000;
/** Largest text answer the kernel accepts (characters). */
export const MAX_ANSWER_CHARS = 100000;
// Typing in the search box asks the kernel for a new page only after a pause,
// so a word typed quickly costs one round trip, not one per key.
export const SEARCH_DEBOUNCE_MS = 200;

// ---------------------------------------------------------------------------
// Small value helpers
// ---------------------------------------------------------------------------

/**
 * Coerce any value to plain display text. Strings pass through untouched
 * (they are rendered with textContent, so no escaping is needed or wanted);
 * objects become "" so a malformed field can never render as "[object Object]".
 */
export function toText(value) {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return "";
}

const finiteOrNull = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const stringOrNull = (v) => (typeof v === "string" ? v : null);
const nonEmptyStringOrNull = (v) => (typeof v === "string" && v !== "" ? v : null);
const isPlainObject = (v) => Boolean(v) && typeof v === "object" && !Array.isArray(v);

/** A whole number >= min, or `fallback` for anything else (NaN, 1.5, "3", -1, ...). */
function intAtLeast(value, min, fallback) {
  return Number.isInteger(value) && value >= min ? value : fallback;
}

export function isLive(status) {
  return LIVE_STATUSES.includes(status);
}

export function isCancellable(status) {
  return CANCELLABLE_STATUSES.includes(status);
}

/** "cancellation_requested" -> "cancellation requested". */
export function statusLabel(status) {
  const text = toText(status);
  return text ? text.replace(/_/g, " ") : "unknown";
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

/**
 * Validate one row from Python. Returns a clean copy, or null when the row has
 * no usable run_id. Fields of the wrong type fall back to empty values so a
 * single bad field does not drop the whole row.
 */
export function normalizeRow(raw) {
  if (!isPlainObject(raw)) return null;
  const runId = raw.run_id;
  if (typeof runId !== "string" || runId === "") return null;
  const parent = nonEmptyStringOrNull(raw.parent_run_id);
  return {
    run_id: runId,
    graph_id: toText(raw.graph_id),
    // Unknown statuses are kept (a newer backend may add one) and render as a
    // plain grey chip.
    status: typeof raw.status === "string" && raw.status ? raw.status : "unknown",
    session_id: nonEmptyStringOrNull(raw.session_id),
    tags: Array.isArray(raw.tags) ? raw.tags.map(toText).filter((t) => t !== "") : [],
    created_at: finiteOrNull(raw.created_at),
    started_at: finiteOrNull(raw.started_at),
    finished_at: finiteOrNull(raw.finished_at),
    error: stringOrNull(raw.error),
    traceback: stringOrNull(raw.traceback),
    // A run named as its own parent is corrupt data; show no parent.
    parent_run_id: parent === runId ? null : parent,
    agent_id: nonEmptyStringOrNull(raw.agent_id),
    app_id: nonEmptyStringOrNull(raw.app_id),
    usage: normalizeUsage(raw.usage),
    progress: normalizeProgress(raw.progress),
    retry_of: nonEmptyStringOrNull(raw.retry_of),
    open_asks: intAtLeast(raw.open_asks, 0, 0),
    // Where a run's body ran when not in the kernel ("dask"), and the Dask worker's
    // address once it has one (both null for local runs).
    executor: nonEmptyStringOrNull(raw.executor),
    worker: nonEmptyStringOrNull(raw.worker),
  };
}

/** Token usage ({calls, prompt_tokens, completion_tokens, total_tokens, cost}) or null. */
export function normalizeUsage(raw) {
  if (!isPlainObject(raw)) return null;
  const keys = ["calls", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost"];
  const out = {};
  for (const k of keys) out[k] = finiteOrNull(raw[k]);
  if (out.total_tokens === null && (out.prompt_tokens !== null || out.completion_tokens !== null)) {
    out.total_tokens = (out.prompt_tokens || 0) + (out.completion_tokens || 0);
  }
  return keys.some((k) => out[k] !== null) ? out : null;
}

/**
 * A run's reported progress (meta["progress"]) or null when it reports none:
 * a run without progress shows no bar at all, never a made-up one.
 */
export function normalizeProgress(raw) {
  if (!isPlainObject(raw)) return null;
  let percent = finiteOrNull(raw.percent);
  const current = finiteOrNull(raw.current);
  const total = finiteOrNull(raw.total);
  if (percent === null && current !== null && total) percent = (100 * current) / total;
  if (percent !== null) percent = Math.min(100, Math.max(0, percent));
  return {
    title: stringOrNull(raw.title),
    subtitle: stringOrNull(raw.subtitle),
    phase: stringOrNull(raw.phase),
    status: stringOrNull(raw.status),
    current,
    total,
    percent,
    eta_seconds: finiteOrNull(raw.eta_seconds),
    updated_at: finiteOrNull(raw.updated_at),
  };
}

// ---------------------------------------------------------------------------
// Page state: what the kernel last told us to show
// ---------------------------------------------------------------------------

/** The state before any page message: nothing to show, one empty page. */
export function createPageState() {
  return {
    rows: new Map(), // run_id -> row, only rows of the current page
    order: [], // [{ id, depth, childCount, expanded }] in display order
    counts: {}, // status -> number of runs, over ALL runs
    total: 0,
    matching: 0,
    liveMatching: 0,
    page: 0,
    pageCount: 1,
    pageSize: PAGE_SIZE,
    facets: { sessions: [], tags: [], graphs: [] },
    offset: 0, // server clock - browser clock, seconds
    asks: [], // open asks, oldest first (null from the kernel: this runtime has none)
    asksTotal: 0,
  };
}

/**
 * Validate `order`: entries [run_id, depth, child_count, expanded]. Items that
 * are not arrays or lack a string id are dropped; so are repeated ids (a run
 * has one <tr>, so it can only be in one place). Bad numbers become 0.
 */
function normalizeOrder(raw) {
  const out = [];
  const seen = new Set();
  for (const item of raw) {
    if (!Array.isArray(item)) continue;
    const [id, depth, childCount, expanded] = item;
    if (typeof id !== "string" || id === "" || seen.has(id)) continue;
    seen.add(id);
    const kids = intAtLeast(childCount, 0, 0);
    // Only a parent can be open, and only when the kernel says so explicitly.
    const open = kids > 0 && expanded === true;
    out.push({ id, depth: intAtLeast(depth, 0, 0), childCount: kids, expanded: open });
  }
  return out;
}

/** status -> count, keeping only positive whole numbers. */
function normalizeCounts(raw) {
  if (!isPlainObject(raw)) return {};
  // fromEntries defines own properties, so a hostile "__proto__" key is inert.
  return Object.fromEntries(Object.entries(raw).filter(([, n]) => intAtLeast(n, 1, 0) > 0));
}

/** Unique values in the kernel's order; `keepNull` lets null ("no session") through. */
function uniqueValues(raw, keepNull) {
  if (!Array.isArray(raw)) return [];
  const ok = (v) => (typeof v === "string" && v !== "" && v !== NO_SESSION) || (keepNull && v === null);
  return [...new Set(raw.filter(ok))];
}

function normalizeFacets(raw) {
  const facets = isPlainObject(raw) ? raw : {};
  return {
    sessions: uniqueValues(facets.sessions, true),
    tags: uniqueValues(facets.tags, false),
    graphs: uniqueValues(facets.graphs, false),
  };
}

const entryKey = (e) => `${e.id}\u0000${e.depth}\u0000${e.childCount}\u0000${e.expanded}`;

function sameOrder(a, b) {
  return a.length === b.length && a.every((e, i) => entryKey(e) === entryKey(b[i]));
}

/**
 * Apply a kernel "page" message to `state` (from createPageState), in place.
 *
 * Rows in `upsert` replace cached rows; with `reset: true` the cache is
 * emptied first. Afterwards the cache holds exactly the rows of `order`:
 * rows that left the page are dropped, and order entries for which no row
 * was ever sent are dropped too (there would be nothing to draw).
 *
 * Returns null when `msg` is not a usable page message (state untouched), or
 * { changed, orderChanged, facetsChanged } so the view redraws only what it
 * must: `changed` is the Set of ids whose row was (re)sent.
 */
export function applyPageMessage(state, msg, browserNowSeconds = Date.now() / 1000) {
  if (!isPlainObject(msg) || msg.type !== "page" || !Array.isArray(msg.order)) return null;
  if (msg.reset === true) state.rows.clear();
  const changed = new Set();
  const wanted = normalizeOrder(msg.order);
  const onPage = new Set(wanted.map((e) => e.id));
  for (const raw of Array.isArray(msg.upsert) ? msg.upsert : []) {
    const row = normalizeRow(raw);
    // A row not in `order` would be dropped below anyway; skip it now.
    if (!row || !onPage.has(row.run_id)) continue;
    state.rows.set(row.run_id, row);
    changed.add(row.run_id);
  }
  const order = wanted.filter((e) => state.rows.has(e.id));
  const kept = new Set(order.map((e) => e.id));
  for (const id of state.rows.keys()) if (!kept.has(id)) state.rows.delete(id);

  const orderChanged = !sameOrder(state.order, order);
  const facets = normalizeFacets(msg.facets);
  const facetsChanged = JSON.stringify(facets) !== JSON.stringify(state.facets);
  Object.assign(state, {
    order,
    counts: normalizeCounts(msg.counts),
    total: intAtLeast(msg.total, 0, 0),
    matching: intAtLeast(msg.matching, 0, 0),
    liveMatching: intAtLeast(msg.live_matching, 0, 0),
    pageCount: intAtLeast(msg.page_count, 1, 1),
    pageSize: intAtLeast(msg.page_size, 1, PAGE_SIZE),
    facets,
  });
  state.page = Math.min(intAtLeast(msg.page, 0, 0), state.pageCount - 1);
  // Keep the last offset when a message has no clock, rather than snapping to 0.
  if (finiteOrNull(msg.server_time) !== null) {
    state.offset = clockOffset(msg.server_time, browserNowSeconds);
  }
  let asksChanged = false;
  if ("asks" in msg) {
    const asks = normalizeAsks(msg.asks);
    asksChanged = JSON.stringify(asks.items) !== JSON.stringify(state.asks);
    state.asks = asks.items;
    state.asksTotal = asks.total;
  }
  return { changed, orderChanged, facetsChanged, asksChanged };
}

// ---------------------------------------------------------------------------
// Asks: a run waiting for the person at the notebook
// ---------------------------------------------------------------------------

export const ASK_KINDS = ["text", "choices", "approval", "files"];

/** One open ask from the kernel, or null when it has no usable ask_id. */
export function normalizeAsk(raw) {
  if (!isPlainObject(raw)) return null;
  const askId = nonEmptyStringOrNull(raw.ask_id);
  if (askId === null) return null;
  const seen = new Set();
  const options = [];
  for (const o of Array.isArray(raw.options) ? raw.options : []) {
    if (!isPlainObject(o)) continue;
    const id = toText(o.id);
    const label = toText(o.label) || id;
    if (!id && !label) continue;
    const key = id || label;
    if (seen.has(key)) continue;
    seen.add(key);
    options.push({ id, label });
  }
  return {
    ask_id: askId,
    run_id: toText(raw.run_id),
    graph_id: stringOrNull(raw.graph_id),
    kind: ASK_KINDS.includes(raw.kind) ? raw.kind : "text",
    prompt: toText(raw.prompt),
    options,
    created_at: finiteOrNull(raw.created_at),
    deadline: finiteOrNull(raw.deadline),
    max_bytes: intAtLeast(raw.max_bytes, 1, null),
  };
}

/** The page message's `asks` ({items, total} or null) as {items, total}. */
export function normalizeAsks(raw) {
  if (!isPlainObject(raw)) return { items: [], total: 0 };
  const items = [];
  const seen = new Set();
  for (const item of Array.isArray(raw.items) ? raw.items : []) {
    const ask = normalizeAsk(item);
    if (ask && !seen.has(ask.ask_id)) {
      seen.add(ask.ask_id);
      items.push(ask);
    }
  }
  return { items, total: Math.max(items.length, intAtLeast(raw.total, 0, 0)) };
}

/** The options an approval ask offers (the kernel's, else Approve / Reject). */
export function approvalOptions(ask) {
  if (ask.options.length) return ask.options;
  return [
    { id: "Approve", label: "Approve" },
    { id: "Reject", label: "Reject" },
  ];
}

/**
 * The "answer" message for `ask` (see the kernel's check_answer): a str for
 * text asks; {"choice": id} for a choices/approval option with an id (its
 * label otherwise, which the runtime also matches); {"files": [...]} as given.
 */
export function answerMessage(ask, value) {
  return { type: "answer", ask_id: ask.ask_id, value };
}

/** The value a click on `option` answers with. */
export function optionValue(option) {
  return option.id ? { choice: option.id } : option.label;
}

/** "4m 05s left", "12.0 s left", "time is up"; "" without a deadline. */
export function countdownText(deadline, nowSeconds) {
  if (typeof deadline !== "number" || !Number.isFinite(deadline)) return "";
  const left = deadline - nowSeconds;
  if (left <= 0) return "time is up";
  return `${formatDuration(left < 60 ? Math.floor(left * 10) / 10 : Math.floor(left))} left`;
}

/** "512 B", "12.3 KiB", "5.0 MiB". */
export function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n) || n < 0) return "";
  if (n < 1024) return `${Math.round(n)} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}

/** Base64 of an ArrayBuffer / Uint8Array, in chunks (no call-stack limit). */
export function toBase64(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  let binary = "";
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + CHUNK));
  }
  return globalThis.btoa(binary);
}

/**
 * Check chosen files against an ask's cap before reading them.
 * Returns null when they fit, else the reason as text.
 */
export function filesProblem(files, maxBytes) {
  const list = Array.from(files || []);
  if (list.length === 0) return "choose at least one file";
  const total = list.reduce((sum, f) => sum + (Number.isFinite(f.size) ? f.size : 0), 0);
  if (maxBytes && total > maxBytes) {
    return `${formatBytes(total)} chosen; this ask takes ${formatBytes(maxBytes)} at most in all`;
  }
  return null;
}

/** Read files into the {"files": [...]} answer value (base64 data). */
export async function readFilesValue(files) {
  const out = [];
  for (const file of Array.from(files)) {
    const data = toBase64(new Uint8Array(await file.arrayBuffer()));
    out.push({ name: toText(file.name) || "file", data, mime: toText(file.type) || "application/octet-stream" });
  }
  return { files: out };
}

// ---------------------------------------------------------------------------
// View state: what the user asked to see
// ---------------------------------------------------------------------------
//
// A plain object { page, status, session, tag, search, expanded, collapsed }.
// The helpers below return a new object and never mutate their input, so the
// view can compare "before" and "after" cheaply.

/** What a fresh panel asks for: first page, no filters, no explicit toggles. */
export function defaultView() {
  return { page: 0, status: "all", session: "", graph: "", tag: "", search: "", expanded: [], collapsed: [] };
}

const cleanSearch = (s) => toText(s).trim().slice(0, MAX_SEARCH_LENGTH);

/**
 * Apply filter values ({status?, session?, tag?, search?}). Any real change
 * sends the user back to page 0 (their old page number means nothing in the
 * new result); no change returns `view` itself, so callers can skip a send.
 * Search is compared trimmed: a trailing space alone is not a new search.
 */
export function withFilters(view, filters) {
  const next = { ...view };
  for (const name of ["status", "session", "graph", "tag"]) if (name in filters) next[name] = filters[name];
  if ("search" in filters) next.search = cleanSearch(filters.search);
  const same = ["status", "session", "graph", "tag", "search"].every((k) => next[k] === view[k]);
  return same ? view : { ...next, page: 0 };
}

/**
 * Adopt the filters the kernel reports for a reset page (`msg.view`): a panel
 * made with `RunPanel(status="live")`, or changed from another display of the
 * same model, must show its real filters in the controls. Malformed fields keep
 * the current value; the page is left to the page message itself.
 */
export function viewFromKernel(view, kernelView) {
  if (!isPlainObject(kernelView)) return view;
  const next = { ...view };
  if (typeof kernelView.status === "string" && kernelView.status) next.status = kernelView.status;
  if (kernelView.session === null || typeof kernelView.session === "string") {
    next.session = kernelView.session;
  }
  if (typeof kernelView.tag === "string") next.tag = kernelView.tag;
  if (typeof kernelView.graph === "string") next.graph = kernelView.graph;
  if (typeof kernelView.search === "string") next.search = cleanSearch(kernelView.search);
  if (Array.isArray(kernelView.expanded)) next.expanded = idList(kernelView.expanded);
  if (Array.isArray(kernelView.collapsed)) next.collapsed = idList(kernelView.collapsed);
  return next;
}

/** Ask for another page (filters unchanged). */
export function withPage(view, page) {
  return { ...view, page: intAtLeast(page, 0, 0) };
}

/**
 * Record that the user opened (`expand` true) or closed a parent. The kernel
 * decides the default for parents not listed, so an explicit choice is kept
 * in exactly one of the two lists.
 */
export function withToggle(view, runId, expand) {
  const without = (list) => list.filter((id) => id !== runId);
  return {
    ...view,
    expanded: expand ? [...without(view.expanded), runId] : without(view.expanded),
    collapsed: expand ? without(view.collapsed) : [...without(view.collapsed), runId],
  };
}

/** Unique non-empty string ids from `v` ([] for a non-array), MAX_TOGGLES at most (the newest). */
function idList(v) {
  const ids = Array.isArray(v) ? [...new Set(v.filter((id) => typeof id === "string" && id))] : [];
  return ids.length > MAX_TOGGLES ? ids.slice(-MAX_TOGGLES) : ids;
}

/** The "view" message for `view`; missing or malformed fields get the defaults. */
export function viewMessage(view = {}) {
  const v = isPlainObject(view) ? view : {};
  return {
    type: "view",
    page: intAtLeast(v.page, 0, 0),
    status: typeof v.status === "string" && v.status ? v.status : "all",
    // "" means every session, null means runs without one: keep them apart.
    session: v.session === null ? null : typeof v.session === "string" ? v.session : "",
    graph: typeof v.graph === "string" ? v.graph : "",
    tag: typeof v.tag === "string" ? v.tag : "",
    search: cleanSearch(v.search),
    expanded: idList(v.expanded),
    collapsed: idList(v.collapsed),
  };
}

// ---------------------------------------------------------------------------
// Header and pager texts
// ---------------------------------------------------------------------------

/**
 * "12 running · 30 pending · 3 failed · 45 total"; zero counts are left out.
 * `total` comes from the kernel; when it is missing the counts are summed.
 */
export function summaryText(counts, total) {
  const c = isPlainObject(counts) ? counts : {};
  const n = (s) => intAtLeast(c[s], 1, 0);
  const known = SUMMARY_ORDER.filter((s) => n(s) > 0);
  const extra = Object.keys(c)
    .filter((s) => !SUMMARY_ORDER.includes(s) && n(s) > 0)
    .sort();
  const shown = [...known, ...extra];
  const parts = shown.map((s) => `${n(s)} ${statusLabel(s)}`);
  const all = intAtLeast(total, 0, shown.reduce((sum, s) => sum + n(s), 0));
  if (all === 0 && parts.length === 0) return "no runs";
  parts.push(`${all} total`);
  return parts.join(" · ");
}

/** "page 2 of 5" for the 0-based `page`, kept inside 1..pageCount. */
export function pagerText(page, pageCount) {
  const count = intAtLeast(pageCount, 1, 1);
  const current = Math.min(intAtLeast(page, 0, 0), count - 1);
  return `page ${current + 1} of ${count}`;
}

// ---------------------------------------------------------------------------
// Time formatting
// ---------------------------------------------------------------------------

const pad2 = (n) => String(n).padStart(2, "0");

/** "850 ms", "12.3 s", "4m 05s", "1h 02m"; "" for a missing duration. */
export function formatDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  // Round first, then pick the unit, so 0.9996 s is "1.0 s" (not "1000 ms")
  // and 59.96 s is "1m 00s" (not "60.0 s").
  const ms = Math.round(s * 1000);
  if (ms < 1000) return `${ms} ms`;
  const tenths = Math.round(s * 10) / 10;
  if (tenths < 60) return `${tenths.toFixed(1)} s`;
  const whole = Math.max(60, Math.floor(s));
  if (whole < 3600) return `${Math.floor(whole / 60)}m ${pad2(whole % 60)}s`;
  return `${Math.floor(whole / 3600)}h ${pad2(Math.floor((whole % 3600) / 60))}m`;
}

/**
 * Seconds a run has taken: finished - started for finished runs, now -
 * started for live ones (nowSeconds must already be on the server clock).
 * null when the run never started, or ended without a finish time.
 */
export function durationOf(row, nowSeconds) {
  if (row.started_at === null || row.started_at === undefined) return null;
  let end = null;
  if (typeof row.finished_at === "number") end = row.finished_at;
  else if (isLive(row.status) && Number.isFinite(nowSeconds)) end = nowSeconds;
  return end === null ? null : Math.max(0, end - row.started_at);
}

/** Local wall-clock "HH:MM:SS" for an epoch-seconds timestamp; "" if missing. */
export function formatClock(epochSeconds) {
  if (typeof epochSeconds !== "number" || !Number.isFinite(epochSeconds)) return "";
  const d = new Date(epochSeconds * 1000);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/**
 * When a run started, in the browser's local time: "HH:MM:SS" on the same
 * local day as `nowSeconds`, "YYYY-MM-DD HH:MM" on another day (a run of an
 * earlier kernel); "" when missing.
 */
export function formatStarted(epochSeconds, nowSeconds) {
  if (typeof epochSeconds !== "number" || !Number.isFinite(epochSeconds)) return "";
  const d = new Date(epochSeconds * 1000);
  const now = new Date((Number.isFinite(nowSeconds) ? nowSeconds : Date.now() / 1000) * 1000);
  const sameDay =
    d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  if (sameDay) return formatClock(epochSeconds);
  return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
}

/** "950 tok", "12.3k tok", "4.1M tok"; "" without tokens. */
export function tokensText(usage) {
  const n = usage && Number.isFinite(usage.total_tokens) ? usage.total_tokens : null;
  if (n === null) return "";
  if (n < 1000) return `${Math.round(n)} tok`;
  if (n < 1e6) return `${(n / 1000).toFixed(n < 10000 ? 1 : 0)}k tok`;
  return `${(n / 1e6).toFixed(1)}M tok`;
}

/** The tooltip of a token badge: every count the kernel sent. */
export function usageTitle(usage) {
  if (!usage) return "";
  const parts = [];
  if (usage.calls !== null) parts.push(`${usage.calls} LLM call${usage.calls === 1 ? "" : "s"}`);
  if (usage.prompt_tokens !== null) parts.push(`${usage.prompt_tokens} prompt`);
  if (usage.completion_tokens !== null) parts.push(`${usage.completion_tokens} completion`);
  if (usage.cached_tokens) parts.push(`${usage.cached_tokens} cached`);
  if (usage.cost !== null) parts.push(`cost ${usage.cost}`);
  return parts.join(" · ");
}

/**
 * What a progress bar shows: {percent (null: no bar, label only), label}.
 * The ETA counts down from when the run reported it (`updated_at`).
 */
export function progressView(progress, nowSeconds) {
  if (!progress) return null;
  const parts = [];
  if (progress.percent !== null) parts.push(`${Math.floor(progress.percent)}%`);
  else if (progress.current !== null) {
    parts.push(progress.total !== null ? `${progress.current}/${progress.total}` : `${progress.current}`);
  }
  if (progress.eta_seconds !== null) {
    const since = progress.updated_at !== null && Number.isFinite(nowSeconds) ? nowSeconds - progress.updated_at : 0;
    const left = Math.max(0, progress.eta_seconds - Math.max(0, since));
    parts.push(`ETA ${formatDuration(Math.round(left))}`);
  }
  const phase = [progress.phase, progress.status].filter((x) => x).join(": ");
  if (phase) parts.push(phase);
  else if (progress.subtitle) parts.push(progress.subtitle);
  else if (progress.title) parts.push(progress.title);
  return { percent: progress.percent, label: parts.join(" · ") };
}

/** Server clock minus browser clock, in seconds (0 if the message had no server_time). */
export function clockOffset(serverTime, browserNowSeconds) {
  return typeof serverTime === "number" && Number.isFinite(serverTime)
    ? serverTime - browserNowSeconds
    : 0;
}

/** First non-blank line of an error message. */
export function firstLine(text) {
  const lines = toText(text).split(/\r?\n/);
  return (lines.find((l) => l.trim() !== "") || "").trim();
}

/**
 * The plain text of every cell of a row. Everything returned is literal text
 * to be put in the DOM with textContent, never markup.
 */
export function cellTexts(row, nowSeconds) {
  return {
    run_id: row.run_id,
    graph_id: row.graph_id,
    status: statusLabel(row.status),
    session: row.session_id || "",
    tags: row.tags.join(", "),
    started: formatStarted(row.started_at, nowSeconds),
    duration: formatDuration(durationOf(row, nowSeconds)),
    error: firstLine(row.error) || (row.traceback ? "traceback" : ""),
    parent: row.parent_run_id || "",
  };
}

/**
 * Which cancel control a row shows: "cancel" (enabled button), "cancelling"
 * (disabled button) or "none" (terminal rows). `requestedLocally` is true
 * right after the user clicked Cancel, before Python has reported the change.
 */
export function cancelMode(status, requestedLocally = false) {
  if (status === "cancellation_requested") return "cancelling";
  if (!isCancellable(status)) return "none";
  return requestedLocally ? "cancelling" : "cancel";
}

/** Failed and canceled runs can be retried (a new run with the same inputs). */
export function canRetry(status) {
  return status === "failed" || status === "canceled";
}

/** The Cancel all button: "Cancel all (3)" (the kernel's live count over every page). */
export function cancelAllLabel(liveMatching) {
  return liveMatching > 0 ? `Cancel all (${liveMatching})` : "Cancel all";
}

/** The question asked before "Cancel all" acts; `count` is the kernel's exact set. */
export function cancelOfferText(count) {
  const noun = count === 1 ? "live run" : "live runs";
  return `Cancel ${count} ${noun} matching the current filters (on every page)?`;
}

// ---------------------------------------------------------------------------
// Run detail
// ---------------------------------------------------------------------------

/** The "detail" request for a run (logs start at their newest page). */
export function detailRequest(runId, logQuery = {}) {
  return {
    type: "detail",
    run_id: runId,
    log_search: cleanSearch(logQuery.search),
    log_levels: Array.isArray(logQuery.levels) ? logQuery.levels.filter((l) => LOG_LEVELS.includes(l)) : [],
  };
}

export const LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

/** Levels at or above `min` ("" or unknown: every level, sent as []). */
export function levelsFrom(min) {
  const at = LOG_LEVELS.indexOf(min);
  return at <= 0 ? [] : LOG_LEVELS.slice(at);
}

/** A "logs" page request: offset null means the newest page. */
export function logsRequest(runId, { offset = null, search = "", levels = [] } = {}) {
  return {
    type: "logs",
    run_id: runId,
    offset: Number.isInteger(offset) && offset >= 0 ? offset : null,
    search: cleanSearch(search),
    levels: Array.isArray(levels) ? levels.filter((l) => LOG_LEVELS.includes(l)) : [],
  };
}

function normalizePreview(raw) {
  if (!isPlainObject(raw) || typeof raw.text !== "string") return null;
  return { text: raw.text, truncated: raw.truncated === true, exact: raw.exact === true };
}

function normalizeLogs(raw) {
  if (!isPlainObject(raw)) return null;
  const lines = (Array.isArray(raw.lines) ? raw.lines : []).filter(isPlainObject).map((l) => ({
    time: finiteOrNull(l.time),
    level: toText(l.level).toUpperCase(),
    message: toText(l.message),
  }));
  return {
    lines,
    total: intAtLeast(raw.total, 0, lines.length),
    offset: intAtLeast(raw.offset, 0, 0),
    limit: intAtLeast(raw.limit, 1, 100),
    search: toText(raw.search),
    levels: Array.isArray(raw.levels) ? raw.levels.filter((l) => LOG_LEVELS.includes(l)) : [],
  };
}

function normalizeSteps(raw) {
  if (!isPlainObject(raw)) return null;
  const items = (Array.isArray(raw.items) ? raw.items : []).filter(isPlainObject).map((s) => ({
    kind: toText(s.kind),
    name: toText(s.name),
    inputs_preview: stringOrNull(s.inputs_preview),
    outputs_preview: stringOrNull(s.outputs_preview),
    started_at: finiteOrNull(s.started_at),
    duration_s: finiteOrNull(s.duration_s),
    error: stringOrNull(s.error),
  }));
  return {
    items,
    total: intAtLeast(raw.total, 0, items.length),
    offset: intAtLeast(raw.offset, 0, 0),
    limit: intAtLeast(raw.limit, 1, 50),
  };
}

function normalizeList(raw, fn) {
  if (!isPlainObject(raw)) return null;
  const items = (Array.isArray(raw.items) ? raw.items : []).map(fn).filter((x) => x !== null);
  return {
    items,
    total: intAtLeast(raw.total, 0, items.length),
    more: raw.more === true,
    available: raw.available !== false,
  };
}

function normalizeArtifact(raw) {
  if (!isPlainObject(raw)) return null;
  const id = nonEmptyStringOrNull(raw.artifact_id);
  if (id === null) return null;
  return {
    artifact_id: id,
    name: toText(raw.name),
    kind: toText(raw.kind),
    mime: toText(raw.mime),
    bytes: finiteOrNull(raw.bytes),
    uri: stringOrNull(raw.uri),
    path: stringOrNull(raw.path),
    downloadable: raw.downloadable === true,
  };
}

function normalizeEntry(raw) {
  if (!isPlainObject(raw)) return null;
  return { kind: toText(raw.kind), text: toText(raw.text), ask_id: stringOrNull(raw.ask_id), at: finiteOrNull(raw.at) };
}

/** A kernel "detail" message, validated; null when unusable. */
export function normalizeDetail(raw) {
  if (!isPlainObject(raw) || raw.type !== "detail") return null;
  const record = normalizeRow(raw.record);
  if (!record || record.run_id !== raw.run_id) return null;
  const r = raw.record;
  const t = isPlainObject(r.timings) ? r.timings : {};
  record.origin = toText(r.origin);
  record.cancel_reason = stringOrNull(r.cancel_reason);
  record.retryable = r.retryable === true;
  record.timings = {
    created_at: finiteOrNull(t.created_at),
    started_at: finiteOrNull(t.started_at),
    finished_at: finiteOrNull(t.finished_at),
    queued_s: finiteOrNull(t.queued_s),
  };
  const errors = {};
  if (isPlainObject(raw.errors)) for (const [k, v] of Object.entries(raw.errors)) errors[k] = toText(v);
  return {
    run_id: record.run_id,
    record,
    inputs: normalizePreview(raw.inputs),
    outputs: normalizePreview(raw.outputs),
    logs: normalizeLogs(raw.logs),
    steps: normalizeSteps(raw.steps),
    transcript: normalizeList(raw.transcript, normalizeEntry),
    artifacts: normalizeList(raw.artifacts, normalizeArtifact),
    children: normalizeList(raw.children, normalizeRow),
    usage: normalizeUsage(raw.usage),
    errors,
  };
}

/** "lines 101-200 of 340" for a log page; "no log lines" when empty. */
export function logRangeText(logs) {
  if (!logs || logs.total === 0) return logs && (logs.search || logs.levels.length) ? "no matching log lines" : "no log lines";
  const first = logs.offset + 1;
  const last = logs.offset + logs.lines.length;
  return `lines ${first}-${last} of ${logs.total}`;
}

/** The offsets the log pager's Older / Newer buttons ask for (null: no such page). */
export function logPagerOffsets(logs) {
  if (!logs) return { older: null, newer: null };
  const older = logs.offset > 0 ? Math.max(0, logs.offset - logs.limit) : null;
  const newer = logs.offset + logs.lines.length < logs.total ? logs.offset + logs.limit : null;
  return { older, newer };
}

// ---------------------------------------------------------------------------
// DOM: skeleton (styles live in run_panel.css)
// ---------------------------------------------------------------------------

// The actions column (Cancel / Retry) comes first and is sticky, so it stays
// on screen however narrow the output area is and however far the table is
// scrolled sideways.
const COLUMNS = [
  ["actions", ""],
  ["id", "Run"],
  ["graph", "Graph"],
  ["status", "Status"],
  ["session", "Session"],
  ["tags", "Tags"],
  ["started", "Started"],
  ["duration", "Duration"],
  ["error", "Error"],
  ["parent", "Parent"],
];

/** Element factory bound to a document; text goes in via textContent only. */
function elementMaker(doc) {
  return (tag, className, text) => {
    const node = doc.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };
}

function addOption(make, select, value, label) {
  const option = make("option", "", label);
  option.value = value;
  select.appendChild(option);
}

function makeButton(make, className, text, title) {
  const b = make("button", className, text);
  b.setAttribute("type", "button");
  if (title) b.setAttribute("title", title);
  return b;
}

/** Set text only when it differs, so unchanged headers cause no DOM writes. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function clearChildren(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

/** Build the static parts of the panel; returns references to the live bits. */
function buildSkeleton(make) {
  const root = make("div", "ag-run-panel");

  const header = make("div", "ag-header");
  const title = make("span", "ag-title");
  const counts = make("span", "ag-counts");
  header.append(title, counts);

  const notice = make("div", "ag-notice");
  notice.setAttribute("role", "status");
  notice.setAttribute("aria-live", "polite");
  notice.hidden = true;

  const asks = make("section", "ag-asks");
  asks.setAttribute("aria-label", "Runs waiting for an answer");
  const asksTitle = make("div", "ag-asks-title");
  const asksList = make("div", "ag-asks-list");
  const asksMore = make("div", "ag-asks-more");
  asksMore.hidden = true;
  asks.append(asksTitle, asksList, asksMore);
  asks.hidden = true;

  const controls = make("div", "ag-controls");
  const status = make("select", "ag-filter-status");
  status.setAttribute("aria-label", "Filter by status");
  addOption(make, status, "all", "all statuses");
  addOption(make, status, "live", "live");
  for (const s of STATUSES) addOption(make, status, s, statusLabel(s));
  const session = make("select", "ag-filter-session");
  session.setAttribute("aria-label", "Filter by session");
  const graph = make("select", "ag-filter-graph");
  graph.setAttribute("aria-label", "Filter by graph");
  const tag = make("select", "ag-filter-tag");
  tag.setAttribute("aria-label", "Filter by tag");
  const search = make("input", "ag-search");
  search.setAttribute("type", "search");
  search.setAttribute("placeholder", "Search id, graph, session, tag, error");
  search.setAttribute("aria-label", "Search runs");
  search.setAttribute("maxlength", String(MAX_SEARCH_LENGTH));
  const cancelVisible = makeButton(make, "ag-cancel-visible", "Cancel all");
  cancelVisible.disabled = true;
  controls.append(status, session, graph, tag, search, cancelVisible);

  const confirm = make("div", "ag-confirm");
  confirm.setAttribute("role", "alertdialog");
  const confirmText = make("span", "ag-confirm-text");
  const confirmSample = make("span", "ag-confirm-sample");
  const confirmYes = makeButton(make, "ag-confirm-yes", "Cancel them");
  const confirmNo = makeButton(make, "ag-confirm-no", "Keep them");
  confirm.append(confirmText, confirmSample, confirmYes, confirmNo);
  confirm.hidden = true;

  const detail = buildDetail(make);

  const wrap = make("div", "ag-table-wrap");
  const table = make("table", "ag-table");
  const headRow = make("tr");
  for (const [key, label] of COLUMNS) headRow.appendChild(make("th", `ag-col-${key}`, label));
  const thead = make("thead");
  thead.appendChild(headRow);
  const tbody = make("tbody");
  table.append(thead, tbody);
  wrap.appendChild(table);

  const empty = make("div", "ag-empty", EMPTY_TEXT);

  const pager = make("div", "ag-pager");
  const prev = makeButton(make, "ag-prev", "Prev");
  const pageInfo = make("span", "ag-page-info", "page 1 of 1");
  const next = makeButton(make, "ag-next", "Next");
  pager.append(prev, pageInfo, next);

  const list = make("div", "ag-list");
  list.append(wrap, empty, pager);

  root.append(header, notice, asks, controls, confirm, detail.root, list);
  return {
    root, title, counts, notice, asks, asksTitle, asksList, asksMore, status, session, graph, tag,
    search, cancelVisible, confirm, confirmText, confirmSample, confirmYes, confirmNo, detail, list,
    wrap, tbody, empty, prev, pageInfo, next,
  };
}

// ---------------------------------------------------------------------------
// DOM: one table row, updated in place
// ---------------------------------------------------------------------------

/**
 * Create the <tr> for a run. The row keeps its cells and its buttons for its
 * whole life, so updates only touch text, and a click that started on a
 * button still lands on the same element.
 */
function createRowView(make, runId) {
  const tr = make("tr", "ag-row");
  tr.setAttribute("data-run-id", runId);
  tr.setAttribute("title", "Click for details");
  const cells = {};
  for (const [key] of COLUMNS) {
    cells[key] = make("td", `ag-col-${key}`);
    tr.appendChild(cells[key]);
  }
  const toggle = makeButton(make, "ag-toggle");
  toggle.hidden = true;
  const marker = make("span", "ag-child-marker", "↳");
  marker.hidden = true;
  const idText = makeButton(make, "ag-id ag-open");
  idText.setAttribute("title", "Show this run's details");
  cells.id.append(toggle, marker, idText);
  const graphText = make("span", "ag-graph-text");
  const badges = make("span", "ag-badges");
  cells.graph.append(graphText, badges);
  const chip = make("span", "ag-status");
  const progress = make("div", "ag-progress");
  progress.hidden = true;
  cells.status.append(chip, progress);
  const cancel = makeButton(make, "ag-cancel", "Cancel");
  const retry = makeButton(make, "ag-retry", "Retry", "Start a new run of this graph with the same inputs");
  return { tr, cells, toggle, marker, idText, graphText, badges, chip, progress, cancel, retry, last: {}, entry: null };
}

/** Run `apply(value)` only when `value` differs from what the row shows now. */
function patch(view, key, value, apply) {
  if (view.last[key] === value) return;
  view.last[key] = value;
  apply(value);
}

function badgeList(row) {
  const out = [];
  if (row.agent_id) out.push(["ag-badge-agent", `agent ${row.agent_id}`, `agent_id: ${row.agent_id}`]);
  if (row.app_id) out.push(["ag-badge-app", `app ${row.app_id}`, `app_id: ${row.app_id}`]);
  const tokens = tokensText(row.usage);
  if (tokens) out.push(["ag-badge-tokens", tokens, usageTitle(row.usage)]);
  if (row.retry_of) out.push(["ag-badge-retry", "retry", `retry of ${row.retry_of}`]);
  if (row.open_asks) out.push(["ag-badge-asks", `asks ${row.open_asks}`, "waiting for your answer (top of the panel)"]);
  if (row.executor) out.push(["ag-badge-executor", executorText(row), executorTitle(row)]);
  return out;
}

/** "dask 10.0.0.7:40123": the executor and its worker without the scheme, cut short. */
function executorText(row) {
  if (!row.worker) return row.executor;
  const where = row.worker.replace(/^[a-z]+:\/\//i, "");
  return `${row.executor} ${where.length > 24 ? `${where.slice(0, 23)}…` : where}`;
}

function executorTitle(row) {
  return row.worker
    ? `ran on ${row.executor} worker ${row.worker}`
    : `runs on ${row.executor} (no worker yet)`;
}

function renderBadges(make, node, list) {
  clearChildren(node);
  for (const [cls, text, title] of list) {
    const badge = make("span", `ag-badge ${cls}`, text);
    if (title) badge.setAttribute("title", title);
    node.appendChild(badge);
  }
}

function renderProgress(make, node, view) {
  clearChildren(node);
  node.hidden = view === null;
  if (view === null) return;
  if (view.percent !== null) {
    const bar = make("div", "ag-progress-bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuenow", String(Math.floor(view.percent)));
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    const fill = make("div", "ag-progress-fill");
    fill.style.width = `${view.percent}%`;
    bar.appendChild(fill);
    node.appendChild(bar);
  }
  if (view.label) node.appendChild(make("span", "ag-progress-text", view.label));
}

function updateRowView(make, view, entry, now, cancelRequested) {
  const { row, depth, childCount, expanded } = entry;
  view.entry = entry;
  const text = cellTexts(row, now);

  // Depth, child count and open/closed all come from the kernel's `order`.
  patch(view, "layout", `${depth}|${childCount}|${expanded}`, () => {
    view.tr.classList.toggle("ag-child", depth > 0);
    view.cells.id.style.paddingLeft = `${0.4 + Math.min(depth, 8) * 1.2}em`;
    view.marker.hidden = depth === 0;
    view.toggle.hidden = childCount === 0;
    view.toggle.textContent = expanded ? "▾" : "▸";
    view.toggle.setAttribute("aria-expanded", String(expanded));
    const noun = childCount === 1 ? "child run" : "child runs";
    view.toggle.setAttribute("title", `${expanded ? "Hide" : "Show"} ${childCount} ${noun}`);
  });
  patch(view, "id", text.run_id, (v) => (view.idText.textContent = v));
  patch(view, "graph", text.graph_id, (v) => (view.graphText.textContent = v));
  patch(view, "worker", row.worker, (w) => {
    if (w) view.cells.graph.setAttribute("title", `ran on Dask worker ${w}`);
    else view.cells.graph.removeAttribute("title");
  });
  const badges = badgeList(row);
  patch(view, "badges", JSON.stringify(badges), () => renderBadges(make, view.badges, badges));
  patch(view, "status", row.status, (s) => {
    view.chip.setAttribute("data-status", s);
    view.chip.textContent = text.status;
    view.tr.setAttribute("data-status", s);
  });
  const progress = progressView(row.progress, now);
  patch(view, "progress", progress ? `${progress.percent}|${progress.label}` : "", () =>
    renderProgress(make, view.progress, progress),
  );
  patch(view, "session", text.session, (v) => (view.cells.session.textContent = v));
  patch(view, "tags", row.tags.join("\u0000"), () => renderTags(make, view.cells.tags, row.tags));
  patch(view, "started", text.started, () => {
    view.cells.started.textContent = text.started;
    if (row.started_at === null) view.cells.started.removeAttribute("title");
    else view.cells.started.setAttribute("title", new Date(row.started_at * 1000).toString());
  });
  patch(view, "duration", text.duration, (v) => (view.cells.duration.textContent = v));
  patch(view, "error", `${row.error}\u0000${row.traceback}`, () =>
    renderError(make, view.cells.error, row, text.error),
  );
  patch(view, "parent", text.parent, (v) => (view.cells.parent.textContent = v));
  patch(view, "cancel", cancelMode(row.status, cancelRequested), (mode) => renderCancel(view, mode));
  patch(view, "retry", canRetry(row.status), (yes) => renderRetry(view, yes));
}

function renderTags(make, cell, tags) {
  clearChildren(cell);
  for (const tag of tags) cell.appendChild(make("span", "ag-tag", tag));
}

/** One-line error, or an expandable <details> when there is a traceback. */
function renderError(make, cell, row, line) {
  const old = cell.firstChild;
  const wasOpen = Boolean(old && old.open);
  clearChildren(cell);
  if (!line) return;
  if (!row.traceback) {
    const span = make("span", "ag-error", line);
    if (row.error && row.error.trim() !== line) span.setAttribute("title", row.error);
    cell.appendChild(span);
    return;
  }
  const details = make("details", "ag-error-details");
  details.appendChild(make("summary", "ag-error-summary", line));
  details.appendChild(make("pre", "ag-traceback", row.traceback));
  details.open = wasOpen;
  cell.appendChild(details);
}

function renderCancel(view, mode) {
  if (mode === "none") {
    if (view.cancel.parentNode) view.cancel.parentNode.removeChild(view.cancel);
    return;
  }
  view.cancel.disabled = mode === "cancelling";
  view.cancel.textContent = mode === "cancelling" ? "Cancelling…" : "Cancel";
  if (view.cancel.parentNode !== view.cells.actions) view.cells.actions.appendChild(view.cancel);
}

function renderRetry(view, yes) {
  if (!yes) {
    if (view.retry.parentNode) view.retry.parentNode.removeChild(view.retry);
    return;
  }
  view.retry.disabled = false;
  view.retry.textContent = "Retry";
  if (view.retry.parentNode !== view.cells.actions) view.cells.actions.appendChild(view.retry);
}

// ---------------------------------------------------------------------------
// DOM: asks
// ---------------------------------------------------------------------------

/** A card for one open ask; created once per ask id and kept while it is open. */
function createAskCard(make, ask) {
  const root = make("div", "ag-ask");
  root.setAttribute("data-ask-id", ask.ask_id);
  root.setAttribute("data-kind", ask.kind);
  const meta = make("div", "ag-ask-meta");
  const who = make("span", "ag-ask-run", ask.run_id);
  who.setAttribute("data-run-id", ask.run_id);
  const graph = make("span", "ag-ask-graph", ask.graph_id ? ` (${ask.graph_id})` : "");
  const kind = make("span", "ag-ask-kind", ask.kind === "approval" ? " asks for approval" : " asks");
  const countdown = make("span", "ag-ask-countdown");
  meta.append(who, graph, kind, countdown);
  const prompt = make("div", "ag-ask-prompt", ask.prompt);
  const controls = make("div", "ag-ask-controls");
  const card = { root, ask, countdown, controls, inputs: [], error: null, files: null };
  if (ask.kind === "choices" || ask.kind === "approval") {
    const options = ask.kind === "approval" ? approvalOptions(ask) : ask.options;
    options.forEach((option, index) => {
      const b = makeButton(make, "ag-ask-choice", option.label);
      b.setAttribute("data-index", String(index));
      if (ask.kind === "approval") b.classList.add(index === 0 ? "ag-approve" : "ag-reject");
      controls.appendChild(b);
      card.inputs.push(b);
    });
    card.options = options;
  } else if (ask.kind === "files") {
    const input = make("input", "ag-ask-files");
    input.setAttribute("type", "file");
    input.setAttribute("multiple", "");
    input.setAttribute("aria-label", "Files to send");
    const cap = make("span", "ag-ask-cap", ask.max_bytes ? `up to ${formatBytes(ask.max_bytes)} in all` : "");
    const send = makeButton(make, "ag-ask-send", "Send files");
    controls.append(input, send, cap);
    card.inputs.push(input, send);
    card.files = input;
  } else {
    const input = make("textarea", "ag-ask-input");
    input.setAttribute("rows", "2");
    input.setAttribute("aria-label", "Your answer");
    input.setAttribute("placeholder", "Type an answer; Enter sends, Shift+Enter for a new line");
    input.setAttribute("maxlength", String(MAX_ANSWER_CHARS));
    const send = makeButton(make, "ag-ask-send", "Send");
    controls.append(input, send);
    card.inputs.push(input, send);
    card.text = input;
  }
  const error = make("div", "ag-ask-error");
  error.hidden = true;
  card.error = error;
  root.append(meta, prompt, controls, error);
  return card;
}

function setCardBusy(card, busy) {
  for (const node of card.inputs) node.disabled = busy;
  card.root.classList.toggle("ag-ask-busy", busy);
}

function setCardError(card, text) {
  card.error.textContent = text;
  card.error.hidden = !text;
}

// ---------------------------------------------------------------------------
// DOM: run detail
// ---------------------------------------------------------------------------

function detailSection(make, key, title) {
  const section = make("section", `ag-detail-section ag-detail-${key}`);
  section.setAttribute("data-section", key);
  const heading = make("h4", "ag-detail-heading", title);
  const body = make("div", "ag-detail-body");
  section.append(heading, body);
  return { section, heading, body };
}

/** The detail pane's skeleton: its controls persist, section bodies are redrawn. */
function buildDetail(make) {
  const root = make("section", "ag-detail");
  root.hidden = true;
  const head = make("div", "ag-detail-head");
  const back = makeButton(make, "ag-detail-close", "← All runs", "Back to the list of runs");
  const id = make("span", "ag-detail-id");
  const chip = make("span", "ag-status");
  const badges = make("span", "ag-badges");
  const cancel = makeButton(make, "ag-detail-cancel", "Cancel");
  const retry = makeButton(make, "ag-detail-retry", "Retry", "Start a new run of this graph with the same inputs");
  cancel.hidden = true;
  retry.hidden = true;
  head.append(back, id, chip, badges, cancel, retry);
  const loading = make("div", "ag-detail-loading", "Loading…");
  const summary = make("dl", "ag-detail-summary");
  const progress = make("div", "ag-progress");
  progress.hidden = true;
  const error = detailSection(make, "error", "Error");
  const inputs = detailSection(make, "inputs", "Inputs");
  const outputs = detailSection(make, "outputs", "Outputs");
  const logs = detailSection(make, "logs", "Logs");
  const logControls = make("div", "ag-log-controls");
  const logSearch = make("input", "ag-log-search");
  logSearch.setAttribute("type", "search");
  logSearch.setAttribute("placeholder", "Search log lines");
  logSearch.setAttribute("aria-label", "Search log lines");
  logSearch.setAttribute("maxlength", String(MAX_SEARCH_LENGTH));
  const logLevel = make("select", "ag-log-level");
  logLevel.setAttribute("aria-label", "Lowest log level shown");
  addOption(make, logLevel, "", "all levels");
  for (const level of LOG_LEVELS.slice(1)) addOption(make, logLevel, level, `${level} and up`);
  const logOlder = makeButton(make, "ag-log-older", "Older");
  const logNewer = makeButton(make, "ag-log-newer", "Newer");
  const logNewest = makeButton(make, "ag-log-newest", "Newest");
  const logRange = make("span", "ag-log-range");
  logControls.append(logSearch, logLevel, logOlder, logNewer, logNewest, logRange);
  const logLines = make("div", "ag-log-lines");
  logs.body.append(logControls, logLines);
  const transcript = detailSection(make, "transcript", "Transcript");
  const steps = detailSection(make, "steps", "Steps");
  const stepPager = make("div", "ag-step-pager");
  const stepOlder = makeButton(make, "ag-step-older", "Older");
  const stepNewer = makeButton(make, "ag-step-newer", "Newer");
  const stepRange = make("span", "ag-step-range");
  stepPager.append(stepOlder, stepNewer, stepRange);
  const stepList = make("div", "ag-step-list");
  steps.body.append(stepPager, stepList);
  const artifacts = detailSection(make, "artifacts", "Artifacts");
  const children = detailSection(make, "children", "Child runs");
  root.append(
    head, loading, summary, progress, error.section, inputs.section, outputs.section, logs.section,
    transcript.section, steps.section, artifacts.section, children.section,
  );
  return {
    root, back, id, chip, badges, cancel, retry, loading, summary, progress, error, inputs, outputs,
    logs, logSearch, logLevel, logOlder, logNewer, logNewest, logRange, logLines, transcript, steps,
    stepOlder, stepNewer, stepRange, stepList, artifacts, children, last: {},
  };
}

function summaryRows(record, now) {
  const t = record.timings;
  const rows = [
    ["Graph", record.graph_id],
    ["Session", record.session_id || ""],
    ["Parent", record.parent_run_id || "", record.parent_run_id],
    ["Retry of", record.retry_of || "", record.retry_of],
    ["Agent", record.agent_id || ""],
    ["App", record.app_id || ""],
    ["Origin", record.origin || ""],
    ["Tags", record.tags.join(", ")],
    ["Created", formatStarted(t.created_at, now)],
    ["Started", formatStarted(t.started_at, now)],
    ["Finished", formatStarted(t.finished_at, now)],
    ["Queued", t.queued_s === null ? "" : formatDuration(t.queued_s)],
    ["Duration", formatDuration(durationOf(record, now))],
    ["Cancel reason", record.cancel_reason || ""],
  ];
  return rows.filter(([, value]) => value !== "");
}

function renderSummary(make, dl, record, usage, now) {
  clearChildren(dl);
  const rows = summaryRows(record, now);
  const u = usage || record.usage;
  if (u) {
    const text = [tokensText(u), usageTitle(u)].filter((x) => x).join(" — ");
    if (text) rows.push(["Tokens", text]);
  }
  for (const [label, value, runLink] of rows) {
    dl.appendChild(make("dt", "", label));
    const dd = make("dd", `ag-summary-${label.toLowerCase().replace(/ /g, "-")}`);
    if (runLink) {
      const link = makeButton(make, "ag-run-link", value, "Show this run's details");
      link.setAttribute("data-run-id", runLink);
      dd.appendChild(link);
    } else dd.textContent = value;
    dl.appendChild(dd);
  }
}

function sectionError(make, body, text) {
  if (text) body.appendChild(make("div", "ag-detail-problem", `could not read: ${text}`));
}

function renderPreview(make, body, preview, emptyText, problem) {
  clearChildren(body);
  sectionError(make, body, problem);
  if (!preview) {
    if (!problem) body.appendChild(make("div", "ag-detail-none", emptyText));
    return;
  }
  body.appendChild(make("pre", "ag-json", preview.text));
  const notes = [];
  if (!preview.exact) notes.push("parts JSON cannot hold are shown as their repr ({\"__repr__\", \"__type__\"})");
  if (preview.truncated) notes.push("cut: load the full value in a cell");
  if (notes.length) body.appendChild(make("div", "ag-detail-note", notes.join("; ")));
}

function renderLogs(make, d, logs, problem) {
  clearChildren(d.logLines);
  sectionError(make, d.logLines, problem);
  setText(d.logRange, logRangeText(logs));
  const { older, newer } = logPagerOffsets(logs);
  d.logOlder.disabled = older === null;
  d.logNewer.disabled = newer === null;
  d.logNewest.disabled = newer === null;
  if (!logs) return;
  for (const line of logs.lines) {
    const div = make("div", "ag-log-line");
    div.setAttribute("data-level", line.level);
    div.append(
      make("span", "ag-log-time", formatClock(line.time)),
      make("span", "ag-log-level-name", line.level),
      make("span", "ag-log-message", line.message),
    );
    d.logLines.appendChild(div);
  }
}

function renderTranscript(make, body, transcript, problem) {
  clearChildren(body);
  sectionError(make, body, problem);
  if (!transcript || transcript.items.length === 0) {
    if (!problem) body.appendChild(make("div", "ag-detail-none", "Nothing was asked or sent."));
    return;
  }
  if (transcript.total > transcript.items.length) {
    body.appendChild(make("div", "ag-detail-note", `the newest ${transcript.items.length} of ${transcript.total}`));
  }
  for (const entry of transcript.items) {
    const div = make("div", "ag-transcript-entry");
    div.setAttribute("data-kind", entry.kind);
    div.append(
      make("span", "ag-transcript-time", formatClock(entry.at)),
      make("span", "ag-transcript-kind", entry.kind),
      make("span", "ag-transcript-text", entry.text),
    );
    body.appendChild(div);
  }
}

function renderSteps(make, d, steps, problem) {
  clearChildren(d.stepList);
  sectionError(make, d.stepList, problem);
  const total = steps ? steps.total : 0;
  setText(
    d.stepRange,
    total ? `steps ${steps.offset + 1}-${steps.offset + steps.items.length} of ${total}` : "no steps",
  );
  d.stepOlder.disabled = !steps || steps.offset === 0;
  d.stepNewer.disabled = !steps || steps.offset + steps.items.length >= total;
  if (!steps) return;
  for (const step of steps.items) {
    const item = make("details", "ag-step");
    item.setAttribute("data-kind", step.kind);
    const summary = make("summary", "ag-step-summary");
    summary.append(
      make("span", "ag-step-kind", step.kind),
      make("span", "ag-step-name", step.name),
      make("span", "ag-step-time", formatDuration(step.duration_s)),
    );
    if (step.error) summary.appendChild(make("span", "ag-step-error", firstLine(step.error)));
    item.appendChild(summary);
    if (step.inputs_preview !== null) item.appendChild(make("pre", "ag-step-inputs", step.inputs_preview));
    if (step.outputs_preview !== null) item.appendChild(make("pre", "ag-step-outputs", step.outputs_preview));
    if (step.error) item.appendChild(make("pre", "ag-step-error-text", step.error));
    d.stepList.appendChild(item);
  }
}

function renderArtifacts(make, body, artifacts, problem) {
  clearChildren(body);
  sectionError(make, body, problem);
  if (!artifacts || !artifacts.available) {
    if (!problem) body.appendChild(make("div", "ag-detail-none", "This runtime keeps no artifacts (in-memory workspace)."));
    return;
  }
  if (artifacts.items.length === 0) {
    body.appendChild(make("div", "ag-detail-none", "This run saved no artifacts."));
    return;
  }
  if (artifacts.more || artifacts.total > artifacts.items.length) {
    const more = "; load the others in a cell: await context.artifacts().list(run_id=...)";
    body.appendChild(make("div", "ag-detail-note", `the newest ${artifacts.items.length}${more}`));
  }
  const table = make("table", "ag-artifacts");
  const head = make("tr");
  for (const label of ["Name", "Kind", "Size", "Where", ""]) head.appendChild(make("th", "", label));
  table.appendChild(head);
  for (const a of artifacts.items) {
    const tr = make("tr", "ag-artifact");
    tr.setAttribute("data-artifact-id", a.artifact_id);
    const where = make("td", "ag-artifact-where");
    if (a.uri) where.appendChild(make("code", "ag-artifact-uri", a.uri));
    if (a.path) where.appendChild(make("code", "ag-artifact-path", a.path));
    const actions = make("td", "ag-artifact-actions");
    if (a.downloadable) {
      const b = makeButton(make, "ag-download", "Download", "Send this file's bytes to the browser");
      b.setAttribute("data-artifact-id", a.artifact_id);
      actions.appendChild(b);
    } else actions.appendChild(make("span", "ag-detail-note", "too large to download here"));
    tr.append(
      make("td", "ag-artifact-name", a.name),
      make("td", "ag-artifact-kind", a.kind),
      make("td", "ag-artifact-size", formatBytes(a.bytes)),
      where,
      actions,
    );
    table.appendChild(tr);
  }
  body.appendChild(table);
}

function renderChildren(make, body, children, now) {
  clearChildren(body);
  if (!children || children.items.length === 0) {
    body.appendChild(make("div", "ag-detail-none", "No child runs."));
    return;
  }
  if (children.total > children.items.length) {
    body.appendChild(make("div", "ag-detail-note", `the newest ${children.items.length} of ${children.total}`));
  }
  for (const child of children.items) {
    const div = make("div", "ag-child-run");
    const link = makeButton(make, "ag-run-link", child.run_id, "Show this run's details");
    link.setAttribute("data-run-id", child.run_id);
    const chip = make("span", "ag-status", statusLabel(child.status));
    chip.setAttribute("data-status", child.status);
    div.append(link, chip, make("span", "ag-child-graph", child.graph_id),
      make("span", "ag-child-duration", formatDuration(durationOf(child, now))));
    body.appendChild(div);
  }
}

// ---------------------------------------------------------------------------
// DOM: the view
// ---------------------------------------------------------------------------

function scheduleFrame(fn) {
  if (typeof globalThis.requestAnimationFrame === "function") {
    const id = globalThis.requestAnimationFrame(fn);
    return () => globalThis.cancelAnimationFrame(id);
  }
  const id = setTimeout(fn, 16);
  return () => clearTimeout(id);
}

// A <select> holds strings only; the view's `session: null` ("runs without a
// session") travels through it as NO_SESSION.
const sessionToSelect = (session) => (session === null ? NO_SESSION : session);
const sessionFromSelect = (value) => (value === NO_SESSION ? null : value);

/** Save bytes the kernel sent as a file download (a Blob and a temporary link). */
function saveDownload(doc, msg, buffers) {
  const buffer = buffers && buffers[0];
  if (!buffer || typeof Blob === "undefined" || !globalThis.URL || !URL.createObjectURL) return false;
  const bytes = buffer instanceof ArrayBuffer ? buffer : buffer.buffer ? buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) : buffer;
  const url = URL.createObjectURL(new Blob([bytes], { type: toText(msg.mime) || "application/octet-stream" }));
  const a = doc.createElement("a");
  a.setAttribute("href", url);
  a.setAttribute("download", toText(msg.name) || "artifact");
  if (typeof a.click === "function") a.click();
  const timer = setTimeout(() => URL.revokeObjectURL(url), 60000);
  if (timer && typeof timer.unref === "function") timer.unref();
  return true;
}

function createView(model, el) {
  const doc = el.ownerDocument || globalThis.document;
  const make = elementMaker(doc);
  const ui = buildSkeleton(make);
  const d = ui.detail;

  const state = createPageState(); // what the kernel told us to show
  let viewState = defaultView(); // what the user asked for
  const cancelSentAt = new Map(); // run_id -> Date.now() of our cancel request
  const views = new Map(); // run_id -> row view, only for rows in the tbody
  const cards = new Map(); // ask_id -> ask card, only for open asks
  const dirty = { structure: true, options: true, header: true, asks: true, ids: new Set() };
  let optionsKey = "";
  let cancelFrame = null;
  let held = false;
  let holdTimer = null;
  let noticeTimer = null;
  let searchTimer = null;
  let logSearchTimer = null;
  let destroyed = false;
  let offer = null; // the kernel's Cancel all offer waiting for a yes/no
  // The open run detail: its id, the kernel's last data, and the log query.
  const detail = { runId: null, data: null, logSearch: "", logMin: "" };

  const serverNow = () => Date.now() / 1000 + state.offset;

  function schedule() {
    if (cancelFrame || destroyed) return;
    cancelFrame = scheduleFrame(flush);
  }

  function cancelRequested(id) {
    const at = cancelSentAt.get(id);
    return at !== undefined && Date.now() - at < CANCEL_PENDING_MS;
  }

  // ---- rendering --------------------------------------------------------

  function flush() {
    cancelFrame = null;
    if (destroyed) return;
    const now = serverNow();
    if (dirty.options) updateOptions();
    if (dirty.header) updateHeader();
    if (dirty.asks) renderAsks(now);
    // While a mouse button is down in the table, keep rows where they are so
    // the click lands on the button it started on; plain cell patches are fine.
    if (dirty.structure && !held) renderPage(now);
    else patchRows(dirty.ids, now);
    dirty.ids.clear();
  }

  function updateHeader() {
    dirty.header = false;
    setText(ui.title, toText(model.get("title")) || "Agent runs");
    setText(ui.counts, summaryText(state.counts, state.total));
    const n = state.liveMatching;
    ui.cancelVisible.disabled = n === 0;
    setText(ui.cancelVisible, cancelAllLabel(n));
    ui.cancelVisible.setAttribute(
      "title",
      n ? `Cancel the ${n} live run${n === 1 ? "" : "s"} matching the current filters, on every page (asks first)` : "No live runs match the current filters",
    );
    // The empty line's text follows `total` even when the (empty) order stays empty.
    setText(ui.empty, state.total === 0 ? EMPTY_TEXT : NO_MATCH_TEXT);
    setText(ui.pageInfo, pagerText(state.page, state.pageCount));
    ui.prev.disabled = state.page === 0;
    ui.next.disabled = state.page >= state.pageCount - 1;
  }

  /** Rebuild the session/graph/tag <option>s, only when the lists changed. */
  function updateOptions() {
    dirty.options = false;
    const sessions = state.facets.sessions.filter((s) => s !== null);
    let withNone = state.facets.sessions.includes(null);
    const tags = [...state.facets.tags];
    const graphs = [...state.facets.graphs];
    // Keep the user's choice listed even after its last run is gone, so the
    // filter never changes under their feet.
    const chosen = viewState.session;
    if (chosen === null) withNone = true;
    else if (chosen && !sessions.includes(chosen)) sessions.push(chosen);
    if (viewState.tag && !tags.includes(viewState.tag)) tags.push(viewState.tag);
    if (viewState.graph && !graphs.includes(viewState.graph)) graphs.push(viewState.graph);
    const key = JSON.stringify([sessions, withNone, tags, graphs]);
    if (key === optionsKey) return;
    optionsKey = key;
    fillSelect(ui.session, "all sessions", sessions, sessionToSelect(viewState.session), withNone);
    fillSelect(ui.graph, "all graphs", graphs, viewState.graph, false);
    fillSelect(ui.tag, "all tags", tags, viewState.tag, false);
  }

  function fillSelect(select, allLabel, values, selected, withNone) {
    clearChildren(select);
    addOption(make, select, "", allLabel);
    if (withNone) addOption(make, select, NO_SESSION, "(no session)");
    for (const v of values) addOption(make, select, v, v);
    select.value = selected;
  }

  /** Show `state.order`, reusing the <tr> of every run already on screen. */
  function renderPage(now) {
    dirty.structure = false;
    const onPage = new Set(state.order.map((e) => e.id));
    // Remove leavers first so rows that stay are not moved around needlessly.
    for (const [id, view] of views) {
      if (!onPage.has(id)) {
        ui.tbody.removeChild(view.tr);
        views.delete(id);
      }
    }
    let cursor = ui.tbody.firstChild;
    for (const entry of state.order) {
      let view = views.get(entry.id);
      if (!view) {
        view = createRowView(make, entry.id);
        views.set(entry.id, view);
      }
      if (cursor === view.tr) cursor = cursor.nextSibling;
      else ui.tbody.insertBefore(view.tr, cursor);
      const row = state.rows.get(entry.id);
      updateRowView(make, view, { ...entry, row }, now, cancelRequested(entry.id));
    }
    ui.empty.hidden = state.order.length > 0;
  }

  /** Update cells of rows already on the page; never adds, removes or moves rows. */
  function patchRows(ids, now) {
    for (const id of ids) {
      const view = views.get(id);
      const row = state.rows.get(id);
      if (view && row) updateRowView(make, view, { ...view.entry, row }, now, cancelRequested(id));
    }
  }

  /** Cards for the open asks, in the kernel's order; cards of asks still open are kept. */
  function renderAsks(now) {
    dirty.asks = false;
    const open = new Set(state.asks.map((a) => a.ask_id));
    for (const [id, card] of cards) {
      if (!open.has(id)) {
        card.root.remove();
        cards.delete(id);
      }
    }
    let cursor = ui.asksList.firstChild;
    for (const ask of state.asks) {
      let card = cards.get(ask.ask_id);
      if (!card) {
        card = createAskCard(make, ask);
        cards.set(ask.ask_id, card);
      }
      if (cursor === card.root) cursor = cursor.nextSibling;
      else ui.asksList.insertBefore(card.root, cursor);
      card.ask = ask;
    }
    const n = state.asks.length;
    ui.asks.hidden = n === 0;
    setText(ui.asksTitle, n === 1 ? "1 run is waiting for your answer" : `${n} runs are waiting for your answer`);
    const more = state.asksTotal - n;
    ui.asksMore.hidden = more <= 0;
    setText(ui.asksMore, more > 0 ? `… and ${more} more (answer these first, or use %ag_answer)` : "");
    tickAsks(now);
  }

  function tickAsks(now) {
    for (const card of cards.values()) setText(card.countdown, card.ask.deadline === null ? "" : ` · ${countdownText(card.ask.deadline, now)}`);
  }

  /** Every TICK_MS: live durations, ETAs, countdowns, and expiry of local "Cancelling…". */
  function tick() {
    const ids = [];
    for (const [id, view] of views) {
      if (isLive(view.entry.row.status) || cancelSentAt.has(id)) ids.push(id);
    }
    const now = serverNow();
    patchRows(ids, now);
    tickAsks(now);
    if (detail.data && isLive(detail.data.record.status)) tickDetail(now);
    // Expired requests were just re-rendered as "Cancel"; forget them.
    for (const id of cancelSentAt.keys()) if (!cancelRequested(id)) cancelSentAt.delete(id);
  }

  // ---- the detail pane ---------------------------------------------------

  function openDetail(runId) {
    if (!runId) return;
    detail.runId = runId;
    detail.data = null;
    d.root.hidden = false;
    ui.list.hidden = true;
    d.loading.hidden = false;
    setText(d.id, runId);
    d.logSearch.value = detail.logSearch;
    d.logLevel.value = detail.logMin;
    model.send(detailRequest(runId, { search: detail.logSearch, levels: levelsFrom(detail.logMin) }));
  }

  function closeDetail() {
    if (detail.runId === null) return;
    detail.runId = null;
    detail.data = null;
    d.root.hidden = true;
    ui.list.hidden = false;
    model.send({ type: "detail_close" });
  }

  function renderDetail(data) {
    const now = serverNow();
    const r = data.record;
    d.loading.hidden = true;
    setText(d.id, r.run_id);
    d.chip.setAttribute("data-status", r.status);
    setText(d.chip, statusLabel(r.status));
    renderBadges(make, d.badges, badgeList(r));
    const mode = cancelMode(r.status, cancelRequested(r.run_id));
    d.cancel.hidden = mode === "none";
    d.cancel.disabled = mode === "cancelling";
    setText(d.cancel, mode === "cancelling" ? "Cancelling…" : "Cancel");
    d.retry.hidden = !canRetry(r.status);
    renderSummary(make, d.summary, r, data.usage, now);
    renderProgress(make, d.progress, progressView(r.progress, now));
    // error and traceback
    clearChildren(d.error.body);
    d.error.section.hidden = !r.error && !r.traceback;
    if (r.error) d.error.body.appendChild(make("pre", "ag-detail-error-text", r.error));
    if (r.traceback) d.error.body.appendChild(make("pre", "ag-traceback", r.traceback));
    const e = data.errors;
    renderPreview(make, d.inputs.body, data.inputs, "No inputs.", e.inputs);
    const noOutputs = isLive(r.status) ? "The run has not finished." : r.status === "succeeded" ? "No outputs." : "No outputs (the run did not succeed).";
    renderPreview(make, d.outputs.body, data.outputs, noOutputs, e.outputs);
    renderLogs(make, d, data.logs, e.logs);
    renderTranscript(make, d.transcript.body, data.transcript, e.transcript);
    renderSteps(make, d, data.steps, e.steps);
    renderArtifacts(make, d.artifacts.body, data.artifacts, e.artifacts);
    renderChildren(make, d.children.body, data.children, now);
  }

  function tickDetail(now) {
    const r = detail.data.record;
    const dd = d.summary.querySelector("dd.ag-summary-duration");
    if (dd) setText(dd, formatDuration(durationOf(r, now)));
    if (r.progress) renderProgress(make, d.progress, progressView(r.progress, now));
  }

  function requestLogs(offset) {
    if (detail.runId === null) return;
    model.send(logsRequest(detail.runId, { offset, search: detail.logSearch, levels: levelsFrom(detail.logMin) }));
  }

  function onLogQueryChange() {
    clearTimeout(logSearchTimer);
    logSearchTimer = null;
    const search = cleanSearch(d.logSearch.value);
    const min = d.logLevel.value;
    if (search === detail.logSearch && min === detail.logMin) return;
    detail.logSearch = search;
    detail.logMin = min;
    requestLogs(null);
  }

  function onLogSearchInput() {
    clearTimeout(logSearchTimer);
    logSearchTimer = setTimeout(onLogQueryChange, SEARCH_DEBOUNCE_MS);
  }

  function onLogPager(which) {
    const logs = detail.data && detail.data.logs;
    if (!logs) return;
    const offsets = logPagerOffsets(logs);
    if (which === "newest") requestLogs(null);
    else if (offsets[which] !== null) requestLogs(offsets[which]);
  }

  function onStepPager(delta) {
    const steps = detail.data && detail.data.steps;
    if (!steps || detail.runId === null) return;
    const offset = Math.max(0, steps.offset + delta * steps.limit);
    if (offset >= steps.total) return;
    model.send({ type: "steps", run_id: detail.runId, offset });
  }

  function onDetailClick(event) {
    const button = event.target && event.target.closest ? event.target.closest("button") : null;
    if (!button || button.disabled || detail.runId === null) return;
    const runId = detail.runId;
    if (button.classList.contains("ag-detail-close")) closeDetail();
    else if (button.classList.contains("ag-detail-cancel")) {
      model.send({ type: "cancel", run_id: runId });
      requestCancel([runId]);
      button.disabled = true;
      setText(button, "Cancelling…");
    } else if (button.classList.contains("ag-detail-retry")) {
      model.send({ type: "retry", run_id: runId });
      button.disabled = true;
    } else if (button.classList.contains("ag-run-link")) openDetail(button.getAttribute("data-run-id"));
    else if (button.classList.contains("ag-log-older")) onLogPager("older");
    else if (button.classList.contains("ag-log-newer")) onLogPager("newer");
    else if (button.classList.contains("ag-log-newest")) onLogPager("newest");
    else if (button.classList.contains("ag-step-older")) onStepPager(-1);
    else if (button.classList.contains("ag-step-newer")) onStepPager(1);
    else if (button.classList.contains("ag-download")) {
      model.send({ type: "download", run_id: runId, artifact_id: button.getAttribute("data-artifact-id") });
      button.disabled = true;
      setText(button, "Downloading…");
    }
  }

  // ---- asks ----------------------------------------------------------------

  function sendAnswer(card, value) {
    setCardError(card, "");
    setCardBusy(card, true);
    model.send(answerMessage(card.ask, value));
  }

  async function sendFiles(card) {
    const files = card.files && card.files.files;
    const problem = filesProblem(files, card.ask.max_bytes);
    if (problem) {
      setCardError(card, problem);
      return;
    }
    setCardBusy(card, true);
    try {
      const value = await readFilesValue(files);
      if (destroyed || !cards.has(card.ask.ask_id)) return;
      sendAnswer(card, value);
    } catch (err) {
      setCardBusy(card, false);
      setCardError(card, `could not read the files: ${toText(err && err.message)}`);
    }
  }

  function cardOf(node) {
    const root = node && node.closest ? node.closest("div.ag-ask") : null;
    return root ? cards.get(root.getAttribute("data-ask-id")) : undefined;
  }

  function onAsksClick(event) {
    const button = event.target && event.target.closest ? event.target.closest("button") : null;
    const card = cardOf(button);
    if (!button || !card || button.disabled) return;
    if (button.classList.contains("ag-ask-choice")) {
      const option = card.options[Number(button.getAttribute("data-index"))];
      if (option) sendAnswer(card, optionValue(option));
    } else if (button.classList.contains("ag-ask-send")) {
      if (card.ask.kind === "files") sendFiles(card);
      else if (card.text) sendAnswer(card, toText(card.text.value).slice(0, MAX_ANSWER_CHARS));
    }
  }

  function onAsksKeydown(event) {
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    const target = event.target;
    if (!target || !target.classList || !target.classList.contains("ag-ask-input")) return;
    const card = cardOf(target);
    if (!card || target.disabled) return;
    event.preventDefault();
    sendAnswer(card, toText(target.value).slice(0, MAX_ANSWER_CHARS));
  }

  // ---- messages from Python --------------------------------------------

  function onPage(msg) {
    const change = applyPageMessage(state, msg, Date.now() / 1000);
    if (!change) return;
    // The next view message describes the page the user is looking at (the
    // kernel may have moved it, e.g. back after runs disappeared).
    viewState = withPage(viewState, state.page);
    if (msg.reset === true && isPlainObject(msg.view) && searchTimer === null) {
      // Show the filters the kernel is applying (unless the user is mid-typing).
      viewState = viewFromKernel(viewState, msg.view);
      ui.status.value = viewState.status;
      ui.search.value = viewState.search;
      dirty.options = true;
      optionsKey = null;
    }
    // Local "Cancelling…" marks need no clean-up here: a run that can no
    // longer be cancelled shows the kernel's state anyway (cancelMode), and
    // tick() forgets every mark after CANCEL_PENDING_MS.
    for (const id of change.changed) dirty.ids.add(id);
    if (change.orderChanged) dirty.structure = true;
    if (change.facetsChanged) dirty.options = true;
    if (change.asksChanged) dirty.asks = true;
    dirty.header = true;
    schedule();
  }

  function showNotice(msg) {
    ui.notice.textContent = toText(msg.text);
    ui.notice.setAttribute("data-level", msg.level === "error" ? "error" : "info");
    ui.notice.hidden = !ui.notice.textContent;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (ui.notice.hidden = true), NOTICE_MS);
    // A refused answer: the ask is open again, say why on its card.
    const card = typeof msg.ask_id === "string" ? cards.get(msg.ask_id) : undefined;
    if (card) {
      setCardBusy(card, false);
      setCardError(card, toText(msg.text));
    }
    if (msg.level === "error") resetRetry(undefined);
    if (msg.level === "error" && detail.data) {
      for (const b of d.artifacts.body.querySelectorAll("button.ag-download")) {
        b.disabled = false;
        setText(b, "Download");
      }
    }
  }

  /** A retry went through (or failed): its button may be used again. */
  function resetRetry(runId) {
    for (const [id, view] of views) {
      if (runId === undefined || id === runId) {
        view.retry.disabled = false;
        setText(view.retry, "Retry");
      }
    }
    if (runId === undefined || detail.runId === runId) d.retry.disabled = false;
  }

  function onDetailMessage(msg) {
    const data = normalizeDetail(msg);
    if (!data || data.run_id !== detail.runId) return; // an answer for a run no longer open
    detail.data = data;
    renderDetail(data);
  }

  function onLogsMessage(msg) {
    if (!detail.data || msg.run_id !== detail.runId) return;
    const logs = normalizeLogs(msg.logs);
    if (!logs) return;
    detail.data.logs = logs;
    renderLogs(make, d, logs, null);
  }

  function onStepsMessage(msg) {
    if (!detail.data || msg.run_id !== detail.runId) return;
    const steps = normalizeSteps(msg.steps);
    if (!steps) return;
    detail.data.steps = steps;
    renderSteps(make, d, steps, null);
  }

  function onCancelOffer(msg) {
    const count = intAtLeast(msg.count, 0, 0);
    if (typeof msg.token !== "string" || count === 0) {
      offer = null;
      ui.confirm.hidden = true;
      return;
    }
    offer = { token: msg.token, count };
    setText(ui.confirmText, cancelOfferText(count));
    const sample = Array.isArray(msg.sample) ? msg.sample.map(toText).filter((x) => x) : [];
    setText(ui.confirmSample, sample.length ? ` ${sample.join(", ")}${count > sample.length ? ", …" : ""}` : "");
    setText(ui.confirmYes, count === 1 ? "Cancel 1 run" : `Cancel ${count} runs`);
    ui.confirm.hidden = false;
  }

  function onMessage(content, buffers) {
    if (!isPlainObject(content) || destroyed) return;
    const type = content.type;
    if (type === "page") onPage(content);
    else if (type === "notice") showNotice(content);
    else if (type === "detail") onDetailMessage(content);
    else if (type === "logs") onLogsMessage(content);
    else if (type === "steps") onStepsMessage(content);
    else if (type === "cancel_offer") onCancelOffer(content);
    else if (type === "answered") {
      const card = cards.get(content.ask_id);
      if (card) {
        card.root.remove();
        cards.delete(content.ask_id);
        state.asks = state.asks.filter((a) => a.ask_id !== content.ask_id);
        dirty.asks = true;
        schedule();
      }
    } else if (type === "retried") {
      resetRetry(content.run_id);
    } else if (type === "download") {
      saveDownload(doc, content, buffers);
      for (const b of d.artifacts.body.querySelectorAll("button.ag-download")) {
        if (b.getAttribute("data-artifact-id") === content.artifact_id) {
          b.disabled = false;
          setText(b, "Download");
        }
      }
    }
  }

  function onTitle() {
    dirty.header = true;
    schedule();
  }

  // ---- user input -------------------------------------------------------

  /** Record the new view and ask the kernel for it; its answer redraws the table. */
  function sendView(next) {
    viewState = next;
    model.send(viewMessage(viewState));
  }

  function onFilterChange() {
    // Any pending search text goes out with this message.
    clearTimeout(searchTimer);
    searchTimer = null;
    const next = withFilters(viewState, {
      status: ui.status.value,
      session: sessionFromSelect(ui.session.value),
      graph: ui.graph.value,
      tag: ui.tag.value,
      search: ui.search.value,
    });
    if (next === viewState) return; // e.g. a search typed and erased again
    sendView(next);
    offer = null;
    ui.confirm.hidden = true; // an offer was for the old filters
    dirty.options = true; // a kept, now unselected, vanished option can go
    schedule();
  }

  function onSearchInput() {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(onFilterChange, SEARCH_DEBOUNCE_MS);
  }

  function turnPage(delta) {
    const target = state.page + delta;
    if (target >= 0 && target < state.pageCount) sendView(withPage(viewState, target));
  }

  function requestCancel(ids) {
    const at = Date.now();
    for (const id of ids) {
      cancelSentAt.set(id, at);
      dirty.ids.add(id);
    }
    schedule();
  }

  function onTableClick(event) {
    const target = event.target;
    const button = target && target.closest ? target.closest("button") : null;
    const tr = target && target.closest ? target.closest("tr") : null;
    const id = tr ? tr.getAttribute("data-run-id") : null;
    const view = id === null ? undefined : views.get(id);
    if (view && button && !button.disabled) {
      if (button.classList.contains("ag-cancel")) {
        model.send({ type: "cancel", run_id: id });
        requestCancel([id]);
      } else if (button.classList.contains("ag-retry")) {
        model.send({ type: "retry", run_id: id });
        button.disabled = true;
        setText(button, "Retrying…");
      } else if (button.classList.contains("ag-toggle")) {
        sendView(withToggle(viewState, id, !view.entry.expanded));
      } else if (button.classList.contains("ag-open")) openDetail(id);
    } else if (view && !button) {
      // A click anywhere else on the row opens its detail, except inside the
      // error cell (its traceback expands there).
      const inError = target.closest && target.closest("td.ag-col-error");
      if (!inError) openDetail(id);
    }
    releaseHold();
  }

  function onCancelVisible() {
    if (state.liveMatching === 0) return;
    // The kernel answers with the exact set it would cancel, and asks first.
    model.send({ type: "cancel_matching_prepare" });
  }

  function onConfirmYes() {
    if (!offer) return;
    model.send({ type: "cancel_matching", token: offer.token });
    offer = null;
    ui.confirm.hidden = true;
    // Every row in `order` matches the filters, so the kernel is cancelling
    // the live ones on this page too: show that now rather than after a round trip.
    const shown = state.order.map((e) => e.id);
    requestCancel(shown.filter((id) => isCancellable(state.rows.get(id)?.status)));
  }

  function onConfirmNo() {
    offer = null;
    ui.confirm.hidden = true;
  }

  function holdRows() {
    held = true;
    clearTimeout(holdTimer);
    holdTimer = setTimeout(releaseHold, HOLD_MAX_MS);
  }

  function releaseHold() {
    held = false;
    clearTimeout(holdTimer);
    holdTimer = null;
    schedule();
  }

  const listeners = [
    [ui.status, "change", onFilterChange],
    [ui.session, "change", onFilterChange],
    [ui.graph, "change", onFilterChange],
    [ui.tag, "change", onFilterChange],
    [ui.search, "input", onSearchInput],
    [ui.cancelVisible, "click", onCancelVisible],
    [ui.confirmYes, "click", onConfirmYes],
    [ui.confirmNo, "click", onConfirmNo],
    [ui.prev, "click", () => turnPage(-1)],
    [ui.next, "click", () => turnPage(1)],
    [ui.tbody, "mousedown", holdRows],
    [ui.tbody, "click", onTableClick],
    [ui.asksList, "click", onAsksClick],
    [ui.asksList, "keydown", onAsksKeydown],
    [d.root, "click", onDetailClick],
    [d.logSearch, "input", onLogSearchInput],
    [d.logLevel, "change", onLogQueryChange],
  ];
  for (const [node, type, fn] of listeners) node.addEventListener(type, fn);

  ui.status.value = viewState.status;
  ui.search.value = viewState.search;
  el.appendChild(ui.root);
  model.on("msg:custom", onMessage);
  model.on("change:title", onTitle);
  const interval = setInterval(tick, TICK_MS);
  flush();
  // Every view says hello; the kernel answers with a reset page, so a page
  // reload (a new view with an empty cache) starts from a full page.
  model.send({ type: "hello" });

  return function destroy() {
    destroyed = true;
    if (typeof model.off === "function") {
      model.off("msg:custom", onMessage);
      model.off("change:title", onTitle);
    }
    for (const [node, type, fn] of listeners) node.removeEventListener(type, fn);
    clearInterval(interval);
    clearTimeout(noticeTimer);
    clearTimeout(holdTimer);
    clearTimeout(searchTimer);
    clearTimeout(logSearchTimer);
    if (cancelFrame) cancelFrame();
    if (ui.root.parentNode) ui.root.parentNode.removeChild(ui.root);
  };
}

/** anywidget render hook; returns the cleanup function. */
export function render({ model, el }) {
  return createView(model, el);
}

export default { render };
