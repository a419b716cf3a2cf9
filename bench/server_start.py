"""Benchmark: the embedded server's start, the model's first load, and a 128-token generation.

    .venv/bin/python bench/server_start.py [--tokens 128] [--repeat 3]

Prints the time until `/api/version` answers, the first request's load_duration (the model's
first load), and eval_count / eval_duration of warm generations.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import closing

import ollama

from langbench import paths
from langbench.run import server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    prompt = (paths.PARAMETERS / "prompts" / "technical_report_raw.txt").read_text()
    started = time.perf_counter()
    srv = server.start_embedded()
    try:
        start_s = time.perf_counter() - started
        with closing(ollama.Client(host=srv.url)) as client:
            def gen():
                return client.generate(model=paths.EMBEDDED_MODEL, prompt=prompt, raw=True, keep_alive=-1,
                                       options={"num_predict": args.tokens, "seed": 1})
            first = gen()
            warm = [gen() for _ in range(args.repeat)]
    finally:
        server.stop(srv)
    rates = [r.eval_count / r.eval_duration * 1e9 for r in warm]
    print(f"server start (spawn -> /api/version answers): {start_s * 1e3:.0f} ms")
    print(f"model first load (load_duration of the first request): {first.load_duration / 1e6:.0f} ms")
    print(f"{args.tokens}-token generation, warm: {statistics.median(rates):.1f} tok/s median "
          f"of {len(rates)} ({', '.join(f'{r:.1f}' for r in rates)}); eval_count {warm[0].eval_count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
