"""Every CPU, every fault (issue 8): native SIMD without AMX, the num_batch clamp, no orphan
agent, no silent truncation, one writer per run, no silent mix, failures kept visible,
shareable files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from cli_runs import fixture_params
from langbench import paths, storage
from langbench.analysis import findings
from langbench.run import plan, provision, server, sweep
from langbench.run import params as params_mod
from langbench.report.sections import sweep as sweep_sections

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny.yaml"


def _cli(*args: str, outputs: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "langbench", *args], capture_output=True, text=True,
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)}, timeout=600, **kw)


# --- 1. native SIMD, never AMX, a cache key per CPU -----------------------------------------

def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_embedded_servers_simd_matches_this_hosts_cpu(ollama):
    """The CPU backend's features in the server log are what /proc/cpuinfo offers: AVX-512
    where the host has it, AVX2 otherwise; AMX never (the cgo build cannot compile it)."""
    httpx.post(f"{ollama.url}/api/generate", timeout=120, json={
        "model": paths.EMBEDDED_MODEL, "prompt": "x", "raw": True, "stream": False,
        "options": {"num_predict": 1}})
    reported = server.log_simd(ollama.log_path.read_text(errors="replace"))
    assert reported, "the server log names no CPU features: did the runner start?"
    flags = _cpu_flags()
    assert "AVX2" in reported
    if "avx512f" in flags:
        assert "AVX512" in reported, (reported, "the host has AVX-512")
    else:
        assert "AVX512" not in reported, reported
    assert not any(f.startswith("AMX") for f in reported), reported


def test_the_cache_key_names_what_the_binary_was_built_for(monkeypatch, tmp_path):
    key = paths.native_target()
    assert paths.ollama_cache_bin().parent.parent.name == key
    assert "-mno-amx-tile" in paths.NATIVE_CFLAGS and "-march=native" in paths.NATIVE_CFLAGS
    # another CPU target (here: a compiler told to build for x86-64-v2) gets another key
    fake_cc = tmp_path / "cc"
    fake_cc.write_text('#!/bin/sh\nexec cc "$@" -march=x86-64-v2\n')
    fake_cc.chmod(0o755)
    monkeypatch.setenv("CC", str(fake_cc))
    assert paths.native_target() != key


# --- 2. the num_batch clamp for servers older than 0.12.0 ------------------------------------

def test_the_clamp_is_sent_only_to_old_servers_and_only_where_it_changes_something():
    assert plan.needs_num_batch_clamp("0.11.4") and plan.needs_num_batch_clamp("0.0.0")
    assert not plan.needs_num_batch_clamp("0.12.0") and not plan.needs_num_batch_clamp("0.13.5")
    assert plan.clamp_num_batch({"num_ctx": 256, "seed": 1}) == (
        {"num_ctx": 256, "seed": 1, "num_batch": 256}, {"num_batch_from": 512, "num_batch_to": 256})
    assert plan.clamp_num_batch({"num_ctx": 1024}) == ({"num_ctx": 1024}, None)
    assert plan.clamp_num_batch({"num_ctx": 256, "num_batch": 128})[1] is None
    assert plan.clamp_num_batch({})[1] is None  # Ollama's defaults: nothing to clamp


def test_unclamped_num_ctx_below_num_batch_still_aborts_this_ollama(ollama):
    """The day the pin moves to 0.12.0+, this fails and says the shim can go."""
    version = server.server_version(ollama.url)
    body = {"model": paths.EMBEDDED_MODEL, "prompt": "The", "raw": True, "stream": False,
            "options": {"num_ctx": 256, "num_predict": 2}}
    r = httpx.post(f"{ollama.url}/api/generate", json=body, timeout=120)
    assert plan.needs_num_batch_clamp(version), f"Ollama {version} clamps itself: remove the shim"
    assert r.status_code >= 500, (version, r.status_code, r.text[:200])
    clamped, _ = plan.clamp_num_batch(body["options"])
    r = httpx.post(f"{ollama.url}/api/generate", json={**body, "options": clamped}, timeout=120)
    assert r.status_code == 200 and r.json()["done"], r.text[:200]


# --- 3. no orphan agent -----------------------------------------------------------------------

def test_sigkill_of_the_runner_alone_leaves_no_agent_and_no_later_record(tmp_path):
    doc = yaml.safe_load(TINY.read_text())
    doc.update(repetitions=8, agents=["python", "rust"])
    doc["fixed"]["num_predict"] = 24
    params = tmp_path / "long.yaml"
    params.write_text(yaml.safe_dump(doc))
    runner = subprocess.Popen([sys.executable, "-m", "langbench", "sweep", str(params), "--run-id", "o"],
                              env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its own group: we kill its PID only
    deadline = time.monotonic() + 180
    agent = None
    while time.monotonic() < deadline and agent is None:
        for child in psutil.Process(runner.pid).children():
            try:
                cmdline = child.cmdline()
            except psutil.Error:  # an agent that ended between listing and reading: the next one
                continue
            if "--jobs" in cmdline and storage.read_jsonl(Path(cmdline[-1])):
                agent = child  # it has written at least one record: mid-batch
        time.sleep(0.05)
    assert agent is not None, "no agent seen mid-batch"
    killed_at = time.time()
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    time.sleep(3)  # an orphan would now see the server gone and record its runs as failed
    raw_files = sorted((tmp_path / "o" / "jobs").glob("*.records.jsonl"))
    late = [r["run_id"] for f in raw_files for r in storage.read_jsonl(f) if r["t0_unix"] > killed_at]
    assert late == [], f"records written after the runner was killed: {late}"
    gone, alive = psutil.wait_procs([agent], timeout=1)
    assert alive == [], "the agent outlived its runner"
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


# --- 4. no silent truncation --------------------------------------------------------------------

def test_a_torn_last_line_is_dropped_and_cut_off_with_repair(tmp_path):
    f = tmp_path / "r.jsonl"
    f.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')
    assert storage.read_jsonl(f) == [{"a": 1}, {"a": 2}]
    assert f.read_bytes().endswith(b'{"a": ')  # not repaired unless asked
    assert storage.read_jsonl(f, repair=True) == [{"a": 1}, {"a": 2}]
    assert f.read_bytes() == b'{"a": 1}\n{"a": 2}\n'


def test_a_malformed_middle_line_is_an_error_naming_file_and_line_and_cuts_nothing(tmp_path):
    f = tmp_path / "r.jsonl"
    content = b'{"a": 1}\n{"a": 2\n{"a": 3}\n{"a": 4}\n'
    f.write_bytes(content)
    with pytest.raises(storage.RunDirError, match=r"r\.jsonl:2: malformed JSON line.*2 line\(s\) after it"):
        storage.read_jsonl(f, repair=True)
    assert f.read_bytes() == content


def test_a_resume_over_a_corrupt_records_file_exits_2_and_changes_nothing(tiny_run, tmp_path):
    run = tmp_path / "c"
    shutil.copytree(tiny_run, run)
    records = run / "records.jsonl"
    lines = records.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"run_id": "half a rec\n'
    records.write_bytes(b"".join(lines))
    done = _cli("sweep", str(fixture_params("tiny.yaml", tmp_path)), "--run-id", "c", outputs=tmp_path)
    assert done.returncode == 2, done.stderr
    assert f"{records}:4: malformed JSON line" in done.stderr
    assert records.read_bytes() == b"".join(lines)


# --- 5. one writer per run ------------------------------------------------------------------------

def test_a_second_sweep_or_render_into_a_busy_run_exits_2(tiny_run, tmp_path):
    run = tmp_path / "busy"
    shutil.copytree(tiny_run, run)
    before = (run / "records.jsonl").read_bytes()
    with storage.locked(run, "sweep"):
        for args in (("sweep", str(fixture_params("tiny.yaml", tmp_path)), "--run-id", "busy"), ("render", str(run))):
            done = _cli(*args, outputs=tmp_path)
            assert done.returncode == 2, (args, done.stderr)
            assert "in use by langbench sweep (pid" in done.stderr, done.stderr
    assert (run / "records.jsonl").read_bytes() == before
    assert not (run / "index.html").exists()


def _hold_build(lock: str, seconds: float, then: str) -> None:  # another process building llama-server
    with storage.building(Path(lock), "a test's build"):
        time.sleep(seconds)
        Path(then).write_text("built")


def _holding(lock: Path, seconds: float, then: Path):
    import multiprocessing
    proc = multiprocessing.get_context("spawn").Process(target=_hold_build, args=(str(lock), seconds, str(then)))
    proc.start()
    deadline = time.monotonic() + 30
    while storage.build_holder(lock) is None:
        assert proc.is_alive() and time.monotonic() < deadline, "the holding process never took the lock"
        time.sleep(0.05)
    return proc


def test_llama_server_is_built_by_the_venvs_ninja_which_schedules_the_longest_path_first():
    """provision.ninja: the venv's pinned ninja (constraints.txt), not whatever PATH holds, so
    every machine builds llama-server with the same scheduler; 1.12 is the first release whose
    scheduler starts the deepest chain of the graph first (server-context's 50 s unit waited
    for every library under the Makefiles)."""
    tool = provision.ninja()
    assert tool == str(Path(sys.executable).with_name("ninja"))
    version = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout
    assert tuple(int(part) for part in version.split(".")[:2]) >= (1, 12), version


def test_a_second_llama_server_build_waits_for_the_one_in_progress_and_then_finds_it_built(tmp_path):
    """make test builds llama-server in a process of its own beside the tests; a sweep that needs
    it or another clone's setup takes the same lock: it waits
    for that build instead of starting a second one into the same folder."""
    lock, made = tmp_path / "build.lock", tmp_path / "llama-server"
    proc = _holding(lock, 1.5, made)
    assert storage.build_holder(lock).startswith(f"a test's build (pid {proc.pid})")
    waited = []
    with storage.building(lock, "the second build", waiting=waited.append):
        assert made.read_text() == "built"  # it held the lock only once the first had finished
        assert storage.build_holder(lock).startswith("the second build")
    proc.join(10)
    assert len(waited) == 1 and waited[0].startswith("a test's build"), waited
    assert storage.build_holder(lock) is None and storage.wait_built(lock, 1) is None


def test_starting_llama_server_while_it_is_built_waits_then_names_the_build_it_waited_for(tmp_path, monkeypatch):
    binary = tmp_path / "bin" / "llama-server"
    monkeypatch.setattr(paths, "llama_server_cache_bin", lambda target=None: binary)
    monkeypatch.setattr(server, "BUILD_WAIT_S", 0.5)
    proc = _holding(paths.llama_server_build_lock(), 3, tmp_path / "done")
    started = time.monotonic()
    with pytest.raises(server.ServerError, match=r"llama-server not built yet: a test's build \(pid \d+\) "
                                                 r"still holds .*build.lock after 0 s"):
        server.KINDS["llama-cpp"].start()  # a stand-in binary path: it never waits for the real build
    assert 0.5 <= time.monotonic() - started < 2.5  # it waited for the build, then gave up
    proc.join(10)
    with pytest.raises(server.ServerError, match="llama-server not found at .*make setup"):
        server.KINDS["llama-cpp"].start()  # the stand-in's build ended without a binary: the usual message


# --- 6. no silent mix -------------------------------------------------------------------------

def _unfinish(run: Path) -> str:
    """Take the last batch's records out of a finished run; return that batch's id."""
    batches = storage.read_json(run / "plan.json")["batches"]
    last = batches[-1]["batch_id"]
    keep = [r for r in storage.read_jsonl(run / "records.jsonl") if r["batch_id"] != last]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
    for f in (run / "jobs").glob(f"{last}-a*"):
        f.unlink()
    return last


def test_a_resume_on_other_conditions_is_refused_listing_them_unless_allowed(tiny_run, tmp_path):
    run = tmp_path / "m"
    shutil.copytree(tiny_run, run)
    last = _unfinish(run)
    manifest = storage.read_json(run / "manifest.json")
    first = manifest["sessions"][0]["provenance"]
    first.update(ollama_version="0.10.0", host_cpu="Some Other CPU")
    storage.write_json(run / "manifest.json", manifest)
    before = (run / "records.jsonl").read_bytes()

    done = _cli("sweep", str(fixture_params("tiny.yaml", tmp_path)), "--run-id", "m", outputs=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "ollama_version: '0.10.0' in the first session" in done.stderr
    assert "host_cpu: 'Some Other CPU'" in done.stderr
    assert "model_digest" not in done.stderr  # only what differs is listed
    assert (run / "records.jsonl").read_bytes() == before

    done = _cli("sweep", str(fixture_params("tiny.yaml", tmp_path)), "--run-id", "m", "--allow-mixed", outputs=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = storage.read_json(run / "manifest.json")
    assert manifest["mixed"] == ["host_cpu", "ollama_version"]
    assert [s["provenance"]["ollama_version"] for s in manifest["sessions"]][0] == "0.10.0"
    assert any(r["batch_id"] == last for r in storage.read_jsonl(run / "records.jsonl"))
    header = findings.Run.load(run).header()
    assert any(n.startswith("This run is mixed: its 2 sessions differ in host_cpu") for n in header.notes)


# --- 7. failures stay visible -------------------------------------------------------------------

def test_a_record_whose_run_id_is_not_planned_is_an_error(tiny_run, tmp_path):
    run = tmp_path / "u"
    shutil.copytree(tiny_run, run)
    _unfinish(run)
    first_raw = sorted((run / "jobs").glob("*.records.jsonl"))[0]
    rec = storage.read_jsonl(first_raw)[0]
    storage.append_jsonl(first_raw, [{**rec, "run_id": "not-a-planned-run"}])
    done = _cli("sweep", str(fixture_params("tiny.yaml", tmp_path)), "--run-id", "u", outputs=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "'not-a-planned-run' is not in this run's plan" in done.stderr
    assert str(first_raw) in done.stderr


def test_failed_attempts_that_a_retry_replaced_still_count(tiny_run, tmp_path):
    run = tmp_path / "f"
    shutil.copytree(tiny_run, run)
    records = storage.read_jsonl(run / "records.jsonl")
    victim = next(r for r in records if r["phase"] == "measured")
    failed = {**victim, "attempt": 0, "outcome": "error",
              "error": {"kind": "http_500", "message": "planted"}}
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [failed, *records]))
    r = findings.Run.load(run)
    section = sweep_sections.failures(r)
    assert section.sentence == "No run failed in its final attempt."
    assert section.notes == ["1 attempts failed in all; 1 runs failed first and succeeded on a retry "
                             "(their failed attempts stay in records.jsonl and count here): http_500 1."]
    s = sweep.Sweep(params_mod.load(TINY), run)
    manifest = storage.read_json(run / "manifest.json")
    s.load_state()
    sweep.finish(s, manifest, run / "manifest.json")
    counts = storage.read_json(run / "manifest.json")["counts"]
    assert counts["failed_runs"] == 0 and counts["failed_attempts"] == 1
    assert counts["recovered_on_retry"] == 1 and counts["failed_attempts_by_kind"] == {"http_500": 1}


# --- 2 and 8 on a real sweep: the clamp recorded, the files shareable --------------------------

def test_the_tiny_sweep_clamps_num_batch_records_it_and_fails_nothing(tiny_run):
    manifest = storage.read_json(tiny_run / "manifest.json")
    assert manifest["counts"]["failed_runs"] == 0 and manifest["counts"]["failed_attempts"] == 0
    assert manifest["num_batch_clamp"]["applied"] is True
    records = storage.read_jsonl(tiny_run / "records.jsonl")
    small = [r for r in records if r["mode"] == "chimera" and r["config"]["num_ctx"] == 256]
    assert small and all(r["num_batch_clamp"] == {"num_batch_from": 512, "num_batch_to": 256}
                         and r["options"]["num_batch"] == 256 for r in small)
    others = [r for r in records if r not in small]
    assert all(r["num_batch_clamp"] is None and "num_batch" not in r["options"] for r in others)
    header = findings.Run.load(tiny_run).header()
    clamp = [n for n in header.notes if "clamp" in n]
    assert clamp and f"in {len(small)} runs of 1 configs" in clamp[0]


def test_every_file_of_a_run_has_the_users_file_permissions(tiny_run):
    want = storage.user_file_mode()
    files = [p for p in tiny_run.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files) and any(p.name == "plan.json" for p in files)
    wrong = {str(p.relative_to(tiny_run)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in files if stat.S_IMODE(p.stat().st_mode) != want}
    assert wrong == {}
