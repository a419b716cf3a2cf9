"""AIPerf's `profile`, driven with the run's prompt and options at concurrency 1 (issue 43).

    PEER_PYTHON aiperf_profile.py --url URL --model M --prompt-file F --options JSON
                                  --runs N --warmups W --out OUT.json --tokenizer DIR
                                  [--timeout-s S]

Why AIPerf 0.13 among the three general load generators the issue names (tried here, 2026-12,
on the 2-core EPYC, from PyPI only):
- GuideLLM 0.8.1 resolves, but declares torch and imports it on every benchmark's path (its
  data loader is a torch DataLoader): from PyPI on Linux that is torch 2.15 with its CUDA 13
  wheels (cuda-toolkit, cudnn, cublas, nccl, ... several GB) for a CPU-only HTTP client.
- inference-perf 0.7.0 needs Python >= 3.12 (langbench's venv is 3.11), and every data
  generator that takes a given prompt needs a Hugging Face tokenizer; only its mock data
  generator runs without one, and that sends its own prompt.
- AIPerf 0.13.0 installs on 3.11 from 141 pinned wheels (no torch), reads prompts from a file
  (`--custom-dataset-type single_turn`), takes every request field (`--extra-inputs`), warms up
  in a phase of its own (`--warmup-request-count`), takes token counts from the server's usage
  (`--use-server-token-count`) and writes every request's TTFT, inter-chunk gaps, ITL, latency
  and token counts to profile_export.jsonl. Its defaults starved this host (ITL 717 ms against
  about 30 ms): here it runs one worker, one record processor, concurrency 1, no UI, no GPU
  telemetry, no server-metrics scraping.
Two things it needs that this host does not give it on its own:
- a tokenizer: its /v1/completions endpoint loads one even when every count is the server's;
  langbench writes one from the GGUF's own vocabulary (run/gguf_tokenizer.py) and passes its
  directory. HF_HUB_OFFLINE must stay unset: with it set, AIPerf 0.13 looks every tokenizer
  name, a local directory too, up in the hub's cache and fails.
- a temporary directory it cleans: its dataset's memory map (aiperf_mmap_*) and its ZeroMQ
  sockets stay in TMPDIR after it exits, so TMPDIR is a directory of this call, removed after.

It speaks OpenAI's API only: it posts /v1/completions (the prompt as is, as /api/generate with
Gemma's `{{ .Prompt }}` template sends it) with the fields langbench gives it (--options: the
parameter file's options as /v1 fields, run/peers.py v1_fields). Its output, per request:
phase, its metrics as it computed them, and its error; the artifact directory is kept beside
OUT.json. Runs inside the tool's venv: the standard library and AIPerf's command line only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Per request, what langbench reads back (AIPerf's metric tags; values as it wrote them).
KEEP = ("time_to_first_token", "time_to_first_output_token", "inter_token_latency", "inter_chunk_latency",
        "request_latency", "http_req_duration", "http_req_connecting", "http_req_connection_reused",
        "http_req_sending", "http_req_waiting", "http_req_receiving",
        "output_token_throughput_per_user", "output_sequence_length", "input_sequence_length",
        "usage_prompt_tokens", "usage_completion_tokens", "output_token_count")


# Concurrency 1 alone is AIPerf's concurrency-burst mode: while the one request is in flight its
# timing manager polls for a free slot with `yield_to_event_loop()` in a loop (timing/strategies/
# request_rate.py), a whole core busy for the length of every stream. On 2 cores that starved the
# server it measured: 32-token streams of 16-36 s (ITL 520-1,170 ms) where the same server gave
# 1.1 s to every other tool. With a request rate the manager sleeps to each tick (a timerfd) and
# skips a tick whose slot is taken; at RATE per second a request waits at most 1/RATE s for its
# tick, which delays when it starts, not anything it measures.
RATE = 20


def command(a: argparse.Namespace, fields: dict, inputs: Path, artifacts: Path) -> list[str]:
    aiperf = Path(sys.executable).with_name("aiperf")
    cmd = [str(aiperf), "profile", "--model", a.model, "--url", a.url, "--tokenizer", a.tokenizer,
           "--endpoint-type", "completions", "--streaming", "--input-file", str(inputs),
           "--custom-dataset-type", "single_turn", "--use-server-token-count",
           "--concurrency", "1", "--request-rate", str(RATE), "--arrival-pattern", "constant",
           "--request-count", str(a.runs), "--workers-max", "1", "--record-processors", "1",
           "--ui", "none", "--no-gpu-telemetry", "--no-server-metrics", "--artifact-dir", str(artifacts)]
    if a.warmups:
        cmd += ["--warmup-request-count", str(a.warmups)]
    if a.timeout_s:
        cmd += ["--request-timeout-seconds", str(a.timeout_s)]
    if fields:  # one JSON object: its types kept as they are (key:value pairs are coerced from text)
        cmd += ["--extra-inputs", json.dumps(fields)]
    return cmd


def records(export: Path) -> list[dict]:
    out = []
    for line in export.read_text(encoding="utf-8").splitlines() if export.exists() else []:
        rec = json.loads(line)
        meta, metrics = rec.get("metadata", {}), rec.get("metrics", {})
        out.append({"phase": meta.get("benchmark_phase"), "request_start_ns": meta.get("request_start_ns"),
                    "was_cancelled": meta.get("was_cancelled"), "error": rec.get("error"),
                    "metrics": {k: metrics[k]["value"] for k in KEEP if k in metrics},
                    "units": {k: metrics[k].get("unit") for k in KEEP if k in metrics}})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    for name in ("--url", "--model", "--prompt-file", "--options", "--out", "--tokenizer"):
        ap.add_argument(name, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmups", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=None)
    a = ap.parse_args()
    from importlib.metadata import version

    out = Path(a.out)
    artifacts = out.with_suffix("")  # peers/<batch>/ beside peers/<batch>.json
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    inputs = artifacts / "prompts.jsonl"
    prompt = Path(a.prompt_file).read_text(encoding="utf-8")
    inputs.write_text(json.dumps({"text": prompt}) + "\n", encoding="utf-8")
    fields = json.loads(a.options)
    cmd = command(a, fields, inputs, artifacts / "aiperf")
    tmp = tempfile.mkdtemp(prefix="langbench-aiperf-")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(TMPDIR=tmp, HF_HUB_DISABLE_TELEMETRY="1", NO_COLOR="1", COLUMNS="160")
    started_unix, started = time.time(), time.perf_counter()
    try:
        with open(artifacts / "aiperf.log", "wb") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc = {"tool": "aiperf", "version": version("aiperf"),
           "entry": "aiperf profile (its command line), --endpoint-type completions --streaming",
           "command": cmd[1:], "request_fields": fields, "exit_code": code, "started_unix": started_unix,
           "wall_s": time.perf_counter() - started, "requested": {"warmup": a.warmups, "profiling": a.runs},
           "records": records(artifacts / "aiperf" / "profile_export.jsonl")}
    if code != 0:
        tail = (artifacts / "aiperf.log").read_text(errors="replace").splitlines()[-20:]
        doc["error"] = "\n".join(tail)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
    return code


if __name__ == "__main__":
    sys.exit(main())
