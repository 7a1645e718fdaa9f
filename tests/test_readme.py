"""The README's examples run as written, so they cannot drift from the code.

Every ```python block of README.md is run: a block with ``asyncio.run(`` is a script (run
as a subprocess); every other block is a notebook cell, run in order in one real kernel
(jupyter_client), its LLM call answered by a loopback OpenAI-compatible server started
here. A ``print(...)  # expected`` comment in a block is checked against what it printed.
Also: the first-run scripts (``quickstart.sh`` as root) and the line the test run prints
when the browser tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel
from llm_server import ENV_VARS, FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
EXPECTED = re.compile(r"^\s*print\(.*\)\s+#\s*(.+?)\s*$", re.M)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def python_blocks() -> list[tuple[int, str]]:
    """(line number, code) of every ```python block of the README, in order."""
    text = README.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1) == "python"
    ]


def is_script(code: str) -> bool:
    return "asyncio.run(" in code


def expected_prints(code: str) -> list[str]:
    return EXPECTED.findall(code)


def test_the_readme_has_both_kinds_of_example():
    blocks = python_blocks()
    cells = [code for _, code in blocks if not is_script(code)]
    scripts = [code for _, code in blocks if is_script(code)]
    assert len(cells) >= 4 and len(scripts) >= 1, blocks
    assert any("context.llm()" in code for code in cells)  # the loopback server is needed


@pytest.mark.kernel
def test_readme_notebook_cells_run_in_a_real_kernel(tmp_path, monkeypatch):
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    server = FakeOpenAIServer()
    server.start()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-test")
    monkeypatch.setenv("AG_LLM_MODEL", "readme-model")
    # As in an activated venv: the venv's commands (mcp-server-time) are on PATH.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        for line, code in python_blocks():
            if is_script(code):
                continue
            status, text = run_cell(kc, code)
            assert status == "ok", f"README.md line {line}:\n{code}\n{text}"
            for expected in expected_prints(code):
                assert expected in text, f"README.md line {line}: {expected!r} not in {text!r}"
        # the LLM example really went to the server, and the other services answered
        status, text = run_cell(kc, "print(txt, usage['total_tokens'], art.name)")
        assert status == "ok", text
        assert text == f"{server.text} 16 report.md\n"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        server.stop()
    # the research agent's rag.answer, the chat example and the RAG section's rag.answer,
    # all to the configured model
    assert [r["body"]["model"] for r in server.requests] == ["readme-model"] * 3
    assert server.handler_errors == []


@pytest.mark.parametrize(
    "code",
    [code for _, code in python_blocks() if is_script(code)],
    ids=lambda code: code.splitlines()[0][:40],
)
def test_readme_scripts_run(code, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for expected in expected_prints(code):
        assert expected in done.stdout, (expected, done.stdout)


def run_cell(kc, code: str, timeout: float = 120) -> tuple[str, str]:
    """Run ``code`` in the kernel: its reply status and everything it output."""
    msg_id = kc.execute(code)
    deadline = time.monotonic() + timeout
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    parts = []
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        content = msg["content"]
        if msg["msg_type"] == "status" and content["execution_state"] == "idle":
            break
        if msg["msg_type"] == "stream":
            parts.append(content["text"])
        elif msg["msg_type"] == "error":
            parts.append("\n".join(content["traceback"]))
    return reply["content"]["status"], ANSI.sub("", "".join(parts))


# ---------------------------------------------------------------------- first run
def fake_checkout(tmp_path: Path) -> Path:
    """A copy of scripts/quickstart.sh beside a .venv whose python and jupyter only log
    their arguments."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "quickstart.sh", tmp_path / "scripts" / "quickstart.sh")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "jupyter"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "$(dirname "$0")/calls.log"\n')
        stub.chmod(0o755)
    return bin_dir / "calls.log"


def test_quickstart_passes_allow_root_only_as_root(tmp_path):
    log = fake_checkout(tmp_path)
    done = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "quickstart.sh"), "--no-browser"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    launch = log.read_text().splitlines()[-1]
    if os.getuid() == 0:
        assert launch == "jupyter lab --allow-root notebooks/quickstart.ipynb --no-browser"
    else:
        assert launch == "jupyter lab notebooks/quickstart.ipynb --no-browser"


def test_skipped_browser_tests_are_named_at_the_end_of_the_run(tmp_path):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_fake_browser.py").write_text(textwrap.dedent("""
        import pytest

        @pytest.mark.browser
        @pytest.mark.skipif(True, reason="needs Debian's chromium at /usr/bin/chromium")
        def test_panel_in_a_browser():
            pass

        def test_other():
            pass
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
         "-o", "markers=browser", "-o", "asyncio_mode=auto"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "BROWSER TESTS SKIPPED (1): needs Debian's chromium at /usr/bin/chromium" in done.stdout
    ), done.stdout
