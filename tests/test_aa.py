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
