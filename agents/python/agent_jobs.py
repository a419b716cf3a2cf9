"""The Python agent's parts that no HTTP client is in: the jobs file's loader, the ITL
percentiles and the records writer, shared by its /api path (agent_ollama.py), its /v1 path
(agent_openai.py) and the null client (agents/null/null_client.py), which import nothing else
of each other. Standard library only: what a run imports is part of its start-up.
"""

from __future__ import annotations

import json
import math
import sys

import agent_tools  # the loop's tools and bookkeeping, shared with the null client

SERVER_FIELDS = (
    "total_duration", "load_duration", "prompt_eval_count",
    "prompt_eval_duration", "eval_count", "eval_duration",
)

TOP_KEYS = {"schema_version", "model", "endpoint", "prompts", "raw", "timeout_s", "streams", "runs",
            "workload", "actions", "tools", "tables", "format", "capture"}
RUN_KEYS = {"run_id", "prompt", "options", "keep_alive", "think", "warmup", "stream", "send_at_s",
            "max_turns", "task_id", "tools", "table", "replay"}
AGENT_RUN_KEYS = {"max_turns", "task_id", "tools", "table", "replay"}
OLLAMA_ENDPOINTS = ("generate", "chat")  # /api/generate, /api/chat (NDJSON)
OPENAI_ENDPOINTS = ("openai-chat", "openai-completions")  # /v1/chat/completions, /v1/completions (SSE)
ENDPOINTS = OLLAMA_ENDPOINTS + OPENAI_ENDPOINTS
CHAT_ENDPOINTS = ("chat", "openai-chat")  # prompts are message lists
TEXT_ENDPOINTS = ("generate", "openai-completions")  # prompts are strings


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
    version = jobs.get("schema_version")
    if version != 1 or isinstance(version, bool):  # True == 1 in Python; the schema says integer
        raise JobsError(f"{path}: field 'schema_version' must be 1")
    endpoint = jobs.get("endpoint", "generate")
    if endpoint not in ENDPOINTS:
        raise JobsError(f"{path}: field 'endpoint' must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
    if jobs.get("workload") == "agent" and endpoint not in CHAT_ENDPOINTS:
        raise JobsError(f"{path}: field 'endpoint' must be chat or openai-chat for workload agent")
    if endpoint in TEXT_ENDPOINTS:
        if not jobs["prompts"] or not all(isinstance(p, str) and p for p in jobs["prompts"]):
            raise JobsError(f"{path}: field 'prompts' must be a non-empty list of non-empty strings")
    elif not jobs["prompts"] or not all(_is_messages(p) for p in jobs["prompts"]):
        raise JobsError(f"{path}: field 'prompts': endpoint {endpoint} needs each prompt as a non-empty list "
                        "of messages {role: system|user|assistant, content: non-empty string}")
    _check(path, jobs.get("raw", False), "raw", bool)
    _check(path, jobs.get("capture", False), "capture", bool)
    _check(path, jobs.get("timeout_s", 600), "timeout_s", (int, float))
    if not jobs.get("timeout_s", 600) > 0:  # the schema's exclusiveMinimum 0, as the Rust agent checks
        raise JobsError(f"{path}: field 'timeout_s' must be > 0")
    if endpoint in OPENAI_ENDPOINTS:  # what /v1 cannot carry (the runner refuses it first)
        if jobs.get("raw"):
            raise JobsError(f"{path}: field 'raw': endpoint {endpoint} has no raw prompt")
        for i, run in enumerate(jobs["runs"]):
            if isinstance(run, dict) and "think" in run:
                raise JobsError(f"{path}: field 'runs[{i}].think': endpoint {endpoint} has no think field")
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
        if "think" in run:
            _check(path, run["think"], f"{where}.think", bool)
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
    _check_agent(path, jobs)
    return jobs


def _check_tools(path: str, tools, key: str) -> None:
    _check(path, tools, key, list)
    for j, name in enumerate(tools):
        if name not in agent_tools.BUILTIN_TOOLS:
            raise JobsError(f"{path}: field '{key}[{j}]': unknown tool {name!r} "
                            f"(built-ins: {', '.join(agent_tools.BUILTIN_TOOLS)})")
    if len(set(tools)) != len(tools):
        raise JobsError(f"{path}: field '{key}' names a tool twice")


def _check_agent(path: str, jobs: dict) -> None:
    """workload: agent (DESIGN.md, "Agent loops"): every run is a task of up to max_turns turns."""
    workload = jobs.get("workload", "request")
    if workload not in ("request", "agent"):
        raise JobsError(f"{path}: field 'workload' must be one of request, agent, got {workload!r}")
    if workload == "request":
        for key in ("actions", "tools", "tables", "format"):
            if key in jobs:
                raise JobsError(f"{path}: field '{key}' needs 'workload: agent'")
        for i, run in enumerate(jobs["runs"]):
            for key in run.keys() & AGENT_RUN_KEYS:
                raise JobsError(f"{path}: field 'runs[{i}].{key}' needs 'workload: agent'")
        return
    if jobs.get("endpoint", "generate") not in CHAT_ENDPOINTS:
        raise JobsError(f"{path}: field 'endpoint' must be chat or openai-chat for workload agent")
    if "send_at_s" in jobs["runs"][0]:
        raise JobsError(f"{path}: field 'runs[0].send_at_s': workload agent runs closed loop only")
    actions = jobs.get("actions", "structured")
    if actions not in ("structured", "native"):
        raise JobsError(f"{path}: field 'actions' must be one of structured, native, got {actions!r}")
    if "format" in jobs and actions != "native":
        raise JobsError(f"{path}: field 'format': structured actions send their own schema")
    _check_tools(path, jobs.get("tools", []), "tools")
    tables = jobs.get("tables", [])
    _check(path, tables, "tables", list)
    for t, table in enumerate(tables):
        _check(path, table, f"tables[{t}]", dict)
        for k, v in table.items():
            _check(path, v, f"tables[{t}].{k}", str)
    for i, run in enumerate(jobs["runs"]):
        where = f"runs[{i}]"
        if "max_turns" not in run:
            raise JobsError(f"{path}: missing field '{where}.max_turns'")
        _check(path, run["max_turns"], f"{where}.max_turns", int)
        if run["max_turns"] < 1:
            raise JobsError(f"{path}: field '{where}.max_turns' must be at least 1")
        if "task_id" in run:
            _check(path, run["task_id"], f"{where}.task_id", str)
        if "tools" in run:
            _check_tools(path, run["tools"], f"{where}.tools")
        if "table" in run:
            _check(path, run["table"], f"{where}.table", int)
            if not 0 <= run["table"] < len(tables):
                raise JobsError(f"{path}: field '{where}.table' is out of range")
        replay = run.get("replay")
        if replay is not None:
            if replay not in ("fixed", "regenerated"):
                raise JobsError(f"{path}: field '{where}.replay' must be one of fixed, regenerated, got {replay!r}")
            if jobs["prompts"][run["prompt"]][0]["role"] == "assistant":
                raise JobsError(f"{path}: field '{where}.prompt': a replayed conversation cannot open "
                                "with an assistant message")
        elif not run.get("tools", jobs.get("tools")):
            raise JobsError(f"{path}: field '{where}.tools': a task needs at least one tool "
                            "(its own 'tools' or the jobs file's)")


def _is_messages(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and all(
        isinstance(m, dict) and set(m) == {"role", "content"} and m["role"] in ("system", "user", "assistant")
        and isinstance(m["content"], str) and m["content"] for m in prompt)


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


def itl(sorted_gaps: list[float]) -> dict:
    """Inter-chunk gaps (ms, over chunks of any kind): p50, p95, p99, max and their count n."""
    g = sorted_gaps
    return {"p50": percentile(g, 0.50), "p95": percentile(g, 0.95), "p99": percentile(g, 0.99),
            "max": g[-1] if g else None, "n": len(g)}



def stamp_of(value) -> int | None:
    """A chunk's stamp (the replay server's `t_sent_ns` or `t_arrival_ns`, CLOCK_MONOTONIC ns) as
    an int, or None: real servers send none; a stamp of another shape is no stamp."""
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    return None


def created_stamps(value) -> tuple[int | None, int | None]:
    """(send stamp, arrival stamp) from an /api chunk's `created_at`, the one field the ollama
    client keeps of a chunk: the replay server writes "<t_sent_ns>/<t_arrival_ns>" there (one
    that stamps sends only: "<t_sent_ns>"); a real Ollama's RFC 3339 time is no stamp."""
    if type(value) is not str:
        return None, None
    sent, slash, arrival = value.partition("/")
    sent_ns = stamp_of(sent)
    if sent_ns is None:
        return None, None
    return sent_ns, stamp_of(arrival) if slash else None


class Trace:
    """One run's chunks as the client parsed them (DESIGN.md, "The replay server"): the lag
    behind the server's send stamp of every stamped chunk (parse time − send time, both on
    CLOCK_MONOTONIC: time.monotonic_ns() here, clock_gettime in the Rust agent), the send delay
    before them (the server's arrival stamp − t0: what the client took to get its request to the
    server), and, when the jobs file asks for `capture`, each chunk's parse time from t0 (µs), its
    bytes where the client sees them (None through an SDK), its kind and its text. Kinds: t
    thinking, a answer, c tool call (text: the calls as JSON), d done / finish_reason, u usage
    only, e no token."""

    __slots__ = ("t0_ns", "keep", "t_us", "sizes", "kinds", "texts", "lags", "arrival")

    def __init__(self, t0_ns: int, keep: bool):
        self.t0_ns, self.keep = t0_ns, keep
        self.t_us: list[int] = []
        self.sizes: list[int | None] = []
        self.kinds: list[str] = []
        self.texts: list[str] = []
        self.lags: list[int] = []
        self.arrival: int | None = None  # the first arrival stamp (every chunk of a stream has the same)

    def add(self, now_ns: int, kind: str, text: str = "", size: int | None = None, stamp=None,
            arrival=None) -> None:
        if stamp is not None:
            self.lags.append(now_ns - stamp)
        if self.arrival is None:
            self.arrival = arrival
        if self.keep:
            self.t_us.append((now_ns - self.t0_ns) // 1000)
            self.sizes.append(size)
            self.kinds.append(kind)
            self.texts.append(text)

    def fields(self) -> dict:
        """The record's `lag_ms` (null without stamps; its `send` null without an arrival stamp)
        and, when kept, its `capture`."""
        out = {"lag_ms": None}
        if self.lags:
            lags = sorted(v / 1e6 for v in self.lags)
            send = None if self.arrival is None else (self.arrival - self.t0_ns) / 1e6
            out["lag_ms"] = {"send": send, "first": self.lags[0] / 1e6, "p50": percentile(lags, 0.50),
                             "p99": percentile(lags, 0.99), "max": lags[-1], "n": len(lags)}
        if self.keep:
            out["capture"] = {"t_us": self.t_us, "bytes": self.sizes, "kinds": "".join(self.kinds),
                              "text": self.texts}
        return out


def kind_of(text, thinking, calls, done: bool, usage: bool = False) -> str:
    """A chunk's kind for the trace: c, then a, then t, then d, then u, then e."""
    return "c" if calls else "a" if text else "t" if thinking else "d" if done else "u" if usage else "e"


class Writer:
    """Appends each record as its run ends and flushes it; counts and reports failures."""

    def __init__(self, out, total: int, agent: str = "python"):
        self.out, self.total, self.done, self.failed, self.agent = out, total, 0, 0, agent

    def __call__(self, record: dict) -> None:
        if self.agent != record["agent"]:  # python-tuned: the SDK paths' records, under its own name
            record["agent"] = self.agent
            record["agent_version"] += f"+{self.agent}"
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()
        turn = f" turn {record['turn']}" if "turn" in record else ""
        if "turn" not in record or record["task_outcome"] is not None:
            self.done += 1
        if record["outcome"] != "ok":
            self.failed += 1
            print(f"{self.agent} agent: run {record['run_id']}{turn}: {record['outcome']}: "
                  f"{record['error']['kind']}: {record['error']['message']}", file=sys.stderr)
        elif record.get("task_outcome") == "error":
            self.failed += 1
            print(f"{self.agent} agent: run {record['run_id']}{turn}: task error: {record['task_error']['kind']}: "
                  f"{record['task_error']['message']}", file=sys.stderr)
        elif turn:
            ttft = "none" if record["ttft_ms"] is None else f"{record['ttft_ms']:.1f}ms"
            print(f"{self.agent} agent: run {record['run_id']}{turn} ttft={ttft} "
                  f"action={(record['action'] or {}).get('tool')} task={record['task_outcome']}", file=sys.stderr)
        else:  # a stream can end at its first line with no token: ok, and no TTFT to print
            ttft = "none (no token)" if record["ttft_ms"] is None else f"{record['ttft_ms']:.1f}ms"
            print(f"{self.agent} agent: run {self.done}/{self.total} {record['run_id']} ok ttft={ttft}",
                  file=sys.stderr)
