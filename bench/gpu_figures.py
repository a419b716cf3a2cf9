"""The figures a GPU study answers with, printed from a stored run (the README's GPU section).

    .venv/bin/python bench/gpu_figures.py results/tr112-gpu-h200x2

Per language: warm throughput and uncached TTFT (paired over cells, with the rule that decided
and why), CV with CIs and the equal-variance test, success rates with McNemar, each rule's A/A
rate on this run, the noise floor and its sources, throughput / TTFT / J/token per offload, and
the study's wall time on its workers against the sum of its batch times (what one worker would
have needed, dispatch gaps not counted). Every number comes from the run's own files.
"""

from __future__ import annotations

import datetime as dt
import sys
import warnings

from langbench.findings import Run, paired_claim
from langbench.sections import gpu, noise, success, validity


def main(run_dir: str) -> int:
    warnings.simplefilter("ignore")
    run = Run.load(run_dir)
    say = print
    m = run.manifest
    planned = sum(len(b["runs"]) for b in __import__("json").load(open(run.run_dir / "plan.json"))["batches"])
    say(f"run {m['run_id']}: {len(run.df) + len(run.floor)} of {planned} planned runs recorded, "
        f"workers: {', '.join(w['worker'] for w in m.get('workers', [])) or 'one server'}")
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
    procs = run.processes.groupby("worker")["wall_s"].sum() if "worker" in run.processes else None
    wall = 0.0
    for sess in m.get("sessions", []):
        if sess.get("ended_at"):
            wall += (dt.datetime.fromisoformat(sess["ended_at"]) - dt.datetime.fromisoformat(sess["started_at"])).total_seconds()
    if procs is not None and wall:
        busy = float(procs.sum())
        runs = len(run.df) + len(run.floor)
        say(f"\nwall time: {wall:.0f} s over {len(m.get('sessions', []))} sessions on {len(procs)} workers "
            f"({60 * runs / wall:.1f} runs/min); batch time per worker "
            + ", ".join(f"{w} {t:.0f} s" for w, t in procs.items())
            + f"; one worker would need at least their sum, {busy:.0f} s ({busy / wall:.2f}× the wall time)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
