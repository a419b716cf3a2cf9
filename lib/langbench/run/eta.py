"""How long a sweep will take, from the server's decode rate measured just before it starts.

Times on these machines stand on that rate (the embedded Gemma 3 270M decoded 30.7 tok/s on
one 2-core EPYC and 42 on another), so the runner measures it first and says what its ETA is
built from: one request of PROBE_TOKENS tokens at Ollama's defaults, unloaded afterwards
(keep_alive 0) so that the sweep starts from the state it always started from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import httpx

PROBE_TOKENS = 32
PROBE_PROMPT = "The history of the transistor"
# Start-up of one agent process (spawn to first request), seconds: medians of processes.jsonl
# of `make report` on the 2-core Intel Xeon (python 0.90 and 0.82 s in two runs, Rust 0.01, the
# null client 0.07-0.10; python imports its client stack). An estimate: the sweep's progress bar
# measures the real thing.
STARTUP_S = {"python": 0.85, "rust": 0.01, "null": 0.1}


@dataclass(frozen=True)
class DecodeRate:
    """One probe: decode rate (eval_count / eval_duration, tok/s), prompt evaluation and the
    model's load (ms) as the server reported them."""
    tokens_per_s: float
    tokens: int
    prompt_eval_ms: float
    load_ms: float

    def as_dict(self) -> dict:
        return asdict(self)


def probe(url: str, model: str, tokens: int = PROBE_TOKENS, timeout_s: float = 300.0,
          fmt: str | None = None) -> DecodeRate | None:
    """Measure the server's decode rate with one streamed-off /api/generate of `tokens` tokens
    (raw prompt, greedy, keep_alive 0). None if the server answered with no usable timing (the
    sweep then runs without an ETA; a server that does not answer fails the sweep's own checks).

    fmt: the request's `format` ("json" for a run of structured actions): Ollama 0.11.4 then
    samples under a grammar, applied to the whole vocabulary whenever the model's own top token
    is rejected, so the rate measured is the constrained one (2-3× slower on the embedded model
    on 2 CPU cores, about 15× on the gemma3:latest shape on an H200: DESIGN.md, "Agent loops")."""
    try:
        r = httpx.post(f"{url}/api/generate", timeout=timeout_s, json={
            "model": model, "prompt": PROBE_PROMPT, "raw": True, "stream": False, "keep_alive": 0,
            **({"format": fmt} if fmt else {}),
            "options": {"num_predict": tokens, "temperature": 0, "seed": 1}})
        r.raise_for_status()
        doc = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    count, ns = doc.get("eval_count") or 0, doc.get("eval_duration") or 0
    if count < 2 or ns <= 0:
        return None
    return DecodeRate(tokens_per_s=count / (ns / 1e9), tokens=count,
                      prompt_eval_ms=(doc.get("prompt_eval_duration") or 0) / 1e6,
                      load_ms=(doc.get("load_duration") or 0) / 1e6)


def estimate_s(left, rate: DecodeRate, requests_per_run: int = 1, cold_tokens: int | None = None) -> float | None:
    """Seconds the runs not yet done will take at `rate`, one request at a time:
    Σ over runs of requests_per_run × (num_predict / rate + prompt evaluation) + Σ over batches
    with a run left of
    (agent start-up + the model's load where the batch reloads it). None where such a batch
    sets no num_predict (an unbounded generation has no ETA).

    left: (plan.Batch, runs of it not yet done) pairs; a Batch has options (num_predict),
    agent and reload_expected. requests_per_run: an agent task's most turns (max_turns), so that
    the estimate of a task is an upper bound (a task may finish sooner). cold_tokens: what a
    batch's cold run generates instead (`cold_num_predict`), counted where that run is still
    to do (every run of the batch left).
    """
    total = 0.0
    for b, n_left in left:
        if not n_left:
            continue
        n = (b.options or {}).get("num_predict")
        if not isinstance(n, int) or n < 0:
            return None
        per_run = requests_per_run * (n / rate.tokens_per_s + rate.prompt_eval_ms / 1e3)
        total += n_left * per_run + STARTUP_S.get(b.agent, 0.5)
        if cold_tokens is not None and n_left == len(b.runs) and cold_tokens < n:
            total -= requests_per_run * (n - cold_tokens) / rate.tokens_per_s
        if b.reload_expected:
            total += rate.load_ms / 1e3
    return total


def describe(rate: DecodeRate | None, eta: float | None, runs_left: int, sequential: bool = False,
             turns: int | None = None, constrained: bool = False) -> str:
    """The line the sweep prints before it starts (`sequential`: the runs are a maximum, as the
    study may stop at an earlier round; `turns`: the runs are agent tasks of up to that many
    requests each, an upper bound too; `constrained`: the rate was measured under `format`)."""
    if rate is None:
        return "sweep: the server's decode rate could not be measured; no ETA"
    head = (f"sweep: the server decodes {rate.tokens_per_s:.1f} tok/s{' under a JSON grammar' if constrained else ''} "
            f"(measured now: {rate.tokens} tokens; prompt {rate.prompt_eval_ms:.0f} ms, load {rate.load_ms:.0f} ms)")
    if eta is None:
        return f"{head}; no ETA: num_predict is not fixed"
    most = "at most " if sequential or turns else ""
    what = f"tasks of up to {turns} requests" if turns else "runs"
    return (f"{head}; {most}{runs_left} {what} ≈ {most}{eta / 60:.1f} min at that rate "
            "(generation, prompts, reloads and agent start-ups, one request at a time)")
