"""The GPU study on a host without internet (issue 10): a bundle built here, one command there.

Here (`python -m langbench bundle gpu --out DIR`, at most 64 MiB):
    bin/ollama             v0.11.4 built portable (-march=x86-64-v3), stripped, version ldflag
    ggml-src.tar.xz        the same module's ggml sources, for its CUDA backend
    llama-cpp-src.tar.xz   the llama.cpp that `make setup` builds llama-server from (PyPI's
                           llama-cpp-python sdist), less what building llama-server never reads
    bin/langbench-agent    the Rust agent
    bin/langbench-replay   the replay server
    gemma3-vocab.gguf      the real Gemma 3 vocabulary (from the embedded 270M GGUF)
    wheels/                what the runner and every Python client need that such a host lacks
    bundle.json            versions, sizes
`--server llama-cpp` leaves out what only Ollama needs there (bin/ollama, ggml-src.tar.xz: 31 MB),
so that the bundle and the checkout travel together within a device call's 64 MiB.

There (`python3 -m langbench gpu-host DIR`): builds Ollama's CUDA backend for the GPU's compute
capability (asked of NVML), lays out bin/ and lib/ollama/, writes the synthetic gemma3:latest-
shaped model and registers it, starts the server once, and checks from its log that the CUDA
backend loaded and how many layers went to the GPU. Each failure names its cause. Afterwards
`python3 -m langbench sweep parameters/tr112-gpu.yaml` runs as anywhere else (the bundle's
binaries come first on PATH and in the cache).

`gpu-host DIR --server llama-cpp` (issue 42) builds llama.cpp's `llama-server` with CUDA for
that one architecture instead, where `server.kind: llama-cpp` finds it (the cache's
llama-server, its built.json naming the architecture), writes the text-only 2-block model
(vocab.SYNTHETIC_TEXT_MODEL) where a run naming it finds it, and checks from the server's log
that every layer went to the GPU; Ollama is not touched.

The Ollama path worked on an H100 (../shared/gpu/README.md); so did the llama-server build (193 s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from langbench import paths, vocab
from langbench.gpuhost import gguf_synth
from langbench.run import server

PORTABLE_CFLAGS = "-O3 -march=x86-64-v3"
BUNDLE_LIMIT = 64 * 2**20
GGML_PATHS = ("CMakeLists.txt", "CMakePresets.json", "ml/backend/ggml/ggml")
# What a GPU host with CUDA, PyTorch and the scientific stack lacks (device KINDS.md), at the
# versions of constraints.txt; the Python agent's client stack travels whole so that it is the
# one measured here.
WHEELS = ("ollama", "pydantic", "pydantic_core", "annotated-types", "typing-inspection",
          "typing_extensions", "httpx", "httpcore", "h11", "anyio", "idna", "certifi", "orjson",
          "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "gguf",
          # the distributed runner (--cluster): dask.distributed and what the host image lacks
          "dask", "distributed", "partd", "locket", "tblib", "zict", "tornado", "toolz", "cloudpickle",
          # the other Python clients of the scale study (Makefile AGENT_PACKAGES: ollama openai
          # aiohttp uvloop): the openai SDK and its transport, openai[aiohttp] and uvloop (python-tuned),
          # uvloop (python-raw); test_gpu.py checks this covers the clients' own venv
          "openai", "httpx2", "httpcore2", "truststore", "jiter", "sniffio",
          "aiohttp", "aiohappyeyeballs", "aiosignal", "attrs", "frozenlist", "multidict", "propcache",
          "yarl", "uvloop")
SERVERS = ("ollama", "llama-cpp")  # what a bundle can carry the sources of
# What building llama-server never reads, left out of the bundle's llama.cpp (the sdist's
# vendor/llama.cpp is 176 MB, most of it vocabularies, docs and other GPUs' backends): whole
# top-level folders CMake adds only for tests, examples or the app (all OFF), ggml backends other
# than CPU and CUDA (each added only when its GGML_* option is ON), and the web UI's sources
# (LLAMA_BUILD_UI OFF: tools/ui's CMakeLists.txt stays). test_gpu.py configures what is kept.
LLAMA_CPP_LEAVE_OUT = (
    "models", "docs", "benches", "tests", "examples", "pocs", "gguf-py", "media", "conversion",
    "requirements", "skills", "ci", "app", ".git", ".github", ".devops", ".gemini", ".pi",
    *(f"ggml/src/ggml-{b}" for b in ("cann", "et", "hip", "metal", "musa", "virtgpu", "sycl", "vulkan", "webgpu",
                                     "zdnn", "opencl", "hexagon", "zendnn", "openvino")),
    "tools/ui/src", "tools/ui/tests", "tools/ui/static")


class GpuError(RuntimeError):
    """A step of the GPU path failed; the message names the step and the cause."""


def say(msg: str) -> None:
    print(f"gpu: {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise GpuError(f"{what} failed (exit {done.returncode}): {' '.join(map(str, cmd))}\n"
                       f"{(done.stderr or done.stdout)[-3000:]}")
    return done


# --- here: the bundle -----------------------------------------------------------------------

def portable_ollama() -> Path:
    """Ollama built for any x86-64-v3 host (AVX2), stripped; cached by version and target."""
    target = paths.cache_dir() / f"ollama-{paths.OLLAMA_VERSION}" / "portable-x86-64-v3" / "bin" / "ollama"
    if target.exists():
        return target
    if not shutil.which("go"):
        raise GpuError("Go is needed to build the portable ollama: install Go, then rerun")
    say(f"building a portable ollama v{paths.OLLAMA_VERSION} (a few minutes, once)")
    env = dict(os.environ, GOBIN=str(target.parent), CGO_ENABLED="1", GOFLAGS="-mod=mod",
               CGO_CFLAGS=PORTABLE_CFLAGS, CGO_CXXFLAGS=PORTABLE_CFLAGS)
    ldflags = f"-s -w -X=github.com/ollama/ollama/version.Version={paths.OLLAMA_VERSION}"
    _run(["go", "install", "-trimpath", "-ldflags", ldflags,
          f"github.com/ollama/ollama@v{paths.OLLAMA_VERSION}"], "go install (portable ollama)", env=env)
    return target


def module_dir() -> Path:
    modcache = _run(["go", "env", "GOMODCACHE"], "go env GOMODCACHE").stdout.strip()
    found = Path(modcache) / "github.com" / "ollama" / f"ollama@v{paths.OLLAMA_VERSION}"
    if not found.exists():
        raise GpuError(f"{found} is missing: build ollama first (`make setup`)")
    return found


def _pinned(name: str) -> str:
    want = re.sub(r"[-_.]+", "-", name).lower()
    for line in (paths.ROOT / "constraints.txt").read_text().splitlines():
        pkg, _, ver = line.partition("==")
        if re.sub(r"[-_.]+", "-", pkg).lower() == want:
            return f"{pkg}=={ver}"
    raise GpuError(f"{name} is not pinned in constraints.txt")


def download_wheels(out: Path, python: str = "3.12") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    specs = [_pinned(n) for n in WHEELS]
    platforms = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
          "--python-version", python, "--implementation", "cp", *platforms, "-d", str(out), *specs],
         "pip download (wheels for the GPU host)")
    return sorted(out.glob("*.whl"))


def leaves_out(rel: str) -> bool:
    """Whether the bundle leaves this path of llama.cpp out (LLAMA_CPP_LEAVE_OUT)."""
    return any(rel == d or rel.startswith(d + "/") for d in LLAMA_CPP_LEAVE_OUT)


def llama_cpp_commit(sdist: tarfile.TarFile) -> str | None:
    """The upstream llama.cpp commit the sdist vendors, as its CHANGELOG names it for this version
    ("feat: update llama.cpp to ggml-org/llama.cpp@0c1e57098"); None where it does not."""
    log = next((m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/CHANGELOG.md")), None)
    if log is None:
        return None
    text = sdist.extractfile(log).read().decode("utf-8", "replace")
    section = re.search(rf"^## \[{re.escape(paths.LLAMA_CPP_PACKAGE_VERSION)}\](.*?)(?=^## \[|\Z)", text, re.M | re.S)
    found = re.search(r"llama\.cpp@([0-9a-f]{7,40})", section.group(1)) if section else None
    return found.group(1) if found else None


def pack_llama_cpp(out: Path) -> dict:
    """llama-cpp-src.tar.xz: the sdist's vendored llama.cpp as `llama.cpp/…`, less what building
    llama-server never reads (LLAMA_CPP_LEAVE_OUT). Returns what bundle.json says of it."""
    import tempfile
    from langbench.run import provision
    with tempfile.TemporaryDirectory() as tmp:
        sdist_path = provision.download_llama_cpp_sdist(Path(tmp))
        files = unpacked = 0
        with tarfile.open(sdist_path) as sdist, tarfile.open(out, "w:xz") as tar:
            commit = llama_cpp_commit(sdist)
            for member, rel in provision.llama_cpp_members(sdist):
                if leaves_out(rel):
                    continue
                data = sdist.extractfile(member) if member.isfile() else None
                member.name = f"llama.cpp/{rel}"
                # a long path rides in the sdist's pax header, which tarfile writes back over
                # `name`: left in, the file lands at its old path and cmake misses it
                member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath")}
                tar.addfile(member, data)
                files += member.isfile()
                unpacked += member.size if member.isfile() else 0
    return {"package": f"{paths.LLAMA_CPP_PACKAGE}=={paths.LLAMA_CPP_PACKAGE_VERSION}", "commit": commit,
            "files": files, "bytes_unpacked": unpacked}


def bundle(out: Path, ollama: Path | None = None, ollama_cflags: str | None = None,
           servers: tuple[str, ...] = SERVERS) -> dict:
    """Build the bundle into `out` (replaced); returns bundle.json's content.

    `ollama`: the server binary to pack, built with `ollama_cflags`; default the portable build
    (portable_ollama(), PORTABLE_CFLAGS), which is what a GPU host needs. The tests pack the
    binary `make setup` already built instead, so that checking the packing costs no second
    build of the server. Whatever binary is packed is stripped in the bundle. `servers`: whose
    sources it carries (SERVERS: both; ("llama-cpp",) leaves Ollama's binary and ggml out)."""
    from langbench.run import provision
    out = Path(out)
    if (ollama is None) != (ollama_cflags is None):
        raise GpuError("bundle: give both the ollama binary and the flags it was built with, or neither")
    if not servers or set(servers) - set(SERVERS):
        raise GpuError(f"bundle: servers are among {', '.join(SERVERS)}, not {', '.join(servers) or 'none'}")
    if out.exists():
        shutil.rmtree(out)
    (out / "bin").mkdir(parents=True)
    doc: dict = {"servers": list(servers)}
    if "ollama" in servers:
        shutil.copy2(ollama or portable_ollama(), out / "bin" / "ollama")
        if shutil.which("strip"):  # the portable build is stripped already (-s -w): a no-op there
            _run(["strip", "--strip-all", str(out / "bin" / "ollama")], "strip (ollama)")
        src = module_dir()
        with tarfile.open(out / "ggml-src.tar.xz", "w:xz") as tar:
            for rel in GGML_PATHS:
                tar.add(src / rel, arcname=rel)
        doc.update(ollama_version=paths.OLLAMA_VERSION, ollama_cflags=ollama_cflags or PORTABLE_CFLAGS)
    if "llama-cpp" in servers:
        say("packing llama.cpp's sources (about a minute: xz)")
        doc["llama_cpp"] = pack_llama_cpp(out / "llama-cpp-src.tar.xz")
    agent, replay = provision.ensure_native()  # built here, for any x86-64 (no target-cpu)
    shutil.copy2(agent, out / "bin" / "langbench-agent")
    shutil.copy2(replay, out / "bin" / "langbench-replay")
    doc["rust_source_digest"] = paths.rust_source_digest()  # the checkout's: gpu-host lays them out under it
    gguf_synth.write_vocab(provision.ensure_gguf(), out / "gemma3-vocab.gguf")
    wheels = download_wheels(out / "wheels")
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    doc.update(wheels=[w.name for w in wheels], bytes=sum(sizes.values()), files=sizes)
    (out / "bundle.json").write_text(json.dumps(doc, indent=2) + "\n")
    if doc["bytes"] > BUNDLE_LIMIT:
        raise GpuError(f"the bundle is {doc['bytes'] / 2**20:.1f} MiB, over its 64 MiB limit")
    say(f"bundle {out}: {doc['bytes'] / 2**20:.1f} MiB in {len(sizes)} files")
    return doc


# --- there: the GPU host --------------------------------------------------------------------

def compute_capability(nvml=None) -> str:
    """"90" for an H100: the CUDA architecture of GPU 0, asked of NVML (`nvml`: a stand-in),
    else of `nvidia-smi --query-gpu=compute_cap` where NVML's Python binding is missing."""
    try:
        lib = nvml or __import__("pynvml")
        lib.nvmlInit()
        major, minor = lib.nvmlDeviceGetCudaComputeCapability(lib.nvmlDeviceGetHandleByIndex(0))
    except Exception as e:
        smi = _smi_compute_capability() if nvml is None else None
        if smi:
            return smi
        raise GpuError(f"no NVIDIA GPU answers NVML ({type(e).__name__}: {e}): "
                       "is the driver loaded and nvidia-ml-py installed?") from None
    return f"{major}{minor}"


def _smi_compute_capability() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else ""
    return first.replace(".", "") if re.fullmatch(r"\d+\.\d+", first) else None


def build_cuda_backend(bundle_dir: Path, work: Path, arch: str, jobs: int | None = None) -> Path:
    """cmake + ninja of ggml-cuda from the bundle's sources; returns the folder of the .so."""
    if not shutil.which("nvcc") and not Path("/usr/local/cuda/bin/nvcc").exists():
        raise GpuError("nvcc is not installed: the CUDA toolkit is needed to build the backend")
    for tool in ("cmake", "ninja"):
        if not shutil.which(tool):
            raise GpuError(f"{tool} is not installed: it is needed to build the CUDA backend")
    src, build = work / "src", work / "build"
    if not src.exists():
        with tarfile.open(bundle_dir / "ggml-src.tar.xz") as tar:
            tar.extractall(src, filter="data")
    started = time.monotonic()
    say(f"building the CUDA backend for sm_{arch} (about 2.5 minutes on 16 cores)")
    _run(["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
          "-DGGML_CCACHE=OFF"], "cmake configure (CUDA backend)")
    _run(["cmake", "--build", str(build), "--target", "ggml-cuda", "-j", str(jobs or os.cpu_count() or 4)],
         "cmake build (CUDA backend)")
    libdir = build / "lib" / "ollama"
    if not (libdir / "libggml-cuda.so").exists():
        raise GpuError(f"the build left no libggml-cuda.so in {libdir}")
    say(f"CUDA backend built in {time.monotonic() - started:.0f} s")
    return libdir


def layout(bundle_dir: Path, work: Path, cuda_libs: Path | None) -> Path:
    """work/ollama/bin/ollama + work/ollama/lib/ollama/*.so (Ollama finds lib/ next to bin/)."""
    if not (bundle_dir / "bin" / "ollama").exists():
        raise GpuError(f"{bundle_dir} carries no ollama (a `bundle gpu --server llama-cpp` bundle): "
                       "use gpu-host --server llama-cpp, or make the bundle with both servers")
    root = work / "ollama"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle_dir / "bin" / "ollama", root / "bin" / "ollama")
    if cuda_libs:
        (root / "lib" / "ollama").mkdir(parents=True, exist_ok=True)
        for so in cuda_libs.glob("*.so*"):
            shutil.copy2(so, root / "lib" / "ollama" / so.name)
    layout_clients(bundle_dir)
    return root / "bin" / "ollama"


def layout_clients(bundle_dir: Path) -> list[Path]:
    """The bundle's Rust agent and replay server where this checkout's runner looks for them
    (paths.rust_agent_bin, paths.replay_server_bin: keyed by the digest of agents/). A bundle
    made from other sources than this checkout's is refused: its binaries are not these."""
    doc = _bundle_json(bundle_dir)
    made_from, here = doc.get("rust_source_digest"), paths.rust_source_digest()
    if made_from and made_from != here:
        raise GpuError(f"{bundle_dir}'s Rust agent and replay server were built from other sources "
                       f"(agents/ digest {made_from}) than this checkout's ({here}): make the bundle again here")
    placed = []
    for name, target in (("langbench-agent", paths.rust_agent_bin()), ("langbench-replay", paths.replay_server_bin())):
        if (bundle_dir / "bin" / name).exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(bundle_dir / "bin" / name, target)
            placed.append(target)
    return placed


def _bundle_json(bundle_dir: Path) -> dict:
    try:
        return json.loads((bundle_dir / "bundle.json").read_text())
    except (OSError, ValueError):
        return {}


def check_log(log_text: str, want_cuda: bool) -> dict:
    """What the server log says: CUDA backend loaded, layers offloaded."""
    cuda = "loaded CUDA backend" in log_text
    layers = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", log_text)
    if want_cuda and not cuda:
        raise GpuError("the server did not load the CUDA backend (no 'loaded CUDA backend' in its "
                       "log): is lib/ollama/libggml-cuda.so next to bin/ and built for this GPU?")
    if want_cuda and (not layers or int(layers[-1][0]) == 0):
        raise GpuError("the server offloaded no layer to the GPU: see its log for the CUDA error")
    return {"cuda_backend": cuda,
            "layers_gpu": int(layers[-1][0]) if layers else None,
            "layers_total": int(layers[-1][1]) if layers else None}


def prepare_host(bundle_dir: Path, work: Path, small: bool = False, cuda: bool = True) -> dict:
    """Everything between a bare GPU host and the first sweep; returns what it found."""
    bundle_dir, work = Path(bundle_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    libs = build_cuda_backend(bundle_dir, work, compute_capability()) if cuda else None
    binary = layout(bundle_dir, work, libs)
    os.environ["PATH"] = f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    log = work / "check.log"
    srv = server.start_embedded(binary=binary, log_path=log)
    try:
        if not server.has_model(srv.url, vocab.SYNTHETIC_MODEL):  # a second call skips this
            started = time.monotonic()
            model_file = work / "gemma3-4b-shape.gguf"
            written = gguf_synth.write_gemma3_4b_shape(model_file, bundle_dir / "gemma3-vocab.gguf", small=small)
            say(f"model written in {time.monotonic() - started:.0f} s: {written}")
            server.create_model(srv, vocab.SYNTHETIC_MODEL, model_file, binary)
            model_file.unlink()  # the store holds its own copy (3.3 GB each)
        import httpx
        r = httpx.post(f"{srv.url}/api/generate", timeout=300, json={
            "model": vocab.SYNTHETIC_MODEL, "prompt": "The", "raw": True, "stream": False,
            "options": {"num_predict": 16, "seed": 1, "num_gpu": 999}})
        if r.status_code != 200:
            raise GpuError(f"the first generation failed: HTTP {r.status_code} {r.text[:500]}")
        body = r.json()
    finally:
        server.stop(srv)
    found = check_log(log.read_text(errors="replace"), want_cuda=cuda)
    found.update(binary=str(binary), model=vocab.SYNTHETIC_MODEL,
                 first_tokens=body.get("eval_count"), done_reason=body.get("done_reason"),
                 decode_tps=body["eval_count"] / (body["eval_duration"] / 1e9) if body.get("eval_duration") else None)
    say(f"ready: {found}")
    return found


# --- there: llama.cpp's llama-server with CUDA (issue 42) ---------------------------------------

def nvcc_for_cmake() -> str | None:
    """None where nvcc is on PATH (CMake finds it), else the CUDA toolkit's own path; GpuError
    where there is none."""
    if shutil.which("nvcc"):
        return None
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return "/usr/local/cuda/bin/nvcc"
    raise GpuError("nvcc is not installed: the CUDA toolkit is needed to build llama-server with CUDA")


def llama_cpp_commands(source: Path, build: Path, tuning: Path, arch: str | None, jobs: int | None = None,
                       nvcc: str | None = None) -> tuple[dict, list[list[str]]]:
    """The CMake options and commands of llama-server on this host: the project's CPU build
    (provision.llama_server_options: the same options, CMAKE_TUNING, Ninja) with, for `arch`,
    ggml's CUDA backend for that architecture alone and flash attention for f16 K/V only."""
    from langbench.run import provision
    options = provision.llama_server_options(cuda_arch=arch)
    if arch and nvcc:
        options["CMAKE_CUDA_COMPILER"] = nvcc
    return options, provision.llama_server_commands(source, build, options, tuning, jobs, tool=provision.ninja())


def _logged(cmd: list[str], log) -> int:
    """Run one build step with its output into the open log; its exit code."""
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode


def build_llama_server(bundle_dir: Path, work: Path, arch: str | None, jobs: int | None = None) -> Path:
    """llama-server from the bundle's llama.cpp, with CUDA for `arch` (None: CPU only), placed
    where server.kind llama-cpp finds it (paths.llama_server_cache_bin) with its built.json;
    a second call on the same host reuses a build for the same architecture."""
    from langbench.run import provision
    target = paths.llama_server_cache_bin()
    built = target.parent.parent / "built.json"
    had = server.KINDS["llama-cpp"].build() if target.exists() else {}
    if had.get("from") == "gpu bundle" and had.get("cuda_arch") == arch:
        say(f"llama-server: {target} (built {had.get('seconds')} s, sm_{arch}; reused)")
        return target
    if not (bundle_dir / "llama-cpp-src.tar.xz").exists():
        raise GpuError(f"{bundle_dir} carries no llama-cpp-src.tar.xz: make the bundle again "
                       "(`bundle gpu` carries llama.cpp's sources)")
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise GpuError(f"{tool} is not installed: it is needed to build llama-server")
    nvcc = nvcc_for_cmake() if arch else None
    src, build, log_path = work / "llama-src", work / "llama-build", work / "llama-build.log"
    if not (src / "llama.cpp" / "CMakeLists.txt").exists():
        with tarfile.open(bundle_dir / "llama-cpp-src.tar.xz") as tar:
            tar.extractall(src, filter="data")
    tuning = work / "langbench-tuning.cmake"
    tuning.write_text(provision.CMAKE_TUNING)
    options, commands = llama_cpp_commands(src / "llama.cpp", build, tuning, arch, jobs, nvcc)
    say(f"building llama-server{f' with CUDA for sm_{arch}' if arch else ''} (about 3.5 minutes on 16 cores; "
        f"log {log_path})")
    started = time.monotonic()
    with open(log_path, "w") as log:
        for cmd in commands:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            if _logged(cmd, log) != 0:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
                raise GpuError(f"llama-server build failed at `{cmd[0]} {cmd[1]}` (log {log_path}):\n{tail}")
    seconds = time.monotonic() - started
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".tmp{os.getpid()}")
    shutil.copy2(build / "bin" / "llama-server", partial)
    partial.replace(target)
    nvcc_version = None
    if arch:  # "Cuda compilation tools, release 13.0, V13.0.88"
        lines = _run([nvcc or "nvcc", "--version"], "nvcc --version").stdout.splitlines()
        nvcc_version = next((line.strip() for line in lines if "release" in line), lines[-1].strip() if lines else None)
    llama = _bundle_json(bundle_dir).get("llama_cpp", {})
    built.write_text(json.dumps({
        "from": "gpu bundle", "seconds": round(seconds, 1), "package": llama.get("package"),
        "llama_cpp_commit": llama.get("commit"), "cuda_arch": arch, "nvcc": nvcc_version, "cmake": options,
        "generator": f"Ninja ({provision.ninja()})" if provision.ninja() else "CMake's default",
        "cmake_tuning": provision.CMAKE_TUNING, "cpus": os.cpu_count()}) + "\n")
    say(f"llama-server built in {seconds:.0f} s: {target}")
    return target


def write_text_model(bundle_dir: Path) -> dict:
    """The text-only 2-block model (vocab.SYNTHETIC_TEXT_MODEL) where server.kind llama-cpp finds
    it by name (paths.synthetic_gguf); kept where a second call finds it written."""
    target = paths.synthetic_gguf(vocab.SYNTHETIC_TEXT_MODEL)
    if target.exists():
        return {"path": str(target), "written": False}
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    partial = target.with_suffix(".partial")
    written = gguf_synth.write_text_model(partial, bundle_dir / "gemma3-vocab.gguf")
    partial.replace(target)
    say(f"model {vocab.SYNTHETIC_TEXT_MODEL} written in {time.monotonic() - started:.1f} s: {written}")
    return {"path": str(target), "written": True, **written}


def list_devices(binary: Path) -> list[dict]:
    """`llama-server --list-devices`: the CUDA devices it sees ("CUDA0: NVIDIA H200 (143155 MiB, …)")."""
    done = subprocess.run([str(binary), "--list-devices"], capture_output=True, text=True, timeout=60)
    return [{"name": name, "device": dev} for dev, name in
            re.findall(r"^\s*(CUDA\d+): (.+?) \(", done.stdout + done.stderr, re.M)]


def gpu_mib_of(pid: int) -> int | None:
    """GPU memory (MiB) that process `pid` holds, from nvidia-smi; None where it holds none."""
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, timeout=60)
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid) and parts[1].isdigit():
            return int(parts[1])
    return None


def check_llama_server(work: Path, want_cuda: bool) -> dict:
    """Start llama-server once on the text model, ask it for 32 tokens on /v1/chat/completions,
    and read from its log where the layers went: with CUDA, every layer on the GPU or GpuError."""
    import httpx
    log = work / "llama-check.log"
    srv = server.KINDS["llama-cpp"].start(log_path=log, model=vocab.SYNTHETIC_TEXT_MODEL, timeout=180.0)
    try:
        r = httpx.post(f"{srv.url}/v1/chat/completions", timeout=120, json={
            "model": vocab.SYNTHETIC_TEXT_MODEL, "messages": [{"role": "user", "content": "The"}],
            "max_tokens": 32, "seed": 1, "stream": False})
        if r.status_code != 200:
            raise GpuError(f"llama-server's first completion failed: HTTP {r.status_code} {r.text[:500]}")
        body = r.json()
        on_gpu = gpu_mib_of(srv.process.pid) if want_cuda else None
    finally:
        server.stop(srv)
    found = server.llama_log_facts(log.read_text(errors="replace"))
    if want_cuda and not found["cuda_devices"]:  # this llama.cpp logs no devices at info level: ask it
        found["cuda_devices"] = list_devices(paths.llama_server_cache_bin())
    if want_cuda and found["layers_gpu"] is None and on_gpu:  # nor the offload: the process's GPU memory says
        found.update(layers_gpu=server.KINDS["llama-cpp"].GPU_LAYERS, layers_total=None, gpu_mib=on_gpu,
                     offload="every layer (-ngl 99): the server's process held GPU memory, its log names no count")
        found["layers_total"] = found["layers_gpu"]
    if want_cuda and not found["cuda_devices"]:
        raise GpuError(f"llama-server found no CUDA device (no 'Device 0: …' in {log}): is it built with "
                       "GGML_CUDA and the driver loaded?")
    if want_cuda and (not found["layers_gpu"] or found["layers_gpu"] < found["layers_total"]):
        raise GpuError(f"llama-server offloaded {found['layers_gpu']}/{found['layers_total']} layers to the GPU, "
                       f"not every one: see {log}")
    timings = body.get("timings") or {}
    found.update(completion_tokens=(body.get("usage") or {}).get("completion_tokens"),
                 finish_reason=((body.get("choices") or [{}])[0]).get("finish_reason"),
                 decode_tps=timings.get("predicted_per_second"), command=srv.command)
    return found


def prepare_llama_cpp_host(bundle_dir: Path, work: Path, cuda: bool = True, jobs: int | None = None) -> dict:
    """A bare GPU host to its first scale sweep on llama-server (server.kind llama-cpp): the
    clients laid out, llama-server built with CUDA for this GPU, the text model written, one
    completion checked. Ollama is neither built nor started. Returns what it found."""
    bundle_dir, work = Path(bundle_dir), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    arch = compute_capability() if cuda else None
    layout_clients(bundle_dir)
    steps = {}
    started = time.monotonic()
    binary = build_llama_server(bundle_dir, work, arch, jobs)
    steps["build_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    model = write_text_model(bundle_dir)
    steps["model_s"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    found = check_llama_server(work, want_cuda=cuda)
    steps["check_s"] = round(time.monotonic() - started, 1)
    found.update(binary=str(binary), cuda_arch=arch, model=vocab.SYNTHETIC_TEXT_MODEL, model_file=model["path"],
                 steps=steps)
    say(f"ready: {found}")
    return found
