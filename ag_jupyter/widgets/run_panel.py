"""The live run panel: an anywidget model fed by the RunManager's event subscription.

The kernel keeps every run's record and does the filtering, ordering and paging
(:mod:`ag_jupyter.widgets.run_table`, no widget import); the front end
(``static/run_panel.js`` and ``static/run_panel.css``, given to anywidget as paths)
renders the one page it is sent and reports the view the user wants. So the cost per run
in the kernel is a few dict updates, whatever the number of runs, and the browser only
ever holds one page, the open asks and the one run detail it asked for.

Protocol (custom comm messages; every field from the browser is validated, anything
malformed gets an error notice and changes nothing; notices are rate-limited):

kernel -> browser

- ``page`` (at most once per ``refresh_s`` and only when something shown changed, or in
  answer to ``hello``/``view``): ``{"reset", "order": [[run_id, depth, child_count,
  expanded]...] (one page: PAGE_SIZE top-level rows and their open children), "upsert":
  [row...] (rows of ``order`` new to the browser or changed), "counts", "total",
  "matching", "live_matching", "page", "page_count", "page_size", "facets": {"sessions",
  "tags", "graphs"}, "view", "server_time", "asks": {"items": [ask...] (ASKS_SHOWN at most,
  prompts and options cut), "total"} | null (null: this runtime has no asks)}``.
- ``notice``: ``{"level": "error" | "info", "text", "ask_id"?}``.
- ``detail``: the open run, on request and refreshed while it is live (at most once a
  second): ``{"run_id", "record", "inputs"/"outputs": {"text" (JSON, DETAIL_JSON_CHARS at
  most), "truncated", "exact"} | null, "logs": {"lines" (LOG_PAGE at most, each cut),
  "total", "offset", "limit", "search", "levels"}, "steps": {"items" (STEP_PAGE), "total",
  "offset"}, "transcript": {"items" (the newest TRANSCRIPT_ENTRIES), "total"}, "artifacts":
  {"items" (ARTIFACTS_SHOWN), "total", "more", "available"}, "children": {"items" (rows,
  CHILDREN_SHOWN), "total"}, "usage", "errors": {section: text}}``.
- ``logs`` / ``steps``: one page of that section of the open run (same shapes).
- ``cancel_offer``: ``{"token", "count", "sample": [run_id...] (5), "view"}``: the exact
  set "Cancel all" would cancel, waiting for the user's confirmation.
- ``answered``: ``{"ask_id"}`` once the runtime took an answer; ``retried``:
  ``{"run_id", "new_run_id"}``.
- ``download``: ``{"artifact_id", "name", "mime", "bytes"}`` with the content as one
  binary buffer (DOWNLOAD_MAX_BYTES at most).

browser -> kernel

- ``hello`` (a view rendered) and ``view`` (``page``, ``status``, ``session``, ``graph``,
  ``tag``, ``search``, ``expanded``, ``collapsed``): answered with a reset page;
  rate-limited (a burst of 10, then 5 a second; a request over the limit is answered
  once the limit allows, with the latest view).
- ``cancel`` ``{run_id}``: O(1) per message; ``cancel_matching_prepare``: answered with a
  ``cancel_offer``; ``cancel_matching`` ``{token}``: cancels exactly the offered runs.
- ``detail`` ``{run_id, log_search?, log_levels?}``, ``logs`` ``{run_id, offset|null,
  search, levels}``, ``steps`` ``{run_id, offset|null}``, ``detail_close``: rate-limited
  (a burst of 10, then 4 a second; latest wins).
- ``retry`` ``{run_id}``: ``RunManager.retry_run`` (rate-limited with Cancel all and
  downloads: a burst of 10, then 2 a second); ``answer`` ``{ask_id, value}`` (20, then 10 a second):
  ``RunManager.answer`` (value checked by ``run_table.check_answer``); ``download``
  ``{run_id, artifact_id}``: one at a time, for artifacts that run saved.

Why downloads go over the comm: the browser may not share the kernel's file system
(a remote server, JupyterHub, a container), ``ag://`` URIs mean nothing to it, and the
workspace is usually outside the Jupyter server's root (a ``/files/`` link would 404 or
need the server to expose the workspace). So the panel sends an artifact's bytes on
request, capped at DOWNLOAD_MAX_BYTES (comm messages have size limits), and always shows
its ``ag://`` URI and local path to load it in a cell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, ClassVar

import anywidget
import traitlets

from ..runtime import AskError, RunManager, RunNotFoundError, RunRecord
from . import history as history_module
from .detail import RunDetailReader
from .history import HISTORY_RUNS
from .iopub import hand_off
from .run_table import (
    ALL,
    ASKS_SHOWN,
    ID_CHARS,
    PAGE_SIZE,
    SEARCH_CHARS,
    PanelView,
    RunTable,
    TokenBucket,
    ask_to_dict,
    check_answer,
    record_to_row,
    view_from_message,
)
from .snapshot import html_table, parse_statuses, text_table

__all__ = ["PAGE_SIZE", "PanelView", "RunPanel", "close_all_panels", "record_to_row"]

log = logging.getLogger("ag_jupyter.widgets")

STATIC = Path(__file__).resolve().parent / "static"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DETAIL_REFRESH_S = 1.0  # the open run's detail is re-sent at most this often
DETAIL_LIVE_REFRESH_S = 2.0  # ... and this often while it is live (its logs grow)
CANCEL_OFFER_S = 120.0  # a Cancel all confirmation is good for this long
SNAPSHOT_UPDATE_S = 5.0  # a panel's display is refreshed with its history only this soon

_panels: weakref.WeakSet[RunPanel] = weakref.WeakSet()


def close_all_panels() -> None:
    """Close every open panel (used by ``%unload_ext``)."""
    for panel in list(_panels):
        panel.close()


class _Refused(ValueError):
    """A front-end request that is refused with a notice (never raised out of the panel)."""


def _run_id(content: Mapping[str, Any], key: str = "run_id") -> str:
    value = content.get(key)
    if not isinstance(value, str) or not value or len(value) > ID_CHARS:
        raise _Refused(f"{content.get('type')}.{key} must be a run id (a non-empty string)")
    return value


def _offset(content: Mapping[str, Any]) -> int | None:
    offset = content.get("offset")
    if offset is None:
        return None
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise _Refused(f"{content.get('type')}.offset must be null or an int >= 0")
    return offset


def _log_query(content: Mapping[str, Any], search_key: str, levels_key: str
               ) -> tuple[str, list[str]]:
    search = content.get(search_key) or ""
    levels = content.get(levels_key) or []
    if not isinstance(search, str) or len(search) > SEARCH_CHARS:
        raise _Refused("log search must be a string of 500 characters at most")
    if not isinstance(levels, list) or not all(
        isinstance(level, str) and level.upper() in LOG_LEVELS for level in levels
    ):
        raise _Refused(f"log levels must be a list of {', '.join(LOG_LEVELS)}")
    return search.strip(), sorted({level.upper() for level in levels})


class RunPanel(anywidget.AnyWidget):
    """A live, paged table of a RunManager's runs with open asks, run details, Cancel and
    Retry buttons.

    Display it with ``display(panel)`` or ``%ag_runs``. The kernel keeps the rows and sends
    the browser only the page it shows, at most one message per ``refresh_s`` seconds and
    only when something shown changed, so its cost per run does not grow with the number
    of runs. Clicks are handled while the kernel is idle or awaiting, not during a
    blocking sync cell. See the module docstring for the message protocol and its bounds.

    Args:
      manager: the RunManager to watch (one panel model per call).
      refresh_s: seconds between update messages (> 0).
      status: initial status filter: None/``"all"``, ``"live"`` or a status.
      session: initial session filter (None: all sessions).
      graph: initial graph filter (None: all graphs).
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

    _esm = STATIC / "run_panel.js"
    _css = STATIC / "run_panel.css"
    title = traitlets.Unicode("ag_jupyter runs").tag(sync=True)

    def __init__(
        self,
        manager: RunManager,
        *,
        refresh_s: float = 0.1,
        status: str | None = None,
        session: str | None = None,
        graph: str | None = None,
        title: str = "ag_jupyter runs",
        history: int = HISTORY_RUNS,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be a positive number of seconds, got {refresh_s!r}")
        view = PanelView(status=status or "all", statuses=parse_statuses(status),
                         session=ALL if session is None else session, graph=graph or ALL)
        super().__init__(title=title, **kwargs)
        self._manager = manager
        self._refresh_s = float(refresh_s)
        self._view = view
        self._table = RunTable(manager.find_record)
        self._reader = RunDetailReader(manager, self._table)
        self._opened_at = time.time()
        self._table.add({r.run_id: r for r in manager.recent_records()})
        self._shown: dict[str, RunRecord] = {}  # what the browser has, as last sent
        self._last_summary: tuple[Any, ...] | None = None
        self._loop = manager.loop
        self.messages_sent = 0
        self.hand_off_s = 0.0  # seconds spent handing messages to ipykernel's IOPub thread
        # Requests from the browser are rate-limited; replies over the limit are deferred.
        self._clock = clock
        self._page_bucket = TokenBucket(10, 5, clock)
        self._detail_bucket = TokenBucket(10, 4, clock)
        self._action_bucket = TokenBucket(10, 2, clock)  # retry, cancel-all, downloads
        self._answer_bucket = TokenBucket(20, 10, clock)
        self._notice_bucket = TokenBucket(20, 10, clock)
        self._suppressed = 0  # notices dropped since the last one sent
        self._deferred: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # The one run whose detail the browser shows, and how it pages its logs/steps.
        self._detail_run: str | None = None
        self._detail_query: dict[str, Any] = {}
        self._detail_task: asyncio.Task[Any] | None = None
        self._detail_timer: asyncio.TimerHandle | None = None
        self._detail_sent_at = 0.0
        self._cancel_offer: tuple[str, list[str], float] | None = None
        self._downloading = False
        self._display_handle: Any = None
        # The manager coalesces changes for us: one call per refresh period at most. Not on
        # the leading edge: a burst's first flush would take in every run still queued, and
        # take each in again when it finishes (the first rows show refresh_s later instead).
        self._watch = manager.watch(self._on_changes, interval_s=self._refresh_s, leading=False)
        self.on_msg(self._on_frontend_msg)
        _panels.add(self)
        self._history_task: asyncio.Task[None] | None = None
        loop = _running_loop()
        if history > 0:
            known = history_module.cached(manager)
            if known is not None:  # read already in this kernel: show it at once
                self._table.add_history(known[:history], self._opened_at)
            if loop is not None:
                self._history_task = loop.create_task(self._load_history_quietly(history))

    # ------------------------------------------------------------ the run table
    @property
    def table(self) -> RunTable:
        """The panel's :class:`~ag_jupyter.widgets.run_table.RunTable`."""
        return self._table

    async def _load_history_quietly(self, limit: int) -> None:
        added = await self.load_history(limit)
        handle = self._display_handle
        if added and handle is not None and time.time() - self._opened_at < SNAPSHOT_UPDATE_S:
            # The display's text/html and text/plain snapshots were taken before the history
            # was read: refresh them (a saved notebook shows the stored runs too).
            with contextlib.suppress(Exception):
                handle.update(self)

    async def load_history(self, limit: int = HISTORY_RUNS) -> int:
        """Add the newest ``limit`` runs from the manager's store that the panel does not
        show yet (runs of earlier kernels on a durable workspace), as older rows.

        Returns how many were added. A store error is logged and adds nothing.
        """
        try:
            stored = await history_module.read_stored(self._manager, limit=limit)
        except Exception:
            log.exception("could not load run history for the panel")
            return 0
        added = self._table.add_history(stored, self._opened_at)
        if added and self.comm is not None:
            self._send_page(reset=False)
        return added

    def records(self) -> list[RunRecord]:
        """The current record of every run the panel shows, oldest first (filters aside)."""
        self._catch_up()
        return self._table.records()

    def _on_changes(self, changes: dict[str, RunRecord]) -> None:
        """RunManager.watch callback: the latest record of each run changed since the last
        call (at most one call per refresh period)."""
        self._table.add(changes)
        if self.comm is not None:
            self._send_page(reset=False)
            if self._detail_run is not None and self._detail_run in changes:
                self._schedule_detail_refresh(0.3)

    def _catch_up(self) -> None:
        # Answer a request from current data, not data up to one refresh period old.
        self._table.add(self._watch.take())

    # --------------------------------------------------------------- the page
    def compute_page(self) -> dict[str, Any]:
        """The page the current view shows (see the module doc), without sending it."""
        self._catch_up()
        return self._table.build_page(self._view)[0]

    def open_asks(self) -> list[dict[str, Any]] | None:
        """The manager's open asks (``RunManager.pending_asks()``) as the front end shows
        them (``run_table.ask_to_dict``), oldest first; None when listing them failed."""
        try:
            asks = self._manager.pending_asks()
        except Exception as exc:
            log.warning("could not list open asks: %s", exc)
            return None
        out = []
        for ask in asks:
            record = self._table.record(ask.run_id)
            out.append(ask_to_dict(ask, graph_id=record.graph_id if record else None))
        return out

    def _send_page(self, *, reset: bool) -> None:
        self._catch_up()
        page, shown = self._table.build_page(self._view)
        asks = self.open_asks()
        asks_part = None if asks is None else {"items": asks[:ASKS_SHOWN], "total": len(asks)}
        if reset:
            self._shown = {}
        row = self._table.row
        upsert = [
            row(record) for run_id, record in shown.items()
            if self._shown.get(run_id) is not record  # records are frozen: identity = same
        ]
        summary = (page["order"], page["counts"], page["total"], page["live_matching"],
                   page["page_count"], page["facets"], asks_part)
        if not reset and not upsert and summary == self._last_summary:
            return  # nothing the browser shows changed
        self._shown, self._last_summary = shown, summary
        self.messages_sent += 1
        self._send_message({"type": "page", "reset": reset, "upsert": upsert,
                            "server_time": time.time(), "asks": asks_part, **page})

    def _notice(self, text: str, level: str = "error", *, force: bool = False,
                **extra: Any) -> None:
        """Send a notice; past the notice rate limit it is dropped and counted (the next
        one sent says how many were). ``force``: the outcome of a request that was itself
        rate-limited (Cancel all, Retry, an answer), always sent."""
        if not self._notice_bucket.take() and not force:
            self._suppressed += 1
            return
        if self._suppressed:
            text = f"{text} ({self._suppressed} more notices were dropped)"
            self._suppressed = 0
        self._send_message({"type": "notice", "level": level, "text": text, **extra})

    def _send_message(self, content: dict[str, Any],
                      buffers: list[bytes] | None = None) -> None:
        self.send(content, buffers=buffers)
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
        """Validate and act on one message from the front end (see the module doc).

        Never raises: a malformed or refused request gets an error notice.
        """
        action = content.get("type") if isinstance(content, dict) else None
        handler = self._ACTIONS.get(action) if isinstance(action, str) else None
        if handler is None:
            kind = action if isinstance(content, dict) else type(content).__name__
            self._notice(f"ignored an unknown panel action {_short(kind)}")
            return
        try:
            handler(self, content)
        except _Refused as exc:
            self._notice(f"ignored a bad {action} request: {exc}")
        except Exception as exc:  # a bug here must not reach the kernel's cell or log
            log.warning("the run panel failed on a %s request: %r", action, exc)
            self._notice(f"the panel could not handle {action}: {type(exc).__name__}: {exc}")

    # pages ------------------------------------------------------------------------
    def _on_hello(self, content: dict[str, Any]) -> None:
        self._page_request()

    def _on_view(self, content: dict[str, Any]) -> None:
        try:
            view = view_from_message(content)
        except ValueError as exc:
            self._notice(f"ignored a bad view request: {exc}")
            return
        self._view = view
        self._page_request()

    def _page_request(self) -> None:
        if self._page_bucket.take():
            self._send_page(reset=True)
        else:  # over the limit: one reset page later, for the latest view
            self._defer("page", self._page_bucket, lambda: self._send_page(reset=True))

    def _defer(self, key: str, bucket: TokenBucket, action: Callable[[], None]) -> None:
        """Run ``action`` once ``bucket`` has a token again; a later deferral with the same
        key replaces an earlier one that has not run (latest wins)."""
        old = self._deferred.pop(key, None)
        if old is not None:
            old.cancel()
        loop = self._loop or _running_loop()
        if loop is None:
            return

        def run() -> None:
            self._deferred.pop(key, None)
            bucket.take()
            try:
                action()
            except Exception as exc:
                log.warning("the run panel failed on a deferred %s: %r", key, exc)

        self._deferred[key] = loop.call_later(bucket.wait_s() + 0.001, run)

    # cancelling ---------------------------------------------------------------------
    def _on_cancel(self, content: dict[str, Any]) -> None:
        run_id = content.get("run_id")
        if not isinstance(run_id, str) or len(run_id) > ID_CHARS:
            self._notice(f"ignored cancel of invalid run id {_short(run_id)}")
            return
        try:
            record = self._manager.request_cancel(run_id, reason="panel_cancel")
        except RunNotFoundError:
            self._notice(f"no run with id {_short(run_id)} in this kernel; nothing cancelled")
            return
        if record.status.is_terminal:
            self._notice(f"run {run_id} already {record.status.value}", level="info")

    def _on_cancel_matching_prepare(self, content: dict[str, Any]) -> None:
        if not self._action_bucket.take():
            raise _Refused("too many requests; try again in a moment")
        self._catch_up()
        ids = self._table.live_matching_ids(self._view)
        token = secrets.token_hex(8)
        self._cancel_offer = (token, ids, self._clock() + CANCEL_OFFER_S)
        if not ids:
            self._notice("no live runs match the current filters", level="info")
        self._send_message({"type": "cancel_offer", "token": token, "count": len(ids),
                            "sample": ids[:5], "view": self._view.to_message()})

    def _on_cancel_matching(self, content: dict[str, Any]) -> None:
        offer, self._cancel_offer = self._cancel_offer, None
        token = content.get("token")
        if offer is None or token != offer[0] or self._clock() > offer[2]:
            self._notice("this Cancel all confirmation is no longer valid; nothing was "
                         "cancelled. Click Cancel all again.")
            return
        requested = finished = 0
        for run_id in offer[1]:
            try:
                record = self._manager.request_cancel(run_id, reason="panel_cancel_all")
            except RunNotFoundError:
                finished += 1
                continue
            if record.status.is_terminal:
                finished += 1
            else:
                requested += 1
        more = f"; {finished} had already finished" if finished else ""
        self._notice(f"cancel requested for {requested} run(s){more}", level="info", force=True)

    # detail -----------------------------------------------------------------------
    def _on_detail(self, content: dict[str, Any]) -> None:
        run_id = _run_id(content)
        search, levels = _log_query(content, "log_search", "log_levels")
        self._detail_run = run_id
        self._detail_query = {"log_offset": None, "search": search, "levels": levels,
                              "steps_offset": None}
        self._detail_request("detail", lambda: self._start_detail(run_id))

    def _on_detail_close(self, content: dict[str, Any]) -> None:
        self._detail_run = None
        self._cancel_detail()

    def _on_logs(self, content: dict[str, Any]) -> None:
        run_id = _run_id(content)
        if run_id != self._detail_run:
            raise _Refused(f"run {run_id} is not the open detail; open it first")
        offset = _offset(content)
        search, levels = _log_query(content, "search", "levels")
        self._detail_query.update(log_offset=offset, search=search, levels=levels)
        self._detail_request("logs", lambda: self._spawn(self._send_logs(run_id), "ag-panel-logs"))

    def _on_steps(self, content: dict[str, Any]) -> None:
        run_id = _run_id(content)
        if run_id != self._detail_run:
            raise _Refused(f"run {run_id} is not the open detail; open it first")
        self._detail_query["steps_offset"] = _offset(content)
        self._detail_request("steps",
                             lambda: self._spawn(self._send_steps(run_id), "ag-panel-steps"))

    def _detail_request(self, key: str, action: Callable[[], Any]) -> None:
        # Over the limit, the latest request of each kind waits for a token.
        if self._detail_bucket.take():
            action()
        else:
            self._defer(key, self._detail_bucket, action)

    def _start_detail(self, run_id: str) -> None:
        if run_id != self._detail_run:
            return  # closed or replaced meanwhile
        if self._detail_task is not None and not self._detail_task.done():
            self._detail_task.cancel()
        self._detail_task = self._spawn(self._send_detail(run_id), "ag-panel-detail")

    def _cancel_detail(self) -> None:
        if self._detail_task is not None and not self._detail_task.done():
            self._detail_task.cancel()
        self._detail_task = None
        if self._detail_timer is not None:
            self._detail_timer.cancel()
            self._detail_timer = None

    def _schedule_detail_refresh(self, delay_s: float) -> None:
        loop = self._loop or _running_loop()
        if loop is None or self._detail_run is None or self._detail_timer is not None:
            return
        wait = max(delay_s, self._detail_sent_at + DETAIL_REFRESH_S - self._clock())
        run_id = self._detail_run

        def refresh() -> None:
            self._detail_timer = None
            if self._detail_task is None or self._detail_task.done():
                self._start_detail(run_id)

        self._detail_timer = loop.call_later(wait, refresh)

    async def read_detail(self, run_id: str) -> dict[str, Any]:
        """The ``detail`` message for ``run_id`` as the panel would send it now (see
        :class:`~ag_jupyter.widgets.detail.RunDetailReader`).

        Raises:
          RunNotFoundError: if no run has this id.
        """
        self._catch_up()
        query = self._detail_query if run_id == self._detail_run else {}
        return await self._reader.detail(run_id, query)

    async def _send_detail(self, run_id: str) -> None:
        try:
            message = await self.read_detail(run_id)
        except RunNotFoundError:
            if run_id == self._detail_run:
                self._detail_run = None
                self._notice(f"no run with id {_short(run_id)}; nothing to show")
            return
        if run_id != self._detail_run or self.comm is None:
            return  # closed or replaced while reading
        self._detail_sent_at = self._clock()
        self._send_message(message)
        status = message["record"]["status"]
        if status not in ("succeeded", "failed", "canceled"):
            self._schedule_detail_refresh(DETAIL_LIVE_REFRESH_S)

    async def _send_logs(self, run_id: str) -> None:
        page = await self._reader.logs(run_id, self._detail_query)
        if run_id == self._detail_run:
            self._send_message({"type": "logs", "run_id": run_id, "logs": page})

    async def _send_steps(self, run_id: str) -> None:
        steps = await self._reader.steps(run_id, self._detail_query.get("steps_offset"))
        if run_id == self._detail_run:
            self._send_message({"type": "steps", "run_id": run_id, "steps": steps})

    # retry ------------------------------------------------------------------------
    def _on_retry(self, content: dict[str, Any]) -> None:
        run_id = _run_id(content)
        if not self._action_bucket.take():
            raise _Refused("too many requests; try again in a moment")
        self._spawn(self._retry(run_id), f"ag-panel-retry:{run_id}")

    async def _retry(self, run_id: str) -> None:
        try:
            record = await self._manager.retry_run(run_id)
        except Exception as exc:
            self._notice(f"could not retry {run_id}: {type(exc).__name__}: {exc}", force=True)
            return
        self._notice(f"retrying {run_id} as {record.run_id}", level="info", force=True)
        self._send_message({"type": "retried", "run_id": run_id, "new_run_id": record.run_id})
        self._send_page(reset=False)

    # asks -------------------------------------------------------------------------
    def _on_answer(self, content: dict[str, Any]) -> None:
        raw_id = content.get("ask_id")
        ask_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= ID_CHARS else None
        try:
            ask_id, value = check_answer(content)
        except ValueError as exc:
            self._notice(f"ignored a bad answer: {exc}", ask_id=ask_id)
            return
        if not self._answer_bucket.take():
            self._notice("too many answers at once; try again in a moment", ask_id=ask_id)
            return
        self._spawn(self._answer(ask_id, value), f"ag-panel-answer:{ask_id}")

    async def _answer(self, ask_id: str, value: Any) -> None:
        try:
            await self._manager.answer(ask_id, value)
        except (AskError, LookupError, ValueError, TypeError) as exc:
            # unknown, answered, timed out or canceled asks; a choice that is no option;
            # files over the runtime's caps
            self._notice(f"could not answer {ask_id}: {exc}", force=True, ask_id=ask_id)
            return
        except Exception as exc:  # a closed-ask error of another kind, or a failure
            log.debug("answering ask %s failed: %r", ask_id, exc)
            self._notice(f"could not answer {ask_id}: {type(exc).__name__}: {exc}",
                         force=True, ask_id=ask_id)
            return
        self._send_message({"type": "answered", "ask_id": ask_id})
        self._send_page(reset=False)

    # downloads --------------------------------------------------------------------
    def _on_download(self, content: dict[str, Any]) -> None:
        run_id = _run_id(content)
        artifact_id = _run_id(content, "artifact_id")
        if self._downloading:
            raise _Refused("a download is already on its way; wait for it")
        if not self._action_bucket.take():
            raise _Refused("too many requests; try again in a moment")
        self._downloading = True
        self._spawn(self._download(run_id, artifact_id), "ag-panel-download")

    async def _download(self, run_id: str, artifact_id: str) -> None:
        try:
            message, data = await self._reader.download(run_id, artifact_id)
        except Exception as exc:
            self._notice(f"could not download: {type(exc).__name__}: {exc}")
            return
        finally:
            self._downloading = False
        self._send_message(message, buffers=[data])

    _ACTIONS: ClassVar[dict[str, Callable[[RunPanel, dict[str, Any]], None]]] = {
        "hello": _on_hello,
        "view": _on_view,
        "cancel": _on_cancel,
        "cancel_matching_prepare": _on_cancel_matching_prepare,
        "cancel_matching": _on_cancel_matching,
        "detail": _on_detail,
        "detail_close": _on_detail_close,
        "logs": _on_logs,
        "steps": _on_steps,
        "retry": _on_retry,
        "answer": _on_answer,
        "download": _on_download,
    }

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        loop = self._loop or _running_loop()
        if loop is None:
            coro.close()
            return None
        task = loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.warning("run panel task %s failed: %r", task.get_name(), exc)
            self._notice(f"the panel failed: {type(exc).__name__}: {exc}")

    # -------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            records = [r for r in self.records() if self._view.matches(r)]
            asks = self.open_asks() or []
            data["text/plain"] = text_table(records, asks=asks)
            data["text/html"] = html_table(records, title=self.title, asks=asks)
        return bundle

    def display(self) -> Any:
        """Display the panel with a display id (returned), so its text/html and text/plain
        snapshots can be refreshed once the stored history is read."""
        from IPython.display import display

        self._display_handle = display(self, display_id=True)
        return self._display_handle

    def close(self) -> None:
        """Stop watching the manager and close the widget model."""
        watch = getattr(self, "_watch", None)  # None if __init__ raised
        if watch is not None:
            watch.close()
        task = getattr(self, "_history_task", None)
        if task is not None:
            task.cancel()
        for handle in list(getattr(self, "_deferred", {}).values()):
            handle.cancel()
        if hasattr(self, "_detail_task"):
            self._cancel_detail()
        for pending in list(getattr(self, "_tasks", ())):
            pending.cancel()
        _panels.discard(self)
        with contextlib.suppress(Exception):
            super().close()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
