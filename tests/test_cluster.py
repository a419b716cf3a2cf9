"""A study over Dask workers (issue 16): the worker's GPU, the worker as a block, and the tiny
cluster sweep on two real embedded servers — whole, and with one worker killed mid-batch. Which
worker runs which batches (the schedule) is tests/test_schedule.py's."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from langbench.analysis import findings, stats
from langbench.run import cluster
from langbench.report.sections import validity

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-cluster.yaml"


class FakeNvml:
    """NVML as pynvml answers on a two-GPU host (a GPU host cannot be had in make test)."""
    UUIDS = ["GPU-aaaa", "GPU-bbbb"]

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return 2
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetHandleByUUID(self, uuid): return self.UUIDS.index(uuid)
    def nvmlDeviceGetIndex(self, h): return h
    def nvmlDeviceGetUUID(self, h): return self.UUIDS[h]
    def nvmlDeviceGetName(self, h): return "NVIDIA H200"
    def nvmlSystemGetDriverVersion(self): return "570.1"


@pytest.mark.parametrize("visible, index", [("1", 1), ("GPU-aaaa", 0), ("", None), ("0,1", None)])
def test_worker_gpu_is_the_one_cuda_visible_devices_names(visible, index):
    env = {"CUDA_VISIBLE_DEVICES": visible}
    gpu = cluster.worker_gpu(env, FakeNvml())
    assert (gpu or {}).get("index") == index
    if gpu:
        assert gpu["uuid"] == FakeNvml.UUIDS[index] and gpu["name"] == "NVIDIA H200"


@pytest.mark.parametrize("env, gpus", [({}, [0, 1]), ({"CUDA_VISIBLE_DEVICES": "1"}, [1]),
                                       ({"CUDA_VISIBLE_DEVICES": "GPU-bbbb,0"}, [1, 0]),
                                       ({"CUDA_VISIBLE_DEVICES": ""}, [])])
def test_local_cluster_gpus_are_those_cuda_visible_devices_names(env, gpus):
    assert cluster.nvml_gpus(FakeNvml(), env) == gpus


@pytest.mark.parametrize("visible", ["2", "GPU-cccc"])
def test_a_cuda_visible_device_the_host_lacks_is_named(visible):
    with pytest.raises(cluster.ClusterError, match=f"CUDA_VISIBLE_DEVICES={visible}: {visible} is not one of "
                                                   "this host's 2 GPU"):
        cluster.nvml_gpus(FakeNvml(), {"CUDA_VISIBLE_DEVICES": visible})


def test_workers_serving_other_model_digests_are_refused_unless_mixed_is_allowed():
    infos = {"a": {"worker": "h/0", "model_digest": "aa"}, "b": {"worker": "h/1", "model_digest": "bb"}}
    with pytest.raises(ValueError, match="different model digests.*--allow-mixed"):
        cluster.check_workers(infos, allow_mixed=False)
    cluster.check_workers(infos, allow_mixed=True)


def _blocked_frame(worker_shift: float) -> pd.DataFrame:
    """Warm runs of 3 configs × 2 agents, 2 batches per cell on each of 2 workers: throughput
    10 (python) / 12 (rust) plus a seeded noise, plus `worker_shift` on worker b."""
    rng = np.random.default_rng(5)
    rows = []
    for c in ("c1", "c2", "c3"):
        for agent, level in (("python", 10.0), ("rust", 12.0)):
            for worker in ("h/a", "h/b"):
                for k in range(2):
                    batch = f"{c}-baseline-{agent}-{worker[-1]}{k}"
                    for r in range(2):
                        rows.append({"run_id": f"{batch}-r{r}", "batch_id": batch, "config_id": c, "mode": "baseline",
                                     "agent": agent, "worker": worker, "ttft_ms": 50.0 + rng.normal(0, 1),
                                     "throughput_tps": level + (worker_shift if worker == "h/b" else 0.0)
                                     + rng.normal(0, 0.05)})
    return pd.DataFrame(rows)


def test_worker_effect_is_found_when_one_worker_is_faster_and_not_when_none_is():
    shifted = stats.worker_effect(_blocked_frame(3.0), "throughput_tps")
    assert shifted["workers"] == 2 and shifted["batches"] == 24
    assert shifted["p"] < 0.001 and shifted["spread"] == pytest.approx(3.0, abs=0.1)
    assert stats.worker_effect(_blocked_frame(0.0), "throughput_tps")["p"] > 0.01


def test_aa_pairs_within_workers_hide_a_worker_effect_that_pairs_across_show():
    df = _blocked_frame(3.0)  # identical treatments, but worker b is 3 tok/s faster
    within = stats.aa_paired_splits(df, "throughput_tps", 0.2, pairing="within", splits=20)
    across = stats.aa_paired_splits(df, "throughput_tps", 0.2, pairing="across", splits=20)
    assert len(within) == len(across) == 40  # 20 splits per agent
    assert within["differs"].mean() < 0.2 < 0.8 < across["differs"].mean()


def _sweep_cmd(run_id: str) -> list[str]:
    return [sys.executable, "-m", "langbench", "sweep", str(TINY), "--cluster", "local", "--workers", "2",
            "--run-id", run_id]


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]


def _assert_exactly_the_plan(run_dir: Path) -> list[dict]:
    """Every planned run has exactly one ok record, none is recorded twice, both workers ran."""
    planned = {r["run_id"] for b in json.loads((run_dir / "plan.json").read_text())["batches"] for r in b["runs"]}
    recs = [r for r in _records(run_dir) if r["phase"] != "resume"]
    keys = [(r["run_id"], r["attempt"]) for r in recs]
    assert len(keys) == len(set(keys)), "a run recorded twice"
    ok = collections.Counter(r["run_id"] for r in recs if r["outcome"] == "ok")
    assert set(ok) == planned and set(ok.values()) == {1}
    return recs


@pytest.mark.slow
def test_two_worker_local_cluster_yields_the_planned_records_spread_over_both(tmp_path):
    done = subprocess.run(_sweep_cmd("two"), env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "two"
    recs = _assert_exactly_the_plan(run_dir)
    assert len(recs) == 30  # 2 rounds × (4 agent batches + 1 null) × (cold + 2 measured)
    workers = collections.defaultdict(set)
    for r in recs:
        workers[r["worker"]].add((r["mode"], r["agent"]))
    assert len(workers) == 2  # both workers ran batches ...
    assert all(cells == {("baseline", "python"), ("baseline", "rust"), ("chimera", "python"),
                         ("chimera", "rust"), ("baseline", "null")} for cells in workers.values())  # ... every cell
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert sorted(w["worker"] for w in manifest["workers"]) == sorted(workers)
    assert len({w["model_digest"] for w in manifest["workers"]}) == 1
    assert all(w["server"]["embedded"] and w["ollama_version"] for w in manifest["workers"])
    assert manifest["complete"] and manifest["counts"]["records"] == 30
    run = findings.Run.load(run_dir)  # the analysis blocks on the worker
    results, aa = validity.worker_sections(run)
    assert sorted(results.table["worker"].unique()) == sorted(workers)
    assert set(results.table["batches"]) == {2}  # every agent: one baseline + one chimera batch per worker
    assert "pair within each worker" in results.sentence
    assert set(aa.table["pairs"]) == {"within workers", "across workers"}
    assert "× workers" in findings.paired_claim(run, "throughput_tps", "tok/s")


def _agent_running_worker(sweep: psutil.Process) -> tuple[psutil.Process, psutil.Process] | None:
    """(a Dask worker process of the sweep's LocalCluster that is running an agent now, its
    ollama serve), or None."""
    for child in sweep.children():
        try:
            kids = child.children()
            names = [" ".join(k.cmdline()) for k in kids]
        except psutil.Error:
            continue
        serve = [k for k, n in zip(kids, names) if n.endswith("ollama serve")]
        agent = [n for n in names if "agent" in n or "null_client" in n]
        if serve and agent:
            return child, serve[0]
    return None


@pytest.mark.slow
def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(tmp_path):
    env = {**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)}
    proc = subprocess.Popen(_sweep_cmd("kill"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        sweep, victim, deadline = psutil.Process(proc.pid), None, time.monotonic() + 300
        records = tmp_path / "kill" / "records.jsonl"
        while victim is None and proc.poll() is None and time.monotonic() < deadline:
            if records.exists() and records.stat().st_size:  # a batch done: well into the sweep
                victim = _agent_running_worker(sweep)
            time.sleep(0.05)
        assert victim is not None, "no worker was seen running an agent"
        worker, serve = victim
        worker.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        serve_gone = not serve.is_running() or serve.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        serve_gone = True
    assert serve_gone, "the killed worker's ollama serve outlived it"
    manifest = json.loads((tmp_path / "kill" / "manifest.json").read_text())
    if proc.returncode != 0 or not manifest.get("complete"):  # Dask gave up on the lost task: a resume runs it
        done = subprocess.run(_sweep_cmd("kill"), env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    _assert_exactly_the_plan(tmp_path / "kill")


def test_ctrl_c_stops_a_local_cluster_sweep_with_no_traceback_and_no_process_left(tmp_path):
    """Ctrl-C in a terminal signals the whole foreground process group: the runner, its Dask
    workers, their servers and agents. The runner stops the workers; they print no traceback."""
    env = {**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)}
    proc = subprocess.Popen(_sweep_cmd("int"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        records, deadline = tmp_path / "int" / "records.jsonl", time.monotonic() + 300
        while not (records.exists() and records.stat().st_size) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 4  # two workers, each with its ollama serve
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; rerun with the same --run-id to resume" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [p.cmdline() for p in alive]


def test_a_run_whose_workers_serve_other_weights_says_so_in_every_header():
    manifest = {"mixed": ["model_digest"], "workers": [{"worker": "h/gpu0", "model_digest": "a" * 64},
                                                       {"worker": "h/gpu1", "model_digest": "b" * 64}]}
    run = findings.Run(Path("."), manifest, pd.DataFrame(), pd.DataFrame(), [], pd.DataFrame(), pd.DataFrame())
    assert run.mixed_sentence().startswith("This run is mixed: its workers serve different model digests "
                                           "(h/gpu0: aaaaaaaaaaaa, h/gpu1: bbbbbbbbbbbb), let through with --allow-mixed")


@pytest.mark.parametrize("args, code, says", [
    (["--workers", "2"], 2, "--workers 2 starts a local Dask cluster: add --cluster local"),
    (["--cluster", "local", "--workers", "0"], 2, "--workers 0: give at least one worker"),
    pytest.param(["--cluster", "local"], 1, "--cluster local found no GPU through NVML: pass --workers N",
                 marks=pytest.mark.skipif(bool(cluster.nvml_gpus()), reason="this host has a GPU")),
])
def test_cluster_options_that_cannot_work_are_named_and_leave_no_run(tmp_path, args, code, says):
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(TINY), "--run-id", "bad", *args],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == code and says in done.stderr
    assert not (tmp_path / "bad").exists()
