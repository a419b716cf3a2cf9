"""How long a sweep will take at most, from the server's decode rate measured just before it
starts and from the pace the run keeps once it has started.

Times on these machines stand on that rate (the embedded Gemma 3 270M decoded 30.7 tok/s on
one 2-core EPYC and 42 on another), so the runner measures it first and says what its ETA is
built from: one request of PROBE_TOKENS tokens at Ollama's defaults, unloaded afterwards
(keep_alive 0) so that the sweep starts from the state it always started from.

The estimate from that rate (`estimate_s`: generation, prompts, reloads, agent start-ups) leaves
out what only the run shows: the decode rate while an agent shares the CPU with the server, the
per-run overhead beyond generation, the runner's work between batches, a look of a sequential
study. So the bound (`Pace`) multiplies each batch's estimate by the pace measured so far: the
seconds the finished batches took against their estimates, per agent, the slower of the whole
run's and the last few batches', plus a margin. Before anything has run the pace is FIRST_PACE,
the most that fresh-clone `make report` runs took against their estimate, plus that margin.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

import httpx

PROBE_TOKENS = 32
PROBE_PROMPT = "The history of the transistor"
# Start-up of one agent process (spawn to first request), seconds: medians of processes.jsonl
# of `make report` on the 2-core Intel Xeon (python 0.90 and 0.82 s in two runs, Rust 0.01, the
# null client 0.07-0.10; python imports its client stack). An estimate: the sweep's progress bar
# measures the real thing.
STARTUP_S = {"python": 0.85, "python-tuned": 0.85, "python-raw": 0.15, "rust": 0.01, "null": 0.1}
# Seconds a sweep took against estimate_s of its batches, before it has measured its own pace:
# fresh-clone `make report` (quick.yaml) on 2-core machines of this kind took 1.20 (8 min 11 s
# against 6.8 min, Xeon cooperlake), 1.19 (8 min 14 s against 6.9 min, issue 44) and 0.92 times it
# (6 min 50 s against 7.4 min, Xeon rocketlake): the Python agent takes CPU from a server that
# decodes on both cores, and each run and batch costs more than its tokens. The first line
# takes the highest; MARGIN covers the pace drifting from there (a build started beside the
# sweep, a sequential look): the kept GPU sessions held their bound without it once every
# shape had run (tests/test_eta.py), the first line has only FIRST_PACE to stand on.
FIRST_PACE = 1.20
MARGIN = 0.15
RECENT = 6  # the last batches of a shape whose pace counts too, where it got slower
LEARNED_AFTER = 1  # batches of a shape before its own pace replaces the slowest batch's


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


def batch_s(b, n_left: int, rate: DecodeRate, requests_per_run: int = 1,
            cold_tokens: int | None = None, side_by_side: bool = False) -> float | None:
    """Seconds `n_left` runs of batch `b` take at `rate`: requests_per_run × (num_predict (or /v1's
    max_tokens) / rate + prompt evaluation) a run, the batch's `streams` sessions side by side
    one after another, or side by side (`side_by_side`: a replay server, whose streams keep their
    captured timing whatever the load; the pace learns what the client really keeps), plus the
    agent's start-up and the model's
    load where the batch reloads it; the cold run generates `cold_tokens` where set and still to
    do (every run of the batch left). None where the batch sets no num_predict."""
    if not n_left:
        return 0.0
    options = b.options or {}
    n = options.get("num_predict", options.get("max_tokens"))  # /v1 sends it as max_tokens
    if not isinstance(n, int) or n < 0:
        return None
    per_run = requests_per_run * (n / rate.tokens_per_s + rate.prompt_eval_ms / 1e3)
    rounds = -(-n_left // max(1, b.streams or 1)) if side_by_side else n_left
    total = rounds * per_run + STARTUP_S.get(b.agent, 0.5)
    if cold_tokens is not None and n_left == len(b.runs) and cold_tokens < n:
        total -= requests_per_run * (n - cold_tokens) / rate.tokens_per_s
    if b.reload_expected:
        total += rate.load_ms / 1e3
    return total


def estimate_s(left, rate: DecodeRate, requests_per_run: int = 1, cold_tokens: int | None = None,
               side_by_side: bool = False) -> float | None:
    """Seconds the runs not yet done will take at `rate`, one request at a time: Σ batch_s over
    the batches with a run left. None where such a batch sets no num_predict (an unbounded
    generation has no ETA).

    left: (plan.Batch, runs of it not yet done) pairs; a Batch has options (num_predict),
    agent and reload_expected. requests_per_run: an agent task's most turns (max_turns), so that
    the estimate of a task is an upper bound (a task may finish sooner). cold_tokens: what a
    batch's cold run generates instead (`cold_num_predict`), counted where that run is still
    to do (every run of the batch left).
    """
    total = 0.0
    for b, n_left in left:
        s = batch_s(b, n_left, rate, requests_per_run, cold_tokens, side_by_side)
        if s is None:
            return None
        total += s
    return total


def shape(b) -> tuple:
    """What makes batches keep one pace: the agent, the sessions at once, whether it reloads, and
    the options it sends (a partial offload decodes at a seventh of a full one's rate on a GPU)."""
    return (b.agent, b.streams or 1, bool(b.reload_expected), json.dumps(b.options or {}, sort_keys=True))


class Pace:
    """The bound on what is left, learning from what the run measured so far.

        pace = Pace(rate, requests_per_run, cold_tokens)
        pace.bound_s(left)              # before the first batch: estimate × FIRST_PACE × (1 + MARGIN)
        pace.took(batch, runs, seconds) # after each batch attempt: the runner's seconds for it
        pace.bound_s(left)              # estimate × the pace measured, per shape of batch

    `seconds` of an attempt is all the time since the one before it ended (or since the first
    line), so that the runner's own work between batches and a sequential look are in it too.
    Paces are kept per shape (agent, sessions at once, reload, options): a batch of 8 sessions,
    of another agent or of another offload does not keep the pace of the others; a shape not
    run yet is given the slowest pace any batch kept."""

    def __init__(self, rate: DecodeRate, requests_per_run: int = 1, cold_tokens: int | None = None,
                 first: float = FIRST_PACE, margin: float = MARGIN, side_by_side: bool = False):
        self.rate, self.requests_per_run, self.cold_tokens = rate, requests_per_run, cold_tokens
        self.side_by_side = side_by_side
        self.first, self.margin = first, margin
        self.taken: dict[tuple, list[tuple[float, float]]] = defaultdict(list)  # shape → (estimate, seconds)

    def took(self, batch, runs: int, seconds: float) -> None:
        """An attempt of `batch` ran `runs` runs (every run of it: the cold one too) in `seconds`."""
        est = batch_s(batch, runs, self.rate, self.requests_per_run, self.cold_tokens, self.side_by_side)
        if est and est > 0 and seconds >= 0:
            self.taken[shape(batch)].append((est, seconds))

    @staticmethod
    def _ratio(pairs) -> float:
        return sum(s for _, s in pairs) / sum(e for e, _ in pairs)

    def factor(self, batch) -> float:
        """Seconds per estimated second for a batch still to run, margin included: its shape's
        pace (the whole run's or its last RECENT batches', whichever is slower) once
        LEARNED_AFTER batches of that shape have ended, else the slowest batch of any shape
        so far, and never less than FIRST_PACE before that."""
        mine = self.taken.get(shape(batch), [])
        if len(mine) >= LEARNED_AFTER:
            pace = max(self._ratio(mine), self._ratio(mine[-RECENT:]))
        else:
            pace = max([self.first, *(s / e for pairs in self.taken.values() for e, s in pairs)])
        return pace * (1 + self.margin)

    def bound_s(self, left) -> float | None:
        """At most how many seconds the runs not yet done take: (Batch, runs left) pairs, as
        estimate_s; None where a batch sets no num_predict."""
        total = 0.0
        for b, n_left in left:
            s = batch_s(b, n_left, self.rate, self.requests_per_run, self.cold_tokens, self.side_by_side)
            if s is None:
                return None
            total += s * self.factor(b) if s else 0.0
        return total


def other_servers(own_pid: int | None) -> int:
    """Model servers on this host that are not the sweep's own (Ollama runners, llama-servers):
    on these 2-core machines one beside the sweep's stalls it (docs/troubleshooting.md), so a
    bound from a probe taken beside it holds only while it does as it did then."""
    import psutil
    own: set[int] = set()
    if own_pid:
        try:
            me = psutil.Process(own_pid)
            own = {me.pid, *(c.pid for c in me.children(recursive=True))}
        except psutil.Error:
            pass
    count = 0
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if proc.info["pid"] not in own and (proc.info.get("name") == "llama-server" or
                                            (proc.info.get("name") == "ollama" and " runner" in cmd)):
            count += 1
    return count


def describe(rate: DecodeRate | None, bound: float | None, runs_left: int, sequential: bool = False,
             turns: int | None = None, constrained: bool = False, others: int = 0,
             side_by_side: bool = False) -> str:
    """The line the sweep prints before it starts: the rate and the bound on the time left
    (Pace.bound_s: an upper bound; `sequential`: the study may stop at an earlier round; `turns`:
    the runs are agent tasks of up to that many requests each; `constrained`: the rate was
    measured under `format`; `others`: model servers beside the sweep's own, said so;
    `side_by_side`: a replay server's sessions, whose client pace no estimate knows: no first bound)."""
    if rate is None:
        return "sweep: the server's decode rate could not be measured; no ETA"
    head = (f"sweep: the server decodes {rate.tokens_per_s:.1f} tok/s{' under a JSON grammar' if constrained else ''} "
            f"(measured now: {rate.tokens} tokens; prompt {rate.prompt_eval_ms:.0f} ms, load {rate.load_ms:.0f} ms)")
    if side_by_side:  # a replay server keeps every session's pace: the clients' own is the unknown
        return (f"{head}; no first bound: at N sessions a client's own pace is what the run measures (an SDK "
                "at 1,024 sessions can be CPU-bound for a minute a batch); the bar's bound learns it batch by batch")
    if bound is None:
        return f"{head}; no ETA: num_predict is not fixed"
    what = f"tasks of up to {turns} requests" if turns else "runs"
    stop = ", or fewer if the study stops early" if sequential else ""
    beside = (f"; {others} other model server{'s' if others > 1 else ''} run{'' if others > 1 else 's'} on this "
              "host: the bound holds only while they load it as they did now" if others else "")
    return (f"{head}; at most {runs_left} {what}{stop} ≈ at most {bound / 60:.1f} min "
            "(generation, prompts, reloads and agent start-ups at that rate, one request at a time, "
            f"× the pace such runs keep; the bar's bound learns this run's own){beside}")


def left_text(bound: float | None) -> str:
    """The progress bar's bound on the time left, as it learns."""
    if bound is None:
        return ""
    return f"≤ {bound / 60:.1f} min left" if bound >= 60 else f"≤ {bound:.0f} s left"
