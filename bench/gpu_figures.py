"""The figures a GPU study answers with, printed from a stored run (the README's GPU section).

    .venv/bin/python bench/gpu_figures.py results/tr112-gpu-h200x2 [--png results/tr112-gpu-h200x2/gpu.png]

Per language: warm throughput and uncached TTFT (paired over cells, with the rule that decided
and why), CV with CIs and the equal-variance test, success rates with McNemar, each rule's A/A
rate on this run, the noise floor and its sources, throughput / TTFT / J/token per offload, and
the study's wall time on its workers against the sum of its batch times and, where the run keeps
one (one_gpu/), against the same design made on one GPU; and, where kept, the probe of partial
offload against the server's CPUs (offload_cpu_probe.jsonl). Every number comes from the run's own files.
"""

from __future__ import annotations

import datetime as dt
import sys
import warnings

import pandas as pd

from langbench.analysis.findings import Run, paired_claim
from langbench.report.sections import gpu, noise, success, tr112, validity


def main(run_dir: str, png: str | None = None) -> int:
    warnings.simplefilter("ignore")
    run = Run.load(run_dir)
    say = print
    m = run.manifest
    planned = sum(len(b["runs"]) for b in __import__("json").load(open(run.run_dir / "plan.json"))["batches"])
    say(f"run {m['run_id']}: {len(run.df) + len(run.floor)} of {planned} planned runs recorded, "
        f"workers: {', '.join(w['worker'] for w in m.get('workers', [])) or 'one server'}")
    table = tr112.verdicts(run).table  # the index's verdict table
    say("\nverdicts (the index's table):")
    for _, row in table.iterrows():
        say(f"  {row['metric']}: Python {row['Python']}, Rust {row['Rust']}, Python − Rust "
            f"{row['Python − Rust [95 % CI]']} (margin {row['margin']}): {row['verdict']}")
    uncached = run.warm[run.warm["prompt_cache"] == "uncached"]
    for value, unit, data, label in (("throughput_tps", "tok/s", None, "warm throughput"),
                                     ("ttft_ms", "ms", uncached, "uncached TTFT")):
        rule = validity.deciding_rule(run, value, data)
        say(f"\n{label}: {paired_claim(run, value, unit, data)}\n  rule: {rule['why']}")
    for section in (noise.consistency(run), noise.noise_floor(run)):
        say(f"\n{section.title}: {section.sentence}")
        for n in section.notes:
            say(f"  {n}")
    s, _ = success.success_rates(run)
    say(f"\n{s.title}: {s.sentence}")
    aa = validity.aa_check(run)
    say(f"\n{aa.title}: {aa.sentence}")
    for section in (gpu.gpu_energy(run), gpu.length_dependence(run)):
        say(f"\n{section.title}: {section.sentence}")
        if png and section.figure is not None:  # the README's figure: the energy section's
            section.figure.savefig(png, dpi=90, bbox_inches="tight")
            say(f"  figure written to {png}")
            png = None
    wall, sessions, busy = wall_time(run)
    if wall:
        say(f"\nwall time: {wall:.0f} s over {sessions} sessions on {len(busy)} workers "
            f"({60 * (len(run.df) + len(run.floor)) / wall:.1f} runs/min); batch time per worker "
            + ", ".join(f"{w} {t:.0f} s" for w, t in busy.items())
            + f"; one worker would need at least their sum, {sum(busy.values()):.0f} s "
            f"({sum(busy.values()) / wall:.2f}× the wall time)")
    one = run.run_dir / "one_gpu"
    if (one / "manifest.json").exists():  # the same design on one GPU of the same host type
        single = Run.load(one)
        wall1, sessions1, _ = wall_time(single)
        say(f"\nthe same design on one GPU (one_gpu/): {len(single.df) + len(single.floor)} runs in {wall1:.0f} s "
            f"over {sessions1} sessions; on two GPUs {wall:.0f} s: {wall1 / wall:.2f}× faster on two")
        for name, r in (("two GPUs", run), ("one GPU", single)):
            w = r.warm[r.warm["mode"] == "chimera"]
            say(f"  chimera warm throughput, median tok/s by num_gpu, {name}: "
                + ", ".join(f"{int(k)}: {v:.1f}" for k, v in w.groupby("num_gpu")["throughput_tps"].median().items()))
    probe = run.run_dir / "offload_cpu_probe.jsonl"
    if probe.exists():  # bench/offload_cpu_probe.py: partial offload against the server's CPUs
        p = pd.read_json(probe, lines=True)
        say("\npartial offload against the server's CPUs (bench/offload_cpu_probe.py, num_gpu "
            f"{int(p['options'].iloc[0]['num_gpu'])}, median decode tok/s per server):")
        for setup, g in p.groupby("setup", sort=False):
            say(f"  {setup}: " + ", ".join(f"GPU {k} {v:.1f}" for k, v in g.groupby("gpu")["tps"].median().items()))
    return 0


def wall_time(run: Run) -> tuple[float, int, dict]:
    """(seconds the sweep sessions ran, summed; sessions; {worker: seconds of its batches})."""
    sessions = run.manifest.get("sessions", [])
    wall = sum((dt.datetime.fromisoformat(x["ended_at"]) - dt.datetime.fromisoformat(x["started_at"])).total_seconds()
               for x in sessions if x.get("ended_at"))
    busy = run.processes.groupby("worker")["wall_s"].sum().to_dict() if "worker" in run.processes else {}
    return wall, len(sessions), busy


if __name__ == "__main__":
    if len(sys.argv) not in (2, 4) or (len(sys.argv) == 4 and sys.argv[2] != "--png"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[3] if len(sys.argv) == 4 else None))
