"""The agent loop's built-in tools and bookkeeping, shared by the Python agent and the null client
(DESIGN.md, "Agent loops"). The Rust agent's src/tools.rs is the same, line for line: every
result string, every schema byte and the history digest are identical in the three clients.

Nothing here does I/O or sleeps: a client's loop function sends, reads, then calls `Task.act`
(which parses the answer into an action and runs the tool, returning how long `wait` must
sleep), sleeps the way its runtime sleeps (time.sleep or asyncio.sleep), then `Task.append`.
"""

from __future__ import annotations

import hashlib
import json
import time

BUILTIN_TOOLS = ("lookup", "add", "wait", "finish")
WAIT_MAX_MS = 10_000
I64_MIN, I64_MAX = -(2 ** 63), 2 ** 63 - 1
TASK_OUTCOMES = ("finished", "max_turns", "invalid_action", "unknown_tool", "error")

# Structured actions: one JSON schema per tool, as literal text so that every client sends the
# same bytes in the same key order (the server's grammar follows the order of `properties`).
ACTION_SCHEMA = {
    "lookup": '{"type":"object","properties":{"tool":{"const":"lookup"},"arguments":{"type":"object",'
              '"properties":{"key":{"type":"string"}},"required":["key"]}},"required":["tool","arguments"]}',
    "add": '{"type":"object","properties":{"tool":{"const":"add"},"arguments":{"type":"object",'
           '"properties":{"a":{"type":"integer"},"b":{"type":"integer"}},"required":["a","b"]}},'
           '"required":["tool","arguments"]}',
    "wait": '{"type":"object","properties":{"tool":{"const":"wait"},"arguments":{"type":"object",'
            '"properties":{"ms":{"type":"integer","minimum":0,"maximum":10000}},"required":["ms"]}},'
            '"required":["tool","arguments"]}',
    "finish": '{"type":"object","properties":{"tool":{"const":"finish"},"arguments":{"type":"object",'
              '"properties":{"answer":{"type":"string"}},"required":["answer"]}},"required":["tool","arguments"]}',
}

# Native tool calls: Ollama's `tools` entries (only the fields its api.ToolProperty carries).
NATIVE_TOOL = {
    "lookup": '{"type":"function","function":{"name":"lookup","description":"Read the value stored under a key '
              'of the task\'s table.","parameters":{"type":"object","required":["key"],"properties":{"key":'
              '{"type":"string","description":"the key to read"}}}}}',
    "add": '{"type":"function","function":{"name":"add","description":"Add two 64-bit integers.","parameters":'
           '{"type":"object","required":["a","b"],"properties":{"a":{"type":"integer","description":"first '
           'addend"},"b":{"type":"integer","description":"second addend"}}}}}',
    "wait": '{"type":"function","function":{"name":"wait","description":"Wait for a number of milliseconds '
            '(0 to 10000), as an external API would.","parameters":{"type":"object","required":["ms"],'
            '"properties":{"ms":{"type":"integer","description":"milliseconds to wait, 0 to 10000"}}}}}',
    "finish": '{"type":"function","function":{"name":"finish","description":"End the task with its answer.",'
              '"parameters":{"type":"object","required":["answer"],"properties":{"answer":{"type":"string",'
              '"description":"the final answer"}}}}}',
}


def action_format(tools: list[str]) -> str:
    """The `format` of a structured-action request, as JSON text: any one of the offered tools."""
    return '{"anyOf":[' + ",".join(ACTION_SCHEMA[t] for t in tools) + "]}"


def native_tools(tools: list[str]) -> str:
    """The `tools` of a native request, as JSON text."""
    return "[" + ",".join(NATIVE_TOOL[t] for t in tools) + "]"


def response_format(schema: str) -> dict:
    """/v1's `response_format` for a structured action: the same schema as /api's `format`."""
    return {"type": "json_schema", "json_schema": {"name": "action", "schema": json.loads(schema)}}


def history_sha256(messages: list) -> str:
    """SHA-256 of the messages as JSON with sorted keys, `,`/`:` separators, UTF-8 unescaped."""
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_arguments(tool: str, args) -> str | None:
    """None when `args` are the tool's arguments, else what is wrong (the same words in Rust)."""
    if not isinstance(args, dict):
        return "arguments is not an object"
    want = {"lookup": ("key",), "add": ("a", "b"), "wait": ("ms",), "finish": ("answer",)}[tool]
    if sorted(args) != sorted(want):
        return f"{tool} takes exactly {', '.join(want)}"
    if tool in ("lookup", "finish"):
        return None if isinstance(args[want[0]], str) else f"{want[0]} is not a string"
    if not all(_integer(args[k]) for k in want):
        return f"{' and '.join(want)} must be integers"
    if tool == "wait" and not 0 <= args["ms"] <= WAIT_MAX_MS:
        return f"ms must be in 0..{WAIT_MAX_MS}"
    return None


def run_tool(tool: str, args: dict, table: dict) -> tuple[str | None, int]:
    """(result string, ms the caller must sleep). finish has no result."""
    if tool == "lookup":
        key = args["key"]
        return (table[key] if key in table else f"unknown key: {key}"), 0
    if tool == "add":
        a, b = args["a"], args["b"]
        total = a + b
        if not (I64_MIN <= a <= I64_MAX and I64_MIN <= b <= I64_MAX and I64_MIN <= total <= I64_MAX):
            return "overflow", 0
        return str(total), 0
    if tool == "wait":
        return f"waited {args['ms']} ms", args["ms"]
    return None, 0


def replay_turns(messages: list[dict]) -> list[int]:
    """A recorded conversation's requests: each the index where an assistant message would
    follow (before each assistant message, and at the end when the last one is not)."""
    cuts = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if messages[-1]["role"] != "assistant":
        cuts.append(len(messages))
    return cuts


class Task:
    """One task's conversation and the per-turn fields of its records. The client's loop:

        task = Task(jobs, run, client_name)
        while not task.over:
            t0 = task.before_send()            # the history to send is task.history
            ... send task.history, read the stream to its end (t_last) ...
            sleep_ms = task.act(text, tool_calls, failed_error, t_last)
            ... sleep sleep_ms ...
            task.after_tool()
            write(task.fields(record))         # record keeping is outside agent_ms
            task.after_record()
    """

    def __init__(self, jobs: dict, run: dict, client: str):
        self.client = client
        self.run = run
        self.v1 = jobs.get("endpoint", "chat").startswith("openai-")  # /v1's message shapes
        self.actions = jobs.get("actions", "structured")
        self.replay = run.get("replay")
        self.max_turns = run["max_turns"]
        self.tools = run.get("tools", jobs.get("tools", []))
        tables = jobs.get("tables", [])
        self.table = tables[run["table"]] if "table" in run else {}
        opening = jobs["prompts"][run["prompt"]]
        if self.replay:
            self.script = opening
            self.cuts = replay_turns(opening)[: self.max_turns]
            self.history = [dict(m) for m in opening[: self.cuts[0]]]
        else:
            self.history = [dict(m) for m in opening]
        self.extra = self.request_extra(jobs, run)  # built once per task, not per turn
        self.turn = -1
        self.over = False
        self.prev_t_last = self.prev_tool_ms = self.prev_book_ms = None
        self.t_last = self.t_tool = self.t_book = None
        self.own_ms = None
        self.sent_messages = len(self.history)
        self.action = self.tool_result = self.tool_ms = self.outcome = self.error = None

    # -- the request -------------------------------------------------------------------------
    @staticmethod
    def request_extra(jobs: dict, run: dict) -> dict:
        """`format` (structured) or `tools` (native, with the jobs file's `format` if it has one)
        of a task's requests, as JSON values; nothing for a replay."""
        if run.get("replay"):
            return {}
        tools = run.get("tools", jobs.get("tools", []))
        v1 = jobs.get("endpoint", "chat").startswith("openai-")
        if jobs.get("actions", "structured") == "native":
            extra = {"tools": json.loads(native_tools(tools))}
            if "format" in jobs:
                extra["response_format" if v1 else "format"] = jobs["format"]
            return extra
        if v1:
            return {"response_format": response_format(action_format(tools))}
        return {"format": json.loads(action_format(tools))}

    def before_send(self, t0: float) -> None:
        """At t0: agent_ms = from the previous turn's t_last to this t0, less the previous
        turn's tool time and record keeping (None at turn 0)."""
        self.turn += 1
        self.own_ms = None if self.prev_t_last is None else \
            (t0 - self.prev_t_last) * 1e3 - self.prev_tool_ms - self.prev_book_ms
        self.sent_messages = len(self.history)
        self.action = self.tool_result = self.tool_ms = None

    # -- parse and act -----------------------------------------------------------------------
    def _end(self, outcome: str, kind: str | None = None, message: str = "") -> None:
        self.over, self.outcome = True, outcome
        self.error = None if kind is None else {"kind": kind, "message": message, "client": self.client}

    def act(self, text: str, tool_calls: list | None, error: dict | None, t_last: float | None,
            timeout_s: float) -> float:
        """Parse the answer into an action and run its tool; returns the ms to sleep (wait)."""
        self.t_tool = time.perf_counter()
        self.t_last = t_last if t_last is not None else self.t_tool
        if error is not None:
            self._end("error", error["kind"], error["message"])
            return 0
        if self.replay:
            return self._replay_next(text)
        if self.actions == "native":
            if not tool_calls:
                self.action = {"tool": None, "arguments": None, "valid": False}
                self._end("invalid_action", "no_tool_call", "the answer holds no tool call")
                return 0
            call = tool_calls[0].get("function") if isinstance(tool_calls[0], dict) else None
            name = call.get("name") if isinstance(call, dict) else None
            args = call.get("arguments") if isinstance(call, dict) else None
            if not isinstance(name, str):
                self.action = {"tool": None, "arguments": None, "valid": False}
                self._end("invalid_action", "bad_tool_call", "the tool call has no function name")
                return 0
        else:
            try:
                doc = json.loads(text)
            except ValueError as e:
                self.action = {"tool": None, "arguments": None, "valid": False}
                self._end("invalid_action", "not_json", f"the answer is not JSON: {e.msg}")
                return 0
            if not (isinstance(doc, dict) and sorted(doc) == ["arguments", "tool"] and isinstance(doc["tool"], str)):
                self.action = {"tool": None, "arguments": None, "valid": False}
                self._end("invalid_action", "not_an_action", 'the answer is not {"tool": NAME, "arguments": {...}}')
                return 0
            name, args = doc["tool"], doc["arguments"]
        self.action = {"tool": name, "arguments": args, "valid": False}
        if name not in self.tools:
            self._end("unknown_tool", "unknown_tool", f"no tool {name!r} in this task (tools: {', '.join(self.tools)})")
            return 0
        problem = check_arguments(name, args)
        if problem is not None:
            self._end("invalid_action", "bad_arguments", f"{name}: {problem}")
            return 0
        self.action["valid"] = True
        self.call = (name, args, text, tool_calls)
        result, sleep_ms = run_tool(name, args, self.table)
        self.tool_result = result
        if name == "finish":
            self._end("finished")
            return 0
        if sleep_ms > timeout_s * 1e3:
            self.tool_result = None
            self._end("error", "tool_timeout",
                      f"wait {sleep_ms} ms is longer than the run's timeout ({timeout_s:g} s)")
            return timeout_s * 1e3
        return sleep_ms

    def _replay_next(self, text: str) -> float:
        k = self.turn
        end = self.cuts[k + 1] if k + 1 < len(self.cuts) else None
        if end is None:
            self._end("finished" if len(self.cuts) == len(replay_turns(self.script)) else "max_turns")
            return 0
        start = self.cuts[k]
        recorded = [dict(m) for m in self.script[start:end]]
        if self.replay == "regenerated" and recorded and recorded[0]["role"] == "assistant":
            recorded[0] = {"role": "assistant", "content": text}
        self.pending = recorded
        return 0

    def after_tool(self) -> None:
        t = time.perf_counter()
        self.tool_ms = (t - self.t_tool) * 1e3 if (self.action is not None and self.action["valid"]) else 0.0
        if not self.over and not self.replay:
            name, args, text, tool_calls = self.call
            if self.actions == "native" and self.v1:  # the call as it came (its arguments' own text)
                call = tool_calls[0]
                self.history.append({"role": "assistant", "content": text, "tool_calls": [
                    {"id": call.get("id"), "type": "function",
                     "function": {"name": name, "arguments": call.get("arguments_text", "")}}]})
                self.history.append({"role": "tool", "content": self.tool_result, "tool_call_id": call.get("id")})
            elif self.actions == "native":
                self.history.append({"role": "assistant", "content": text,
                                     "tool_calls": [{"function": {"name": name, "arguments": args}}]})
                self.history.append({"role": "tool", "content": self.tool_result, "tool_name": name})
            else:
                self.history.append({"role": "assistant", "content": text})
                self.history.append({"role": "user", "content": f"{name} returned: {self.tool_result}"})
        elif not self.over:
            self.history.extend(self.pending)
        if not self.over and self.turn + 1 >= self.max_turns:
            self._end("max_turns")
        self.t_book = time.perf_counter()

    # -- the record --------------------------------------------------------------------------
    def fields(self, sent: list | None = None) -> dict:
        """The per-turn fields of this turn's record. `sent`: the messages as they went on the
        wire, where the client's library builds them (default: the history the loop holds)."""
        messages = self.history[: self.sent_messages] if sent is None else sent
        return {
            "task_id": self.run.get("task_id", self.run["run_id"]),
            "turn": self.turn,
            "actions": None if self.replay else self.actions,
            "replay": self.replay,
            "max_turns": self.max_turns,
            "messages": len(messages),
            "history_sha256": history_sha256(messages),
            "action": self.action,
            "tool_result": self.tool_result,
            "tool_ms": None if self.replay else self.tool_ms,
            "agent_ms": self.own_ms,
            "task_outcome": self.outcome if self.over else None,
            "task_error": self.error if self.over else None,
        }

    def after_record(self) -> None:
        """Record keeping (hashing, writing) is the harness's, not the agent's: left out of agent_ms."""
        now = time.perf_counter()
        self.prev_t_last = self.t_last
        self.prev_tool_ms = self.tool_ms or 0.0
        self.prev_book_ms = (now - self.t_book) * 1e3
