// Run panel front end for ag_jupyter (anywidget ESM).
//
// anywidget loads this file from a string/blob URL, so it must stay ONE
// self-contained module with no imports. The pure logic is exported by name
// so `node --test` can exercise it without a DOM; nothing at module top level
// touches `document` or `window`.
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

/** Top-level rows per page; children always stay on their parent's page. */
export const PAGE_SIZE = 50;

/** Session filter value for "rows without a session" (cannot collide with a real id). */
export const NO_SESSION = "\u0000no-session";

export const EMPTY_TEXT = "No runs yet. Spawn one with context.runner().spawn_run(...)";
export const NO_MATCH_TEXT = "No runs match the current filters.";

const NOTICE_MS = 6000;
// A local cancel request keeps the button disabled this long while we wait for
// the status to change; after that the user may try again.
const CANCEL_PENDING_MS = 10000;
// Structural re-renders wait while a mouse button is down in the table (see
// the hold logic in createView) but never longer than this.
const HOLD_MAX_MS = 1500;

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
// Rows store
// ---------------------------------------------------------------------------

/**
 * Validate one row from Python. Returns a clean copy, or null when the row has
 * no usable run_id. Fields of the wrong type fall back to empty values so a
 * single bad field does not drop the whole row.
 */
export function normalizeRow(raw) {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) return null;
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
    // A run listed as its own parent would vanish from the tree; treat it as top level.
    parent_run_id: parent === runId ? null : parent,
  };
}

/**
 * Apply a Python "rows" message to a Map(run_id -> row); mutates and returns it.
 * Anything that is not a well-formed rows message is ignored.
 *
 * Upserts are applied before removals, so an id present in both ends up
 * removed (the safer reading of a coalesced "changed, then deleted").
 *
 * onChange(runId, before, after) is optional and lets the view learn what
 * changed without diffing the whole Map; before/after are undefined for
 * added/removed rows. It is not called for a reset (the caller re-renders).
 */
export function applyRowsMessage(rowsMap, msg, onChange) {
  if (!msg || typeof msg !== "object" || msg.type !== "rows") return rowsMap;
  const upsert = Array.isArray(msg.upsert) ? msg.upsert : [];
  const remove = Array.isArray(msg.remove) ? msg.remove : [];
  const notify = msg.reset === true ? null : onChange;
  if (msg.reset === true) rowsMap.clear();
  for (const raw of upsert) {
    const row = normalizeRow(raw);
    if (!row) continue;
    const before = rowsMap.get(row.run_id);
    rowsMap.set(row.run_id, row);
    if (notify) notify(row.run_id, before, row);
  }
  for (const id of remove) {
    if (typeof id !== "string" || !rowsMap.has(id)) continue;
    const before = rowsMap.get(id);
    rowsMap.delete(id);
    if (notify) notify(id, before, undefined);
  }
  return rowsMap;
}

// ---------------------------------------------------------------------------
// Counting, filtering, ordering, paging
// ---------------------------------------------------------------------------

/** Count rows per status: { running: 3, failed: 1, ... } (only statuses present). */
export function countByStatus(rows) {
  const counts = {};
  for (const row of rows) counts[row.status] = (counts[row.status] || 0) + 1;
  return counts;
}

/** "12 running · 30 pending · 3 failed · 45 total"; zero counts are left out. */
export function summaryText(counts) {
  const known = SUMMARY_ORDER.filter((s) => counts[s] > 0);
  const extra = Object.keys(counts)
    .filter((s) => !SUMMARY_ORDER.includes(s) && counts[s] > 0)
    .sort();
  const parts = [...known, ...extra].map((s) => `${counts[s]} ${statusLabel(s)}`);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  if (total === 0) return "no runs";
  parts.push(`${total} total`);
  return parts.join(" · ");
}

/** Text the search box matches against, lower-cased once per row per search. */
function searchHaystack(row) {
  return [row.run_id, row.graph_id, row.session_id || "", ...row.tags, row.error || ""]
    .join("\n")
    .toLowerCase();
}

/**
 * Build a predicate for the filter controls. Empty / "all" values mean "no
 * filter". status "live" means any LIVE_STATUSES; session NO_SESSION means
 * rows with a null session.
 */
export function makeRowPredicate(filters = {}) {
  const status = filters.status || "all";
  const session = filters.session || "";
  const tag = filters.tag || "";
  const needle = toText(filters.search).trim().toLowerCase();
  return (row) => {
    if (status === "live" ? !isLive(row.status) : status !== "all" && row.status !== status) {
      return false;
    }
    if (session === NO_SESSION ? row.session_id !== null : session && row.session_id !== session) {
      return false;
    }
    if (tag && !row.tags.includes(tag)) return false;
    return !needle || searchHaystack(row).includes(needle);
  };
}

/** Rows (any iterable) that pass the filters, as an array. */
export function filterRows(rows, filters) {
  const keep = makeRowPredicate(filters);
  const out = [];
  for (const row of rows) if (keep(row)) out.push(row);
  return out;
}

/**
 * Ids of rows a "Cancel all visible" click should cancel: rows that pass the
 * filters (on any page, collapsed or not) and can still be cancelled. Rows
 * already in cancellation_requested are left out: asking again is a no-op.
 */
export function visibleLiveRunIds(rows, filters) {
  const keep = makeRowPredicate(filters);
  const ids = [];
  for (const row of rows) if (isCancellable(row.status) && keep(row)) ids.push(row.run_id);
  return ids;
}

// Missing timestamps sort as oldest.
const createdKey = (row) => (row.created_at === null ? -Infinity : row.created_at);
const compareIds = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** Newest first; ties broken by run_id, descending to match (time-ordered ids). */
export function compareNewestFirst(a, b) {
  return createdKey(b) - createdKey(a) || compareIds(b.run_id, a.run_id);
}

/** Oldest first, used for siblings so children read in the order they were spawned. */
function compareOldestFirst(a, b) {
  return createdKey(a) - createdKey(b) || compareIds(a.run_id, b.run_id);
}

/**
 * Order rows for display: top-level rows newest first, each followed by its
 * descendants (depth-first, siblings oldest first). A row whose parent is not
 * among `rows` is top level. Descendants of a run id in `collapsed` are left
 * out; the parent entry still reports its childCount so it can show a toggle.
 *
 * Returns [{ row, depth, childCount, collapsed }].
 */
export function orderRows(rows, collapsed = new Set()) {
  const list = Array.from(rows);
  const byId = new Map(list.map((row) => [row.run_id, row]));
  const children = new Map();
  const roots = [];
  for (const row of list) {
    const parent = row.parent_run_id;
    if (parent !== null && parent !== row.run_id && byId.has(parent)) {
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(row);
    } else {
      roots.push(row);
    }
  }
  for (const kids of children.values()) kids.sort(compareOldestFirst);
  roots.sort(compareNewestFirst);

  const out = [];
  const seen = new Set();
  const visit = (root) => {
    // Explicit stack: a long parent chain must not overflow the call stack.
    // Descendants of a collapsed row are still walked (marked seen, hidden)
    // so the cycle fallback below does not mistake them for lost rows.
    const stack = [[root, 0, false]];
    while (stack.length) {
      const [row, depth, hidden] = stack.pop();
      if (seen.has(row.run_id)) continue;
      seen.add(row.run_id);
      const kids = children.get(row.run_id) || [];
      const isCollapsed = kids.length > 0 && collapsed.has(row.run_id);
      if (!hidden) out.push({ row, depth, childCount: kids.length, collapsed: isCollapsed });
      const hideKids = hidden || isCollapsed;
      for (let i = kids.length - 1; i >= 0; i--) stack.push([kids[i], depth + 1, hideKids]);
    }
  };
  roots.forEach(visit);
  // Rows caught in a parent cycle (a -> b -> a) are reachable from no root;
  // show them as top level instead of dropping them.
  if (seen.size < list.length) {
    list.filter((row) => !seen.has(row.run_id)).sort(compareNewestFirst).forEach(visit);
  }
  return out;
}

/**
 * Page through items where pageSize counts top-level items only: an item with
 * depth > 0 stays on the page of the top-level item before it. Plain items
 * (no depth) page normally. `page` is 0-based and clamped into range.
 *
 * Returns { items, page, pageCount, topLevelCount }.
 */
export function paginate(items, page, pageSize = PAGE_SIZE) {
  const starts = [];
  items.forEach((item, i) => {
    if (i === 0 || !(item && item.depth > 0)) starts.push(i);
  });
  const size = Math.max(1, Math.floor(pageSize) || 1);
  const pageCount = Math.max(1, Math.ceil(starts.length / size));
  const wanted = Number.isFinite(page) ? Math.floor(page) : 0;
  const current = Math.min(Math.max(0, wanted), pageCount - 1);
  const from = starts.length ? starts[current * size] : 0;
  const nextStart = starts[(current + 1) * size];
  const to = nextStart === undefined ? items.length : nextStart;
  return { items: items.slice(from, to), page: current, pageCount, topLevelCount: starts.length };
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
  const { row, depth, childCount, collapsed } = entry;
  view.entry = entry;
  const text = cellTexts(row, now);

  patch(view, "layout", `${depth}|${childCount}|${collapsed}`, () => {
    view.tr.classList.toggle("ag-child", depth > 0);
    view.cells.id.style.paddingLeft = `${0.4 + Math.min(depth, 8) * 1.2}em`;
    view.marker.hidden = depth === 0;
    view.toggle.hidden = childCount === 0;
    view.toggle.textContent = collapsed ? "▸" : "▾";
    view.toggle.setAttribute("aria-expanded", String(!collapsed));
    const noun = childCount === 1 ? "child run" : "child runs";
    view.toggle.setAttribute("title", `${collapsed ? "Show" : "Hide"} ${childCount} ${noun}`);
  });
  patch(view, "id", text.run_id, (v) => (view.idText.textContent = v));
  patch(view, "graph", text.graph_id, (v) => (view.cells.graph.textContent = v));
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

function filtersActive(filters) {
  return filters.status !== "all" || Boolean(filters.session || filters.tag || filters.search.trim());
}

/** Does a change to this row possibly change which rows show, or in what order? */
function changesLayout(before, after, filtering) {
  if (!before || !after) return true; // added or removed
  if (before.created_at !== after.created_at || before.parent_run_id !== after.parent_run_id) {
    return true;
  }
  // With a filter on, any field may move the row in or out of the result.
  return filtering;
}

function changesOptions(before, after) {
  if (!before || !after) return true;
  return before.session_id !== after.session_id || before.tags.join("\0") !== after.tags.join("\0");
}

function createView(model, el) {
  const doc = el.ownerDocument || globalThis.document;
  const make = elementMaker(doc);
  const ui = buildSkeleton(make);

  const rows = new Map();
  const filters = { status: "all", session: "", tag: "", search: "" };
  const collapsed = new Set();
  const cancelSentAt = new Map(); // run_id -> Date.now() of our cancel request
  const views = new Map(); // run_id -> row view, only for rows in the tbody
  const dirty = { structure: true, options: true, header: true, ids: new Set() };
  let page = 0;
  let offset = 0; // server clock - browser clock, seconds
  let optionsKey = "";
  let cancelFrame = null;
  let held = false;
  let holdTimer = null;
  let noticeTimer = null;
  let destroyed = false;

  const serverNow = () => Date.now() / 1000 + offset;

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
    setText(ui.counts, summaryText(countByStatus(rows.values())));
    const n = visibleLiveRunIds(rows.values(), filters).length;
    ui.cancelVisible.disabled = n === 0;
    setText(ui.cancelVisible, n ? `Cancel all visible (${n})` : "Cancel all visible");
  }

  /** Rebuild the session/tag <option>s, only when the set of values changed. */
  function updateOptions() {
    dirty.options = false;
    const sessions = new Set();
    const tags = new Set();
    let anyWithoutSession = false;
    for (const row of rows.values()) {
      if (row.session_id === null) anyWithoutSession = true;
      else sessions.add(row.session_id);
      for (const t of row.tags) tags.add(t);
    }
    // Keep the selected value listed even after its last row disappears, so
    // the filter never changes under the user's feet.
    if (filters.session && filters.session !== NO_SESSION) sessions.add(filters.session);
    if (filters.tag) tags.add(filters.tag);
    if (filters.session === NO_SESSION) anyWithoutSession = true;
    const sessionList = [...sessions].sort();
    const tagList = [...tags].sort();
    const key = JSON.stringify([sessionList, tagList, anyWithoutSession]);
    if (key === optionsKey) return;
    optionsKey = key;
    fillSelect(ui.session, "all sessions", sessionList, filters.session, anyWithoutSession);
    fillSelect(ui.tag, "all tags", tagList, filters.tag, false);
  }

  function fillSelect(select, allLabel, values, selected, withNone) {
    clearChildren(select);
    addOption(make, select, "", allLabel);
    if (withNone) addOption(make, select, NO_SESSION, "(no session)");
    for (const v of values) addOption(make, select, v, v);
    select.value = selected;
  }

  /** Show the current page, reusing the <tr> of every run already on screen. */
  function renderPage(now) {
    dirty.structure = false;
    const ordered = orderRows(filterRows(rows.values(), filters), collapsed);
    const result = paginate(ordered, page, PAGE_SIZE);
    page = result.page;
    const onPage = new Set(result.items.map((e) => e.row.run_id));
    // Remove leavers first so rows that stay are not moved around needlessly.
    for (const [id, view] of views) {
      if (!onPage.has(id)) {
        ui.tbody.removeChild(view.tr);
        views.delete(id);
      }
    }
    let cursor = ui.tbody.firstChild;
    for (const entry of result.items) {
      const id = entry.row.run_id;
      let view = views.get(id);
      if (!view) {
        view = createRowView(make, id);
        views.set(id, view);
      }
      if (cursor === view.tr) cursor = cursor.nextSibling;
      else ui.tbody.insertBefore(view.tr, cursor);
      updateRowView(make, view, entry, now, cancelRequested(id));
    }
    ui.empty.hidden = result.items.length > 0;
    setText(ui.empty, rows.size === 0 ? EMPTY_TEXT : NO_MATCH_TEXT);
    setText(ui.pageInfo, `page ${result.page + 1} of ${result.pageCount}`);
    ui.prev.disabled = result.page === 0;
    ui.next.disabled = result.page >= result.pageCount - 1;
  }

  /** Update cells of rows already on the page; never adds, removes or moves rows. */
  function patchRows(ids, now) {
    for (const id of ids) {
      const view = views.get(id);
      const row = rows.get(id);
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

  function onRows(msg) {
    if (typeof msg.server_time === "number") offset = clockOffset(msg.server_time, Date.now() / 1000);
    const filtering = filtersActive(filters);
    applyRowsMessage(rows, msg, (id, before, after) => {
      dirty.ids.add(id);
      if (changesLayout(before, after, filtering)) dirty.structure = true;
      if (changesOptions(before, after)) dirty.options = true;
      if (!after || !isCancellable(after.status)) cancelSentAt.delete(id);
    });
    if (msg.reset === true) {
      // No per-row callbacks for a reset: redo everything, and forget local
      // cancel requests for runs that are gone or no longer cancellable.
      dirty.structure = true;
      dirty.options = true;
      for (const id of cancelSentAt.keys()) {
        if (!isCancellable(rows.get(id)?.status)) cancelSentAt.delete(id);
      }
    }
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
    if (!content || typeof content !== "object" || destroyed) return;
    if (content.type === "rows") onRows(content);
    else if (content.type === "notice") showNotice(content);
  }

  function onTitle() {
    dirty.header = true;
    schedule();
  }

  // ---- user input -------------------------------------------------------

  function setFilter(name, value) {
    filters[name] = value;
    page = 0;
    dirty.structure = true;
    dirty.header = true; // the "Cancel all visible" count depends on filters
    schedule();
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
    if (id !== null && !button.disabled) {
      if (button.classList.contains("ag-cancel")) {
        model.send({ type: "cancel", run_id: id });
        requestCancel([id]);
      } else if (button.classList.contains("ag-toggle")) {
        if (collapsed.has(id)) collapsed.delete(id);
        else collapsed.add(id);
        dirty.structure = true;
      }
    }
    releaseHold();
  }

  function onCancelVisible() {
    const ids = visibleLiveRunIds(rows.values(), filters);
    if (ids.length === 0) return;
    model.send({ type: "cancel_many", run_ids: ids });
    requestCancel(ids);
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

  function turnPage(delta) {
    page += delta;
    dirty.structure = true;
    schedule();
  }

  const listeners = [
    [ui.status, "change", () => setFilter("status", ui.status.value)],
    [ui.session, "change", () => setFilter("session", ui.session.value)],
    [ui.tag, "change", () => setFilter("tag", ui.tag.value)],
    [ui.search, "input", () => setFilter("search", ui.search.value)],
    [ui.cancelVisible, "click", onCancelVisible],
    [ui.prev, "click", () => turnPage(-1)],
    [ui.next, "click", () => turnPage(1)],
    [ui.tbody, "mousedown", holdRows],
    [ui.tbody, "click", onTableClick],
  ];
  for (const [node, type, fn] of listeners) node.addEventListener(type, fn);

  el.appendChild(ui.root);
  model.on("msg:custom", onMessage);
  model.on("change:title", onTitle);
  const interval = setInterval(tick, 1000);
  flush();
  // Every view says hello, so a page reload (a new view) gets a full reset.
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
    if (cancelFrame) cancelFrame();
    if (ui.root.parentNode) ui.root.parentNode.removeChild(ui.root);
  };
}

/** anywidget render hook; returns the cleanup function. */
export function render({ model, el }) {
  return createView(model, el);
}

export default { render };
