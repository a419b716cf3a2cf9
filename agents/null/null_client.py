#!/usr/bin/env python3
"""langbench null client: the floor that the server itself imposes (issue 9, "a null client").

    null_client.py --host URL --jobs JOBS.json --out RECORDS.jsonl

Same contract and timing points as the agents (DESIGN.md), with as little client as a client
can have: one persistent HTTP/1.1 connection from the standard library (http.client decodes the
chunked stream and splits lines at b"\\n" only), each line parsed with json.loads into a dict
(no model object), on /api/generate or /api/chat; on /v1/chat/completions and
/v1/completions it parses the Server-Sent Events itself (`data:` lines gathered until a blank
line, CRLF taken as LF, comments and other fields skipped, `data: [DONE]` the end). It reads each body to its end and keeps the
connection (the agents' policy); a request that had to open one says so, with the connect's
duration. Its client overhead (TTFT − load − prompt_eval) is what no client can go below on
this host; each agent's overhead is reported against it.

The jobs loader, the percentile and the record's fields are the Python agent's (imported from
agents/python/agent_jobs.py, so the two can never drift apart; no HTTP client comes with them).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

_PYTHON_AGENT = Path(__file__).resolve().parents[1] / "python"
sys.path.insert(0, str(_PYTHON_AGENT))  # the Python agent's client-free parts, beside it
import agent_jobs  # noqa: E402  (the jobs loader, ITL and record fields: never drift apart)
import agent_tools  # noqa: E402  (the loop's tools and bookkeeping: the same module as the agent's)
import agent_wire as wire  # noqa: E402  (the streams parsed by hand: the raw Python client's parser too)

load_jobs, JobsError = agent_jobs.load_jobs, agent_jobs.JobsError

AGENT_VERSION = "0.1.0+http.client"
CLIENT = f"http.client (Python {sys.version.split()[0]})"


class Connection:
    """One keep-alive HTTP/1.1 connection, reopened once if the server closed it. After each
    post, `new` says whether it had to connect and `connect_ms` how long the connect took."""

    def __init__(self, host: str, timeout: float):
        url = urlsplit(host if "://" in host else f"http://{host}")
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        self.new, self.connect_ms = False, None

    def _connect_if_closed(self) -> None:
        if self.conn.sock is None:
            start = time.perf_counter()
            self.conn.connect()
            self.new, self.connect_ms = True, (time.perf_counter() - start) * 1e3

    def post(self, path: str, body: bytes) -> http.client.HTTPResponse:
        self.new, self.connect_ms = False, None
        for attempt in (1, 2):
            try:
                self._connect_if_closed()
                self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                return self.conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt == 2:
                    raise
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        raise AssertionError("unreachable")


def cut(resp: http.client.HTTPResponse) -> None:
    """http.client's readline ends a chunked body the server cut (no last chunk) as quietly as
    one that ended: only chunk_left tells them apart (None after the last chunk)."""
    if resp.chunked and resp.chunk_left is not None:
        raise http.client.IncompleteRead(b"", None)


def exchange(conn: Connection, jobs: dict, run: dict, task=None) -> wire.Exchange:
    chat = task is not None or jobs.get("endpoint", "generate") == "chat"
    path, body = wire.request_body(jobs, run, task)
    t0_unix = time.time()
    # immediately before the request is written (a connect included, as in the agents); CLOCK_MONOTONIC
    x = wire.Exchange(CLIENT, time.monotonic_ns(), jobs.get("capture", False))
    x.t0_unix = t0_unix
    if task is not None:
        task.before_send(x.t0)
    try:
        resp = conn.post(path, body)
        if resp.status != 200:
            text = resp.read().decode(errors="replace")
            x.error = x.named(f"http_{resp.status}", wire.error_message(text)[:500])
        elif path in wire.OPENAI_PATHS.values():
            sse, v1_chat = wire.SSE(), path == wire.OPENAI_PATHS["openai-chat"]
            while raw := resp.readline():  # split at b"\n" only; to the body's end: the connection stays usable
                now_ns = time.monotonic_ns()
                event = sse.line(raw)
                if event is not None:
                    wire.take_event(x, event, now_ns, v1_chat)
            cut(resp)
            wire.end_sse(x)
        else:
            while line := resp.readline():  # to the body's end: the connection stays usable
                wire.take_line(x, line, time.monotonic_ns(), chat)
        cut(resp)
    except (http.client.HTTPException, OSError) as e:
        conn.conn.close()  # a failed exchange leaves the connection unusable: the next run reconnects
        kind = ("connect" if isinstance(e, ConnectionRefusedError) else
                "timeout" if isinstance(e, TimeoutError) else "stream_interrupted")
        x.error = x.named(kind, str(e) or repr(e))
    wire.end(x)
    if x.error is not None:
        conn.conn.close()  # whatever is left of that body is not read: start clean
    return x


def record_of(x: wire.Exchange, conn: Connection, jobs: dict, run: dict, agent: bool = False) -> dict:
    return wire.record_of(x, "null", AGENT_VERSION, jobs, run, conn.new, conn.connect_ms,
                          jobs.get("endpoint", "chat" if agent else "generate"))


def run_one(conn: Connection, jobs: dict, run: dict) -> dict:
    return record_of(exchange(conn, jobs, run), conn, jobs, run)


def run_task(conn: Connection, jobs: dict, run: dict, write) -> None:
    """One task (DESIGN.md, "Agent loops"): send, parse, act, append, until finish or max_turns."""
    task = agent_tools.Task(jobs, run, CLIENT)
    while not task.over:
        x = exchange(conn, jobs, run, task)
        wait_ms = task.act("".join(x.parts), x.tool_calls, x.error, x.t_last, jobs.get("timeout_s", 600))
        if wait_ms:
            time.sleep(wait_ms / 1e3)
        task.after_tool()
        write({**record_of(x, conn, jobs, run, agent=True), **task.fields()})
        task.after_record()


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
        def write(record: dict) -> None:
            nonlocal failed
            out.write(json.dumps(record) + "\n")
            out.flush()
            if record["outcome"] != "ok":
                failed += 1
                print(f"null client: run {record['run_id']}: {record['error']['kind']}", file=sys.stderr)
            elif record.get("task_outcome") == "error":
                failed += 1
                print(f"null client: run {record['run_id']}: task error: {record['task_error']['kind']}",
                      file=sys.stderr)

        for run in jobs["runs"]:
            if jobs.get("workload") == "agent":
                run_task(conn, jobs, run, write)
            else:
                write(run_one(conn, jobs, run))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
