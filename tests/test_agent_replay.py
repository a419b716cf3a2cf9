"""Conversation replay from a parameter file (issue 24, item 5): a task that names a ShareGPT
conversations file becomes one task per conversation, replayed by both agents and the null
client with the recorded assistant turns (fixed) or the model's own (regenerated), through the
CLI as a user runs it. Seeded text differs between CPUs, so the real-server tests assert the
structure (turns, counts, outcomes), the histories as digests against the recorded
conversation and across the clients, never the words sampled. A wrong file exits 2 naming the
key before anything runs."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from cli_runs import sweep_fixture
from langbench import paths, schemas, storage
from langbench.analysis import findings, metrics
from langbench.report.sections import agent_loops
from langbench.run import conversations, eta, params, plan

FIXTURES = paths.ROOT / "tests" / "fixtures"
TINY = FIXTURES / "tiny-replay.yaml"
CONVERSATIONS = FIXTURES / "conversations.sharegpt.jsonl"
CLIENTS = {"python", "rust", "null"}


def canonical_sha256(messages: list) -> str:
    """DESIGN.md's history digest, written here independently of the clients."""
    text = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cuts(messages: list) -> list[int]:
    """Where each request of a replay ends its history (before each assistant message, and at
    the end when the last message is not one), written here apart from the clients'."""
    out = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    return out + ([len(messages)] if messages[-1]["role"] != "assistant" else [])


RECORDED = {f"shop/{c['id']}": c["messages"] for c in conversations.read_sharegpt(CONVERSATIONS)}


# -- the plan, without a server ------------------------------------------------------------------

def test_a_replay_task_expands_into_one_task_per_conversation_with_its_requests_as_turns():
    p = params.load(TINY)
    assert [t["name"] for t in p.tasks] == ["shop/shop-1", "shop/math-2"]
    assert [t["max_turns"] for t in p.tasks] == [conversations.requests_of(m) for m in RECORDED.values()] == [2, 2]
    assert [t["messages"] for t in p.tasks] == list(RECORDED.values())
    batches = plan.build(p)
    assert {b.config["replay"] for b in batches} == {"fixed", "regenerated"}  # matrix.replay: a factor
    for b in batches:
        doc = plan.jobs_document(p, b, list(b.runs))
        assert schemas.problems("jobs", doc) == []
        for run, opening in zip(doc["runs"], doc["prompts"]):
            assert run["replay"] == b.config["replay"]
            assert "tools" not in run and "table" not in run
            recorded = RECORDED[run["task_id"]]
            assert run["max_turns"] == (1 if run["run_id"].endswith("-cold") else len(cuts(recorded)))
            user = [m["role"] for m in recorded].index("user")
            assert opening[:user] + opening[user + 1:] == recorded[:user] + recorded[user + 1:]
            if ".u" in run["run_id"]:  # uncached: a unique prefix on the first user message (a system
                # message may be dropped by the template), the rest as recorded
                assert opening[user]["content"].endswith(" " + recorded[user]["content"])
                assert opening[user] != recorded[user]
            else:
                assert opening[user] == recorded[user]
        assert b.options == ({"num_predict": 8, "seed": 5} if b.mode == "baseline"
                             else {"temperature": 0, "num_predict": 8, "seed": 5})  # replay is no option


def test_a_task_level_replay_mode_and_goal_tasks_beside_it(tmp_path):
    doc = yaml.safe_load(TINY.read_text())
    doc["matrix"] = {"temperature": [0]}
    doc["tasks"] = [{"name": "again", "conversations": str(CONVERSATIONS), "replay": "regenerated"},
                    {"name": "sum", "goal": "Add 1 and 2.", "tools": ["add"], "max_turns": 3}]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = params.load(path)
    assert [t["name"] for t in p.tasks] == ["again/shop-1", "again/math-2", "sum"]
    assert plan.agent_requests(p) == (3, True)  # the goal task's structured actions run under a grammar
    b = plan.build(p)[0]
    runs = plan.jobs_document(p, b, list(b.runs))["runs"]
    measured = [r for r in runs if not r["warmup"]]
    assert [r.get("replay") for r in measured[:3]] == ["regenerated", "regenerated", None]
    assert measured[2]["tools"] == ["add"] and measured[2]["max_turns"] == 3


def test_the_conversations_are_part_of_what_a_resumed_run_must_match(tmp_path):
    (tmp_path / "c.jsonl").write_text(CONVERSATIONS.read_text())
    doc = yaml.safe_load(TINY.read_text())
    doc["tasks"][0]["conversations"] = "c.jsonl"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    before = params.load(path)
    assert before.same_as_stored(copy.deepcopy(before.raw), [], before.conversations())
    (tmp_path / "c.jsonl").write_text(CONVERSATIONS.read_text().replace("144.", "145."))
    after = params.load(path)
    assert after.digest() != before.digest()
    assert not after.same_as_stored(copy.deepcopy(before.raw), [], before.conversations())


def test_the_eta_counts_a_replayed_conversation_by_its_requests_and_under_no_grammar():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    p = params.load(paths.PARAMETERS / "agent-replay.yaml")
    turns, constrained = plan.agent_requests(p)
    assert turns == max(len(cuts(t["messages"])) for t in p.tasks) == 3  # chat/support: 3 requests
    assert constrained is False  # a replay sends no `format`
    left = [(b, len(b.runs)) for b in plan.build(p)]
    one, all_turns = eta.estimate_s(left, rate), eta.estimate_s(left, rate, turns)
    startups = sum(eta.STARTUP_S[b.agent] + (1.0 if b.reload_expected else 0.0) for b, _ in left)
    assert all_turns - startups == pytest.approx(turns * (one - startups))
    assert "under a JSON grammar" not in eta.describe(rate, all_turns, 50, turns=turns, constrained=constrained)


def test_agent_replay_parameters_load_and_plan_both_agents_the_null_client_and_both_modes():
    p = params.load(paths.PARAMETERS / "agent-replay.yaml")
    assert p.model == paths.EMBEDDED_MODEL and p.server["host"] == "embedded"
    batches = plan.build(p)
    assert {b.agent for b in batches} == {"python", "rust", "null"}
    assert {b.config["replay"] for b in batches} == {"fixed", "regenerated"}
    for b in batches:
        assert schemas.problems("jobs", plan.jobs_document(p, b, list(b.runs))) == []


def test_a_record_states_its_own_replay_and_actions_over_the_configs_factor():
    base = {"run_id": "x", "batch_id": "b", "agent": "python", "mode": "chimera", "endpoint": "chat",
            "options": {"num_predict": 8}, "task_id": "t", "turn": 0}
    rows = metrics.frame([{**base, "config": {"replay": "fixed", "actions": "native"}, "replay": None,
                           "actions": "structured"},
                          {**base, "config": {"replay": "fixed", "actions": "native"}, "replay": "fixed",
                           "actions": None}])
    assert pd.isna(rows["replay"].iloc[0]) and rows["replay"].iloc[1] == "fixed"
    assert rows["actions"].iloc[0] == "structured" and pd.isna(rows["actions"].iloc[1])


# -- wrong parameter files: exit 2, the key named, nothing run -----------------------------------

GOOD = yaml.safe_load(TINY.read_text())
GOOD_TASK = GOOD["tasks"][0]
BAD_LINE = '{"conversations": [{"from": "human", "value": "hi"}]}\n{"conversations": [{"from": "bot", "value": "hi"}]}\n'
BAD = {
    # name: (change to the file, the conversations file's text (None: none written), what stderr names)
    "missing_file": ({}, None, r"tasks\[0\]\.conversations: cannot read .*c\.jsonl"),
    "malformed_line": ({}, BAD_LINE, r"tasks\[0\]\.conversations: .*c\.jsonl:2: 'conversations\[0\]\.from'"),
    "not_json": ({}, '{"conversations": [{"from": "human", "value": "hi"}]}\n{"conv', r"tasks\[0\]\.conversations: .*c\.jsonl:2: not JSON"),
    "empty_file": ({}, "\n", r"tasks\[0\]\.conversations: .*c\.jsonl holds no conversation"),
    "duplicate_id": ({}, '{"id": "a", "conversations": [{"from": "human", "value": "hi"}]}\n' * 2,
                     r"tasks\[0\]\.conversations: .*c\.jsonl:2: id 'a' names two conversations"),
    "bad_replay": ({"tasks": [{**GOOD_TASK, "replay": "telepathy"}], "matrix": {"temperature": [0]}}, "ok",
                   r"tasks\[0\]\.replay"),
    "bad_replay_factor": ({"matrix": {"temperature": [0], "replay": ["fixed", "mind"]}}, "ok", r"matrix\.replay\[1\]"),
    "replay_without_conversations": ({"tasks": [{"name": "shop", "replay": "fixed"}], "matrix": {"temperature": [0]}},
                                     "ok", r"tasks\[0\]\.replay: .*conversations"),
    "replay_with_a_goal": ({"tasks": [{**GOOD_TASK, "goal": "Add 1 and 2."}]}, "ok", r"tasks\[0\]\.goal"),
    "replay_with_tools": ({"tasks": [{**GOOD_TASK, "tools": ["add"]}]}, "ok", r"tasks\[0\]\.tools"),
    "replay_with_max_turns": ({"tasks": [{**GOOD_TASK, "max_turns": 3}]}, "ok", r"tasks\[0\]\.max_turns"),
    "replay_on_task_and_matrix": ({"tasks": [{**GOOD_TASK, "replay": "fixed"}]}, "ok", r"tasks\[0\]\.replay: .*not both"),
    "replay_factor_without_a_replay": ({"tasks": [{"name": "sum", "goal": "Add 1 and 2.", "tools": ["add"],
                                                   "max_turns": 2}]}, "ok", r"matrix\.replay: no task replays"),
    "replay_factor_without_agents": ({"workload": None, "tasks": None, "prompts": [{"text": "x"}]}, "ok",
                                     r"matrix\.replay: a factor of workload: agent only"),
    "run_ids_shared": ({"tasks": [GOOD_TASK, {"name": "shop.1", "goal": "Add 1 and 2.", "tools": ["add"],
                                              "max_turns": 2}]}, "ok", r"tasks: .*share run ids"),
}


def bad_file(case: str, tmp_path):
    change, text, _ = BAD[case]
    doc = {**copy.deepcopy(GOOD), **copy.deepcopy(change)}
    doc = {k: v for k, v in doc.items() if v is not None}
    for t in doc.get("tasks", []):
        if "conversations" in t:
            t["conversations"] = "c.jsonl"
    if text is not None:
        (tmp_path / "c.jsonl").write_text(CONVERSATIONS.read_text() if text == "ok" else text)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_wrong_replay_parameter_file_is_refused_naming_the_file_and_the_key(case, tmp_path):
    path = bad_file(case, tmp_path)
    with pytest.raises(params.ParamsError) as e:
        params.load(path)
    assert str(e.value).startswith(f"{path}: ") and re.search(BAD[case][2], str(e.value)), str(e.value)


@pytest.mark.parametrize("case", ["malformed_line", "replay_with_a_goal", "bad_replay_factor"])
def test_a_wrong_replay_parameter_file_exits_2_through_the_cli_and_runs_nothing(case, tmp_path):
    path = bad_file(case, tmp_path)
    outputs = tmp_path / "outputs"
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(path), "--run-id", "x"],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert str(path) in done.stderr and re.search(BAD[case][2], done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert not (outputs / "x").exists()


# -- the sweep, on the real embedded server ------------------------------------------------------

@pytest.fixture(scope="module")
def replay_run(ollama, tmp_path_factory):
    # `ollama` only orders this after the session server is up: the sweep starts its own
    return sweep_fixture("tiny-replay.yaml", tmp_path_factory.mktemp("replay-sweep"), "replay")


def turns_of(run_dir) -> list[dict]:
    return storage.read_records(run_dir / "records.jsonl")


def test_each_replayed_conversation_ran_its_turns_in_every_client(replay_run):
    records = turns_of(replay_run)
    assert all("task_id" in r and "turn" in r for r in records)  # every record is a turn of a task
    plan_doc = storage.read_json(replay_run / "plan.json")["batches"]
    planned = {r["run_id"] for b in plan_doc for r in b["runs"]}
    tasks: dict[str, list[dict]] = {}
    for r in records:
        tasks.setdefault(r["run_id"], []).append(r)
    assert set(tasks) == planned
    assert {r["agent"] for r in records} == CLIENTS
    assert {(r["config"]["replay"], r["agent"]) for r in records} == {(m, a) for m in ("fixed", "regenerated")
                                                                      for a in CLIENTS}
    for run_id, turns in tasks.items():
        first = turns[0]
        recorded = RECORDED[first["task_id"]]
        want = 1 if first["phase"] == "cold" else len(cuts(recorded))
        assert [t["turn"] for t in turns] == list(range(want)), run_id
        assert all(t["outcome"] == "ok" for t in turns), [t["error"] for t in turns]
        assert [t["task_outcome"] for t in turns[:-1]] == [None] * (want - 1)
        assert turns[-1]["task_outcome"] == ("finished" if want == len(cuts(recorded)) else "max_turns")
        for k, t in enumerate(turns):
            assert t["replay"] == t["config"]["replay"] and t["actions"] is None and t["action"] is None
            assert t["max_turns"] == want and t["messages"] == cuts(recorded)[k]
            if t["replay"] == "fixed" and t["prompt_cache"] == "cached" or k == 0 and t["prompt_cache"] == "cached":
                # the recorded history as it stands before that assistant turn (regenerated: its first)
                assert t["history_sha256"] == canonical_sha256(recorded[: cuts(recorded)[k]]), (run_id, k)


def test_an_uncached_replay_evaluates_its_unique_prefix_at_its_first_turn(replay_run):
    """The prefix is on the first user message, which every template keeps: the uncached first
    turn's prompt is longer than the cached one's, for every conversation, client and cell."""
    first = {}
    for r in turns_of(replay_run):
        if r["phase"] == "measured" and r["turn"] == 0:
            first.setdefault((r["batch_id"], r["task_id"]), {})[r["prompt_cache"]] = r["prompt_eval_count"]
    assert len(first) == 10 * 2  # every batch, both conversations
    for key, counts in first.items():
        assert counts["uncached"] > counts["cached"] > 0, key


def test_fixed_replays_send_the_same_history_in_every_client_turn_for_turn(replay_run):
    by_key: dict[tuple, dict[str, str]] = {}
    for r in turns_of(replay_run):
        by_key.setdefault((r["run_key"], r["turn"]), {})[r["agent"]] = (r["replay"], r["history_sha256"])
    fixed = {k: v for k, v in by_key.items() if next(iter(v.values()))[0] == "fixed"}
    assert fixed and all(len({h for _, h in v.values()}) == 1 for v in fixed.values())
    assert all(set(v) == CLIENTS for k, v in fixed.items() if "-baseline" in k[0])  # the null client's too
    assert all(set(v) >= {"python", "rust"} for v in fixed.values())
    # regenerated: the first turn is the recorded opening in every client; later ones hold each
    # client's own answers, equal where the seeded server gave every client the same text
    regenerated = {k: v for k, v in by_key.items() if next(iter(v.values()))[0] == "regenerated"}
    assert all(len({h for _, h in v.values()}) == 1 for k, v in regenerated.items() if k[1] == 0)


def test_a_replay_run_renders_its_agent_loops_section(replay_run):
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(replay_run)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    nocode = (replay_run / "html" / "agent_loops-nocode.html").read_text().replace("&#x27;", "'").replace("&#39;", "'")
    assert "Traceback" not in nocode
    for title in ("The same conversation in every language", "TTFT per turn", "The agent's own time",
                  "The prefix cache"):
        assert title in nocode, title
    assert "replayed conversations: " in nocode
    run = findings.Run.load(replay_run)
    m = agent_loops.conversation_matches(run)
    assert len(m) and m[m["agents"].str.contains(",")]["history_match"].any()
    planned = sum(len(b["runs"]) for b in storage.read_json(replay_run / "plan.json")["batches"])
    index = (replay_run / "index.html").read_text()
    assert f"{planned} of {planned} planned runs recorded" in index
