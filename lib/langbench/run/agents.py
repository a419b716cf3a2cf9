"""Launching an agent process and measuring it from the outside (DESIGN.md, "The agent
contract": wall time, user and system CPU, peak RSS, start-up)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from langbench import paths, stop

AGENTS = ("python", "rust", "null", "python-tuned", "python-raw")  # null: the minimal client whose overhead is the floor
# The Python clients beside the official SDKs' (DESIGN.md, "Sessions at scale"): the same agent
# program, its loop and its parser, with another transport (agents/python/agent_async.py).
PYTHON_CLIENTS = {"python": "sdk", "python-tuned": "tuned", "python-raw": "raw"}


class AgentMissing(RuntimeError):
    """An agent cannot be launched; the message says how to get it."""


def command(agent: str) -> list[str]:
    if agent == "python":
        return [str(paths.agent_python()), str(paths.PYTHON_AGENT)]
    if agent in PYTHON_CLIENTS:
        return [str(paths.agent_python()), str(paths.PYTHON_AGENT), "--client", PYTHON_CLIENTS[agent]]
    if agent == "rust":
        return [str(paths.rust_agent_bin())]
    if agent == "null":
        return [str(paths.agent_python()), str(paths.NULL_CLIENT)]
    raise ValueError(f"unknown agent {agent!r}: expected one of {', '.join(AGENTS)}")


def check(agent: str) -> None:
    exe = Path(next(part for part in reversed(command(agent)) if not part.startswith("-") and "/" in part))
    if not exe.exists():
        raise AgentMissing(f"the {agent} agent is missing ({exe}): run `make setup`")


def _die_with_runner(runner_pid: int, cpus: list[int] | None = None) -> None:
    """Runs in the agent's child before exec: SIGKILL when the runner dies, however it dies,
    so that no orphan agent goes on writing records into a run nobody owns; and the CPUs it may
    use, where the run pins agents apart from the server."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(1, signal.SIGKILL) != 0:  # PR_SET_PDEATHSIG
        os._exit(126)
    if os.getppid() != runner_pid:  # the runner died before prctl took effect
        os._exit(126)
    if cpus:
        os.sched_setaffinity(0, cpus)
    raise_fd_limit()


def raise_fd_limit() -> None:
    """The soft limit on open files up to the hard one: a thousand sessions need a thousand
    sockets, and a soft limit of 1,024 (Debian's) would fail them, not the client."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def failure_record(agent: str, run_id: str, model: str, options: dict, warmup: bool,
                   stats: "ProcessStats", endpoint: str = "generate", think: bool | None = None) -> dict:
    """What the runner records for a run the agent process never wrote (it crashed, was
    killed, or timed out): an `error` record in the agents' schema."""
    why = "timed out and was killed" if stats.timed_out else f"exited {stats.exit_code}"
    return {"schema_version": 2, "run_id": run_id, "agent": agent, "agent_version": "unknown",
            "model": model, "endpoint": endpoint, "options": options, "think": think, "warmup": warmup,
            "t0_unix": time.time(), "new_connection": False, "connect_ms": None,
            "ttft_ms": None, "ttft_answer_ms": None, "e2e_ms": None, "decode_ms": None,
            "chunks": 0, "chunks_thinking": 0, "chunks_answer": 0,
            "itl_ms": {"p50": None, "p95": None, "p99": None, "max": None, "n": 0},
            "total_duration": None, "load_duration": None, "prompt_eval_count": None,
            "prompt_eval_duration": None, "eval_count": None, "eval_duration": None,
            "done_reason": None, "thinking_chars": 0, "response_chars": 0,
            "response_sha256": hashlib.sha256(b"").hexdigest(),
            "outcome": "error",
            "error": {"kind": "agent_exit", "client": "langbench runner",
                      "message": f"the {agent} agent {why} before this run: {stats.stderr_tail[-500:]}"}}


@dataclass
class ProcessStats:
    agent: str
    exit_code: int
    wall_s: float
    user_cpu_s: float
    system_cpu_s: float
    peak_rss_bytes: int | None  # VmHWM of the agent's own address space, polled
    startup_ms: float | None  # spawn → t0 of the first run
    startup_cpu_s: float | None  # user + system CPU spent before the first request (polled)
    cpus_allowed: str | None  # the CPUs the process could run on (/proc Cpus_allowed_list)
    records: int
    timed_out: bool
    stderr_tail: str

    def as_dict(self) -> dict:
        return asdict(self)


def run(agent: str, host: str, jobs: Path, out: Path, timeout: float | None = None,
        cpus: list[int] | None = None) -> ProcessStats:
    """Run one agent process to completion; measure it with wait4 (exact rusage of that child).
    `cpus`: the CPUs the agent may use (None: as the runner)."""
    stop.check()  # a stop signal whose exception was lost: start no agent
    before = _count_lines(out)
    err_path = out.with_suffix(out.suffix + ".stderr")
    timed_out = threading.Event()
    proc = None

    def kill() -> None:
        timed_out.set()
        proc.kill()

    # A daemon, started inside the try: an interrupt at any point cancels it, and a timer
    # left behind could never keep an interrupted runner alive for batch_s seconds.
    watchdog = threading.Timer(timeout, kill) if timeout else None
    if watchdog:
        watchdog.daemon = True
    poller, status = None, None
    with open(err_path, "wb") as err:
        try:  # any interrupt from here on kills and reaps the agent, if it was started
            with stop.deferred():  # no interrupt between the spawn and the watch
                spawn_unix = time.time()
                spawn = time.perf_counter()
                proc = subprocess.Popen(
                    [*command(agent), "--host", host, "--jobs", str(jobs), "--out", str(out)],
                    stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                    preexec_fn=functools.partial(_die_with_runner, os.getpid(), cpus))
                stop.watch(proc.pid)  # a stop signal kills it even if its exception is lost
            if watchdog:
                watchdog.start()
            poller = _ProcPoller(proc.pid)
            _, status, usage = os.wait4(proc.pid, 0)
            stop.unwatch(proc.pid)
            stop.check()
        except BaseException:  # interrupted: no agent may outlive its runner and keep writing
            if proc is not None:
                if status is None:  # started and not reaped yet
                    proc.kill()
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(proc.pid, 0)
                proc.returncode = -9
            raise
        finally:
            if proc is not None:
                stop.unwatch(proc.pid)
            if poller:
                poller.stop()
            if watchdog:
                watchdog.cancel()
        wall = time.perf_counter() - spawn
        proc.returncode = os.waitstatus_to_exitcode(status)
    first_t0 = _first_t0(out, before)
    return ProcessStats(
        agent=agent, exit_code=proc.returncode, wall_s=wall,
        user_cpu_s=usage.ru_utime, system_cpu_s=usage.ru_stime,
        peak_rss_bytes=poller.bytes,
        startup_ms=None if first_t0 is None else (first_t0 - spawn_unix) * 1e3,
        startup_cpu_s=None if first_t0 is None or poller is None else poller.cpu_before(first_t0),
        cpus_allowed=poller.cpus_allowed if poller else None,
        records=_count_lines(out) - before, timed_out=timed_out.is_set(),
        stderr_tail=_tail(err_path),
    )


class _ProcPoller(threading.Thread):
    """Polls /proc/PID/status VmHWM (the peak RSS of the process's own address space) and
    /proc/PID/stat's CPU times, every 10 ms.

    Not wait4's ru_maxrss: Linux carries the forking parent's high-water mark across exec,
    so every agent would report at least the runner's own RSS. VmHWM only grows, so the last
    reading before exit is the peak, short of what the final few milliseconds add. The CPU
    samples give what the process spent before its first request (start-up is its own
    criterion; CPU per run is counted from the first request on).
    """

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid: int, every: float = 0.01):
        super().__init__(daemon=True)
        self.pid, self.every, self.bytes, self.cpus_allowed = pid, every, None, None
        self.cpu: list[tuple[float, float]] = []  # (unix time, user + system CPU seconds)
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                self.cpu.append((time.time(), (int(fields[11]) + int(fields[12])) / self.TICK))
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.bytes = max(self.bytes or 0, int(line.split()[1]) * 1024)
                        elif line.startswith("Cpus_allowed_list:"):
                            self.cpus_allowed = line.split(":", 1)[1].strip()
            except (OSError, ValueError, IndexError):
                return  # the process has been reaped
            self._done.wait(self.every)

    def cpu_before(self, t_unix: float) -> float | None:
        """CPU seconds at the last sample taken before `t_unix` (0 before the first sample)."""
        before = [c for t, c in self.cpu if t <= t_unix]
        return before[-1] if before else 0.0

    def stop(self) -> None:
        self._done.set()
        self.join()


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


def _first_t0(path: Path, skip: int) -> float | None:
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i == skip and line.endswith("\n"):
                try:
                    return json.loads(line)["t0_unix"]
                except (ValueError, KeyError):
                    return None
    return None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
