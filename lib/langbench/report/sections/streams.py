"""What the streams were (issue 15): token kinds per cell, the endpoint, connections per client,
tokens per chunk and how far the inter-chunk percentiles can be trusted. Every table is built
from the records; a column that old records lack is reported as not measured."""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import verify
from langbench.analysis.findings import Run
from langbench.report.sections import Section

# Fewest gaps a percentile needs before it is shown (below it, "p99" of 23 gaps is the maximum).
MIN_GAPS = {"p50": 2, "p95": 20, "p99": 100}


def gaps_per_run(w: pd.DataFrame) -> pd.Series:
    """Inter-chunk gaps per run: itl_n, or chunks − 1 for records from before it."""
    n = w["itl_n"] if "itl_n" in w else w["chunks"] - 1
    return pd.to_numeric(n, errors="coerce")


def itl_criterion(w: pd.DataFrame) -> tuple[str, str]:
    """(label, column) for an ITL tail criterion: the per-run p99 where runs have the gaps for
    one (MIN_GAPS), else the per-run maximum, said so; "per chunk" where chunks held more than
    one token."""
    n = gaps_per_run(w).median() if len(w) else np.nan
    tpc = w["tokens_per_chunk"].median() if "tokens_per_chunk" in w and len(w) else 1.0
    unit = "" if not np.isfinite(tpc) or np.isclose(tpc, 1.0) else ", per chunk"
    if np.isfinite(n) and n >= MIN_GAPS["p99"]:
        return f"ITL p99{unit}", "itl_p99_ms"
    shown = f"{n:.0f}" if np.isfinite(n) else "too few"
    return f"ITL max per run{unit} (runs of {shown} gaps: too few for a p99)", "itl_max_ms"


def _all(run: Run) -> pd.DataFrame:
    """Agents and the null client together, final attempts."""
    return pd.concat([run.df, run.floor], ignore_index=True) if len(run.floor) else run.df


def stream_kinds(run: Run) -> Section:
    """Per cell (agent × config × mode): endpoint, think flag, thinking and answer chunks (one
    token each where tokens per chunk is 1), TTFT of any kind, thinking time and first answer."""
    w = run.warm
    if "chunks_thinking" not in w:
        return Section("Token kinds per cell", "These records predate token kinds (no chunks_thinking): "
                       "TTFT here is the first answer chunk, and thinking was not told apart.")
    keys = ["agent", "config_id", *run.factors, "mode"]
    g = w.assign(endpoint=w.get("endpoint", "generate"), think=w.get("think")).groupby(keys, dropna=False)
    sent = {} if "think" in keys else {"think": ("think", "first")}  # a factor is a key already
    if "endpoint" not in keys:
        sent["endpoint"] = ("endpoint", "first")
    t = g.agg(runs=("run_id", "size"), **sent,
              thinking_chunks=("chunks_thinking", "median"), answer_chunks=("chunks_answer", "median"),
              tokens=("eval_count", "median"), tokens_per_chunk=("tokens_per_chunk", "median"),
              ttft_ms=("ttft_ms", "median"), thinking_ms=("thinking_ms", "median"),
              ttft_answer_ms=("ttft_answer_ms", "median")).reset_index()
    t["thinking_tokens"] = np.where(t["tokens_per_chunk"].round(6) == 1, t["thinking_chunks"], np.nan)
    thinking = t[t["thinking_chunks"] > 0]
    endpoints = ", ".join(sorted(t["endpoint"].dropna().astype(str).unique())) or "generate"
    if thinking.empty:
        sentence = (f"No cell streamed thinking (endpoint: {endpoints}): TTFT and time to first answer "
                    "coincide, and client overhead is measured against the first answer chunk.")
    else:
        share = (thinking["thinking_chunks"] / (thinking["thinking_chunks"] + thinking["answer_chunks"])).median()
        answered = thinking[thinking["thinking_ms"].notna()]
        then = (f"before the first answer chunk, {answered['thinking_ms'].median():.1f} ms of thinking"
                + (f" ({len(thinking) - len(answered)} cells never reached an answer within num_predict)"
                   if len(answered) < len(thinking) else "")
                if len(answered) else "and no answer within num_predict: the whole generation was thinking")
        sentence = (f"{len(thinking)} of {len(t)} cells streamed thinking (endpoint: {endpoints}): a median "
                    f"{thinking['thinking_chunks'].median():.0f} thinking chunks ({100 * share:.0f}% of the chunks; "
                    f"thinking tokens where each chunk held one) {then}. TTFT is the first chunk of any kind "
                    f"and client overhead is measured against it, so the server's thinking time is not "
                    f"counted as the client's (tag tokens the server's parser eats before the first chunk "
                    f"still are: the null client's floor carries them too).")
    return Section("Token kinds per cell (warm medians)", sentence, t)


def connections(run: Run) -> Section:
    """Share of runs per client whose request opened a new TCP connection, with the client-side
    connect time; agents read each stream to its end, so a kept-alive connection is the norm."""
    d = _all(run)
    d = d[d["outcome"] == "ok"] if "outcome" in d else d
    if "new_connection" not in d:
        return Section("Connections per client", "These records predate the connection fields: whether a "
                       "request reconnected was not measured.")
    d = d.assign(new_connection=d["new_connection"].astype("boolean"))
    t = (d.groupby("agent").agg(runs=("run_id", "size"), reconnected=("new_connection", "sum"),
                                connect_ms_median=("connect_ms", "median"))
         .reset_index())
    t["reconnected"] = t["reconnected"].astype(int)
    t["reconnected_pct"] = 100 * t["reconnected"] / t["runs"]
    batches = d.groupby("agent")["batch_id"].nunique() if "batch_id" in d else None
    parts = []
    for r in t.itertuples():
        per = f" ({batches[r.agent]} processes)" if batches is not None else ""
        parts.append(f"{r.agent} {r.reconnected} of {r.runs} runs{per} ({r.reconnected_pct:.0f}%)")
    return Section("Connections per client", "Runs whose request opened a new TCP connection: " + "; ".join(parts)
                   + ". Each agent process opens one for its first run; more than that means a client closed a "
                   "connection it could have kept. The overhead over the null client's floor compares runs on "
                   "a kept-alive connection only (like with like).", t)


def per_chunk(run: Run) -> Section:
    """Tokens per chunk per agent, and ITL percentiles with the gaps they come from: labelled per
    chunk where chunks carried more than one token, withheld where there are too few gaps
    (MIN_GAPS: p99 needs 100)."""
    w = run.warm
    w = w.assign(gaps=gaps_per_run(w))
    rows = []
    for agent, g in w.groupby("agent"):
        tpc = g["tokens_per_chunk"].median()
        unit = "per token" if np.isclose(tpc, 1.0) else "per chunk"
        row = {"agent": agent, "runs": len(g), "tokens_per_chunk_median": tpc,
               "tokens_per_chunk_max": g["tokens_per_chunk"].max(), "itl_unit": unit,
               "gaps_per_run_median": g["gaps"].median()}
        for q, need in MIN_GAPS.items():
            ok = g["gaps"] >= need
            row[f"itl_{q}_ms"] = g.loc[ok, f"itl_{q}_ms"].median() if ok.any() else np.nan
            row[f"itl_{q}_runs"] = int(ok.sum())
        rows.append(row)
    t = pd.DataFrame(rows)
    if t.empty:
        return Section("Tokens per chunk and inter-chunk gaps", "No warm runs.")
    gaps = int(t["gaps_per_run_median"].median())
    parts = [f"{r.agent}: {r.tokens_per_chunk_median:.2f} tokens per chunk (max {r.tokens_per_chunk_max:.2f}), "
             f"gaps are {r.itl_unit}" for r in t.itertuples()]
    withheld = [q for q, need in MIN_GAPS.items() if gaps < need]
    note = (f" A run has a median {gaps} gaps: its {', '.join(withheld)} would be (nearly) its maximum, so "
            f"they are shown only for runs with at least {', '.join(str(MIN_GAPS[q]) for q in withheld)} gaps "
            f"(the _runs columns count them)." if withheld else "")
    return Section("Tokens per chunk and inter-chunk gaps (ITL percentiles with their sample)",
                   "; ".join(parts) + "." + note, t)


def factors_applied(run: Run) -> Section:
    """Each factor level against what the server did (langbench.analysis.verify)."""
    t = verify.factor_checks(run.df, run.processes, run.factors)
    if t.empty:
        return Section("Factors applied by the server", "No chimera batch to check.")
    why = verify.not_applied(t)
    counts = t["applied"].value_counts()
    unknown = counts.get(verify.UNKNOWN, 0)
    sentence = (f"{counts.get(verify.APPLIED, 0)} factor levels applied, {counts.get(verify.NOT_APPLIED, 0)} not, "
                f"{counts.get(verify.UNOBSERVABLE, 0)} accepted without an observable effect"
                + (f", {unknown} without evidence (no server state recorded: a run made before these checks)"
                   if unknown else "") + ". "
                + ("Not applied: " + "; ".join(why.values()) + "." if why else
                   "No checked factor was found not applied."))
    return Section("Factors applied by the server (checked after each batch)", sentence, t)
