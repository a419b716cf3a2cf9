"""The GPU study on a host without internet (issue 10): a bundle built here, one command there.

Here (`python -m langbench bundle gpu --out DIR`, at most 64 MiB):
    bin/ollama            v0.11.4 built portable (-march=x86-64-v3), stripped, version ldflag
    bin/langbench-agent   the Rust agent
    ggml-src.tar.xz       the same module's ggml sources, for its CUDA backend
    gemma3-vocab.gguf     the real Gemma 3 vocabulary (from the embedded 270M GGUF)
    wheels/               what the runner and the Python agent need that such a host lacks
    bundle.json           versions, sizes

There (`python3 -m langbench gpu-host DIR`): builds the CUDA backend for the GPU's compute
capability (asked of NVML), lays out bin/ and lib/ollama/, writes the synthetic gemma3:latest-
shaped model and registers it, starts the server once, and checks from its log that the CUDA
backend loaded and how many layers went to the GPU. Each failure names its cause. Afterwards
`python3 -m langbench sweep parameters/tr112-gpu.yaml` runs as anywhere else (the bundle's
binaries come first on PATH and in the cache).

The path it follows worked on an H100 (../shared/gpu/README.md).
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
          "typing_extensions", "httpx", "httpcore", "h11", "anyio", "idna", "certifi",
          "jsonschema", "jsonschema-specifications", "referencing", "rpds-py", "gguf",
          # the distributed runner (--cluster): dask.distributed and what the host image lacks
          "dask", "distributed", "partd", "locket", "tblib", "zict", "tornado", "toolz", "cloudpickle")


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


def bundle(out: Path, ollama: Path | None = None, ollama_cflags: str | None = None) -> dict:
    """Build the bundle into `out` (replaced); returns bundle.json's content.

    `ollama`: the server binary to pack, built with `ollama_cflags`; default the portable build
    (portable_ollama(), PORTABLE_CFLAGS), which is what a GPU host needs. The tests pack the
    binary `make setup` already built instead, so that checking the packing costs no second
    build of the server. Whatever binary is packed is stripped in the bundle."""
    from langbench.run import provision
    out = Path(out)
    if (ollama is None) != (ollama_cflags is None):
        raise GpuError("bundle: give both the ollama binary and the flags it was built with, or neither")
    if out.exists():
        shutil.rmtree(out)
    (out / "bin").mkdir(parents=True)
    shutil.copy2(ollama or portable_ollama(), out / "bin" / "ollama")
    if shutil.which("strip"):  # the portable build is stripped already (-s -w): a no-op there
        _run(["strip", "--strip-all", str(out / "bin" / "ollama")], "strip (ollama)")
    shutil.copy2(provision.ensure_rust_agent(), out / "bin" / "langbench-agent")
    src = module_dir()
    with tarfile.open(out / "ggml-src.tar.xz", "w:xz") as tar:
        for rel in GGML_PATHS:
            tar.add(src / rel, arcname=rel)
    gguf_synth.write_vocab(provision.ensure_gguf(), out / "gemma3-vocab.gguf")
    wheels = download_wheels(out / "wheels")
    sizes = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    doc = {"ollama_version": paths.OLLAMA_VERSION, "ollama_cflags": ollama_cflags or PORTABLE_CFLAGS,
           "wheels": [w.name for w in wheels], "bytes": sum(sizes.values()), "files": sizes}
    (out / "bundle.json").write_text(json.dumps(doc, indent=2) + "\n")
    if doc["bytes"] > BUNDLE_LIMIT:
        raise GpuError(f"the bundle is {doc['bytes'] / 2**20:.1f} MiB, over its 64 MiB limit")
    say(f"bundle {out}: {doc['bytes'] / 2**20:.1f} MiB in {len(sizes)} files")
    return doc


# --- there: the GPU host --------------------------------------------------------------------

def compute_capability(nvml=None) -> str:
    """"90" for an H100: the CUDA architecture of GPU 0, asked of NVML."""
    try:
        nvml = nvml or __import__("pynvml")
        nvml.nvmlInit()
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(nvml.nvmlDeviceGetHandleByIndex(0))
    except Exception as e:
        raise GpuError(f"no NVIDIA GPU answers NVML ({type(e).__name__}: {e}): "
                       "is the driver loaded and nvidia-ml-py installed?") from None
    return f"{major}{minor}"


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
    root = work / "ollama"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle_dir / "bin" / "ollama", root / "bin" / "ollama")
    if cuda_libs:
        (root / "lib" / "ollama").mkdir(parents=True, exist_ok=True)
        for so in cuda_libs.glob("*.so*"):
            shutil.copy2(so, root / "lib" / "ollama" / so.name)
    agent = paths.rust_agent_bin()
    agent.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle_dir / "bin" / "langbench-agent", agent)
    return root / "bin" / "ollama"


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
