"""workload: agent through the orchestrator (issue 24): a parameter file's tasks become agent
batches for both agents and the null client, every turn a record, every task a row, and the
run renders its agent_loops section. A wrong parameter file exits 2 naming the key."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from cli_runs import fixture_params, sweep_fixture
from langbench import paths, storage
from langbench.analysis import findings, metrics
from langbench.report.sections import agent_loops


@pytest.fixture(scope="module")
def agent_run(ollama, tmp_path_factory):
    # `ollama` only orders this after the session server is up: the sweep starts its own
    return sweep_fixture("tiny-agent.yaml", tmp_path_factory.mktemp("agent-sweep"), "agent")


def test_agent_sweep_runs_every_task_of_both_agents_and_the_null_client(agent_run):
    records = storage.read_records(agent_run / "records.jsonl")
    turns = [r for r in records if "turn" in r]
    assert len(turns) == len(records)  # every record is a turn of a task
    plan = storage.read_json(agent_run / "plan.json")["batches"]
    planned = {r["run_id"] for b in plan for r in b["runs"]}
    ended = {r["run_id"] for r in turns if r["task_outcome"] is not None}
    assert ended == planned
    assert {r["agent"] for r in turns} == {"python", "rust", "null"}
    assert {r["mode"] for r in turns if r["agent"] == "null"} == {"baseline"}
    for r in turns:
        assert r["outcome"] == "ok", r["error"]
        assert r["actions"] == "structured" and r["task_id"] == "sum"
        assert r["run_key"] and "python" not in r["run_key"] and "rust" not in r["run_key"]
    cold = [r for r in turns if r["phase"] == "cold"]
    assert cold and all(r["max_turns"] == 1 for r in cold)  # the cold task only pays the load


def test_agent_sweep_tasks_end_by_max_turns_or_a_named_cut_and_are_rows(agent_run):
    df = metrics.load_run(agent_run)
    t = metrics.tasks(df)
    measured = t[t["phase"] == "measured"]
    assert len(measured) == 5 * 2  # 5 batches (2 agents × 2 modes + null), a cached and an uncached task
    for row in measured.itertuples():
        assert row.task_outcome in ("max_turns", "invalid_action")
        assert row.turns == (2 if row.task_outcome == "max_turns" else row.turns)
        assert row.task_e2e_ms >= row.server_ms * 0.99 > 0
        assert 0 <= row.client_share < 1
    turns = metrics.turns(df)
    cut = turns[turns["task_outcome"] == "invalid_action"]
    assert (cut["done_reason"] == "length").all()  # only num_predict can cut a grammar-forced action
    assert set(measured["prompt_cache"]) == {"cached", "uncached"}


def test_agent_sweep_holds_the_same_conversation_in_every_language(agent_run):
    run = findings.Run.load(agent_run)
    m = agent_loops.conversation_matches(run)
    shared = m[m["agents"].str.count(",") >= 1]
    assert len(shared) > 0
    assert shared["history_match"].all() and shared["response_match"].all(), shared[~shared["history_match"]]
    assert set(m.loc[m["run_key"].str.contains("baseline"), "agents"]) == {"null, python, rust"}


def test_agent_sweep_resumes_without_running_anything_twice(agent_run, tmp_path):
    before = (agent_run / "records.jsonl").read_text()
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(fixture_params("tiny-agent.yaml", tmp_path)),
                           "--run-id", agent_run.name],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(agent_run.parent)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (agent_run / "records.jsonl").read_text() == before


def test_an_agent_run_renders_its_agent_loops_section(agent_run):
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(agent_run)],
                          capture_output=True, text=True, timeout=900)
    index = (agent_run / "index.html").read_text().replace("&#39;", "'").replace("&#x27;", "'")
    assert (agent_run / "html" / "agent_loops-nocode.html").exists()
    assert "Agent loops" in index
    nocode = (agent_run / "html" / "agent_loops-nocode.html").read_text()
    for title in ("The same conversation in every language", "TTFT per turn", "The agent's own time",
                  "The client's share of task time", "The prefix cache"):
        assert title in nocode.replace("&#x27;", "'").replace("&#39;", "'"), title
    assert "Traceback" not in nocode
    assert done.returncode == 0, done.stderr  # an agent run renders its workload's notebooks, every one
    planned = sum(len(b["runs"]) for b in storage.read_json(agent_run / "plan.json")["batches"])
    assert f"{planned} of {planned} planned runs recorded" in index  # tasks, not turns
    assert "task-level verdicts" in index


AGENT_PARAMS = yaml.safe_load((paths.ROOT / "tests" / "fixtures" / "tiny-agent.yaml").read_text())
BAD_PARAMS = {
    "unknown_tool": ({"tasks": [{**AGENT_PARAMS["tasks"][0], "tools": ["add", "search"]}]}, r"tasks\[0\]\.tools\[1\]"),
    "unknown_task_key": ({"tasks": [{**AGENT_PARAMS["tasks"][0], "tol": 1}]}, r"tasks\[0\].*tol"),
    "no_max_turns": ({"tasks": [{k: v for k, v in AGENT_PARAMS["tasks"][0].items() if k != "max_turns"}]},
                     r"tasks\[0\].*max_turns"),
    "bad_actions": ({"actions": "telepathy"}, "actions"),
    "bad_actions_factor": ({"matrix": {"actions": ["structured", "mind"]}, "actions": None}, r"matrix\.actions\[1\]"),
    "generate_endpoint": ({"endpoint": "generate"}, "endpoint"),
    "prompts_and_tasks": ({"prompts": [{"text": "x"}]}, "prompts"),
    "duplicate_task": ({"tasks": [AGENT_PARAMS["tasks"][0]] * 2}, r"tasks\[1\]\.name"),
    "tasks_without_workload": ({"workload": None, "prompts": [{"text": "x"}]}, "tasks"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_a_wrong_agent_parameter_file_exits_2_naming_the_key_and_runs_nothing(case, tmp_path):
    change, named = BAD_PARAMS[case]
    doc = {**AGENT_PARAMS, **change}
    doc = {k: v for k, v in doc.items() if v is not None}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    outputs = tmp_path / "outputs"
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(path), "--run-id", "x"],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert re.search(named, done.stderr), done.stderr
    assert not (outputs / "x").exists()


def test_agent_quick_parameters_load_and_plan_both_agents_and_the_null_client():
    from langbench.run import params, plan
    p = params.load(paths.PARAMETERS / "agent-quick.yaml")
    batches = plan.build(p)
    assert {b.agent for b in batches} == {"python", "rust", "null"}
    doc = plan.jobs_document(p, batches[0], list(batches[0].runs))
    from langbench import schemas
    assert schemas.problems("jobs", doc) == []
    assert doc["workload"] == "agent" and doc["actions"] == "structured"
