#!/usr/bin/env python3
"""langbench null client: the floor that the server itself imposes (issue 9, "a null client").

    null_client.py --host URL --jobs JOBS.json --out RECORDS.jsonl

Same contract and timing points as the agents (DESIGN.md), with as little client as a client
can have: one persistent HTTP/1.1 connection from the standard library (http.client decodes the
chunked stream and splits lines at b"\\n" only), each line parsed with json.loads into a dict
(no model object), on /api/generate or /api/chat. It reads each body to its end and keeps the
connection (the agents' policy); a request that had to open one says so, with the connect's
duration. Its client overhead (TTFT − load − prompt_eval) is what no client can go below on
this host; each agent's overhead is reported against it.

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

_PYTHON_AGENT = Path(__file__).resolve().parents[1] / "python"
sys.path.insert(0, str(_PYTHON_AGENT))  # agent.py imports agent_tools from beside it
_spec = importlib.util.spec_from_file_location("langbench_python_agent", _PYTHON_AGENT / "agent.py")
_agent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_agent)
load_jobs, JobsError, itl, SERVER_FIELDS = (_agent.load_jobs, _agent.JobsError, _agent.itl, _agent.SERVER_FIELDS)
agent_tools = _agent.agent_tools  # the loop's tools and bookkeeping: the same module as the agent's

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


def request_body(jobs: dict, run: dict, task=None) -> tuple[str, bytes]:
    """The path and the JSON body, as the agents send them: options as given, keep_alive and
    think (when the run sets it) at the top of the request; an agent turn sends the task's
    history and its `format` or `tools`."""
    body = {"model": jobs["model"], "options": run["options"], "keep_alive": run["keep_alive"], "stream": True}
    if "think" in run:
        body["think"] = run["think"]
    if task is not None:
        return "/api/chat", json.dumps({**body, "messages": task.history, **task.extra}).encode()
    if jobs.get("endpoint", "generate") == "chat":
        return "/api/chat", json.dumps({**body, "messages": jobs["prompts"][run["prompt"]]}).encode()
    return "/api/generate", json.dumps({**body, "prompt": jobs["prompts"][run["prompt"]],
                                        "raw": jobs.get("raw", False)}).encode()


class Exchange:
    """What one request saw, filled while its stream is read."""

    def __init__(self):
        self.chunk_times: list[float] = []
        self.final = self.error = self.t_first = self.t_first_answer = self.t_last = None
        self.n_thinking = self.n_answer = self.n_chars = self.n_thinking_chars = 0
        self.digest = hashlib.sha256()
        self.parts: list[str] = []
        self.tool_calls: list = []
        self.t0_unix = self.t0 = None


def named(kind: str, message: str) -> dict:
    return {"kind": kind, "message": message, "client": CLIENT}


def exchange(conn: Connection, jobs: dict, run: dict, task=None) -> Exchange:
    chat = task is not None or jobs.get("endpoint", "generate") == "chat"
    path, body = request_body(jobs, run, task)
    x = Exchange()
    x.t0_unix = time.time()
    x.t0 = time.perf_counter()  # immediately before the request is written (a connect included, as in the agents)
    if task is not None:
        task.before_send(x.t0)
    try:
        resp = conn.post(path, body)
        if resp.status != 200:
            text = resp.read().decode(errors="replace")
            x.error = named(f"http_{resp.status}", text[:500])
        else:
            while line := resp.readline():  # to the body's end: the connection stays usable
                now = time.perf_counter()
                if not line.strip() or x.final is not None or x.error is not None:
                    continue
                try:
                    chunk = json.loads(line)
                except ValueError as e:
                    x.error = named("bad_chunk", f"line is not JSON: {e}: {line[:60]!r}")
                    continue
                if "error" in chunk:
                    x.error = named("server_error", str(chunk["error"])[:500])
                    continue
                part = (chunk.get("message") or {}) if chat else chunk
                text = part.get("content" if chat else "response") or ""
                thinking = part.get("thinking") or ""
                calls = chat and part.get("tool_calls")
                if calls:  # Ollama sends a call as one chunk once its arguments are complete: it carries tokens
                    x.tool_calls.extend(calls)
                if text or thinking or calls:
                    x.chunk_times.append(now)
                    if x.t_first is None:
                        x.t_first = now
                if thinking:
                    x.n_thinking += 1
                    x.n_thinking_chars += len(thinking)
                if text:
                    x.n_answer += 1
                    x.n_chars += len(text)
                    x.parts.append(text)
                    if x.t_first_answer is None:
                        x.t_first_answer = now
                if chunk.get("done"):
                    x.t_last, x.final = now, chunk
    except (http.client.HTTPException, OSError) as e:
        conn.conn.close()  # a failed exchange leaves the connection unusable: the next run reconnects
        kind = ("connect" if isinstance(e, ConnectionRefusedError) else
                "timeout" if isinstance(e, TimeoutError) else "stream_interrupted")
        x.error = named(kind, str(e) or repr(e))
    if x.final is not None:
        x.error = None
    elif x.error is None:
        x.error = named("no_done", "stream ended without a done:true line")
    if x.error is not None:
        conn.conn.close()  # whatever is left of that body is not read: start clean
    return x


def record_of(x: Exchange, conn: Connection, jobs: dict, run: dict, agent: bool = False) -> dict:
    final, t0 = x.final, x.t0
    outcome = "ok" if final is not None else ("truncated" if x.chunk_times else "error")
    gaps = sorted((b - a) * 1e3 for a, b in zip(x.chunk_times, x.chunk_times[1:]))
    ms = lambda t: None if t is None else (t - t0) * 1e3
    text = "".join(x.parts)
    record = {"schema_version": 2, "run_id": run["run_id"], "agent": "null", "agent_version": AGENT_VERSION,
              "model": jobs["model"], "endpoint": "chat" if agent else jobs.get("endpoint", "generate"),
              "options": run["options"], "think": run.get("think"), "warmup": run["warmup"], "t0_unix": x.t0_unix,
              "new_connection": conn.new, "connect_ms": conn.connect_ms,
              "ttft_ms": ms(x.t_first), "ttft_answer_ms": ms(x.t_first_answer), "e2e_ms": ms(x.t_last),
              "decode_ms": None if x.t_last is None or x.t_first is None else (x.t_last - x.t_first) * 1e3,
              "chunks": len(x.chunk_times), "chunks_thinking": x.n_thinking, "chunks_answer": x.n_answer,
              "itl_ms": itl(gaps)}
    for field in SERVER_FIELDS:
        record[field] = final.get(field) if final else None
    record["done_reason"] = final.get("done_reason") if final else None
    record["thinking_chars"] = x.n_thinking_chars
    record["response_chars"] = x.n_chars
    record["response_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    record["outcome"] = outcome
    record["error"] = x.error
    return record


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
