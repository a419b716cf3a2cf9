"""Benchmark: what each agent adds on top of the server, on the same jobs.

    .venv/bin/python bench/agent_overhead.py [--rounds 6] [--runs 5] [--tokens 64]

Starts the embedded Ollama, then alternates the agents (A B B A ...) over `rounds` agent
processes each; every process does one warm-up and `runs` measured runs with identical options.
Prints per agent: client overhead (ttft_ms − server TTFT) median and p95, client decode rate /
server throughput, ITL p99, start-up (spawn → first request), peak RSS and CPU seconds per run,
and checks the targets of the issue. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from langbench import paths, storage
from langbench.analysis import metrics
from langbench.run import agents, server

TARGETS = "median overhead <= 2 ms each; |python - rust| medians <= 1 ms; decode ratio in [0.98, 1.02]"


def curl_floor(url: str, prompt: str, options: dict, tmp: Path, n: int = 20) -> list[float]:
    """The same request through curl (C, no parsing): the overhead no client goes below."""
    body = json.dumps({"model": paths.EMBEDDED_MODEL, "prompt": prompt, "raw": True, "stream": True,
                       "keep_alive": -1, "options": options})
    out, floor = tmp / "curl.out", []
    for i in range(n + 2):
        ttfb = subprocess.run(["curl", "-sN", "-o", str(out), "-w", "%{time_starttransfer}",
                               f"{url}/api/generate", "-d", body], capture_output=True, text=True).stdout
        last = json.loads(out.read_text().strip().splitlines()[-1])
        if i >= 2:  # the first two settle the runner
            floor.append(float(ttfb) * 1e3 - (last["load_duration"] + last["prompt_eval_duration"]) / 1e6)
    return floor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="agent processes per agent")
    ap.add_argument("--runs", type=int, default=5, help="measured runs per process")
    ap.add_argument("--tokens", type=int, default=64, help="num_predict")
    args = ap.parse_args()
    options = {"num_predict": args.tokens, "seed": 1, "temperature": 0.6}
    prompt = (paths.PARAMETERS / "prompts" / "technical_report_raw.txt").read_text()
    records, procs = [], []
    with tempfile.TemporaryDirectory() as tmp, server.ollama_server("embedded") as srv:
        tmp = Path(tmp)
        for r in range(args.rounds):
            order = ("python", "rust") if r % 2 == 0 else ("rust", "python")
            for agent in order:
                runs = [{"run_id": f"{agent}-{r}-w", "prompt": 0, "options": options, "keep_alive": -1, "warmup": True}]
                runs += [{"run_id": f"{agent}-{r}-{i}", "prompt": 0, "options": options, "keep_alive": -1,
                          "warmup": False} for i in range(args.runs)]
                jobs = tmp / f"{agent}-{r}.json"
                jobs.write_text(json.dumps({"schema_version": 1, "model": paths.EMBEDDED_MODEL,
                                            "prompts": [prompt], "raw": True, "runs": runs}))
                out = tmp / f"{agent}-{r}.jsonl"
                stats = agents.run(agent, srv.url, jobs, out, timeout=600)
                procs.append({**stats.as_dict(), "runs": len(runs)})
                records += storage.read_jsonl(out)
                print(f"round {r + 1}/{args.rounds} {agent}: exit {stats.exit_code}", file=sys.stderr)
        floor = curl_floor(srv.url, prompt, options, tmp) if shutil.which("curl") else []
    df = metrics.frame(records)
    df = df[(~df["warmup"]) & (df["outcome"] == "ok")]
    p = metrics.processes(procs)
    rows = []
    for agent, g in df.groupby("agent"):
        pa = p[p["agent"] == agent]
        rows.append({
            "agent": agent, "warm_runs": len(g),
            "overhead_median_ms": g["client_overhead_ms"].median(),
            "overhead_p95_ms": g["client_overhead_ms"].quantile(0.95),
            "decode_ratio_median": g["decode_rate_ratio"].median(),
            "itl_p99_median_ms": g["itl_p99_ms"].median(),
            "throughput_median_tps": g["throughput_tps"].median(),
            "startup_median_ms": pa["startup_ms"].median(),
            "peak_rss_median_mib": pa["peak_rss_mib"].median(),
            "cpu_s_per_run_median": pa["cpu_s_per_run"].median(),
        })
    table = pd.DataFrame(rows).set_index("agent")
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 3):
        print(table.T.to_string())
    med = table["overhead_median_ms"]
    checks = {
        "median overhead <= 2 ms (python)": med.get("python", np.nan) <= 2,
        "median overhead <= 2 ms (rust)": med.get("rust", np.nan) <= 2,
        "|python - rust| <= 1 ms": abs(med.get("python", np.nan) - med.get("rust", np.nan)) <= 1,
        "decode ratio in [0.98, 1.02] (python)": 0.98 <= table["decode_ratio_median"].get("python", np.nan) <= 1.02,
        "decode ratio in [0.98, 1.02] (rust)": 0.98 <= table["decode_ratio_median"].get("rust", np.nan) <= 1.02,
    }
    if floor:
        print(f"\nfloor: curl's time to first byte − server TTFT, same jobs: median {np.median(floor):.2f} ms, "
              f"min {min(floor):.2f} ms (n={len(floor)}): what the server adds outside load + prompt_eval "
              "(serve → runner proxy hop, detokenising, JSON), which no agent can remove")
    print(f"\ntargets ({TARGETS}):")
    for name, ok in checks.items():
        print(f"  {'met ' if ok else 'MISS'} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
