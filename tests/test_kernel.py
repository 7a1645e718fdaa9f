"""A real kernel over jupyter_client: interrupts and queued cells ("Run All")."""

from __future__ import annotations

import queue
import time

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.kernel

SETUP = """
%load_ext ag_jupyter
%config AgJupyter.workspace = 'memory'
import asyncio
from ag_jupyter import graph_fn, get_run_manager

@graph_fn("kslow")
async def kslow(seconds: float):
    await asyncio.sleep(seconds)
    return seconds
"""


@pytest.fixture
def kernel(tmp_path):
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        reply = execute(kc, SETUP)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def execute(kc, code: str, timeout: float = 60) -> dict:
    msg_id = kc.execute(code)
    return wait_reply(kc, msg_id, timeout)


def wait_reply(kc, msg_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def evaluate(kc, expression: str):
    """The repr of an expression evaluated in the kernel."""
    for _ in range(100):
        msg_id = kc.execute("", user_expressions={"v": expression})
        reply = wait_reply(kc, msg_id, 30)
        # right after an error reply ipykernel may still be aborting queued requests
        if reply["content"]["status"] != "aborted":
            break
    value = reply["content"]["user_expressions"]["v"]
    assert value["status"] == "ok", value
    return value["data"]["text/plain"]


def test_interrupt_closes_session_and_run_still_finishes(kernel):
    km, kc = kernel
    msg_id = kc.execute(
        "%%ag_session --session-id intr\n"
        "sess = context\n"
        "rid = await context.runner().spawn_run('kslow', inputs={'seconds': 2})\n"
        "await context.runner().wait_run(rid)\n"
    )
    time.sleep(1.0)  # the cell is awaiting the run
    km.interrupt_kernel()
    reply = wait_reply(kc, msg_id, 30)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    # the kernel still answers; the session was closed; context was restored (absent)
    assert evaluate(kc, "sess._closers is None") == "True"
    assert evaluate(kc, "'context' in globals()") == "False"
    # the spawned run was not interrupted with the cell
    reply = execute(kc, "rec = await get_run_manager().wait_run(rid, timeout_s=20)")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert evaluate(kc, "rec.status.value") == "'succeeded'"


def test_runs_progress_while_kernel_is_idle(kernel):
    _, kc = kernel
    reply = execute(
        kc,
        "%%ag_session\nrid = await context.runner().spawn_run('kslow', inputs={'seconds': 0.3})",
    )
    assert reply["content"]["status"] == "ok"
    time.sleep(1.0)  # no cell runs: the loop keeps the run going
    status = evaluate(kc, "get_run_manager().find_record(rid).status.value")
    assert status == "'succeeded'"


def test_queued_cells_all_run_in_order(kernel):
    _, kc = kernel
    cells = [
        "order = []",
        "%%ag_session\n"
        "a = await context.runner().spawn_run('kslow', inputs={'seconds': 0.2})\n"
        "order.append('spawn')",
        "order.append('plain')",
        "%%ag_session\nawait context.runner().wait_run(a)\norder.append('waited')",
        "await asyncio.sleep(0.1); order.append('await')",
        "%%ag_session\norder.append(context.session_id is not None)",
        "order.append('last')",
    ]
    ids = [kc.execute(code) for code in cells]  # queued at once, like "Run All"
    replies = [wait_reply(kc, i, 60) for i in ids]
    assert [r["content"]["status"] for r in replies] == ["ok"] * len(cells)
    counts = [r["content"]["execution_count"] for r in replies]
    assert counts == list(range(counts[0], counts[0] + len(cells)))
    assert evaluate(kc, "order") == "['spawn', 'plain', 'waited', 'await', True, 'last']"


def test_failed_run_never_prints_into_other_cells(kernel):
    _, kc = kernel
    execute(
        kc,
        "from ag_jupyter import graph_fn\n"
        "@graph_fn('kboom')\nasync def kboom():\n    raise RuntimeError('kaboom')\n",
    )
    execute(kc, "%%ag_session\nbad = await context.runner().spawn_run('kboom', inputs={})")
    time.sleep(0.5)
    msg_id = kc.execute("import gc; gc.collect(); print('clean')")
    wait_reply(kc, msg_id, 30)
    streams = []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] in (
            "stream", "error"
        ):
            streams.append(msg["content"].get("text", "") + msg["content"].get("ename", ""))
    assert "".join(streams).strip() == "clean"
    assert evaluate(kc, "get_run_manager().find_record(bad).error") == "'RuntimeError: kaboom'"


def test_blocking_wait_errors_unless_nest_asyncio2_is_opted_in(kernel):
    _, kc = kernel
    execute(kc, "%%ag_session\nrid = await context.runner().spawn_run('kslow', "
                "inputs={'seconds': 0.5})")
    reply = execute(kc, "%ag_wait {rid}")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "UsageError"
    assert "await get_run_manager().wait_run" in reply["content"]["evalue"]
    # nothing was patched on load or by the refused wait
    assert evaluate(kc, "hasattr(asyncio.get_running_loop(), '_nest_patched')") == "False"
    execute(kc, "%config AgJupyter.blocking_waits = 'nest_asyncio2'")
    execute(kc, "%%ag_session\nrid2 = await context.runner().spawn_run('kslow', "
                "inputs={'seconds': 0.5})")
    reply = execute(kc, "rec = %ag_wait {rid2} --return")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert evaluate(kc, "rec.status.value") == "'succeeded'"
    assert evaluate(kc, "hasattr(asyncio.get_running_loop(), '_nest_patched')") == "True"
    # the kernel keeps working normally after the patch
    reply = execute(kc, "%%ag_session\nawait context.runner().run_and_wait('kslow', "
                        "inputs={'seconds': 0.1})")
    assert reply["content"]["status"] == "ok", reply["content"]


def test_panel_hands_its_messages_to_the_iopub_thread(kernel):
    # A saturated loop starves ipykernel's IOPub thread of the GIL; the panel waits (bounded)
    # for it to take each message. bench/panel_overhead.py measures what that saves.
    _, kc = kernel
    reply = execute(
        kc,
        "from ag_jupyter.widgets.iopub import HAND_OFF_MAX_S, hand_off, iopub_thread\n"
        "from ag_jupyter.widgets.run_panel import RunPanel\n"
        "panel = RunPanel(get_run_manager(), refresh_s=0.05)\n"
        "display(panel)\n"
        "for _ in range(3):\n"
        "    await get_run_manager().run_and_wait('kslow', inputs={'seconds': 0.1})\n"
        "await asyncio.sleep(0.3)\n",
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    assert evaluate(kc, "iopub_thread() is get_ipython().kernel.iopub_thread") == "True"
    assert evaluate(kc, "panel.messages_sent >= 3") == "True"
    # every message waited for the IOPub thread, never longer than the bound
    assert evaluate(
        kc, "0 < panel.hand_off_s <= panel.messages_sent * (HAND_OFF_MAX_S + 0.05)"
    ) == "True"
