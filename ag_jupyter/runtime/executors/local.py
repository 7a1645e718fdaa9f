"""The local executor: what runs did before executors existed, unchanged.

Async bodies run as the run's own task on the manager's loop; sync bodies in a daemon
thread each (so a body that never checks its cancel flag cannot keep the interpreter
alive), in a copy of the run's context, so the body sees its run (``current.py``).
Cancel is the manager's: a task cancel for async bodies, the cooperative flag for sync
ones (see ``RunManager.cancel_run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from typing import Any

__all__ = ["LOCAL_EXECUTOR", "LocalExecutor", "run_in_thread"]


def run_in_thread(
    loop: asyncio.AbstractEventLoop, live: Any, kwargs: dict[str, Any]
) -> asyncio.Future[Any]:
    """Run ``live.spec.fn(**kwargs)`` in a new daemon thread; the returned future (shielded)
    settles on ``loop`` with its result, its exception, or cancelled when the body raised
    ``CancelledError`` (``raise_if_cancel_requested()``)."""
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
    # not keep the interpreter from exiting, as a pool's non-daemon worker would. It runs
    # in a copy of this task's context, so the body sees the current run (current.py).
    threading.Thread(
        target=contextvars.copy_context().run,
        args=(worker,),
        name=f"ag-run:{live.record.run_id}",
        daemon=True,
    ).start()
    return asyncio.shield(future)


class LocalExecutor:
    """Async bodies on the manager's loop, sync bodies in a thread of this process."""

    name = "local"

    async def run(self, manager: Any, live: Any, kwargs: dict[str, Any]) -> Any:
        """Run the body here; see :class:`~.base.Executor`."""
        if live.spec.is_async:
            return await live.spec.fn(**kwargs)
        # The run's own task is never cancelled for a sync graph (see cancel_run), so this
        # only raises CancelledError if the loop itself is shutting down.
        loop = manager.loop
        assert loop is not None
        return await run_in_thread(loop, live, kwargs)

    def cancel(self, manager: Any, live: Any, reason: str) -> bool:
        """False: the manager cancels local runs itself."""
        return False

    def __repr__(self) -> str:
        return "<LocalExecutor>"


#: The one local executor (it holds no state).
LOCAL_EXECUTOR = LocalExecutor()
