"""The GPU study's parts that run without a GPU (issue 10): the bundle's contents, the
synthetic model read back, telemetry against a fake NVML, energy joined by time, the log
checks, and the GPU report section on a host without a GPU."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from langbench import paths, storage, vocab
from langbench.analysis import findings, metrics
from langbench.gpuhost import bundle as gpu, gguf_synth
from langbench.run import server, telemetry
from langbench.report.sections import gpu as gpu_sections


# --- telemetry against a fake NVML ------------------------------------------------------------

class FakeNvml:
    """Two GPUs: GPU 0 has an energy counter rising at 250 W, GPU 1 answers NOT_SUPPORTED."""
    NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_TEMPERATURE_GPU = 1, 2, 0

    class Util:
        gpu, memory = 55, 30

    class Mem:
        used = 5_760_000_000

    def __init__(self):
        self.t0 = time.time()

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return 2
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetPowerUsage(self, h): return 250_000 if h == 0 else 120_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        if h == 1:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return int((time.time() - self.t0) * 250_000)  # mJ

    def nvmlDeviceGetUtilizationRates(self, h): return self.Util()
    def nvmlDeviceGetMemoryInfo(self, h): return self.Mem()
    def nvmlDeviceGetClockInfo(self, h, kind): return 1980 if kind == 1 else 2619
    def nvmlDeviceGetTemperature(self, h, kind): return 41
    def nvmlDeviceGetCurrentClocksEventReasons(self, h): return 0


def test_the_sampler_records_every_field_at_10_hz_or_more_and_probes_the_counter(tmp_path):
    path = tmp_path / "telemetry.jsonl"
    s = telemetry.Sampler.start(path, nvml=FakeNvml())
    assert s is not None and s.has_energy == [True, False]
    with s.batch("b1"):
        time.sleep(2.0)
    rows = storage.read_jsonl(path)
    per_gpu = [r for r in rows if r["gpu"] == 0]
    assert len(per_gpu) >= 18, len(per_gpu)  # 10 Hz over two seconds, give or take a sample
    gaps = np.diff([r["t_unix"] for r in per_gpu[:-1]])  # the closing sample comes off-beat
    assert np.median(gaps) == pytest.approx(0.1, abs=0.01)
    r0, r1 = per_gpu[0], next(r for r in rows if r["gpu"] == 1)
    assert r0["batch_id"] == "b1" and r0["power_w"] == 250.0 and r0["energy_mj"] is not None
    assert r1["energy_mj"] is None and r1["power_w"] == 120.0
    for key in ("sm_util_pct", "mem_util_pct", "mem_used_bytes", "sm_clock_mhz", "mem_clock_mhz",
                "temp_c", "throttle_reasons"):
        assert r0[key] is not None, key
    idle = s.idle_baseline(seconds=0.3)
    assert idle["power_w"] == {"0": 250.0, "1": 120.0}


def test_no_gpu_means_no_sampler_and_no_error(tmp_path):
    class NoDriver:
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")
    assert telemetry.Sampler.start(tmp_path / "t.jsonl", nvml=NoDriver()) is None


def test_energy_per_run_from_the_counter_and_from_power_match_closed_forms():
    # 10 Hz samples over 4 s: constant 200 W, counter rising at exactly 200 J/s
    ts = 1000.0 + np.arange(0, 4.01, 0.1)
    counter = [{"t_unix": t, "batch_id": "b", "gpu": 0, "power_w": 200.0, "energy_mj": (t - 1000.0) * 200_000}
               for t in ts]
    power_only = [{**r, "energy_mj": None} for r in counter]
    runs = pd.DataFrame([{"run_id": "r1", "batch_id": "b", "t0_unix": 1000.55, "e2e_ms": 1500.0, "eval_count": 60}])
    for tel, source in ((counter, "counter"), (power_only, "power")):
        e = metrics.energy_per_run(runs, tel, idle_power_w=70.0).iloc[0]
        assert e["energy_source"] == source
        assert e["energy_j"] == pytest.approx(300.0, rel=1e-6)  # 200 W × 1.5 s
        assert e["power_w"] == pytest.approx(200.0, rel=1e-6)
        assert e["j_per_token"] == pytest.approx(5.0, rel=1e-6)
        assert e["energy_above_idle_j"] == pytest.approx(300.0 - 70.0 * 1.5, rel=1e-6)
    outside = runs.assign(t0_unix=999.0)  # the window starts before any sample: no guess
    assert np.isnan(metrics.energy_per_run(outside, counter).iloc[0]["energy_j"])


# --- the server log checks ----------------------------------------------------------------------

def test_the_log_check_names_a_missing_cuda_backend_and_an_empty_offload():
    ok = ("load_backend: loaded CUDA backend from /x/lib/ollama/libggml-cuda.so\n"
          "llm_load_tensors: offloaded 35/35 layers to GPU\n")
    assert gpu.check_log(ok, want_cuda=True) == {"cuda_backend": True, "layers_gpu": 35, "layers_total": 35}
    with pytest.raises(gpu.GpuError, match="did not load the CUDA backend"):
        gpu.check_log("load_backend: loaded CPU backend\n", want_cuda=True)
    with pytest.raises(gpu.GpuError, match="offloaded no layer"):
        gpu.check_log("loaded CUDA backend\noffloaded 0/35 layers to GPU\n", want_cuda=True)
    assert gpu.check_log("", want_cuda=False)["layers_gpu"] is None


def test_compute_capability_is_asked_of_nvml_and_a_missing_gpu_is_named():
    class H100(FakeNvml):
        def nvmlDeviceGetCudaComputeCapability(self, h): return (9, 0)
    assert gpu.compute_capability(H100()) == "90"

    class NoDriver:
        def nvmlInit(self):
            raise RuntimeError("Driver Not Loaded")
    with pytest.raises(gpu.GpuError, match="no NVIDIA GPU answers NVML.*Driver Not Loaded"):
        gpu.compute_capability(NoDriver())


# --- the synthetic model ------------------------------------------------------------------------

def test_the_full_shape_is_gemma3_latests_tensor_for_tensor():
    """883 tensors and 3,323,652,544 bytes: the counts of gemma3:latest (../shared/gpu/README.md)."""
    specs = gguf_synth.tensor_specs(gguf_synth.FULL)
    per_block = {"q4k": gguf_synth.Q4_K_BYTES, "q6k": gguf_synth.Q6_K_BYTES}
    size = 0
    for _, dims, kind in specs:
        n = int(np.prod(dims))
        size += n // 256 * per_block[kind] if kind in per_block else n * (2 if kind == "f16" else 4)
    assert len(specs) == 883 and size == 3_323_652_544
    kinds = dict((name, kind) for name, _, kind in specs)
    assert kinds["token_embd.weight"] == "q6k" and kinds["blk.0.ffn_down.weight"] == "q6k"
    assert kinds["blk.5.ffn_down.weight"] == "q4k" and kinds["blk.33.attn_v.weight"] == "q6k"
    assert sum(1 for n in kinds if n.startswith("blk.") and n.endswith("attn_q.weight")) == 34


def test_a_small_synthetic_model_reads_back_with_the_real_vocabulary(tmp_path):
    import gguf
    vocab = gguf_synth.write_vocab(paths.gguf_path(), tmp_path / "vocab.gguf")
    assert len(gguf.GGUFReader(str(vocab)).fields["tokenizer.ggml.tokens"].contents()) == 262144
    out = tmp_path / "small.gguf"
    written = gguf_synth.write_gemma3_4b_shape(out, vocab, small=True)
    r = gguf.GGUFReader(str(out))
    names = {t.name: t for t in r.tensors}
    specs = gguf_synth.tensor_specs(gguf_synth.SMALL)
    assert len(names) == written["tensors"] == len(specs)
    assert names["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q6_K
    assert names["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_K
    assert list(names["blk.0.attn_q.weight"].shape) == [2560, 2048]  # ggml order: ne0 = columns
    assert r.fields["general.description"].contents() == gguf_synth.MODEL_NOTE
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    assert tokens[:3] == ["<pad>", "<eos>", "<bos>"] and len(tokens) == 4096
    # EOS and end-of-turn rows of the embedding are zero: generation never stops early
    emb = names["token_embd.weight"].data.reshape(4096, -1)
    assert not emb[1].any() and not emb[106].any() and emb[2].any()


def test_llama_cpps_model_is_the_two_block_shape_without_any_vision_tensor():
    """llama-server refused the file with its vision tower: "wrong number of tensors; expected
    51, got 28" (issue 42). The text-only list is those 28, the SMALL file's less its v.* and mm.*."""
    text = gguf_synth.tensor_specs(gguf_synth.TEXT, vision=False)
    names = [name for name, _, _ in text]
    assert len(text) == 28 and len(set(names)) == 28
    assert not [n for n in names if n.startswith(("v.", "mm."))]
    with_vision = [s for s in gguf_synth.tensor_specs(gguf_synth.SMALL)]
    assert len(with_vision) == 51 and text == [s for s in with_vision if not s[0].startswith(("v.", "mm."))]
    assert gguf_synth.TEXT.blocks == 2 and gguf_synth.TEXT.embedding == gguf_synth.FULL.embedding
    assert sum(n.endswith("attn_q.weight") for n in names) == 2 and names[-1] == "output_norm.weight"


def test_the_text_only_file_holds_no_vision_tensor_or_key_and_names_itself(tmp_path):
    """Written with a tiny shape (1.5 MB, not the 122 MB of TEXT): the writer's text-only path."""
    import gguf
    tiny = gguf_synth.Shape(embedding=256, blocks=2, ffn=256, heads=1, kv_heads=1, head_dim=256,
                            vocab=4096, vision_blocks=0)
    out = tmp_path / "text.gguf"
    written = gguf_synth.write_text_model(out, paths.gguf_path(), tiny)
    r = gguf.GGUFReader(str(out))
    assert written["tensors"] == len(r.tensors) == 28
    assert not [t.name for t in r.tensors if t.name.startswith(("v.", "mm."))]
    assert not [k for k in r.fields if ".vision." in k or ".mm." in k]
    assert r.fields["gemma3.block_count"].contents() == 2
    assert r.fields["general.description"].contents() == gguf_synth.TEXT_MODEL_NOTE
    assert len(r.fields["tokenizer.ggml.tokens"].contents()) == 4096


# --- llama-server on the GPU (issue 42) ---------------------------------------------------------

H100_LOG = """ggml_cuda_init: found 1 CUDA devices (Total VRAM: 81089 MiB):
  Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes, VRAM: 81089 MiB
load_tensors: offloading 2 repeating layers to GPU
load_tensors: offloaded 3/3 layers to GPU
"""


def test_a_cuda_llama_server_gets_every_layer_on_the_gpu_and_the_runs_slots(tmp_path):
    kind = server.KINDS["llama-cpp"]
    args = dict(binary=tmp_path / "llama-server", gguf=tmp_path / "m.gguf", port=8080, threads=8, slots=64)
    gpu, cpu = kind.command(**args, cuda=True), kind.command(**args, cuda=False)
    assert gpu[gpu.index("-ngl") + 1] == "99" and "-ngl" not in cpu  # the CPU command is as it was
    for command in (gpu, cpu):
        assert command[command.index("--parallel") + 1] == "64"
        assert command[command.index("-c") + 1] == str(64 * 4096)  # 4096 tokens a slot
        assert command[command.index("--threads") + 1] == "8"


def test_a_pinned_server_gets_no_more_threads_than_its_cpus():
    assert server.compute_threads([0]) == 1
    assert server.compute_threads(None) == server.physical_cores() >= server.compute_threads([0, 1])


def test_the_llama_server_log_says_where_the_layers_went():
    facts = server.llama_log_facts(H100_LOG + H100_LOG)  # a second load prints it all again
    assert facts == {"layers_gpu": 3, "layers_total": 3,
                     "cuda_devices": [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}]}
    assert server.llama_log_facts("load_tensors: CPU model buffer size = 120 MiB\n") == {
        "layers_gpu": None, "layers_total": None, "cuda_devices": []}


def test_a_run_on_the_text_model_starts_llama_server_on_the_file_gpu_host_wrote(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kind = server.KINDS["llama-cpp"]
    with pytest.raises(server.ServerError, match="gpu-host BUNDLE --server llama-cpp"):
        kind.gguf(vocab.SYNTHETIC_TEXT_MODEL)
    written = paths.synthetic_gguf(vocab.SYNTHETIC_TEXT_MODEL)
    written.parent.mkdir(parents=True)
    written.write_bytes(b"GGUF")
    assert kind.gguf(vocab.SYNTHETIC_TEXT_MODEL) == written and written.name.endswith(".gguf")
    assert kind.gguf("gemma3:270m") == kind.gguf() != written  # any other name: the embedded model
    assert kind.build() == {}
    built = paths.llama_server_cache_bin().parent.parent / "built.json"
    built.parent.mkdir(parents=True)
    built.write_text(json.dumps({"cuda_arch": "90", "seconds": 193.0}))
    assert kind.build()["cuda_arch"] == "90"


def test_the_manifest_keeps_the_llama_server_build_slots_and_offload(tmp_path, monkeypatch):
    from langbench.run import sweep
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = paths.llama_server_cache_bin().parent.parent / "built.json"
    built.parent.mkdir(parents=True)
    built.write_text(json.dumps({"cuda_arch": "90", "llama_cpp_commit": "0c1e57098", "cmake_tuning": "…",
                                 "cmake": {"GGML_CUDA": "ON", "CMAKE_CUDA_ARCHITECTURES": "90"}}))
    log = tmp_path / "llama-cpp.log"
    log.write_text(H100_LOG)
    srv = server.Server(url="http://127.0.0.1:1", embedded=True, log_path=log, kind="llama-cpp", slots=64,
                        model=vocab.SYNTHETIC_TEXT_MODEL)
    facts = sweep.llama_cpp_facts(srv)
    assert facts["slots"] == 64 and facts["offload"]["layers_gpu"] == facts["offload"]["layers_total"] == 3
    assert facts["build"]["cuda_arch"] == "90" and facts["build"]["llama_cpp_commit"] == "0c1e57098"
    assert "cmake_tuning" not in facts["build"]  # the CMake text is in built.json, not in every manifest
    assert sweep.SLOTS_SOURCE["llama-cpp"].startswith("--parallel")


# --- gpu-host --server llama-cpp: the build's command line, without cmake ----------------------

def test_the_gpu_build_is_the_cpu_build_plus_cuda_for_the_hosts_architecture_only(tmp_path):
    from langbench.run import provision
    src, build, tuning = tmp_path / "src", tmp_path / "build", tmp_path / "tuning.cmake"
    options, (configure, compile_) = gpu.llama_cpp_commands(src, build, tuning, "90", jobs=16)
    cpu, _ = gpu.llama_cpp_commands(src, build, tuning, None, jobs=16)
    assert cpu == provision.llama_server_options()  # the project's CPU options, as make setup builds
    assert {k: v for k, v in options.items() if k not in cpu} == {
        "GGML_CUDA": "ON", "CMAKE_CUDA_ARCHITECTURES": "90", "GGML_CUDA_FA_ALL_QUANTS": "OFF",
        "GGML_CUDA_FA_QUANTS": "f16-f16"}
    assert all(options[k] == v for k, v in cpu.items())
    assert configure[:5] == ["cmake", "-S", str(src), "-B", str(build)]
    for flag in ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90", "-DGGML_CUDA_FA_QUANTS=f16-f16",
                 "-DLLAMA_BUILD_UI=OFF", "-DBUILD_SHARED_LIBS=OFF", f"-DCMAKE_PROJECT_TOP_LEVEL_INCLUDES={tuning}"):
        assert flag in configure, flag
    assert compile_ == ["cmake", "--build", str(build), "--target", "llama-server", "-j", "16"]
    with_nvcc, _ = gpu.llama_cpp_commands(src, build, tuning, "90", nvcc="/usr/local/cuda/bin/nvcc")
    assert with_nvcc["CMAKE_CUDA_COMPILER"] == "/usr/local/cuda/bin/nvcc"


def _llama_bundle(folder: Path) -> Path:
    """A stand-in bundle: llama.cpp's sources reduced to one file, and bundle.json."""
    import io
    import tarfile
    folder.mkdir()
    with tarfile.open(folder / "llama-cpp-src.tar.xz", "w:xz") as tar:
        data = b"project(llama.cpp)\n"
        info = tarfile.TarInfo("llama.cpp/CMakeLists.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (folder / "bundle.json").write_text(json.dumps({"llama_cpp": {"package": "llama-cpp-python==0.3.36",
                                                                  "commit": "0c1e57098"}}))
    return folder


def test_gpu_host_builds_llama_server_where_server_kind_llama_cpp_finds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    b, work = _llama_bundle(tmp_path / "b"), tmp_path / "work"
    work.mkdir()
    ran = []

    def fake_cmake(cmd, log):  # the configure, then the build writes the binary
        ran.append(cmd)
        if "--build" in cmd:
            binary = Path(cmd[cmd.index("--build") + 1]) / "bin" / "llama-server"
            binary.parent.mkdir(parents=True)
            binary.write_text("built")
        return 0

    monkeypatch.setattr(gpu, "_logged", fake_cmake)
    monkeypatch.setattr(gpu, "nvcc_for_cmake", lambda: None)
    monkeypatch.setattr(gpu, "_run", lambda cmd, what, **kw: subprocess.CompletedProcess(
        cmd, 0, "nvcc: NVIDIA (R) Cuda compiler driver\nCuda compilation tools, release 13.0, V13.0.88\n", ""))
    target = gpu.build_llama_server(b, work, "90", jobs=16)
    assert target == paths.llama_server_cache_bin() and target.read_text() == "built"
    assert [c[:2] for c in ran] == [["cmake", "-S"], ["cmake", "--build"]]
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in ran[0] and ran[0][2] == str(work / "llama-src" / "llama.cpp")
    built = server.KINDS["llama-cpp"].build()
    assert built["cuda_arch"] == "90" and built["llama_cpp_commit"] == "0c1e57098" and built["from"] == "gpu bundle"
    assert built["nvcc"] == "Cuda compilation tools, release 13.0, V13.0.88"
    assert built["cmake"]["GGML_CUDA_FA_QUANTS"] == "f16-f16"
    assert gpu.build_llama_server(b, work, "90") == target and len(ran) == 2  # a second call reuses it


def test_gpu_host_server_llama_cpp_skips_ollamas_cuda_backend(tmp_path, monkeypatch):
    from langbench import cli
    called = {}
    monkeypatch.setattr(gpu, "compute_capability", lambda: "90")
    monkeypatch.setattr(gpu, "layout_clients", lambda b: called.setdefault("clients", b))
    monkeypatch.setattr(gpu, "build_llama_server", lambda b, w, arch, jobs=None: called.setdefault("arch", (arch, jobs)))
    monkeypatch.setattr(gpu, "write_text_model", lambda b: {"path": "m.gguf"})
    monkeypatch.setattr(gpu, "check_llama_server", lambda w, want_cuda: {"layers_gpu": 3, "layers_total": 3})
    for untouched in ("build_cuda_backend", "layout", "prepare_host"):
        monkeypatch.setattr(gpu, untouched, lambda *a, **k: pytest.fail(f"{untouched} ran in llama-cpp mode"))
    code = cli.main(["gpu-host", str(tmp_path / "b"), "--work", str(tmp_path / "w"), "--server", "llama-cpp",
                     "--jobs", "16"])
    assert code == 0 and called["arch"] == ("90", 16) and called["clients"] == tmp_path / "b"


def test_a_bundle_made_from_other_agent_sources_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    b = _llama_bundle(tmp_path / "b")
    (b / "bundle.json").write_text(json.dumps({"rust_source_digest": "000000000000"}))
    with pytest.raises(gpu.GpuError, match="built from other sources"):
        gpu.layout_clients(b)
    (b / "bundle.json").write_text(json.dumps({"rust_source_digest": paths.rust_source_digest()}))
    (b / "bin").mkdir()
    (b / "bin" / "langbench-replay").write_text("replay")
    assert gpu.layout_clients(b) == [paths.replay_server_bin()] and paths.replay_server_bin().read_text() == "replay"


def test_the_bundle_carries_every_package_the_python_clients_import():
    """The clients' own venv (make setup: AGENT_PACKAGES ollama openai aiohttp uvloop at the pins)
    holds exactly what python, python-tuned and python-raw import: the bundle carries each."""
    import re
    site = next((paths.AGENT_VENV / "lib").glob("python3*/site-packages"), None)
    if site is None:
        pytest.skip("no .venv-agent: make setup makes it")
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    installed = {norm(d.name.split("-")[0]) for d in site.glob("*.dist-info")} - {"pip", "setuptools"}
    assert installed <= {norm(w) for w in gpu.WHEELS}, installed - {norm(w) for w in gpu.WHEELS}
    for name in gpu.WHEELS:
        gpu._pinned(name)  # each at its constraints.txt pin


def test_the_bundles_llama_cpp_leaves_out_only_what_building_llama_server_never_reads():
    assert gpu.leaves_out("models/ggml-vocab-gemma-4.gguf") and gpu.leaves_out("ggml/src/ggml-vulkan/x.cpp")
    assert gpu.leaves_out("tools/ui/src/app.ts") and gpu.leaves_out(".git")
    for kept in ("CMakeLists.txt", "ggml/src/ggml-cuda/fattn.cu", "ggml/src/ggml-cpu/ggml-cpu.c",
                 "tools/server/server.cpp", "tools/ui/CMakeLists.txt", "tools/mtmd/CMakeLists.txt",
                 "scripts/ui-assets.cmake", "vendor/nlohmann/json.hpp", "common/arg.cpp", "src/llama.cpp"):
        assert not gpu.leaves_out(kept), kept


# --- the bundle ---------------------------------------------------------------------------------

def test_the_portable_ollama_is_built_for_x86_64_v3_stripped_with_its_version(tmp_path, monkeypatch):
    """What `bundle gpu` runs to build the server a GPU host gets (the packing itself is checked
    below with the binary `make setup` built: a second build of the server costs ~4 minutes of
    cc1plus on 2 cores, and the GPU path, bench/gpu_study.sh, runs the real one)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ran = []

    def fake_run(cmd, what, **kw):
        ran.append((cmd, kw["env"]))
        target = Path(kw["env"]["GOBIN"]) / "ollama"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("built")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(gpu, "_run", fake_run)
    built = gpu.portable_ollama()
    (cmd, env), = ran
    assert env["CGO_CFLAGS"] == env["CGO_CXXFLAGS"] == gpu.PORTABLE_CFLAGS == "-O3 -march=x86-64-v3"
    assert cmd[:2] == ["go", "install"] and cmd[-1] == f"github.com/ollama/ollama@v{paths.OLLAMA_VERSION}"
    ldflags = cmd[cmd.index("-ldflags") + 1].split()
    assert "-s" in ldflags and "-w" in ldflags, "the portable ollama is not stripped"
    assert f"-X=github.com/ollama/ollama/version.Version={paths.OLLAMA_VERSION}" in ldflags
    assert built == tmp_path / "langbench" / f"ollama-{paths.OLLAMA_VERSION}" / "portable-x86-64-v3" / "bin" / "ollama"
    assert gpu.portable_ollama() == built and len(ran) == 1  # cached: built once


@pytest.mark.slow
def test_the_bundle_holds_what_a_gpu_host_needs_within_64_mib(tmp_path):
    """The bundle as `bundle gpu` packs it, with the ollama `make setup` already built for this
    CPU in place of the portable build (checked above): same packing, same limit."""
    native = server.find_binary()
    done = subprocess.run([str(paths.ROOT / ".venv/bin/python"), "-m", "langbench", "bundle", "gpu",
                           "--out", str(tmp_path / "b"), "--ollama", str(native),
                           "--ollama-cflags", paths.NATIVE_CFLAGS], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    b = tmp_path / "b"
    doc = json.loads((b / "bundle.json").read_text())
    assert doc["bytes"] <= 64 * 2**20 and doc["ollama_cflags"] == paths.NATIVE_CFLAGS
    version = subprocess.run([str(b / "bin" / "ollama"), "--version"], capture_output=True, text=True)
    assert "0.11.4" in version.stdout + version.stderr
    sections = subprocess.run(["objdump", "-h", str(b / "bin" / "ollama")], capture_output=True, text=True).stdout
    assert ".symtab" not in sections, "ollama is not stripped"
    import tarfile
    with tarfile.open(b / "ggml-src.tar.xz") as tar:
        names = tar.getnames()
    assert "CMakeLists.txt" in names and any(n.endswith("ggml-cuda/CMakeLists.txt") for n in names)
    wheels = " ".join(doc["wheels"])
    for name in ("ollama-0.6.3", "pydantic_core", "cp312", "jsonschema", "gguf-0.17.1",
                 "openai-3.51.0", "aiohttp-3.14.5-cp312", "uvloop-0.23.0-cp312", "jiter-0.19.0-cp312"):
        assert name in wheels, name
    agent = subprocess.run([str(b / "bin" / "langbench-agent"), "--help"], capture_output=True, text=True)
    assert agent.returncode == 0 and "--jobs" in agent.stdout
    replay = subprocess.run([str(b / "bin" / "langbench-replay"), "--help"], capture_output=True, text=True)
    assert replay.returncode == 0 and "--profile" in replay.stdout
    assert doc["rust_source_digest"] == paths.rust_source_digest()
    assert doc["llama_cpp"]["package"] == "llama-cpp-python==0.3.36" and doc["llama_cpp"]["commit"] == "0c1e57098"
    # what is kept of llama.cpp configures llama-server with the project's options, every input there
    from langbench.run import provision
    with tarfile.open(b / "llama-cpp-src.tar.xz") as tar:
        tar.extractall(tmp_path / "src", filter="data")
    tuning = tmp_path / "tuning.cmake"
    tuning.write_text(provision.CMAKE_TUNING)
    configure, _ = provision.llama_server_commands(tmp_path / "src" / "llama.cpp", tmp_path / "build",
                                                   provision.llama_server_options(), tuning, tool=provision.ninja())
    done = subprocess.run(configure, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if provision.ninja():  # a dry run names any source file left out
        dry = subprocess.run([provision.ninja(), "-C", str(tmp_path / "build"), "-n", "llama-server"],
                             capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0 and "llama-server" in dry.stdout, dry.stdout[-2000:] + dry.stderr[-2000:]


@pytest.mark.slow
def test_a_llama_cpp_bundle_leaves_ollama_out_and_fits_one_device_call(tmp_path):
    """`bundle gpu --server llama-cpp`: no ollama and no ggml, so that it travels with the
    checkout within a device call's 64 MiB (the tracked files are about 7 MiB)."""
    done = subprocess.run([str(paths.ROOT / ".venv/bin/python"), "-m", "langbench", "bundle", "gpu",
                           "--out", str(tmp_path / "b"), "--server", "llama-cpp"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert doc["servers"] == ["llama-cpp"] and "bin/ollama" not in doc["files"] and "ggml-src.tar.xz" not in doc["files"]
    assert {"llama-cpp-src.tar.xz", "bin/langbench-agent", "bin/langbench-replay", "gemma3-vocab.gguf"} <= set(doc["files"])
    assert doc["bytes"] <= 40 * 2**20, doc["bytes"]


# --- bench/gpu_scale.sh: the one device call, its steps stubbed ------------------------------------

FAKE_PYTHON = """#!/bin/bash
case "$*" in
  *"-m pip install"*) mkdir -p "$(sed 's/.*--target \\([^ ]*\\).*/\\1/' <<<"$*")";;
  *gpu-host*) echo "gpu: ready ($*)";;
  *"-m langbench sweep"*) id=$(sed 's/.*--run-id \\([^ ]*\\).*/\\1/' <<<"$*"); mkdir -p outputs/$id/jobs
     echo '{}' > outputs/$id/records.jsonl; [[ "$*" == *replay* ]] || echo '{}' > outputs/$id/capture.jsonl;;
  *"-m langbench profile"*) echo '{}' > "${@: -1}/profile.json";;
  *replay_twin.py*) echo "name: twin" > "${@: -1}";;
esac
"""


def test_gpu_scale_sh_runs_build_sweeps_profiles_and_twins_in_order_and_packs_data_only(tmp_path):
    """The script's own logic on stand-ins for python3 and nvidia-smi: every step timed, the
    real runs before their replay twins, each run packed without jobs/, within 8 files."""
    import os
    import shutil
    import tarfile
    repo, fake = tmp_path / "repo", tmp_path / "bin"
    (repo / "bench").mkdir(parents=True)
    shutil.copy2(paths.ROOT / "bench" / "gpu_scale.sh", repo / "bench")
    fake.mkdir()
    (fake / "python3").write_text(FAKE_PYTHON)
    (fake / "nvidia-smi").write_text("#!/bin/bash\necho 'NVIDIA H100 80GB HBM3'\n")
    for f in fake.iterdir():
        f.chmod(0o755)
    (tmp_path / "bundle" / "wheels").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "WORK": str(tmp_path / "work"), "BUDGET": "400"}
    done = subprocess.run(["bash", str(repo / "bench" / "gpu_scale.sh"), str(tmp_path / "bundle"), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = ["scale-gpu-h100", "scale-gpu-agent-h100", "scale-gpu-replay-h100", "scale-gpu-agent-replay-h100"]
    out = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert out == sorted([f"{r}.tar.xz" for r in runs] + ["gpu-host.log.xz", "timings.txt"]) and len(out) <= 8
    steps = [line.split("  ")[0] for line in (tmp_path / "out" / "timings.txt").read_text().splitlines()[1:]]
    assert steps == ["wheels", "gpu-host (build, model, check)", "sweep scale-gpu-h100", "sweep scale-gpu-agent-h100",
                     "profile scale-gpu-h100", "twin scale-gpu", "sweep scale-gpu-replay-h100",
                     "profile scale-gpu-agent-h100", "twin scale-gpu-agent", "sweep scale-gpu-agent-replay-h100",
                     "pack", "total"]
    with tarfile.open(tmp_path / "out" / "scale-gpu-h100.tar.xz") as tar:
        names = tar.getnames()
    assert "scale-gpu-h100/capture.jsonl" in names and "scale-gpu-h100/profile.json" in names
    assert not [n for n in names if "/jobs" in n]
    assert "--server llama-cpp" in done.stdout


# --- the report section without a GPU ------------------------------------------------------------

def test_the_gpu_section_says_so_on_a_run_without_a_gpu(tiny_run):
    run = findings.Run.load(tiny_run)
    assert not (tiny_run / "telemetry.jsonl").exists()
    s = gpu_sections.gpu_setting(run)
    assert s.sentence.startswith("This run was made on a host without an NVIDIA GPU")
    assert gpu_sections.gpu_offload(run).sentence.startswith("No offload was recorded")
    offload = [p["offload"] for p in storage.read_jsonl(tiny_run / "processes.jsonl")]
    assert all(o["layers_gpu"] == 0 and o["layers_total"] > 0 and o["size"] > 0 and o["size_vram"] == 0
               for o in offload), offload[:2]


# --- the kept GPU run renders on this CPU machine -----------------------------------------------

@pytest.mark.slow
def test_the_kept_two_gpu_run_renders_its_report_here(tmp_path):
    """results/tr112-gpu-h200x2: the corrected TR112 on two H200s (one Dask worker and one
    Ollama each), rendered on this CPU machine; its figures are docs/gpu.md's."""
    import shutil
    import sys

    from langbench.report.sections import noise, validity
    kept = paths.ROOT / "results" / "tr112-gpu-h200x2"
    run = tmp_path / kept.name
    shutil.copytree(kept, run)  # rendering writes notebooks/ and html/: not into the repo
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    r = findings.Run.load(run)
    assert [g["name"] for g in r.manifest["host"]["gpus"]][:1] == ["NVIDIA H200"]
    assert {w["gpu"]["index"] for w in r.manifest["workers"]} == {0, 1}
    assert set(r.df["worker"]) == {"vm/gpu0", "vm/gpu1"}
    planned = sum(len(b["runs"]) for b in json.loads((run / "plan.json").read_text())["batches"])
    assert len(r.df) + len(r.floor) == planned == 180  # complete: every planned run recorded
    assert "No rule exceeds α beyond its binomial noise" in validity.aa_check(r).sentence
    assert "From 64 to 512 tokens" in gpu_sections.length_dependence(r).sentence
    offload = gpu_sections.gpu_offload(r).sentence
    for done_offload in ("num_gpu 99 ended with 35/35", "num_gpu 33 ended with 33/35", "num_gpu 30 ended with 30/35"):
        assert done_offload in offload, offload
    from langbench.analysis import verify  # num_gpu n put min(n, 35) layers on the GPU, level by level
    checks = verify.factor_checks(r.df, r.processes, r.factors)
    assert list(checks[checks["factor"] == "num_gpu"]["applied"]) == [verify.APPLIED] * 3, checks
    energy = gpu_sections.gpu_energy(r)
    assert set(energy.table["offload"]) == {"35/35", "33/35", "30/35"}
    assert (energy.table["j_per_token"] > 0).all() and (energy.table["power_w"] > 50).all()
    full = energy.table[energy.table["offload"] == "35/35"]["throughput_tps"]
    part = energy.table[energy.table["offload"] == "30/35"]["throughput_tps"]
    assert full.min() > 3 * part.max()  # five layers on the CPU cost most of the speed
    for value in ("throughput_tps", "ttft_ms"):  # no rule that fails its A/A check decides
        rule = validity.deciding_rule(r, value)
        assert rule["rule"] is not None and not rule["rates"][rule["rule"]]["flagged"], rule["why"]
    c = noise.consistency(r)
    assert set(c.table["agent"]) == {"python", "rust"} and "Brown–Forsythe" in c.notes[0]
    assert "of that variance is run to run" in noise.noise_floor(r).sentence
    html = (run / "html" / "gpu-nocode.html").read_text()
    assert "synthetic weights with the shapes and quantization of gemma3:latest" in html
    assert "data:image/png;base64" in html
    from pages import ids_shown  # every table of every page headed in words with units (issue 44)
    assert {p.name: ids_shown(p) for p in [*(run / "html").glob("*-nocode.html"), run / "index.html"]
            if ids_shown(p)} == {}
    # the README's picture of the first screen is this render's (retaken where it is not current)
    from devtools import CHROMIUM
    from pages import FIRST_SCREEN, first_screen_source, png_text, take_first_screen
    assert CHROMIUM, "Debian's chromium is missing: `make browser` (run by `make test`) installs it"
    take_first_screen(CHROMIUM, run / "index.html", tmp_path)
    text, size = png_text(FIRST_SCREEN)
    assert size == (1366, 768) and text["source"] == first_screen_source(kept)
    from PIL import Image
    with Image.open(FIRST_SCREEN) as img:  # the verdict and the claim tables' header colours are on it
        colours = {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 20)}
    assert {(0x1f, 0x4e, 0x79), (0x5b, 0x2c, 0x6f)} <= colours


def test_the_kept_one_gpu_control_and_cpu_probe_show_what_the_readme_says():
    """results/tr112-gpu-h200x2/one_gpu (the same design on one GPU) and offload_cpu_probe.jsonl:
    one GPU is not twice as slow, because the two-GPU run's pinned servers decoded partial
    offloads at half speed; unpinned servers do not (docs/gpu.md, "Two GPUs against one")."""
    kept = paths.ROOT / "results" / "tr112-gpu-h200x2"
    two, one = findings.Run.load(kept), findings.Run.load(kept / "one_gpu")
    assert len(one.df) + len(one.floor) == len(two.df) + len(two.floor) == 180
    design = {name: sorted(json.dumps({k: b[k] for k in ("batch_id", "config", "mode", "agent", "options", "runs")},
                                      sort_keys=True) for b in json.loads((d / "plan.json").read_text())["batches"])
              for name, d in (("one", kept / "one_gpu"), ("two", kept))}
    assert set(one.df["worker"]) == {"vm/gpu0"} and design["one"] == design["two"]  # the same batches
    wall = {name: sum(pd.Timestamp(x["ended_at"]).timestamp() - pd.Timestamp(x["started_at"]).timestamp()
                      for x in r.manifest["sessions"]) for name, r in (("one", one), ("two", two))}
    assert 1.1 < wall["one"] / wall["two"] < 1.5  # 666 s against 525 s: 1.27×, not 2×
    tps = {name: r.warm[r.warm["mode"] == "chimera"].groupby("num_gpu")["throughput_tps"].median()
           for name, r in (("one", one), ("two", two))}
    assert tps["one"][99] == pytest.approx(tps["two"][99], rel=0.05)  # full offload alike
    assert (tps["one"][[30, 33]] > 1.8 * tps["two"][[30, 33]]).all()  # partial: half speed on two
    probe = pd.read_json(kept / "offload_cpu_probe.jsonl", lines=True).groupby("setup")["tps"].median()
    pinned = probe[[s for s in probe.index if s.startswith("two servers at once, halves (pinned")]].iloc[0]
    assert probe["two servers at once, unpinned"] > 2.5 * pinned


def test_a_fixed_num_thread_goes_with_both_modes(tmp_path):
    """Two servers on one host: their CPU threads are fixed for baseline and chimera alike."""
    from langbench.run import params, plan
    doc = (paths.ROOT / "parameters" / "tr112-gpu.yaml").read_text()
    p = params.load(paths.ROOT / "parameters" / "tr112-gpu.yaml")
    assert p.fixed.get("num_thread") and "num_thread" in doc
    for b in plan.build(p):
        assert b.options["num_thread"] == p.fixed["num_thread"], b.batch_id


GPU_SCALE = ("scale-gpu.yaml", "scale-gpu-agent.yaml")


@pytest.mark.parametrize("name", GPU_SCALE)
def test_the_gpu_scale_files_run_every_client_on_llama_server_with_three_units_a_cell(name):
    """Issue 42's design: llama-server on the GPU, the text-only model, /v1/chat/completions,
    four clients each pinned apart from the server, N = 1 … 64, captured; every client × N cell
    gets at least the 3 batch units the knees' CIs need (batches × modes: scale.py pools modes)."""
    from collections import Counter
    from langbench.run import params, plan
    p = params.load(paths.PARAMETERS / name)
    assert p.server == {"host": "embedded", "kind": "llama-cpp"} and p.model == vocab.SYNTHETIC_TEXT_MODEL
    assert params.endpoints(p.raw) == ["openai-chat"] and p.capture is True and p.isolation == "pinned"
    assert sorted(p.agents) == sorted(("python", "python-tuned", "python-raw", "rust"))
    assert p.concurrency == [1, 4, 16, 64] and plan.slots(p) == 64  # --parallel: the highest N
    assert p.raw.get("workload", "single") == ("agent" if "agent" in name else "single")
    batches = plan.build(p)
    units = Counter((b.agent, b.config["concurrency"]) for b in batches)
    assert len(units) == 4 * 4 and min(units.values()) >= 3
    assert len(batches) <= 64  # one agent process each: what a lent GPU's minutes allow (bench/gpu_scale.sh)


@pytest.mark.parametrize("name", GPU_SCALE)
def test_the_replay_twin_is_the_same_design_on_the_replay_server(name, tmp_path):
    """bench/replay_twin.py: the real file's batches, runs and requests, on the replay server
    of a profile at the captured pace (the shipped CPU profile stands in for the GPU capture's)."""
    import sys
    from langbench.run import params, plan
    out = tmp_path / "deeper" / "twin.yaml"  # written elsewhere: its prompt files still resolve
    done = subprocess.run([sys.executable, str(paths.ROOT / "bench" / "replay_twin.py"), str(paths.PARAMETERS / name),
                           str(paths.PARAMETERS / "profiles" / "embedded-gemma3-270m.json"), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    real, twin = params.load(paths.PARAMETERS / name), params.load(out)
    assert twin.server["kind"] == "replay" and twin.server["time_scale"] == 1 and twin.server["load"] == "profile"
    assert "capture" not in twin.raw and twin.name == f"{real.name}-replay"
    assert twin.prompts == real.prompts and twin.tasks == real.tasks
    assert [(b.batch_id, b.agent, b.options, [r.run_id for r in b.runs]) for b in plan.build(twin)] == \
        [(b.batch_id, b.agent, b.options, [r.run_id for r in b.runs]) for b in plan.build(real)]


@pytest.mark.slow
def test_the_kept_agent_run_on_one_gpu_renders_its_agent_loops_here(tmp_path):
    """results/agent-gpu-h200 (parameters/agent-gpu.yaml, made with bench/gpu_study.sh on one
    H200): structured-action agent loops at 1 and 8 sessions, rendered on this CPU machine; its
    task-level verdicts are docs/agents.md's."""
    import shutil
    import sys

    from langbench.report.sections import agent_loops
    kept = paths.ROOT / "results" / "agent-gpu-h200"
    run = tmp_path / kept.name
    shutil.copytree(kept, run)
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    r = findings.Run.load(run)
    assert r.manifest["host"]["gpus"][0]["name"] == "NVIDIA H200"
    planned = {x["run_id"] for b in json.loads((run / "plan.json").read_text())["batches"] for x in b["runs"]}
    records = storage.read_jsonl(run / "records.jsonl")
    assert {x["run_id"] for x in records} == planned and len(planned) == 44  # complete: every task has turns
    assert set(agent_loops.turns(r)["concurrency"].fillna(1).astype(int)) == {1, 8}
    outcomes = set(agent_loops.tasks(r)["task_outcome"])
    assert outcomes <= {"max_turns", "invalid_action"} and "max_turns" in outcomes
    comps = agent_loops.verdicts(r).set_index("level")
    for level in ("per turn", "per task"):  # the client's own time: Rust's is shorter, checked by A/A
        c = comps.loc[level]
        assert c["verdict"] == "python higher" and c["ci_low"] > 0, c
        assert c["aa_tests"] > 0 and c["aa_false_positive_rate"] <= 2 * r.alpha, c
    share = agent_loops.client_share(r).table.set_index("agent")["client_share"]
    assert (share < 1e-3).all(), share  # yet under 0.1 % of a task: the server's grammar is the task
    html = (run / "html" / "agent_loops-nocode.html").read_text()
    assert "The agent's own time, per turn and per task" in html and "data:image/png;base64" in html
    import html as markup
    assert "TR112's claims, tested on agent loops" in markup.unescape(html)


def test_tr112s_claims_on_loops_are_built_from_the_kept_agent_runs_numbers():
    """On results/agent-gpu-h200: each claim's numbers are the run's own (task times per
    language as the rule's batch means; the client's own cost a sliver of a task), and its
    verdict one of the table's words."""
    from langbench.report.sections import agent_loops
    r = findings.Run.load(paths.ROOT / "results" / "agent-gpu-h200")
    s = agent_loops.loop_claims(r)
    t = s.table.set_index("TR112 claim")
    assert len(t) == 5 and set(t["verdict"]) <= {"supported", "contradicted", "not shown"}
    tasks = agent_loops.tasks(r)
    batch = {a: tasks[tasks["agent"] == a].groupby("batch_id")["task_e2e_ms"].mean().mean() for a in ("python", "rust")}
    first = t.iloc[0]
    assert first["this run"].startswith(f"task end-to-end {batch['python']:,.0f} vs {batch['rust']:,.0f} ms")
    own = t.loc["…because the client's own cost is small next to the model's"]
    assert own["verdict"] == "supported"  # a 0.6 ms gap on tasks of tens of seconds
    assert s.sentence.startswith(f"5 of TR112's claims on loops of {int(tasks['turns'].sum())} turns")
