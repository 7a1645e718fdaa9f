// Run panel front end for ag_jupyter (anywidget ESM).
//
// anywidget loads this file from a string/blob URL, so it must stay ONE
// self-contained module with no imports. The pure logic is exported by name
// so `node --test` can exercise it without a DOM; nothing at module top level
// touches `document` or `window`.
//
// Division of labour (protocol v2): the kernel keeps every run, filters,
// orders and pages them, and sends only the page to show ("page" messages:
// display order plus the rows that are new or changed). This file caches the
// rows of that one page, renders them, and reports the view the user wants
// ("view" messages). It never filters, sorts or counts runs itself.
//
// Security rule for the whole file: run data (ids, graph ids, tags, errors,
// tracebacks, session ids) is untrusted. It only ever reaches the DOM through
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
    // The Dask worker an executor="dask" run ran on (null for local runs).
    worker: nonEmptyStringOrNull(raw.worker),
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
    facets: { sessions: [], tags: [] },
    offset: 0, // server clock - browser clock, seconds
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
  return { sessions: uniqueValues(facets.sessions, true), tags: uniqueValues(facets.tags, false) };
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
  return { changed, orderChanged, facetsChanged };
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
  return { page: 0, status: "all", session: "", tag: "", search: "", expanded: [], collapsed: [] };
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
  for (const name of ["status", "session", "tag"]) if (name in filters) next[name] = filters[name];
  if ("search" in filters) next.search = cleanSearch(filters.search);
  const same = ["status", "session", "tag", "search"].every((k) => next[k] === view[k]);
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

/** Unique non-empty string ids from `v` ([] for a non-array). */
function idList(v) {
  return Array.isArray(v) ? [...new Set(v.filter((id) => typeof id === "string" && id))] : [];
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
    started: formatClock(row.started_at),
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

// ---------------------------------------------------------------------------
// DOM: styles and skeleton
// ---------------------------------------------------------------------------

const CSS = `
.ag-run-panel {
  font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px);
  color: var(--jp-ui-font-color1, #222);
}
.ag-run-panel [hidden] { display: none !important; }
.ag-run-panel .ag-header { display: flex; flex-wrap: wrap; gap: 0.75em; align-items: baseline; }
.ag-run-panel .ag-title { font-weight: 600; }
.ag-run-panel .ag-counts { color: var(--jp-ui-font-color2, #555); }
.ag-run-panel .ag-notice { margin: 2px 0; padding: 2px 6px; border-radius: 3px;
  background: var(--jp-layout-color2, #eef); }
.ag-run-panel .ag-notice[data-level="error"] { color: var(--jp-error-color1, #b91c1c); }
.ag-run-panel .ag-controls { display: flex; flex-wrap: wrap; gap: 6px; align-items: center;
  margin: 4px 0; }
.ag-run-panel select, .ag-run-panel input, .ag-run-panel button {
  font: inherit; color: inherit; padding: 1px 6px; border-radius: 3px;
  background: var(--jp-input-background, var(--jp-layout-color1, #fff));
  border: 1px solid var(--jp-border-color1, #bbb);
}
.ag-run-panel button { cursor: pointer; }
.ag-run-panel button:disabled { opacity: 0.55; cursor: default; }
.ag-run-panel .ag-table-wrap { overflow-x: auto; }
.ag-run-panel table { border-collapse: collapse; width: 100%; }
.ag-run-panel th, .ag-run-panel td { text-align: left; vertical-align: top; padding: 2px 6px;
  white-space: nowrap; border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
.ag-run-panel th { font-weight: 600; color: var(--jp-ui-font-color2, #555); }
.ag-run-panel .ag-id, .ag-run-panel .ag-col-parent, .ag-run-panel .ag-col-session,
.ag-run-panel .ag-col-graph { font-family: var(--jp-code-font-family, monospace); font-size: 0.95em; }
.ag-run-panel .ag-col-duration, .ag-run-panel .ag-col-started { font-variant-numeric: tabular-nums; }
.ag-run-panel .ag-col-error { white-space: normal; min-width: 12em; max-width: 40em;
  overflow-wrap: anywhere; }
.ag-run-panel .ag-child-marker { color: var(--jp-ui-font-color2, #777); margin-right: 3px; }
.ag-run-panel .ag-toggle { border: none; background: none; padding: 0 3px; margin-right: 2px; }
.ag-run-panel .ag-status { display: inline-block; padding: 0 7px; border-radius: 8px;
  color: #fff; background: #6b7280; font-size: 0.9em; }
.ag-run-panel .ag-status[data-status="pending"] { background: #6b7280; }
.ag-run-panel .ag-status[data-status="running"] { background: #2563eb; }
.ag-run-panel .ag-status[data-status="waiting"] { background: #0f766e; }
.ag-run-panel .ag-status[data-status="cancellation_requested"] { background: #c2410c; }
.ag-run-panel .ag-status[data-status="succeeded"] { background: #15803d; }
.ag-run-panel .ag-status[data-status="failed"] { background: #b91c1c; }
.ag-run-panel .ag-status[data-status="canceled"] { background: #4b5563; text-decoration: line-through; }
.ag-run-panel .ag-tag { display: inline-block; margin-right: 3px; padding: 0 4px; font-size: 0.85em;
  border: 1px solid var(--jp-border-color2, #ccc); border-radius: 3px; }
.ag-run-panel summary { cursor: pointer; }
.ag-run-panel .ag-traceback { max-height: 24em; overflow: auto; margin: 2px 0; padding: 4px;
  white-space: pre; font-size: 0.85em; font-family: var(--jp-code-font-family, monospace);
  background: var(--jp-layout-color2, #f5f5f5); }
.ag-run-panel .ag-empty { padding: 8px; font-style: italic; color: var(--jp-ui-font-color2, #666); }
.ag-run-panel .ag-pager { display: flex; gap: 8px; align-items: center; margin-top: 4px; }
`;

const COLUMNS = [
  ["id", "Run"],
  ["graph", "Graph"],
  ["status", "Status"],
  ["session", "Session"],
  ["tags", "Tags"],
  ["started", "Started"],
  ["duration", "Duration"],
  ["error", "Error"],
  ["parent", "Parent"],
  ["actions", ""],
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

/** Build the static parts of the panel; returns references to the live bits. */
function buildSkeleton(make) {
  const root = make("div", "ag-run-panel");
  root.appendChild(make("style", "", CSS));

  const header = make("div", "ag-header");
  const title = make("span", "ag-title");
  const counts = make("span", "ag-counts");
  header.append(title, counts);

  const notice = make("div", "ag-notice");
  notice.setAttribute("role", "status");
  notice.setAttribute("aria-live", "polite");
  notice.hidden = true;

  const controls = make("div", "ag-controls");
  const status = make("select", "ag-filter-status");
  status.setAttribute("aria-label", "Filter by status");
  addOption(make, status, "all", "all statuses");
  addOption(make, status, "live", "live");
  for (const s of STATUSES) addOption(make, status, s, statusLabel(s));
  const session = make("select", "ag-filter-session");
  session.setAttribute("aria-label", "Filter by session");
  const tag = make("select", "ag-filter-tag");
  tag.setAttribute("aria-label", "Filter by tag");
  const search = make("input", "ag-search");
  search.setAttribute("type", "search");
  search.setAttribute("placeholder", "Search id, graph, session, tag, error");
  search.setAttribute("aria-label", "Search runs");
  search.setAttribute("maxlength", String(MAX_SEARCH_LENGTH));
  const cancelVisible = make("button", "ag-cancel-visible", "Cancel all visible");
  cancelVisible.setAttribute("type", "button");
  cancelVisible.disabled = true;
  controls.append(status, session, tag, search, cancelVisible);

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
  const prev = make("button", "ag-prev", "Prev");
  const pageInfo = make("span", "ag-page-info", "page 1 of 1");
  const next = make("button", "ag-next", "Next");
  prev.setAttribute("type", "button");
  next.setAttribute("type", "button");
  pager.append(prev, pageInfo, next);

  root.append(header, notice, controls, wrap, empty, pager);
  return {
    root, title, counts, notice, status, session, tag, search, cancelVisible,
    tbody, empty, prev, pageInfo, next,
  };
}

// ---------------------------------------------------------------------------
// DOM: one table row, updated in place
// ---------------------------------------------------------------------------

/**
 * Create the <tr> for a run. The row keeps its cells and its cancel button for
 * its whole life, so updates only touch text, and a click that started on a
 * button still lands on the same element.
 */
function createRowView(make, runId) {
  const tr = make("tr", "ag-row");
  tr.setAttribute("data-run-id", runId);
  const cells = {};
  for (const [key] of COLUMNS) {
    cells[key] = make("td", `ag-col-${key}`);
    tr.appendChild(cells[key]);
  }
  const toggle = make("button", "ag-toggle");
  toggle.setAttribute("type", "button");
  toggle.hidden = true;
  const marker = make("span", "ag-child-marker", "↳");
  marker.hidden = true;
  const idText = make("span", "ag-id");
  cells.id.append(toggle, marker, idText);
  const chip = make("span", "ag-status");
  cells.status.appendChild(chip);
  const cancel = make("button", "ag-cancel", "Cancel");
  cancel.setAttribute("type", "button");
  return { tr, cells, toggle, marker, idText, chip, cancel, last: {}, entry: null };
}

/** Run `apply(value)` only when `value` differs from what the row shows now. */
function patch(view, key, value, apply) {
  if (view.last[key] === value) return;
  view.last[key] = value;
  apply(value);
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
  patch(view, "graph", text.graph_id, (v) => (view.cells.graph.textContent = v));
  patch(view, "worker", row.worker, (w) => {
    if (w) view.cells.graph.setAttribute("title", `ran on Dask worker ${w}`);
    else view.cells.graph.removeAttribute("title");
  });
  patch(view, "status", row.status, (s) => {
    view.chip.setAttribute("data-status", s);
    view.chip.textContent = text.status;
    view.tr.setAttribute("data-status", s);
  });
  patch(view, "session", text.session, (v) => (view.cells.session.textContent = v));
  patch(view, "tags", row.tags.join("\u0000"), () => renderTags(make, view.cells.tags, row.tags));
  patch(view, "started", row.started_at, () => {
    view.cells.started.textContent = text.started;
    if (row.started_at === null) view.cells.started.removeAttribute("title");
    else view.cells.started.setAttribute("title", new Date(row.started_at * 1000).toString());
  });
  patch(view, "duration", text.duration, (v) => (view.cells.duration.textContent = v));
  patch(view, "error", `${row.error}\u0000${row.traceback}`, () =>
    renderError(make, view.cells.error, row, text.error),
  );
  patch(view, "parent", text.parent, (v) => (view.cells.parent.textContent = v));
  patch(view, "cancel", cancelMode(row.status, cancelRequested), (mode) =>
    renderCancel(view, mode),
  );
}

/** Set text only when it differs, so unchanged headers cause no DOM writes. */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function clearChildren(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
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

function createView(model, el) {
  const doc = el.ownerDocument || globalThis.document;
  const make = elementMaker(doc);
  const ui = buildSkeleton(make);

  const state = createPageState(); // what the kernel told us to show
  let viewState = defaultView(); // what the user asked for
  const cancelSentAt = new Map(); // run_id -> Date.now() of our cancel request
  const views = new Map(); // run_id -> row view, only for rows in the tbody
  const dirty = { structure: true, options: true, header: true, ids: new Set() };
  let optionsKey = "";
  let cancelFrame = null;
  let held = false;
  let holdTimer = null;
  let noticeTimer = null;
  let searchTimer = null;
  let destroyed = false;

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
    setText(ui.cancelVisible, n ? `Cancel all visible (${n})` : "Cancel all visible");
    // The empty line's text follows `total` even when the (empty) order stays empty.
    setText(ui.empty, state.total === 0 ? EMPTY_TEXT : NO_MATCH_TEXT);
    setText(ui.pageInfo, pagerText(state.page, state.pageCount));
    ui.prev.disabled = state.page === 0;
    ui.next.disabled = state.page >= state.pageCount - 1;
  }

  /** Rebuild the session/tag <option>s, only when the lists changed. */
  function updateOptions() {
    dirty.options = false;
    const sessions = state.facets.sessions.filter((s) => s !== null);
    let withNone = state.facets.sessions.includes(null);
    const tags = [...state.facets.tags];
    // Keep the user's choice listed even after its last run is gone, so the
    // filter never changes under their feet.
    const chosen = viewState.session;
    if (chosen === null) withNone = true;
    else if (chosen && !sessions.includes(chosen)) sessions.push(chosen);
    if (viewState.tag && !tags.includes(viewState.tag)) tags.push(viewState.tag);
    const key = JSON.stringify([sessions, withNone, tags]);
    if (key === optionsKey) return;
    optionsKey = key;
    fillSelect(ui.session, "all sessions", sessions, sessionToSelect(viewState.session), withNone);
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

  /** Once a second: live durations, and expiry of local "Cancelling…" states. */
  function tick() {
    const ids = [];
    for (const [id, view] of views) {
      if (isLive(view.entry.row.status) || cancelSentAt.has(id)) ids.push(id);
    }
    patchRows(ids, serverNow());
    // Expired requests were just re-rendered as "Cancel"; forget them.
    for (const id of cancelSentAt.keys()) if (!cancelRequested(id)) cancelSentAt.delete(id);
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
    dirty.header = true;
    schedule();
  }

  function showNotice(msg) {
    ui.notice.textContent = toText(msg.text);
    ui.notice.setAttribute("data-level", msg.level === "error" ? "error" : "info");
    ui.notice.hidden = !ui.notice.textContent;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (ui.notice.hidden = true), NOTICE_MS);
  }

  function onMessage(content) {
    if (!isPlainObject(content) || destroyed) return;
    if (content.type === "page") onPage(content);
    else if (content.type === "notice") showNotice(content);
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
      tag: ui.tag.value,
      search: ui.search.value,
    });
    if (next === viewState) return; // e.g. a search typed and erased again
    sendView(next);
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
    const button = event.target && event.target.closest ? event.target.closest("button") : null;
    const tr = button ? button.closest("tr") : null;
    const id = tr ? tr.getAttribute("data-run-id") : null;
    const view = id === null ? undefined : views.get(id);
    if (view && !button.disabled) {
      if (button.classList.contains("ag-cancel")) {
        model.send({ type: "cancel", run_id: id });
        requestCancel([id]);
      } else if (button.classList.contains("ag-toggle")) {
        sendView(withToggle(viewState, id, !view.entry.expanded));
      }
    }
    releaseHold();
  }

  function onCancelVisible() {
    if (state.liveMatching === 0) return;
    model.send({ type: "cancel_matching" });
    // Every row in `order` matches the filters, so the kernel is cancelling
    // the live ones on this page too: show that now rather than after a round trip.
    const shown = state.order.map((e) => e.id);
    requestCancel(shown.filter((id) => isCancellable(state.rows.get(id)?.status)));
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
    [ui.tag, "change", onFilterChange],
    [ui.search, "input", onSearchInput],
    [ui.cancelVisible, "click", onCancelVisible],
    [ui.prev, "click", () => turnPage(-1)],
    [ui.next, "click", () => turnPage(1)],
    [ui.tbody, "mousedown", holdRows],
    [ui.tbody, "click", onTableClick],
  ];
  for (const [node, type, fn] of listeners) node.addEventListener(type, fn);

  ui.status.value = viewState.status;
  ui.search.value = viewState.search;
  el.appendChild(ui.root);
  model.on("msg:custom", onMessage);
  model.on("change:title", onTitle);
  const interval = setInterval(tick, 1000);
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
    if (cancelFrame) cancelFrame();
    if (ui.root.parentNode) ui.root.parentNode.removeChild(ui.root);
  };
}

/** anywidget render hook; returns the cleanup function. */
export function render({ model, el }) {
  return createView(model, el);
}

export default { render };
