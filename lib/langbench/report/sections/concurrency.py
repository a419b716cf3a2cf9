"""Many agents at once: the load factors (closed-loop streams, open-loop arrivals) per batch,
and the concurrency report's sections.

A batch of N streams is one agent process; its measured runs overlap in time, so the batch is
the unit: aggregate throughput is its tokens over its wall time (first request sent to last
`done` parsed), its latencies are the distributions of its runs, and every comparison is over
batches (findings.Run.compare), with the margins fixed in the parameter file.

- queueing delay (per run, from the server's own durations): total − load − prompt_eval − eval,
  the server's time outside its own phases (in Ollama 0.11.4 a wait for a free slot of the
  runner, the part the Go server does not see, is inside prompt_eval: it shows in TTFT);
- fairness: Jain's index over the streams' token rates, 1 / (1 + CV²) with the population CV;
- scaling efficiency: aggregate throughput at N over N × that at N = 1, same agent and mode;
- goodput: the share of requests that meet the parameter file's SLO (TTFT and ITL p99 limits;
  open loop: TTFT counted from the intended send time, so a queue cannot hide).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from langbench.report import plots
from langbench.analysis.findings import HIGHER, LOWER, Run
from langbench.report.sections import Section

NS_PER_MS = 1e6


def runs(run: Run) -> pd.DataFrame:
    """Measured runs of the load batches, with queueing delay and latency from the intended send."""
    df = run.df
    load = pd.Series(False, index=df.index)
    for f in ("concurrency", "arrival_rate_per_s"):
        if f in df:
            load |= df[f].notna()
    m = df[load & (df["phase"] == "measured")].copy()
    if m.empty:
        return m
    num = lambda c: pd.to_numeric(m[c], errors="coerce")  # noqa: E731
    m["queue_ms"] = (num("total_duration") - num("load_duration").fillna(0) - num("prompt_eval_duration")
                     - num("eval_duration")) / NS_PER_MS
    lag = num("schedule_lag_ms").fillna(0) if "schedule_lag_ms" in m else 0.0
    m["ttft_from_send_ms"] = m["ttft_ms"] + lag
    m["load_point"] = [f"N={int(n)}" if pd.notna(n) else f"{r:g}/s open" for n, r in
                       zip(m.get("concurrency", pd.Series(np.nan, index=m.index)),
                           m.get("arrival_rate_per_s", pd.Series(np.nan, index=m.index)))]
    return m


def batches(run: Run, slo: dict | None = None) -> pd.DataFrame:
    """One row per load batch: aggregate throughput, latency, queueing, fairness, goodput."""
    m = runs(run)
    if m.empty:
        return pd.DataFrame()
    slo = slo if slo is not None else (run.manifest["parameters"].get("slo") or {})
    rows = []
    for batch_id, g in m.groupby("batch_id"):
        ok = g[g["outcome"] == "ok"]
        first = g.iloc[0]
        row = {"batch_id": batch_id, "agent": first["agent"], "mode": first["mode"], "config_id": first["config_id"],
               "load_point": first["load_point"],
               "concurrency": first.get("concurrency"), "arrival_rate_per_s": first.get("arrival_rate_per_s"),
               "requests": len(g), "ok": len(ok)}
        if len(ok):
            start = ok["t0_unix"].min()
            end = (ok["t0_unix"] + ok["e2e_ms"] / 1e3).max()
            row.update(wall_s=end - start, tokens=ok["eval_count"].sum(),
                       agg_tps=ok["eval_count"].sum() / (end - start) if end > start else np.nan,
                       ttft_p50_ms=ok["ttft_from_send_ms"].median(),
                       ttft_p95_ms=ok["ttft_from_send_ms"].quantile(0.95),
                       itl_p99_ms=ok["itl_p99_ms"].median(), queue_ms=ok["queue_ms"].median(),
                       schedule_lag_ms=(ok["schedule_lag_ms"].max() if "schedule_lag_ms" in ok else np.nan),
                       fairness=_jain(ok))
            meets = pd.Series(True, index=g.index)
            if "ttft_ms" in slo:
                meets &= g["ttft_from_send_ms"] <= slo["ttft_ms"]
            if "itl_p99_ms" in slo:
                meets &= g["itl_p99_ms"] <= slo["itl_p99_ms"]
            row["goodput"] = float((meets & (g["outcome"] == "ok")).mean()) if slo else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _jain(ok: pd.DataFrame) -> float:
    """Jain's fairness index over the streams' token rates (tokens over time streaming)."""
    if "stream" not in ok or ok["stream"].nunique() < 2:
        return np.nan
    per = ok.groupby("stream").apply(lambda s: s["eval_count"].sum() / (s["e2e_ms"].sum() / 1e3),
                                     include_groups=False)
    return float(1 / (1 + sps.variation(per.to_numpy(float)) ** 2))


def scaling(b: pd.DataFrame) -> pd.DataFrame:
    """Per agent × mode × N: mean aggregate throughput over batches and the efficiency against
    N = 1 of the same agent and mode."""
    if b.empty or "concurrency" not in b:
        return pd.DataFrame()
    closed = b[b["concurrency"].notna()].copy()
    if closed.empty:
        return pd.DataFrame()
    closed["concurrency"] = closed["concurrency"].astype(int)
    t = (closed.groupby(["agent", "mode", "concurrency"])
         .agg(batches=("batch_id", "size"), agg_tps=("agg_tps", "mean"), ttft_p95_ms=("ttft_p95_ms", "mean"),
              itl_p99_ms=("itl_p99_ms", "mean"), queue_ms=("queue_ms", "mean"), fairness=("fairness", "mean"),
              goodput=("goodput", "mean"))
         .reset_index())
    one = t[t["concurrency"] == 1].set_index(["agent", "mode"])["agg_tps"]
    t["efficiency"] = [r.agg_tps / (r.concurrency * one.get((r.agent, r.mode), np.nan)) for r in t.itertuples()]
    return t


def footprint(run: Run, b: pd.DataFrame) -> pd.DataFrame:
    """Agent CPU per request (from the first request) and peak RSS at each N."""
    p = run.processes
    if p.empty or b.empty:
        return pd.DataFrame()
    p = p.sort_values("attempt").groupby("batch_id").tail(1).merge(
        b[["batch_id", "load_point", "concurrency"]], on="batch_id")
    return (p.groupby(["agent", "load_point"])
            .agg(processes=("batch_id", "size"), cpu_ms_per_request=("cpu_s_per_run", lambda x: 1e3 * x.median()),
                 peak_rss_mib=("peak_rss_mib", "median"), concurrency=("concurrency", "first"))
            .reset_index().sort_values(["agent", "concurrency"]))


# --- sections -----------------------------------------------------------------------------

def overview(run: Run, b: pd.DataFrame) -> Section:
    if b.empty:
        return Section("Concurrency", "This run has no concurrency or open-loop load points "
                       "(a parameter file sets them with `concurrency` and `open_loop`).")
    slots = run.manifest.get("server_slots") or {}
    seen = slots.get("runner_parallel")
    if slots.get("embedded"):
        check = (f"the model runner's log shows --parallel {seen}" if seen is not None else
                 "the runner's log does not show its slots")
        slot_text = f"The embedded server ran with {slots.get('num_parallel')} parallel slots (OLLAMA_NUM_PARALLEL; {check})."
    else:
        slot_text = (f"The external server's slots ({slots.get('num_parallel')}) are taken from the parameter file "
                     "and were not verified.")
    points = ", ".join(sorted(b["load_point"].unique(), key=_point_key))
    failed = int((b["requests"] - b["ok"]).sum())
    sentence = (f"{len(b)} load batches over the load points {points}: {int(b['requests'].sum())} requests, "
                f"{failed} failed. {slot_text} Every load point ran under that one server setting; each agent "
                "process is single-threaded (one asyncio loop, one current-thread tokio runtime).")
    t = (b.groupby(["load_point", "agent"])
         .agg(batches=("batch_id", "size"), requests=("requests", "sum"), ok=("ok", "sum"),
              agg_tps=("agg_tps", "mean"), wall_s=("wall_s", "mean"))
         .reset_index().sort_values(["load_point", "agent"], key=lambda s: s.map(_point_key) if s.name == "load_point" else s))
    return Section("Load points", sentence, t)


def scaling_section(run: Run, b: pd.DataFrame) -> Section:
    t = scaling(b)
    if t.empty:
        return Section("Scaling with N", "No closed-loop load points in this run.")
    top = int(t["concurrency"].max())
    parts = []
    for agent, g in t.groupby("agent"):
        g = g.groupby("concurrency")[["agg_tps", "efficiency"]].mean()
        if 1 in g.index and top in g.index:
            parts.append(f"{agent}: {g.loc[1, 'agg_tps']:.1f} tok/s at N = 1 and {g.loc[top, 'agg_tps']:.1f} at "
                         f"N = {top} ({g.loc[top, 'agg_tps'] / g.loc[1, 'agg_tps']:.2f}×, efficiency "
                         f"{100 * g.loc[top, 'efficiency']:.0f}%)")
    sentence = ("Aggregate throughput (tokens over each batch's wall time, mean of both modes' batches): "
                + "; ".join(parts) + ".")
    return Section("Scaling with N (closed loop)", sentence, t, plots.scaling(t))


def languages(run: Run, b: pd.DataFrame) -> Section:
    """The language comparison at each load point, batches as the units, pre-set margins."""
    if b.empty:
        return Section("Python and Rust at each load point", "No load batches to compare.")
    rows = []
    for point, g in b.groupby("load_point"):
        for value, better, unit in (("agg_tps", HIGHER, "tok/s"), ("ttft_p50_ms", LOWER, "ms"),
                                    ("itl_p99_ms", LOWER, "ms")):
            metric = {"agg_tps": "throughput_tps", "ttft_p50_ms": "ttft_ms", "itl_p99_ms": "itl_p99_ms"}[value]
            py, rs = (g.loc[g["agent"] == a, value] for a in ("python", "rust"))
            c = run.compare(py, rs, metric)
            if c.verdict.endswith("higher"):
                hi = c.verdict.split()[0]
                winner = hi if better == HIGHER else ("rust" if hi == "python" else "python")
            else:
                winner = c.verdict
            rows.append({"load_point": point, "metric": value, "python": c.mean_a, "rust": c.mean_b, "unit": unit,
                         "batches": f"{c.n_a} vs {c.n_b}", "diff": c.diff, "ci_low": c.diff_ci_low,
                         "ci_high": c.diff_ci_high, "welch_p": c.welch_p, "margin": c.margin,
                         "tost_p": c.tost_p, "verdict": winner})
    t = pd.DataFrame(rows)
    if t.empty:
        return Section("Python and Rust at each load point", "No load batches to compare.")
    t = t.sort_values("load_point", key=lambda s: s.map(_point_key))
    counts = t["verdict"].value_counts()
    thr = t[t["metric"] == "agg_tps"]
    parts = [f"{r.load_point}: Python {r.python:.1f} vs Rust {r.rust:.1f} tok/s ({r.verdict})" for r in thr.itertuples()]
    sentence = ("Aggregate throughput by load point — " + "; ".join(parts) + ". Over all "
                f"{len(t)} comparisons (throughput, median TTFT, ITL p99; batches as units, margins "
                f"{run.margin('throughput_tps')[1]} and {run.margin('ttft_ms')[1]}): Rust better in {counts.get('rust', 0)}, "
                f"Python better in {counts.get('python', 0)}, equivalent in {counts.get('equivalent', 0)}, "
                f"inconclusive in {counts.get('inconclusive', 0) + counts.get('not enough data', 0)}.")
    return Section("Python and Rust at each load point", sentence, t)


def latency(run: Run, b: pd.DataFrame) -> Section:
    if b.empty:
        return Section("Latency, queueing, fairness and goodput", "No load batches in this run.")
    t = (b.groupby(["load_point", "agent"])
         .agg(ttft_p50_ms=("ttft_p50_ms", "mean"), ttft_p95_ms=("ttft_p95_ms", "mean"),
              itl_p99_ms=("itl_p99_ms", "mean"), queue_ms=("queue_ms", "mean"), fairness=("fairness", "mean"),
              goodput=("goodput", "mean"))
         .reset_index().sort_values("load_point", key=lambda s: s.map(_point_key)))
    slo = run.manifest["parameters"].get("slo") or {}
    pooled = t.groupby("load_point", sort=False).mean(numeric_only=True)
    parts = [f"{p}: TTFT p95 {r.ttft_p95_ms:.0f} ms, queueing {r.queue_ms:.1f} ms"
             + (f", fairness {r.fairness:.3f}" if pd.notna(r.fairness) else "")
             + (f", goodput {100 * r.goodput:.0f}%" if slo else "") for p, r in pooled.iterrows()]
    slo_text = (f" Goodput is the share of requests with TTFT ≤ {slo.get('ttft_ms', '∞')} ms and ITL p99 ≤ "
                f"{slo.get('itl_p99_ms', '∞')} ms (the parameter file's SLO)." if slo else " The parameter file sets no SLO.")
    sentence = ("Per load point (both agents): " + "; ".join(parts) + ". Fairness is Jain's index over the streams' "
                "token rates (1 = equal; open loop: over its requests)." + slo_text)
    return Section("Latency, queueing, fairness and goodput", sentence, t, plots.pareto(b))


def open_loop(run: Run, b: pd.DataFrame) -> Section:
    o = b[b["arrival_rate_per_s"].notna()] if "arrival_rate_per_s" in b and len(b) else pd.DataFrame()
    if o.empty:
        return Section("Open loop", "No open-loop load points in this run.")
    t = (o.groupby(["arrival_rate_per_s", "agent"])
         .agg(batches=("batch_id", "size"), agg_tps=("agg_tps", "mean"), ttft_p50_ms=("ttft_p50_ms", "mean"),
              ttft_p95_ms=("ttft_p95_ms", "mean"), max_schedule_lag_ms=("schedule_lag_ms", "max"),
              goodput=("goodput", "mean"))
         .reset_index())
    parts = [f"{r.arrival_rate_per_s:g}/s, {r.agent}: TTFT p95 {r.ttft_p95_ms:.0f} ms from the intended send "
             f"(latest send {r.max_schedule_lag_ms:.1f} ms behind schedule)" for r in t.itertuples()]
    sentence = ("Seeded Poisson arrivals, the same schedule for both agents; latency counts from each request's "
                "intended send time, so a slow server cannot hide its queue: " + "; ".join(parts) + ".")
    return Section("Open loop (Poisson arrivals)", sentence, t)


def footprint_section(run: Run, b: pd.DataFrame) -> Section:
    t = footprint(run, b)
    if t.empty:
        return Section("Agent footprint with N", "No process measurements for the load batches.")
    parts = []
    for agent, g in t[t["concurrency"].notna()].groupby("agent"):
        lo, hi = g.iloc[0], g.iloc[-1]
        parts.append(f"{agent}: {lo.cpu_ms_per_request:.1f} ms CPU per request and {lo.peak_rss_mib:.1f} MiB peak "
                     f"RSS at {lo.load_point}, {hi.cpu_ms_per_request:.1f} ms and {hi.peak_rss_mib:.1f} MiB at "
                     f"{hi.load_point}")
    return Section("Agent footprint with N (medians per process)", "; ".join(parts) + ".", t)


def _point_key(point: str) -> tuple:
    if point.startswith("N="):
        return (0, int(point[2:]))
    return (1, float(point.split("/")[0]))
