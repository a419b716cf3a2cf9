"""The replay server as a study uses it (issue 40; DESIGN.md, "The replay server"): a capture
on the real embedded Ollama, its profile, every client against the replay of it on /api and
/v1, the real-against-replay check, and the faults on purpose, each a named outcome."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_runs import sweep_fixture
from langbench import storage
from langbench.analysis import profile, replay_check

pytestmark = pytest.mark.server
CLIENTS = ("python", "python-tuned", "python-raw", "rust")
# What each fault must be in every client's record (DESIGN.md, "The replay server"): an empty
# stream is `ok` with no token; every other fault a named failure.
NAMED = {"disconnect": "stream_interrupted", "no_done": "no_done", "stall": "timeout",
         "error_after_200": "server_error", "malformed": "bad_chunk", "empty": "empty"}


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    return sweep_fixture("tiny-capture.yaml", tmp_path_factory.mktemp("capture"), "real")


@pytest.fixture(scope="module")
def profiled(captured) -> Path:
    done = subprocess.run([sys.executable, "-m", "langbench", "profile", str(captured)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def replay_params(captured: Path, profile_file: Path, folder: Path, **server) -> Path:
    """The capture's design again, on the replay server of its profile, every client."""
    doc = yaml.safe_load((Path(__file__).parent / "fixtures" / "tiny-capture.yaml").read_text())
    doc.update(name="tiny-replayed", agents=list(CLIENTS), isolation="pinned")
    doc.pop("capture")
    doc["server"] = {"host": "embedded", "kind": "replay", "profile": str(profile_file), **server}
    out = folder / "replayed.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def sweep(params: Path, outputs: Path, run_id: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(params), "--run-id", run_id],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return outputs / run_id


@pytest.fixture(scope="module")
def replayed(captured, profiled, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("replayed")
    return sweep(replay_params(captured, profiled, folder, time_scale=1), folder / "out", "replay")


def test_a_captured_run_keeps_every_streams_chunks_beside_its_records(captured):
    records = storage.read_jsonl(captured / "records.jsonl")
    traces = storage.read_jsonl(captured / "capture.jsonl")
    assert not any("capture" in r for r in records)  # moved out: records.jsonl stays lean
    keyed = {(t["batch_id"], t["attempt"], t["run_id"]): t for t in traces}
    for rec in records:
        trace = keyed[(rec["batch_id"], rec["attempt"], rec["run_id"])]
        assert len(trace["t_us"]) == len(trace["kinds"]) == len(trace["text"]) == len(trace["bytes"])
        assert trace["t_us"] == sorted(trace["t_us"])
        if rec["outcome"] == "ok":  # the last chunk a client saw ends the generation (d), usage after it (u)
            assert trace["kinds"].rstrip("u").endswith("d"), trace["kinds"]
            assert "".join(t for t, k in zip(trace["text"], trace["kinds"]) if k == "a").__len__() == rec["response_chars"]
        if rec["agent"] in ("null", "rust"):  # the clients that see the bytes say how many
            assert all(isinstance(b, int) and b > 0 for b in trace["bytes"])


def test_the_profile_names_its_run_and_keeps_the_null_clients_donors_per_endpoint(captured, profiled):
    doc = json.loads(profiled.read_text())
    assert doc["kind"] == "langbench-replay-profile" and doc["source"]["run_id"] == captured.name
    assert {d["endpoint"] for d in doc["donors"]} == {"chat", "openai-chat"}
    assert {d["agent"] for d in doc["donors"]} == {"null"}  # the client that adds the least of its own
    for d in doc["donors"]:
        assert len(d["gaps_us"]) == len(d["chunks"]) - 1 and d["ttft_us"] > 0
    assert all(g["tokens_per_chunk"] == pytest.approx(1.0, abs=0.2) for g in doc["groups"])


def test_a_run_without_capture_gives_no_profile_and_exit_2(tiny_run):
    done = subprocess.run([sys.executable, "-m", "langbench", "profile", str(tiny_run)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "capture: true" in done.stderr
    with pytest.raises(profile.ProfileError):
        profile.build(tiny_run)


def test_every_client_reads_the_replay_on_api_and_v1_with_its_lag_behind_each_stamp(replayed):
    records = [r for r in storage.read_jsonl(replayed / "records.jsonl") if r["phase"] == "measured"]
    manifest = storage.read_json(replayed / "manifest.json")
    assert manifest["replay"]["source"]["run_id"] == "real" and manifest["server"]["kind"] == "replay"
    seen = collections.Counter((r["agent"], r["endpoint"]) for r in records if r["outcome"] == "ok")
    for client in CLIENTS:
        for endpoint in ("chat", "openai-chat"):
            assert seen[(client, endpoint)] >= 4, (client, endpoint, seen)
    for rec in records:
        lag = rec["lag_ms"]
        assert lag is not None and lag["n"] >= rec["chunks"]  # every chunk stamped, done line included
        assert 0 <= lag["first"] and lag["p50"] <= lag["p99"] <= lag["max"]
        assert lag["max"] < rec["e2e_ms"]  # one clock (CLOCK_MONOTONIC): lag is within the stream's time
        # t0 to the server's having the whole request: before the first chunk, on the same clock
        assert lag["send"] is not None and 0 <= lag["send"] <= rec["e2e_ms"], (rec["agent"], lag)
        if rec["ttft_ms"] is not None:
            assert lag["send"] + lag["first"] <= rec["ttft_ms"] + 0.01
    procs = storage.read_jsonl(replayed / "processes.jsonl")
    assert all(p["replay"]["streams"] > 0 and p["replay"]["late_us"]["p50"] is not None for p in procs)


def test_the_replay_is_true_to_the_real_server_it_copies(captured, replayed):
    """Same design, same clients: TTFT and ITL medians within the stated distance, no verdict
    contradicted (replay_check's docstring states both)."""
    far = replay_check.distances(captured, replayed)
    assert set(far["client"]) == {"null", *CLIENTS}  # every client ran on both servers
    assert far["agrees"].all(), far.to_string()
    same = replay_check.verdicts(captured, replayed)
    assert len(same) == 4 and same["agree"].all(), same.to_string()


def test_every_fault_on_purpose_is_a_named_outcome_in_every_client_and_nothing_is_lost(captured, profiled,
                                                                                       tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    params = replay_params(captured, profiled, folder, time_scale=20, stall_s=30, seed=5,
                           faults={k: 0.12 for k in NAMED})
    doc = yaml.safe_load(params.read_text())
    doc.update(retries=0, repetitions=8, batches=1, timeouts={"run_s": 2, "batch_s": 300})
    params.write_text(yaml.safe_dump(doc))
    run = sweep(params, folder / "out", "faults")
    records = storage.read_jsonl(run / "records.jsonl")
    plan = storage.read_json(run / "plan.json")
    planned = {(b["batch_id"], r["run_id"]) for b in plan["batches"] for r in b["runs"]}
    assert [(r["batch_id"], r["run_id"]) for r in records].__len__() == len(planned)  # none lost, none twice
    assert {(r["batch_id"], r["run_id"]) for r in records} == planned
    injected = collections.Counter()
    for proc in storage.read_jsonl(run / "processes.jsonl"):
        want = collections.Counter({NAMED[k]: v for k, v in proc["replay"]["faults"].items() if v})
        got = collections.Counter(
            (r["error"] or {}).get("kind") or ("empty" if r["chunks"] == 0 else None)
            for r in records if r["batch_id"] == proc["batch_id"] and r["attempt"] == proc["attempt"])
        got.pop(None, None)
        assert got == want, (proc["batch_id"], want, got)
        injected.update(proc["replay"]["faults"])
    assert all(injected[k] > 0 for k in NAMED), injected  # every kind met every client's loop at least once
