"""Measurement validity: client against server, the null client's floor, drift, footprint, reloads, A/A."""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench import storage
from langbench.analysis import metrics, stats, stopping
from langbench.report import plots
from langbench.analysis.findings import LOWER, Run, language_claim, p_text
from langbench.report.sections import Section


def client_vs_server(run: Run) -> Section:
    w = run.warm
    t = (w.groupby("agent").agg(overhead_median_ms=("client_overhead_ms", "median"),
                                overhead_p95_ms=("client_overhead_ms", lambda x: x.quantile(0.95)),
                                decode_ratio_median=("decode_rate_ratio", "median"),
                                itl_p50_ms=("itl_p50_ms", "median"), itl_p99_ms=("itl_p99_ms", "median"),
                                itl_max_ms=("itl_max_ms", "max")).reset_index())
    from langbench.report.sections.streams import MIN_GAPS, gaps_per_run
    gaps = w.assign(gaps=gaps_per_run(w)).groupby("agent")["gaps"].median()
    t["itl_gaps_per_run"] = t["agent"].map(gaps)
    t.loc[t["itl_gaps_per_run"] < MIN_GAPS["p99"], "itl_p99_ms"] = np.nan  # the maximum, not a p99
    _, diff = language_claim(run, "client_overhead_ms", "ms", LOWER)
    parts = [f"{r.agent} adds a median {r.overhead_median_ms:.2f} ms (p95 {r.overhead_p95_ms:.2f}) to the "
             f"server's TTFT and sees {r.decode_ratio_median:.3f}× the server's decode rate" for r in t.itertuples()]
    return Section("Client vs server timing (Appendix C answered)", "; ".join(parts) + ". " + diff, t,
                   plots.overhead(w))


def drift(run: Run) -> Section:
    """Throughput over the run order, fitted with agent and mode terms: a common slope, and
    whether it differs between the agents or the modes (then the balanced order does not
    cancel it from their comparison)."""
    t, fit = stats.drift(run.warm, "throughput_tps")
    if fit is None:
        return Section("Drift over run order", "Too few batches to fit a drift.")
    parts = [f"{r.agent} {r.slope_tps_per_batch:+.4f} tok/s per batch ({p_text(r.p)})" for r in t.itertuples()]
    common = (f"A fit of throughput on order with agent × mode terms gives a common slope of "
              f"{fit['slope']:+.4f} tok/s per batch ({p_text(fit['slope_p'])}); it differs by agent "
              f"{p_text(fit['by_agent_p'])} and by mode {p_text(fit['by_mode_p'])}")
    if fit["by_agent_p"] < run.alpha or fit["by_mode_p"] < run.alpha:
        verdict = ("the drift is not the same for every agent and mode, so the balanced order does not spread it "
                   "evenly: comparisons between them carry part of it")
    elif fit["slope_p"] < run.alpha:
        verdict = "the drift is shared by every agent and mode, so the balanced (ABBA) order spreads it over them"
    else:
        verdict = f"no significant drift at α = {run.alpha}"
    return Section("Drift over run order", "Per agent: " + "; ".join(parts) + f". {common}: {verdict}.", t,
                   plots.drift(run.warm))


def footprint(run: Run) -> Section:
    """Each agent process's peak RSS, start-up, CPU per run, per token and per request (a turn
    of an agent task), and the aggregate token rate at which it would fill one core
    (metrics.cpu_per_work), medians per agent."""
    p = run.processes
    if p.empty:
        return Section("Process footprint", "No process measurements in this run.")
    p = metrics.cpu_per_work(p, run.attempts)
    cols = ["peak_rss_mib", "startup_ms", "cpu_s_per_run", "cpu_ms_per_token", "cpu_ms_per_request",
            "core_full_tps", "wall_s"]
    t = p.groupby("agent")[[c for c in cols if c in p]].median().reset_index()
    turn = "turn" if "turn" in run.df else "request"
    parts = [f"{r.agent}: peak RSS {r.peak_rss_mib:.1f} MiB, start-up {r.startup_ms:.1f} ms, "
             f"{1e3 * r.cpu_s_per_run:.1f} ms CPU per run"
             + (f", {1e3 * r.cpu_ms_per_token:.0f} µs CPU per token and {r.cpu_ms_per_request:.2f} ms per {turn}: "
                f"one core would be full at {r.core_full_tps:,.0f} tok/s across its streams"
                if "core_full_tps" in t and np.isfinite(r.core_full_tps) else "")
             for r in t.itertuples()]
    notes = []
    if "server_cpu_s" in p and p["server_cpu_s"].notna().any():
        busy = p["server_cpu_s"] / p["wall_s"]
        iso = run.manifest.get("isolation") or {}
        where = (f"Server and agents ran on disjoint CPUs ({iso['reason']})" if iso.get("applied") else
                 f"Server and agents shared the host's {int(p['host_cpus'].max())} logical CPUs "
                 f"({iso.get('reason', 'no pinning')})")
        notes.append(f"{where}: "
                     f"median host load {p['host_load_1m'].median():.2f} during batches; the embedded server used "
                     f"a median {busy.median():.2f} CPU-seconds per second of batch, the agents "
                     + ", ".join(f"{a} {((g['user_cpu_s'] + g['system_cpu_s']) / g['wall_s']).median():.2f}"
                                 for a, g in p.groupby("agent")) + ".")
    return Section("Process footprint (medians per agent process)", "; ".join(parts) + ".", t, notes=notes)


def reloads(run: Run) -> Section:
    ev = pd.DataFrame(storage.read_jsonl(run.run_dir / "events.jsonl"))
    if ev.empty:
        return Section("Unexpected reloads", "No warm run paid a reload (load_duration stayed near the warm median).")
    return Section("Unexpected reloads", f"{len(ev)} warm runs paid a reload where none was expected; "
                   "they are in the warm statistics and explain outliers there.", ev)



def client_floor(run: Run) -> Section:
    """Each agent's client overhead against the null client's, measured in the same run."""
    floor = metrics.warm(run.floor)
    if floor.empty:
        return Section("Client overhead over the null client's floor",
                       "This run has no null client (null_client: false), so client overhead is "
                       "reported against the server's own timings only.")
    base = metrics.warm(run.df[run.df["mode"] == "baseline"])
    like = ""
    if "new_connection" in floor and "new_connection" in base:  # like with like: no connect on either side
        kept = lambda d: d[d["new_connection"].astype("boolean").eq(False).fillna(False)]
        dropped = len(floor) + len(base) - len(kept(floor)) - len(kept(base))
        floor, base = kept(floor), kept(base)
        like = (f" Runs on a kept-alive connection only, on both sides ({dropped} runs that opened a connection "
                f"left out).")
        if floor.empty:
            return Section("Client overhead over the null client's floor",
                           "No null-client run reused a connection, so no like-with-like floor." + like)
    f = float(floor["client_overhead_ms"].median())
    rows = [{"client": "null (floor)", "runs": len(floor), "overhead_median_ms": f, "over_floor_ms": 0.0,
             "over_floor_ci_low": np.nan, "over_floor_ci_high": np.nan}]
    parts = []
    for agent, g in base.groupby("agent"):
        c = run.compare(g, floor, "client_overhead_ms", (agent, "null"))
        rows.append({"client": agent, "runs": len(g), "overhead_median_ms": float(g["client_overhead_ms"].median()),
                     "over_floor_ms": c.diff, "over_floor_ci_low": c.diff_ci_low, "over_floor_ci_high": c.diff_ci_high})
        parts.append(f"{agent} adds {c.diff:+.2f} ms [{c.diff_ci_low:+.2f}, {c.diff_ci_high:+.2f}] over the floor "
                     f"({c.verdict} at the ±{c.margin:g} ms margin)")
    sentence = (f"The null client (raw HTTP/1.1, a dict per line) sees a median {f:.2f} ms between the server's "
                f"load + prompt evaluation and its first token: the floor on this host. In the same baseline "
                f"batches, " + "; ".join(parts) + "." + like)
    return Section("Client overhead over the null client's floor", sentence, pd.DataFrame(rows))



# Every headline verdict's data (the verdict table's METRICS), so the A/A rows and the verdict
# use the same rows: (column, label, which rows).
AA_METRICS = tuple((value, label, which) for value, label, _unit, _better, which in stopping.HEADLINE)
RULES = {"delta": "per-config delta (Welch 95% CI of chimera − baseline)",
         "pooled": "language comparison (pooled batch means, Welch + margin)",
         "paired": "language comparison (paired over cells, t + margin)"}


SEQUENTIAL = ", sequential with the study's stopping (one A/A look per two rounds)"


def aa_rates(run: Run, value: str, data: pd.DataFrame | None = None) -> dict[str, dict]:
    """Each decision rule applied to this run's identical treatments (its baseline batches),
    over distinct splits: {"delta" | "pooled" | "paired": stats.rate_against(...) + "flagged"}.
    The delta rule is flagged when it says 'differs' more often than α beyond binomial noise;
    the language rules against their exact null reference (aa.reference through
    stopping.aa_rates: splits that share batches are not independent), the binomial interval
    kept for display only."""
    data = run.warm if data is None else data
    out = {}
    d = stats.aa_delta_pairs(data, value, run.factors, run.alpha)
    out["delta"] = stats.rate_against(int(d["differs"].sum()), len(d), run.alpha)
    out["delta"]["flagged"] = bool(out["delta"]["n"]) and out["delta"]["p_above"] < run.alpha
    ref = stopping.aa_rates(run, value, data)
    for rule in ("pooled", "paired"):
        r = ref[rule]
        out[rule] = {**stats.rate_against(r["k"], r["n"], run.alpha), "p_above": r["p_above"],
                     "null_mean_rate": r["null_mean_rate"], "flagged": r["flagged"],
                     "sequential": r.get("sequential", False)}
    return out


def deciding_rule(run: Run, value: str, data: pd.DataFrame | None = None) -> dict:
    """The language rule that decides `value`'s verdict in this run: the paired rule (per-cell
    differences) where it passed its A/A check, else the pooled rule where that passed, else
    none (the verdict is then 'undecided': no calibrated rule). A rule without A/A splits (too
    few cells or batches) counts as unchecked and is used only after a checked one.
    Returns {"rule": "paired" | "pooled" | None, "why": sentence, "rates": aa_rates(...)}."""
    rates = aa_rates(run, value, data)
    passed = [r for r in ("paired", "pooled") if rates[r]["n"] and not rates[r]["flagged"]]
    unchecked = [r for r in ("paired", "pooled") if not rates[r]["n"]]
    failed = [r for r in ("paired", "pooled") if rates[r]["flagged"]]
    rule = (passed or unchecked or [None])[0]
    said = lambda r: (f"the {r} rule called identical batches different in {rates[r]['k']}/{rates[r]['n']} "  # noqa: E731
                      f"A/A splits ({100 * rates[r]['rate']:.1f} %, above α = {run.alpha})")
    if rule is None:
        why = "no language rule passed its A/A check in this run (" + "; ".join(map(said, failed)) + \
              "), so no verdict is drawn"
    elif failed:
        why = f"the {rule} rule decides because " + "; ".join(map(said, failed))
    elif rule in unchecked:
        why = (f"the {rule} rule decides unchecked: this run has too few cells or batches for its A/A check "
               "(n = 0 splits), so its false-positive rate here is unknown")
    else:
        why = (f"the {rule} rule decides (it passed its A/A check: {rates[rule]['k']}/{rates[rule]['n']} "
               f"splits differ)")
    return {"rule": rule, "why": why, "rates": rates}


def aa_check(run: Run) -> Section:
    """Each decision rule on identical treatments (baseline vs baseline) of this run."""
    rows, decided = [], []
    for value, label, which in AA_METRICS:
        data = stopping.rows(run, which)
        if value not in data or data[value].notna().sum() == 0:
            continue
        rule = deciding_rule(run, value, data)
        decided.append(f"On {label}, {rule['why']}.")
        for key, r in rule["rates"].items():
            rows.append({"rule": RULES[key] + (SEQUENTIAL if r.get("sequential") else ""), "metric": label,
                         **{k: v for k, v in r.items() if k not in ("flagged", "sequential")},
                         "flag": ("unchecked: no A/A split" if not r["n"] else
                                  "above α beyond its null reference" if key != "delta" and r["flagged"] else
                                  "above α beyond binomial noise" if r["flagged"] else "")})
    t = pd.DataFrame(rows)
    flagged = t[t["flag"].str.startswith("above")]
    short = {"per-config delta": "per-config delta", "language comparison (pooled": "pooled language comparison",
             "language comparison (paired": "paired language comparison"}
    name = lambda rule: next(v for k, v in short.items() if rule.startswith(k))  # noqa: E731
    parts = [f"{name(r.rule)} on {r.metric}: {r.k}/{r.n} = {100 * r.rate:.1f}% "
             f"[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]" for r in t.itertuples() if r.n]
    if not parts:  # nothing to split: say so rather than pass every rule
        sentence = ("No A/A check was possible: this run has too few baseline batches per cell to split "
                    "identical treatments, so no rule's false-positive rate is known here and its verdicts "
                    "are decided unchecked.")
        return Section("A/A check: false-positive rate of each decision rule", sentence, t, notes=decided)
    sentence = (f"A/A check on this run's own baseline batches (identical treatments, α = {run.alpha}): "
                + "; ".join(parts) + ". "
                + (f"{len(flagged)} rule × metric combinations call identical treatments different more often "
                   f"than α allows (p < {run.alpha} against the binomial for the delta rule, against its exact "
                   "null reference for the language rules): their 'differs' verdicts in this run "
                   "are not to be trusted at face value." if len(flagged) else
                   "No rule exceeds α beyond its binomial noise."))
    if t["rule"].str.endswith(SEQUENTIAL).any():
        rounds = int(run.warm["batch_id"].map(stopping.round_of).max())
        sentence += (f" This study is sequential, so its language rules' A/A applies the sequential rule with the "
                     f"study's stopping: {rounds} rounds ran, which give {rounds // 2} A/A look(s) of two rounds each.")
    return Section("A/A check: false-positive rate of each decision rule", sentence, t, notes=decided)


def worker_sections(run: Run) -> list[Section]:
    """A study run on several Dask workers (`--cluster`): per-worker results, the worker effect
    and the A/A check within and across workers; [] for a run on one server."""
    workers = run.workers()
    if len(workers) < 2:
        return []
    return [worker_results(run), aa_workers(run)]


def worker_results(run: Run) -> Section:
    """Each worker's batches and warm results per agent, and the worker effect (batch means
    blocked by cell: OLS cell + worker, type-II F test)."""
    w = run.warm
    gpus = {x["worker"]: (x.get("gpu") or {}).get("name") for x in run.manifest.get("workers", [])}
    t = (w.groupby(["worker", "agent"])
         .agg(batches=("batch_id", "nunique"), runs=("run_id", "size"),
              throughput_tps=("throughput_tps", "mean"), ttft_ms=("ttft_ms", "median"))
         .reset_index())
    t.insert(1, "gpu", t["worker"].map(gpus).fillna("CPU"))
    parts = []
    for value, label, unit in (("throughput_tps", "throughput", "tok/s"), ("ttft_ms", "TTFT", "ms")):
        e = stats.worker_effect(w, value)
        if np.isfinite(e["p"]):
            parts.append(f"on {label} the workers differ by {e['spread']:.2f} {unit} (largest − smallest, "
                         f"cell-adjusted; F = {e['F']:.2f}, {p_text(e['p'])}: "
                         f"{'a worker effect' if e['p'] < run.alpha else 'no worker effect shown'})")
        elif not e["linked"]:
            parts.append(f"on {label} no worker effect can be separated: the workers share no cell, so a "
                         "worker's effect and its cells' are one")
        else:
            parts.append(f"on {label} too few batches to separate a worker effect")
    sentence = (f"{len(run.workers())} workers ran this study, one server each; each config's batches of a "
                f"round ran on one worker, so the worker is a block and the paired language comparisons "
                f"pair within each worker. Batch means modelled as cell + worker: " + "; ".join(parts) + ".")
    return Section("Workers: one server each, a block of the design", sentence, t)


def aa_workers(run: Run) -> Section:
    """The paired language rule on identical treatments, its two batches from one worker
    (within) or from two (across): a worker effect shows as a higher rate across."""
    rows = []
    for value, label in (("throughput_tps", "throughput"), ("ttft_ms", "TTFT")):
        base = run.warm[run.warm["mode"] == "baseline"]
        margin = run.margin_for(value, float(base[value].mean())) if len(base) else 0.0
        for pairing in ("within", "across"):
            s = stats.aa_paired_splits(run.warm, value, margin, run.alpha, pairing=pairing)
            r = stats.rate_against(int(s["differs"].sum()) if len(s) else 0, len(s), run.alpha)
            rows.append({"pairs": f"{pairing} workers", "metric": label, **r})
    t = pd.DataFrame(rows)
    done = t[t["n"] > 0]
    sentence = ("A/A check of the paired language rule with both batches from one worker, or from two: "
                + ("; ".join(f"{r.pairs} on {r.metric}: {r.k}/{r.n} = {100 * r.rate:.1f}% "
                             f"[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]" for r in done.itertuples())
                   if len(done) else "not enough batches per cell and worker (three cells with two "
                   "batches on one worker, or on two workers, are needed)") + ".")
    return Section("A/A check within and across workers", sentence, t)
