"""The Python agent's /v1 path: /v1/chat/completions or /v1/completions of any
OpenAI-compatible server (Ollama's, llama.cpp's llama-server), through the official `openai`
SDK's `stream=True` iterator, the way a typical Python agent reads it.

The request carries `stream_options.include_usage`, so the last event holds the token counts
(`usage`); the run's `options` are the request's own fields (max_tokens, temperature, top_p,
seed, stop, ...: the runner has translated them), sent at the top of the body as given.
Timing points are the /api path's (DESIGN.md, "The agent contract"): t_first at the first
chunk whose delta carries a token (content, `reasoning_content` or `reasoning` as thinking, or
a tool call), t_last at the chunk that carries a finish_reason (the end of generation, as
`done: true` is on /api). /v1 returns no server durations: those fields are null, never 0;
eval_count and prompt_eval_count are the usage's completion_tokens and prompt_tokens.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import time
from importlib.metadata import version

import httpx2  # the openai SDK's own transport: already loaded by it
import openai

import agent_async  # the one asyncio loop of every Python client (sessions at scale)
import agent_tools
from agent_jobs import SERVER_FIELDS, Trace, Writer, itl, kind_of, stamp_of

AGENT_VERSION = f"0.1.0+openai-python-{version('openai')}"
CLIENT = f"openai-python {version('openai')} (httpx2 {version('httpx2')})"  # named in every error
PATHS = {"openai-chat": "/v1/chat/completions", "openai-completions": "/v1/completions"}
# The request fields the SDK's create() names; any other option goes in extra_body, as given.
SDK_FIELDS = {"max_tokens", "temperature", "top_p", "seed", "stop", "frequency_penalty", "presence_penalty",
              "logit_bias", "n", "user", "response_format", "tools", "tool_choice"}


def named(kind: str, message: str) -> dict:
    return {"kind": kind, "message": message, "client": CLIENT}


def error_of(e: BaseException) -> dict:
    """{kind, message, client} in the Rust agent's kinds."""
    if isinstance(e, openai.APIStatusError):  # HTTP 4xx/5xx with the server's JSON error body
        return named(f"http_{e.status_code}", e.message)
    if isinstance(e, openai.APITimeoutError):
        return named("timeout", str(e))
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__
        kind = "connect" if isinstance(cause, httpx2.ConnectError) else "stream_interrupted"
        return named(kind, f"{e}: {cause!r}" if cause else str(e))
    if isinstance(e, openai.APIError):  # a `data: {"error": ...}` event after HTTP 200
        return named("server_error", e.message)
    if isinstance(e, json.JSONDecodeError):  # a data field that is not JSON
        piece = e.doc[:60] + ("…" if len(e.doc) > 60 else "")
        return named("bad_chunk", f"data is not JSON: {e.msg} (char {e.pos}) in {piece!r}")
    return named("bad_chunk", f"{type(e).__name__}: {e}")


CLIENT_ERRORS = (openai.APIError, httpx2.HTTPError, json.JSONDecodeError, ValueError)

# The run whose request is being sent: the httpx2 event hook gives each request a trace that
# reports a new connection to it (httpcore2's "connect_tcp" events), as on the /api path.
CURRENT: contextvars.ContextVar["Timing"] = contextvars.ContextVar("current_run")


def _trace_hook(request: httpx2.Request) -> None:
    timing = CURRENT.get(None)
    if timing is not None:
        request.extensions["trace"] = timing.trace
        timing.sent = request.content


def _thinking(delta) -> str | None:
    """The delta's thinking text: llama.cpp's `reasoning_content` or Ollama's `reasoning` (fields
    the SDK's types do not name: extra fields on its models)."""
    extra = getattr(delta, "model_extra", None) or {}
    return extra.get("reasoning_content") or extra.get("reasoning") or None


class Timing:
    """One run's timing points and what its stream said (see the module's docstring)."""

    def __init__(self, jobs: dict, run: dict):
        self.jobs, self.run = jobs, run
        self.chat = jobs["endpoint"] == "openai-chat"
        self.parts: list[str] = []
        self.chunk_times: list[float] = []
        self.chunks_thinking = self.chunks_answer = self.thinking_chars = 0
        self.finish_reason = self.usage = self.error = None
        self.t_first = self.t_first_answer = self.t_last = None
        self.new_connection, self.connect_started, self.connect_ms = False, None, None
        self.streamed: dict[int, dict] = {}  # streamed tool calls by index: name, id, arguments so far
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

    def chunk(self, chunk) -> None:
        """Take one parsed event (a ChatCompletionChunk or a Completion)."""
        now_ns = time.monotonic_ns()
        now = now_ns / 1e9
        if chunk.usage is not None:  # the last one counts: Ollama's /v1/completions puts zeros on every
            self.usage = chunk.usage  # chunk before its usage event; llama-server's is on the finish chunk
        kind, piece = "u" if chunk.usage is not None and not chunk.choices else "e", ""
        for choice in chunk.choices or ():
            if self.chat:
                delta = choice.delta
                text = delta.content if delta is not None else None
                thinking = _thinking(delta) if delta is not None else None
                calls = (delta.tool_calls if delta is not None else None) or ()
            else:
                text, thinking, calls = choice.text, None, ()
            for call in calls:  # streamed in pieces by index: the name first, then the arguments
                slot = self.streamed.setdefault(call.index or 0, {"id": None, "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            if text or thinking or calls:
                self.chunk_times.append(now)
                if self.t_first is None:
                    self.t_first = now
            if thinking:
                self.chunks_thinking += 1
                self.thinking_chars += len(thinking)
            if text:
                self.chunks_answer += 1
                self.parts.append(text)
                if self.t_first_answer is None:
                    self.t_first_answer = now
            if choice.finish_reason is not None and self.t_last is None:
                self.t_last, self.finish_reason = now, choice.finish_reason
            if kind in "ued":
                kind = kind_of(text, thinking, calls, choice.finish_reason is not None)
                piece = (json.dumps([c.model_dump(exclude_none=True) for c in calls]) if kind == "c" else
                         text if kind == "a" else thinking if kind == "t" else "")
        extra = chunk.model_extra or {}  # the replay server's stamps: fields the SDK keeps as extras
        self.chunks.add(now_ns, kind, piece, None, stamp_of(extra.get("t_sent_ns")),
                        stamp_of(extra.get("t_arrival_ns")))

    def text(self) -> str:
        return "".join(self.parts)

    def calls(self) -> list[dict]:
        return self.tool_calls()

    def tool_calls(self) -> list[dict]:
        """The streamed calls as the agent loop reads them: {"id", "function": {name, arguments}},
        arguments parsed from their JSON text (left as text when it is not JSON)."""
        out = []
        for _, c in sorted(self.streamed.items()):
            try:
                args = json.loads(c["arguments"]) if c["arguments"] else {}
            except ValueError:
                args = c["arguments"]
            out.append({"id": c["id"], "function": {"name": c["name"] or None, "arguments": args},
                        "arguments_text": c["arguments"]})
        return out

    def failure(self) -> dict | None:
        if self.finish_reason is not None:
            return None
        return self.error or named("no_done", "stream ended without a finish_reason")

    def record(self, **extra) -> dict:
        t0, t_first, t_last = self.t0, self.t_first, self.t_last
        error = self.failure()
        outcome = "ok" if error is None else ("truncated" if self.chunk_times else "error")
        gaps = sorted((b - a) * 1e3 for a, b in zip(self.chunk_times, self.chunk_times[1:]))
        response = "".join(self.parts)
        ms = lambda t: None if t is None else (t - t0) * 1e3
        usage = self.usage
        record = {
            "schema_version": 2,
            "run_id": self.run["run_id"], "agent": "python", "agent_version": AGENT_VERSION,
            "model": self.jobs["model"], "endpoint": self.jobs["endpoint"],
            "options": self.run["options"], "think": self.run.get("think"), "warmup": self.run["warmup"],
            "t0_unix": self.t0_unix, "new_connection": self.new_connection, "connect_ms": self.connect_ms,
            "ttft_ms": ms(t_first), "ttft_answer_ms": ms(self.t_first_answer), "e2e_ms": ms(t_last),
            "decode_ms": None if t_last is None or t_first is None else (t_last - t_first) * 1e3,
            "chunks": len(self.chunk_times), "chunks_thinking": self.chunks_thinking,
            "chunks_answer": self.chunks_answer, "itl_ms": itl(gaps),
        }
        for field in SERVER_FIELDS:  # /v1 has no server durations: null, never 0
            record[field] = None
        if usage is not None:
            record["prompt_eval_count"] = usage.prompt_tokens
            record["eval_count"] = usage.completion_tokens
        record["done_reason"] = self.finish_reason
        record["thinking_chars"] = self.thinking_chars
        record["response_chars"] = len(response)
        record["response_sha256"] = hashlib.sha256(response.encode("utf-8")).hexdigest()
        record["outcome"] = outcome
        record["error"] = error
        record.update(self.chunks.fields())
        record.update(extra)
        return record


def request(jobs: dict, run: dict, messages: list | None = None, extra: dict | None = None) -> dict:
    """create()'s keyword arguments: the prompt (or an agent turn's history and its `tools` or
    `response_format`), the run's options as the request's own fields, usage in the stream."""
    kw = dict(model=jobs["model"], stream=True, stream_options={"include_usage": True})
    if jobs["endpoint"] == "openai-chat":
        kw["messages"] = messages if messages is not None else jobs["prompts"][run["prompt"]]
    else:
        kw["prompt"] = jobs["prompts"][run["prompt"]]
    fields = {**run["options"], **(extra or {})}
    kw.update({k: v for k, v in fields.items() if k in SDK_FIELDS})
    rest = {k: v for k, v in fields.items() if k not in SDK_FIELDS}
    if rest:
        kw["extra_body"] = rest
    return kw


def stream_into(client: openai.OpenAI, timing: Timing, kw: dict) -> None:
    """Send and read to the end, as a plain `for chunk in stream` loop does."""
    token = CURRENT.set(timing)
    try:
        create = client.chat.completions.create if timing.chat else client.completions.create
        for chunk in create(**kw):
            timing.chunk(chunk)
    except CLIENT_ERRORS as e:
        timing.error = error_of(e)
    finally:
        CURRENT.reset(token)


def run_one(client: openai.OpenAI, jobs: dict, run: dict) -> dict:
    timing = Timing(jobs, run)
    stream_into(client, timing, request(jobs, run))
    return timing.record()


def run_task(client: openai.OpenAI, jobs: dict, run: dict, write) -> None:
    """One task (DESIGN.md, "Agent loops") on /v1/chat/completions: send, parse, act, append."""
    task = agent_tools.Task(jobs, run, CLIENT)
    while not task.over:
        timing = Timing(jobs, run)
        task.before_send(timing.t0)
        stream_into(client, timing, request(jobs, run, task.history, task.extra))
        wait_ms = task.act("".join(timing.parts), timing.tool_calls(), timing.failure(), timing.t_last,
                           jobs.get("timeout_s", 600))
        if wait_ms:
            time.sleep(wait_ms / 1e3)
        task.after_tool()
        sent = json.loads(timing.sent)["messages"] if timing.sent else None
        write({**timing.record(), **task.fields(sent)})
        task.after_record()


async def _async_trace_hook(request: httpx2.Request) -> None:
    timing = CURRENT.get(None)
    if timing is not None:  # an async client's trace callback must be a coroutine function
        request.extensions["trace"] = timing.async_trace
        timing.sent = request.content


class Transport:
    """openai.AsyncOpenAI for agent_async's loop (its module docstring says what a transport is):
    on the SDK's default httpx2 transport, or (`aiohttp`, python-tuned) on its aiohttp one,
    `DefaultAioHttpClient`; as many connections as sessions either way (httpx2's pool and
    aiohttp's connector would queue the rest: aiohttp's default limit is 100)."""

    def __init__(self, host: str, jobs: dict, aiohttp: bool = False):
        timeout, n = jobs.get("timeout_s", 600), jobs.get("streams", 1)
        limits = httpx2.Limits(max_connections=n, max_keepalive_connections=n)
        hooks = {"request": [_async_trace_hook]}
        if aiohttp:  # httpcore2's connection trace does not reach aiohttp: new_connection stays unknown (false)
            http = openai.DefaultAioHttpClient(timeout=timeout, limits=limits, event_hooks=hooks)
            self.client = f"openai-python {version('openai')} (aiohttp {version('aiohttp')})"
        else:
            http = openai.DefaultAsyncHttpxClient(timeout=timeout, limits=limits, event_hooks=hooks)
            self.client = CLIENT
        self.openai = openai.AsyncOpenAI(base_url=f"{host.rstrip('/')}/v1", api_key="langbench", max_retries=0,
                                         timeout=timeout, http_client=http)

    def timing(self, jobs: dict, run: dict) -> Timing:
        return Timing(jobs, run)

    async def stream(self, timing: Timing, jobs: dict, run: dict, task) -> None:
        kw = request(jobs, run, task.history, task.extra) if task is not None else request(jobs, run)
        token = CURRENT.set(timing)
        try:
            create = self.openai.chat.completions.create if timing.chat else self.openai.completions.create
            stream = await create(**kw)
            try:
                async for chunk in stream:  # to the end, as a plain `async for` loop does
                    timing.chunk(chunk)
            finally:
                await stream.close()
        except CLIENT_ERRORS as e:
            timing.error = error_of(e)
            if timing.error["client"] != self.client:
                timing.error["client"] = self.client
        finally:
            CURRENT.reset(token)

    def sent(self, timing: Timing) -> list | None:
        return json.loads(timing.sent)["messages"] if timing.sent else None

    async def close(self) -> None:
        await self.openai.close()


def run(host: str, jobs: dict, write: Writer, tuned: bool = False) -> None:
    """Every run of the jobs file through one openai.OpenAI client (one connection pool), or with
    `streams` through openai.AsyncOpenAI on agent_async's loop (tuned: aiohttp and uvloop)."""
    if "streams" in jobs or tuned:
        agent_async.run(lambda h, j: Transport(h, j, aiohttp=tuned), host, jobs, write, uvloop=tuned)
        return
    timeout = jobs.get("timeout_s", 600)
    http = openai.DefaultHttpxClient(timeout=timeout, event_hooks={"request": [_trace_hook]})
    client = openai.OpenAI(base_url=f"{host.rstrip('/')}/v1", api_key="langbench", max_retries=0,
                           timeout=timeout, http_client=http)
    for run_ in jobs["runs"]:
        if jobs.get("workload") == "agent":
            run_task(client, jobs, run_, write)
        else:
            write(run_one(client, jobs, run_))
