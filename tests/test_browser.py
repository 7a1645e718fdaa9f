"""End to end in a real browser: JupyterLab and Notebook 7 on 127.0.0.1, Debian's chromium
driven by Playwright, the quick-start notebook run with "Run All", live panel rows, a Cancel
click.

The recipe and its pitfalls are in shared/E2E.md. Artefacts (screenshots, console logs) go
to $AG_TEST_ARTIFACTS (default: test-artifacts/).

The panel tests of issue 15 write their own notebook into the server's root: a run's detail
(logs, outputs, steps, artifacts) opened by a click, Retry of a failed run, hostile strings
rendered as text (no <img> appears, no dialog opens), the Cancel button visible at 1,280 px
with JupyterLab's file browser open, 50 rows scrolling inside the panel under a sticky
header, and "Cancel all" with its confirmation.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("AG_TEST_ARTIFACTS") or ROOT / "test-artifacts")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not os.environ.get("CI"),
        reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(base: str, token: str, path: str, method: str = "GET") -> object:
    request = urllib.request.Request(
        f"{base}{path}", method=method, headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if body else None


# front end -> (server command, its app class for flags, the notebook's URL path)
FRONT_ENDS = {
    "jupyterlab": ("lab", "LabApp", "/lab/tree/quickstart.ipynb"),
    "notebook7": ("notebook", "JupyterNotebookApp", "/notebooks/quickstart.ipynb"),
}


@pytest.fixture(scope="module", params=sorted(FRONT_ENDS))
def lab(request, tmp_path_factory):
    """A hermetic Jupyter server (JupyterLab or Notebook 7): its own dirs, settings, and a
    root holding a copy of the quick-start notebook."""
    command, app_class, notebook_path = FRONT_ENDS[request.param]
    base_dir = tmp_path_factory.mktemp("lab")
    root = base_dir / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", root / "quickstart.ipynb")
    env = dict(os.environ)
    for name in ("HOME", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR",
                 "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR", "IPYTHONDIR"):
        path = base_dir / name.lower()
        path.mkdir()
        env[name] = str(path)
    settings = Path(env["JUPYTERLAB_SETTINGS_DIR"])
    for plugin, values in {
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                        "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    }.items():
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    # The kernel must import this checkout's ag_jupyter and the venv's packages.
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["AG_WORKSPACE"] = str(base_dir / "workspace")
    port, token = free_port(), uuid.uuid4().hex
    log_path = base_dir / "lab.log"
    log_file = log_path.open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", command, "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--{app_class}.expose_app_in_browser=True",
         *(["--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
           if command == "lab" else [])],
        env=env, stdout=log_file, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter {command} exited early:\n{log_path.read_text()}")
        try:
            api(base, token, "/api/status")
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(
                    f"jupyter {command} did not answer in 60 s:\n{log_path.read_text()}"
                ) from None
            time.sleep(0.5)
    yield {"base": base, "token": token, "env": env, "root": root, "log": log_path,
           "name": request.param, "notebook_path": notebook_path}
    try:
        api(base, token, "/api/shutdown", method="POST")
        server.wait(timeout=15)
    except Exception:
        pass
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    log_file.close()


@pytest.fixture
def page(lab, tmp_path):
    """A fresh headless chromium page; its console log and a screenshot are kept."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
            viewport={"width": 1500, "height": 1100},
        )
        pg = context.pages[0] if context.pages else context.new_page()
        pg.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        try:
            yield pg
        finally:
            (ARTIFACTS / f"{lab['name']}-console.log").write_text("\n".join(console))
            try:
                pg.screenshot(path=str(ARTIFACTS / f"{lab['name']}-last.png"), full_page=True)
            except Exception:
                pass
            context.close()


def kernel_id(lab, notebook: str | None = None) -> str:
    """The id of ``notebook``'s kernel (by its session), or of the only kernel."""
    if notebook is not None:
        sessions = api(lab["base"], lab["token"], "/api/sessions")
        found = [s["kernel"]["id"] for s in sessions if s["path"].endswith(notebook)]
        assert len(found) == 1, sessions
        return found[0]
    kernels = api(lab["base"], lab["token"], "/api/kernels")
    assert len(kernels) == 1, kernels
    return kernels[0]["id"]


def kernel_value(lab, expression: str, notebook: str | None = None) -> str:
    """Evaluate ``expression`` in the notebook's kernel through its connection file."""
    from jupyter_client import BlockingKernelClient

    connection = Path(lab["env"]["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id(lab, notebook)}.json"
    client = BlockingKernelClient(connection_file=str(connection))
    client.load_connection_file()
    client.start_channels()
    try:
        reply = client.execute_interactive(
            "", user_expressions={"v": expression}, timeout=30, output_hook=lambda m: None
        )
    finally:
        client.stop_channels()
    value = reply["content"]["user_expressions"]["v"]
    assert value["status"] == "ok", value
    return value["data"]["text/plain"]


def wait_kernel_ready(page) -> None:
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const ctx = w && w.sessionContext;
            const k = ctx && ctx.session && ctx.session.kernel;
            return !!(ctx && ctx.isReady && k && k.connectionStatus === 'connected'
                      && k.status === 'idle');
        }""",
        timeout=90_000,
    )


def prompts(page) -> list[str]:
    return page.eval_on_selector_all(
        ".jp-CodeCell .jp-InputPrompt", "els => els.map(e => e.textContent.trim())"
    )


def test_quickstart_panel_live_rows_and_cancel(lab, page):
    url = f"{lab['base']}{lab['notebook_path']}?token={lab['token']}"
    page.goto(url, wait_until="domcontentloaded")
    wait_kernel_ready(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    # fail fast if Run All was swallowed (the race in E2E.md)
    page.wait_for_function(
        """() => { const p = document.querySelector('.jp-CodeCell .jp-InputPrompt');
                   return p && p.textContent.trim() !== '[ ]:'; }""",
        timeout=15_000,
    )
    # rows appear in the panel and change status live while cells run
    page.wait_for_selector(".ag-run-panel tr[data-run-id]", timeout=60_000)
    page.wait_for_selector('.ag-run-panel .ag-status[data-status="running"]', timeout=60_000)
    page.wait_for_selector('.ag-run-panel .ag-status[data-status="succeeded"]', timeout=60_000)
    # wait until every cell ran (last prompt numbered, none busy)
    page.wait_for_function(
        """() => { const ps = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                     .map(e => e.textContent.trim());
                   return ps.length > 0 && ps.every(p => /^\\[\\d+\\]:$/.test(p)); }""",
        timeout=120_000,
    )
    assert not page.query_selector(".jp-OutputArea-output[data-mime-type*='error']")
    long_run = json.loads(kernel_value(lab, "long_run").replace("'", '"'))
    row = page.locator(f'.ag-run-panel tr[data-run-id="{long_run}"]')
    status = row.locator(".ag-status")
    assert status.get_attribute("data-status") == "running"
    counts_before = prompts(page)
    page.screenshot(path=str(ARTIFACTS / f"{lab['name']}-before-cancel.png"), full_page=True)
    row.locator("button.ag-cancel").click()
    # the change is live: it arrives from the kernel's loop, no cell re-ran
    page.wait_for_function(
        """(id) => { const s = document.querySelector(
                       `.ag-run-panel tr[data-run-id="${id}"] .ag-status`);
                     return s && s.getAttribute('data-status') === 'canceled'; }""",
        arg=long_run,
        timeout=15_000,
    )
    assert prompts(page) == counts_before
    assert row.locator("button.ag-cancel").count() == 0
    page.screenshot(path=str(ARTIFACTS / f"{lab['name']}-after-cancel.png"), full_page=True)
    # and the kernel agrees
    assert kernel_value(
        lab, f"get_run_manager().find_record({long_run!r}).status.value"
    ) == "'canceled'"
    assert kernel_value(
        lab, f"get_run_manager().find_record({long_run!r}).meta['cancel_reason']"
    ) == "'panel_cancel'"


# --------------------------------------------------------------------------- issue 15
EVIL = "<img src=x onerror=alert(1)>"


def write_notebook(lab, name: str, cells: list[str]) -> str:
    """Write a notebook of code ``cells`` into the server's root; return its URL path."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, lab["root"] / name)
    return lab["notebook_path"].rsplit("/", 1)[0] + "/" + name


def run_all(lab, page, path: str) -> None:
    # JupyterLab: ?reset, so tabs of earlier tests (kept in the server's workspace) stay shut
    reset = "&reset" if lab["name"] == "jupyterlab" else ""
    page.goto(f"{lab['base']}{path}?token={lab['token']}{reset}", wait_until="domcontentloaded")
    wait_kernel_ready(page)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(
        """() => { const p = document.querySelector('.jp-CodeCell .jp-InputPrompt');
                   return p && p.textContent.trim() !== '[ ]:'; }""",
        timeout=15_000,
    )
    page.wait_for_function(
        """() => { const ps = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                     .map(e => e.textContent.trim());
                   return ps.length > 0 && ps.every(p => /^\\[\\d+\\]:$/.test(p)); }""",
        timeout=120_000,
    )
    assert not page.query_selector(".jp-OutputArea-output[data-mime-type*='error']")


def shutdown_kernel(lab, notebook: str) -> None:
    sessions = api(lab["base"], lab["token"], "/api/sessions")
    for session in sessions:
        if session["path"].endswith(notebook):
            api(lab["base"], lab["token"], f"/api/sessions/{session['id']}", method="DELETE")


def shot(lab, page, name: str, element=None) -> Path:
    """Keep a screenshot (of the viewport, or of ``element`` alone) as an artefact."""
    path = ARTIFACTS / f"{lab['name']}-{name}.png"
    if element is not None:
        element.screenshot(path=str(path))
    else:
        page.screenshot(path=str(path), full_page=False)
    return path


DETAIL_CELLS = [
    "%load_ext ag_jupyter",
    f"""import asyncio
from ag_jupyter import graph_fn, get_run_manager, tool

EVIL = {EVIL!r}

@tool(outputs=["result"], name="shout")
async def shout(text: str) -> str:
    return text.upper()

@graph_fn("chatty")
async def chatty(n: int, context):
    for i in range(n):
        context.logger().info("chatty line %d %s", i, EVIL)
    await shout(EVIL)
    await context.artifacts().save_text("hello", name=EVIL + ".md", kind="report")
    return {{"answer": 42, "note": EVIL}}

attempts = []

@graph_fn("flaky_once")
async def flaky_once(x: int):
    attempts.append(x)
    if len(attempts) == 1:
        raise ValueError("first attempt fails " + EVIL)
    return x + 1
""",
    """manager = get_run_manager()
chatty_id = (await manager.run_and_wait("chatty", inputs={"n": 30}, session_id="demo"))[0].run_id
flaky_id = (await manager.run_and_wait("flaky_once", inputs={"x": 41}))[0].run_id
""",
    "%ag_runs",
]


def test_panel_detail_shows_logs_and_outputs_retry_and_no_markup(lab, page):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    name = "panel_detail.ipynb"
    run_all(lab, page, write_notebook(lab, name, DETAIL_CELLS))
    chatty = kernel_value(lab, "chatty_id", name).strip("'")
    flaky = kernel_value(lab, "flaky_id", name).strip("'")
    panel = page.locator(".ag-run-panel").first
    row = panel.locator(f'tr[data-run-id="{chatty}"]')
    row.wait_for(timeout=30_000)
    # open the detail with a click on the row
    row.locator(".ag-col-graph").click()
    detail = panel.locator("section.ag-detail")
    detail.locator(".ag-log-message").first.wait_for(timeout=15_000)
    messages = detail.locator(".ag-log-message").all_text_contents()
    assert messages[-1] == f"chatty line 29 {EVIL}" and len(messages) == 30
    outputs = detail.locator(".ag-detail-outputs pre.ag-json").text_content()
    assert '"answer": 42' in outputs and EVIL in outputs
    assert detail.locator(".ag-step-name").all_text_contents() == ["shout"]
    assert detail.locator(".ag-artifact-name").all_text_contents() == [f"{EVIL}.md"]
    # the log search asks the kernel for matching lines only
    detail.locator("input.ag-log-search").fill("line 2")
    page.wait_for_function(
        """() => { const r = document.querySelector('.ag-run-panel .ag-log-range');
                   return r && r.textContent === 'lines 1-11 of 11'; }""", timeout=15_000)
    shot(lab, page, "detail", panel)
    detail.locator(".ag-detail-children").scroll_into_view_if_needed()
    shot(lab, page, "detail-steps-artifacts", panel)
    # run text never became markup anywhere in the panel, and no script ran
    assert page.locator(".ag-run-panel img").count() == 0
    assert page.evaluate("() => document.querySelectorAll('.ag-run-panel img').length") == 0
    assert not dialogs
    # back to the list, Retry the failed run: a new linked run succeeds, the original stays
    detail.locator("button.ag-detail-close").click()
    flaky_row = panel.locator(f'tr[data-run-id="{flaky}"]')
    assert flaky_row.locator(".ag-status").get_attribute("data-status") == "failed"
    flaky_row.locator("button.ag-retry").click()
    retried = panel.locator('tr:has(.ag-badge-retry) .ag-status[data-status="succeeded"]')
    retried.first.wait_for(timeout=30_000)
    assert flaky_row.locator(".ag-status").get_attribute("data-status") == "failed"
    assert kernel_value(
        lab, f"[r.meta.get('retry_of') for r in manager.recent_records()].count({flaky!r})", name
    ) == "1"
    shot(lab, page, "retried", panel)
    assert not dialogs and page.locator(".ag-run-panel img").count() == 0
    shutdown_kernel(lab, name)


DASK_CELLS = [
    "%load_ext ag_jupyter",
    """import os
from ag_jupyter import graph_fn, get_run_manager
from ag_jupyter.runtime import configure_dask

configure_dask(cluster_options={"n_workers": 1})  # the kernel's own LocalCluster

@graph_fn("on_dask", executor="dask")
def on_dask(x: int):
    return {"pid": os.getpid(), "x": x}

@graph_fn("at_home")
def at_home(x: int):
    return {"pid": os.getpid(), "x": x}

manager = get_run_manager()
dask_rec, dask_out, *_ = await manager.run_and_wait("on_dask", inputs={"x": 1})
home_rec, *_ = await manager.run_and_wait("at_home", inputs={"x": 2})
assert dask_out["pid"] != os.getpid()
dask_id, home_id, worker = dask_rec.run_id, home_rec.run_id, dask_rec.meta["worker"]
""",
    "%ag_runs",
]


def test_panel_lists_a_dask_run_with_its_worker(lab, page):
    page.set_viewport_size({"width": 1280, "height": 900})
    name = "panel_dask.ipynb"
    run_all(lab, page, write_notebook(lab, name, DASK_CELLS))
    dask_id = kernel_value(lab, "dask_id", name).strip("'")
    home_id = kernel_value(lab, "home_id", name).strip("'")
    worker = kernel_value(lab, "worker", name).strip("'")
    panel = page.locator(".ag-run-panel").first
    badge = panel.locator(f'tr[data-run-id="{dask_id}"] .ag-badge-executor')
    badge.wait_for(timeout=30_000)
    assert badge.text_content() == "dask " + worker.split("://", 1)[-1]
    assert badge.get_attribute("title") == f"ran on dask worker {worker}"
    assert panel.locator(f'tr[data-run-id="{home_id}"] .ag-badge-executor').count() == 0
    box = badge.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1280, box  # on screen
    panel.scroll_into_view_if_needed()
    shot(lab, page, "dask-worker-badge", panel)
    shutdown_kernel(lab, name)


LAYOUT_CELLS = [
    "%load_ext ag_jupyter\n%config AgJupyter.max_concurrency = 100",
    """import asyncio
from ag_jupyter import graph_fn, get_run_manager

@graph_fn("nap")
async def nap(seconds: float, context):
    await asyncio.sleep(seconds)
    return seconds

manager = get_run_manager()
for i in range(55):
    await manager.run_and_wait("nap", inputs={"seconds": 0}, tags=["quick"])
# wide rows: the table is wider than the output area and scrolls sideways inside the panel
wide = [f"a-rather-long-tag-number-{i}" for i in range(8)]
long_ids = [(await manager.submit_run("nap", inputs={"seconds": 300}, tags=["long", *wide],
                                      session_id="a-session-with-a-long-name")).run_id
            for _ in range(3)]
""",
    "%ag_runs",
]


def test_panel_layout_cancel_visible_scrolls_inside_and_cancel_all_confirms(lab, page):
    page.set_viewport_size({"width": 1280, "height": 900})
    name = "panel_layout.ipynb"
    run_all(lab, page, write_notebook(lab, name, LAYOUT_CELLS))
    if lab["name"] == "jupyterlab":  # the file browser open beside the notebook
        page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")
        page.wait_for_selector(".jp-FileBrowser", state="visible", timeout=10_000)
    long_ids = json.loads(kernel_value(lab, "long_ids", name).replace("'", '"'))
    panel = page.locator(".ag-run-panel").first
    panel.locator(f'tr[data-run-id="{long_ids[0]}"]').wait_for(timeout=30_000)
    panel.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    # Cancel is on screen: inside the viewport and inside the cell's output area
    cancel = panel.locator(f'tr[data-run-id="{long_ids[0]}"] button.ag-cancel')
    box = cancel.bounding_box()
    output = page.locator(".jp-OutputArea-output:has(.ag-run-panel)").first.bounding_box()
    assert box is not None and output is not None
    assert 0 <= box["x"] and box["x"] + box["width"] <= 1280, box
    assert output["x"] <= box["x"] and box["x"] + box["width"] <= output["x"] + output["width"]
    if lab["name"] == "jupyterlab":
        browser = page.locator(".jp-FileBrowser").bounding_box()
        assert browser is not None and browser["width"] > 100  # really open beside it
        assert box["x"] >= browser["x"] + browser["width"]
    # 58 runs, 50 rows on the page: the table scrolls inside the panel, header sticky
    metrics = page.evaluate("""() => {
        const wrap = document.querySelector('.ag-run-panel .ag-table-wrap');
        const root = document.querySelector('.ag-run-panel');
        return {rows: wrap.querySelectorAll('tbody tr').length, scroll: wrap.scrollHeight,
                client: wrap.clientHeight, panel: root.getBoundingClientRect().height,
                tableWidth: wrap.querySelector('table').scrollWidth,
                wrapWidth: wrap.clientWidth}; }""")
    assert metrics["rows"] == 50 and metrics["scroll"] > metrics["client"] + 200, metrics
    assert metrics["panel"] < 700, metrics  # bounded, not ~1,100 px of rows
    assert metrics["tableWidth"] > metrics["wrapWidth"] + 100, metrics  # scrolls sideways
    shot(lab, page, "layout-1280")
    page.evaluate("() => { const w = document.querySelector('.ag-run-panel .ag-table-wrap');"
                  " w.scrollTop = w.scrollHeight; w.scrollLeft = w.scrollWidth; }")
    page.wait_for_timeout(200)
    sticky = page.evaluate("""() => {
        const wrap = document.querySelector('.ag-run-panel .ag-table-wrap');
        const th = wrap.querySelector('th.ag-col-status');
        const cell = wrap.querySelector('tbody tr:last-child td.ag-col-actions');
        const w = wrap.getBoundingClientRect();
        return {headTop: th.getBoundingClientRect().top - w.top,
                actionsLeft: cell.getBoundingClientRect().left - w.left}; }""")
    assert abs(sticky["headTop"]) < 3 and abs(sticky["actionsLeft"]) < 3, sticky
    shot(lab, page, "scrolled")
    page.evaluate("() => { const w = document.querySelector('.ag-run-panel .ag-table-wrap');"
                  " w.scrollTop = 0; w.scrollLeft = 0; }")
    # Cancel all: states the kernel's number, asks first, then cancels exactly those
    button = panel.locator("button.ag-cancel-visible")
    assert button.text_content() == "Cancel all (3)"
    button.click()
    confirm = panel.locator("div.ag-confirm")
    confirm.wait_for(state="visible", timeout=10_000)
    assert confirm.locator(".ag-confirm-text").text_content() == (
        "Cancel 3 live runs matching the current filters (on every page)?")
    shot(lab, page, "cancel-all-confirm")
    assert kernel_value(lab, "sum(manager.is_cancel_requested(i) for i in long_ids)", name) == "0"
    confirm.locator("button.ag-confirm-yes").click()
    for run_id in long_ids:
        page.wait_for_function(
            """(id) => { const s = document.querySelector(
                           `.ag-run-panel tr[data-run-id="${id}"] .ag-status`);
                         return s && s.getAttribute('data-status') === 'canceled'; }""",
            arg=run_id, timeout=15_000)
    assert kernel_value(
        lab, "[manager.find_record(i).status.value for i in long_ids]", name
    ) == "['canceled', 'canceled', 'canceled']"
    shot(lab, page, "cancel-all-done")
    shutdown_kernel(lab, name)


# ------------------------------------------------------------ asks

ASK_CELLS = [
    "%load_ext ag_jupyter",
    f"""from ag_jupyter import graph_fn, get_run_manager

EVIL = {EVIL!r}

@graph_fn("asker")
async def asker(context):
    channel = context.channel()
    name = await channel.ask_text(EVIL + " who are you?", timeout_s=120)
    verdict = await channel.ask_approval(f"Publish the draft by {{name}}?", timeout_s=120)
    return {{"name": name, "approved": verdict["approved"]}}

import asyncio
manager = get_run_manager()
ask_run = (await manager.submit_run("asker", inputs={{}})).run_id
ask_done = asyncio.ensure_future(manager.wait_run(ask_run, return_outputs=True))
""",
    "%ag_runs",
]


def test_panel_shows_an_ask_and_the_answer_typed_there_reaches_the_run(lab, page):
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    name = "panel_asks.ipynb"
    run_all(lab, page, write_notebook(lab, name, ASK_CELLS))
    panel = page.locator(".ag-run-panel").first
    card = panel.locator("div.ag-ask").first
    card.wait_for(timeout=30_000)
    assert card.locator(".ag-ask-prompt").text_content() == f"{EVIL} who are you?"
    assert page.locator(".ag-run-panel img").count() == 0
    shot(lab, page, "ask-text", panel)
    card.locator("textarea.ag-ask-input").fill("Ada")
    card.locator("textarea.ag-ask-input").press("Enter")
    approve = panel.locator("div.ag-ask[data-kind='approval'] button.ag-approve")
    approve.wait_for(timeout=15_000)
    shot(lab, page, "ask-approval", panel)
    approve.click()
    run_id = kernel_value(lab, "ask_run", name).strip("'")
    page.wait_for_function(
        """(id) => { const s = document.querySelector(
                       `.ag-run-panel tr[data-run-id="${id}"] .ag-status`);
                     return s && s.getAttribute('data-status') === 'succeeded'; }""",
        arg=run_id, timeout=15_000)
    assert panel.locator("div.ag-ask").count() == 0
    assert kernel_value(lab, "ask_done.result()[1]", name) == (
        "{'name': 'Ada', 'approved': True}")
    assert not dialogs
    shutdown_kernel(lab, name)
