"""The README and docs/ stay true (issue 44): every command, file and link they name exists,
every number of the README's findings table is the linked run's own, and the README stays a
ten-minute read."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from langbench import paths

ROOT = paths.ROOT
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
WORD_BUDGET = 2000  # about ten minutes of reading
# Paths a page names before the work that makes them has landed: each with the work it waits
# for. The test fails once one exists, so that it leaves this list.
PENDING: dict[str, str] = {}


def _code(text: str) -> list[str]:
    """What a page shows as code: fenced blocks and `spans`."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return blocks + spans


def _named(pattern: str) -> dict[str, set[str]]:
    """Every match of `pattern` in the code of each page: {match: pages}."""
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for code in _code(page.read_text()):
            for m in re.findall(pattern, code):
                found.setdefault(m, set()).add(page.name)
    return found


def test_the_readme_is_a_ten_minute_read():
    words = len(README.read_text().split())
    assert 600 < words <= WORD_BUDGET, f"README.md has {words} words; the budget is {WORD_BUDGET}: move the rest to docs/"


def test_every_make_target_the_pages_name_is_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w.$()/-]+):", makefile, re.M))
    targets = {t.replace("$(VENV)", ".venv").replace("$(AGENT_VENV)", ".venv-agent") for t in targets}
    named = _named(r"(?:^|[\s;(&|])make ((?:[a-z.][\w./-]*))")
    assert {"report", "test"} <= set(named)
    missing = {t: pages for t, pages in named.items() if t not in targets}
    assert missing == {}


def test_every_parameter_file_and_path_the_pages_name_exists():
    named = _named(r"(?<![\w./~-])((?:parameters|bench|tests|agents|results|notebooks|lib|docs|\.ci)/[\w./-]*[\w/])")
    assert any(p.startswith("parameters/") for p in named) and any(p.startswith("bench/") for p in named)
    missing = {p: pages for p, pages in named.items() if not (ROOT / p).exists() and p not in PENDING}
    assert missing == {}
    landed = [p for p in PENDING if (ROOT / p).exists()]
    assert landed == [], f"{landed} exist now: link them and take them off PENDING"


def test_every_parameter_file_in_parameters_is_in_the_readme():
    text = README.read_text()
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "parameters").glob("*.yaml"))
    assert files and [f for f in files if f not in text] == []


def test_every_module_path_the_pages_name_is_in_the_package():
    """Modules named as package paths (run/schedule.py, langbench/run/params.py, analysis/aa.py)."""
    named = _named(r"(?<![\w/])((?:langbench/)?(?:run|analysis|report|gpuhost)/[\w/]+\.py)")
    assert named
    lib = ROOT / "lib" / "langbench"
    missing = {m: pages for m, pages in named.items() if not (lib / m.removeprefix("langbench/")).exists()}
    assert missing == {}


def test_every_langbench_command_the_pages_name_exists():
    help_text = subprocess.run([sys.executable, "-m", "langbench", "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    commands = set(re.search(r"\{([\w,-]+)\}", help_text).group(1).split(","))
    named = _named(r"-m langbench ([a-z][\w-]*)")
    assert {"sweep", "report"} <= set(named)
    assert {c: pages for c, pages in named.items() if c not in commands} == {}


def test_every_relative_link_and_image_resolves():
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path = (page.parent / target.split("#")[0]).resolve()
            rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
            assert path.exists() or rel in PENDING, f"{page.name}: {target}"
            checked += 1
    assert checked >= 20


def test_every_doc_page_is_linked_from_the_readme():
    text = README.read_text()
    assert [d.name for d in DOCS if f"(docs/{d.name})" not in text] == []


# --- the findings table is the kept runs' own --------------------------------------------------

def _findings() -> list[dict]:
    """The README's findings table: one dict per row (header → cell), with the run it links."""
    text = README.read_text().split("## What it found", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        link = re.search(r"\]\((results/[^)]+)\)", cells["run"])
        cells["_run"] = ROOT / link.group(1).rstrip("/") if link else None
        rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def kept():
    from langbench.analysis import findings
    return {}, findings.Run.load


def _run(kept, path: Path):
    cache, load = kept
    if path not in cache:
        cache[path] = load(path)
    return cache[path]


def test_every_number_in_the_findings_table_is_read_from_the_run_it_links(kept):
    from langbench.report.sections import agent_loops, tr112
    rows = _findings()
    assert len(rows) >= 6
    checked = 0
    for row in rows:
        if row["_run"] is None:  # a slot a later issue fills: no number may stand in it yet
            assert not re.search(r"\d", row["Python"] + row["Rust"] + row["Python − Rust [95 % CI]"]), row
            assert "pending" in row["run"] and row["verdict"] == "not measured yet", row
            continue
        run = _run(kept, row["_run"])
        finding = row["finding"]
        if finding.startswith("TR112's"):
            claims = (tr112.claims(run) if "headline" in finding else agent_loops.loop_claims(run)).table
            counts = claims["verdict"].value_counts()
            kinds = ["supported", "contradicted", "not shown"] + (["not measurable here"] if "headline" in finding else [])
            want = f"{len(claims)} claims: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in kinds)
            assert row["verdict"] == want
        elif finding.startswith("knee at 5 % of a turn"):  # sessions at scale: each client's knee, read here
            from langbench.analysis import scale
            endpoint = "chat" if "/api/chat" in finding else "openai-chat"
            k = scale.knee_table(scale.batches(run)).set_index(["endpoint", "agent", "threshold"])
            assert row["Python"] == scale.knee_words(k.loc[(endpoint, "python", 0.05)]), row
            assert row["Rust"] == scale.knee_words(k.loc[(endpoint, "rust", 0.05)]), row
            assert row["verdict"] == "; ".join(f"{a}: {scale.knee_words(k.loc[(endpoint, a, 0.05)])}"
                                               for a in ("python-tuned", "python-raw")), row
        elif finding == "agent's own time per turn (ms)":
            v = agent_loops.verdicts(run).set_index("level").loc["per turn"]
            assert (row["Python"], row["Rust"]) == (f"{v['python_ms']:.3f} ms", f"{v['rust_ms']:.3f} ms")
            assert row["Python − Rust [95 % CI]"] == f"{v['diff_ms']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]"
            assert row["verdict"] == v["verdict"]
        else:
            v = tr112.verdicts(run).table.set_index("metric").loc[finding]
            for cell in ("Python", "Rust", "Python − Rust [95 % CI]", "verdict"):
                assert row[cell] == v[cell], (finding, cell)
        checked += 1
    assert checked >= 5


# --- the first screen is the browser test's, from a kept run ------------------------------------

def test_the_readme_shows_the_first_screen_the_browser_test_took_of_a_kept_run():
    from pages import FIRST_SCREEN, FIRST_SCREEN_RUN, FIRST_SCREEN_TEST, first_screen_source, png_text
    assert "](docs/first-screen.png)" in README.read_text()
    text, size = png_text(FIRST_SCREEN)
    assert size == (1366, 768)
    assert text.get("made-by") == FIRST_SCREEN_TEST and text.get("run") == FIRST_SCREEN_RUN
    # current: drawn from today's run data and first-screen code (make test retakes it otherwise)
    assert text.get("source") == first_screen_source(ROOT / FIRST_SCREEN_RUN), \
        "docs/first-screen.png is stale: run tests/test_gpu.py -k kept_two_gpu and commit the new picture"
