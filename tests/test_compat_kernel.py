"""In a real kernel (jupyter_client): what graph bodies print goes to their run's log, never
into whichever cell runs meanwhile; ``await graph(...)`` works in a plain cell and ``run()``
there says to await (issue 13, items 2 and 3)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.kernel

SETUP = """
%load_ext ag_jupyter
%config AgJupyter.workspace = 'memory'
import asyncio, sys, time, traceback
from ag_jupyter import graph_fn, get_run_manager
from ag_jupyter.runner import run

@graph_fn("chatty")
async def chatty(delay: float):
    await asyncio.sleep(delay)
    print("CHATTY-STDOUT")
    print("CHATTY-STDERR 50%", end="\\r", file=sys.stderr)
    print("CHATTY-STDERR 100%", file=sys.stderr)
    return {"done": True}

@graph_fn("chatty_sync")
def chatty_sync(delay: float):
    time.sleep(delay)
    print("SYNC-STDOUT")
    try:
        raise ValueError("SYNC-TRACEBACK")
    except ValueError:
        traceback.print_exc()
    return {"done": True}

@graph_fn("adder")
async def adder(x: int, y: int = 1):
    return x + y
"""


def execute(kc: Any, code: str, timeout: float = 60) -> tuple[dict, list[dict]]:
    """Run ``code``; return its reply and every IOPub message of that cell until idle."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    messages: list[dict] = []
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            messages.append(msg)  # output attributed to another cell: keep it too
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply, messages


def streams(messages: list[dict]) -> str:
    return "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")


@pytest.fixture
def kernel(tmp_path: Any) -> Any:
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        reply, _ = execute(kc, SETUP)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_prints_of_background_runs_never_reach_a_cell(kernel: Any) -> None:
    _, kc = kernel
    reply, first = execute(
        kc,
        "m = get_run_manager()\n"
        "r1 = await m.submit_run('chatty', inputs={'delay': 0.5})\n"
        "r2 = await m.submit_run('chatty_sync', inputs={'delay': 0.5})\n"
        "print('cell one')\n",
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    reply, second = execute(kc, "await asyncio.sleep(1.5)\nprint('cell two')\n")
    assert reply["content"]["status"] == "ok", reply["content"]
    text = streams(first) + streams(second)
    assert "cell one" in text and "cell two" in text
    for leaked in ("CHATTY", "SYNC-"):
        assert leaked not in text
    reply, third = execute(
        kc,
        "for r in (r1, r2):\n"
        "    await m.wait_run(r.run_id, timeout_s=10)\n"
        "    print([ln['message'] for ln in (await m.logs(r.run_id))['lines']])\n",
    )
    out = streams(third)
    assert "['CHATTY-STDOUT', 'CHATTY-STDERR 100%']" in out
    assert "'SYNC-STDOUT', 'Traceback (most recent call last):'" in out
    assert "'ValueError: SYNC-TRACEBACK'" in out


def test_await_a_graph_in_a_plain_cell_and_run_says_to_await(kernel: Any) -> None:
    _, kc = kernel
    reply, messages = execute(kc, "await adder(2, y=5)")
    assert reply["content"]["status"] == "ok", reply["content"]
    results = [m for m in messages if m["msg_type"] == "execute_result"]
    assert results[0]["content"]["data"]["text/plain"] == "{'result': 7}"
    reply, _ = execute(kc, "run(adder, {'x': 1})")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "RuntimeError"
    assert "await run_async(graph, inputs)" in reply["content"]["evalue"]

