"""Many agents at once (issue 11): both agents' concurrent streams against the real server, the
open loop's schedule, a concurrency sweep end to end, and the load metrics' known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sampling import sampled
from langbench import paths, schemas, storage
from langbench.report.sections import concurrency
from langbench.run import server
from cli_runs import sweep_fixture
from langbench.analysis.findings import Run
from test_agents_contract import run_agent

AGENTS = ("python", "rust")
OPTIONS = sampled({"num_predict": 6, "seed": 7})


@pytest.fixture(scope="module")
def parallel_server(tmp_path_factory):
    """The real embedded Ollama with 4 parallel slots."""
    log = tmp_path_factory.mktemp("ollama-parallel") / "ollama.log"
    with server.ollama_server("embedded", log_path=log, env={"OLLAMA_NUM_PARALLEL": 4}) as srv:
        yield srv


def _jobs(runs: list[dict], streams: int) -> dict:
    return {"schema_version": 1, "model": paths.EMBEDDED_MODEL, "raw": True, "timeout_s": 120,
            "prompts": ["The history of the transistor", "A short note on caches:"], "streams": streams,
            "runs": runs}


def _closed(streams: int, per_stream: int, bad_stream: int | None = None) -> list[dict]:
    runs = [{"run_id": "warm", "prompt": 0, "options": OPTIONS, "keep_alive": -1, "warmup": True}]
    for i in range(per_stream):
        for k in range(streams):
            bad = k == bad_stream and i == 0
            runs.append({"run_id": f"s{k}-r{i}", "prompt": (k + i) % 2, "keep_alive": -1, "warmup": False,
                         "stream": k, "options": {**OPTIONS, "num_ctx": "abc"} if bad else OPTIONS})
    return runs


@pytest.mark.parametrize("agent", AGENTS)
def test_n_streams_give_n_times_the_records_and_overlap_in_time(agent, parallel_server, tmp_path):
    stats, records = run_agent(agent, parallel_server.url, _jobs(_closed(3, 2), 3), tmp_path)
    assert stats.exit_code == 0, stats.stderr_tail
    assert len(records) == 1 + 3 * 2 and records[0]["run_id"] == "warm"
    for rec in records:
        assert schemas.problems("record", rec) == [], rec
        assert rec["outcome"] == "ok" and rec["concurrency"] == 3
    measured = pd.DataFrame(records[1:])
    assert measured.groupby("stream")["run_id"].apply(sorted).to_dict() == {
        k: [f"s{k}-r0", f"s{k}-r1"] for k in range(3)}
    # concurrent: every stream's first request went out before any of them had finished
    first = measured[measured["run_id"].str.endswith("r0")]
    assert first["t0_unix"].max() < (first["t0_unix"] + first["e2e_ms"] / 1e3).min()
    # the warm-up ran alone, before the streams
    assert records[0]["t0_unix"] + records[0]["e2e_ms"] / 1e3 <= measured["t0_unix"].min()


@pytest.mark.parametrize("agent", AGENTS)
def test_a_failing_stream_loses_no_record_of_its_own_or_of_the_others(agent, parallel_server, tmp_path):
    stats, records = run_agent(agent, parallel_server.url, _jobs(_closed(3, 2, bad_stream=1), 3), tmp_path)
    assert stats.exit_code == 1  # a run failed; the agent went on
    by_id = {r["run_id"]: r for r in records}
    assert sorted(by_id) == sorted(["warm"] + [f"s{k}-r{i}" for k in range(3) for i in range(2)])
    bad = by_id.pop("s1-r0")
    assert bad["outcome"] == "error" and bad["error"]["kind"] == "http_500" and "num_ctx" in bad["error"]["message"]
    assert all(r["outcome"] == "ok" for r in by_id.values())
    assert by_id["s1-r1"]["stream"] == 1  # the failing stream went on with its next run


@pytest.mark.parametrize("agent", AGENTS)
def test_open_loop_sends_each_request_at_its_time_whatever_is_in_flight(agent, parallel_server, tmp_path):
    at = [0.0, 0.15, 0.3, 0.45]
    runs = [{"run_id": "warm", "prompt": 0, "options": OPTIONS, "keep_alive": -1, "warmup": True}]
    runs += [{"run_id": f"o{i}", "prompt": i % 2, "options": {**OPTIONS, "num_predict": 20}, "keep_alive": -1,
              "warmup": False, "send_at_s": t} for i, t in enumerate(at)]
    stats, records = run_agent(agent, parallel_server.url, _jobs(runs, 4), tmp_path)
    assert stats.exit_code == 0, stats.stderr_tail
    sent = sorted((r for r in records if r["run_id"] != "warm"), key=lambda r: r["run_id"])
    t0 = sent[0]["t0_unix"] - sent[0]["schedule_lag_ms"] / 1e3  # the start of the measured phase
    for rec, planned in zip(sent, at):
        assert 0 <= rec["schedule_lag_ms"] < 50, rec["schedule_lag_ms"]
        assert rec["t0_unix"] - t0 == pytest.approx(planned, abs=0.06)
    # 20 tokens take longer than 0.15 s here: later requests went out while earlier ones streamed
    assert sent[1]["t0_unix"] < sent[0]["t0_unix"] + sent[0]["e2e_ms"] / 1e3


def test_the_jobs_file_rejects_a_stream_out_of_range_and_half_an_open_loop(tmp_path):
    runs = _closed(2, 1)
    runs[1]["stream"] = 2
    half = _closed(2, 1)
    half[1]["send_at_s"] = 0.5
    for agent in AGENTS:
        for doc in (_jobs(runs, 2), _jobs(half, 2)):
            stats, records = run_agent(agent, "http://127.0.0.1:9", doc, tmp_path)
            assert stats.exit_code == 2 and records == [], stats.stderr_tail


# --- the sweep, end to end -----------------------------------------------------------------

@pytest.fixture(scope="module")
def concurrency_run(tmp_path_factory) -> Path:
    return sweep_fixture("tiny-concurrency.yaml", tmp_path_factory.mktemp("conc"), "conc")


def test_the_sweep_runs_every_load_point_with_the_slots_it_needs(concurrency_run):
    manifest = storage.read_json(concurrency_run / "manifest.json")
    assert manifest["server_slots"]["num_parallel"] == 3 and manifest["server_slots"]["runner_parallel"] == 3
    records = storage.read_jsonl(concurrency_run / "records.jsonl")
    assert all(r["outcome"] == "ok" for r in records)
    measured = [r for r in records if r["phase"] == "measured"]
    n3 = [r for r in measured if r["config"].get("concurrency") == 3]
    # 2 agents × 2 modes × 3 streams × (1 cached + 1 uncached)
    assert len(n3) == 2 * 2 * 3 * 2 and {r["stream"] for r in n3} == {0, 1, 2}
    opened = [r for r in measured if r["config"].get("arrival_rate_per_s") == 5]
    assert len(opened) == 2 * 2 * 3 and all("schedule_lag_ms" in r for r in opened)
    # the same seeded schedule for both agents and modes
    jobs = [json.loads(p.read_text()) for p in (concurrency_run / "jobs").glob("*.json")]
    schedules = {tuple(r["send_at_s"] for r in j["runs"] if "send_at_s" in r) for j in jobs}
    assert len(schedules - {()}) == 1


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_the_concurrency_report_computes_scaling_fairness_and_renders(concurrency_run):
    run = Run.load(concurrency_run)
    assert {"concurrency", "arrival_rate_per_s"} <= set(run.factors)
    b = concurrency.batches(run)
    assert set(b["load_point"]) == {"N=1", "N=3", "5/s open"}
    assert (b["agg_tps"] > 0).all() and b["fairness"].dropna().between(0, 1).all()
    assert b.loc[b["load_point"] == "N=3", "fairness"].notna().all()
    s = concurrency.scaling(b)
    assert set(s["concurrency"]) == {1, 3} and (s.loc[s["concurrency"] == 1, "efficiency"] == 1).all()
    assert "tok/s at N = 1" in concurrency.scaling_section(run, b).sentence
    from langbench.report import render as report
    assert report.render(concurrency_run, notebooks=("concurrency",)) == 0
    html = (concurrency_run / "html" / "concurrency-nocode.html").read_text()
    assert "Aggregate throughput" in html and "Jain" in html and "runner's log shows --parallel 3" in html
    from pages import ids_shown  # the comparison table showed itl_p99_ms, agg_tps, ttft_p50_ms (issue 44)
    assert ids_shown(concurrency_run / "html" / "concurrency-nocode.html") == []
    assert "aggregate throughput (tok/s)" in html and "ITL p99 (ms)" in html


def test_jain_index_and_scaling_efficiency_match_hand_worked_values():
    # two streams of 10 and 30 tok/s: (10 + 30)² / (2 × (10² + 30²)) = 1600 / 2000 = 0.8
    ok = pd.DataFrame({"stream": [0, 1], "eval_count": [10, 30], "e2e_ms": [1000.0, 1000.0]})
    assert concurrency._jain(ok) == pytest.approx(0.8)
    b = pd.DataFrame({"batch_id": ["a", "b", "c"], "agent": "rust", "mode": "baseline", "concurrency": [1, 4, 4],
                      "agg_tps": [10.0, 30.0, 34.0], "ttft_p95_ms": 1.0, "itl_p99_ms": 1.0, "queue_ms": 0.0,
                      "fairness": 1.0, "goodput": 1.0})
    s = concurrency.scaling(b).set_index("concurrency")
    assert s.loc[4, "agg_tps"] == 32.0 and s.loc[4, "efficiency"] == pytest.approx(32 / (4 * 10))
    assert np.isclose(s.loc[1, "efficiency"], 1.0)
