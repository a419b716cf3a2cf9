#!/usr/bin/env python3
"""langbench Python agent: streams /api/generate through the official `ollama` client.

    agent.py --host URL --jobs JOBS.json --out RECORDS.jsonl

One persistent client for every run; one JSON line per run appended to RECORDS.jsonl and
flushed as soon as the run ends. Exit 0 when every run ended `ok`, 1 when some run did not,
2 when the jobs file or the arguments are bad (and then nothing is written).

Without `streams` in the jobs file, runs go one after another through `ollama.Client`. With
`streams: N`, warm-up runs go first, one at a time, then the measured runs of each stream go
one after another in N concurrent streams on one asyncio event loop, through one
`ollama.AsyncClient` (closed loop); when measured runs carry `send_at_s`, each is sent at that
offset from the start of the measured phase whatever else is in flight (open loop), and its
record says how late it was sent (`schedule_lag_ms`).

Only the standard library and `ollama` are imported: this program's start-up and memory are
part of what is measured, so it must not carry langbench.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
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

TOP_KEYS = {"schema_version", "model", "prompts", "raw", "timeout_s", "streams", "runs"}
RUN_KEYS = {"run_id", "prompt", "options", "keep_alive", "warmup", "stream", "send_at_s"}


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
    streams = jobs.get("streams", 1)
    _check(path, streams, "streams", int)
    if streams < 1:
        raise JobsError(f"{path}: field 'streams' must be at least 1")
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
        if "stream" in run:
            _check(path, run["stream"], f"{where}.stream", int)
            if not 0 <= run["stream"] < streams:
                raise JobsError(f"{path}: field '{where}.stream' must be in [0, streams)")
        if "send_at_s" in run:
            _check(path, run["send_at_s"], f"{where}.send_at_s", (int, float))
            if not (math.isfinite(run["send_at_s"]) and run["send_at_s"] >= 0):
                raise JobsError(f"{path}: field '{where}.send_at_s' must be a finite number ≥ 0")
            if "streams" not in jobs:
                raise JobsError(f"{path}: field '{where}.send_at_s' needs 'streams' (the concurrent mode)")
    measured = [r for r in jobs["runs"] if not r["warmup"]]
    if any("send_at_s" in r for r in measured) and not all("send_at_s" in r for r in measured):
        raise JobsError(f"{path}: either every measured run has 'send_at_s' (open loop) or none has")
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


# Error kinds are the Rust agent's (agents/rust/src/client.rs), one for one.
CLIENT_ERRORS = (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError)


def error_of(e: BaseException) -> dict:
    if isinstance(e, ollama.ResponseError):  # an HTTP error status, or an {"error": ...} line after 200
        kind = "server_error" if e.status_code in (-1, 200) else f"http_{e.status_code}"
        return {"kind": kind, "message": str(e.error)}
    if isinstance(e, (httpx.ConnectError, ConnectionError)):  # the client wraps it when not streaming
        return {"kind": "connect", "message": str(e)}
    if isinstance(e, httpx.TimeoutException):
        return {"kind": "timeout", "message": str(e) or repr(e)}
    if isinstance(e, httpx.HTTPError):  # the server closed or died mid-stream
        return {"kind": "stream_interrupted", "message": str(e) or repr(e)}
    return {"kind": "bad_chunk", "message": str(e)}  # a line that is not JSON


def request(jobs: dict, run: dict) -> dict:
    return dict(model=jobs["model"], prompt=jobs["prompts"][run["prompt"]], raw=jobs.get("raw", False),
                options=run["options"], keep_alive=run["keep_alive"], stream=True)


class Timing:
    """One run's timing points (DESIGN.md, "The agent contract"): t0 immediately before the
    request is written (the client sends it on the first next()); t_first when the first chunk
    with a non-empty `response` has been parsed; t_last when the `done` chunk has been parsed;
    one timestamp per non-empty chunk. The same code for the blocking and the asyncio client."""

    def __init__(self, jobs: dict, run: dict):
        self.jobs, self.run = jobs, run
        self.parts: list[str] = []
        self.chunk_times: list[float] = []
        self.final = self.error = self.t_first = self.t_last = None
        self.t0_unix = time.time()
        self.t0 = time.perf_counter()

    def chunk(self, chunk) -> bool:
        """Take one parsed chunk; True when it was the last."""
        now = time.perf_counter()
        if chunk.response:
            self.chunk_times.append(now)
            self.parts.append(chunk.response)
            if self.t_first is None:
                self.t_first = now
        if chunk.done:
            self.t_last, self.final = now, chunk
        return bool(chunk.done)

    def record(self, **extra) -> dict:
        final, t0, t_first, t_last, error = self.final, self.t0, self.t_first, self.t_last, self.error
        if final is not None:
            outcome = "ok"
        elif error is None:
            outcome = "truncated"
            error = {"kind": "no_done", "message": "stream ended without a done:true line"}
        else:
            outcome = "truncated" if self.chunk_times else "error"
        times = self.chunk_times
        gaps = sorted((b - a) * 1e3 for a, b in zip(times, times[1:]))
        response = "".join(self.parts)
        record = {
            "schema_version": 1,
            "run_id": self.run["run_id"],
            "agent": "python",
            "agent_version": AGENT_VERSION,
            "model": self.jobs["model"],
            "options": self.run["options"],
            "warmup": self.run["warmup"],
            "t0_unix": self.t0_unix,
            "ttft_ms": None if t_first is None else (t_first - t0) * 1e3,
            "e2e_ms": None if t_last is None else (t_last - t0) * 1e3,
            "decode_ms": None if t_last is None or t_first is None else (t_last - t_first) * 1e3,
            "chunks": len(times),
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
        record.update(extra)
        return record


def run_one(client: ollama.Client, jobs: dict, run: dict) -> dict:
    timing = Timing(jobs, run)
    try:
        for chunk in client.generate(**request(jobs, run)):
            if timing.chunk(chunk):
                break
    except CLIENT_ERRORS as e:
        timing.error = error_of(e)
    return timing.record()


async def run_one_async(client: ollama.AsyncClient, jobs: dict, run: dict, **extra) -> dict:
    timing = Timing(jobs, run)
    try:
        stream = await client.generate(**request(jobs, run))
        try:
            async for chunk in stream:
                if timing.chunk(chunk):
                    break
        finally:
            await stream.aclose()  # give the connection back to the pool now, not at GC
    except CLIENT_ERRORS as e:
        timing.error = error_of(e)
    return timing.record(**extra)


class Writer:
    """Appends each record as its run ends and flushes it; counts and reports failures."""

    def __init__(self, out, total: int):
        self.out, self.total, self.done, self.failed = out, total, 0, 0

    def __call__(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        self.done += 1
        if record["outcome"] != "ok":
            self.failed += 1
            print(f"python agent: run {record['run_id']}: {record['outcome']}: "
                  f"{record['error']['kind']}: {record['error']['message']}", file=sys.stderr)
        else:
            print(f"python agent: run {self.done}/{self.total} {record['run_id']} ok "
                  f"ttft={record['ttft_ms']:.1f}ms", file=sys.stderr)


async def run_concurrent(host: str, jobs: dict, write: Writer) -> None:
    """Warm-ups one at a time, then the measured runs in `streams` concurrent streams (closed
    loop) or each at its `send_at_s` (open loop)."""
    n = jobs["streams"]
    client = ollama.AsyncClient(host=host, timeout=jobs.get("timeout_s", 600),
                                limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
    runs = jobs["runs"]
    for run in (r for r in runs if r["warmup"]):
        write(await run_one_async(client, jobs, run, concurrency=n, stream=run.get("stream", 0)))
    measured = [r for r in runs if not r["warmup"]]
    if measured and "send_at_s" in measured[0]:
        start = time.perf_counter()

        async def at(i: int, run: dict) -> None:
            await asyncio.sleep(max(0.0, start + run["send_at_s"] - time.perf_counter()))
            lag_ms = (time.perf_counter() - start - run["send_at_s"]) * 1e3
            write(await run_one_async(client, jobs, run, concurrency=n, stream=run.get("stream", i),
                                      schedule_lag_ms=lag_ms))

        await asyncio.gather(*(at(i, r) for i, r in enumerate(measured)))
        return

    async def stream(k: int, own: list[dict]) -> None:
        for run in own:
            write(await run_one_async(client, jobs, run, concurrency=n, stream=k))

    by_stream: dict[int, list[dict]] = {k: [] for k in range(n)}
    for i, run in enumerate(measured):
        by_stream[run.get("stream", i % n)].append(run)
    await asyncio.gather(*(stream(k, own) for k, own in by_stream.items()))


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

    with open(args.out, "a", encoding="utf-8") as out:
        write = Writer(out, len(jobs["runs"]))
        if "streams" in jobs:
            asyncio.run(run_concurrent(args.host, jobs, write))
        else:
            client = ollama.Client(host=args.host, timeout=jobs.get("timeout_s", 600))
            for run in jobs["runs"]:
                write(run_one(client, jobs, run))
    return 1 if write.failed else 0


if __name__ == "__main__":
    sys.exit(main())
