"""A replay profile from a captured run (DESIGN.md, "The replay server"):

    python -m langbench profile outputs/<run>   # writes outputs/<run>/profile.json

A run with `capture: true` keeps every stream's chunk trace in capture.jsonl (parse time from
t0, bytes, kind, text). The profile keeps, per server, model, endpoint and concurrency level:
donors (a request's time to its first chunk and its gaps, verbatim, with its chunks' kinds and
text: timing and content kept apart, as vllm-vcr does), TTFT against prompt tokens cached and
uncached, how tokens are split into chunks, where usage and tool calls arrive, and the
captured agent turns' content by the hash of their history, so that a replayed agent loop runs
the captured conversation. The replay server (agents/replay) reads it.

Donors come from the client that adds the least of its own: the null client where it ran,
else the Rust agent, else the Python agent. A group keeps at most `per_group` donors spread
over its range of end-to-end times, so that a slow request stays slow and the profile small.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from langbench import storage, vocab

PREFERENCE = ("null", "rust", "python")  # the least client of its own first
PER_GROUP = 12
FINAL = ("done_reason", "prompt_eval_count", "eval_count", "total_duration", "load_duration",
         "prompt_eval_duration", "eval_duration")


class ProfileError(ValueError):
    """The run cannot give a profile: the message names the file and the cause."""


def _key(row: dict) -> tuple:
    return row["batch_id"], row["attempt"], row["run_id"], row.get("turn")


def _chunks(trace: dict) -> list[dict]:
    out = []
    for kind, text in zip(trace["kinds"], trace["text"]):
        if kind == "c":
            calls = []
            for c in json.loads(text) or []:
                fn = c.get("function", c) if isinstance(c, dict) else {}
                calls.append({"name": fn.get("name"), "arguments": fn.get("arguments", {})})
            out.append({"k": "c", "calls": calls})
        elif kind in "ta":
            out.append({"k": kind, "text": text})
        else:
            out.append({"k": kind})
    return out


def _donor(rec: dict, trace: dict) -> dict:
    t = trace["t_us"]
    return {"id": f"{rec['batch_id']}-a{rec['attempt']}:{rec['run_id']}"
                  + (f":t{rec['turn']}" if rec.get("turn") is not None else ""),
            "agent": rec["agent"], "endpoint": rec["endpoint"], "concurrency": rec.get("concurrency", 1),
            "cached": rec.get("prompt_cache", "cached") == "cached", "prompt_tokens": rec.get("prompt_eval_count"),
            "ttft_us": int(t[0]), "gaps_us": [int(b - a) for a, b in zip(t, t[1:])],
            "chunks": _chunks(trace), "final": {k: rec.get(k) for k in FINAL}}


def _spread(donors: list[dict], n: int) -> list[dict]:
    """At most n donors, evenly spread over the group's end-to-end times (the slowest kept)."""
    if len(donors) <= n:
        return donors
    ranked = sorted(donors, key=lambda d: d["ttft_us"] + sum(d["gaps_us"]))
    picks = np.unique(np.linspace(0, len(ranked) - 1, n).round().astype(int))
    return [ranked[i] for i in picks]


def _summary(donors: list[dict], recs: list[dict]) -> dict:
    """What a reader (and a check of the replay) wants of a group at a glance."""
    gaps = [g for d in donors for g in d["gaps_us"]]
    tokens = sum(r.get("eval_count") or 0 for r in recs)
    token_chunks = sum(r.get("chunks") or 0 for r in recs)
    kinds = [d["chunks"][-1]["k"] if d["chunks"] else "" for d in donors]
    usage = "own chunk" if any(any(c["k"] == "u" for c in d["chunks"]) for d in donors) else "final chunk"
    q = lambda xs, p: float(np.percentile(xs, p)) if xs else None
    return {"requests": len(recs), "donors": len(donors),
            "ttft_us": {"p50": q([d["ttft_us"] for d in donors], 50), "p99": q([d["ttft_us"] for d in donors], 99)},
            "gap_us": {"p50": q(gaps, 50), "p99": q(gaps, 99)},
            "tokens_per_chunk": tokens / token_chunks if token_chunks else None,
            "usage": usage, "last_chunk": max(set(kinds), key=kinds.count) if kinds else None,
            "tool_call_chunks": sum(c["k"] == "c" for d in donors for c in d["chunks"]),
            "ttft_by_prompt": [{"prompt_tokens": d["prompt_tokens"], "cached": d["cached"], "ttft_us": d["ttft_us"]}
                               for d in donors]}


def build(run_dir: str | Path, per_group: int = PER_GROUP) -> dict:
    """The profile of a captured run (see the module's docstring)."""
    run_dir = Path(run_dir)
    manifest = storage.read_json(run_dir / "manifest.json") if (run_dir / "manifest.json").exists() else {}
    capture_path = run_dir / "capture.jsonl"
    if not capture_path.exists():
        raise ProfileError(f"{capture_path}: no capture in this run; sweep a parameter file with `capture: true`")
    traces = {_key(row): row for row in storage.read_jsonl(capture_path, repair=True)}
    records = {_key(r): r for r in storage.read_jsonl(run_dir / "records.jsonl", repair=True)}
    usable = [(records[k], t) for k, t in traces.items()
              if k in records and records[k]["outcome"] == "ok" and t["t_us"]
              and records[k].get("phase") in ("measured", "warmup")]
    if not usable:
        raise ProfileError(f"{capture_path}: no captured stream ended ok in a warm phase; nothing to replay")
    groups: dict[tuple, dict[str, list]] = {}
    for rec, trace in usable:
        group = groups.setdefault((rec["endpoint"], rec.get("concurrency", 1)), {})
        group.setdefault(rec["agent"], []).append((rec, trace))
    donors, summaries, turns = [], [], {}
    for (endpoint, concurrency), by_agent in sorted(groups.items()):
        agent = next(a for a in PREFERENCE if a in by_agent) if any(a in by_agent for a in PREFERENCE) \
            else sorted(by_agent)[0]
        pairs = by_agent[agent]
        chosen = _spread([_donor(r, t) for r, t in pairs], per_group)
        donors += chosen
        summaries.append({"endpoint": endpoint, "concurrency": concurrency, "agent": agent,
                          **_summary(chosen, [r for r, _ in pairs])})
        for rec, trace in pairs:  # the captured agent turns' content, by the history they answered
            if rec.get("history_sha256"):
                turns[rec["history_sha256"]] = {"chunks": _chunks(trace), "final": {k: rec.get(k) for k in FINAL}}
    server = manifest.get("server", {})
    model = manifest.get("model", {})
    return {"schema_version": 1, "kind": vocab.PROFILE_KIND,
            "source": {"run_id": manifest.get("run_id", run_dir.name), "server_kind": server.get("kind"),
                       "server_version": manifest.get("ollama_version"), "model": model.get("name"),
                       "host_cpu": (manifest.get("host") or {}).get("cpu_model"), "git": manifest.get("git"),
                       "captured_at": manifest.get("started_at")},
            "model": model.get("name") or (manifest.get("parameters") or {}).get("model"),
            "models": [{"name": model.get("name") or (manifest.get("parameters") or {}).get("model"),
                        "details": model.get("details", {})}],
            "groups": summaries, "donors": donors, "turns": turns}


def write(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Build the profile and write it whole (a temp file renamed: never half-written)."""
    doc = build(run_dir)
    out = Path(out) if out else Path(run_dir) / "profile.json"
    storage.write_json(out, doc)
    return out
