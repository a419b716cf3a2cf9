"""A/A checks with a reference that means what it says (issue 26, "the fallback", "the
check's own reference").

An A/A split takes one agent's baseline cells (identical treatment: Ollama's defaults) and, in
every cell, poses one batch as language a and another as language b; a rule that says
'differs' there is wrong. Two things go wrong with today's check (stats.aa_*):

- The pooled rule's A/A (stats.aa_language_splits) puts half the configs on each side, so the
  two sides hold *different* cells: config and order effects, and the batches one config
  shares, show as differences, where the real language comparison has both languages on the
  same cells. `split_rule_counts(..., rule="pooled")` splits as the real comparison does: both
  sides hold every cell, one batch each, and the pooled rule is Welch on those batch means
  (the units are batches, never runs).
- k of n splits against Binomial(n, α) assumes independent splits; splits of a few batches
  share them, so k is far more spread out than binomial. `reference` gives k its own null
  distribution: the same splits of the same shape (cells × batches), on batch means drawn
  under H0 — each cell its mean (the observed one, shrunk by null_model to the between-cell
  spread the data show), every batch that mean plus N(0, σ²) noise with σ the
  pooled within-cell SD (a parametric bootstrap of the null; exact for the paired t, whose
  statistic is free of σ and of the cell means). Relabelling the batches of a cell would not
  do: the set of all distinct splits is the same under any relabelling, so k would not move.

Every function takes `means`: a (cells, batches) array of one agent's baseline batch means
(NaN where a cell has fewer batches), in the metric's unit.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import stats as sps

from langbench.analysis import sequential

ALPHA = 0.05


def batch_matrix(df, value: str, cell: str = "config_id", batch: str = "batch_id"):
    """(cells, batches) batch means of `value` from one agent's baseline rows (a frame with
    `cell`, `batch` and `value` columns), NaN-padded; cells sorted, batches in their order."""
    means = df.groupby([cell, batch], sort=True)[value].mean().dropna()
    rows = [g.to_numpy(float) for _, g in means.groupby(level=0)]
    out = np.full((len(rows), max((len(r) for r in rows), default=0)), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def splits(means: np.ndarray, n: int = 200, seed: int = 112) -> np.ndarray:
    """Distinct A/A splits of `means`: (splits, cells, 2) batch indices, a's and b's batch in
    every cell with two batches or more (cells with fewer are left out: their index is -1).
    A split and its mirror (a and b swapped in every cell) are one test. All of them where
    there are at most n, else n distinct seeded draws."""
    counts = np.sum(np.isfinite(means), axis=1)
    usable = np.flatnonzero(counts >= 2)
    per_cell = [list(itertools.permutations(range(counts[i]), 2)) for i in usable]
    if not per_cell:  # no cell with two batches: no split at all (not one empty split)
        return np.empty((0, len(means), 2), int)
    total = math.prod(len(p) for p in per_cell) // 2
    out, seen = [], set()

    def add(choice):
        key = tuple(choice)
        mirror = tuple((b, a) for a, b in key)
        if key not in seen and mirror not in seen:
            seen.add(key)
            full = -np.ones((len(means), 2), int)
            full[usable] = np.array(key)
            out.append(full)

    if total <= n:
        for choice in itertools.product(*per_cell):
            add(choice)
    else:
        rng = np.random.default_rng(seed)
        while len(out) < n:
            add([p[rng.integers(len(p))] for p in per_cell])
    return np.array(out).reshape(-1, len(means), 2)


def _pick(means: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """means (..., cells, batches), idx (splits, cells, 2) → a, b of shape (..., splits, cells),
    NaN in cells a split leaves out."""
    m = means[..., None, :, :]  # (..., 1, cells, batches)
    safe = np.where(idx < 0, 0, idx).reshape((1,) * (m.ndim - 3) + idx.shape)
    a = np.take_along_axis(m, safe[..., 0:1], axis=-1)[..., 0]
    b = np.take_along_axis(m, safe[..., 1:2], axis=-1)[..., 0]
    out_of = idx[..., 0] < 0
    return np.where(out_of, np.nan, a), np.where(out_of, np.nan, b)


def differs(a: np.ndarray, b: np.ndarray, rule: str, margin: float, alpha: float = ALPHA) -> np.ndarray:
    """The rule's 'differs' on the last axis (cells), vectorised over the others.
    paired: paired t over cells (stats.paired), p < α and |mean(a − b)| > margin;
    pooled: Welch on the batch means of a against those of b (stats.compare on batch units),
    p < α and |mean(a) − mean(b)| > margin."""
    if rule == "paired":
        d = a - b
        n = np.sum(np.isfinite(d), axis=-1)
        m = np.nanmean(d, axis=-1)
        se = np.nanstd(d, axis=-1, ddof=1) / np.sqrt(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = 2 * sps.t.sf(np.abs(m / se), n - 1)
        return (p < alpha) & (np.abs(m) > margin)
    if rule == "pooled":
        na, nb = np.sum(np.isfinite(a), axis=-1), np.sum(np.isfinite(b), axis=-1)
        va, vb = np.nanvar(a, axis=-1, ddof=1) / na, np.nanvar(b, axis=-1, ddof=1) / nb
        m = np.nanmean(a, axis=-1) - np.nanmean(b, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
            p = 2 * sps.t.sf(np.abs(m / np.sqrt(va + vb)), df)
        return (p < alpha) & (np.abs(m) > margin)
    raise ValueError(f"rule must be 'paired' or 'pooled', got {rule!r}")


def split_rule_counts(means: np.ndarray, rule: str, margin: float, alpha: float = ALPHA,
                      n: int = 200, seed: int = 112, idx: np.ndarray | None = None) -> dict:
    """The rule on every distinct split of `means`: {"k": splits called different, "n": splits,
    "rate"}. `idx`: the splits to use, (splits, cells, 2) batch indices (e.g. a's batch from
    one worker and b's from another, as stats.aa_paired_splits' "across"), else splits(means).
    Needs 3 cells with two batches or more (else n = 0)."""
    idx = splits(means, n, seed) if idx is None else np.asarray(idx)
    if len(idx) == 0 or np.sum(idx[0, :, 0] >= 0) < 3:
        return {"k": 0, "n": 0, "rate": float("nan")}
    a, b = _pick(means, idx)
    hit = differs(a, b, rule, margin, alpha)
    return {"k": int(hit.sum()), "n": len(idx), "rate": float(hit.mean())}


def null_model(means: np.ndarray) -> tuple[np.ndarray, float]:
    """The null model of the A/A reference: (cells, 1) cell means and the batch noise σ.
    σ is the pooled within-cell SD. The cell means are the observed ones shrunk towards their
    grand mean so that their spread is the between-cell variance the data show net of the
    noise in each observed mean: τ² = max(0, var(cell means) − σ² · mean(1 / batches per
    cell)) (the one-way random-effects method of moments; Searle, Casella & McCulloch 1992,
    §3.5). Without the shrinkage the null data carry σ²/batches of spurious cell variance,
    which only the pooled rule sees (it widens Welch's interval), and a calibrated pooled
    rule was flagged in 28 % of null studies of 12 cells × 4 batches (tests/test_aa.py)."""
    ok = np.isfinite(means)
    counts = ok.sum(axis=1)
    has = counts > 0
    centre = np.where(has, np.nansum(np.where(ok, means, 0), axis=1) / np.where(has, counts, 1), np.nan)
    dof = ok.sum() - has.sum()
    resid = (means - centre[:, None])[ok]
    sigma = math.sqrt(np.sum(resid ** 2) / dof) if dof > 0 else 0.0
    if has.sum() >= 2:
        grand = float(np.mean(centre[has]))
        spread = float(np.var(centre[has], ddof=1))
        tau2 = max(0.0, spread - sigma ** 2 * float(np.mean(1 / counts[has])))
        scale = math.sqrt(tau2 / spread) if spread > 0 else 0.0
        centre = np.where(has, grand + (centre - grand) * scale, np.nan)
    return centre[:, None], sigma


def reference(means: np.ndarray, rule: str, margin: float, alpha: float = ALPHA, n: int = 200,
              sims: int = 2000, seed: int = 112, idx: np.ndarray | None = None) -> dict:
    """The A/A count with its own null reference: k of n distinct splits called different
    (split_rule_counts), against the law of that count over `sims` null data sets of the same
    shape, split the same way (module docstring; null_model). Returns split_rule_counts' keys plus
    "null_mean_rate" (what a calibrated rule averages here: ≈ α for the paired t),
    "null_q95" (the 95th percentile of the null count), "p_above" = (1 + #{null ≥ k}) / (1 + sims)
    (Monte Carlo p-value, Davison & Hinkley 1997, eq. 4.11) and "flagged" (p_above < α): a
    rule is flagged only when its count is unusual for its own splits."""
    idx = splits(means, n, seed) if idx is None else np.asarray(idx)
    out = split_rule_counts(means, rule, margin, alpha, idx=idx)
    nan = float("nan")
    if not out["n"]:
        return {**out, "null_mean_rate": nan, "null_q95": nan, "p_above": nan, "flagged": False}
    centre, sigma = null_model(means)
    ok = np.isfinite(means)
    rng = np.random.default_rng(seed + 1)
    counts = []
    for chunk in np.array_split(np.arange(sims), max(1, sims * idx.size // 2_000_000)):
        fake = np.where(ok, centre + sigma * rng.standard_normal((len(chunk), *means.shape)), np.nan)
        a, b = _pick(fake, idx)
        counts.append(differs(a, b, rule, margin, alpha).sum(axis=-1))
    null = np.concatenate(counts)
    p = (1 + np.sum(null >= out["k"])) / (1 + sims)
    return {**out, "null_mean_rate": float(null.mean() / out["n"]), "null_q95": float(np.quantile(null, 0.95)),
            "p_above": float(p), "flagged": bool(p < alpha)}


# --- the A/A check of a sequential study, with the same stopping ---------------------------

def sequential_design(min_rounds: int, max_rounds: int, rounds: int) -> tuple[int, int, int]:
    """The A/A looks of a sequential study (DESIGN.md, "Stopping": the A/A check applies the
    same stopping). An A/A look needs two batches of one agent in every cell, and a round gives
    one, so A/A look j holds rounds 2j − 1 and 2j: the A/A design has max_rounds // 2 looks,
    looked at from max(1, min_rounds // 2), and a study stopped after `rounds` rounds stops its
    A/A after rounds // 2 looks. Returns (min_looks, max_looks, looks)."""
    return max(1, min_rounds // 2), max_rounds // 2, rounds // 2


def sequential_splits(cells: int, looks: int, n: int = 200, seed: int = 112) -> np.ndarray:
    """Distinct A/A splits of a sequential study: (splits, looks, cells) orientations ±1; +1
    poses the earlier round of a look's pair as a, −1 the later. A split and its mirror (every
    sign flipped) are one test, so the first sign is +1. All of them where there are at most
    n, else n distinct seeded draws."""
    bits = looks * cells - 1
    if bits < 0:
        return np.empty((0, looks, cells), int)
    if bits < 31 and 2 ** bits <= n:
        rest = np.array(list(itertools.product((1, -1), repeat=bits)), int).reshape(-1, bits)
    else:
        rng = np.random.default_rng(seed)
        seen: set[bytes] = set()
        rows = []
        while len(rows) < n:
            r = rng.choice((1, -1), bits)
            if r.tobytes() not in seen:
                seen.add(r.tobytes())
                rows.append(r)
        rest = np.array(rows, int)
    return np.concatenate([np.ones((len(rest), 1), int), rest], axis=1).reshape(-1, looks, cells)


def _sequential_differs(pairs: np.ndarray, signs: np.ndarray, rule: str, margin: float, alpha: float,
                        min_looks: int, max_looks: int, cells: int) -> np.ndarray:
    """pairs (..., looks, cells, 2): each look's two batch means per cell; signs (splits, looks,
    cells). The sequential rule (analysis/sequential.py: the same boundaries, spending and
    stickiness as the study's) on every split, True where its verdict at the last look is
    'differs'. Shape (..., splits)."""
    s = signs.reshape((1,) * (pairs.ndim - 3) + signs.shape)
    first, second = pairs[..., None, :, :, 0], pairs[..., None, :, :, 1]  # (..., 1, looks, cells)
    a = np.where(s > 0, first, second)
    b = np.where(s > 0, second, first)
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule == "paired":
            d = a - b
            seen = np.cumsum(np.isfinite(d), axis=-2)
            cum = np.nancumsum(d, axis=-2) / np.where(seen > 0, seen, np.nan)
            n = np.sum(np.isfinite(cum), axis=-1)
            est = np.nanmean(cum, axis=-1)
            se = np.nanstd(cum, axis=-1, ddof=1) / np.sqrt(n)
            crit = sequential.critical_values(max_looks, min_looks, alpha, cells=cells)
            cd, ce = crit["t_differs"].to_numpy(), crit["t_equivalent"].to_numpy()
        elif rule == "pooled":
            def acc(x):
                ok = np.isfinite(x)
                k = np.cumsum(ok.sum(-1), axis=-1)
                s1 = np.cumsum(np.where(ok, x, 0).sum(-1), axis=-1)
                s2 = np.cumsum(np.where(ok, x * x, 0).sum(-1), axis=-1)
                mean = s1 / k
                return mean, (s2 - k * mean ** 2) / (k - 1) / k, k
            ma, va, na = acc(a)
            mb, vb, nb = acc(b)
            est, se = ma - mb, np.sqrt(va + vb)
            df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
            crit = sequential.critical_values(max_looks, min_looks, alpha)
            z_d, z_e = crit["z_differs"].to_numpy(), crit["z_equivalent"].to_numpy()
        else:
            raise ValueError(f"rule must be 'paired' or 'pooled', got {rule!r}")
        est, se = est[..., min_looks - 1:], se[..., min_looks - 1:]  # the looks looked at
        now = est.shape[-1]
        if rule == "paired":
            cd, ce = cd[:now], ce[:now]
        else:  # each z boundary carried to Welch's t by its nominal level, df of its look
            df = df[..., min_looks - 1:]
            cd, ce = sps.t.isf(sps.norm.sf(z_d[:now]), df), sps.t.isf(sps.norm.sf(z_e[:now]), df)
        codes = sequential.verdicts(est, se, None, margin, cd, ce)  # (..., splits, looks looked at)
    decided = codes != 0
    first = np.argmax(decided, axis=-1)
    final = np.take_along_axis(codes, first[..., None], axis=-1)[..., 0]
    return np.where(decided.any(axis=-1), final, 0) == 1


def sequential_reference(means: np.ndarray, rule: str, margin: float, alpha: float = ALPHA,
                         min_rounds: int = 2, max_rounds: int = 2, n: int = 200, sims: int = 2000,
                         seed: int = 112, signs: np.ndarray | None = None) -> dict:
    """The A/A check of a sequential study with the same stopping, against its own null
    reference. means: (cells, rounds) one agent's baseline batch means, column r − 1 = round r
    (NaN where a round's batch is missing), rounds = the rounds the study ran before it stopped.
    Each split poses, in every look's pair of rounds (sequential_design) and every cell, one
    batch as a and the other as b (sequential_splits), and runs the sequential rule on them:
    a split counts when the rule's verdict, sticky from its first decided look and stopped
    after the study's looks, is 'differs'. The count k of n splits is set against its law over
    `sims` null data sets of the same shape (each cell its mean, N(0, σ²) batch noise, σ the
    pooled within-cell SD; as `reference`). `signs`: the splits to use, (splits, looks, cells)
    ±1 over the cells with a full pair, else sequential_splits. Returns reference's keys plus "looks"
    (n = 0: too few rounds for one A/A look or fewer than 3 cells with a full pair)."""
    lo, hi, looks = sequential_design(min_rounds, max_rounds, means.shape[1])
    nan = float("nan")
    empty = {"k": 0, "n": 0, "rate": nan, "null_mean_rate": nan, "null_q95": nan, "p_above": nan,
             "flagged": False, "looks": looks}
    if hi < 1 or looks < lo:
        return empty
    pairs_of = lambda m: m[..., :2 * looks].reshape(*m.shape[:-1], looks, 2)  # noqa: E731 (cells, looks, 2)
    full = np.isfinite(pairs_of(means)).all(axis=-1)  # (cells, looks)
    usable = np.flatnonzero(full.any(axis=1))
    if len(usable) < 3:
        return empty
    m = means[usable]
    signs = sequential_splits(len(usable), looks, n, seed) if signs is None else np.asarray(signs)
    observed = _sequential_differs(np.swapaxes(pairs_of(m), 0, 1), signs, rule, margin, alpha, lo, hi,
                                   len(usable))
    k = int(observed.sum())
    ok = np.isfinite(m)
    centre, sigma = null_model(m)
    rng = np.random.default_rng(seed + 1)
    counts = []
    for chunk in np.array_split(np.arange(sims), max(1, sims * signs.size // 2_000_000)):
        fake = np.where(ok, centre + sigma * rng.standard_normal((len(chunk), *m.shape)), np.nan)
        counts.append(_sequential_differs(np.swapaxes(pairs_of(fake), 1, 2), signs, rule, margin, alpha,
                                          lo, hi, len(usable)).sum(axis=-1))
    null = np.concatenate(counts)
    p = (1 + np.sum(null >= k)) / (1 + sims)
    return {"k": k, "n": len(signs), "rate": k / len(signs), "null_mean_rate": float(null.mean() / len(signs)),
            "null_q95": float(np.quantile(null, 0.95)), "p_above": float(p), "flagged": bool(p < alpha),
            "looks": looks}
