"""The live run panel: an anywidget model fed by the RunManager's event subscription.

Python keeps the state and coalesces changes; the front end (``js/run_panel.js``, an ES
module shipped as package data) renders them. Protocol (custom messages):

- kernel -> browser: ``{"type": "rows", "reset": bool, "upsert": [row...], "remove": [id...],
  "server_time": epoch_s}`` at most once per ``refresh_s`` seconds, carrying only rows that
  changed since the last message; ``{"type": "notice", "level": "info"|"error", "text"}``.
- browser -> kernel: ``{"type": "hello"}`` (a view rendered: answered with a full reset),
  ``{"type": "cancel", "run_id"}``, ``{"type": "cancel_many", "run_ids": [...]}``. Anything
  else, and unknown run ids, get an error notice and change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from ..runtime import RunEvent, RunManager, RunNotFoundError, RunRecord, RunStatus
from .snapshot import html_table, text_table

log = logging.getLogger("ag_jupyter.widgets")

MAX_IDS_PER_MESSAGE = 10_000
KNOWN_ACTIONS = ("hello", "cancel", "cancel_many")


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
    }


_panels: weakref.WeakSet[RunPanel] = weakref.WeakSet()


def close_all_panels() -> None:
    """Close every open panel (used by ``%unload_ext``)."""
    for panel in list(_panels):
        panel.close()


class RunPanel(anywidget.AnyWidget):
    """A live table of a RunManager's runs with Cancel buttons.

    Display it with ``display(panel)`` or ``%ag_runs``. Updates are coalesced: at most one
    message per ``refresh_s`` seconds, whatever the number of runs, with only changed
    rows. Cancel clicks call ``RunManager.cancel_run`` (through ``request_cancel``); they
    are handled while the kernel is idle or awaiting, not during a blocking sync cell.

    Args:
      manager: the RunManager to watch (one panel model per call).
      refresh_s: seconds between update messages (> 0).
      status: only show runs with this status (or ``"live"``); None for all.
      session: only show runs of this session id; None for all.
      title: the header text.

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
        **kwargs: Any,
    ) -> None:
        if not refresh_s > 0:
            raise ValueError(f"refresh_s must be a positive number of seconds, got {refresh_s!r}")
        super().__init__(title=title, **kwargs)
        self._manager = manager
        self._refresh_s = float(refresh_s)
        self._statuses = _statuses(status)
        self._session = session
        self._dirty: dict[str, RunRecord] = {}
        self._sent: set[str] = set()
        self._last_send = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._loop = manager.loop
        self.messages_sent = 0
        self._unsubscribe = manager.subscribe(self._on_event)
        self.on_msg(self._on_frontend_msg)
        _panels.add(self)

    @classmethod
    def for_manager(cls, manager: RunManager, **kwargs: Any) -> RunPanel:
        """A new panel on ``manager`` (see the class arguments)."""
        return cls(manager, **kwargs)

    # ------------------------------------------------------------ what is shown
    def _matches(self, record: RunRecord) -> bool:
        if self._statuses is not None and record.status not in self._statuses:
            return False
        return self._session is None or record.session_id == self._session

    def records(self) -> list[RunRecord]:
        """The records the panel shows now (the manager's recent ones, filtered)."""
        return [r for r in self._manager.recent_records() if self._matches(r)]

    # ------------------------------------------------------------- kernel side
    def _on_event(self, event: RunEvent) -> None:
        self._dirty[event.record.run_id] = event.record
        if self._flush_handle is None:
            loop = self._loop or self._manager.loop or _running_loop()
            if loop is None:
                return
            self._loop = loop
            delay = max(0.0, self._last_send + self._refresh_s - time.monotonic())
            self._flush_handle = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._dirty or self.comm is None:
            self._dirty.clear()
            return
        dirty, self._dirty = self._dirty, {}
        upsert, remove = [], []
        for run_id, record in dirty.items():
            if self._matches(record):
                upsert.append(record_to_row(record))
                self._sent.add(run_id)
            elif run_id in self._sent:
                remove.append(run_id)
                self._sent.discard(run_id)
        if upsert or remove:
            self._send_rows(upsert, remove, reset=False)

    def _send_rows(self, upsert: list[dict[str, Any]], remove: list[str], *, reset: bool) -> None:
        self._last_send = time.monotonic()
        message = {
            "type": "rows",
            "reset": reset,
            "upsert": upsert,
            "remove": remove,
            "server_time": time.time(),
        }
        self.messages_sent += 1
        self.send(message)

    def send_snapshot(self) -> None:
        """Send every shown row as one ``reset`` message (answer to a view's hello)."""
        records = self.records()
        self._sent = {r.run_id for r in records}
        self._dirty.clear()
        self._send_rows([record_to_row(r) for r in records], [], reset=True)

    def _notice(self, text: str, level: str = "error") -> None:
        self.send({"type": "notice", "level": level, "text": text})

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
        action = content["type"]
        if action == "hello":
            self.send_snapshot()
            return
        if action == "cancel":
            run_ids: Iterable[Any] = [content.get("run_id")]
        else:
            run_ids = content.get("run_ids")
            if not isinstance(run_ids, list) or len(run_ids) > MAX_IDS_PER_MESSAGE:
                self._notice("cancel_many needs a list of run ids")
                return
        self._cancel([rid for rid in run_ids])

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
            records = self.records()
            data["text/plain"] = text_table(records)
            data["text/html"] = html_table(records, title=self.title)
        return bundle

    def close(self) -> None:
        """Stop watching the manager and close the widget model."""
        self._unsubscribe()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        _panels.discard(self)
        with contextlib.suppress(Exception):
            super().close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _statuses(status: str | None) -> set[RunStatus] | None:
    if status is None:
        return None
    if status == "live":
        return {s for s in RunStatus if not s.is_terminal}
    try:
        return {RunStatus(status)}
    except ValueError:
        raise ValueError(
            f"unknown status {status!r}; use 'live' or one of: {', '.join(RunStatus)}"
        ) from None
