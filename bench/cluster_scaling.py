"""Benchmark: the same study on one Dask worker and on two (issue 16).

    .venv/bin/python bench/cluster_scaling.py                         # runs both, then prints
    .venv/bin/python bench/cluster_scaling.py outputs/<one> outputs/<two>   # prints two stored runs

Runs bench/cluster-study.yaml (or PARAMS=...) with `--cluster local --workers 1` and
`--workers 2` (embedded CPU servers) into outputs/cluster-1w-<time> and cluster-2w-<time>, then
prints per run: workers, wall time of the sweep (first session start to end), runs, runs per
minute, and each language verdict (pooled and paired, throughput and TTFT), and whether the two
runs' verdicts agree. On a host with fewer cores than workers × (server + agent), two workers
share the CPUs: the figure then measures that contention, not a fleet.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from langbench import paths
from langbench.analysis.findings import HIGHER, LOWER, Run, language_claim, paired_claim

ROOT = Path(__file__).resolve().parent.parent
METRICS = (("throughput_tps", "tok/s", HIGHER), ("ttft_ms", "ms", LOWER))


def sweep(params: str, workers: int) -> tuple[Path, float]:
    run_id = f"cluster-{workers}w-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", params, "--cluster", "local",
                           "--workers", str(workers), "--run-id", run_id], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"the sweep with {workers} worker(s) failed (exit {done.returncode})")
    return paths.OUTPUTS / run_id, time.monotonic() - started


def row(run_dir: Path, command_s: float | None) -> dict:
    run = Run.load(run_dir)
    session = run.manifest["sessions"][-1]
    wall = (dt.datetime.fromisoformat(session["ended_at"]) - dt.datetime.fromisoformat(session["started_at"])).total_seconds()
    runs = run.manifest["counts"]["records"]
    out = {"run": run_dir.name, "workers": len(run.workers()), "sweep_wall_s": wall,
           "command_wall_s": command_s, "runs": runs, "runs_per_min": 60 * runs / wall}
    for value, unit, better in METRICS:
        out[f"pooled {value}"] = language_claim(run, value, unit, better)[0].verdict
        claim = paired_claim(run, value, unit)
        out[f"paired {value}"] = claim.rsplit(": ", 1)[-1].rstrip(".") if claim else "n/a"
    return out


def main() -> int:
    if len(sys.argv) == 3:
        rows = [row(Path(a), None) for a in sys.argv[1:]]
    elif len(sys.argv) == 1:
        params = os.environ.get("PARAMS", str(ROOT / "bench" / "cluster-study.yaml"))
        rows = [row(*sweep(params, n)) for n in (1, 2)]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    t = pd.DataFrame(rows).set_index("run")
    verdicts = [c for c in t.columns if c.startswith(("pooled", "paired"))]
    agree = all(t[c].nunique() == 1 for c in verdicts)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.precision", 1):
        print(t.T)
    one, two = rows[0], rows[-1]
    print(f"\n{two['workers']} workers vs {one['workers']}: sweep wall {one['sweep_wall_s']:.0f} s → "
          f"{two['sweep_wall_s']:.0f} s ({one['sweep_wall_s'] / two['sweep_wall_s']:.2f}×), "
          f"{one['runs_per_min']:.1f} → {two['runs_per_min']:.1f} runs/min; verdicts "
          + ("agree." if agree else "differ: " + ", ".join(c for c in verdicts if t[c].nunique() > 1) + "."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
