"""The sweep: plan, validation, resume after SIGKILL, a killed Ollama, manifest."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from langbench.run import params as params_mod
from langbench import storage
from langbench.run import plan, sweep

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny.yaml"
ROOT = Path(__file__).resolve().parents[1]


def tiny_doc() -> dict:
    return yaml.safe_load(TINY.read_text())


def write_params(tmp_path: Path, doc: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


# --- plan ---------------------------------------------------------------------------------

def test_quick_plan_is_the_seeds_18_configs_for_both_agents_and_modes():
    p = params_mod.load(ROOT / "parameters" / "quick.yaml")
    batches = plan.build(p)
    assert len(plan.configs(p)) == 18
    agents = [b for b in batches if b.agent != "null"]
    assert len(agents) == 18 * 2 * 2 * p.batches
    assert len({(b.config_id, b.mode, b.agent) for b in agents}) == 72
    nulls = [b for b in batches if b.agent == "null"]
    assert len(nulls) == 18 * p.batches and all(b.mode == "baseline" for b in nulls)
    # every cell's batches are independent processes spread over the sweep, not back to back
    orders = collections.defaultdict(list)
    for b in agents:
        orders[(b.config_id, b.mode, b.agent)].append(b.order)
    assert all(len(o) == p.batches and max(o) - min(o) > 10 for o in orders.values())


def test_tr112_is_the_seeds_study_on_gemma3_latest():
    p = params_mod.load(ROOT / "parameters" / "tr112.yaml")
    assert p.model == "gemma3:latest" and p.server["host"] == "http://127.0.0.1:11434"
    assert p.matrix == {"num_gpu": [60, 80, 120], "num_ctx": [256, 512, 1024], "temperature": [0.6, 0.8]}
    assert p.baseline == {} and p.warmups >= 1
    # sequential (issue 26) with the seed's scale as its most: 5 measured runs per cell, one a round
    assert p.stop == {"rule": "sequential", "min_batches": 2, "max_batches": 5}
    assert p.batches * p.repetitions == 5
    words = len(p.prompts[0].split())
    assert "800 to 1000 words" in p.prompts[0] and words > 30
    assert len(plan.build(p)) == 72 * 5


def test_plan_is_deterministic_for_a_seed_and_changes_with_it(tmp_path):
    doc = tiny_doc()
    a = plan.build(params_mod.load(write_params(tmp_path, doc, "a.yaml")))
    b = plan.build(params_mod.load(write_params(tmp_path, doc, "b.yaml")))
    assert [x.batch_id for x in a] == [x.batch_id for x in b]
    quick = params_mod.load(ROOT / "parameters" / "quick.yaml")
    orders = set()
    for seed in range(5):
        quick.raw["order"]["seed"] = seed
        orders.add(tuple(x.config_id for x in plan.build(quick)[::4]))
    assert len(orders) > 1


def test_plan_is_balanced_abba_within_each_config():
    p = params_mod.load(ROOT / "parameters" / "quick.yaml")
    batches = plan.build(p)
    by_config = collections.defaultdict(list)
    for b in batches:
        if b.agent != "null" and b.batch_id.endswith("-b1"):  # one round: the ABBA unit
            by_config[b.config_id].append(b)
    first_agent, first_mode = collections.Counter(), collections.Counter()
    for cells in by_config.values():
        agents = [c.agent for c in cells]
        modes = [c.mode for c in cells]
        assert agents[0] == agents[3] != agents[1] == agents[2]  # A B B A
        assert modes[0] == modes[1] != modes[2] == modes[3]
        first_agent[agents[0]] += 1
        first_mode[modes[0]] += 1
    assert first_agent["python"] == first_agent["rust"] == 9
    assert first_mode["baseline"] == first_mode["chimera"] == 9
    assert [b.order for b in plan.build(p)] == list(range(len(plan.build(p))))


def test_batches_start_cold_then_warmups_then_measured_with_exact_options():
    p = params_mod.load(TINY)
    for b in plan.build(p):
        phases = [r.phase for r in b.runs]
        assert phases == ["cold"] + ["warmup"] * p.warmups + ["measured"] * (p.repetitions + p.uncached_repetitions)
        assert [r.cache for r in b.runs][-1] == "uncached"
        fixed = {"num_predict": 4, "seed": 7}
        assert b.options == (fixed if b.mode == "baseline" else {**b.config, **fixed})
        jobs = plan.jobs_document(p, b, list(b.runs))
        assert [r["warmup"] for r in jobs["runs"]] == [True, True, False, False, False]
        # the uncached run's prompt is the base prompt behind a prefix no other run has
        uncached = jobs["prompts"][jobs["runs"][-1]["prompt"]]
        assert uncached.endswith(p.prompts[0]) and uncached != p.prompts[0]
        assert all(jobs["prompts"][r["prompt"]] == p.prompts[0] for r in jobs["runs"][:-1])


# --- validation ---------------------------------------------------------------------------

def _mutate(doc, path, value):
    *parents, last = path
    node = doc
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return doc


BAD = {
    "unknown_top_key": (["colour"], "blue", "colour"),
    "unknown_nested_key": (["fixed", "num_predcit"], 5, "num_predcit"),
    "wrong_type": (["repetitions"], "three", "repetitions"),
    "negative_value": (["warmups"], -1, "warmups"),
    "empty_matrix": (["matrix"], {}, "matrix"),
    "empty_axis": (["matrix", "num_ctx"], [], "matrix.num_ctx"),
    "unknown_agent": (["agents"], ["python", "go"], "agents[1]"),
    "missing_key": (["model"], KeyError, "model"),
    "bad_host": (["server", "host"], "ftp://x", "server.host"),
    "prompt_file_missing": (["prompts"], [{"file": "no/such/prompt.txt"}], "prompts[0].file"),
    "seed_in_matrix": (["matrix", "seed"], [1, 2], "matrix.seed"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_parameter_file_exits_2_naming_file_and_key(case, tmp_path):
    path_, value, key = BAD[case]
    bad = write_params(tmp_path, _mutate(tiny_doc(), path_, value))
    outputs = tmp_path / "outputs"
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(bad), "--run-id", "x"],
                          capture_output=True, text=True, env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)})
    assert done.returncode == 2, done.stderr
    assert str(bad) in done.stderr and key in done.stderr, done.stderr
    assert not outputs.exists()
    assert not (ROOT / "outputs" / "x").exists()


def test_not_yaml_and_not_a_mapping_exit_2(tmp_path):
    for text in ("a: [1, 2\n", "- just\n- a list\n"):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(params_mod.ParamsError, match=str(bad)):
            params_mod.load(bad)


def test_resuming_a_run_id_with_other_parameters_is_refused(tmp_path):
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    storage.write_json(run_dir / "manifest.json", {"parameters_digest": "something else"})
    with pytest.raises(storage.RunDirError, match="exists with other parameters.*--allow-mixed"):
        sweep.prepare(TINY, "r1", tmp_path)


def test_a_run_stored_before_a_default_was_added_resumes_as_one_run(tmp_path):
    """A run started by a version without a default (here `endpoint`) stored its parameters
    without it: the same parameters with this version's defaults filled in resume it, and its
    first session's digest counts as this one; other parameters are still refused."""
    p = params_mod.load(TINY)
    old_raw = {k: v for k, v in p.raw.items() if k != "endpoint"}
    old_digest = params_mod.digest_of(old_raw, p.prompts)
    assert old_digest != p.digest()
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    manifest = {"parameters_digest": old_digest, "parameters": old_raw, "prompts": list(p.prompts)}
    storage.write_json(run_dir / "manifest.json", manifest)
    sweep.prepare(TINY, "r1", tmp_path)  # not refused
    sweep.adopt_defaults(manifest, p)
    assert manifest["parameters_digest"] == p.digest()
    assert manifest["parameters_digest_aliases"] == [old_digest]
    first = {"parameters_digest": old_digest, "ollama_version": "0.11.4"}
    now = {"parameters_digest": p.digest(), "ollama_version": "0.11.4"}
    assert sweep.provenance_differences(first, now, manifest["parameters_digest_aliases"]) == []
    assert sweep.provenance_differences(first, now)  # without the alias: a difference, named
    other = {**old_raw, "batches": old_raw["batches"] + 1}
    storage.write_json(run_dir / "manifest.json", {**manifest, "parameters": other,
                                                   "parameters_digest": params_mod.digest_of(other, p.prompts)})
    with pytest.raises(storage.RunDirError, match="exists with other parameters"):
        sweep.prepare(TINY, "r1", tmp_path)


# --- against the real Ollama --------------------------------------------------------------

def _run_cli(run_id: str, outputs: Path, params: Path = TINY, preexec_fn=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "langbench", "sweep", str(params), "--run-id", run_id],
                            env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec_fn)


def _signals_blocked_and_ignored() -> None:
    """A parent that left SIGTERM and SIGINT blocked and ignored (both survive exec)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _wait_for_records(path: Path, n: int, timeout: float = 120) -> float:
    """Wait until `path` holds n records; returns the deadline for what the caller waits on next."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(storage.read_jsonl(path)) < n:
        time.sleep(0.05)
    return deadline


def _ok_run_ids(run_dir: Path) -> list[str]:
    return [r["run_id"] for r in storage.read_jsonl(run_dir / "records.jsonl")
            if r["outcome"] == "ok" and r["phase"] != "resume"]


@pytest.fixture(scope="module")
def reference_run(tiny_run) -> Path:
    """An uninterrupted tiny sweep."""
    return tiny_run


def one_config(tmp_path: Path) -> tuple[Path, list[str]]:
    """tiny.yaml on one of its configs (num_ctx 256, the clamp case: a reload between the
    modes), for the tests that interrupt a sweep and resume it: 5 batches, 25 records, where
    the whole file's 10 batches only made each kill-and-resume cycle twice as long. Returns
    the file and its planned run ids, which an uninterrupted sweep records each once as ok
    (test_uninterrupted_sweep_writes_every_planned_run_and_the_manifest checks that of tiny.yaml)."""
    doc = tiny_doc()
    doc["matrix"] = {**doc["matrix"], "num_ctx": [256]}
    path = write_params(tmp_path, doc, "one-config.yaml")
    return path, [r.run_id for b in plan.build(params_mod.load(path)) for r in b.runs]


def test_uninterrupted_sweep_writes_every_planned_run_and_the_manifest(reference_run):
    p = params_mod.load(TINY)
    planned = [r.run_id for b in plan.build(p) for r in b.runs]
    assert sorted(_ok_run_ids(reference_run)) == sorted(planned)
    manifest = storage.read_json(reference_run / "manifest.json")
    for key in ("parameters", "git", "ollama_version", "model", "host", "packages",
                "started_at", "ended_at", "counts", "sessions"):
        assert manifest.get(key) is not None, key
    assert manifest["model"]["gguf_sha256"] and manifest["model"]["quantization_level"] == "Q4_K_M"
    assert manifest["host"]["cpu_model"] and manifest["complete"] is True
    assert manifest["counts"]["failed_runs"] == 0
    procs = storage.read_jsonl(reference_run / "processes.jsonl")
    assert len(procs) == len(plan.build(p))
    for r in procs:
        assert r["startup_ms"] > 0 and r["user_cpu_s"] + r["system_cpu_s"] > 0
        assert 1e6 < r["peak_rss_bytes"] < 1e9
    rss = {a: max(r["peak_rss_bytes"] for r in procs if r["agent"] == a) for a in ("python", "rust")}
    assert rss["rust"] < rss["python"], rss  # the runner's own RSS is not counted in either
    summary = (reference_run / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 2 * 2 * 2 + 2  # header + agent × config × mode + the null client's baselines


@pytest.mark.slow
def test_resume_after_sigkill_of_the_runner_loses_no_record_and_repeats_none(tmp_path):
    """Kill the runner (and its whole process group) at random points, resume each time: once
    during its start-up (server starting, model loading), then three times at a random moment
    after a random number of new records (mid-batch or between batches), so that every
    session makes progress and the number of sessions does not depend on this host's speed."""
    rng = random.Random(112)
    params, planned = one_config(tmp_path)
    records = tmp_path / "r" / "records.jsonl"
    kills = 0
    for attempt in range(4):
        seen = len(storage.read_jsonl(records)) if records.exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "langbench", "sweep", str(params), "--run-id", "r"],
                                env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        if attempt == 0:
            time.sleep(rng.uniform(0.5, 2.0))
        else:
            deadline = time.monotonic() + 120
            want = seen + rng.randint(1, 6)
            while proc.poll() is None and time.monotonic() < deadline and \
                    len(storage.read_jsonl(records)) < want:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:
            break  # finished before the kill
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        time.sleep(0.5)  # the embedded server dies with its parent (PDEATHSIG)
    assert kills >= 2
    if proc.returncode != 0:
        proc = _run_cli("r", tmp_path, params)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    got = _ok_run_ids(tmp_path / "r")
    assert len(got) == len(set(got)), "a run was recorded twice"
    assert sorted(got) == sorted(planned)
    keys = [(r["run_id"], r["attempt"]) for r in storage.read_jsonl(tmp_path / "r" / "records.jsonl")]
    assert len(keys) == len(set(keys)), "a record was merged twice"
    manifest = storage.read_json(tmp_path / "r" / "manifest.json")
    assert manifest["complete"] is True and len(manifest["sessions"]) >= 2


@pytest.mark.slow
def test_killed_ollama_mid_sweep_is_recorded_and_the_sweep_finishes(tmp_path):
    params, planned = one_config(tmp_path)
    proc = _run_cli("k", tmp_path, params)
    records = tmp_path / "k" / "records.jsonl"
    deadline = _wait_for_records(records, 6)
    runner = psutil.Process(proc.pid)
    while time.monotonic() < deadline:  # kill while an agent is mid-batch
        children = runner.children()
        agent = [c for c in children if "agent" in " ".join(c.cmdline())]
        serve = [c for c in children if c.cmdline()[1:2] == ["serve"]]
        if agent and serve:
            os.killpg(serve[0].pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    else:
        pytest.fail("no agent process seen")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "restarted" in err
    manifest = storage.read_json(tmp_path / "k" / "manifest.json")
    assert manifest["sessions"][-1]["server_restarts"] >= 1
    failed = [r for r in storage.read_jsonl(records) if r["outcome"] != "ok"]
    assert failed, "the runs in flight when Ollama died are recorded as failures"
    assert manifest["counts"]["records"] == len(storage.read_jsonl(records))
    # every planned run is finished: retried to ok, or recorded failed after its retries
    got = set(_ok_run_ids(tmp_path / "k"))
    fails = collections.Counter(r["run_id"] for r in failed if r["phase"] != "resume")
    assert all(rid in got or fails[rid] == 2 for rid in planned)


def test_an_agent_killed_by_the_batch_timeout_is_recorded_failed_and_the_sweep_ends(tmp_path):
    doc = tiny_doc()
    doc["matrix"] = {"num_ctx": [512]}
    doc["agents"] = ["python"]
    doc["timeouts"] = {"run_s": 30, "batch_s": 0.05}  # killed before its first request
    proc = _run_cli("t", tmp_path, write_params(tmp_path, doc))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    records = storage.read_jsonl(tmp_path / "t" / "records.jsonl")
    planned = [r.run_id for b in plan.build(params_mod.load(write_params(tmp_path, doc, "q.yaml"))) for r in b.runs]
    assert {r["run_id"] for r in records} == set(planned)
    assert all(r["outcome"] == "error" and r["error"]["kind"] == "agent_exit" for r in records)
    assert len(records) == 2 * len(planned)  # the first attempt and its one retry
    manifest = storage.read_json(tmp_path / "t" / "manifest.json")
    assert manifest["counts"]["failed_runs"] == len(planned) and manifest["complete"] is True


def test_missing_rust_agent_is_a_clear_error_before_anything_is_written(tmp_path, monkeypatch):
    from langbench import paths
    from langbench.run import agents
    monkeypatch.setattr(paths, "rust_agent_bin", lambda: tmp_path / "no-such-agent")
    with pytest.raises(agents.AgentMissing, match="make setup"):
        sweep.prepare(TINY, "m", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_stops_the_sweep_with_no_process_left_and_it_resumes(tmp_path):
    params, planned = one_config(tmp_path)
    proc = _run_cli("s", tmp_path, params, preexec_fn=_signals_blocked_and_ignored)
    _wait_for_records(tmp_path / "s" / "records.jsonl", 4)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the runner has an embedded server (and maybe an agent) running"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "resume" in err
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == []
    proc = _run_cli("s", tmp_path, params)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert sorted(_ok_run_ids(tmp_path / "s")) == sorted(planned)
