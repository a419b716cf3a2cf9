"""Statistics, from scipy and statsmodels: distributions, language differences, consistency,
success rates, factor models. No hand-written formulas but Holm's step-down (`holm` says why;
tested equal to statsmodels')."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.meta_analysis import effectsize_smd
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_ind, ttost_paired

ALPHA = 0.05
BOOT = 2000


def _cv(x, axis=-1):
    return sps.variation(x, axis=axis, ddof=1) * 100


def _boot_ci(x: np.ndarray, statistic, seed: int = 0) -> tuple[float, float]:
    if len(x) < 3 or np.ptp(x) == 0:
        v = float(statistic(x, axis=-1)) if len(x) >= 2 else float("nan")
        return (v, v)
    res = sps.bootstrap((x,), statistic, n_resamples=BOOT, confidence_level=0.95,
                        method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(values) -> tuple[int, float, float, float]:
    """(n, mean, bootstrap 95 % CI low, high) of the finite values: describe's mean CI alone,
    without the CV's bootstrap and scipy's moments (which warn on nearly constant values)."""
    x = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return 0, float("nan"), float("nan"), float("nan")
    lo, hi = _boot_ci(x, np.mean)
    return len(x), float(x.mean()), lo, hi


def describe(values) -> dict:
    """n, mean, median, min, max, range, std, CV %, quartiles, IQR, bootstrap 95% CIs."""
    x = np.asarray(pd.Series(values).dropna(), dtype=float)
    if len(x) == 0:
        return {"n": 0}
    d = sps.describe(x, ddof=1) if len(x) > 1 else None
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    std = float(np.sqrt(d.variance)) if d else float("nan")
    mean_ci = _boot_ci(x, np.mean)
    cv_ci = _boot_ci(x, _cv)
    return {"n": len(x), "mean": float(x.mean()), "median": float(med), "min": float(x.min()),
            "max": float(x.max()), "range": float(np.ptp(x)), "std": std,
            "cv_pct": float(_cv(x)) if len(x) > 1 else float("nan"),
            "q1": float(q1), "q3": float(q3), "iqr": float(sps.iqr(x)),
            "mean_ci_low": mean_ci[0], "mean_ci_high": mean_ci[1],
            "cv_ci_low": cv_ci[0], "cv_ci_high": cv_ci[1]}


def describe_by(df: pd.DataFrame, value: str, by: list[str]) -> pd.DataFrame:
    return pd.DataFrame({k if isinstance(k, tuple) else (k,): describe(g[value])
                         for k, g in df.groupby(by)}).T.rename_axis(by).reset_index()


@dataclass
class Comparison:
    """a vs b on one metric: what the tests say, and the verdict they allow."""
    metric: str
    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float  # mean_a − mean_b
    diff_ci_low: float
    diff_ci_high: float
    welch_t: float
    welch_p: float
    mw_u: float
    mw_p: float
    hedges_g: float
    margin: float  # equivalence margin, absolute, ± around 0, fixed before the run
    tost_p: float
    verdict: str  # differs: "<a> higher" / "<b> higher"; "equivalent"; "inconclusive"

    def as_dict(self) -> dict:
        return asdict(self)


def compare(a, b, metric: str, names=("a", "b"), margin_rel: float = 0.02,
            alpha: float = ALPHA, margin_abs: float | None = None) -> Comparison:
    """Welch t, Mann–Whitney U, Hedges' g, and TOST within the margin (margin_abs, else
    ±margin_rel × mean(b)). Three verdicts: differs ("<a> higher" / "<b> higher": Welch
    significant and the difference beyond the margin), "equivalent" (TOST within the margin),
    "inconclusive" (neither: never a tie)."""
    x = np.asarray(pd.Series(a).dropna(), dtype=float)
    y = np.asarray(pd.Series(b).dropna(), dtype=float)
    nan = float("nan")
    if len(x) < 2 or len(y) < 2:
        return Comparison(metric, *names, len(x), len(y), nan, nan, nan, nan, nan, nan, nan,
                          nan, nan, nan, nan, nan, "not enough data")
    welch = sps.ttest_ind(x, y, equal_var=False)
    mw = sps.mannwhitneyu(x, y, alternative="two-sided")
    g, _ = effectsize_smd(x.mean(), x.std(ddof=1), len(x), y.mean(), y.std(ddof=1), len(y))
    ci = CompareMeans(DescrStatsW(x), DescrStatsW(y)).tconfint_diff(alpha=alpha, usevar="unequal")
    margin = float(margin_abs) if margin_abs is not None else float(abs(margin_rel * y.mean()))
    tost_p = ttost_ind(x, y, -margin, margin, usevar="unequal")[0] if margin > 0 else nan
    if welch.pvalue < alpha and abs(x.mean() - y.mean()) > margin:
        verdict = f"{names[0]} higher" if x.mean() > y.mean() else f"{names[1]} higher"
    elif tost_p < alpha:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return Comparison(metric, names[0], names[1], len(x), len(y), float(x.mean()), float(y.mean()),
                      float(x.mean() - y.mean()), float(ci[0]), float(ci[1]), float(welch.statistic),
                      float(welch.pvalue), float(mw.statistic), float(mw.pvalue), float(g), margin,
                      float(tost_p), verdict)


def equal_variance(groups: dict[str, np.ndarray]) -> dict:
    """Brown–Forsythe (Levene centred on the median) and classic Levene; NaN statistics and
    p-values where fewer than two groups have two values or more (nothing to test)."""
    data = [np.asarray(pd.Series(v).dropna(), dtype=float) for v in groups.values()]
    if len(data) < 2 or any(len(x) < 2 for x in data):
        return {"brown_forsythe_W": np.nan, "brown_forsythe_p": np.nan, "levene_W": np.nan, "levene_p": np.nan}
    bf = sps.levene(*data, center="median")
    lev = sps.levene(*data, center="mean")
    return {"brown_forsythe_W": float(bf.statistic), "brown_forsythe_p": float(bf.pvalue),
            "levene_W": float(lev.statistic), "levene_p": float(lev.pvalue)}


def units(groups: list[pd.DataFrame], value: str) -> tuple[list[np.ndarray], str]:
    """The independent units of each group: its batch means when every group has two batches
    or more (runs in one agent process share a load and a moment), else its runs."""
    if all("batch_id" in g and g["batch_id"].nunique() >= 2 for g in groups):
        return [g.groupby("batch_id")[value].mean().dropna().to_numpy(float) for g in groups], "batch"
    return [g[value].dropna().to_numpy(float) for g in groups], "run"


# A delta (deltas) needs this many units (runs, or batch means) in each mode: its Welch CI needs a variance.
DELTA_MIN_UNITS = 2


def deltas(df: pd.DataFrame, value: str, factors: list[str], alpha: float = ALPHA) -> pd.DataFrame:
    """Optimization delta per agent × config: (chimera − baseline) / baseline of the means, with
    the Welch 95% CI of chimera − baseline scaled the same way. `naive_success` is the seed's
    delta > 0; `significant_success` needs the CI above 0."""
    rows = []
    for (agent, config_id), g in df.groupby(["agent", "config_id"]):
        (base, chim), unit = units([g[g["mode"] == "baseline"], g[g["mode"] == "chimera"]], value)
        row = {"agent": agent, "config_id": config_id, "unit": unit,
               **{f: _sent(g, f) for f in factors}, "n_baseline": len(base), "n_chimera": len(chim)}
        if len(base) >= DELTA_MIN_UNITS and len(chim) >= DELTA_MIN_UNITS:
            lo, hi = CompareMeans(DescrStatsW(chim), DescrStatsW(base)).tconfint_diff(
                alpha=alpha, usevar="unequal")
            bm = base.mean()
            row.update(baseline_mean=bm, chimera_mean=chim.mean(),
                       welch_p=float(sps.ttest_ind(chim, base, equal_var=False).pvalue),
                       delta_pct=100 * (chim.mean() - bm) / bm,
                       delta_ci_low_pct=100 * lo / bm, delta_ci_high_pct=100 * hi / bm)
        rows.append(row)
    out = pd.DataFrame(rows)
    if "delta_pct" not in out:
        out["delta_pct"] = np.nan
        out["delta_ci_low_pct"] = out["delta_ci_high_pct"] = np.nan
    out["naive_success"] = out["delta_pct"] > 0
    out["significant_success"] = out["delta_ci_low_pct"] > 0
    out["significant_loss"] = out["delta_ci_high_pct"] < 0
    # Holm across the configs of each agent: one family of per-config tests
    out["welch_p_holm"] = np.nan
    if "welch_p" in out:
        for _, idx in out.dropna(subset=["welch_p"]).groupby("agent").groups.items():
            out.loc[idx, "welch_p_holm"] = holm(out.loc[idx, "welch_p"])
    out["holm_success"] = out["naive_success"] & (out["welch_p_holm"] < alpha)
    return out


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, NaN kept as NaN; shape of `pvalues`.

    Holm (1979), "A simple sequentially rejective multiple test procedure", Scand. J. Statist.
    6: 65–70: with the m finite p-values sorted, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1)
    p_(j)). The same numbers as statsmodels' multipletests(method="holm") (tests/test_stats.py
    checks it), without the full gc.collect() that function runs on every call: about 90 ms
    each in a notebook kernel's heap, and a report makes dozens of these calls."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        finite = p[ok]
        order = np.argsort(finite, kind="stable")
        m = finite.size
        stepped = np.maximum.accumulate(finite[order] * np.arange(m, 0, -1))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
        out[ok] = adjusted
    return out


def mcnemar_paired(success_a, success_b) -> dict:
    """Two success rates on the same items (configs): McNemar's exact test on the discordant
    pairs. `success_*` are booleans aligned item by item; a failed item counts as no success."""
    a, b = np.asarray(success_a, dtype=bool), np.asarray(success_b, dtype=bool)
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    res = mcnemar(table, exact=True)
    return {"both": int(table[0, 0]), "a_only": int(table[0, 1]), "b_only": int(table[1, 0]),
            "neither": int(table[1, 1]), "mcnemar_p": float(res.pvalue)}


def _sent(cell: pd.DataFrame, factor: str):
    """The value of `factor` a cell's chimera sent (its baseline rows sent Ollama's default)."""
    values = cell.loc[cell["mode"] == "chimera", factor].dropna() if factor in cell else ()
    return values.iloc[0] if len(values) else None


def compare_rates(success_a: int, n_a: int, success_b: int, n_b: int) -> dict:
    """Two success rates: Fisher's exact test (odds ratio) and chi-square with Yates' correction."""
    table = np.array([[success_a, n_a - success_a], [success_b, n_b - success_b]])
    fisher = sps.fisher_exact(table)
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        chi2, chi_p = float("nan"), float("nan")
    else:
        chi2, chi_p, _, _ = sps.chi2_contingency(table, correction=True)
    return {"a": f"{success_a}/{n_a}", "b": f"{success_b}/{n_b}",
            "odds_ratio": float(fisher.statistic), "fisher_p": float(fisher.pvalue),
            "chi2_yates": float(chi2), "chi2_p": float(chi_p)}


def factor_anova(df: pd.DataFrame, value: str, factors: list[str]) -> tuple[pd.DataFrame, float]:
    """OLS of `value` on agent × mode plus every matrix factor, the factors nested in mode:
    baseline rows sent none of them (Ollama's defaults), so each factor enters only through the
    chimera rows, as treatment contrasts against its first level (its columns are 0 on baseline
    rows; the mode term holds baseline vs chimera at the first levels). Type-II ANOVA.
    Returns the ANOVA table (with partial eta²) and the model's R²."""
    data = df[[value, "agent", "mode", *factors]].dropna(subset=[value, "agent", "mode"]).copy()
    chim = data["mode"] == "chimera"
    terms = ["C(agent) * C(mode)"]
    for f in factors:
        levels = [v.item() if isinstance(v, np.generic) else v for v in sorted(data.loc[chim, f].dropna().unique())]
        if len(levels) < 2:
            continue
        col = f"{f}_in_chimera"  # first level on baseline rows: zero in every contrast of f
        data[col] = np.where(chim, data[f], levels[0])
        data = data[data[col].notna()]
        terms.append(f"C({col}, levels={[*levels]!r})")
    model = smf.ols(f"{value} ~ {' + '.join(terms)}", data=data).fit()
    table = anova_lm(model, typ=2)
    table.index = [re.sub(r"C\((\w+)_in_chimera, levels=.*\)", r"C(\1) within chimera", i) for i in table.index]
    resid = table.loc["Residual", "sum_sq"]
    table["partial_eta_sq"] = table["sum_sq"] / (table["sum_sq"] + resid)
    table.loc["Residual", "partial_eta_sq"] = np.nan
    return table, float(model.rsquared)


def drift(df: pd.DataFrame, value: str) -> tuple[pd.DataFrame, dict | None]:
    """Per-agent linear trends of `value` over `order`, and one OLS with agent × mode terms
    and order × agent, order × mode slopes: the common slope and F tests of whether the slope
    differs by agent and by mode."""
    rows = []
    for agent, g in df.groupby("agent"):
        if g["order"].nunique() > 1:
            res = sps.linregress(g["order"], g[value])
            rows.append({"agent": agent, "slope_tps_per_batch": res.slope, "p": res.pvalue, "r": res.rvalue})
    t = pd.DataFrame(rows)
    data = df[[value, "order", "agent", "mode"]].dropna()
    if data["order"].nunique() < 3 or data["agent"].nunique() < 1:
        return t, None
    cells = [f"C({f})" for f in ("agent", "mode") if data[f].nunique() > 1]
    common = " + ".join(["order", *cells] + ([":".join(cells)] if len(cells) == 2 else []))
    shared = smf.ols(f"{value} ~ {common}", data=data).fit()  # one slope for every agent × mode cell
    full = smf.ols(f"{value} ~ {common}" + "".join(f" + order:{c}" for c in cells), data=data).fit()
    table = anova_lm(full, typ=2)
    nan = float("nan")
    return t, {"slope": float(shared.params["order"]), "slope_p": float(shared.pvalues["order"]),
               "by_agent_p": float(table["PR(>F)"].get("order:C(agent)", nan)),
               "by_mode_p": float(table["PR(>F)"].get("order:C(mode)", nan))}


# --- A/A: each decision rule applied to identical treatments ------------------------------------

def aa_delta_pairs(df: pd.DataFrame, value: str, factors: list[str], alpha: float = ALPHA,
                   seed: int = 112) -> pd.DataFrame:
    """The per-config delta rule (deltas) applied to baseline against baseline: per agent, the
    baseline cells of a seeded random pairing of configs, one posing as the chimera of the
    other. Every treatment is Ollama's defaults, so a 'differs' is a false positive."""
    base = df[df["mode"] == "baseline"]
    rng = np.random.default_rng(seed)
    fakes = []
    for agent, g in base.groupby("agent"):
        configs = sorted(g["config_id"].unique())
        rng.shuffle(configs)
        for a, b in zip(configs[0::2], configs[1::2]):
            fakes.append(g[g["config_id"] == a])
            fakes.append(g[g["config_id"] == b].assign(mode="chimera", config_id=a))
    if not fakes:
        return pd.DataFrame(columns=["agent", "config_id", "differs", "significant_success", "significant_loss"])
    d = deltas(pd.concat(fakes), value, [f for f in factors if f in base], alpha)
    d = d.dropna(subset=["delta_pct"])
    d["differs"] = d["significant_success"] | d["significant_loss"]
    return d


def _half_splits(items: np.ndarray, splits: int, rng: np.random.Generator) -> list[frozenset]:
    """Distinct ways to split `items` in two halves (a split and its mirror are one test): all
    of them where there are at most `splits`, else `splits` distinct seeded draws. Drawing the
    same split twice would count one test twice and make the A/A rate look more precise than it
    is (4 configs have only 3 distinct splits: 100 draws of them are 3 tests, not 100)."""
    import itertools
    import math
    n, k = len(items), len(items) // 2
    total = math.comb(n, k) // (2 if 2 * k == n else 1)
    if total <= splits:
        out, seen = [], set()
        for combo in itertools.combinations(items, k):
            key = frozenset(combo)
            mirror = frozenset(set(items) - key)
            if key not in seen and mirror not in seen:
                seen.add(key)
                out.append(key)
        return out
    out, seen = [], set()
    while len(out) < splits:
        key = frozenset(rng.choice(items, k, replace=False))
        mirror = frozenset(set(items) - key)
        if key not in seen and mirror not in seen:
            seen.add(key)
            out.append(key)
    return out


def aa_language_splits(df: pd.DataFrame, compare_fn, splits: int = 100,
                       seed: int = 112) -> pd.DataFrame:
    """The pooled language rule (compare_fn(frame_a, frame_b) → Comparison) applied to one agent
    against itself: its baseline runs split by half of the configs, over distinct splits only
    (_half_splits; the splits still share configs, so the binomial noise printed beside the rate
    is optimistic)."""
    base = df[df["mode"] == "baseline"]
    rng = np.random.default_rng(seed)
    rows = []
    for agent, g in base.groupby("agent"):
        configs = np.array(sorted(g["config_id"].unique()))
        if len(configs) < 4:
            continue
        for half in _half_splits(configs, splits, rng):
            c = compare_fn(g[g["config_id"].isin(half)], g[~g["config_id"].isin(half)])
            rows.append({"agent": agent, "verdict": c.verdict,
                         "differs": c.verdict not in ("equivalent", "inconclusive", "not enough data")})
    return pd.DataFrame(rows)


def aa_paired_splits(df: pd.DataFrame, value: str, margin: float, alpha: float = ALPHA,
                     splits: int = 100, seed: int = 112, pairing: str = "any") -> pd.DataFrame:
    """The paired language rule (paired) applied to one agent against itself: in every baseline
    cell with two batches or more, one batch drawn at random poses as language a and another as
    language b, and the per-cell batch means are compared paired; up to `splits` distinct seeded
    draws (a draw and its mirror, a and b swapped, are one test; they share batches, so the
    binomial noise printed beside the rate is optimistic).
    `pairing` (runs with a `worker` column): "within" draws both batches from one worker,
    "across" poses one worker's batch as a and another worker's as b in every cell (the design
    that would confound language with worker: a worker effect shows as false positives);
    "any" ignores the worker."""
    base = df[df["mode"] == "baseline"]
    rng = np.random.default_rng(seed)
    rows = []
    for agent, g in base.groupby("agent"):
        worker = g["worker"] if pairing != "any" else pd.Series("", index=g.index)
        means = (g.assign(_worker=worker.fillna("")).groupby(["config_id", "batch_id"])
                 .agg(v=(value, "mean"), w=("_worker", "first")).dropna())
        cells = []
        for _, m in means.groupby(level="config_id"):
            v, w = m["v"].to_numpy(float), m["w"].to_numpy()
            if pairing == "within":
                groups = [v[w == k] for k in np.unique(w) if (w == k).sum() >= 2]
            elif pairing == "across":
                groups = [(v, w)] if len(np.unique(w)) >= 2 else []
            else:
                groups = [v] if len(v) >= 2 else []
            if groups:
                cells.append(groups)
        if len(cells) < 3:
            continue
        everyone = sorted(set(means["w"]))
        seen: set = set()
        # how many distinct draws there are (a draw and its mirror as one), where batch means
        # are distinct: once all are seen no further attempt can add one (only "any" and
        # "within"; "across" depends on the workers' order, and tied means have fewer)
        possible = (math.prod(sum(len(v) * (len(v) - 1) for v in c) for c in cells) // 2
                    if pairing != "across" else math.inf)
        for _ in range(50 * splits):  # distinct draws only; fewer where fewer exist
            if len(seen) >= min(splits, possible):
                break
            order = list(rng.permutation(everyone))  # across: a on one worker, b on another, every cell
            pairs = np.array([_draw(rng, c, pairing, order) for c in cells])
            key = tuple(map(tuple, pairs))
            if key in seen or tuple(map(tuple, pairs[:, ::-1])) in seen:
                continue
            seen.add(key)
            p = paired(pairs[:, 0], pairs[:, 1], margin, alpha)
            rows.append({"agent": agent, "verdict": p["verdict"], "differs": p["verdict"] == "differs"})
    return pd.DataFrame(rows)


def _draw(rng, groups: list, pairing: str, order: list) -> np.ndarray:
    """Two batch means of one cell: from one worker's (within), from two workers' (across: the
    first two of `order` that ran the cell, a as the first, so that a worker effect is what a
    design confounding language with worker would see) or any two."""
    if pairing == "across":
        v, w = groups[0]
        first, second = [k for k in order if k in set(w)][:2]
        return np.array([rng.choice(v[w == first]), rng.choice(v[w == second])])
    group = groups[rng.integers(len(groups))]
    return rng.choice(group, 2, replace=False)


def linked(pairs: list[tuple]) -> bool:
    """Whether (worker, cell) pairs join every worker through shared cells (the bipartite
    graph of workers and cells is connected): the condition for worker contrasts to be
    estimable in an additive cell + worker model. True for one worker or none."""
    parent: dict = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for w, c in pairs:
        parent[root(("w", w))] = root(("c", c))
    workers = {root(("w", w)) for w, _ in pairs}
    return len(workers) <= 1


def worker_effect(df: pd.DataFrame, value: str) -> dict:
    """The worker as a block: batch means of `value` modelled as cell (config × mode × agent) +
    worker (OLS, type-II ANOVA). Returns {"workers", "batches", "F", "p", "spread", "linked"}
    where spread is the largest minus the smallest worker effect (in `value`'s units,
    cell-adjusted); F and p are NaN when the data cannot separate a worker term: too few
    batches, or workers not `linked` through shared cells (a cost-first schedule may give
    each worker configs of its own: then a worker's effect and its cells' are one, and no
    test can tell them apart)."""
    nan = float("nan")
    if "worker" not in df or df["worker"].nunique() < 2:
        return {"workers": int(df["worker"].nunique()) if "worker" in df else 1, "batches": 0,
                "F": nan, "p": nan, "spread": nan, "linked": True}
    b = (df.dropna(subset=[value]).groupby(["batch_id", "worker", "config_id", "mode", "agent"])[value]
         .mean().reset_index())
    b["cell"] = b["config_id"].astype(str) + "|" + b["mode"] + "|" + b["agent"]
    out = {"workers": int(b["worker"].nunique()), "batches": len(b), "F": nan, "p": nan, "spread": nan,
           "linked": linked(list(zip(b["worker"], b["cell"])))}
    if not out["linked"] or len(b) <= b["cell"].nunique() + b["worker"].nunique():
        return out
    fit = smf.ols("y ~ C(cell) + C(worker)", data=b.rename(columns={value: "y"})).fit()
    table = anova_lm(fit, typ=2)
    effects = [0.0] + [v for k, v in fit.params.items() if k.startswith("C(worker)")]
    out.update(F=float(table.loc["C(worker)", "F"]), p=float(table.loc["C(worker)", "PR(>F)"]),
               spread=float(max(effects) - min(effects)))
    return out


def rate_against(k: int, n: int, rate: float) -> dict:
    """k of n against a rate: exact binomial test (greater) and the Clopper–Pearson 95% CI."""
    if n == 0:
        return {"k": k, "n": n, "rate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "p_above": float("nan")}
    res = sps.binomtest(k, n, rate, alternative="greater")
    ci = sps.binomtest(k, n, rate).proportion_ci(confidence_level=0.95, method="exact")  # two-sided
    return {"k": k, "n": n, "rate": k / n, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "p_above": float(res.pvalue)}


def paired(a, b, margin: float, alpha: float = ALPHA) -> dict:
    """Per-cell paired comparison (both languages ran the same cells): paired t, Wilcoxon
    signed-rank, TOST within ±margin, and the three-way verdict on mean(a − b)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    nan = float("nan")
    if len(x) < 3:
        return {"cells": len(x), "mean_diff": nan, "ci_low": nan, "ci_high": nan, "t_p": nan,
                "wilcoxon_p": nan, "tost_p": nan, "margin": margin, "verdict": "not enough data"}
    t = sps.ttest_rel(x, y)
    ci = t.confidence_interval(1 - alpha)
    w = sps.wilcoxon(x, y) if np.any(x != y) else None
    tost_p = ttost_paired(x, y, -margin, margin)[0]
    diff = float(np.mean(x - y))
    if t.pvalue < alpha and abs(diff) > margin:
        verdict = "differs"
    elif tost_p < alpha:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    return {"cells": len(x), "mean_diff": diff, "ci_low": float(ci.low), "ci_high": float(ci.high),
            "t_p": float(t.pvalue), "wilcoxon_p": float(w.pvalue) if w else 1.0, "tost_p": float(tost_p),
            "margin": margin, "verdict": verdict}
