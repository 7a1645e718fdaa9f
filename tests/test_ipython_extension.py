"""The IPython extension in a real InteractiveShell: load/unload, %%ag_session, magics."""

from __future__ import annotations

import asyncio
import re

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import TraitError

from ag_jupyter.runtime import RunStatus, default_registry, get_run_manager

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def shell():
    """A fresh InteractiveShell with the extension loaded (unloaded afterwards)."""
    InteractiveShell.clear_instance()
    sh = InteractiveShell.instance()
    sh.run_line_magic("config", "AgJupyter.workspace = 'memory'")
    sh.run_line_magic("load_ext", "ag_jupyter")
    sh.run_line_magic("config", "AgJupyter.workspace = 'memory'")
    sh.run_cell(
        "import asyncio, time\n"
        "from ag_jupyter import graph_fn\n"
        "@graph_fn('ext_sleep')\n"
        "async def ext_sleep(seconds: float = 0.01):\n"
        "    await asyncio.sleep(seconds)\n"
        "    return seconds\n"
    )
    yield sh
    sh.run_line_magic("unload_ext", "ag_jupyter")
    default_registry.unregister("ext_sleep")
    InteractiveShell.clear_instance()


def run(sh: InteractiveShell, source: str):
    result = sh.run_cell(source)
    return result


def manager_of(sh: InteractiveShell):
    async def get():
        return get_run_manager()

    return sh.loop_runner(get())


def test_session_cell_awaits_and_displays_last_expression(shell):
    result = run(
        shell,
        "%%ag_session --session-id s1\n"
        "rid = await context.runner().spawn_run('ext_sleep', inputs={'seconds': 0.01})\n"
        "rec = await context.runner().wait_run(rid)\n"
        "(rec.status.value, rec.session_id, context.session_id)\n",
    )
    assert result.error_in_exec is None
    assert result.result == ("succeeded", "s1", "s1")
    assert shell.user_ns["rec"].parent_run_id == shell.user_ns["rec"].parent_run_id
    assert "rid" in shell.user_ns  # assignments persist like in a normal cell


def test_session_cell_keeps_multiline_strings_exact(shell):
    result = run(shell, '%%ag_session\ntext = """first\n    indented\nlast"""\ntext\n')
    assert result.result == "first\n    indented\nlast"


def test_session_cell_quoted_option_values(shell):
    result = run(shell, "%%ag_session --session-id 'my session' --agent-id \"a 1\"\n"
                 "(context.session_id, context.agent_id)\n")
    assert result.result == ("my session", "a 1")


def test_context_is_restored_after_the_cell(shell):
    shell.user_ns["context"] = "mine"
    result = run(shell, "%%ag_session\ninside = context\n")
    assert result.error_in_exec is None
    assert shell.user_ns["context"] == "mine"
    assert shell.user_ns["inside"].graph_id == "adhoc"
    del shell.user_ns["context"]
    run(shell, "%%ag_session\nx = 1\n")
    assert "context" not in shell.user_ns


def test_exception_closes_session_and_traceback_shows_cell_lines(shell, capsys):
    result = run(shell, "%%ag_session\nctx_seen = context\nx = 1\n1/0\n")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "----> 4 1/0" in out  # the cell's own line 4, not the rewritten line
    assert "context" not in shell.user_ns  # restored even on error
    # the session's clean-up ran: its closers list is spent
    assert shell.user_ns["ctx_seen"]._closers is None


def test_interrupt_inside_cell_closes_session(shell):
    result = run(
        shell,
        "%%ag_session\nctx_seen = context\nraise KeyboardInterrupt\n",
    )
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert shell.user_ns["ctx_seen"]._closers is None
    assert "context" not in shell.user_ns


def test_syntax_error_is_raised_before_anything_runs_at_the_cells_line(shell, capsys):
    result = run(shell, "%%ag_session\nran = True\nx = (1,\ny = 2\n")
    error = result.error_before_exec
    assert isinstance(error, SyntaxError), result
    assert error.lineno == 3 and error.text.startswith("x = (1,")
    assert "ran" not in shell.user_ns  # nothing of the body ran, no session opened
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert re.search(r"Cell In\[\d+\], line 3", out), out


def test_console_waits_for_a_blank_line_to_finish_a_session_cell(shell):
    # check_complete skips the (side-effecting) transformer: a cell magic's rule applies
    check = shell.input_transformer_manager.check_complete
    assert check("%%ag_session\nfor i in range(3):\n")[0] == "incomplete"
    assert check("%%ag_session\nx = 1\n\n")[0] == "complete"


def test_ipython_syntax_in_the_body_keeps_line_numbers(shell, capsys):
    result = run(shell, "%%ag_session\nout = !echo hi\n%time y = 1\n1/0\n")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert shell.user_ns["out"] == ["hi"] and shell.user_ns["y"] == 1
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert "----> 4 1/0" in out


@pytest.mark.parametrize(
    "body", ["await asyncio.sleep(20)", "time.sleep(20)", "while True: pass"]
)
def test_sigint_stops_a_session_cell_in_a_plain_shell(shell, body):
    import os
    import signal
    import threading
    import time

    reached = []
    previous = signal.signal(signal.SIGINT, lambda *_: reached.append("test handler"))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    try:
        started = time.monotonic()
        timer.start()
        result = run(shell, f"%%ag_session\nsess = context\n{body}\n")
        elapsed = time.monotonic() - started
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert reached == []  # the cell's handler got it, and was removed afterwards
    assert isinstance(result.error_in_exec, KeyboardInterrupt), result
    assert elapsed < 5, elapsed
    assert shell.user_ns["sess"]._closers is None and "context" not in shell.user_ns
    assert run(shell, "1 + 1").result == 2


def test_bad_option_is_a_usage_error_with_usage(shell, capsys):
    result = run(shell, "%%ag_session --bogus 1\nx = 1\n")
    assert isinstance(result.error_in_exec, UsageError)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "--bogus" in text and "--session-id" in text


def test_empty_body_is_a_usage_error(shell, capsys):
    result = run(shell, "%%ag_session --session-id x\n\n")
    assert isinstance(result.error_in_exec, UsageError)
    assert "needs a body" in str(result.error_in_exec)


def test_unbalanced_quote_is_a_usage_error(shell):
    result = run(shell, "%%ag_session --session-id 'oops\nx = 1\n")
    assert isinstance(result.error_in_exec, UsageError)


def test_help_reaches_ipython_not_the_rewrite(shell, capsys):
    result = run(shell, "%%ag_session?")
    assert result.error_in_exec is None and result.error_before_exec is None
    out = capsys.readouterr().out
    assert "--session-id" in out and "open_session" in out


def test_lsmagic_lists_the_cell_magic_and_direct_call_works(shell):
    assert "ag_session" in shell.magics_manager.magics["cell"]
    value = shell.run_cell_magic("ag_session", "--session-id direct", "context.session_id\n")
    assert value == "direct"


def test_autoawait_off_gives_a_clear_error(shell):
    shell.autoawait = False
    try:
        result = run(shell, "%%ag_session\nx = 1\n")
    finally:
        shell.autoawait = True
    assert isinstance(result.error_in_exec, UsageError)
    assert "autoawait" in str(result.error_in_exec)


def test_runs_listed_waited_and_cancelled_by_magics(shell, capsys):
    run(shell, "%%ag_session --session-id m\n"
        "slow = await context.runner().spawn_run('ext_sleep', inputs={'seconds': 30})\n"
        "fast = await context.runner().spawn_run('ext_sleep', inputs={'seconds': 0.01})\n"
        "await context.runner().wait_run(fast)\n")
    slow, fast = shell.user_ns["slow"], shell.user_ns["fast"]
    capsys.readouterr()
    shell.run_line_magic("ag_runs", "--text")
    table = capsys.readouterr().out
    assert slow in table and fast in table and "succeeded" in table
    shell.run_line_magic("ag_runs", "--status live")
    live_table = capsys.readouterr().out
    assert slow in live_table and fast not in live_table
    assert shell.run_line_magic("ag_wait", fast) is None  # one status line, no value
    line = capsys.readouterr().out
    assert line.startswith(f"{fast}: succeeded in ") and line.count("\n") == 1
    record = shell.run_line_magic("ag_wait", f"{fast} --return")
    assert record.status is RunStatus.succeeded
    shell.run_line_magic("ag_cancel", slow)
    assert "cancel requested" in capsys.readouterr().out
    record = shell.run_line_magic("ag_wait", f"{slow} --timeout 5 --return")
    assert record.status is RunStatus.canceled
    shell.run_line_magic("ag_cancel", slow)
    assert "already canceled" in capsys.readouterr().out


def test_cancel_all_and_unknown_ids(shell, capsys):
    run(shell, "%%ag_session\n"
        "ids = [await context.runner().spawn_run('ext_sleep', inputs={'seconds': 30})"
        " for _ in range(3)]\n")
    with pytest.raises(UsageError, match="no run with id 'nope'"):
        shell.run_line_magic("ag_cancel", "nope")
    with pytest.raises(UsageError, match="run ids or --all"):
        shell.run_line_magic("ag_cancel", "")
    shell.run_line_magic("ag_cancel", "--all")
    manager = manager_of(shell)

    async def settle():
        return [await manager.wait_run(i, timeout_s=5) for i in shell.user_ns["ids"]]

    records = shell.loop_runner(settle())
    assert {r.status for r in records} == {RunStatus.canceled}


def test_ag_runs_rejects_an_unknown_status(shell):
    with pytest.raises(UsageError, match="unknown status 'bogus'; use 'all', 'live'"):
        shell.run_line_magic("ag_runs", "--status bogus --text")


def test_ag_wait_errors(shell):
    with pytest.raises(UsageError, match="no run with id"):
        shell.run_line_magic("ag_wait", "missing")
    with pytest.raises(UsageError, match="positive"):
        shell.run_line_magic("ag_wait", "x --timeout -1")


def test_ag_graphs_lists_inputs(shell, capsys):
    shell.run_line_magic("ag_graphs", "")
    out = capsys.readouterr().out
    assert "ext_sleep" in out and "inputs: seconds" in out


def test_config_validates_and_applies_concurrency(shell, caplog):
    config = shell._ag_jupyter_state.config
    shell.run_line_magic("config", "AgJupyter.max_concurrency = 0")  # %config logs the error
    assert "max_concurrency must be a positive int, got 0" in caplog.text
    assert config.max_concurrency == 8
    with pytest.raises(TraitError, match="positive"):
        config.max_concurrency = -2
    with pytest.raises(TraitError, match="between"):
        config.panel_refresh_s = 0
    manager = manager_of(shell)
    shell.run_line_magic("config", "AgJupyter.max_concurrency = 3")
    assert manager.max_concurrency == 3


def test_a_refused_config_value_keeps_the_previous_one_and_reload_still_works(shell, caplog):
    # IPython's %config hands the statement to every configurable; the others merge it
    # into the shell's shared config, where a refused value used to stay and make the next
    # %reload_ext fail (the extension then gone from the kernel).
    shell.run_line_magic("config", "AgJupyter.max_concurrency = 3")
    shell.run_line_magic("config", "AgJupyter.max_concurrency = -1")
    assert "max_concurrency must be a positive int, got -1" in caplog.text
    assert shell.config.AgJupyter.max_concurrency == 3
    result = run(shell, "%reload_ext ag_jupyter")
    assert result.error_in_exec is None
    assert shell._ag_jupyter_state.config.max_concurrency == 3
    assert shell.run_line_magic("config", "AgJupyter.max_concurrency") == 3


def test_a_bad_value_in_the_ipython_configuration_is_named_and_skipped_at_load(shell):
    shell.run_line_magic("unload_ext", "ag_jupyter")
    shell.config.AgJupyter.max_concurrency = -5  # as an ipython_config.py line would
    shell.config.AgJupyter.panel_refresh_s = 0.5
    with pytest.warns(RuntimeWarning, match=r"AgJupyter.max_concurrency = -5 .*default 8"):
        shell.run_line_magic("load_ext", "ag_jupyter")
    config = shell._ag_jupyter_state.config
    assert (config.max_concurrency, config.panel_refresh_s) == (8, 0.5)
    assert "max_concurrency" not in shell.config.AgJupyter
    assert run(shell, "%%ag_session\n1 + 1").result == 2


def test_config_llm_prices_reads_back_what_was_set(shell):
    shell.run_line_magic("config", "AgJupyter.llm_prices = {'m-1': [1.0, 2.0]}")
    assert shell.run_line_magic("config", "AgJupyter.llm_prices") == {"m-1": [1.0, 2.0]}
    shell.run_line_magic("config", "AgJupyter.llm_prices = None")


def test_session_cell_max_concurrency_limits_its_runs(shell):
    result = run(
        shell,
        "%%ag_session --max-concurrency 1 --session-id lim\n"
        "from ag_jupyter import get_run_manager\n"
        "ids = [await context.runner().spawn_run('ext_sleep', inputs={'seconds': 0.3}) "
        "for _ in range(2)]\n"
        "await asyncio.sleep(0.1)\n"
        "statuses = [get_run_manager().find_record(r).status.value for r in ids]\n"
        "[(await context.runner().wait_run(r)).status.value for r in ids]\n",
    )
    assert result.error_in_exec is None, result.error_in_exec
    assert shell.user_ns["statuses"] == ["running", "pending"]
    assert result.result == ["succeeded", "succeeded"]
    bad = run(shell, "%%ag_session --max-concurrency 0\n1")
    assert isinstance(bad.error_in_exec, ValueError)
    assert "max_concurrency" in str(bad.error_in_exec) and "0" in str(bad.error_in_exec)
    with pytest.raises(UsageError, match="invalid choice: 'ray'"):
        shell.run_cell_magic("ag_session", "--executor ray", "1")


def test_load_is_idempotent_and_unload_removes_everything(shell):
    from ag_jupyter import load_ipython_extension, unload_ipython_extension

    transformers = list(shell.input_transformers_cleanup)
    load_ipython_extension(shell)
    assert shell.input_transformers_cleanup == transformers
    unload_ipython_extension(shell)
    assert not any(k.startswith("ag_") for k in shell.magics_manager.magics["line"])
    assert "ag_session" not in shell.magics_manager.magics["cell"]
    assert len(shell.input_transformers_cleanup) == len(transformers) - 1
    assert not any(type(c).__name__ == "AgJupyter" for c in shell.configurables)
    load_ipython_extension(shell)  # the fixture unloads again


def test_unload_keeps_live_runs_going(shell):
    run(shell, "%%ag_session\n"
        "rid = await context.runner().spawn_run('ext_sleep', inputs={'seconds': 0.2})\n")
    manager = manager_of(shell)
    shell.run_line_magic("unload_ext", "ag_jupyter")
    record = shell.loop_runner(manager.wait_run(shell.user_ns["rid"], timeout_s=5))
    assert record.status is RunStatus.succeeded
    shell.run_line_magic("load_ext", "ag_jupyter")


def test_blocking_wait_in_running_loop_says_use_await(shell):
    from ag_jupyter.ipython.blocking import run_blocking

    async def inside_loop():
        async def never():
            await asyncio.sleep(10)

        with pytest.raises(UsageError, match="await"):
            run_blocking(shell, never, what="x", alternative="await it", config=None)

    asyncio.run(inside_loop())


# ------------------------------------------------------------------------- %ag_wait
def failed_record(shell, message: str):
    run(shell, "from ag_jupyter import graph_fn\n"
        "@graph_fn('ext_fail')\n"
        "async def ext_fail(message: str):\n"
        "    raise ValueError(message)\n")
    try:
        result = run(shell, "%%ag_session\n"
                     "rid = await context.runner().spawn_run('ext_fail', "
                     f"inputs={{'message': {message!r}}})\n"
                     "await context.runner().wait_run(rid)\n")
    finally:
        default_registry.unregister("ext_fail")
    assert result.error_in_exec is None
    return result.result


def test_ag_wait_prints_one_line_and_returns_nothing_unless_asked(shell, capsys):
    record = failed_record(shell, "bad input")
    capsys.readouterr()
    result = run(shell, f"%ag_wait {record.run_id}")
    assert result.result is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    assert out.startswith(f"{record.run_id}: failed in ") and "ValueError: bad input" in out
    result = run(shell, f"rec = %ag_wait {record.run_id} --return")
    assert shell.user_ns["rec"] == record


def test_config_mcp_servers_reaches_context_mcp_and_unload_stops_the_server(shell, caplog):
    import sys
    from pathlib import Path

    import psutil

    from ag_jupyter.runtime import list_mcp_clients

    command = [str(Path(sys.executable).parent / "mcp-server-time")]
    # %config reports a TraitError as an error line; nothing is configured.
    shell.run_line_magic("config", "AgJupyter.mcp_servers = {'time': {'command': 42}}")
    assert "MCP server 'time': 'command' must be" in caplog.text
    assert "time" not in list_mcp_clients()
    setting = f"AgJupyter.mcp_servers = {{'time': {{'command': {command!r}}}}}"
    shell.run_line_magic("config", setting)
    result = run(
        shell,
        "%%ag_session\n"
        "now = await context.mcp('time').call('get_current_time', {'timezone': 'UTC'})\n"
        "pid = context.mcp('time').pid\n",
    )
    assert result.error_in_exec is None
    assert shell.user_ns["now"]["structuredContent"]["timezone"] == "UTC"
    server = psutil.Process(shell.user_ns["pid"])
    shell.run_line_magic("unload_ext", "ag_jupyter")
    shell.loop_runner(asyncio.sleep(0.5))  # the close was scheduled on the kernel's loop
    gone, _ = psutil.wait_procs([server], timeout=10)
    assert gone, "the MCP server outlived %unload_ext"
    assert "time" not in list_mcp_clients()
    shell.run_line_magic("load_ext", "ag_jupyter")  # the %config setting applies again
    assert "time" in list_mcp_clients()
    shell.run_line_magic("config", "AgJupyter.mcp_servers = {}")
    assert "time" not in list_mcp_clients()


def test_blocking_waits_setting_drives_run_from_a_cell(shell):
    from ag_jupyter.runtime import blocking_waits

    assert blocking_waits() == "error"
    shell.run_line_magic("config", "AgJupyter.blocking_waits = 'nest_asyncio2'")
    assert blocking_waits() == "nest_asyncio2"
    shell.run_line_magic("config", "AgJupyter.blocking_waits = 'error'")
    assert blocking_waits() == "error"
    shell.run_line_magic("config", "AgJupyter.blocking_waits = 'nest_asyncio2'")
    shell.run_line_magic("unload_ext", "ag_jupyter")
    assert blocking_waits() == "error"  # back to the environment's default
    shell.run_line_magic("load_ext", "ag_jupyter")


def test_config_llm_prices_prices_token_usage(shell, caplog):
    from ag_jupyter.runtime.services.llm import call_cost, llm_prices

    shell.run_line_magic("config", "AgJupyter.llm_prices = {'m1': [1.0, 2.0]}")
    assert llm_prices()["m1"][:2] == (1.0, 2.0)
    assert call_cost("m1", 1_000_000, 500_000, 0) == pytest.approx(2.0)
    shell.run_line_magic("config", "AgJupyter.llm_prices = {'m2': 'cheap'}")
    assert "AgJupyter.llm_prices" in caplog.text  # refused, reported
    assert "m1" in llm_prices() and "m2" not in llm_prices()
    shell.run_line_magic("config", "AgJupyter.llm_prices = {'m3': [0.5, 0.5]}")
    shell.run_line_magic("unload_ext", "ag_jupyter")
    assert llm_prices() == {}
    shell.run_line_magic("load_ext", "ag_jupyter")  # the %config setting applies again
    assert "m3" in llm_prices()
    shell.run_line_magic("config", "AgJupyter.llm_prices = None")
