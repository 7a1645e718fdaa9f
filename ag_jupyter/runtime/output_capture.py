"""Route ``print()`` (and anything else written to ``sys.stdout`` / ``sys.stderr``: tracebacks
printed by ``traceback.print_exc()``, tqdm bars) by the code of a run to that run's log.

In a kernel, text written by a background task lands in whichever cell happens to run (or
the cell that created the task, long after). So ``sys.stdout`` and ``sys.stderr`` are
replaced by a thin proxy: a write made while a graph body runs (the current run travels in
a context variable, see :mod:`.current`) becomes lines of that run's log
(``manager.logs(run_id)``, the panel); any other write goes to the stream the proxy
replaced, unchanged.

- Installed once, on the first run body that starts (:func:`ensure_installed`); checked
  again at each body start, so a stream that something else installed meanwhile (ipykernel's
  ``OutStream``, ``%%capture``, pytest's capture) is wrapped in turn. Idempotent.
- :func:`uninstall` puts the replaced streams back (if nobody replaced the proxy since).
- Threads a body starts itself with ``threading.Thread`` do not inherit the context, so
  their prints are not routed (``asyncio`` tasks, ``asyncio.to_thread`` and sync bodies'
  worker threads are).

This module imports nothing from the runtime; :mod:`.current` hands it the lookup.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["RunOutputProxy", "ensure_installed", "installed", "uninstall"]

_lock = threading.Lock()
_lookup: Callable[[], Any] | None = None


class RunOutputProxy:
    """Stands in for ``sys.stdout`` or ``sys.stderr``: writes by run code go to the run's
    log, others to ``target`` (the stream it replaced). Every other attribute
    (``encoding``, ``fileno``, ``isatty``...) is ``target``'s."""

    def __init__(self, name: str, target: Any) -> None:
        self._ag_name = name
        self._ag_target = target

    def _scope(self) -> Any:
        lookup = _lookup
        return lookup() if lookup is not None else None

    def write(self, text: str) -> int:
        scope = self._scope()
        if scope is None:
            return self._ag_target.write(text)
        scope.write_output(self._ag_name, str(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        scope = self._scope()
        if scope is None:
            flush = getattr(self._ag_target, "flush", None)
            if flush is not None:
                flush()
            return
        scope.flush_output()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ag_target, name)

    def __repr__(self) -> str:
        return f"<ag_jupyter run output proxy for {self._ag_target!r}>"


def installed() -> bool:
    """True while both ``sys.stdout`` and ``sys.stderr`` are proxies."""
    return isinstance(sys.stdout, RunOutputProxy) and isinstance(sys.stderr, RunOutputProxy)


def ensure_installed(lookup: Callable[[], Any]) -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` proxies routing by ``lookup()`` (a function
    returning the current run's scope, or None outside a run). Cheap when already done."""
    global _lookup
    if _lookup is lookup and installed():
        return
    with _lock:
        _lookup = lookup
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, RunOutputProxy):
                setattr(sys, name, RunOutputProxy(name, stream))


def uninstall() -> None:
    """Put back the streams the proxies replaced (a proxy someone else has replaced since
    is left alone). Runs' output goes where it would without ag_jupyter afterwards."""
    with _lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if isinstance(stream, RunOutputProxy):
                setattr(sys, name, stream._ag_target)
