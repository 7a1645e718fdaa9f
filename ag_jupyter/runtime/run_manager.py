"""The RunManager: queues, runs, cancels and tracks graph runs on one asyncio loop.

Behaviour follows AetherGraph's run API (``submit_run`` / ``wait_run`` / ``run_and_wait`` /
``cancel_run``) and ``../shared/DESIGN.md`` section 2: FIFO queueing under
``max_concurrency`` (and per-session limits nested inside it), ``count_slot=False`` runs that
bypass the limits, real task cancellation for async graphs and a cooperative flag for sync
graphs (which run in worker threads). Which manager a loop uses, and what it is built on,
is decided in ``runtime/defaults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import traceback
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from . import current
from .errors import DuplicateRunIdError, RunNotFoundError, WorkspaceError
from .executors import LOCAL_EXECUTOR, choose_executor
from .graphs import GraphRegistry, GraphSpec, default_registry
from .models import (
    TERMINAL_STATUSES,
    RunImportance,
    RunOrigin,
    RunRecord,
    RunStatus,
    RunVisibility,
    utc_now,
)
from .services.channel.asks import Ask, AskBook
from .store.codecs import check_identifier, check_tags
from .store.run_store import InMemoryRunStore, RunStore, check_paging, status_set
from .store.sqlite_store import clip_traceback

log = logging.getLogger("ag_jupyter.runtime")

DEFAULT_MAX_CONCURRENCY = 8
RECENT_RECORDS = 10_000
#: Seconds between repeated cancellations of an async body that swallows CancelledError.
RECANCEL_EVERY_S = 0.1
#: Seconds during which a store fault with the same message is not warned about again,
#: although it cleared in between (a nearly full disk: a fold frees pages, a commit lands,
#: the next one fails again).
FAULT_WARN_REPEAT_S = 60.0
#: Seconds a swallowing body is cancelled again before it is left running (and marked).
DEFAULT_CANCEL_TIMEOUT_S = 5.0


class RunEvent(NamedTuple):
    """What a :meth:`RunManager.subscribe` callback receives.

    ``kind`` is ``"created"`` for a new run and ``"changed"`` for any later change;
    ``record`` is the run's new (frozen) record.
    """

    kind: Literal["created", "changed"]
    record: RunRecord


RunEventCallback = Callable[[RunEvent], None]
# RunEvent(kind, record) goes through a Python-level __new__; this is the same tuple, built
# in C (three events per run reach every subscriber).
_new_event = functools.partial(tuple.__new__, RunEvent)


@dataclass(eq=False, slots=True)
class RunWatch:
    """What :meth:`RunManager.watch` returns: changes pile up in ``pending`` and are
    delivered by one timer at a time. ``take()`` pulls them now; ``close()`` stops."""

    callback: Callable[[dict[str, RunRecord]], None]
    interval_s: float
    manager: RunManager | None = None
    leading: bool = True
    pending: dict[str, RunRecord] = field(default_factory=dict)
    handle: asyncio.Handle | None = None
    last: float = float("-inf")
    closed: bool = False

    def _schedule(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is None or self.closed:
            return
        delay = (
            self.last + self.interval_s - loop.time() if self.leading else self.interval_s
        )
        self.handle = (
            loop.call_later(delay, self._deliver) if delay > 0 else loop.call_soon(self._deliver)
        )

    def _deliver(self) -> None:
        self.handle = None
        if self.closed or not self.pending:
            return
        changes, self.pending = self.pending, {}
        self.last = asyncio.get_running_loop().time()
        try:
            self.callback(changes)
        except Exception:
            log.exception("run watcher %r failed", self.callback)

    def take(self) -> dict[str, RunRecord]:
        """The changes not delivered yet (``{run_id: latest record}``), now; they will not
        be delivered again. For a UI that must answer a request with current data."""
        changes, self.pending = self.pending, {}
        return changes

    def close(self) -> None:
        """Stop watching (idempotent); pending changes are dropped."""
        self.closed = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.pending = {}
        if self.manager is not None:
            self.manager._watchers = tuple(w for w in self.manager._watchers if w is not self)


@dataclass(eq=False, slots=True)
class LiveRun:
    """A run that has not finished yet: its record plus what is needed to run/stop it."""

    record: RunRecord
    spec: GraphSpec
    inputs: dict[str, Any]
    count_slot: bool
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    waiters: asyncio.Future[RunRecord] | None = None
    limiter: SessionLimiter | None = None
    holds_session_slot: bool = False
    recancel: asyncio.TimerHandle | None = None
    # Waiting on a person (channel asks): the slots were given back (see _begin_wait);
    # ``resume`` is set while an answered run queues for them again.
    slot_lent: bool = False
    resume: asyncio.Future[None] | None = None
    executor: Any = None  # where the body runs (executors/); None: local


@dataclass(eq=False, slots=True)
class SessionLimiter:
    """A session's own concurrency limit, nested inside the manager's global one (in the
    spirit of trio's ``CapacityLimiter``): a slot-counted run of the session holds one of
    its ``limit`` slots from the moment it may queue for a global slot until it ends.
    Runs over the limit wait in ``waiting`` (FIFO), without blocking other sessions.
    A run waiting on a person gives its slot back (``lent`` counts those) and, once
    answered, queues in ``resuming``, served before ``waiting``."""

    session_id: str
    limit: int
    active: int = 0
    waiting: deque[LiveRun] = field(default_factory=deque)
    users: int = 0  # open sessions using this limit; dropped at 0 once idle
    resuming: deque[LiveRun] = field(default_factory=deque)
    lent: int = 0


def check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    """Raise ValueError unless ``value`` is a positive number (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _error_text(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception as str_exc:  # a broken __str__ must not lose the failure
        message = f"<str() failed: {type(str_exc).__name__}>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _keep_traceback(meta: dict[str, Any], exc: BaseException) -> None:
    """Put ``exc``'s traceback text in ``meta`` (cut, and marked, if huge): the text of
    where the body raised it (``exc.ag_traceback``, set by an executor that ran the body in
    another process), else its own."""
    text = getattr(exc, "ag_traceback", None)
    try:
        if not isinstance(text, str):
            text = "".join(traceback.format_exception(exc))
    except Exception as fmt_exc:
        text = f"<traceback could not be formatted: {fmt_exc!r}>"
    text, clipped = clip_traceback(text)
    meta["traceback"] = text
    if clipped:
        meta["traceback_truncated"] = True


class RunManager:
    """Runs registered graphs as tracked runs on one asyncio event loop.

    Create it inside a running loop (or let :func:`get_run_manager` do it); every method
    must be called on that loop's thread. Sync graph bodies run in daemon worker threads,
    async ones as tasks on the loop, so a cell awaiting something else never blocks them.

    Args:
      max_concurrency: runs (with ``count_slot=True``) allowed to execute at once; the rest
        wait as ``pending`` in FIFO order. Default 8.
      store: where records and outputs live (default: a new :class:`InMemoryRunStore`).
      registry: where graph ids are looked up (default: the process-wide registry).
      services: the service hub every run's ``NodeContext`` reaches services through
        (default: a new hub with the embedded defaults).
      cancel_timeout_s: seconds an async body that swallows ``CancelledError`` is
        cancelled again (every 0.1 s) before it is left running and marked
        ``meta["cancel_ignored"]`` (default 5).

    Raises:
      ValueError: if ``max_concurrency`` is not a positive int.
    """

    def __init__(
        self,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        store: RunStore | None = None,
        registry: GraphRegistry | None = None,
        services: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        cancel_timeout_s: float = DEFAULT_CANCEL_TIMEOUT_S,
        max_concurrent_runs: int | None = None,
    ) -> None:
        if max_concurrent_runs is not None:  # AetherGraph's name for the same limit
            max_concurrency = max_concurrent_runs
        self.check_concurrency(max_concurrency)
        check_positive("cancel_timeout_s", cancel_timeout_s, allow_none=False)
        self._max_concurrency = max_concurrency
        self.cancel_timeout_s = float(cancel_timeout_s)
        self.store: RunStore = store if store is not None else InMemoryRunStore()
        self.registry = registry if registry is not None else default_registry
        if services is None:
            from .services import ServiceHub

            services = ServiceHub()
        self.services = services
        self._loop = loop
        self._live: dict[str, LiveRun] = {}
        self._queue: deque[LiveRun] = deque()
        # Answered runs waiting for a global slot again: served before _queue.
        self._resume: deque[LiveRun] = deque()
        self._active = 0
        self._subscribers: tuple[RunEventCallback, ...] = ()
        self._watchers: tuple[RunWatch, ...] = ()
        self._closed = False
        self._limiters: dict[str, SessionLimiter] = {}
        # Finished records this process saw, for sync readers (magics, panel snapshots).
        # A dict for O(1) lookups and a deque of ids for the eviction order: together
        # half the bytes per run of an OrderedDict.
        self._recent: dict[str, RunRecord] = {}
        self._recent_order: deque[str] = deque()
        self._background: set[asyncio.Task[None]] = set()
        self._warned_fault: tuple[int, str, float] = (0, "", float("-inf"))
        self._closers: list[Callable[[], Any]] = []
        #: The open channel asks of this manager's runs and their transcripts.
        self.asks = AskBook(self)

    # ----------------------------------------------------------------- properties
    @staticmethod
    def check_concurrency(value: int, name: str = "max_concurrency") -> None:
        """Raise ValueError unless ``value`` is a positive int (a concurrency limit)."""
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind this manager to ``loop`` before its first run (``get_run_manager`` does).

        Raises:
          RuntimeError: if it is already bound to another loop.
        """
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError("this RunManager is already bound to another event loop")
        self._loop = loop

    @property
    def max_concurrency(self) -> int:
        """Slot-counted runs allowed at once. Raising it starts queued runs at once."""
        return self._max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int) -> None:
        self.check_concurrency(value)
        self._max_concurrency = value
        if self._loop is not None:
            self._start_queued()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop this manager runs on (bound at the first submit)."""
        return self._loop

    @property
    def active_count(self) -> int:
        """Slot-counted runs executing now."""
        return self._active

    @property
    def pending_count(self) -> int:
        """Runs queued for a slot."""
        return sum(1 for live in self._live.values() if live.record.status is RunStatus.pending)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def __repr__(self) -> str:
        """One line with the runs in memory counted by status, e.g. ``<RunManager running=2
        pending=1 succeeded=10 failed=1 max_concurrency=8>`` (``closed`` first once closed).

        Counts come from :meth:`recent_records` (live runs and the last ``RECENT_RECORDS``
        finished ones); the store is never read.
        """
        counts = Counter(live.record.status for live in self._live.values())
        counts.update(r.status for rid, r in self._recent.items() if rid not in self._live)
        parts = ["<RunManager", *(["closed"] if self._closed else [])]
        parts += [f"{status.value}={counts[status]}" for status in RunStatus if counts[status]]
        if not counts:
            parts.append("no runs")
        return " ".join([*parts, f"max_concurrency={self._max_concurrency}"]) + ">"

    def live_records(self) -> list[RunRecord]:
        """Records of runs not yet terminal, oldest first (sync; no store access)."""
        return [live.record for live in self._live.values()]

    def recent_records(self) -> list[RunRecord]:
        """Records this manager ran, oldest first: the last ``RECENT_RECORDS`` finished ones
        and every live one. Sync and store-free, for UIs; use :meth:`list_records` for
        history from the store (earlier kernels included).
        """
        finished = dict(self._recent)
        for live in self._live.values():
            finished.pop(live.record.run_id, None)
        return sorted(
            [*finished.values(), *self.live_records()], key=lambda r: r.created_at
        )

    def find_record(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id`` if this manager has it in memory (live or recent); O(1)."""
        live = self._live.get(run_id)
        if live is not None:
            return live.record
        return self._recent.get(run_id)

    def _remember(self, record: RunRecord) -> None:
        recent = self._recent
        if record.run_id not in recent:
            self._recent_order.append(record.run_id)
        recent[record.run_id] = record
        if len(self._recent_order) > RECENT_RECORDS:
            recent.pop(self._recent_order.popleft(), None)

    # -------------------------------------------------------------- subscription
    def subscribe(self, callback: RunEventCallback) -> Callable[[], None]:
        """Call ``callback(RunEvent)`` on the loop thread after every record change.

        Use it to drive a UI without polling. Callbacks must be quick and must not block; an
        exception in one is logged and never reaches the run or other subscribers.
        Returns a function that unsubscribes (idempotent).
        """
        # A tuple replaced on change: _emit iterates it without copying, and a callback
        # may unsubscribe while being called.
        self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            subscribers = list(self._subscribers)
            with contextlib.suppress(ValueError):
                subscribers.remove(callback)
            self._subscribers = tuple(subscribers)

        return unsubscribe

    def watch(
        self,
        callback: Callable[[dict[str, RunRecord]], None],
        *,
        interval_s: float = 0.1,
        leading: bool = True,
    ) -> RunWatch:
        """Call ``callback(changes)`` at most once per ``interval_s`` seconds with the latest
        record of every run that changed since the previous call (``{run_id: record}``,
        in order of first change).

        The coalescing form of :meth:`subscribe`, for UIs: the manager stores each change
        in the watcher's dict (no Python call per change), so a watcher costs almost
        nothing per run however busy the runs are. With ``leading`` (the default) the first
        change after a quiet period is delivered at once (on the next loop iteration);
        without, every change waits ``interval_s`` seconds, so a burst of runs is first
        delivered ``interval_s`` after it starts. Callbacks run on the loop thread and must
        not block. Returns a :class:`RunWatch`: ``close()`` stops watching, ``take()`` pulls
        the changes not delivered yet.

        Raises:
          ValueError: if ``interval_s`` is not a positive number.
        """
        check_positive("interval_s", interval_s, allow_none=False)
        watcher = RunWatch(callback, float(interval_s), self, leading=bool(leading))
        self._watchers = (*self._watchers, watcher)
        return watcher

    def _emit(self, kind: Literal["created", "changed"], record: RunRecord) -> None:
        for watcher in self._watchers:
            watcher.pending[record.run_id] = record
            if watcher.handle is None:
                watcher._schedule(self._loop)
        if not self._subscribers:
            return
        event = _new_event((kind, record))
        for callback in self._subscribers:
            try:
                callback(event)
            except Exception:
                log.exception("run event subscriber %r failed", callback)

    # ----------------------------------------------------------------- submitting
    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise RuntimeError(
                "this RunManager belongs to another event loop; call get_run_manager() from "
                "the loop you are on to get that loop's manager"
            )
        if self._closed:
            raise RuntimeError("this RunManager is closed; use get_run_manager() for a new one")
        return loop

    async def submit_run(
        self,
        graph_id: str,
        *,
        inputs: Mapping[str, Any] | None,
        run_id: str | None = None,
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: RunVisibility | str | None = None,
        origin: RunOrigin | str | None = None,
        importance: RunImportance | str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        parent_run_id: str | None = None,
        count_slot: bool = True,
        meta: Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Queue a run of ``graph_id`` and return its ``pending`` record.

        The record (with the run's inputs) is durable in the store before this returns, so
        a caller holding the run id finds the run after a crash (terminal, or failed
        "interrupted"). The run starts as soon as a slot is free (FIFO), and a slot of its
        session's own limit when the session has one (``open_session(max_concurrency=N)``);
        ``count_slot=False`` starts it at once, outside both limits. ``origin`` defaults to
        ``agent`` when ``agent_id`` is set, else ``app``. If the store cannot write (full
        disk...), the run still starts; the returned record says ``meta["durable"] is
        False`` and a ``RuntimeWarning`` names the cause once per fault (a cause that
        clears and comes back within ``FAULT_WARN_REPEAT_S`` seconds is not warned about
        again).

        Raises:
          GraphNotFoundError: if no graph is registered as ``graph_id``.
          RunInputError: if ``inputs`` do not match the graph's signature.
          DuplicateRunIdError: if an explicit ``run_id`` is already taken.
          TypeError: for ``tags`` given as a bare str (``tags=["urgent"]``, not
            ``"urgent"``) or an identifier that is not a str.
          ValueError: for an unknown visibility/origin/importance value, or an identifier
            (run id, graph id, session/agent/app/parent ids, tags) that is empty or holds
            NUL or a lone surrogate (the message names the field).
          RuntimeError: if called off the manager's loop or after :meth:`close`.
        """
        loop = self._bind_loop()
        check_identifier("graph_id", graph_id, allow_none=False)
        for name, value in (
            ("session_id", session_id),
            ("agent_id", agent_id),
            ("app_id", app_id),
            ("parent_run_id", parent_run_id),
        ):
            check_identifier(name, value)
        tag_list = check_tags(tags)
        spec = self.registry.get(graph_id)
        kwargs = spec.validate_inputs(inputs)
        if run_id is None:
            run_id = f"run-{uuid.uuid4().hex[:16]}"
        else:
            check_identifier("run_id", run_id, allow_none=False)
            if run_id in self._live or await self.store.exists(run_id):
                raise DuplicateRunIdError(
                    f"run id {run_id!r} is already used by another run; pass a new run_id "
                    "or leave it out to get a generated one"
                )
        record = RunRecord(
            run_id=run_id,
            graph_id=graph_id,
            tags=tag_list,
            session_id=session_id,
            parent_run_id=parent_run_id,
            origin=RunOrigin(origin) if origin is not None
            else (RunOrigin.agent if agent_id else RunOrigin.app),
            visibility=RunVisibility(visibility) if visibility is not None
            else RunVisibility.normal,
            importance=RunImportance(importance) if importance is not None
            else RunImportance.normal,
            agent_id=agent_id,
            app_id=app_id,
            meta=dict(meta) if meta else {},
        )
        live = LiveRun(
            record=record, spec=spec, inputs=kwargs, count_slot=count_slot,
            executor=choose_executor(self, spec, session_id, meta),
        )
        self._live[run_id] = live
        try:
            durable = await self._put(record, inputs=kwargs)
        except BaseException:
            # The caller was cancelled (a kernel interrupt) or its coroutine closed
            # (GeneratorExit: abandoned mid-await) while the record was being stored: it
            # never got the run id, so the run never starts. It ends canceled (in a task
            # of its own: the caller may be cancelled again) instead of staying pending
            # and live forever.
            self._emit("created", record)
            if live.record.status is RunStatus.pending:
                self._set(live, meta={**live.record.meta, "cancel_reason": "submit_cancelled"})
                self._background_task(
                    self._finish(live, outputs=None, error=None, cancelled=True),
                    f"ag-finish:{run_id}",
                )
            raise
        self._emit("created", record)
        if live.record.status is not RunStatus.pending:
            return live.record  # cancelled while its record was being stored
        if not count_slot:
            self._start(live, loop)
        else:
            limiter = self._limiters.get(session_id) if session_id is not None else None
            if limiter is None:
                self._queue.append(live)
                self._start_queued()
            else:
                live.limiter = limiter
                if limiter.active < limiter.limit:
                    limiter.active += 1
                    live.holds_session_slot = True
                    self._queue.append(live)
                    self._start_queued()
                else:
                    limiter.waiting.append(live)
        return live.record if durable else self._not_durable(live.record)

    async def _put(
        self,
        record: RunRecord,
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, Any] | None = None,
    ) -> bool:
        """Store ``record`` durably (``store.put``); False, and a warning once per fault,
        if the store cannot write (the record is kept and retried)."""
        try:
            await self.store.put(record, inputs=inputs, outputs=outputs)
        except WorkspaceError as exc:
            self._warn_fault(exc)
            return False
        return True

    def _warn_fault(self, exc: BaseException) -> None:
        serial = getattr(getattr(self.store, "workspace", None), "engine", None)
        serial = getattr(serial, "fault_serial", 0)
        text, now = str(exc), time.monotonic()
        last_serial, last_text, last_at = self._warned_fault
        if serial and serial == last_serial:
            return  # the same fault, still on
        if text == last_text and now - last_at < FAULT_WARN_REPEAT_S:
            self._warned_fault = (serial, text, last_at)
            return  # the same cause again, soon after it cleared: said already
        self._warned_fault = (serial, text, now)
        log.warning("run records are not on disk: %s", exc)
        warnings.warn(
            f"ag_jupyter: run records are not on disk ({exc}). Runs keep going; their "
            "records say meta['durable'] is False until a write succeeds again.",
            RuntimeWarning,
            stacklevel=3,
        )

    @staticmethod
    def _not_durable(record: RunRecord) -> RunRecord:
        return record.model_copy(update={"meta": {**record.meta, "durable": False}})

    def _with_durability(self, record: RunRecord) -> RunRecord:
        if self.store.is_durable(record.run_id):
            return record
        return self._not_durable(record)

    # ----------------------------------------------------------- session limits
    def set_session_limit(self, session_id: str, limit: int) -> None:
        """Limit ``session_id``'s slot-counted runs to ``limit`` at once, inside the global
        ``max_concurrency`` (a run needs a slot of both). Called by
        ``open_session(max_concurrency=N)``; each call must be paired with
        :meth:`release_session_limit`. Raising the limit starts waiting runs at once.

        Raises:
          ValueError: if ``limit`` is not a positive int.
        """
        self.check_concurrency(limit)
        check_identifier("session_id", session_id, allow_none=False)
        limiter = self._limiters.get(session_id)
        if limiter is None:
            limiter = self._limiters[session_id] = SessionLimiter(session_id, limit)
        limiter.limit = limit
        limiter.users += 1
        if self._loop is not None:
            self._admit(limiter)

    def release_session_limit(self, session_id: str) -> None:
        """Undo one :meth:`set_session_limit`. The limit keeps applying to the session's
        runs already submitted; it is dropped once the last of them ends."""
        limiter = self._limiters.get(session_id)
        if limiter is None:
            return
        limiter.users = max(0, limiter.users - 1)
        self._drop_limiter_if_idle(limiter)

    def session_limit(self, session_id: str) -> int | None:
        """The limit set for ``session_id``'s runs, or None."""
        limiter = self._limiters.get(session_id)
        return None if limiter is None else limiter.limit

    def _drop_limiter_if_idle(self, limiter: SessionLimiter) -> None:
        if (
            not limiter.users
            and not limiter.active
            and not limiter.waiting
            and not limiter.lent
            and not limiter.resuming
        ):
            if self._limiters.get(limiter.session_id) is limiter:
                del self._limiters[limiter.session_id]

    def _admit(self, limiter: SessionLimiter) -> None:
        """Move the session's waiting runs into the global queue while it has slots;
        answered runs (``resuming``) first, then never-started ones."""
        moved = False
        if limiter.resuming:
            moved = self._admit_resuming(limiter)
        while limiter.waiting and limiter.active < limiter.limit:
            live = limiter.waiting.popleft()
            if live.record.status is not RunStatus.pending:
                continue  # canceled while waiting
            limiter.active += 1
            live.holds_session_slot = True
            self._queue.append(live)
            moved = True
        if moved:
            self._start_queued()

    def _release_session_slot(self, live: LiveRun) -> None:
        limiter = live.limiter
        if limiter is None or not live.holds_session_slot:
            return
        live.holds_session_slot = False
        limiter.active -= 1
        self._admit(limiter)
        self._drop_limiter_if_idle(limiter)

    # ------------------------------------------------- waiting on a person (asks)
    # A run that asks (context.channel().ask_*) is ``waiting`` and gives its slots back
    # (the global one and its session's); once its last open ask closes it queues for
    # them again ahead of never-started runs (``_resume``, ``limiter.resuming``), still
    # ``waiting`` (with ``meta["answered_at"]``), and goes on ``running``. It is never
    # ``pending`` again: cancel_run treats a pending run as one that never started.

    async def _begin_wait(self, live: LiveRun, ask_id: str) -> None:
        """``live`` asks ``ask_id``: list it in ``meta["asks"]``, make the run ``waiting``
        and give its slots back (its first open ask only). Called by the channel."""
        if self._live.get(live.record.run_id) is not live or live.record.status.is_terminal:
            return
        meta = dict(live.record.meta)
        meta["asks"] = [*meta.get("asks", ()), ask_id]
        meta.pop("answered_at", None)
        changes: dict[str, Any] = {"meta": meta}
        if live.record.status is RunStatus.running:
            changes["status"] = RunStatus.waiting
        record = self._set(live, **changes)
        self._lend_slots(live)
        self._emit("changed", record)
        await self.store.update(record)

    def _ask_closed(self, live: LiveRun, ask_id: str, *, answered: bool) -> None:
        """``ask_id`` of ``live`` closed (``answered``, timed out or canceled), now: drop
        it from ``meta["asks"]``; when none is left, queue the run for its slots at once
        (so it is ahead of any never-started run from this moment), ``waiting`` with
        ``meta["answered_at"]`` until it has them, else ``running``. A run being
        canceled takes nothing back. Called by the channel when the ask closes."""
        if self._live.get(live.record.run_id) is not live or live.record.status.is_terminal:
            return
        meta = dict(live.record.meta)
        asks = [a for a in meta.get("asks", ()) if a != ask_id]
        if asks:
            meta["asks"] = asks
        else:
            meta.pop("asks", None)
        if asks or live.cancel_requested or not live.slot_lent:
            changes: dict[str, Any] = {"meta": meta}
            if not asks and not live.cancel_requested and live.record.status is RunStatus.waiting:
                changes["status"] = RunStatus.running
            self._emit("changed", self._set(live, **changes))
            return
        if answered:
            meta["answered_at"] = utc_now().isoformat()
        record = self._set(live, meta=meta)
        if not self._request_slots(live).done():  # when done, it is running already
            self._emit("changed", record)  # still waiting: for its slots now

    async def _end_wait(self, live: LiveRun, ask_id: str) -> None:
        """In the run's task, after ``ask_id`` closed: wait until the run has its slots
        again, then store its record. Called by the channel."""
        if self._live.get(live.record.run_id) is not live or live.record.status.is_terminal:
            return
        future = live.resume
        if live.slot_lent and future is not None and not future.done():
            # Cancelled: the run is being canceled (it leaves the queues in _finish), or
            # the body cancelled its own task: it keeps its place, running once served.
            await future
        if self._live.get(live.record.run_id) is live:
            await self.store.update(live.record)

    def _lend_slots(self, live: LiveRun) -> None:
        """Give back the slots a waiting run holds (none for ``count_slot=False``)."""
        if not live.count_slot or live.slot_lent or live.task is None:
            return
        live.slot_lent = True
        self._active -= 1
        limiter = live.limiter
        if limiter is not None and live.holds_session_slot:
            limiter.lent += 1
            self._release_session_slot(live)
        self._start_queued()

    def _request_slots(self, live: LiveRun) -> asyncio.Future[None]:
        """Queue an answered run for its slots (its session's first, then a global one),
        ahead of never-started runs; the future is done once it has them (at once when
        they are free)."""
        if live.resume is not None and not live.resume.done():
            return live.resume  # queued already (another ask of the run closed first)
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[None] = loop.create_future()
        live.resume = future
        limiter = live.limiter
        if limiter is not None and not live.holds_session_slot:
            limiter.resuming.append(live)
            self._admit(limiter)
        else:
            self._resume.append(live)
            self._start_queued()
        return future

    def _after_resume(self, live: LiveRun) -> RunRecord | None:
        """The run has its slots again: ``running`` (or lend them again at once if it
        opened another ask meanwhile). Returns the changed record, if any; the run's
        task stores it (``_end_wait``)."""
        if self._live.get(live.record.run_id) is not live or live.record.status.is_terminal:
            return None
        meta = live.record.meta
        if meta.get("asks"):
            self._lend_slots(live)
            return None
        changes: dict[str, Any] = {}
        if "answered_at" in meta:
            changes["meta"] = {k: v for k, v in meta.items() if k != "answered_at"}
        if live.record.status is RunStatus.waiting:
            changes["status"] = RunStatus.running
        if not changes:
            return None
        record = self._set(live, **changes)
        self._emit("changed", record)
        return record

    def _admit_resuming(self, limiter: SessionLimiter) -> bool:
        """Give session slots to answered runs, taking one back from a never-started run
        of the session (back to the front of ``waiting``) when none is free."""
        moved = False
        while limiter.resuming:
            if limiter.active >= limiter.limit and not self._take_back_session_slot(limiter):
                break
            live = limiter.resuming.popleft()
            limiter.lent -= 1
            limiter.active += 1
            live.holds_session_slot = True
            self._resume.append(live)
            moved = True
        return moved

    def _take_back_session_slot(self, limiter: SessionLimiter) -> bool:
        for queued in reversed(self._queue):
            if (
                queued.limiter is limiter
                and queued.holds_session_slot
                and queued.record.status is RunStatus.pending
            ):
                self._queue.remove(queued)
                queued.holds_session_slot = False
                limiter.active -= 1
                limiter.waiting.appendleft(queued)
                return True
        return False

    def _forget_lent(self, live: LiveRun) -> None:
        """A run that gave its slots back ends: drop it from the resume queues."""
        live.slot_lent = False
        resume, live.resume = live.resume, None
        if resume is not None and not resume.done():
            resume.cancel()  # _start_queued skips it in _resume
        limiter = live.limiter
        if limiter is not None and not live.holds_session_slot:
            with contextlib.suppress(ValueError):
                limiter.resuming.remove(live)
            limiter.lent -= 1
            self._drop_limiter_if_idle(limiter)

    def _patch_meta(
        self, live: LiveRun, updates: Mapping[str, Any], *, emit: bool = True
    ) -> RunRecord:
        """Merge ``updates`` into a live run's ``meta`` (the channel's progress); with
        ``emit``, tell watchers and queue the record for the store."""
        record = live.record
        if updates:
            record = self._set(live, meta={**record.meta, **updates})
        if emit and self._live.get(record.run_id) is live and not record.status.is_terminal:
            self._emit("changed", record)
            self._background_task(self.store.update(record), f"ag-store:{record.run_id}")
        return record

    def _start_queued(self) -> None:
        loop = self._loop
        assert loop is not None
        while self._resume and self._active < self._max_concurrency:
            live = self._resume.popleft()
            resume = live.resume
            if resume is None or resume.done():
                continue  # canceled while queued
            self._active += 1
            live.slot_lent = False
            live.resume = None
            resume.set_result(None)
            self._after_resume(live)
        while self._queue and self._active < self._max_concurrency:
            live = self._queue.popleft()
            if live.record.status is not RunStatus.pending:
                continue  # canceled while queued
            self._active += 1
            self._start(live, loop)

    def _start(self, live: LiveRun, loop: asyncio.AbstractEventLoop) -> None:
        live.task = loop.create_task(self._execute(live), name=f"ag-run:{live.record.run_id}")

    # ------------------------------------------------------------------ executing
    def _set(self, live: LiveRun, **changes: Any) -> RunRecord:
        live.record = live.record.model_copy(update=changes)
        return live.record

    #: Builds the ``context`` a graph body receives: ``factory(run_id=, graph_id=,
    #: session_id=, agent_id=, app_id=, manager=, live=)``. ``node_context.py`` installs
    #: ``NodeContext`` here when it is imported (it sits above this module, which must not
    #: import it back).
    context_factory: Callable[..., Any] | None = None

    def make_context(self, live: LiveRun) -> Any:
        """The context object for ``live``'s graph body (see :attr:`context_factory`)."""
        factory = type(self).context_factory
        if factory is None:
            raise RuntimeError("no context factory: import ag_jupyter.runtime first")
        record = live.record
        return factory(
            run_id=record.run_id,
            graph_id=record.graph_id,
            session_id=record.session_id,
            agent_id=record.agent_id,
            app_id=record.app_id,
            manager=self,
            live=live,
        )

    async def _execute(self, live: LiveRun) -> None:
        # Set synchronously in the task's first step: a record still ``pending`` means the
        # body never ran (cancel_run relies on that).
        record = self._set(live, status=RunStatus.running, started_at=utc_now())
        self._emit("changed", record)
        spec = live.spec
        kwargs = live.inputs
        context = None
        if spec.context_param is not None:
            kwargs = dict(kwargs)
            kwargs[spec.context_param] = context = self.make_context(live)
        # The current run, for @tool steps, Service.ctx(), nested graph calls and print().
        current.enter_run(self, live, context)
        outputs: dict[str, Any] | None = None
        error: BaseException | None = None
        cancelled = False
        try:
            await self.store.update(record)
            # Local: async bodies here, sync ones in a thread; or a Dask worker (executors/).
            result = await (live.executor or LOCAL_EXECUTOR).run(self, live, kwargs)
            outputs = spec.normalise_outputs(result)
        except asyncio.CancelledError:
            cancelled = True
        except BaseException as exc:  # the run's failure is kept on its record, never raised
            error = exc
        await self._finish(live, outputs=outputs, error=error, cancelled=cancelled)

    async def _finish(
        self,
        live: LiveRun,
        *,
        outputs: dict[str, Any] | None,
        error: BaseException | None,
        cancelled: bool,
    ) -> None:
        changes: dict[str, Any] = {"finished_at": utc_now()}
        meta = dict(live.record.meta)
        if live.recancel is not None:
            live.recancel.cancel()
            live.recancel = None
        if cancelled or live.cancel_requested:
            changes["status"] = RunStatus.canceled
            reason = meta.get("cancel_reason", "task_cancelled")
            if not live.cancel_requested:
                # Cancelled from outside (loop shut down, manager closed without a request).
                meta["cancel_reason"] = reason
            if error is not None and not cancelled:
                _keep_traceback(meta, error)
                changes["error"] = f"canceled ({reason}); then raised {_error_text(error)}"
            elif not cancelled:
                # The graph returned normally after a cancel request: it swallowed
                # CancelledError (async) or ignored the flag (sync). Keep what it produced.
                meta["cancel_ignored"] = True
                changes["error"] = (
                    f"canceled ({reason}); the graph did not stop when asked and ran to "
                    "completion, its outputs are kept"
                )
            else:
                changes["error"] = f"canceled ({reason})"
        elif error is not None:
            changes["status"] = RunStatus.failed
            changes["error"] = _error_text(error)
            _keep_traceback(meta, error)
            outputs = None
        else:
            changes["status"] = RunStatus.succeeded
        usage = self.services.steps.usage_in_memory(live.record.run_id)
        if usage is not None:
            meta["usage"] = usage
        if meta != live.record.meta:
            changes["meta"] = meta
        record = self._set(live, **changes)
        self._remember(record)
        if live.count_slot and live.task is not None:
            if live.slot_lent:
                self._forget_lent(live)  # it gave its global slot back on an ask
            else:
                self._active -= 1
            self._release_session_slot(live)
            self._start_queued()
        self._emit("changed", record)
        durable = True
        try:
            durable = await self._put(record, outputs=outputs)
        except Exception:
            log.exception("could not store the final record of run %s", record.run_id)
            durable = False
        finally:
            self._live.pop(record.run_id, None)
            if live.waiters is not None and not live.waiters.done():
                live.waiters.set_result(record if durable else self._not_durable(record))
            live.task = None

    # ------------------------------------------------------------------- waiting
    async def wait_run(
        self, run_id: str, *, timeout_s: float | None = None, return_outputs: bool = False
    ) -> RunRecord | tuple[RunRecord, dict[str, Any] | None]:
        """Wait until a run reaches a terminal status (succeeded, failed or canceled).

        Unlike :meth:`run_and_wait`, this never starts anything: it observes a run that
        :meth:`submit_run` already queued. Each waiter is independent: one waiter timing
        out or being cancelled affects neither another waiter nor the run. A terminal
        record is durable in the store before it is returned; if the store cannot write
        (full disk, deleted folder...), the record is returned anyway and says
        ``meta["durable"] is False`` (it is retried, and reads durable once it lands).
        The store never makes a wait raise.

        Args:
          run_id: the run to wait for.
          timeout_s: seconds to wait at most (None: no limit).
          return_outputs: return ``(record, outputs)`` instead of the record alone;
            outputs are None unless the run succeeded (or ran on after a cancel). Outputs
            JSON cannot hold are the real objects while this process still has them in
            memory (see the store), else their stored JSON preview (with a warning).

        Raises:
          RunNotFoundError: if no run has this id (at once, never after a wait).
          TimeoutError: if ``timeout_s`` seconds pass first; the run keeps going.
          ValueError: if ``timeout_s`` is not a positive number.
        """
        check_positive("timeout_s", timeout_s)
        live = self._live.get(run_id)
        if live is None:
            record = self._recent.get(run_id)
            if record is None:
                record = await self.store.get(run_id)
            if record is None:
                raise self._not_found(run_id)
            record = self._with_durability(record)
        else:
            if live.waiters is None:
                live.waiters = asyncio.get_running_loop().create_future()
            try:
                # shield: a waiter's timeout/cancellation must not cancel the shared future.
                record = await asyncio.wait_for(asyncio.shield(live.waiters), timeout_s)
            except TimeoutError:
                raise TimeoutError(
                    f"run {run_id!r} did not finish within {timeout_s} s (it is "
                    f"{live.record.status.value} and keeps going); wait again or cancel it"
                ) from None
        if not return_outputs:
            return record
        try:
            outputs = await self.store.get_outputs(run_id)
        except WorkspaceError as exc:
            log.warning("outputs of run %s could not be read: %s", run_id, exc)
            outputs = None
        return record, outputs

    async def run_and_wait(
        self,
        graph_id: str,
        *,
        inputs: Mapping[str, Any] | None,
        run_id: str | None = None,
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: RunVisibility | str | None = None,
        origin: RunOrigin | str | None = None,
        importance: RunImportance | str | None = None,
        agent_id: str | None = None,
        app_id: str | None = None,
        parent_run_id: str | None = None,
        count_slot: bool = False,
        timeout_s: float | None = None,
    ) -> tuple[RunRecord, dict[str, Any] | None, bool, list[dict[str, Any]]]:
        """Submit a run and wait for it: ``(record, outputs, has_waits, continuations)``.

        ``count_slot`` defaults to False, so a parent run waiting on a child can never
        deadlock the concurrency limit. A failed or canceled run is returned (its record
        says why), not raised. ``has_waits`` is always False and ``continuations`` empty:
        the embedded runtime has no resumable waits. If the caller is cancelled (e.g. a
        kernel interrupt), the run keeps going.

        Raises:
          The errors of :meth:`submit_run`, and TimeoutError/ValueError as in :meth:`wait_run`.
        """
        check_positive("timeout_s", timeout_s)
        record = await self.submit_run(
            graph_id,
            inputs=inputs,
            run_id=run_id,
            session_id=session_id,
            tags=tags,
            visibility=visibility,
            origin=origin,
            importance=importance,
            agent_id=agent_id,
            app_id=app_id,
            parent_run_id=parent_run_id,
            count_slot=count_slot,
        )
        final, outputs = await self.wait_run(
            record.run_id, timeout_s=timeout_s, return_outputs=True
        )  # type: ignore[misc]
        return final, outputs, False, []

    # ----------------------------------------------------------------- cancelling
    async def cancel_run(self, run_id: str, *, reason: str = "user_requested") -> RunRecord:
        """Ask a run to stop and return its record after the request.

        - ``pending``: it becomes ``canceled`` at once and never starts.
        - running async graph: its task is cancelled; the record is
          ``cancellation_requested`` until the task ends, then ``canceled``. A body that
          swallows ``CancelledError`` is cancelled again every 0.1 s for up to
          ``cancel_timeout_s`` seconds; after that it is left running, marked
          ``meta["cancel_ignored"]``, and ends ``canceled`` whenever it returns (nothing
          can bound a body that never gives control back).
        - running sync graph (a worker thread): a cooperative flag is set
          (``context.runner().is_cancel_requested()``); the record is
          ``cancellation_requested`` until the function returns, then ``canceled``. Its slot
          stays taken until then, since the thread keeps running.
        - finished run: nothing changes.

        The reason and time are kept in ``record.meta`` (``cancel_reason``,
        ``cancel_requested_at``).

        Raises:
          RunNotFoundError: if no run has this id.
        """
        live = self._live.get(run_id)
        if live is None:
            record = self._recent.get(run_id) or await self.store.get(run_id)
            if record is None:
                raise self._not_found(run_id)
            return record
        if live.cancel_requested or live.record.status.is_terminal:
            # Already asked, or finished and only its final store write is in flight.
            return live.record
        live.cancel_requested = True
        meta = dict(live.record.meta)
        meta["cancel_reason"] = str(reason)
        meta["cancel_requested_at"] = utc_now().isoformat()
        if live.record.status is RunStatus.pending:
            # Queued, or started but its task has not taken a step: the body never runs.
            if live.task is not None:
                live.task.cancel()
            self._set(live, meta=meta)
            await self._finish(live, outputs=None, error=None, cancelled=True)
            return live.record
        record = self._set(live, status=RunStatus.cancellation_requested, meta=meta)
        # Emit and cancel before awaiting the store: the run may end during that await, and
        # its terminal event must come after this one.
        self._emit("changed", record)
        executor = live.executor
        if executor is not None and executor.cancel(self, live, reason):
            pass  # the executor stops the body (on a Dask worker); the task ends with it
        elif live.spec.is_async and live.task is not None:
            live.task.cancel(f"ag_jupyter cancel_run: {reason}")
            loop = self._loop
            assert loop is not None
            deadline = loop.time() + self.cancel_timeout_s
            live.recancel = loop.call_later(RECANCEL_EVERY_S, self._recancel, live, deadline)
        await self.store.update(record)
        return record

    def _recancel(self, live: LiveRun, deadline: float) -> None:
        """Cancel a swallowing body's task again, until it ends or ``deadline`` passes."""
        live.recancel = None
        task = live.task
        if task is None or task.done() or live.record.status.is_terminal:
            return
        loop = self._loop
        assert loop is not None
        if loop.time() >= deadline:
            meta = {**live.record.meta, "cancel_ignored": True}
            record = self._set(live, meta=meta)
            self._emit("changed", record)
            log.warning(
                "run %s ignored cancellation for %.1f s; it is left running",
                record.run_id, self.cancel_timeout_s,
            )
            self._background_task(self.store.update(record), f"ag-store:{record.run_id}")
            return
        task.cancel("ag_jupyter cancel_run: cancelled again (the body swallowed it)")
        live.recancel = loop.call_later(RECANCEL_EVERY_S, self._recancel, live, deadline)

    def update_meta(self, run_id: str, changes: Mapping[str, Any]) -> RunRecord | None:
        """Merge ``changes`` into a live run's ``record.meta`` (executors say where a run
        is: ``meta["executor"]``, ``meta["worker"]``...) and emit the change; the store gets
        it with the run's next write (at the latest its final record). Returns the new
        record, or None if the run is not live.
        """
        live = self._live.get(run_id)
        if live is None or live.record.status.is_terminal:
            return None
        record = self._set(live, meta={**live.record.meta, **changes})
        self._emit("changed", record)
        return record

    def _background_task(self, coro: Any, name: str) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def request_cancel(self, run_id: str, *, reason: str = "user_requested") -> RunRecord:
        """Sync form of :meth:`cancel_run` for callbacks that cannot await (widget messages,
        line magics): schedules the cancellation on the manager's loop and returns the
        record as it is now. A finished run is returned unchanged.

        Raises:
          RunNotFoundError: if this manager has no run with this id in memory.
        """
        record = self.find_record(run_id)
        if record is None:
            raise self._not_found(run_id)
        if record.status.is_terminal or self._loop is None:
            return record

        async def cancel() -> None:
            try:
                await self.cancel_run(run_id, reason=reason)
            except Exception:
                log.exception("cancelling run %s failed", run_id)

        self._background_task(cancel(), f"ag-cancel:{run_id}")
        return record

    def is_cancel_requested(self, run_id: str) -> bool:
        """Whether :meth:`cancel_run` was called for a live run (False once finished)."""
        live = self._live.get(run_id)
        return bool(live and live.cancel_requested)

    async def retry_run(self, run_id: str) -> RunRecord:
        """Queue a new run of a failed or canceled run's graph, with the same inputs
        (:meth:`get_inputs`), session, tags, parent, agent, app, origin, visibility and
        importance, and ``meta["retry_of"] = run_id``; return its ``pending`` record (as
        :meth:`submit_run`). The original run's record is left as it was.

        Inputs of a run of an earlier process are its stored JSON form, validated again
        against the graph as it is registered now.

        Raises:
          RunNotFoundError: if no run has this id.
          ValueError: if the run did not fail and was not canceled (live or succeeded).
          GraphNotFoundError: if its graph is not registered in this process (define it
            again, e.g. by re-running the cell that defines it).
          RunInputError: if the stored inputs no longer fit the graph's signature.
          WorkspaceError: if the workspace cannot be read.
        """
        record = await self.get_record(run_id)
        if record.status not in (RunStatus.failed, RunStatus.canceled):
            raise ValueError(
                f"run {run_id!r} is {record.status.value}; only failed or canceled runs can "
                "be retried"
            )
        inputs = await self.get_inputs(run_id)
        return await self.submit_run(
            record.graph_id,
            inputs=inputs,
            session_id=record.session_id,
            tags=record.tags,
            visibility=record.visibility,
            origin=record.origin,
            importance=record.importance,
            agent_id=record.agent_id,
            app_id=record.app_id,
            parent_run_id=record.parent_run_id,
            meta={"retry_of": run_id},
        )

    # ------------------------------------------------------------------- reading
    async def get_record(self, run_id: str) -> RunRecord:
        """The current record of ``run_id`` (``meta["durable"] is False`` while a
        finished run's record is not on disk yet).

        Raises:
          RunNotFoundError: if no run has this id.
          WorkspaceError: if it is not in memory and the workspace cannot be read.
        """
        live = self._live.get(run_id)
        if live is not None:
            return live.record
        record = self._recent.get(run_id)
        if record is None:
            record = await self.store.get(run_id)
        if record is None:
            raise self._not_found(run_id)
        return self._with_durability(record)

    async def list_records(
        self,
        *,
        graph_id: str | None = None,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        session_id: str | None = None,
        tags: Iterable[str] | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Records matching all given filters, newest first, ``limit`` at most.

        Args:
          status: one status or several.
          tags: records must carry all of these.
          limit: page size (> 0); offset: records to skip (>= 0). Paging costs O(page)
            records whatever the offset.

        Raises:
          ValueError: for a bad status, limit or offset.
          WorkspaceError: if the workspace cannot be read.
        """
        check_paging(limit, offset)
        return await self.store.list(
            graph_id=graph_id,
            status=status_set(status),
            session_id=session_id,
            tags=tags,
            limit=limit,
            offset=offset,
        )

    async def get_inputs(self, run_id: str) -> dict[str, Any]:
        """The inputs a run was submitted with (as validated; JSON form for runs of
        earlier processes).

        Raises:
          RunNotFoundError: if no run has this id.
          WorkspaceError: if the workspace cannot be read.
        """
        live = self._live.get(run_id)
        if live is not None:
            return dict(live.inputs)
        found = await self.store.get_inputs(run_id)
        if found is None:
            if await self.store.get(run_id) is None:
                raise self._not_found(run_id)
            return {}
        return found

    async def logs(
        self,
        run_id: str,
        *,
        offset: int = 0,
        limit: int = 200,
        search: str | None = None,
        levels: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """A page of a run's ``logger()`` lines, oldest first: ``{"lines": [{"time" (epoch
        s), "level", "run_id", "session_id", "message"}, ...], "total": n}``. Kept per run
        (at most 2,000 lines each, the newest) in the workspace, so readable after a
        restart; in memory only for an in-memory manager.

        Args:
          search: case-insensitive substring of the message; levels: e.g.
            ``["WARNING", "ERROR"]``.

        Raises:
          ValueError: for a negative offset or a non-positive limit.
          WorkspaceError: if the workspace cannot be read.
        """
        check_paging(limit, offset)
        wanted = {str(level).upper() for level in levels} if levels else None
        return await self.services.log_buffer.read(
            run_id, offset=offset, limit=limit, search=search, levels=wanted
        )

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        """What a run did, oldest first: its ``@tool``, MCP and LLM calls, each a dict with
        exactly ``step_id, run_id, kind, name, inputs_preview, outputs_preview,
        started_at`` (UTC ISO string), ``duration_s`` and ``error`` (see
        ``store/steps.py``). Kept in the workspace (after a restart too) or, for an
        in-memory manager, in memory. An unknown run has no steps.

        Raises:
          WorkspaceError: if the workspace cannot be read.
        """
        return await self.services.steps.steps(run_id)

    async def usage(
        self, run_id: str | None = None, session_id: str | None = None
    ) -> dict[str, Any]:
        """Token usage summed from the stored LLM steps (``kind="llm"``) of one run, of a
        session's runs, or of every run: ``{"calls", "prompt_tokens", "completion_tokens",
        "cached_tokens", "cost"}``, the keys of a finished run's ``meta["usage"]``.
        ``cost`` is None unless every call had a price (``llm_prices``): never a partial or
        guessed cost.

        Args:
          run_id: that run's calls (a run still going counts what it did so far; an
            unknown id has none).
          session_id: the calls of every run of that session (paged through the run
            records), plus those an ad-hoc context made under the session's own id (the
            default run id of ``open_session(session_id=...)`` contexts).
          Neither: every LLM call kept (in the workspace, or in this process's memory).

        Raises:
          TypeError: if both are given.
          WorkspaceError: if the workspace cannot be read.
        """
        from .store.steps import sum_usage

        steps = self.services.steps
        if run_id is not None and session_id is not None:
            raise TypeError("usage() takes run_id or session_id, not both")
        if run_id is not None:
            return sum_usage(await steps.extras(run_id, kind="llm"))
        if session_id is None:
            return sum_usage(await steps.extras(None, kind="llm"))
        run_ids: list[str] = [session_id]
        offset = 0
        while True:
            page = await self.list_records(session_id=session_id, limit=500, offset=offset)
            run_ids.extend(r.run_id for r in page if r.run_id != session_id)
            if len(page) < 500:
                break
            offset += len(page)
        extras: list[Any] = []
        for start in range(0, len(run_ids), 32):
            chunk = run_ids[start : start + 32]
            for found in await asyncio.gather(*(steps.extras(r, kind="llm") for r in chunk)):
                extras.extend(found)
        return sum_usage(extras)

    async def prune(
        self,
        *,
        older_than_s: float | None = None,
        keep_last: int | None = None,
        statuses: Iterable[RunStatus | str] | None = None,
    ) -> dict[str, int]:
        """Remove finished runs from the history, with their outputs, inputs, logs and
        what hangs off them (artifacts they saved, unless still referenced), and return
        what was removed: ``{"runs", "rows", "files", "bytes"}``.

        Args:
          older_than_s: only runs finished more than this many seconds ago.
          keep_last: keep the newest this many runs (by creation), whatever else matches.
          statuses: only these terminal statuses (default: succeeded, failed, canceled).
        Live runs are never removed.

        Raises:
          ValueError: for a non-terminal status or a negative bound.
          WorkspaceWriteError: if the workspace cannot be written.
        """
        wanted = status_set(statuses) or set(TERMINAL_STATUSES)
        result = await self.store.prune(
            older_than_s=older_than_s,
            keep_last=keep_last,
            statuses=wanted,
            protect=list(self._live),
        )
        for run_id in [r for r, rec in self._recent.items() if rec.status in wanted]:
            if not await self.store.exists(run_id):
                del self._recent[run_id]  # its id leaves _recent_order when it comes up
        return result

    # ---------------------------------------------------------------------- asks
    def pending_asks(self, run_id: str | None = None) -> list[Ask]:
        """The open channel asks (``context.channel().ask_*``) of this manager's runs,
        of ``run_id`` only when given, oldest first. Sync; O(open asks).

        Each :class:`~ag_jupyter.runtime.Ask` has ``ask_id, run_id, kind`` (``"text"``,
        ``"choices"``, ``"approval"``, ``"files"``), ``prompt``, ``options`` (``[{"id",
        "label"}]``), ``created_at`` and ``deadline`` (UTC datetimes; no deadline without
        ``timeout_s``). An ask of a ``%%ag_session`` cell has the session's id as run id.
        """
        return self.asks.pending(run_id)

    async def answer(self, ask_id: str, value: Any) -> dict[str, Any]:
        """Answer an open ask; the run resumes with the reply (first answer wins,
        whichever channel gives it). Returns the reply the run gets (a15's shape).

        Args:
          value: a str (the reply text; for a choices or approval ask it selects the
            option whose id, label, alias or number it equals, else it is free text with
            ``matched`` False, as AetherGraph 0.1.0a15 does); ``{"choice": id, "text"?:
            str}`` (must name an option); ``{"files": [{"name", "data" (bytes or base64
            str), "mime"?}], "text"?: str}`` for a files ask (saved as artifacts of the
            run; 10 MiB per file, 20 MiB per ask, 20 files).

        Raises:
          AskNotFoundError: no ask with this id is known here (the open ones are listed).
          AskClosedError: it was answered already, timed out or was canceled (the
            message says which and when); this answer is not used.
          AskAnswerError: the value does not fit the ask (e.g. ``{"choice": ...}``
            naming no option: the options are listed); the ask stays open.
          AskUploadTooLargeError: files past the caps; the ask stays open.
          ServiceNotConfiguredError: files for a run without an artifact store.
          TypeError: if ``ask_id`` is not a str.
        """
        return await self.asks.answer(ask_id, value)

    def answer_nowait(self, ask_id: str, value: Any) -> dict[str, Any]:
        """Sync form of :meth:`answer` for callbacks that cannot await (``%ag_answer``,
        widget messages): closes the ask at once (the run resumes at its next step).
        Answers with files need :meth:`answer` (``TypeError`` here).

        Raises:
          The errors of :meth:`answer`.
        """
        return self.asks.answer_nowait(ask_id, value)

    async def transcript(self, run_id: str) -> list[dict[str, Any]]:
        """What a run said and was told through ``context.channel()``, oldest first:
        dicts with exactly ``kind`` (``"sent"``, ``"ask"``, ``"answer"``, ``"timeout"``,
        ``"canceled"``), ``text`` (exactly as given, never escaped), ``ask_id`` (None
        for sent messages) and ``at`` (UTC ISO string). Kept in the workspace (after a
        restart too: an ask a dead process left open ends with a ``"canceled"`` entry
        whose text starts with ``"interrupted"``) or, for an in-memory manager, in
        memory. An unknown run has none.

        Raises:
          WorkspaceError: if the workspace cannot be read.
        """
        return await self.asks.transcript(run_id)

    def _not_found(self, run_id: str) -> RunNotFoundError:
        live = ", ".join(list(self._live)[:10]) or "(none)"
        return RunNotFoundError(
            f"no run with id {run_id!r}; live runs: {live}. List runs with "
            "list_records() (or %ag_runs in a notebook)."
        )

    # -------------------------------------------------------------------- closing
    def on_close(self, closer: Callable[[], Any]) -> None:
        """Call ``closer()`` (awaited if it returns an awaitable) in :meth:`close`, after
        the runs ended and before the store closes; newest first. The composition root
        uses it for what the loop's manager owns (MCP servers)."""
        self._closers.append(closer)

    async def close(
        self, *, cancel_live: bool = True, timeout_s: float = 5.0, close_store: bool = True
    ) -> None:
        """Stop accepting runs, cancel live ones (reason ``manager_closed``) and wait up to
        ``timeout_s`` seconds for them to end, then close the service hub's own services
        and the store (or only flush it when ``close_store`` is False, for a store shared
        with another manager).

        Sync runs that ignore the flag are left running in their daemon threads; their
        records stay ``cancellation_requested`` in a durable store until a restart marks
        them interrupted.
        """
        if self._closed:
            return
        self._closed = True
        if cancel_live:
            for run_id in list(self._live):
                with contextlib.suppress(RunNotFoundError):
                    await self.cancel_run(run_id, reason="manager_closed")
        tasks = [live.task for live in self._live.values() if live.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        closers = [*reversed(self._closers), getattr(self.services, "aclose", None)]
        for closer in closers:
            if not callable(closer):
                continue
            try:
                result = closer()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    await result
            except Exception:
                log.exception("closing %r for a RunManager failed", closer)
        if close_store:
            await self.store.close()
        else:
            with contextlib.suppress(WorkspaceError):
                await self.store.flush()
