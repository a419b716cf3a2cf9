"""The streams as bytes, parsed by hand: what the null client (agents/null/null_client.py, on
http.client) and the raw Python client (agent_raw.py, on asyncio streams) share, so that the
two differ in their transport only. Standard library only.

An Exchange is what one request saw. `request_body` builds the request as the agents send it;
`take_line` takes one NDJSON line of /api/generate or /api/chat; `SSE` gathers a /v1 stream's
`data:` lines into events and `take_event` takes each one; `end` settles the outcome at the
body's end; `record_of` is the record (DESIGN.md, "The agent contract").
"""

from __future__ import annotations

import hashlib
import json

from agent_jobs import SERVER_FIELDS, Trace, itl, kind_of, stamp_of

OPENAI_PATHS = {"openai-chat": "/v1/chat/completions", "openai-completions": "/v1/completions"}


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
    """What one request saw, filled while its stream is read. `client` names the client in
    every error; t0 is on CLOCK_MONOTONIC (the replay server's stamps' clock)."""

    def __init__(self, client: str, t0_ns: int, capture: bool):
        self.client = client
        self.chunk_times: list[float] = []
        self.final = self.error = self.t_first = self.t_first_answer = self.t_last = None
        self.n_thinking = self.n_answer = self.n_chars = self.n_thinking_chars = 0
        self.parts: list[str] = []
        self.tool_calls: list = []
        self.streamed: dict[int, dict] = {}  # /v1: streamed tool calls by index
        self.finish = self.usage = None  # /v1: the finish_reason, the (last) usage
        self.t0_unix = None
        self.t0 = t0_ns / 1e9
        self.trace = Trace(t0_ns, capture)

    def named(self, kind: str, message: str) -> dict:
        return {"kind": kind, "message": message, "client": self.client}

    def _tokens(self, now: float, text: str, thinking: str, calls) -> None:
        if text or thinking or calls:
            self.chunk_times.append(now)
            if self.t_first is None:
                self.t_first = now
        if thinking:
            self.n_thinking += 1
            self.n_thinking_chars += len(thinking)
        if text:
            self.n_answer += 1
            self.n_chars += len(text)
            self.parts.append(text)
            if self.t_first_answer is None:
                self.t_first_answer = now


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


def take_line(x: Exchange, line: bytes, now_ns: int, chat: bool) -> None:
    """One line of an /api stream (b"\\n" split only: a line is whole JSON or a named failure).
    Lines after the done line or an error are read (the connection stays usable) and dropped."""
    if not line.strip() or x.final is not None or x.error is not None:
        return
    now = now_ns / 1e9
    try:
        chunk = json.loads(line)
    except ValueError as e:
        x.error = x.named("bad_chunk", f"line is not JSON: {e}: {line[:60]!r}")
        return
    if "error" in chunk:
        x.error = x.named("server_error", str(chunk["error"])[:500])
        return
    part = (chunk.get("message") or {}) if chat else chunk
    text = part.get("content" if chat else "response") or ""
    thinking = part.get("thinking") or ""
    calls = chat and part.get("tool_calls")
    if calls:  # Ollama sends a call as one chunk once its arguments are complete: it carries tokens
        x.tool_calls.extend(calls)
    x._tokens(now, text, thinking, calls)
    if chunk.get("done"):
        x.t_last, x.final = now, chunk
    kind = kind_of(text, thinking, calls, bool(chunk.get("done")))
    x.trace.add(now_ns, kind, json.dumps([c.get("function") for c in calls]) if kind == "c" else
                text if kind == "a" else thinking if kind == "t" else "",
                len(line.rstrip(b"\r\n")), stamp_of(chunk.get("t_sent_ns")), stamp_of(chunk.get("t_arrival_ns")))


class SSE:
    """A /v1 body's lines gathered into events: `data:` lines until a blank line (CRLF is LF;
    comments, `event:` and other fields skipped); `line` returns an event's data when one ends."""

    def __init__(self):
        self.data: list[bytes] = []

    def line(self, raw: bytes) -> bytes | None:
        line = raw.rstrip(b"\n").removesuffix(b"\r")
        if line:
            field, _, value = line.partition(b":")
            if field == b"data":
                self.data.append(value[1:] if value.startswith(b" ") else value)
            return None
        if not self.data:
            return None
        event, self.data = b"\n".join(self.data), []
        return event


def take_event(x: Exchange, event: bytes, now_ns: int, chat: bool) -> None:
    """One /v1 event's data: a JSON chunk, `[DONE]` (the end), or a named failure. t_last is the
    chunk with a finish_reason (generation's end); the usage event gives the token counts."""
    if x.error is not None or event == b"[DONE]":
        return
    now = now_ns / 1e9
    try:
        chunk = json.loads(event)
    except ValueError as e:
        x.error = x.named("bad_chunk", f"data is not JSON: {e}: {event[:60]!r}")
        return
    if not isinstance(chunk, dict):
        x.error = x.named("bad_chunk", f"data is not a JSON object: {event[:60]!r}")
        return
    if chunk.get("error"):
        err = chunk["error"]
        x.error = x.named("server_error", str(err.get("message") if isinstance(err, dict) else err)[:500])
        return
    if chunk.get("usage"):  # the last one counts (Ollama's /v1/completions sends zeros on every chunk first)
        x.usage = chunk["usage"]
    kind, piece = "u" if chunk.get("usage") and not chunk.get("choices") else "e", ""
    for choice in chunk.get("choices") or ():
        delta = (choice.get("delta") or {}) if chat else choice
        text = delta.get("content" if chat else "text") or ""
        thinking = (delta.get("reasoning_content") or delta.get("reasoning") or "") if chat else ""
        calls = (delta.get("tool_calls") or []) if chat else []
        for call in calls:  # streamed in pieces by index: the name first, then the arguments
            slot = x.streamed.setdefault(call.get("index") or 0, {"id": None, "name": "", "arguments": ""})
            slot["id"] = call.get("id") or slot["id"]
            fn = call.get("function") or {}
            slot["name"] += fn.get("name") or ""
            slot["arguments"] += fn.get("arguments") or ""
        x._tokens(now, text, thinking, calls)
        if choice.get("finish_reason") is not None and x.finish is None:
            x.finish, x.t_last = choice["finish_reason"], now
        if kind in "ued":
            kind = kind_of(text, thinking, calls, choice.get("finish_reason") is not None)
            piece = (json.dumps(calls) if kind == "c" else text if kind == "a" else
                     thinking if kind == "t" else "")
    x.trace.add(now_ns, kind, piece, len(event), stamp_of(chunk.get("t_sent_ns")), stamp_of(chunk.get("t_arrival_ns")))


def end_sse(x: Exchange) -> None:
    """At a /v1 body's end: the streamed calls assembled, the outcome settled (an event left
    open when the body ends is dropped, as the SSE spec says)."""
    for _, c in sorted(x.streamed.items()):
        try:
            args = json.loads(c["arguments"]) if c["arguments"] else {}
        except ValueError:
            args = c["arguments"]
        x.tool_calls.append({"id": c["id"], "function": {"name": c["name"] or None, "arguments": args},
                             "arguments_text": c["arguments"]})
    if x.finish is not None and x.error is None:  # /v1 has no server durations: null, never 0
        x.final = {"done_reason": x.finish, "prompt_eval_count": (x.usage or {}).get("prompt_tokens"),
                   "eval_count": (x.usage or {}).get("completion_tokens")}
    elif x.error is None:
        x.error = x.named("no_done", "stream ended without a finish_reason")


def end(x: Exchange) -> None:
    """At any body's end: a done line wins over what followed it; no done is a named outcome."""
    if x.final is not None:
        x.error = None
    elif x.error is None:
        x.error = x.named("no_done", "stream ended without a done:true line")


def record_of(x: Exchange, agent: str, agent_version: str, jobs: dict, run: dict, new_connection: bool,
              connect_ms: float | None, endpoint: str) -> dict:
    final, t0 = x.final, x.t0
    outcome = "ok" if final is not None else ("truncated" if x.chunk_times else "error")
    gaps = sorted((b - a) * 1e3 for a, b in zip(x.chunk_times, x.chunk_times[1:]))
    ms = lambda t: None if t is None else (t - t0) * 1e3
    text = "".join(x.parts)
    record = {"schema_version": 2, "run_id": run["run_id"], "agent": agent, "agent_version": agent_version,
              "model": jobs["model"], "endpoint": endpoint,
              "options": run["options"], "think": run.get("think"), "warmup": run["warmup"], "t0_unix": x.t0_unix,
              "new_connection": new_connection, "connect_ms": connect_ms,
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
