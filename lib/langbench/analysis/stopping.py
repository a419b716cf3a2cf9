"""The sequential stop's decision after a round (issue 26), read from the run directory.

The runner (run/sweep.py, run/cluster.py) knows rounds, not statistics: it takes a plain
callable `decide(run_dir, round) -> dict` and stops when the dict says "stop". This module is
that callable's body; the CLI, above both floors, hands `decide` to the runner, so run/ never
imports analysis/ nor the other way round (pyproject.toml, [tool.importlinter]).

After round r (from min_batches on), for every headline verdict (HEADLINE):
- the deciding rule, as the report picks it (rule_for): the paired rule over cells where it
  passed this run's A/A check (aa.reference: an exact null reference for the count of A/A
  rejections), else the pooled rule where that passed; unchecked rules (too few cells or
  batches for an A/A split) decide after checked ones; a run where both failed decides nothing;
- the group-sequential rule of analysis/sequential.py on rounds 1 … r: paired —
  sequential.evaluate on d[round, cell] = Python − Rust batch mean of that round's batch, cell
  = (config_id, mode), plus worker under --cluster; pooled — sequential.evaluate_pooled on each
  side's batch means per round;
- the margin is fixed at the first look (min_batches): throughput's is relative to the Rust
  mean of rounds 1 … min_batches, which would otherwise move from look to look.
The sweep stops when every headline verdict is decided (differs or equivalent), or at
max_batches (the runner's own limit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from langbench import storage
from langbench.analysis import aa, sequential
from langbench.analysis.findings import HIGHER, LOWER, Run

HEADLINE = (  # (column, label, unit, better, which rows): the index's verdict table
    ("throughput_tps", "throughput", "tok/s", HIGHER, "warm"),
    ("ttft_ms", "TTFT, cached prompt", "ms", LOWER, "cached"),
    ("ttft_ms", "TTFT, uncached prompt", "ms", LOWER, "uncached"),
    ("client_overhead_ms", "client overhead", "ms", LOWER, "warm"),
    ("itl_p99_ms", "ITL p99", "ms", LOWER, "warm"),
)


def rows(run: Run, which: str) -> pd.DataFrame:
    """The warm rows a headline verdict is computed on: cached or uncached prompts, or all."""
    w = run.warm
    if which in ("cached", "uncached") and "prompt_cache" in w:
        return w[w["prompt_cache"] == which]
    return w


def round_of(batch_id: str) -> int:
    """The round of a batch: its `-b{r}` suffix (run/plan.py names batches so); 1 without."""
    tail = str(batch_id).rsplit("-b", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 1


def stop_settings(manifest: dict) -> dict:
    """The parameter file's `stop:` ({"rule": "fixed"} for a run made before it existed)."""
    return (manifest.get("parameters") or {}).get("stop") or {"rule": "fixed"}


# --- A/A with the exact reference ----------------------------------------------------------

def round_matrix(data: pd.DataFrame, value: str) -> np.ndarray:
    """(cells, rounds) batch means of `value` from one agent's baseline rows, column r − 1 =
    round r (round_of), rounds 1 … the last one present; NaN where a round's batch is missing."""
    if data.empty or data[value].notna().sum() == 0:
        return np.empty((0, 0))
    d = data.assign(_round=data["batch_id"].map(round_of))
    means = d.groupby(["config_id", "_round"], sort=True)[value].mean().unstack("_round")
    return means.reindex(columns=range(1, int(d["_round"].max()) + 1)).to_numpy(float)


def aa_rates(run: Run, value: str, data: pd.DataFrame) -> dict[str, dict]:
    """The pooled and paired language rules on this run's identical treatments (each agent's
    baseline batches posed against each other, aa.split_rule_counts), against their exact null
    reference (aa.reference). Summed over agents: {"pooled" | "paired": {"k", "n", "rate",
    "null_mean_rate", "p_above", "flagged", "sequential"}}; with two agents a rule is flagged
    when either agent's p_above < α/2 (Bonferroni over the agents); p_above is the smallest.
    In a sequential study (stop.rule: sequential) the A/A applies the same stopping: the
    sequential rule on the A/A splits of the rounds in `data` (aa.sequential_reference: one A/A
    look per two rounds, stopped where the study stopped); "sequential" says which was used."""
    base = data[data["mode"] == "baseline"]
    margin = run.margin_for(value, float(base[value].mean())) if len(base) else 0.0
    stop = stop_settings(run.manifest)
    seq = stop.get("rule") == "sequential" and "max_batches" in stop
    agents = sorted(base["agent"].unique()) if len(base) else []
    level = run.alpha / max(1, len(agents))
    workers = run.workers(data)
    out = {}
    for rule in ("paired", "pooled"):
        k = n = 0
        null_mean, ps = [], []
        for agent in agents:
            mine = base[base["agent"] == agent]
            parts = [mine[mine["worker"] == w] for w in workers] if len(workers) > 1 else [mine]
            for part in parts:  # under --cluster the rule pairs within each worker, as the A/A does
                if seq:  # the sequential rule on A/A splits, stopped where the study stopped
                    m = round_matrix(part, value)
                    if m.size == 0:
                        continue
                    r = aa.sequential_reference(m, rule, margin, run.alpha,
                                                min_rounds=int(stop.get("min_batches", 2)),
                                                max_rounds=int(stop["max_batches"]))
                else:
                    m = aa.batch_matrix(part, value)
                    if m.size == 0:
                        continue
                    r = aa.reference(m, rule, margin, run.alpha)
                if r["n"]:
                    k, n = k + r["k"], n + r["n"]
                    null_mean.append(r["null_mean_rate"])
                    ps.append(r["p_above"])
        out[rule] = {"k": k, "n": n, "rate": k / n if n else float("nan"), "sequential": seq,
                     "null_mean_rate": float(np.mean(null_mean)) if null_mean else float("nan"),
                     "p_above": float(min(ps)) if ps else float("nan"),
                     "flagged": bool(ps) and min(ps) < level / (len(parts) if len(workers) > 1 else 1)}
    return out


def rule_for(run: Run, value: str, data: pd.DataFrame) -> dict:
    """The rule that decides `value`: paired where it passed its A/A check, else pooled where
    that passed, else an unchecked one (no A/A split possible), else none.
    Returns {"rule": "paired" | "pooled" | None, "checked": bool, "rates": aa_rates(...)}."""
    rates = aa_rates(run, value, data)
    passed = [r for r in ("paired", "pooled") if rates[r]["n"] and not rates[r]["flagged"]]
    unchecked = [r for r in ("paired", "pooled") if not rates[r]["n"]]
    rule = (passed or unchecked or [None])[0]
    return {"rule": rule, "checked": bool(passed), "rates": rates}


# --- the sequential decision ---------------------------------------------------------------

def _cells(data: pd.DataFrame, run: Run) -> list[str]:
    return ["worker", "config_id", "mode"] if len(run.workers(data)) > 1 else ["config_id", "mode"]


def paired_diffs(run: Run, data: pd.DataFrame, value: str, rounds: int) -> np.ndarray:
    """(rounds, cells): Python − Rust batch mean of each cell's batch of each round (NaN where
    a round's batch is missing)."""
    d = data.assign(_round=data["batch_id"].map(round_of))
    keys = _cells(data, run)
    means = d.groupby(["_round", *keys, "agent", "batch_id"])[value].mean().groupby(["_round", *keys, "agent"]).mean()
    wide = means.unstack("agent")
    if not {"python", "rust"} <= set(wide.columns):
        return np.empty((rounds, 0))
    diff = (wide["python"] - wide["rust"]).unstack(keys)
    return diff.reindex(range(1, rounds + 1)).to_numpy(float)


def side_means(data: pd.DataFrame, value: str, agent: str, rounds: int) -> list[np.ndarray]:
    """Each round's batch means of one agent (the pooled rule's units)."""
    d = data[data["agent"] == agent]
    means = d.groupby("batch_id")[value].mean().dropna()
    by = pd.Series(means.index.map(round_of), index=means.index)
    return [means[by == r].to_numpy(float) for r in range(1, rounds + 1)]


def fixed_margin(run: Run, data: pd.DataFrame, value: str, first_look: int) -> float:
    """The margin fixed at the first look: relative margins around the Rust mean of rounds
    1 … first_look (the reference mean of the paired rule, findings.paired_result)."""
    early = data[(data["agent"] == "rust") & (data["batch_id"].map(round_of) <= first_look)]
    return run.margin_for(value, float(early[value].mean()) if len(early) else float("nan"))


def verdict_record(run: Run, value: str, label: str, unit: str, which: str, rounds: int,
                   min_rounds: int, max_rounds: int) -> dict | None:
    """One headline verdict after `rounds` rounds: its rule, margin and the sequential
    decisions of every look so far (sequential.Decision.as_dict); None when the run has no
    data for it."""
    data = rows(run, which)
    data = data[data["batch_id"].map(round_of) <= rounds]
    if value not in data or data[value].notna().sum() == 0 or data["agent"].nunique() < 2:
        return None
    chosen = rule_for(run, value, data)
    margin = fixed_margin(run, data, value, min_rounds)
    out = {"metric": label, "value": value, "unit": unit, "which": which, "rule": chosen["rule"],
           "rule_checked": chosen["checked"], "aa": chosen["rates"], "margin": margin, "decisions": [],
           "why": None}
    if chosen["rule"] is None:
        out["why"] = "no language rule passed its A/A check in this run, so it decides nothing"
        return out
    try:
        if chosen["rule"] == "paired":
            decisions = sequential.evaluate(paired_diffs(run, data, value, rounds), margin, run.alpha,
                                            max_rounds=max_rounds, min_rounds=min_rounds)
        else:
            decisions = sequential.evaluate_pooled(side_means(data, value, "python", rounds),
                                                   side_means(data, value, "rust", rounds), margin,
                                                   run.alpha, max_rounds=max_rounds, min_rounds=min_rounds)
    except (ValueError, ZeroDivisionError) as e:
        out["why"] = f"the {chosen['rule']} rule cannot be evaluated here: {e}"
        return out
    out["decisions"] = [_clean(d.as_dict()) for d in decisions]
    return out


def _clean(d: dict) -> dict:
    """JSON-safe: NaN and ±inf as None."""
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def decided(record: dict) -> bool:
    return bool(record["decisions"]) and bool(record["decisions"][-1]["decided"])


def decide(run_dir: str | Path, round_: int) -> dict:
    """After round `round_` of a sequential sweep: every headline verdict's record
    (verdict_record), the verdicts still open, and whether to stop (all decided).
    Returns {"round", "stop", "open": [labels], "verdicts": [records]}."""
    run = Run.load(run_dir)
    stop = stop_settings(run.manifest)
    lo, hi = int(stop.get("min_batches", 2)), int(stop["max_batches"])
    records = []
    for value, label, unit, _better, which in HEADLINE:
        r = verdict_record(run, value, label, unit, which, round_, lo, hi)
        if r is not None:
            records.append(r)
    still = [r["metric"] for r in records if not decided(r)]
    return {"round": round_, "stop": bool(records) and not still, "open": still, "verdicts": records}


def summary(run: Run) -> dict | None:
    """What the report shows of a sequential sweep, from the manifest and the records: per
    verdict the round it was decided in, its runs and minutes, the fixed design's spend and what
    the sequential rule gave up; None for a fixed design or a run that never looked.
    Minutes are the agent processes' wall time (processes.jsonl, the null client's included)
    of the rounds up to the stop; the fixed design's are those of the rounds run, per round,
    times max_batches (an estimate: its later rounds never ran)."""
    stop = stop_settings(run.manifest)
    state = run.manifest.get("stopping") or {}
    if stop.get("rule") != "sequential" or not state.get("verdicts"):
        return None
    hi = int(stop["max_batches"])
    ran = int(state["round"])
    procs = storage.read_jsonl(run.run_dir / "processes.jsonl")
    wall = pd.Series({}, dtype=float)
    if procs:
        p = pd.DataFrame(procs)
        wall = p.groupby(p["batch_id"].map(round_of))["wall_s"].sum()
    per_batch = run.warm.groupby("batch_id").size()
    runs_by_round = pd.Series(per_batch.values, index=per_batch.index.map(round_of)).groupby(level=0).sum()
    out = []
    for rec in state["verdicts"]:
        ds = rec.get("decisions") or []
        at = ds[-1].get("stopping_round") if ds else None
        last = next((d for d in ds if d["round"] == at), ds[-1]) if ds else {}  # as of its stop
        upto = at or ran
        data = rows(run, rec["which"])
        measured = data[data["batch_id"].map(round_of) <= upto]
        out.append({"metric": rec["metric"], "unit": rec["unit"], "rule": rec["rule"],
                    "rule_checked": rec.get("rule_checked"), "margin": rec["margin"],
                    "verdict": last.get("verdict", "inconclusive"), "decided_round": at,
                    "estimate": last.get("estimate"), "lo": last.get("lo"), "hi": last.get("hi"),
                    "runs": int(len(measured)),
                    "minutes": float(wall[wall.index <= upto].sum() / 60) if len(wall) else float("nan"),
                    "fixed_runs": int(round(len(data) / ran * hi)) if ran else 0,
                    "fixed_minutes": float(wall.sum() / ran * hi / 60) if len(wall) and ran else float("nan"),
                    "naive_verdict": last.get("naive_verdict"), "naive_round": last.get("naive_stopping_round"),
                    "naive_lo": last.get("naive_lo"), "naive_hi": last.get("naive_hi"), "why": rec.get("why")})
    return {"rounds_run": ran, "max_batches": hi, "min_batches": int(stop.get("min_batches", 2)),
            "stopped": bool(state.get("stop")), "open": state.get("open", []),
            "runs_total": int(runs_by_round.sum()), "verdicts": out}
