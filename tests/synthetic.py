"""Synthetic run directories with planted effects, for known-answer tests and notebook tests.

The records have the shape the sweep writes (agent record + plan fields), with numbers drawn
from distributions whose differences we choose.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from langbench import storage

FACTORS = {"num_gpu": [60, 80, 120], "num_ctx": [256, 512, 1024], "temperature": [0.6, 0.8]}


def make_run(run_dir: Path, *, reps: int = 8, tps=100.0, sd=1.0, sd_ratio_rust=1.0,
             chimera_gain_at_gpu80: float = 0.0, rust_tps_shift: float = 0.0,
             ttft_ms=100.0, seed: int = 0, failures: int = 0,
             overhead_ms=(1.5, 1.0), thinking: int = 0) -> Path:
    """A run where throughput ~ N(tps, sd); Rust's sd is sd × sd_ratio_rust and its mean is
    shifted by rust_tps_shift; chimera gains chimera_gain_at_gpu80 (a fraction) at num_gpu=80
    only; `failures` runs of the first cell are errors. With `thinking` > 0: a chat run with
    think: true whose first `thinking` of 64 chunks are thinking, records with every field of
    the current agent contract (kinds, connections, gap counts) and the server's state after
    each batch (context length as asked, 0 of 19 layers on GPU: num_gpu not applied)."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    records, procs = [], []
    configs = list(itertools.product(*FACTORS.values()))
    order = 0
    t = 1.8e9
    for ci, values in enumerate(configs, 1):
        config = dict(zip(FACTORS, values))
        config_id = f"c{ci:02d}"
        for mode in ("baseline", "chimera"):
            for agent in ("python", "rust"):
                batch_id = f"{config_id}-{mode}-{agent}"
                mu = tps + (rust_tps_shift if agent == "rust" else 0.0)
                if mode == "chimera" and config["num_gpu"] == 80:
                    mu *= 1 + chimera_gain_at_gpu80
                s = sd * (sd_ratio_rust if agent == "rust" else 1.0)
                phases = [("cold", 0)] + [("warmup", 1)] + [("measured", i) for i in range(1, reps + 1)]
                for phase, i in phases:
                    t += 2.0
                    rate = max(rng.normal(mu, s), 1.0)
                    n = 64
                    eval_ns = int(n / rate * 1e9)
                    load_ns = int((900 if phase == "cold" else 40) * 1e6)
                    prompt_ns = int(rng.normal(ttft_ms - 45, 3) * 1e6)
                    overhead = rng.normal(overhead_ms[agent == "rust"], 0.2)
                    ttft = (load_ns + prompt_ns) / 1e6 + overhead
                    decode = eval_ns / 1e6 * (n - 1) / n
                    fail = failures > 0 and ci == 1 and agent == "python" and mode == "chimera" and phase == "measured" and i <= failures
                    rec = {
                        "schema_version": 2, "run_id": f"{batch_id}-{phase}{i}", "agent": agent,
                        "agent_version": "synthetic", "model": "synthetic", "options": {}, "warmup": phase != "measured",
                        "t0_unix": t, "ttft_ms": None if fail else ttft, "e2e_ms": None if fail else ttft + decode,
                        "decode_ms": None if fail else decode, "chunks": 0 if fail else n,
                        "itl_ms": {"p50": decode / n, "p95": decode / n * 1.5, "p99": decode / n * 2, "max": decode / n * 3},
                        "total_duration": None if fail else load_ns + prompt_ns + eval_ns,
                        "load_duration": None if fail else load_ns,
                        "prompt_eval_count": None if fail else 12,
                        "prompt_eval_duration": None if fail else prompt_ns,
                        "eval_count": None if fail else n, "eval_duration": None if fail else eval_ns,
                        "done_reason": None if fail else "length", "response_chars": 0 if fail else 300,
                        "response_sha256": "0" * 64, "outcome": "error" if fail else "ok",
                        "error": {"kind": "http_500", "message": "runner <crashed> & \"died\""} if fail else None,
                        "batch_id": batch_id, "order": order, "config_id": config_id, "config": config,
                        "mode": mode, "attempt": 1, "phase": phase, "reload_expected": True,
                    }
                    if thinking:
                        gap = decode / (n - 1)
                        rec.update(endpoint="chat", think=True, new_connection=phase == "cold",
                                   connect_ms=0.2 if phase == "cold" else None,
                                   ttft_answer_ms=None if fail else ttft + thinking * gap,
                                   chunks_thinking=0 if fail else thinking, chunks_answer=0 if fail else n - thinking,
                                   thinking_chars=0 if fail else 4 * thinking)
                        rec["itl_ms"]["n"] = 0 if fail else n - 1
                        if fail:
                            rec["error"]["client"] = f"{agent} synthetic client"
                    records.append(rec)
                procs.append({"batch_id": batch_id, "attempt": 1, "config_id": config_id, "mode": mode,
                              "runs": len(phases), "agent": agent, "exit_code": 0, "wall_s": 10.0,
                              "user_cpu_s": (0.5 if agent == "python" else 0.01) * rng.uniform(0.9, 1.1), "system_cpu_s": 0.05 * rng.uniform(0.9, 1.1),
                              "peak_rss_bytes": (40 if agent == "python" else 3) * 2**20 + int(rng.integers(0, 2**20)),
                              "startup_ms": rng.normal(450 if agent == "python" else 2, 1),
                              "records": len(phases), "timed_out": False, "stderr_tail": "",
                              **({"offload": {"layers_gpu": 0, "layers_total": 19, "loaded": True,
                                              "context_length": config["num_ctx"] if mode == "chimera" else 4096,
                                              "invalid_options": []}} if thinking else {})})
                order += 1
    storage.append_jsonl(run_dir / "records.jsonl", records)
    storage.append_jsonl(run_dir / "processes.jsonl", procs)
    storage.write_json(run_dir / "manifest.json", {
        "schema_version": 1, "run_id": run_dir.name, "parameters_file": "synthetic",
        "parameters": {"matrix": FACTORS, **({"endpoint": "chat", "fixed": {"think": True}} if thinking else {})},
        "started_at": "2026-01-01T00:00:00+00:00",
        "ended_at": "2026-01-01T01:00:00+00:00", "ollama_version": "synthetic",
        "model": {"name": "synthetic", "parameter_size": "0", "quantization_level": "none"},
        "host": {"cpu_model": "synthetic", "cpu_logical": 2, "gpus": []},
        "counts": {"planned_runs": len(records), "failed_runs": failures}, "git": {"commit": "synthetic"}})
    return run_dir
