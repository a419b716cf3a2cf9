"""A second real server (issue 25): llama.cpp's llama-server, embedded like Ollama on the same
GGUF, `server.kind: [ollama, llama-cpp]` a factor of one sweep; and `server: {host: URL, api:
openai}` for any OpenAI-compatible server. One shared sweep (tests/fixtures/tiny-servers.yaml:
30 runs of 4 tokens), asserting what holds for any text."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from langbench import paths, storage
from langbench.run import server
from cli_runs import sweep_fixture

DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def servers_run(tmp_path_factory) -> Path:
    return sweep_fixture("tiny-servers.yaml", tmp_path_factory.mktemp("servers"), "kinds")


def test_every_client_ran_on_both_server_kinds_on_v1(servers_run):
    records = storage.read_jsonl(servers_run / "records.jsonl")
    seen = {(r["config"]["server_kind"], r["agent"]) for r in records if r["outcome"] == "ok"}
    assert seen == {(k, a) for k in ("ollama", "llama-cpp") for a in ("python", "rust", "null")}
    for r in records:
        assert r["outcome"] == "ok", r["error"]
        assert r["endpoint"] == "openai-completions" and all(r[f] is None for f in DURATIONS)
        assert r["eval_count"] == 4 and r["prompt_eval_count"] > 0  # the usage, from either server


def test_manifest_records_each_server_with_the_same_threads_and_gguf(servers_run):
    m = storage.read_json(servers_run / "manifest.json")
    s = m["servers"]
    assert set(s) == {"ollama", "llama-cpp"}
    assert s["ollama"]["threads"] == s["llama-cpp"]["threads"] == server.physical_cores()
    cmd = s["llama-cpp"]["command"]
    assert cmd[cmd.index("--threads") + 1] == str(s["ollama"]["threads"])
    assert Path(cmd[cmd.index("-m") + 1]).name in (f"sha256-{paths.GGUF_SHA256}", paths.GGUF_FILE)
    about = s["llama-cpp"]["about"]
    assert "/v1/models" in about and "/props" in about and s["llama-cpp"]["version"]
    for kind in s.values():  # stopped: nothing listens on their ports any more
        assert not server.port_in_use(int(kind["url"].rsplit(":", 1)[1]))


def test_the_report_renders_and_its_first_screen_says_which_server_was_faster(servers_run, tmp_path):
    run = tmp_path / "kinds"
    import shutil
    shutil.copytree(servers_run, run)
    done = subprocess.run([sys.executable, "-c", "import sys; from langbench.report import render; "
                           f"sys.exit(render.render({str(run)!r}, ('servers',)))"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    page = (run / "index.html").read_text()
    assert "Which server was faster: llama.cpp against Ollama" in page
    first = page.split("Which server was faster", 1)[1].split("</p>", 1)[0]
    assert "tok/s" in first and "[" in first and "nan" not in first, first
    assert (run / "html" / "servers-nocode.html").exists()
    from pages import ids_shown  # headers like "throughput tok/s ci low" before (issue 44)
    assert ids_shown(run / "html" / "servers-nocode.html") == ids_shown(run / "index.html") == []
    assert "throughput llama.cpp (tok/s)" in page


def test_llama_server_dies_with_a_killed_parent():
    """No orphan llama-server even when the Python process holding it is SIGKILLed."""
    script = ("import time\nfrom langbench.run import server\n"
              "srv = server.KINDS['llama-cpp'].start()\nprint(srv.process.pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    assert psutil.Process(pid).name().startswith("llama-server")
    parent.kill()
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and psutil.pid_exists(pid):
        time.sleep(0.1)
    assert not psutil.pid_exists(pid)


def _openai_params(tmp_path: Path, host: str, model: str = paths.EMBEDDED_MODEL) -> Path:
    doc = yaml.safe_load((FIXTURES / "tiny-servers.yaml").read_text())
    doc["server"] = {"host": host, "api": "openai"}
    doc["model"] = model
    path = tmp_path / "openai.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_an_openai_server_that_does_not_answer_stops_the_run_naming_it(tmp_path):
    host = f"http://127.0.0.1:{server.free_port()}"
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(_openai_params(tmp_path, host))],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"{host}/v1/models" in done.stderr and "OpenAI-compatible" in done.stderr


def test_an_openai_server_without_the_model_stops_the_run_naming_it(ollama, tmp_path):
    """The embedded Ollama read as any OpenAI-compatible server: /v1/models lacks the model."""
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep",
                           str(_openai_params(tmp_path, ollama.url, "no-such-model:1b"))],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "no-such-model:1b" in done.stderr and ollama.url in done.stderr and paths.EMBEDDED_MODEL in done.stderr


def test_an_openai_server_records_what_it_says_of_itself(ollama):
    about = server.describe(ollama.url)
    assert paths.EMBEDDED_MODEL in [m["id"] for m in about["/v1/models"]["data"]]
    assert server.KINDS["openai"].alive(ollama.url)
    assert not server.KINDS["llama-cpp"].alive(ollama.url)  # Ollama has no /health


ZNVER3 = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}
SAPPHIRE = ZNVER3 | {"avx_vnni", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi",
                     "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"}


@pytest.mark.parametrize("cpu, on, off", [
    (ZNVER3, {"GGML_AVX2", "GGML_FMA", "GGML_F16C"}, {"GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX_VNNI"}),
    (SAPPHIRE, {"GGML_AVX512", "GGML_AVX512_BF16", "GGML_AVX_VNNI"}, set()),
    (ZNVER3 | {"avx512f", "avx512_vnni"}, set(), {"GGML_AVX512", "GGML_AVX512_VNNI"}),  # no AVX-512 without all five
])
def test_llama_server_is_built_for_the_cpu_it_runs_on_and_never_with_amx(cpu, on, off):
    options = paths.ggml_cmake_options(cpu)
    assert options["GGML_NATIVE"] == "OFF"
    assert all(options[k] == "OFF" for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"))
    assert all(options[k] == "ON" for k in on) and all(options[k] == "OFF" for k in off)
    enabled = {k for k, v in options.items() if v == "ON"}
    assert enabled <= {paths.GGML_CPU_OPTIONS[f] for f in cpu if f in paths.GGML_CPU_OPTIONS}


def test_llama_server_cache_is_keyed_by_version_and_cpu():
    bin_ = paths.llama_server_cache_bin()
    assert f"llama-cpp-{paths.LLAMA_CPP_PACKAGE_VERSION}" in bin_.parts
    assert bin_.parent.parent.name == paths.llama_cpp_target() != paths.llama_server_cache_bin("other").parent.parent.name


def test_server_kind_is_verified_from_where_each_batch_ran(servers_run):
    from langbench.analysis import findings, verify
    run = findings.Run.load(servers_run)
    checks = verify.factor_checks(run.df, run.processes, run.factors)
    kinds = checks[checks["factor"] == "server_kind"]
    assert sorted(kinds["level"]) == ["llama-cpp", "ollama"] and set(kinds["applied"]) == {verify.APPLIED}
