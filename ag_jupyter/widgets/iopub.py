"""Handing a widget message to ipykernel's IOPub thread so it is not left waiting for the GIL.

In an ipykernel every message to the front end (comm messages included) is queued for the
kernel's IOPub thread, which needs the GIL to send it. An event loop that is saturated (a
burst of short runs) re-takes the GIL a few microseconds after each release, and CPython
wakes the waiting thread on every release only for it to find the GIL taken again: the
IOPub thread can wait until the loop goes idle, and each of those wake-ups costs the loop a
futex call. Measured by ``bench/panel_overhead.py`` (5,000 runs in ~150 ms, one message in
the middle): ~280 IOPub wake-ups, ~5 ms of IOPub CPU, 1-3 us per run of loop CPU, and
messages reaching the browser up to 100-370 ms late.

:func:`hand_off` makes the sender wait (bounded) until the IOPub thread has taken what was
queued, so the thread gets the GIL at once: ~0.5 ms per message (at most ``1/refresh_s``
times a second for the panel). Measured the same way with it: 2-30 IOPub wake-ups and
0.4-1.9 ms of IOPub CPU per burst, messages on the wire within 2-13 ms.
"""

from __future__ import annotations

import threading
import time
from typing import Any

HAND_OFF_MAX_S = 0.002  # never hold the loop longer than this per message


def iopub_thread() -> Any | None:
    """The running kernel's ``ipykernel.iostream.IOPubThread``, or None outside an ipykernel
    (plain Python, terminal IPython) or when its thread is not running."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    if not Kernel.initialized():
        return None
    thread = getattr(Kernel.instance(), "iopub_thread", None)
    inner = getattr(thread, "thread", None)
    if thread is None or inner is None or not inner.is_alive():
        return None
    return thread


def hand_off(timeout_s: float = HAND_OFF_MAX_S) -> float:
    """Wait until the IOPub thread has processed everything queued to it so far, or for
    ``timeout_s`` seconds at most; the GIL is released while waiting.

    Returns the seconds waited (0.0 outside an ipykernel). Uses the public
    ``IOPubThread.schedule``: the marker runs after the messages queued before it.
    """
    thread = iopub_thread()
    if thread is None:
        return 0.0
    taken = threading.Event()
    start = time.perf_counter()
    thread.schedule(taken.set)
    taken.wait(timeout_s)
    return time.perf_counter() - start
