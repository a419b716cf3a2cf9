"""Sessions at scale (issue 41): N sessions in one agent process, per batch and per client ×
endpoint × N, each client's knee, and how much of a knee is the SDK's and how much the
language's.

A batch is one agent process (one client × endpoint × N × mode); its measured records overlap in
time, so the batch is the unit, and every CI here is a bootstrap 95 % CI over batches
(stats.mean_ci). Per batch:

- sessions in flight: the measured records' [t0, t0 + e2e] intervals over the batch's measured
  span (first request sent to last chunk), time-weighted mean (Σ e2e / span) and max (a sweep
  over the interval ends); `reached` = mean in flight / N asked;
- tok/s received = Σ eval_count / measured span; tok/s offered = N × the per-session rate
  (Σ eval_count / Σ e2e) at the endpoint's lowest N, best client: under `load: ideal` the
  replay server's per-session timing does not depend on N, so that is what it offered at N;
- the client's lag behind the server's send stamp per chunk (record `lag_ms`): p50, p99 and at
  the first chunk, and its send delay (`lag_ms.send`: the server's arrival stamp, the instant it
  had the whole request, less the client's t0), each the median over the batch's records;
- the client's added time per turn, `added_ms`, and its TTFT inflation, `ttft_added_ms`, each the
  median over the batch's turns. Where the server stamps its chunks (the replay server: send and
  arrival stamps) they are measured per turn: added = lag_ms.send + lag_ms.max (getting the request
  to the server, then the lag at the worst chunk), TTFT inflation = lag_ms.send + lag_ms.first.
  The lag alone misses the send: the official Python SDK at 1,024 sessions on /api/chat lagged
  31 ms at its first chunk while its TTFT was 4.4 s against 47 ms at N = 1, the request queued in
  the client before the server had it. Where the server stamps nothing (a real server, e.g. a
  llama-server on a GPU: issue 42; or a replay run from before the arrival stamp), they are the
  turn's e2e (and TTFT) inflation over the Rust agent's median at the same endpoint and N (and
  mode; its ok measured turns in batches not flagged): the floor there. The Rust agent is then the
  floor itself, so it has no knee of its own ("the floor"), and the others' added time includes
  whatever Rust adds at that N. `added_basis` says which (stamps, floor; mixed where a batch has
  both);
- added share per turn = added_ms / e2e_ms, the median over the batch's turns;
- CPU per token and per turn: the agent process's user + system CPU (start-up apart) over its
  tokens and over its requests (metrics.cpu_per_work), and its peak RSS;
- flagged: the replay server's own lateness p99 in that batch (processes.jsonl `replay`) above
  the run's bound (manifest `replay.lateness_p99_ms`): the server did not send what was asked,
  so a flagged batch decides no comparison and no knee (it is still described);
- failed: no measured record ended ok (e.g. a client that refused the endpoint): listed apart.

Knee: for each client × endpoint, the smallest N whose added-share CI lower bound is above
1 % (and 5 %) of a turn's time, with the aggregate tok/s received there (mean, CI); "none up to
N_max" where no N passes, "not decided" where a load point below N_max has no CI (fewer than
three batches not flagged) and none passes, "the floor" for the Rust agent where the added time
is measured against it. The knee rule's look before each load level (decided_below) reads the
same added share.

SDK vs language: at each N, gap = python − rust in the split metric (the client's added time per
turn, send included, unless told otherwise), SDK share = (python − python-raw) / gap, language
share = (python-raw − rust) / gap, and the tuned client's share = (python − python-tuned) / gap
(how much of the gap the tuned transport removes); no shares where the gap is within the margin.
The language comparison at each N (compare_at_each_n) is on the same value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import metrics, stats

THRESHOLDS = (0.01, 0.05)
PYTHON, TUNED, RAW, RUST = "python", "python-tuned", "python-raw", "rust"
CLIENTS = (PYTHON, TUNED, RAW, RUST)
MIN_BATCHES_CI = 3  # a bootstrap percentile CI over fewer batches is no interval
LAG_FIELDS = {"send": "lag_send_ms", "first": "lag_first_ms", "p50": "lag_p50_ms", "p99": "lag_p99_ms",
              "max": "lag_max_ms"}
# the per-batch values described per client × endpoint × N
VALUES = ("tps_received", "in_flight_mean", "in_flight_max", "reached", "lag_p50_ms", "lag_p99_ms",
          "lag_first_ms", "lag_send_ms", "added_ms", "ttft_added_ms", "added_share", "ttft_p50_ms",
          "cpu_ms_per_token", "cpu_ms_per_turn", "peak_rss_mib")
SPLIT_VALUE = "added_ms"  # what the SDK/language split and the comparisons at each N use unless told
SPLIT_LABELS = {"added_ms": "the client's added time per turn (send delay + lag at its worst chunk, or the "
                            "e2e inflation over the Rust floor where the server stamps nothing)",
                "ttft_added_ms": "the client's TTFT inflation (send delay + lag at the first chunk, or over the "
                                 "Rust floor where the server stamps nothing)",
                "lag_send_ms": "the client's send delay (t0 to the server's having the whole request)",
                "lag_p50_ms": "the client's lag p50 per chunk", "lag_first_ms": "the client's lag at the first chunk",
                "lag_p99_ms": "the client's lag p99 per chunk"}
STAMPS, FLOOR = "stamps", "floor"  # added_basis: measured on the server's stamps, or over the Rust floor


def in_flight(starts, ends) -> tuple[float, int, float]:
    """Sessions in flight over [min start, max end]: (time-weighted mean, max, span in s).
    An interval that ends where another starts does not overlap it."""
    s, e = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
    keep = np.isfinite(s) & np.isfinite(e) & (e >= s)
    s, e = s[keep], e[keep]
    if len(s) == 0:
        return float("nan"), 0, float("nan")
    span = float(e.max() - s.min())
    # ends before starts at the same instant: touching intervals are not concurrent
    times = np.concatenate([e, s])
    steps = np.concatenate([-np.ones(len(e)), np.ones(len(s))])
    order = np.lexsort((steps, times))
    peak = int(np.cumsum(steps[order]).max())
    mean = float((e - s).sum() / span) if span > 0 else float(len(s))
    return mean, peak, span


def with_lag(df: pd.DataFrame) -> pd.DataFrame:
    """The records with their `lag_ms` dict as columns lag_send_ms, lag_first_ms … lag_max_ms
    (NaN where a record has none: a real server stamps no chunk), and, where the server stamped
    both the sends and the arrival, the added time measured on them (module docstring):
    added_ms = send + max, ttft_added_ms = send + first, added_share = added_ms / e2e_ms,
    added_basis "stamps". The other records' are NaN (basis None) until with_floor."""
    df = df.copy()
    if "lag_ms" in df:  # a frame made from raw records (metrics.frame flattens it already)
        lag = df["lag_ms"]
        for key, col in LAG_FIELDS.items():
            df[col] = pd.to_numeric([(v or {}).get(key) if isinstance(v, dict) else np.nan for v in lag],
                                    errors="coerce")
    for col in LAG_FIELDS.values():
        df[col] = pd.to_numeric(df[col], errors="coerce") if col in df else np.nan
    stamped = df["lag_send_ms"].notna() & df["lag_max_ms"].notna()
    df["added_ms"] = (df["lag_send_ms"] + df["lag_max_ms"]).where(stamped)
    df["ttft_added_ms"] = (df["lag_send_ms"] + df["lag_first_ms"]).where(stamped)
    df["added_basis"] = pd.Series(np.where(stamped, STAMPS, None), index=df.index, dtype=object)
    return _share(df)


def _share(df: pd.DataFrame) -> pd.DataFrame:
    e2e = pd.to_numeric(df["e2e_ms"], errors="coerce")
    df["added_share"] = df["added_ms"] / e2e.where(e2e > 0)
    return df


def with_floor(df: pd.DataFrame, exclude=()) -> pd.DataFrame:
    """The records without stamped added time (with_lag) get it over the floor: the turn's e2e
    and TTFT less the Rust agent's medians at the same endpoint × N × mode (its ok measured
    turns, batches in `exclude` apart; at endpoint × N where Rust ran no turn of that mode), basis
    "floor"; NaN where Rust has no turn there."""
    df = with_lag(df) if "added_basis" not in df else df.copy()
    need = df["added_basis"].isna()
    if not need.any():
        return df
    e2e = pd.to_numeric(df["e2e_ms"], errors="coerce")
    ttft = pd.to_numeric(df["ttft_ms"], errors="coerce")
    rust = (df["agent"] == RUST) & ~df["batch_id"].isin(list(exclude))
    for col, want in (("phase", "measured"), ("outcome", "ok")):
        if col in df:
            rust &= df[col] == want
    floors = pd.DataFrame({"e2e": e2e, "ttft": ttft})
    coarse_keys = ["endpoint", "concurrency"]
    keys = coarse_keys + (["mode"] if "mode" in df else [])
    kf = df[keys].astype(object)
    kf = kf.where(kf.notna(), "")  # a missing mode is a key of its own
    floor = pd.DataFrame(np.nan, index=df.index, columns=["e2e", "ttft"])
    for ks in (keys, coarse_keys):  # the finest key Rust ran at first
        if not rust.any():
            break
        med = floors[rust].groupby([kf.loc[rust, k] for k in ks]).median()
        got = med.reindex(pd.MultiIndex.from_frame(kf[ks]))
        floor = floor.fillna(pd.DataFrame(got.to_numpy(), index=df.index, columns=["e2e", "ttft"]))
    df.loc[need, "added_ms"] = (e2e - floor["e2e"])[need]
    df.loc[need, "ttft_added_ms"] = (ttft - floor["ttft"])[need]
    df.loc[need, "added_basis"] = FLOOR
    return _share(df)


def scale_records(df: pd.DataFrame, default_endpoint: str = "generate") -> pd.DataFrame:
    """The records of closed-loop load batches (a `concurrency`), with lag columns and an
    endpoint (the run's one endpoint where records do not name it)."""
    if df.empty or "concurrency" not in df:
        return df.iloc[0:0]
    r = df[pd.to_numeric(df["concurrency"], errors="coerce").notna()].copy()
    r["concurrency"] = pd.to_numeric(r["concurrency"]).astype(int)
    if "endpoint" not in r:
        r["endpoint"] = default_endpoint
    r["endpoint"] = r["endpoint"].fillna(default_endpoint)
    return with_lag(r)


def lateness_bound_ms(manifest: dict) -> float | None:
    """The run's bound on the replay server's own lateness p99 (ms); None when not a replay."""
    replay = manifest.get("replay")
    if not replay:
        return None
    return float(replay.get("lateness_p99_ms", 0.2))


def batch_table(records: pd.DataFrame, procs: pd.DataFrame, attempts: pd.DataFrame | None = None,
                bound_ms: float | None = None) -> pd.DataFrame:
    """One row per batch (its final attempt): what it asked and reached, what it received, the
    client's lag, CPU and memory, the server's lateness, flagged and failed (module docstring).
    `records`: final attempts (scale_records); `procs`: processes.jsonl (metrics.processes);
    `attempts`: every attempt's records, for CPU per token (default: `records`)."""
    if records.empty:
        return pd.DataFrame()
    work = metrics.cpu_per_work(procs, attempts if attempts is not None else records) \
        if not procs.empty else pd.DataFrame()
    if len(work) and "attempt" in work:
        work = work.sort_values("attempt").groupby("batch_id").tail(1)
    work = work.set_index("batch_id") if len(work) else pd.DataFrame()
    flagged = {}
    for batch_id in records["batch_id"].unique():
        late = _late_p99_ms(work.loc[batch_id].get("replay")) if len(work) and batch_id in work.index else None
        flagged[batch_id] = (late, bool(bound_ms is not None and late is not None and np.isfinite(late)
                                        and late > bound_ms))
    # the added time over the Rust floor where the server stamped nothing, from batches that decide
    records = with_floor(records, exclude=[k for k, (_, f) in flagged.items() if f])
    rows = []
    for batch_id, g in records.groupby("batch_id", sort=False):
        m = g[g["phase"] == "measured"]
        ok = m[m["outcome"] == "ok"]
        first = g.iloc[0]
        row = {"batch_id": batch_id, "agent": first["agent"], "endpoint": first["endpoint"],
               "concurrency": int(first["concurrency"]), "mode": first.get("mode"),
               "requests": len(m), "ok": len(ok), "failed": len(ok) == 0}
        if len(ok) == 0:
            err = next((e for e in m.get("error_kind", pd.Series(dtype=object)).dropna()), None)
            msg = next((e for e in m.get("error_message", pd.Series(dtype=object)).dropna()), "")
            row["error"] = f"{err}: {msg}" if err else "no measured record"
        else:
            t0 = pd.to_numeric(ok["t0_unix"], errors="coerce")
            e2e = pd.to_numeric(ok["e2e_ms"], errors="coerce")
            mean, peak, span = in_flight(t0, t0 + e2e / 1e3)
            tokens = float(pd.to_numeric(ok["eval_count"], errors="coerce").sum())
            busy = float((e2e / 1e3).sum())
            row.update(span_s=span, tokens=tokens,
                       tps_received=tokens / span if span > 0 else np.nan,
                       session_tps=tokens / busy if busy > 0 else np.nan,
                       in_flight_mean=mean, in_flight_max=peak, reached=mean / row["concurrency"],
                       lag_p50_ms=ok["lag_p50_ms"].median(), lag_p99_ms=ok["lag_p99_ms"].median(),
                       lag_first_ms=ok["lag_first_ms"].median(), lag_send_ms=ok["lag_send_ms"].median(),
                       added_ms=ok["added_ms"].median(), ttft_added_ms=ok["ttft_added_ms"].median(),
                       added_share=ok["added_share"].median(), added_basis=_basis(ok["added_basis"]),
                       ttft_p50_ms=pd.to_numeric(ok["ttft_ms"], errors="coerce").median())
        if len(work) and batch_id in work.index:
            w = work.loc[batch_id]
            row.update(cpu_ms_per_token=w.get("cpu_ms_per_token"), cpu_ms_per_turn=w.get("cpu_ms_per_request"),
                       peak_rss_mib=w.get("peak_rss_mib"), server_late_p99_ms=flagged[batch_id][0])
        row["flagged"] = flagged[batch_id][1]
        rows.append(row)
    b = pd.DataFrame(rows)
    for c in (*VALUES, "session_tps", "span_s", "tokens", "server_late_p99_ms", "error", "added_basis"):
        if c not in b:
            b[c] = np.nan
    return b.sort_values(["endpoint", "agent", "concurrency", "batch_id"]).reset_index(drop=True)


def _basis(basis: pd.Series) -> str | None:
    """A batch's added_basis over its turns: stamps, floor, or mixed."""
    kinds = set(basis.dropna())
    return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"


def _late_p99_ms(replay) -> float | None:
    if not isinstance(replay, dict):
        return None
    p99 = (replay.get("late_us") or {}).get("p99")
    return None if p99 is None else float(p99) / 1e3


def offered(b: pd.DataFrame) -> pd.DataFrame:
    """Adds tps_offered = N × the per-session rate at the endpoint's lowest N, best client (the
    highest mean session rate over its batches there), and the per-session rate it used."""
    b = b.copy()
    b["tps_offered"] = np.nan
    b["session_tps_offered"] = np.nan
    ok = b[~b["failed"]] if len(b) else b
    for endpoint, g in ok.groupby("endpoint"):
        lowest = g["concurrency"].min()
        rate = g[g["concurrency"] == lowest].groupby("agent")["session_tps"].mean().max()
        at = b["endpoint"] == endpoint
        b.loc[at, "session_tps_offered"] = rate
        b.loc[at, "tps_offered"] = rate * b.loc[at, "concurrency"]
    return b


def _ci(x: pd.Series) -> tuple[float, float, float]:
    """(mean, CI low, CI high) over batches: the bootstrap 95 % CI of stats.mean_ci, NaN bounds
    with fewer than MIN_BATCHES_CI batches."""
    n, mean, lo, hi = stats.mean_ci(x)
    if n < MIN_BATCHES_CI:
        return (mean, np.nan, np.nan)
    return (mean, lo, hi)


def cells(b: pd.DataFrame, decided_only: bool = False) -> pd.DataFrame:
    """Per client × endpoint × N over its batches that did not fail (and, decided_only, that
    were not flagged): batches, flagged, the added time's basis (stamps, floor, mixed) and each
    value's mean with its CI (value, value_ci_low, value_ci_high)."""
    if b.empty:
        return pd.DataFrame()
    use = b[~b["failed"]]
    if decided_only:
        use = use[~use["flagged"]]
    rows = []
    for (endpoint, agent, n), g in use.groupby(["endpoint", "agent", "concurrency"]):
        row = {"endpoint": endpoint, "agent": agent, "concurrency": int(n), "batches": len(g),
               "flagged": int(g["flagged"].sum()),
               "tps_offered": g["tps_offered"].mean() if "tps_offered" in g else np.nan,
               "added_basis": _basis(g["added_basis"]) if "added_basis" in g else None}
        for v in VALUES:
            row[v], row[f"{v}_ci_low"], row[f"{v}_ci_high"] = _ci(pd.to_numeric(g[v], errors="coerce"))
        rows.append(row)
    return pd.DataFrame(rows)


def is_floor(g: pd.DataFrame, agent: str) -> bool:
    """Whether a client's cells (one endpoint) are the floor the others are measured against:
    the Rust agent where every cell's added time is over the floor (the server stamps nothing)."""
    return (agent == RUST and "added_basis" in g and len(g) > 0
            and bool((g["added_basis"] == FLOOR).all()))


def knees(c: pd.DataFrame, thresholds=THRESHOLDS) -> pd.DataFrame:
    """Per client × endpoint and threshold: the smallest N whose added-share CI lower bound is
    above the threshold, with tok/s received there (mean, CI); `knee` says it in words. The Rust
    agent's cells measured over the floor (its own median) are the floor: no knee of its own."""
    rows = []
    if c.empty:
        return pd.DataFrame(columns=["endpoint", "agent", "threshold", "knee_n", "knee", "tps_received",
                                     "tps_received_ci_low", "tps_received_ci_high", "n_max"])
    for (endpoint, agent), g in c.groupby(["endpoint", "agent"]):
        g = g.sort_values("concurrency")
        n_max = int(g["concurrency"].max())
        for t in thresholds:
            passed = g[g["added_share_ci_low"] > t]
            row = {"endpoint": endpoint, "agent": agent, "threshold": t, "n_max": n_max}
            if is_floor(g, agent):
                row.update(knee_n=np.nan, tps_received=np.nan, tps_received_ci_low=np.nan,
                           tps_received_ci_high=np.nan, knee=f"the floor up to N = {n_max} (no stamps)")
            elif len(passed):
                k = passed.iloc[0]
                row.update(knee_n=int(k["concurrency"]), knee=f"N = {int(k['concurrency'])}",
                           tps_received=k["tps_received"], tps_received_ci_low=k["tps_received_ci_low"],
                           tps_received_ci_high=k["tps_received_ci_high"])
            else:
                undecided = int(g["added_share_ci_low"].isna().sum())
                row.update(knee_n=np.nan, tps_received=np.nan, tps_received_ci_low=np.nan,
                           tps_received_ci_high=np.nan,
                           knee=(f"none up to N = {n_max}" if undecided == 0 else
                                 f"not decided up to N = {n_max} ({undecided} of {len(g)} load points "
                                 f"without a CI: fewer than {MIN_BATCHES_CI} batches)"))
            rows.append(row)
    return pd.DataFrame(rows)


def decided_below(run_dir, n: int, thresholds=THRESHOLDS) -> dict[str, dict[str, int]]:
    """The knee rule's look before load level `n` (run/rounds.py): the clients ("<agent>
    <endpoint>") whose knee at every threshold is decided by the batches of the levels below n,
    with those knees ({"1 %": N, "5 %": N}). A knee is decided where its N's added-share CI lower
    bound is above the threshold and every level below it has a CI (knees: the smallest such N).
    The added share is the report's (batches: send delay + worst lag on stamps, else over the Rust
    floor of those levels); the floor itself is never decided, so Rust keeps every batch there."""
    from langbench.analysis import findings
    try:
        run = findings.Run.load(run_dir)
    except ValueError:  # no records yet
        return {}
    b = batches(run)
    if b.empty:
        return {}
    b = b[pd.to_numeric(b["concurrency"], errors="coerce") < n]
    c = cells(b, decided_only=True)
    out = {}
    for (endpoint, agent), k in knees(c, thresholds).groupby(["endpoint", "agent"]):
        g = c[(c["endpoint"] == endpoint) & (c["agent"] == agent)]
        if k["knee_n"].isna().any():
            continue
        top = k["knee_n"].max()
        if g[g["concurrency"] <= top]["added_share_ci_low"].isna().any():
            continue  # a level at or below the knee without a CI: the knee may lie lower
        out[f"{agent} {endpoint}"] = {f"{t:.0%}".replace("%", " %"): int(x)
                                      for t, x in zip(k["threshold"], k["knee_n"])}
    return out


def knee_words(k) -> str:
    """One knee row (knee_table) as the README's findings table says it: "N = 16 (201 tok/s)",
    or its words where there is no knee ("none up to N = 128", …)."""
    if pd.isna(k.get("knee_n")):
        return str(k["knee"])
    return f"N = {int(k['knee_n']):,} ({k['tps_received']:,.0f} tok/s)"


def knee_table(b: pd.DataFrame, thresholds=THRESHOLDS) -> pd.DataFrame:
    """knees over the batches that decide (not failed, not flagged), with a row for every
    client × endpoint that ran: one whose batches all failed or were all flagged says so."""
    if b.empty:
        return knees(pd.DataFrame(), thresholds)
    k = knees(cells(b, decided_only=True), thresholds)
    rows = [k]
    for (endpoint, agent), g in b.groupby(["endpoint", "agent"]):
        if len(k) and ((k["endpoint"] == endpoint) & (k["agent"] == agent)).any():
            continue
        why = ("not measured: every batch failed" if g["failed"].all() else
               "not decided: the replay server ran late in every batch that ran")
        rows.append(pd.DataFrame([{"endpoint": endpoint, "agent": agent, "threshold": t, "knee_n": np.nan,
                                   "knee": why, "n_max": int(g["concurrency"].max())} for t in thresholds]))
    out = pd.concat([r for r in rows if len(r)], ignore_index=True)
    return out.sort_values(["endpoint", "agent", "threshold"]).reset_index(drop=True)


def split(c: pd.DataFrame, value: str = SPLIT_VALUE, margin: float = 0.0) -> pd.DataFrame:
    """Per endpoint × N: each client's mean `value`, the gap python − rust, and the shares of it
    that are the SDK's, the language's and the tuned transport's (NaN where the gap is within
    ±margin or a client is missing)."""
    rows = []
    if c.empty:
        return pd.DataFrame()
    for (endpoint, n), g in c.groupby(["endpoint", "concurrency"]):
        v = g.set_index("agent")[value]
        get = lambda a: float(v[a]) if a in v and pd.notna(v[a]) else np.nan  # noqa: E731
        py, tuned, raw, rs = (get(a) for a in CLIENTS)
        gap = py - rs
        big = np.isfinite(gap) and abs(gap) > margin
        row = {"endpoint": endpoint, "concurrency": int(n), "python": py, "python_tuned": tuned,
               "python_raw": raw, "rust": rs, "gap": gap,
               "sdk_share": (py - raw) / gap if big else np.nan,
               "language_share": (raw - rs) / gap if big else np.nan,
               "tuned_share": (py - tuned) / gap if big else np.nan}
        row["note"] = ("" if big else "no gap to split: a client missing" if not np.isfinite(gap)
                       else f"gap within ±{margin:g}")
        rows.append(row)
    return pd.DataFrame(rows)


def compare_at_each_n(b: pd.DataFrame, value: str = SPLIT_VALUE, margin: float = 0.0, alpha: float = stats.ALPHA,
                      pairs=((PYTHON, RUST), (RAW, RUST))) -> pd.DataFrame:
    """The language comparison at each endpoint × N (stats.compare: Welch, Mann–Whitney, TOST
    within ±margin; three verdicts), batches not flagged as the units. A cell with flagged
    batches only says so instead of a verdict."""
    rows = []
    if b.empty:
        return pd.DataFrame()
    ok = b[~b["failed"]]
    for (endpoint, n), g in ok.groupby(["endpoint", "concurrency"]):
        for a, z in pairs:
            ga, gz = g[g["agent"] == a], g[g["agent"] == z]
            if ga.empty or gz.empty:
                continue
            da, dz = ga[~ga["flagged"]], gz[~gz["flagged"]]
            c = stats.compare(da[value], dz[value], value, (a, z), alpha=alpha, margin_abs=margin)
            verdict = c.verdict
            if verdict == "not enough data" and (ga["flagged"].any() or gz["flagged"].any()):
                verdict = "not decided: the replay server ran late"
            rows.append({"endpoint": endpoint, "concurrency": int(n), "a": a, "b": z, "n_a": c.n_a, "n_b": c.n_b,
                         "mean_a": c.mean_a, "mean_b": c.mean_b, "diff": c.diff, "diff_ci_low": c.diff_ci_low,
                         "diff_ci_high": c.diff_ci_high, "welch_p": c.welch_p, "tost_p": c.tost_p,
                         "margin": margin, "verdict": verdict})
    return pd.DataFrame(rows)


def separated(k: pd.DataFrame, endpoint: str, n: int, a: str = PYTHON, z: str = RUST) -> float | None:
    """The lowest threshold at which a knee separates a and z at load n on `endpoint`: one has
    passed it at or below n, the other has no knee up to n (and its N range reaches n; the floor
    has none). None where no threshold separates them."""
    g = k[k["endpoint"] == endpoint] if len(k) else k
    for t in sorted(g["threshold"].unique()) if len(g) else ():
        at = g[g["threshold"] == t].set_index("agent")
        if a not in at.index or z not in at.index:
            continue
        ka, kz = at.loc[a], at.loc[z]
        passed_a = pd.notna(ka["knee_n"]) and ka["knee_n"] <= n
        passed_z = pd.notna(kz["knee_n"]) and kz["knee_n"] <= n
        clear_a = not passed_a and ka["n_max"] >= n and _no_knee(ka["knee"]) or (pd.notna(ka["knee_n"]) and ka["knee_n"] > n)
        clear_z = not passed_z and kz["n_max"] >= n and _no_knee(kz["knee"]) or (pd.notna(kz["knee_n"]) and kz["knee_n"] > n)
        if (passed_a and clear_z) or (passed_z and clear_a):
            return float(t)
    return None


def _no_knee(words: str) -> bool:
    return "none" in words or words.startswith("the floor")


def has_scale(run) -> bool:
    """Whether a run (findings.Run) has closed-loop load batches: a scale study to report."""
    return "concurrency" in run.df and pd.to_numeric(run.df["concurrency"], errors="coerce").notna().any()


def batches(run) -> pd.DataFrame:
    """batch_table and offered for a findings.Run: its load batches, one row each."""
    endpoint = (run.manifest.get("parameters") or {}).get("endpoint") or "generate"
    records = scale_records(run.df, endpoint)
    if records.empty:
        return pd.DataFrame()
    attempts = scale_records(run.attempts, endpoint)
    return offered(batch_table(records, run.processes, attempts, lateness_bound_ms(run.manifest)))
