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
