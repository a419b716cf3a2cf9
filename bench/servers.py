"""Benchmark: Ollama against llama.cpp's llama-server on the embedded GGUF, and what /v1 costs.

    .venv/bin/python bench/servers.py [RUN_DIR ...]    # default: sweep parameters/servers.yaml first

For each run directory: the server comparison (server.kind a factor: throughput on the client's
clock and TTFT, llama.cpp − Ollama with 95% CIs over batch means, per client and over all), the
/v1 − /api table where the run has both endpoints (parameters/endpoints.yaml), and the second
server's set-up: its build from empty caches (the time `make setup` recorded beside the binary)
and warm (the cache hit), and each server's start until it answers (median of 3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

from langbench import cli, paths
from langbench.analysis import findings
from langbench.report.sections import servers
from langbench.run import provision, server

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 40)


def start_s(kind: str) -> float:
    started = time.perf_counter()
    srv = server.KINDS[kind].start()
    took = time.perf_counter() - started
    server.stop(srv)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="run directories (default: a new sweep of parameters/servers.yaml)")
    args = ap.parse_args()
    runs = [Path(r) for r in args.runs] or [cli.sweep(paths.PARAMETERS / "servers.yaml")]
    for run_dir in runs:
        run = findings.Run.load(run_dir)
        print(f"\n== {run_dir}: {run.progress()}")
        for section in (servers.server_race(run), servers.api_cost(run)):
            print(f"\n{section.title}\n{section.sentence}")
            if section.table is not None and len(section.table):
                print(section.table.round(2).to_string(index=False))
            for note in section.notes:
                print(f"  note: {note}")
    built = paths.llama_server_cache_bin().parent.parent / "built.json"
    print("\nSet-up of the second server (llama-server):")
    if built.exists():
        print(f"  from empty caches: built in {json.loads(built.read_text())['seconds']:.0f} s ({built})")
    started = time.perf_counter()
    provision.ensure_llama_server()
    print(f"  warm (cache hit): {time.perf_counter() - started:.2f} s")
    for kind in ("ollama", "llama-cpp"):
        print(f"  {kind} start until it answers: {statistics.median(start_s(kind) for _ in range(3)):.2f} s (median of 3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
