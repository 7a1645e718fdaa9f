"""The live run panel: an anywidget model fed by the RunManager's event subscription.

The kernel keeps every run's record and does the filtering, ordering and paging; the front
end (``js/run_panel.js``, an ES module shipped as package data) renders the one page it is
sent and reports the view the user wants. So the cost per run in the kernel is a few dict
updates, whatever the number of runs, and the browser only ever holds one page.

Protocol (custom messages):

- kernel -> browser, at most once per ``refresh_s`` seconds and only when something shown
  changed: ``{"type": "page", "reset", "order": [[run_id, depth, child_count, expanded]...],
  "upsert": [row...] (rows of ``order`` new to the browser or changed), "counts",
  "total", "matching", "live_matching", "page", "page_count", "page_size", "facets":
  {"sessions", "tags"}, "view": {the filters in effect, so the controls can show them},
  "server_time"}``; and ``{"type": "notice", "level", "text"}``.
- browser -> kernel: ``{"type": "hello"}`` (a view rendered: answered with a reset page),
  ``{"type": "view", "page", "status", "session", "tag", "search", "expanded",
  "collapsed"}``, ``{"type": "cancel", "run_id"}``, ``{"type": "cancel_matching"}``
  (every live run matching the view's filters). Anything else, bad fields and unknown run
  ids get an error notice and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from itertools import compress
from operator import attrgetter
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..runtime import RunManager, RunNotFoundError, RunRecord, RunStatus
from .iopub import hand_off
from .snapshot import html_table, parse_statuses, text_table

log = logging.getLogger("ag_jupyter.widgets")

PAGE_SIZE = 50
AUTO_EXPAND_CHILDREN = 20  # parents with at most this many children start expanded
MAX_CHILDREN_SHOWN = 200  # per parent, so a huge fan-out cannot blow up a page
MAX_RUNS = 50_000  # oldest runs beyond this are dropped from the panel (not from the store)
HISTORY_RUNS = 500  # runs of earlier kernels loaded from the store when a panel opens
KNOWN_ACTIONS = ("hello", "view", "cancel", "cancel_many", "cancel_matching")
ALL = ""  # the session/tag filter value meaning "any"


def esm_source() -> str:
    """The front end's ES module: package data when installed, ``js/`` in a checkout."""
    packaged = resources.files("ag_jupyter.widgets").joinpath("static/run_panel.js")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    checkout = Path(__file__).resolve().parents[2] / "js" / "run_panel.js"
    return checkout.read_text(encoding="utf-8")


def _ts(value: Any) -> float | None:
    return value.timestamp() if value is not None else None


def record_to_row(record: RunRecord) -> dict[str, Any]:
    """The JSON row the front end shows for a record (times as epoch seconds, UTC)."""
    return {
        "run_id": record.run_id,
        "graph_id": record.graph_id,
        "status": record.status.value,
        "session_id": record.session_id,
        "tags": list(record.tags),
        "created_at": _ts(record.created_at),
        "started_at": _ts(record.started_at),
        "finished_at": _ts(record.finished_at),
        "error": record.error,
        "traceback": record.meta.get("traceback"),
        "parent_run_id": record.parent_run_id,
        # Where the body ran: "dask" and the worker's address for executor="dask" runs.
        "executor": record.meta.get("executor", "local"),
        "worker": record.meta.get("worker"),
    }


@dataclass
class PanelView:
    """What the user asked to see: filters, page and which parents are open.

    ``statuses`` None means all; ``session`` ``ALL`` means any, None means runs without a
    session; ``search`` is matched case-insensitively against id, graph, session, tags
    and error.
    """

    page: int = 0
    status: str = "all"  # as the user chose it: "all", "live" or a status
    statuses: frozenset[RunStatus] | None = None
    session: str | None = ALL
    tag: str = ALL
    search: str = ""
    expanded: set[str] = field(default_factory=set)
    collapsed: set[str] = field(default_factory=set)

    def to_message(self) -> dict[str, Any]:
        """The filters as the front end's controls show them (echoed in page messages)."""
        return {"status": self.status, "session": self.session, "tag": self.tag,
                "search": self.search, "expanded": sorted(self.expanded),
                "collapsed": sorted(self.collapsed)}

    @property
    def filtered(self) -> bool:
        """Whether any filter is set (paging and expansion aside)."""
        return bool(self.statuses is not None or self.session != ALL or self.tag or self.search)

    def matches(self, record: RunRecord) -> bool:
        """Whether ``record`` passes the filters (paging aside)."""
        if self.statuses is not None and record.status not in self.statuses:
            return False
        if self.session != ALL and record.session_id != self.session:
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


def view_from_message(content: dict[str, Any]) -> PanelView:
    """Validate a front end's ``view`` message and build the new view.

    Raises:
      ValueError: saying which field is wrong.
    """
    page = content.get("page", 0)
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise ValueError(f"view.page must be an int >= 0, got {page!r}")
    session = content.get("session", ALL)
    if session is not None and not isinstance(session, str):
        raise ValueError("view.session must be a string or null")
    tag, search = content.get("tag", ALL), content.get("search", "")
    if not isinstance(tag, str) or not isinstance(search, str) or len(search) > 500:
        raise ValueError("view.tag and view.search must be strings (search: 500 chars at most)")
    opened, closed = content.get("expanded", []), content.get("collapsed", [])
    for name, ids in (("expanded", opened), ("collapsed", closed)):
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"view.{name} must be a list of run ids")
    status = content.get("status") or "all"
    return PanelView(
        page=page,
        status=status,
        statuses=parse_statuses(status),
        session=session,
        tag=tag,
        search=search.strip().lower(),
        expanded=set(opened[:10_000]),
        collapsed=set(closed[:10_000]),
    )


_status = attrgetter("status")
_session_id = attrgetter("session_id")
_parent_run_id = attrgetter("parent_run_id")
_tags = attrgetter("tags")
_is_terminal = frozenset(s for s in RunStatus if s.is_terminal).__contains__

_panels: weakref.WeakSet[RunPanel] = weakref.WeakSet()


def close_all_panels() -> None:
    """Close every open panel (used by ``%unload_ext``)."""
    for panel in list(_panels):
        panel.close()


class RunPanel(anywidget.AnyWidget):
    """A live, paged table of a RunManager's runs with Cancel buttons.

    Display it with ``display(panel)`` or ``%ag_runs``. The kernel keeps the rows and sends
    the browser only the page it shows, at most one message per ``refresh_s`` seconds and
    only when something shown changed, so its cost per run does not grow with the number
    of runs. Cancel clicks call ``RunManager.cancel_run`` (through ``request_cancel``); they
    are handled while the kernel is idle or awaiting, not during a blocking sync cell.

    Args:
      manager: the RunManager to watch (one panel model per call).
      refresh_s: seconds between update messages (> 0).
      status: initial status filter: None/``"all"``, ``"live"`` or a status.
      session: initial session filter (None: all sessions).
      title: the header text.
      history: how many of the newest stored runs of earlier kernels (a durable workspace
        keeps them) to load in the background when the panel opens; 0 for none.

    Attributes:
      messages_sent: page messages sent so far (int).
      hand_off_s: seconds spent waiting for ipykernel's IOPub thread to take those
        messages (float; see :mod:`ag_jupyter.widgets.iopub`).

    Raises:
      ValueError: for a non-positive ``refresh_s`` or an unknown status.
    """

    _esm = esm_source()
    title = traitlets.Unicode("ag_jupyter runs").tag(sync=True)

    def __init__(
        self,
        manager: RunManager,
        *,
        refresh_s: float = 0.1,
        status: str | None = None,
        session: str | None = None,
        title: str = "ag_jupyter runs",
        history: int = HISTORY_RUNS,
        **kwargs: Any,
    ) -> None:
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be a positive number of seconds, got {refresh_s!r}")
        view = PanelView(status=status or "all", statuses=parse_statuses(status),
                         session=ALL if session is None else session)
        super().__init__(title=title, **kwargs)
        self._manager = manager
        self._refresh_s = float(refresh_s)
        self._view = view
        # Every run shown, in creation order, with the status last delivered (for the
        # counts). Records are kept only for runs that are not live in the manager; a live
        # run's current record is read from the manager. Keeping each delivered snapshot of
        # a live run until the next one would hold a superseded record per live run for a
        # refresh period: that cost 2-3 us per run in a burst (bench/panel_overhead.py).
        self._runs: OrderedDict[str, RunStatus] = OrderedDict()
        self._finished: dict[str, RunRecord] = {}  # terminal runs and stored history
        self._parents: dict[str, str] = {}  # run id -> parent run id, for runs with a parent
        self._children: dict[str, list[str]] = {}
        self._counts: Counter[RunStatus] = Counter(dict.fromkeys(RunStatus, 0))
        self._nested = 0  # records whose parent is also a record here (not top-level)
        self._opened_at = time.time()
        self._sessions: set[str | None] = set()
        self._tags: set[str] = set()
        self._add({r.run_id: r for r in manager.recent_records()})
        self._shown: dict[str, RunRecord] = {}  # what the browser has, as last sent
        self._last_summary: tuple[Any, ...] | None = None
        self._loop = manager.loop
        self.messages_sent = 0
        self.hand_off_s = 0.0  # seconds spent handing messages to ipykernel's IOPub thread
        # The manager coalesces changes for us: one call per refresh period at most. Not on
        # the leading edge: a burst's first flush would take in every run still queued, and
        # take each in again when it finishes (the first rows show refresh_s later instead).
        self._watch = manager.watch(self._on_changes, interval_s=self._refresh_s, leading=False)
        self.on_msg(self._on_frontend_msg)
        _panels.add(self)
        self._history_task: asyncio.Task[None] | None = None
        loop = _running_loop()
        if history > 0 and loop is not None:
            self._history_task = loop.create_task(self.load_history(history))

    # ------------------------------------------------------------ the run table
    def _add(self, changed: Mapping[str, RunRecord], *, live: bool = True) -> None:
        """Take in the newest records of ``changed`` runs (``{run_id: record}``; new runs
        go last).

        ``live``: the records come from this panel's manager, so a non-terminal one is
        entered as its status and read back from the manager; False for stored history.

        The hot path while the panel is open (every run passes here once or twice), so it
        works in bulk: the per-record steps are C-level ``map``/``Counter``/``dict.update``
        calls, and only new runs with a parent or tags take a Python-level step.
        """
        runs, counts = self._runs, self._counts
        records = list(changed.values())
        statuses = list(map(_status, records))
        olds = list(map(runs.get, changed))
        # Counter(iterable) and Counter.update count in C; subtract takes a mapping here
        # (given an iterable it would loop in Python).
        counts.subtract(Counter(filter(None, olds)))
        counts.update(statuses)
        runs.update(zip(changed, statuses, strict=True))
        self._finished.update(
            compress(changed.items(), map(_is_terminal, statuses)) if live else changed
        )
        new = list(compress(records, map(operator.not_, olds)))
        if not new:
            return
        self._sessions.update(map(_session_id, new))
        for record in compress(new, map(_parent_run_id, new)):
            parent = record.parent_run_id
            self._parents[record.run_id] = parent
            self._children.setdefault(parent, []).append(record.run_id)
            if parent in runs:
                self._nested += 1
        for tags in filter(None, map(_tags, new)):
            self._tags.update(tags)
        while len(runs) > MAX_RUNS:
            self._drop_oldest()

    def _record(self, run_id: str | None) -> RunRecord | None:
        """The current record of a run the panel shows, or None."""
        if run_id is None:
            return None
        record = self._finished.get(run_id)
        if record is None and run_id in self._runs:
            record = self._manager.find_record(run_id)  # O(1) for a live run
            if record is not None and record.status.is_terminal:
                self._finished[run_id] = record  # it ended in a way the panel missed
        return record

    def _drop_oldest(self) -> None:
        runs = self._runs
        run_id, status = runs.popitem(last=False)  # O(1); next(iter(dict)) degrades to O(n)
        self._counts[status] -= 1
        self._finished.pop(run_id, None)
        if self._parents.pop(run_id, None) in runs:
            self._nested -= 1
        # its children still shown become top-level rows
        self._nested -= sum(1 for c in self._children.pop(run_id, ()) if c in runs)

    async def load_history(self, limit: int = HISTORY_RUNS) -> int:
        """Add the newest ``limit`` runs from the manager's store that the panel does not
        show yet (runs of earlier kernels on a durable workspace), as older rows.

        Returns how many were added. A store error is logged and adds nothing.
        """
        try:
            stored = await self._manager.list_records(limit=limit)
        except Exception:
            log.exception("could not load run history for the panel")
            return 0
        older = [  # newest first
            record for record in stored
            # not shown already, nor a run of this panel's time still on its way
            if record.run_id not in self._runs
            and record.created_at.timestamp() < self._opened_at
        ]
        self._add({r.run_id: r for r in older}, live=False)
        for record in older:  # each goes in front of the newer ones
            self._runs.move_to_end(record.run_id, last=False)
        added = len(older)
        if added:
            # _add counts only the new runs' parents; runs shown already may have just
            # got theirs from this history: recount.
            runs = self._runs
            self._nested = sum(
                1 for run_id, parent in self._parents.items() if run_id in runs and parent in runs
            )
            if self.comm is not None:
                self._send_page(reset=False)
        return added

    def records(self) -> list[RunRecord]:
        """The current record of every run the panel shows, oldest first (filters aside)."""
        self._catch_up()
        return [r for run_id in list(self._runs) if (r := self._record(run_id)) is not None]

    def _on_changes(self, changes: dict[str, RunRecord]) -> None:
        """RunManager.watch callback: the latest record of each run changed since the last
        call (at most one call per refresh period)."""
        self._add(changes)
        if self.comm is not None:
            self._send_page(reset=False)

    def _catch_up(self) -> None:
        # Answer a request from current data, not data up to one refresh period old.
        self._add(self._watch.take())

    # --------------------------------------------------------------- the page
    def _top_level(self, record: RunRecord) -> bool:
        parent = self._record(record.parent_run_id)
        return parent is None or not self._view.matches(parent)

    def compute_page(self) -> dict[str, Any]:
        """The page the current view shows (see the module doc), without sending it.

        Without filters it walks newest-first just far enough to fill the page (totals are
        kept as runs change); with filters it makes one pass over the runs. Either way at
        most once per flush.
        """
        return self._build_page()[0]

    def _build_page(self) -> tuple[dict[str, Any], dict[str, RunRecord]]:
        # The page, and the record of each run in its order (the rows it shows).
        # Live rows are read from the manager as they are now: take in the changes not
        # delivered yet, so the counts agree with the rows.
        self._catch_up()
        view = self._view
        if view.filtered:
            tops, live_matching = self._scan_filtered()
            matching = len(tops)
            page_count = max(1, math.ceil(matching / PAGE_SIZE))
            view.page = min(view.page, page_count - 1)
            tops = tops[view.page * PAGE_SIZE : (view.page + 1) * PAGE_SIZE]
        else:
            matching = len(self._runs) - self._nested
            live_matching = sum(n for s, n in self._counts.items() if not s.is_terminal)
            page_count = max(1, math.ceil(matching / PAGE_SIZE))
            view.page = min(view.page, page_count - 1)
            tops = self._newest_top_level(view.page * PAGE_SIZE, PAGE_SIZE)
        order: list[list[Any]] = []
        rows: dict[str, RunRecord] = {}
        for record in tops:
            self._append_with_children(order, rows, record, 0)
        return {
            "order": order,
            "counts": {s.value: n for s, n in self._counts.items() if n},
            "total": len(self._runs),
            "matching": matching,
            "live_matching": live_matching,
            "page": view.page,
            "page_count": page_count,
            "page_size": PAGE_SIZE,
            "facets": {
                "sessions": sorted(self._sessions, key=lambda s: (s is None, s or "")),
                "tags": sorted(self._tags),
            },
            "view": view.to_message(),
        }, rows

    def _newest_top_level(self, skip: int, count: int) -> list[RunRecord]:
        runs, parents = self._runs, self._parents
        found: list[RunRecord] = []
        for run_id in reversed(runs):
            if parents.get(run_id) in runs:
                continue
            if skip:
                skip -= 1
                continue
            record = self._record(run_id)
            if record is not None:
                found.append(record)
                if len(found) == count:
                    break
        return found

    def _scan_filtered(self) -> tuple[list[RunRecord], int]:
        matches = self._view.matches
        tops: list[RunRecord] = []
        live_matching = 0
        for run_id in reversed(self._runs):
            record = self._record(run_id)
            if record is None or not matches(record):
                continue
            if not record.status.is_terminal:
                live_matching += 1
            if self._top_level(record):
                tops.append(record)
        return tops, live_matching

    def _append_with_children(
        self, order: list[list[Any]], rows: dict[str, RunRecord], record: RunRecord, depth: int
    ) -> None:
        view = self._view
        children = [
            child
            for child_id in self._children.get(record.run_id, ())
            if (child := self._record(child_id)) is not None and view.matches(child)
        ]
        expanded = record.run_id in view.expanded or (
            record.run_id not in view.collapsed and len(children) <= AUTO_EXPAND_CHILDREN
        )
        order.append([record.run_id, depth, len(children), bool(children) and expanded])
        rows[record.run_id] = record
        if children and expanded and depth < 20:
            for child in children[:MAX_CHILDREN_SHOWN]:
                self._append_with_children(order, rows, child, depth + 1)

    def _send_page(self, *, reset: bool) -> None:
        page, shown = self._build_page()
        if reset:
            self._shown = {}
        upsert = [
            record_to_row(record) for run_id, record in shown.items()
            if self._shown.get(run_id) is not record  # records are frozen: identity = same
        ]
        summary = (page["order"], page["counts"], page["total"], page["live_matching"],
                   page["page_count"], page["facets"])
        if not reset and not upsert and summary == self._last_summary:
            return  # nothing the browser shows changed
        self._shown, self._last_summary = shown, summary
        self.messages_sent += 1
        self._send_message({"type": "page", "reset": reset, "upsert": upsert,
                            "server_time": time.time(), **page})

    def _notice(self, text: str, level: str = "error") -> None:
        self._send_message({"type": "notice", "level": level, "text": text})

    def _send_message(self, content: dict[str, Any]) -> None:
        self.send(content)
        # See .iopub: on a saturated loop the IOPub thread would otherwise wait for the GIL.
        self.hand_off_s += hand_off()

    # ----------------------------------------------------------- browser side
    def _on_frontend_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # Comm messages may be dispatched off the loop thread: hop onto the loop.
        loop = self._loop or self._manager.loop
        if loop is not None and _running_loop() is not loop:
            loop.call_soon_threadsafe(self.handle_message, content)
        else:
            self.handle_message(content)

    def handle_message(self, content: Any) -> None:
        """Validate and act on one message from the front end (see the module doc)."""
        if not isinstance(content, dict) or content.get("type") not in KNOWN_ACTIONS:
            kind = content.get("type") if isinstance(content, dict) else type(content).__name__
            self._notice(f"ignored an unknown panel action {kind!r}")
            return
        action = content["type"]  # pages and records() take in undelivered changes first
        if action == "hello":
            self._send_page(reset=True)
        elif action == "view":
            try:
                self._view = view_from_message(content)
            except ValueError as exc:
                self._notice(f"ignored a bad view request: {exc}")
                return
            self._send_page(reset=True)
        elif action == "cancel":
            self._cancel([content.get("run_id")])
        elif action == "cancel_many":
            run_ids = content.get("run_ids")
            if not isinstance(run_ids, list) or len(run_ids) > MAX_RUNS:
                self._notice("cancel_many needs a list of run ids")
                return
            self._cancel(run_ids)
        else:  # cancel_matching
            matching = [
                r.run_id for r in self.records()
                if not r.status.is_terminal and self._view.matches(r)
            ]
            if not matching:
                self._notice("no live runs match the current filters", level="info")
            self._cancel(matching)

    def _cancel(self, run_ids: list[Any]) -> None:
        bad = [rid for rid in run_ids if not isinstance(rid, str)]
        if bad:
            self._notice(f"ignored cancel of invalid run id(s) {bad[:3]!r}")
        for run_id in (rid for rid in run_ids if isinstance(rid, str)):
            try:
                record = self._manager.request_cancel(run_id, reason="panel_cancel")
            except RunNotFoundError:
                self._notice(f"no run with id {run_id!r} in this kernel; nothing cancelled")
                continue
            if record.status.is_terminal:
                self._notice(f"run {run_id} already {record.status.value}", level="info")

    # -------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            records = [r for r in self.records() if self._view.matches(r)]
            data["text/plain"] = text_table(records)
            data["text/html"] = html_table(records, title=self.title)
        return bundle

    def close(self) -> None:
        """Stop watching the manager and close the widget model."""
        watch = getattr(self, "_watch", None)  # None if __init__ raised
        if watch is not None:
            watch.close()
        task = getattr(self, "_history_task", None)
        if task is not None:
            task.cancel()
        _panels.discard(self)
        with contextlib.suppress(Exception):
            super().close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
