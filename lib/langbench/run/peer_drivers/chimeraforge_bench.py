"""chimeraforge's `bench`, driven with the run's prompt and options (issue 43).

    PEER_PYTHON chimeraforge_bench.py --url URL --model M --prompt-file F --options JSON
                                      --runs N --warmups W --out OUT.json

`chimeraforge bench` (commands/bench.py) calls chimeraforge.bench.runner.run_benchmark; its
command line sends the tool's own default prompt and options with no output cap (no
num_predict: on a base model every run then ends at httpx's 300 s timeout), and takes a prompt
only with a saved plan. So this calls the same function with the prompt and the options every
langbench client sends: once for the warm-ups (chimeraforge has none of its own), once for the
measured runs. Its result objects are written as chimeraforge's own result_to_dict gives them,
with the wall time of each call as this process saw it. Runs inside the tool's venv: imports
chimeraforge and the standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    for name in ("--url", "--model", "--prompt-file", "--options", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmups", type=int, default=0)
    a = ap.parse_args()
    import chimeraforge
    from chimeraforge.bench.metrics import result_to_dict
    from chimeraforge.bench.runner import run_benchmark

    prompt = open(a.prompt_file, encoding="utf-8").read()
    options = json.loads(a.options)
    out = {"tool": "chimeraforge", "version": chimeraforge.__version__,
           "entry": "chimeraforge.bench.runner.run_benchmark (what `chimeraforge bench` calls)",
           "workload": "single", "calls": []}

    async def call(phase: str, runs: int) -> None:
        started_unix, started = time.time(), time.perf_counter()
        try:
            result = await run_benchmark(model=a.model, backend_name="ollama", workload="single", runs=runs,
                                         context_length=options.get("num_ctx", 2048), base_url=a.url,
                                         prompt=prompt, options=options)
            doc = {"phase": phase, "requested": runs, "result": result_to_dict(result), "error": None}
        except (RuntimeError, ValueError) as e:  # its pre-flight, or every run failed: as its CLI says it
            doc = {"phase": phase, "requested": runs, "result": None, "error": f"{type(e).__name__}: {e}"}
        doc.update(started_unix=started_unix, wall_s=time.perf_counter() - started)
        out["calls"].append(doc)

    async def both() -> None:
        if a.warmups:
            await call("warmup", a.warmups)
        await call("measured", a.runs)

    asyncio.run(both())
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return 0 if all(c["error"] is None for c in out["calls"]) else 1


if __name__ == "__main__":
    sys.exit(main())
