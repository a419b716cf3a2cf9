"""The server layer against a real embedded Ollama (issue: real Ollama, embedded by default)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import closing

import ollama as ollama_client
import psutil
import pytest

from langbench import paths
from langbench.run import provenance, server
from sampling import sampled

PROMPT = "The three laws of thermodynamics are"


def _descendants_alive(pid_list):
    return [p for p in pid_list if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_embedded_server_generates_with_sane_timings_and_leaves_nothing(tmp_path):
    log = tmp_path / "ollama.log"
    with server.ollama_server("embedded", log_path=log) as srv:
        assert srv.embedded and srv.url.startswith("http://127.0.0.1:")
        with closing(ollama_client.Client(host=srv.url)) as client:
            first, second = (
                client.generate(model=paths.EMBEDDED_MODEL, prompt=PROMPT, raw=True,
                                options=sampled({"num_predict": 8, "seed": 1}), keep_alive=-1)
                for _ in range(2))
        assert first.done and first.response
        assert 0 < first.eval_count <= 8
        assert first.eval_duration > 0 and first.prompt_eval_count > 0
        assert first.load_duration > 0
        assert first.total_duration >= first.load_duration + first.eval_duration
        # the second request reuses the loaded runner: loading is much cheaper
        assert second.load_duration < first.load_duration
        assert second.response == first.response  # same seed, same text
        tree = [srv.process.pid] + [c.pid for c in psutil.Process(srv.process.pid).children(recursive=True)]
        assert len(tree) >= 2, "a runner process serves the model"
    text = log.read_text()
    assert "AVX2=1" in text, "ollama was built without SIMD (CGO_CFLAGS -march=native)"
    time.sleep(0.2)
    assert _descendants_alive(tree) == []


def test_server_stops_when_the_caller_raises(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with server.ollama_server("embedded", log_path=tmp_path / "log") as srv:
            pid = srv.process.pid
            raise RuntimeError("boom")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_embedded_server_dies_with_a_killed_parent(tmp_path):
    """No orphan even when the Python process holding the server is SIGKILLed."""
    script = (
        "import sys, time\n"
        "from langbench.run import server\n"
        "srv = server.start_embedded()\n"
        "print(srv.process.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert psutil.pid_exists(pid)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and psutil.pid_exists(pid):
        time.sleep(0.1)
    assert not psutil.pid_exists(pid)


def test_unreachable_host_is_a_clear_error():
    port = server.free_port()
    with pytest.raises(server.ServerError, match=rf"no Ollama answers at http://127.0.0.1:{port}"):
        with server.ollama_server(f"http://127.0.0.1:{port}"):
            pass


def test_missing_binary_is_a_clear_error(tmp_path):
    with pytest.raises(server.ServerError, match="ollama binary not found.*make setup"):
        server.start_embedded(binary=tmp_path / "no-such-ollama")


def test_find_binary_explains_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(server.ServerError, match="make setup.*go install|go install.*PATH"):
        server.find_binary()


def test_port_in_use_is_a_clear_error(ollama):
    port = int(ollama.url.rsplit(":", 1)[1])
    with pytest.raises(server.ServerError, match=f"port {port} .* is in use"):
        server.start_embedded(port=port)


def test_unknown_model_is_a_clear_error_and_stops_the_server(tmp_path):
    with pytest.raises(server.ServerError, match="model 'no-such-model:1b' is missing.*make setup"):
        with server.ollama_server("embedded", model="no-such-model:1b", log_path=tmp_path / "log"):
            pass
    assert "no-such-model" not in " ".join(
        " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"]))


def test_unknown_model_on_an_external_host_says_ollama_pull(ollama):
    srv = server.Server(url=ollama.url, embedded=False)
    with pytest.raises(server.ServerError, match="ollama pull no-such-model"):
        server.ensure_model(srv, "no-such-model")


def test_auto_uses_ollama_host_when_it_answers(ollama, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", ollama.url.removeprefix("http://"))
    assert server.resolve("auto") == ollama.url
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{server.free_port()}")
    assert server.resolve("auto") is None


def test_cli_setup_failure_exits_non_zero(tmp_path):
    """`make setup` with no way to get ollama or the Rust agent names both and exits 1, before
    any step starts: nothing downloaded, nothing built."""
    env = {"PATH": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "langbench", "setup", "--llama-cpp"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert "Go is not installed" in done.stderr and "cargo is not installed" in done.stderr
    assert "cmake and c++ not found" in done.stderr, done.stderr
    assert not (tmp_path / "langbench").exists(), list(tmp_path.rglob("*"))


def test_provenance_describes_server_model_and_host(ollama):
    assert provenance.ollama_version(ollama.url) == paths.OLLAMA_VERSION
    details = provenance.model_details(ollama.url, paths.EMBEDDED_MODEL)
    assert details["family"] == "gemma3"
    assert details["quantization_level"] == "Q4_K_M"
    assert details["gguf_sha256"] == paths.GGUF_SHA256
    host = provenance.host_info()
    assert host["cpu_logical"] >= 1 and host["memory_bytes"] > 0 and host["cpu_model"]
    assert isinstance(host["gpus"], list)  # [] on a CPU host is not an error
    with closing(ollama_client.Client(host=ollama.url)) as client:
        client.generate(model=paths.EMBEDDED_MODEL, prompt="Hi", raw=True,
                        options={"num_predict": 1}, keep_alive=-1)
    loaded = provenance.loaded_models(ollama.url)
    assert loaded and loaded[0]["name"] == paths.EMBEDDED_MODEL and loaded[0]["size"] > 0


def test_lib_is_tracked_by_git():
    done = subprocess.run(["git", "ls-files", "lib"], cwd=paths.ROOT, capture_output=True, text=True)
    assert "lib/langbench/run/server.py" in done.stdout


def test_server_that_dies_during_start_reports_its_log_tail(tmp_path):
    """An error-path unit test: a stand-in binary that fails the way a broken build would."""
    fake = tmp_path / "ollama"
    fake.write_text("#!/bin/sh\necho 'Error: listen tcp: cannot bind, planted' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(server.ServerError, match=r"(?s)exited with code 3 during start.*cannot bind, planted"):
        server.start_embedded(binary=fake, log_path=tmp_path / "log")


def test_llama_server_threads_never_exceed_the_cpus_this_process_may_use():
    """server.physical_cores() (llama-server's --threads) under taskset: one CPU, one thread."""
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from langbench.run import server; print(server.physical_cores())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1"
    assert 1 <= server.physical_cores() <= len(os.sched_getaffinity(0))
