"""What the schedule costs: a run's measured batch times replayed under round-robin rounds (the
schedule issue 27 replaced) and under cost-first groups (run/schedule.py), on N workers.

    .venv/bin/python bench/cluster_schedule.py results/tr112-gpu-h200x2 [--workers 2 4]

For each worker count it prints the makespan (s) of:
  round-robin rounds   round r on worker (r - 1) mod N, whole rounds in turn;
  cost-first           the runner's policy replayed: an idle worker takes the pending group
                       (one config's batches of one round) of the highest expected cost, its
                       estimates learned from the batches finished by then (schedule.simulate);
  LPT, costs known     the same order with every group's cost known beforehand;
  bound                max(total / N, the longest group): no schedule of whole groups does better;
once as the run was made (its `stop` rule: one wave for a fixed plan) and once round by round,
as a sequential plan (stop: {rule: sequential}, tr112-gpu.yaml's rule now) runs. A batch's time
is its worker's span where processes.jsonl has it (started_unix, ended_unix), else the agent's
wall time (kept runs made before issue 27), summed over its attempts; the gaps between batches
(the client's round trip, a few ms) are left out of every schedule alike.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from langbench.run import plan, schedule


def load(run_dir: Path) -> tuple[list[plan.Batch], dict[str, float], dict]:
    saved = json.loads((run_dir / "plan.json").read_text())
    batches = [plan.batch_from_dict(b) for b in saved["batches"]]
    took: dict[str, float] = collections.defaultdict(float)
    for line in (run_dir / "processes.jsonl").read_text().splitlines():
        row = json.loads(line)
        took[row["batch_id"]] += schedule.span_s(row)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return [b for b in batches if b.batch_id in took], dict(took), manifest


def makespans(batches: list[plan.Batch], took: dict[str, float], workers: int, sequential: bool) -> dict:
    """{"round-robin rounds", "cost-first", "LPT, costs known", "bound"}: makespans in s."""
    groups = schedule.groups(batches)
    waves = [[g for g in groups if g.round == r] for r in sorted({g.round for g in groups})] if sequential \
        else [groups]
    cost = {g.key: sum(took[b.batch_id] for b in g.batches) for g in groups}
    out = collections.Counter()
    for wave in waves:
        c = [cost[g.key] for g in wave]
        out["round-robin rounds"] += schedule.makespan(c, schedule.round_robin([g.round for g in wave], workers),
                                                       workers)
        out["LPT, costs known"] += schedule.makespan(c, schedule.lpt(c, workers), workers)
        out["bound"] += max(sum(c) / workers, max(c))
    out["cost-first"], _ = schedule.simulate(waves, lambda b: took[b.batch_id], workers)
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--workers", type=int, nargs="+", help="worker counts (default: the run's, and 4)")
    args = ap.parse_args(argv)
    batches, took, manifest = load(args.run_dir)
    ran_on = len({w["worker"] for w in manifest.get("workers", [])}) or 1
    counts = args.workers or sorted({ran_on, 4})
    fixed = (manifest.get("parameters", {}).get("stop") or {}).get("rule", "fixed") != "sequential"
    rounds_ = len({plan.round_of(b.batch_id) for b in batches})
    print(f"{args.run_dir}: {len(batches)} batches in {len(schedule.groups(batches))} groups "
          f"({rounds_} rounds), {sum(took.values()):.1f} s of batches; made on {ran_on} worker(s), "
          f"{'fixed' if fixed else 'sequential'} rule")
    for sequential in (not fixed, fixed):
        print(f"\nas {'a sequential plan (one wave per round)' if sequential else 'a fixed plan (one wave)'}"
              f"{' — as it was run' if sequential != fixed else ''}:")
        print(f"{'workers':>7}  {'round-robin rounds':>18}  {'cost-first':>10}  {'LPT, costs known':>16}  "
              f"{'bound':>7}  {'round-robin / cost-first':>24}")
        for n in counts:
            m = makespans(batches, took, n, sequential)
            print(f"{n:>7}  {m['round-robin rounds']:>16.1f} s  {m['cost-first']:>8.1f} s  "
                  f"{m['LPT, costs known']:>14.1f} s  {m['bound']:>5.1f} s  "
                  f"{m['round-robin rounds'] / m['cost-first']:>23.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
