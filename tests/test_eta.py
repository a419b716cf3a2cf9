"""The sweep says, before it starts, the server's decode rate and the ETA built from it (issue 22)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langbench.run import eta, params, plan

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_eta_adds_generation_prompts_reloads_and_start_ups_of_what_is_left():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    batches = plan.build(params.load(FIXTURES / "tiny.yaml"))
    left = [(b, len(b.runs)) for b in batches]
    want = sum(len(b.runs) * (4 / 40.0 + 0.05) + eta.STARTUP_S[b.agent] + (1.0 if b.reload_expected else 0.0)
               for b in batches)  # tiny.yaml: num_predict 4
    assert eta.estimate_s(left, rate) == pytest.approx(want)
    assert eta.estimate_s([(b, 0) for b in batches], rate) == 0  # nothing left, nothing to wait for
    half = [(b, n if i % 2 else 0) for i, (b, n) in enumerate(left)]
    assert 0 < eta.estimate_s(half, rate) < want
    line = eta.describe(rate, want, 50)
    assert "40.0 tok/s" in line and f"{want / 60:.1f} min" in line and "50 runs" in line


def test_no_num_predict_means_no_eta_and_says_so():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    b = plan.build(params.load(FIXTURES / "tiny.yaml"))[0]
    unbounded = plan.Batch(**{**b.__dict__, "options": {k: v for k, v in b.options.items() if k != "num_predict"}})
    assert eta.estimate_s([(unbounded, 3)], rate) is None
    assert "no ETA: num_predict is not fixed" in eta.describe(rate, None, 3)
    assert "could not be measured" in eta.describe(None, None, 3)


def test_an_unreachable_server_gives_no_rate_instead_of_an_error():
    from langbench.run import server
    assert eta.probe(f"http://127.0.0.1:{server.free_port()}", "gemma3:270m", timeout_s=5) is None


def test_the_sweep_measured_the_rate_before_it_started_and_kept_it(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    probe = manifest["sessions"][0]["decode_probe"]
    assert probe["tokens"] >= 2 and probe["tokens_per_s"] > 1 and probe["eta_s"] > 0
    records = [json.loads(line) for line in (tiny_run / "records.jsonl").read_text().splitlines()]
    planned = json.loads((tiny_run / "plan.json").read_text())["batches"]
    assert len(records) == sum(len(b["runs"]) for b in planned)  # the probe is no run: no record of it


def test_an_agent_task_counts_its_most_turns_and_says_the_eta_is_an_upper_bound():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    p = params.load(FIXTURES / "tiny-agent.yaml")
    left = [(b, len(b.runs)) for b in plan.build(p)]
    turns = max(t["max_turns"] for t in p.tasks)
    one, all_turns = eta.estimate_s(left, rate), eta.estimate_s(left, rate, turns)
    startups = sum(eta.STARTUP_S[b.agent] + (1.0 if b.reload_expected else 0.0) for b, _ in left)
    assert all_turns - startups == pytest.approx(turns * (one - startups))
    line = eta.describe(rate, all_turns, 12, turns=turns, constrained=True)
    assert f"12 tasks of up to {turns} requests ≈ at most" in line and "under a JSON grammar" in line


def test_the_probe_under_a_json_grammar_measures_the_constrained_rate(ollama):
    """Structured actions decode under Ollama's grammar: the probe sends `format` and the real
    server times it. (How much slower it is depends on how often the grammar rejects the model's
    own top token, so on the text sampled: not asserted here.)"""
    from relay import Relay
    with Relay(ollama.url) as relay:
        constrained = eta.probe(relay.url, "gemma3:270m", fmt="json")
    assert relay.bodies[0]["format"] == "json"
    assert constrained is not None and constrained.tokens >= 2 and constrained.tokens_per_s > 0
