"""The lanes of `make test`: pytest-xdist workers (`pytest -n 2`), each pinned to a CPU of its own,
with a model store of its own whose models compute on one thread.

Why: on a 2-core host most of the suite is one process at a time (an agent starting, a notebook
kernel, a sweep's runner) while the other core idles, and the rest is a real server decoding.
Two 2-thread ggml runners on 2 cores stall each other (each waits at every barrier for a thread
the other runner holds), and so does one beside any busy process; a 1-thread runner does not.
So each lane gets one CPU and servers that use one thread:

- the worker process is pinned to its CPU (isolation.pin, as `isolation: pinned` does); everything it starts inherits
  that: the embedded Ollama and its runners, llama-server (whose `--threads` is
  server.physical_cores(), at most the CPUs this process may use), agents, kernels, browsers;
- Ollama 0.11.4 counts threads from /proc/cpuinfo, not from its affinity, so the lane's model
  store (LANGBENCH_OLLAMA_MODELS, paths.embedded_store) holds the same models with the Modelfile
  parameter num_thread 1, which is Ollama's default for a request that sends no num_thread: what
  the server does at its defaults is still what a request without options gets. The store's
  blobs are hard links to the per-user store's (no copy of the GGUF), its manifests its own, so a
  model a test creates or deletes in one lane is not seen by the other.

A plain `pytest` (no -n) has no lanes and runs as before.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx

from langbench import paths
from langbench.run import isolation, server

THREADS = 1

# Seconds each heavy file held its lane (`make test`, 2 lanes, a warm fresh clone on the 2-core
# polyglot machine, Intel Xeon, 1-thread decode 21-24 tok/s; test_sweep.py after its interrupted
# sweeps went to one config). xdist's --dist loadfile with
# --no-loadscope-reorder (the Makefile; by default it orders files by their number of tests) hands
# files out in collection order, so the files run heaviest first (longest processing time first): the
# last file to start is a short one and the lanes end together, not one lane running
# test_thinking alone for its last three minutes. Files not named weigh 0 and keep their order.
FILE_SECONDS = {
    "test_replay_study.py": 300, "test_scale.py": 240, "test_scale_report.py": 60, "test_chunk_lag.py": 30,
    "test_replay_server.py": 20, "test_docs.py": 10, "test_thinking.py": 133, "test_peers.py": 320, "test_agent_loops.py": 125, "test_sweep.py": 87, "test_agent_sweep.py": 82,
    "test_gpu.py": 64, "test_report.py": 62, "test_agent_replay.py": 62, "test_cluster.py": 48,
    "test_concurrency.py": 40, "test_agents_contract.py": 33, "test_sequential_sweep.py": 31,
    "test_stream_corpus.py": 30, "test_servers.py": 29, "test_openai_endpoints.py": 28,
    "test_robustness.py": 27, "test_aa.py": 22, "test_lab.py": 21, "test_timing_contract.py": 18,
    "test_schedule.py": 14, "test_fuzz.py": 12, "test_stop.py": 12,
}


def once(tmp_path_factory, name: str, make: Callable[[Path], Path]) -> Path:
    """What `make(folder)` returns, made once for the whole `make test` and shared by its lanes:
    the first lane to ask makes it under an exclusive lock in the session's common temporary
    folder (pytest-N/, the parent of each worker's popen-gwN/), the others wait and reuse it.
    Without lanes, once per pytest process, as a session fixture is. For what the tests only read
    (tests that change it copy it first): the tiny sweep was made in every lane, 25 s each."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return make(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent
    marker = root / f"{name}.path"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, however this lane ends
        if marker.exists():
            return Path(marker.read_text())
        made = make(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root)))
        marker.write_text(str(made))  # only once it is whole: a failed make leaves no marker
        return made


# The files that start llama-server, which `make test` builds at idle priority beside the tests
# (provision.start_llama_server_build) when it is not in the cache yet: then they run last, so that
# the build has the whole suite's idle CPU time before anything waits for it (tests/test_isolation.py
# checks that no other file starts one). Built already, they take their place by weight: last, a
# 45 s file left the other lane idle for most of it.
LLAMA_SERVER_FILES = ("test_servers.py",)

# Set by the controller before its workers start (conftest.pytest_configure), so that every lane
# collects in one order whenever the build ends: "1" while llama-server is not built.
BUILD_PENDING_ENV = "LANGBENCH_TEST_LLAMA_SERVER_PENDING"


def llama_server_pending() -> bool:
    """Whether the cached llama-server binary is still missing (being built, or to be built)."""
    return not paths.llama_server_cache_bin().exists()


def heaviest_first(items: list, build_pending: bool | None = None) -> None:
    """Reorder pytest's collected `items` in place: whole files, by FILE_SECONDS, heaviest first
    (a stable sort: a file's tests keep their order, unnamed files theirs); LLAMA_SERVER_FILES
    after all others while llama-server's build is pending (`build_pending`; None: what the
    controller put in BUILD_PENDING_ENV, else llama_server_pending())."""
    if build_pending is None:
        flag = os.environ.get(BUILD_PENDING_ENV)
        build_pending = llama_server_pending() if flag is None else flag == "1"
    items.sort(key=lambda item: (build_pending and item.path.name in LLAMA_SERVER_FILES,
                                 -FILE_SECONDS.get(item.path.name, 0)))


def enter(worker: str) -> Path | None:
    """Pin this xdist worker (`gw0`, `gw1`, ...) to its CPU and give it its own one-thread model
    store; returns the store (None where there is no per-user store to derive it from: then the
    tests that need a server fail as they would without `make setup`)."""
    index = int(worker.removeprefix("gw"))
    cpus = sorted(os.sched_getaffinity(0))
    isolation.pin(0, [cpus[index % len(cpus)]])  # the run's own pinning, for this worker and its children
    source = paths.embedded_store()
    if not (source / "manifests").is_dir():
        return None
    parent = paths.cache_dir() / "test-lanes"  # beside the store: hard links need one file system
    parent.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix=f"{worker}-", dir=parent))
    _link_tree(source / "blobs", store / "blobs")
    shutil.copytree(source / "manifests", store / "manifests")
    _one_thread(store)
    os.environ["LANGBENCH_OLLAMA_MODELS"] = str(store)
    return store


def leave(store: Path | None) -> None:
    if store is not None:
        shutil.rmtree(store, ignore_errors=True)


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for blob in source.iterdir():
        if blob.is_file():
            try:
                os.link(blob, target / blob.name)
            except OSError:  # another file system after all: a copy
                shutil.copy2(blob, target / blob.name)


def _one_thread(store: Path) -> None:
    """Every model of `store` again under its own name, with num_thread THREADS added to its
    parameters (the rest of its Modelfile kept, as `FROM itself` does)."""
    srv = server.start_embedded(store=store, log_path=store / "lane.log")
    try:
        names = [m["name"] for m in httpx.get(f"{srv.url}/api/tags", timeout=30).json()["models"]]
        for name in names:
            r = httpx.post(f"{srv.url}/api/create", timeout=120, json={
                "model": name, "from": name, "parameters": {"num_thread": THREADS}, "stream": False})
            r.raise_for_status()
            shown = httpx.post(f"{srv.url}/api/show", json={"model": name}, timeout=30).json()
            if f"num_thread {THREADS}" not in " ".join(shown.get("parameters", "").split()):
                raise RuntimeError(f"lane store {store}: {name} did not take num_thread {THREADS}: {shown}")
    finally:
        server.stop(srv)
