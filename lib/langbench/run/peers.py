"""`python -m langbench peers PARAMS [--url URL]`: other benchmark tools beside langbench's own
clients on one server (issue 43, DESIGN.md's STYLE "Cross-tool calibration").

    run_dir = run_peers("parameters/peers.yaml")

One server session (the parameter file's, embedded by default, or `url`); rounds, each running
every tool once in a seeded-random order, one tool at a time, each with the same model, prompt,
options and warm-ups:

- langbench's own clients (null, python, rust) as the sweep runs them: a jobs file per batch,
  the agent process measured from outside (batches.measure: agents.run, the server kept alive);
  their records land in records.jsonl, in the agents' schema, tagged with tool, round and server;
- each peer (PEERS) in a venv of its own, made once from pinned versions in the per-user cache
  keyed by tool, version and pins (like the servers), driven by a small script that calls the
  tool's own benchmark entry (run/peer_drivers/); its raw output is kept under peers/. A peer
  that speaks only OpenAI's API (AIPerf) posts /v1/completions with the file's options as /v1
  fields (v1_fields); num_ctx, which /v1 cannot carry, is the embedded server's default context
  for the run (OLLAMA_CONTEXT_LENGTH), so that its requests use the loaded runner as every other
  tool's do, and /api/ps after its batch records the context it got.

Then, where the file sets `known_delays` and the checkout has tests/scripted.py, every tool
again against the scripted server with a known first-token delay and gaps, in a process of its
own. Both sessions' outputs are parsed into one table, runs.csv: one row per tool, request and
metric, each with its definition (DEFINITIONS: server-side or client-side, streamed or not,
first token or first chunk).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from langbench import paths, storage
from langbench.run import agents, batches, gguf_tokenizer, provenance, provision, server
from langbench.vocab import OPENAI_FIELDS, ParamsError

CLIENTS = ("null", "python", "rust")


def _pins(name: str) -> list[str]:
    """A peer's pins kept as a requirements file in the package (lib/langbench/data/peers/)."""
    text = (paths.PACKAGE / "data" / "peers" / name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


# A peer: the version, the complete pinned set its venv is made from (resolved once with uv
# 0.13.9 on 2026-10 from PyPI; `click` is there because chimeraforge imports it through
# typer's command line while it no longer comes with typer, and chimeraforge does not declare
# it: issue 43), its driver (run/peer_drivers/), the API it speaks (ollama: /api, the file's
# options as they are; openai: /v1/completions, v1_fields) and whether it needs a tokenizer
# (made from the GGUF: run/gguf_tokenizer.py). Why AIPerf is the general load generator, and how
# GuideLLM 0.8 and inference-perf 0.7 failed here: run/peer_drivers/aiperf_profile.py, docs/peers.md.
PEERS = {
    "chimeraforge": {
        "version": "0.76.0",
        "pins": ["chimeraforge==0.76.0", "click==8.5.1", "typer==0.29.2", "rich==15.0.0", "httpx==0.29.0",
                 "httpcore==1.0.9", "h11==0.16.0", "anyio==4.16.0", "idna==3.21",
                 "certifi==2026.10.19.post1", "platformdirs==4.14.9", "pynvml==13.0.1",
                 "nvidia-ml-py==13.615.71", "pydantic==2.14.4", "pydantic-core==2.50.5",
                 "annotated-types==0.8.0", "annotated-doc==0.0.7", "typing-extensions==4.16.0",
                 "typing-inspection==0.4.5", "markdown-it-py==4.3.0", "mdurl==0.1.2", "pygments==2.21.0",
                 "shellingham==1.5.4"],
        "driver": "chimeraforge_bench.py",
        "label": "chimeraforge 0.76.0 bench",
        "api": "ollama",
    },
    "aiperf": {
        "version": "0.13.0",
        "pins": _pins("aiperf-0.13.0.txt"),
        "driver": "aiperf_profile.py",
        "label": "AIPerf 0.13.0 profile",
        "api": "openai",
        "tokenizer": True,
    },
}

LABELS = {"null": "langbench null client", "python": "langbench Python agent", "rust": "langbench Rust agent",
          **{k: v["label"] for k, v in PEERS.items()}}

# What each tool's number means. side: who measured it (the server's own counters, or the
# client's clock); streamed: whether the request streamed; point: which instant ends a TTFT.
DEFINITIONS = {
    "langbench": {
        "throughput_tps": {"side": "server", "streamed": True, "point": "-", "unit": "tok/s",
                           "definition": "eval_count / eval_duration from the done line (the seed's throughput)"},
        "ttft_ms": {"side": "client", "streamed": True, "point": "first chunk carrying a token", "unit": "ms",
                    "definition": "t_first - t0: request written to the first chunk with any token parsed"},
        "itl_ms": {"side": "client", "streamed": True, "point": "-", "unit": "ms",
                   "definition": "median gap between successive chunks carrying tokens, as the client parsed them"},
        "e2e_ms": {"side": "client", "streamed": True, "point": "done line", "unit": "ms",
                   "definition": "t_last - t0: request written to the done line parsed"},
        "server_ttft_ms": {"side": "server", "streamed": True, "point": "first token sampled", "unit": "ms",
                           "definition": "(load_duration + prompt_eval_duration): the server's own time to "
                                         "its first token"},
        "prompt_eval_ms": {"side": "server", "streamed": True, "point": "first token sampled", "unit": "ms",
                           "definition": "prompt_eval_duration"},
        "load_ms": {"side": "server", "streamed": True, "point": "-", "unit": "ms",
                    "definition": "load_duration (queueing and any reload)"},
        "server_total_ms": {"side": "server", "streamed": True, "point": "-", "unit": "ms",
                            "definition": "total_duration"},
        "eval_count": {"side": "server", "streamed": True, "point": "-", "unit": "tokens",
                       "definition": "eval_count"},
        "eval_ms": {"side": "server", "streamed": True, "point": "-", "unit": "ms",
                    "definition": "eval_duration"},
        "decode_tps": {"side": "client", "streamed": True, "point": "-", "unit": "tok/s",
                       "definition": "(eval_count - 1) / decode_ms: the client's decode rate, first chunk with a "
                                     "token to the done line"},
        "itl_mean_ms": {"side": "client", "streamed": True, "point": "-", "unit": "ms",
                        "definition": "decode_ms / (eval_count - 1): the mean gap per token after the first, as "
                                      "the client parsed them"},
    },
    "aiperf": {
        "throughput_tps": {"side": "client", "streamed": True, "point": "-", "unit": "tok/s",
                           "definition": "its output_token_throughput_per_user: 1000 / its ITL, the client's decode "
                                         "rate (/v1 returns no server durations)"},
        "ttft_ms": {"side": "client", "streamed": True, "point": "first SSE event carrying text", "unit": "ms",
                    "definition": "its time_to_first_token: from just before aiohttp sends the request (a new "
                                  "connection's set-up included) to the first parsed SSE event with text"},
        "itl_ms": {"side": "client", "streamed": True, "point": "-", "unit": "ms",
                   "definition": "its inter_token_latency: (request_latency - TTFT) / (output tokens - 1), a "
                                 "mean per request over the server's token count"},
        "e2e_ms": {"side": "client", "streamed": True, "point": "last SSE event carrying text", "unit": "ms",
                   "definition": "its request_latency: request start to the last SSE event with text; the "
                                 "finish, usage and [DONE] events after it are left out"},
        "eval_count": {"side": "server", "streamed": True, "point": "-", "unit": "tokens",
                       "definition": "usage.completion_tokens of the final usage event (the server's eval_count; "
                                     "--use-server-token-count)"},
        "prompt_eval_count": {"side": "server", "streamed": True, "point": "-", "unit": "tokens",
                              "definition": "usage.prompt_tokens (the server's prompt_eval_count)"},
    },
    "chimeraforge": {
        "throughput_tps": {"side": "server", "streamed": False, "point": "-", "unit": "tok/s",
                           "definition": "its throughput_tps: eval_count / eval_duration of a stream:false answer"},
        "ttft_ms": {"side": "server", "streamed": False, "point": "first token sampled, less load", "unit": "ms",
                    "definition": "its ttft_ms: prompt_eval_duration of a stream:false answer (ttft_basis "
                                  "server-prefill-duration); leaves out load_duration and the client's path"},
        "e2e_ms": {"side": "server", "streamed": False, "point": "-", "unit": "ms",
                   "definition": "its total_duration_ms: the server's total_duration, not the client's wait"},
        "prompt_eval_ms": {"side": "server", "streamed": False, "point": "first token sampled", "unit": "ms",
                           "definition": "its prompt_eval_duration_ms"},
        "eval_count": {"side": "server", "streamed": False, "point": "-", "unit": "tokens",
                       "definition": "its tokens_generated (eval_count)"},
        "eval_ms": {"side": "server", "streamed": False, "point": "-", "unit": "ms",
                    "definition": "its eval_duration_ms"},
    },
}
# Metrics a tool does not report: named in the report, never filled in.
NOT_REPORTED = {"chimeraforge": {"itl_ms": "no inter-token time: it never streams",
                                 "server_ttft_ms": "it drops load_duration",
                                 "load_ms": "it drops load_duration"},
                "aiperf": {"server_ttft_ms": "/v1 returns no server durations",
                           "load_ms": "/v1 returns no server durations"}}


def definitions_of(tool: str) -> dict:
    return DEFINITIONS["langbench" if tool in CLIENTS else tool]


# --- the parameter file -----------------------------------------------------------------------
KEYS = {"name", "description", "model", "server", "prompt", "options", "clients", "peers", "rounds", "runs",
        "warmups", "order", "known_delays", "timeouts"}


def load(path: str | Path) -> dict:
    """The peers parameter file, checked: a ParamsError names the file and the key."""
    path = Path(path)
    if not path.exists() and (paths.PARAMETERS / path).exists():
        path = paths.PARAMETERS / path
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ParamsError(f"{path}: cannot read: {e}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ParamsError(f"{path}: expected a mapping of keys")
    if unknown := sorted(set(doc) - KEYS):
        raise ParamsError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    for key in ("model", "server", "prompt", "options"):
        if key not in doc:
            raise ParamsError(f"{path}: {key}: missing")
    doc = {"name": "peers", "clients": list(CLIENTS), "peers": list(PEERS), "rounds": 2, "runs": 5, "warmups": 1,
           "order": {"seed": 43}, "known_delays": None, "timeouts": {"run_s": 120, "batch_s": 900}, **doc}
    if not isinstance(doc["server"], dict) or "host" not in doc["server"]:
        raise ParamsError(f"{path}: server: expected {{host: embedded | auto | URL}}")
    if bad := [c for c in doc["clients"] if c not in CLIENTS]:
        raise ParamsError(f"{path}: clients: unknown {bad} (known: {', '.join(CLIENTS)})")
    if bad := [p for p in doc["peers"] if p not in PEERS]:
        raise ParamsError(f"{path}: peers: unknown {bad} (known: {', '.join(PEERS)})")
    for key in ("rounds", "runs"):
        if not isinstance(doc[key], int) or doc[key] < 1:
            raise ParamsError(f"{path}: {key}: expected an integer >= 1")
    if not isinstance(doc["warmups"], int) or doc["warmups"] < 0:
        raise ParamsError(f"{path}: warmups: expected an integer >= 0")
    if not isinstance(doc["options"], dict) or "num_predict" not in doc["options"]:
        raise ParamsError(f"{path}: options: set num_predict: every tool must stop at the same length "
                          "(chimeraforge sets none, and a base model does not stop)")
    for peer in (p for p in doc["peers"] if PEERS[p]["api"] == "openai"):
        for key in doc["options"]:
            if key not in OPENAI_FIELDS and key != "num_ctx":
                raise ParamsError(f"{path}: options.{key}: {peer} speaks /v1/completions, which cannot carry it "
                                  f"(it takes {', '.join(OPENAI_FIELDS)}; num_ctx becomes the embedded server's "
                                  "default context); leave it out or leave the peer out")
    prompt = doc["prompt"]
    if isinstance(prompt, dict) and "file" in prompt:
        file = path.parent / prompt["file"]
        try:
            doc["prompt_text"] = file.read_text(encoding="utf-8")
        except OSError as e:
            raise ParamsError(f"{path}: prompt.file: {e}") from None
    elif isinstance(prompt, str):
        doc["prompt_text"] = prompt
    else:
        raise ParamsError(f"{path}: prompt: a string or {{file: PATH}}")
    known = doc["known_delays"]
    if known is not None:
        need = {"first_ms", "gap_ms", "tokens", "runs"}
        if not isinstance(known, dict) or set(known) != need:
            raise ParamsError(f"{path}: known_delays: expected exactly {sorted(need)}")
    doc["path"] = str(path)
    return doc


# --- the peers' venvs -----------------------------------------------------------------------------
def uv() -> Path | None:
    """The uv that `make` keeps in the per-user cache (Makefile UV_VERSION), where there is one."""
    found = sorted(paths.cache_dir().glob("uv-*/bin/uv"))
    return found[-1] if found else None


def venv_dir(tool: str) -> Path:
    import hashlib
    spec = PEERS[tool]
    digest = hashlib.sha256("\n".join(spec["pins"]).encode()).hexdigest()[:12]
    return paths.cache_dir() / "peers" / f"{tool}-{spec['version']}" / digest


def ensure_peer(tool: str) -> Path:
    """The peer's python: its venv from the cache, else made there from its pins (uv where the
    cache has it, else venv + pip), once, under a lock (two runs never build it twice)."""
    target = venv_dir(tool)
    python = target / "bin" / "python"
    if (target / ".installed").exists():
        return python
    with storage.building(target.parent / "build.lock", f"the {tool} venv",
                          waiting=lambda holder: print(f"peers: waiting for {holder}", file=sys.stderr)):
        if (target / ".installed").exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        pins = PEERS[tool]["pins"]
        started = time.monotonic()
        tool_uv = uv()
        try:
            if tool_uv:
                subprocess.run([str(tool_uv), "venv", "--quiet", "--python", sys.executable, str(target)], check=True)
                subprocess.run([str(tool_uv), "pip", "install", "--quiet", "--no-deps", "--python", str(python),
                                *pins], check=True)
            else:
                subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
                subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                "--no-deps", *pins], check=True)
            subprocess.run([str(python), "-c", f"import {tool}"], check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            shutil.rmtree(target, ignore_errors=True)
            raise server.ServerError(f"peers: could not make the {tool} venv from its pins ({e})") from None
        (target / ".installed").write_text(json.dumps({"pins": pins, "seconds": round(time.monotonic() - started, 1),
                                                       "uv": str(tool_uv) if tool_uv else None}) + "\n")
        print(f"peers: {tool} venv made in {time.monotonic() - started:.0f} s ({target})", file=sys.stderr)
    return python


# --- a /v1 peer's request ------------------------------------------------------------------------
# Ollama's /v1 sets these where a request leaves them out (openai/openai.go fromCompleteRequest,
# v0.11.4), while /api leaves the model's own: a /v1 peer sends the model's value instead.
V1_DEFAULTED = ("temperature", "top_p")
# Ollama's own defaults where the model sets none (api/types.go DefaultOptions, v0.11.4).
OLLAMA_DEFAULTS = {"temperature": 0.8, "top_p": 0.9}


def model_parameters(url: str, model: str) -> dict:
    """The model's own options (/api/show `parameters`, one `name value` a line), where the
    server says them; {} where it does not (a scripted or OpenAI-only server)."""
    try:
        r = httpx.post(f"{url}/api/show", json={"model": model}, timeout=30)
        text = r.json().get("parameters", "") if r.status_code == 200 else ""
    except (httpx.HTTPError, ValueError):
        return {}
    out = {}
    for line in (text or "").splitlines():
        name, _, value = line.strip().partition(" ")
        try:
            out[name] = json.loads(value.strip())
        except ValueError:
            out[name] = value.strip()
    return out


def v1_fields(options: dict, url: str, model: str) -> dict:
    """The file's options as /v1/completions fields, every tool's effective options kept: each
    option /v1 carries under its /v1 name (max_tokens for num_predict); temperature and top_p,
    where the file leaves them to the model, as the model's (else Ollama's) defaults, since /v1
    would set 1.0; num_ctx has no field (the run sets the server's default context to it)."""
    fields = {OPENAI_FIELDS[k]: v for k, v in options.items() if k in OPENAI_FIELDS}
    own = model_parameters(url, model) if any(k not in options for k in V1_DEFAULTED) else {}
    for key in V1_DEFAULTED:
        if key not in options:
            fields[OPENAI_FIELDS[key]] = own.get(key, OLLAMA_DEFAULTS[key])
    return fields


@functools.cache
def tokenizer() -> Path:
    """The tokenizer directory a peer that needs one is given: the embedded GGUF's vocabulary
    (found once per process: ensure_gguf checks the file's sha256)."""
    return gguf_tokenizer.ensure_tokenizer(provision.ensure_gguf())


# --- running --------------------------------------------------------------------------------------
def _jobs(doc: dict, batch_id: str, runs: int, warmups: int, model: str) -> dict:
    """A langbench jobs file (schemas/jobs.schema.json) for one tool's batch: warm-ups, then runs."""
    return {"schema_version": 1, "model": model, "endpoint": "generate", "prompts": [doc["prompt_text"]],
            "raw": False, "timeout_s": doc["timeouts"]["run_s"],
            "runs": [{"run_id": f"{batch_id}-{'w' if i < warmups else 'm'}{i}", "prompt": 0,
                      "options": dict(doc["options"]), "keep_alive": -1, "warmup": i < warmups}
                     for i in range(warmups + runs)]}


def _run_client(keeper: batches.Keeper, run_dir: Path, tool: str, batch_id: str, jobs: dict,
                tags: dict, timeout: float) -> dict:
    jobs_dir = run_dir / "jobs"
    jobs_dir.mkdir(exist_ok=True)
    jobs_path, raw = jobs_dir / f"{batch_id}.json", jobs_dir / f"{batch_id}.records.jsonl"
    storage.write_json(jobs_path, jobs)
    host, stats, contention = batches.measure(keeper, None, tool, batch_id, jobs_path, raw, timeout)
    recs = storage.read_jsonl(raw, repair=True)
    written = {r["run_id"] for r in recs}
    lost = [agents.failure_record(tool, r["run_id"], jobs["model"], r["options"], r["warmup"], stats)
            for r in jobs["runs"] if r["run_id"] not in written]
    storage.append_jsonl(run_dir / "records.jsonl", [{**r, **tags} for r in recs + lost])
    return {**tags, "runs_requested": len(jobs["runs"]), "records": len(recs), "exit_code": stats.exit_code,
            "wall_s": stats.wall_s, "user_cpu_s": stats.user_cpu_s, "system_cpu_s": stats.system_cpu_s,
            "peak_rss_bytes": stats.peak_rss_bytes, "startup_ms": stats.startup_ms, "timed_out": stats.timed_out,
            "stderr_tail": stats.stderr_tail, **contention}


def _run_peer(url: str, run_dir: Path, tool: str, batch_id: str, doc: dict, runs: int, warmups: int,
              model: str, tags: dict, timeout: float) -> dict:
    python = ensure_peer(tool)
    peers_dir = run_dir / "peers"
    peers_dir.mkdir(exist_ok=True)
    prompt_file = peers_dir / "prompt.txt"
    prompt_file.write_text(doc["prompt_text"], encoding="utf-8")
    out, err = peers_dir / f"{batch_id}.json", peers_dir / f"{batch_id}.stderr"
    spec = PEERS[tool]
    options, extra = doc["options"], []
    if spec["api"] == "openai":
        options = v1_fields(doc["options"], url, model)
        extra += ["--timeout-s", str(doc["timeouts"]["run_s"])]
    if spec.get("tokenizer"):
        extra += ["--tokenizer", str(tokenizer())]
    cmd = [str(python), str(Path(__file__).parent / "peer_drivers" / spec["driver"]), "--url", url,
           "--model", model, "--prompt-file", str(prompt_file), "--options", json.dumps(options),
           "--runs", str(runs), "--warmups", str(warmups), "--out", str(out), *extra]
    started = time.perf_counter()
    with open(err, "wb") as e:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=e, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, PYTHONWARNINGS="ignore"))
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    del timeout  # the tool's own per-request timeout (httpx, 300 s) bounds it
    wall = time.perf_counter() - started
    raw = storage.read_json(out) if out.exists() else {}
    raw.update(tags=tags, command=cmd[1:], exit_code=code, runs_requested={"warmup": warmups, "measured": runs})
    context = None
    if spec["api"] == "openai":  # the context its requests got, where the server says (Ollama's /api/ps)
        try:
            context = next((m["context_length"] for m in provenance.loaded_models(url)
                            if m["name"] in (model, f"{model}:latest")), None)
        except (httpx.HTTPError, ValueError):  # a server without /api/ps (scripted, OpenAI-only): not known
            context = None
        raw["server_context_length"] = context
    storage.write_json(out, raw)
    return {**tags, "runs_requested": runs + warmups, "records": None, "exit_code": code, "wall_s": wall,
            "server_context_length": context,
            "user_cpu_s": usage.ru_utime, "system_cpu_s": usage.ru_stime, "peak_rss_bytes": None,
            "startup_ms": None, "timed_out": False,
            "stderr_tail": "\n".join(err.read_text(errors="replace").splitlines()[-5:])}


def _session(url: str, keeper: batches.Keeper | None, run_dir: Path, doc: dict, role: str, rounds: int,
             runs: int, warmups: int, model: str, rng: random.Random) -> None:
    tools = [*doc["clients"], *doc["peers"]]
    for r in range(rounds):
        order = tools[:]
        rng.shuffle(order)
        for position, tool in enumerate(order):
            batch_id = f"{role}-r{r}-{tool}"
            tags = {"tool": tool, "round": r, "position": position, "server_role": role, "batch_id": batch_id}
            print(f"peers: {batch_id} ({warmups} warm-up + {runs} runs)", file=sys.stderr, flush=True)
            if tool in CLIENTS:
                keeper = keeper or batches.Keeper(server.Server(url=url, embedded=False), run_dir)
                row = _run_client(keeper, run_dir, tool, batch_id, _jobs(doc, batch_id, runs, warmups, model),
                                  tags, doc["timeouts"]["batch_s"])
            else:
                row = _run_peer(url, run_dir, tool, batch_id, doc, runs, warmups, model, tags,
                                doc["timeouts"]["batch_s"])
            storage.append_jsonl(run_dir / "processes.jsonl", [row])


SCRIPTED = paths.ROOT / "tests" / "scripted.py"


def _scripted(known: dict, log: Path) -> tuple[subprocess.Popen, str]:
    """tests/scripted.py's ScriptedServer in a process of its own; its URL."""
    proc = subprocess.Popen([sys.executable, str(SCRIPTED), "--serve", str(known["first_ms"]), str(known["gap_ms"]),
                             str(known["tokens"])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=open(log, "wb"), text=True)
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise server.ServerError(f"the scripted server did not start (log {log})")
    return proc, url


def run_peers(params_path: str | Path, url: str | None = None, run_id: str | None = None,
              outputs: Path | None = None) -> Path:
    """Run the peers of `params_path` into outputs/<run_id>; returns the run directory."""
    doc = load(params_path)
    setting = dict(doc["server"], **({"host": url} if url else {}))
    run_id = run_id or f"{doc['name']}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(outputs or paths.OUTPUTS) / run_id
    if (run_dir / "manifest.json").exists():
        raise storage.RunDirError(f"{run_dir}: exists: a peers run does not resume; choose another --run-id")
    for tool in doc["clients"]:
        agents.check(tool)
    for tool in doc["peers"]:  # before any server starts: a venv (or tokenizer) that cannot be made stops here
        ensure_peer(tool)
        if PEERS[tool].get("tokenizer"):
            tokenizer()
    # A /v1 peer cannot send num_ctx: the embedded server's default context is set to it, so that
    # its requests get the runner every other tool's requests (num_ctx sent) get, with no reload.
    env = ({"OLLAMA_CONTEXT_LENGTH": str(doc["options"]["num_ctx"])}
           if "num_ctx" in doc["options"] and any(PEERS[t]["api"] == "openai" for t in doc["peers"]) else None)
    rng = random.Random(doc["order"]["seed"])
    manifest = {"schema_version": 1, "kind": "peers", "run_id": run_id, "parameters_file": doc["path"],
                "parameters": {k: v for k, v in doc.items() if k not in ("path",)},
                "started_at": batches.now(), "labels": {t: LABELS[t] for t in [*doc["clients"], *doc["peers"]]},
                "peers": {t: {"version": PEERS[t]["version"], "pins": PEERS[t]["pins"], "venv": str(venv_dir(t)),
                              "api": PEERS[t]["api"],
                              **({"tokenizer": str(tokenizer())} if PEERS[t].get("tokenizer") else {})}
                          for t in doc["peers"]},
                "definitions": {t: definitions_of(t) for t in [*doc["clients"], *doc["peers"]]},
                "not_reported": NOT_REPORTED, "server_env": env,
                "git": provenance.git_commit(), "host": provenance.host_info(),
                "agents": {a: agents.command(a) for a in doc["clients"]}}
    with storage.locked(run_dir, "peers"):
        storage.write_json(run_dir / "manifest.json", manifest)
        with server.serving(setting, doc["model"], run_dir, env=env) as servers:
            srv = servers.get("ollama") or next(iter(servers.values()))
            manifest["server"] = {"url": srv.url, "embedded": srv.embedded, "kind": srv.kind,
                                  "version": server.server_version(srv.url), "host_setting": setting["host"]}
            manifest["model"] = provenance.model_details(srv.url, doc["model"])
            storage.write_json(run_dir / "manifest.json", manifest)
            _session(srv.url, batches.Keeper(srv, run_dir), run_dir, doc, "server", doc["rounds"], doc["runs"],
                     doc["warmups"], doc["model"], rng)
        known = doc["known_delays"]
        if known and SCRIPTED.exists():
            proc, scripted_url = _scripted(known, run_dir / "scripted.log")
            try:
                _session(scripted_url, None, run_dir, doc | {"options": {**doc["options"],
                                                                          "num_predict": known["tokens"]}},
                         "known", 1, known["runs"], doc["warmups"], "scripted", rng)
            finally:
                proc.stdin.close()
                proc.kill()
                proc.wait()
            manifest["known_delays"] = {**known, "url": scripted_url, "server": "tests/scripted.py ScriptedServer"}
        elif known:
            manifest["known_delays"] = {**known, "skipped": f"{SCRIPTED} is not in this checkout"}
        manifest["ended_at"] = batches.now()
        storage.write_json(run_dir / "manifest.json", manifest)
        write_table(run_dir)
    return run_dir


# --- one table --------------------------------------------------------------------------------------
def _client_rows(rec: dict) -> dict:
    ns = lambda k: rec.get(k) / 1e6 if rec.get(k) is not None else None
    tput = (rec["eval_count"] / (rec["eval_duration"] / 1e9)
            if rec.get("eval_count") and rec.get("eval_duration") else None)
    load, prompt = ns("load_duration"), ns("prompt_eval_duration")
    n, decode = rec.get("eval_count"), rec.get("decode_ms")
    after_first = n - 1 if n and n > 1 and decode else None
    return {"throughput_tps": tput, "ttft_ms": rec.get("ttft_ms"), "itl_ms": (rec.get("itl_ms") or {}).get("p50"),
            "e2e_ms": rec.get("e2e_ms"),
            "decode_tps": 1e3 * after_first / decode if after_first else None,
            "itl_mean_ms": decode / after_first if after_first else None,
            "server_ttft_ms": (load or 0) + prompt if prompt is not None else None,
            "prompt_eval_ms": prompt, "load_ms": load, "server_total_ms": ns("total_duration"),
            "eval_count": rec.get("eval_count"), "eval_ms": ns("eval_duration")}


def _chimeraforge_runs(raw: dict) -> list[tuple[bool, str, dict]]:
    """(warm-up?, outcome, metrics) per run of a chimeraforge output: its individual runs, and
    one `error` per run its warnings say failed (it keeps no record of a failed run)."""
    out = []
    for call in raw.get("calls", []):
        warm = call["phase"] == "warmup"
        result = call.get("result") or {}
        for run in result.get("individual_runs", []):
            out.append((warm, "ok", {"throughput_tps": run.get("throughput_tps"), "ttft_ms": run.get("ttft_ms"),
                                     "e2e_ms": run.get("total_duration_ms"),
                                     "prompt_eval_ms": run.get("prompt_eval_duration_ms"),
                                     "eval_count": run.get("tokens_generated"),
                                     "eval_ms": run.get("eval_duration_ms")}))
        failed = call["requested"] - len(result.get("individual_runs", []))
        why = "; ".join(result.get("warnings", [])[:1]) or call.get("error") or ""
        out += [(warm, "error", {"error": why})] * failed
    return out


def _ms(record: dict, tag: str) -> float | None:
    """An AIPerf metric in ms, whatever display unit its export used."""
    value = record["metrics"].get(tag)
    scale = {"ms": 1.0, "ns": 1e-6, "us": 1e-3, "s": 1e3}.get(record.get("units", {}).get(tag) or "ms")
    return value * scale if isinstance(value, (int, float)) and scale else None


def _aiperf_runs(raw: dict) -> list[tuple[bool, str, dict]]:
    """(warm-up?, outcome, metrics) per request of an AIPerf output (profile_export.jsonl, as
    its driver keeps it): its own numbers, each under the name its definition gives it."""
    out = []
    for rec in raw.get("records", []):
        warm = rec.get("phase") == "warmup"
        if rec.get("error") or rec.get("was_cancelled"):
            err = rec.get("error") or {}
            why = (f"{err.get('type') or err.get('code')}: {err.get('message')}" if isinstance(err, dict)
                   else str(err)) if err else "cancelled"
            out.append((warm, "error", {"error": why[:300]}))
            continue
        m = rec["metrics"]
        out.append((warm, "ok", {"throughput_tps": m.get("output_token_throughput_per_user"),
                                 "ttft_ms": _ms(rec, "time_to_first_token"),
                                 "itl_ms": _ms(rec, "inter_token_latency"), "e2e_ms": _ms(rec, "request_latency"),
                                 "eval_count": m.get("usage_completion_tokens"),
                                 "prompt_eval_count": m.get("usage_prompt_tokens")}))
    return out


PARSERS = {"chimeraforge": _chimeraforge_runs, "aiperf": _aiperf_runs}


def _peer_runs(raw: dict) -> list[tuple[bool, str, dict]]:
    """(warm-up?, outcome, metrics) per run of a peer's output, by its parser; a run the tool
    left no trace of (it crashed, or never started) is an `error`, never a silent loss."""
    out = PARSERS[raw["tags"]["tool"]](raw)
    asked = raw.get("runs_requested")
    if asked:
        why = (raw.get("error") or f"no result (exit code {raw.get('exit_code')}; see peers/"
               f"{raw['tags']['batch_id']}.stderr)")[-300:]
        for warm, key in ((True, "warmup"), (False, "measured")):
            short = asked[key] - sum(1 for w, _, _ in out if w == warm)
            out += [(warm, "error", {"error": why})] * max(short, 0)
    return out


def write_table(run_dir: Path) -> Path:
    """runs.csv: one row per (server, tool, request, metric), with the metric's definition."""
    import csv
    manifest = storage.read_json(run_dir / "manifest.json")
    defs = manifest["definitions"]
    rows = []

    def add(tags: dict, run: int, warm: bool, outcome: str, metrics: dict, error: str | None = None) -> None:
        tool = tags["tool"]
        for metric, spec in defs[tool].items():
            rows.append({"server_role": tags["server_role"], "tool": tool, "round": tags["round"],
                         "position": tags["position"], "run": run, "warmup": warm, "outcome": outcome,
                         "metric": metric, "value": metrics.get(metric), "unit": spec["unit"], "side": spec["side"],
                         "streamed": spec["streamed"], "point": spec["point"], "definition": spec["definition"],
                         "error": error})

    records = storage.read_jsonl(run_dir / "records.jsonl") if (run_dir / "records.jsonl").exists() else []
    by_batch: dict[str, list] = {}
    for rec in records:
        by_batch.setdefault(rec["batch_id"], []).append(rec)
    for recs in by_batch.values():
        for i, rec in enumerate(recs):
            err = rec.get("error")
            add(rec, i, rec["warmup"], rec["outcome"], _client_rows(rec),
                f"{err['kind']}: {err['message'][:200]}" if err else None)
    for path in sorted((run_dir / "peers").glob("*.json")) if (run_dir / "peers").exists() else []:
        raw = storage.read_json(path)
        for i, (warm, outcome, metrics) in enumerate(_peer_runs(raw)):
            add(raw["tags"], i, warm, outcome, metrics, metrics.get("error"))
    target = run_dir / "runs.csv"
    fields = ["server_role", "tool", "round", "position", "run", "warmup", "outcome", "metric", "value", "unit",
              "side", "streamed", "point", "definition", "error"]
    with open(target, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return target
