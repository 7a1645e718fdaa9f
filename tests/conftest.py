"""Shared fixtures. Keep them generic: test modules add their own specific ones."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

# The default durable workspace is ./.ag_workspace: keep the test run's out of the repo.
# Subprocesses (kernels, scripts) inherit it.
os.environ.setdefault("AG_WORKSPACE", tempfile.mkdtemp(prefix="ag-test-workspace-"))

from ag_jupyter.runtime import GraphRegistry, RunManager


@pytest.fixture(autouse=True)
def isolated_default_workspace(tmp_path_factory, monkeypatch):
    """Each test gets its own default workspace (``AG_WORKSPACE``), so fixed run ids such as
    the seeds' ``run-custom-001`` never collide between tests, in-process or in scripts."""
    from ag_jupyter.runtime.defaults import close_default_workspace

    monkeypatch.setenv("AG_WORKSPACE", str(tmp_path_factory.mktemp("workspace")))
    yield
    close_default_workspace()


@pytest.fixture(autouse=True)
async def close_default_manager() -> AsyncIterator[None]:
    """Close the process-wide manager a test's loop got from ``get_run_manager()``."""
    yield
    from ag_jupyter.runtime import get_run_manager

    try:
        mgr = get_run_manager(create=False)
    except RuntimeError:
        return
    await mgr.close(timeout_s=2)


@pytest.fixture
async def workspace_manager(tmp_path) -> AsyncIterator[RunManager]:
    """A RunManager on a fresh durable workspace (SQLite store and workspace services)."""
    from ag_jupyter.runtime.defaults import workspace_runtime

    mgr = RunManager(**workspace_runtime(tmp_path / "ws"))
    yield mgr
    await mgr.close()


@pytest.fixture
async def session(workspace_manager: RunManager) -> AsyncIterator[Any]:
    """``await session(session_id="s1", **overrides)`` -> an ad-hoc context on
    ``workspace_manager``; every context made is closed after the test."""
    from ag_jupyter.runtime import build_adhoc_context

    opened: list[Any] = []

    async def make(session_id: str | None = "s1", **kw: Any) -> Any:
        ctx = await build_adhoc_context(session_id=session_id, run_manager=workspace_manager, **kw)
        opened.append(ctx)
        return ctx

    yield make
    for ctx in opened:
        await ctx.aclose()


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """End the run with one clear line when browser tests were skipped (they need Debian's
    chromium at /usr/bin/chromium; see the README), so a green run never hides them."""
    skipped = [
        report
        for report in terminalreporter.stats.get("skipped", [])
        if "browser" in getattr(report, "keywords", {})
    ]
    if not skipped:
        return
    longrepr = skipped[0].longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    terminalreporter.write_line(
        f"BROWSER TESTS SKIPPED ({len(skipped)}): {reason.removeprefix('Skipped: ')}. "
        "Install Debian's chromium (apt-get install chromium) to run them.",
        yellow=True,
        bold=True,
    )
