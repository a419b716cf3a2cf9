"""Time to first token: warm (cached and uncached), by config, cold, by server phase (seed §4)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import metrics, stats
from langbench.report import plots
from langbench.analysis.findings import LOWER, Run, by_agent, language_claim, p_text, paired_claim
from langbench.report.sections import Section


def ttft_warm(run: Run) -> Section:
    """The seed's TTFT comparison: uncached (the prompt evaluated in full) where the run has it."""
    w = run.warm
    uncached = w[w["prompt_cache"] == "uncached"]
    data, which = (uncached, "uncached prompt") if len(uncached) else (w, "cached prompt only")
    t = by_agent(run, "ttft_ms", data)
    _, sentence = language_claim(run, "ttft_ms", "ms", LOWER, data=data, label=f"warm TTFT ({which})")
    notes = [n for n in [paired_claim(run, "ttft_ms", "ms", data)] if n]
    return Section(f"4.1 Warm TTFT by language ({which}; same instrument in both agents)", sentence, t,
                   plots.distribution(data, "ttft_ms", "TTFT (ms)"), notes=notes)


def ttft_by_config(run: Run) -> Section:
    """The seed's 4.2: best and worst config per language, and the typical range."""
    cells = run.warm.groupby(["agent", "config_id", *run.factors, "mode"], dropna=False)["ttft_ms"].mean().reset_index()
    rows = []
    for agent, g in cells.groupby("agent"):
        best, worst = g.loc[g["ttft_ms"].idxmin()], g.loc[g["ttft_ms"].idxmax()]
        rows.append({"agent": agent, "best_cell": f"{best['config_id']} {best['mode']}", "best_ms": best["ttft_ms"],
                     "worst_cell": f"{worst['config_id']} {worst['mode']}", "worst_ms": worst["ttft_ms"],
                     "p25_ms": g["ttft_ms"].quantile(0.25), "p75_ms": g["ttft_ms"].quantile(0.75)})
    t = pd.DataFrame(rows)
    parts = [f"{r.agent}: best {r.best_ms:.1f} ms ({r.best_cell}), typical {r.p25_ms:.1f}–{r.p75_ms:.1f} ms "
             f"(middle half of cells), worst {r.worst_ms:.1f} ms ({r.worst_cell})" for r in t.itertuples()]
    return Section("4.2 Warm TTFT by config: best, typical, worst", "; ".join(parts) + ".", t)


def ttft_cold(run: Run) -> Section:
    cold = metrics.cold(run.df)
    t = stats.describe_by(cold, "ttft_ms", ["agent", "reload_expected"]) if not cold.empty else None
    _, sentence = language_claim(run, "ttft_ms", "ms", LOWER, data=cold, label="cold TTFT")
    return Section("4.1b Cold TTFT (first run of each agent process, reported apart)",
                   sentence + " " + _cold_reload_sentence(cold), t)


def _cold_reload_sentence(cold: pd.DataFrame) -> str:
    """Whether cold runs paid a reload where the plan expected one (a load option changed
    since the previous batch), from the server's own load_duration."""
    if cold.empty or "reload_expected" not in cold:
        return ""
    exp = cold.loc[cold["reload_expected"].astype(bool), "load_ms"].dropna()
    not_exp = cold.loc[~cold["reload_expected"].astype(bool), "load_ms"].dropna()
    if exp.empty or not_exp.empty:
        which = "expected" if len(exp) else "not expected"
        vals = exp if len(exp) else not_exp
        return (f"All {len(vals)} cold runs had a reload {which}; their median load was {vals.median():.1f} ms.")
    from scipy import stats as sps
    p = sps.mannwhitneyu(exp, not_exp, alternative="greater").pvalue
    holds = p < stats.ALPHA and exp.median() > not_exp.median()
    return (f"Cold runs where a reload was expected (a load option changed) had a median load of "
            f"{exp.median():.1f} ms (n = {len(exp)}), those where none was expected {not_exp.median():.1f} ms "
            f"(n = {len(not_exp)}; Mann–Whitney, one-sided, {p_text(p)}): "
            + ("the reloads happened where the plan expected them." if holds else
               "the load times do not show the expected reloads; cold TTFT here is not a reload cost."))


def ttft_phases(run: Run) -> Section:
    data = run.df[run.df["outcome"] == "ok"].copy()
    data["kind"] = np.where(data["phase"] == "cold", "cold", np.where(data["phase"] == "measured", "warm", "other"))
    data = data[data["kind"] != "other"]
    t = (data.groupby(["agent", "kind"])[["load_ms", "prompt_eval_ms", "server_ttft_ms", "ttft_ms", "client_overhead_ms"]]
         .median().reset_index())
    w = t[t["kind"] == "warm"].set_index("agent")
    parts = [f"{a}: server {w.loc[a, 'server_ttft_ms']:.1f} ms (load {w.loc[a, 'load_ms']:.1f} + prompt "
             f"{w.loc[a, 'prompt_eval_ms']:.1f}) of a client TTFT of {w.loc[a, 'ttft_ms']:.1f} ms"
             for a in w.index]
    if {"python", "rust"} <= set(w.index):
        ratio = w.loc["rust", "ttft_ms"] / w.loc["python", "ttft_ms"]
        parts.append(f"Rust/Python median warm TTFT ratio {ratio:.2f}× (the seed reported 2.69×)")
    return Section("4.2b Where TTFT goes: server phases beside client TTFT (medians)",
                   "Warm medians — " + "; ".join(parts) + ".", t, plots.ttft_phases(t))



def ttft_cache(run: Run) -> Section:
    """Cached TTFT (the prompt repeated: Ollama reuses its KV prefix) and uncached (a unique
    prefix per run: the prompt evaluated in full), apart."""
    w = run.warm
    if (w["prompt_cache"] == "uncached").sum() == 0:
        return Section("TTFT with and without the prompt cache", "This run measured no uncached TTFT "
                       "(uncached_repetitions: 0): every warm TTFT here reuses the server's KV prefix.")
    t = (w.groupby(["agent", "prompt_cache"])
         .agg(runs=("run_id", "size"), ttft_ms=("ttft_ms", "median"), prompt_eval_ms=("prompt_eval_ms", "median"),
              prompt_tokens=("prompt_eval_count", "median"), server_ttft_ms=("server_ttft_ms", "median"))
         .reset_index())
    parts = []
    for agent, g in t.groupby("agent"):
        c, u = (g.set_index("prompt_cache").loc[k] for k in ("cached", "uncached"))
        parts.append(f"{agent}: {c.ttft_ms:.1f} ms cached (prompt evaluation {c.prompt_eval_ms:.1f} ms, "
                     f"{c.prompt_tokens:.0f} prompt tokens) vs {u.ttft_ms:.1f} ms uncached "
                     f"({u.prompt_eval_ms:.1f} ms, {u.prompt_tokens:.0f} tokens)")
    _, claim = language_claim(run, "ttft_ms", "ms", LOWER, data=w[w["prompt_cache"] == "uncached"])
    return Section("TTFT with and without the prompt cache (medians)",
                   "; ".join(parts) + ". Uncached, the seed's comparison: " + claim, t)
