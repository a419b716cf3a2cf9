"""How throughput and TTFT depend on the generation length: the same request at several
num_predict values, on an embedded Ollama (its own server, one GPU where there is one).

    python bench/length_probe.py --model gemma3-4b-shape-synthetic:q4_k_m \
        --lengths 64 128 256 512 --reps 5 --out RUN_DIR/length_probe.jsonl [--num-gpu 99]

Prints one line per length (median decode throughput eval_count / eval_duration in tok/s, and
median server TTFT = load + prompt_eval in ms, Ollama's own durations) and writes one JSON line
per request with the server's final fields, so the run's report can show the dependence
(langbench.report.sections.gpu.length_dependence). Each length gets one untimed request first (the
reload when options change); the prompt is the study's, so the KV cache holds it as in the
sweep's cached runs. Exit 2 on bad arguments, 1 when the server fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import urllib.request
from pathlib import Path

from langbench import paths
from langbench.run import server


def generate(url: str, model: str, prompt: str, options: dict) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "raw": True, "stream": False,
                       "keep_alive": -1, "options": options}).encode()
    req = urllib.request.Request(f"{url}/api/generate", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return json.loads(resp.read())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=paths.EMBEDDED_MODEL)
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--num-gpu", type=int, default=None, help="num_gpu option (default: Ollama's)")
    ap.add_argument("--prompt", default=str(paths.ROOT / "parameters" / "prompts" / "technical_report_raw.txt"))
    ap.add_argument("--out", required=True, help="JSON-lines file to write (replaced)")
    args = ap.parse_args(argv)
    if any(n < 2 for n in args.lengths) or args.reps < 1:
        print("length_probe: lengths must be ≥ 2 and reps ≥ 1", file=sys.stderr)
        return 2
    prompt = Path(args.prompt).read_text(encoding="utf-8")
    out = Path(args.out)
    tmp = out.with_suffix(".tmp")
    srv = server.start_embedded(log_path=out.parent / "length_probe.ollama.log")
    try:
        rows = []
        for n in args.lengths:
            options = {"num_predict": n, "seed": 112, **({"num_gpu": args.num_gpu} if args.num_gpu is not None else {})}
            generate(srv.url, args.model, prompt, options)  # the reload, untimed
            for rep in range(1, args.reps + 1):
                r = generate(srv.url, args.model, prompt, options)
                rows.append({"num_predict": n, "rep": rep, "options": options,
                             **{k: r.get(k) for k in ("total_duration", "load_duration", "prompt_eval_count",
                                                      "prompt_eval_duration", "eval_count", "eval_duration",
                                                      "done_reason")}})
            got = [x for x in rows if x["num_predict"] == n]
            tps = statistics.median(x["eval_count"] / x["eval_duration"] * 1e9 for x in got)
            ttft = statistics.median(((x["load_duration"] or 0) + (x["prompt_eval_duration"] or 0)) / 1e6 for x in got)
            print(f"num_predict {n:5d}: {tps:7.1f} tok/s decode, server TTFT {ttft:6.1f} ms "
                  f"(median of {len(got)})", flush=True)
        tmp.write_text("".join(json.dumps(x) + "\n" for x in rows))
        tmp.replace(out)
    except (OSError, ValueError, server.ServerError) as e:
        print(f"length_probe: {e}", file=sys.stderr)
        return 1
    finally:
        server.stop(srv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
