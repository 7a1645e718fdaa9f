"""executor="dask": graph bodies on a real LocalCluster (2 worker processes), the kernel's
RunManager keeping the runs. One cluster for the whole module (it costs ~1 s and ~200 MiB);
tests that need a cluster of their own (closing, SIGKILL) start a one-worker one."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (Dask's own serialisation, a dependency of distributed)
import psutil  # noqa: E402
from llm_server import configure_env, reset_llm_state, running_server  # noqa: E402

from ag_jupyter import graph_fn, open_session  # noqa: E402
from ag_jupyter.runtime import (  # noqa: E402
    RunManager,
    RunStatus,
    ServiceNotOnWorkerError,
    configure_dask,
    dask_executor_for,
    set_default_executor,
)
from ag_jupyter.runtime.defaults import workspace_runtime  # noqa: E402

# Workers cannot import this test module: its functions travel by value, as a notebook's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.timeout(120)]


# --------------------------------------------------------------------------- graphs
@graph_fn("dask_add", executor="dask")
async def dask_add(x: int, context) -> dict:
    context.logger().info("adding %d on pid %d", x, os.getpid())
    print("printed on the worker")
    return {"y": x + 1, "pid": os.getpid()}


@graph_fn("dask_sleep", executor="dask")
async def dask_sleep(seconds: float, marker: str, context) -> float:
    kv = context.kv()
    await kv.set(f"{marker}:started", time.time())
    context.logger().info("sleeping %s s", seconds)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        await kv.set(f"{marker}:cancelled_at", time.time())
        raise
    return seconds


@graph_fn("dask_spin", executor="dask")
def dask_spin(marker_file: str, context) -> str:
    """A sync body that polls its cooperative cancel flag."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if context.runner().is_cancel_requested():
            Path(marker_file).write_text(str(time.time()))
            context.runner().raise_if_cancel_requested()
        time.sleep(0.01)
    return "never cancelled"


@graph_fn("dask_block", executor="dask")
def dask_block(seconds: float, context) -> int:
    context.logger().info("blocking on pid %d", os.getpid())
    time.sleep(seconds)
    return os.getpid()


def _inner_failure(value: int) -> None:
    raise ValueError(f"bad value {value} on the worker")


@graph_fn("dask_fail", executor="dask")
def dask_fail(value: int) -> None:
    _inner_failure(value)


@graph_fn("dask_plain")
async def dask_plain(x: int = 1) -> dict:
    return {"pid": os.getpid(), "x": x}


@graph_fn("dask_local_child")
async def dask_local_child(n: int) -> int:
    return n * 10


@graph_fn("dask_services", executor="dask")
async def dask_services(tmp_file: str, context) -> dict:
    kv = context.kv()
    await kv.set("shared", {"from": "worker"})
    await kv.session_scope().set("mine", 7)
    mem = context.memory()
    await mem.record(kind="train_log", data={"epoch": 1, "loss": 0.5}, tags=["train"])
    recent = await mem.recent(kinds=["train_log"], limit=5)
    arts = context.artifacts()
    art = await arts.save_text("# Report from a worker", name="report.md", kind="report")
    await asyncio.to_thread(Path(tmp_file).write_bytes, b"worker bytes")
    saved = await arts.save_file(tmp_file, kind="data")
    child = await context.runner().spawn_run("dask_local_child", inputs={"n": 4})
    _, child_out = await context.runner().wait_run(child, return_outputs=True)
    try:
        context.mcp("time")
        mcp_error = None
    except ServiceNotOnWorkerError as exc:
        mcp_error = str(exc)
    try:
        context.channel()
        channel_error = None
    except ServiceNotOnWorkerError as exc:
        channel_error = str(exc)
    return {
        "session_value": await kv.session_scope().get("mine"),
        "recent": [e.data for e in recent],
        "text": await arts.load_text(art.uri),
        "file_uri": saved.uri,
        "file_name": saved.name,
        "child": child,
        "child_out": child_out,
        "mcp_error": mcp_error,
        "channel_error": channel_error,
    }


@graph_fn("dask_llm", executor="dask")
async def dask_llm(context) -> str:
    text, _usage = await context.llm().chat([{"role": "user", "content": "hi"}])
    return text


# ------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dask_cluster():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        memory_limit="768MiB",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    yield cluster
    cluster.close(timeout=10)


@pytest.fixture
def dask_address(dask_cluster):
    dask_cluster.wait_for_workers(2, timeout=30)  # a test may have killed one
    configure_dask(address=dask_cluster.scheduler_address)
    yield dask_cluster.scheduler_address
    configure_dask(address=None, cluster_options={})
    set_default_executor(None)


@pytest.fixture
async def dm(dask_address, tmp_path):
    """A RunManager on a fresh workspace whose Dask runs go to the module's cluster."""
    mgr = RunManager(**workspace_runtime(tmp_path / "ws"))
    yield mgr
    await mgr.close(timeout_s=5)


async def _wait_for(predicate, timeout_s: float = 20.0, every_s: float = 0.01) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)
    return time.monotonic() - start


async def _started_on_worker(mgr: RunManager, run_id: str) -> dict[str, Any]:
    await _wait_for(lambda: "worker" in mgr.find_record(run_id).meta)
    return mgr.find_record(run_id).meta


def _kv(mgr: RunManager):
    return mgr.services.lookup("kv").global_scope()


# ---------------------------------------------------------------------------- tests
async def test_dask_run_statuses_go_pending_running_succeeded_in_the_kernel(dm):
    dm.max_concurrency = 1
    seen: dict[str, list[str]] = {}
    dm.subscribe(lambda ev: seen.setdefault(ev.record.run_id, []).append(ev.record.status.value))
    first = await dm.submit_run("dask_block", inputs={"seconds": 0.3})
    second = await dm.submit_run("dask_add", inputs={"x": 41})
    assert dm.find_record(second.run_id).status is RunStatus.pending
    rec, out = await dm.wait_run(second.run_id, return_outputs=True)
    await dm.wait_run(first.run_id)
    assert rec.status is RunStatus.succeeded, rec.error
    assert out["y"] == 42 and out["pid"] != os.getpid()
    assert seen[second.run_id][0] == "pending"
    assert seen[second.run_id][-1] == "succeeded"
    assert "running" in seen[second.run_id]
    assert rec.meta["executor"] == "dask"
    assert rec.meta["worker"].startswith("tcp://")
    assert rec.meta["worker_pid"] == out["pid"]


async def test_worker_logger_and_print_lines_reach_run_logs_within_a_second(dm):
    rec = await dm.submit_run("dask_sleep", inputs={"seconds": 30, "marker": "logs"})
    await _started_on_worker(dm, rec.run_id)
    took: list[float] = []

    async def line_seen() -> None:
        start = time.monotonic()
        while True:
            page = await dm.logs(rec.run_id)
            if any("sleeping 30" in line["message"] for line in page["lines"]):
                took.append(time.monotonic() - start)
                return
            await asyncio.sleep(0.01)

    await asyncio.wait_for(line_seen(), 5)
    assert took[0] < 1.0
    await dm.cancel_run(rec.run_id)
    final = await dm.wait_run(rec.run_id, timeout_s=10)
    assert final.status is RunStatus.canceled
    rec2, out, *_ = await dm.run_and_wait("dask_add", inputs={"x": 1})
    lines = [line["message"] for line in (await dm.logs(rec2.run_id))["lines"]]
    assert f"adding 1 on pid {out['pid']}" in lines
    assert "printed on the worker" in lines


async def test_worker_exception_fails_run_with_the_workers_traceback(dm):
    rec, out, *_ = await dm.run_and_wait("dask_fail", inputs={"value": 3})
    assert rec.status is RunStatus.failed
    assert rec.error == "ValueError: bad value 3 on the worker"
    assert out is None
    tb = rec.meta["traceback"]
    assert "on Dask worker tcp://" in tb
    assert "_inner_failure" in tb and "dask_fail" in tb
    assert "run_graph_task" not in tb  # starts at the body, not in our task code


async def test_awaiting_a_dask_graph_raises_the_bodys_exception(dask_address):
    from ag_jupyter.runtime import get_run_manager

    with pytest.raises(ValueError, match="bad value 5"):
        await dask_fail(value=5)
    await get_run_manager().close()


@graph_fn("dask_echo", executor="dask")
def dask_echo(value: Any) -> Any:
    return value


async def test_a_body_that_cannot_be_pickled_fails_alone_with_a_clear_error(dm):
    import threading

    bad = await dm.submit_run("dask_echo", inputs={"value": threading.Lock()})
    good = await dm.submit_run("dask_echo", inputs={"value": [1, "two"]})  # same burst
    bad_rec = await dm.wait_run(bad.run_id)
    good_rec, out = await dm.wait_run(good.run_id, return_outputs=True)
    assert bad_rec.status is RunStatus.failed
    assert bad_rec.error.startswith("ExecutorError: ") and "could not be sent to Dask" in (
        bad_rec.error
    )
    assert good_rec.status is RunStatus.succeeded and out == {"result": [1, "two"]}


async def test_cancel_pending_run_never_reaches_a_worker(dm):
    dm.max_concurrency = 1
    blocker = await dm.submit_run("dask_block", inputs={"seconds": 1.0})
    queued = await dm.submit_run("dask_sleep", inputs={"seconds": 5, "marker": "pend"})
    assert dm.find_record(queued.run_id).status is RunStatus.pending
    rec = await dm.cancel_run(queued.run_id)
    assert rec.status is RunStatus.canceled
    await dm.wait_run(blocker.run_id)
    await asyncio.sleep(0.3)
    assert await _kv(dm).get("pend:started") is None


async def test_cancel_run_queued_on_the_cluster_cancels_its_future_at_once(dm):
    # Both workers busy: the third run holds a manager slot but waits in Dask's queue.
    busy = [await dm.submit_run("dask_block", inputs={"seconds": 1.5}) for _ in range(2)]
    for rec in busy:
        await _started_on_worker(dm, rec.run_id)
    queued = await dm.submit_run("dask_sleep", inputs={"seconds": 5, "marker": "queued"})
    await asyncio.sleep(0.2)
    assert "worker" not in dm.find_record(queued.run_id).meta
    t0 = time.monotonic()
    await dm.cancel_run(queued.run_id)
    final = await dm.wait_run(queued.run_id, timeout_s=5)
    assert time.monotonic() - t0 < 1.0
    assert final.status is RunStatus.canceled
    for rec in busy:
        await dm.wait_run(rec.run_id)
    await asyncio.sleep(0.5)  # a worker is free now: the cancelled run must not start
    assert await _kv(dm).get("queued:started") is None


async def test_cancel_running_async_body_gets_cancellederror_on_the_worker_within_1s(dm):
    rec = await dm.submit_run("dask_sleep", inputs={"seconds": 30, "marker": "acancel"})
    await _started_on_worker(dm, rec.run_id)
    t0 = time.time()
    requested = await dm.cancel_run(rec.run_id)
    assert requested.status is RunStatus.cancellation_requested
    final = await dm.wait_run(rec.run_id, timeout_s=10)
    assert final.status is RunStatus.canceled
    assert final.error == "canceled (user_requested)"
    cancelled_at = await _kv(dm).get("acancel:cancelled_at")
    assert cancelled_at is not None and cancelled_at - t0 < 1.0


async def test_cancel_running_sync_body_sees_the_cooperative_flag(dm, tmp_path):
    marker = tmp_path / "saw-cancel"
    rec = await dm.submit_run("dask_spin", inputs={"marker_file": str(marker)})
    await _started_on_worker(dm, rec.run_id)
    t0 = time.time()
    await dm.cancel_run(rec.run_id)
    final = await dm.wait_run(rec.run_id, timeout_s=10)
    assert final.status is RunStatus.canceled
    assert float(marker.read_text()) - t0 < 1.0


async def test_worker_killed_mid_run_fails_the_run_naming_the_worker(dm, dask_cluster):
    rec = await dm.submit_run("dask_block", inputs={"seconds": 30})
    meta = await _started_on_worker(dm, rec.run_id)
    os.kill(meta["worker_pid"], signal.SIGKILL)
    final = await dm.wait_run(rec.run_id, timeout_s=30)
    assert final.status is RunStatus.failed
    assert final.error.startswith("WorkerLostError: ")
    assert meta["worker"] in final.error
    # The kernel and the cluster go on (the nanny restarts the worker).
    dask_cluster.wait_for_workers(2, timeout=30)
    again, out, *_ = await dm.run_and_wait("dask_add", inputs={"x": 2})
    assert again.status is RunStatus.succeeded and out["y"] == 3


async def test_panel_rows_list_dask_runs_with_their_worker(dm):
    from ag_jupyter.widgets.run_table import record_to_row

    rec, *_ = await dm.run_and_wait("dask_add", inputs={"x": 0})
    local, *_ = await dm.run_and_wait("dask_plain", inputs={})
    rows = {r.run_id: record_to_row(r) for r in dm.recent_records()}
    assert rows[rec.run_id]["worker"] == rec.meta["worker"]
    assert rows[rec.run_id]["executor"] == "dask"
    assert "worker" not in rows[local.run_id] and "executor" not in rows[local.run_id]


async def test_durable_record_of_a_dask_run_after_a_restart(dask_address, tmp_path):
    path = tmp_path / "ws"
    first = RunManager(**workspace_runtime(path))
    rec, out, *_ = await first.run_and_wait("dask_add", inputs={"x": 9})
    await first.close()
    second = RunManager(**workspace_runtime(path))
    try:
        again = await second.get_record(rec.run_id)
        assert again.status is RunStatus.succeeded
        assert again.meta["executor"] == "dask"
        assert again.meta["worker"] == rec.meta["worker"]
        _, stored = await second.wait_run(rec.run_id, return_outputs=True)
        assert stored == out
        lines = (await second.logs(rec.run_id))["lines"]
        assert any("adding 9" in line["message"] for line in lines)
    finally:
        await second.close()


async def test_kv_memory_artifacts_and_spawn_from_a_worker_body_go_through_the_kernel(
    dm, tmp_path
):
    async with open_session(session_id="dask-s", run_manager=dm) as ctx:
        run_id = await ctx.runner().spawn_run(
            "dask_services", inputs={"tmp_file": str(tmp_path / "out.bin")}
        )
        rec, out = await ctx.runner().wait_run(run_id, return_outputs=True)
    assert rec.status is RunStatus.succeeded, rec.meta.get("traceback")
    assert out["session_value"] == 7
    assert out["recent"] == [{"epoch": 1, "loss": 0.5}]
    assert out["text"] == "# Report from a worker"
    assert out["file_name"] == "out.bin"
    assert "available in a graph body running on a Dask worker" in out["mcp_error"]
    assert "executor='local'" in out["mcp_error"]
    # asks live in the kernel's manager: a worker body is told so, not an AttributeError
    assert "context.channel() is not available" in out["channel_error"]
    # In the kernel's workspace, stamped with the worker run's ids.
    assert await _kv(dm).get("shared") == {"from": "worker"}
    arts = dm.services.lookup("artifacts").bind(ctx)
    assert await arts.load_bytes(out["file_uri"]) == b"worker bytes"
    found = await arts.list(scope="all", kind="report")
    assert [a.run_id for a in found] == [run_id]
    child = await dm.get_record(out["child"])
    assert child.parent_run_id == run_id and child.session_id == "dask-s"
    assert out["child_out"] == {"result": 40}
    assert "executor" not in child.meta  # a local graph stays local


async def test_llm_on_a_worker_uses_the_kernels_profile_and_keeps_the_key_out(
    dm, monkeypatch
):
    gen = reset_llm_state(monkeypatch)
    next(gen)
    srv_gen = running_server()
    server = next(srv_gen)
    try:
        configure_env(monkeypatch, server)  # the kernel's environment only
        rec, out, *_ = await dm.run_and_wait("dask_llm", inputs={})
        assert rec.status is RunStatus.succeeded, rec.meta.get("traceback")
        assert out == {"result": server.text}
        assert server.requests[0]["headers"]["authorization"] == "Bearer sk-test-123"
        steps = await dm.steps(rec.run_id)
        assert [s["kind"] for s in steps] == ["llm"]
        assert rec.meta["usage"]["calls"] == 1
        assert "sk-test-123" not in repr(rec) + repr(steps) + repr(await dm.logs(rec.run_id))
    finally:
        with pytest.raises(StopIteration):
            next(srv_gen)
        with pytest.raises(StopIteration):
            next(gen)


async def test_scheduler_lost_fails_live_dask_runs_and_local_runs_go_on(
    dm, dask_address, tmp_path
):
    # A scheduler of its own in a subprocess, SIGKILLed mid-run (a graceful close would
    # retire its workers first: that is a WorkerLostError).
    sched_file = tmp_path / "scheduler.json"
    cli = [sys.executable, "-m"]
    scheduler = await asyncio.to_thread(
        subprocess.Popen,
        [*cli, "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
         "--no-dashboard", "--scheduler-file", str(sched_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        await _wait_for(sched_file.exists, timeout_s=30, every_s=0.05)
        await asyncio.sleep(0.1)
        import json

        address = json.loads(sched_file.read_text())["address"]
        worker = await asyncio.to_thread(
            subprocess.Popen,
            [*cli, "distributed.cli.dask_worker", address, "--nthreads", "1",
             "--no-dashboard", "--memory-limit", "512MiB", "--death-timeout", "5"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
        )
        configure_dask(address=address)
        doomed = await dm.submit_run("dask_block", inputs={"seconds": 30})
        await _started_on_worker(dm, doomed.run_id)
        local = await dm.submit_run("dask_plain", inputs={})
        scheduler.kill()
        final = await dm.wait_run(doomed.run_id, timeout_s=30)
        assert final.status is RunStatus.failed
        assert final.error.startswith("SchedulerLostError: ")
        assert address in final.error
        assert (await dm.wait_run(local.run_id)).status is RunStatus.succeeded
    finally:
        for proc in (scheduler, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
    configure_dask(address=dask_address)  # the kernel keeps working with Dask too
    rec, *_ = await dm.run_and_wait("dask_add", inputs={"x": 1})
    assert rec.status is RunStatus.succeeded


async def test_session_and_kernel_defaults_choose_the_executor(dm):
    rec, out, *_ = await dm.run_and_wait("dask_plain", inputs={})
    assert out["pid"] == os.getpid() and "executor" not in rec.meta
    async with open_session(session_id="to-dask", executor="dask", run_manager=dm) as ctx:
        run_id = await ctx.runner().spawn_run("dask_plain", inputs={})
        rec, out = await ctx.runner().wait_run(run_id, return_outputs=True)
    assert rec.meta["executor"] == "dask" and out["pid"] != os.getpid()
    rec, out, *_ = await dm.run_and_wait("dask_plain", inputs={}, session_id="to-dask")
    assert out["pid"] == os.getpid()  # the session is closed: back to the default
    set_default_executor("dask")
    rec, out, *_ = await dm.run_and_wait("dask_plain", inputs={})
    assert rec.meta["executor"] == "dask" and out["pid"] != os.getpid()
    with pytest.raises(ValueError, match="'local', 'dask'"):
        set_default_executor("ray")
    with pytest.raises(ValueError, match="graph_fn"):
        graph_fn("bad_executor", executor="threads")(dask_plain.fn)


def test_config_executor_in_a_real_interactiveshell(dask_address):
    from IPython.core.interactiveshell import InteractiveShell

    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance()
    try:
        sh.run_line_magic("load_ext", "ag_jupyter")
        sh.run_line_magic("config", "AgJupyter.workspace = 'memory'")
        sh.run_line_magic("config", f"AgJupyter.dask_address = '{dask_address}'")
        sh.run_line_magic("config", "AgJupyter.executor = 'dask'")
        result = sh.run_cell(
            "%%ag_session\n"
            "import os\n"
            "rid = await context.runner().spawn_run('dask_plain', inputs={'x': 3})\n"
            "rec, out = await context.runner().wait_run(rid, return_outputs=True)\n"
            "answer = (rec.status.value, rec.meta.get('executor'), out['pid'] != os.getpid())\n"
        )
        assert result.error_in_exec is None, result.error_in_exec
        assert sh.user_ns["answer"] == ("succeeded", "dask", True)
        # The kernel default back to local; one cell's session chooses Dask for its runs.
        sh.run_line_magic("config", "AgJupyter.executor = 'local'")
        result = sh.run_cell(
            "%%ag_session --executor dask\n"
            "rec, out = await context.runner().wait_run(\n"
            "    await context.runner().spawn_run('dask_plain', inputs={'x': 3}),\n"
            "    return_outputs=True)\n"
            "answer = (rec.meta.get('executor'), out['pid'] != os.getpid())\n"
        )
        assert result.error_in_exec is None, result.error_in_exec
        assert sh.user_ns["answer"] == ("dask", True)
        result = sh.run_cell(
            "from ag_jupyter.runtime import get_run_manager\n"
            "rec, out, *_ = await get_run_manager().run_and_wait('dask_plain', inputs={})\n"
            "answer = (rec.meta.get('executor'), out['pid'] == os.getpid())\n"
            "await get_run_manager().close()\n"
        )
        assert result.error_in_exec is None, result.error_in_exec
        assert sh.user_ns["answer"] == (None, True)  # outside that session: the kernel's
        sh.run_line_magic("config", "AgJupyter.executor = 'dask'")
        sh.run_line_magic("config", "AgJupyter.executor = 'ray'")  # refused (logged)
        from ag_jupyter.ipython.config import extension_config
        from ag_jupyter.runtime.executors import default_executor

        assert extension_config(sh).executor == "dask" and default_executor() == "dask"
    finally:
        sh.run_line_magic("unload_ext", "ag_jupyter")
        InteractiveShell.clear_instance()
    from ag_jupyter.runtime.executors import dask_settings

    assert default_executor() == "local" and dask_settings().address is None


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


async def test_own_localcluster_leaves_no_process_after_close(tmp_path):
    configure_dask(address=None, cluster_options={"n_workers": 1, "memory_limit": "512MiB"})
    before = {p.pid for p in _tree(os.getpid())}
    mgr = RunManager(**workspace_runtime(tmp_path / "ws"))
    try:
        rec, out, *_ = await mgr.run_and_wait("dask_add", inputs={"x": 1})
        assert rec.status is RunStatus.succeeded
        executor = dask_executor_for(mgr, create=False)
        assert executor.cluster is not None  # started on first use
        ours = [p for p in _tree(os.getpid()) if p.pid not in before]
        assert out["pid"] in {p.pid for p in ours}
    finally:
        t0 = time.monotonic()
        await mgr.close()
        configure_dask(address=None, cluster_options={})
    _gone, alive = psutil.wait_procs(ours, timeout=max(0.1, 5 - (time.monotonic() - t0)))
    assert not alive, f"left running: {alive}"


SIGKILLED_KERNEL = textwrap.dedent(
    """
    import asyncio, os, sys
    from ag_jupyter import graph_fn
    from ag_jupyter.runtime import RunManager, configure_dask

    @graph_fn("pid", executor="dask")
    def pid() -> int:
        return os.getpid()

    async def main():
        configure_dask(cluster_options={"n_workers": 1, "memory_limit": "512MiB"})
        mgr = RunManager()
        rec, out, *_ = await mgr.run_and_wait("pid", inputs={})
        print(out["result"], flush=True)
        await asyncio.sleep(120)

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def test_sigkilled_kernel_leaves_no_worker_behind(tmp_path):
    script = tmp_path / "kernel.py"
    script.write_text(SIGKILLED_KERNEL)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        line = proc.stdout.readline()
        worker = psutil.Process(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # A worker whose nanny (in the killed process) is gone exits at once; Dask's own
        # bound is its death timeout (distributed.comm.timeouts / worker death-timeout).
        _gone, alive = psutil.wait_procs([worker], timeout=15)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()


RUNTIME_WITHOUT_DISTRIBUTED = textwrap.dedent(
    """
    import sys
    sys.modules["distributed"] = None  # as if it were not installed
    import ag_jupyter.runtime as rt
    from ag_jupyter import graph_fn
    assert "distributed" not in [m for m in sys.modules if sys.modules[m] is not None]
    try:
        graph_fn("x", executor="dask")(lambda: 1)
    except rt.ExecutorNotAvailableError as exc:
        print("ERROR", exc)
    """
)


def test_runtime_works_without_distributed_and_says_how_to_install_it(tmp_path):
    script = tmp_path / "nodask.py"
    script.write_text(
        "import importlib.util\n"
        "_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'distributed' else _find(n, *a)\n"
        + RUNTIME_WITHOUT_DISTRIBUTED
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'ag-jupyter[dask]'" in done.stdout
