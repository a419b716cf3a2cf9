"""The sweep's plan: configs from the matrix, batches in a seeded, balanced order, run ids.

A batch is one agent process running one (config, mode) cell: its first run is tagged `cold`
(the first after an options change, reported apart), then `warmup` runs, then the measured
repetitions (`measured`). Configs are shuffled with the order seed; within a config the two
modes alternate first from config to config, and the agents run A B B A, so each agent goes
first in half the configs and neither drift nor heat lines up with one factor.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass, field

from langbench.params import Params

MODES = ("baseline", "chimera")
# Ollama reloads the model when one of these changes (v0.11.4 source; DESIGN.md).
RELOAD_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")


@dataclass(frozen=True)
class Run:
    run_id: str
    phase: str  # cold | warmup | measured
    index: int  # position within its phase
    prompt: int


@dataclass(frozen=True)
class Batch:
    batch_id: str
    order: int
    config_id: str
    config: dict
    mode: str
    agent: str
    options: dict
    reload_expected: bool
    runs: tuple[Run, ...] = field(default=())

    def as_dict(self) -> dict:
        return asdict(self)


def configs(params: Params) -> list[tuple[str, dict]]:
    """Every combination of the matrix, in a fixed order: ("c01", {"num_gpu": 60, ...})."""
    keys = list(params.matrix)
    combos = list(itertools.product(*(params.matrix[k] for k in keys)))
    width = len(str(len(combos)))
    return [(f"c{i:0{width}d}", dict(zip(keys, values))) for i, values in enumerate(combos, 1)]


def options_for(params: Params, config: dict, mode: str) -> dict:
    """The exact options object an agent sends: baseline (Ollama defaults, plus what the
    parameter file sets as baseline) or the config's, both with the fixed num_predict/seed."""
    fixed = {"num_predict": params.fixed["num_predict"], "seed": params.fixed["seed"]}
    chosen = params.baseline if mode == "baseline" else config
    return {**chosen, **fixed}


def build(params: Params) -> list[Batch]:
    rng = random.Random(params.order["seed"])
    cells = configs(params)
    if params.order["shuffle"]:
        rng.shuffle(cells)
    batches: list[Batch] = []
    previous: dict | None = None
    n_prompts = len(params.prompts)
    for k, (config_id, config) in enumerate(cells):
        modes = MODES if k % 2 == 0 else MODES[::-1]
        agents = list(params.agents)
        if k % 4 in (1, 2):  # first agent over configs: A B B A ..., balanced with the mode
            agents.reverse()
        for m, mode in enumerate(modes):
            for agent in (agents if m == 0 else agents[::-1]):  # A B | B A
                options = options_for(params, config, mode)
                reload = previous is None or any(
                    options.get(o) != previous.get(o) for o in RELOAD_OPTIONS)
                previous = options
                batch_id = f"{config_id}-{mode}-{agent}"
                runs = [Run(f"{batch_id}-cold", "cold", 0, 0)]
                runs += [Run(f"{batch_id}-w{i}", "warmup", i, i % n_prompts)
                         for i in range(1, params.warmups + 1)]
                runs += [Run(f"{batch_id}-r{i:02d}", "measured", i, (i - 1) % n_prompts)
                         for i in range(1, params.repetitions + 1)]
                batches.append(Batch(batch_id, len(batches), config_id, config, mode, agent,
                                     options, reload, tuple(runs)))
    return batches


# Ollama before 0.12.0 aborts the runner when num_ctx < num_batch (default 512); 0.12.0+ sends
# `opts.NumBatch = min(opts.NumBatch, opts.NumCtx)` itself (llm/server.go). The runner sends
# that same clamp to an older server, and only where it changes what the server would use.
OLLAMA_DEFAULT_NUM_BATCH = 512
CLAMP_FIXED_IN = (0, 12, 0)


def needs_num_batch_clamp(ollama_version: str) -> bool:
    """True for a server older than 0.12.0 (an unparsable version is taken as old)."""
    try:
        parts = tuple(int(x) for x in ollama_version.split("-")[0].split(".")[:3])
    except ValueError:
        return True
    return parts < CLAMP_FIXED_IN


def clamp_num_batch(options: dict) -> tuple[dict, dict | None]:
    """Options with num_batch = min(num_batch, num_ctx), as 0.12.0+ does; and what changed
    ({"num_batch_from", "num_batch_to"}) or None when nothing did."""
    ctx = options.get("num_ctx")
    batch = options.get("num_batch", OLLAMA_DEFAULT_NUM_BATCH)
    if ctx is None or batch <= ctx:
        return options, None
    return {**options, "num_batch": ctx}, {"num_batch_from": batch, "num_batch_to": ctx}


def jobs_document(params: Params, batch: Batch, runs: list[Run], options: dict | None = None) -> dict:
    """The jobs file (schemas/jobs.schema.json) for `runs` of `batch`."""
    return {
        "schema_version": 1,
        "model": params.model,
        "prompts": list(params.prompts),
        "raw": params.fixed["raw"],
        "timeout_s": params.timeouts["run_s"],
        "runs": [{"run_id": r.run_id, "prompt": r.prompt,
                  "options": batch.options if options is None else options,
                  "keep_alive": params.fixed["keep_alive"], "warmup": r.phase != "measured"}
                 for r in runs],
    }
