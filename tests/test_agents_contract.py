"""Both agents, one contract (DESIGN.md, "The agent contract"), against the real Ollama."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import psutil
import pytest

from langbench import paths, schemas, storage
from langbench.run import agents, server
from relay import Relay
from sampling import sampled

AGENTS = agents.AGENTS
OPTIONS = sampled({"num_predict": 12, "seed": 7, "temperature": 0.6})
COUNTING = ", ".join(str(i) for i in range(1, 41)) + ","  # "1, 2, … 40,": the model counts on
SERVER_FIELDS = ("total_duration", "load_duration", "prompt_eval_count",
                 "prompt_eval_duration", "eval_count", "eval_duration")


def jobs_doc(model=paths.EMBEDDED_MODEL, runs=None, **extra) -> dict:
    runs = runs or [
        {"run_id": "r0-warm", "prompt": 0, "options": OPTIONS, "keep_alive": -1, "warmup": True},
        {"run_id": "r1", "prompt": 1, "options": OPTIONS, "keep_alive": -1, "warmup": False},
        {"run_id": "r2", "prompt": 0, "options": {"num_predict": 5}, "keep_alive": "5m", "warmup": False},
    ]
    return {"schema_version": 1, "model": model, "raw": True, "timeout_s": 120,
            "prompts": ["The history of the transistor", "A short note on caches:"],
            "runs": runs, **extra}


def run_agent(agent, host, doc, tmp_path, timeout=180):
    jobs = tmp_path / f"{agent}-jobs.json"
    jobs.write_text(json.dumps(doc))
    out = tmp_path / f"{agent}-records.jsonl"
    stats = agents.run(agent, host, jobs, out, timeout=timeout)
    records = storage.read_jsonl(out)  # not str.splitlines(): it also splits at U+2028, U+0085 inside strings
    return stats, records


@pytest.fixture(scope="module")
def both(ollama, tmp_path_factory):
    """The same jobs through both agents, behind a relay that records what each one sent and
    splits the real server's stream into 7-byte network pieces."""
    tmp = tmp_path_factory.mktemp("contract")
    out = {}
    for agent in AGENTS:
        with Relay(ollama.url, piece=7) as relay:
            stats, records = run_agent(agent, relay.url, jobs_doc(), tmp)
        out[agent] = (stats, records, relay.bodies, relay.finals)
    return out


@pytest.mark.parametrize("agent", AGENTS)
def test_records_validate_against_the_schema(both, agent):
    stats, records, *_ = both[agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert len(records) == 3
    for rec in records:
        assert schemas.problems("record", rec) == []


def test_both_agents_write_the_same_fields_types_and_run_order(both):
    py, rs = both["python"][1], both["rust"][1]
    assert [r["run_id"] for r in py] == [r["run_id"] for r in rs] == ["r0-warm", "r1", "r2"]
    assert [r["warmup"] for r in py] == [r["warmup"] for r in rs] == [True, False, False]
    for a, b in zip(py, rs):
        assert list(a) == list(b)
        assert {k: type(v) for k, v in a.items() if v is not None} == \
               {k: type(v) for k, v in b.items() if v is not None}
        assert a["agent"] == "python" and b["agent"] == "rust"


@pytest.mark.parametrize("agent", AGENTS)
def test_timings_are_ordered_and_chunks_match_tokens(both, agent):
    for rec in both[agent][1]:
        assert rec["outcome"] == "ok" and rec["error"] is None
        assert 0 < rec["ttft_ms"] <= rec["e2e_ms"]
        assert rec["decode_ms"] >= 0
        assert rec["e2e_ms"] == pytest.approx(rec["ttft_ms"] + rec["decode_ms"], abs=1e-6)
        assert abs(rec["chunks"] - rec["eval_count"]) <= 1
        assert all(isinstance(rec[f], int) and rec[f] >= 0 for f in SERVER_FIELDS)
        assert rec["eval_duration"] > 0 and rec["done_reason"] in ("length", "stop")
        itl = rec["itl_ms"]
        assert 0 <= itl["p50"] <= itl["p95"] <= itl["p99"] <= itl["max"]
        # the client cannot see the first token before the server has sampled it
        server_ttft_ms = (rec["load_duration"] + rec["prompt_eval_duration"]) / 1e6
        assert rec["ttft_ms"] >= server_ttft_ms * 0.99


@pytest.mark.parametrize("agent", AGENTS)
def test_server_fields_are_passed_through_untouched(both, agent):
    records, finals = both[agent][1], both[agent][3]
    assert len(finals) == len(records) == 3
    for rec, final in zip(records, finals):
        for f in (*SERVER_FIELDS, "done_reason"):
            assert rec[f] == final[f], f


def test_same_seed_same_text_in_both_languages(both):
    """Same seeded options through both clients: Ollama generates the same tokens."""
    seeded = [(a, b) for a, b in zip(both["python"][1], both["rust"][1]) if "seed" in a["options"]]
    assert len(seeded) == 2
    for a, b in seeded:
        assert a["response_sha256"] == b["response_sha256"]
        assert a["eval_count"] == b["eval_count"]
        assert a["response_chars"] == b["response_chars"] > 0


@pytest.mark.parametrize("agent", AGENTS)
def test_options_are_sent_exactly_as_given(both, agent):
    bodies = both[agent][2]
    runs = jobs_doc()["runs"]
    assert [b["options"] for b in bodies] == [r["options"] for r in runs]
    assert [b["keep_alive"] for b in bodies] == [r["keep_alive"] for r in runs]
    for body in bodies:
        assert body["stream"] is True and body["raw"] is True
        assert set(body) <= {"model", "prompt", "raw", "stream", "options", "keep_alive"}


@pytest.mark.parametrize("agent", AGENTS)
def test_ten_sequential_runs_share_one_kept_alive_connection(agent, ollama, tmp_path):
    """Each client reads every stream to its end, so its one HTTP client keeps the connection:
    ten runs, one TCP connection (counted by the relay that accepts them), and the records say
    so (the first run opened it, with its connect time; the other nine reused it)."""
    runs = [{"run_id": f"c{i}", "prompt": 0, "options": sampled({"num_predict": 3, "seed": 1}), "keep_alive": -1,
             "warmup": False} for i in range(10)]
    with Relay(ollama.url, piece=64) as relay:
        stats, records = run_agent(agent, relay.url, jobs_doc(runs=runs), tmp_path)
    assert stats.exit_code == 0, stats.stderr_tail
    print(f"\n{agent}: {relay.connections} TCP connection(s) for 10 sequential runs")
    assert relay.connections == 1
    assert [r["new_connection"] for r in records] == [True] + [False] * 9
    assert records[0]["connect_ms"] > 0 and all(r["connect_ms"] is None for r in records[1:])


def chat_doc(**extra) -> dict:
    doc = jobs_doc(**extra)
    return {**doc, "endpoint": "chat", "prompts": [[{"role": "user", "content": p}] for p in doc["prompts"]]}


@pytest.fixture(scope="module")
def chat(ollama, tmp_path_factory):
    """The contract's jobs on /api/chat, each prompt one user message, through all three clients."""
    tmp = tmp_path_factory.mktemp("chat")
    out = {}
    for agent in AGENTS:
        with Relay(ollama.url, piece=7) as relay:
            stats, records = run_agent(agent, relay.url, chat_doc(), tmp)
        out[agent] = (stats, records, relay.bodies, relay.paths, relay.finals)
    return out


@pytest.mark.parametrize("agent", AGENTS)
def test_chat_endpoint_runs_with_the_same_timing_points(chat, agent):
    stats, records, bodies, paths_, finals = chat[agent]
    assert stats.exit_code == 0, stats.stderr_tail
    assert paths_ == ["/api/chat"] * 3
    assert [b["messages"] for b in bodies] == [chat_doc()["prompts"][r["prompt"]] for r in chat_doc()["runs"]]
    assert all("prompt" not in b and "raw" not in b for b in bodies)
    for rec, final in zip(records, finals):
        assert schemas.problems("record", rec) == []
        assert rec["endpoint"] == "chat" and rec["outcome"] == "ok"
        assert 0 < rec["ttft_ms"] <= rec["e2e_ms"] and rec["ttft_answer_ms"] == rec["ttft_ms"]
        assert rec["chunks_answer"] == rec["chunks"] > 0 and rec["chunks_thinking"] == 0
        assert abs(rec["chunks"] - rec["eval_count"]) <= 1
        assert rec["eval_count"] == final["eval_count"]


def test_chat_gives_the_same_seeded_text_through_every_client(chat):
    digests = {a: [r["response_sha256"] for r in chat[a][1] if "seed" in r["options"]] for a in AGENTS}
    assert len({tuple(d) for d in digests.values()}) == 1, digests


@pytest.mark.parametrize("agent", AGENTS)
def test_unreachable_host_gives_error_records_and_non_zero_exit(agent, tmp_path):
    host = f"http://127.0.0.1:{server.free_port()}"
    stats, records = run_agent(agent, host, jobs_doc(), tmp_path)
    assert stats.exit_code == 1
    assert [r["run_id"] for r in records] == ["r0-warm", "r1", "r2"]
    for rec in records:
        assert rec["outcome"] == "error"
        assert rec["error"]["kind"] == "connect" and rec["error"]["message"]
        assert rec["ttft_ms"] is None and rec["eval_count"] is None
        assert schemas.problems("record", rec) == []


@pytest.mark.parametrize("agent", AGENTS)
def test_unknown_model_gives_http_404_records(agent, ollama, tmp_path):
    stats, records = run_agent(agent, ollama.url, jobs_doc(model="no-such-model:1b"), tmp_path)
    assert stats.exit_code == 1
    assert len(records) == 3
    for rec in records:
        assert rec["outcome"] == "error"
        assert rec["error"]["kind"] == "http_404"
        assert "no-such-model" in rec["error"]["message"]


STREAMED = 3000  # bytes: an NDJSON chunk of /api/generate is about 110


@pytest.mark.parametrize("agent", AGENTS)
def test_server_killed_mid_stream_truncates_and_fails_the_rest(agent, tmp_path):
    """A real server SIGKILLed while streaming: a truncated record for the run in flight, an
    error record for the run after it, and a non-zero exit."""
    srv = server.start_embedded(log_path=tmp_path / "ollama.log")
    try:
        server.ensure_model(srv, paths.EMBEDDED_MODEL)
        doc = jobs_doc(prompts=["The history of the transistor", COUNTING], runs=[
            # the count's prompt evaluated here, so the long run streams at once from the server's
            # prefix cache (evaluated there, its ~120 tokens took seconds on a loaded host)
            {"run_id": "ok", "prompt": 1, "options": {"num_predict": 3}, "keep_alive": -1, "warmup": False},
            # The long run must still be streaming when it is killed (below): a text that ends
            # before that is rightly read to its end (exit 0). A count the model goes on with forces
            # that on any CPU and under any seed and temperature, where a free text (greedy on one
            # CPU: 300+ tokens; sampled: sometimes over within a second or two) depended on what was sampled.
            {"run_id": "long", "prompt": 1, "options": sampled({"num_predict": 4000, "seed": 1, "temperature": 0}),
             "keep_alive": -1, "warmup": False},
            {"run_id": "after", "prompt": 0, "options": {"num_predict": 3}, "keep_alive": -1, "warmup": False},
        ])
        jobs = tmp_path / "jobs.json"
        jobs.write_text(json.dumps(doc))
        out = tmp_path / "records.jsonl"
        proc = subprocess.Popen([*agents.command(agent), "--host", srv.url, "--jobs", str(jobs),
                                 "--out", str(out)], stderr=subprocess.PIPE, text=True)
        # Kill once the long run is streaming, seen from the server's side: after the first record,
        # what the server writes (Go writes to its sockets with write(2), which /proc/PID/io counts
        # as wchar) is the long run's stream; STREAMED bytes of it are two dozen NDJSON chunks or
        # more, whatever the host's load (a fixed wait here once killed the server before the long
        # run's first chunk on a loaded host).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.exists() and out.read_text().count("\n") >= 1):
            time.sleep(0.01)
        serve = psutil.Process(srv.process.pid)
        written0 = serve.io_counters().write_chars
        while time.monotonic() < deadline and serve.io_counters().write_chars - written0 < STREAMED:
            time.sleep(0.01)
        assert time.monotonic() < deadline, "the long run never streamed"
        os.killpg(srv.process.pid, signal.SIGKILL)
        srv.process.wait()
        _, stderr = proc.communicate(timeout=120)
    finally:
        server.stop(srv)
    records = storage.read_jsonl(out)
    assert proc.returncode == 1, [(r["run_id"], r["outcome"], r.get("eval_count")) for r in records]
    assert [r["run_id"] for r in records] == ["ok", "long", "after"]
    ok, long_, after = records
    assert ok["outcome"] == "ok"
    assert long_["outcome"] == "truncated" and long_["chunks"] > 0
    assert long_["error"]["kind"] in ("stream_interrupted", "no_done") and long_["error"]["message"]
    assert long_["e2e_ms"] is None and long_["eval_count"] is None
    # refused, or reset when the client reuses a pooled keep-alive socket of the dead server
    assert after["outcome"] == "error" and after["chunks"] == 0
    assert after["error"]["kind"] in ("connect", "stream_interrupted"), after["error"]
    assert "long" in stderr
    for rec in records:
        assert schemas.problems("record", rec) == []


BAD_JOBS = {
    "bad_json": ('{"schema_version": 1, "model": ', "JSON|EOF|expected"),
    "missing_field": (json.dumps({k: v for k, v in jobs_doc().items() if k != "runs"}), "runs"),
    "wrong_type": (json.dumps(jobs_doc(runs=[{"run_id": "x", "prompt": "zero", "options": {},
                                               "keep_alive": -1, "warmup": False}])), "prompt"),
    "unknown_key": (json.dumps(jobs_doc(temperature=0.5)), "temperature"),
}


@pytest.mark.parametrize("agent", AGENTS)
@pytest.mark.parametrize("case", sorted(BAD_JOBS))
def test_malformed_jobs_file_exits_2_and_writes_nothing(agent, case, tmp_path):
    text, named = BAD_JOBS[case]
    jobs = tmp_path / "jobs.json"
    jobs.write_text(text)
    out = tmp_path / "records.jsonl"
    done = subprocess.run([*agents.command(agent), "--host", "http://127.0.0.1:9", "--jobs",
                           str(jobs), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "jobs" in done.stderr and str(jobs) in done.stderr
    assert re.search(named, done.stderr), done.stderr
    assert not out.exists()


def test_jobs_schema_accepts_what_the_agents_accept():
    assert schemas.problems("jobs", jobs_doc()) == []
    assert schemas.problems("jobs", json.loads(BAD_JOBS["wrong_type"][0]))
    assert schemas.problems("jobs", json.loads(BAD_JOBS["unknown_key"][0]))
