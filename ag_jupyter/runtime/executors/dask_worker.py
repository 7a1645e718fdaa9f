"""The worker side of ``executor="dask"``: what runs inside a Dask worker process.

:func:`run_graph_task` is the Dask task of every Dask run. It gives the body a real
``NodeContext`` whose parts reach the kernel that owns the run:

- ``logger()`` lines, ``print()`` output and ``@tool`` / LLM steps go to the kernel as
  Dask events (``Worker.log_event`` on the kernel's topic; the kernel's client subscribes
  with ``Client.subscribe_topic``), so they land in the run's logs within milliseconds.
- ``runner().is_cancel_requested()`` / ``raise_if_cancel_requested()`` read a flag set when
  the run's cancel ``distributed.Event`` fires; an async body runs as a task of an event
  loop of its own (in the Dask task's thread) and that task is cancelled then, again every
  0.1 s for up to the manager's ``cancel_timeout_s`` if the body swallows it.
- ``kv()``, ``memory()``, ``artifacts()``, ``llm()`` profiles and ``runner()`` spawns are
  calls to the kernel: a small RPC the kernel serves over ``distributed``'s own comm
  (``distributed.core.Server``), authenticated by a per-run token. Only the async methods
  of kv / memory / artifacts cross (plus ``save_file``, read here and sent as bytes).

Nothing here runs in the kernel; this module is imported by the worker when it unpickles
the task (``ag_jupyter`` must be installed on the workers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import pickle
import socket
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import cloudpickle
from distributed import get_worker

from .. import current
from ..errors import ExecutorError, ServiceNotOnWorkerError
from ..node_context import NodeContext
from ..services.artifacts import ArtifactStore
from ..services.kv import KVStore
from ..services.llm import EnvLLMProvider, LLMService, set_llm_prices
from ..services.logger import RunLogBuffer, RunLoggerService
from ..services.memory import SessionMemory

__all__ = ["WORKER_SERVICES", "run_graph_task"]

#: What a body on a worker can use (named by :class:`ServiceNotOnWorkerError`).
WORKER_SERVICES = ("logger", "llm", "kv", "memory", "artifacts", "runner()")
_REMOTE_CLASSES: dict[str, type] = {
    "kv": KVStore,
    "memory": SessionMemory,
    "artifacts": ArtifactStore,
}
RECANCEL_EVERY_S = 0.1
#: Seconds one wait for the cancel event lasts on the scheduler (then it is asked again).
CANCEL_POLL_S = 1.0
#: Seconds a body runs before its cancel watcher starts (see ``_Body.start_watching``).
WATCH_AFTER_S = 0.02
#: An outcome up to this size goes to the kernel as an event (kept in the scheduler's
#: bounded event log, like log lines); a larger one is gathered from the worker.
EVENT_OUTCOME_MAX_BYTES = 64 * 1024


def _not_on_worker(what: str) -> ServiceNotOnWorkerError:
    return ServiceNotOnWorkerError(
        f"{what} is not available in a graph body running on a Dask worker "
        f"(executor='dask'): it lives in the kernel. On a worker a body has "
        f"{', '.join(WORKER_SERVICES)}. Run this graph with executor='local' "
        "(@graph_fn(..., executor='local')) to use it."
    )


class _Link:
    """The body's line to the kernel: events (one way) and calls (request / reply)."""

    def __init__(self, worker: Any, payload: dict[str, Any]) -> None:
        self.worker = worker
        self.loop: asyncio.AbstractEventLoop = worker.loop.asyncio_loop
        self.run_id: str = payload["run_id"]
        self.topic: str = payload["topic"]
        self.callback: str = payload["callback"]
        self.token: str = payload["token"]

    def emit(self, kind: str, **data: Any) -> None:
        """Send an event to the kernel (never blocks; ordered before the task's result)."""
        try:
            self.worker.log_event(self.topic, {"k": kind, "run": self.run_id, **data})
        except Exception:  # a line that cannot be sent must never fail the body
            pass

    async def _call(self, op: str, fields: dict[str, Any]) -> Any:
        try:
            reply = await self.worker.rpc(self.callback).ag_call(
                token=self.token, call=op, **fields
            )
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(
                f"the worker {self.worker.address} could not reach the kernel at "
                f"{self.callback} for {op!r} ({type(exc).__name__}: {exc}). Workers must "
                "be able to connect to the kernel to use kv/memory/artifacts/llm/runner(); "
                "set AG_DASK_CALLBACK_ADDRESS in the kernel's environment to an address "
                "the workers can reach (e.g. tcp://10.0.0.5:0)."
            ) from None
        if reply.get("ok"):
            return reply.get("value")
        raise _error_from(reply)

    def call(self, op: str, **fields: Any) -> concurrent.futures.Future[Any]:
        """Start a call on the worker's loop (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(self._call(op, fields), self.loop)

    async def acall(self, op: str, **fields: Any) -> Any:
        """A call awaited from the body's own loop (or the worker's)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return await self._call(op, fields)
        return await asyncio.wrap_future(self.call(op, **fields))

    def call_blocking(self, op: str, **fields: Any) -> Any:
        """A call waited for in this thread (never the worker's loop thread)."""
        return self.call(op, **fields).result()

    async def event_is_set(self, name: str) -> bool:
        return bool(await self.worker.scheduler.event_is_set(name=name))

    async def event_set(self, name: str) -> None:
        await self.worker.scheduler.event_set(name=name)


def _error_from(reply: dict[str, Any]) -> BaseException:
    blob = reply.get("error_pickle")
    if blob is not None:
        try:
            exc = pickle.loads(blob)
            if isinstance(exc, BaseException):
                return exc
        except Exception:
            pass
    return ExecutorError(f"{reply.get('error_type', 'Error')}: {reply.get('message', '')}")


def _plain(value: Any) -> Any:
    """Enums as their values and tuples as lists, for a msgpack message to the kernel."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    enum_value = getattr(value, "value", None)
    if isinstance(value, str) and isinstance(enum_value, str):
        return enum_value
    return value


# ----------------------------------------------------------------- worker services
class _LogSink:
    """Where the worker's ``RunLogBuffer`` puts lines: events to the kernel."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def append(self, line: dict[str, Any]) -> None:
        self.link.emit("log", line=line)

    def lines(self, run_id: str | None = None, **_: Any) -> list[dict[str, Any]]:
        return []


class RemoteService:
    """``context.kv()`` / ``memory()`` / ``artifacts()`` on a worker: each async method is
    a call to the kernel, where the run's own (bound) service executes it."""

    def __init__(self, link: _Link, name: str, scope: Iterable[Any] = ()) -> None:
        self._link = link
        self._name = name
        self._scope = list(scope)

    def __repr__(self) -> str:
        return f"<{self._name} of run {self._link.run_id} (through the kernel)>"

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        if self._name == "kv" and attr == "session_scope":
            return lambda session_id=None: RemoteService(
                self._link, "kv", ["session", session_id]
            )
        if self._name == "kv" and attr == "global_scope":
            return lambda: RemoteService(self._link, "kv", ["global"])
        if self._name == "artifacts" and attr in ("save_file", "save"):
            return self._save_file
        cls = _REMOTE_CLASSES[self._name]
        member = inspect.getattr_static(cls, attr, None)
        if member is None:
            raise AttributeError(f"{cls.__name__} has no attribute {attr!r}")
        if inspect.iscoroutinefunction(member):

            async def call(*args: Any, **kwargs: Any) -> Any:
                return await self._link.acall(
                    "service",
                    service=self._name,
                    scope=self._scope,
                    method=attr,
                    args=_plain(list(args)),
                    kwargs=_plain(kwargs),
                )

            call.__name__ = attr
            call.__doc__ = getattr(member, "__doc__", None)
            return call
        raise _not_on_worker(
            f"context.{self._name}().{attr} (a synchronous part of the kernel's "
            f"{cls.__name__}; its async methods do work on workers)"
        )

    async def _save_file(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        cleanup: bool | None = None,
        kind: str = "file",
        **kw: Any,
    ) -> Any:
        """``artifacts().save_file(path)`` on a worker: the file is read here (on the
        worker) and saved in the kernel's workspace as bytes."""
        source = Path(path)
        data = await asyncio.to_thread(source.read_bytes)
        if name is None and kw.get("suggested_uri") is None:
            name = source.name or None
        artifact = await self._link.acall(
            "service",
            service="artifacts",
            scope=[],
            method="save_bytes",
            args=[data],
            kwargs=_plain({"name": name, "kind": kind, **kw}),
        )
        if cleanup:
            await asyncio.to_thread(source.unlink, missing_ok=True)
        return artifact


class WorkerLLMProvider(EnvLLMProvider):
    """``context.llm(profile, **overrides)`` on a worker: the profile is the kernel's (it
    is resolved there, overrides applied there as for a local run, and sent here with its
    key over the run's RPC); the endpoint is called from the worker."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link
        self._profiles: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    def service(self, profile: str = "default", **overrides: Any) -> LLMService:
        given = tuple(sorted((k, v) for k, v in overrides.items() if v is not None))
        found = self._profiles.get((profile, given))
        if found is None:
            reply = self._link.call_blocking(
                "llm_profile", profile=profile, overrides=dict(given)
            )
            found = reply["profile"]
            set_llm_prices(reply.get("prices") or None)
            self._profiles[(profile, given)] = found
        with self._lock:
            svc = self._services.get(found)
            if svc is None:
                svc = self._services[found] = LLMService(profile=found)
            return svc

    def set_key(
        self,
        provider: str,
        model: str | None = None,
        api_key: str | None = None,
        profile: str = "default",
    ) -> LLMService:
        self._link.call_blocking(
            "llm_set_key", provider=provider, model=model, api_key=api_key, profile=profile
        )
        self._profiles.clear()
        return self.service(profile)


class WorkerServiceHub:
    """The service hub of a body on a worker (the kernel's ``ServiceHub`` counterpart)."""

    def __init__(self, link: _Link) -> None:
        self._link = link
        self.log_buffer = RunLogBuffer(_LogSink(link))
        self._logger = RunLoggerService(self.log_buffer)
        self._llm = WorkerLLMProvider(link)

    def get(self, name: str, context: Any) -> Any:
        if name == "logger":
            return self._logger.bind(context)
        if name == "llm":
            return self._llm.bind(context)
        if name in _REMOTE_CLASSES:
            return RemoteService(self._link, name)
        raise _not_on_worker(f"the {name!r} service")

    def lookup(self, name: str) -> Any:
        return None

    def names(self) -> list[str]:
        return ["artifacts", "kv", "llm", "logger", "memory"]

    def require_kernel(self, what: str) -> None:
        """Raise ``ServiceNotOnWorkerError`` naming ``what`` (e.g. ``"context.channel()"``):
        it lives in the kernel, and this hub is a worker body's."""
        raise _not_on_worker(what)

    def mcp(self, name: str | None, context: Any) -> Any:
        raise _not_on_worker(f"context.mcp({name!r})")

    def record_step(self, step: dict[str, Any]) -> None:
        self._link.emit("step", step=step)

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        return []

    async def aclose(self) -> None:
        await self._llm.aclose()


class WorkerManager:
    """The ``manager`` of a worker body's context: ``runner()`` and nested ``await
    graph(...)`` calls are forwarded to the kernel's RunManager, which runs them (child
    runs, with this run as their parent, on whatever executor they choose)."""

    def __init__(self, link: _Link, services: WorkerServiceHub) -> None:
        self._link = link
        self.services = services

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's own loop, where blocking ``run(...)`` from a sync body waits."""
        return self._link.loop

    async def _manager(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._link.acall(
            "manager", method=method, args=_plain(list(args)), kwargs=_plain(kwargs)
        )

    async def submit_run(self, graph_id: str, **kwargs: Any) -> Any:
        return await self._manager("submit_run", graph_id, **kwargs)

    async def wait_run(self, run_id: str, **kwargs: Any) -> Any:
        return await self._manager("wait_run", run_id, **kwargs)

    async def run_and_wait(self, graph_id: str, **kwargs: Any) -> Any:
        return await self._manager("run_and_wait", graph_id, **kwargs)

    async def cancel_run(self, run_id: str, **kwargs: Any) -> Any:
        return await self._manager("cancel_run", run_id, **kwargs)

    async def get_record(self, run_id: str) -> Any:
        return await self._manager("get_record", run_id)

    def request_cancel(self, run_id: str, *, reason: str = "user_requested") -> None:
        self._link.call("manager", method="cancel_run", args=[run_id], kwargs={"reason": reason})

    def make_context(self, live: Any) -> Any:
        raise RuntimeError("a worker body's context is built by run_graph_task")


class WorkerLive:
    """What ``NodeContext`` and the current-run scope need of a run on a worker."""

    __slots__ = ("cancel_requested", "record")

    def __init__(self, record: Any) -> None:
        self.record = record
        self.cancel_requested = False


# ----------------------------------------------------------------------- the task
class _Body:
    """One run of a body on this worker: its context, cancel watcher and outcome."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.worker = get_worker()
        self.link = _Link(self.worker, payload)
        self.live = WorkerLive(payload["record"])
        self.hub = WorkerServiceHub(self.link)
        self.manager = WorkerManager(self.link, self.hub)
        record = payload["record"]
        self.context = NodeContext(
            run_id=record.run_id,
            graph_id=record.graph_id,
            session_id=record.session_id,
            agent_id=record.agent_id,
            app_id=record.app_id,
            manager=self.manager,  # type: ignore[arg-type]
            services=self.hub,
            live=self.live,  # type: ignore[arg-type]
        )
        self.done = False
        self.watching = False
        self._timer: asyncio.TimerHandle | None = None
        self._watch: asyncio.Future[Any] | None = None
        self.on_cancel: Callable[[], None] = self._flag_only

    def _flag_only(self) -> None:
        self.live.cancel_requested = True

    # The cancel watcher: one wait on the run's cancel Event at a time, started only once
    # the body has run WATCH_AFTER_S seconds (a short body costs no scheduler call for it;
    # a cancel asked before then is seen at once by the first wait).
    def start_watching(self) -> None:
        """Arm the watcher (from the task's thread)."""
        self.link.loop.call_soon_threadsafe(self._arm)

    def _arm(self) -> None:
        if not self.done:
            self._timer = self.link.loop.call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        self._timer = None
        if not self.done:
            self.watching = True
            self._watch = asyncio.ensure_future(self._watch_cancel())

    async def _watch_cancel(self) -> None:
        name = self.payload["cancel_event"]
        while not self.done:
            try:
                fired = await self.worker.scheduler.event_wait(name=name, timeout=CANCEL_POLL_S)
            except Exception:
                await asyncio.sleep(CANCEL_POLL_S)
                continue
            if fired and not self.done:
                self.on_cancel()
                return

    def stop_watching(self) -> None:
        """Called when the body ended (task thread): a watcher not started is dropped; one
        waiting on the scheduler is released by setting the event ourselves (cancelling an
        RPC in flight makes the scheduler log an error; the kernel clears the event with
        the run). Waited for, so it happens before the result is sent."""
        self.done = True
        if not self.watching:  # _start checks done: the timer is all there is to drop
            self.link.loop.call_soon_threadsafe(self._drop_timer)
            return

        async def stop() -> bool:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            watch = self._watch
            if watch is None or watch.done():
                return False
            await self.link.event_set(self.payload["cancel_event"])
            return True

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.link.loop).result(5)
        except Exception:
            if self._watch is not None:
                self.link.loop.call_soon_threadsafe(self._watch.cancel)

    def _drop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def claim(self) -> bool:
        """Whether this attempt may run the body: False if an earlier attempt (on a worker
        that died) or a cancel already took the run. One call waited for (is the claim
        event set?); setting it is not waited for: a second attempt exists only after the
        first one's worker died."""
        name = self.payload["claim_event"]
        loop = self.link.loop

        async def taken() -> bool:
            return await self.link.event_is_set(name)

        if asyncio.run_coroutine_threadsafe(taken(), loop).result():
            return False
        asyncio.run_coroutine_threadsafe(self.link.event_set(name), loop)
        return True

    def kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.payload["inputs"])
        param = self.payload["context_param"]
        if param is not None:
            kwargs[param] = self.context
        return kwargs

    def run_sync(self) -> Any:
        fn = self.payload["function"]
        scope = current.enter_run(self.manager, self.live, self.context)
        try:
            return fn(**self.kwargs())
        finally:
            scope.flush_output()

    def run_async(self) -> Any:
        fn = self.payload["function"]
        timeout_s = float(self.payload["cancel_timeout_s"])

        async def main() -> Any:
            loop = asyncio.get_running_loop()
            scope = current.enter_run(self.manager, self.live, self.context)
            task = loop.create_task(fn(**self.kwargs()))

            def recancel(deadline: float) -> None:
                if task.done():
                    return
                if loop.time() >= deadline:
                    self.link.emit("cancel_ignored")
                    return
                task.cancel("ag_jupyter cancel_run: cancelled again (the body swallowed it)")
                loop.call_later(RECANCEL_EVERY_S, recancel, deadline)

            def cancel_now() -> None:
                self.live.cancel_requested = True
                if not task.done():
                    task.cancel("ag_jupyter cancel_run")
                    loop.call_later(RECANCEL_EVERY_S, recancel, loop.time() + timeout_s)

            def on_cancel() -> None:  # called on the worker's loop
                self.live.cancel_requested = True
                loop.call_soon_threadsafe(cancel_now)

            self.on_cancel = on_cancel
            try:
                return await task
            finally:
                scope.flush_output()
                await self.hub.aclose()

        return asyncio.run(main())


_functions: dict[bytes, Any] = {}


def _function(blob: bytes) -> Any:
    """The body pickled in ``blob`` (the last few kept: a burst of runs of one graph
    unpickles it once)."""
    fn = _functions.get(blob)
    if fn is None:
        fn = pickle.loads(blob)
        if len(_functions) >= 32:
            _functions.pop(next(iter(_functions)))
        _functions[blob] = fn
    return fn


def _dumps(value: Any) -> bytes:
    return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _pickled_error(exc: BaseException) -> bytes | None:
    try:
        return _dumps(exc)
    except Exception:
        return None


def run_graph_task(function: bytes, payload: bytes) -> dict[str, Any]:
    """The Dask task of one run: run the graph body here and say how it ended.

    ``function`` (the graph's body) and ``payload`` (its inputs, record, token, event names,
    the kernel's addresses) come pickled by the kernel.

    The outcome is ``{"status": "ok", "result": <pickled return value>}``, ``{"status":
    "error", "error_type", "message", "traceback", "error_pickle"}``, ``{"status":
    "cancelled"}``, or ``{"status": "lost"}`` when an earlier attempt (whose worker died)
    or a cancel had already taken the run, so the body must not run again; each carries
    ``worker`` (this worker's address). Up to ``EVENT_OUTCOME_MAX_BYTES`` it is sent as a
    ``done`` event and the task returns ``{"status": "sent"}``; else the task returns it.
    """
    fields = pickle.loads(payload)
    fields["function"] = _function(function)
    body = _Body(fields)
    outcome = _run_body(body)
    if outcome["status"] != "lost" and _outcome_size(outcome) <= EVENT_OUTCOME_MAX_BYTES:
        # By the event stream, ahead of the task's own end: the kernel needs no gather.
        body.link.emit("done", outcome=outcome)
        return {"status": "sent", "worker": outcome.get("worker")}
    return outcome


def _outcome_size(outcome: dict[str, Any]) -> int:
    return sum(len(v) for v in outcome.values() if isinstance(v, bytes | str))


def _run_body(body: _Body) -> dict[str, Any]:
    fields = body.payload
    worker = body.worker.address
    if not body.claim():
        return {"status": "lost", "worker": worker}
    body.link.emit("started", worker=worker, pid=os.getpid(), host=socket.gethostname())
    body.start_watching()
    try:
        # A copy of the thread's context: the current run must not outlive the task in
        # this pool thread.
        runner = body.run_async if fields["is_async"] else body.run_sync
        result = contextvars.copy_context().run(runner)
        try:
            blob = _dumps(result)
        except Exception as exc:
            return {
                "status": "error",
                "worker": worker,
                "error_type": "ExecutorError",
                "message": (
                    f"the outputs of graph {fields['record'].graph_id!r} could not be "
                    f"serialised on the worker to go back to the kernel ({type(exc).__name__}: "
                    f"{exc}); return JSON-like values (dicts, lists, str, numbers) or "
                    "objects that pickle"
                ),
                "traceback": "".join(traceback.format_exception(exc)),
                "error_pickle": None,
                "watched": body.watching,
            }
        return {"status": "ok", "worker": worker, "result": blob, "watched": body.watching}
    except asyncio.CancelledError:
        return {"status": "cancelled", "worker": worker, "watched": body.watching}
    except BaseException as exc:
        tb = exc.__traceback__
        # Drop this module's frames: the traceback starts at the body.
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        text = "".join(traceback.format_exception(type(exc), exc, tb))
        return {
            "status": "error",
            "worker": worker,
            "error_type": type(exc).__name__,
            "message": str(exc),
            "traceback": f"(on Dask worker {worker})\n{text}",
            "error_pickle": _pickled_error(exc),
            "watched": body.watching,
        }
    finally:
        body.stop_watching()
