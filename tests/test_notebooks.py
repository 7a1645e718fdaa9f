"""Every notebook under notebooks/ runs in a real kernel (nbclient), with its outputs checked."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.kernel


def execute(path: Path, tmp_path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    return nb


def outputs_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        data = out.get("data", {})
        parts.append(data.get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_errors(path: Path, tmp_path: Path):
    nb = execute(path, tmp_path)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors


def test_quickstart_outputs(tmp_path: Path):
    nb = execute(Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb", tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    text = [outputs_text(c) for c in code]
    everything = "\n".join(text)
    # %ag_graphs lists the three graphs with their inputs
    assert "slow  [async]  inputs: seconds" in everything
    assert "fan_out  [async]  inputs: n  outputs: total" in everything
    # %ag_runs in a kernel displays the widget, with a text snapshot beside it
    panel_outputs = [
        o for c in code for o in c.get("outputs", [])
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert panel_outputs, "the run panel widget was not displayed"
    assert "text/html" in panel_outputs[0]["data"]
    # the cancelled run, the failed run and the fan-out parent's total
    assert "cancel requested" in everything
    results_cell = next(t for t in text if "fan_out" in t and "succeeded" in t)
    assert "{'total': 1.2}" in results_cell  # 0.2 + 0.4 + 0.6 from its three children
    assert "ValueError: this run fails on purpose" in everything
    assert "canceled" in everything
    # the final text table counts every run, children included
    assert "runs:" in text[-1] and "succeeded" in text[-1] and "child" in text[-1]


def test_run_all_stops_at_a_session_cell_with_a_syntax_error(tmp_path: Path):
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext ag_jupyter\n%config AgJupyter.workspace = 'memory'"),
        nbformat.v4.new_code_cell("%%ag_session\nx = 1\ny = = 2\n"),
        nbformat.v4.new_code_cell("print('ran after the error')"),
    ]
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    with pytest.raises(CellExecutionError) as raised:
        client.execute()
    assert "SyntaxError" in str(raised.value)
    error = nb.cells[1].outputs[0]
    assert error.output_type == "error" and error.ename == "SyntaxError"
    assert "line 3" in "\n".join(error.traceback)
    assert nb.cells[2].outputs == [] and nb.cells[2].execution_count is None


def test_human_in_the_loop_outputs(tmp_path: Path):
    """The agent drafts, asks for approval (status waiting), is rejected, asks what to
    change, revises, is approved and publishes an artifact; the answers come from later
    cells through manager.answer, as the panel would give them."""
    nb = execute(Path(__file__).parents[1] / "notebooks" / "human_in_the_loop.ipynb", tmp_path)
    text = [outputs_text(c) for c in nb.cells if c.cell_type == "code"]
    everything = "\n".join(text)
    assert "the agent drafts" in text[1]  # says whether it drafts with an LLM or a template
    assert "approval | Publish draft 1? | ['Approve', 'Reject']" in everything
    assert "run status: waiting" in everything
    assert "text | What should change?" in everything
    assert "succeeded | published: True | rounds: 2" in everything
    assert "Say that waiting runs give their slots back." in everything  # the revision
    kinds = [line.split()[0] for line in text[-1].splitlines() if line.strip()]
    assert kinds[:3] == ["sent", "ask", "answer"] and kinds.count("ask") == 3
    assert "Published: ag://artifacts/" in text[-1]


def _time_servers() -> set[int]:
    """pids of running mcp-server-time processes (ours or anyone's)."""
    import psutil

    found = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if "mcp-server-time" in cmdline or "mcp_server_time" in cmdline:
            found.add(proc.pid)
    return found


def test_research_agent_answers_with_a_loopback_llm_and_leaves_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The research agent notebook with an LLM profile pointing at the loopback
    OpenAI-compatible server of tests/llm_server.py: the stdlib corpus is indexed, each of
    the three runs searches it, calls the real MCP time server and asks for approval; the
    approved two answer with the LLM (whose prompt carries the retrieved passages), the
    rejected one does not; the time server is gone once the kernel stops."""
    from llm_server import configure_env, reset_llm_state, running_server

    before = _time_servers()
    for _ in reset_llm_state(monkeypatch):
        for server in running_server():
            server.reply = "Use asyncio.to_thread(func, *args) [1]."
            configure_env(monkeypatch, server)
            nb = execute(Path(__file__).parents[1] / "notebooks" / "research_agent.ipynb",
                         tmp_path)
            prompts = [json.dumps(body["messages"]) for body in server.bodies()]
    text = [outputs_text(c) for c in nb.cells if c.cell_type == "code"]
    everything = "\n".join(text)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    indexed = re.search(r"corpus 'stdlib-docs': 39 documents, (\d+) chunks", everything)
    assert indexed and int(indexed.group(1)) > 100, everything
    # the reviewer saw the sources found: hashlib's documentation for the SHA-256 question
    assert re.search(r"SHA-256 digest.*\n- hashlib \(characters \d+-\d+\)", everything)
    assert everything.count("-> Approve") == 2 and everything.count("-> Reject") == 1
    assert everything.count("[succeeded]") == 3
    assert everything.count("answer (llm): Use asyncio.to_thread(func, *args) [1].") == 2
    assert "not answered: the reviewer rejected it" in everything
    assert re.search(r"asked at 20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d", everything)  # from MCP
    # two LLM calls (the approved runs), each prompt carrying that run's passages
    assert len(prompts) == 2
    assert any("hashlib" in p and "SHA-256" in p for p in prompts)
    steps = text[-1].splitlines()
    assert any(line.split()[:2] == ["mcp", "time/get_current_time"] and line.endswith("ok")
               for line in steps), steps
    assert any(line.split()[0] == "llm" for line in steps), steps
    # no orphan: the time server the kernel started stopped with it
    for _ in range(50):
        if not _time_servers() - before:
            break
        time.sleep(0.1)
    assert not _time_servers() - before
