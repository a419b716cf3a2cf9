"""What a batch attempt is and how its records are kept: used by the single-server loop
(sweep.py) and by the Dask client and worker (cluster.py) alike, so neither imports the other.

- Book: a run directory's plan and records; the next attempt of a batch; merging an attempt's
  raw records into records.jsonl (nothing lost, nothing twice); unexpected reloads.
- Keeper, Offload, Contention, measure: the server a batch runs on, kept alive; what the server
  did with the batch (layers on GPU, rejected options, /api/ps) and what else used the CPUs.
- The session provenance that must stay the same across a run's sessions, and the clamp note.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from tqdm import tqdm  # not tqdm.auto: it warns in a kernel without ipywidgets

from langbench import storage
from langbench.run import agents, plan, provenance, server
from langbench.run.params import Params


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def record_key(rec: dict, attempt: int) -> tuple:
    """What one record is once: (run_id, attempt), and the turn for an agent task's turn."""
    return (rec["run_id"], attempt, rec.get("turn"))


def task_ended(records: list[dict]) -> set[str]:
    """The runs of an attempt's raw records that ended: a request's record, or an agent task's
    last turn (a task cut short by its process is not ended: its turns are kept, apart, and the
    task runs again from its first turn)."""
    return {r["run_id"] for r in records if "turn" not in r or r.get("task_outcome") is not None}


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
        self.keys.add(record_key(rec, rec["attempt"]))
        self.attempts[rec["batch_id"]] = max(self.attempts.get(rec["batch_id"], 0), rec["attempt"])
        if rec["phase"] == "resume":
            return
        if "turn" in rec:  # an agent task's turn: the task is the unit (DESIGN.md, "Agent loops")
            if rec["task_outcome"] is None:
                return  # not its last turn: the task is done only when its last turn is recorded
            if rec["task_outcome"] != "error":
                self.ok.add(rec["run_id"])
            else:
                self.failures[rec["run_id"]] = self.failures.get(rec["run_id"], 0) + 1
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
        if self.srv.alive() or not self.srv.embedded:
            return self.srv.url
        tail = self.srv.log_tail(5)
        server.stop(self.srv)
        kind = self.srv.kind
        log = self.srv.log_path or self.run_dir / ("ollama.log" if kind == "ollama" else f"{kind}.log")
        extra = {"setting": self.srv.setting} if self.srv.setting else {}
        self.srv = server.KINDS[kind].start(log_path=log, env=self.srv.env, cpus=self.srv.cpus,
                                            slots=self.srv.slots, model=self.srv.model, **extra)
        self.restarts += 1
        tqdm.write(f"sweep: the embedded {kind} server had died; restarted at {self.srv.url}\n{tail}",
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
        self.replay = srv.url if srv.kind == "replay" else None
        if self.replay:  # the replay server's own lateness counts from this batch's start
            server.replay_stats(self.replay, reset=True)
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
        out = {"host_load_1m": (self.load0 + os.getloadavg()[0]) / 2, "host_cpus": os.cpu_count(),
               "server_cpu_s": cpu1 - self.cpu0 if cpu1 is not None and self.cpu0 is not None else None}
        if self.replay:  # how late its own chunks went out in this batch (DESIGN.md, "The replay server")
            out["replay"] = server.replay_stats(self.replay, reset=True)
        return out


@dataclass
class Attempt:
    """One attempt of one batch: its number, file stem (<batch>-a<n>), the planned runs it
    retries (`todo`), the runs its jobs document asks for (a resume run first, where it
    resumes mid-batch), the options sent, the document, and its files under jobs/."""
    number: int
    stem: str
    todo: list
    runs: list
    options: dict
    doc: dict
    jobs: Path
    raw: Path


def measure(keeper: Keeper, sampler, agent: str, batch_id: str, jobs: Path, raw: Path,
            timeout: float, cpus: list[int] | None = None) -> tuple[str, agents.ProcessStats, dict]:
    """Run one batch attempt's agent against the keeper's server (restarted first if it died),
    sampling NVML through it where there is a sampler: (the server's url, the agent process's
    stats, the CPU contention of the batch)."""
    host = keeper.ensure()
    load = Contention(keeper.srv)
    with sampler.batch(batch_id) if sampler else contextlib.nullcontext():
        stats = agents.run(agent, host, jobs, raw, timeout=timeout, cpus=cpus)
    return host, stats, load.after()


class Book:
    """A run directory's book of records: the plan's batches, what records.jsonl says of each
    run, and how a batch attempt's raw records (jobs/<batch>-a<n>.records.jsonl, written by an
    agent here or returned by a Dask worker) are merged into it: once each, with the plan's
    fields. The single-server loop (sweep.Sweep) and the Dask client (cluster.run) keep the same
    book."""

    def __init__(self, params: Params, run_dir: Path, clamp: bool = False):
        self.params, self.run_dir = params, run_dir
        self.clamp = clamp  # send num_batch ≤ num_ctx (a server older than 0.12.0)
        self.batches = plan.build(params)
        self.records_path = run_dir / "records.jsonl"
        self.processes_path = run_dir / "processes.jsonl"
        self.events_path = run_dir / "events.jsonl"
        self.capture_path = run_dir / "capture.jsonl"
        self.jobs_dir = run_dir / "jobs"
        self.state = RunState()
        self.warm_loads: list[float] = []  # kept sorted: the median of 40,000 loads per record was
        # statistics.median's sort each time, a minute of a 1,024-session sweep

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
        new, captured = [], []
        for number, rec in enumerate(storage.read_jsonl(raw), 1):
            if rec.get("run_id") not in phases:  # not planned: never guess what it was
                raise storage.RunDirError(
                    f"{raw}:{number}: run id {rec.get('run_id')!r} is not in this run's plan "
                    f"for batch {batch.batch_id} attempt {attempt}; the file was written by "
                    "something else: move it out of jobs/ and rerun")
            if record_key(rec, attempt) in self.state.keys:
                continue
            sent_batch = (rec.get("options") or {}).get("num_batch")
            rec.update(batch_id=batch.batch_id, run_key=plan.run_key(batch, rec["run_id"]),
                       order=batch.order, config_id=batch.config_id,
                       config=batch.config, mode=batch.mode, attempt=attempt,
                       phase=phases[rec["run_id"]], reload_expected=batch.reload_expected,
                       prompt_cache=caches.get(rec["run_id"], "cached"),
                       keep_alive=batch.request.get("keep_alive", self.params.fixed["keep_alive"]),
                       num_batch_clamp=clamped if clamped and sent_batch == clamped["num_batch_to"]
                       and batch.options.get("num_batch") != sent_batch else None)
            trace = rec.pop("capture", None)
            if trace is not None:  # beside the records, keyed as they are: records.jsonl stays lean
                captured.append({"batch_id": batch.batch_id, "attempt": attempt, "run_id": rec["run_id"],
                                 "turn": rec.get("turn"), "agent": rec["agent"], **trace})
            new.append(rec)
        storage.append_jsonl(self.capture_path, captured)  # first: a record is never without its trace
        storage.append_jsonl(self.records_path, new)
        for rec in new:
            self.state.add(rec)
        return new

    def next_attempt(self, batch: plan.Batch) -> Attempt | None:
        """The next attempt of `batch` (None when nothing of it is pending), its jobs file
        written under jobs/: the runs still to do, a resume run first when it starts mid-batch."""
        todo = self.state.pending(batch, self.params.retries)
        if not todo:
            return None
        number = self.state.attempts.get(batch.batch_id, 0) + 1
        runs = list(todo)
        if todo[0].phase != "cold":  # resuming mid-batch: pay the reload before measuring
            runs.insert(0, plan.Run(resume_run_id(batch, number), "resume", 0, 0))
        stem = f"{batch.batch_id}-a{number}"
        options = plan.clamp_num_batch(batch.options)[0] if self.clamp else batch.options
        doc = plan.jobs_document(self.params, batch, runs, options)
        jobs = self.jobs_dir / f"{stem}.json"
        storage.write_json(jobs, doc)
        return Attempt(number, stem, todo, runs, options, doc, jobs, self.jobs_dir / f"{stem}.records.jsonl")

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
                median = _median_sorted(self.warm_loads)
                if load_ms > max(5 * median, median + 250):
                    events.append({"event": "unexpected_reload", "run_id": rec["run_id"],
                                   "load_ms": load_ms, "warm_median_load_ms": median, "at": now()})
                    tqdm.write(f"sweep: unexpected reload in {rec['run_id']}: load {load_ms:.0f} ms "
                               f"vs warm median {median:.0f} ms", file=sys.stderr)
            bisect.insort(self.warm_loads, load_ms)
        storage.append_jsonl(self.events_path, events)

    def planned_runs(self) -> int:
        return sum(len(b.runs) for b in self.batches)

    def finished_runs(self) -> int:
        return sum(len(b.runs) - len(self.state.pending(b, self.params.retries)) for b in self.batches)


def _median_sorted(xs: list[float]) -> float:
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def failure_counts(records: list[dict]) -> dict:
    """The manifest's failure counts, from records.jsonl in file order: runs whose last attempt
    failed, every failed attempt (those a retry replaced too), the runs a retry recovered, and
    each by error kind (most first; ties in the order the records first show them)."""
    last: dict[str, dict] = {}
    for rec in records:
        if rec["run_id"] not in last or rec["attempt"] > last[rec["run_id"]]["attempt"]:
            last[rec["run_id"]] = rec
    final = [r for r in records if last.get(r["run_id"]) is r]
    failed = [r for r in final if r["outcome"] != "ok"]
    failed_attempts = [r for r in records if r["outcome"] != "ok"]

    def by_kind(recs: list[dict]) -> dict:
        kinds = Counter(k for r in recs if (k := (r.get("error") or {}).get("kind")) is not None)
        return dict(kinds.most_common())

    return {"failed_runs": len(failed), "failed_attempts": len(failed_attempts),
            "recovered_on_retry": len({r["run_id"] for r in failed_attempts} - {r["run_id"] for r in failed}),
            "failed_by_kind": by_kind(failed), "failed_attempts_by_kind": by_kind(failed_attempts)}


PROVENANCE_KEYS = ("ollama_version", "model_digest", "parameters_digest", "host_cpu", "host_gpus")


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


def clamp_note(sweep: Book) -> dict:
    """The manifest's account of the num_batch clamp: whether it was sent, and to which cells."""
    cells = sorted({b.config_id for b in sweep.batches if plan.clamp_num_batch(b.options)[1]})
    return {"applied": sweep.clamp, "fixed_in_ollama": ".".join(map(str, plan.CLAMP_FIXED_IN)),
            "default_num_batch": plan.OLLAMA_DEFAULT_NUM_BATCH,
            "configs": cells if sweep.clamp else []}
