"""A study over many servers: batches run on dask.distributed workers, one Ollama server each.

    python -m langbench sweep PARAMS --cluster local               # one worker per NVML GPU
    python -m langbench sweep PARAMS --cluster local --workers 2   # two CPU workers (tests)
    python -m langbench sweep PARAMS --cluster tcp://host:8786     # a running scheduler

Each worker owns one server for its life (`ServerPlugin`, a Dask WorkerPlugin): an embedded
`ollama serve` started the same way the single-server runner starts it (server.start_embedded,
with the worker's own CUDA_VISIBLE_DEVICES), or, with `server.host: auto`, the worker's own
OLLAMA_HOST when it answers. The client holds the schedule (run/schedule.py, whose docstring
says which batches must share a worker): whenever a worker is idle it is handed the pending
group (one config's batches of one round) of the highest expected cost, one task per batch
attempt (`client.submit(..., workers=[address], allow_other_workers=True, priority=...)`), and
the results come back through `as_completed`; the worker runs the agent against its server, samples NVML on its
GPU through the batch, and returns the records, the process stats, the offload and the
telemetry rows. Only the client writes the run directory, through the same Sweep.merge as a
single-server run (batches.Book.merge): a worker that dies mid-batch returns nothing, so that attempt is run again
(by Dask on another worker, or by a resume) and no run is ever recorded twice.

Which worker runs which group is the client's (cost-first, recorded in the manifest's session
`schedule` and in plan.json); the retry of a lost task, its move off a dead worker and the
dashboard are Dask's.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from distributed import WorkerPlugin
from tqdm import tqdm

from langbench import storage, vocab
from langbench.run import agents, batches, plan, provenance, rounds, schedule, server, telemetry

PLUGIN = "langbench-server"
WORKER_FIELDS = ("worker", "worker_host", "worker_gpu", "worker_gpu_uuid")


LOCAL_WORKER = "LANGBENCH_LOCAL_WORKER"  # set in the workers `--cluster local` starts


class ClusterError(server.ServerError):
    """The cluster cannot run the study (no worker, a worker's server failed); the message
    names the worker and the way out. The CLI turns it into exit 1."""


# --- the worker side ----------------------------------------------------------------------------

def worker_gpu(env: dict | None = None, nvml=None) -> dict | None:
    """The one GPU this process may use, as NVML sees it: {"index", "uuid", "name", "driver"};
    None on a host without NVML or GPU, or when CUDA_VISIBLE_DEVICES does not name exactly one
    GPU on a host that has several (the server then sees them all). CUDA_VISIBLE_DEVICES may
    hold an index (in PCI bus order, as NVML's; `--cluster local` sets CUDA_DEVICE_ORDER to
    match) or a GPU UUID."""
    env = os.environ if env is None else env
    try:
        nvml = nvml or __import__("pynvml")
        nvml.nvmlInit()
    except Exception:
        return None
    try:
        count = nvml.nvmlDeviceGetCount()
        visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if len(visible) == 1:
            want = visible[0]
            if want.isdigit():
                index = int(want)
            else:
                handle = nvml.nvmlDeviceGetHandleByUUID(want)
                index = nvml.nvmlDeviceGetIndex(handle)
        elif not visible and count == 1 and "CUDA_VISIBLE_DEVICES" not in env:
            index = 0
        else:
            return None
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        name = nvml.nvmlDeviceGetName(handle)
        return {"index": index, "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
                "name": name.decode() if isinstance(name, bytes) else name,
                "driver": nvml.nvmlSystemGetDriverVersion()}
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


class ServerPlugin(WorkerPlugin):
    """What a worker owns for its life: one Ollama server (started in `setup`, stopped in
    `teardown`), its Keeper (restarts an embedded server that died), the offload reader of its
    log and the NVML sampler of its GPU. Registered with `client.register_plugin(plugin,
    name=PLUGIN)`; a worker that joins later (or a restarted one) runs `setup` too.

    A failure to start is kept in `error` (not raised), so that the client can name the worker
    and the cause, and every task on that worker fails with it."""

    idempotent = False

    def __init__(self, model: str, host_setting: str, env: dict):
        self.model, self.host_setting, self.env = model, host_setting, env
        self.keeper = None
        self.info: dict = {}
        self.error: str | None = None

    def setup(self, worker) -> None:
        if os.environ.get(LOCAL_WORKER):  # a worker of `--cluster local`: Ctrl-C reaches the whole
            # process group, and the runner (its nanny's process) stops it; ignored here, the signal
            # no longer ends the worker with a KeyboardInterrupt traceback on the user's terminal
            with contextlib.suppress(ValueError):  # not the main thread: nothing to change
                signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.worker = worker
        self.scratch = Path(tempfile.mkdtemp(prefix="langbench-worker-"))
        gpu = worker_gpu()
        host = socket.gethostname()
        label = f"{host}/gpu{gpu['index']}" if gpu else f"{host}/{worker.name}"
        self.info = {"worker": label, "name": str(worker.name), "address": worker.address,
                     "host": host, "gpu": gpu, "pid": os.getpid(),
                     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        try:
            url = server.resolve(self.host_setting)
            # Pinning is opt-in (set on the worker by hand): pinned to 16 of 32 CPUs with 16 threads, a
            # partially offloaded server decoded at 20 tok/s against 42 unpinned, and two such servers at
            # 12.6 each against 37.9 / 36.0 unpinned (bench/offload_cpu_probe.py, two H200s).
            share = os.environ.get("LANGBENCH_SERVER_CPUS")
            cpus = [int(c) for c in share.split(",")] if share else None
            self.info["server_cpus"] = cpus
            srv = server.Server(url=url, embedded=False) if url else server.start_embedded(
                log_path=self.scratch / "ollama.log", env=self.env, cpus=cpus)
            self.keeper = batches.Keeper(srv, self.scratch)
            server.ensure_model(srv, self.model)
            model = provenance.model_details(srv.url, self.model)
            if self.model == vocab.SYNTHETIC_MODEL:
                model["note"] = vocab.MODEL_NOTE
            host_info = provenance.host_info()
            self.info.update(server={"url": srv.url, "embedded": srv.embedded, "host_setting": self.host_setting},
                             ollama_version=provenance.ollama_version(srv.url), model=model,
                             model_digest=model.get("gguf_sha256"), cpu_model=host_info["cpu_model"],
                             cpus=host_info["cpu_logical"], memory_bytes=host_info["memory_bytes"],
                             python=host_info["python"])
            self.offload = batches.Offload(srv.log_path)
            self.sampler = telemetry.Sampler.start(None, indices=[gpu["index"]]) if gpu else None
            self.info["telemetry"] = ({"hz": telemetry.HZ, "energy_counter": self.sampler.has_energy[0]}
                                      if self.sampler else None)
            if self.sampler:  # before any batch: this GPU's idle power (its server holds no model yet)
                self.info["gpu_idle"] = self.sampler.idle_baseline()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            self.info["error"] = self.error

    def teardown(self, worker) -> None:
        if self.keeper is not None:
            server.stop(self.keeper.srv)
        if getattr(self, "sampler", None):
            self.sampler.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _plugin() -> ServerPlugin:
    from distributed import get_worker
    return get_worker().plugins[PLUGIN]


def worker_info(dask_worker) -> dict:
    """Run on every worker with `client.run` (which passes `dask_worker`): its identity and
    its server's provenance."""
    return dask_worker.plugins[PLUGIN].info


def run_batch(job: dict) -> dict:
    """One attempt of one batch on this worker's server (the task the client submits).

    `job`: {"stem", "batch_id", "agent", "model", "options", "timeout", "jobs" (the jobs
    document), "runs" [[run_id, phase], ...]}. Returns {"records" (one per run: the agent's,
    or a failure record for a run it never wrote), "stats", "contention", "offload",
    "telemetry" (NVML rows of this worker's GPU), "worker" (its info), "server_restarts",
    "started_unix", "ended_unix" (this worker's clock, s: the attempt's whole span here)}.
    Raises ClusterError when this worker's server could not be started (Dask then retries it
    elsewhere)."""
    started = time.time()
    plugin = _plugin()
    if plugin.error:
        raise ClusterError(f"worker {plugin.info.get('worker')}: its server did not start: {plugin.error}")
    folder = Path(tempfile.mkdtemp(prefix=f"{job['stem']}-", dir=plugin.scratch))
    try:
        jobs = folder / "jobs.json"
        storage.write_json(jobs, job["jobs"])
        raw = folder / "records.jsonl"
        sampler = plugin.sampler
        host, stats, contention = batches.measure(plugin.keeper, sampler, job["agent"], job["batch_id"],
                                                  jobs, raw, job["timeout"])
        try:
            offload = plugin.offload.after_batch(host, job["model"])
        except Exception as e:  # a dead server: the batch's records already say what failed
            offload = {"error": f"{type(e).__name__}: {e}"[:200]}
        records = storage.read_jsonl(raw, repair=True)
        written = batches.task_ended(records)
        records += [agents.failure_record(job["agent"], run_id, job["model"], job["options"],
                                          phase != "measured", stats)
                    for run_id, phase in job["runs"] if run_id not in written]
        return {"records": records, "stats": stats.as_dict(), "contention": contention,
                "offload": offload, "telemetry": sampler.last_rows if sampler else [],
                "worker": plugin.info, "server_restarts": plugin.keeper.restarts,
                "started_unix": started, "ended_unix": time.time()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- the client side ----------------------------------------------------------------------------

def nvml_gpus(nvml=None, env: dict | None = None) -> list[int]:
    """NVML indices (PCI bus order) of the GPUs `--cluster local` gives a worker each: all of
    this host's, or, where CUDA_VISIBLE_DEVICES is set, those it names (indices or UUIDs, as
    dask-cuda's LocalCUDACluster reads it); [] without NVML or GPU. ClusterError names an
    entry that is no GPU of this host."""
    env = os.environ if env is None else env
    try:
        nvml = nvml or __import__("pynvml")
        nvml.nvmlInit()
    except Exception:
        return []
    try:
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception:
            return []
        if "CUDA_VISIBLE_DEVICES" not in env:
            return list(range(count))
        chosen = []
        for want in (v.strip() for v in env["CUDA_VISIBLE_DEVICES"].split(",") if v.strip()):
            try:
                index = int(want) if want.isdigit() else \
                    nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByUUID(want))
            except Exception:
                index = None
            if index is None or not 0 <= index < count:
                raise ClusterError(f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}: {want} is not "
                                   f"one of this host's {count} GPU(s) (indices 0-{count - 1} or their UUIDs)")
            if index not in chosen:
                chosen.append(index)
        return chosen
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()


def _local_cluster_class():
    from distributed import LocalCluster

    class GpuLocalCluster(LocalCluster):
        """A LocalCluster of one worker process per GPU, named gpu<i>, each with
        CUDA_VISIBLE_DEVICES=<i> in PCI bus order (NVML's), as dask-cuda's LocalCUDACluster
        builds its worker specs."""

        def __init__(self, gpus: list[int], **kw):
            self.gpus = list(gpus)
            super().__init__(n_workers=0, **kw)
            self.scale(len(self.gpus))

        def new_worker_spec(self):
            free = [g for g in self.gpus if f"gpu{g}" not in self.worker_spec]
            spec = copy.deepcopy(self.new_spec)
            spec["options"]["env"] = {**spec["options"].get("env", {}),
                                      "CUDA_VISIBLE_DEVICES": str(free[0]), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
            return {f"gpu{free[0]}": spec}

    return LocalCluster, GpuLocalCluster


def connect(address: str, workers: int | None = None):
    """(client, cluster, expected workers): a Client on a new LocalCluster (`local`: one worker
    per NVML GPU, or `workers` CPU workers) or on the scheduler at `address` (cluster None)."""
    from distributed import Client
    if address != "local":
        if workers:
            raise ClusterError("--workers applies to --cluster local only: start workers on the "
                               f"scheduler {address} with `dask worker {address} --nthreads 1`")
        try:
            client = Client(address, timeout="30s")
        except OSError as e:
            raise ClusterError(f"no Dask scheduler answers at {address} ({e}): start one with "
                               "`dask scheduler`, or use --cluster local") from None
        return client, None, 1
    import dask
    LocalCluster, GpuLocalCluster = _local_cluster_class()
    # Dask's work stealing moves single tasks, which would split a group (run/schedule.py: one
    # config's batches of one round share a worker); the client hands idle workers whole groups
    # instead (a lost worker's batches still move: their restriction is loose). A scheduler
    # started by hand: DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING=False.
    dask.config.set({"distributed.scheduler.work-stealing": False})
    common = dict(threads_per_worker=1, processes=True, memory_limit=0, silence_logs=logging.ERROR,
                  dashboard_address=":0" if importlib.util.find_spec("bokeh") else None,
                  worker_dashboard_address=None, env={LOCAL_WORKER: "1"})
    if workers:
        cluster = LocalCluster(n_workers=workers, **common)
        return Client(cluster), cluster, workers
    gpus = nvml_gpus()
    if not gpus:
        raise ClusterError("--cluster local found no GPU through NVML: pass --workers N for N "
                           "workers with embedded CPU servers")
    cluster = GpuLocalCluster(gpus, **common)
    return Client(cluster), cluster, len(gpus)


def check_workers(infos: dict, allow_mixed: bool) -> None:
    """Every worker single-threaded (one batch at a time on its server), its server started,
    and all serving the same model digest (unless `allow_mixed`)."""
    failed = [f"{i.get('worker', a)}: {i['error']}" for a, i in infos.items() if i.get("error")]
    if failed:
        raise ClusterError("a worker's Ollama server could not be used: " + "; ".join(failed))
    digests = {i["worker"]: i.get("model_digest") for i in infos.values()}
    if len(set(digests.values())) > 1 and not allow_mixed:
        raise storage.RunDirError(
            "the workers serve different model digests (" + ", ".join(f"{w}: {d}" for w, d in sorted(digests.items()))
            + "): give every worker the same model, or pass --allow-mixed (the report then says so)")


def record_fields(info: dict) -> dict:
    gpu = info.get("gpu") or {}
    return {"worker": info["worker"], "worker_host": info["host"], "worker_gpu": gpu.get("index"),
            "worker_gpu_uuid": gpu.get("uuid")}


def worker_provenance(info: dict) -> dict:
    """What the manifest keeps of one worker."""
    keep = ("worker", "name", "address", "host", "gpu", "ollama_version", "model_digest", "model",
            "server", "cpu_model", "cpus", "memory_bytes", "python", "telemetry", "cuda_visible_devices",
            "server_cpus")
    return {k: info.get(k) for k in keep}


def session_provenance(params, infos: list[dict]) -> dict:
    """The sweep's session provenance (batches.PROVENANCE_KEYS) of a cluster: the values the
    workers share, or the sorted set of those they differ in."""
    def one(values):
        values = sorted({str(v) for v in values})
        return values[0] if len(values) == 1 else values
    return {"ollama_version": one(i.get("ollama_version") for i in infos),
            "model_digest": one(i.get("model_digest") for i in infos),
            "parameters_digest": params.digest(),
            "host_cpu": one(i.get("cpu_model") for i in infos),
            "host_gpus": sorted({(i.get("gpu") or {}).get("name") for i in infos if i.get("gpu")})}


def run(sweep, manifest: dict, manifest_path: Path, address: str, workers: int | None,
        progress: bool, allow_mixed: bool, decide=None) -> None:
    """Run every unfinished batch of `sweep` on the cluster; the client writes everything.
    Groups go to idle workers, highest expected cost first (run/schedule.py); the session's
    `schedule` in the manifest keeps each group's worker, expected cost, assignment and end,
    and per wave the predicted and the measured makespan. A sequential plan goes round by round
    (run/rounds.py): a round's groups are spread over the workers, then `decide` says whether to
    stop."""
    from distributed import as_completed
    params, run_dir = sweep.params, sweep.run_dir
    slots = plan.slots(params)
    client, cluster, expected = connect(address, workers)
    try:
        schedule.check_workers(expected)  # nothing to fit a schedule to fails before any server starts
        try:
            client.wait_for_workers(expected, timeout=300)
        except TimeoutError:
            raise ClusterError(f"{expected} Dask worker(s) did not join the scheduler {cluster_address(client)} "
                               f"within 300 s: start them with `dask worker {cluster_address(client)} "
                               "--nthreads 1`") from None
        client.register_plugin(ServerPlugin(params.model, params.server["host"],
                                            {"OLLAMA_NUM_PARALLEL": slots}), name=PLUGIN)
        threads = {a: w.get("nthreads") for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        many = [a for a, n in threads.items() if n != 1]
        if many:
            raise ClusterError(f"worker(s) {', '.join(many)} run {threads[many[0]]} threads: a worker "
                               "runs one batch at a time on its server; start them with --nthreads 1")
        infos = client.run(worker_info)
        check_workers(infos, allow_mixed)
        addresses = sorted(infos, key=lambda a: infos[a]["worker"])
        now = session_provenance(params, list(infos.values()))
        first = batches.first_provenance(manifest)
        diffs = batches.provenance_differences(first, now, manifest.get("parameters_digest_aliases", ())) \
            if first else []
        if diffs and not allow_mixed:
            raise storage.RunDirError(
                f"{run_dir}: refusing to resume: this session differs from the first one "
                f"({'; '.join(diffs)}). Resume on a like cluster, use another --run-id, "
                "or pass --allow-mixed to keep both (the report then says the run is mixed)")
        mixed = set(manifest.get("mixed", [])) | {d.split(":")[0] for d in diffs}
        if len({i.get("model_digest") for i in infos.values()}) > 1:
            mixed.add("model_digest")
        if mixed:
            manifest["mixed"] = sorted(mixed)
        versions = {i.get("ollama_version") for i in infos.values()}
        sweep.clamp = any(plan.needs_num_batch_clamp(v) for v in versions)
        done = sweep.finished_runs()
        session = {"started_at": batches.now(), "resumed_from_runs": done, "provenance": now,
                   "num_batch_clamp": sweep.clamp,
                   "cluster": {"address": address if address != "local" else cluster_address(client),
                               "kind": "local" if address == "local" else "scheduler",
                               "workers": [infos[a]["worker"] for a in addresses]}}
        manifest["sessions"].append(session)
        known = {w["worker"]: w for w in manifest.get("workers", [])}
        known.update({i["worker"]: worker_provenance(i) for i in infos.values()})
        first_info = infos[addresses[0]]
        manifest.update(
            git=provenance.git_commit(), ollama_version=first_info.get("ollama_version"),
            server={"url": None, "embedded": all(i["server"]["embedded"] for i in infos.values()),
                    "host_setting": params.server["host"], "cluster": True},
            model=first_info.get("model"), host=provenance.host_info(),
            packages={**provenance.package_versions(), **_dask_versions()},
            agents={a: agents.command(a) for a in params.agents},
            num_batch_clamp=batches.clamp_note(sweep), isolation={
                "setting": params.isolation, "applied": False,
                "reason": "with --cluster each worker's server runs where the worker runs"},
            server_slots={"num_parallel": slots, "embedded": manifest_embedded(infos),
                          "source": "OLLAMA_NUM_PARALLEL of each worker's embedded server"},
            workers=sorted(known.values(), key=lambda w: w["worker"]),
            gpus_of_workers=[{**i["gpu"], "worker": i["worker"]} for i in infos.values() if i.get("gpu")],
            telemetry=({"hz": telemetry.HZ, "per_worker": True}
                       if any(i.get("telemetry") for i in infos.values()) else None))
        if manifest["gpus_of_workers"] and not manifest["host"].get("gpus"):
            manifest["host"]["gpus"] = manifest["gpus_of_workers"]  # the client runs off the GPUs
        idle = {str(i["gpu"]["index"]): i["gpu_idle"]["power_w"].get(str(i["gpu"]["index"]))
                for i in infos.values() if i.get("gpu_idle")}
        if idle and "gpu_idle" not in manifest:
            manifest["gpu_idle"] = {"seconds": 3.0, "power_w": idle, "per_worker": True}
        runs_left = lambda b: len(sweep.state.pending(b, params.retries))  # noqa: E731
        measured = schedule.Measured.from_rows(storage.read_jsonl(sweep.processes_path, repair=True), sweep.batches)
        storage.write_json(run_dir / "plan.json", {
            "batches": [b.as_dict() for b in sweep.batches], "workers": len(addresses),
            "schedule": {"rule": schedule.RULE, "group": schedule.UNIT,
                         "groups": {g.key: g.batch_ids for g in schedule.groups(sweep.batches)}}})
        session["schedule"] = {"rule": schedule.RULE, "group": schedule.UNIT, "waves": [], "groups": []}
        storage.write_json(manifest_path, manifest)
        restarts: dict[str, int] = {}
        lost: list[str] = []
        last_options: dict[str, dict] = {}  # per worker address: the options of the batch it was handed last
        total = sweep.planned_runs()
        with tqdm(total=total, initial=done, unit="run", desc=f"sweep {run_dir.name} ({len(addresses)} workers)",
                  disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:

            def label(address: str) -> str:
                return (infos.get(address) or {}).get("worker", address)

            def wave(todo) -> None:
                """Run `todo` (a round, or the whole plan) group by group: an idle worker takes the
                pending group of the highest expected cost (schedule.pick) and runs all of it."""
                queue = [g for g in schedule.groups(todo) if any(runs_left(b) for b in g.batches)]
                busy: dict[str, dict] = {}  # worker address -> the schedule entry of the group it runs
                left: dict[int, int] = {}  # id(entry) -> its attempts not yet returned
                ran_on: dict[int, set] = {}  # id(entry) -> the workers its records name
                home: dict[int, str] = {}  # id(entry) -> the worker address it was handed to
                pending: dict[str, tuple[plan.Batch, dict]] = {}  # future key -> (batch, entry)
                futures = as_completed()
                round_ids = sorted({plan.round_of(b.batch_id) for b in todo})
                note = {"round": round_ids[0] if len(round_ids) == 1 else None, "groups": len(queue),
                        "started_at": batches.now()}
                started = time.time()

                def submit(batch, entry, address) -> bool:
                    fut = _submit(client, sweep, batch, address)
                    if fut is None:
                        return False
                    pending[fut.key] = (batch, entry)
                    futures.add(fut)
                    left[id(entry)] += 1
                    return True

                def feed() -> None:
                    live = set(client.scheduler_info(n_workers=-1)["workers"])
                    for address in sorted((a for a in live if a not in busy), key=label):
                        while queue:
                            g = schedule.pick(queue, measured, runs_left)
                            queue.remove(g)
                            cost = schedule.group_cost(g, measured, runs_left)
                            entry = {"group": g.key, "round": g.round, "batches": g.batch_ids,
                                     "worker": label(address), "expected": round(cost.value, 3),
                                     "expected_unit": cost.unit, "expected_from": cost.source,
                                     "assigned_at": batches.now()}
                            left[id(entry)], ran_on[id(entry)], home[id(entry)] = 0, set(), address
                            for b in g.batches:  # all of it to this worker, in plan order (priority)
                                b = plan.reload_after(b, last_options.get(address))
                                if submit(b, entry, address):
                                    last_options[address] = b.options
                            if left[id(entry)]:
                                busy[address] = entry
                                session["schedule"]["groups"].append(entry)
                                break

                def returned(entry: dict) -> None:
                    left[id(entry)] -= 1
                    if left[id(entry)]:
                        return
                    entry.update(ended_at=batches.now(), ran_on=sorted(ran_on.pop(id(entry))))
                    address = home.pop(id(entry))
                    if busy.get(address) is entry:
                        del busy[address]
                    feed()  # this worker is idle: it takes the next group

                if queue:  # what the schedule expects of this wave, from the estimates it starts with
                    durations = {b.batch_id: schedule.expected_cost(b, runs_left(b), measured) for g in queue
                                 for b in g.batches}
                    unit = next(iter(durations.values())).unit if durations else "s"
                    note["predicted_makespan"], _ = schedule.simulate(
                        [queue], lambda b: durations[b.batch_id].value, len(addresses), copy.deepcopy(measured))
                    note["predicted_unit"] = unit
                session["schedule"]["waves"].append(note)
                bar.set_postfix_str(rounds.open_note(manifest).lstrip(" ·"))
                feed()
                while True:
                    for fut in futures:
                        batch, entry = pending.pop(fut.key)
                        try:
                            result = fut.result()
                        except Exception as e:  # lost for good (Dask's retries spent): a resume runs it
                            lost.append(batch.batch_id)
                            tqdm.write(f"sweep: {batch.batch_id}: {type(e).__name__}: {str(e)[:300]}; "
                                       "rerun with the same --run-id to resume", file=sys.stderr)
                            returned(entry)
                            continue
                        info = result["worker"]
                        if info["worker"] not in known:  # a worker that joined during the sweep
                            check_workers({info["address"]: info, **infos}, allow_mixed)
                            known[info["worker"]] = worker_provenance(info)
                            infos.setdefault(info["address"], info)
                            manifest["workers"] = sorted(known.values(), key=lambda w: w["worker"])
                        restarts[info["address"]] = result["server_restarts"]
                        ran_on[id(entry)].add(info["worker"])
                        before = len(sweep.state.pending(batch, params.retries))
                        take(sweep, batch, fut.key, result)
                        measured.add(batch, schedule.span_s({**result["stats"], **_times(result)}),
                                     len(result["records"]))
                        after = len(sweep.state.pending(batch, params.retries))
                        bar.update(before - after)
                        if after:  # a retry: on the worker that ran it, still within its group
                            submit(batch, entry, info["address"])
                        returned(entry)
                    if not queue:
                        break
                    try:  # groups are left and no worker runs anything: every worker is gone
                        client.wait_for_workers(1, timeout=300)
                    except TimeoutError:
                        raise ClusterError(f"no Dask worker is left on the scheduler {cluster_address(client)} "
                                           f"to run {len(queue)} group(s) of batches; start workers, or rerun "
                                           "with the same --run-id to resume") from None
                    feed()
                note.update(ended_at=batches.now(), makespan_s=round(time.time() - started, 3))
                storage.write_json(manifest_path, manifest)
            try:
                rounds.run(params, run_dir, manifest, manifest_path, sweep.batches, wave, decide,
                           lambda s: tqdm.write(s, file=sys.stderr))
            finally:
                session["ended_at"] = batches.now()
                session["server_restarts"] = sum(restarts.values())
                session["lost_batches"] = lost
                if lost:
                    tqdm.write(f"sweep: {len(lost)} batch(es) were lost with their workers and are not "
                               "recorded; rerun with the same --run-id to run them", file=sys.stderr)
                storage.write_json(manifest_path, manifest)
    finally:
        client.close()
        if cluster is not None:  # a LocalCluster: its workers stop their servers (teardown)
            cluster.close()


def _submit(client, sweep, batch: plan.Batch, address: str):
    """Submit the next attempt of `batch` (None when nothing of it is pending); the client
    writes its jobs file, the worker gets the document."""
    attempt = sweep.next_attempt(batch)
    if attempt is None:
        return None
    sweep.state.attempts[batch.batch_id] = attempt.number  # reserved: the next attempt gets the next number
    job = {"stem": attempt.stem, "batch_id": batch.batch_id, "agent": batch.agent, "model": sweep.params.model,
           "options": attempt.options, "timeout": sweep.params.timeouts["batch_s"], "jobs": attempt.doc,
           "runs": [[r.run_id, r.phase] for r in attempt.runs]}
    fut = client.submit(run_batch, job, key=attempt.stem, workers=[address], allow_other_workers=True,
                        retries=sweep.params.retries, priority=-batch.order, pure=False)
    return fut


def take(sweep, batch: plan.Batch, stem: str, result: dict) -> list[dict]:
    """Write what a worker returned into the run directory, as the single-server runner does:
    the raw records (with the worker's fields) under jobs/, merged into records.jsonl, a
    processes row, telemetry rows; returns the merged records."""
    attempt = int(stem.rsplit("-a", 1)[1])
    fields = record_fields(result["worker"])
    raw = sweep.jobs_dir / f"{stem}.records.jsonl"
    storage.append_jsonl(raw, [{**r, **fields} for r in result["records"]])
    new = sweep.merge(batch, attempt, raw)
    storage.append_jsonl(sweep.processes_path, [{
        "batch_id": batch.batch_id, "attempt": attempt, "config_id": batch.config_id,
        "mode": batch.mode, "runs": len(result["records"]), **result["stats"],
        "offload": result["offload"], **result["contention"], **fields,
        "group": schedule.group_key(batch), **_times(result)}])
    storage.append_jsonl(sweep.run_dir / "telemetry.jsonl",
                         [{**row, "worker": fields["worker"]} for row in result["telemetry"]])
    sweep.check_reloads(new)
    bad = [r for r in new if r["outcome"] != "ok"]
    if bad:
        err = bad[0]["error"]
        tqdm.write(f"sweep: {batch.batch_id} attempt {attempt} on {fields['worker']}: {len(bad)}/{len(new)} "
                   f"runs failed ({err['kind']}: {err['message'][:160]})", file=sys.stderr)
    stats = result["stats"]
    if stats["exit_code"] not in (0, 1):
        tqdm.write(f"sweep: {batch.agent} agent exited {stats['exit_code']}"
                   f"{' (timed out)' if stats['timed_out'] else ''} on {fields['worker']}: "
                   f"{stats['stderr_tail']}", file=sys.stderr)
    return new


def _times(result: dict) -> dict:
    """The attempt's span on its worker (unix s), where the worker sent it."""
    return {k: result[k] for k in ("started_unix", "ended_unix") if k in result}


def manifest_embedded(infos: dict) -> bool:
    return all(i["server"]["embedded"] for i in infos.values())


def cluster_address(client) -> str:
    return client.scheduler.address


def _dask_versions() -> dict:
    from importlib.metadata import version
    return {"dask": version("dask"), "distributed": version("distributed")}
