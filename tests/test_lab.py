"""`make lab` opens (issue 8 part 9): JupyterLab started the way a user starts it, as whatever
user runs the tests (root on these machines), a notebook opened in headless Chromium, run
there against a stored run, and its output seen on the page.

Chromium is driven over the DevTools protocol (tests/devtools.py);
JupyterLab exposes its app object (LabApp.expose_app_in_browser) so the test runs "Run All"
as the menu does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from devtools import CHROMIUM, DevTools, free_port
from langbench import paths
from synthetic import make_run

TOKEN = "langbench-test-token"


@pytest.mark.slow
def test_make_lab_starts_and_a_notebook_runs_in_the_browser_against_a_stored_run(tmp_path):
    assert CHROMIUM, "Debian's chromium is missing: `make browser` (run by `make test`) installs it"
    outputs = tmp_path / "outputs"
    make_run(outputs / "stored-run", reps=3, seed=21)
    lab_dir = tmp_path / "notebooks"
    lab_dir.mkdir()
    shutil.copy(paths.NOTEBOOKS / "throughput.ipynb", lab_dir)  # a copy: the UI may save it
    port = free_port()
    lab_args = (f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={TOKEN} "
                "--LabApp.expose_app_in_browser=True --ServerApp.open_browser=False")
    lab = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_DIR={lab_dir}", f"LAB_ARGS={lab_args}"],
                           cwd=paths.ROOT, env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    browser = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert lab.poll() is None, f"make lab stopped: {lab.stdout.read()[-3000:]}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 180 s")
        browser = DevTools(tmp_path / "profile", f"http://127.0.0.1:{port}/lab/tree/throughput.ipynb?token={TOKEN}")
        browser.wait_for("!!(window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell'))",
                         120, "the notebook to open")
        browser.wait_for("(() => { const w = window.jupyterapp.shell.currentWidget;"
                         " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                         " return !!k && k.status === 'idle'; })()", 120, "the kernel to be idle")
        browser.js("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        code_cells = browser.js("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length")
        browser.wait_for(
            "(() => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
            ".map(e => e.textContent.trim());"
            " return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t)); })()",
            240, "every code cell to have run")
        text = browser.js("document.querySelector('.jp-Notebook').innerText")
        images = browser.js("document.querySelectorAll('.jp-Notebook .jp-OutputArea-output img').length")
        errors = browser.js("document.querySelectorAll('.jp-Notebook .jp-OutputArea-output[data-mime-type=\"application/vnd.jupyter.stderr\"]').length")
        browser.screenshot(tmp_path / "lab.png")
    finally:
        if browser:
            browser.close()
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
            lab.wait()
    log = lab.stdout.read()
    lab.stdout.close()
    if os.getuid() == 0:
        assert "running as root (usual in containers), so JupyterLab gets --allow-root" in log
    assert code_cells >= 3
    assert "Run stored-run" in text, text[:2000]  # the header sentence, computed from the stored run
    assert "tok/s" in text and "Traceback" not in text and errors == 0, text[-2000:]
    assert images >= 1, "the notebook's figures were not shown"
