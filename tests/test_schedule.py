"""The cluster's schedule (issue 27): groups that keep a config's round on one worker, their
expected cost, cost-first list scheduling against round-robin rounds, and one two-worker
local cluster on a paced server whose cells have known, unequal cost."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from langbench.analysis import stats
from langbench.run import params, plan, schedule
from langbench.vocab import ParamsError
from scripted import PacedOllama

FIXTURES = Path(__file__).parent / "fixtures"


def _plan(name: str = "tiny.yaml", **over) -> tuple[params.Params, list[plan.Batch]]:
    p = params.load(FIXTURES / name)
    p = params.Params(p.path, {**p.raw, **over}, p.prompts)
    return p, plan.build(p)


# --- groups --------------------------------------------------------------------------------------

def test_a_group_is_one_config_of_one_round_with_every_mode_and_agent_in_plan_order():
    p, batches = _plan(batches=3)
    groups = schedule.groups(batches)
    assert len(groups) == 2 * 3  # 2 configs × 3 rounds
    ids = [bid for g in groups for bid in g.batch_ids]
    assert sorted(ids) == sorted(b.batch_id for b in batches) and len(ids) == len(set(ids))  # each batch once
    for g in groups:
        assert {b.config_id for b in g.batches} == {g.config_id}
        assert {plan.round_of(b.batch_id) for b in g.batches} == {g.round}
        assert {(b.mode, b.agent) for b in g.batches} == {
            ("baseline", "python"), ("baseline", "rust"), ("baseline", "null"),
            ("chimera", "python"), ("chimera", "rust")}  # both sides of every comparison
        orders = [b.order for b in g.batches]
        assert orders == sorted(orders) and g.order == orders[0]
    assert schedule.groups(batches[:7])[0].batch_ids == groups[0].batch_ids  # a wave's part: same groups


def test_a_one_round_plan_names_its_groups_by_round_too():
    _, batches = _plan()  # batches: 1: batch ids carry no -b suffix
    assert [g.key for g in schedule.groups(batches)] == list(dict.fromkeys(f"{b.config_id}-b1" for b in batches))


def test_reload_expected_follows_what_the_worker_ran_before():
    _, batches = _plan()
    b = next(x for x in batches if x.mode == "chimera")
    assert plan.reload_after(b, None).reload_expected  # a fresh server loads the model
    assert not plan.reload_after(b, dict(b.options)).reload_expected
    assert plan.reload_after(b, {**b.options, "num_ctx": 99}).reload_expected  # num_ctx reloads
    assert not plan.reload_after(b, {**b.options, "temperature": 0.1}).reload_expected  # temperature does not


def test_a_schedule_needs_a_worker_and_says_which_key():
    with pytest.raises(ParamsError, match=r"--workers 0: a cluster schedule needs at least one worker"):
        schedule.check_workers(0)
    with pytest.raises(ParamsError, match="--workers"):
        schedule.lpt([1.0], 0)


def test_batches_need_not_be_a_multiple_of_the_workers():
    _, batches = _plan(batches=3)  # round-robin rounds refused this on 2 workers (issue 27)
    span, slots = schedule.simulate([schedule.groups(batches)], lambda b: 1.0, 2)
    assert sorted(s.group for s in slots) == sorted(g.key for g in schedule.groups(batches))
    assert {s.worker for s in slots} == {0, 1}
    assert span == pytest.approx(15.0)  # 30 batches of 1 s, 6 groups of 5, 3 on each worker


# --- expected cost -------------------------------------------------------------------------------

def test_expected_cost_is_the_cells_measured_time_else_like_options_else_the_runs_else_the_plan():
    _, batches = _plan()
    by = {(b.config_id, b.mode, b.agent): b for b in batches}
    c1_chim_py, c1_chim_rs = by[("c1", "chimera", "python")], by[("c1", "chimera", "rust")]
    c2_base_py, c2_chim_py = by[("c2", "baseline", "python")], by[("c2", "chimera", "python")]
    n = len(c1_chim_py.runs)  # cold, a warm-up, 2 cached, 1 uncached
    m = schedule.Measured()
    plan_cost = schedule.expected_cost(c1_chim_py, n, m)
    assert (plan_cost.unit, plan_cost.source, plan_cost.value) == ("tokens", "plan", 4.0 * n)  # num_predict 4
    m.add(c1_chim_py, 2.0 * n, n)  # 2 s per run
    m.add(c1_chim_py, 4.0 * n, n)  # 4 s per run: median 3
    assert schedule.expected_cost(c1_chim_py, n, m) == schedule.Cost(3.0 * n, "s", "cell")
    assert schedule.expected_cost(c1_chim_rs, 2, m) == schedule.Cost(6.0, "s", "options")  # same options, other agent
    m.add(by[("c1", "baseline", "python")], 1.0 * n, n)  # baseline options: every config's baseline shares them
    assert schedule.expected_cost(c2_base_py, n, m) == schedule.Cost(1.0 * n, "s", "options")
    assert schedule.expected_cost(c2_chim_py, 1, m) == schedule.Cost(2.0, "s", "run")  # median of 2, 4, 1
    assert schedule.expected_cost(c2_chim_py, 0, m).value == 0.0


def test_measured_times_come_from_the_workers_span_else_the_agents_wall():
    _, batches = _plan()
    b = batches[0]
    rows = [{"batch_id": b.batch_id, "runs": 4, "wall_s": 2.0},
            {"batch_id": b.batch_id, "runs": 4, "wall_s": 2.0, "started_unix": 100.0, "ended_unix": 112.0},
            {"batch_id": "not-in-the-plan", "runs": 4, "wall_s": 99.0}]
    m = schedule.Measured.from_rows(rows, batches)
    assert m.by_cell[schedule.cell(b)] == [0.5, 3.0] and m.every == [0.5, 3.0]


# --- cost-first against round-robin rounds -------------------------------------------------------

def test_lpt_beats_round_robin_rounds_on_unequal_costs_and_stays_within_its_bound():
    # three rounds of a slow config (9) and a fast one (3) on two workers
    rounds_ = [1, 1, 2, 2, 3, 3]
    costs = [9.0, 3.0, 9.0, 3.0, 9.0, 3.0]
    rr = schedule.makespan(costs, schedule.round_robin(rounds_, 2), 2)
    assignment = schedule.lpt(costs, 2)
    cost_first = schedule.makespan(costs, assignment, 2)
    assert rr == 24.0  # rounds 1 and 3 on worker 0
    assert cost_first == 18.0 < rr  # 9 + 9 | 9 + 3 + 3 + 3
    assert len(assignment) == len(costs) and set(assignment) <= {0, 1}
    bound = max(sum(costs) / 2, max(costs))
    assert cost_first <= 4 / 3 * bound


def test_lpt_takes_the_longest_first_where_plan_order_does_not():
    costs = [1.0, 1.0, 2.0]  # the slow item last in plan order
    in_turn = [i % 2 for i in range(len(costs))]
    assert schedule.makespan(costs, in_turn, 2) == 3.0
    assert schedule.makespan(costs, schedule.lpt(costs, 2), 2) == 2.0


def test_a_sequential_round_runs_on_one_worker_under_round_robin_but_on_all_under_cost_first():
    _, batches = _plan(batches=2)
    waves = [[g for g in schedule.groups(batches) if g.round == r] for r in (1, 2)]
    dur = {b.batch_id: (3.0 if b.config_id == "c2" else 1.0) for b in batches}
    per_group = [[sum(dur[b.batch_id] for b in g.batches) for g in w] for w in waves]
    rr = sum(schedule.makespan(c, schedule.round_robin([1] * len(c), 2), 2) for c in per_group)
    span, slots = schedule.simulate(waves, lambda b: dur[b.batch_id], 2)
    assert rr == 2 * (15.0 + 5.0)  # each round on worker 0 alone
    assert span == 2 * 15.0  # each round's two groups side by side
    assert {s.worker for s in slots} == {0, 1}


def test_the_policy_learns_a_slow_cell_and_takes_its_groups_first():
    """Round 1 measures every cell; in round 2 the slow config's groups go first (LPT), so the
    fast ones fill in behind them."""
    _, batches = _plan(batches=2, matrix={"num_ctx": [256, 512, 1024], "temperature": [0.6]})
    dur = {b.batch_id: (6.0 if b.config_id == "c3" and b.mode == "chimera" else 1.0) for b in batches}
    waves = [[g for g in schedule.groups(batches) if g.round == r] for r in (1, 2)]
    _, slots = schedule.simulate(waves, lambda b: dur[b.batch_id], 2)
    second = [s for s in slots if s.group.endswith("-b2")]  # in the order the policy took them
    assert second[0].group == "c3-b2"  # measured slowest, taken first
    assert [s.group for s in slots if s.group.endswith("-b1")][0] == schedule.groups(batches)[0].key  # plan order


def test_every_group_is_scheduled_once_and_none_is_split():
    _, batches = _plan(batches=3, matrix={"num_ctx": [256, 512, 1024], "temperature": [0.6]})
    groups = schedule.groups(batches)
    span, slots = schedule.simulate([groups], lambda b: 1.0 + b.order % 3, 2)
    assert collections.Counter(s.group for s in slots) == collections.Counter(g.key for g in groups)
    for w in (0, 1):  # a worker's groups never overlap: each runs whole, one after another
        mine = sorted((s.start, s.end) for s in slots if s.worker == w)
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(mine, mine[1:]))
    assert span == max(s.end for s in slots)


# --- the analysis where the schedule gives workers cells of their own ------------------------------

def test_the_worker_effect_is_not_tested_where_the_workers_share_no_cell():
    rows = []
    for worker, config in (("h/a", "c1"), ("h/b", "c2")):  # each worker its own config: confounded
        for k in range(3):
            for agent in ("python", "rust"):
                rows.append({"batch_id": f"{config}-{agent}-{k}", "worker": worker, "config_id": config,
                             "mode": "baseline", "agent": agent, "throughput_tps": 10.0 + k + (config == "c2")})
    e = stats.worker_effect(pd.DataFrame(rows), "throughput_tps")
    assert e["linked"] is False and e["p"] != e["p"]  # NaN: not "no worker effect shown"
    shared = pd.DataFrame(rows + [{**rows[0], "batch_id": "c1-python-x", "worker": "h/b", "throughput_tps": 11.0}])
    assert stats.worker_effect(shared, "throughput_tps")["linked"] is True
    assert stats.linked([("a", 1), ("b", 2), ("b", 1)]) and not stats.linked([("a", 1), ("b", 2)])


# --- one run on a two-worker local cluster -------------------------------------------------------

SLOW_S, FAST_S = 1.0, 0.2  # s per request: num_ctx 4096 (c2's chimera) / the rest; c2's groups ≈ 3 × c1's


def _pace(options: dict) -> float:
    return SLOW_S if options.get("num_ctx") == 4096 else FAST_S


@pytest.mark.slow
def test_cost_first_on_two_workers_beats_round_robin_rounds_and_keeps_every_run_once(tmp_path):
    """One real sweep of 2 configs × 3 rounds on a two-worker local cluster (`--cluster local
    --workers 2`) against a paced server (c2's chimera requests take 1.0 s, the rest 0.2 s).
    Two full cluster runs would double the time, so the comparison is on this run's own batch
    times: round-robin rounds (the schedule this replaces) assigned the same measured batch
    durations would take longer than this run's makespan (its batches' first start to last end,
    from processes.jsonl), and the makespan is close to what the cost-first policy predicts
    from those durations (schedule.simulate). Every planned run is recorded once; no group is
    split across workers."""
    doc = yaml.safe_load((FIXTURES / "tiny-schedule.yaml").read_text())
    with PacedOllama("paced", _pace) as srv:
        doc["server"]["host"] = srv.url
        params_path = tmp_path / "tiny-schedule.yaml"
        params_path.write_text(yaml.safe_dump(doc))
        done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(params_path), "--cluster", "local",
                               "--workers", "2", "--run-id", "sched"],
                              env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)}, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "sched"
    saved = json.loads((run_dir / "plan.json").read_text())
    planned = {r["run_id"] for b in saved["batches"] for r in b["runs"]}
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    keys = [(r["run_id"], r["attempt"]) for r in records]
    assert len(keys) == len(set(keys)), "a run recorded twice"
    ok = collections.Counter(r["run_id"] for r in records if r["outcome"] == "ok")
    assert set(ok) == planned and set(ok.values()) == {1}, "a run lost or recorded twice"

    batches = [plan.batch_from_dict(b) for b in saved["batches"]]
    groups = schedule.groups(batches)
    assert saved["schedule"]["rule"] == "cost-first" and set(saved["schedule"]["groups"]) == {g.key for g in groups}
    group_of = {b.batch_id: schedule.group_key(b) for b in batches}
    worker_of = collections.defaultdict(set)
    for r in records:
        worker_of[group_of[r["batch_id"]]].add(r["worker"])
    assert all(len(w) == 1 for w in worker_of.values()), f"a group split across workers: {dict(worker_of)}"
    assert len(set().union(*worker_of.values())) == 2  # both workers ran groups
    session = json.loads((run_dir / "manifest.json").read_text())["sessions"][-1]["schedule"]
    assert sorted(e["group"] for e in session["groups"]) == sorted(g.key for g in groups)  # each once
    assert all(e["ran_on"] == [e["worker"]] == sorted(worker_of[e["group"]]) for e in session["groups"])

    rows = [json.loads(line) for line in (run_dir / "processes.jsonl").read_text().splitlines()]
    took = collections.defaultdict(float)
    for row in rows:
        took[row["batch_id"]] += row["ended_unix"] - row["started_unix"]
    real = max(r["ended_unix"] for r in rows) - min(r["started_unix"] for r in rows)
    per_group = [sum(took[b.batch_id] for b in g.batches) for g in groups]
    round_robin = schedule.makespan(per_group, schedule.round_robin([g.round for g in groups], 2), 2)
    predicted, _ = schedule.simulate([groups], lambda b: took[b.batch_id], 2)
    assert round_robin > 1.15 * predicted, (round_robin, predicted)  # the cells' costs are unequal enough
    assert real < round_robin, (real, round_robin)
    assert real <= 1.2 * predicted + 1.0, (real, predicted)  # the run did what its policy predicts
