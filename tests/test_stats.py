"""Known-answer tests: synthetic runs with planted effects, each checked against scipy or
statsmodels called directly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind

from langbench.analysis import findings, metrics, stats
from langbench.report.sections import decision, success, sweep
from synthetic import make_run


@pytest.fixture(scope="module")
def planted_gpu80(tmp_path_factory):
    """Chimera +5% throughput at num_gpu=80 only, in both languages."""
    return findings.Run.load(make_run(tmp_path_factory.mktemp("g") / "gpu80", chimera_gain_at_gpu80=0.05, seed=1))


@pytest.fixture(scope="module")
def planted_variance(tmp_path_factory):
    """Rust with three times Python's standard deviation, same mean."""
    return findings.Run.load(make_run(tmp_path_factory.mktemp("v") / "var", sd=1.0, sd_ratio_rust=3.0, seed=2))


@pytest.fixture(scope="module")
def no_difference(tmp_path_factory):
    """The two agents drawn from one distribution."""
    return findings.Run.load(make_run(tmp_path_factory.mktemp("n") / "null", sd=1.0, seed=3,
                                      overhead_ms=(1.0, 1.0)))


def test_derived_metrics_follow_the_design_definitions(planted_gpu80):
    r = planted_gpu80.df.iloc[0]
    assert r["throughput_tps"] == pytest.approx(r["eval_count"] / (r["eval_duration"] / 1e9))
    assert r["client_decode_tps"] == pytest.approx((r["eval_count"] - 1) / (r["decode_ms"] / 1e3))
    assert r["server_ttft_ms"] == pytest.approx((r["load_duration"] + r["prompt_eval_duration"]) / 1e6)
    assert r["client_overhead_ms"] == pytest.approx(r["ttft_ms"] - r["server_ttft_ms"])


def test_warm_statistics_exclude_cold_and_warmup_runs(planted_gpu80):
    warm = planted_gpu80.warm
    assert set(warm["phase"]) == {"measured"}
    assert len(warm) == 18 * 2 * 2 * 8


def test_describe_matches_numpy_and_scipy():
    x = np.random.default_rng(0).normal(50, 5, 40)
    d = stats.describe(x)
    assert d["mean"] == pytest.approx(x.mean()) and d["std"] == pytest.approx(x.std(ddof=1))
    assert d["cv_pct"] == pytest.approx(100 * x.std(ddof=1) / x.mean())
    assert d["iqr"] == pytest.approx(sps.iqr(x)) and d["range"] == pytest.approx(np.ptp(x))
    assert d["mean_ci_low"] < x.mean() < d["mean_ci_high"]
    assert d["cv_ci_low"] < d["cv_pct"] < d["cv_ci_high"]


def test_planted_gain_at_num_gpu_80_is_found_there_and_only_there(planted_gpu80):
    d = stats.deltas(planted_gpu80.warm, "throughput_tps", planted_gpu80.factors)
    at80, rest = d[d["num_gpu"] == 80], d[d["num_gpu"] != 80]
    assert at80["significant_success"].all() and len(at80) == 12
    assert at80["delta_pct"].between(3, 7).all()
    assert rest["significant_success"].sum() <= 1
    # direct statsmodels computation for one cell
    w = planted_gpu80.warm
    cell = w[(w["agent"] == "rust") & (w["config_id"] == at80.iloc[0]["config_id"])]
    ch = cell.loc[cell["mode"] == "chimera", "throughput_tps"]
    ba = cell.loc[cell["mode"] == "baseline", "throughput_tps"]
    lo, hi = CompareMeans(DescrStatsW(ch), DescrStatsW(ba)).tconfint_diff(usevar="unequal")
    row = at80[at80["agent"] == "rust"].iloc[0]
    assert row["delta_ci_low_pct"] == pytest.approx(100 * lo / ba.mean())
    assert row["delta_ci_high_pct"] == pytest.approx(100 * hi / ba.mean())


def test_anova_attributes_the_planted_gain_to_num_gpu_and_mode_not_language(planted_gpu80):
    table, r2 = stats.factor_anova(planted_gpu80.warm, "throughput_tps", planted_gpu80.factors)
    p = table["PR(>F)"]
    # the gain is planted at num_gpu 80 only: sending num_gpu matters, sending the first level
    # (60, what the mode term holds against the baseline's defaults) does not, nor does num_ctx
    assert p["C(num_gpu) within chimera"] < 0.001 and p["C(mode)"] > 0.05
    assert p["C(num_ctx) within chimera"] > 0.001
    assert p["C(agent)"] > 0.05 and p["C(agent):C(mode)"] > 0.05
    assert 0 < r2 < 1


def test_triple_variance_is_detected_by_brown_forsythe_and_cv(planted_variance):
    w = planted_variance.warm
    py, rs = (w.loc[w["agent"] == a, "throughput_tps"].to_numpy() for a in ("python", "rust"))
    ev = stats.equal_variance({"python": py, "rust": rs})
    assert ev["brown_forsythe_p"] == pytest.approx(sps.levene(py, rs, center="median").pvalue)
    assert ev["brown_forsythe_p"] < 0.001
    ratio = stats.describe(rs)["cv_pct"] / stats.describe(py)["cv_pct"]
    assert 2.4 < ratio < 3.6
    row = decision.decision_matrix(planted_variance).table.set_index("criterion").loc[
        "Throughput consistency (per-cell CV)"]
    assert row["winner"] == "python"


def test_no_difference_is_called_equivalent_and_no_test_calls_a_winner(no_difference):
    w = no_difference.warm
    py, rs = (w.loc[w["agent"] == a, "throughput_tps"].to_numpy() for a in ("python", "rust"))
    c = stats.compare(py, rs, "throughput_tps", ("python", "rust"), margin_rel=0.02)
    assert c.verdict == "equivalent"
    assert c.welch_p == pytest.approx(sps.ttest_ind(py, rs, equal_var=False).pvalue)
    assert c.mw_p == pytest.approx(sps.mannwhitneyu(py, rs).pvalue)
    assert c.tost_p == pytest.approx(ttost_ind(py, rs, -c.margin, c.margin, usevar="unequal")[0])
    assert abs(c.hedges_g) < 0.2
    matrix = decision.decision_matrix(no_difference).table.set_index("criterion")
    for criterion in ("Throughput (warm)", "TTFT warm", "TTFT cold", "Client overhead",
                      "Throughput consistency (per-cell CV)", "Optimization success rate"):
        assert matrix.loc[criterion, "winner"] in ("equivalent", "inconclusive"), criterion


def test_a_real_difference_is_not_called_equivalent():
    rng = np.random.default_rng(4)
    c = stats.compare(rng.normal(105, 1, 30), rng.normal(100, 1, 30), "tps", ("python", "rust"))
    assert c.verdict == "python higher" and c.hedges_g > 2 and c.diff_ci_low > 0


def test_the_seeds_success_rate_claim_is_not_significant():
    r = stats.compare_rates(13, 18, 7, 18)
    table = np.array([[13, 5], [7, 11]])
    assert r["fisher_p"] == pytest.approx(sps.fisher_exact(table).pvalue)
    assert r["chi2_p"] == pytest.approx(sps.chi2_contingency(table, correction=True)[1])
    assert r["fisher_p"] > 0.05 and r["chi2_p"] > 0.05  # the seed said p < 0.01
    assert r["odds_ratio"] == pytest.approx(13 * 11 / (5 * 7))


def test_failed_runs_are_kept_out_of_warm_statistics_and_counted(tmp_path):
    run = findings.Run.load(make_run(tmp_path / "f", failures=3, seed=5))
    assert (run.df["outcome"] == "error").sum() == 3
    assert (run.warm["outcome"] == "ok").all()
    section = sweep.failures(run)
    assert "3 runs failed" in section.sentence and len(section.table) == 1


def test_summary_has_one_row_per_agent_config_mode(planted_gpu80):
    s = metrics.summary(planted_gpu80.df, planted_gpu80.factors)
    assert len(s) == 2 * 18 * 2
    assert (s["n"] == 8).all()


# --- issue 9: success rates done right, baseline rows, grouped decision matrix -------------------

def test_mcnemar_exact_matches_the_hand_worked_binomial():
    # 10 configs: both succeed on 2, Rust only on 7, Python only on 1, neither on 0.
    # Exact McNemar: two-sided binomial on the 8 discordant ones, P(X ≤ 1 | 8, ½) × 2 = 2 × 9/256.
    rust = [True] * 2 + [True] * 7 + [False] * 1
    python = [True] * 2 + [False] * 7 + [True] * 1
    r = stats.mcnemar_paired(rust, python)
    assert (r["both"], r["a_only"], r["b_only"], r["neither"]) == (2, 7, 1, 0)
    assert r["mcnemar_p"] == pytest.approx(18 / 256)


def test_holm_is_statsmodels_multipletests_holm(monkeypatch):
    """stats.holm computes the step-down itself (its docstring says why): the same numbers as
    statsmodels on random p-values with ties, ones, zeros and NaN, in any order."""
    import gc

    from statsmodels.stats.multitest import multipletests
    monkeypatch.setattr(gc, "collect", lambda *a: 0)  # statsmodels' per-call full collection: 0.1 s × 500 here
    rng = np.random.default_rng(22)
    for m in (1, 2, 3, 7, 40):
        for _ in range(50):
            p = rng.uniform(0, 1, m) ** rng.uniform(0.2, 5)
            p[rng.random(m) < 0.2] = rng.choice([0.0, 1.0, 0.05])
            want = multipletests(p, method="holm")[1]
            assert stats.holm(p) == pytest.approx(want, abs=1e-15)
            with_nan = np.insert(p, rng.integers(0, m + 1), np.nan)
            got = stats.holm(with_nan)
            assert np.isnan(got).sum() == 1 and got[np.isfinite(got)] == pytest.approx(want, abs=1e-15)


def test_holm_matches_the_hand_worked_step_down():
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone: 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = stats.holm([0.01, float("nan")])
    assert out[0] == pytest.approx(0.01) and np.isnan(out[1])


def test_baseline_rows_carry_no_chimera_factor_values(planted_gpu80):
    df = planted_gpu80.df
    base, chim = df[df["mode"] == "baseline"], df[df["mode"] == "chimera"]
    for f in planted_gpu80.factors:
        assert base[f].isna().all(), f  # the synthetic baseline sends Ollama's defaults
        assert chim[f].notna().all(), f
    s = metrics.summary(df, planted_gpu80.factors)  # baseline cells are kept, not dropped as NaN
    assert (s["mode"] == "baseline").sum() == 2 * 18 and s.loc[s["mode"] == "baseline", "num_gpu"].isna().all()
    d = stats.deltas(planted_gpu80.warm, "throughput_tps", planted_gpu80.factors)
    assert d["num_gpu"].notna().all()  # a delta is labelled with what its chimera sent


def test_success_rates_score_both_languages_on_every_config_failed_ones_included(planted_gpu80):
    w = planted_gpu80.warm
    gone = (w["agent"] == "python") & (w["config_id"] == "c01") & (w["mode"] == "chimera")
    d = stats.deltas(w[~gone], "throughput_tps", planted_gpu80.factors)
    t = success.success_table(planted_gpu80, d).set_index("rule")
    naive = t.iloc[0]
    assert naive["configs"] == 18 and naive["python_failed"] == 1 and naive["rust_failed"] == 0
    ok = {a: d[d["agent"] == a].set_index("config_id")["naive_success"] for a in ("rust", "python")}
    assert naive["rust"] == ok["rust"].sum() and naive["python"] == ok["python"].sum()
    expected = stats.mcnemar_paired(ok["rust"].reindex(sorted(w["config_id"].unique())).fillna(False).astype(bool),
                                    ok["python"].reindex(sorted(w["config_id"].unique())).fillna(False).astype(bool))
    assert naive["mcnemar_p"] == pytest.approx(expected["mcnemar_p"])
    section, _ = success.success_rates(planted_gpu80)
    assert "McNemar exact" in section.sentence and "/18" in section.sentence


def test_decision_matrix_counts_correlated_criteria_once(planted_variance):
    t = decision.decision_matrix(planted_variance).table
    latency = t[t["group"] == "latency"]
    assert set(latency["criterion"]) == {"TTFT warm", "Client overhead", "End-to-end latency"}
    assert latency["group_winner"].nunique() == 1
    decided = set(latency["winner"]) - {"inconclusive", "not enough data"}
    expected = decided.pop() if len(decided) == 1 else ("mixed" if decided else "inconclusive")
    assert latency["group_winner"].iloc[0] == expected
    assert "Holm" in t.loc[t["criterion"] == "Throughput (warm)", "test"].iloc[0]
    sentence = decision.decision_matrix(planted_variance).sentence
    assert f"in {t['group'].nunique()} groups" in sentence


def test_drift_fit_separates_a_shared_slope_from_one_agent_drifting(tmp_path):
    rng = np.random.default_rng(9)
    order = np.repeat(np.arange(40), 4)
    agent = np.tile(["python", "python", "rust", "rust"], 40)
    mode = np.tile(["baseline", "chimera"], 80)
    shared = pd.DataFrame({"order": order, "agent": agent, "mode": mode,
                           "throughput_tps": 100 - 0.05 * order + rng.normal(0, 0.2, len(order))})
    _, fit = stats.drift(shared, "throughput_tps")
    assert fit["slope"] == pytest.approx(-0.05, abs=0.005) and fit["slope_p"] < 1e-6
    assert fit["by_agent_p"] > 0.01 and fit["by_mode_p"] > 0.01
    one = shared.assign(throughput_tps=shared["throughput_tps"] - np.where(agent == "rust", 0.05 * order, 0))
    _, fit = stats.drift(one, "throughput_tps")
    assert fit["by_agent_p"] < 1e-6 and fit["by_mode_p"] > 0.01
