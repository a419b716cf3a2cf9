"""The Python agent's /api/generate and /api/chat path, through the official `ollama` client.

Without `streams` in the jobs file, runs go one after another through `ollama.Client`. With
`streams: N`, warm-up runs go first, one at a time, then the measured runs of each stream go
one after another in N concurrent streams on one asyncio event loop, through one
`ollama.AsyncClient` (closed loop); when measured runs carry `send_at_s`, each is sent at that
offset from the start of the measured phase whatever else is in flight (open loop), and its
record says how late it was sent (`schedule_lag_ms`).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import sys
import time
from importlib.metadata import version

import httpx  # ollama's own transport: already loaded by it
import ollama

import agent_async  # the one asyncio loop of every Python client (sessions at scale)
import agent_tools  # the loop's tools and bookkeeping, shared with the null client
from agent_jobs import SERVER_FIELDS, Trace, Writer, created_stamps, itl, kind_of

AGENT_VERSION = f"0.1.0+ollama-python-{version('ollama')}"
CLIENT = f"ollama-python {version('ollama')} (httpx {version('httpx')})"  # named in every error


# Error kinds are the Rust agent's (agents/rust/src/client.rs), one for one.
CLIENT_ERRORS = (ollama.ResponseError, httpx.HTTPError, ConnectionError, ValueError)  # JSONDecodeError too


def error_of(e: BaseException) -> dict:
    """{kind, message, client}: the cause, in the Rust agent's kinds, and the client that met it."""
    def named(kind: str, message: str) -> dict:
        return {"kind": kind, "message": message, "client": CLIENT}

    if isinstance(e, ollama.ResponseError):  # an HTTP error status, or an {"error": ...} line after 200
        kind = "server_error" if e.status_code in (-1, 200) else f"http_{e.status_code}"
        return named(kind, str(e.error))
    if isinstance(e, (httpx.ConnectError, ConnectionError)):  # the client wraps it when not streaming
        return named("connect", str(e))
    if isinstance(e, httpx.TimeoutException):
        return named("timeout", str(e) or repr(e))
    if isinstance(e, httpx.HTTPError):  # the server closed or died mid-stream
        return named("stream_interrupted", str(e) or repr(e))
    if isinstance(e, json.JSONDecodeError):  # the client's line splitter handed over a piece of a line
        piece = e.doc[:60] + ("…" if len(e.doc) > 60 else "")
        cut = " (httpx's iter_lines splits lines with str.splitlines, which also breaks at U+0085, " \
              "U+2028, U+2029, \\x1c-\\x1e: a legal JSON line holding one arrives in pieces)" \
            if "Unterminated string" in e.msg or e.doc.lstrip()[:1] not in ("{", "") else ""
        return named("bad_chunk", f"line is not JSON: {e.msg} (char {e.pos}) in {piece!r}{cut}")
    return named("bad_chunk", f"{type(e).__name__}: {e}")


def request(jobs: dict, run: dict) -> dict:
    """The keyword arguments of client.generate or client.chat: options as given, and the
    request-level fields (keep_alive, think) at the top of the request, where the API reads them;
    think only when the run sets it (absent and false differ for some models)."""
    common = dict(model=jobs["model"], options=run["options"], keep_alive=run["keep_alive"], stream=True)
    if "think" in run:
        common["think"] = run["think"]
    if jobs.get("endpoint", "generate") == "chat":
        return dict(messages=jobs["prompts"][run["prompt"]], **common)
    return dict(prompt=jobs["prompts"][run["prompt"]], raw=jobs.get("raw", False), **common)


def call(client, jobs: dict, run: dict):
    """The streaming call: client.chat or client.generate (a generator, or for the AsyncClient a
    coroutine that returns an async generator)."""
    method = client.chat if jobs.get("endpoint", "generate") == "chat" else client.generate
    return method(**request(jobs, run))


# The run whose request is being sent in this thread or asyncio task: the httpx event hook puts
# a trace on each request that reports a new connection to it (httpcore's "connect_tcp" events).
CURRENT: contextvars.ContextVar["Timing"] = contextvars.ContextVar("current_run")


def _trace_hook(request: httpx.Request) -> None:
    timing = CURRENT.get(None)
    if timing is not None:
        request.extensions["trace"] = timing.trace
        timing.sent = request.content  # the body as the client built it (an agent turn hashes its messages)


async def _async_trace_hook(request: httpx.Request) -> None:
    timing = CURRENT.get(None)
    if timing is not None:
        request.extensions["trace"] = timing.async_trace
        timing.sent = request.content


class Timing:
    """One run's timing points (DESIGN.md, "The agent contract"): t0 immediately before the
    request is written (the client sends it on the first next()); t_first when the first chunk
    carrying any token (thinking or answer) has been parsed; t_first_answer when the first chunk
    with non-empty answer text has been parsed; t_last when the `done` chunk has been parsed; one
    timestamp per non-empty chunk, kind kept. Whether the request opened a new connection, and
    the TCP connect's duration, come from httpcore's trace events. The same code for the
    blocking and the asyncio client."""

    def __init__(self, jobs: dict, run: dict):
        self.jobs, self.run = jobs, run
        self.chat = jobs.get("endpoint", "generate") == "chat"
        self.parts: list[str] = []
        self.thinking_parts: list[str] = []
        self.chunk_times: list[float] = []
        self.chunks_thinking = self.chunks_answer = 0
        self.final = self.error = self.t_first = self.t_first_answer = self.t_last = None
        self.new_connection, self.connect_started, self.connect_ms = False, None, None
        self.tool_calls: list[dict] = []
        self.sent: bytes | None = None
        self.t0_unix = time.time()
        t0_ns = time.monotonic_ns()  # CLOCK_MONOTONIC, as perf_counter is on Linux: the stamps' clock
        self.t0 = t0_ns / 1e9
        self.chunks = Trace(t0_ns, jobs.get("capture", False))

    def trace(self, event: str, info: dict) -> None:
        if event == "connection.connect_tcp.started":
            self.new_connection, self.connect_started = True, time.monotonic()
        elif event == "connection.connect_tcp.complete" and self.connect_started is not None:
            self.connect_ms = (time.monotonic() - self.connect_started) * 1e3

    async def async_trace(self, event: str, info: dict) -> None:
        self.trace(event, info)

    def chunk(self, chunk) -> bool:
        """Take one parsed chunk; True when it was the last."""
        now_ns = time.monotonic_ns()
        now = now_ns / 1e9
        part = chunk.message if self.chat else chunk
        text = (part.content if self.chat else part.response) if part is not None else None
        thinking = part.thinking if part is not None else None
        calls = self.chat and part is not None and part.tool_calls
        if calls:  # Ollama sends a call as one chunk once its arguments are complete: it carries tokens
            self.tool_calls.extend(c.model_dump() for c in part.tool_calls)
        kind = kind_of(text, thinking, calls, chunk.done)
        sent, arrival = created_stamps(chunk.created_at)  # the replay server's stamps, where it sent them
        self.chunks.add(now_ns, kind, json.dumps([{"name": c.function.name, "arguments": dict(c.function.arguments)}
                                                  for c in part.tool_calls]) if kind == "c" else
                        text if kind == "a" else thinking if kind == "t" else "", None, sent, arrival)
        if text or thinking or calls:
            self.chunk_times.append(now)
            if self.t_first is None:
                self.t_first = now
        if thinking:
            self.chunks_thinking += 1
            self.thinking_parts.append(thinking)
        if text:
            self.chunks_answer += 1
            self.parts.append(text)
            if self.t_first_answer is None:
                self.t_first_answer = now
        if chunk.done:
            self.t_last, self.final = now, chunk
        return bool(chunk.done)

    def text(self) -> str:
        return "".join(self.parts)

    def calls(self) -> list[dict]:
        return self.tool_calls

    def failure(self) -> dict | None:
        """The run's error as its record will carry it (None when the stream ended with done)."""
        if self.final is not None:
            return None
        return self.error or {"kind": "no_done", "message": "stream ended without a done:true line", "client": CLIENT}

    def record(self, **extra) -> dict:
        final, t0, t_first, t_last, error = self.final, self.t0, self.t_first, self.t_last, self.error
        if final is not None:  # whatever the body's end did after the done line
            outcome, error = "ok", None
        elif error is None:
            outcome = "truncated"
            error = {"kind": "no_done", "message": "stream ended without a done:true line", "client": CLIENT}
        else:
            outcome = "truncated" if self.chunk_times else "error"
        times = self.chunk_times
        gaps = sorted((b - a) * 1e3 for a, b in zip(times, times[1:]))
        response = "".join(self.parts)
        thinking = "".join(self.thinking_parts)
        ms = lambda t: None if t is None else (t - t0) * 1e3
        record = {
            "schema_version": 2,  # the record's version (storage.RECORD_VERSION), not the jobs file's
            "run_id": self.run["run_id"],
            "agent": "python",
            "agent_version": AGENT_VERSION,
            "model": self.jobs["model"],
            "endpoint": self.jobs.get("endpoint", "generate"),
            "options": self.run["options"],
            "think": self.run.get("think"),
            "warmup": self.run["warmup"],
            "t0_unix": self.t0_unix,
            "new_connection": self.new_connection,
            "connect_ms": self.connect_ms,
            "ttft_ms": ms(t_first),
            "ttft_answer_ms": ms(self.t_first_answer),
            "e2e_ms": ms(t_last),
            "decode_ms": None if t_last is None or t_first is None else (t_last - t_first) * 1e3,
            "chunks": len(times),
            "chunks_thinking": self.chunks_thinking,
            "chunks_answer": self.chunks_answer,
            "itl_ms": itl(gaps),
        }
        for field in SERVER_FIELDS:
            record[field] = getattr(final, field, None) if final is not None else None
        record["done_reason"] = getattr(final, "done_reason", None) if final is not None else None
        record["thinking_chars"] = len(thinking)
        record["response_chars"] = len(response)
        record["response_sha256"] = hashlib.sha256(response.encode("utf-8")).hexdigest()
        record["outcome"] = outcome
        record["error"] = error
        record.update(self.chunks.fields())
        record.update(extra)
        return record


def run_one(client: ollama.Client, jobs: dict, run: dict) -> dict:
    timing = Timing(jobs, run)
    token = CURRENT.set(timing)
    try:
        # Read to the end, as a plain `for chunk in ...` loop does: the body's last bytes come
        # after the done line, and a response left unread closes its connection.
        for chunk in call(client, jobs, run):
            timing.chunk(chunk)
    except CLIENT_ERRORS as e:
        timing.error = error_of(e)
    finally:
        CURRENT.reset(token)
    return timing.record()


def turn_request(jobs: dict, run: dict, task: agent_tools.Task) -> dict:
    """client.chat's keyword arguments for one turn: the history so far, and the task's
    `format` (structured) or `tools` (native)."""
    req = dict(model=jobs["model"], messages=task.history, options=run["options"],
               keep_alive=run["keep_alive"], stream=True, **task.extra)
    if "think" in run:
        req["think"] = run["think"]
    return req


def _sent_messages(timing: Timing) -> list | None:
    """The messages as ollama-python put them on the wire (it drops empty fields, for one)."""
    return json.loads(timing.sent)["messages"] if timing.sent else None


def run_task(client: ollama.Client, jobs: dict, run: dict, write) -> None:
    """One task (DESIGN.md, "Agent loops"): send, parse, act, append, until finish or max_turns."""
    task = agent_tools.Task(jobs, run, CLIENT)
    while not task.over:
        timing = Timing(jobs, run)
        task.before_send(timing.t0)
        token = CURRENT.set(timing)
        try:
            for chunk in client.chat(**turn_request(jobs, run, task)):
                timing.chunk(chunk)
        except CLIENT_ERRORS as e:
            timing.error = error_of(e)
        finally:
            CURRENT.reset(token)
        wait_ms = task.act("".join(timing.parts), timing.tool_calls, timing.failure(), timing.t_last,
                           jobs.get("timeout_s", 600))
        if wait_ms:
            time.sleep(wait_ms / 1e3)
        task.after_tool()
        write({**timing.record(), **task.fields(_sent_messages(timing))})
        task.after_record()


class Transport:
    """ollama.AsyncClient for agent_async's loop (its module docstring says what a transport is):
    one client, as many connections as sessions (httpx's pool would queue the rest), the trace
    hook that sees new connections."""
    client = CLIENT

    def __init__(self, host: str, jobs: dict):
        n = jobs.get("streams", 1)
        self.ollama = ollama.AsyncClient(host=host, timeout=jobs.get("timeout_s", 600),
                                         limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                                         event_hooks={"request": [_async_trace_hook]})

    def timing(self, jobs: dict, run: dict) -> Timing:
        return Timing(jobs, run)

    async def stream(self, timing: Timing, jobs: dict, run: dict, task) -> None:
        token = CURRENT.set(timing)
        try:
            stream = await (self.ollama.chat(**turn_request(jobs, run, task)) if task is not None
                            else call(self.ollama, jobs, run))
            try:
                async for chunk in stream:  # to the end (see run_one)
                    timing.chunk(chunk)
            finally:
                await stream.aclose()  # give the connection back to the pool now, not at GC
        except CLIENT_ERRORS as e:
            timing.error = error_of(e)
        finally:
            CURRENT.reset(token)

    def sent(self, timing: Timing) -> list | None:
        return _sent_messages(timing)

    async def close(self) -> None:
        await self.ollama._client.aclose()


def run(host: str, jobs: dict, write: Writer, tuned: bool = False) -> None:
    """Every run of the jobs file, through ollama.Client, or with `streams` (or tuned: on uvloop)
    through ollama.AsyncClient on agent_async's loop."""
    if "streams" in jobs or tuned:
        agent_async.run(Transport, host, jobs, write, uvloop=tuned)
        return
    client = ollama.Client(host=host, timeout=jobs.get("timeout_s", 600),
                           event_hooks={"request": [_trace_hook]})
    for run_ in jobs["runs"]:
        if jobs.get("workload") == "agent":
            run_task(client, jobs, run_, write)
        else:
            write(run_one(client, jobs, run_))
