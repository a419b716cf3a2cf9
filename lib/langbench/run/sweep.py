"""The sweep runner: plan → agent processes → records, resumable at any point.

    run_dir = run_sweep("parameters/quick.yaml")             # a new run
    run_dir = run_sweep("parameters/quick.yaml", "quick-1")  # resume (or start) that run id

Nothing lost, nothing twice. Each agent appends its records (flushed per run) to its own raw
file under jobs/; the runner merges them into records.jsonl keyed by (run_id, attempt), at the
end of each batch and again at the start of a resume, so a runner killed at any point loses no
record that an agent wrote and duplicates none. A run is finished when it has an `ok` record
or has failed 1 + retries times; only unfinished runs are run again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from tqdm import tqdm  # not tqdm.auto: it warns in a kernel without ipywidgets

from langbench import paths, storage, vocab
from langbench.analysis import metrics, summary
from langbench.run import agents, isolation, plan, provenance, server, telemetry
from langbench.run.params import Params, ParamsError, load


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def new_run_id(params: Params) -> str:
    return f"{params.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def resume_run_id(batch: plan.Batch, attempt: int) -> str:
    """The run the runner adds when it resumes mid-batch (it pays the reload; not measured)."""
    return f"{batch.batch_id}-resume{attempt}"


@dataclass
class RunState:
    """What records.jsonl says about each planned run."""
    ok: set[str] = field(default_factory=set)
    failures: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)  # batch_id → last attempt number
    keys: set[tuple[str, int]] = field(default_factory=set)  # (run_id, attempt) merged

    def add(self, rec: dict) -> None:
        self.keys.add((rec["run_id"], rec["attempt"]))
        self.attempts[rec["batch_id"]] = max(self.attempts.get(rec["batch_id"], 0), rec["attempt"])
        if rec["phase"] == "resume":
            return
        if rec["outcome"] == "ok":
            self.ok.add(rec["run_id"])
        else:
            self.failures[rec["run_id"]] = self.failures.get(rec["run_id"], 0) + 1

    def pending(self, batch: plan.Batch, retries: int) -> list[plan.Run]:
        return [r for r in batch.runs
                if r.run_id not in self.ok and self.failures.get(r.run_id, 0) <= retries]


class Keeper:
    """Keeps a server answering: an embedded one that died is restarted (and counted)."""

    def __init__(self, srv: server.Server, run_dir: Path):
        self.srv, self.run_dir, self.restarts = srv, run_dir, 0

    def ensure(self) -> str:
        alive = server.server_version(self.srv.url) is not None
        if alive or not self.srv.embedded:
            return self.srv.url
        tail = self.srv.log_tail(5)
        server.stop(self.srv)
        self.srv = server.start_embedded(log_path=self.run_dir / "ollama.log", env=self.srv.env,
                                         cpus=self.srv.cpus)
        self.restarts += 1
        tqdm.write(f"sweep: the embedded Ollama had died; restarted at {self.srv.url}\n{tail}",
                   file=sys.stderr)
        return self.srv.url


class Offload:
    """What the server actually did in a batch, for the check that each factor was applied
    (langbench.analysis.verify): layers on GPU (from its log, where the runner has it), options it
    rejected (`invalid option provided` lines of the batch's part of the log), and from
    /api/ps after the batch: whether the model is still loaded, its size / size_vram, context
    length and expiry (keep_alive 0 unloads it: waited for up to a second)."""

    PATTERN = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
    INVALID = re.compile(r'invalid option provided"?\s+option=("?)([^"\s]+)\1')

    def __init__(self, log_path: Path | None):
        self.log_path, self.offset, self.layers = log_path, 0, (None, None)

    def after_batch(self, url: str, model: str, keep_alive=None) -> dict:
        invalid: list[str] = []
        if self.log_path and self.log_path.exists():
            with open(self.log_path, "rb") as f:
                f.seek(self.offset)
                text = f.read().decode(errors="replace")
                self.offset = f.tell()
            found = self.PATTERN.findall(text)
            if found:  # a reload in this batch; else the model stayed as it was
                self.layers = tuple(int(x) for x in found[-1])
            invalid = sorted({m[1] for m in self.INVALID.findall(text)})
        names = (model, f"{model}:latest")
        deadline = time.monotonic() + (1.0 if keep_alive in (0, "0", "0s", "0m") else 0.0)
        while True:
            loaded = [m for m in provenance.loaded_models(url) if m["name"] in names]
            if not loaded or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        m = loaded[0] if loaded else {}
        return {"layers_gpu": self.layers[0], "layers_total": self.layers[1],
                "size": m.get("size"), "size_vram": m.get("size_vram"), "loaded": bool(loaded),
                "context_length": m.get("context_length"), "expires_at": m.get("expires_at"),
                "invalid_options": invalid}


class Contention:
    """What else used the CPUs during a batch: the host's load and the embedded server's own
    CPU time (it and its runners), so a report can say whether server and agent competed."""

    def __init__(self, srv: server.Server):
        self.proc = psutil.Process(srv.process.pid) if srv.embedded and srv.process else None
        self.load0, self.cpu0 = os.getloadavg()[0], self._server_cpu()

    def _server_cpu(self) -> float | None:
        if self.proc is None:
            return None
        try:  # its own time, its reaped runners' (a reload replaces the runner), the live ones'
            own = self.proc.cpu_times()
            live = sum(sum(c.cpu_times()[:2]) for c in self.proc.children(recursive=True))
            return own.user + own.system + own.children_user + own.children_system + live
        except psutil.Error:
            return None

    def after(self) -> dict:
        cpu1 = self._server_cpu()
        return {"host_load_1m": (self.load0 + os.getloadavg()[0]) / 2, "host_cpus": os.cpu_count(),
                "server_cpu_s": cpu1 - self.cpu0 if cpu1 is not None and self.cpu0 is not None else None}


class Sweep:
    def __init__(self, params: Params, run_dir: Path, clamp: bool = False):
        self.params, self.run_dir = params, run_dir
        self.clamp = clamp  # send num_batch ≤ num_ctx (a server older than 0.12.0)
        self.sampler: telemetry.Sampler | None = None  # NVML, on a GPU host
        self.offload: Offload | None = None
        self.batches = plan.build(params)
        self.records_path = run_dir / "records.jsonl"
        self.processes_path = run_dir / "processes.jsonl"
        self.events_path = run_dir / "events.jsonl"
        self.jobs_dir = run_dir / "jobs"
        self.state = RunState()
        self.warm_loads: list[float] = []

    # --- records -------------------------------------------------------------------------
    def load_state(self) -> None:
        for rec in storage.read_jsonl(self.records_path, repair=True):
            self.state.add(rec)
        by_id = {b.batch_id: b for b in self.batches}
        for raw in sorted(self.jobs_dir.glob("*.records.jsonl")):
            batch_id, attempt = raw.name.removesuffix(".records.jsonl").rsplit("-a", 1)
            if batch_id not in by_id:
                raise storage.RunDirError(
                    f"{raw}: batch {batch_id} is not in this run's plan; the run was made with "
                    "other parameters: render it as it is, or sweep into another --run-id")
            self.merge(by_id[batch_id], int(attempt), raw)

    def merge(self, batch: plan.Batch, attempt: int, raw: Path) -> list[dict]:
        """Append the raw file's records not yet in records.jsonl, with the plan's fields."""
        phases = {r.run_id: r.phase for r in batch.runs}
        phases[resume_run_id(batch, attempt)] = "resume"
        caches = {r.run_id: r.cache for r in batch.runs}
        clamped = plan.clamp_num_batch(batch.options)[1]
        new = []
        for number, rec in enumerate(storage.read_jsonl(raw), 1):
            if rec.get("run_id") not in phases:  # not planned: never guess what it was
                raise storage.RunDirError(
                    f"{raw}:{number}: run id {rec.get('run_id')!r} is not in this run's plan "
                    f"for batch {batch.batch_id} attempt {attempt}; the file was written by "
                    "something else: move it out of jobs/ and rerun")
            if (rec["run_id"], attempt) in self.state.keys:
                continue
            sent_batch = (rec.get("options") or {}).get("num_batch")
            rec.update(batch_id=batch.batch_id, order=batch.order, config_id=batch.config_id,
                       config=batch.config, mode=batch.mode, attempt=attempt,
                       phase=phases[rec["run_id"]], reload_expected=batch.reload_expected,
                       prompt_cache=caches.get(rec["run_id"], "cached"),
                       keep_alive=batch.request.get("keep_alive", self.params.fixed["keep_alive"]),
                       num_batch_clamp=clamped if clamped and sent_batch == clamped["num_batch_to"]
                       and batch.options.get("num_batch") != sent_batch else None)
            new.append(rec)
        storage.append_jsonl(self.records_path, new)
        for rec in new:
            self.state.add(rec)
        return new

    # --- running -------------------------------------------------------------------------
    def run_batch(self, batch: plan.Batch, keeper: Keeper, bar: tqdm) -> None:
        retries = self.params.retries
        while todo := self.state.pending(batch, retries):
            attempt = self.state.attempts.get(batch.batch_id, 0) + 1
            runs = list(todo)
            if todo[0].phase != "cold":  # resuming mid-batch: pay the reload before measuring
                runs.insert(0, plan.Run(resume_run_id(batch, attempt), "resume", 0, 0))
            stem = f"{batch.batch_id}-a{attempt}"
            jobs = self.jobs_dir / f"{stem}.json"
            options = plan.clamp_num_batch(batch.options)[0] if self.clamp else batch.options
            storage.write_json(jobs, plan.jobs_document(self.params, batch, runs, options))
            raw = self.jobs_dir / f"{stem}.records.jsonl"
            host = keeper.ensure()
            load = Contention(keeper.srv)
            with self.sampler.batch(batch.batch_id) if self.sampler else contextlib.nullcontext():
                stats = agents.run(batch.agent, host, jobs, raw, timeout=self.params.timeouts["batch_s"],
                                   cpus=self.agent_cpus)
            contention = load.after()
            offload = self.offload_after(host, batch.request.get("keep_alive"))
            written = {r["run_id"] for r in storage.read_jsonl(raw, repair=True)}
            lost = [agents.failure_record(batch.agent, r.run_id, self.params.model, options,
                                          r.phase != "measured", stats, self.params.endpoint,
                                          batch.request.get("think"))
                    for r in runs if r.run_id not in written]
            storage.append_jsonl(raw, lost)  # the agent is gone: the raw file is ours now
            new = self.merge(batch, attempt, raw)  # records this attempt in self.state
            storage.append_jsonl(self.processes_path, [{
                "batch_id": batch.batch_id, "attempt": attempt, "config_id": batch.config_id,
                "mode": batch.mode, "runs": len(runs), **stats.as_dict(), "offload": offload,
                **contention}])
            self.check_reloads(new)
            left = len(self.state.pending(batch, retries))
            bar.update(len(todo) - left)
            bad = [r for r in new if r["outcome"] != "ok"]
            if bad:  # one line per batch: the first failure stands for the others
                err = bad[0]["error"]
                tqdm.write(f"sweep: {batch.batch_id} attempt {attempt}: {len(bad)}/{len(new)} runs "
                           f"failed ({err['kind']}: {err['message'][:160]})", file=sys.stderr)
            if stats.exit_code not in (0, 1):
                tqdm.write(f"sweep: {batch.agent} agent exited {stats.exit_code}"
                           f"{' (timed out)' if stats.timed_out else ''}: {stats.stderr_tail}",
                           file=sys.stderr)

    def offload_after(self, url: str, keep_alive=None) -> dict | None:
        if self.offload is None:
            return None
        try:
            return self.offload.after_batch(url, self.params.model, keep_alive)
        except Exception as e:  # a dead server: the batch's records already say what failed
            return {"error": f"{type(e).__name__}: {e}"[:200]}

    def check_reloads(self, new: list[dict]) -> None:
        """Log a reload where none was expected: load_duration far above the warm median."""
        events = []
        for rec in new:
            load = rec.get("load_duration")
            if rec["phase"] not in ("measured", "warmup") or load is None:
                continue
            if rec.get("keep_alive") in (0, "0", "0s", "0m"):  # unloaded after every run, by request
                continue
            load_ms = load / 1e6
            if len(self.warm_loads) >= 5:
                median = statistics.median(self.warm_loads)
                if load_ms > max(5 * median, median + 250):
                    events.append({"event": "unexpected_reload", "run_id": rec["run_id"],
                                   "load_ms": load_ms, "warm_median_load_ms": median, "at": _now()})
                    tqdm.write(f"sweep: unexpected reload in {rec['run_id']}: load {load_ms:.0f} ms "
                               f"vs warm median {median:.0f} ms", file=sys.stderr)
            self.warm_loads.append(load_ms)
        storage.append_jsonl(self.events_path, events)

    def planned_runs(self) -> int:
        return sum(len(b.runs) for b in self.batches)

    def finished_runs(self) -> int:
        return sum(len(b.runs) - len(self.state.pending(b, self.params.retries)) for b in self.batches)


PROVENANCE_KEYS = ("ollama_version", "model_digest", "parameters_digest", "host_cpu", "host_gpus")


def session_provenance(params: Params, url: str, model: dict, host: dict) -> dict:
    """What must stay the same across the sessions of one run (DESIGN.md, "Sweep")."""
    return {"ollama_version": provenance.ollama_version(url),
            "model_digest": model.get("gguf_sha256"),
            "parameters_digest": params.digest(),
            "host_cpu": host.get("cpu_model"),
            "host_gpus": [g.get("name") for g in host.get("gpus", [])]}


def first_provenance(manifest: dict) -> dict | None:
    """The first session's provenance (older manifests kept it only at the top level)."""
    for session in manifest.get("sessions", []):
        if session.get("provenance"):
            return session["provenance"]
    if not manifest.get("ollama_version"):
        return None
    return {"ollama_version": manifest.get("ollama_version"),
            "model_digest": (manifest.get("model") or {}).get("gguf_sha256"),
            "parameters_digest": manifest.get("parameters_digest"),
            "host_cpu": (manifest.get("host") or {}).get("cpu_model"),
            "host_gpus": [g.get("name") for g in (manifest.get("host") or {}).get("gpus", [])]}


def provenance_differences(first: dict, now: dict, digest_aliases: list | tuple = ()) -> list[str]:
    """The provenance keys that differ; a first session's parameters digest listed in
    `digest_aliases` (manifest "parameters_digest_aliases": the same parameters as digested by
    an older version, see adopt_defaults) counts as this one."""
    first = {**first, "parameters_digest": now.get("parameters_digest")} \
        if first.get("parameters_digest") in digest_aliases else first
    return [f"{k}: {first.get(k)!r} in the first session, {now.get(k)!r} now"
            for k in PROVENANCE_KEYS if first.get(k) != now.get(k)]


def adopt_defaults(manifest: dict, params: Params) -> None:
    """A run started by an older version whose parameters are these once this version's
    defaults are filled in (Params.same_as_stored) takes this version's digest; the old one is
    kept in "parameters_digest_aliases", so the run resumes as one run, not a mixed one."""
    old = manifest.get("parameters_digest")
    if old and old != params.digest() and params.same_as_stored(manifest.get("parameters"),
                                                                 manifest.get("prompts")):
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
                not params.same_as_stored(stored.get("parameters"), stored.get("prompts")):
            raise storage.RunDirError(
                f"{params.path}: run {run_id} exists with other parameters ({manifest}): "
                "choose another --run-id, or pass --allow-mixed to resume it with these")
    return params, run_dir


def run_sweep(params_path: str | Path, run_id: str | None = None,
              outputs: Path = paths.OUTPUTS, progress: bool = True,
              allow_mixed: bool = False, cluster: str | None = None, workers: int | None = None) -> Path:
    """Run or resume a sweep into outputs/<run_id>; returns the run directory. `cluster`
    (else the parameter file's `cluster:`): `local` or a Dask scheduler address, to run the
    batches on dask.distributed workers (langbench.run.cluster); `workers`: N CPU workers of
    `--cluster local`. Raises ParamsError / RunDirError (bad input), ServerError."""
    params, run_dir = prepare(params_path, run_id, outputs, allow_mixed)
    cluster = cluster or params.raw.get("cluster")
    if workers is not None and cluster != "local":
        raise ParamsError(f"--workers {workers} starts a local Dask cluster: add --cluster local")
    if workers is not None and workers < 1:
        raise ParamsError(f"--workers {workers}: give at least one worker")
    fresh = not run_dir.exists()
    try:
        with storage.locked(run_dir, "sweep"):
            return _run(params, run_dir, progress, allow_mixed, cluster, workers)
    except (server.ServerError, storage.RunDirError, ParamsError):
        if fresh:  # nothing was measured: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _run(params: Params, run_dir: Path, progress: bool, allow_mixed: bool,
         cluster: str | None = None, workers: int | None = None) -> Path:
    manifest_path = run_dir / "manifest.json"
    manifest = storage.read_json(manifest_path) if manifest_path.exists() else {
        "schema_version": 1, "run_id": run_dir.name, "parameters_file": str(params.path),
        "parameters": params.raw, "prompts": list(params.prompts),
        "parameters_digest": params.digest(), "started_at": _now(), "sessions": []}
    adopt_defaults(manifest, params)
    sweep = Sweep(params, run_dir)
    sweep.jobs_dir.mkdir(parents=True, exist_ok=True)
    sweep.load_state()
    total, done = sweep.planned_runs(), sweep.finished_runs()
    if done < total and cluster:
        from langbench.run import cluster as dask_cluster
        dask_cluster.run(sweep, manifest, manifest_path, cluster, workers, progress, allow_mixed)
    elif done < total:
        cpus = isolation.plan(params.isolation)
        slots = plan.slots(params)
        with server.ollama_server(params.server["host"], params.model, log_path=run_dir / "ollama.log",
                                  env={"OLLAMA_NUM_PARALLEL": slots},
                                  cpus=cpus["server_cpus"] if cpus["applied"] else None) as srv:
            if cpus["applied"] and not srv.embedded:
                cpus = {**cpus, "applied": False, "reason": "isolation: pinned applies to the embedded "
                        "server only; an external server runs where it was started"}
            sweep.agent_cpus = cpus["agent_cpus"] if cpus["applied"] else None
            model, host = provenance.model_details(srv.url, params.model), provenance.host_info()
            if params.model == vocab.SYNTHETIC_MODEL:
                model["note"] = vocab.MODEL_NOTE
            now = session_provenance(params, srv.url, model, host)
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
                server={"url": srv.url, "embedded": srv.embedded, "host_setting": params.server["host"]},
                model=model, host=host, packages=provenance.package_versions(),
                agents={a: agents.command(a) for a in params.agents},
                num_batch_clamp=clamp_note(sweep), isolation=cpus,
                server_slots={"num_parallel": slots, "embedded": srv.embedded,
                              "source": "OLLAMA_NUM_PARALLEL of the embedded server" if srv.embedded else
                              "the parameter file (server.num_parallel): an external server, not verified"})
            storage.write_json(run_dir / "plan.json", {"batches": [b.as_dict() for b in sweep.batches]})
            storage.write_json(manifest_path, manifest)
            keeper = Keeper(srv, run_dir)
            sweep.offload = Offload(srv.log_path)
            sweep.sampler = telemetry.Sampler.start(run_dir / "telemetry.jsonl")
            if sweep.sampler and "gpu_idle" not in manifest:
                manifest["gpu_idle"] = sweep.sampler.idle_baseline()
            manifest["telemetry"] = ({"hz": telemetry.HZ, "energy_counter": sweep.sampler.has_energy}
                                     if sweep.sampler else None)
            with tqdm(total=total, initial=done, unit="run", desc=f"sweep {run_dir.name}",
                      disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
                try:
                    for batch in sweep.batches:
                        bar.set_postfix_str(batch.batch_id)
                        sweep.run_batch(batch, keeper, bar)
                    manifest["loaded_models"] = provenance.loaded_models(keeper.srv.url)
                    if keeper.srv.embedded:
                        manifest["server_slots"]["runner_parallel"] = runner_parallel(keeper.srv.log_path)
                finally:
                    if sweep.sampler:
                        sweep.sampler.close()
                    server.stop(keeper.srv)  # a restarted server is not the context's
                    session["ended_at"] = _now()
                    session["server_restarts"] = keeper.restarts
                    if (exc := sys.exc_info()[1]) is not None:  # the report's first line says why
                        session["stopped_by"] = (f"it was interrupted ({exc})" if isinstance(exc, KeyboardInterrupt)
                                                 else f"{type(exc).__name__}: {exc}"[:300])
                    storage.write_json(manifest_path, manifest)
    finish(sweep, manifest, manifest_path)
    return run_dir


def runner_parallel(log_path: Path | None) -> int | None:
    """The slots the server's model runner was last started with (`--parallel N` in its log)."""
    if not log_path or not log_path.exists():
        return None
    found = re.findall(r"--parallel (\d+)", log_path.read_text(errors="replace"))
    return int(found[-1]) if found else None


def clamp_note(sweep: Sweep) -> dict:
    """The manifest's account of the num_batch clamp: whether it was sent, and to which cells."""
    cells = sorted({b.config_id for b in sweep.batches if plan.clamp_num_batch(b.options)[1]})
    return {"applied": sweep.clamp, "fixed_in_ollama": ".".join(map(str, plan.CLAMP_FIXED_IN)),
            "default_num_batch": plan.OLLAMA_DEFAULT_NUM_BATCH,
            "configs": cells if sweep.clamp else []}


def finish(sweep: Sweep, manifest: dict, manifest_path: Path) -> None:
    attempts = metrics.load_attempts(sweep.run_dir)
    df = metrics.final_attempts(attempts)
    failed = df[df["outcome"] != "ok"] if not df.empty else df
    failed_attempts = attempts[attempts["outcome"] != "ok"] if not attempts.empty else attempts
    recovered = set(failed_attempts["run_id"]) - set(failed["run_id"]) if len(failed_attempts) else set()
    manifest.update(
        ended_at=_now(),
        complete=sweep.finished_runs() == sweep.planned_runs(),
        counts={"planned_runs": sweep.planned_runs(),
                "records": len(sweep.state.keys),
                "failed_runs": int(len(failed)),
                "failed_attempts": int(len(failed_attempts)),
                "recovered_on_retry": len(recovered),
                "failed_by_kind": failed["error_kind"].value_counts().to_dict() if len(failed) else {},
                "failed_attempts_by_kind": (failed_attempts["error_kind"].value_counts().to_dict()
                                            if len(failed_attempts) else {}),
                "server_restarts": sum(s.get("server_restarts", 0) for s in manifest.get("sessions", [])),
                "unexpected_reloads": len(storage.read_jsonl(sweep.events_path))})
    storage.write_json(manifest_path, manifest)
    summary.write_summary(sweep.run_dir, df)


def run_into(params_file: str | Path, run_dir: str | Path = "") -> str:
    """The sweep notebook's entry: run or resume `params_file` into `run_dir` (a new run id
    under outputs/ when empty); returns the run directory."""
    if str(run_dir):
        return str(run_sweep(params_file, Path(run_dir).name, outputs=Path(run_dir).parent))
    return str(run_sweep(params_file))
