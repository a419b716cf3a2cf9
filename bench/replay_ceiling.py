"""Benchmark: the replay server's own ceiling and lateness on one core (issue 40, item 6).

    .venv/bin/python bench/replay_ceiling.py [--server-cpu 0] [--client-cpu 1] [--seconds 5]

Starts langbench-replay (paths.replay_server_bin(), built by `make setup`) pinned to one CPU and
its load generator (`langbench-replay --bench-client`, a raw HTTP/1.1 client on a current-thread
tokio runtime, one connection per request) pinned to another, on a synthetic profile: /api/generate
donors of 200 chunks at 200 tok/s (gaps 5 ms +- 10 %, a few donors), ttft 20 ms.

1. Ceiling: --time-scale 1e9 (every chunk due at once), 64 streams of 2,000-token requests: the
   chunks per second the server sends on its one core (its CPU use is printed: ~100 % means the
   server, not the generator, is the limit).
2. Lateness at a realistic rate: time scale 1 (200 tok/s per stream) at 1, 64, 256 and 1,024
   concurrent streams, their starts spread over one gap: the server's own lateness per chunk
   (send time - scheduled time, /replay/stats) p50 / p99 / max, and the generator's lag
   (receive - stamp, which includes the generator's own queueing).

Prints a table and the command line. Not a test: the numbers depend on the machine and on what
else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path



def profile(path: Path, donors: int = 8, tokens: int = 200, gap_us: float = 5000.0) -> Path:
    rng = random.Random(0)
    out = []
    for i in range(donors):
        chunks = [{"k": "a", "text": f"tok{j} "} for j in range(tokens)] + [{"k": "d"}]
        gaps = [round(gap_us * rng.uniform(0.9, 1.1), 1) for _ in range(len(chunks) - 1)]
        out.append({"id": f"bench-{i}", "endpoint": "generate", "concurrency": 1, "ttft_us": 20000,
                    "gaps_us": gaps, "chunks": chunks, "final": {"done_reason": "stop", "prompt_eval_count": 10}})
    path.write_text(json.dumps({"schema_version": 1, "kind": "langbench-replay-profile",
                                "source": {"server_kind": "synthetic", "server_version": "0.0.0"},
                                "model": "bench", "models": [{"name": "bench"}], "donors": out, "turns": {}}))
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, binary: Path, prof: Path, cpu: int, *args: str):
        self.proc = subprocess.Popen([str(binary), "--profile", str(prof), *args], stdout=subprocess.PIPE, text=True,
                                     preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
        self.url = self.proc.stdout.readline().split()[-1]

    def stats(self, reset: bool = False) -> dict:
        with urllib.request.urlopen(self.url + "/replay/stats" + ("?reset=1" if reset else "")) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def load(binary: Path, url: str, cpu: int, streams: int, seconds: float, tokens: int, ramp_ms: float) -> dict:
    cmd = [str(binary), "--bench-client", url, "--streams", str(streams), "--duration-s", str(seconds),
           "--max-tokens", str(tokens), "--ramp-ms", str(ramp_ms)]
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 120,
                          preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    got = json.loads(done.stdout)
    got["cpu"] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / (time.monotonic() - t0)
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--levels", default="1,64,256,1024")
    ap.add_argument("--time-scale", type=float, default=1.0, help="the lateness runs' time scale: 2 = 400 tok/s a stream")
    ap.add_argument("--binary", type=Path, help="this langbench-replay (default: make setup's, paths.replay_server_bin())")
    args = ap.parse_args()
    if args.binary:
        binary = args.binary
    else:
        from langbench.run import provision  # builds it where it is missing
        binary = provision.ensure_replay_server()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prof = profile(Path(tmp) / "bench-profile.json")
        srv = Server(binary, prof, args.server_cpu, "--time-scale", "1e9")
        try:
            srv.stats(reset=True)
            cpu0, t0 = cpu_seconds(srv.proc.pid), time.monotonic()
            got = load(binary, srv.url, args.client_cpu, 64, args.seconds, 2000, 0)
            cpu = (cpu_seconds(srv.proc.pid) - cpu0) / (time.monotonic() - t0)
            st = srv.stats()
        finally:
            srv.stop()
        ceiling = (got["chunks_per_s"], st["chunks"], cpu, got["cpu"])
        for n in [int(x) for x in args.levels.split(",")]:
            srv = Server(binary, prof, args.server_cpu, "--time-scale", repr(args.time_scale))
            try:
                srv.stats(reset=True)
                cpu0, t0 = cpu_seconds(srv.proc.pid), time.monotonic()
                got = load(binary, srv.url, args.client_cpu, n, args.seconds, 200, 5.0)
                cpu = (cpu_seconds(srv.proc.pid) - cpu0) / (time.monotonic() - t0)
                st = srv.stats()
            finally:
                srv.stop()
            rows.append((n, st, got, cpu))
    print(f"$ {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    load1 = os.getloadavg()[0]
    print(f"host: {os.cpu_count()} CPUs (load average {load1:.1f} at the end), server on CPU {args.server_cpu}, load generator on CPU {args.client_cpu}; "
          f"binary {binary}")
    print(f"ceiling (time scale 1e9, 64 streams x 2000 tokens): {ceiling[0]:,.0f} chunks/s received "
          f"({ceiling[1]:,} sent), server CPU {ceiling[2]:.0%}, load generator CPU {ceiling[3]:.0%}")
    print(f"lateness at {200 * args.time_scale:g} tok/s per stream (time scale {args.time_scale:g}), server side = send - schedule; client lag = receive - stamp")
    print(f"{'streams':>8} {'chunks/s':>10} {'srv CPU':>8} {'gen CPU':>8} {'late p50 us':>12} {'late p99 us':>12} {'late max us':>12} "
          f"{'lag p50 us':>11} {'lag p99 us':>11} {'errors':>7}")
    for n, st, got, cpu in rows:
        print(f"{n:>8} {got['chunks_per_s']:>10,.0f} {cpu:>8.0%} {got['cpu']:>8.0%} {st['late_us']['p50']:>12.1f} {st['late_us']['p99']:>12.1f} "
              f"{st['late_us']['max']:>12.1f} {got['lag_us']['p50']:>11.1f} {got['lag_us']['p99']:>11.1f} {got['errors']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
