"""The sweep's plan: configs from the matrix, batches in a seeded, balanced order, run ids.

A batch is one agent process running one (config, mode) cell: its first run is tagged `cold`
(the first after an options change, reported apart), then `warmup` runs, then the measured
repetitions (`measured`). Configs are shuffled with the order seed; within a config the two
modes alternate first from config to config, and the agents run A B B A, so each agent goes
first in half the configs and neither drift nor heat lines up with one factor.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import asdict, dataclass, field, replace

from langbench.run.params import Params, task_run_name
from langbench.vocab import LOAD_FACTORS, OPENAI_ENDPOINTS, OPENAI_FIELDS, REQUEST_FIELDS, WORKLOAD_FACTORS

MODES = ("baseline", "chimera")
# LOAD_FACTORS (vocab.py): factors of the load, not Ollama options: never sent, kept on baseline rows too.
# REQUEST_FIELDS (vocab.py): factors or fixed values that go at the top of the request, never
# into `options` (Ollama ignores them there, with "invalid option provided" in its log).
# Ollama reloads the model when one of these changes (v0.11.4 source; DESIGN.md).
RELOAD_OPTIONS = ("num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread")


@dataclass(frozen=True)
class Run:
    run_id: str
    phase: str  # cold | warmup | measured
    index: int  # position within its phase
    prompt: int
    cache: str = "cached"  # uncached: a unique seeded prefix, so the prompt is evaluated in full
    stream: int | None = None  # concurrent batches: the stream that runs it
    send_at_s: float | None = None  # open loop: its intended send time after the measured phase starts


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
    streams: int | None = None  # concurrent mode (closed loop: N streams; open loop: requests)
    request: dict = field(default_factory=dict)  # request-level fields sent: keep_alive, think

    def as_dict(self) -> dict:
        return asdict(self)


def load_points(params: Params) -> list[dict]:
    """The load each config runs under: one point per `concurrency` level (closed loop) and per
    open-loop arrival rate; [{}] when the file sets neither (one run at a time)."""
    points = [{"concurrency": n} for n in params.raw.get("concurrency") or []]
    rates = (params.raw.get("open_loop") or {}).get("rates_per_s") or []
    if rates:
        points = [{**p, "arrival_rate_per_s": None} for p in points]
        points += [{"concurrency": None, "arrival_rate_per_s": r} for r in rates]
    return points or [{}]


def server_points(params: Params) -> list[dict]:
    """The server each config runs on: one point per server.kind level where the file lists
    several (a factor: `server_kind`), else [{}]."""
    kind = params.server.get("kind")
    return [{"server_kind": k} for k in kind] if isinstance(kind, list) and len(kind) > 1 else [{}]


def endpoint_of(params: Params, config: dict) -> str:
    """The endpoint a config's batches use: its matrix.endpoint level, else the file's."""
    return config.get("endpoint") or params.endpoint


def configs(params: Params) -> list[tuple[str, dict]]:
    """Every combination of the matrix, the server kinds and the load points, in a fixed order:
    ("c01", {"num_gpu": 60, ..., "concurrency": 4})."""
    keys = list(params.matrix)
    combos = [{**dict(zip(keys, values)), **kind, **load}
              for values in itertools.product(*(params.matrix[k] for k in keys))
              for kind in server_points(params) for load in load_points(params)]
    width = len(str(len(combos)))
    return [(f"c{i:0{width}d}", config) for i, config in enumerate(combos, 1)]


def slots(params: Params) -> int:
    """The server's parallel request slots the run needs: the parameter file's
    server.num_parallel, else the highest concurrency (1 when the run sets none)."""
    return int(params.server.get("num_parallel") or max(params.raw.get("concurrency") or [1]))


def options_for(params: Params, config: dict, mode: str) -> dict:
    """The exact options object an agent sends: baseline (Ollama defaults, plus what the
    parameter file sets as baseline) or the config's, both with the fixed num_predict/seed
    (and num_thread where the file fixes it). Load factors (concurrency, arrival rate) are the
    runner's, never options."""
    fixed = {k: params.fixed[k] for k in ("num_predict", "seed", "num_thread") if k in params.fixed}
    chosen = params.baseline if mode == "baseline" else config
    options = {**{k: v for k, v in chosen.items() if k not in LOAD_FACTORS + REQUEST_FIELDS + WORKLOAD_FACTORS}, **fixed}
    if endpoint_of(params, config) in OPENAI_ENDPOINTS:  # /v1's own field names (params refused the rest)
        return {OPENAI_FIELDS[k]: v for k, v in options.items()}
    return options


def request_for(params: Params, config: dict, mode: str) -> dict:
    """The request-level fields a batch sends beside its options: keep_alive (fixed, default -1)
    and think (only where the file sets it), then, in chimera mode, the config's own values of
    either when they are matrix factors (baseline keeps Ollama's defaults, as for options)."""
    req = {"keep_alive": params.fixed["keep_alive"]}
    if "think" in params.fixed:
        req["think"] = params.fixed["think"]
    chosen = params.baseline if mode == "baseline" else config
    req.update({k: chosen[k] for k in REQUEST_FIELDS if k in chosen})
    return req


def build(params: Params) -> list[Batch]:
    """Every batch in run order: `batches` rounds, each over every config in a fresh seeded
    shuffle, so that a cell's batches are independent and spread over the sweep."""
    rng = random.Random(params.order["seed"])
    rounds = params.batches
    batches: list[Batch] = []
    previous: dict | None = None
    for r in range(rounds):
        cells = configs(params)
        if params.order["shuffle"]:
            rng.shuffle(cells)
        previous = _round(params, cells, batches, previous, f"-b{r + 1}" if rounds > 1 else "")
    return batches


def round_of(batch_id: str) -> int:
    """The round (1, 2, …) a batch belongs to: its `-b{r}` suffix; 1 for a one-round plan."""
    tail = batch_id.rsplit("-b", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 1


def rounds(batches: list[Batch]) -> list[list[Batch]]:
    """The plan's batches grouped by round, in run order (build() lays rounds end to end)."""
    out: dict[int, list[Batch]] = {}
    for b in batches:
        out.setdefault(round_of(b.batch_id), []).append(b)
    return [out[r] for r in sorted(out)]


def reload_after(batch: Batch, previous: dict | None) -> Batch:
    """`batch` with `reload_expected` recomputed against the options its server ran before
    (None: a fresh server, which loads the model): under --cluster a batch's predecessor is
    whatever its worker ran last, known when the batch is handed to that worker."""
    reload = previous is None or any(batch.options.get(o) != previous.get(o) for o in RELOAD_OPTIONS)
    return batch if reload == batch.reload_expected else replace(batch, reload_expected=reload)


def batch_from_dict(doc: dict) -> Batch:
    """A Batch back from plan.json (Batch.as_dict)."""
    runs = tuple(Run(**r) for r in doc.get("runs", ()))
    return Batch(**{**doc, "runs": runs})


def _round(params: Params, cells: list, batches: list[Batch], previous: dict | None, suffix: str) -> dict | None:
    for k, (config_id, config) in enumerate(cells):
        modes = MODES if k % 2 == 0 else MODES[::-1]
        agents = [a for a in params.agents if not params.excluded(a, config)]
        if not agents:  # `exclude` left this cell to no agent: nothing of it runs
            continue
        if k % 4 in (1, 2):  # first agent over configs: A B B A ..., balanced with the mode
            agents.reverse()
        for m, mode in enumerate(modes):
            in_order = agents if m == 0 else agents[::-1]
            for agent in in_order:  # A B | B A
                options = options_for(params, config, mode)
                reload = previous is None or any(
                    options.get(o) != previous.get(o) for o in RELOAD_OPTIONS)
                previous = options
                batch_id = f"{config_id}-{mode}-{agent}{suffix}"
                runs, streams = _runs(params, batch_id, config, f"{config_id}{suffix}")
                request = request_for(params, config, mode)
                batches.append(Batch(batch_id, len(batches), config_id, config, mode, agent,
                                     options, reload, tuple(runs), streams, request))
                loaded = any(config.get(f) is not None for f in LOAD_FACTORS)
                if params.null_client and mode == "baseline" and agent == in_order[-1] and not loaded:
                    batches.append(_null_batch(config_id, config, len(batches), options, runs, suffix, request))
    return previous


def _runs(params: Params, batch_id: str, config: dict, schedule_key: str) -> tuple[list[Run], int | None]:
    """A batch's runs: the cold one, warm-ups, then the measured ones — one after another, in
    `concurrency` streams of the same repetitions each, or (open loop) `requests` uncached
    runs at seeded Poisson send times that every agent and mode of the cell shares."""
    if params.raw.get("workload") == "agent":
        return _agent_runs(params, batch_id, config)
    n_prompts = len(params.prompts)
    runs = [Run(f"{batch_id}-cold", "cold", 0, 0)]
    runs += [Run(f"{batch_id}-w{i}", "warmup", i, i % n_prompts) for i in range(1, params.warmups + 1)]
    rate, streams = config.get("arrival_rate_per_s"), config.get("concurrency")
    if rate:
        rng = random.Random(f"{params.order['seed']}:{schedule_key}")
        requests = params.open_loop["requests"]
        at = list(itertools.accumulate(rng.expovariate(rate) for _ in range(requests)))
        runs += [Run(f"{batch_id}-o{i:02d}", "measured", i, (i - 1) % n_prompts, "uncached",
                     stream=i - 1, send_at_s=round(at[i - 1] - at[0], 6)) for i in range(1, requests + 1)]
        return runs, requests
    for k in range(streams or 1):
        tag = f"-s{k}" if streams else ""
        runs += [Run(f"{batch_id}{tag}-r{i:02d}", "measured", i, (i - 1) % n_prompts, stream=k if streams else None)
                 for i in range(1, params.repetitions + 1)]
        runs += [Run(f"{batch_id}{tag}-u{i:02d}", "measured", params.repetitions + i, (i - 1) % n_prompts,
                     "uncached", stream=k if streams else None)
                 for i in range(1, params.uncached_repetitions + 1)]
    return runs, streams


def _agent_runs(params: Params, batch_id: str, config: dict) -> tuple[list[Run], int | None]:
    """workload agent: a run is a task (its `prompt` indexes `tasks`). The cold run is the first
    task, warm-ups go through the tasks in turn, then each stream runs every task `repetitions`
    times as planned (r), then `uncached_repetitions` times with a unique prefix on its opening
    (u), so the server cannot reuse a cached prefix at its first turn. A replayed conversation
    is a task like any other (params.expand_replays), named in run ids by its run_name."""
    n = len(params.tasks)
    name = lambda i: task_run_name(params.tasks[i])  # noqa: E731
    runs = [Run(f"{batch_id}-cold", "cold", 0, 0)]
    runs += [Run(f"{batch_id}-w{i}", "warmup", i, (i - 1) % n) for i in range(1, params.warmups + 1)]
    streams = config.get("concurrency")
    for k in range(streams or 1):
        tag = f"-s{k}" if streams else ""
        stream = k if streams else None
        index = 1
        for cache, letter, reps in (("cached", "r", params.repetitions), ("uncached", "u", params.uncached_repetitions)):
            for i in range(1, reps + 1):
                for t in range(n):
                    runs.append(Run(f"{batch_id}{tag}-{name(t)}.{letter}{i:02d}", "measured", index, t, cache,
                                    stream=stream))
                    index += 1
    return runs, streams


def _null_batch(config_id: str, config: dict, order: int, options: dict, like: list[Run],
                suffix: str, request: dict) -> Batch:
    """The null client's batch: right after a baseline batch, same options, same runs, so its
    client overhead is the floor the server imposes at that moment (issue 9: "a null client")."""
    batch_id = f"{config_id}-baseline-null{suffix}"
    runs = tuple(Run(f"{batch_id}-{r.run_id.rsplit('-', 1)[1]}", r.phase, r.index, r.prompt, r.cache)
                 for r in like)
    return Batch(batch_id, order, config_id, config, "baseline", "null", options, False, runs, request=request)


def prompt_text(params: Params, run: Run) -> str:
    """The prompt a run sends: uncached runs get a unique prefix, seeded by the order seed and
    the run id, so Ollama cannot reuse a cached KV prefix and evaluates the prompt in full."""
    base = params.prompts[run.prompt]
    if run.cache != "uncached":
        return base
    tag = hashlib.sha256(f"{params.order['seed']}:{run.run_id}".encode()).hexdigest()[:10]
    return f"Note {tag}. {base}"


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


def run_key(batch: Batch, run_id: str) -> str:
    """A run's place in the plan without its agent: the same for the python, rust and null runs
    that do the same work (config, mode, round, task and repetition)."""
    suffix = batch.batch_id[len(f"{batch.config_id}-{batch.mode}-{batch.agent}"):]
    return f"{batch.config_id}-{batch.mode}{suffix}{run_id[len(batch.batch_id):]}"


def task_opening(params: Params, batch: Batch, run: Run) -> list[dict]:
    """A task's opening messages (its system message, if any, and its goal; a replay: the whole
    recorded conversation, which the agent cuts into its requests); an uncached run's first
    user message gets a unique prefix, seeded by the order seed and the run's key, so that every
    language holds the same conversation (with one server slot, the previous task's cache is
    all the server keeps: the same prefix in another agent's batch is no hit). The user's, not
    a system message: a template without .System (gemma3:270m's `{{ .Prompt }}`) drops that,
    prefix and all, and the prompt stayed cached (seen on the embedded server: 9 prompt tokens
    with the prefix as without)."""
    t = params.tasks[run.prompt]
    if "messages" in t:
        opening = [dict(m) for m in t["messages"]]
    else:
        opening = ([{"role": "system", "content": t["system"]}] if "system" in t else []) + \
            [{"role": "user", "content": t["goal"]}]
    if run.cache == "uncached":
        tag = hashlib.sha256(f"{params.order['seed']}:{run_key(batch, run.run_id)}".encode()).hexdigest()[:10]
        k = next((i for i, m in enumerate(opening) if m["role"] == "user"), 0)
        opening[k] = {**opening[k], "content": f"Note {tag}. {opening[k]['content']}"}
    return opening


def agent_requests(params: Params) -> tuple[int | None, bool]:
    """What the ETA of an agent run stands on: the most requests one task sends (its max_turns;
    a replayed conversation's are exactly its requests, conversations.requests_of) and whether
    any task asks for structured actions (its requests decode under a JSON grammar; a replay
    sends no `format`). (None, False) outside workload agent."""
    if params.raw.get("workload") != "agent":
        return None, False
    acting = any("messages" not in t for t in params.tasks)
    structured = "structured" in (params.matrix.get("actions") or [params.raw.get("actions", "structured")])
    return max(t["max_turns"] for t in params.tasks), acting and structured


def actions_of(params: Params, batch: Batch) -> str:
    """How the batch's agent asks for actions: the config's factor, else the file's `actions`."""
    return batch.config.get("actions") or params.raw.get("actions") or "structured"


def replay_of(batch: Batch, task: dict) -> str | None:
    """How a task replays in this batch: a replayed conversation's own mode, else the config's
    matrix.replay level; None for a goal task (it acts with tools)."""
    if "messages" not in task:
        return None
    return task["replay"] or batch.config["replay"]


def _task_fields(batch: Batch, task: dict, index: int) -> dict:
    """A run's task fields: a goal task's tools and table (index into the jobs' tables), or a
    replay's mode (no tools: the agent sends the recorded turns)."""
    replay = replay_of(batch, task)
    return {"replay": replay} if replay else {"tools": task["tools"], "table": index}


def agent_jobs_document(params: Params, batch: Batch, runs: list[Run], options: dict | None = None) -> dict:
    """The jobs file of an agent batch (workload agent): one opening per run, the task's tools,
    table (or replay mode) and max_turns; the cold and resume runs are one-turn tasks (they pay
    the reload; neither is measured)."""
    request = batch.request or {"keep_alive": params.fixed["keep_alive"]}
    tasks = params.tasks
    tables = [t.get("table", {}) for t in tasks]
    doc = {
        "schema_version": 1, "model": params.model, "endpoint": endpoint_of(params, batch.config), "workload": "agent",
        "actions": actions_of(params, batch), "tables": tables,
        "prompts": [task_opening(params, batch, r) for r in runs],
        "timeout_s": params.timeouts["run_s"],
        "runs": [{"run_id": r.run_id, "prompt": i, "options": batch.options if options is None else options,
                  **request, "warmup": r.phase != "measured", "task_id": tasks[r.prompt]["name"],
                  **_task_fields(batch, tasks[r.prompt], r.prompt),
                  "max_turns": 1 if r.phase in ("resume", "cold") else tasks[r.prompt]["max_turns"],
                  **({"stream": r.stream} if r.stream is not None and batch.streams else {})}
                 for i, r in enumerate(runs)],
    }
    if batch.streams:
        doc["streams"] = batch.streams
    return doc


REFILL_PHASES = ("cold", "resume")  # the runs that pay a reload and prime the prompt cache


def cold_tokens(params: Params) -> int | None:
    """`cold_num_predict` of the parameter file: what a cold or resume run generates (None: the
    batch's num_predict)."""
    return params.raw.get("cold_num_predict")


def run_options(params: Params, run: Run, options: dict) -> dict:
    """The options `run` sends: the batch's, but a cold or resume run generates
    `cold_num_predict` tokens where the file sets it (num_predict, or /v1's max_tokens). Only
    its TTFT and load are reported (metrics.cold), so the cap changes no measured number;
    num_predict is a sampling option, so it forces no reload (RELOAD_OPTIONS)."""
    cap = cold_tokens(params)
    if cap is None or run.phase not in REFILL_PHASES:
        return options
    key = "max_tokens" if "max_tokens" in options else "num_predict"
    return {**options, key: cap}


def jobs_document(params: Params, batch: Batch, runs: list[Run], options: dict | None = None) -> dict:
    """The jobs file (schemas/jobs.schema.json) for `runs` of `batch`: on the chat endpoint each
    prompt is one user message."""
    if params.raw.get("workload") == "agent":
        return _captured(params, agent_jobs_document(params, batch, runs, options))
    prompts = list(params.prompts)
    index = {}
    for r in runs:
        if r.cache == "uncached":
            index[r.run_id] = len(prompts)
            prompts.append(prompt_text(params, r))
    endpoint = endpoint_of(params, batch.config)
    chat = endpoint in ("chat", "openai-chat")
    request = batch.request or {"keep_alive": params.fixed["keep_alive"]}
    doc = {
        "schema_version": 1,
        "model": params.model,
        "endpoint": endpoint,
        "prompts": [[{"role": "user", "content": p}] for p in prompts] if chat else prompts,
        "raw": params.fixed["raw"] and endpoint == "generate",
        "timeout_s": params.timeouts["run_s"],
        "runs": [{"run_id": r.run_id, "prompt": index.get(r.run_id, r.prompt),
                  "options": run_options(params, r, batch.options if options is None else options),
                  **request, "warmup": r.phase != "measured",
                  **({"stream": r.stream} if r.stream is not None and batch.streams else {}),
                  **({"send_at_s": r.send_at_s} if r.send_at_s is not None and batch.streams else {})}
                 for r in runs],
    }
    if batch.streams:
        doc["streams"] = batch.streams
    return _captured(params, doc)


def _captured(params: Params, doc: dict) -> dict:
    """`capture: true` asks every client for its chunk trace (DESIGN.md, "The replay server")."""
    if params.raw.get("capture"):
        doc["capture"] = True
    return doc
