"""Parameter files (YAML): loaded strictly, so a mistake stops the sweep before it starts.

Every problem is a ParamsError naming the file and the key; the CLI turns it into exit 2.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from langbench import paths, schemas, vocab
from langbench.run import conversations
from langbench.vocab import (ENDPOINT_PATHS, ENDPOINTS, LOAD_FACTORS, MARGINS, OPENAI_ENDPOINTS, OPENAI_FIELDS,
                             REQUEST_FIELDS, WORKLOAD_FACTORS, ParamsError)


@dataclass(frozen=True)
class Params:
    path: Path
    raw: dict  # the document as loaded, defaults filled in
    prompts: tuple[str, ...]
    expanded_tasks: tuple[dict, ...] | None = None  # workload agent: `tasks` with each replay task expanded

    def __getattr__(self, key):  # params.model, params.matrix, ...
        try:
            return self.raw[key]
        except KeyError:
            raise AttributeError(key) from None

    @property
    def tasks(self) -> tuple[dict, ...]:
        """The tasks a batch runs: the file's goal tasks as written, and in place of each replay
        task one task per conversation of its file (expand_replays); () outside workload agent."""
        if self.expanded_tasks is not None:
            return self.expanded_tasks
        return tuple(self.raw.get("tasks") or ())

    def conversations(self) -> list[dict]:
        """The replayed conversations, as they are part of what the sweep runs:
        [{"name": TASK NAME, "messages": [...]}] in task order; [] when no task replays."""
        return [{"name": t["name"], "messages": t["messages"]} for t in self.tasks if "messages" in t]

    def excluded(self, agent: str, config: dict) -> bool:
        """Whether the file's `exclude` leaves this agent out of this config: an entry matches
        when its agent (if it names one) is this one and every factor it names has its level."""
        return any(_matches(e, agent, config) for e in self.raw.get("exclude") or ())

    def digest(self) -> str:
        """Identity of what the sweep runs: a resumed run must have the same."""
        return digest_of(self.raw, self.prompts, self.conversations())

    def same_as_stored(self, stored_raw: dict | None, stored_prompts: list | None,
                       stored_conversations: list | None = None) -> bool:
        """Whether a run's stored parameters (manifest.json) are these: a run written by an
        older version stored them with that version's defaults filled in, so this version's
        defaults are filled into a copy before the digests are compared."""
        if not isinstance(stored_raw, dict) or stored_prompts is None:
            return False
        try:
            return digest_of(with_defaults(copy.deepcopy(stored_raw)), stored_prompts,
                             stored_conversations or []) == self.digest()
        except (AttributeError, KeyError, TypeError):
            return False


def digest_of(raw: dict, prompts, conversations=()) -> str:
    """sha256 of the parameters (less `cluster`: where it runs, not what), prompt texts and,
    where tasks replay, the conversations replayed (a file without replays keeps the digest it
    had before replays existed)."""
    raw = {k: v for k, v in raw.items() if k != "cluster"}
    doc = {"raw": raw, "prompts": list(prompts)}
    if conversations:
        doc["conversations"] = list(conversations)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# The model options the pinned server accepts: the json tags of api.Options and its embedded
# api.Runner in Ollama v0.11.4 (api/types.go). Options.FromMap logs `invalid option provided`
# for any other key and ignores it (tests/test_options.py checks this list against that warning
# on the real server). Request-level fields (keep_alive, think) are not options: they go at the
# top of the request.
OLLAMA_OPTIONS = frozenset({
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "use_mmap", "num_thread",  # api.Runner: a change reloads
    "num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p", "repeat_last_n",
    "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty", "stop",
})
OLLAMA_OPTIONS_VERSION = "0.11.4"

DEFAULTS = {"endpoint": "generate", "baseline": {}, "warmups": 1, "retries": 1, "uncached_repetitions": 0, "null_client": False,
            "batches": 1, "isolation": "shared"}


def load(path: str | Path) -> Params:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ParamsError(f"{path}: cannot read parameter file: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: must be a mapping of keys, got {type(doc).__name__}")
    problems = schemas.problems("parameters", doc)
    if problems:
        raise ParamsError(f"{path}: " + "; ".join(_friendly(p) for p in problems))
    check_stop(path, doc)
    check_exclude(path, doc)
    check_agent(path, doc)
    check_endpoints(path, doc)  # before the defaults: what the file itself sets
    check_replay(path, doc)
    check_scale(path, doc)
    with_defaults(doc)
    clash = set(doc["matrix"]) & {"num_predict", "seed"}
    if clash:
        raise ParamsError(f"{path}: matrix.{sorted(clash)[0]}: set it under fixed, not in the matrix")
    check_option_names(path, doc)
    cold, n = doc.get("cold_num_predict"), doc["fixed"].get("num_predict")
    if cold is not None and isinstance(n, int) and n > 0 and cold > n:
        raise ParamsError(f"{path}: cold_num_predict: {cold} is above fixed.num_predict ({n}); the cold run's "
                          "cap is for fewer tokens")
    return Params(path=path, raw=doc, prompts=tuple(_prompt(path, i, p) for i, p in enumerate(doc.get("prompts", []))),
                  expanded_tasks=expand_replays(path, doc) if doc.get("workload") == "agent" else None)


ACTIONS = ("structured", "native")
REPLAYS = ("fixed", "regenerated")
# What a replay task takes from its conversations instead: the opening, and the turns (one
# request wherever an assistant message would follow: conversations.requests_of).
NOT_IN_A_REPLAY = ("goal", "system", "tools", "table", "max_turns")


def check_agent(path: Path, doc: dict) -> None:
    """workload: agent (DESIGN.md, "Agent loops"): tasks instead of prompts, on /api/chat,
    `actions` fixed or a matrix factor. ParamsError names the key; nothing has run yet."""
    agent = doc.get("workload") == "agent"
    for factor, levels in (("actions", ACTIONS), ("replay", REPLAYS)):  # the agent workload's factors
        if factor not in doc["matrix"]:
            continue
        if not agent:
            raise ParamsError(f"{path}: matrix.{factor}: a factor of workload: agent only")
        for i, v in enumerate(doc["matrix"][factor]):
            if v not in levels:
                raise ParamsError(f"{path}: matrix.{factor}[{i}]: {v!r} is not one of {', '.join(levels)}")
        if factor == "actions" and "actions" in doc:
            raise ParamsError(f"{path}: actions: set it at the top or vary it in the matrix, not both")
    if not agent:
        return
    if "cold_num_predict" in doc:  # an agent's cold run is a one-turn task whose action must parse
        raise ParamsError(f"{path}: cold_num_predict: not for workload agent (its cold run is a "
                          "one-turn task, whose action needs its tokens)")
    check_replays(path, doc)
    for i, endpoint in enumerate(doc["matrix"].get("endpoint") or [doc.get("endpoint", "chat")]):
        if endpoint not in ("chat", "openai-chat"):
            where = f"matrix.endpoint[{i}]" if "endpoint" in doc["matrix"] else "endpoint"
            raise ParamsError(f"{path}: {where}: workload agent runs on chat or openai-chat (its tasks are "
                              f"conversations), not {endpoint}")
    names = [t["name"] for t in doc["tasks"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ParamsError(f"{path}: tasks[{i}].name: {name!r} names two tasks")
    if doc.get("open_loop"):
        raise ParamsError(f"{path}: open_loop: workload agent runs closed loop only (concurrency: sessions)")
    if doc["fixed"].get("raw"):
        raise ParamsError(f"{path}: fixed.raw: workload agent sends messages on /api/chat, never a raw prompt")


def check_replays(path: Path, doc: dict) -> None:
    """Replay tasks (`conversations: FILE`, `replay: fixed | regenerated`, or matrix.replay):
    a replay takes its opening and turns from its conversations, so it sets none of
    NOT_IN_A_REPLAY; `replay` needs a conversations file; its mode is the task's or the
    matrix's, not both. ParamsError names the key; the files are read by expand_replays."""
    factor = "replay" in doc["matrix"]
    replays = 0
    for i, t in enumerate(doc["tasks"]):
        if "conversations" not in t and "replay" not in t:
            continue
        replays += 1
        if "conversations" not in t:
            raise ParamsError(f"{path}: tasks[{i}].replay: replays recorded conversations: add "
                              f"tasks[{i}].conversations: FILE (ShareGPT JSONL, relative to this file)")
        for key in NOT_IN_A_REPLAY:
            if key in t:
                raise ParamsError(f"{path}: tasks[{i}].{key}: a replay task's opening and turns are its "
                                  f"conversations' (tasks[{i}].conversations); leave out {key}, or make it a "
                                  "task of its own")
        if factor and "replay" in t:
            raise ParamsError(f"{path}: tasks[{i}].replay: set it on the task or vary it in the matrix "
                              "(matrix.replay), not both")
    if factor and not replays:
        raise ParamsError(f"{path}: matrix.replay: no task replays conversations (tasks[].conversations)")


def expand_replays(path: Path, doc: dict) -> tuple[dict, ...]:
    """The tasks of a workload-agent file, each replay task replaced by one task per
    conversation of its file (read with conversations.read_sharegpt, the path relative to the
    parameter file): {"name": "TASK/ID", "run_name": "TASK.N" (N: its place in the file, from 1;
    what run ids use, free of '-' and '/'), "messages": [{"role", "content"}, ...] (the opening),
    "replay": "fixed" | "regenerated" | None (None: matrix.replay decides), "max_turns":
    conversations.requests_of(messages)}. Goal tasks are as written.
    ParamsError names the key and, for a bad line, the file and line (ConversationError's)."""
    out = []
    for i, t in enumerate(doc["tasks"]):
        if "conversations" not in t:
            out.append(t)
            continue
        file = (path.parent / t["conversations"]).resolve()
        where = f"{path}: tasks[{i}].conversations"
        try:
            convs = conversations.read_sharegpt(file)
        except (OSError, UnicodeDecodeError) as e:
            raise ParamsError(f"{where}: cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
        except conversations.ConversationError as e:
            raise ParamsError(f"{where}: {e}") from None
        if not convs:
            raise ParamsError(f"{where}: {file} holds no conversation")
        seen = {}
        for n, c in enumerate(convs, 1):
            if c["id"] in seen:
                raise ParamsError(f"{where}: {file}:{c['line']}: id {c['id']!r} names two conversations "
                                  f"(line {seen[c['id']]} too)")
            seen[c["id"]] = c["line"]
            out.append({"name": f"{t['name']}/{c['id']}", "run_name": f"{t['name']}.{n}",
                        "messages": c["messages"],
                        "replay": None if "replay" in doc["matrix"] else t.get("replay", "fixed"),
                        "max_turns": conversations.requests_of(c["messages"])})
    run_names = [task_run_name(t) for t in out]
    for k, name in enumerate(run_names):
        if name in run_names[:k]:
            raise ParamsError(f"{path}: tasks: {out[k]['name']!r} and {out[run_names.index(name)]['name']!r} would "
                              f"share run ids ({name}.r01, …): rename one of the tasks")
    return tuple(out)


def task_run_name(task: dict) -> str:
    """A task's name in run ids: a replayed conversation's `run_name`, else the task's name."""
    return task.get("run_name", task["name"])


def endpoints(doc: dict) -> list[str]:
    """The endpoints a parameter file runs: matrix.endpoint's levels, else its `endpoint`."""
    return list(doc["matrix"].get("endpoint") or [doc.get("endpoint", "generate")])


def server_kinds(doc: dict) -> list[str]:
    """The server kinds a parameter file runs: server.kind's levels (a factor when several)."""
    kind = doc["server"].get("kind", "ollama")
    return list(kind) if isinstance(kind, list) else [kind]


def check_endpoints(path: Path, doc: dict) -> None:
    """Each endpoint and server kind, and every option, request field and factor the file sets,
    against what that endpoint can carry (DESIGN.md, "Other APIs and servers"): /v1 takes only
    OPENAI_FIELDS' options, and no keep_alive, think, raw or concurrent streams. ParamsError
    names the key and the endpoint; nothing has run yet."""
    matrix, server = doc["matrix"], doc["server"]
    if "endpoint" in matrix:
        for i, v in enumerate(matrix["endpoint"]):
            if v not in ENDPOINTS:
                raise ParamsError(f"{path}: matrix.endpoint[{i}]: {v!r} is not one of {', '.join(ENDPOINTS)}")
        if "endpoint" in doc:
            raise ParamsError(f"{path}: endpoint: set it at the top or vary it in the matrix, not both")
    if "server_kind" in matrix:
        raise ParamsError(f"{path}: matrix.server_kind: list the kinds under server.kind "
                          "(server: {host: embedded, kind: [ollama, llama-cpp]})")
    eps, kinds, api = endpoints(doc), server_kinds(doc), server.get("api", "ollama")
    if "kind" in server and server["host"] != "embedded":
        raise ParamsError(f"{path}: server.kind: starts an embedded server on the embedded GGUF; a server at "
                          f"{server['host']} is as it was started (set server.api for what it speaks)")
    if api == "openai" and server["host"] == "embedded":
        raise ParamsError(f"{path}: server.api: openai is for a server at a URL (host: http://…); an embedded "
                          "server is chosen with server.kind")
    who = "server.api: openai" if api == "openai" else "server.kind: llama-cpp" if "llama-cpp" in kinds else None
    if who:
        for i, ep in enumerate(eps):
            if ep not in OPENAI_ENDPOINTS:
                where = f"matrix.endpoint[{i}]" if "endpoint" in matrix else "endpoint"
                raise ParamsError(f"{path}: {where}: endpoint {ep} is Ollama's {ENDPOINT_PATHS[ep]}, which a "
                                  f"{who} server does not answer: use openai-chat or openai-completions")
    for ep in (e for e in eps if e in OPENAI_ENDPOINTS):
        carried = f"/v1 takes {', '.join(f'{k} (as {v})' if k != v else k for k, v in OPENAI_FIELDS.items())}"
        keys = [("matrix", k) for k in matrix if k not in WORKLOAD_FACTORS + LOAD_FACTORS] + \
               [("baseline", k) for k in doc.get("baseline", {})] + \
               [("fixed", k) for k in doc["fixed"] if k not in ("num_predict", "seed") and
                not (k == "raw" and doc["fixed"][k] is False)]
        for where, key in keys:
            if key not in OPENAI_FIELDS:
                raise ParamsError(f"{path}: {where}.{key}: endpoint {ep} ({ENDPOINT_PATHS[ep]}) cannot carry it; "
                                  f"{carried}. Vary it on chat or generate, or leave it out")


REPLAY_KEYS = ("profile", "time_scale", "load", "faults", "lateness_p99_ms", "seed", "stall_s")


def profile_path(path: Path, doc: dict) -> Path:
    """server.profile as a file: relative to the parameter file, else to the repository."""
    given = Path(doc["server"]["profile"])
    if given.is_absolute():
        return given
    beside = path.parent / given
    return beside if beside.exists() else paths.ROOT / given


def check_replay(path: Path, doc: dict) -> None:
    """server.kind: replay (DESIGN.md, "The replay server"): the one kind of its run, with a
    profile that exists and is one; its keys only with it. ParamsError names the key."""
    server = doc["server"]
    kinds = server_kinds(doc)
    if "replay" not in kinds:
        for key in REPLAY_KEYS:
            if key in server:
                raise ParamsError(f"{path}: server.{key}: only the replay server takes it (server.kind: replay)")
        return
    if kinds != ["replay"]:
        raise ParamsError(f"{path}: server.kind: replay runs alone (a replay is set beside its real server "
                          "in a run of its own, not as a factor)")
    if "profile" not in server:
        raise ParamsError(f"{path}: server.profile: kind replay needs the profile it replays "
                          "(`python -m langbench profile RUN` writes one; parameters/profiles/ ships some)")
    file = profile_path(path, doc)
    try:
        head = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ParamsError(f"{path}: server.profile: cannot read {file}: {e.strerror}") from None
    except ValueError as e:
        raise ParamsError(f"{path}: server.profile: {file} is not JSON: {e}") from None
    if not isinstance(head, dict) or head.get("kind") != vocab.PROFILE_KIND or not head.get("donors"):
        raise ParamsError(f"{path}: server.profile: {file} is not a replay profile with donors "
                          "(`python -m langbench profile RUN` writes one)")


def host_limits() -> dict:
    """What one process here can open: file descriptors (RLIMIT_NOFILE's hard limit: the runner
    raises each agent's and server's soft limit to it) and loopback ports (the ephemeral range)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        ports = hi - lo + 1
    except (OSError, ValueError):
        ports = None
    return {"fds": hard, "ports": ports}


# What a process needs beside its sessions' sockets: stdio, its files, the runtime's own.
SPARE_FDS = 64


def check_scale(path: Path, doc: dict) -> None:
    """`concurrency` above what one agent process here can hold open (a socket each, and one
    for each of the server's side on loopback) is refused before anything runs: ParamsError
    naming the limit and how to raise it (DESIGN.md, "Sessions at scale")."""
    levels = doc.get("concurrency") or []
    if not levels:
        return
    n, limits = max(levels), host_limits()
    if limits["fds"] != -1 and n + SPARE_FDS > limits["fds"]:  # RLIM_INFINITY is -1
        raise ParamsError(f"{path}: concurrency: {n} sessions need about {n + SPARE_FDS} file descriptors in one "
                          f"process, and this host allows {limits['fds']} (RLIMIT_NOFILE, hard): raise it (limits.conf, or "
                          f"`ulimit -Hn {max(4096, 2 * n)}` as root), or lower concurrency")
    if limits["ports"] is not None and n > limits["ports"]:
        raise ParamsError(f"{path}: concurrency: {n} sessions need {n} loopback ports, and this host's ephemeral "
                          f"range has {limits['ports']} (net.ipv4.ip_local_port_range): lower concurrency")


def _matches(entry: dict, agent: str, config: dict) -> bool:
    """Whether an `exclude` entry names this agent (if it names one) and this config's levels."""
    return all((agent if k == "agent" else config.get(k)) == v for k, v in entry.items())


def check_exclude(path: Path, doc: dict) -> None:
    """`exclude:` names only the file's agents and factors, each at a level the file runs, and
    no entry leaves an agent with nothing to run (ParamsError names the entry and key)."""
    levels = {"agent": list(doc.get("agents") or ()), **{k: list(v) for k, v in (doc.get("matrix") or {}).items()}}
    if doc.get("concurrency"):
        levels["concurrency"] = list(doc["concurrency"])
    for i, entry in enumerate(doc.get("exclude") or ()):
        for k, v in entry.items():
            if k not in levels:
                raise ParamsError(f"{path}: exclude[{i}].{k}: not an agent or factor of this file "
                                  f"(it has: {', '.join(levels)})")
            if v not in levels[k]:
                raise ParamsError(f"{path}: exclude[{i}].{k}: {v!r} is not a level this file runs "
                                  f"({', '.join(map(str, levels[k]))})")
    for agent in levels["agent"]:
        keys = [k for k in levels if k != "agent"]
        cells = [dict(zip(keys, combo)) for combo in itertools.product(*(levels[k] for k in keys))]
        if cells and all(any(_matches(e, agent, cell) for e in doc.get("exclude") or ()) for cell in cells):
            raise ParamsError(f"{path}: exclude: leaves agent {agent} no cell to run; "
                              "take it out of `agents` instead")


def check_stop(path: Path, doc: dict) -> None:
    """`stop:` beyond what the schema says: a sequential design needs max_batches, at least
    min_batches, and `batches` (when set) equal to it; a fixed one takes neither. ParamsError
    names the key."""
    stop = doc.get("stop")
    if not stop:
        return
    if stop["rule"] in ("fixed", "knee"):
        extra = sorted(set(stop) & {"min_batches", "max_batches"})
        if extra:
            raise ParamsError(f"{path}: stop.{extra[0]}: only a sequential rule takes it "
                              f"(stop: {{rule: sequential, min_batches: 2, max_batches: N}}); the {stop['rule']} "
                              "rule runs the rounds of `batches`")
        if stop["rule"] == "knee" and len(set(doc.get("concurrency") or ())) < 2:
            raise ParamsError(f"{path}: stop.rule: knee climbs a load ladder: give `concurrency` two levels "
                              "or more (e.g. [1, 8, 64])")
        return
    if "max_batches" not in stop:
        raise ParamsError(f"{path}: stop.max_batches: a sequential rule needs its last round "
                          "(stop: {rule: sequential, min_batches: 2, max_batches: N})")
    lo, hi = stop.get("min_batches", 2), stop["max_batches"]
    if lo > hi:
        raise ParamsError(f"{path}: stop.min_batches: {lo} is more than stop.max_batches ({hi})")
    if "batches" in doc and doc["batches"] != hi:
        raise ParamsError(f"{path}: batches: {doc['batches']} differs from stop.max_batches ({hi}): a "
                          "sequential sweep plans max_batches rounds; leave batches out or set it equal")


def with_defaults(doc: dict) -> dict:
    """Fill this version's defaults into a schema-valid document, in place; returns it."""
    stop = doc.setdefault("stop", {"rule": "fixed"})
    if stop.get("rule") == "sequential":
        stop.setdefault("min_batches", 2)
        doc.setdefault("batches", stop["max_batches"])
    if doc.get("workload") == "agent":
        doc.setdefault("endpoint", "chat")
        if "actions" not in doc["matrix"]:
            doc.setdefault("actions", "structured")
    for key, value in DEFAULTS.items():
        doc.setdefault(key, copy.deepcopy(value))
    doc["margins"] = {**MARGINS, **doc.get("margins", {})}
    doc["fixed"].setdefault("keep_alive", -1)
    doc["fixed"].setdefault("raw", False)
    doc.setdefault("order", {}).setdefault("seed", 0)
    doc["order"].setdefault("shuffle", True)
    doc.setdefault("timeouts", {}).setdefault("run_s", 600)
    doc["timeouts"].setdefault("batch_s", 3600)
    return doc


def check_option_names(path: Path, doc: dict) -> None:
    """Every matrix and baseline key is an Ollama model option of the pinned server
    (OLLAMA_OPTIONS) or a request-level field (keep_alive, think; baseline: keep_alive only
    through fixed). ParamsError names the key and the nearest option; nothing has run yet."""
    places = [("matrix", k, True) for k in doc["matrix"] if k not in WORKLOAD_FACTORS] + \
             [("baseline", k, False) for k in doc["baseline"]]
    for where, key, request_ok in places:
        if key in OLLAMA_OPTIONS or (request_ok and key in REQUEST_FIELDS):
            continue
        if key in REQUEST_FIELDS:
            raise ParamsError(f"{path}: {where}.{key}: a request-level field, not an option: set it under "
                              f"fixed, or vary it in the matrix")
        near = difflib.get_close_matches(key, sorted(OLLAMA_OPTIONS | set(REQUEST_FIELDS)), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ParamsError(f"{path}: {where}.{key}: not an Ollama model option of the pinned server "
                          f"v{OLLAMA_OPTIONS_VERSION}{hint}; Ollama would log `invalid option provided` and "
                          f"ignore it. Options: {', '.join(sorted(OLLAMA_OPTIONS))}; request-level: "
                          f"{', '.join(REQUEST_FIELDS)}")


def _prompt(path: Path, i: int, entry: dict) -> str:
    if "text" in entry:
        return entry["text"]
    file = (path.parent / entry["file"]).resolve()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ParamsError(f"{path}: prompts[{i}].file: cannot read {file}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    if not text:
        raise ParamsError(f"{path}: prompts[{i}].file: {file} is empty")
    return text


def _friendly(problem: str) -> str:
    """jsonschema's "a/b/0: msg" → "a.b[0]: msg" (the key as a person writes it)."""
    where, _, msg = problem.partition(": ")
    parts = [f"[{p}]" if p.isdigit() else f".{p}" for p in where.split("/")] if where != "<top>" else []
    key = "".join(parts).lstrip(".") or "<top>"
    msg = msg.replace("Additional properties are not allowed", "unknown key")
    return f"{key}: {msg}"
