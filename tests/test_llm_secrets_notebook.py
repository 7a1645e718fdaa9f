"""A planted API key used by a notebook (environment, llm_set_key, an endpoint that echoes
it in a 401 error, the run panel, printed records and contexts) is not in the saved
notebook, nor anywhere in its workspace folder. A real kernel (nbclient) talks to the real
OpenAI-compatible server of ``tests/llm_server.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from llm_server import FakeOpenAIServer, reset_llm_state, running_server
from nbclient import NotebookClient

pytestmark = pytest.mark.kernel

PLANTED = "sk-planted-NOTEBOOK-9d3e1b7c55aa"
PLANTED_2 = "sk-planted-SETKEY-0b6f2a8e41cc"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    yield from reset_llm_state(monkeypatch)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    yield from running_server()


@pytest.fixture
def refusing() -> Iterator[FakeOpenAIServer]:
    """An endpoint that refuses every key, echoing it back (as some servers do)."""
    for srv in running_server():
        srv.fail_status = 401
        srv.fail_message = f"Incorrect API key provided: {PLANTED}"
        yield srv


def test_a_planted_key_is_not_in_the_saved_notebook_or_the_workspace(
    server: FakeOpenAIServer,
    refusing: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = tmp_path / "ws"
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    monkeypatch.setenv("AG_LLM_MODEL", "test-model")
    monkeypatch.setenv("AG_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__REFUSING__BASE_URL", refusing.url)
    monkeypatch.setenv("AETHERGRAPH_LLM__PROFILES__REFUSING__API_KEY", PLANTED)
    monkeypatch.setenv("SECOND_KEY", PLANTED_2)
    cells = [
        "%load_ext ag_jupyter",
        f"%config AgJupyter.workspace = {str(ws)!r}",
        """
import os
from ag_jupyter import graph_fn, get_run_manager

@graph_fn("ask")
async def ask(context):
    context.llm_set_key(provider="openai", model="m2", api_key=os.environ["SECOND_KEY"],
                        profile="second")
    context.logger().info("using %r %r", context.llm(), context.llm().service.profile)
    text, usage = await context.llm().chat([{"role": "user", "content": "hi"}])
    await context.llm("second").chat([{"role": "user", "content": "hi"}])
    try:
        await context.llm("refusing").chat([{"role": "user", "content": "hi"}])
    except Exception as exc:
        context.logger().error("refused: %s", exc)
        print("refused:", exc)
    return {"text": text, "usage": usage}
""",
        """
%%ag_session --session-id secrets
final, outputs, _, _ = await get_run_manager().run_and_wait("ask", inputs={}, session_id="secrets")
print(final.status, final.meta, outputs)
print(repr(context.llm()), context.llm().service.profile, context.llm("second").service)
print(await get_run_manager().steps(final.run_id))
print(await get_run_manager().usage(session_id="secrets"))
print(await get_run_manager().logs(final.run_id))
""",
        "%ag_runs",
        "%ag_runs --text",
        """
%%ag_session
await context.llm("refusing").chat([{"role": "user", "content": "uncaught"}])
""",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.strip()) for c in cells])
    NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    saved = tmp_path / "saved.ipynb"
    nbformat.write(nb, saved)
    text = saved.read_text()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "LLMAuthError", errors
    assert "succeeded" in text and "'usage'" in text  # the run happened and was printed
    assert any(r["headers"]["authorization"] == f"Bearer {PLANTED}" for r in server.requests)
    assert any(r["headers"]["authorization"] == f"Bearer {PLANTED_2}" for r in server.requests)
    assert "application/vnd.jupyter.widget-view+json" in text
    for secret in (PLANTED, PLANTED_2):
        assert secret not in text
        for path in ws.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
