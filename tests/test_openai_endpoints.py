"""The three clients on /v1 (DESIGN.md, "Other APIs and servers") against the real embedded
Ollama: /v1/chat/completions and /v1/completions as Server-Sent Events with
`stream_options.include_usage`, the same timing points as on /api, no server durations (null,
never 0), the usage's token counts, and the options sent as the request's own fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from langbench import paths, schemas
from langbench.run import agents
from cli_runs import sweep_fixture
from relay import Relay
from sampling import sampled
from test_agents_contract import run_agent

AGENTS = agents.AGENTS
ENDPOINTS = ("openai-chat", "openai-completions")
OPTIONS = sampled({"max_tokens": 6, "seed": 7, "temperature": 0.6})
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
PROMPTS = ["The history of the transistor", "A short note on caches:"]


def v1_jobs(endpoint: str, model: str = paths.EMBEDDED_MODEL, runs: list | None = None) -> dict:
    runs = runs or [{"run_id": "v0-warm", "prompt": 0, "options": OPTIONS, "keep_alive": -1, "warmup": True},
                    {"run_id": "v1", "prompt": 1, "options": OPTIONS, "keep_alive": -1, "warmup": False},
                    {"run_id": "v2", "prompt": 0, "options": {"max_tokens": 3}, "keep_alive": -1, "warmup": False}]
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS] if endpoint == "openai-chat" else PROMPTS
    return {"schema_version": 1, "model": model, "endpoint": endpoint, "timeout_s": 120,
            "prompts": prompts, "runs": runs}


@pytest.fixture(scope="module")
def v1(ollama, tmp_path_factory):
    """Each endpoint through each client, behind a relay that keeps what was sent and splits the
    real server's events into 7-byte network pieces."""
    tmp = tmp_path_factory.mktemp("v1")
    out = {}
    for endpoint in ENDPOINTS:
        for agent in AGENTS:
            d = tmp / f"{endpoint}-{agent}"
            d.mkdir()
            with Relay(ollama.url, piece=7) as relay:
                stats, records = run_agent(agent, relay.url, v1_jobs(endpoint), d)
            out[endpoint, agent] = (stats, records, relay.bodies, relay.paths, relay.finals)
    return out


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("agent", AGENTS)
def test_v1_records_validate_and_say_null_for_every_server_duration(v1, agent, endpoint):
    stats, records, _, paths_, finals = v1[endpoint, agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert [r["run_id"] for r in records] == ["v0-warm", "v1", "v2"]
    assert set(paths_) == {"/v1/chat/completions" if endpoint == "openai-chat" else "/v1/completions"}
    assert len(finals) == 3  # the server sent its usage event each time
    for rec, final in zip(records, finals):
        assert schemas.problems("record", rec) == []
        assert rec["outcome"] == "ok" and rec["error"] is None and rec["endpoint"] == endpoint
        assert all(rec[f] is None for f in DURATIONS), {f: rec[f] for f in DURATIONS}
        assert rec["eval_count"] == final["usage"]["completion_tokens"] > 0
        assert rec["prompt_eval_count"] == final["usage"]["prompt_tokens"] > 0
        assert rec["done_reason"] in ("length", "stop")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("agent", AGENTS)
def test_v1_timings_are_ordered_and_chunks_match_tokens(v1, agent, endpoint):
    for rec in v1[endpoint, agent][1]:
        assert 0 < rec["ttft_ms"] <= rec["e2e_ms"]
        assert rec["e2e_ms"] == pytest.approx(rec["ttft_ms"] + rec["decode_ms"], abs=1e-6)
        assert abs(rec["chunks"] - rec["eval_count"]) <= 1
        assert rec["chunks_answer"] == rec["chunks"] and rec["response_chars"] > 0
        itl = rec["itl_ms"]
        assert itl["n"] == rec["chunks"] - 1 and 0 <= itl["p50"] <= itl["max"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("agent", AGENTS)
def test_v1_requests_carry_the_options_as_fields_and_ask_for_usage(v1, agent, endpoint):
    bodies = v1[endpoint, agent][2]
    for body, run in zip(bodies, v1_jobs(endpoint)["runs"]):
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert {k: body[k] for k in run["options"]} == run["options"]
        assert "options" not in body and "keep_alive" not in body  # /v1 carries neither
        assert ("messages" in body) == (endpoint == "openai-chat") and ("prompt" in body) != ("messages" in body)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_v1_same_seed_same_text_through_every_client(v1, endpoint):
    texts = {a: [(r["response_sha256"], r["eval_count"]) for r in v1[endpoint, a][1] if "seed" in r["options"]]
             for a in AGENTS}
    assert len(texts["null"]) == 2 and texts["python"] == texts["rust"] == texts["null"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_v1_connections_are_recorded_per_client(v1, endpoint):
    """The Rust agent and the null client keep one connection. The official openai SDK's sync
    Stream stops at `data: [DONE]` and closes the response before reading the chunked body's end,
    so httpx drops the connection and every request opens a new one (its AsyncStream drains the
    body on HTTP/1.1 first): a finding about the Python ecosystem, recorded per run."""
    new = {a: [r["new_connection"] for r in v1[endpoint, a][1]] for a in AGENTS}
    assert new["rust"] == new["null"] == [True, False, False]
    assert new["python"] == [True, True, True]
    assert all(r["connect_ms"] > 0 for r in v1[endpoint, "python"][1])


@pytest.mark.parametrize("agent", AGENTS)
def test_v1_unknown_model_gives_http_404_records_naming_the_client(agent, ollama, tmp_path):
    runs = [{"run_id": "m0", "prompt": 0, "options": {"max_tokens": 2}, "keep_alive": -1, "warmup": False}]
    stats, records = run_agent(agent, ollama.url, v1_jobs("openai-chat", "no-such-model:1b", runs), tmp_path)
    assert stats.exit_code == 1
    (rec,) = records
    assert schemas.problems("record", rec) == []
    assert rec["outcome"] == "error" and rec["error"]["kind"] == "http_404", rec["error"]
    assert "no-such-model" in rec["error"]["message"] and rec["error"]["client"]


# --- the endpoint as a factor of a sweep on one Ollama (no llama-server: test_servers.py has those) ---

@pytest.fixture(scope="session")
def endpoints_run(tmp_path_factory) -> Path:
    return sweep_fixture("tiny-endpoints.yaml", tmp_path_factory.mktemp("endpoints"), "endpoints")


def test_endpoint_is_a_factor_on_one_ollama_and_the_report_says_what_v1_costs(endpoints_run):
    from langbench.analysis import findings, verify
    from langbench.report.sections import servers
    run = findings.Run.load(endpoints_run)
    assert "endpoint" in run.factors
    assert set(run.df["endpoint"]) == {"chat", "openai-chat"} == set(run.floor["endpoint"])
    checks = verify.factor_checks(run.df, run.processes, run.factors)
    assert set(checks.loc[checks["factor"] == "endpoint", "applied"]) == {verify.APPLIED}
    api = run.df[run.df["endpoint"] == "chat"]
    assert api["eval_duration"].notna().all() and api["throughput_clock"].eq("server").all()
    v1 = run.df[run.df["endpoint"] == "openai-chat"]
    assert v1["eval_duration"].isna().all() and v1["throughput_clock"].eq("client").all()
    assert v1["throughput_tps"].notna().all() and v1["client_overhead_ms"].isna().all()
    cost = servers.api_cost(run)
    assert sorted(cost.table["client"]) == ["null", "python", "rust"]
    for value in ("ttft_ms", "itl_p50_ms", "client_decode_tps"):
        t = cost.table
        assert (t[f"{value}_ci_low"] <= t[f"{value}_diff"]).all() and (t[f"{value}_diff"] <= t[f"{value}_ci_high"]).all()
    assert "openai-chat against chat" in cost.sentence and "null client's floor" in cost.notes[0]
