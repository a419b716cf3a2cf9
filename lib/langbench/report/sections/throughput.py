"""Throughput by language, the top cells, chimera against baseline (seed §3)."""

from __future__ import annotations

import pandas as pd

from langbench.analysis import stats
from langbench.report import plots
from langbench.analysis.findings import HIGHER, LOWER, Run, by_agent, language_claim, p_text, paired_claim
from langbench.report.sections import Section


def throughput_overall(run: Run) -> Section:
    t = by_agent(run, "throughput_tps")
    _, sentence = language_claim(run, "throughput_tps", "tok/s", HIGHER, label="warm throughput")
    notes = [n for n in [paired_claim(run, "throughput_tps", "tok/s")] if n]
    return Section("3.1–3.2 Throughput by language (warm runs, both modes)", sentence, t,
                   plots.distribution(run.warm, "throughput_tps", "throughput (tok/s)"), notes=notes)


def throughput_top(run: Run, k: int = 5) -> Section:
    s = run.warm.groupby(["agent", "config_id", *run.factors, "mode"], dropna=False)["throughput_tps"].mean()
    t = s.sort_values(ascending=False).head(2 * k).reset_index()
    t.insert(0, "rank", range(1, len(t) + 1))
    top = t.head(k)
    spread = top["throughput_tps"].max() - top["throughput_tps"].min()
    within = run.warm.groupby(["agent", "config_id", "mode"])["throughput_tps"].std().median()
    sentence = (f"The fastest cell is {top.iloc[0]['agent']} at {top.iloc[0]['config_id']} "
                f"({top.iloc[0]['mode']}, {top.iloc[0]['throughput_tps']:.2f} tok/s); of the top {k}, "
                f"{(top['agent'] == 'python').sum()} are Python and {(top['agent'] == 'rust').sum()} Rust. "
                f"The top {k} span {spread:.2f} tok/s, against a median within-cell standard deviation "
                f"of {within:.2f} tok/s: the ranking is {'within' if spread < within else 'wider than'} "
                "run-to-run noise.")
    return Section(f"3.3 Top {2 * k} cells by mean throughput", sentence, t)


def improvement(run: Run, value: str = "throughput_tps", better: str = HIGHER, label: str = "throughput",
                number: str = "") -> Section:
    d = stats.deltas(run.warm, value, run.factors, run.alpha)
    sign = 1 if better == HIGHER else -1
    rows = []
    for agent, g in d.groupby("agent"):
        g = g.dropna(subset=["delta_pct"])
        good = (sign * g["delta_pct"] > 0).sum()
        sig = ((g["delta_ci_low_pct"] > 0) if better == HIGHER else (g["delta_ci_high_pct"] < 0)).sum()
        rows.append({"agent": agent, "configs": len(g), "naive_improved": int(good),
                     "significant_improved": int(sig), "mean_delta_pct": g["delta_pct"].mean(),
                     "best_delta_pct": (g["delta_pct"].max() if better == HIGHER else g["delta_pct"].min()),
                     "worst_delta_pct": (g["delta_pct"].min() if better == HIGHER else g["delta_pct"].max()),
                     "delta_std_pct": g["delta_pct"].std()})
    t = pd.DataFrame(rows)
    aa = stats.aa_delta_pairs(run.warm, value, run.factors, run.alpha)
    side = aa["significant_success"] if better == HIGHER else aa["significant_loss"]
    aa_rate = max(float(side.mean()) if len(aa) else 0.0, run.alpha / 2)  # never below the nominal
    t["aa_rate"] = aa_rate
    t["p_above_aa"] = [stats.rate_against(int(r.significant_improved), int(r.configs), aa_rate)["p_above"]
                       for r in t.itertuples()]
    parts = [f"{r.agent}: {r.naive_improved}/{r.configs} configs improve naively (delta "
             f"{'>' if better == HIGHER else '<'} 0), {r.significant_improved}/{r.configs} with a 95% CI "
             f"that excludes 0 ({'more than' if r.p_above_aa < run.alpha else 'not more than'} the "
             f"{100 * aa_rate:.1f}% that the same rule finds between identical baseline cells, "
             f"{p_text(r.p_above_aa)}), mean delta {r.mean_delta_pct:+.2f}%" for r in t.itertuples()]
    return Section(f"{number} Chimera vs baseline: {label} delta per config".strip(), "; ".join(parts) + ".", t,
                   plots.delta_heatmap(d, run.factors, label, lower_is_better=better == LOWER))
