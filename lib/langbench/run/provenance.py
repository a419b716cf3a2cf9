"""What a run was measured on: server, model, host, GPU, packages, commit."""

from __future__ import annotations

import platform
import re
import subprocess
from importlib.metadata import PackageNotFoundError, version

import httpx
import psutil

from langbench import paths

PACKAGES = ("langbench", "ollama", "httpx", "numpy", "pandas", "scipy", "statsmodels",
            "seaborn", "matplotlib", "papermill", "nbconvert", "jsonschema", "psutil")


def ollama_version(url: str) -> str:
    r = httpx.get(f"{url}/api/version", timeout=10)
    r.raise_for_status()
    return r.json()["version"]


def model_details(url: str, model: str) -> dict:
    """`/api/show`: family, parameter size, quantization and the GGUF blob's sha256."""
    r = httpx.post(f"{url}/api/show", json={"model": model}, timeout=30)
    r.raise_for_status()
    show = r.json()
    details = show.get("details", {})
    blob = re.search(r"sha256[-:]([0-9a-f]{64})", show.get("modelfile", ""))
    return {
        "name": model,
        "family": details.get("family"),
        "parameter_size": details.get("parameter_size"),
        "quantization_level": details.get("quantization_level"),
        "format": details.get("format"),
        "gguf_sha256": blob.group(1) if blob else None,
        "modified_at": show.get("modified_at"),
    }


def loaded_models(url: str) -> list[dict]:
    """`/api/ps`: what is loaded, with size and size_vram (bytes)."""
    r = httpx.get(f"{url}/api/ps", timeout=10)
    r.raise_for_status()
    return [{"name": m.get("name"), "size": m.get("size"), "size_vram": m.get("size_vram"),
             "context_length": m.get("context_length"), "expires_at": m.get("expires_at")}
            for m in r.json().get("models", [])]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_info() -> dict:
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": gpu_info(),
    }


def gpu_info() -> list[dict]:
    """Name, memory and driver of each NVIDIA GPU; [] when there is none (not an error)."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # no driver, no library, no device: a CPU host
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append({"index": i, "name": pynvml.nvmlDeviceGetName(handle),
                         "memory_bytes": mem.total, "driver": driver})
        return gpus
    finally:
        pynvml.nvmlShutdown()


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> dict:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=paths.ROOT, capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}
