"""The runtime from a plain script: ``python script.py`` with ``asyncio.run(main())``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

SCRIPT = '''
import asyncio
import time

from ag_jupyter import graph_fn, open_session
from ag_jupyter.runtime import RunVisibility


@graph_fn("my-graph")
async def my_graph(x: int = 0, prompt: str = "") -> dict:
    return {"double": 2 * x, "prompt": prompt}


@graph_fn("polite")
def polite(context) -> None:
    while not context.runner().is_cancel_requested():
        time.sleep(0.005)
    context.runner().raise_if_cancel_requested()


@graph_fn("broken")
async def broken() -> None:
    raise RuntimeError("as planned")


async def main() -> None:
    async with open_session(session_id="script-session") as context:
        runner = context.runner
        run_id = await runner().spawn_run(
            "my-graph",
            inputs={"x": 21, "prompt": "hello"},
            tags=["batch", "priority"],
            visibility=RunVisibility.inline,
        )
        record, outputs = await runner().wait_run(run_id, timeout_s=30, return_outputs=True)
        print("spawn", record.status.value, outputs["double"], record.session_id)

        run_id, outputs, has_waits, continuations = await runner().run_and_wait(
            "my-graph", inputs={"x": 1}, run_id="run-custom-001"
        )
        print("run_and_wait", run_id, outputs["double"], has_waits, continuations)

        slow_id = await runner().spawn_run("polite", inputs={})
        await asyncio.sleep(0.02)
        await runner().cancel_run(slow_id)
        record = await runner().wait_run(slow_id, timeout_s=30)
        print("cancel", record.status.value)

        bad_id, outputs, _, _ = await runner().run_and_wait("broken", inputs={})
        record = await runner().wait_run(bad_id)
        print("failed", record.status.value, record.error, outputs)
        context.logger().info("script done")


asyncio.run(main())
print("exit")
'''

LEAVES_RUNS_LIVE = '''
import asyncio
import time

from ag_jupyter import graph_fn, open_session


@graph_fn("forever-async")
async def forever_async() -> None:
    await asyncio.Event().wait()


@graph_fn("stubborn-sync")
def stubborn_sync() -> None:
    time.sleep(60)  # never checks the cancel flag


async def main() -> None:
    async with open_session() as context:
        await context.runner().spawn_run("forever-async", inputs={})
        await context.runner().spawn_run("stubborn-sync", inputs={})
        await asyncio.sleep(0.05)
    print("main returned")


asyncio.run(main())
'''


def run_script(tmp_path: Path, source: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """Write ``source`` to ``tmp_path/script.py`` and run it with this interpreter."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def assert_clean_stderr(stderr: str) -> None:
    for marker in ("Traceback", "never retrieved", "Exception ignored", "Error"):
        assert marker not in stderr, stderr


def test_plain_script_uses_the_public_api_and_exits_zero(tmp_path: Path) -> None:
    result = run_script(tmp_path, SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "spawn succeeded 42 script-session",
        "run_and_wait run-custom-001 2 False []",
        "cancel canceled",
        "failed failed RuntimeError: as planned None",
        "exit",
    ]
    assert_clean_stderr(result.stderr)


def test_script_exits_promptly_with_runs_still_live(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_script(tmp_path, LEAVES_RUNS_LIVE, timeout_s=30)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["main returned"]
    assert_clean_stderr(result.stderr)
    # The sync graph sleeps 60 s in a daemon thread: it must not hold the process.
    assert elapsed < 20
