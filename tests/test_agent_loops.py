"""Agent loops (issue 24; DESIGN.md, "Agent loops"): every client runs the same multi-turn task
on one connection, with the same tools, and holds the same conversation.

Against the real embedded server: structured actions on gemma3:270m, native tool calls on a
derived model whose template references `.Tools`, and conversation replay. Seeded text differs
between CPUs, so these tests assert what must hold for any text the model samples: the grammar
forces a valid action, the task ends by finish or max_turns, the clients agree turn for turn,
and each record says what was sent. The scripted server (tests/scripted.py) gives the faults
the real server cannot be made to give on demand.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import httpx
import pytest

from langbench import paths, schemas
from langbench.run import agents, conversations
from relay import Relay
from sampling import sampled
from scripted import AgentServer
from test_agents_contract import run_agent

sys.path.insert(0, str(paths.AGENTS / "python"))
import agent_tools  # noqa: E402  (the Python clients' schemas, to check what went on the wire)

AGENTS = agents.AGENTS
# 44: room for an action, and less than its length plus 31: under the grammar a greedy model can
# trail into whitespace, and Ollama 0.11.4 ends a stream without a done line once one token
# (whitespace trimmed) repeats more than 30 times (llm/server.go); cut by num_predict, the answer
# is the action and whitespace, which parses.
OPTIONS = sampled({"seed": 3, "temperature": 0, "num_predict": 44})
OPENING = [{"role": "system", "content": "You are an agent. Answer with one JSON action."},
           {"role": "user", "content": "Add 17 and 25 for the café «Ünïcode» ✓ — then say the sum."}]


def canonical_sha256(messages: list) -> str:
    """DESIGN.md's history digest, written here independently of the clients."""
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def agent_doc(runs: list[dict], prompts=None, **extra) -> dict:
    return {"schema_version": 1, "model": paths.EMBEDDED_MODEL, "endpoint": "chat", "workload": "agent",
            "timeout_s": 120, "prompts": prompts or [OPENING], "runs": runs, **extra}


def task(run_id: str, max_turns: int, options=None, **extra) -> dict:
    return {"run_id": run_id, "prompt": 0, "options": options or OPTIONS, "keep_alive": -1, "warmup": False,
            "max_turns": max_turns, **extra}


def no_tools(agent: str, body: dict) -> bool:
    """A request without tools: ollama-python 0.6.3 (the python and python-tuned clients on /api) sends `"tools": []` on every chat request
    (ChatRequest keeps the empty list its _copy_tools yields), the same to the server as none."""
    return body.get("tools", "absent") == ([] if agent in ("python", "python-tuned") else "absent")


def sub(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


def by_task(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["run_id"], []).append(r)
    return out


def through_relay(ollama, doc, tmp_path_factory, name):
    out = {}
    for agent in AGENTS:
        with Relay(ollama.url, piece=7) as relay:
            stats, records = run_agent(agent, relay.url, doc, tmp_path_factory.mktemp(f"{name}-{agent}"), timeout=900)
        out[agent] = (stats, records, relay.bodies, relay.connections)
    return out


# -- structured actions on the real server --------------------------------------------------------

STRUCTURED = agent_doc([task("sum", 2, tools=["add"]), task("done", 2, tools=["finish"])], actions="structured")


@pytest.fixture(scope="module")
def structured(ollama, tmp_path_factory):
    return through_relay(ollama, STRUCTURED, tmp_path_factory, "structured")


@pytest.mark.parametrize("agent", AGENTS)
def test_structured_task_records_validate_and_say_what_was_sent(structured, agent):
    stats, records, bodies, connections = structured[agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert connections == 1  # every turn of both tasks on one kept-alive connection
    assert len(bodies) == len(records)
    for rec, body in zip(records, bodies):
        assert schemas.problems("record", rec) == []
        assert rec["outcome"] == "ok" and rec["endpoint"] == "chat" and rec["actions"] == "structured"
        # the record's digest is of the messages that went on the wire
        assert rec["history_sha256"] == canonical_sha256(body["messages"])
        assert rec["messages"] == len(body["messages"]) == len(OPENING) + 2 * rec["turn"]
        assert body["format"] == {"anyOf": [json.loads(s) for s in _schemas(rec)]}
        assert no_tools(agent, body)
        assert (rec["agent_ms"] is None) == (rec["turn"] == 0)
        assert rec["agent_ms"] is None or 0 <= rec["agent_ms"] < rec["e2e_ms"]


def _schemas(rec):
    tools = {"sum": ["add"], "done": ["finish"]}[rec["run_id"]]
    return [agent_tools.ACTION_SCHEMA[t] for t in tools]


@pytest.mark.parametrize("agent", AGENTS)
def test_the_format_grammar_forces_a_valid_action_and_the_task_ends_by_finish_or_max_turns(structured, agent):
    tasks = by_task(structured[agent][1])
    for run_id, turns in tasks.items():
        assert [r["turn"] for r in turns] == list(range(len(turns)))
        assert all(r["task_outcome"] is None for r in turns[:-1])
        for r in turns:
            assert r["outcome"] == "ok"  # num_predict ends the stream before Ollama's repeat limit can
            if r["done_reason"] == "stop":  # the whole answer was sampled under the grammar
                assert r["action"]["valid"], r["action"]
            if r["action"]["valid"]:  # the enum of the task's one tool
                assert r["action"]["tool"] == {"sum": "add", "done": "finish"}[run_id]
        last = turns[-1]
        if last["action"]["valid"]:
            assert last["task_outcome"] == {"sum": "max_turns", "done": "finished"}[run_id]
            assert len(turns) == {"sum": 2, "done": 1}[run_id]
        else:  # cut by num_predict inside the action: a prefix of one, named as such
            assert last["done_reason"] == "length"
            assert last["task_outcome"] == "invalid_action" and last["task_error"]["kind"] == "not_json"
    for r in tasks["sum"]:
        if r["action"]["valid"]:
            a, b = r["action"]["arguments"]["a"], r["action"]["arguments"]["b"]
            assert r["tool_result"] == str(a + b)


@pytest.mark.parametrize("agent", AGENTS)
def test_each_turn_sends_the_history_with_the_answer_and_the_tool_result_appended(structured, agent):
    _, records, bodies, _ = structured[agent]
    for prev, (rec, body) in zip(zip(records, bodies), list(zip(records, bodies))[1:]):
        if rec["turn"] == 0:
            continue
        (p_rec, p_body) = prev
        sent = body["messages"]
        assert sent[:-2] == p_body["messages"]
        answer, result = sent[-2], sent[-1]
        assert answer["role"] == "assistant"
        assert hashlib.sha256(answer["content"].encode()).hexdigest() == p_rec["response_sha256"]
        assert json.loads(answer["content"]) == {"tool": p_rec["action"]["tool"], "arguments": p_rec["action"]["arguments"]}
        assert result == {"role": "user", "content": f"add returned: {p_rec['tool_result']}"}


def test_every_client_holds_the_same_structured_conversation_turn_for_turn(structured):
    """Seeded sampling, the same history and the same grammar: the same answer at every turn."""
    seen = {a: [(r["run_id"], r["turn"], r["history_sha256"], r["response_sha256"], r["task_outcome"])
                for r in structured[a][1]] for a in AGENTS}
    assert seen["python"] == seen["rust"] == seen["null"], seen
    formats = {a: [json.dumps(b["format"]) for b in structured[a][2]] for a in AGENTS}  # key order kept
    assert formats["python"] == formats["rust"] == formats["null"]
    for a in AGENTS:
        print(f"\n{a}: " + ", ".join(f"{r['run_id']}#{r['turn']} {r['action']['tool']} {r['task_outcome'] or ''} "
                                     f"agent_ms={r['agent_ms']}" for r in structured[a][1]))


# -- native tool calls on the real server ---------------------------------------------------------

NATIVE_MODEL = "langbench-agent-tools:latest"
# A plain-text template for the base model. The tool-call block has no tag before its JSON, so
# Ollama 0.11.4's parser (tools.parseTag) takes "{" as the tag: an answer that opens with a JSON
# object naming a tool is a call.
NATIVE_TEMPLATE = (
    '{{- if .Tools }}Tools:{{ range .Tools }} {{ .Function.Name }}{{ end }}\n{{ end }}'
    '{{- range .Messages }}'
    '{{- if eq .Role "system" }}{{ .Content }}\n'
    '{{ else if eq .Role "user" }}User: {{ .Content }}\n'
    '{{ else if eq .Role "assistant" }}Assistant: {{ if .ToolCalls }}{{ range .ToolCalls }}'
    '{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}{{ end }}{{ else }}{{ .Content }}{{ end }}\n'
    '{{ else if eq .Role "tool" }}Result: {{ .Content }}\n'
    '{{ end }}{{- end }}Assistant:')
SHOTS = ('User: What is 2 + 5?\nAssistant: {"name": "add", "arguments": {"a": 2, "b": 5}}\nResult: 7\n'
         'Assistant: {"name": "finish", "arguments": {"answer": "7"}}\n')
NATIVE_OPENING = [{"role": "system", "content": "You call tools.\n" + SHOTS},
                  {"role": "user", "content": "What is 17 + 25? Ça va ✓"}]
# the tool-call JSON as a grammar: the parser must fire, whatever the model would have sampled
CALL_FORMAT = {"type": "object", "properties": {"name": {"enum": ["add"]}, "arguments": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}},
    "required": ["name", "arguments"]}


@pytest.fixture(scope="module")
def native_model(ollama):
    r = httpx.post(f"{ollama.url}/api/create", timeout=300, json={
        "model": NATIVE_MODEL, "from": paths.EMBEDDED_MODEL, "template": NATIVE_TEMPLATE, "stream": False})
    assert r.status_code == 200, r.text
    caps = httpx.post(f"{ollama.url}/api/show", json={"model": NATIVE_MODEL}, timeout=30).json()["capabilities"]
    assert "tools" in caps, caps  # the server saw .Tools in the template
    yield NATIVE_MODEL
    httpx.request("DELETE", f"{ollama.url}/api/delete", json={"model": NATIVE_MODEL}, timeout=30)


def native_doc(**extra) -> dict:
    doc = agent_doc([task("native", 2, sampled({"seed": 3, "temperature": 0, "num_predict": 48}), tools=["add", "finish"])],
                    prompts=[NATIVE_OPENING], actions="native", **extra)
    return {**doc, "model": NATIVE_MODEL}


@pytest.fixture(scope="module")
def native(native_model, ollama, tmp_path_factory):
    return through_relay(ollama, native_doc(format=CALL_FORMAT), tmp_path_factory, "native")


def python_wire(messages: list[dict]) -> list[dict]:
    """What ollama-python 0.6.3 sends for a message list: `_copy_messages` keeps a key only if
    its value is truthy, so an assistant tool-call message's empty content is dropped."""
    return [{k: v for k, v in m.items() if v} for m in messages]


@pytest.mark.parametrize("agent", AGENTS)
def test_native_tool_call_loop_fires_the_servers_parser_and_runs_the_tool(native, agent):
    stats, records, bodies, connections = native[agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert connections == 1
    assert [r["turn"] for r in records] == [0, 1]  # the grammar allows add only: two calls, then max_turns
    for rec, body in zip(records, bodies):
        assert schemas.problems("record", rec) == []
        assert rec["actions"] == "native" and body["tools"] and body["format"] == CALL_FORMAT
        assert rec["action"]["tool"] == "add" and rec["action"]["valid"], rec
        args = rec["action"]["arguments"]
        assert rec["tool_result"] == str(args["a"] + args["b"])
        assert rec["history_sha256"] == canonical_sha256(body["messages"])
    assert records[-1]["task_outcome"] == "max_turns"
    first, second = records[0], bodies[1]["messages"]
    assert second[-1] == {"role": "tool", "content": first["tool_result"], "tool_name": "add"}
    assert second[-2]["tool_calls"] == [{"function": {"name": "add", "arguments": first["action"]["arguments"]}}]


def test_native_conversations_match_except_where_ollama_python_drops_empty_content(native):
    """The server answers the same at every turn through every client. Rust and the null client
    send the history as the loop holds it; ollama-python drops the assistant message's empty
    `content` (the call came in a chunk without text), so its digest differs from turn 1 on,
    by exactly that rewrite: a finding about the official client, stated, not hidden."""
    rs, nl, py = (native[a] for a in ("rust", "null", "python"))
    assert [r["response_sha256"] for r in py[1]] == [r["response_sha256"] for r in rs[1]] == \
           [r["response_sha256"] for r in nl[1]]
    assert [r["history_sha256"] for r in rs[1]] == [r["history_sha256"] for r in nl[1]]
    assert rs[2][1]["messages"][-2]["content"] == ""  # what Rust sent
    assert "content" not in py[2][1]["messages"][-2]  # what ollama-python sent for the same message
    for p, r, body in zip(py[1], rs[1], rs[2]):
        assert p["history_sha256"] == canonical_sha256(python_wire(body["messages"]))
        assert (p["history_sha256"] == r["history_sha256"]) == (p["turn"] == 0)


@pytest.mark.parametrize("agent", AGENTS)
def test_native_few_shot_without_a_grammar_is_a_call_or_a_named_invalid_action(native_model, ollama, agent, tmp_path):
    """Without `format` the base model's answer decides: each turn is a parsed call (valid,
    its tool run) or the task ends `invalid_action` on that turn, and every client agrees."""
    stats, records = run_agent(agent, ollama.url, native_doc(), tmp_path, timeout=900)
    assert stats.exit_code == 0, stats.stderr_tail
    for rec in records:
        assert schemas.problems("record", rec) == []
        if rec["action"]["tool"] is None:
            assert rec["task_outcome"] == "invalid_action" and rec["task_error"]["kind"] == "no_tool_call"
    assert records[-1]["task_outcome"] in ("finished", "max_turns", "invalid_action", "unknown_tool")
    fired = sum(r["action"]["tool"] is not None for r in records)
    print(f"\n{agent}: few-shot native: the parser fired on {fired} of {len(records)} turn(s): "
          + ", ".join(f"{r['action']['tool']}->{r['task_outcome']}" for r in records))


# -- replay ----------------------------------------------------------------------------------------

FIXTURE = paths.ROOT / "tests" / "fixtures" / "conversations.sharegpt.jsonl"


def replay_doc() -> dict:
    convs = conversations.read_sharegpt(FIXTURE)
    runs = [{"run_id": f"{c['id']}-{mode}", "task_id": c["id"], "prompt": i,
             "options": sampled({"seed": 5, "temperature": 0, "num_predict": 8}), "keep_alive": -1, "warmup": False,
             "max_turns": 8, "replay": mode} for mode in ("fixed", "regenerated") for i, c in enumerate(convs)]
    return agent_doc(runs, prompts=[c["messages"] for c in convs])


@pytest.fixture(scope="module")
def replay(ollama, tmp_path_factory):
    return through_relay(ollama, replay_doc(), tmp_path_factory, "replay")


def test_sharegpt_fixture_reads_into_chat_messages():
    convs = conversations.read_sharegpt(FIXTURE)
    assert [c["id"] for c in convs] == ["shop-1", "math-2"]
    assert [m["role"] for m in convs[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert [conversations.requests_of(c["messages"]) for c in convs] == [2, 2]


def test_a_bad_conversations_line_is_named(tmp_path):
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"conversations": [{"from": "human", "value": "hi"}]}\n'
                   '{"conversations": [{"from": "bot", "value": "hi"}]}\n')
    with pytest.raises(conversations.ConversationError, match=r"c.jsonl:2: 'conversations\[0\].from'"):
        conversations.read_sharegpt(bad)


@pytest.mark.parametrize("agent", AGENTS)
def test_replay_sends_the_recorded_history_or_the_models_own_answers(replay, agent):
    stats, records, bodies, connections = replay[agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert connections == 1
    convs = {c["id"]: c["messages"] for c in conversations.read_sharegpt(FIXTURE)}
    assert len(by_task(records)) == 4  # two conversations, each replayed fixed and regenerated
    for run_id in by_task(records):
        pairs = [p for p in zip(records, bodies) if p[0]["run_id"] == run_id]
        conv = convs[pairs[0][0]["task_id"]]
        mode = pairs[0][0]["replay"]
        assert len(pairs) == conversations.requests_of(conv)
        assert pairs[-1][0]["task_outcome"] == "finished"
        cuts = [i for i, m in enumerate(conv) if m["role"] == "assistant"] + \
               ([len(conv)] if conv[-1]["role"] != "assistant" else [])
        for k, (rec, body) in enumerate(pairs):
            assert schemas.problems("record", rec) == []
            assert rec["action"] is None and rec["actions"] is None and rec["tool_ms"] is None
            assert "format" not in body and no_tools(agent, body)
            sent = body["messages"]
            assert len(sent) == cuts[k] and rec["history_sha256"] == canonical_sha256(sent)
            if mode == "fixed":
                assert sent == conv[: cuts[k]]
            else:  # the user turns as recorded, each assistant turn the model's own answer of the turn before
                assert [m for m in sent if m["role"] != "assistant"] == [m for m in conv[: cuts[k]] if m["role"] != "assistant"]
                if k:
                    answer = sent[cuts[k - 1]]
                    assert answer["role"] == "assistant"
                    assert hashlib.sha256(answer["content"].encode()).hexdigest() == pairs[k - 1][0]["response_sha256"]


def test_replay_is_the_same_conversation_in_every_client(replay):
    seen = {a: [(r["run_id"], r["turn"], r["history_sha256"], r["response_sha256"]) for r in replay[a][1]]
            for a in AGENTS}
    assert seen["python"] == seen["rust"] == seen["null"]


# -- faults, on the scripted server ---------------------------------------------------------------

def action(tool, **arguments) -> dict:
    return {"content": json.dumps({"tool": tool, "arguments": arguments}, ensure_ascii=False) + "\n  "}


FAULTS = {
    # name: (answers by turn, tools, max_turns, timeout_s, outcome of the last turn, its kind)
    "not_json": ([action("add", a=1, b=2), {"content": '{"tool": "add", "argu'}], ["add"], 5, 30,
                 "invalid_action", "not_json"),
    "not_an_action": ([{"content": '["add", 1, 2]'}], ["add"], 5, 30, "invalid_action", "not_an_action"),
    "bad_arguments": ([action("add", a=1, b="2")], ["add"], 5, 30, "invalid_action", "bad_arguments"),
    "wait_out_of_range": ([action("wait", ms=10001)], ["wait"], 5, 30, "invalid_action", "bad_arguments"),
    "unknown_tool": ([action("add", a=1, b=2), action("search", q="x")], ["add"], 5, 30, "unknown_tool", "unknown_tool"),
    "not_offered": ([action("finish", answer="x")], ["add"], 5, 30, "unknown_tool", "unknown_tool"),
    "max_turns": ([action("add", a=1, b=2)], ["add", "finish"], 3, 30, "max_turns", None),
    "finished": ([action("add", a=1, b=2), action("finish", answer="3")], ["add", "finish"], 5, 30, "finished", None),
    "http_500_mid_task": ([action("add", a=1, b=2), {"status": 500, "error": "scripted failure"}], ["add"], 5, 30,
                          "error", "http_500"),
    "error_line_mid_task": ([action("add", a=1, b=2), {"error_line": "scripted failure"}], ["add"], 5, 30,
                            "error", "server_error"),
    "wait_past_timeout": ([action("wait", ms=1500)], ["wait"], 5, 1, "error", "tool_timeout"),
}


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_fault_is_a_named_outcome_on_its_turn_and_the_earlier_turns_are_kept(agent, fault, tmp_path):
    answers, tools, max_turns, timeout_s, outcome, kind = FAULTS[fault]
    with AgentServer(answers) as srv:
        doc = agent_doc([task("t", max_turns, tools=tools)], actions="structured", timeout_s=timeout_s)
        stats, records = run_agent(agent, srv.url, doc, tmp_path)
    assert stats.exit_code == (1 if outcome == "error" else 0), stats.stderr_tail
    n = max_turns if outcome == "max_turns" else len(answers)
    assert [r["turn"] for r in records] == list(range(n))
    for rec in records:
        assert schemas.problems("record", rec) == []
    assert all(r["task_outcome"] is None and r["action"]["valid"] for r in records[:-1])
    last = records[-1]
    assert last["task_outcome"] == outcome
    assert (last["task_error"] or {}).get("kind") == kind
    if kind == "tool_timeout":
        assert last["tool_ms"] >= 1000 and last["tool_result"] is None and last["action"]["valid"]
    if kind in ("http_500", "server_error"):
        assert last["outcome"] == "error" and last["error"]["kind"] == kind
        assert "scripted failure" in last["task_error"]["message"]


NATIVE_FAULTS = {
    "no_tool_call": ([{"content": "I will not call anything."}], "invalid_action", "no_tool_call"),
    "unknown_tool": ([{"tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
                      {"tool_calls": [{"function": {"name": "search", "arguments": {"q": "x"}}}]}],
                     "unknown_tool", "unknown_tool"),
    "bad_arguments": ([{"tool_calls": [{"function": {"name": "add", "arguments": {"a": 1.5, "b": 2}}}]}],
                      "invalid_action", "bad_arguments"),
}


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("fault", sorted(NATIVE_FAULTS))
def test_native_faults_are_named_outcomes(agent, fault, tmp_path):
    answers, outcome, kind = NATIVE_FAULTS[fault]
    with AgentServer(answers) as srv:
        stats, records = run_agent(agent, srv.url, agent_doc([task("t", 5, tools=["add"])], actions="native"), tmp_path)
        bodies = srv.bodies
    assert stats.exit_code == 0, stats.stderr_tail
    assert len(records) == len(answers)
    assert records[-1]["task_outcome"] == outcome and records[-1]["task_error"]["kind"] == kind
    assert all("tools" in b and "format" not in b for b in bodies)
    if len(records) == 2:
        assert bodies[1]["messages"][-1] == {"role": "tool", "content": "3", "tool_name": "add"}


# -- the tools and the digest, byte for byte across languages --------------------------------------

TABLE = {"π": "3.14159", "café ✓": "crème\u2028brûlée", "k": "v"}
TOOL_SCRIPT = [
    action("lookup", key="π"), action("lookup", key="café ✓"), action("lookup", key="nope ∅"),
    action("add", a=-5, b=12), action("add", a=2 ** 63 - 1, b=1), action("add", a=-(2 ** 63), b=-1),
    action("add", a=2 ** 70, b=0), action("add", a=2 ** 63 - 2, b=1), action("wait", ms=0), action("wait", ms=30),
    action("finish", answer="done ✓"),
]
TOOL_RESULTS = ["3.14159", "crème\u2028brûlée", "unknown key: nope ∅", "7", "overflow", "overflow", "overflow",
                str(2 ** 63 - 1), "waited 0 ms", "waited 30 ms", None]
UNICODE_OPENING = [{"role": "system", "content": "Tabelle: π, café ✓ \u2028 \U0001F600 \\ \"quoted\" \t\x01"},
                   {"role": "user", "content": "日本語のテキスト and emoji 🎉"}]


@pytest.fixture(scope="module")
def tool_runs(tmp_path_factory):
    out = {}
    for agent in AGENTS:
        with AgentServer(TOOL_SCRIPT) as srv:
            doc = agent_doc([task("tools", 20, table=0)], prompts=[UNICODE_OPENING],
                            tools=["lookup", "add", "wait", "finish"], tables=[TABLE])
            stats, records = run_agent(agent, srv.url, doc, tmp_path_factory.mktemp(f"tools-{agent}"))
            out[agent] = (stats, records, srv.bodies, srv.raw, srv.connections)
    return out


@pytest.mark.parametrize("agent", AGENTS)
def test_built_in_tools_give_the_contracts_results(tool_runs, agent):
    stats, records, bodies, _, connections = tool_runs[agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert connections == 1
    assert [r["tool_result"] for r in records] == TOOL_RESULTS
    assert records[-1]["task_outcome"] == "finished" and all(r["action"]["valid"] for r in records)
    waited = records[TOOL_RESULTS.index("waited 30 ms")]
    assert waited["tool_ms"] >= 30
    after = records[TOOL_RESULTS.index("waited 30 ms") + 1]
    assert after["agent_ms"] < 30  # the wait is the tool's time, not the agent's
    for rec, body in zip(records, bodies):
        assert rec["history_sha256"] == canonical_sha256(body["messages"])


def test_tool_results_digests_and_schemas_are_byte_identical_across_languages(tool_runs):
    results = {a: [r["tool_result"] for r in tool_runs[a][1]] for a in AGENTS}
    digests = {a: [r["history_sha256"] for r in tool_runs[a][1]] for a in AGENTS}
    args = {a: [json.dumps(r["action"]["arguments"]) for r in tool_runs[a][1]] for a in AGENTS}
    assert results["python"] == results["rust"] == results["null"]
    assert digests["python"] == digests["rust"] == digests["null"]
    assert args["python"] == args["rust"] == args["null"]  # 2**70 stays an integer in every language
    formats = {a: [json.dumps(b["format"]) for b in tool_runs[a][2]] for a in AGENTS}
    assert formats["python"] == formats["rust"] == formats["null"]  # same key order: the same grammar


def test_native_tools_and_the_format_are_the_same_in_every_client(tmp_path):
    seen = {}
    for agent in AGENTS:
        with AgentServer([{"tool_calls": [{"function": {"name": "finish", "arguments": {"answer": "x"}}}]}]) as srv:
            doc = agent_doc([task("t", 2, tools=["lookup", "add", "wait", "finish"])], actions="native",
                            format=CALL_FORMAT)
            stats, _ = run_agent(agent, srv.url, doc, sub(tmp_path, agent))
            assert stats.exit_code == 0, stats.stderr_tail
            seen[agent] = (srv.bodies[0]["tools"], json.dumps(srv.bodies[0]["format"]))
    assert seen["python"] == seen["rust"] == seen["null"]
    assert [t["function"]["name"] for t in seen["rust"][0]] == ["lookup", "add", "wait", "finish"]


# -- many sessions in one process ------------------------------------------------------------------

SESSION_SCRIPT = [action("add", a=1, b=2), action("lookup", key="k"), action("finish", answer="3")]


@pytest.mark.parametrize("agent", ["python", "rust"])
def test_concurrent_sessions_hold_the_same_conversations_as_one_at_a_time(agent, tmp_path):
    runs = [task(f"s{i}", 5, table=0) for i in range(8)]
    doc = agent_doc(runs, tools=["add", "lookup", "finish"], tables=[TABLE])
    with AgentServer(SESSION_SCRIPT, gap_ms=2) as srv:
        stats1, serial = run_agent(agent, srv.url, doc, sub(tmp_path, "serial"))
    with AgentServer(SESSION_SCRIPT, gap_ms=2) as srv:
        stats4, conc = run_agent(agent, srv.url, {**doc, "streams": 4}, sub(tmp_path, "streams"))
        connections = srv.connections
    assert stats1.exit_code == stats4.exit_code == 0, stats4.stderr_tail
    assert len(conc) == len(serial) == 8 * 3
    assert connections == 4  # one kept-alive connection per session
    for run_id, turns in by_task(conc).items():
        assert [r["turn"] for r in turns] == [0, 1, 2] and turns[-1]["task_outcome"] == "finished"
        assert {r["concurrency"] for r in turns} == {4} and len({r["stream"] for r in turns}) == 1
    key = lambda rs: sorted((r["run_id"], r["turn"], r["history_sha256"], r["tool_result"]) for r in rs)
    assert key(conc) == key(serial)
    # interleaved: some session's turn began before another's task had ended
    starts = sorted((r["t0_unix"], r["run_id"]) for r in conc)
    assert len({rid for _, rid in starts[:4]}) > 1


# -- a wrong jobs file runs nothing ----------------------------------------------------------------

BAD_AGENT_JOBS = {
    "unknown_tool": (agent_doc([task("t", 2)], tools=["add", "search"]), r"tools\[1\].*search"),
    "unknown_tool_in_run": (agent_doc([task("t", 2, tools=["finish", "browse"])]), r"runs\[0\]\.tools\[1\].*browse"),
    "no_max_turns": (agent_doc([{k: v for k, v in task("t", 2).items() if k != "max_turns"}], tools=["add"]),
                     r"runs\[0\]\.max_turns"),
    "zero_max_turns": (agent_doc([task("t", 0)], tools=["add"]), r"runs\[0\]\.max_turns"),
    "no_tools": (agent_doc([task("t", 2)]), r"runs\[0\]\.tools"),
    "generate_endpoint": ({**agent_doc([task("t", 2)], tools=["add"]), "endpoint": "generate"}, "endpoint"),
    "bad_actions": (agent_doc([task("t", 2)], tools=["add"], actions="telepathy"), "actions"),
    "table_out_of_range": (agent_doc([task("t", 2, table=3)], tools=["lookup"], tables=[{}]), r"runs\[0\]\.table"),
    "agent_key_without_workload": ({k: v for k, v in agent_doc([task("t", 2)], tools=["add"]).items()
                                    if k != "workload"}, "tools"),
    "replay_opens_with_assistant": (agent_doc([task("t", 2, replay="fixed")],
                                              prompts=[[{"role": "assistant", "content": "hi"}]]), r"runs\[0\]\.prompt"),
}


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("case", sorted(BAD_AGENT_JOBS))
def test_a_wrong_agent_jobs_file_exits_2_names_the_key_and_runs_nothing(agent, case, tmp_path):
    doc, named = BAD_AGENT_JOBS[case]
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps(doc))
    out = tmp_path / "records.jsonl"
    with AgentServer([action("add", a=1, b=2)]) as srv:
        done = subprocess.run([*agents.command(agent), "--host", srv.url, "--jobs", str(jobs), "--out", str(out)],
                              capture_output=True, text=True)
        assert srv.bodies == []  # nothing was sent
    assert done.returncode == 2, done.stderr
    assert str(jobs) in done.stderr
    assert re.search(named, done.stderr), done.stderr
    assert not out.exists()


def test_jobs_schema_accepts_agent_jobs_and_rejects_the_wrong_ones():
    assert schemas.problems("jobs", STRUCTURED) == []
    assert schemas.problems("jobs", replay_doc()) == []
    assert schemas.problems("jobs", native_doc(format=CALL_FORMAT)) == []
    for case in ("unknown_tool", "unknown_tool_in_run", "no_max_turns", "zero_max_turns", "generate_endpoint",
                 "bad_actions", "agent_key_without_workload"):
        assert schemas.problems("jobs", BAD_AGENT_JOBS[case][0]), case
