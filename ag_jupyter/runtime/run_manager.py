"""The RunManager: queues, runs, cancels and tracks graph runs on one asyncio loop.

Behaviour follows AetherGraph's run API (``submit_run`` / ``wait_run`` / ``run_and_wait`` /
``cancel_run``) and ``../shared/DESIGN.md`` section 2: FIFO queueing under
``max_concurrency``, ``count_slot=False`` runs that bypass the limit, real task cancellation
for async graphs and a cooperative flag for sync graphs (which run in worker threads).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .errors import DuplicateRunIdError, RunNotFoundError
from .graphs import GraphRegistry, GraphSpec, default_registry
from .models import (
    RunImportance,
    RunOrigin,
    RunRecord,
    RunStatus,
    RunVisibility,
    utc_now,
)
from .run_store import InMemoryRunStore, RunStore, check_paging, status_set

log = logging.getLogger("ag_jupyter.runtime")

DEFAULT_MAX_CONCURRENCY = 8
RECENT_RECORDS = 10_000


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


def check_positive(name: str, value: float | None, *, allow_none: bool = True) -> None:
    """Raise ValueError unless ``value`` is a positive number (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _error_text(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


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
    ) -> None:
        self._check_concurrency(max_concurrency)
        self._max_concurrency = max_concurrency
        self.store: RunStore = store if store is not None else InMemoryRunStore()
        self.registry = registry if registry is not None else default_registry
        if services is None:
            from .services import ServiceHub

            services = ServiceHub()
        self.services = services
        self._loop = loop
        self._live: dict[str, LiveRun] = {}
        self._queue: deque[LiveRun] = deque()
        self._active = 0
        self._subscribers: tuple[RunEventCallback, ...] = ()
        self._watchers: tuple[RunWatch, ...] = ()
        self._closed = False
        _all_managers.add(self)
        # Finished records this process saw, for sync readers (magics, panel snapshots).
        self._recent: deque[RunRecord] = deque(maxlen=RECENT_RECORDS)
        self._background: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- properties
    @staticmethod
    def _check_concurrency(value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"max_concurrency must be a positive int, got {value!r}")

    @property
    def max_concurrency(self) -> int:
        """Slot-counted runs allowed at once. Raising it starts queued runs at once."""
        return self._max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int) -> None:
        self._check_concurrency(value)
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
        from collections import Counter

        counts = Counter(record.status for record in self.recent_records())
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
        finished = {r.run_id: r for r in self._recent}
        for live in self._live.values():
            finished.pop(live.record.run_id, None)
        return sorted(
            [*finished.values(), *self.live_records()], key=lambda r: r.created_at
        )

    def find_record(self, run_id: str) -> RunRecord | None:
        """The record of ``run_id`` if this manager has it in memory (live or recent)."""
        live = self._live.get(run_id)
        if live is not None:
            return live.record
        for record in reversed(self._recent):
            if record.run_id == run_id:
                return record
        return None

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
        """Queue a run of ``graph_id`` and return its ``pending`` record at once.

        The run starts as soon as a slot is free (FIFO); ``count_slot=False`` starts it at
        once, outside the ``max_concurrency`` limit. ``origin`` defaults to ``agent`` when
        ``agent_id`` is set, else ``app``.

        Raises:
          GraphNotFoundError: if no graph is registered as ``graph_id``.
          RunInputError: if ``inputs`` do not match the graph's signature.
          DuplicateRunIdError: if an explicit ``run_id`` is already taken.
          ValueError: for an unknown visibility/origin/importance value.
          RuntimeError: if called off the manager's loop or after :meth:`close`.
        """
        loop = self._bind_loop()
        spec = self.registry.get(graph_id)
        kwargs = spec.validate_inputs(inputs)
        if run_id is None:
            run_id = f"run-{uuid.uuid4().hex[:16]}"
        else:
            if not isinstance(run_id, str) or not run_id:
                raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
            if run_id in self._live or await self.store.exists(run_id):
                raise DuplicateRunIdError(
                    f"run id {run_id!r} is already used by another run; pass a new run_id "
                    "or leave it out to get a generated one"
                )
        record = RunRecord(
            run_id=run_id,
            graph_id=graph_id,
            tags=[str(t) for t in tags] if tags else [],
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
        live = LiveRun(record=record, spec=spec, inputs=kwargs, count_slot=count_slot)
        self._live[run_id] = live
        await self.store.create(record)
        self._emit("created", record)
        if not count_slot:
            self._start(live, loop)
        else:
            self._queue.append(live)
            self._start_queued()
        return live.record

    def _start_queued(self) -> None:
        loop = self._loop
        assert loop is not None
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

    async def _execute(self, live: LiveRun) -> None:
        from .node_context import NodeContext

        # Set synchronously in the task's first step: a record still ``pending`` means the
        # body never ran (cancel_run relies on that).
        record = self._set(live, status=RunStatus.running, started_at=utc_now())
        self._emit("changed", record)
        spec = live.spec
        kwargs = live.inputs
        if spec.context_param is not None:
            kwargs = dict(kwargs)
            kwargs[spec.context_param] = NodeContext(
                run_id=record.run_id,
                graph_id=record.graph_id,
                session_id=record.session_id,
                agent_id=record.agent_id,
                app_id=record.app_id,
                manager=self,
                live=live,
            )
        outputs: dict[str, Any] | None = None
        error: BaseException | None = None
        cancelled = False
        try:
            await self.store.update(record)
            if spec.is_async:
                result = await spec.fn(**kwargs)
            else:
                # The run's own task is never cancelled for a sync graph (see cancel_run),
                # so this only raises CancelledError if the loop itself is shutting down.
                result = await self._run_in_thread(live, kwargs)
            outputs = spec.normalise_outputs(result)
        except asyncio.CancelledError:
            cancelled = True
        except BaseException as exc:  # the run's failure is kept on its record, never raised
            error = exc
        await self._finish(live, outputs=outputs, error=error, cancelled=cancelled)

    def _run_in_thread(self, live: LiveRun, kwargs: dict[str, Any]) -> asyncio.Future[Any]:
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[Any] = loop.create_future()

        def settle(kind: str, value: Any) -> None:
            if future.done():
                return
            if kind == "cancel":
                future.cancel()
            elif kind == "error":
                future.set_exception(value)
            else:
                future.set_result(value)

        def worker() -> None:
            try:
                outcome: tuple[str, Any] = ("result", live.spec.fn(**kwargs))
            except asyncio.CancelledError:  # raise_if_cancel_requested() in the thread
                outcome = ("cancel", None)
            except BaseException as exc:
                outcome = ("error", exc)
            # The loop may be closed by now (script ended): then nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, *outcome)

        # A daemon thread per sync run: a sync graph that never checks the cancel flag must
        # not keep the interpreter from exiting, as a pool's non-daemon worker would.
        threading.Thread(target=worker, name=f"ag-run:{live.record.run_id}", daemon=True).start()
        return asyncio.shield(future)

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
        if cancelled or live.cancel_requested:
            changes["status"] = RunStatus.canceled
            reason = meta.get("cancel_reason", "task_cancelled")
            if not live.cancel_requested:
                # Cancelled from outside (loop shut down, manager closed without a request).
                meta["cancel_reason"] = reason
            if error is not None and not cancelled:
                meta["traceback"] = "".join(traceback.format_exception(error))
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
            meta["traceback"] = "".join(traceback.format_exception(error))
            outputs = None
        else:
            changes["status"] = RunStatus.succeeded
        if meta != live.record.meta:
            changes["meta"] = meta
        record = self._set(live, **changes)
        self._recent.append(record)
        if live.count_slot and live.task is not None:
            self._active -= 1
            self._start_queued()
        self._emit("changed", record)
        try:
            await self.store.update(record, outputs)
            await self.store.flush()
        except Exception:
            log.exception("could not store the final record of run %s", record.run_id)
        finally:
            self._live.pop(record.run_id, None)
            if live.waiters is not None and not live.waiters.done():
                live.waiters.set_result(record)
            live.task = None

    # ------------------------------------------------------------------- waiting
    async def wait_run(
        self, run_id: str, *, timeout_s: float | None = None, return_outputs: bool = False
    ) -> RunRecord | tuple[RunRecord, dict[str, Any] | None]:
        """Wait until a run reaches a terminal status (succeeded, failed or canceled).

        Unlike :meth:`run_and_wait`, this never starts anything: it observes a run that
        :meth:`submit_run` already queued. Each waiter is independent: one waiter timing
        out or being cancelled affects neither another waiter nor the run. A terminal
        record is durable in the store before it is returned.

        Args:
          run_id: the run to wait for.
          timeout_s: seconds to wait at most (None: no limit).
          return_outputs: return ``(record, outputs)`` instead of the record alone;
            outputs are None unless the run succeeded (or ran on after a cancel).

        Raises:
          RunNotFoundError: if no run has this id (at once, never after a wait).
          TimeoutError: if ``timeout_s`` seconds pass first; the run keeps going.
          ValueError: if ``timeout_s`` is not a positive number.
        """
        check_positive("timeout_s", timeout_s)
        live = self._live.get(run_id)
        if live is None:
            sibling = self._sibling_running(run_id)
            if sibling is not None:
                return await sibling.wait_run(
                    run_id, timeout_s=timeout_s, return_outputs=return_outputs
                )
            record = await self.store.get(run_id)
            if record is None:
                raise self._not_found(run_id)
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
        return record, await self.store.get_outputs(run_id)

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
          ``cancellation_requested`` until the task ends, then ``canceled``.
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
            sibling = self._sibling_running(run_id)
            if sibling is not None:
                return await sibling.cancel_run(run_id, reason=reason)
            record = await self.store.get(run_id)
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
        if live.spec.is_async and live.task is not None:
            live.task.cancel(f"ag_jupyter cancel_run: {reason}")
        await self.store.update(record)
        return record

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

        task = self._loop.create_task(cancel(), name=f"ag-cancel:{run_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return record

    def is_cancel_requested(self, run_id: str) -> bool:
        """Whether :meth:`cancel_run` was called for a live run (False once finished)."""
        live = self._live.get(run_id)
        return bool(live and live.cancel_requested)

    # ------------------------------------------------------------------- reading
    async def get_record(self, run_id: str) -> RunRecord:
        """The current record of ``run_id``.

        Raises:
          RunNotFoundError: if no run has this id.
        """
        live = self._live.get(run_id)
        if live is not None:
            return live.record
        record = await self.store.get(run_id)
        if record is None:
            raise self._not_found(run_id)
        return record

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
          limit: page size (> 0); offset: records to skip (>= 0).

        Raises:
          ValueError: for a bad status, limit or offset.
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

    def _sibling_running(self, run_id: str) -> RunManager | None:
        # Another manager on this loop (e.g. an open_session(max_concurrency=...) private
        # one sharing our store) that has this run live: only it can wait for or cancel it.
        loop = asyncio.get_running_loop()
        for other in list(_all_managers):
            if other is not self and other._loop is loop and run_id in other._live:
                return other
        return None

    def _not_found(self, run_id: str) -> RunNotFoundError:
        live = ", ".join(list(self._live)[:10]) or "(none)"
        return RunNotFoundError(
            f"no run with id {run_id!r}; live runs: {live}. List runs with "
            "list_records() (or %ag_runs in a notebook)."
        )

    # -------------------------------------------------------------------- closing
    async def close(
        self, *, cancel_live: bool = True, timeout_s: float = 5.0, close_store: bool = True
    ) -> None:
        """Stop accepting runs, cancel live ones (reason ``manager_closed``) and wait up to
        ``timeout_s`` seconds for them to end, then close the store (or only flush it when
        ``close_store`` is False, for a store shared with another manager).

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
        if close_store:
            await self.store.close()
        else:
            await self.store.flush()


_managers: dict[asyncio.AbstractEventLoop, RunManager] = {}
# Every manager in the process (weakly), so managers sharing a loop can find each other's runs.
_all_managers: weakref.WeakSet[RunManager] = weakref.WeakSet()
_managers_lock = threading.Lock()
_manager_factory: Callable[[], RunManager] | None = None


def set_run_manager_factory(factory: Callable[[], RunManager] | None) -> None:
    """Choose how :func:`get_run_manager` builds a loop's manager (None: the default).

    The IPython extension uses this to apply its configuration (concurrency, workspace).
    """
    global _manager_factory
    _manager_factory = factory


def open_workspace_manager(
    workspace: str | None = None, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY
) -> RunManager:
    """A RunManager on a durable workspace folder.

    ``workspace`` None means the process's default workspace (``$AG_WORKSPACE`` or
    ``./.ag_workspace``), opened on first use and shared by the managers of later loops; a
    path opens that folder (the manager owns it). If the folder cannot be used, a
    ``RuntimeWarning`` says why and the manager keeps its runs in memory.

    Raises:
      ValueError: if ``max_concurrency`` is not a positive int.
    """
    from .workspace import WorkspaceError, default_runtime, workspace_runtime

    try:
        runtime = default_runtime() if workspace is None else workspace_runtime(workspace)
    except WorkspaceError as exc:
        import warnings

        warnings.warn(
            f"{exc} Runs of this process are kept in memory only.", RuntimeWarning, stacklevel=3
        )
        return RunManager(max_concurrency=max_concurrency)
    return RunManager(max_concurrency=max_concurrency, **runtime)


def get_run_manager(*, create: bool = True) -> RunManager:
    """The RunManager of the running event loop, created on first use.

    One manager per loop: in a kernel that is the kernel's loop, so runs keep going between
    cells; in a script, each ``asyncio.run(...)`` gets its own. Unless a factory was set
    with :func:`set_run_manager_factory`, managers keep their runs in the default durable
    workspace (``$AG_WORKSPACE`` or ``./.ag_workspace``), opened once per process.

    Raises:
      RuntimeError: if no event loop is running (call it from async code, or ``await`` in
        a notebook cell), or if ``create`` is False and there is no manager yet.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "get_run_manager() needs a running asyncio event loop: call it from async code "
            "(an `async def`, or a notebook cell using `await`)"
        ) from None
    with _managers_lock:
        manager = _managers.get(loop)
        if manager is None or manager.closed:
            if not create:
                raise RuntimeError("no RunManager exists for this event loop yet")
            for old_loop in [lp for lp in _managers if lp.is_closed()]:
                del _managers[old_loop]
            manager = (
                _manager_factory() if _manager_factory is not None else open_workspace_manager()
            )
            manager._loop = loop
            _managers[loop] = manager
        return manager


def current_run_managers() -> list[RunManager]:
    """Every manager created by :func:`get_run_manager` whose loop is still open."""
    with _managers_lock:
        return [m for loop, m in _managers.items() if not loop.is_closed()]
