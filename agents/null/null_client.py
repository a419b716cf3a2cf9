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
import hashlib
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

load_jobs, JobsError, itl, SERVER_FIELDS = agent_jobs.load_jobs, agent_jobs.JobsError, agent_jobs.itl, agent_jobs.SERVER_FIELDS
Trace, kind_of, stamp_of = agent_jobs.Trace, agent_jobs.kind_of, agent_jobs.stamp_of
OPENAI_PATHS = {"openai-chat": "/v1/chat/completions", "openai-completions": "/v1/completions"}

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
    endpoint = jobs.get("endpoint", "generate")
    if endpoint in OPENAI_PATHS:  # the options are the request's own fields (the runner translated them)
        body = {"model": jobs["model"], "stream": True, "stream_options": {"include_usage": True}, **run["options"]}
        if task is not None:
            return OPENAI_PATHS[endpoint], json.dumps({**body, "messages": task.history, **task.extra}).encode()
        key = "messages" if endpoint == "openai-chat" else "prompt"
        return OPENAI_PATHS[endpoint], json.dumps({**body, key: jobs["prompts"][run["prompt"]]}).encode()
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
        self.calls: dict[int, dict] = {}  # /v1: streamed tool calls by index
        self.t0_unix = self.t0 = self.trace = None


def named(kind: str, message: str) -> dict:
    return {"kind": kind, "message": message, "client": CLIENT}


def error_message(body: str) -> str:
    """The message of a JSON error body ({"error": "..."} on /api, {"error": {"message": ...}}
    on /v1), else the body as it came."""
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body
    if isinstance(err, dict):
        err = err.get("message")
    return err if isinstance(err, str) and err else body


def read_sse(resp: http.client.HTTPResponse, x: Exchange, chat: bool) -> None:
    """A /v1 stream to its end: each event's data lines (a blank line ends an event; CRLF is
    LF; comments, `event:` and other fields are skipped), each event's data one JSON chunk,
    `data: [DONE]` the end. t_last is the chunk with a finish_reason (generation's end), the
    usage event gives the token counts; an event left open when the body ends is dropped, as
    the SSE spec says."""
    data: list[bytes] = []
    finish = usage = None
    while raw := resp.readline():  # split at b"\n" only; to the body's end: the connection stays usable
        now_ns = time.monotonic_ns()
        now = now_ns / 1e9
        line = raw.rstrip(b"\n").removesuffix(b"\r")
        if line:
            field, _, value = line.partition(b":")
            if field == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
            continue
        if not data:
            continue
        event, data = b"\n".join(data), []
        if x.error is not None or event == b"[DONE]":
            continue
        try:
            chunk = json.loads(event)
        except ValueError as e:
            x.error = named("bad_chunk", f"data is not JSON: {e}: {event[:60]!r}")
            continue
        if not isinstance(chunk, dict):
            x.error = named("bad_chunk", f"data is not a JSON object: {event[:60]!r}")
            continue
        if chunk.get("error"):
            err = chunk["error"]
            x.error = named("server_error", str(err.get("message") if isinstance(err, dict) else err)[:500])
            continue
        if chunk.get("usage"):  # the last one counts (Ollama's /v1/completions sends zeros on every chunk first)
            usage = chunk["usage"]
        kind, piece = "u" if chunk.get("usage") and not chunk.get("choices") else "e", ""
        for choice in chunk.get("choices") or ():
            delta = (choice.get("delta") or {}) if chat else choice
            text = delta.get("content" if chat else "text") or ""
            thinking = (delta.get("reasoning_content") or delta.get("reasoning") or "") if chat else ""
            calls = (delta.get("tool_calls") or []) if chat else []
            for call in calls:  # streamed in pieces by index: the name first, then the arguments
                slot = x.calls.setdefault(call.get("index") or 0, {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.get("id") or slot["id"]
                fn = call.get("function") or {}
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
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
            if choice.get("finish_reason") is not None and finish is None:
                finish, x.t_last = choice["finish_reason"], now
            if kind in "ued":
                kind = kind_of(text, thinking, calls, choice.get("finish_reason") is not None)
                piece = (json.dumps(calls) if kind == "c" else text if kind == "a" else
                         thinking if kind == "t" else "")
        x.trace.add(now_ns, kind, piece, len(event), stamp_of(chunk.get("t_sent_ns")))
    for _, c in sorted(x.calls.items()):
        try:
            args = json.loads(c["arguments"]) if c["arguments"] else {}
        except ValueError:
            args = c["arguments"]
        x.tool_calls.append({"id": c["id"], "function": {"name": c["name"] or None, "arguments": args},
                             "arguments_text": c["arguments"]})
    if finish is not None and x.error is None:  # /v1 has no server durations: null, never 0
        x.final = {"done_reason": finish, "prompt_eval_count": (usage or {}).get("prompt_tokens"),
                   "eval_count": (usage or {}).get("completion_tokens")}
    elif x.error is None:
        x.error = named("no_done", "stream ended without a finish_reason")


def exchange(conn: Connection, jobs: dict, run: dict, task=None) -> Exchange:
    chat = task is not None or jobs.get("endpoint", "generate") == "chat"
    path, body = request_body(jobs, run, task)
    x = Exchange()
    x.t0_unix = time.time()
    t0_ns = time.monotonic_ns()  # immediately before the request is written (a connect included, as in the agents)
    x.t0, x.trace = t0_ns / 1e9, Trace(t0_ns, jobs.get("capture", False))  # CLOCK_MONOTONIC: the stamps' clock
    if task is not None:
        task.before_send(x.t0)
    try:
        resp = conn.post(path, body)
        if resp.status != 200:
            text = resp.read().decode(errors="replace")
            x.error = named(f"http_{resp.status}", error_message(text)[:500])
        elif path in OPENAI_PATHS.values():
            read_sse(resp, x, path == OPENAI_PATHS["openai-chat"])
        else:
            while line := resp.readline():  # to the body's end: the connection stays usable
                now_ns = time.monotonic_ns()
                now = now_ns / 1e9
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
                kind = kind_of(text, thinking, calls, bool(chunk.get("done")))
                x.trace.add(now_ns, kind, json.dumps([c.get("function") for c in calls]) if kind == "c" else
                            text if kind == "a" else thinking if kind == "t" else "",
                            len(line.rstrip(b"\r\n")), stamp_of(chunk.get("t_sent_ns")))
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
              "model": jobs["model"], "endpoint": jobs.get("endpoint", "chat" if agent else "generate"),
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
    record.update(x.trace.fields())
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
