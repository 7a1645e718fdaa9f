"""Objects a notebook shows: ``RunRecord`` (short repr, escaped HTML card) and
``RunManager`` (counts by status), as IPython's display formatter renders them."""

from __future__ import annotations

import asyncio
import re

import pytest
from IPython.core.interactiveshell import InteractiveShell

from ag_jupyter.runtime import RunManager, RunRecord, RunStatus, graph_fn

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def formatter():
    """IPython's display formatter (what a notebook's Out[] uses)."""
    InteractiveShell.clear_instance()
    shell = InteractiveShell.instance()
    yield shell.display_formatter
    InteractiveShell.clear_instance()


@pytest.fixture
async def failed(manager: RunManager, registry) -> RunRecord:
    @graph_fn("fails", registry=registry)
    async def fails(message: str):
        raise ValueError(message)

    run = await manager.submit_run("fails", inputs={"message": "boom " * 100})
    return await manager.wait_run(run.run_id)


async def test_run_record_repr_is_one_short_line(failed: RunRecord, formatter):
    text = repr(failed)
    assert re.fullmatch(
        rf"<RunRecord {failed.run_id} graph=fails status=failed \d+ ms "
        r"error='ValueError: boom boom [^']*…'>",
        text,
    ), text
    assert len(text) < 160 and "raceback" not in text
    assert failed.meta.get("traceback")  # kept on the record, never shown
    assert str(failed) == text
    data, _ = formatter.format(failed)
    assert data["text/plain"] == text


async def test_run_record_repr_of_a_pending_run_has_no_duration():
    record = RunRecord(run_id="run-1", graph_id="g")
    assert repr(record) == "<RunRecord run-1 graph=g status=pending>"


async def test_run_record_html_card_escapes_every_value(failed: RunRecord, formatter):
    card = failed.model_copy(
        update={
            "error": "ValueError: <script>alert('x')</script> & more",
            "tags": ["<b>tag</b>"],
            "session_id": "<i>s</i>",
            "graph_id": "<g>",
        }
    )
    data, _ = formatter.format(card)
    page = data["text/html"]
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert "<g>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "&lt;b&gt;tag&lt;/b&gt;" in page and "&lt;i&gt;s&lt;/i&gt;" in page
    assert failed.run_id in page and "failed" in page and "raceback" not in page


async def test_run_manager_repr_counts_runs_by_status(manager: RunManager, registry):
    assert repr(manager) == "<RunManager no runs max_concurrency=8>"

    @graph_fn("sleeps", registry=registry)
    async def sleeps(seconds: float):
        await asyncio.sleep(seconds)

    quick = await manager.submit_run("sleeps", inputs={"seconds": 0})
    slow = await manager.submit_run("sleeps", inputs={"seconds": 30})
    await manager.wait_run(quick.run_id)
    await asyncio.sleep(0)
    assert repr(manager) == "<RunManager running=1 succeeded=1 max_concurrency=8>"
    await manager.cancel_run(slow.run_id)
    record = await manager.wait_run(slow.run_id)
    assert record.status is RunStatus.canceled
    assert repr(manager) == "<RunManager succeeded=1 canceled=1 max_concurrency=8>"
    await manager.close()
    assert repr(manager).startswith("<RunManager closed succeeded=1")
