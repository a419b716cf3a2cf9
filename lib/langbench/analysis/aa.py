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
  under H0 — each cell its observed mean, every batch that mean plus N(0, σ²) noise with σ the
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


def reference(means: np.ndarray, rule: str, margin: float, alpha: float = ALPHA, n: int = 200,
              sims: int = 2000, seed: int = 112, idx: np.ndarray | None = None) -> dict:
    """The A/A count with its own null reference: k of n distinct splits called different
    (split_rule_counts), against the law of that count over `sims` null data sets of the same
    shape, split the same way (module docstring). Returns split_rule_counts' keys plus
    "null_mean_rate" (what a calibrated rule averages here: ≈ α for the paired t),
    "null_q95" (the 95th percentile of the null count), "p_above" = (1 + #{null ≥ k}) / (1 + sims)
    (Monte Carlo p-value, Davison & Hinkley 1997, eq. 4.11) and "flagged" (p_above < α): a
    rule is flagged only when its count is unusual for its own splits."""
    idx = splits(means, n, seed) if idx is None else np.asarray(idx)
    out = split_rule_counts(means, rule, margin, alpha, idx=idx)
    nan = float("nan")
    if not out["n"]:
        return {**out, "null_mean_rate": nan, "null_q95": nan, "p_above": nan, "flagged": False}
    ok = np.isfinite(means)
    centre = np.nanmean(means, axis=1, keepdims=True)
    resid = (means - centre)[ok]
    dof = ok.sum() - np.sum(ok.any(axis=1))
    sigma = math.sqrt(np.sum(resid ** 2) / dof) if dof > 0 else 0.0
    rng = np.random.default_rng(seed + 1)
    counts = []
    for chunk in np.array_split(np.arange(sims), max(1, sims * idx.size // 2_000_000)):
        fake = centre + sigma * rng.standard_normal((len(chunk), *means.shape))
        fake = np.where(ok, fake, np.nan)
        a, b = _pick(fake, idx)
        counts.append(differs(a, b, rule, margin, alpha).sum(axis=-1))
    null = np.concatenate(counts)
    p = (1 + np.sum(null >= out["k"])) / (1 + sims)
    return {**out, "null_mean_rate": float(null.mean() / out["n"]), "null_q95": float(np.quantile(null, 0.95)),
            "p_above": float(p), "flagged": bool(p < alpha)}
