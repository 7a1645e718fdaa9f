"""The current run: which run (or ad-hoc session) the running code belongs to.

It travels in a :mod:`contextvars` variable, so it follows the code that runs for a run
wherever it goes: the run's task, tasks the body creates (``asyncio`` copies the context),
the worker thread of a sync body (the manager starts it in a copy of the context) and
``asyncio.to_thread`` calls. ``@tool`` (steps), ``Service.ctx()``, nested graph calls
(child runs) and the ``print()`` routing (:mod:`.output_capture`) read it.

- A graph body's run: set by the RunManager when the body starts
  (:func:`enter_run`; the context is built lazily when first asked for).
- An ad-hoc session: set for the body of ``async with open_session(...)``
  (:func:`enter_session` / :func:`leave`), so tools and services see the session's context;
  a session is not a run, so output of its code is never rerouted.

This module imports nothing else from the runtime, so every layer may use it.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from typing import Any

from . import output_capture

__all__ = [
    "RunScope",
    "current_context",
    "current_scope",
    "enter_run",
    "enter_session",
    "leave",
]

_RUNS_LOGGER = logging.getLogger("ag_jupyter.runs")
# Guards the unfinished output lines of every run (writes are rare; one lock is enough).
_output_lock = threading.Lock()


def _last_drawn(text: str) -> str:
    """What a terminal would show of ``text`` after its carriage returns (``\r``)."""
    if "\r" not in text:
        return text
    for segment in reversed(text.split("\r")):
        if segment:
            return segment
    return ""


class RunScope:
    """What the current-run variable holds: a manager plus a live run (graph body) or a
    context (ad-hoc session).

    Attributes:
      manager: the RunManager the run (or session) belongs to.
      live: the manager's ``LiveRun`` of a graph body, None for a session.
    """

    __slots__ = ("_context", "_partial", "live", "manager")

    def __init__(self, manager: Any, live: Any = None, context: Any = None) -> None:
        self.manager = manager
        self.live = live
        self._context = context
        self._partial: dict[str, str] | None = None  # unfinished output lines, by stream

    @property
    def is_run(self) -> bool:
        """True for a graph body's run, False for an ad-hoc session."""
        return self.live is not None

    @property
    def run_id(self) -> str:
        """The run id (a session's own id for a session)."""
        if self.live is not None:
            return str(self.live.record.run_id)
        return str(self._context.run_id)

    def context(self) -> Any:
        """The ``NodeContext`` of this run or session (built on first use for a run whose
        body takes no context parameter; the same object afterwards)."""
        ctx = self._context
        if ctx is None:
            ctx = self._context = self.manager.make_context(self.live)
        return ctx

    def services(self) -> Any:
        """The service hub of this run or session (without building a run's context)."""
        ctx = self._context
        return ctx.services if ctx is not None else self.manager.services

    # ------------------------------------------------------------ output routing
    def write_output(self, stream: str, text: str) -> None:
        """Keep ``text`` written to ``stream`` (``"stdout"``/``"stderr"``) by this run's
        code as lines of its log: complete lines at once; a ``\\r`` (a progress bar
        redrawing itself) replaces the unfinished line; the rest waits for a newline or
        :meth:`flush_output`."""
        if not text:
            return
        with _output_lock:
            partial = self._partial
            if partial is None:
                partial = self._partial = {}
            buffered = partial.get(stream, "") + text
            *lines, rest = buffered.split("\n")
            if "\r" in rest:  # keep the last drawing, and whether it is to be redrawn
                rest = _last_drawn(rest) + ("\r" if rest.endswith("\r") else "")
            partial[stream] = rest
        for line in lines:
            self._log_line(stream, _last_drawn(line))

    def flush_output(self) -> None:
        """Log what is left of unfinished lines (at the end of the body, or on flush())."""
        with _output_lock:
            partial, self._partial = self._partial, None
        for stream, rest in (partial or {}).items():
            if rest:
                self._log_line(stream, _last_drawn(rest))

    def _log_line(self, stream: str, line: str) -> None:
        services = getattr(self.manager, "services", None)
        buffer = getattr(services, "log_buffer", None)
        if buffer is None:
            return
        level = logging.INFO if stream == "stdout" else logging.WARNING
        record = self.live.record if self.live is not None else None
        extra = {
            "run_id": self.run_id,
            "graph_id": getattr(record, "graph_id", None),
            "session_id": getattr(record, "session_id", None),
            "stream": stream,
        }
        log_record = _RUNS_LOGGER.makeRecord(
            _RUNS_LOGGER.name, level, "(print)", 0, line, None, None, extra=extra
        )
        log_record.created = time.time()
        try:
            buffer.handle(log_record)
            if _RUNS_LOGGER.isEnabledFor(level):
                _RUNS_LOGGER.handle(log_record)
        except Exception:  # routing output must never break the run
            pass


_CURRENT: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
    "ag_jupyter_current_run", default=None
)


def _routing_scope() -> RunScope | None:
    scope = _CURRENT.get()
    return scope if scope is not None and scope.live is not None else None


def enter_run(manager: Any, live: Any, context: Any = None) -> RunScope:
    """Mark the running task (and what it starts) as running ``live``'s body; called by
    the RunManager where a body starts, in the run's own task (so it never leaks into the
    caller). Also makes sure ``print()`` of run code is routed to run logs."""
    scope = RunScope(manager, live, context)
    _CURRENT.set(scope)
    output_capture.ensure_installed(_routing_scope)
    return scope


def enter_session(context: Any) -> contextvars.Token[RunScope | None]:
    """Make ``context`` (an ad-hoc session's) current until :func:`leave`; returns the
    token to leave with."""
    return _CURRENT.set(RunScope(context.manager, None, context))


def leave(token: contextvars.Token[RunScope | None]) -> None:
    """Undo :func:`enter_session` (nothing if the token belongs to another context, as when
    a session is closed from another task)."""
    try:
        _CURRENT.reset(token)
    except ValueError:
        pass


def current_scope() -> RunScope | None:
    """The current run or session, or None outside both."""
    return _CURRENT.get()


def current_context() -> Any:
    """The ``NodeContext`` of the current run or session, or None outside both."""
    scope = _CURRENT.get()
    return None if scope is None else scope.context()
