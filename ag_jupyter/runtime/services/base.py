"""``Service``: the base class of custom context services, as AetherGraph 0.1.0a15's
``BaseContextService`` (``core/runtime/base_service.py``; exported as ``aethergraph.Service``).

Register an instance with ``register_context_service("name", MyService())`` and reach it as
``context.name()`` (or ``context.svc("name")``) from any graph body, tool or session::

    class Greeter(Service):
        def greet(self, name: str) -> str:
            return f"Hello, {name}! (run={self.ctx().run_id})"

What it gives a subclass:

- ``self.ctx()``: the ``NodeContext`` of the code calling the service (the run or session it
  belongs to), or the one passed to :meth:`Service.bind`.
- ``self.critical()``: a decorator that runs a method under the service's mutex
  (``self._lock``, an ``asyncio.Lock``); ``AsyncRWLock`` for many readers / one writer.
- ``await self.run_blocking(fn, *args)``: a blocking call in a worker thread.
- ``start()`` / ``close()``: lifecycle hooks, never called automatically (as in 0.1.0a15).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from .. import current

__all__ = ["AsyncRWLock", "BaseContextService", "Service", "ServiceHandle", "maybe_await"]


async def maybe_await(value: Any) -> Any:
    """``await value`` if it is awaitable, else ``value`` (0.1.0a15's helper)."""
    if inspect.isawaitable(value):
        return await value
    return value


# Bindings made with Service.bind(): id(service) -> (scope at bind time, context). One
# variable for every service, copied on write, so binds in one task never leak into another.
_bindings: contextvars.ContextVar[dict[int, tuple[Any, Any]] | None] = contextvars.ContextVar(
    "ag_jupyter_service_bindings", default=None
)


class BaseContextService:
    """Batteries-included base of custom context services (alias :data:`Service`).

    Subclasses may define ``__init__`` without calling ``super().__init__()``: nothing here
    needs it (0.1.0a15 needs it for ``_lock``).
    """

    def __init__(self) -> None:
        self._closing = False

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Async start-up hook (not called automatically; call it at start-up)."""
        return None

    async def close(self) -> None:
        """Async shut-down hook (not called automatically); marks the service closing."""
        self._closing = True
        return None

    # ------------------------------------------------------------------ binding
    def bind(self, context: Any = None, **kwargs: Any) -> BaseContextService:
        """Bind ``context`` for the code running now (this task or thread, and what it
        starts) and return the service itself; ``context.<name>()`` and
        ``context.svc(name)`` call it. ``bind(context=ctx)`` (0.1.0a15's keyword form) and
        ``bind(ctx)`` both work.

        Raises:
          TypeError: for a keyword other than ``context``.
        """
        if kwargs:
            extra = set(kwargs) - {"context"}
            if extra:
                raise TypeError(f"bind() got unexpected keyword(s) {sorted(extra)}")
            context = kwargs["context"]
        bindings = dict(_bindings.get() or {})
        bindings[id(self)] = (current.current_scope(), context)
        _bindings.set(bindings)
        return self

    def ctx(self) -> Any:
        """The ``NodeContext`` this call belongs to: the one bound with :meth:`bind` in this
        same run or session, else the current run's or session's (so a service shared by
        concurrent runs sees each caller's own context, even when a method is called on an
        instance fetched earlier), else the one bound outside any run.

        Raises:
          RuntimeError: outside any run or session when nothing was bound.
        """
        scope = current.current_scope()
        bound = (_bindings.get() or {}).get(id(self))
        if bound is not None and bound[0] is scope and bound[1] is not None:
            return bound[1]
        if scope is not None:
            return scope.context()
        if bound is not None and bound[1] is not None:
            return bound[1]
        raise RuntimeError(
            f"{type(self).__name__}.ctx(): no context is bound. Call the service from a graph "
            "body, a tool or an open_session() block (context.<name>()), or bind one with "
            "service.bind(context=ctx)."
        )

    # -------------------------------------------------------------- concurrency
    @property
    def _lock(self) -> asyncio.Lock:
        """The service-wide mutex (an ``asyncio.Lock``), one per event loop so a service
        registered once works on the loops of successive ``asyncio.run`` calls too."""
        state = self.__dict__
        override = state.get("_ag_lock_override")
        if override is not None:
            return override  # type: ignore[no-any-return]
        with _locks_guard:
            locks = state.get("_ag_locks")
            if locks is None:
                locks = state["_ag_locks"] = weakref.WeakKeyDictionary()
            try:
                loop: Any = asyncio.get_running_loop()
            except RuntimeError:
                loop = _NO_LOOP
            lock = locks.get(loop)
            if lock is None:
                lock = locks[loop] = asyncio.Lock()
            return lock  # type: ignore[no-any-return]

    @_lock.setter
    def _lock(self, value: asyncio.Lock) -> None:
        self.__dict__["_ag_lock_override"] = value

    def critical(self) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]]:
        """A decorator running a function (sync or async) under the service's mutex; the
        wrapped function is async. Bind it in ``__init__``, as the docs do::

            self.incr = self.critical()(self.incr)

        ``@Service.critical`` on a method in the class body works too (the docs' tip; the
        mutex is then the instance's)."""
        if not isinstance(self, BaseContextService):  # @Service.critical on a method
            return _critical_method(self)  # type: ignore[arg-type, return-value]

        def deco(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            @functools.wraps(fn)
            async def wrapped(*args: Any, **kwargs: Any) -> Any:
                async with self._lock:
                    return await maybe_await(fn(*args, **kwargs))

            return wrapped

        return deco

    async def run_blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the blocking ``fn(*args, **kwargs)`` in a worker thread and return its result
        (``asyncio.to_thread``: the thread sees the caller's run, so its prints and tool
        steps are the run's)."""
        return await asyncio.to_thread(fn, *args, **kwargs)


class _NoLoop:
    """Key of the lock used outside any event loop."""


_NO_LOOP = _NoLoop()
_locks_guard = threading.Lock()


def _critical_method(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def wrapped(service: BaseContextService, *args: Any, **kwargs: Any) -> Any:
        async with service._lock:
            return await maybe_await(method(service, *args, **kwargs))

    return wrapped


#: The name AetherGraph exports (``from aethergraph import Service``).
Service = BaseContextService


class AsyncRWLock:
    """Many readers or one writer (0.1.0a15's ``AsyncRWLock``)::

        async with await lock.read(): ...
        async with await lock.write(): ...
    """

    def __init__(self) -> None:
        self._readers = 0
        self._r_lock = asyncio.Lock()
        self._w_lock = asyncio.Lock()

    async def read(self) -> Any:
        """An async context manager holding a read share."""
        lock = self

        class _Guard:
            async def __aenter__(self) -> None:
                async with lock._r_lock:
                    lock._readers += 1
                    if lock._readers == 1:
                        await lock._w_lock.acquire()

            async def __aexit__(self, *exc: object) -> None:
                async with lock._r_lock:
                    lock._readers -= 1
                    if lock._readers == 0:
                        lock._w_lock.release()

        return _Guard()

    async def write(self) -> asyncio.Lock:
        """The writer lock (``async with await lock.write():``)."""
        return self._w_lock


class ServiceHandle:
    """What ``context.<name>`` returns for a custom service (0.1.0a15's ``_ServiceHandle``):
    ``context.name()`` is the (bound) service, ``context.name(arg, ...)`` calls it (a
    service with ``__call__``), and ``context.name.method(...)`` reaches its attributes.

    Raises (calling it with arguments):
      TypeError: if the service is not callable.
    """

    __slots__ = ("_name", "_svc")

    def __init__(self, name: str, service: Any) -> None:
        self._name = name
        self._svc = service

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._svc, attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            return self._svc
        if callable(self._svc):
            return self._svc(*args, **kwargs)
        raise TypeError(
            f"service {self._name!r} is not callable; call context.{self._name}() with no "
            "arguments to get the service, then call its methods"
        )

    def __repr__(self) -> str:
        return f"<ServiceHandle {self._name}: {self._svc!r}>"
