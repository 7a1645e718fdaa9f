"""Running a coroutine to completion from synchronous code (magics), without ever
blocking the kernel's event loop by surprise.

- No loop running (terminal IPython, a plain ``InteractiveShell``): IPython's own loop
  runner runs it, as it would a cell with top-level ``await``.
- Inside a kernel (the loop is running the current cell): a blocking wait would stop the
  loop that runs the runs, so by default this raises ``UsageError`` saying to use ``await``.
  With ``AgJupyter.blocking_waits = 'nest_asyncio2'`` the loop is patched on first use
  (never at load) with nest-asyncio2, the maintained fork ipykernel depends on, and the
  coroutine runs re-entrantly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from IPython.core.error import UsageError


def kernel_loop_is_running() -> bool:
    """True when called from code that an asyncio loop is running (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run_blocking(
    shell: Any,
    make_coro: Callable[[], Coroutine[Any, Any, Any]],
    *,
    what: str,
    alternative: str,
    config: Any = None,
    may_step: bool = False,
) -> Any:
    """Run ``make_coro()`` to completion from sync code and return its result.

    Args:
      shell: the InteractiveShell (its ``loop_runner`` is used when no loop runs).
      make_coro: builds the coroutine (called only when it can be run).
      what: what the user asked for, for the error message.
      alternative: the non-blocking way to do it, for the error message.
      config: the extension's ``AgJupyter`` settings (``blocking_waits``).
      may_step: the coroutine is expected to finish without suspending; try that first
        when the loop is running.

    Raises:
      UsageError: inside a running loop when blocking waits are not enabled (and the
        coroutine needed to suspend).
    """
    if not kernel_loop_is_running():
        return shell.loop_runner(make_coro())
    mode = getattr(config, "blocking_waits", "error")
    if mode == "nest_asyncio2":
        import nest_asyncio2

        loop = asyncio.get_running_loop()
        nest_asyncio2.apply(loop)
        return loop.run_until_complete(make_coro())
    if may_step:
        coro = make_coro()
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()
    raise UsageError(
        f"{what} would have to block the kernel's event loop, which is the loop that runs "
        f"your runs; instead, {alternative}. To allow blocking waits from synchronous code, "
        "run `%config AgJupyter.blocking_waits = 'nest_asyncio2'` first."
    )
