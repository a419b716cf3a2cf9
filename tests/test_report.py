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

from langbench import paths
from langbench.analysis import findings
from langbench.report import notebooks
from langbench.report import render as report
from devtools import CHROMIUM, DevTools
from pages import ids_shown, read_tables
from synthetic import make_run

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
    # every notebook but compare (two runs, not one: tests/test_compare.py renders it), peers (a
    # peers run, not a sweep: tests/test_peers.py renders it) and those only a run with
    # closed-loop load has (tests/test_scale_report.py, tests/test_scale.py render them)
    on_disk = {p.stem for p in paths.NOTEBOOKS.glob("*.ipynb")} - {"compare", "peers", *report.LOAD_NOTEBOOKS}
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
    matrix = (rendered / "html" / "decision_matrix-nocode.html").read_text()
    assert re.search(r"\d+ criteria in \d+ groups .*Of the \d+ groups, \d+ are decided: Rust wins \d+", matrix)
    index = (rendered / "index.html").read_text()
    assert re.search(r"Rust \d+, Python \d+ of \d+ measured groups", index)


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
    browser = DevTools(tmp_path / "profile", window="1200,1600")  # one browser for every page
    try:
        browser.open(index.as_uri())
        dom = browser.dom()
        assert "<title>langbench report: fixture</title>" in dom
        assert "TR112, claim by claim" in dom and "Python vs Rust" in dom
        shot = tmp_path / "index.png"
        browser.screenshot(shot)
        parser = _Links()
        parser.feed(dom)
        assert len(parser.links) >= 3 * len(report.NOTEBOOKS)
        for link in parser.links:
            assert (rendered / link).exists(), link
        pages = sorted((rendered / "html").glob("*.html"))
        assert len(pages) == 2 * len(report.NOTEBOOKS)
        for page in pages:
            browser.open(page.as_uri())
            rendered_dom = browser.dom()
            assert not page_shows_an_error(rendered_dom), page.name
            assert "<h3>" in rendered_dom, page.name
    finally:
        browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000


def _notebook(nbdir: Path, name: str, *sources: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("run_dir = ''", metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(src) for src in sources)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / f"{name}.ipynb")


def test_a_run_of_one_repetition_renders_every_notebook_and_says_it_has_no_delta(tmp_path):
    """repetitions: 1 is a valid sweep, but no config has a chimera − baseline delta (stats.deltas
    needs DELTA_MIN_UNITS warm runs a mode): every notebook still renders and says so, where
    the TTFT heatmap, the spread test and the success-by-factor tables failed their notebooks."""
    run_dir = make_run(tmp_path / "one-rep", reps=1, seed=17)
    assert report.render(run_dir) == 0
    html = {p.name: p.read_text() for p in (run_dir / "html").glob("*-nocode.html")}
    assert len(html) == len(report.NOTEBOOKS) and not [n for n, t in html.items() if "Traceback" in t]
    assert "No spread to compare: a language has 0 configs with a delta" in html["success_patterns-nocode.html"]
    assert "no config has a delta" in html["tr112-nocode.html"]


def test_a_kept_kernel_runs_each_notebook_as_a_fresh_one_would(tmp_path, monkeypatch):
    """One kernel for a lane's notebooks (notebooks.Kernel): no name of the notebook before
    is left (a notebook that uses one fails as it would alone), the counts start at 1, a
    notebook that kills its kernel gets a new one for the next, and none is left running."""
    import psutil
    run_dir = make_run(tmp_path / "lane-run", reps=2, seed=13)
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    _notebook(nbdir, "defines", "import os\nleaked = 1\npid = os.getpid()\nprint(pid)")
    _notebook(nbdir, "uses", "print(leaked)")
    _notebook(nbdir, "imports", "import os\nprint(os.getpid())")
    _notebook(nbdir, "kills", "import os\nos._exit(3)")
    monkeypatch.setattr(paths, "NOTEBOOKS", nbdir)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    kernel = notebooks.Kernel()
    pids = []
    try:
        out = kernel.execute("defines", run_dir)
        pids.append(nbformat.read(out, as_version=4).cells[2].outputs[0]["text"].strip())
        with pytest.raises(Exception, match="NameError"):
            kernel.execute("uses", run_dir)
        out = kernel.execute("imports", run_dir)
        cells = nbformat.read(out, as_version=4).cells
        pids.append(cells[2].outputs[0]["text"].strip())
        assert [c.execution_count for c in cells if c.cell_type == "code"] == [1, 2, 3]  # parameters, injected, ours
        with pytest.raises(Exception):
            kernel.execute("kills", run_dir)
        out = kernel.execute("imports", run_dir)
        pids.append(nbformat.read(out, as_version=4).cells[2].outputs[0]["text"].strip())
    finally:
        kernel.close()
    assert pids[0] == pids[1] != pids[2], pids  # kept, then replaced after the kill
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [p for p in left if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_render_of_something_that_is_not_a_run_exits_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "not a run directory" in done.stderr


def _imports(module: Path) -> set[str]:
    """The langbench modules `module` imports anywhere (top level or inside functions)."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("langbench"):
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("langbench")}
    return {part for name in found for part in name.split(".")[1:]}


def test_dependencies_flow_one_way_from_the_runner_to_the_report():
    """cli → sweep (the runner); cli → report → sections → findings → metrics → stats: the
    runner never imports the report side, and the report never imports the runner."""
    lib = Path(paths.__file__).parent
    report_side = {"report", "sections", "findings", "plots", "tables", "claims", "compare"}
    for name in ("run/sweep", "run/agents", "run/plan", "run/server", "stop", "analysis/summary", "storage",
                 "analysis/metrics", "analysis/stats"):
        assert not _imports(lib / f"{name}.py") & report_side, name
    assert "sweep" not in _imports(lib / "report" / "render.py")


def test_no_table_prints_an_integer_level_or_count_as_a_float(rendered):
    """Levels (num_ctx 1024) and counts (n 216) as integers, in every notebook and the index."""
    pages = sorted((rendered / "html").glob("*-nocode.html")) + [rendered / "index.html"]
    for page in pages:
        cells = re.findall(r"<td[^>]*>\s*([^<]*?)\s*</td>", page.read_text())
        assert cells or page.name != "throughput-nocode.html"
        # three decimals are for p-values only (≤ 1): a count or a level would end in .000
        floats = [c for c in cells if re.fullmatch(r"[\d,]+\.000+", c) and c not in ("1.000", "0.000")]
        levels = [c for c in cells if re.fullmatch(r"(60|80|120|256|512|1024|216)\.\d+", c)]
        assert floats == [] and levels == [], (page.name, floats[:5], levels[:5])
    throughput = (rendered / "html" / "throughput-nocode.html").read_text()
    assert "mean (tok/s)" in throughput and "CV (%)" in throughput


def test_index_first_screen_shows_the_verdict_and_the_claim_tables(rendered, tmp_path):
    """A 1366×768 screenshot holds both tables whole: each one's header colour and its bottom
    border colour (set only on those tables) are in the picture."""
    from PIL import Image
    assert CHROMIUM, "Debian's chromium is missing: `make browser` (run by `make test`) installs it"
    shot = tmp_path / "first-screen.png"
    _chromium(f"--screenshot={shot}", "--window-size=1366,768", "--hide-scrollbars",
              (rendered / "index.html").as_uri(), tmp=tmp_path)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1366, 768)
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20)}
    for name, rgb in (("verdict table header", (0x1f, 0x4e, 0x79)), ("verdict table end", (0x0b, 0x6e, 0x4f)),
                      ("claim table header", (0x5b, 0x2c, 0x6f)), ("claim table end", (0xb3, 0x5c, 0x00))):
        assert rgb in colours, f"the {name} is not on the first screen"


def test_tr112_claims_follow_the_planted_results(tmp_path):
    """Rust planted 5 % faster and twice as steady; no GPU: the claims say so."""
    from langbench.report.sections import tr112
    from synthetic import make_run
    run = findings.Run.load(make_run(tmp_path / "planted", reps=6, rust_tps_shift=5.0, sd=1.0,
                                     sd_ratio_rust=0.5, seed=5))
    claims = tr112.claims(run).table.set_index("TR112 claim")["verdict"]
    assert claims["Throughput: Python 0.3 % faster"] == "contradicted"
    assert claims["Success by num_gpu: Rust better at every level"] == "not measurable here"
    assert set(claims) <= {"supported", "contradicted", "not shown", "not measurable here"}
    verdicts = tr112.verdicts(run).table.set_index("metric")
    assert verdicts.loc["throughput (tok/s)", "verdict"] == "differs: Rust better"
    equal = findings.Run.load(make_run(tmp_path / "equal", reps=6, seed=6))
    claims = tr112.claims(equal).table.set_index("TR112 claim")["verdict"]
    assert claims["Throughput: Python 0.3 % faster"] == "not shown"  # equivalent: +0.3 % is inside ±2 %
    assert claims["TTFT: Python's first token far sooner"] == "contradicted"  # equivalent within ±5 ms


def test_a_run_that_stopped_early_says_how_far_it_got_and_why(tmp_path):
    from synthetic import make_run
    from langbench import storage
    run_dir = make_run(tmp_path / "stopped", reps=3, seed=7)
    m = storage.read_json(run_dir / "manifest.json")
    for key in ("counts", "ended_at"):
        m.pop(key)
    m.update(complete=False, sessions=[{"started_at": "2026-01-01T00:00:00+00:00",
                                        "ended_at": "2026-01-01T00:10:00+00:00",
                                        "stopped_by": "it was interrupted (signal 15)"}])
    storage.write_json(run_dir / "manifest.json", m)
    storage.write_json(run_dir / "plan.json", {"batches": [{"runs": [{}] * 500}]})
    first = findings.Run.load(run_dir).header().sentence
    assert first.startswith("Run stopped stopped early: 360 of 500 planned runs recorded")
    assert "because it was interrupted (signal 15)" in first and "None" not in first


def test_no_rendered_page_shows_a_table_header_or_metric_as_an_id(rendered):
    """Every table of every section and of the index is headed in words with units (TTFT (ms),
    not ttft_ms); the tables are there to be read, so the check has something to check."""
    pages = sorted((rendered / "html").glob("*-nocode.html")) + [rendered / "index.html"]
    headers = [h for page in pages for t in read_tables(page.read_text()) for h in t["headers"]]
    assert len(headers) > 100 and "TTFT (ms)" in " ".join(headers)
    shown = {page.name: ids_shown(page) for page in pages}
    assert {name: ids for name, ids in shown.items() if ids} == {}


def test_the_ids_sections_name_their_columns_with_read_as_words_with_units():
    """Ids as the sections write them: a metric and what of it (throughput_tps_ci_low), units
    inside (over_floor_ms_api), ids as a metric column's cells (itl_p99_ms)."""
    import pandas as pd
    from langbench.report import tables
    assert tables.header("throughput_tps_ci_low", "tps") == "throughput CI low (tok/s)"
    assert tables.header("over_floor_ms_api", "ms") == "over the null client's floor /api (ms)"
    assert tables.header("throughput_tps_llama_cpp", "tps") == "throughput llama.cpp (tok/s)"
    assert tables.header("client_decode_tps_verdict", "text") == "client decode rate verdict"
    assert tables.header("agg_tps", "tps") == "aggregate throughput (tok/s)"
    assert tables.header("peak_rss_mib", "num") == "peak RSS (MiB)"
    assert tables.header("num_ctx", "level") == "num_ctx"  # Ollama's option, as the file sets it
    df = pd.DataFrame({"load_point": ["N=1", "N=1"], "metric": ["agg_tps", "itl_p99_ms"],
                       "throughput_tps_ci_low": [1.0, 2.0]})
    st = tables.style(df)
    assert list(st.data.columns) == ["load point", "metric", "throughput CI low (tok/s)"]
    assert list(st.data["metric"]) == ["aggregate throughput (tok/s)", "ITL p99 (ms)"]


def test_one_formatter_per_column_kind_with_units_in_the_headers():
    import pandas as pd
    from langbench.report import tables
    df = pd.DataFrame({"agent": ["python", "rust"], "n": [216.0, 1024.0], "num_ctx": [1024.0, 256.0],
                       "ttft_ms": [1408.456, 3793.44], "throughput_tps": [99.149, 98.861],
                       "cv_pct": [0.4812, 0.4011], "mcnemar_p": [0.0004, 0.2345], "_hidden": [1, 2]},
                      dtype=object)  # describe_by's transposed rows arrive as objects
    st = tables.style(df)
    assert list(st.data.columns) == ["agent", "n", "num_ctx", "TTFT (ms)", "throughput (tok/s)", "CV (%)",
                                     "McNemar p"]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", st.to_html())
    assert cells[:7] == ["python", "216", "1024", "1,408.5", "99.1", "0.48", "&lt; 0.001"]
    assert cells[7:] == ["rust", "1,024", "256", "3,793.4", "98.9", "0.40", "0.234"]
    described = pd.DataFrame({"agent": ["rust"], "mean": [12.345], "std": [0.5]})
    described.attrs["unit"] = "ms"
    assert list(tables.style(described).data.columns) == ["agent", "mean (ms)", "std (ms)"]


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
