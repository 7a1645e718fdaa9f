"""End to end in a real browser: JupyterLab and Notebook 7 on 127.0.0.1, Debian's chromium
driven by Playwright, the quick-start notebook run with "Run All", live panel rows, a Cancel
click.

The recipe and its pitfalls are in shared/E2E.md. Artefacts (screenshot, console log) go
to test-artifacts/.
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
ARTIFACTS = ROOT / "test-artifacts"

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


def kernel_value(lab, expression: str) -> str:
    """Evaluate ``expression`` in the notebook's (only) kernel through its connection file."""
    from jupyter_client import BlockingKernelClient

    kernels = api(lab["base"], lab["token"], "/api/kernels")
    assert len(kernels) == 1, kernels
    connection = Path(lab["env"]["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernels[0]['id']}.json"
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
