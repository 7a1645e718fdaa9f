"""``executor="dask"``: graph bodies run on a Dask cluster; the kernel keeps the run.

The kernel's RunManager owns every Dask run exactly as a local one (record, statuses,
slot, waiters, durable store, panel); this executor only puts the body on a worker and
brings back how it ended. One :class:`DaskExecutor` per RunManager (per event loop).

How a run travels (see ``dask_worker.py`` for the worker's half):

- **Submit**: ``run_graph_task(function, payload)`` with key ``"ag-run-<run id>"``, from
  an asynchronous client on the kernel's loop (no Dask call ever blocks that loop); the
  runs started in one loop iteration go in one ``Client.map``. Both arguments are pickled
  in the kernel first, with Dask's pickler (cloudpickle for a function defined in a
  notebook: it travels by value; cached per graph), so what cannot travel fails its own
  run at once. The payload holds the validated inputs, the run's record and a per-run
  token.
- **Events back** (worker -> scheduler -> kernel): ``Worker.log_event`` on this executor's
  topic, received with ``Client.subscribe_topic``: ``started`` (the worker's address goes
  into ``meta["worker"]``), ``log`` lines (``logger()`` and ``print()``), ``step`` (tools,
  LLM calls), ``cancel_ignored``, and ``done``: the outcome itself when it is up to 64 KiB
  (so no gather per run; a larger one is gathered from the worker). They arrive in order,
  before the task's own end. The scheduler keeps the last 1,000 events of a topic, as it
  does for every topic.
- **Calls** (worker -> kernel -> worker): kv / memory / artifacts, LLM profiles and
  ``runner()`` go to a ``distributed.core.Server`` the kernel listens on (the address it
  uses to reach the scheduler, or ``AG_DASK_CALLBACK_ADDRESS``); each call carries the
  run's token and executes in the kernel on the run's own context, so it is stamped,
  scoped and stored exactly as for a local run. Tokens die with their run.
- **Cancel**: a run not started on a worker yet has its future cancelled (and its claim
  event set, so no worker starts it); a started one gets its ``distributed.Event`` set:
  the worker cancels an async body's task (for real, within milliseconds) or sets a sync
  body's cooperative flag. The record ends ``canceled`` when the worker says the body
  stopped, as for local runs.
- **Failures**: the scheduler's ``remove-worker`` event (topic ``"all"``) fails the runs
  that had started on that worker (``WorkerLostError``, naming it); a body is never run
  twice (a per-run claim event is checked by every attempt). A lost scheduler connection
  fails the live Dask runs (``SchedulerLostError``); the next Dask run connects again.

Trust: workers run the kernel's code and the kernel accepts Dask's serialisation from
them, as every Dask client does; the callback server accepts connections on the address
above while the executor is open, like the scheduler and workers do (use Dask's TLS
``Security`` on a network you do not trust: the server listens with the client's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import os
import pickle
import secrets
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .. import current
from ..errors import (
    ExecutorError,
    ExecutorNotAvailableError,
    SchedulerLostError,
    WorkerLostError,
)
from ..graphs import hand_over
from .names import INSTALL_HINT

if TYPE_CHECKING:
    from ..run_manager import LiveRun, RunManager

__all__ = ["DaskExecutor", "import_distributed"]

log = logging.getLogger("ag_jupyter.runtime.dask")

#: Environment variable: the address the kernel's callback server listens on.
CALLBACK_ENV = "AG_DASK_CALLBACK_ADDRESS"
#: Seconds to connect to a scheduler before the run fails.
CONNECT_TIMEOUT_S = 10.0
#: Seconds a LocalCluster we started gets to close.
CLUSTER_CLOSE_TIMEOUT_S = 5.0
_MANAGER_METHODS = ("submit_run", "wait_run", "run_and_wait", "cancel_run", "get_record")
_SERVICES = ("kv", "memory", "artifacts")
_RUNS_LOGGER = logging.getLogger("ag_jupyter.runs")
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Seconds the kernel's Dask client batches messages (distributed's default is 0.01).
CLIENT_SEND_INTERVAL_S = 0.002


def import_distributed() -> Any:
    """``import distributed``, or a clear error saying how to install it.

    Raises:
      ExecutorNotAvailableError: if ``distributed`` is not installed.
    """
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorNotAvailableError(
            f"executor='dask' needs the 'distributed' package, which is not installed "
            f"({exc}): {INSTALL_HINT}, or run the graph with executor='local'"
        ) from None
    return distributed


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _start_local_cluster(options: Mapping[str, Any]) -> Any:
    """A ``LocalCluster`` with worker processes, sized to the machine (in a thread: its
    scheduler then runs on a loop of its own, never on the kernel's)."""
    from distributed import LocalCluster

    kwargs: dict[str, Any] = {
        "n_workers": _cores(),
        "threads_per_worker": 1,
        "processes": True,
        # Any free port (8787 may be another cluster's); the dashboard needs bokeh.
        "dashboard_address": ":0",
        "silence_logs": logging.ERROR,
    }
    kwargs.update(options)
    return LocalCluster(**kwargs)


@dataclass(eq=False)
class _DaskRun:
    """The executor's view of one live Dask run."""

    live: LiveRun
    key: str
    token: str
    conn: _Connection
    outcome: asyncio.Future[Any]
    context: Any = None
    future: Any = None
    worker: str | None = None
    cancel_sent: bool = False
    claim_set_by_kernel: bool = False
    watched: bool = True  # the worker's cancel watcher may have set the cancel event


@dataclass(eq=False)
class _Connection:
    """One asynchronous client on the kernel's loop, what it subscribed to and the
    callback server; retired (closed once its runs end) when the settings change."""

    settings_key: tuple[Any, ...]
    client: Any
    address: str
    topic: str
    server: Any
    callback: str
    cluster: Any = None
    runs: dict[str, _DaskRun] = field(default_factory=dict)
    by_key: dict[str, _DaskRun] = field(default_factory=dict)
    retiring: bool = False
    closed: bool = False


class DaskExecutor:
    """Runs graph bodies on a Dask cluster for one RunManager (see the module docs).

    Created by ``executors.dask_executor_for(manager)``; it connects on the first Dask run
    (starting a ``LocalCluster`` when no address or client is configured) and is closed
    with its manager (``manager.on_close``), by ``%unload_ext`` (once idle) or at exit.
    """

    name = "dask"

    def __init__(self, manager: RunManager, settings: Any) -> None:
        self._manager_ref = weakref.ref(manager)
        self._settings = settings  # a callable returning the current DaskSettings
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None
        self._tokens: dict[str, _DaskRun] = {}
        self._retired: list[_Connection] = []
        self._close_when_idle = False
        self._to_submit: list[tuple[_DaskRun, tuple[bytes, bytes]]] = []
        self._functions: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
        self._submit_scheduled = False
        self.closed = False

    def __repr__(self) -> str:
        conn = self._conn
        where = conn.address if conn is not None else "not connected"
        live = sum(len(c.runs) for c in self._connections())
        return f"<DaskExecutor {where} live={live}{' closed' if self.closed else ''}>"

    # ------------------------------------------------------------------ public
    @property
    def client(self) -> Any:
        """The asynchronous ``distributed.Client`` on the kernel's loop, or None before the
        first Dask run."""
        return self._conn.client if self._conn is not None else None

    @property
    def cluster(self) -> Any:
        """The ``LocalCluster`` this executor started, or None (an address or a client was
        given)."""
        return self._conn.cluster if self._conn is not None else None

    @property
    def scheduler_address(self) -> str | None:
        """The scheduler's address once connected."""
        return self._conn.address if self._conn is not None else None

    def live_count(self) -> int:
        """Dask runs live on this executor."""
        return sum(len(c.runs) for c in self._connections())

    def _connections(self) -> list[_Connection]:
        conns = list(self._retired)
        if self._conn is not None:
            conns.append(self._conn)
        return conns

    # ------------------------------------------------------------- connecting
    async def connect(self) -> _Connection:
        """Connect (starting a LocalCluster if needed) and return the connection; a second
        call returns the same one unless the settings changed.

        Raises:
          ExecutorNotAvailableError: without ``distributed``.
          ExecutorError: if the scheduler cannot be reached (naming its address) or the
            executor is closed.
        """
        if self.closed:
            raise ExecutorError("this RunManager's Dask executor is closed")
        self._close_when_idle = False
        settings = self._settings()
        conn = self._conn
        if conn is not None and conn.settings_key == settings.key() and _usable(conn):
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            conn = self._conn
            settings = self._settings()
            if conn is not None and conn.settings_key == settings.key() and _usable(conn):
                return conn
            if conn is not None:
                self._retire(conn)
            conn = await self._open(settings)
            if self.closed:
                await self._close_connection(conn)
                raise ExecutorError("this RunManager's Dask executor is closed")
            self._conn = conn
            return conn

    async def _open(self, settings: Any) -> _Connection:
        distributed = import_distributed()
        cluster = None
        address = settings.address
        security = None
        if settings.client is not None:
            address = settings.client.scheduler.address
            security = getattr(settings.client, "security", None)
        if not address:
            try:
                cluster = await asyncio.to_thread(
                    _start_local_cluster, dict(settings.cluster_options)
                )
            except Exception as exc:
                raise ExecutorError(
                    f"could not start a Dask LocalCluster ({type(exc).__name__}: {exc}); "
                    "set %config AgJupyter.dask_address = 'tcp://host:8786' (or "
                    "ag_jupyter.runtime.set_dask_address) to use a running scheduler"
                ) from exc
            address = cluster.scheduler_address
        host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        try:
            client = await distributed.Client(
                address,
                asynchronous=True,
                timeout=CONNECT_TIMEOUT_S,
                set_as_default=False,
                security=security,
                # Results straight from the worker on this machine (one hop, not two); a
                # remote cluster's workers may not be reachable: there the scheduler relays.
                direct_to_workers=cluster is not None or host in _LOOPBACK,
            )
        except Exception as exc:
            if cluster is not None:
                await asyncio.to_thread(cluster.close, CLUSTER_CLOSE_TIMEOUT_S)
            raise ExecutorError(
                f"could not connect to the Dask scheduler at {address} within "
                f"{CONNECT_TIMEOUT_S:g} s ({type(exc).__name__}: {exc}); check that it runs "
                "and %config AgJupyter.dask_address (or set_dask_address)"
            ) from None
        # The client batches what it sends for 10 ms after each send: a run submitted
        # right after another run's clean-up would wait for it. 2 ms, as workers do.
        with contextlib.suppress(AttributeError):
            client.scheduler_comm.interval = CLIENT_SEND_INTERVAL_S
        topic = f"ag-jupyter-{uuid.uuid4().hex[:12]}"
        server = distributed.core.Server({"ag_call": self._serve})
        listen = _callback_address(address, client)
        listen_args = {}
        if security is not None and listen.startswith("tls://"):
            listen_args = security.get_listen_args("client")
        try:
            await server.listen(listen, **listen_args)
        except Exception as exc:
            await client.close()
            if cluster is not None:
                await asyncio.to_thread(cluster.close, CLUSTER_CLOSE_TIMEOUT_S)
            raise ExecutorError(
                f"the kernel could not listen on {listen} for its workers' calls "
                f"({type(exc).__name__}: {exc}); set {CALLBACK_ENV} to an address of this "
                "machine the workers can reach, e.g. tcp://10.0.0.5:0"
            ) from None
        conn = _Connection(
            settings_key=settings.key(),
            client=client,
            address=address,
            topic=topic,
            server=server,
            callback=server.address,
            cluster=cluster,
        )
        client.subscribe_topic(topic, lambda event: self._on_event(conn, event))
        client.subscribe_topic("all", lambda event: self._on_cluster_event(conn, event))
        log.info("Dask executor connected to %s (callbacks on %s)", address, server.address)
        return conn

    def _retire(self, conn: _Connection) -> None:
        conn.retiring = True
        if conn is self._conn:
            self._conn = None
        if conn.runs:
            self._retired.append(conn)
        else:
            self._spawn(self._close_connection(conn))

    # ----------------------------------------------------------------- running
    async def run(self, manager: RunManager, live: LiveRun, kwargs: dict[str, Any]) -> Any:
        """Run ``live``'s body on a worker and return its normalised outputs; see
        :class:`~.base.Executor`.

        Raises:
          What the body raised (its worker traceback kept for the record);
          ``asyncio.CancelledError`` when it stopped on a cancel; ``WorkerLostError``,
          ``SchedulerLostError`` or ``ExecutorError`` when the body was lost.
        """
        spec = live.spec
        rid = live.record.run_id
        context = None
        if spec.context_param is not None:
            kwargs = dict(kwargs)
            context = kwargs.pop(spec.context_param, None)
        if live.cancel_requested:
            raise asyncio.CancelledError(f"run {rid} was canceled before it reached Dask")
        conn = await self.connect()
        if live.cancel_requested:
            raise asyncio.CancelledError(f"run {rid} was canceled before it reached Dask")
        loop = asyncio.get_running_loop()
        state = _DaskRun(
            live=live,
            key=f"ag-run-{rid}",
            token=secrets.token_urlsafe(18),
            conn=conn,
            outcome=loop.create_future(),
            context=context,
        )
        conn.runs[rid] = state
        conn.by_key[state.key] = state
        self._tokens[state.token] = state
        manager.update_meta(rid, {"executor": "dask", "dask_scheduler": conn.address})
        payload = {
            "run_id": rid,
            "record": live.record,
            "is_async": spec.is_async,
            "context_param": spec.context_param,
            "inputs": kwargs,
            "topic": conn.topic,
            "callback": conn.callback,
            "token": state.token,
            "cancel_event": _cancel_event(conn, rid),
            "claim_event": _claim_event(conn, rid),
            "cancel_timeout_s": manager.cancel_timeout_s,
        }
        try:
            try:
                # Pickled here (as Dask would: cloudpickle for a notebook's function), so a
                # body or input that cannot travel fails its run at once, alone.
                blobs = (self._function_blob(spec), _dumps(payload))
            except Exception as exc:
                raise ExecutorError(
                    f"run {rid} of graph {spec.name!r} could not be sent to Dask "
                    f"({type(exc).__name__}: {exc}); a body sent to a worker must pickle "
                    "(cloudpickle), and so must its inputs: no open files, sockets or locks "
                    "in its globals or inputs"
                ) from exc
            self._queue_submit(state, blobs)
            outcome = await state.outcome
            return self._result(state, outcome)
        except asyncio.CancelledError:
            if not state.outcome.done():
                # The run's task was cancelled from outside (loop or manager closing):
                # stop the body on the worker too.
                self._stop_remote(state, reason="task_cancelled")
            raise
        finally:
            self._forget(state)

    def _function_blob(self, spec: Any) -> bytes:
        """The pickled body of ``spec`` (cached per registered spec: a graph defined again
        is a new spec)."""
        blob = self._functions.get(spec)
        if blob is None:
            blob = self._functions[spec] = _dumps(spec.function)
        return blob

    def _queue_submit(self, state: _DaskRun, payload: tuple[bytes, bytes]) -> None:
        """Submit on the next loop iteration, with every run started in this one: one
        ``Client.map`` for a burst (the function is pickled once) instead of a ``submit``
        each (~0.2 ms of the kernel's loop per run)."""
        self._to_submit.append((state, payload))
        if not self._submit_scheduled:
            self._submit_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_submits)

    def _flush_submits(self) -> None:
        self._submit_scheduled = False
        batch, self._to_submit = self._to_submit, []
        by_conn: dict[int, list[tuple[_DaskRun, tuple[bytes, bytes]]]] = {}
        for state, payload in batch:
            if not state.outcome.done():  # else cancelled meanwhile: never sent
                by_conn.setdefault(id(state.conn), []).append((state, payload))
        for items in by_conn.values():
            client = items[0][0].conn.client
            try:
                futures = client.map(
                    _task_function(),
                    [blobs[0] for _, blobs in items],
                    [blobs[1] for _, blobs in items],
                    key=[state.key for state, _ in items],
                    pure=False,
                    retries=0,
                )
            except Exception as exc:
                for state, _ in items:
                    state.outcome.set_exception(
                        ExecutorError(
                            f"run {state.live.record.run_id} could not be submitted to the "
                            f"Dask scheduler {state.conn.address} ({type(exc).__name__}: {exc})"
                        )
                    )
                continue
            for (state, _), future in zip(items, futures, strict=True):
                state.future = future
                self._spawn(self._watch_future(state))

    def _result(self, state: _DaskRun, outcome: dict[str, Any]) -> Any:
        live = state.live
        status = outcome.get("status")
        state.watched = bool(outcome.get("watched", True))
        worker = outcome.get("worker") or state.worker
        if status == "ok":
            result = _loads(outcome["result"])
            return live.spec.normalise_outputs(result)
        if status == "cancelled":
            raise asyncio.CancelledError(f"run {live.record.run_id} was canceled on {worker}")
        if status == "lost":
            if live.cancel_requested and not state.worker:
                raise asyncio.CancelledError(f"run {live.record.run_id} was canceled")
            raise WorkerLostError(
                f"the Dask worker that started run {live.record.run_id} (graph "
                f"{live.record.graph_id!r}) left the cluster before the body ended; the "
                "body is not run again. Spawn the run again to retry it.",
                worker=state.worker,
            )
        exc: BaseException | None = None
        blob = outcome.get("error_pickle")
        if blob is not None:
            with contextlib.suppress(Exception):
                loaded = _loads(blob)
                if isinstance(loaded, BaseException):
                    exc = loaded
        if exc is None:
            exc = ExecutorError(
                f"{outcome.get('error_type', 'Error')}: {outcome.get('message', '')} "
                f"(raised on Dask worker {worker}; the exception could not be brought back)"
            )
        with contextlib.suppress(Exception):
            exc.ag_traceback = outcome.get("traceback")  # type: ignore[attr-defined]
        hand_over(exc)  # ``await graph(...)`` callers get the body's own exception
        raise exc

    async def _watch_future(self, state: _DaskRun) -> None:
        distributed = import_distributed()
        future = state.future
        try:
            # Small outcomes come as a "done" event, before the task ends: no gather then.
            finished = asyncio.get_running_loop().create_future()
            loop = asyncio.get_running_loop()

            def on_done(_: Any) -> None:  # called in a thread of Dask's
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, finished)

            future.add_done_callback(on_done)
            await asyncio.wait([finished, state.outcome], return_when=asyncio.FIRST_COMPLETED)
            if state.outcome.done():
                return
            outcome = await future
            if outcome.get("status") == "sent":
                outcome = {
                    "status": "error",
                    "error_type": "ExecutorError",
                    "message": "the worker sent the run's outcome as an event that never "
                    "reached the kernel",
                    "worker": outcome.get("worker"),
                }
        except (asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
            if state.outcome.done():
                return
            reason = getattr(exc, "reason", None)
            if state.live.cancel_requested:
                state.outcome.set_result({"status": "cancelled", "worker": state.worker})
            elif reason == "scheduler-connection-lost" or state.conn.client.status != "running":
                state.outcome.set_exception(self._scheduler_lost(state))
            else:
                state.outcome.set_exception(
                    ExecutorError(
                        f"the Dask task of run {state.live.record.run_id} was cancelled "
                        f"outside ag_jupyter (reason: {reason or 'unknown'}); the body did "
                        "not finish"
                    )
                )
            return
        except distributed.KilledWorker as exc:
            if not state.outcome.done():
                worker = getattr(exc, "last_worker", None)
                address = getattr(worker, "address", None) or state.worker
                state.outcome.set_exception(self._worker_lost(state, address))
            return
        except BaseException as exc:
            if not state.outcome.done():
                if state.conn.client.status != "running":
                    state.outcome.set_exception(self._scheduler_lost(state))
                else:
                    state.outcome.set_exception(
                        ExecutorError(
                            f"Dask could not run run {state.live.record.run_id}'s task "
                            f"({type(exc).__name__}: {exc})"
                        )
                    )
            return
        if not state.outcome.done():
            state.outcome.set_result(outcome)

    def _worker_lost(
        self, state: _DaskRun, worker: str | None, *, expected: bool = False
    ) -> WorkerLostError:
        record = state.live.record
        how = "left the cluster (retired, or its cluster closed)" if expected else "died"
        return WorkerLostError(
            f"Dask worker {worker or '(unknown)'} {how} while running run {record.run_id} "
            f"(graph {record.graph_id!r}); the body did not finish and is not run again. "
            "Spawn the run again to retry it; a worker that dies again may be short of "
            "memory (see the worker's memory_limit).",
            worker=worker,
        )

    def _scheduler_lost(self, state: _DaskRun) -> SchedulerLostError:
        record = state.live.record
        where = f" on worker {state.worker}" if state.worker else ""
        return SchedulerLostError(
            f"the kernel lost its Dask scheduler {state.conn.address} while run "
            f"{record.run_id} (graph {record.graph_id!r}) was live{where}; what became of "
            "its body is unknown. The next Dask run connects again; local runs are not "
            "affected.",
            address=state.conn.address,
        )

    def _forget(self, state: _DaskRun) -> None:
        conn = state.conn
        rid = state.live.record.run_id
        conn.runs.pop(rid, None)
        conn.by_key.pop(state.key, None)
        self._tokens.pop(state.token, None)
        if conn.client.status == "running":
            self._spawn(self._cleanup(state))
        if conn.retiring and not conn.runs and conn in self._retired:
            self._retired.remove(conn)
            self._spawn(self._close_connection(conn))
        if self._close_when_idle and not self.live_count():
            self._spawn(self.aclose())

    async def _cleanup(self, state: _DaskRun) -> None:
        """Release the task and clear the run's events on the scheduler (they would stay
        in its memory)."""
        conn = state.conn
        with contextlib.suppress(Exception):
            if state.future is not None:
                if not state.future.done():
                    await conn.client.cancel([state.future], force=True)
                state.future.release()
            rid = state.live.record.run_id
            names = [_claim_event(conn, rid)]
            if state.cancel_sent or state.watched:  # else it never existed
                names.append(_cancel_event(conn, rid))
            for name in names:
                await conn.client.scheduler.event_clear(name=name)

    # ----------------------------------------------------------------- events
    def _on_event(self, conn: _Connection, event: Any) -> None:
        """A message from a worker body (``dask_worker._Link.emit``), on the kernel's loop."""
        try:
            _, msg = event
            kind = msg.get("k")
            rid = msg.get("run")
            manager = self._manager_ref()
            if manager is None:
                return
            if kind == "log":
                self._log_line(manager, msg.get("line") or {})
                return
            if kind == "step":
                manager.services.record_step(dict(msg["step"]))
                return
            state = conn.runs.get(rid)
            if state is None:
                return
            if kind == "started":
                state.worker = msg.get("worker")
                manager.update_meta(
                    rid,
                    {
                        "worker": state.worker,
                        "worker_pid": msg.get("pid"),
                        "worker_host": msg.get("host"),
                    },
                )
                if state.live.cancel_requested and not state.cancel_sent:
                    self._stop_remote(state, reason=None)
            elif kind == "done":
                if not state.outcome.done():
                    state.outcome.set_result(msg["outcome"])
            elif kind == "cancel_ignored":
                manager.update_meta(rid, {"cancel_ignored": True})
                log.warning(
                    "run %s ignored cancellation for %.1f s on %s; it is left running",
                    rid, manager.cancel_timeout_s, state.worker,
                )
        except Exception:
            log.exception("a Dask event could not be handled: %r", event)

    @staticmethod
    def _log_line(manager: Any, line: dict[str, Any]) -> None:
        buffer = getattr(manager.services, "log_buffer", None)
        if buffer is None or not line.get("run_id"):
            return
        buffer.sink.append(line)
        level = logging.getLevelName(str(line.get("level", "INFO")))
        if isinstance(level, int) and _RUNS_LOGGER.isEnabledFor(level):
            record = _RUNS_LOGGER.makeRecord(
                _RUNS_LOGGER.name, level, "(dask)", 0, str(line.get("message", "")), None,
                None, extra={"run_id": line.get("run_id"), "session_id": line.get("session_id")},
            )
            record.created = float(line.get("time") or time.time())
            _RUNS_LOGGER.handle(record)

    def _on_cluster_event(self, conn: _Connection, event: Any) -> None:
        """The scheduler's own events (topic ``"all"``): a worker leaving fails the runs
        that had started on it."""
        try:
            _, msg = event
            if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
                return
            worker = msg.get("worker")
            for key in msg.get("processing-tasks") or ():
                state = conn.by_key.get(key)
                if state is None or state.outcome.done() or state.worker != worker:
                    continue  # not ours, or not started there yet (Dask runs it elsewhere)
                expected = bool(msg.get("expected"))
                state.outcome.set_exception(self._worker_lost(state, worker, expected=expected))
                self._stop_remote(state, reason=None)
        except Exception:
            log.exception("a Dask cluster event could not be handled: %r", event)

    # -------------------------------------------------------------- cancelling
    def cancel(self, manager: RunManager, live: LiveRun, reason: str) -> bool:
        """Stop ``live``'s body (see the module docs); always True: the run's task ends
        when the worker says the body stopped (or at once if it had not started)."""
        conn_state = None
        for conn in self._connections():
            conn_state = conn.runs.get(live.record.run_id)
            if conn_state is not None:
                break
        if conn_state is not None:
            self._stop_remote(conn_state, reason=reason)
        # Not submitted yet: run() sees live.cancel_requested before submitting.
        return True

    def _stop_remote(self, state: _DaskRun, *, reason: str | None) -> None:
        conn = state.conn
        if state.future is None:  # not sent to Dask yet: it never will be
            if not state.outcome.done():
                state.outcome.set_result({"status": "cancelled", "worker": None})
            return
        if conn.client.status != "running":
            return
        if state.worker is None and not state.claim_set_by_kernel:
            # Not started on a worker (as far as the kernel knows): take the claim, so no
            # worker starts it, and drop the task. A worker that did start it meanwhile
            # still sees the cancel event below.
            state.claim_set_by_kernel = True
            self._spawn(self._cancel_unstarted(state))
        if not state.cancel_sent:
            state.cancel_sent = True
            name = _cancel_event(conn, state.live.record.run_id)
            self._spawn(conn.client.scheduler.event_set(name=name))

    async def _cancel_unstarted(self, state: _DaskRun) -> None:
        conn = state.conn
        rid = state.live.record.run_id
        await conn.client.scheduler.event_set(name=_claim_event(conn, rid))
        if state.worker is None and state.future is not None:
            # Still not started: the body will never run.
            if not state.outcome.done():
                state.outcome.set_result({"status": "cancelled", "worker": None})
            with contextlib.suppress(Exception):
                await conn.client.cancel([state.future], force=True)

    # -------------------------------------------------------------- callbacks
    async def _serve(self, token: str | None = None, call: str | None = None, **fields: Any) -> Any:
        """The kernel's side of a worker body's call (``dask_worker._Link.call``)."""
        state = self._tokens.get(token or "")
        if state is None:
            return {
                "ok": False,
                "error_type": "ExecutorError",
                "message": "this run is not live in the kernel any more (or the token is "
                "wrong): its calls are refused",
            }
        manager = self._manager_ref()
        try:
            if manager is None:
                raise ExecutorError("the kernel's RunManager is gone")
            run_ctx = contextvars.copy_context()
            context = state.context
            if context is None:
                context = state.context = manager.make_context(state.live)
            run_ctx.run(current.enter_run, manager, state.live, context)
            task = asyncio.get_running_loop().create_task(
                self._dispatch(manager, state, context, call, fields), context=run_ctx
            )
            return {"ok": True, "value": await task}
        except Exception as exc:
            try:
                blob = pickle.dumps(exc)
            except Exception:
                blob = None
            return {
                "ok": False,
                "error_pickle": blob,
                "error_type": type(exc).__name__,
                "message": str(exc),
            }

    async def _dispatch(
        self, manager: Any, state: _DaskRun, context: Any, op: str | None, fields: dict[str, Any]
    ) -> Any:
        if op == "service":
            name = fields.get("service")
            if name not in _SERVICES:
                raise ExecutorError(f"service {name!r} is not served to workers")
            service = context.svc(name)
            scope = list(fields.get("scope") or ())
            if name == "kv" and scope:
                service = (
                    service.session_scope(scope[1]) if scope[0] == "session"
                    else service.global_scope()
                )
            method = str(fields.get("method") or "")
            member = getattr(type(service), method, None)
            if method.startswith("_") or not asyncio.iscoroutinefunction(member):
                raise ExecutorError(f"{name}().{method} is not served to workers")
            return await getattr(service, method)(
                *(fields.get("args") or ()), **(fields.get("kwargs") or {})
            )
        if op == "manager":
            method = str(fields.get("method") or "")
            if method not in _MANAGER_METHODS:
                raise ExecutorError(f"RunManager.{method} is not served to workers")
            return await getattr(manager, method)(
                *(fields.get("args") or ()), **(fields.get("kwargs") or {})
            )
        if op == "llm_profile":
            from ..services.llm import configure_profile, llm_prices, resolve_profile

            profile = str(fields.get("profile") or "default")
            overrides = dict(fields.get("overrides") or {})
            found = (
                configure_profile(profile, **overrides) if overrides
                else resolve_profile(profile)
            )
            try:
                prices = llm_prices()
            except ValueError:
                prices = {}
            return {"profile": found, "prices": prices}
        if op == "llm_set_key":
            from ..services.llm import set_key

            set_key(
                fields["provider"], fields.get("model"), fields.get("api_key"),
                fields.get("profile") or "default",
            )
            return None
        raise ExecutorError(f"unknown call {op!r} from a worker")

    # ----------------------------------------------------------------- closing
    def close_when_idle(self) -> None:
        """Close once no Dask run is live (at once if none is); a new Dask run before
        then keeps it open (``%unload_ext`` calls this: live runs keep running). Any
        thread."""
        self._close_when_idle = True
        if not self.live_count():
            self.close_soon()

    def close_soon(self) -> None:
        """Schedule :meth:`aclose` on the manager's loop (from any thread)."""
        manager = self._manager_ref()
        loop = manager.loop if manager is not None else None
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._spawn, self.aclose())

    async def aclose(self) -> None:
        """Fail the Dask runs still live (``ExecutorError``), close the client and the
        callback server, and close the LocalCluster this executor started (its worker
        processes end within a few seconds). Idempotent."""
        if self.closed:
            return
        self.closed = True
        for conn in self._connections():
            for state in list(conn.runs.values()):
                if not state.outcome.done():
                    state.outcome.set_exception(
                        ExecutorError(
                            f"the Dask executor was closed while run "
                            f"{state.live.record.run_id} was live on {conn.address}"
                        )
                    )
                self._stop_remote(state, reason=None)
        await asyncio.sleep(0)  # let the runs' tasks take their outcome
        conns, self._retired, self._conn = self._connections(), [], None
        for conn in conns:
            await self._close_connection(conn)

    async def _close_connection(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        for topic in (conn.topic, "all"):  # else the scheduler writes to a closed comm
            with contextlib.suppress(Exception):
                conn.client.unsubscribe_topic(topic)
        with contextlib.suppress(Exception):
            conn.server.stop()
        try:
            await asyncio.wait_for(conn.client.close(), CLUSTER_CLOSE_TIMEOUT_S)
        except Exception:
            log.debug("closing the Dask client failed", exc_info=True)
        if conn.cluster is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(conn.cluster.close, CLUSTER_CLOSE_TIMEOUT_S)

    # ---------------------------------------------------------------- helpers
    _background: ClassVar[set[asyncio.Task[Any]]] = set()

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        DaskExecutor._background.add(task)
        task.add_done_callback(_done)


def _done(task: asyncio.Task[Any]) -> None:
    DaskExecutor._background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("Dask executor background task failed", exc_info=task.exception())


def _settle(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)


def _usable(conn: _Connection) -> bool:
    return not conn.closed and conn.client.status == "running"


def _cancel_event(conn: _Connection, run_id: str) -> str:
    return f"{conn.topic}-cancel-{run_id}"


def _claim_event(conn: _Connection, run_id: str) -> str:
    return f"{conn.topic}-claim-{run_id}"


def _task_function() -> Any:
    from .dask_worker import run_graph_task

    return run_graph_task


def _dumps(value: Any) -> bytes:
    """cloudpickle, as Dask pickles a task (functions of ``__main__`` or of modules
    registered with ``cloudpickle.register_pickle_by_value`` by value, others by
    reference), without Dask's log line carrying the value's repr when it fails."""
    import cloudpickle

    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(blob: bytes) -> Any:
    return pickle.loads(blob)


def _callback_address(scheduler_address: str, client: Any) -> str:
    """Where the kernel listens for its workers: ``AG_DASK_CALLBACK_ADDRESS``, else the
    local address of the kernel's connection to the scheduler (the interface the cluster
    is reached through), any free port."""
    configured = os.environ.get(CALLBACK_ENV, "").strip()
    if configured:
        return configured
    scheme = scheduler_address.split("://", 1)[0] if "://" in scheduler_address else "tcp"
    if scheme not in ("tcp", "tls"):
        return "tcp://127.0.0.1:0"
    host = "127.0.0.1"
    with contextlib.suppress(Exception):
        local = client.scheduler_comm.comm.local_address  # e.g. tcp://10.0.0.5:53422
        host = local.split("://", 1)[1].rsplit(":", 1)[0]
    return f"{scheme}://{host}:0"
