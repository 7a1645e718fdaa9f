"""A %%ag_session cell behaves like a plain cell in a real kernel (jupyter_client):
interrupts, syntax errors, "Run All" stopping at an error, IPython syntax in the body."""

from __future__ import annotations

import os
import random
import re
import time
from dataclasses import dataclass, field

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.kernel

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The bound is 1 s; asserted with a margin for a loaded 2-core machine. The real
# figures come from bench/interrupt_latency.py.
INTERRUPT_BOUND_S = 5.0

SETUP = """
%load_ext ag_jupyter
%config AgJupyter.workspace = {workspace!r}
import asyncio, gc, time
from ag_jupyter import graph_fn, get_run_manager

@graph_fn("kslow")
async def kslow(seconds: float):
    await asyncio.sleep(seconds)
    return seconds

sessions, spawned = [], []
"""


@dataclass
class Reply:
    """An execute_reply with the outputs the cell sent."""

    content: dict
    outputs: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return self.content["status"]

    @property
    def text(self) -> str:
        """Everything the cell printed or displayed, and its error, without colours."""
        parts = []
        for msg in self.outputs:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                parts.append(content["text"])
            elif msg["msg_type"] == "error":
                parts.append("\n".join(content["traceback"]))
            elif "data" in content:
                parts.append(content["data"].get("text/plain", ""))
        return ANSI.sub("", "".join(parts))


class Kernel:
    """A real IPython kernel driven through jupyter_client."""

    def __init__(self, km, kc) -> None:
        self.km, self.kc = km, kc

    def reply(self, msg_id: str, timeout: float = 60) -> Reply:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") == msg_id:
                return Reply(msg["content"], self.outputs(msg_id))

    def outputs(self, msg_id: str) -> list[dict]:
        """The cell's iopub outputs, up to its 'idle' status."""
        found = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=10)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return found
            if msg["msg_type"] in ("stream", "error", "execute_result", "display_data"):
                found.append(msg)

    def run(self, code: str, timeout: float = 60) -> Reply:
        reply = self.reply(self.kc.execute(code), timeout)
        if reply.status == "error":
            self.settle()
        return reply

    def settle(self) -> None:
        """Wait until the kernel stops aborting requests after an error.

        After an error reply ipykernel aborts the requests already queued ("Run All"
        stops); a request sent right after the reply may still be among them.
        """
        for _ in range(100):
            if self.reply(self.kc.execute("", store_history=False), 30).status != "aborted":
                return
        raise AssertionError("the kernel kept aborting requests")

    def evaluate(self, expression: str) -> str:
        """The repr of an expression evaluated in the kernel."""
        reply = self.reply(self.kc.execute("", user_expressions={"v": expression}), 30)
        value = reply.content["user_expressions"]["v"]
        assert value["status"] == "ok", value
        return value["data"]["text/plain"]

    def wait_for_output(self, msg_id: str, text: str, timeout: float = 30) -> list[dict]:
        """Read iopub until the cell prints ``text``; returns what it sent so far."""
        seen: list[dict] = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if msg["msg_type"] == "stream" and text in msg["content"]["text"]:
                return seen

    def interrupt_after(self, code: str, marker: str, delay_s: float) -> Reply:
        """Run ``code``, interrupt the kernel ``delay_s`` seconds after it printed
        ``marker``; the reply's ``seconds`` is the time from the interrupt to the reply."""
        msg_id = self.kc.execute(code)
        before = self.wait_for_output(msg_id, marker)
        time.sleep(delay_s)
        started = time.monotonic()
        self.km.interrupt_kernel()
        msg = None
        deadline = started + 60
        while msg is None:
            candidate = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if candidate["parent_header"].get("msg_id") == msg_id:
                msg = candidate
        seconds = time.monotonic() - started
        outputs = [m for m in before if m["msg_type"] != "status"] + self.outputs(msg_id)
        if msg["content"]["status"] == "error":
            self.settle()
        return Reply(msg["content"], outputs, seconds)


def start_kernel(tmp_path, workspace: str = "memory") -> Kernel:
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    kernel = Kernel(km, kc)
    reply = kernel.run(SETUP.format(workspace=workspace))
    assert reply.status == "ok", reply.content
    return kernel


@pytest.fixture
def kernel(tmp_path):
    kernel = start_kernel(tmp_path)
    try:
        yield kernel
    finally:
        kernel.kc.stop_channels()
        kernel.km.shutdown_kernel(now=True)


def assert_interrupted_like_a_plain_cell(kernel: Kernel, reply: Reply, line: str) -> None:
    assert reply.status == "error", reply.content
    assert reply.content["ename"] == "KeyboardInterrupt", reply.content
    assert reply.seconds < INTERRUPT_BOUND_S, reply.seconds
    assert "KeyboardInterrupt" in reply.text
    assert line in reply.text  # the body's own line, with its number
    # the session closed, context was restored (absent), the kernel runs the next cell
    assert kernel.evaluate("sessions[-1]._closers is None") == "True"
    assert kernel.evaluate("'context' in globals()") == "False"
    after = kernel.run("print('next cell')")
    assert after.status == "ok" and after.text == "next cell\n"


# ----------------------------------------------------------------------- interrupts
@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("while True:\n    pass", "----> 4 while True:"),
        ("time.sleep(20)", "----> 4 time.sleep(20)"),
        ("x = sum(range(10))\ntime.sleep(20)\n", "----> 5 time.sleep(20)"),
    ],
    ids=["busy-loop", "sleep", "sleep-after-statement"],
)
def test_interrupt_stops_a_blocking_session_cell(kernel, body, line):
    reply = kernel.interrupt_after(
        f"%%ag_session\nsessions.append(context)\nprint('go', flush=True)\n{body}",
        "go",
        0.3,
    )
    assert_interrupted_like_a_plain_cell(kernel, reply, line)


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("await asyncio.sleep(20)", "----> 4 await asyncio.sleep(20)"),
        (
            "rid = await context.runner().spawn_run('kslow', inputs={'seconds': 3})\n"
            "spawned.append(rid)\n"
            "await context.runner().wait_run(rid)",
            "----> 6 await context.runner().wait_run(rid)",
        ),
    ],
    ids=["asyncio-sleep", "wait-run"],
)
def test_interrupt_stops_an_awaiting_session_cell_at_once(kernel, body, line):
    reply = kernel.interrupt_after(
        f"%%ag_session\nsessions.append(context)\nprint('go', flush=True)\n{body}",
        "go",
        0.3,
    )
    assert_interrupted_like_a_plain_cell(kernel, reply, line)
    assert "CancelledError" not in reply.text


def test_interrupt_leaves_spawned_runs_running(kernel):
    reply = kernel.interrupt_after(
        "%%ag_session --session-id intr\n"
        "sessions.append(context)\n"
        "rid = await context.runner().spawn_run('kslow', inputs={'seconds': 1.5})\n"
        "print('go', flush=True)\n"
        "await context.runner().wait_run(rid)\n",
        "go",
        0.2,
    )
    assert reply.content["ename"] == "KeyboardInterrupt"
    assert reply.seconds < 1.0 + INTERRUPT_BOUND_S - 1.0
    assert kernel.evaluate("get_run_manager().find_record(rid).status.value") == "'running'"
    done = kernel.run("rec = await get_run_manager().wait_run(rid, timeout_s=20)")
    assert done.status == "ok", done.content
    assert kernel.evaluate("(rec.status.value, rec.session_id)") == "('succeeded', 'intr')"


def test_interrupt_inside_runtime_code_lands_when_it_returns_to_the_body(kernel):
    # A body that spends its time inside spawn_run: a KeyboardInterrupt in the middle of
    # the runtime's bookkeeping could leave a run half-registered: it waits until that
    # code returns to the body (or awaits).
    reply = kernel.interrupt_after(
        "%%ag_session\n"
        "sessions.append(context)\n"
        "print('go', flush=True)\n"
        "while True:\n"
        "    spawned.append(await context.runner().spawn_run('kslow', inputs={'seconds': 0}))\n",
        "go",
        0.2,
    )
    assert reply.content["ename"] == "KeyboardInterrupt", reply.content
    assert reply.seconds < INTERRUPT_BOUND_S
    settle = kernel.run(
        "records = [await get_run_manager().wait_run(r, timeout_s=30) for r in spawned]\n"
        "await asyncio.sleep(0.2)\n",
        timeout=120,
    )
    assert settle.status == "ok", settle.content
    assert kernel.evaluate("len(records) > 0") == "True"
    assert kernel.evaluate("{r.status.value for r in records}") == "{'succeeded'}"
    assert kernel.evaluate("len(get_run_manager().live_records())") == "0"


PROBE = '''
seen = []
async def interrupted_mid_call():
    os.kill(os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(0)
    except BaseException as exc:
        seen.append(type(exc).__name__)
        raise
    seen.append("returned")
'''


def test_interrupt_in_runtime_code_that_then_awaits_cancels_it_at_that_await(kernel):
    # The interrupt arrives in runtime code (a stand-in module named like the runtime's),
    # which then suspends at an await instead of returning to the body. It must land as a
    # cancel at that await, so the runtime's own except/finally runs (that is how
    # submit_run ends a run whose id the cell never got). Raising it in the body as the
    # chain suspends abandons the runtime's coroutine mid-call: a run left pending
    # forever, seen once in 50 random interrupts under load.
    define = kernel.run(
        "import os, signal\n"
        "probe = {'__name__': 'ag_jupyter.probe', 'asyncio': asyncio, 'os': os, "
        "'signal': signal}\n"
        f"exec({PROBE!r}, probe)\n"
    )
    assert define.status == "ok", define.text
    reply = kernel.run(
        "%%ag_session\nsessions.append(context)\nawait probe['interrupted_mid_call']()\n"
        "print('not reached')"
    )
    assert reply.status == "error", reply.text
    assert reply.content["ename"] == "KeyboardInterrupt", reply.text
    assert "not reached\n" not in reply.text  # (the traceback shows the line)
    assert kernel.evaluate("gc.collect() >= 0 and probe['seen']") == "['CancelledError']"
    assert kernel.evaluate("sessions[-1]._closers is None") == "True"


def test_fifty_interrupts_at_random_points(tmp_path):
    """Kernel alive, every session closed, no run lost or stuck, no stray output later."""
    kernel = start_kernel(tmp_path, workspace=str(tmp_path / "ws"))
    rng = random.Random(int(os.environ.get("AG_FIFTY_SEED", "12")))
    bodies = [
        # awaiting a run
        "rid = await context.runner().spawn_run('kslow', inputs={'seconds': 2})\n"
        "spawned.append(rid)\n"
        "await context.runner().wait_run(rid)",
        # blocking after spawning
        "spawned.append(await context.runner().spawn_run('kslow', inputs={'seconds': 0.1}))\n"
        "time.sleep(3)",
        "while True:\n    pass",
        # many spawns and short awaits: interrupts land in and between runtime calls
        "for _ in range(400):\n"
        "    spawned.append(await context.runner().spawn_run('kslow', inputs={'seconds': 0.01}))\n"
        "    await asyncio.sleep(0.005)",
        # printing: interrupts land in ipykernel's output stream, which must keep working
        "while True:\n    print('.', end='', flush=True)\n    time.sleep(0.002)",
        # a finally that awaits, as user code may
        "try:\n    await asyncio.sleep(3)\nfinally:\n    await asyncio.sleep(0.05)",
    ]
    latencies = []
    try:
        for i in range(50):
            body = rng.choice(bodies)
            code = f"%%ag_session --session-id s{i}\nsessions.append(context)\n" \
                f"print('go', flush=True)\n{body}"
            reply = kernel.interrupt_after(code, "go", rng.uniform(0, 0.4))
            assert reply.status == "error", (i, body, reply.content)
            assert reply.content["ename"] == "KeyboardInterrupt", (i, body, reply.text)
            latencies.append(reply.seconds)
        assert max(latencies) < INTERRUPT_BOUND_S, latencies
        assert kernel.km.is_alive()
        assert kernel.evaluate("len(sessions)") == "50"
        assert kernel.evaluate("[s.session_id for s in sessions if s._closers is not None]") \
            == "[]"
        assert kernel.evaluate("'context' in globals()") == "False"
        settle = kernel.run(
            "manager = get_run_manager()\n"
            "records = [await manager.wait_run(r, timeout_s=30) for r in spawned]\n"
            # runs whose id an interrupt kept from the cell (landing just after spawn_run
            # returned) end too: none is stuck
            "async with asyncio.timeout(30):\n"
            "    while manager.live_records():\n"
            "        await asyncio.sleep(0.05)\n"
            "known = await manager.list_records(limit=100000)\n",
            timeout=180,
        )
        assert settle.status == "ok", (settle.text, kernel.evaluate(
            "[(r.run_id, r.status.value, r.started_at, r.meta, r.run_id in spawned) "
            "for r in manager.live_records()]"))
        assert kernel.evaluate("{r.status.value for r in records}") == "{'succeeded'}"
        assert kernel.evaluate("len(manager.live_records())") == "0"
        # every run the store knows (spawned ids not returned to the cell included) ended:
        # succeeded, or canceled before it started when the interrupt landed inside
        # spawn_run (the cell never got that id)
        assert kernel.evaluate(
            "sorted({r.status.value if r.status.value == 'succeeded' or (r.run_id not in "
            "spawned and r.started_at is None and r.meta.get('cancel_reason') == "
            "'submit_cancelled') else repr(r) for r in known} - {'canceled'})"
        ) == "['succeeded']"
        assert kernel.evaluate("len(known) >= len(spawned) > 0") == "True"
        later = kernel.run("gc.collect(); await asyncio.sleep(0.2); print('clean')")
        assert later.status == "ok" and later.text == "clean\n", later.text
        again = kernel.run("%%ag_session\n(await context.runner().run_and_wait("
                           "'kslow', inputs={'seconds': 0.01}))[1]")
        assert again.status == "ok" and again.text == "{'result': 0.01}", again.text
        assert kernel.km.is_alive()
    finally:
        kernel.kc.stop_channels()
        kernel.km.shutdown_kernel(now=True)


# ---------------------------------------------------------------- errors and syntax
def test_syntax_error_is_reported_at_the_cells_line_with_status_error(kernel):
    reply = kernel.run("%%ag_session\nx = 1\ny = = 2\nz = 3\n")
    assert reply.status == "error"
    assert reply.content["ename"] == "SyntaxError"
    text = reply.text
    assert re.search(r"Cell In\[\d+\], line 3\n    y = = 2\n        \^", text), text
    assert "run_session_cell" not in text and "session_cell.py" not in text
    assert kernel.evaluate("'x' in globals()") == "False"  # nothing ran


def test_indentation_and_compile_errors_run_nothing(kernel):
    reply = kernel.run("%%ag_session\nsessions.append(1)\nif True:\nprint('x')\n")
    assert reply.content["ename"] == "IndentationError"
    assert re.search(r"Cell In\[\d+\], line 4", reply.text), reply.text
    # parses, but does not compile: IPython would run the statements before it
    reply = kernel.run("%%ag_session\nsessions.append(1)\nreturn 5\n")
    assert reply.content["ename"] == "SyntaxError"
    assert re.search(r"Cell In\[\d+\], line 3\n    return 5", reply.text), reply.text
    assert kernel.evaluate("sessions") == "[]"


def test_run_all_stops_at_a_session_cell_error(kernel):
    ids = [
        kernel.kc.execute(code)
        for code in ["order = ['first']", "%%ag_session\nbroken(", "order.append('after')"]
    ]
    replies = [kernel.reply(i) for i in ids]
    assert [r.status for r in replies] == ["ok", "error", "aborted"]
    kernel.settle()
    assert kernel.evaluate("order") == "['first']"
    # a runtime error in a body stops the queue too
    ids = [kernel.kc.execute(c) for c in ["%%ag_session\n1/0", "order.append('after')"]]
    assert [kernel.reply(i).status for i in ids] == ["error", "aborted"]
    kernel.settle()
    assert kernel.evaluate("order") == "['first']"


def test_ipython_syntax_in_a_session_body(kernel):
    reply = kernel.run(
        "%%ag_session --session-id magic\n"
        "files = !echo from-shell\n"
        "%time y = 21 * 2\n"
        "!echo bang\n"
        "%timeit -n1 -r1 sum(range(10))\n"
        "print(files, y, context.session_id)\n"
        "len\n"
    )
    assert reply.status == "ok", reply.content
    text = reply.text
    assert "Wall time" in text and "bang" in text and "per loop" in text
    assert "['from-shell'] 42 magic" in text
    assert text.rstrip().endswith("<function len(obj, /)>")
    # `obj?` reaches IPython's help (a pager payload in a kernel), as in a plain cell
    reply = kernel.run("%%ag_session\nhelp_target = 42\nhelp_target?\n")
    assert reply.status == "ok", reply.content
    pages = [p for p in reply.content["payload"] if p.get("source") == "page"]
    assert pages and "int" in pages[0]["data"]["text/plain"]


def test_line_numbers_after_magics_stay_the_cells(kernel):
    reply = kernel.run("%%ag_session\n%time x = 1\n!true\n\n1/0\n")
    assert reply.content["ename"] == "ZeroDivisionError"
    assert "----> 5 1/0" in reply.text, reply.text


def test_trailing_semicolon_hides_the_value(kernel):
    assert kernel.run("%%ag_session\n41 + 1;").text == ""
    assert kernel.run("%%ag_session\n41 + 1").text == "42"


def test_output_of_a_session_cell_stays_in_it(kernel):
    first = kernel.run("%%ag_session\nprint('inside')\n")
    assert first.text == "inside\n"
    assert kernel.run("print('plain')").text == "plain\n"

