"""Benchmark: TCP connections each client opens for N sequential runs (issue 15, item 3).

    .venv/bin/python bench/connections.py [--runs 10] [--embedded] [--tree DIR]

Each client (Python agent, Rust agent, null client) runs N sequential measured runs in one
process against a loopback server that counts the connections it accepts: the scripted server
(default; 12-token streams) or, with --embedded, a relay in front of the real embedded Ollama.
--tree DIR takes the clients from another checkout (e.g. main's, from `git worktree add` or
`git archive main | tar -x -C DIR`): its agents/python/agent.py, agents/null/null_client.py and
its Rust agent from the per-source-digest cache (built with `make setup` in that checkout).
Prints one line per client: connections, runs, and the share of runs that reconnected as the
records say (where the records carry `new_connection`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from langbench import paths, storage  # noqa: E402
from langbench.run import server
from relay import Relay  # noqa: E402
from scripted import ScriptedServer  # noqa: E402


def rust_bin(tree: Path) -> Path:
    """The cached Rust agent of `tree`'s sources (paths.rust_source_digest, for another tree)."""
    return paths.cache_dir() / "rust-agent" / paths.rust_source_digest(tree / "agents") / "langbench-agent"


def commands(tree: Path) -> dict[str, list[str]]:
    return {"python": [sys.executable, str(tree / "agents" / "python" / "agent.py")],
            "rust": [str(rust_bin(tree))],
            "null": [sys.executable, str(tree / "agents" / "null" / "null_client.py")]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--embedded", action="store_true", help="relay to the real embedded Ollama")
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout whose clients to run")
    args = ap.parse_args()
    model = paths.EMBEDDED_MODEL if args.embedded else "scripted"
    jobs = {"schema_version": 1, "model": model, "raw": True, "timeout_s": 120, "prompts": ["The history of"],
            "runs": [{"run_id": f"c{i}", "prompt": 0, "options": {"num_predict": 12, "seed": 1}, "keep_alive": -1,
                      "warmup": False} for i in range(args.runs)]}
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        upstream = stack.enter_context(server.ollama_server("embedded")).url if args.embedded else None
        print(f"clients from {args.tree}; {args.runs} sequential runs per process; "
              f"server: {'relay to the embedded Ollama' if upstream else 'scripted'}")
        for agent, cmd in commands(args.tree).items():
            if not Path(cmd[-1]).exists():
                print(f"{agent:>7}: missing {cmd[-1]} (run `make setup` in {args.tree})")
                continue
            jobs_path, out = Path(tmp) / f"{agent}.json", Path(tmp) / f"{agent}.jsonl"
            jobs_path.write_text(json.dumps(jobs))
            srv = Relay(upstream) if upstream else ScriptedServer(first_ms=20, gap_ms=2, tokens=12)
            with srv:
                done = subprocess.run([*cmd, "--host", srv.url, "--jobs", str(jobs_path), "--out", str(out)],
                                      capture_output=True, text=True, timeout=600)
            recs = storage.read_jsonl(out) if out.exists() else []
            ok = sum(r["outcome"] == "ok" for r in recs)
            said = [r["new_connection"] for r in recs if "new_connection" in r]
            share = f"{sum(said)}/{len(said)} records say new_connection" if said else "records carry no new_connection"
            print(f"{agent:>7}: {srv.connections} connections for {len(recs)} runs ({ok} ok, exit {done.returncode}); {share}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
