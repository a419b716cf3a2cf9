"""Benchmark: each client's own time per agent turn (agent_ms) and CPU per turn, at 1 and N sessions.

    .venv/bin/python bench/agent_loop.py [--tasks 16] [--turns 20] [--pieces 32] [--sessions 1 8] [--rounds 2]

Against the scripted server (tests/scripted.py, AgentServer), which answers every turn at once
with a structured `add` action streamed in `pieces` chunks as fast as TCP takes them, so the
client, not the model, is what is timed: every turn parses the answer, runs the tool, appends
two messages to a history that grows by two each turn, and sends it again. Each client runs
`tasks` tasks of `turns` turns in one process, sessions one at a time (1) or concurrently
(`streams`, one asyncio loop or one tokio thread). The null client runs one session only.
Rounds alternate the client order (ABBA). Prints, per client and sessions: agent_ms median and
p95 over turns 1.., and process CPU (user + system) per turn at the margin: the CPU of the
run less that of a one-task process of the same client, over the turns between them, so that
start-up (the interpreter, imports) is not spread over the turns. Not a test: the numbers
depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from langbench import paths, storage  # noqa: E402
from langbench.run import agents  # noqa: E402
from scripted import AgentServer  # noqa: E402

OPENING = [{"role": "system", "content": "You are an agent. Answer with one JSON action."},
           {"role": "user", "content": "Add numbers until told to stop."}]


def jobs(tasks: int, turns: int, sessions: int) -> dict:
    runs = [{"run_id": f"t{i}", "prompt": 0, "options": {"seed": 1}, "keep_alive": -1, "warmup": False,
             "max_turns": turns} for i in range(tasks)]
    doc = {"schema_version": 1, "model": paths.EMBEDDED_MODEL, "endpoint": "chat", "workload": "agent",
           "actions": "structured", "tools": ["add"], "timeout_s": 60, "prompts": [OPENING], "runs": runs}
    return {**doc, "streams": sessions} if sessions > 1 else doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--turns", type=int, default=20)
    ap.add_argument("--pieces", type=int, default=32, help="chunks per answer")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    answer = {"content": json.dumps({"tool": "add", "arguments": {"a": 1, "b": 2}}) + "\n"}
    rows: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.rounds):
            order = list(agents.AGENTS) if r % 2 == 0 else list(reversed(agents.AGENTS))
            for n in args.sessions:
                for agent in order:
                    if agent == "null" and n > 1:
                        continue
                    path = tmp / f"{agent}-{n}-{r}.json"
                    path.write_text(json.dumps(jobs(args.tasks, args.turns, n)))
                    out = tmp / f"{agent}-{n}-{r}.jsonl"
                    with AgentServer([answer], pieces=args.pieces) as srv:
                        stats = agents.run(agent, srv.url, path, out, timeout=600)
                    recs = storage.read_jsonl(out)
                    if stats.exit_code != 0 or len(recs) != args.tasks * args.turns:
                        print(f"{agent} x{n}: exit {stats.exit_code}, {len(recs)} records: {stats.stderr_tail}",
                              file=sys.stderr)
                        return 1
                    base = tmp / f"{agent}-base-{r}.json"
                    base.write_text(json.dumps(jobs(1, args.turns, 1)))
                    with AgentServer([answer], pieces=args.pieces) as srv:
                        one = agents.run(agent, srv.url, base, tmp / f"{agent}-{n}-{r}-base.jsonl", timeout=600)
                    row = rows.setdefault((agent, n), {"agent_ms": [], "cpu_s": 0.0, "turns": 0})
                    row["agent_ms"] += [x["agent_ms"] for x in recs if x["agent_ms"] is not None]
                    row["cpu_s"] += (stats.user_cpu_s + stats.system_cpu_s) - (one.user_cpu_s + one.system_cpu_s)
                    row["turns"] += len(recs) - args.turns
                    print(f"round {r + 1}/{args.rounds} {agent} x{n}: {len(recs)} turns, "
                          f"{stats.wall_s:.2f} s wall", file=sys.stderr)
    print(f"\nagent loop, scripted server, {args.tasks} tasks x {args.turns} turns, {args.pieces} chunks per answer,"
          f" {args.rounds} rounds")
    print(f"{'client':>7} {'sessions':>8} {'turns':>6} {'agent_ms p50':>13} {'agent_ms p95':>13} {'CPU ms/turn':>12}")
    for (agent, n), row in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        a = np.asarray(row["agent_ms"])
        print(f"{agent:>7} {n:>8} {row['turns']:>6} {np.median(a):>13.3f} {np.quantile(a, 0.95):>13.3f} "
              f"{row['cpu_s'] / row['turns'] * 1e3:>12.2f}")
    print("agent_ms: the client's own time from a turn's last chunk to the next request, tool and record "
          "keeping excluded; CPU per turn: at the margin (less a one-task process), start-up excluded.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
