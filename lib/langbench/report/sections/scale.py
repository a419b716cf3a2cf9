"""Sessions at scale (issue 41): the scale notebook's sections and the index's knees.

The numbers come from langbench.analysis.scale (per batch, per client × endpoint × N, knees,
the SDK/language split); here they become tables with human headers, figures and sentences
built from them. Batches the replay server ran late in (flagged) are described but decide
nothing: no knee, no split, no comparison, unless a notebook asks for indicative numbers
(`include_flagged`), and then every decision says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import scale
from langbench.analysis.findings import Run
from langbench.report import plots
from langbench.report.sections import Section

CLIENT_NAMES = {"python": "Python (SDK)", "python-tuned": "Python tuned (aiohttp + uvloop)",
                "python-raw": "Python raw (no SDK)", "rust": "Rust"}
THRESHOLD_WORDS = {0.01: "1 %", 0.05: "5 %"}
# what a client's added time per turn is (analysis/scale.py's module docstring), by its basis
ADDED_WORDS = {scale.STAMPS: "where the server stamps its chunks (the replay server), its send delay (from its t0 "
                             "to the server's having the whole request) plus its lag behind the server at its "
                             "worst chunk",
               scale.FLOOR: "where the server stamps nothing, the turn's e2e inflation over the Rust agent's median "
                            "at the same endpoint and N (the floor: Rust itself has no knee there)"}


def added_words(b: pd.DataFrame) -> str:
    """What a client's added time per turn is in this run: the definition of each basis its
    batches have (both where it has both, or none yet)."""
    bases = set(b["added_basis"].dropna()) if "added_basis" in b else set()
    if "mixed" in bases or not bases:
        bases = set(ADDED_WORDS)
    return "A client's added time per turn is, " + "; and ".join(w for k, w in ADDED_WORDS.items() if k in bases) + "."


def _client(agent: str) -> str:
    return CLIENT_NAMES.get(agent, agent)


def _order(df: pd.DataFrame) -> pd.DataFrame:
    key = {a: i for i, a in enumerate(scale.CLIENTS)}
    cols = [c for c in ("endpoint", "agent", "concurrency", "threshold") if c in df]
    return df.sort_values(cols, key=lambda s: s.map(lambda a: key.get(a, 99)) if s.name == "agent" else s)


def _ci_text(mean: float, lo: float, hi: float, fmt: str = "{:,.1f}") -> str:
    if not np.isfinite(mean):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return fmt.format(mean) + " (no CI)"
    return f"{fmt.format(mean)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def study(run: Run, include_flagged: bool = False) -> pd.DataFrame:
    """The run's load batches (analysis.scale.batches). include_flagged: the flagged batches
    decide too, for indicative numbers (every decision then says so)."""
    b = scale.batches(run)
    if include_flagged and len(b):
        b = b.assign(flagged_by_server=b["flagged"], flagged=False)
    elif len(b):
        b = b.assign(flagged_by_server=b["flagged"])
    return b


def described(b: pd.DataFrame) -> pd.DataFrame:
    """Per client × endpoint × N over every batch that did not fail, flagged ones included (they
    are described, not decisive): analysis.scale.cells."""
    return scale.cells(b)


def _indicative(b: pd.DataFrame) -> str:
    if len(b) and "flagged_by_server" in b and (b["flagged_by_server"] & ~b["flagged"]).any():
        return (" Indicative only: the batches the replay server ran late in are counted here "
                "(include_flagged), so nothing below decides.")
    return ""


def _none() -> Section:
    return Section("Sessions at scale", "This run has no closed-loop load batches (a parameter file sets them "
                                        "with `concurrency: [1, …, 1024]`).")


def replay_sentence(manifest: dict) -> str:
    """What the server was when it was a replay, and what that means for the findings; '' else."""
    r = manifest.get("replay")
    if not r:
        return ""
    src = r.get("source") or {}
    what = ", ".join(str(x) for x in (f"{src.get('server_kind', '?')} {src.get('server_version', '')}".strip(),
                                      src.get("model"), src.get("host_cpu")) if x)
    return (f"A replay run: the server was langbench's replay server streaming the captured run "
            f"{src.get('run_id', '?')} ({what}) {r.get('time_scale', 1):g}× faster, load {r.get('load', '?')}, with "
            f"its own lateness p99 bound of {scale.lateness_bound_ms(manifest):g} ms. It answers questions about "
            "clients only: no server-side finding comes from this run.")


def overview(run: Run, b: pd.DataFrame) -> Section:
    if b.empty:
        return _none()
    ns = sorted(b["concurrency"].unique())
    bound = scale.lateness_bound_ms(run.manifest)
    failed, flagged = b[b["failed"]], b[b.get("flagged_by_server", b["flagged"])]
    sentence = (f"{len(b)} load batches, one agent process each: clients "
                f"{', '.join(_client(a) for a in _order(b[['agent']].drop_duplicates())['agent'])} on "
                f"{', '.join(sorted(b['endpoint'].unique()))}, N = {', '.join(str(int(n)) for n in ns)} sessions; "
                f"{len(failed)} failed (no measured record ended ok)")
    sentence += (f", {len(flagged)} flagged (the replay server's own lateness p99 above {bound:g} ms: they "
                 "decide no knee and no comparison)." if bound is not None else
                 "; the server is not a replay, so no chunk carries a send stamp to measure lag against: each "
                 "client's added time is its inflation over the Rust agent's median (the floor).")
    notes = [n for n in (replay_sentence(run.manifest), _indicative(b).strip()) if n]
    t = (b.groupby(["endpoint", "agent"])
         .agg(batches=("batch_id", "size"), failed=("failed", "sum"),
              flagged=("flagged_by_server" if "flagged_by_server" in b else "flagged", "sum"),
              records=("requests", "sum"), ok=("ok", "sum"))
         .reset_index())
    t = _order(t)
    t["agent"] = t["agent"].map(_client)
    t.columns = ["endpoint", "client", "batches", "failed batches", "flagged batches", "measured records",
                 "ok records"]
    return Section("Sessions at scale: what ran", sentence, t, notes=notes)


def throughput(run: Run, c: pd.DataFrame) -> Section:
    if c.empty:
        return _none()
    parts = []
    for (endpoint, agent), g in _order(c).groupby(["endpoint", "agent"], sort=False):
        top = g.loc[g["concurrency"].idxmax()]
        parts.append(f"{_client(agent)} on {endpoint}: {top.tps_received:,.0f} of {top.tps_offered:,.0f} tok/s "
                     f"offered at N = {int(top.concurrency)} ({100 * top.tps_received / top.tps_offered:.0f} %)")
    sentence = ("Tokens per second received by one agent process against what the server offered (N × the "
                "per-session rate at the lowest N, best client; the replay server's per-session timing does not "
                "depend on N under load: ideal): " + "; ".join(parts) + ".")
    t = _order(c)[["endpoint", "agent", "concurrency", "batches", "tps_offered", "tps_received",
                   "tps_received_ci_low", "tps_received_ci_high"]].copy()
    t["agent"] = t["agent"].map(_client)
    t["share"] = 100 * t["tps_received"] / t["tps_offered"]
    t.columns = ["endpoint", "client", "sessions asked (N)", "batches", "offered (tok/s)", "received (tok/s)",
                 "received CI low (tok/s)", "received CI high (tok/s)", "received of offered (%)"]
    return Section("Tokens per second: received against offered", sentence, t, plots.scale_throughput(c),
                   caption="Mean over batches per client, shaded: bootstrap 95 % CI over batches; dashed: offered.")


ADDED_COLUMNS = {"ttft_added_ms": "TTFT inflation (ms)", "ttft_added_ms_ci_low": "TTFT inflation CI low (ms)",
                 "ttft_added_ms_ci_high": "TTFT inflation CI high (ms)", "added_ms": "added per turn (ms)",
                 "added_share": "added share per turn (%)", "added_share_ci_low": "added share CI low (%)",
                 "added_share_ci_high": "added share CI high (%)"}


def _added_table(c: pd.DataFrame, lag_columns: dict[str, str]) -> pd.DataFrame:
    cols = {"endpoint": "endpoint", "agent": "client", "concurrency": "sessions asked (N)", "batches": "batches",
            **lag_columns, **ADDED_COLUMNS}
    t = _order(c)[list(cols)].copy()
    t["agent"] = t["agent"].map(_client)
    for col in ("added_share", "added_share_ci_low", "added_share_ci_high"):
        t[col] = 100 * t[col]
    return t.rename(columns=cols)


def lag(run: Run, c: pd.DataFrame) -> Section:
    if c.empty:
        return _none()
    if c["lag_p50_ms"].notna().sum() == 0:
        parts = [f"{_client(agent)} on {endpoint}: {hi.added_ms:.1f} ms a turn ({100 * hi.added_share:.1f} %) at "
                 f"N = {int(hi.concurrency)}"
                 for (endpoint, agent), g in _order(c).groupby(["endpoint", "agent"], sort=False)
                 if agent != scale.RUST and g["added_ms"].notna().any()
                 for hi in [g.loc[g.loc[g["added_ms"].notna(), "concurrency"].idxmax()]]]
        sentence = ("No record carries a lag: the server stamps no chunk (only the replay server does), so the lag "
                    "per chunk is not measurable here. Each client's added time per turn is the turn's e2e "
                    "inflation over the Rust agent's median at the same endpoint and N (the floor; Rust's own "
                    "is its spread around it), and its TTFT inflation likewise"
                    + (": " + "; ".join(parts) + "." if parts else "."))
        return Section("The client's added time over the Rust floor, and TTFT inflation", sentence,
                       _added_table(c, {}))
    parts = []
    for (endpoint, agent), g in _order(c).groupby(["endpoint", "agent"], sort=False):
        lo, hi = g.loc[g["concurrency"].idxmin()], g.loc[g["concurrency"].idxmax()]
        send = f", send delay {hi.lag_send_ms:.2f} ms there" if np.isfinite(hi.lag_send_ms) else ""
        parts.append(f"{_client(agent)} on {endpoint}: p50 {lo.lag_p50_ms:.2f} ms at N = {int(lo.concurrency)}, "
                     f"{hi.lag_p50_ms:.2f} ms (p99 {hi.lag_p99_ms:.2f} ms) at N = {int(hi.concurrency)}{send}")
    sentence = ("The client's lag behind the replay server's send stamp per chunk, and its send delay (from its t0 "
                "to the server's having the whole request, the server's arrival stamp), each the median over a "
                "batch's records, mean over batches: " + "; ".join(parts) + ". " + added_words(c) + " The TTFT "
                "inflation is the same at the first chunk (on stamps: the send delay plus the lag at the first "
                "chunk), and the added share is the added time over the turn's time.")
    t = _added_table(c, {"lag_p50_ms": "lag p50 (ms)", "lag_p99_ms": "lag p99 (ms)",
                         "lag_first_ms": "lag at first chunk (ms)", "lag_send_ms": "send delay (ms)"})
    return Section("The client's lag per chunk, its send delay, and TTFT inflation", sentence, t, plots.scale_lag(c),
                   caption="Lag p50 (solid) and p99 (dotted) per chunk, mean over batches; both axes log.")


def reached(run: Run, c: pd.DataFrame) -> Section:
    if c.empty:
        return _none()
    top = c[c["concurrency"] == c["concurrency"].max()]
    parts = [f"{_client(r.agent)} on {r.endpoint} {r.in_flight_mean:.1f} (max {r.in_flight_max:.0f})"
             for r in _order(top).itertuples()]
    sentence = (f"Sessions actually in flight, time-weighted over each batch's measured span (first request sent "
                f"to last chunk, so ramp-up and tail count against it), at N = {int(top['concurrency'].iloc[0])}: "
                + "; ".join(parts) + ".")
    t = _order(c)[["endpoint", "agent", "concurrency", "in_flight_mean", "in_flight_mean_ci_low",
                   "in_flight_mean_ci_high", "in_flight_max", "reached"]].copy()
    t["agent"] = t["agent"].map(_client)
    t["reached"] = 100 * t["reached"]
    t.columns = ["endpoint", "client", "sessions asked (N)", "in flight, mean", "in flight CI low",
                 "in flight CI high", "in flight, max", "reached of asked (%)"]
    return Section("Concurrency reached", sentence, t)


def footprint(run: Run, c: pd.DataFrame) -> Section:
    if c.empty:
        return _none()
    parts = []
    for (endpoint, agent), g in _order(c).groupby(["endpoint", "agent"], sort=False):
        lo, hi = g.loc[g["concurrency"].idxmin()], g.loc[g["concurrency"].idxmax()]
        parts.append(f"{_client(agent)} on {endpoint}: {1e3 * lo.cpu_ms_per_token:.0f} µs per token at N = "
                     f"{int(lo.concurrency)}, {1e3 * hi.cpu_ms_per_token:.0f} µs at N = {int(hi.concurrency)}, "
                     f"peak RSS {hi.peak_rss_mib:.0f} MiB")
    sentence = ("The agent process's own CPU (user + system, start-up apart) per token and per turn, and its "
                "peak RSS: " + "; ".join(parts) + ".")
    t = _order(c)[["endpoint", "agent", "concurrency", "cpu_ms_per_token", "cpu_ms_per_token_ci_low",
                   "cpu_ms_per_token_ci_high", "cpu_ms_per_turn", "peak_rss_mib"]].copy()
    t["agent"] = t["agent"].map(_client)
    for col in ("cpu_ms_per_token", "cpu_ms_per_token_ci_low", "cpu_ms_per_token_ci_high"):
        t[col] = 1e3 * t[col]
    t.columns = ["endpoint", "client", "sessions asked (N)", "CPU per token (µs)", "CPU per token CI low (µs)",
                 "CPU per token CI high (µs)", "CPU per turn (ms)", "peak RSS (MiB)"]
    return Section("CPU per token and per turn, and memory", sentence, t)


def knee_rows(b: pd.DataFrame) -> pd.DataFrame:
    """The knees table for people (notebook and index): one row per endpoint × client, the knee
    at 1 % and at 5 % with the aggregate tok/s received there and its CI."""
    k = scale.knee_table(b)
    if k.empty:
        return pd.DataFrame()
    rows = []
    for (endpoint, agent), g in _order(k).groupby(["endpoint", "agent"], sort=False):
        row = {"endpoint": endpoint, "client": _client(agent)}
        for r in g.itertuples():
            w = THRESHOLD_WORDS.get(r.threshold, f"{100 * r.threshold:g} %")
            row[f"knee at {w}: sessions"] = r.knee
            row[f"knee at {w}: tok/s received [95 % CI]"] = (
                _ci_text(r.tps_received, r.tps_received_ci_low, r.tps_received_ci_high, "{:,.0f}")
                if pd.notna(r.knee_n) else "–")
        rows.append(row)
    return pd.DataFrame(rows)


def knees(run: Run, b: pd.DataFrame) -> Section:
    if b.empty:
        return _none()
    t = knee_rows(b)
    k = scale.knee_table(b)
    found = k[k["knee_n"].notna()]
    parts = [f"{_client(r.agent)} on {r.endpoint} passes {THRESHOLD_WORDS.get(r.threshold, r.threshold)} at "
             f"N = {int(r.knee_n)} ({r.tps_received:,.0f} tok/s)" for r in _order(found).itertuples()]
    sentence = ("A client's knee is the smallest N whose added share per turn (its added time over the turn's time, "
                "median per batch) has its 95 % CI lower bound over batches above 1 % (or 5 %); batches the replay "
                f"server ran late in do not count. {added_words(b)} "
                + ("; ".join(parts) + "." if parts else "No client passes either threshold in the N this run "
                                                       "covers, or none could be decided (see the table)."))
    return Section("Each client's knee", sentence + _indicative(b), t)


def split_section(run: Run, b: pd.DataFrame, value: str = scale.SPLIT_VALUE) -> Section:
    if b.empty:
        return _none()
    margin = run.margins["overhead_ms"]
    s = scale.split(scale.cells(b, decided_only=True), value, margin)
    label = scale.SPLIT_LABELS.get(value, value)
    if s.empty:
        return Section("Is it the language or the SDK?", f"No batch decides: nothing to split ({label})."
                       + _indicative(b))
    done = s[s["sdk_share"].notna()]
    parts = [f"{r.endpoint}, N = {r.concurrency}: gap {r.gap:.2f} ms, SDK {100 * r.sdk_share:.0f} %, language "
             f"{100 * r.language_share:.0f} %, the tuned transport removes {100 * r.tuned_share:.0f} %"
             for r in done.itertuples()]
    sentence = (f"The gap is Python (SDK) − Rust in {label}, mean over batches; the SDK's share is (Python − "
                f"Python raw) / gap, the language's (Python raw − Rust) / gap, the tuned client's (Python − Python "
                f"tuned) / gap; no shares where the gap is within the ±{margin:g} ms margin. "
                + ("; ".join(parts) + "." if parts else "No load point has a gap beyond the margin to split."))
    t = s.copy()
    for col in ("sdk_share", "language_share", "tuned_share"):
        t[col] = 100 * t[col]
    t.columns = ["endpoint", "sessions asked (N)", "Python (ms)", "Python tuned (ms)", "Python raw (ms)",
                 "Rust (ms)", "gap Python − Rust (ms)", "SDK share (%)", "language share (%)",
                 "removed by tuning (%)", "note"]
    return Section("Is it the language or the SDK?", sentence + _indicative(b), t)


def languages(run: Run, b: pd.DataFrame, value: str = scale.SPLIT_VALUE) -> Section:
    if b.empty:
        return _none()
    margin = run.margins["overhead_ms"]
    t = scale.compare_at_each_n(b, value, margin, run.alpha)
    label = scale.SPLIT_LABELS.get(value, value)
    if t.empty:
        return Section("Python and Rust at each N", "No load point where both clients ran." + _indicative(b))
    counts = t[t["a"] == "python"]["verdict"].value_counts()
    sentence = (f"Python (SDK) against Rust, and Python raw against Rust (the language alone), on {label}, batches "
                f"as units: Welch, TOST within the ±{margin:g} ms margin fixed in the parameter file; "
                f"differs in {sum(v for k, v in counts.items() if k.endswith('higher'))}, equivalent in "
                f"{counts.get('equivalent', 0)}, inconclusive in {counts.get('inconclusive', 0)} of the "
                f"{int(counts.sum())} Python–Rust load points; flagged batches decide none.")
    out = t.copy()
    # more is worse: "python higher" means Rust is the better client here
    less = "lags less" if value.startswith("lag_") else "adds less"
    out["verdict"] = [f"{_client(r.b if v == f'{r.a} higher' else r.a)} {less}" if v.endswith(" higher") else v
                      for r, v in zip(out.itertuples(), out["verdict"])]
    out["a"], out["b"] = out["a"].map(_client), out["b"].map(_client)
    out = out[["endpoint", "concurrency", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "diff", "diff_ci_low",
               "diff_ci_high", "welch_p", "tost_p", "margin", "verdict"]]
    out.columns = ["endpoint", "sessions asked (N)", "client a", "client b", "batches a", "batches b", "a (ms)",
                   "b (ms)", "a − b (ms)", "CI low (ms)", "CI high (ms)", "Welch p", "TOST p", "margin (ms)",
                   "verdict"]
    return Section("Python and Rust at each N", sentence + _indicative(b), out)


def flagged(run: Run, b: pd.DataFrame) -> Section:
    if b.empty:
        return _none()
    was = b.get("flagged_by_server", b["flagged"])
    f = b[was | b["failed"]]
    if f.empty:
        return Section("Flagged and failed batches", "No batch failed, and the replay server kept within its "
                       "lateness bound in every batch.")
    t = f[["batch_id", "endpoint", "agent", "concurrency", "failed", "server_late_p99_ms", "error"]].copy()
    t["flag"] = np.where(t["failed"], "failed", "server late")
    t["agent"] = t["agent"].map(_client)
    t["error"] = t["error"].fillna("")
    t = t[["batch_id", "endpoint", "agent", "concurrency", "flag", "server_late_p99_ms", "error"]]
    t.columns = ["batch", "endpoint", "client", "sessions asked (N)", "why", "server lateness p99 (ms)", "error"]
    bound = scale.lateness_bound_ms(run.manifest)
    sentence = (f"{int(b['failed'].sum())} batches failed and {int((was & ~b['failed']).sum())} ran with the "
                f"replay server late"
                + (f" (its own lateness p99 above {bound:g} ms)" if bound is not None else "")
                + ": described above, deciding nothing.")
    return Section("Flagged and failed batches", sentence, t)


# --- the index's first screen --------------------------------------------------------------

def load_claims(run: Run, b: pd.DataFrame) -> pd.DataFrame:
    """TR112's "language matters less than expected", judged at each endpoint × N: supported
    where Python and Rust are equivalent on the client's added time per turn (send delay
    included; over the Rust floor where the server stamps nothing), contradicted where a knee
    separates them there (one has passed 1 % or 5 %, the other has not), not shown otherwise."""
    if b.empty:
        return pd.DataFrame()
    cmp = scale.compare_at_each_n(b, scale.SPLIT_VALUE, run.margins["overhead_ms"], run.alpha,
                                  pairs=((scale.PYTHON, scale.RUST),))
    k = scale.knee_table(b)
    rows = []
    for r in cmp.itertuples():
        t = scale.separated(k, r.endpoint, r.concurrency)
        if t is not None:
            verdict = "contradicted"
            why = f"a knee at {THRESHOLD_WORDS.get(t, t)} of a turn's time separates them at this N"
        elif r.verdict == "equivalent":
            verdict, why = ("supported", f"added time per turn equivalent within ±{r.margin:g} ms "
                                         f"(TOST p = {r.tost_p:.3f})")
        else:
            verdict, why = "not shown", f"added time per turn comparison: {r.verdict}; no knee separates them"
        measured = (f"added {r.mean_a:.2f} (Python) vs {r.mean_b:.2f} ms (Rust) a turn" if np.isfinite(r.mean_a)
                    else "no batch decides")
        rows.append({"endpoint": r.endpoint, "sessions (N)": int(r.concurrency), "measured": measured,
                     "verdict": verdict, "why": why})
    return pd.DataFrame(rows)
