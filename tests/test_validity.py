"""Verdicts that hold (issue 9): batches as the unit, the A/A check, three verdicts with
pre-set margins, uncached TTFT, the null client's floor, runs that stop early."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from langbench import paths, schemas, storage
from langbench.analysis import stopping, findings, metrics, stats
from langbench.report.sections import throughput, ttft, validity
from synthetic import make_run


def _batchy(n_configs: int = 160, batches: int = 2, runs: int = 3, sd_batch: float = 3.0,
            sd_run: float = 0.3, seed: int = 5) -> pd.DataFrame:
    """Baseline cells only, every one the same treatment; runs in a batch share a random
    offset (one process, one load, one moment) and the sweep drifts."""
    rng = np.random.default_rng(seed)
    rows, order = [], 0
    for c in range(n_configs):
        for b in range(batches):
            offset = rng.normal(0, sd_batch) + 0.01 * order
            for r in range(runs):
                rows.append({"agent": "python", "config_id": f"c{c:03d}", "mode": "baseline",
                             "batch_id": f"c{c:03d}-b{b}", "throughput_tps": 100 + offset + rng.normal(0, sd_run)})
            order += 1
    return pd.DataFrame(rows)


def test_batch_effects_fool_the_per_run_rule_and_not_the_batch_rule():
    df = _batchy()
    by_batch = stats.aa_delta_pairs(df, "throughput_tps", [])
    assert set(by_batch["unit"]) == {"batch"}
    pooled = stats.aa_delta_pairs(df.assign(batch_id=df["config_id"]), "throughput_tps", [])
    assert set(pooled["unit"]) == {"run"}
    fp_batch, fp_run = by_batch["differs"].mean(), pooled["differs"].mean()
    n = len(by_batch)
    noise = 2 * math.sqrt(0.05 * 0.95 / n)  # two binomial standard errors
    assert fp_run > 0.3, fp_run  # runs treated as independent: identical cells "differ" often
    assert fp_batch <= 0.05 + noise, fp_batch
    assert stats.rate_against(int(pooled["differs"].sum()), n, 0.05)["p_above"] < 1e-6


def test_rate_against_is_the_exact_binomial_tail():
    r = stats.rate_against(3, 10, 0.05)
    # P(X ≥ 3) for X ~ Binomial(10, 0.05), summed by hand
    tail = sum(math.comb(10, k) * 0.05**k * 0.95**(10 - k) for k in range(3, 11))
    assert r["p_above"] == pytest.approx(tail, rel=1e-9) and r["rate"] == 0.3


def test_paired_comparison_matches_the_closed_form():
    x = np.array([11.0, 13.0, 15.0, 17.0, 19.0])
    y = np.array([10.0, 11.0, 12.0, 13.0, 14.0])  # differences 1..5: mean 3, sd √2.5
    p = stats.paired(x, y, margin=0.5)
    t = 3 / (math.sqrt(2.5) / math.sqrt(5))
    assert p["mean_diff"] == 3.0 and p["cells"] == 5
    # two-sided p of t = 4.2426 with 4 df, from the t distribution's closed form for even df:
    # for ν = 4, P(|T| > t) = 1 − (t/√(t²+4))·(1 + 2/(t²+4))
    closed = 1 - (t / math.sqrt(t * t + 4)) * (1 + 2 / (t * t + 4))
    assert p["t_p"] == pytest.approx(closed, rel=1e-9)
    assert p["verdict"] == "differs"
    same = stats.paired(x, x + 0.01, margin=0.5)
    assert same["verdict"] == "equivalent"


def test_three_verdicts_use_the_margin_fixed_before_the_run():
    rng = np.random.default_rng(1)
    a, b = rng.normal(100.3, 1, 400), rng.normal(100, 1, 400)
    # significant but inside a 1-unit margin: not "differs"; TOST within it: equivalent
    c = stats.compare(a, b, "tps", ("a", "b"), margin_abs=1.0)
    assert c.welch_p < 0.05 and c.verdict == "equivalent" and c.margin == 1.0
    few = stats.compare(a[:4], b[:4] + 0.5, "tps", ("a", "b"), margin_abs=0.1)
    assert few.verdict == "inconclusive"  # never a tie
    far = stats.compare(a + 5, b, "tps", ("a", "b"), margin_abs=1.0)
    assert far.verdict == "a higher"


def test_a_run_that_stopped_early_is_flagged_and_kept_out_of_warm():
    base = {"outcome": "ok", "phase": "measured", "eval_duration": 1e9, "options": {"num_predict": 32}}
    df = metrics.frame([{**base, "run_id": "full", "eval_count": 32, "done_reason": "length"},
                        {**base, "run_id": "short", "eval_count": 9, "done_reason": "stop"}])
    assert df.set_index("run_id")["stopped_early"].to_dict() == {"full": False, "short": True}
    assert list(metrics.warm(df)["run_id"]) == ["full"]


# --- on the real tiny sweep: uncached TTFT, the null client, the report's sections ----------------

def test_uncached_runs_evaluate_the_whole_prompt_and_cached_runs_reuse_it(tiny_run):
    run = findings.Run.load(tiny_run)
    w = run.warm
    cached, uncached = (w[w["prompt_cache"] == k] for k in ("cached", "uncached"))
    assert len(uncached) and len(cached)
    # the unique prefix is evaluated on top of the prompt: more tokens, more prompt time
    assert uncached["prompt_eval_count"].min() > cached["prompt_eval_count"].max()
    assert uncached["prompt_eval_ms"].median() > cached["prompt_eval_ms"].median()
    s = ttft.ttft_cache(run)
    assert "cached" in s.sentence and "uncached" in s.sentence


def test_the_null_client_writes_schema_valid_records_and_gives_the_floor(tiny_run):
    records = storage.read_jsonl(tiny_run / "records.jsonl")
    null = [r for r in records if r["agent"] == "null"]
    assert null and all(r["outcome"] == "ok" for r in null)
    agent_fields = set(schemas.validator("record").schema["required"])
    assert all(schemas.problems("record", {k: r[k] for k in agent_fields | {"error"}}) == [] for r in null)
    rust = {r["run_id"].replace("-rust", "-null"): r for r in records if r["agent"] == "rust"}
    for r in null:  # same seed, same prompt, same options: the same text as the agents
        if r["prompt_cache"] != "cached":
            continue  # an uncached prompt's prefix is unique to its run id
        twin = rust.get(r["run_id"])
        if twin and twin["outcome"] == "ok":
            assert r["response_sha256"] == twin["response_sha256"], r["run_id"]
    run = findings.Run.load(tiny_run)
    assert "null" not in set(run.df["agent"]) and len(run.floor)
    s = validity.client_floor(run)
    assert s.sentence.startswith("The null client") and "python adds" in s.sentence and "rust adds" in s.sentence
    assert np.isfinite(s.table["overhead_median_ms"]).all()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # seaborn's heatmap, in matplotlib 3.11
def test_every_report_rule_has_its_aa_rate_beside_it(tiny_run):
    run = findings.Run.load(tiny_run)
    aa = validity.aa_check(run)
    # every headline verdict the run measures, each on its own rows (issue 26: the unchecked verdict)
    assert set(aa.table["metric"]) == {label for _v, label, *_ in stopping.HEADLINE}
    assert aa.sentence.startswith("A/A check on this run's own baseline batches")
    success = throughput.improvement(run)
    assert "that the same rule finds between identical baseline cells" in success.sentence


def test_cpu_contention_is_recorded_per_batch_and_reported(tiny_run):
    procs = storage.read_jsonl(tiny_run / "processes.jsonl")
    assert all(p["host_cpus"] >= 1 and p["host_load_1m"] >= 0 for p in procs)
    # the embedded server (and its runner) works during every batch that generates tokens
    assert all(p["server_cpu_s"] > 0 for p in procs), [p["server_cpu_s"] for p in procs]
    note = validity.footprint(findings.Run.load(tiny_run)).notes
    assert note and note[0].startswith("Server and agents shared the host's")


def test_cpu_per_token_and_per_turn_are_each_process_cpu_over_its_own_work():
    """The kept agent run (results/agent-gpu-h200): each process's CPU beyond start-up over the
    tokens and turns of its own records, and the rate that fills a core, recomputed from the raw
    processes.jsonl and records.jsonl; the Rust agent's cost per token is the lower one."""
    kept = paths.ROOT / "results" / "agent-gpu-h200"
    run = findings.Run.load(kept)
    p = metrics.cpu_per_work(run.processes, run.attempts)
    records = [r for r in storage.read_records(kept / "records.jsonl") if r["agent"] != "null"]
    for row in storage.read_jsonl(kept / "processes.jsonl")[:6]:
        mine = [r for r in records if r["batch_id"] == row["batch_id"] and r["attempt"] == row["attempt"]]
        tokens = sum(r.get("eval_count") or 0 for r in mine)
        cpu = row["user_cpu_s"] + row["system_cpu_s"] - (row.get("startup_cpu_s") or 0)
        got = p[(p["batch_id"] == row["batch_id"]) & (p["attempt"] == row["attempt"])].iloc[0]
        assert got["requests"] == len(mine) == row["records"]
        assert math.isclose(got["cpu_ms_per_token"], 1e3 * cpu / tokens)
        assert math.isclose(got["cpu_ms_per_request"], 1e3 * cpu / len(mine))
        assert math.isclose(got["core_full_tps"], tokens / cpu)
    section = validity.footprint(run)
    t = section.table.set_index("agent")
    assert t.loc["rust", "cpu_ms_per_token"] < t.loc["python", "cpu_ms_per_token"]
    for agent in ("python", "rust"):
        assert f"{1e3 * t.loc[agent, 'cpu_ms_per_token']:.0f} µs CPU per token" in section.sentence
        assert f"one core would be full at {t.loc[agent, 'core_full_tps']:,.0f} tok/s" in section.sentence
    assert "per turn" in section.sentence


def test_the_paired_rule_holds_alpha_on_identical_batches_with_batch_effects():
    """40 independent A/A data sets (batch effects and drift, as _batchy), one paired split each,
    no margin: 'differs' at most as often as α allows (P(≥ 7 of 40 | 5%) ≈ 0.003)."""
    differs = 0
    for seed in range(40):
        s = stats.aa_paired_splits(_batchy(n_configs=20, seed=seed), "throughput_tps", margin=0.0, splits=1,
                                   seed=seed)
        assert len(s) == 1
        differs += int(s["differs"].iloc[0])
    assert differs <= 6, differs
    # runs paired as if independent (run i of batch 0 against run i of batch 1, every cell):
    # the batch offsets they share make identical treatments 'differ' far more often
    def by_run(d):
        return (d.loc[d["batch_id"].str.endswith(f"b{b}"), "throughput_tps"].to_numpy() for b in (0, 1))
    pooled = sum(stats.paired(*by_run(_batchy(n_configs=20, seed=seed)), 0.0)["verdict"] == "differs"
                 for seed in range(40))
    assert pooled > 2 * differs + 4, (pooled, differs)


def test_aa_splits_count_each_distinct_split_once():
    """4 configs split in halves three distinct ways: 100 draws of them are 3 tests, not 100
    (the GPU run of issue 17 counted one false positive 33 times)."""
    df = _batchy(n_configs=4, batches=2)
    s = stats.aa_language_splits(df, lambda a, b: stats.compare(a["throughput_tps"], b["throughput_tps"], "t"))
    assert len(s) == 3
    many = stats.aa_language_splits(_batchy(n_configs=12, batches=2),
                                    lambda a, b: stats.compare(a["throughput_tps"], b["throughput_tps"], "t"))
    assert len(many) == 100  # C(12, 6) / 2 = 462 distinct: 100 drawn, none twice
    p = stats.aa_paired_splits(_batchy(n_configs=3, batches=2), "throughput_tps", margin=0.0)
    assert len(p) == 4  # 3 cells × 2 batches: 2³ ordered draws, a draw and its mirror are one


def test_a_rule_that_fails_its_aa_check_decides_nothing(monkeypatch, tmp_path):
    run = findings.Run.load(make_run(tmp_path / "planted"))
    failing = {"paired"}
    def fake(run, value, data):  # 10 of 10 splits called different, far beyond their exact reference
        return {r: {"k": 10, "n": 10, "rate": 1.0, "null_mean_rate": 0.05, "p_above": 0.0005,
                    "flagged": r in failing} if r in failing else
                {"k": 0, "n": 10, "rate": 0.0, "null_mean_rate": 0.05, "p_above": 1.0, "flagged": False}
                for r in ("paired", "pooled")}
    monkeypatch.setattr(stopping, "aa_rates", fake)
    got = validity.deciding_rule(run, "throughput_tps")
    assert got["rates"]["paired"]["flagged"]
    assert got["rule"] == "pooled" and "paired rule called identical batches different in 10/10" in got["why"]
    failing.add("pooled")
    got = validity.deciding_rule(run, "throughput_tps")
    assert got["rule"] is None and "no verdict is drawn" in got["why"]


def test_a_run_too_small_for_an_aa_check_says_so_instead_of_passing_every_rule(monkeypatch, tmp_path):
    run = findings.Run.load(make_run(tmp_path / "planted"))
    from langbench.analysis import aa
    empty = lambda *a, **k: pd.DataFrame({"differs": pd.Series([], dtype=bool)})  # noqa: E731
    monkeypatch.setattr(stats, "aa_delta_pairs", empty)
    nan = float("nan")
    monkeypatch.setattr(aa, "reference", lambda *a, **k: {"k": 0, "n": 0, "rate": nan, "null_mean_rate": nan,
                                                         "null_q95": nan, "p_above": nan, "flagged": False})
    aa = validity.aa_check(run)
    assert aa.sentence.startswith("No A/A check was possible") and "No rule exceeds" not in aa.sentence
    assert (aa.table["n"] == 0).all()
