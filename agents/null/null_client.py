#!/usr/bin/env python3
"""langbench null client: the floor that the server itself imposes (issue 9, "a null client").

    null_client.py --host URL --jobs JOBS.json --out RECORDS.jsonl

Same contract and timing points as the agents (DESIGN.md), with as little client as a client
can have: one persistent HTTP/1.1 connection from the standard library (http.client decodes the
chunked stream), no JSON model per chunk. A chunk counts as non-empty when its bytes do not say
`"response":""`; only the final `done` line is parsed, for the server's own fields. Its client
overhead (TTFT − load − prompt_eval) is what no client can go below on this host; each agent's
overhead is reported against it.

The jobs loader, the percentile and the record's fields are the Python agent's (imported from
agents/python/agent.py, so the two can never drift apart).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

_spec = importlib.util.spec_from_file_location("langbench_python_agent",
                                               Path(__file__).resolve().parents[1] / "python" / "agent.py")
_agent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_agent)
load_jobs, JobsError, percentile, SERVER_FIELDS = (_agent.load_jobs, _agent.JobsError, _agent.percentile,
                                                   _agent.SERVER_FIELDS)

AGENT_VERSION = "0.1.0+http.client"
EMPTY = b'"response":""'
DONE = b'"done":true'


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened once if the server closed it."""

    def __init__(self, host: str, timeout: float):
        url = urlsplit(host if "://" in host else f"http://{host}")
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def post(self, path: str, body: bytes) -> http.client.HTTPResponse:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        raise AssertionError("unreachable")


def run_one(conn: Connection, jobs: dict, run: dict) -> dict:
    body = json.dumps({"model": jobs["model"], "prompt": jobs["prompts"][run["prompt"]],
                       "raw": jobs.get("raw", False), "options": run["options"],
                       "keep_alive": run["keep_alive"], "stream": True}).encode()
    chunk_times: list[float] = []
    final, error, t_first, t_last, n_bytes = None, None, None, None, 0
    digest = hashlib.sha256()
    t0_unix = time.time()
    t0 = time.perf_counter()  # immediately before the request is written
    try:
        resp = conn.post("/api/generate", body)
        if resp.status != 200:
            text = resp.read().decode(errors="replace")
            error = {"kind": f"http_{resp.status}", "message": text[:500]}
        else:
            while line := resp.readline():
                now = time.perf_counter()
                if DONE in line:
                    t_last = now
                    final = json.loads(line)
                    break
                if b'"error"' in line:
                    error = {"kind": "server_error", "message": line.decode(errors="replace")[:500]}
                    break
                if EMPTY not in line:
                    chunk_times.append(now)
                    if t_first is None:
                        t_first = now
                    # the text itself is only counted: no JSON model, but the same digest
                    piece = json.loads(line)["response"]
                    n_bytes += len(piece)
                    digest.update(piece.encode())
            resp.read()  # drain, so the connection can be reused
    except (http.client.HTTPException, OSError) as e:
        conn.conn.close()  # a failed exchange leaves the connection unusable: the next run reconnects
        kind = ("connect" if isinstance(e, ConnectionRefusedError) else
                "timeout" if isinstance(e, TimeoutError) else "stream_interrupted")
        error = {"kind": kind, "message": str(e) or repr(e)}
    outcome = "ok" if final is not None else ("truncated" if chunk_times else "error")
    if outcome != "ok" and error is None:
        error = {"kind": "no_done", "message": "stream ended without a done:true line"}
    gaps = sorted((b - a) * 1e3 for a, b in zip(chunk_times, chunk_times[1:]))
    record = {"schema_version": 1, "run_id": run["run_id"], "agent": "null", "agent_version": AGENT_VERSION,
              "model": jobs["model"], "options": run["options"], "warmup": run["warmup"], "t0_unix": t0_unix,
              "ttft_ms": None if t_first is None else (t_first - t0) * 1e3,
              "e2e_ms": None if t_last is None else (t_last - t0) * 1e3,
              "decode_ms": None if t_last is None or t_first is None else (t_last - t_first) * 1e3,
              "chunks": len(chunk_times),
              "itl_ms": {"p50": percentile(gaps, 0.50), "p95": percentile(gaps, 0.95),
                         "p99": percentile(gaps, 0.99), "max": gaps[-1] if gaps else None}}
    for field in SERVER_FIELDS:
        record[field] = final.get(field) if final else None
    record["done_reason"] = final.get("done_reason") if final else None
    record["response_chars"] = n_bytes
    record["response_sha256"] = digest.hexdigest()
    record["outcome"] = outcome
    record["error"] = error
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        jobs = load_jobs(args.jobs)
        if "streams" in jobs:
            raise JobsError(f"{args.jobs}: field 'streams': the null client runs one stream, one run at a time")
    except JobsError as e:
        print(f"null client: bad jobs file: {e}", file=sys.stderr)
        return 2
    conn = Connection(args.host, jobs.get("timeout_s", 600))
    failed = 0
    with open(args.out, "a", encoding="utf-8") as out:
        for run in jobs["runs"]:
            record = run_one(conn, jobs, run)
            out.write(json.dumps(record) + "\n")
            out.flush()
            if record["outcome"] != "ok":
                failed += 1
                print(f"null client: run {run['run_id']}: {record['error']['kind']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
