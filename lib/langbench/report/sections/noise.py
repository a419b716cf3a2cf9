"""The noise floor: where run-to-run throughput variance comes from, and each language's CV.

Two questions the seed answered with one number each ("Rust 6–12× more consistent", "0.40 % vs
0.48 % CV") are answered here with their uncertainty:

- `consistency(run)`: each language's CV of throughput, the seed's way (over the config means of
  the chimera cells) and the instrument's way (run to run within a batch, and batch to batch
  within a cell), each with a bootstrap 95 % CI (scipy.stats.bootstrap, BCa, resampling cells),
  and the Brown–Forsythe test of equal variance on batch-level deviations from their cell mean
  (batches are the independent units; runs in one process share a load and a moment).
- `noise_floor(run)`: the variance of warm throughput split into within-batch (run to run in one
  agent process) and between-batch (process, reload, moment) parts, then the between-batch
  deviations from their cell mean regressed (statsmodels OLS, type-II ANOVA) on what the run
  measured beside them: GPU SM clock, temperature and throttling from NVML, the server's own
  CPU time per second of batch, the position in the run (time trend), the agent, and the worker
  or GPU where a study spans several. Each source's share is its sum of squares over the total.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats as sps
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from langbench import storage
from langbench.analysis import stats
from langbench.analysis.findings import Run, p_text
from langbench.report.sections import Section

VALUE = "throughput_tps"
BLOCKS = ("gpu_uuid", "worker", "gpu_index")  # the first one a run has that varies


def _block(df: pd.DataFrame) -> str | None:
    for col in BLOCKS:
        if col in df and df[col].nunique(dropna=True) > 1:
            return col
    return None


def _cv_pct(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(stats._cv(x)) if len(x) >= 2 and np.mean(x) else float("nan")


def _boot_mean_ci(values: np.ndarray, seed: int = 112) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) < 3 or np.ptp(values) == 0:
        return float("nan"), float("nan")
    res = sps.bootstrap((values,), np.mean, n_resamples=2000, method="BCa",
                        random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _boot_cv_ci(values: np.ndarray, seed: int = 112) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return (float("nan"), float("nan")) if len(values) < 4 else stats._boot_ci(values, stats._cv, seed)


def batch_frame(run: Run) -> pd.DataFrame:
    """One row per agent batch of warm runs: its mean throughput, cell, agent, order, the block
    (worker/GPU) where there is one, and the batch's telemetry and server CPU where measured.
    Columns: batch_id, agent, config_id, mode, order, tps, runs, dev_pct (deviation from the
    cell's mean, %), and where present sm_clock_mhz, temp_c, throttled, server_cpu_per_s, block."""
    w = run.warm.dropna(subset=[VALUE])
    if w.empty:
        return pd.DataFrame()
    block = _block(w)
    keys = ["batch_id", "agent", "config_id", "mode", "order"] + ([block] if block else [])
    b = w.groupby(keys, dropna=False)[VALUE].agg(tps="mean", runs="size").reset_index()
    if block:
        b = b.rename(columns={block: "block"})
    cell = b.groupby(["config_id", "mode"])["tps"].transform("mean")
    b["dev_pct"] = 100 * (b["tps"] - cell) / cell
    own = b.groupby(["config_id", "mode", "agent"])["tps"]  # the agent's own cell: ≥ 2 batches
    b["dev_own_pct"] = (100 * (b["tps"] - own.transform("mean")) / own.transform("mean")).where(own.transform("size") >= 2)
    tel = pd.DataFrame(storage.read_jsonl(run.run_dir / "telemetry.jsonl"))
    if not tel.empty and "batch_id" in tel:
        t = tel[tel["batch_id"].isin(b["batch_id"])]
        if "gpu_index" in w and "gpu" in t:  # a multi-GPU host: the batch's own GPU only
            own = w.groupby("batch_id")["gpu_index"].first()
            t = t[t["gpu"] == t["batch_id"].map(own).fillna(t["gpu"])]
        agg = t.groupby("batch_id").agg(sm_clock_mhz=("sm_clock_mhz", "mean"), temp_c=("temp_c", "mean"),
                                        power_w=("power_w", "mean"),
                                        throttled=("throttle_reasons", lambda x: float(np.mean(x != 0))))
        b = b.merge(agg, on="batch_id", how="left")
    p = run.processes
    if not p.empty and "server_cpu_s" in p and p["server_cpu_s"].notna().any():
        last = p.sort_values("attempt").groupby("batch_id").tail(1)
        b = b.merge(last.assign(server_cpu_per_s=last["server_cpu_s"] / last["wall_s"])[["batch_id", "server_cpu_per_s"]],
                    on="batch_id", how="left")
    return b


def consistency(run: Run) -> Section:
    """CV per language with CIs, and equal variance on batch-level data."""
    w = run.warm.dropna(subset=[VALUE])
    b = batch_frame(run)
    if w.empty or b.empty:
        return Section("Consistency: CV per language", "No warm runs to measure consistency on.")
    rows, parts = [], []
    for agent, g in w.groupby("agent"):
        chim = _seed_configs(g, run)
        within = g.groupby("batch_id")[VALUE].apply(_cv_pct).dropna()
        between = b[b["agent"] == agent].groupby(["config_id", "mode"])["tps"].apply(_cv_pct).dropna()
        seed_ci = _boot_cv_ci(chim.to_numpy())
        w_ci, b_ci = _boot_mean_ci(within.to_numpy()), _boot_mean_ci(between.to_numpy())
        rows.append({"agent": agent, "configs": len(chim), "cv_over_configs_pct": _cv_pct(chim),
                     "cv_over_configs_ci_low": seed_ci[0], "cv_over_configs_ci_high": seed_ci[1],
                     "batches": len(within), "cv_run_to_run_pct": within.mean(),
                     "cv_run_to_run_ci_low": w_ci[0], "cv_run_to_run_ci_high": w_ci[1],
                     "cells": len(between), "cv_batch_to_batch_pct": between.mean(),
                     "cv_batch_to_batch_ci_low": b_ci[0], "cv_batch_to_batch_ci_high": b_ci[1]})
    t = pd.DataFrame(rows)
    def said(value, low, high, what):
        if not np.isfinite(value):
            return None
        ci = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else " (too few units for a CI)"
        return f"{value:.2f} %{ci} {what}"

    for r in t.itertuples():
        bits = [said(r.cv_over_configs_pct, r.cv_over_configs_ci_low, r.cv_over_configs_ci_high,
                     f"over the {r.configs} chimera config means (the seed's CV)"),
                said(r.cv_run_to_run_pct, r.cv_run_to_run_ci_low, r.cv_run_to_run_ci_high,
                     "run to run within a batch"),
                said(r.cv_batch_to_batch_pct, r.cv_batch_to_batch_ci_low, r.cv_batch_to_batch_ci_high,
                     "batch to batch within a cell")]
        parts.append(f"{r.agent}: " + ", ".join(x for x in bits if x))
    sentence = "Throughput CV (mean over units, bootstrap 95 % CI): " + "; ".join(parts) + "."
    notes = []
    groups = {a: g["dev_own_pct"].dropna().to_numpy() for a, g in b.groupby("agent")}
    groups = {a: v for a, v in groups.items() if len(v) >= 3}
    if len(groups) == 2:
        bf = sps.levene(*groups.values(), center="median")
        sd = {a: float(np.std(v, ddof=1)) for a, v in groups.items()}
        (a1, s1), (a2, s2) = sorted(sd.items())
        ratio = s1 / s2 if s2 else float("nan")
        notes.append(f"Equal variance of batch means around their own cell's mean (Brown–Forsythe, "
                     f"{sum(len(v) for v in groups.values())} batches): SD {a1} {s1:.2f} % vs {a2} {s2:.2f} % "
                     f"(ratio {ratio:.2f}), W = {bf.statistic:.2f}, {p_text(bf.pvalue)}: "
                     + ("the variances differ" if bf.pvalue < run.alpha else
                        f"no difference in consistency shown at α = {run.alpha}") + ".")
        t.attrs["brown_forsythe_p"] = float(bf.pvalue)
        t.attrs["sd_ratio"] = ratio
    else:
        notes.append("No test of equal variance: it needs two batches or more per agent and cell.")
    if (t["configs"] < 2).any():
        notes.append("The seed's CV (over config means) needs two configs or more at one offload; this run has "
                     f"{int(t['configs'].min())} at its fullest offload, so only the CVs within batches and cells "
                     "are given.")
    return Section("Consistency: CV per language, with CIs", sentence, t, notes=notes)


def _full_rank_fit(b: pd.DataFrame, terms: list[str]):
    """OLS of dev_pct on `terms`, dropping covariates (last first) that are collinear with the
    others (a clock that only moved with throttling, say), so every share is identified."""
    terms = list(terms)
    while True:
        model = smf.ols("dev_pct ~ " + " + ".join(terms), data=b)
        if np.linalg.matrix_rank(model.exog) == model.exog.shape[1] or len(terms) == 1:
            return model.fit()
        cont = [t for t in terms if not t.startswith("C(")]
        terms.remove(cont[0] if cont else terms[-1])


def _seed_configs(g: pd.DataFrame, run: Run) -> pd.Series:
    """The chimera config means the seed's CV is taken over: on a GPU host only the configs of
    the fullest offload (the seed's 60/80/120 were all full offload), elsewhere all of them."""
    chim = g[g["mode"] == "chimera"]
    gpus = run.manifest.get("host", {}).get("gpus") or []
    if gpus and "num_gpu" in chim and chim["num_gpu"].nunique() > 1:  # offloads that differ
        chim = chim[chim["num_gpu"] == chim["num_gpu"].max()]
    return chim.groupby("config_id")[VALUE].mean()


SOURCES = {"sm_clock_mhz": "GPU SM clock", "temp_c": "GPU temperature", "throttled": "throttling",
           "server_cpu_per_s": "server CPU time", "order": "time in the run (order)",
           "C(agent)": "agent (client)", "C(block)": "worker / GPU"}


def noise_floor(run: Run) -> Section:
    """Variance of warm throughput: within vs between batches, and the between-batch part's
    sources (type-II sums of squares of an OLS on the measured covariates)."""
    w = run.warm.dropna(subset=[VALUE])
    b = batch_frame(run)
    if w.empty or len(b) < 8:
        return Section("The noise floor and its sources", "Too few batches to split the variance.")
    cell_mean = w.groupby(["config_id", "mode"])[VALUE].transform("mean")
    dev = 100 * (w[VALUE] - cell_mean) / cell_mean
    total = float(np.var(dev, ddof=1))
    batch_mean = dev.groupby(w["batch_id"]).transform("mean")
    within = float(np.var(dev - batch_mean, ddof=1))
    terms = [c for c in ("sm_clock_mhz", "temp_c", "throttled", "server_cpu_per_s") if c in b and b[c].notna().all()
             and b[c].nunique() > 1]
    terms += ["order", "C(agent)"] + (["C(block)"] if "block" in b else [])
    fit = _full_rank_fit(b, terms)
    aov = anova_lm(fit, typ=2)
    ss_total = float(((b["dev_pct"] - b["dev_pct"].mean()) ** 2).sum())
    rows = [{"source": SOURCES.get(term, term), "share_pct": 100 * r.sum_sq / ss_total if ss_total else np.nan,
             "F": r.F, "p": r["PR(>F)"]} for term, r in aov.iterrows() if term != "Residual"]
    rows.append({"source": "unexplained (residual)", "share_pct": 100 * aov.loc["Residual", "sum_sq"] / ss_total,
                 "F": np.nan, "p": np.nan})
    t = pd.DataFrame(rows)
    t.attrs.update(within_share_pct=100 * within / total if total else np.nan, total_var_pct2=total)
    named = t[(t["p"] < run.alpha)].sort_values("share_pct", ascending=False)
    missing = [SOURCES[c] for c in ("sm_clock_mhz", "temp_c", "throttled", "server_cpu_per_s") if c not in terms]
    sentence = (f"Warm throughput varies by {np.sqrt(total):.2f} % (SD of runs around their cell mean, "
                f"{len(w)} runs in {len(b)} batches); {100 * within / total:.0f} % of that variance is run to run "
                f"inside one agent process, the rest between batches. Of the between-batch variance "
                f"(R² = {fit.rsquared:.2f} for all sources together), "
                + ("; ".join(f"{r.source} explains {r.share_pct:.1f} % ({p_text(r.p)})" for r in named.itertuples())
                   if len(named) else "no measured source explains a significant share")
                + f"; {t.iloc[-1]['share_pct']:.0f} % is left unexplained.")
    notes = [f"Not measured in this run, so not among the sources: {', '.join(missing)}."] if missing else []
    return Section("The noise floor and its sources", sentence, t, notes=notes)
