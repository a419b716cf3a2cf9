"""Comparing two runs (issue 11): planted differences are found, identical runs differ nowhere,
missing cells and different models are said, and the comparison renders to HTML."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from langbench import paths, storage
from langbench.report.sections import compare
from synthetic import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cmp")
    a = make_run(tmp / "a", seed=1)
    planted = make_run(tmp / "rust-faster", seed=2, rust_tps_shift=10.0)  # Rust +10 tok/s (+10%) in B
    same = make_run(tmp / "same", seed=3)  # the same distributions, other draws
    return a, planted, same


def test_a_planted_difference_is_found_where_it_was_planted_and_nowhere_else(runs):
    a, planted, _ = runs
    d = compare.differences(compare.load(a, planted))
    thr = d[d["metric"] == "throughput_tps"]
    # every chimera cell (agent × config) and each agent's baseline: one treatment, Ollama's defaults
    assert len(thr) == 2 * 18 + 2
    rust, python = thr[thr["agent"] == "rust"], thr[thr["agent"] == "python"]
    assert (rust["verdict"] == "B better").all(), rust["verdict"].value_counts()
    assert rust["change_pct"].between(8, 12).all()
    assert not python["verdict"].isin(["B better", "B worse"]).any()
    # decode time follows throughput (synthetic e2e and ITL come from it): Rust's e2e is ~58 ms
    # shorter (beyond the ±5 ms margin), its ITL ~0.6 ms (within it); nothing else moved
    rust_of = lambda m: d[(d["agent"] == "rust") & (d["metric"] == m)]["verdict"]  # noqa: E731
    assert (rust_of("e2e_ms") == "B better").all()
    assert (rust_of("itl_p99_ms") == "equivalent").all()
    rest = d[(d["agent"] == "python") | d["metric"].isin(["ttft_ms", "client_overhead_ms"])]
    assert not rest["verdict"].isin(["B better", "B worse"]).any(), rest["verdict"].value_counts()


def test_identical_runs_give_no_difference(runs):
    a, _, same = runs
    itself = compare.differences(compare.load(a, a))
    assert (itself["diff"] == 0).all()
    assert not itself["verdict"].isin(["B better", "B worse"]).any()
    other = compare.differences(compare.load(a, same))
    thr = other[other["metric"] == "throughput_tps"]
    assert not thr["verdict"].isin(["B better", "B worse"]).any()
    assert (thr["verdict"] == "equivalent").mean() > 0.9  # ±2% of 100 tok/s, sd 1, 8 runs a side


def test_cells_only_one_run_has_are_listed(runs, tmp_path):
    a, _, _ = runs
    part = tmp_path / "part"
    shutil.copytree(a, part)
    records = [r for r in storage.read_jsonl(part / "records.jsonl") if r["config"]["num_gpu"] != 120]
    (part / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pair = compare.load(a, part)
    u = compare.unmatched(pair)
    # num_gpu 120: 6 chimera configs × 2 agents (baseline rows sent no num_gpu: they still match)
    assert len(u) == 6 * 2 and set(u["only_in"]) == {"a"}
    assert "cells only in a" in compare.missing(pair).sentence


def test_runs_of_different_models_are_compared_only_when_asked(runs, tmp_path):
    a, _, _ = runs
    other = tmp_path / "other-model"
    shutil.copytree(a, other)
    m = storage.read_json(other / "manifest.json")
    m["model"]["name"] = "another-model"
    storage.write_json(other / "manifest.json", m)
    with pytest.raises(compare.CompareError, match="different models"):
        compare.load(a, other)
    cli = subprocess.run([sys.executable, "-m", "langbench", "compare", str(a), str(other)],
                         capture_output=True, text=True, cwd=paths.ROOT)
    assert cli.returncode == 2 and "--allow-model-mismatch" in cli.stderr
    pair = compare.load(a, other, allow_model_mismatch=True)
    assert "different models" in compare.header(pair).notes[0]
    m["model"].update(name="synthetic", gguf_sha256="ab" * 32)  # same name, other weights
    storage.write_json(other / "manifest.json", m)
    with pytest.raises(compare.CompareError, match="different models"):
        compare.load(a, other)


def test_not_a_run_directory_exits_2(tmp_path):
    cli = subprocess.run([sys.executable, "-m", "langbench", "compare", str(tmp_path), str(tmp_path)],
                         capture_output=True, text=True, cwd=paths.ROOT)
    assert cli.returncode == 2 and "not a run directory" in cli.stderr


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_the_comparison_of_two_real_runs_renders_to_html(tiny_run, tmp_path):
    html = compare.render(tiny_run, tiny_run, tmp_path / "cmp")
    text = html.read_text()
    assert html.exists() and "metric × cell comparisons" in text and "B better in 0" in text
    assert (tmp_path / "cmp" / "html" / "compare.html").exists()
