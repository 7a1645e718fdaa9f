"""What an executor is: where a run's body executes, while the RunManager keeps the run.

The manager owns every run (its record, status, slot, waiters and store); an executor only
executes the body and reports how it ended. :class:`Executor` is the whole contract the
manager relies on (``run_manager._execute`` and ``cancel_run``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Executor"]


@runtime_checkable
class Executor(Protocol):
    """Runs graph bodies for a RunManager.

    ``manager`` is the ``RunManager`` and ``live`` its ``LiveRun`` (typed ``Any`` here:
    this package sits below ``run_manager.py``, which imports it).

    Attributes:
      name: ``"local"`` or ``"dask"``.
    """

    name: str

    async def run(self, manager: Any, live: Any, kwargs: dict[str, Any]) -> Any:
        """Execute ``live``'s body with ``kwargs`` (inputs, plus the context under the
        graph's context parameter) and return its normalised outputs.

        Called in the run's own task, with the run current (``current.py``). Raises what
        the body raised (the run ends failed), ``asyncio.CancelledError`` when the body
        stopped because of a cancel (the run ends canceled), or an ``ExecutorError`` when
        the executor lost the body (the run ends failed).
        """
        ...

    def cancel(self, manager: Any, live: Any, reason: str) -> bool:
        """Ask a started run's body to stop. Return True when the executor stops it itself
        (the manager then leaves the run's task alone and the task ends when the body
        does), False to let the manager cancel as for local runs."""
        ...
