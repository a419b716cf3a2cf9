"""The sequential rule (langbench.analysis.sequential): its boundaries against published tables, its
decisions, and its error rates under optional stopping by simulation (issue 26)."""

import numpy as np
import pytest
from scipy import stats as sps

from langbench.analysis import sequential


def _ci(k: int, n: int) -> tuple[float, float]:
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return ci.low, ci.high


# Jennison & Turnbull (2000), Table 2.1: Pocock's C_P(K, α), two-sided, equal groups.
POCOCK = {0.05: {2: 2.178, 3: 2.289, 4: 2.361, 5: 2.413}, 0.01: {2: 2.772, 3: 2.873, 4: 2.939, 5: 2.986}}
# Table 2.3: O'Brien & Fleming's C_B(K, α); the boundary at look k is C_B √(K/k).
OBRIEN_FLEMING = {0.05: {2: 1.977, 3: 2.004, 4: 2.024, 5: 2.040}}


@pytest.mark.parametrize("alpha,k", [(a, k) for a in POCOCK for k in POCOCK[a]])
def test_pocock_constants_match_jennison_turnbull_table_2_1(alpha, k):
    assert sequential.constant_boundary(k, alpha, "pocock") == pytest.approx(POCOCK[alpha][k], abs=1e-3)


@pytest.mark.parametrize("k", sorted(OBRIEN_FLEMING[0.05]))
def test_obrien_fleming_constants_match_jennison_turnbull_table_2_3(k):
    got = sequential.constant_boundary(k, 0.05, "obrien-fleming")
    assert got == pytest.approx(OBRIEN_FLEMING[0.05][k], abs=1e-3)


# Lan–DeMets spending, equally spaced looks, one-sided α = 0.025: R's ldbounds
# (bounds(t, iuse=1 or 2, alpha=0.025)) and gsDesign (sfLDOF, sfLDPocock) print these.
LD_OBF = {2: [2.9626, 1.9686], 3: [3.7103, 2.5114, 1.9930], 4: [4.3326, 2.9631, 2.3590, 2.0141],
          5: [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]}
LD_POCOCK = {5: [2.4380, 2.4268, 2.4101, 2.3966, 2.3859]}


@pytest.mark.parametrize("k", sorted(LD_OBF))
def test_lan_demets_obrien_fleming_spending_matches_ldbounds(k):
    t = np.arange(1, k + 1) / k
    np.testing.assert_allclose(sequential.spending_boundary(t, 0.025, sides=1), LD_OBF[k], atol=1e-3)
    # two-sided at 0.05: α/2 on each side, the same bounds (a crossing on the far side first is negligible)
    np.testing.assert_allclose(sequential.spending_boundary(t, 0.05, sides=2), LD_OBF[k], atol=1e-3)


def test_lan_demets_pocock_spending_matches_ldbounds():
    t = np.arange(1, 6) / 5
    np.testing.assert_allclose(sequential.spending_boundary(t, 0.025, 1, "pocock"), LD_POCOCK[5], atol=1e-3)


def test_boundaries_spend_what_the_function_says_by_an_independent_integration():
    """The crossing probabilities of the boundaries, computed by scipy's multivariate normal
    (Genz), add up to the spending function at every look."""
    t = np.array([0.25, 0.5, 0.75, 1.0])
    c = sequential.spending_boundary(t, 0.05, sides=2)
    cov = np.sqrt(np.minimum.outer(t, t) / np.maximum.outer(t, t))
    for k in range(1, len(t) + 1):
        inside = sps.multivariate_normal(np.zeros(k), cov[:k, :k]).cdf(c[:k], lower_limit=-c[:k],
                                                                         rng=np.random.default_rng(0))
        spent = 2 * sequential.spend_obrien_fleming(t[k - 1], 0.025)
        assert 1 - inside == pytest.approx(spent, abs=2e-4)


def test_a_bad_schedule_is_refused():
    with pytest.raises(ValueError, match="increase"):
        sequential.spending_boundary([0.5, 0.5, 1.0], 0.05)
    with pytest.raises(ValueError, match="min_rounds"):
        sequential.critical_values(3, min_rounds=4)
    with pytest.raises(ValueError, match="max_rounds"):
        sequential.evaluate(np.zeros((5, 6)), 1.0, max_rounds=4)
    with pytest.raises(ValueError, match="3 cells"):
        sequential.evaluate(np.zeros((3, 2)), 1.0, max_rounds=4)


def test_a_large_difference_stops_early_and_stays_decided():
    rng = np.random.default_rng(3)
    d = 5.0 + rng.normal(0, 1, (6, 12))  # 5 margins away, tight
    out = sequential.evaluate(d, margin=1.0, max_rounds=6, min_rounds=2)
    assert [o.round for o in out] == [2, 3, 4, 5, 6]
    assert out[0].verdict == "differs" and out[0].stopping_round == 2
    assert all(o.verdict == "differs" and o.stopping_round == 2 and o.decided for o in out)
    assert out[0].lo > 1.0  # the anytime-valid interval clears the margin
    # the naive interval at the same look is the plain t CI, narrower than the RCI
    assert out[0].hi - out[0].lo > out[0].naive_hi - out[0].naive_lo


def test_the_interval_is_the_paired_t_with_a_wider_critical_value():
    rng = np.random.default_rng(4)
    d = rng.normal(0.2, 1, (4, 10))
    last = sequential.evaluate(d, margin=1.0, max_rounds=4, min_rounds=2)[-1]
    per_cell = d.mean(axis=0)
    t = sps.ttest_1samp(per_cell, 0.0)
    ci = t.confidence_interval(0.95)
    assert last.estimate == pytest.approx(per_cell.mean())
    assert (last.naive_lo, last.naive_hi) == pytest.approx((ci.low, ci.high))
    assert last.lo < ci.low and last.hi > ci.high  # spent α: wider at the last look than a fixed CI


def test_equivalence_is_reached_inside_the_margin_and_kept():
    rng = np.random.default_rng(5)
    d = rng.normal(0.0, 0.5, (8, 12))
    out = sequential.evaluate(d, margin=1.0, max_rounds=8, min_rounds=2)
    stop = next(o for o in out if o.decided)
    assert stop.verdict == "equivalent" and -1.0 < stop.eq_lo and stop.eq_hi < 1.0
    assert all(o.verdict == "equivalent" and o.stopping_round == stop.round for o in out if o.round >= stop.round)


def test_the_pooled_rule_is_welch_on_the_batches_so_far():
    rng = np.random.default_rng(6)
    a, b = rng.normal(10, 1, (3, 8)), rng.normal(10, 1.5, (3, 8))
    est, se, df, _ = sequential.welch_stats(a, b)
    w = sps.ttest_ind(a[:2].ravel(), b[:2].ravel(), equal_var=False)
    assert est[1] / se[1] == pytest.approx(w.statistic)
    assert df[1] == pytest.approx(w.df)
    out = sequential.evaluate_pooled(a, b, margin=0.2, max_rounds=3)
    assert [o.round for o in out] == [2, 3]


# --- error rates under optional stopping -------------------------------------------------

SIMS = 20_000


@pytest.mark.parametrize("noise,tau", [("normal", 0.0), ("t", 0.0), ("t", 1.0)])
def test_no_more_false_positives_than_alpha_under_optional_stopping(noise, tau):
    """The hardest null for 'differs': margin 0, so only the test of δ = 0 stands between a
    true null and a 'differs' (a margin only takes more away). 12 cells, up to 8 rounds,
    looks from round 2; batch noise normal or t(5), with and without a cell × language
    interaction. The naive rule (a plain 95 % CI looked at every round) is shown to inflate
    the same rate beyond α: the classical result (Armitage, McPherson & Rowe 1969)."""
    t = sequential.simulate(effects=(0.0,), margin=0.0, sims=SIMS, noise=noise, tau=tau, seed=11).set_index("design")
    print(f"\n{noise} noise, tau {tau}:\n" + t[["differs", "sims", "differs_rate", "mean_stop_round"]].to_string())
    seq, naive = t.loc["sequential"], t.loc["naive"]
    assert _ci(int(seq["differs"]), SIMS)[0] <= sequential.ALPHA
    assert _ci(int(naive["differs"]), SIMS)[0] > sequential.ALPHA


def test_no_more_false_equivalence_than_alpha_at_the_margin():
    t = sequential.simulate(effects=(1.0,), margin=1.0, sims=SIMS, seed=12).set_index("design")
    print("\ntrue difference at the margin:\n" + t[["equivalent", "sims", "equivalent_rate"]].to_string())
    assert _ci(int(t.loc["sequential", "equivalent"]), SIMS)[0] <= sequential.ALPHA
    assert _ci(int(t.loc["naive", "equivalent"]), SIMS)[0] > sequential.ALPHA


def test_power_and_stopping_round_beside_the_fixed_design():
    """Planted effects of 0, 1 and 2 margins: the sequential rule decides about as often as
    the fixed design and, where the answer is clear, rounds earlier."""
    t = sequential.simulate(effects=(0.0, 1.0, 2.0), margin=1.0, sims=4000, seed=13)
    print("\n" + t.drop(columns=["sims", "max_rounds"]).to_string())
    r = t.set_index(["effect_x_margin", "design"])
    eq0_seq, eq0_fixed = r.loc[(0.0, "sequential"), "equivalent_rate"], r.loc[(0.0, "fixed"), "equivalent_rate"]
    assert eq0_seq >= 0.9 and eq0_seq >= eq0_fixed - 0.02  # equivalence reached with power at δ = 0
    assert r.loc[(0.0, "sequential"), "mean_stop_round"] < 0.75 * 8
    assert r.loc[(2.0, "sequential"), "differs_rate"] >= r.loc[(2.0, "fixed"), "differs_rate"] - 0.02
    assert r.loc[(2.0, "sequential"), "mean_stop_round"] < 0.5 * 8
    for effect in (0.0, 1.0, 2.0):
        assert r.loc[(effect, "fixed"), "mean_stop_round"] == 8
