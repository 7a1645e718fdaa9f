"""The run panel's table, pages and bounded payloads, with no widget import.

Everything the panel's kernel side computes lives here so it can be unit-tested alone
(``tests/test_run_table.py``): the run table kept from the manager's changes
(:class:`RunTable`), the filters the user chose (:class:`PanelView`), the page sent to the
browser, the exact set "Cancel all" acts on, the rows' JSON, the bounded previews of a run
detail (inputs, outputs, logs, steps, transcript, artifacts), open asks as JSON, answer
validation and the token buckets that rate-limit front-end requests.

The widget (:mod:`ag_jupyter.widgets.run_panel`) only wires this to a comm. Nothing here
awaits or touches a store: callers pass records and data in.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import operator
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import compress
from operator import attrgetter
from typing import Any

from ..runtime.models import RunRecord, RunStatus
from ..runtime.services.channel import MAX_UPLOAD_FILES
from .snapshot import parse_statuses

PAGE_SIZE = 50
AUTO_EXPAND_CHILDREN = 20  # parents with at most this many children start expanded
MAX_CHILDREN_SHOWN = 200  # per parent, so a huge fan-out cannot blow up a page
MAX_RUNS = 50_000  # oldest runs beyond this are dropped from the panel (not from the store)
ALL = ""  # the session/tag/graph filter value meaning "any"
ADHOC_PREFIX = "adhoc-"  # default run id of an ad-hoc session context (runtime/session.py)

#: Characters of a row's traceback sent with the page (the detail view has more).
ROW_TRACEBACK_CHARS = 4_000
#: Bounds of a run detail message (characters unless said otherwise).
DETAIL_JSON_CHARS = 20_000  # inputs / outputs, as indented JSON text
DETAIL_TRACEBACK_CHARS = 20_000
LOG_PAGE = 100  # log lines per page
LOG_LINE_CHARS = 1_000
STEP_PAGE = 50  # steps per page
STEP_PREVIEW_CHARS = 500
TRANSCRIPT_ENTRIES = 100  # the newest ones
TRANSCRIPT_TEXT_CHARS = 2_000
ARTIFACTS_SHOWN = 50
CHILDREN_SHOWN = 50
#: Open asks carried by a page message (with the total), and their text bounds.
ASKS_SHOWN = 20
ASK_PROMPT_CHARS = 4_000
ASK_OPTIONS = 50
ASK_OPTION_CHARS = 200
#: Bounds of an answer message from the browser.
ANSWER_TEXT_CHARS = 100_000
FILES_MAX_COUNT = MAX_UPLOAD_FILES  # the runtime's own cap on files per ask
FILES_MAX_BYTES = 5 * 1024 * 1024  # total decoded bytes of a files answer (comm size limit)
ID_CHARS = 1_000  # longest run / ask / artifact id accepted from the browser
SEARCH_CHARS = 500
MAX_TOGGLES = 1_000  # explicit open/closed parents kept per view (the newest; as the browser)

_status = attrgetter("status")
_session_id = attrgetter("session_id")
_parent_run_id = attrgetter("parent_run_id")
_graph_id = attrgetter("graph_id")
_tags = attrgetter("tags")
_is_terminal = frozenset(s for s in RunStatus if s.is_terminal).__contains__
RETRYABLE = frozenset({RunStatus.failed, RunStatus.canceled})


# --------------------------------------------------------------------------- text bounds
def cut(text: Any, limit: int) -> str | None:
    """``text`` as a str of at most ``limit`` characters (ending in ``…`` when cut), or
    None for None. Non-str values are ``str()``-ed."""
    if text is None:
        return None
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def cut_tail(text: str | None, limit: int) -> str | None:
    """The last ``limit`` characters of ``text`` (a traceback's end says most), with a
    leading ``…`` when cut; None for None."""
    if text is None:
        return None
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _epoch(value: Any) -> float | None:
    """Epoch seconds from a datetime, an ISO string or a number; None otherwise."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return _epoch(parsed)
    return _finite(value)


# --------------------------------------------------------------------------- rows
def hides_parent(record: RunRecord, is_run: Callable[[str], bool] | None = None) -> bool:
    """Whether the Parent column should hide ``record``'s parent: a top-level run of a
    session has its session context's own id as parent (``open_session``'s run id, by
    default ``adhoc-…``, which is no run), and showing it on every row says nothing.

    Hidden when the parent is the run's session id, or starts with ``adhoc-`` and is not
    a run (``is_run(parent)`` False; without ``is_run``, never a run).
    """
    parent = record.parent_run_id
    if not parent:
        return False
    if parent == record.session_id:
        return True
    return parent.startswith(ADHOC_PREFIX) and not (is_run is not None and is_run(parent))


def usage_badge(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The token usage a row shows (from ``meta["usage"]``): ``{"calls", "prompt_tokens",
    "completion_tokens", "total_tokens", "cost"}`` with numbers only, or None."""
    usage = meta.get("usage")
    if not isinstance(usage, Mapping):
        return None
    out = {k: _finite(usage.get(k)) for k in ("calls", "prompt_tokens", "completion_tokens",
                                               "cached_tokens", "cost")}
    total = _finite(usage.get("total_tokens"))
    if total is None and (out["prompt_tokens"] is not None or out["completion_tokens"] is not None):
        total = (out["prompt_tokens"] or 0) + (out["completion_tokens"] or 0)
    out["total_tokens"] = total
    return out if any(v is not None for v in out.values()) else None


def progress_info(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """``meta["progress"]`` bounded for a row (title/subtitle/phase/status as short text,
    numbers as finite floats, ``updated_at`` as epoch seconds), or None when the run
    reports no progress (a run without progress shows no bar)."""
    progress = meta.get("progress")
    if not isinstance(progress, Mapping):
        return None
    percent = _finite(progress.get("percent"))
    current, total = _finite(progress.get("current")), _finite(progress.get("total"))
    if percent is None and current is not None and total:
        percent = 100.0 * current / total
    if percent is not None:
        percent = min(100.0, max(0.0, percent))
    return {
        "title": cut(progress.get("title"), 200),
        "subtitle": cut(progress.get("subtitle"), 200),
        "phase": cut(progress.get("phase"), 100),
        "status": cut(progress.get("status"), 50),
        "current": current,
        "total": total,
        "percent": percent,
        "eta_seconds": _finite(progress.get("eta_seconds")),
        "updated_at": _epoch(progress.get("updated_at")),
    }


def record_to_row(record: RunRecord, *, hide_parent: bool = False) -> dict[str, Any]:
    """The JSON row the front end shows for a record (times as epoch seconds, UTC; the
    browser computes live durations from ``started_at``).

    Always: ``run_id, graph_id, status, session_id, tags, created_at, started_at,
    finished_at, error, traceback`` (cut to its last :data:`ROW_TRACEBACK_CHARS`
    characters; the detail view sends more) and ``parent_run_id`` (None with
    ``hide_parent``, see :func:`hides_parent`). Only when set, to keep pages small:
    ``agent_id``, ``app_id``, ``usage`` (:func:`usage_badge`), ``progress``
    (:func:`progress_info`), ``retry_of``, ``open_asks`` (how many asks wait) and, for a
    run whose body ran elsewhere (``executor="dask"``), ``executor`` and ``worker`` (the
    Dask worker's address).
    """
    meta = record.meta
    row: dict[str, Any] = {
        "run_id": record.run_id,
        "graph_id": record.graph_id,
        "status": record.status.value,
        "session_id": record.session_id,
        "tags": list(record.tags),
        "created_at": _ts(record.created_at),
        "started_at": _ts(record.started_at),
        "finished_at": _ts(record.finished_at),
        "error": record.error,
        "traceback": cut_tail(meta.get("traceback"), ROW_TRACEBACK_CHARS),
        "parent_run_id": None if hide_parent else record.parent_run_id,
    }
    if record.agent_id:
        row["agent_id"] = record.agent_id
    if record.app_id:
        row["app_id"] = record.app_id
    if meta:
        if "usage" in meta and (usage := usage_badge(meta)) is not None:
            row["usage"] = usage
        if "progress" in meta and (progress := progress_info(meta)) is not None:
            row["progress"] = progress
        if meta.get("retry_of"):
            row["retry_of"] = cut(meta["retry_of"], ID_CHARS)
        asks = meta.get("asks")
        if isinstance(asks, list) and asks:
            row["open_asks"] = len(asks)
        if meta.get("executor", "local") != "local":
            row["executor"] = cut(meta["executor"], 40)
            row["worker"] = cut(meta.get("worker"), 200)
    return row


# --------------------------------------------------------------------------- the view
@dataclass
class PanelView:
    """What the user asked to see: filters, page and which parents are open.

    ``statuses`` None means all; ``session`` ``ALL`` means any, None means runs without a
    session; ``graph``/``tag`` ``ALL`` mean any; ``search`` is matched case-insensitively
    against id, graph, session, tags and error.
    """

    page: int = 0
    status: str = "all"  # as the user chose it: "all", "live" or a status
    statuses: frozenset[RunStatus] | None = None
    session: str | None = ALL
    graph: str = ALL
    tag: str = ALL
    search: str = ""
    expanded: set[str] = field(default_factory=set)
    collapsed: set[str] = field(default_factory=set)

    def to_message(self) -> dict[str, Any]:
        """The filters as the front end's controls show them (echoed in page messages)."""
        return {"status": self.status, "session": self.session, "graph": self.graph,
                "tag": self.tag, "search": self.search, "expanded": sorted(self.expanded),
                "collapsed": sorted(self.collapsed)}

    @property
    def filtered(self) -> bool:
        """Whether any filter is set (paging and expansion aside)."""
        return bool(self.statuses is not None or self.session != ALL or self.graph
                    or self.tag or self.search)

    def matches(self, record: RunRecord) -> bool:
        """Whether ``record`` passes the filters (paging aside)."""
        if self.statuses is not None and record.status not in self.statuses:
            return False
        if self.session != ALL and record.session_id != self.session:
            return False
        if self.graph and record.graph_id != self.graph:
            return False
        if self.tag and self.tag not in record.tags:
            return False
        if self.search:
            haystack = " ".join(
                [record.run_id, record.graph_id, record.session_id or "", *record.tags,
                 record.error or ""]
            ).lower()
            if self.search not in haystack:
                return False
        return True


def view_from_message(content: Mapping[str, Any]) -> PanelView:
    """Validate a front end's ``view`` message and build the new view.

    Raises:
      ValueError: saying which field is wrong.
    """
    page = content.get("page", 0)
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise ValueError(f"view.page must be an int >= 0, got {page!r}")
    session = content.get("session", ALL)
    if session is not None and (not isinstance(session, str) or len(session) > ID_CHARS):
        raise ValueError("view.session must be a string or null")
    tag, search, graph = content.get("tag", ALL), content.get("search", ""), content.get(
        "graph", ALL)
    if not all(isinstance(v, str) for v in (tag, search, graph)) or len(search) > SEARCH_CHARS \
            or len(tag) > ID_CHARS or len(graph) > ID_CHARS:
        raise ValueError(
            "view.graph, view.tag and view.search must be strings (search: 500 chars at most)")
    opened, closed = content.get("expanded", []), content.get("collapsed", [])
    for name, ids in (("expanded", opened), ("collapsed", closed)):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"view.{name} must be a list of run ids")
    status = content.get("status") or "all"
    if not isinstance(status, str):
        raise ValueError(f"view.status must be a string, got {status!r}")
    return PanelView(
        page=page,
        status=status,
        statuses=parse_statuses(status),
        session=session,
        graph=graph,
        tag=tag,
        search=search.strip().lower(),
        expanded=set(opened[-MAX_TOGGLES:]),
        collapsed=set(closed[-MAX_TOGGLES:]),
    )


# --------------------------------------------------------------------------- the table
class RunTable:
    """Every run a panel shows, kept from the manager's coalesced changes, and the pages
    built from it.

    Records are kept only for runs that are not live; a live run's current record is
    read through ``lookup`` (the manager's O(1) ``find_record``), so the table holds no
    superseded snapshot of a live run.

    Args:
      lookup: ``run_id -> RunRecord | None`` for live runs (and recent ones).
      max_runs: runs kept; the oldest beyond it are dropped (from the table, not the
        store).
    """

    def __init__(self, lookup: Callable[[str], RunRecord | None], *,
                 max_runs: int | None = None) -> None:
        self._lookup = lookup
        self.max_runs = max_runs
        # Every run shown, in creation order, with the status last delivered (for counts).
        self.runs: OrderedDict[str, RunStatus] = OrderedDict()
        self.finished: dict[str, RunRecord] = {}  # terminal runs and stored history
        self.parents: dict[str, str] = {}  # run id -> parent run id, for runs with a parent
        self.children: dict[str, list[str]] = {}
        self.counts: Counter[RunStatus] = Counter(dict.fromkeys(RunStatus, 0))
        self.nested = 0  # records whose parent is also a record here (not top-level)
        self.sessions: set[str | None] = set()
        self.tags: set[str] = set()
        self.graphs: set[str] = set()

    def __len__(self) -> int:
        return len(self.runs)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.runs

    # ------------------------------------------------------------- taking changes in
    def add(self, changed: Mapping[str, RunRecord], *, live: bool = True) -> None:
        """Take in the newest records of ``changed`` runs (``{run_id: record}``; new runs
        go last).

        ``live``: the records come from the manager, so a non-terminal one is entered as
        its status and read back through ``lookup``; False for stored history.

        The hot path while a panel is open (every run passes here once or twice), so it
        works in bulk: the per-record steps are C-level ``map``/``Counter``/``dict.update``
        calls, and only new runs with a parent or tags take a Python-level step.
        """
        if not changed:
            return
        runs, counts = self.runs, self.counts
        records = list(changed.values())
        statuses = list(map(_status, records))
        olds = list(map(runs.get, changed))
        # Counter(iterable) and Counter.update count in C; subtract takes a mapping here
        # (given an iterable it would loop in Python).
        counts.subtract(Counter(filter(None, olds)))
        counts.update(statuses)
        runs.update(zip(changed, statuses, strict=True))
        self.finished.update(
            compress(changed.items(), map(_is_terminal, statuses)) if live else changed
        )
        new = list(compress(records, map(operator.not_, olds)))
        if not new:
            return
        self.sessions.update(map(_session_id, new))
        self.graphs.update(map(_graph_id, new))
        for record in compress(new, map(_parent_run_id, new)):
            parent = record.parent_run_id
            self.parents[record.run_id] = parent
            self.children.setdefault(parent, []).append(record.run_id)
            if parent in runs:
                self.nested += 1
        for tags in filter(None, map(_tags, new)):
            self.tags.update(tags)
        limit = MAX_RUNS if self.max_runs is None else self.max_runs
        while len(runs) > limit:
            self._drop_oldest()

    def add_history(self, stored: Iterable[RunRecord], opened_at: float) -> int:
        """Add stored records (newest first) not in the table yet and created before
        ``opened_at`` (epoch seconds: runs of this panel's time come as changes), as the
        oldest rows. Returns how many were added."""
        older = [
            record for record in stored
            if record.run_id not in self.runs and record.created_at.timestamp() < opened_at
        ]
        if not older:
            return 0
        self.add({r.run_id: r for r in older}, live=False)
        for record in older:  # each goes in front of the newer ones
            if record.run_id in self.runs:
                self.runs.move_to_end(record.run_id, last=False)
        # add() counts only the new runs' parents; runs shown already may have just got
        # theirs from this history: recount.
        runs = self.runs
        self.nested = sum(
            1 for run_id, parent in self.parents.items() if run_id in runs and parent in runs
        )
        return len(older)

    def record(self, run_id: str | None) -> RunRecord | None:
        """The current record of a run the table shows, or None."""
        if run_id is None:
            return None
        record = self.finished.get(run_id)
        if record is None and run_id in self.runs:
            record = self._lookup(run_id)  # O(1) for a live run
            if record is not None and record.status.is_terminal:
                self.finished[run_id] = record  # it ended in a way the table missed
        return record

    def records(self) -> list[RunRecord]:
        """The current record of every run in the table, oldest first (filters aside)."""
        return [r for run_id in list(self.runs) if (r := self.record(run_id)) is not None]

    def _drop_oldest(self) -> None:
        runs = self.runs
        run_id, status = runs.popitem(last=False)  # O(1); next(iter(dict)) degrades to O(n)
        self.counts[status] -= 1
        self.finished.pop(run_id, None)
        if self.parents.pop(run_id, None) in runs:
            self.nested -= 1
        # its children still shown become top-level rows
        self.nested -= sum(1 for c in self.children.pop(run_id, ()) if c in runs)

    def is_run(self, run_id: str) -> bool:
        """Whether ``run_id`` is a run in the table."""
        return run_id in self.runs

    def child_ids(self, run_id: str) -> list[str]:
        """Ids of the runs in the table whose ``parent_run_id`` is ``run_id``, oldest first."""
        runs = self.runs
        return [c for c in self.children.get(run_id, ()) if c in runs]

    # ------------------------------------------------------------------- pages
    def build_page(self, view: PanelView) -> tuple[dict[str, Any], dict[str, RunRecord]]:
        """The page ``view`` shows and the record of each run in its order.

        Page keys: ``order`` ([run_id, depth, child_count, expanded] in display order),
        ``counts`` (status -> runs, all runs), ``total``, ``matching`` (top-level rows
        matching the filters), ``live_matching`` (live runs matching the filters, children
        included: what "Cancel all" cancels), ``page``, ``page_count``, ``page_size``,
        ``facets`` ({"sessions", "tags", "graphs"}) and ``view`` (the filters in effect).
        ``view.page`` is clamped to the last page.

        Without filters it walks newest-first just far enough to fill the page (totals are
        kept as runs change); with filters it makes one pass over the runs.
        """
        if view.filtered:
            tops, live_matching = self._scan_filtered(view)
            matching = len(tops)
            page_count = max(1, math.ceil(matching / PAGE_SIZE))
            view.page = min(view.page, page_count - 1)
            tops = tops[view.page * PAGE_SIZE : (view.page + 1) * PAGE_SIZE]
        else:
            matching = len(self.runs) - self.nested
            live_matching = sum(n for s, n in self.counts.items() if not s.is_terminal)
            page_count = max(1, math.ceil(matching / PAGE_SIZE))
            view.page = min(view.page, page_count - 1)
            tops = self._newest_top_level(view.page * PAGE_SIZE, PAGE_SIZE)
        order: list[list[Any]] = []
        rows: dict[str, RunRecord] = {}
        for record in tops:
            self._append_with_children(view, order, rows, record, 0)
        return {
            "order": order,
            "counts": {s.value: n for s, n in self.counts.items() if n},
            "total": len(self.runs),
            "matching": matching,
            "live_matching": live_matching,
            "page": view.page,
            "page_count": page_count,
            "page_size": PAGE_SIZE,
            "facets": {
                "sessions": sorted(self.sessions, key=lambda s: (s is None, s or "")),
                "tags": sorted(self.tags),
                "graphs": sorted(self.graphs),
            },
            "view": view.to_message(),
        }, rows

    def live_matching_ids(self, view: PanelView) -> list[str]:
        """Ids of the live runs matching ``view``'s filters, on every page and at every
        depth, newest first: exactly what "Cancel all" acts on (and what
        ``live_matching`` counts)."""
        matches = view.matches
        out: list[str] = []
        for run_id in reversed(self.runs):
            if run_id in self.finished:  # terminal
                continue
            record = self.record(run_id)
            if record is not None and not record.status.is_terminal and matches(record):
                out.append(run_id)
        return out

    def _top_level(self, view: PanelView, record: RunRecord) -> bool:
        parent = self.record(record.parent_run_id)
        return parent is None or not view.matches(parent)

    def _newest_top_level(self, skip: int, count: int) -> list[RunRecord]:
        runs, parents = self.runs, self.parents
        found: list[RunRecord] = []
        for run_id in reversed(runs):
            if parents.get(run_id) in runs:
                continue
            if skip:
                skip -= 1
                continue
            record = self.record(run_id)
            if record is not None:
                found.append(record)
                if len(found) == count:
                    break
        return found

    def _scan_filtered(self, view: PanelView) -> tuple[list[RunRecord], int]:
        matches = view.matches
        tops: list[RunRecord] = []
        live_matching = 0
        for run_id in reversed(self.runs):
            record = self.record(run_id)
            if record is None or not matches(record):
                continue
            if not record.status.is_terminal:
                live_matching += 1
            if self._top_level(view, record):
                tops.append(record)
        return tops, live_matching

    def _append_with_children(
        self, view: PanelView, order: list[list[Any]], rows: dict[str, RunRecord],
        record: RunRecord, depth: int,
    ) -> None:
        children = [
            child
            for child_id in self.children.get(record.run_id, ())
            if (child := self.record(child_id)) is not None and view.matches(child)
        ]
        expanded = record.run_id in view.expanded or (
            record.run_id not in view.collapsed and len(children) <= AUTO_EXPAND_CHILDREN
        )
        order.append([record.run_id, depth, len(children), bool(children) and expanded])
        rows[record.run_id] = record
        if children and expanded and depth < 20:
            for child in children[:MAX_CHILDREN_SHOWN]:
                self._append_with_children(view, order, rows, child, depth + 1)

    def row(self, record: RunRecord) -> dict[str, Any]:
        """:func:`record_to_row` with the Parent column's ad-hoc ids hidden."""
        return record_to_row(record, hide_parent=hides_parent(record, self.is_run))


# --------------------------------------------------------------------------- previews
class _Walk:
    """State of one bounded walk: nodes left, whether the copy is exact so far."""

    __slots__ = ("active", "budget", "exact")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.exact = True
        self.active: set[int] = set()


def _bounded(value: Any, depth: int, walk: _Walk) -> Any:
    """A JSON-able, bounded copy of ``value``: strings cut to 2,000 characters, containers
    to 200 items, depth at 20, about ``walk.budget`` nodes in all; values JSON cannot hold
    become ``{"__repr__", "__type__"}`` previews (as the store keeps them). Anything cut
    or previewed clears ``walk.exact``."""
    walk.budget -= 1
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        if len(value) > 2_000:
            walk.exact = False
        return cut(value, 2_000)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        walk.exact = False
        return repr(value)
    if isinstance(value, dict | list | tuple):
        if depth >= 20 or id(value) in walk.active or walk.budget <= 0:
            walk.exact = False
            return _repr_preview(value, 200)
        if isinstance(value, tuple):
            walk.exact = False  # JSON has no tuples: shown as a list
        walk.active.add(id(value))
        try:
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for k, v in value.items():
                    if len(out) >= 200 or walk.budget <= 0:
                        out["…"] = f"{len(value) - len(out)} more keys"
                        walk.exact = False
                        break
                    if not isinstance(k, str):
                        walk.exact = False
                    out[cut(k, 200) or ""] = _bounded(v, depth + 1, walk)
                return out
            items: list[Any] = []
            for v in value:
                if len(items) >= 200 or walk.budget <= 0:
                    items.append(f"… {len(value) - len(items)} more items")
                    walk.exact = False
                    break
                items.append(_bounded(v, depth + 1, walk))
            return items
        finally:
            walk.active.discard(id(value))
    walk.exact = False
    return _repr_preview(value, 1_000)


def _repr_preview(value: Any, limit: int) -> dict[str, str]:
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<unrepresentable: {type(exc).__name__}>"
    kind = type(value)
    return {"__repr__": cut(text, limit) or "",
            "__type__": f"{kind.__module__}.{kind.__qualname__}"}


def json_preview(value: Any, limit: int = DETAIL_JSON_CHARS) -> dict[str, Any]:
    """``value`` as indented JSON text of at most ``limit`` characters, for the detail
    view: ``{"text", "truncated", "exact"}``. Costs O(limit), whatever the value's size.
    ``exact`` is False when parts JSON cannot hold were shown as ``{"__repr__",
    "__type__"}`` previews (the store's previews of non-JSON outputs look the same) or
    anything was cut."""
    walk = _Walk(5_000)
    try:
        bounded = _bounded(value, 0, walk)
    except RecursionError:
        walk.exact, bounded = False, _repr_preview(value, 1_000)
    text = json.dumps(bounded, indent=2, ensure_ascii=False, default=str)
    truncated = len(text) > limit
    if truncated:
        text = text[: limit - 1] + "…"
    return {"text": text, "truncated": truncated, "exact": walk.exact and not truncated}


def log_page(page: Mapping[str, Any], *, offset: int, limit: int, search: str | None,
             levels: list[str] | None) -> dict[str, Any]:
    """A ``RunManager.logs`` page as sent: lines cut to :data:`LOG_LINE_CHARS`, at most
    ``limit`` of them, with the query echoed (``offset``, ``limit``, ``search``,
    ``levels``) and ``total`` (lines matching)."""
    lines = []
    for line in list(page.get("lines") or [])[:limit]:
        if not isinstance(line, Mapping):
            continue
        lines.append({
            "time": _epoch(line.get("time")),
            "level": cut(line.get("level"), 20) or "",
            "message": cut(line.get("message"), LOG_LINE_CHARS) or "",
        })
    total = page.get("total")
    return {"lines": lines, "total": total if isinstance(total, int) else len(lines),
            "offset": offset, "limit": limit, "search": search or "", "levels": levels or []}


def step_page(steps: list[Mapping[str, Any]], offset: int | None) -> dict[str, Any]:
    """A page of a run's steps (``RunManager.steps``), :data:`STEP_PAGE` at most, the
    newest page when ``offset`` is None; previews cut to :data:`STEP_PREVIEW_CHARS`."""
    total = len(steps)
    if offset is None:
        offset = max(0, total - STEP_PAGE)
    offset = max(0, min(offset, max(0, total - 1)))
    items = []
    for step in steps[offset : offset + STEP_PAGE]:
        items.append({
            "step_id": cut(step.get("step_id"), 100),
            "kind": cut(step.get("kind"), 20) or "",
            "name": cut(step.get("name"), 200) or "",
            "inputs_preview": cut(step.get("inputs_preview"), STEP_PREVIEW_CHARS),
            "outputs_preview": cut(step.get("outputs_preview"), STEP_PREVIEW_CHARS),
            "started_at": _epoch(step.get("started_at")),
            "duration_s": _finite(step.get("duration_s")),
            "error": cut(step.get("error"), 1_000),
        })
    return {"items": items, "total": total, "offset": offset, "limit": STEP_PAGE}


def transcript_entries(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The newest :data:`TRANSCRIPT_ENTRIES` transcript entries (``kind``, ``text``,
    ``ask_id``, ``at`` as epoch seconds), text cut, with the total."""
    items = [e for e in entries if isinstance(e, Mapping)]
    kept = items[-TRANSCRIPT_ENTRIES:]
    return {
        "items": [{
            "kind": cut(e.get("kind"), 20) or "",
            "text": cut(e.get("text"), TRANSCRIPT_TEXT_CHARS) or "",
            "ask_id": cut(e.get("ask_id"), ID_CHARS),
            "at": _epoch(e.get("at")),
        } for e in kept],
        "total": len(items),
    }


def artifact_entry(artifact: Any, path: str | None) -> dict[str, Any]:
    """One artifact a run saved, as the detail view lists it."""
    size = getattr(artifact, "bytes", None)
    return {
        "artifact_id": cut(getattr(artifact, "artifact_id", None), 100),
        "name": cut(getattr(artifact, "name", None), 300) or "",
        "kind": cut(getattr(artifact, "kind", None), 100) or "",
        "mime": cut(getattr(artifact, "mime", None), 200) or "",
        "bytes": size if isinstance(size, int) else None,
        "uri": cut(getattr(artifact, "uri", None), 300),
        "path": cut(path, 2_000),
        "created_at": _epoch(getattr(artifact, "created_at", None)),
        "downloadable": isinstance(size, int) and size <= DOWNLOAD_MAX_BYTES,
    }


#: Largest artifact the panel sends to the browser as a download (bytes).
DOWNLOAD_MAX_BYTES = 5 * 1024 * 1024


def timings(record: RunRecord, now: float | None = None) -> dict[str, Any]:
    """Created / started / finished (epoch s), seconds queued and seconds run (to now
    for a live run)."""
    now = time.time() if now is None else now
    created, started, finished = (_ts(record.created_at), _ts(record.started_at),
                                  _ts(record.finished_at))
    queued = None
    if created is not None:
        queued = (started if started is not None else (finished or now)) - created
    ran = None if started is None else (finished if finished is not None else now) - started
    return {"created_at": created, "started_at": started, "finished_at": finished,
            "queued_s": None if queued is None else max(0.0, queued),
            "duration_s": None if ran is None else max(0.0, ran)}


def record_detail(record: RunRecord, *, hide_parent: bool = False) -> dict[str, Any]:
    """The record part of a detail message: the row, timings, the whole error, the
    traceback (last :data:`DETAIL_TRACEBACK_CHARS`), origin and the other record fields."""
    row = record_to_row(record, hide_parent=hide_parent)
    row["parent_run_id"] = record.parent_run_id  # the detail names the real parent
    row["traceback"] = cut_tail(record.meta.get("traceback"), DETAIL_TRACEBACK_CHARS)
    row["error"] = cut(record.error, DETAIL_TRACEBACK_CHARS)
    row.update(
        origin=record.origin.value,
        visibility=record.visibility.value,
        importance=record.importance.value,
        cancel_reason=cut(record.meta.get("cancel_reason"), 200),
        timings=timings(record),
        retryable=record.status in RETRYABLE,
    )
    return row


# --------------------------------------------------------------------------- asks
def ask_to_dict(ask: Any, *, graph_id: str | None = None) -> dict[str, Any]:
    """One open ask (an ``ag_jupyter.runtime.Ask``) as the front end shows it: ids, kind,
    prompt (cut to :data:`ASK_PROMPT_CHARS`), options (:data:`ASK_OPTIONS` at most,
    ``{"id", "label"}``), ``created_at`` / ``deadline`` (epoch s or None), the run's
    graph and, for a files ask, ``max_bytes`` (the panel's upload cap in bytes,
    :data:`FILES_MAX_BYTES`)."""
    options = []
    for option in list(getattr(ask, "options", None) or [])[:ASK_OPTIONS]:
        if isinstance(option, Mapping):
            oid, label = option.get("id"), option.get("label")
        else:
            oid = label = option
        label = label if label is not None else oid
        options.append({"id": cut(oid, ASK_OPTION_CHARS) or "",
                        "label": cut(label, ASK_OPTION_CHARS) or ""})
    kind = getattr(ask, "kind", "text")
    return {
        "ask_id": cut(getattr(ask, "ask_id", ""), ID_CHARS) or "",
        "run_id": cut(getattr(ask, "run_id", ""), ID_CHARS) or "",
        "graph_id": cut(graph_id, 200),
        "kind": kind if kind in ("text", "choices", "approval", "files") else "text",
        "prompt": cut(getattr(ask, "prompt", ""), ASK_PROMPT_CHARS) or "",
        "options": options,
        "created_at": _epoch(getattr(ask, "created_at", None)),
        "deadline": _epoch(getattr(ask, "deadline", None)),
        "max_bytes": FILES_MAX_BYTES if kind == "files" else None,
    }


def check_answer(content: Mapping[str, Any], *,
                 max_bytes: int = FILES_MAX_BYTES) -> tuple[str, Any]:
    """Validate an ``answer`` message from the browser; return ``(ask_id, value)`` as
    ``RunManager.answer`` takes them.

    Accepted values: a str (reply text, or an option id / label) of at most
    :data:`ANSWER_TEXT_CHARS` characters; ``{"choice": str}``; ``{"files": [{"name",
    "data" (base64 str), "mime"}]}`` with at most :data:`FILES_MAX_COUNT` files and
    ``max_bytes`` decoded bytes in all (the data is decoded to check it and passed on
    as given).

    Raises:
      ValueError: saying what is wrong (the ask is left as it is).
    """
    ask_id = content.get("ask_id")
    if not isinstance(ask_id, str) or not ask_id or len(ask_id) > ID_CHARS:
        raise ValueError(f"answer.ask_id must be a non-empty string, got {_short(ask_id)}")
    value = content.get("value")
    if isinstance(value, str):
        if len(value) > ANSWER_TEXT_CHARS:
            raise ValueError(
                f"an answer is {ANSWER_TEXT_CHARS:,} characters at most, got {len(value):,}")
        return ask_id, value
    if isinstance(value, Mapping) and set(value) == {"choice"}:
        choice = value["choice"]
        if not isinstance(choice, str) or len(choice) > ID_CHARS:
            raise ValueError("answer.value.choice must be an option id (a string)")
        return ask_id, {"choice": choice}
    if isinstance(value, Mapping) and set(value) == {"files"}:
        files = value["files"]
        if not isinstance(files, list) or not files or len(files) > FILES_MAX_COUNT:
            raise ValueError(f"answer.value.files must list 1 to {FILES_MAX_COUNT} files")
        total = 0
        clean = []
        for item in files:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) \
                    or not isinstance(item.get("data"), str):
                raise ValueError("each file needs a name and base64 data (strings)")
            mime = item.get("mime") or "application/octet-stream"
            if not isinstance(mime, str):
                raise ValueError("a file's mime must be a string")
            # Cheap bound before decoding: base64 is 4 chars per 3 bytes.
            total += len(item["data"]) * 3 // 4
            if total > max_bytes * 1.01 + 16:
                raise ValueError(_files_cap_error(max_bytes))
            try:
                decoded = base64.b64decode(item["data"], validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"file {item['name'][:100]!r}: data is not base64") from None
            clean.append({"name": cut(item["name"], 255) or "file", "data": item["data"],
                          "mime": cut(mime, 200), "size": len(decoded)})
        if sum(f["size"] for f in clean) > max_bytes:
            raise ValueError(_files_cap_error(max_bytes))
        for f in clean:
            del f["size"]
        return ask_id, {"files": clean}
    raise ValueError(
        "answer.value must be a string, {'choice': option_id} or {'files': [...]}, got "
        f"{_short(value)}")


def _files_cap_error(max_bytes: int) -> str:
    return (f"files answers are capped at {format_bytes(max_bytes)} in all (comm messages "
            "have size limits); save bigger files to the workspace and answer with a path")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def format_bytes(n: int) -> str:
    """``512 B``, ``12.3 KiB``, ``5.0 MiB``."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


# --------------------------------------------------------------------------- rate limits
class TokenBucket:
    """A token bucket: ``capacity`` requests at once, refilled at ``rate_per_s``.

    ``take()`` spends a token if there is one (True) or returns False; ``wait_s()`` says
    how long until the next token. ``clock`` is a monotonic clock in seconds (tests pass
    a fake one).
    """

    def __init__(self, capacity: float, rate_per_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(capacity)
        self.rate = float(rate_per_s)
        self.clock = clock
        self.tokens = float(capacity)
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self) -> bool:
        """Spend one token; False (nothing spent) when the bucket is empty."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate
