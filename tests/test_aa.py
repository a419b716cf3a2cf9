"""A/A checks with their own reference (langbench.analysis.aa; issue 26)."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from langbench.analysis import aa, stats


def test_splits_are_distinct_and_mirrors_count_once():
    s = aa.splits(np.zeros((4, 2)))
    assert s.shape == (8, 4, 2)  # 2^4 orders, halved by the mirror
    keys = {tuple(map(tuple, x)) for x in s}
    assert len(keys) == 8 and not any(tuple(map(tuple, x[:, ::-1])) in keys for x in s)
    assert len(aa.splits(np.zeros((3, 3)), n=1000)) == 6 ** 3 // 2
    drawn = aa.splits(np.zeros((6, 4)), n=50)
    assert len({tuple(map(tuple, x)) for x in drawn}) == 50
    m = np.array([[1.0, 2.0], [3.0, np.nan], [4.0, 5.0], [6.0, 7.0]])
    assert (aa.splits(m)[:, 1] == -1).all()  # a cell with one batch is left out


def test_the_paired_rule_on_splits_is_stats_paired():
    rng = np.random.default_rng(1)
    m = rng.normal(0, 1, (6, 3))
    idx = aa.splits(m, n=20)
    got = aa.split_rule_counts(m, "paired", 0.1, n=20)
    want = sum(stats.paired(m[np.arange(6), i[:, 0]], m[np.arange(6), i[:, 1]], 0.1)["verdict"] == "differs"
               for i in idx)
    assert got == {"k": want, "n": 20, "rate": want / 20}


def _frame(rng, configs=18, batches=2, config_sd=3.0):
    """One agent's baseline batches: a config effect shared by the config's batches."""
    rows = []
    for c in range(configs):
        effect = rng.normal(0, config_sd)
        for b in range(batches):
            rows.append({"config_id": f"c{c}", "batch_id": f"c{c}-b{b}", "mode": "baseline", "agent": "x",
                         "v": 100 + effect + rng.normal(0, 1)})
    return pd.DataFrame(rows)


def test_the_pooled_fallback_is_calibrated_when_split_as_the_comparison_is():
    """Halves of configs (today's stats.aa_language_splits) put different cells on each side:
    a config effect shared by a config's batches then reads as a difference. Split as the
    language comparison is (every cell on both sides, one batch each), the pooled rule on
    batch means stays within α."""
    rng = np.random.default_rng(2)
    old, new = [], []
    for _ in range(60):
        df = _frame(rng)
        s = stats.aa_language_splits(df, lambda a, b: stats.compare(
            *stats.units([a, b], "v")[0], "v", margin_abs=0.0), splits=20)
        old.append(s["differs"].mean())
        new.append(aa.split_rule_counts(aa.batch_matrix(df, "v"), "pooled", 0.0, n=20)["rate"])
    print(f"\nA/A rate, pooled rule: halves of configs {np.mean(old):.3f}, matched splits {np.mean(new):.3f}")
    assert np.mean(old) > 0.10
    assert np.mean(new) <= 0.05


@pytest.mark.slow
def test_a_flag_from_the_reference_means_what_it_says():
    """4 cells × 4 batches (the issue's one-GPU run): k of 200 splits against Binomial(200, α)
    flags a calibrated rule far more often than α, because the splits share batches; against
    its own null reference it is flagged at about α."""
    rng = np.random.default_rng(3)
    binom, ref = [], []
    for _ in range(120):
        m = rng.normal(0, 1, (4, 4))
        r = aa.reference(m, "paired", 0.0, n=200, sims=300, seed=int(rng.integers(1 << 30)))
        binom.append(sps.binomtest(r["k"], r["n"], 0.05, alternative="greater").pvalue < 0.05)
        ref.append(r["flagged"])
    print(f"\nflagged among 120 calibrated A/A checks: binomial {np.mean(binom):.3f}, reference {np.mean(ref):.3f}")
    assert sps.binomtest(int(np.sum(binom)), len(binom)).proportion_ci(method="exact").low > 0.05
    assert sps.binomtest(int(np.sum(ref)), len(ref)).proportion_ci(method="exact").low <= 0.05


def test_the_reference_still_flags_a_rule_that_is_wrong():
    """Two workers, the second 1.5 σ slower; a design that poses one worker's batch as a and
    the other's as b in every cell confounds language with worker (stats.aa_paired_splits,
    "across"). Its A/A count is far above its own null reference: flagged."""
    rng = np.random.default_rng(4)
    m = rng.normal(0, 1, (12, 4))
    m[:, 2:] += 1.5  # batches 2 and 3 of every cell ran on the slower worker
    idx = np.stack([rng.integers(0, 2, (200, 12)), rng.integers(2, 4, (200, 12))], axis=-1)
    r = aa.reference(m, "paired", 0.0, sims=500, idx=idx)
    assert r["flagged"] and r["rate"] > 0.5
    within = aa.reference(m[:, :2], "paired", 0.0, sims=500)  # both batches from one worker
    assert not within["flagged"]


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="rule"):
        aa.differs(np.zeros((2, 3)), np.zeros((2, 3)), "welch", 0.0)


def test_sequential_splits_are_distinct_and_mirrors_count_once():
    s = aa.sequential_splits(3, 2)  # 6 orientations, 2^6 / 2 distinct splits
    assert s.shape == (32, 2, 3) and (s[:, 0, 0] == 1).all()
    keys = {x.tobytes() for x in s}
    assert len(keys) == 32 and not any((-x).tobytes() in keys for x in s)
    drawn = aa.sequential_splits(18, 1, n=200)
    assert len({x.tobytes() for x in drawn}) == 200
    assert aa.sequential_design(2, 3, 3) == (1, 1, 1)  # quick.yaml: one A/A look, rounds 1 and 2
    assert aa.sequential_design(2, 5, 4) == (1, 2, 2)


def test_one_sequential_a_a_look_is_the_fixed_rule_on_its_two_rounds():
    """With one A/A look (max_batches 2 or 3) all of α is spent at it: the sequential A/A is
    then the fixed paired t + margin on rounds 1 and 2, split by split."""
    rng = np.random.default_rng(5)
    m = rng.normal(0, 1, (8, 3))
    signs = aa.sequential_splits(8, 1, n=40)
    got = aa.sequential_reference(m, "paired", 0.2, min_rounds=2, max_rounds=3, signs=signs, sims=50)
    idx = np.where(signs[:, 0, :, None] > 0, [0, 1], [1, 0])  # (splits, cells, 2) batch indices
    want = aa.split_rule_counts(m, "paired", 0.2, idx=idx)
    assert got["looks"] == 1 and got["k"] == want["k"] and got["n"] == 40


@pytest.mark.parametrize("rule", ["paired", "pooled"])
def test_the_sequential_a_a_is_calibrated_and_its_flag_means_what_it_says(rule):
    """Forty null studies of 12 cells × 4 rounds (min 2, max 4: two A/A looks): the sequential
    rule's A/A rate stays within α on average, and the check flags about α of them (its own null
    reference), not more. The paired rule with config effects (it differences them away); the
    pooled rule without (config effects only widen its Welch interval: its rate falls to 0)."""
    rng = np.random.default_rng(6)
    rates, flags, fixed_flags = [], [], []
    config_sd = {"paired": 3.0, "pooled": 0.0}[rule]
    for i in range(40):
        m = rng.normal(0, 1, (12, 4)) + rng.normal(0, config_sd, (12, 1))
        r = aa.sequential_reference(m, rule, 0.0, min_rounds=2, max_rounds=4, sims=200, seed=i)
        assert r["looks"] == 2 and r["n"] == 200
        rates.append(r["rate"])
        flags.append(r["flagged"])
        fixed_flags.append(aa.reference(m, rule, 0.0, sims=200, seed=i)["flagged"])
    print(f"\nsequential A/A, {rule}: mean rate {np.mean(rates):.3f}, flagged {np.mean(flags):.3f}; "
          f"fixed A/A flagged {np.mean(fixed_flags):.3f}")
    assert np.mean(rates) <= 0.05 + 0.015  # 40 studies × 200 splits of 2 looks: the mean's noise ≈ 0.006
    for f in (flags, fixed_flags):  # before null_model's shrinkage the fixed pooled check flagged 28 %
        assert sps.binomtest(int(np.sum(f)), len(f)).proportion_ci(method="exact").low <= 0.05


def test_the_sequential_a_a_flags_splits_that_confound_language_with_round():
    """Splits that pose the earlier round as a in nine cells of ten, on data whose first round
    of each pair ran 3 σ slower: the A/A says 'differs' almost always, far above its null."""
    rng = np.random.default_rng(7)
    m = rng.normal(0, 1, (12, 4))
    m[:, [0, 2]] += 3
    signs = np.where(rng.random((200, 2, 12)) < 0.9, 1, -1)
    bad = aa.sequential_reference(m, "paired", 0.0, min_rounds=2, max_rounds=4, sims=500, signs=signs)
    assert bad["flagged"] and bad["rate"] > 0.5
    fair = aa.sequential_reference(m, "paired", 0.0, min_rounds=2, max_rounds=4, sims=500)
    assert not fair["flagged"]


def test_too_few_rounds_or_cells_give_no_sequential_a_a_split():
    rng = np.random.default_rng(8)
    assert aa.sequential_reference(rng.normal(0, 1, (12, 1)), "paired", 0.0, max_rounds=3)["n"] == 0
    assert aa.sequential_reference(rng.normal(0, 1, (2, 4)), "paired", 0.0, max_rounds=4)["n"] == 0
    with pytest.raises(ValueError, match="rule"):
        aa.sequential_reference(rng.normal(0, 1, (4, 2)), "welch", 0.0, max_rounds=2)
