#!/usr/bin/env python3
"""langbench Python agent: streams /api/generate through the official `ollama` client.

    agent.py --host URL --jobs JOBS.json --out RECORDS.jsonl

One persistent client for every run; one JSON line per run appended to RECORDS.jsonl and
flushed before the next run starts. Exit 0 when every run ended `ok`, 1 when some run did
not, 2 when the jobs file or the arguments are bad (and then nothing is written).

Only the standard library and `ollama` are imported: this program's start-up and memory are
part of what is measured, so it must not carry langbench.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from importlib.metadata import version

import httpx  # ollama's own transport: already loaded by it
import ollama

AGENT_VERSION = f"0.1.0+ollama-python-{version('ollama')}"
SERVER_FIELDS = (
    "total_duration", "load_duration", "prompt_eval_count",
    "prompt_eval_duration", "eval_count", "eval_duration",
)

TOP_KEYS = {"schema_version", "model", "prompts", "raw", "timeout_s", "runs"}
RUN_KEYS = {"run_id", "prompt", "options", "keep_alive", "warmup"}


class JobsError(ValueError):
    """The jobs file cannot be used: the message names the file and the problem."""


def load_jobs(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            jobs = json.load(f)
    except OSError as e:
        raise JobsError(f"{path}: cannot read jobs file: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise JobsError(f"{path}: not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise JobsError(f"{path}: not UTF-8 text: {e}") from None
    _check(path, jobs, "", dict)
    for key in jobs.keys() - TOP_KEYS:
        raise JobsError(f"{path}: unknown field '{key}'")
    for key, kind in (("model", str), ("prompts", list), ("runs", list)):
        if key not in jobs:
            raise JobsError(f"{path}: missing field '{key}'")
        _check(path, jobs[key], key, kind)
    if not jobs["model"]:
        raise JobsError(f"{path}: field 'model' must be a non-empty string")
    if jobs.get("schema_version") != 1:
        raise JobsError(f"{path}: field 'schema_version' must be 1")
    if not jobs["prompts"] or not all(isinstance(p, str) and p for p in jobs["prompts"]):
        raise JobsError(f"{path}: field 'prompts' must be a non-empty list of non-empty strings")
    _check(path, jobs.get("raw", False), "raw", bool)
    _check(path, jobs.get("timeout_s", 600), "timeout_s", (int, float))
    if not jobs["runs"]:
        raise JobsError(f"{path}: field 'runs' is empty")
    for i, run in enumerate(jobs["runs"]):
        where = f"runs[{i}]"
        _check(path, run, where, dict)
        for key in run.keys() - RUN_KEYS:
            raise JobsError(f"{path}: unknown field '{where}.{key}'")
        for key, kind in (("run_id", str), ("prompt", int), ("options", dict),
                          ("keep_alive", (int, str)), ("warmup", bool)):
            if key not in run:
                raise JobsError(f"{path}: missing field '{where}.{key}'")
            _check(path, run[key], f"{where}.{key}", kind)
        if not run["run_id"]:
            raise JobsError(f"{path}: field '{where}.run_id' must be a non-empty string")
        if not 0 <= run["prompt"] < len(jobs["prompts"]):
            raise JobsError(f"{path}: field '{where}.prompt' is out of range")
    return jobs


def _check(path: str, value, key: str, kind) -> None:
    # bool is an int in Python; a jobs file that says `"prompt": true` is still wrong.
    wrong_bool = isinstance(value, bool) and kind is not bool and bool not in (
        kind if isinstance(kind, tuple) else (kind,))
    if wrong_bool or not isinstance(value, kind):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise JobsError(f"{path}: field '{key or '<top>'}' must be {names}, "
                        f"got {type(value).__name__}")


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); the Rust agent matches."""
    if not sorted_values:
        return None
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def run_one(client: ollama.Client, jobs: dict, run: dict) -> dict:
    prompt = jobs["prompts"][run["prompt"]]
    parts: list[str] = []
    chunk_times: list[float] = []
    final = None
    error = None
    t_first = t_last = None

    # Timing points: DESIGN.md, "The agent contract". t0 immediately before the request is
    # written (the client sends it on the first next()); t_first when the first chunk with a
    # non-empty `response` has been parsed; t_last when the `done` chunk has been parsed.
    t0_unix = time.time()
    t0 = time.perf_counter()
    try:
        stream = client.generate(
            model=jobs["model"], prompt=prompt, raw=jobs.get("raw", False),
            options=run["options"], keep_alive=run["keep_alive"], stream=True,
        )
        for chunk in stream:
            now = time.perf_counter()
            if chunk.response:
                chunk_times.append(now)
                parts.append(chunk.response)
                if t_first is None:
                    t_first = now
            if chunk.done:
                t_last = now
                final = chunk
                break
    # Error kinds are the Rust agent's (agents/rust/src/client.rs), one for one.
    except ollama.ResponseError as e:  # an HTTP error status, or an {"error": ...} line after 200
        kind = "server_error" if e.status_code in (-1, 200) else f"http_{e.status_code}"
        error = {"kind": kind, "message": str(e.error)}
    except (httpx.ConnectError, ConnectionError) as e:  # the client wraps it when not streaming
        error = {"kind": "connect", "message": str(e)}
    except httpx.TimeoutException as e:
        error = {"kind": "timeout", "message": str(e) or repr(e)}
    except httpx.HTTPError as e:  # the server closed or died mid-stream
        error = {"kind": "stream_interrupted", "message": str(e) or repr(e)}
    except ValueError as e:  # a line that is not JSON
        error = {"kind": "bad_chunk", "message": str(e)}

    if final is not None:
        outcome = "ok"
    elif error is None:
        outcome = "truncated"
        error = {"kind": "no_done", "message": "stream ended without a done:true line"}
    else:
        outcome = "truncated" if chunk_times else "error"

    gaps = sorted((b - a) * 1e3 for a, b in zip(chunk_times, chunk_times[1:]))
    response = "".join(parts)
    record = {
        "schema_version": 1,
        "run_id": run["run_id"],
        "agent": "python",
        "agent_version": AGENT_VERSION,
        "model": jobs["model"],
        "options": run["options"],
        "warmup": run["warmup"],
        "t0_unix": t0_unix,
        "ttft_ms": None if t_first is None else (t_first - t0) * 1e3,
        "e2e_ms": None if t_last is None else (t_last - t0) * 1e3,
        "decode_ms": None if t_last is None or t_first is None else (t_last - t_first) * 1e3,
        "chunks": len(chunk_times),
        "itl_ms": {"p50": percentile(gaps, 0.50), "p95": percentile(gaps, 0.95),
                   "p99": percentile(gaps, 0.99), "max": gaps[-1] if gaps else None},
    }
    for field in SERVER_FIELDS:
        record[field] = getattr(final, field, None) if final is not None else None
    record["done_reason"] = getattr(final, "done_reason", None) if final is not None else None
    record["response_chars"] = len(response)
    record["response_sha256"] = hashlib.sha256(response.encode("utf-8")).hexdigest()
    record["outcome"] = outcome
    record["error"] = error
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="Ollama base URL, e.g. http://127.0.0.1:11434")
    parser.add_argument("--jobs", required=True, help="jobs file (JSON)")
    parser.add_argument("--out", required=True, help="records file (JSON lines, appended)")
    args = parser.parse_args(argv)
    try:
        jobs = load_jobs(args.jobs)
    except JobsError as e:
        print(f"python agent: bad jobs file: {e}", file=sys.stderr)
        return 2

    client = ollama.Client(host=args.host, timeout=jobs.get("timeout_s", 600))
    failed = 0
    with open(args.out, "a", encoding="utf-8") as out:
        for i, run in enumerate(jobs["runs"], 1):
            record = run_one(client, jobs, run)
            out.write(json.dumps(record) + "\n")
            out.flush()
            if record["outcome"] != "ok":
                failed += 1
                print(f"python agent: run {run['run_id']}: {record['outcome']}: "
                      f"{record['error']['kind']}: {record['error']['message']}", file=sys.stderr)
            else:
                print(f"python agent: run {i}/{len(jobs['runs'])} {run['run_id']} ok "
                      f"ttft={record['ttft_ms']:.1f}ms", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
