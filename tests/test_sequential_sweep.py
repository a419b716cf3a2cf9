"""A sequential sweep on the real embedded server (issue 26): it stops before its maximum
because its verdicts were decided, says in the manifest when each was, resumes as one run, and
its report shows the time to each verdict. The parameters and their checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_runs import sweep_fixture
from langbench.analysis import findings, stopping
from langbench.report import render as report
from langbench.report.sections import tr112
from langbench.run import params as params_mod
from langbench.run import plan, rounds
from langbench.vocab import ParamsError

FIXTURES = Path(__file__).parent / "fixtures"
SEQ = FIXTURES / "tiny-sequential.yaml"


@pytest.fixture(scope="module")
def seq_run(tmp_path_factory) -> Path:
    return sweep_fixture("tiny-sequential.yaml", tmp_path_factory.mktemp("seq"), "seq")


@pytest.mark.server
@pytest.mark.slow
def test_a_sequential_sweep_stops_before_its_maximum_once_every_verdict_is_decided(seq_run):
    m = json.loads((seq_run / "manifest.json").read_text())
    st = m["stopping"]
    assert st["rule"] == "sequential" and st["max_batches"] == 3
    assert st["stop"] is True and st["open"] == []
    assert st["round"] == 2 < st["max_batches"]  # stopped at the first look: every verdict decided
    assert m["complete"] is True and m["counts"]["records"] < m["counts"]["planned_runs"]
    # every headline verdict the run measures, each with the round it was decided in
    labels = [v["metric"] for v in st["verdicts"]]
    assert labels == [label for _v, label, *_ in stopping.HEADLINE]
    for v in st["verdicts"]:
        assert v["decisions"][-1]["decided"] and v["decisions"][-1]["stopping_round"] == 2, v["metric"]
        assert st["decided_in_round"][v["metric"]] == 2
        assert v["decisions"][-1]["verdict"] in ("equivalent", "differs")
    assert [x["round"] for x in st["looks"]] == [2]
    # nothing of round 3 ran
    records = [json.loads(line) for line in (seq_run / "records.jsonl").read_text().splitlines()]
    assert {plan.round_of(r["batch_id"]) for r in records} == {1, 2}


@pytest.mark.server
@pytest.mark.slow
def test_a_capped_cold_run_sends_one_token_and_still_primes_the_prompt_cache(seq_run):
    records = [json.loads(line) for line in (seq_run / "records.jsonl").read_text().splitlines()]
    by_id = {r["run_id"]: r for r in records}
    cold = [r for r in records if r["phase"] == "cold"]
    assert cold and all(r["outcome"] == "ok" for r in cold)
    for r in cold:  # one token asked, one generated, and a TTFT: what the cold run is read for
        assert r["options"]["num_predict"] == 1 and r["eval_count"] == 1 and r["ttft_ms"] > 0, r["run_id"]
        cached = by_id[r["run_id"].replace("-cold", "-r01")]
        uncached = by_id[r["run_id"].replace("-cold", "-u01")]
        assert cached["options"]["num_predict"] == uncached["options"]["num_predict"] == 4
        # the cached run reuses the prompt the one-token cold run evaluated; the unique prefix does not
        assert cached["prompt_eval_count"] < uncached["prompt_eval_count"], r["run_id"]
    df = findings.Run.load(seq_run).df
    assert not df[df["phase"] == "cold"]["stopped_early"].any()  # one token asked is a run that ended


def test_cold_num_predict_is_refused_where_it_cannot_apply(tmp_path):
    doc = yaml.safe_load(SEQ.read_text())
    for bad, key in (({"cold_num_predict": 0}, "cold_num_predict"), ({"cold_num_predict": 5}, "cold_num_predict")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**doc, **bad}))
        with pytest.raises(ParamsError, match=key):
            params_mod.load(path)
    agent = yaml.safe_load((FIXTURES / "tiny-agent.yaml").read_text())  # a one-turn task needs its tokens
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({**agent, "cold_num_predict": 1}))
    with pytest.raises(ParamsError, match="cold_num_predict: not for workload agent"):
        params_mod.load(path)


def test_the_eta_counts_a_capped_cold_run_at_its_own_tokens(tmp_path):
    from langbench.run import eta
    params = params_mod.load(SEQ)
    batches = plan.build(params)
    rate = eta.DecodeRate(tokens_per_s=10.0, tokens=32, prompt_eval_ms=0.0, load_ms=0.0)
    left = [(b, len(b.runs)) for b in batches]
    full, capped = eta.estimate_s(left, rate), eta.estimate_s(left, rate, 1, plan.cold_tokens(params))
    assert full - capped == pytest.approx(len(batches) * (4 - 1) / 10.0)
    started = [(b, len(b.runs) - 1) for b in batches]  # the cold runs done: nothing to take off
    assert eta.estimate_s(started, rate) == eta.estimate_s(started, rate, 1, 1)


@pytest.mark.server
@pytest.mark.slow
def test_a_stopped_sequential_run_stays_stopped_when_resumed(seq_run):
    before = (seq_run / "records.jsonl").read_bytes()
    params = json.loads((seq_run / "manifest.json").read_text())["parameters_file"]
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", params, "--run-id", "seq"],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(seq_run.parent)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (seq_run / "records.jsonl").read_bytes() == before


@pytest.mark.server
@pytest.mark.slow
def test_the_report_shows_when_each_verdict_was_decided_and_what_the_fixed_design_would_spend(seq_run):
    run = findings.Run.load(seq_run)
    v = tr112.verdicts(run)
    assert (v.table["decided in"] == "round 2 of 3").all()
    for spent, fixed in zip(v.table["runs, minutes"], v.table["fixed design"]):  # "N runs, M min"
        assert 0 < int(spent.split()[0].replace(",", "")) < int(fixed.split()[0].replace(",", ""))
    assert "stopped after round 2 of at most 3" in v.sentence
    s = tr112.time_to_verdict(run)
    assert (s.table["decided_round"] == 2).all() and (s.table["runs"] < s.table["fixed_runs"]).all()
    assert "finished" in run.progress() and "stopped it after round 2 of at most 3" in run.progress()
    assert report.render(seq_run, notebooks=("tr112",)) == 0
    # the index as `langbench render` writes it (outside pytest's warnings-as-errors, as users get it)
    done = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; from langbench.report import "
                           "index; index.write_index(Path(sys.argv[1]), {})", str(seq_run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    index = (seq_run / "index.html").read_text()
    assert "round 2 of 3" in index and "the fixed design" in index


def test_rounds_group_the_plan_and_waves_follow_the_rule():
    p = params_mod.load(SEQ)
    batches = plan.build(p)
    assert p.batches == 3 and p.stop == {"rule": "sequential", "min_batches": 2, "max_batches": 3}
    groups = plan.rounds(batches)
    assert [len(g) for g in groups] == [len(batches) // 3] * 3
    assert [plan.round_of(g[0].batch_id) for g in groups] == [1, 2, 3]
    assert [r for r, _ in rounds.waves(p, batches)] == [1, 2, 3]
    fixed = params_mod.load(FIXTURES / "tiny.yaml")
    assert fixed.stop == {"rule": "fixed"} and [r for r, _ in rounds.waves(fixed, plan.build(fixed))] == [None]
    with pytest.raises(ParamsError, match="stop.rule"):
        rounds.check(p, None)


BAD_STOP = {
    "unknown_rule": ({"rule": "sometimes"}, "stop.rule"),
    "unknown_key": ({"rule": "sequential", "max_batches": 3, "patience": 2}, "patience"),
    "no_max": ({"rule": "sequential"}, "stop.max_batches"),
    "min_above_max": ({"rule": "sequential", "min_batches": 4, "max_batches": 3}, "stop.min_batches"),
    "min_too_small": ({"rule": "sequential", "min_batches": 1, "max_batches": 3}, "stop.min_batches"),
    "fixed_with_max": ({"rule": "fixed", "max_batches": 3}, "stop.max_batches"),
    "knee_with_max": ({"rule": "knee", "max_batches": 3}, "stop.max_batches"),
    "knee_without_a_ladder": ({"rule": "knee"}, "concurrency"),
    "batches_differ": ({"rule": "sequential", "max_batches": 3, "_batches": 2}, "batches"),
}


@pytest.mark.parametrize("case", sorted(BAD_STOP))
def test_a_bad_stop_exits_2_naming_the_key(case, tmp_path):
    stop, key = BAD_STOP[case]
    doc = yaml.safe_load(SEQ.read_text())
    stop = dict(stop)
    if "_batches" in stop:
        doc["batches"] = stop.pop("_batches")
    doc["stop"] = stop
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(bad), "--run-id", "x"],
                          capture_output=True, text=True,
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path / "outputs")})
    assert done.returncode == 2, done.stderr
    assert key in done.stderr, done.stderr
    assert not (tmp_path / "outputs" / "x").exists()


def test_the_knee_rule_climbs_the_ladder_and_thins_only_clients_whose_knees_are_decided(tmp_path):
    p = params_mod.load(FIXTURES / "tiny-scale.yaml")
    assert p.stop == {"rule": "knee"}
    batches = plan.build(p)
    waves = rounds.waves(p, batches)
    assert [rounds.level_of(w[0]) for _, w in waves] == [1, 8, 64]  # ascending, every round of a level together
    assert all(len({rounds.level_of(b) for b in w}) == 1 for _, w in waves)
    assert sum(len(w) for _, w in waves) == len(batches)
    looked, ran, gone = [], [], []

    def decide_knees(run_dir, n):  # python's knees on /api decided below 64, nobody else's
        looked.append(n)
        return {"python chat": {"1 %": 8, "5 %": 8}} if n == 64 else {}

    manifest, path = {}, tmp_path / "manifest.json"
    rounds.run(p, tmp_path, manifest, path, batches, ran.extend, None, decide_knees=decide_knees, skip=gone.extend)
    assert looked == [8, 64]  # before every level past the first
    assert {b.batch_id for b in gone} == set(manifest["stopping"]["skipped"])
    # python on /api at 64 keeps one batch per cell (4 before: 2 rounds x 2 modes), everyone else all
    at64 = [b for b in ran if rounds.level_of(b) == 64]
    py = [b for b in at64 if b.agent == "python" and plan.endpoint_of(p, b.config) == "chat"]
    assert len(py) == len({b.config_id for b in py}) >= 1
    assert all(b.agent == "python" and plan.endpoint_of(p, b.config) == "chat" and rounds.level_of(b) == 64
               for b in gone) and len(gone) == 3 * len(py)
    assert len(ran) + len(gone) == len(batches)
    assert rounds.skipped_runs(manifest, batches) == sum(len(b.runs) for b in gone)
    assert [x["n"] for x in manifest["stopping"]["looks"]] == [8, 64]
    with pytest.raises(ParamsError, match="decide_knees"):
        rounds.check(p, None, None)
