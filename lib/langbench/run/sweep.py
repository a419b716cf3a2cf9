"""The sweep runner: plan → agent processes → records, resumable at any point.

    run_dir = run_sweep("parameters/quick.yaml")             # a new run
    run_dir = run_sweep("parameters/quick.yaml", "quick-1")  # resume (or start) that run id

Nothing lost, nothing twice. Each agent appends its records (flushed per run) to its own raw
file under jobs/; the runner merges them into records.jsonl keyed by (run_id, attempt), at the
end of each batch and again at the start of a resume, so a runner killed at any point loses no
record that an agent wrote and duplicates none. A run is finished when it has an `ok` record
or has failed 1 + retries times; only unfinished runs are run again. What a batch attempt is and
how its records are merged lives in batches.py, shared with the Dask runner (cluster.py).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm  # not tqdm.auto: it warns in a kernel without ipywidgets

from langbench import paths, storage, vocab
from langbench.run import agents, batches, eta, isolation, plan, provenance, replay, rounds, server, telemetry
from langbench.run.batches import Keeper, Offload, clamp_note, first_provenance, provenance_differences
from langbench.run.batches import now as _now
from langbench.run.params import Params, ParamsError, load


def new_run_id(params: Params) -> str:
    return f"{params.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


class Sweep(batches.Book):
    """The single-server loop: each batch's attempts, one after another, on one server."""

    def __init__(self, params: Params, run_dir: Path, clamp: bool = False):
        super().__init__(params, run_dir, clamp)
        self.sampler: telemetry.Sampler | None = None  # NVML, on a GPU host
        self.offload: Offload | None = None
        self.pace: eta.Pace | None = None  # the bound on the time left, learning as batches end
        self.since = time.monotonic()  # when the last attempt ended (or the first line was printed)
        self.skipped: set[str] = set()  # batches the knee rule skipped: nothing left to run of them

    def bound_left(self) -> float | None:
        """At most how many seconds the runs not yet done take (None: no rate, or no num_predict)."""
        if self.pace is None:
            return None
        return self.pace.bound_s([(b, len(self.state.pending(b, self.params.retries))) for b in self.batches
                                  if b.batch_id not in self.skipped])

    # --- running -------------------------------------------------------------------------
    def run_batch(self, batch: plan.Batch, keeper: Keeper, bar: tqdm) -> None:
        retries = self.params.retries
        while attempt := self.next_attempt(batch):
            todo, runs, options, raw = attempt.todo, attempt.runs, attempt.options, attempt.raw
            host, stats, contention = batches.measure(keeper, self.sampler, batch.agent, batch.batch_id,
                                                      attempt.jobs, raw, self.params.timeouts["batch_s"],
                                                      self.agent_cpus)
            offload = self.offload_after(host, batch.request.get("keep_alive")) if keeper.srv.kind == "ollama" else None
            written = batches.task_ended(storage.read_jsonl(raw, repair=True))
            lost = [agents.failure_record(batch.agent, r.run_id, self.params.model, options,
                                          r.phase != "measured", stats, plan.endpoint_of(self.params, batch.config),
                                          batch.request.get("think"))
                    for r in runs if r.run_id not in written]
            storage.append_jsonl(raw, lost)  # the agent is gone: the raw file is ours now
            new = self.merge(batch, attempt.number, raw)  # records this attempt in self.state
            storage.append_jsonl(self.processes_path, [{
                "batch_id": batch.batch_id, "attempt": attempt.number, "config_id": batch.config_id,
                "mode": batch.mode, "runs": len(runs), **stats.as_dict(), "offload": offload,
                "server_kind": keeper.srv.kind, "server_url": host,
                **contention}])
            self.check_reloads(new)
            ended = time.monotonic()  # every second since the attempt before: the runner's own work too
            if self.pace is not None:
                self.pace.took(batch, len(runs), ended - self.since)
            self.since = ended
            left = len(self.state.pending(batch, retries))
            bar.set_postfix_str("; ".join(filter(None, (batch.batch_id, eta.left_text(self.bound_left())))),
                                refresh=False)
            bar.update(len(todo) - left)
            bad = [r for r in new if r["outcome"] != "ok"]
            if bad:  # one line per batch: the first failure stands for the others
                err = bad[0]["error"]
                tqdm.write(f"sweep: {batch.batch_id} attempt {attempt.number}: {len(bad)}/{len(new)} runs "
                           f"failed ({err['kind']}: {err['message'][:160]})", file=sys.stderr)
            if stats.exit_code not in (0, 1):
                tqdm.write(f"sweep: {batch.agent} agent exited {stats.exit_code}"
                           f"{' (timed out)' if stats.timed_out else ''}: {stats.stderr_tail}",
                           file=sys.stderr)

    @staticmethod
    def kind_of(batch: plan.Batch, keepers: dict) -> str:
        """The server kind a batch runs on: its config's server_kind, else the run's one server."""
        return batch.config.get("server_kind") or next(iter(keepers))

    def offload_after(self, url: str, keep_alive=None) -> dict | None:
        if self.offload is None:
            return None
        try:
            return self.offload.after_batch(url, self.params.model, keep_alive)
        except Exception as e:  # a dead server: the batch's records already say what failed
            return {"error": f"{type(e).__name__}: {e}"[:200]}


def model_of(srv: server.Server, model: str) -> dict:
    """The model's details: Ollama's /api/show; a llama-server serves the embedded GGUF (its
    sha256 is known) or a synthetic one langbench wrote (its sha256 read here); any other
    server, what its /v1/models says of it."""
    if srv.api == "ollama":
        return provenance.model_details(srv.url, model)
    if srv.kind == "llama-cpp":
        from langbench.run import provision
        gguf = server.KINDS["llama-cpp"].gguf(srv.model)
        written = gguf == paths.synthetic_gguf(srv.model or "")
        return {"name": model, "gguf_sha256": provision.sha256_file(gguf) if written else paths.GGUF_SHA256,
                "gguf": str(gguf), "gguf_bytes": gguf.stat().st_size if gguf.exists() else None,
                "quantization_level": "Q4_K_M", "parameter_size": None, "served_by": "llama-server"}
    listed = [m for m in (server.describe(srv.url).get("/v1/models") or {}).get("data", []) if m.get("id") == model]
    return {"name": model, "gguf_sha256": None, "v1_model": listed[0] if listed else None}


def server_facts(srv: server.Server, before: dict | None = None) -> dict:
    """What the manifest keeps of a server: kind, url, version, threads, how it was started, what
    an OpenAI-compatible one says of itself, and the threads an embedded Ollama's runner used."""
    facts = dict(before or {})
    facts.update(kind=srv.kind, url=srv.url, embedded=srv.embedded, command=srv.command)
    if srv.api == "ollama":
        facts.setdefault("version", server.server_version(srv.url))
        if srv.log_path and srv.log_path.exists():
            found = re.findall(r"--threads (\d+)", srv.log_path.read_text(errors="replace"))
            facts["threads"] = int(found[-1]) if found else facts.get("threads")
    else:
        about = server.describe(srv.url) if srv.alive() else {}
        if about:
            facts.update(about=about, version=about.get("version"))
        facts["threads"] = srv.threads
        if srv.kind == "llama-cpp":  # its own version says b0-unknown: the sdist holds no git
            facts["source"] = (f"the llama.cpp vendored in PyPI's {paths.LLAMA_CPP_PACKAGE} "
                               f"{paths.LLAMA_CPP_PACKAGE_VERSION} sdist")
            facts.update(llama_cpp_facts(srv))
    return facts


def llama_cpp_facts(srv: server.Server) -> dict:
    """A llama-server's build (what its built.json says: the CMake options, the CUDA architecture
    and the llama.cpp commit where it was built on a GPU host), its parallel slots, and where its
    layers went (its log: the CUDA devices, layers offloaded; no GPU: none)."""
    build = {k: v for k, v in server.KINDS["llama-cpp"].build().items() if k != "cmake_tuning"}
    log = srv.log_path.read_text(errors="replace") if srv.log_path and srv.log_path.exists() else ""
    return {"build": build, "slots": srv.slots, "offload": server.llama_log_facts(log)}


def session_provenance(params: Params, srv: server.Server, model: dict, host: dict) -> dict:
    """What must stay the same across the sessions of one run (DESIGN.md, "Sweep")."""
    version = provenance.ollama_version(srv.url) if srv.api == "ollama" else server.describe(srv.url).get("version")
    return {"ollama_version": version,
            "model_digest": model.get("gguf_sha256"),
            "parameters_digest": params.digest(),
            "host_cpu": host.get("cpu_model"),
            "host_gpus": [g.get("name") for g in host.get("gpus", [])]}


def adopt_defaults(manifest: dict, params: Params) -> None:
    """A run started by an older version whose parameters are these once this version's
    defaults are filled in (Params.same_as_stored) takes this version's digest; the old one is
    kept in "parameters_digest_aliases", so the run resumes as one run, not a mixed one."""
    old = manifest.get("parameters_digest")
    if old and old != params.digest() and params.same_as_stored(manifest.get("parameters"), manifest.get("prompts"),
                                                                 manifest.get("conversations")):
        manifest["parameters_digest_aliases"] = [*manifest.get("parameters_digest_aliases", []), old]
        manifest.update(parameters=params.raw, parameters_digest=params.digest())


def prepare(params_path: str | Path, run_id: str | None = None,
            outputs: Path = paths.OUTPUTS, allow_mixed: bool = False) -> tuple[Params, Path]:
    """Validate everything before anything is written; a bad file raises ParamsError."""
    params = load(params_path)
    for agent in params.agents:
        agents.check(agent)
    run_id = run_id or new_run_id(params)
    if not run_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ParamsError(f"--run-id {run_id!r}: use letters, digits, '-', '_' and '.' only")
    run_dir = Path(outputs) / run_id
    manifest = run_dir / "manifest.json"
    if manifest.exists() and not allow_mixed:
        stored = storage.read_json(manifest)
        if stored.get("parameters_digest") != params.digest() and \
                not params.same_as_stored(stored.get("parameters"), stored.get("prompts"), stored.get("conversations")):
            raise storage.RunDirError(
                f"{params.path}: run {run_id} exists with other parameters ({manifest}): "
                "choose another --run-id, or pass --allow-mixed to resume it with these")
    return params, run_dir


def run_sweep(params_path: str | Path, run_id: str | None = None,
              outputs: Path = paths.OUTPUTS, progress: bool = True,
              allow_mixed: bool = False, cluster: str | None = None, workers: int | None = None,
              decide: rounds.Decide | None = None, decide_knees: rounds.DecideKnees | None = None) -> Path:
    """Run or resume a sweep into outputs/<run_id>; returns the run directory. `cluster`
    (else the parameter file's `cluster:`): `local` or a Dask scheduler address, to run the
    batches on dask.distributed workers (langbench.run.cluster); `workers`: N CPU workers of
    `--cluster local`. `decide(run_dir, round) -> {"stop", "open", "verdicts"}`: the decision
    after each round of a sequential file (`stop: {rule: sequential}`; run/rounds.py), handed in
    by the CLI; `decide_knees(run_dir, n)`: the knees decided below load level n, before each
    level of a knee file (`stop: {rule: knee}`), handed in by the CLI too. Raises ParamsError /
    RunDirError (bad input), ServerError."""
    params, run_dir = prepare(params_path, run_id, outputs, allow_mixed)
    rounds.check(params, decide, decide_knees)
    cluster = cluster or params.raw.get("cluster")
    if cluster and (params.server.get("kind", "ollama") != "ollama" or params.server.get("api", "ollama") != "ollama"):
        raise ParamsError(f"{params.path}: server: a Dask worker owns one Ollama server; server.kind and "
                          "server.api: openai run on the one-server runner (leave out --cluster and cluster:)")
    if cluster and rounds.knee_rule(params):
        raise ParamsError(f"{params.path}: stop.rule: knee climbs the load levels on the one-server runner "
                          "(leave out --cluster and cluster:)")
    if workers is not None and cluster != "local":
        raise ParamsError(f"--workers {workers} starts a local Dask cluster: add --cluster local")
    if workers is not None and workers < 1:
        raise ParamsError(f"--workers {workers}: give at least one worker")
    fresh = not run_dir.exists()
    try:
        with storage.locked(run_dir, "sweep"):
            return _run(params, run_dir, progress, allow_mixed, cluster, workers, decide, decide_knees)
    except (server.ServerError, storage.RunDirError, ParamsError):
        if fresh:  # nothing was measured: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run(params: Params, run_dir: Path, progress: bool, allow_mixed: bool,
         cluster: str | None = None, workers: int | None = None, decide: rounds.Decide | None = None,
         decide_knees: rounds.DecideKnees | None = None) -> Path:
    manifest_path = run_dir / "manifest.json"
    manifest = storage.read_json(manifest_path) if manifest_path.exists() else {
        "schema_version": 1, "run_id": run_dir.name, "parameters_file": str(params.path),
        "parameters": params.raw, "prompts": list(params.prompts),
        **({"conversations": params.conversations()} if params.conversations() else {}),
        "parameters_digest": params.digest(), "started_at": _now(), "sessions": []}
    adopt_defaults(manifest, params)
    sweep = Sweep(params, run_dir)
    sweep.jobs_dir.mkdir(parents=True, exist_ok=True)
    sweep.load_state()
    sweep.skipped = rounds.skipped(manifest)
    total, done = sweep.planned_runs(), sweep.finished_runs() + rounds.skipped_runs(manifest, sweep.batches)
    if rounds.stopped(manifest):  # a sequential run that stopped: every verdict was decided
        pass
    elif done < total and cluster:
        from langbench.run import cluster as dask_cluster
        dask_cluster.run(sweep, manifest, manifest_path, cluster, workers, progress, allow_mixed, decide)
    elif done < total:
        kinds = params.server.get("kind", "ollama")
        if params.server["host"] == "embedded" and "llama-cpp" in (kinds if isinstance(kinds, list) else [kinds]):
            from langbench.run import provision
            try:
                provision.ensure_llama_server()  # a cache hit, or built once on first need
            except RuntimeError as e:  # no cmake or compiler, or the build failed: named, exit 1
                raise server.ServerError(str(e)) from None
        cpus = isolation.plan(params.isolation, server_threads=1 if params.server.get("kind") == "replay" else None)
        slots = plan.slots(params)
        with server.serving(replay.setting(params), params.model, run_dir, env={"OLLAMA_NUM_PARALLEL": slots},
                            cpus=cpus["server_cpus"] if cpus["applied"] else None, slots=slots) as servers:
            srv = servers.get("ollama") or next(iter(servers.values()))  # the one whose /api tells the most
            if cpus["applied"] and not srv.embedded:
                cpus = {**cpus, "applied": False, "reason": "isolation: pinned applies to the embedded "
                        "server only; an external server runs where it was started"}
            sweep.agent_cpus = cpus["agent_cpus"] if cpus["applied"] else None
            model, host = model_of(srv, params.model), provenance.host_info()
            if params.model in vocab.MODEL_NOTES:
                model["note"] = vocab.MODEL_NOTES[params.model]
            now = session_provenance(params, srv, model, host)
            first = first_provenance(manifest)
            diffs = provenance_differences(first, now, manifest.get("parameters_digest_aliases", ())) \
                if first else []
            if diffs and not allow_mixed:
                raise storage.RunDirError(
                    f"{run_dir}: refusing to resume: this session differs from the first one "
                    f"({'; '.join(diffs)}). Resume where the run started, use another --run-id, "
                    "or pass --allow-mixed to keep both (the report then says the run is mixed)")
            if diffs:
                manifest["mixed"] = sorted(set(manifest.get("mixed", [])) | {d.split(":")[0] for d in diffs})
            sweep.clamp = plan.needs_num_batch_clamp(now["ollama_version"])
            session = {"started_at": _now(), "resumed_from_runs": done, "provenance": now,
                       "num_batch_clamp": sweep.clamp}
            manifest["sessions"].append(session)
            manifest.update(
                git=provenance.git_commit(), ollama_version=now["ollama_version"],
                server={"url": srv.url, "embedded": srv.embedded, "host_setting": params.server["host"],
                        "kind": srv.kind, "api": srv.api},
                servers={kind: server_facts(s) for kind, s in servers.items()},
                model=model, host=host, packages=provenance.package_versions(),
                agents={a: agents.command(a) for a in params.agents},
                num_batch_clamp=clamp_note(sweep), isolation=cpus,
                server_slots={"num_parallel": slots, "embedded": srv.embedded,
                              "source": SLOTS_SOURCE.get(srv.kind, "the embedded server's slots") if srv.embedded else
                              "the parameter file (server.num_parallel): an external server, not verified"})
            if srv.kind == "replay":  # a replay run names what it replays, on its first screen too
                manifest["replay"] = replay.manifest_entry(params)
            storage.write_json(run_dir / "plan.json", {"batches": [b.as_dict() for b in sweep.batches]})
            storage.write_json(manifest_path, manifest)
            # What the ETA stands on, before the first batch: the server's decode rate, now
            # (an agent run: its tasks' most turns, and under a grammar where its actions are structured)
            turns, constrained = plan.agent_requests(params)
            rate = (eta.probe(srv.url, params.model, fmt="json" if constrained else None)
                    if srv.api == "ollama" else None)  # it times /api/generate
            left = [(b, len(sweep.state.pending(b, params.retries))) for b in sweep.batches]
            side = srv.kind == "replay"  # its sessions keep their captured timing side by side
            estimate = eta.estimate_s(left, rate, turns or 1, plan.cold_tokens(params), side) if rate else None
            sweep.pace = eta.Pace(rate, turns or 1, plan.cold_tokens(params), side_by_side=side) if rate else None
            bound = sweep.bound_left()
            session["decode_probe"] = {**rate.as_dict(), "eta_s": estimate, "bound_s": bound,
                                       "format": "json" if constrained else None,
                                       "requests_per_run": turns or 1} if rate else None
            sequential = (params.raw.get("stop") or {}).get("rule") == "sequential"
            others = eta.other_servers(srv.process.pid if srv.embedded and srv.process else None)
            if session["decode_probe"] is not None:
                session["decode_probe"]["other_servers"] = others
            if side:  # no first bound to promise (eta.describe): the bar's learns from the batches
                bound = None
                if session["decode_probe"] is not None:
                    session["decode_probe"]["bound_s"] = None
            tqdm.write(eta.describe(rate, bound, total - done, sequential, turns, constrained, others, side),
                       file=sys.stderr)
            sweep.since = first_line = time.monotonic()
            storage.write_json(manifest_path, manifest)
            keepers = {kind: Keeper(s, run_dir) for kind, s in servers.items()}
            keeper = keepers.get("ollama") or next(iter(keepers.values()))
            sweep.offload = Offload(srv.log_path) if srv.api == "ollama" else None
            if srv.log_path and srv.log_path.exists():  # the probe's load is not the first batch's
                sweep.offload.offset = srv.log_path.stat().st_size
            sweep.sampler = telemetry.Sampler.start(run_dir / "telemetry.jsonl")
            if sweep.sampler and "gpu_idle" not in manifest:
                manifest["gpu_idle"] = sweep.sampler.idle_baseline()
            manifest["telemetry"] = ({"hz": telemetry.HZ, "energy_counter": sweep.sampler.has_energy}
                                     if sweep.sampler else None)
            # tqdm's own ETA (the average pace of the runs so far) is no bound: the bar shows the
            # sweep's, which learns the pace of this run's batches (eta.Pace)
            with tqdm(total=total, initial=done, unit="run", desc=f"sweep {run_dir.name}",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True,
                      bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]") as bar:
                try:
                    def wave(todo: list[plan.Batch]) -> None:
                        for batch in todo:
                            bar.set_postfix_str("; ".join(filter(None, (batch.batch_id + rounds.open_note(manifest),
                                                                        eta.left_text(sweep.bound_left())))))
                            sweep.run_batch(batch, keepers[sweep.kind_of(batch, keepers)], bar)
                    def skip(gone: list[plan.Batch]) -> None:  # the knee rule's: counted as done
                        fresh = [b for b in gone if b.batch_id not in sweep.skipped]
                        sweep.skipped |= {b.batch_id for b in gone}
                        bar.update(sum(len(sweep.state.pending(b, params.retries)) for b in fresh))
                    rounds.run(params, run_dir, manifest, manifest_path, sweep.batches, wave, decide,
                               lambda s: tqdm.write(s, file=sys.stderr), decide_knees, skip)
                    if session["decode_probe"] is not None:  # what the first line promised, against what it took
                        session["decode_probe"]["took_s"] = took = time.monotonic() - first_line
                        if bound is not None:
                            tqdm.write(f"sweep: took {took / 60:.1f} min; the first line said at most "
                                       f"{bound / 60:.1f} min", file=sys.stderr)
                    if keeper.srv.kind == "ollama":  # a replay server has no model loaded: nothing to say
                        manifest["loaded_models"] = provenance.loaded_models(keeper.srv.url)
                    if keeper.srv.embedded and keeper.srv.kind == "ollama":
                        manifest["server_slots"]["runner_parallel"] = runner_parallel(keeper.srv.log_path)
                finally:
                    if sweep.sampler:
                        sweep.sampler.close()
                    for k in keepers.values():
                        server.stop(k.srv)  # a restarted server is not the context's
                    for kind, k in keepers.items():
                        manifest["servers"][kind] = server_facts(k.srv, manifest["servers"].get(kind))
                    session["ended_at"] = _now()
                    session["server_restarts"] = keeper.restarts
                    if (exc := sys.exc_info()[1]) is not None:  # the report's first line says why
                        session["stopped_by"] = (f"it was interrupted ({exc})" if isinstance(exc, KeyboardInterrupt)
                                                 else f"{type(exc).__name__}: {exc}"[:300])
                    storage.write_json(manifest_path, manifest)
    finish(sweep, manifest, manifest_path)
    return run_dir


# Where an embedded server's parallel slots come from (plan.slots: the highest concurrency).
SLOTS_SOURCE = {"ollama": "OLLAMA_NUM_PARALLEL of the embedded server",
                "llama-cpp": "--parallel of the embedded llama-server (its context: 4096 tokens a slot)",
                "replay": "not a setting of the replay server (every stream has its own schedule)"}


def runner_parallel(log_path: Path | None) -> int | None:
    """The slots the server's model runner was last started with (`--parallel N` in its log)."""
    if not log_path or not log_path.exists():
        return None
    found = re.findall(r"--parallel (\d+)", log_path.read_text(errors="replace"))
    return int(found[-1]) if found else None


def finish(sweep: Sweep, manifest: dict, manifest_path: Path) -> None:
    manifest.update(
        ended_at=_now(),
        complete=(sweep.finished_runs() + rounds.skipped_runs(manifest, sweep.batches) == sweep.planned_runs()
                  or rounds.stopped(manifest)),
        counts={"planned_runs": sweep.planned_runs(),
                "records": len(sweep.state.keys),
                **batches.failure_counts(storage.read_jsonl(sweep.records_path)),
                "server_restarts": sum(s.get("server_restarts", 0) for s in manifest.get("sessions", [])),
                "unexpected_reloads": len(storage.read_jsonl(sweep.events_path))})
    storage.write_json(manifest_path, manifest)
