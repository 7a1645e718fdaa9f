"""Shared fixtures. Keep them generic: test modules add their own specific ones."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ag_jupyter.runtime import GraphRegistry, RunManager


@pytest.fixture
def registry() -> GraphRegistry:
    """A fresh graph registry, so graphs defined by one test never leak into another."""
    return GraphRegistry()


@pytest.fixture
async def manager(registry: GraphRegistry) -> AsyncIterator[RunManager]:
    """An in-memory :class:`RunManager` (default limits) bound to ``registry``; closed after."""
    mgr = RunManager(registry=registry)
    yield mgr
    await mgr.close(timeout_s=2)


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[Any]]:
    """Everything that reaches the loop's exception handler (e.g. "Task exception was never
    retrieved") or ``sys.unraisablehook`` while the test runs, as a list.

    Call ``gc.collect()`` before asserting the list is empty: those reports come from
    finalizers.
    """
    seen: list[Any] = []
    loop = asyncio.get_running_loop()
    old_handler = loop.get_exception_handler()
    old_hook = sys.unraisablehook
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    sys.unraisablehook = seen.append
    try:
        yield seen
    finally:
        loop.set_exception_handler(old_handler)
        sys.unraisablehook = old_hook
