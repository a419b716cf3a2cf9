"""Records → a tidy table with the derived metrics of DESIGN.md (never computed in agents).

- throughput (the seed's) = eval_count / eval_duration, tok/s
- client decode rate = (eval_count − 1) / decode_ms, tok/s
- server TTFT = load + prompt_eval (prompt_eval runs until the first token is sampled)
- client overhead = ttft_ms − server TTFT, where ttft_ms is the first chunk of any kind (a
  thinking model's thinking time is the server's, not the client's)
- thinking time = ttft_answer_ms − ttft_ms (first token of any kind to first answer token), ms
- tokens per chunk = eval_count / chunks (1 on a plain stream; more where a chunk held several
  tokens, and then inter-chunk gaps are per chunk, not per token)
- thinking chunks share = chunks_thinking / chunks

On /v1 (endpoint openai-chat, openai-completions) the server returns no durations: they are
null, so throughput there is computed on the client's own clock over the usage token count,
(eval_count − 1) / decode_ms (`throughput_clock` says which clock a row's throughput is on), and
server TTFT and client overhead are NaN; `over_floor_ms` (every endpoint) is a run's TTFT less
the median TTFT of the null client's warm runs in the same cell (config, mode, prompt cache),
which is how the client's cost is measured where the server gives no timings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from langbench import storage
from langbench.vocab import LOAD_FACTORS, OPENAI_ENDPOINTS, REQUEST_FIELDS, WORKLOAD_FACTORS

NS_PER_MS = 1e6


def frame(records: list[dict]) -> pd.DataFrame:
    """One row per record: config keys become columns, itl_ms becomes itl_p50_ms … itl_max_ms and
    itl_n (the gaps they come from), lag_ms (a replay server's stamps) lag_first_ms … lag_max_ms
    and lag_n, error becomes error_kind, error_message, error_client."""
    rows = []
    for rec in records:
        row = {k: v for k, v in rec.items() if k not in ("itl_ms", "lag_ms", "config", "options", "error")}
        for q, v in (rec.get("itl_ms") or {}).items():
            row["itl_n" if q == "n" else f"itl_{q}_ms"] = v
        for q, v in (rec.get("lag_ms") or {}).items():  # behind a replay server's send stamps
            row["lag_n" if q == "n" else f"lag_{q}_ms"] = v
        # A baseline row carries no chimera factor values: its factor columns are the options it
        # actually sent (None where it left Ollama's default), as every chimera row's are. The
        # load it ran under (concurrency, arrival rate) is no option: both modes keep it.
        # A workload factor the record itself states (actions, replay) is what its task did: a
        # replayed conversation acts with no actions under matrix.actions, a goal task replays
        # nothing under matrix.replay.
        sent = rec.get("options") or {}
        for k, v in (rec.get("config") or {}).items():
            if k in ("actions", "replay") and "task_id" in rec:
                row[k] = rec.get(k)
            elif rec.get("mode") != "baseline" or k in LOAD_FACTORS + WORKLOAD_FACTORS:
                row[k] = v
            else:  # what the baseline request sent: an option, or a request-level field (think, keep_alive)
                row[k] = rec.get(k) if k in REQUEST_FIELDS else sent.get(k)
        row["num_predict"] = sent.get("num_predict", sent.get("max_tokens"))  # /v1 names it max_tokens
        err = rec.get("error") or {}
        row["error_kind"], row["error_message"] = err.get("kind"), err.get("message")
        row["error_client"] = err.get("client")
        rows.append(row)
    return derive(pd.DataFrame(rows))


def derive(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    df = df.copy()
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else pd.Series(np.nan, index=df.index)
    eval_count, eval_ns = num("eval_count"), num("eval_duration")
    df["throughput_tps"] = eval_count / (eval_ns / 1e9)
    df["client_decode_tps"] = (eval_count - 1) / (num("decode_ms") / 1e3)
    v1 = df["endpoint"].isin(OPENAI_ENDPOINTS) if "endpoint" in df else pd.Series(False, index=df.index)
    # /v1 has no eval_duration, nor has a replay (its server's durations are not findings):
    # throughput on the client's clock over the usage's token count
    clientside = v1 | eval_ns.isna()
    df["throughput_tps"] = df["throughput_tps"].where(~clientside, df["client_decode_tps"])
    df["throughput_clock"] = np.where(clientside, "client", "server")
    df["load_ms"] = num("load_duration") / NS_PER_MS
    df["prompt_eval_ms"] = num("prompt_eval_duration") / NS_PER_MS
    df["server_ttft_ms"] = df["load_ms"].fillna(0) + df["prompt_eval_ms"]
    df["client_overhead_ms"] = num("ttft_ms") - df["server_ttft_ms"]
    df["thinking_ms"] = num("ttft_answer_ms") - num("ttft_ms")
    chunks = num("chunks").where(num("chunks") > 0)
    df["tokens_per_chunk"] = eval_count / chunks
    df["thinking_share"] = num("chunks_thinking") / chunks
    df["decode_rate_ratio"] = df["client_decode_tps"] / df["throughput_tps"]
    # A run that stopped before num_predict is shorter, not faster: kept out of comparisons.
    asked = num("num_predict")
    done_reason = df["done_reason"] if "done_reason" in df else pd.Series(None, index=df.index)
    df["stopped_early"] = (df.get("outcome", "ok") == "ok") & asked.notna() & (
        (done_reason != "length") | (eval_count < asked))
    if "prompt_cache" not in df:
        df["prompt_cache"] = "cached"
    df["prompt_cache"] = df["prompt_cache"].fillna("cached")
    df = df.replace([np.inf, -np.inf], np.nan)
    return df


def factors(manifest: dict, df: pd.DataFrame) -> list[str]:
    """The run's factors: the matrix's options, the server kind where it varied, then the load
    factors it varied."""
    kinds = ["server_kind"] if "server_kind" in df and df["server_kind"].nunique() > 1 else []
    return list(manifest["parameters"]["matrix"]) + kinds + \
        [f for f in LOAD_FACTORS if f in df and df[f].notna().any()]


def over_floor(df: pd.DataFrame, floor: pd.DataFrame) -> pd.Series:
    """Each row's TTFT less the median TTFT of the null client's warm runs in its cell (config,
    mode, prompt cache): the client's cost over the floor on the same endpoint and server, where
    a cell has null runs (NaN elsewhere). Runs on /v1 have no server timings: this is their
    client overhead."""
    keys = [k for k in ("config_id", "mode", "prompt_cache") if k in df and k in floor]
    if floor.empty or not keys:
        return pd.Series(np.nan, index=df.index)
    medians = warm(floor).groupby(keys)["ttft_ms"].median().rename("floor_ttft_ms")
    joined = df[keys].join(medians, on=keys)
    return pd.to_numeric(df["ttft_ms"], errors="coerce") - joined["floor_ttft_ms"]


def labelled(df: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """A copy with the factor columns as text, "–" where a row has no value (a baseline row's
    option, the load factor of the other kind of load): for labels, pivots and groupings that
    would drop NaN."""
    df = df.copy()
    for f in factors:
        if f in df:
            df[f] = [("–" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v)) for v in df[f]]
    return df


def final_attempts(df: pd.DataFrame) -> pd.DataFrame:
    """The last attempt of each run (earlier failed attempts stay in the file as data); for an
    agent task, every turn of its last attempt."""
    if df.empty or "attempt" not in df:
        return df
    last = df.groupby("run_id")["attempt"].transform("max")
    return df[df["attempt"] == last].sort_values("order_key")


def load_attempts(run_dir: str | Path) -> pd.DataFrame:
    """Every record of a run directory, failed attempts that a retry replaced included. A replay
    run's server durations are the captured server's, not findings (DESIGN.md, "The replay
    server"): they are read as absent, as /v1's are."""
    records = storage.read_records(Path(run_dir) / "records.jsonl")
    manifest = Path(run_dir) / "manifest.json"
    if manifest.exists() and storage.read_json(manifest).get("replay"):
        blank = dict.fromkeys(("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"))
        records = [{**r, **blank} for r in records]
    df = frame(records)
    if not df.empty:
        df["order_key"] = range(len(df))
    return df


def load_run(run_dir: str | Path) -> pd.DataFrame:
    """The records of a run directory as a derived table, final attempts only."""
    return final_attempts(load_attempts(run_dir))


def processes(rows: list[dict]) -> pd.DataFrame:
    """processes.jsonl as a table, with peak RSS in MiB and CPU seconds per run counted from
    the first request (start-up CPU apart, where the runner measured it)."""
    p = pd.DataFrame(rows)
    if not p.empty:
        startup = p["startup_cpu_s"].fillna(0) if "startup_cpu_s" in p else 0
        p["cpu_s_per_run"] = (p["user_cpu_s"] + p["system_cpu_s"] - startup) / p["runs"]
        p["peak_rss_mib"] = p["peak_rss_bytes"] / 2**20
    return p


def cpu_per_work(procs: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Each agent process's own CPU per unit of work (issue 24, item 6): procs from
    `processes` (one row per batch_id × attempt), records every attempt's records (each one a
    request: a run, or one turn of an agent task). Adds per process:
    tokens (Σ eval_count of its records), requests (its records), cpu_ms_per_token and
    cpu_ms_per_request = (user + system − start-up CPU) / tokens or requests, in ms, and
    core_full_tps = tokens / CPU-seconds: the aggregate token rate at which that client would
    keep one core busy (1 / CPU per token). NaN where a process streamed no token."""
    if procs.empty or records.empty or "eval_count" not in records:
        return procs
    keys = ["batch_id", "attempt"] if "attempt" in procs and "attempt" in records else ["batch_id"]
    work = records.groupby(keys).agg(tokens=("eval_count", "sum"), requests=("eval_count", "size")).reset_index()
    p = procs.drop(columns=[c for c in ("tokens", "requests") if c in procs]).merge(work, on=keys, how="left")
    startup = p["startup_cpu_s"].fillna(0) if "startup_cpu_s" in p else 0
    cpu = (p["user_cpu_s"] + p["system_cpu_s"] - startup).clip(lower=0)
    tokens = p["tokens"].where(p["tokens"] > 0)
    p["cpu_ms_per_token"] = 1e3 * cpu / tokens
    p["cpu_ms_per_request"] = 1e3 * cpu / p["requests"].where(p["requests"] > 0)
    p["core_full_tps"] = tokens / cpu.where(cpu > 0)
    return p


def warm(df: pd.DataFrame) -> pd.DataFrame:
    """Measured repetitions that completed their num_predict tokens: what warm statistics are
    computed on (a run that stopped early is counted apart, never compared)."""
    early = df["stopped_early"] if "stopped_early" in df else False
    return df[(df["phase"] == "measured") & (df["outcome"] == "ok") & ~early]


def turns(df: pd.DataFrame) -> pd.DataFrame:
    """Agent turns of tasks that ended (their last turn is recorded; a task cut short is run
    again from its first turn and its partial turns are left out), with the turn's prompt-eval
    cost per prompt token. Every phase; `warm_turns` picks the measured ones."""
    if df.empty or "turn" not in df:
        return df.iloc[0:0]
    t = df[df["turn"].notna()].copy()
    keys = ["run_id", "attempt"] if "attempt" in t else ["run_id"]
    ended = t["task_outcome"].notna().groupby([t[k] for k in keys]).transform("any")
    t = t[ended.astype(bool)].copy()
    t["turn"] = t["turn"].astype(int)
    count = pd.to_numeric(t["prompt_eval_count"], errors="coerce")
    t["prompt_eval_us_per_token"] = 1e3 * t["prompt_eval_ms"] / count.where(count > 0)
    return t


def warm_turns(df: pd.DataFrame) -> pd.DataFrame:
    """Measured turns whose request ended ok (a structured answer stops before num_predict by
    design: stopped_early is no reason to leave a turn out)."""
    t = turns(df)
    return t[(t["phase"] == "measured") & (t["outcome"] == "ok")]


def tasks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per agent task that ended: end to end (first request sent to the last turn's
    last chunk), turns, the server's time (total_duration summed), the tools' time, the agent's
    own time (agent_ms summed over turns 1..), the client's share of the task, the outcome."""
    t = turns(df)
    if t.empty:
        return pd.DataFrame()
    keys = [k for k in ("run_id", "attempt") if k in t]
    t = t.sort_values("turn", kind="stable")
    num = {c: pd.to_numeric(t[c], errors="coerce") for c in
           ("agent_ms", "total_duration", "ttft_ms", "tool_ms", "eval_count", "e2e_ms", "t0_unix")}
    g = pd.DataFrame({**{k: t[k] for k in keys}, **num, "ok": t["outcome"] == "ok"}).groupby(keys, sort=False)
    firsts = t.groupby(keys, sort=False).nth(0).set_index(keys)  # one vectorised pass, as a loop per task was
    lasts = t.groupby(keys, sort=False).nth(-1).set_index(keys)  # (minutes at 1,024 sessions x 40 batches)
    sums = g[["agent_ms", "total_duration", "ttft_ms", "tool_ms", "eval_count"]].sum()
    n = g.size()
    end = lasts["t0_unix"].astype(float) + pd.to_numeric(lasts["e2e_ms"], errors="coerce").fillna(0.0) / 1e3
    e2e_ms = 1e3 * (end - firsts["t0_unix"].astype(float))
    agent_ms = sums["agent_ms"]
    out = firsts[[k for k in ("batch_id", "config_id", "mode", "agent", "task_id", "phase", "prompt_cache", "actions",
                              "replay", "max_turns", "stream", "concurrency", "worker") if k in firsts]].copy()
    out = out.assign(turns=n, task_outcome=lasts["task_outcome"], task_e2e_ms=e2e_ms,
                     server_ms=sums["total_duration"] / NS_PER_MS, ttft_sum_ms=sums["ttft_ms"],
                     tool_ms=sums["tool_ms"], task_agent_ms=agent_ms,
                     agent_ms_per_turn=(agent_ms / (n - 1).clip(lower=1)).where(n > 1),
                     client_share=(agent_ms / e2e_ms).where(e2e_ms > 0),
                     prompt_eval_count_last=lasts["prompt_eval_count"], tokens=sums["eval_count"],
                     requests_ok=g["ok"].all())
    return out.reset_index()


def cold(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["phase"] == "cold") & (df["outcome"] == "ok")]


def summary(df: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """One row per agent × config × mode (the seed's rust_vs_python_sweep_summary.csv)."""
    keys = ["agent", "config_id", *factors, "mode"]
    w = warm(df)
    g = w.groupby(keys, sort=True, dropna=False)
    out = g.agg(
        n=("throughput_tps", "size"),
        throughput_mean=("throughput_tps", "mean"),
        throughput_median=("throughput_tps", "median"),
        throughput_std=("throughput_tps", "std"),
        ttft_ms_mean=("ttft_ms", "mean"),
        ttft_ms_median=("ttft_ms", "median"),
        server_ttft_ms_mean=("server_ttft_ms", "mean"),
        client_overhead_ms_median=("client_overhead_ms", "median"),
        client_decode_tps_mean=("client_decode_tps", "mean"),
        e2e_ms_mean=("e2e_ms", "mean"),
        itl_p99_ms_median=("itl_p99_ms", "median"),
    )
    out["throughput_cv_pct"] = 100 * out["throughput_std"] / out["throughput_mean"]
    c = cold(df).groupby(keys, dropna=False)
    out = out.join(c["ttft_ms"].mean().rename("cold_ttft_ms")).join(
        c["load_ms"].mean().rename("cold_load_ms"))
    failed = df[df["outcome"] != "ok"].groupby(keys, dropna=False).size().rename("failed_runs")
    out = out.join(failed).fillna({"failed_runs": 0})
    return out.reset_index()


# --- GPU: offload and energy (telemetry.jsonl, written by the runner on a GPU host) -----------

def offload_table(procs: pd.DataFrame) -> pd.DataFrame:
    """One row per batch: what the server actually offloaded (layers, size, size_vram)."""
    if procs.empty or "offload" not in procs:
        return pd.DataFrame()
    rows = [{"batch_id": b, "attempt": a, **(o or {})}
            for b, a, o in zip(procs["batch_id"], procs["attempt"], procs["offload"])]
    t = pd.DataFrame(rows)
    if "size_vram" in t and "size" in t:
        t["vram_share"] = pd.to_numeric(t["size_vram"], errors="coerce") / pd.to_numeric(t["size"], errors="coerce")
    return t


def energy_per_run(df: pd.DataFrame, telemetry: list[dict],
                   idle_power_w: float | dict | None = None) -> pd.DataFrame:
    """Energy of each run from the samples of its batch, joined by time over [t0, t0 + e2e]:
    the energy counter's delta where every GPU has one (NVML, mJ), else power integrated
    (trapezoid). Summed over GPUs. Adds energy_j, energy_source, mean power_w, j_per_token and,
    with an idle baseline (W: one number for every GPU sampled, or {GPU index (str): W}, of
    which the run's own GPUs count), energy_above_idle_j and j_per_token_above_idle."""
    out = df.copy()
    for col in ("energy_j", "power_w", "j_per_token", "energy_above_idle_j", "j_per_token_above_idle"):
        out[col] = np.nan
    out["energy_source"] = None
    if not telemetry or out.empty:
        return out
    t = pd.DataFrame(telemetry)
    groups = {key: g.sort_values("t_unix") for key, g in t.groupby(["batch_id", "gpu"])}
    # The GPUs sampled during each batch: all of the host's for one server, the worker's own
    # under --cluster (two workers' batches run at once, each on its GPU).
    gpus_of = {b: sorted(g["gpu"].unique()) for b, g in t.groupby("batch_id")}
    for idx, rec in out.iterrows():
        gpus = gpus_of.get(rec["batch_id"], [])
        start, e2e = rec.get("t0_unix"), rec.get("e2e_ms")
        if not gpus or pd.isna(start) or pd.isna(e2e):
            continue
        end = start + e2e / 1e3
        energy, source = 0.0, "counter"
        for gpu in gpus:
            g = groups.get((rec["batch_id"], gpu))
            if g is None or len(g) < 2 or g["t_unix"].iloc[0] > start or g["t_unix"].iloc[-1] < end:
                energy = np.nan
                break
            ts = g["t_unix"].to_numpy(float)
            counter = pd.to_numeric(g["energy_mj"], errors="coerce").to_numpy(float)
            if np.isfinite(counter).all():
                energy += (np.interp(end, ts, counter) - np.interp(start, ts, counter)) / 1e3
            else:
                source = "power"
                power = pd.to_numeric(g["power_w"], errors="coerce").to_numpy(float)
                inside = (ts > start) & (ts < end)
                xs = np.concatenate([[start], ts[inside], [end]])
                ys = np.concatenate([[np.interp(start, ts, power)], power[inside], [np.interp(end, ts, power)]])
                energy += float(np.trapezoid(ys, xs))
        if not np.isfinite(energy):
            continue
        seconds = e2e / 1e3
        out.at[idx, "energy_j"] = energy
        out.at[idx, "energy_source"] = source
        out.at[idx, "power_w"] = energy / seconds if seconds > 0 else np.nan
        tokens = rec.get("eval_count")
        if tokens and tokens > 0:
            out.at[idx, "j_per_token"] = energy / tokens
        idle = (sum(idle_power_w.get(str(g), 0.0) for g in gpus) if isinstance(idle_power_w, dict)
                else idle_power_w)
        if idle is not None:
            above = energy - idle * seconds
            out.at[idx, "energy_above_idle_j"] = above
            if tokens and tokens > 0:
                out.at[idx, "j_per_token_above_idle"] = above / tokens
    return out
