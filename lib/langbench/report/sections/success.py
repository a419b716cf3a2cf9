"""Optimization success: rates on the same configs, best configs, spread, by factor, overlap (seed §5–6)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import metrics, stats
from langbench.analysis.findings import Run, p_text
from langbench.report.sections import Section


SUCCESS_RULES = (("naive_success", "naive (delta > 0)"),
                 ("significant_success", "significant (95% CI of the delta above 0)"),
                 ("holm_success", "significant after Holm across configs"))


def success_table(run: Run, d: pd.DataFrame) -> pd.DataFrame:
    """Per rule: each language's successes over every config of the run (a config whose delta
    could not be computed counts as failed, not as missing), McNemar's exact test on the configs
    where only one language succeeded, and the seed's naive Fisher / chi-square (Yates) view."""
    configs = sorted(run.df["config_id"].unique())
    per = {a: d[d["agent"] == a].set_index("config_id").reindex(configs) for a in ("rust", "python")}
    rows = []
    for kind, label in SUCCESS_RULES:
        ok = {a: per[a][kind].astype("boolean").fillna(False).astype(bool).to_numpy() for a in per}
        mc = stats.mcnemar_paired(ok["rust"], ok["python"])
        naive = stats.compare_rates(int(ok["rust"].sum()), len(configs), int(ok["python"].sum()), len(configs))
        rows.append({"rule": label, "configs": len(configs),
                     "rust": int(ok["rust"].sum()), "python": int(ok["python"].sum()),
                     "rust_failed": int(per["rust"]["delta_pct"].isna().sum()),
                     "python_failed": int(per["python"]["delta_pct"].isna().sum()),
                     "rust_only": mc["a_only"], "python_only": mc["b_only"], "mcnemar_p": mc["mcnemar_p"],
                     "fisher_p": naive["fisher_p"], "chi2_yates_p": naive["chi2_p"],
                     "odds_ratio": naive["odds_ratio"]})
    return pd.DataFrame(rows)


def success_rates(run: Run) -> tuple[Section, pd.DataFrame]:
    d = stats.deltas(run.warm, "throughput_tps", run.factors, run.alpha)
    t = success_table(run, d)
    n = len(t) and int(t.iloc[0]["configs"])

    def one(r) -> str:
        verdict = "different" if r.mcnemar_p < run.alpha else "not shown different"
        return (f"{r.rule}: Rust {r.rust}/{n} vs Python {r.python}/{n}; {r.rust_only} configs succeed for "
                f"Rust only and {r.python_only} for Python only, McNemar exact {p_text(r.mcnemar_p)} "
                f"({verdict} at α = {run.alpha}; the seed's unpaired view: Fisher {p_text(r.fisher_p)}, "
                f"chi-square (Yates) {p_text(r.chi2_yates_p)})")
    first = t.iloc[0]
    failed = (f"Both languages are scored on the same {n} configs; configs without a delta count as "
              f"failures (Rust {first['rust_failed']}, Python {first['python_failed']}). ")
    seed = stats.compare_rates(13, 18, 7, 18)
    sentence = (failed + "; ".join(one(r) for r in t.itertuples()) + ". For comparison, the seed's "
                f"13/18 vs 7/18 gives Fisher {p_text(seed['fisher_p'])}, not p < 0.01 (and, being the "
                "same configs, it needed McNemar's test on the discordant ones, which the seed does not give).")
    return Section("5.1 Optimization success rate by language", sentence, t), d.dropna(subset=["delta_pct"])


def best_configs(d: pd.DataFrame, factors: list[str]) -> Section:
    idx = d.groupby("agent")["delta_pct"].idxmax()
    t = d.loc[idx, ["agent", "config_id", *factors, "delta_pct", "delta_ci_low_pct", "delta_ci_high_pct", "significant_success"]]
    parts = [f"{r.agent}: {r.config_id} {r.delta_pct:+.2f}% [{r.delta_ci_low_pct:+.2f}, {r.delta_ci_high_pct:+.2f}]"
             f" ({'CI excludes 0' if r.significant_success else 'CI includes 0'})" for r in t.itertuples()]
    return Section("5.2 Best config per language", "; ".join(parts) + ".", t)


def delta_variance(d: pd.DataFrame) -> Section:
    groups = {a: g["delta_pct"].to_numpy() for a, g in d.groupby("agent")}
    t = pd.DataFrame([{"agent": a, "delta_std_pct": np.std(v, ddof=1), "configs": len(v)} for a, v in groups.items()])
    ev = stats.equal_variance(groups)
    if np.isnan(ev["brown_forsythe_p"]):
        fewest = min((len(v) for v in groups.values()), default=0)
        return Section("5.3 Variance in improvements", f"No spread to compare: a language has {fewest} configs "
                       "with a delta, and the Brown–Forsythe test needs 2 in each (a delta needs "
                       f"{stats.DELTA_MIN_UNITS} warm runs in both modes).", t)
    sentence = ("Spread of the deltas: " + ", ".join(f"{r.agent} {r.delta_std_pct:.2f}%" for r in t.itertuples())
                + f"; Brown–Forsythe {p_text(ev['brown_forsythe_p'])} "
                f"({'different' if ev['brown_forsythe_p'] < stats.ALPHA else 'not significantly different'}).")
    return Section("5.3 Variance in improvements", sentence, t)


def success_by(d: pd.DataFrame, factor: str, alpha: float = stats.ALPHA) -> Section:
    """Naive success per level of `factor`: the same configs in both languages, so McNemar's
    exact test per level, Holm-adjusted across the levels."""
    rows = []
    for level, g in d.groupby(factor):
        w = g.pivot_table(index="config_id", columns="agent", values="naive_success", aggfunc="first")
        w = w.reindex(columns=["rust", "python"]).astype("boolean").fillna(False).astype(bool)
        mc = stats.mcnemar_paired(w["rust"], w["python"])
        rows.append({factor: level, "configs": len(w), "rust_success_pct": 100 * w["rust"].mean(),
                     "python_success_pct": 100 * w["python"].mean(), "rust_only": mc["a_only"],
                     "python_only": mc["b_only"], "mcnemar_p": mc["mcnemar_p"]})
    if not rows:  # no config has a delta: nothing succeeded or failed
        t = pd.DataFrame(columns=[factor, "configs", "rust_success_pct", "python_success_pct", "rust_only",
                                  "python_only", "mcnemar_p", "mcnemar_p_holm", "winner"])
        return Section(f"6 Success rate by {factor}", f"By {factor}: no config has a delta (a delta needs "
                       f"{stats.DELTA_MIN_UNITS} warm runs in both modes).", t)
    t = pd.DataFrame(rows)
    t["mcnemar_p_holm"] = stats.holm(t["mcnemar_p"])
    t["winner"] = np.where(~(t["mcnemar_p_holm"] < alpha), "inconclusive",
                           np.where(t["rust_only"] > t["python_only"], "rust", "python"))
    ties = (t["winner"] == "inconclusive").sum()
    sentence = (f"By {factor}: {ties} of {len(t)} levels show no significant difference in naive success "
                f"between the languages (McNemar's exact test on the same configs, Holm across the levels, "
                f"α = {alpha}); smallest adjusted p: {p_text(t['mcnemar_p_holm'].min())}.")
    return Section(f"6 Success rate by {factor}", sentence, t)


def overlap(d: pd.DataFrame, factors: list[str]) -> Section:
    if d.empty:
        return Section("6.4 Configuration overlap", "No config has a delta (a delta needs "
                       f"{stats.DELTA_MIN_UNITS} warm runs in both modes): no overlap to show.",
                       pd.DataFrame(columns=["config_id", *factors]))
    w = metrics.labelled(d, factors).pivot_table(index=["config_id", *factors], columns="agent",
                                                 values="naive_success", aggfunc="first")
    both = w[(w.get("python") == True) & (w.get("rust") == True)].reset_index()  # noqa: E712
    sig = d.pivot_table(index="config_id", columns="agent", values="significant_success", aggfunc="first")
    both_sig = int(((sig.get("python") == True) & (sig.get("rust") == True)).sum())  # noqa: E712
    sentence = (f"{len(both)} configs improve in both languages by the naive rule, {both_sig} by the CI rule.")
    return Section("6.4 Configuration overlap", sentence, both)
