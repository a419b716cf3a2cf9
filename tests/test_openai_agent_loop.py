"""The agent loop on /v1 (issue 25): tool calls arrive in `delta.tool_calls`, streamed in pieces
by index (a first delta with the id and name, then the arguments' text), and feed the same loop
in all three clients; the history goes back in /v1's shapes (the call with its id and its
arguments' own text, the result as a `tool` message with its `tool_call_id`), byte-identical in
every client; structured actions send the action's schema as `response_format`."""

from __future__ import annotations

import json

import pytest

from langbench import schemas
from langbench.run import agents
from scripted import AgentSSEServer
from test_agents_contract import run_agent

AGENTS = agents.AGENTS
ADD = '{"a": 40, "b": 2}'
NATIVE = [{"tool_calls": [{"id": "call_7", "name": "add", "arguments": ADD}]},
          {"tool_calls": [{"id": "call_8", "name": "finish", "arguments": '{"answer": "42"}'}]}]
STRUCTURED = [{"content": '{"tool": "add", "arguments": {"a": 40, "b": 2}}'},
              {"content": '{"tool": "finish", "arguments": {"answer": "42"}}'}]


def task_jobs(actions: str) -> dict:
    return {"schema_version": 1, "model": "scripted", "endpoint": "openai-chat", "workload": "agent",
            "actions": actions, "tools": ["add", "finish"], "timeout_s": 30,
            "prompts": [[{"role": "system", "content": "Use the tools."}, {"role": "user", "content": "40 + 2?"}]],
            "runs": [{"run_id": "t0", "prompt": 0, "options": {"max_tokens": 32}, "keep_alive": -1,
                      "warmup": False, "max_turns": 4}]}


@pytest.fixture(scope="module")
def loops(tmp_path_factory):
    out = {}
    for actions, answers in (("native", NATIVE), ("structured", STRUCTURED)):
        for agent in AGENTS:
            d = tmp_path_factory.mktemp(f"{actions}-{agent}")
            with AgentSSEServer(answers) as srv:
                stats, records = run_agent(agent, srv.url, task_jobs(actions), d, timeout=60)
            out[actions, agent] = (stats, records, srv.bodies)
    return out


@pytest.mark.parametrize("actions", ["native", "structured"])
@pytest.mark.parametrize("agent", AGENTS)
def test_a_v1_task_runs_its_tool_and_finishes(loops, agent, actions):
    stats, records, bodies = loops[actions, agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert [r["turn"] for r in records] == [0, 1] and len(bodies) == 2
    first, last = records
    for rec in records:
        assert schemas.problems("record", rec) == [] and rec["outcome"] == "ok"
        assert rec["endpoint"] == "openai-chat" and rec["eval_duration"] is None
    assert first["action"] == {"tool": "add", "arguments": {"a": 40, "b": 2}, "valid": True}
    assert first["tool_result"] == "42"
    assert last["action"]["tool"] == "finish" and last["task_outcome"] == "finished"
    if actions == "native":  # a call counts as tokens: its first delta is t_first
        assert first["chunks"] >= 2 and first["done_reason"] == "tool_calls"


def test_native_calls_go_back_in_v1_shapes_with_their_own_text(loops):
    for agent in AGENTS:
        bodies = loops["native", agent][2]
        assert "tools" in bodies[0] and "format" not in bodies[0] and "response_format" not in bodies[0]
        assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["add", "finish"]
        sent = bodies[1]["messages"]
        assert sent[2] == {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": "add", "arguments": ADD}}]}, agent
        assert sent[3] == {"role": "tool", "content": "42", "tool_call_id": "call_7"}, agent


def test_structured_actions_send_the_schema_as_response_format(loops):
    for agent in AGENTS:
        body = loops["structured", agent][2][0]
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "action"
        assert [s["properties"]["tool"]["const"] for s in fmt["json_schema"]["schema"]["anyOf"]] == ["add", "finish"]
        assert body["messages"][-1]["content"] == "40 + 2?"
        assert loops["structured", agent][2][1]["messages"][-1] == {"role": "user", "content": "add returned: 42"}


@pytest.mark.parametrize("actions", ["native", "structured"])
def test_every_client_held_the_same_conversation(loops, actions):
    digests = {a: [r["history_sha256"] for r in loops[actions, a][1]] for a in AGENTS}
    assert digests["python"] == digests["rust"] == digests["null"]
    wire = {a: [json.dumps(b["messages"], sort_keys=True) for b in loops[actions, a][2]] for a in AGENTS}
    assert wire["python"] == wire["rust"] == wire["null"]
