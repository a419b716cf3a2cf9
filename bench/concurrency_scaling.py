"""Benchmark: scaling with concurrent streams, per language, from a concurrency run.

    .venv/bin/python bench/concurrency_scaling.py outputs/<run>   # a run of parameters/concurrency.yaml

Prints, per agent and N (both modes' batches pooled), aggregate throughput, scaling efficiency
against N = 1, TTFT p95, ITL p99, fairness, agent CPU per request and peak RSS; then the open-loop
points. Make the run with `make report PARAMS=parameters/concurrency.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from langbench.report.sections import concurrency
from langbench.analysis.findings import Run


def main() -> int:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "records.jsonl").exists():
        print(__doc__, file=sys.stderr)
        return 2
    run = Run.load(sys.argv[1])
    b = concurrency.batches(run)
    if b.empty:
        print(f"{sys.argv[1]}: no concurrency or open-loop load points", file=sys.stderr)
        return 2
    s = concurrency.scaling(b).groupby(["agent", "concurrency"])[
        ["agg_tps", "efficiency", "ttft_p95_ms", "itl_p99_ms", "fairness"]].mean()
    f = concurrency.footprint(run, b).set_index(["agent", "load_point"])
    s["cpu_ms_per_request"] = [f.loc[(a, f"N={n}"), "cpu_ms_per_request"] for a, n in s.index]
    s["peak_rss_mib"] = [f.loc[(a, f"N={n}"), "peak_rss_mib"] for a, n in s.index]
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.precision", 2):
        print(f"closed loop, {run.run_dir.name} ({run.manifest.get('host', {}).get('cpu_model')}):")
        print(s)
        o = b[b["arrival_rate_per_s"].notna()]
        if len(o):
            print("\nopen loop:")
            print(o.groupby(["arrival_rate_per_s", "agent"])[["agg_tps", "ttft_p50_ms", "ttft_p95_ms", "goodput"]].mean())
    return 0


if __name__ == "__main__":
    sys.exit(main())
