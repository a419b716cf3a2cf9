"""The report: every notebook executed by papermill on a fixture run, HTML rendered, index.html
opened in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from langbench import paths, report
from synthetic import make_run

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A synthetic run (with failures whose message holds HTML) rendered by `langbench render`."""
    run_dir = make_run(tmp_path_factory.mktemp("report") / "fixture", reps=4, failures=3,
                       chimera_gain_at_gpu80=0.05, seed=11)
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return run_dir


def test_every_notebook_in_notebooks_is_in_the_report_and_executed(rendered):
    # every notebook but compare (two runs, not one: tests/test_compare.py renders it)
    on_disk = {p.stem for p in paths.NOTEBOOKS.glob("*.ipynb")} - {"compare"}
    assert on_disk == set(report.NOTEBOOKS)
    for name in on_disk:
        nb = nbformat.read(rendered / "notebooks" / f"{name}.ipynb", as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), name
        errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert errors == [], name
        assert (rendered / "html" / f"{name}.html").exists()
        assert (rendered / "html" / f"{name}-nocode.html").exists()


def test_notebooks_are_committed_clean_with_a_literal_parameters_cell():
    for path in paths.NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, path
        for line in params[0].source.splitlines():
            assert re.fullmatch(r'\w+: (str|float|int|bool) = ("[^"]*"|[\d.]+|True|False)\s+# .+', line), line
        first = "run_a: str" if path.stem == "compare" else "run_dir: str"
        assert params[0].source.startswith(first), path


def test_findings_are_sentences_built_from_numbers(rendered):
    nb = nbformat.read(rendered / "notebooks" / "success_patterns.ipynb", as_version=4)
    text = json.dumps([o for c in nb.cells for o in c.get("outputs", [])])
    assert "Fisher p = " in text and "not p &lt; 0.01" in text
    index = (rendered / "index.html").read_text()
    assert re.search(r"\d+ criteria in \d+ groups .*Of the \d+ groups, \d+ are decided: Rust wins \d+", index)


def test_figures_are_rendered_as_images(rendered):
    for name in ("throughput", "ttft", "validity"):
        page = (rendered / "html" / f"{name}-nocode.html").read_text()
        assert page.count("data:image/png;base64") >= 2, name
        assert "<Figure size" not in page and "&lt;Figure size" not in page, name


def test_model_and_server_text_is_escaped_in_html(rendered):
    page = (rendered / "html" / "sweep-nocode.html").read_text()
    assert "runner &lt;crashed&gt;" in page
    assert "runner <crashed>" not in page


def page_shows_an_error(page: str) -> bool:
    """An error or stderr output cell as nbconvert renders it (not the CSS that styles one)."""
    return ('data-mime-type="application/vnd.jupyter.stderr"' in page
            or "Traceback (most recent call last)" in page
            or 'data-mime-type="application/vnd.jupyter.error"' in page)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links += [v for k, v in attrs if k == "href"]


def _chromium(*args: str, tmp: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_index_opens_in_headless_chromium_and_every_link_resolves(rendered, tmp_path):
    assert CHROMIUM, "Debian's chromium is missing: `make browser` (run by `make test`) installs it"
    index = rendered / "index.html"
    dom = _chromium("--dump-dom", index.as_uri(), tmp=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>langbench report: fixture</title>" in dom.stdout
    assert "Headline findings" in dom.stdout
    parser = _Links()
    parser.feed(dom.stdout)
    assert len(parser.links) >= 3 * len(report.NOTEBOOKS)
    for link in parser.links:
        assert (rendered / link).exists(), link
    for page in sorted((rendered / "html").glob("*.html")):
        rendered_dom = _chromium("--dump-dom", page.as_uri(), tmp=tmp_path).stdout
        assert not page_shows_an_error(rendered_dom), page.name
        assert "<h3>" in rendered_dom, page.name
    shot = tmp_path / "index.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,1600", index.as_uri(), tmp=tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_a_failing_notebook_leaves_the_others_rendered_and_exits_1(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path / "broken-run", reps=3, seed=12)
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    shutil.copy(paths.NOTEBOOKS / "sweep.ipynb", nbdir)
    broken = nbformat.read(paths.NOTEBOOKS / "sweep.ipynb", as_version=4)
    broken.cells.append(nbformat.v4.new_code_cell("raise RuntimeError('planted failure')"))
    nbformat.write(broken, nbdir / "throughput.ipynb")
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    code = report.render(run_dir, notebooks=("sweep", "throughput"))
    assert code == 1
    index = (run_dir / "index.html").read_text()
    assert "FAILED" in index and "planted failure" in index
    assert (run_dir / "html" / "sweep-nocode.html").exists()
    failed_page = (run_dir / "html" / "throughput.html").read_text()  # rendered with its error
    assert page_shows_an_error(failed_page) and "planted failure" in failed_page
    assert not page_shows_an_error((run_dir / "html" / "sweep.html").read_text())


def test_render_of_something_that_is_not_a_run_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a run directory" in done.stderr


def test_report_of_a_run_with_think_and_chat_renders_the_stream_sections(tmp_path):
    """A chat run with think: true (40 of 64 chunks thinking; the server kept 0 of 19 layers
    on GPU at every num_gpu level): the validity and TTFT notebooks render, and the pages say
    how many chunks were thinking per cell, who reconnected, how far ITL percentiles go, and
    that num_gpu was not applied (in the header every notebook shows)."""
    run_dir = make_run(tmp_path / "think-chat", reps=3, failures=2, thinking=40, seed=5)
    assert report.render(run_dir, notebooks=("validity", "ttft")) == 0
    page = (run_dir / "html" / "validity-nocode.html").read_text()
    assert not page_shows_an_error(page)
    assert "Token kinds per cell" in page and "40 thinking chunks" in page and "endpoint: chat" in page
    assert "Connections per client" in page and "python 36 of" in page
    assert "p99 would be (nearly) its maximum" in page
    for name in ("validity", "ttft"):
        assert "Factors the server did not apply" in (run_dir / "html" / f"{name}-nocode.html").read_text()
