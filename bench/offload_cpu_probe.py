"""Partial offload and the host's CPUs: why two GPUs on one host do not halve the GPU study.

    python bench/offload_cpu_probe.py --model gemma3-4b-shape-synthetic:q4_k_m --num-gpu 33 \
        --num-thread 16 --reps 3 --out OUTDIR/offload_cpu_probe.jsonl

With layers left on the CPU, decode speed depends on the CPU the server gets. This runs the same
request (the study's prompt, 256 tokens) on embedded servers in five set-ups and prints the
median decode throughput (Ollama's eval_count / eval_duration, tok/s) of each:
  one server, all CPUs · one server pinned to the first half of the CPUs · two servers at once
  (one per GPU) pinned to the halves, as `--cluster local` pinned them until this probe ·
  two servers at once, unpinned · two servers at once, pinned to the halves, half the threads.
It also prints the CPU topology (logical CPUs per core) the halves fall on. One JSON line per
request goes to --out. Needs two GPUs for the two-server set-ups (skipped with one).
Exit 2 on bad arguments, 1 when a server fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from langbench import paths
from langbench.run import server

from length_probe import generate  # the same non-streaming request (bench/ is on sys.path)


def topology() -> str:
    """`lscpu` lines on cores, threads and NUMA (what a half of the CPUs is made of)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "lscpu: not available"
    keep = ("Model name", "Thread(s) per core", "Core(s) per socket", "Socket(s)", "NUMA node")
    return "\n".join(line for line in out.splitlines() if line.startswith(keep))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=paths.EMBEDDED_MODEL)
    ap.add_argument("--num-gpu", type=int, default=33)
    ap.add_argument("--num-thread", type=int, default=16)
    ap.add_argument("--num-predict", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prompt", default=str(paths.ROOT / "parameters" / "prompts" / "technical_report_raw.txt"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.reps < 1 or args.num_thread < 2:
        print("offload_cpu_probe: reps ≥ 1 and num-thread ≥ 2", file=sys.stderr)
        return 2
    prompt = Path(args.prompt).read_text(encoding="utf-8")
    cpus = sorted(os.sched_getaffinity(0))
    halves = [cpus[: len(cpus) // 2], cpus[len(cpus) // 2:]]
    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.count("GPU ") if smi else 0
    print(topology())
    for i, half in enumerate(halves):
        siblings = {Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").read_text().strip()
                    for c in half if Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list").exists()}
        print(f"half {i}: CPUs {half[0]}-{half[-1]} on {len(siblings)} core(s)")
    t = args.num_thread
    setups = [("one server, all CPUs", [(0, None, t)]),
              ("one server, first half of the CPUs", [(0, halves[0], t)])]
    if gpus >= 2:
        setups += [("two servers at once, halves (pinned as the kept run was)", [(0, halves[0], t), (1, halves[1], t)]),
                   ("two servers at once, unpinned", [(0, None, t), (1, None, t)]),
                   (f"two servers at once, halves, num_thread {t // 2}", [(0, halves[0], t // 2), (1, halves[1], t // 2)])]
    out = Path(args.out)
    rows: list[dict] = []
    try:
        for name, servers in setups:
            started = [server.start_embedded(log_path=out.parent / f"probe-{len(rows)}-{g}.log",
                                             env={"CUDA_VISIBLE_DEVICES": str(g)}, cpus=pin)
                       for g, pin, _ in servers]
            # with CUDA_VISIBLE_DEVICES the child sees one GPU; the env above is OLLAMA-free otherwise
            try:
                got: list[dict] = []

                def work(srv, threads, gpu):
                    options = {"num_predict": args.num_predict, "seed": 112, "num_gpu": args.num_gpu,
                               "num_thread": threads}
                    generate(srv.url, args.model, prompt, options)  # the load, untimed
                    for rep in range(args.reps):
                        r = generate(srv.url, args.model, prompt, options)
                        got.append({"setup": name, "gpu": gpu, "rep": rep + 1, "options": options,
                                    "tps": r["eval_count"] / r["eval_duration"] * 1e9})
                threads = [threading.Thread(target=work, args=(s, th, g)) for s, (g, _, th) in zip(started, servers)]
                [x.start() for x in threads]
                [x.join() for x in threads]
            finally:
                for s in started:
                    server.stop(s)
            if len(got) != args.reps * len(servers):
                raise server.ServerError(f"{name}: {len(got)} of {args.reps * len(servers)} requests answered")
            rows += got
            per = ", ".join(f"GPU {g}: {statistics.median(x['tps'] for x in got if x['gpu'] == g):.1f}"
                            for g, _, _ in servers)
            print(f"{name:52s} {per} tok/s (median of {args.reps})", flush=True)
    except (OSError, ValueError, server.ServerError) as e:
        print(f"offload_cpu_probe: {e}", file=sys.stderr)
        return 1
    out.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
