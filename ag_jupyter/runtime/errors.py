"""Exceptions raised by the embedded runtime.

Each message says what was wrong, with the offending value, and what to do next.
"""

from __future__ import annotations


class GraphNotFoundError(LookupError):
    """No graph is registered under the requested id.

    Raised by ``RunManager.submit_run`` / ``run_and_wait`` (and the ``runner()`` facade)
    before any run record is created.
    """


class RunNotFoundError(LookupError):
    """No run has the requested run id.

    Raised at once by ``wait_run`` / ``cancel_run`` / ``get_record``: never after a wait.
    """


class RunInputError(ValueError):
    """A run's inputs are missing, unexpected or of the wrong type.

    Raised when the run is submitted, before any run record is created or any code runs.
    """


class DuplicateRunIdError(ValueError):
    """An explicit ``run_id`` is already used by another run in this run store."""


class ServiceNotConfiguredError(RuntimeError):
    """A context service (llm, rag, mcp, ...) was asked for but is not configured.

    Raised at once (never after a network time-out); the message says which environment
    variables or ``open_session`` overrides configure it.
    """
