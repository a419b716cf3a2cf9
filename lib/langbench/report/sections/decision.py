"""The decision matrix, the seed's Appendix B redone, factor models (seed §7)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import metrics, stats
from langbench.analysis.findings import HIGHER, LOWER, Run, language_claim, p_text
from langbench.report.sections import Section
from langbench.report.sections import streams
from langbench.report.sections.success import success_table


# Criteria that share a component are one group and count once: warm TTFT, client overhead and
# end-to-end latency all contain the client's time to first token.
CRITERIA_GROUPS = {"Throughput (warm)": "throughput", "TTFT warm": "latency", "Client overhead": "latency",
                   "End-to-end latency": "latency", "TTFT cold": "cold start", "ITL p99": "decode pacing",
                   "Throughput consistency (per-cell CV)": "consistency", "Peak RSS": "memory",
                   "Start-up (spawn → first request)": "start-up", "CPU per run (from the first request)": "CPU",
                   "Optimization success rate": "optimization"}


def _matrix_rows(run: Run) -> list[tuple[str, stats.Comparison | dict, str, str]]:
    warm, cold = run.warm, metrics.cold(run.df)
    rows = []

    def add(criterion, data, value, better, unit):
        c = run.compare(data[data["agent"] == "rust"], data[data["agent"] == "python"], value, ("rust", "python"))
        rows.append((criterion, c, better, unit))

    add("Throughput (warm)", warm, "throughput_tps", HIGHER, "tok/s")
    uncached = warm[warm["prompt_cache"] == "uncached"]
    add("TTFT warm", uncached if len(uncached) else warm, "ttft_ms", LOWER, "ms")
    add("Client overhead", warm, "client_overhead_ms", LOWER, "ms")
    add("End-to-end latency", warm, "e2e_ms", LOWER, "ms")
    add("TTFT cold", cold, "ttft_ms", LOWER, "ms")
    itl_label, itl_value = streams.itl_criterion(warm)  # p99 only where runs have ≥ 100 gaps
    add(itl_label, warm, itl_value, LOWER, "ms")
    cv = (warm.groupby(["agent", "config_id", "mode"])["throughput_tps"]
          .agg(lambda x: 100 * x.std(ddof=1) / x.mean()).rename("cv_pct").reset_index())
    add("Throughput consistency (per-cell CV)", cv, "cv_pct", LOWER, "%")
    procs = run.processes
    if not procs.empty:
        add("Peak RSS", procs, "peak_rss_mib", LOWER, "MiB")
        add("Start-up (spawn → first request)", procs, "startup_ms", LOWER, "ms")
        add("CPU per run (from the first request)", procs, "cpu_s_per_run", LOWER, "s")
    rates = success_table(run, stats.deltas(warm, "throughput_tps", run.factors, run.alpha))
    rows.append(("Optimization success rate", rates.iloc[0].to_dict(), HIGHER, "configs"))
    return rows


def decision_matrix(run: Run) -> Section:
    """Every criterion's comparison, Holm-adjusted across the criteria (one family for the
    'differs' tests, one for the equivalence tests), then one verdict per group of correlated
    criteria: a group is won when its decided members agree, 'mixed' when they do not."""
    rows = _matrix_rows(run)
    welch = stats.holm([c.welch_p if isinstance(c, stats.Comparison) else c["mcnemar_p"] for _, c, _, _ in rows])
    tost = stats.holm([c.tost_p if isinstance(c, stats.Comparison) else np.nan for _, c, _, _ in rows])
    out = []
    for (criterion, c, better, unit), wp, tp in zip(rows, welch, tost):
        if isinstance(c, stats.Comparison):
            if c.verdict == "not enough data":
                verdict = "not enough data"
            elif wp < run.alpha and abs(c.diff) > c.margin:
                verdict = "rust higher" if c.diff > 0 else "python higher"
            elif tp < run.alpha:
                verdict = "equivalent"
            else:
                verdict = "inconclusive"
            row = {"rust": c.mean_a, "python": c.mean_b, "unit": unit,
                   "test": f"Welch {p_text(c.welch_p)} (Holm {p_text(wp)}); TOST ±{c.margin:.3g} {unit} "
                           f"{p_text(c.tost_p)} (Holm {p_text(tp)})"}
        else:
            verdict = ("inconclusive" if not wp < run.alpha else
                       "rust higher" if c["rust_only"] > c["python_only"] else "python higher")
            row = {"rust": c["rust"], "python": c["python"], "unit": f"of {c['configs']} configs",
                   "test": f"McNemar exact {p_text(c['mcnemar_p'])} (Holm {p_text(wp)})"}
        if verdict.endswith("higher"):
            hi = verdict.split()[0]
            winner = hi if better == HIGHER else ("python" if hi == "rust" else "rust")
        else:
            winner = verdict
        group = "decode pacing" if criterion.startswith("ITL ") else CRITERIA_GROUPS.get(criterion, criterion)
        out.append({"group": group, "criterion": criterion, **row,
                    "verdict": verdict, "winner": winner})
    t = pd.DataFrame(out)
    groups = {}
    for g, members in t.groupby("group", sort=False)["winner"]:
        decided = set(members) - {"inconclusive", "not enough data"}
        groups[g] = decided.pop() if len(decided) == 1 else ("mixed" if decided else "inconclusive")
    t["group_winner"] = t["group"].map(groups)
    wins = pd.Series(groups).value_counts()
    decided = sum(wins.get(k, 0) for k in ("rust", "python", "equivalent"))
    shared = [g for g, n in t["group"].value_counts().items() if n > 1]
    sentence = (f"{len(t)} criteria in {len(groups)} groups (criteria that share a component count once: "
                + "; ".join(f"{g} = {', '.join(t.loc[t['group'] == g, 'criterion'])}" for g in shared)
                + f"). Of the {len(groups)} groups, {decided} are decided: Rust wins {wins.get('rust', 0)}, "
                f"Python {wins.get('python', 0)}, equivalent within the pre-set margins {wins.get('equivalent', 0)}; "
                f"{wins.get('mixed', 0)} are mixed (their criteria disagree) and {wins.get('inconclusive', 0)} "
                f"inconclusive (neither shown different beyond the margin nor equivalent at α = {run.alpha} after "
                "Holm's adjustment across the criteria); those are not counted. Deployment, iteration speed and "
                "dependencies are not measured here and are left out (the seed scored them by opinion).")
    return Section("7.1 Decision matrix", sentence, t)


def appendix_b(run: Run) -> Section:
    c, sentence = language_claim(run, "throughput_tps", "tok/s", HIGHER)
    return Section("Appendix B: the seed's tests, redone", sentence + " A p-value above α alone "
                   "does not make two languages indistinguishable: only TOST can say equivalent.",
                   pd.DataFrame([c.as_dict()]))


def anova(run: Run, value: str, label: str) -> Section:
    table, r2 = stats.factor_anova(run.warm, value, run.factors)
    t = table.reset_index(names="term")
    sig = t[(t["PR(>F)"] < run.alpha)]["term"].tolist()
    sentence = (f"OLS of {label} on language × mode plus {', '.join(run.factors)} (R² = {r2:.2f}); "
                f"terms significant at α = {run.alpha}: {', '.join(sig) if sig else 'none'}.")
    return Section(f"Factors behind {label} (type-II ANOVA)", sentence, t)
