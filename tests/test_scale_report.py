"""Sessions at scale (issue 41): the arithmetic of analysis/scale.py on hand-made frames (sessions
in flight, the added time per turn, knees with CIs, the SDK/language split), and the scale
notebook and the index rendered on a small synthetic replay run with planted knees; the same knees
planted in a run on a server that stamps nothing, found over the Rust floor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from langbench import storage
from langbench.analysis import scale

CLIENTS = ("python", "python-tuned", "python-raw", "rust")
ENDPOINTS = ("chat", "openai-chat")
NS = (1, 4, 16)
# planted added share per turn (the client's send delay + worst-chunk lag over the turn's time), by
# client and N: Python passes 1 % at N = 4 and 5 % at N = 16; the others never pass 1 %. Most of it
# is the send delay (SEND_PART), as the official SDK's at 1,024 sessions was: the lag alone stays
# under 1 % and 5 % there, so a knee read on the lag alone would be missed
SEND_PART = 0.8
SHARE = {"python": {1: 0.002, 4: 0.03, 16: 0.10}, "python-tuned": {1: 0.002, 4: 0.004, 16: 0.006},
         "python-raw": {1: 0.001, 4: 0.002, 16: 0.004}, "rust": {1: 0.001, 4: 0.001, 16: 0.001}}
# planted lag p50 per chunk (ms): at N = 16 the Python − Rust gap is 2.0 ms, 1.5 of it the SDK's
LAG_P50 = {"python": {1: 0.10, 4: 0.8, 16: 2.05}, "python-tuned": {1: 0.10, 4: 0.5, 16: 1.05},
           "python-raw": {1: 0.06, 4: 0.3, 16: 0.55}, "rust": {1: 0.05, 4: 0.05, 16: 0.05}}


# --- the arithmetic, by hand ---------------------------------------------------------------

def test_sessions_in_flight_are_time_weighted_and_touching_intervals_do_not_overlap():
    # [0, 2] and [1, 3] overlap on [1, 2]; [3, 4] starts where [1, 3] ends
    mean, peak, span = scale.in_flight([0, 1, 3], [2, 3, 4])
    assert span == 4 and peak == 2
    assert mean == pytest.approx((2 + 2 + 1) / 4)
    # one session, back to back: never two in flight
    mean, peak, _ = scale.in_flight([0, 1, 2], [1, 2, 3])
    assert peak == 1 and mean == pytest.approx(1.0)


def _cells(shares: dict[int, list[float]], tps: dict[int, list[float]] | None = None) -> pd.DataFrame:
    rows = []
    for n, values in shares.items():
        for k, v in enumerate(values):
            rows.append({"batch_id": f"b{n}-{k}", "endpoint": "chat", "agent": "python", "concurrency": n,
                         "failed": False, "flagged": False, "added_share": v, "tps_offered": 100.0 * n,
                         "tps_received": (tps or {}).get(n, [100.0 * n] * len(values))[k],
                         **{c: 1.0 for c in scale.VALUES if c not in ("added_share", "tps_received")}})
    return pd.DataFrame(rows)


def _record(agent: str, n: int, k: int, e2e: float, ttft: float, lag: dict | None, i: int = 0) -> dict:
    return {"batch_id": f"{agent}-{n}-b{k}", "agent": agent, "endpoint": "chat", "concurrency": n,
            "mode": "baseline", "phase": "measured", "outcome": "ok", "run_id": f"{agent}-{n}-{k}-{i}",
            "t0_unix": 1000.0 + 10 * k + 0.2 * i, "e2e_ms": e2e, "ttft_ms": ttft, "eval_count": 20, "lag_ms": lag}


def test_the_added_time_is_the_send_delay_plus_the_worst_lag_and_a_large_send_makes_a_knee():
    """The SDK at 1,024 sessions: 31 ms behind the server at its first chunk, its TTFT 4.4 s:
    the request waited in the client. Read on the lag alone its added share was 0.9 %: no knee."""
    lag = {"send": 4353.0, "first": 31.0, "p50": 2.0, "p99": 30.0, "max": 40.0, "n": 5}
    rows = [_record("python", 1024, k, 4600.0, 4400.0, lag, i) for k in range(3) for i in range(2)]
    r = scale.with_lag(pd.DataFrame(rows))
    assert r["added_ms"].iloc[0] == pytest.approx(4393.0) and r["ttft_added_ms"].iloc[0] == pytest.approx(4384.0)
    assert r["added_share"].iloc[0] == pytest.approx(4393.0 / 4600.0)
    assert (r["added_basis"] == "stamps").all()
    assert (r["lag_max_ms"] / r["e2e_ms"]).max() < 0.01  # what the old added share read
    b = scale.batch_table(r, pd.DataFrame())
    assert (b["added_basis"] == "stamps").all() and b["lag_send_ms"].iloc[0] == pytest.approx(4353.0)
    k = scale.knees(scale.cells(b)).set_index("threshold")
    assert k.loc[0.01, "knee_n"] == 1024 and k.loc[0.05, "knee_n"] == 1024
    # stamps of sends only (a replay run from before the arrival stamp): no stamped added time, so
    # it is measured over the Rust floor, as on a server that stamps nothing
    old = scale.with_lag(pd.DataFrame([{**x, "lag_ms": {q: v for q, v in lag.items() if q != "send"}} for x in rows]))
    assert old["added_ms"].isna().all() and old["added_basis"].isna().all()


def test_without_stamps_the_added_time_is_the_inflation_over_the_rust_median_at_that_endpoint_and_n():
    rows = []
    for k in range(3):
        for i, (e2e, ttft) in enumerate([(100.0, 20.0), (102.0, 21.0), (104.0, 22.0)]):  # rust: medians 102, 21
            rows.append(_record("rust", 8, k, e2e, ttft, None, i))
            rows.append(_record("python", 8, k, e2e + 10.0, ttft + 6.0, None, i))
        rows.append(_record("rust", 64, k, 200.0, 40.0, None))  # another N: another floor
        rows.append(_record("python", 64, k, 201.0, 40.5, None))
    flagged_rust = _record("rust", 8, 9, 1000.0, 900.0, None)  # a batch that does not decide sets no floor
    r = scale.with_lag(pd.DataFrame(rows + [flagged_rust]))
    f = scale.with_floor(r, exclude=["rust-8-b9"])
    py8 = f[(f["agent"] == "python") & (f["concurrency"] == 8)]
    assert (f["added_basis"] == "floor").all()
    assert sorted(py8["added_ms"]) == pytest.approx([8.0] * 3 + [10.0] * 3 + [12.0] * 3)
    assert sorted(py8["ttft_added_ms"].unique()) == pytest.approx([5.0, 6.0, 7.0])
    assert py8["added_share"].iloc[0] == pytest.approx(8.0 / 110.0)
    assert f.loc[(f["agent"] == "python") & (f["concurrency"] == 64), "added_ms"].tolist() == pytest.approx([1.0] * 3)
    # no Rust turn at that endpoint and N: no floor, so nothing is decided there
    alone = scale.with_floor(scale.with_lag(pd.DataFrame([_record("python", 16, 0, 100.0, 20.0, None)])))
    assert alone["added_ms"].isna().all()
    # the Rust agent is the floor: no knee of its own, and a knee over it separates Python from it
    b = scale.batch_table(r.iloc[:-1], pd.DataFrame())
    k = scale.knees(scale.cells(b)).set_index(["agent", "threshold"])
    assert k.loc[("rust", 0.01), "knee"] == "the floor up to N = 64 (no stamps)"
    assert k.loc[("python", 0.05), "knee_n"] == 8
    assert scale.separated(k.reset_index(), "chat", 8) == 0.01


def test_the_knee_is_the_smallest_n_whose_ci_lower_bound_passes_the_threshold():
    b = _cells({1: [0.001, 0.002, 0.0015], 4: [0.009, 0.02, 0.011],  # mean 1.3 %, but the CI reaches below 1 %
                8: [0.020, 0.021, 0.022], 16: [0.06, 0.061, 0.062]},
               tps={8: [700.0, 720.0, 740.0]})
    k = scale.knees(scale.cells(b)).set_index("threshold")
    assert k.loc[0.01, "knee_n"] == 8 and k.loc[0.01, "knee"] == "N = 8"
    assert k.loc[0.01, "tps_received"] == pytest.approx(720.0)
    assert k.loc[0.01, "tps_received_ci_low"] <= 720.0 <= k.loc[0.01, "tps_received_ci_high"]
    assert k.loc[0.05, "knee_n"] == 16


def test_no_knee_says_none_up_to_n_max_and_too_few_batches_decide_nothing():
    k = scale.knees(scale.cells(_cells({1: [0.001] * 3, 64: [0.002, 0.003, 0.0025]}))).set_index("threshold")
    assert k.loc[0.01, "knee"] == "none up to N = 64" and np.isnan(k.loc[0.01, "knee_n"])
    # two batches a load point: no CI, so a mean far above 5 % is still no knee
    k = scale.knees(scale.cells(_cells({1: [0.001] * 2, 8: [0.2, 0.3]}))).set_index("threshold")
    assert np.isnan(k.loc[0.05, "knee_n"]) and k.loc[0.05, "knee"].startswith("not decided up to N = 8")


def test_flagged_batches_decide_no_knee_and_failed_ones_are_named():
    b = _cells({1: [0.001] * 3, 8: [0.2] * 3})
    b["flagged"] = True
    failed = b.iloc[:1].assign(agent="rust", failed=True)
    k = scale.knee_table(pd.concat([b, failed], ignore_index=True))
    assert set(k.loc[k["agent"] == "python", "knee"]) == {"not decided: the replay server ran late in every batch that ran"}
    assert set(k.loc[k["agent"] == "rust", "knee"]) == {"not measured: every batch failed"}


def test_split_shares_the_gap_between_sdk_and_language_and_places_the_tuned_client():
    c = pd.DataFrame({"endpoint": "chat", "concurrency": 64, "agent": list(CLIENTS),
                      "lag_p50_ms": [10.0, 4.0, 2.5, 0.5]})
    s = scale.split(c, "lag_p50_ms", margin=0.5).iloc[0]
    assert s["gap"] == pytest.approx(9.5)
    assert s["sdk_share"] == pytest.approx(7.5 / 9.5) and s["language_share"] == pytest.approx(2.0 / 9.5)
    assert s["sdk_share"] + s["language_share"] == pytest.approx(1.0)
    assert s["tuned_share"] == pytest.approx(6.0 / 9.5)
    within = scale.split(c.assign(lag_p50_ms=[0.6, 0.6, 0.5, 0.3]), "lag_p50_ms", margin=0.5).iloc[0]
    assert np.isnan(within["sdk_share"]) and within["note"] == "gap within ±0.5"


def test_tokens_offered_are_n_times_the_best_clients_session_rate_at_the_lowest_n():
    b = pd.DataFrame({"endpoint": "chat", "agent": ["python", "rust", "python", "rust"], "concurrency": [1, 1, 8, 8],
                      "failed": False, "session_tps": [180.0, 200.0, 90.0, 195.0]})
    o = scale.offered(b)
    assert (o["tps_offered"] == [200.0, 200.0, 1600.0, 1600.0]).all()


# --- a synthetic replay run with planted knees ----------------------------------------------

def make_scale_run(run_dir: Path, *, batches: int = 4, seed: int = 5, flag_one: bool = True,
                   stamped: bool = True) -> Path:
    """Every client on both endpoints at N = 1, 4, 16, `batches` batches a cell; each session runs
    two 20-token requests back to back of 100 ms each on the server's (replay) timing; the client's
    send delay and lag per chunk are planted (SHARE: SEND_PART of it the send delay, the rest the
    worst chunk's lag; LAG_P50); rust's /v1 batches at N = 16 fail, as a client that refuses the
    endpoint does; with flag_one, one python batch ran with the server late. Not `stamped`: a real
    server (llama-server, no replay, no stamps), each turn's e2e the server's 80 ms plus the same
    planted share of it as the client's own, the turns 200 ms apart."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    records, procs = [], []
    t = 1.9e9
    order = 0
    for ei, endpoint in enumerate(ENDPOINTS):
        for n in NS:
            config_id = f"c{ei * len(NS) + NS.index(n) + 1}"
            config = {"endpoint": endpoint, "concurrency": n}
            for agent in CLIENTS:
                for k in range(batches):
                    batch_id = f"{config_id}-{agent}-b{k}"
                    fail = agent == "rust" and endpoint == "openai-chat" and n == 16
                    t += 5.0
                    for stream in range(n):
                        for i in range(2):
                            share = SHARE[agent][n] * rng.uniform(0.97, 1.03)
                            e2e = 99.0 + rng.uniform(0, 0.5)  # within the 100.1 ms between a session's requests
                            if not stamped:  # the client's own time on top of the server's
                                e2e = (80.0 + rng.uniform(0, 0.5)) * (1 + SHARE[agent][n] * rng.uniform(0.97, 1.03))
                            p50 = LAG_P50[agent][n] * rng.uniform(0.97, 1.03)
                            send = SEND_PART * share * e2e
                            rec = {"schema_version": 2, "run_id": f"{batch_id}-s{stream}-r{i}", "agent": agent,
                                   "agent_version": "synthetic", "model": "synthetic", "endpoint": endpoint,
                                   "options": {}, "warmup": False,
                                   "t0_unix": t + stream * 0.001 + i * (0.1001 if stamped else 0.2),
                                   "concurrency": n, "stream": stream, "batch_id": batch_id, "order": order,
                                   "config_id": config_id, "config": config, "mode": "baseline", "attempt": 1,
                                   "phase": "measured", "prompt_cache": "cached", "reload_expected": False}
                            if fail:
                                rec.update(outcome="error", ttft_ms=None, e2e_ms=None, eval_count=None, chunks=0,
                                           error={"kind": "agent_exit", "client": "langbench runner",
                                                  "message": "rust agent: endpoint openai-chat runs one stream"})
                            else:
                                v1 = endpoint == "openai-chat"
                                ttft = 20.0 + rng.uniform(-2, 2) + send + p50  # the single-request verdicts need spread
                                rec.update(outcome="ok", error=None, ttft_ms=ttft, e2e_ms=e2e, decode_ms=e2e - ttft,
                                           chunks=20, eval_count=20, done_reason="length",
                                           total_duration=None if v1 else int(e2e * 1e6),
                                           load_duration=None if v1 else 0,
                                           prompt_eval_duration=None if v1 else int(20e6),
                                           eval_duration=None if v1 else int(rng.uniform(75e6, 80e6)),
                                           prompt_eval_count=7,
                                           itl_ms={q: v + rng.uniform(-0.3, 0.3) for q, v in (("p50", 4.0), ("p95", 4.5), ("p99", 5.0), ("max", 6.0))} | {"n": 19},
                                           lag_ms={"send": send, "first": p50 * 1.5, "p50": p50, "p99": p50 * 3,
                                                   "max": (1 - SEND_PART) * share * e2e, "n": 21} if stamped else None)
                            records.append(rec)
                    late_us = 5000.0 if (flag_one and stamped and agent == "python" and endpoint == "chat" and n == 4
                                         and k == 0) else 40.0
                    cpu = {"python": 0.4, "python-tuned": 0.3, "python-raw": 0.1, "rust": 0.02}[agent] * n * rng.uniform(0.9, 1.1)
                    procs.append({"batch_id": batch_id, "attempt": 1, "config_id": config_id, "mode": "baseline",
                                  "runs": 2 * n, "agent": agent, "exit_code": 2 if fail else 0, "wall_s": 1.0,
                                  "user_cpu_s": 0.0 if fail else cpu, "system_cpu_s": 0.0 if fail else 0.01 * n,
                                  "startup_cpu_s": 0.0, "startup_ms": rng.normal(450 if agent != "rust" else 2, 1), "peak_rss_bytes": (40 if agent.startswith("python") else 4) * 2**20 + int(rng.integers(0, 2**20)),
                                  "records": 2 * n, "timed_out": False, "stderr_tail": "",
                                  "replay": None if fail or not stamped else {"streams": 2 * n, "chunks": 42 * n,
                                                               "late_us": {"p50": 10.0, "p99": late_us, "max": late_us},
                                                               "faults": {}, "time_scale": 20.0, "load": "ideal"}})
                    order += 1
    storage.append_jsonl(run_dir / "records.jsonl", records)
    storage.append_jsonl(run_dir / "processes.jsonl", procs)
    storage.write_json(run_dir / "manifest.json", {
        "schema_version": 1, "run_id": run_dir.name, "parameters_file": "synthetic-scale",
        "parameters": {"matrix": {"endpoint": list(ENDPOINTS)}, "concurrency": list(NS), "agents": list(CLIENTS),
                       "margins": {"throughput_pct": 2.0, "ttft_ms": 5.0, "overhead_ms": 0.5}},
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:10:00+00:00",
        "ollama_version": "synthetic", "model": {"name": "synthetic", "parameter_size": "0", "quantization_level": "none"},
        "host": {"cpu_model": "synthetic", "cpu_logical": 2, "gpus": []},
        **({"replay": {"profile": "outputs/cap-synthetic/profile.json",
                       "source": {"run_id": "cap-synthetic", "server_kind": "ollama", "server_version": "0.11.4",
                                  "model": "synthetic"},
                       "time_scale": 20, "load": "ideal", "faults": {}, "lateness_p99_ms": 0.2}} if stamped else {}),
        "counts": {"planned_runs": len(records)}, "git": {"commit": "synthetic"}})
    return run_dir


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory) -> Path:
    return make_scale_run(tmp_path_factory.mktemp("scale") / "replay-scale")


def test_the_planted_knees_are_found_with_cis_and_the_others_have_none(scale_run):
    from langbench.analysis.findings import Run
    b = scale.batches(Run.load(scale_run))
    assert int(b["flagged"].sum()) == 1 and int(b["failed"].sum()) == 4
    k = scale.knee_table(b).set_index(["endpoint", "agent", "threshold"])
    for endpoint in ENDPOINTS:
        assert k.loc[(endpoint, "python", 0.01), "knee_n"] == 4
        assert k.loc[(endpoint, "python", 0.05), "knee_n"] == 16
        assert k.loc[(endpoint, "python", 0.01), "tps_received_ci_low"] > 0
        for agent in ("python-tuned", "python-raw"):
            assert k.loc[(endpoint, agent, 0.01), "knee"] == "none up to N = 16"
    assert k.loc[("chat", "rust", 0.01), "knee"] == "none up to N = 16"
    # rust's /v1 at N = 16 failed: its knee is decided on the N it ran
    assert k.loc[("openai-chat", "rust", 0.01), "knee"] == "none up to N = 4"
    c = scale.cells(b)
    one = c[c["concurrency"] == 1]
    assert (one["reached"] > 0.9).all() and (c["in_flight_max"] <= c["concurrency"]).all()
    s = scale.split(scale.cells(b, decided_only=True), "lag_p50_ms", 0.5).set_index(["endpoint", "concurrency"])
    assert s.loc[("chat", 16), "sdk_share"] == pytest.approx(0.75, abs=0.05)
    assert s.loc[("chat", 16), "language_share"] == pytest.approx(0.25, abs=0.05)
    # most of Python's added time is its send delay: the lag alone passes neither threshold where it has its knees
    py = c[(c["agent"] == "python") & (c["endpoint"] == "chat")].set_index("concurrency")
    assert (py["added_basis"] == "stamps").all()
    assert py.loc[4, "lag_send_ms"] > 3 * (py.loc[4, "added_ms"] - py.loc[4, "lag_send_ms"])
    raw = scale.scale_records(Run.load(scale_run).df, "chat")
    raw = raw[(raw["agent"] == "python") & (raw["endpoint"] == "chat") & (raw["outcome"] == "ok")]
    lag_only = (raw["lag_max_ms"] / raw["e2e_ms"]).groupby(raw["concurrency"]).median()
    assert lag_only[4] < 0.01 and lag_only[16] < 0.05
    # the split is on the added time per turn unless told: the SDK's share of the gap is Python − raw
    added = scale.split(scale.cells(b, decided_only=True), margin=0.5).set_index(["endpoint", "concurrency"])
    want = (SHARE["python"][16] - SHARE["python-raw"][16]) / (SHARE["python"][16] - SHARE["rust"][16])
    assert added.loc[("chat", 16), "sdk_share"] == pytest.approx(want, abs=0.03)
    cmp = scale.compare_at_each_n(b, margin=0.5).set_index(["endpoint", "concurrency", "a"])
    assert cmp.loc[("chat", 16, "python"), "mean_a"] == pytest.approx(SHARE["python"][16] * 99.2, rel=0.03)


def test_the_knee_rules_look_reads_the_same_added_time(scale_run):
    """decided_below before N = 17 (every level run): Python's knees at 1 % and 5 % are decided,
    mostly send delay; before 16 its 5 % knee is not (no level below passes it)."""
    assert scale.decided_below(scale_run, 17) == {"python chat": {"1 %": 4, "5 %": 16},
                                                  "python openai-chat": {"1 %": 4, "5 %": 16}}
    assert scale.decided_below(scale_run, 16) == {}


@pytest.fixture(scope="module")
def floor_run(tmp_path_factory) -> Path:
    return make_scale_run(tmp_path_factory.mktemp("scale") / "gpu-scale", stamped=False)


def test_on_a_server_that_stamps_nothing_the_knees_are_found_over_the_rust_floor(floor_run):
    from langbench.analysis.findings import Run
    from langbench.report.sections import scale as sections
    run = Run.load(floor_run)
    b = scale.batches(run)
    assert int(b["flagged"].sum()) == 0 and set(b.loc[~b["failed"], "added_basis"]) == {"floor"}
    k = scale.knee_table(b).set_index(["endpoint", "agent", "threshold"])
    assert k.loc[("chat", "python", 0.01), "knee_n"] == 4 and k.loc[("chat", "python", 0.05), "knee_n"] == 16
    # on /v1 Rust failed at 16: no floor there, so Python's 5 % knee is not decided on /v1
    assert k.loc[("openai-chat", "python", 0.01), "knee_n"] == 4
    assert k.loc[("openai-chat", "python", 0.05), "knee"].startswith("not decided up to N = 16")
    for agent in ("python-tuned", "python-raw"):
        assert k.loc[("chat", agent, 0.01), "knee"] == "none up to N = 16"
    assert k.loc[("chat", "rust", 0.01), "knee"] == "the floor up to N = 16 (no stamps)"
    assert scale.decided_below(floor_run, 17) == {"python chat": {"1 %": 4, "5 %": 16}}
    c = sections.described(b)
    lag = sections.lag(run, c)
    assert "stamps no chunk" in lag.sentence and "Rust agent's median" in lag.sentence
    assert lag.table is not None and len(lag.table) and "added per turn (ms)" in lag.table.columns
    knees = sections.knees(run, b)
    assert "Rust agent's median" in knees.sentence and "the floor" in knees.table.to_string()
    claims = sections.load_claims(run, b).set_index(["endpoint", "sessions (N)"])
    assert claims.loc[("chat", 4), "verdict"] == "contradicted"


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_scale_notebook_and_the_index_show_knees_and_the_replay_source(scale_run):
    from langbench.report import render as report
    assert "scale" in report.notebooks_for(scale_run)
    assert report.render(scale_run, notebooks=("scale",)) == 0
    page = (scale_run / "html" / "scale-nocode.html").read_text()
    assert "Each client&#39;s knee" in page or "Each client's knee" in page
    assert "knee at 1 %: sessions" in page and "N = 4" in page and "none up to N = 16" in page
    assert "SDK share (%)" in page and "Flagged and failed batches" in page and "server late" in page
    assert "Traceback" not in page and "tps_received" not in page
    index = (scale_run / "index.html").read_text()
    assert "could not be computed" not in index  # the single-request verdicts stand beside the knees
    assert "replays" in index or "captured run cap-synthetic" in index
    assert "no server-side finding comes from this run" in index
    assert "Sessions at scale: each client&#39;s knee" in index and "N = 4" in index
    assert "language matters less than expected" in index
    assert "c-contradicted" in index and "c-supported" in index


def test_a_run_without_concurrency_does_not_get_the_scale_notebook(tmp_path):
    from synthetic import make_run

    from langbench.report import render as report
    run_dir = make_run(tmp_path / "plain", reps=2, seed=3)
    assert "scale" not in report.notebooks_for(run_dir)


def test_a_replay_run_from_before_the_arrival_stamp_is_measured_over_the_floor(scale_run, tmp_path):
    """Its chunks carry send stamps but no arrival: the lag is shown, the added time is over the
    Rust floor (the lag alone would miss the send delay), and no sentence shows a missing number."""
    import shutil

    from langbench.analysis.findings import Run
    from langbench.report.sections import scale as sections
    old = tmp_path / "replay-scale-old"
    shutil.copytree(scale_run, old, ignore=shutil.ignore_patterns("html", "notebooks", "index.html"))
    records = storage.read_jsonl(old / "records.jsonl")
    for r in records:
        if r.get("lag_ms"):
            del r["lag_ms"]["send"]
    (old / "records.jsonl").unlink()
    storage.append_jsonl(old / "records.jsonl", records)
    run = Run.load(old)
    b = scale.batches(run)
    assert set(b.loc[~b["failed"], "added_basis"]) == {"floor"} and b["lag_send_ms"].isna().all()
    lag = sections.lag(run, sections.described(b))
    assert "nan" not in lag.sentence and "send delay 0" not in lag.sentence
    assert "Rust agent's median" in lag.sentence and "lag p50 (ms)" in lag.table.columns
