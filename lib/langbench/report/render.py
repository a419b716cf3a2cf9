"""The report: papermill executes each notebook into the run, nbconvert renders HTML (full and
code-free), and index.html (report/index.py) links them with the headline findings.

A notebook that fails leaves the others rendered; the index says which failed and why, and the
exit code is 1.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from langbench import stop, storage
from langbench.analysis import metrics, summary
from langbench.report.index import write_index
from langbench.report.notebooks import Kernel, to_html

NOTEBOOKS = ("tr112", "sweep", "throughput", "ttft", "success_patterns", "decision_matrix", "validity", "gpu",
             "concurrency", "agent_loops", "servers")


def say(msg: str) -> None:
    sys.stderr.write(f"report: {msg}\n")  # one write: notebooks run in threads side by side
    sys.stderr.flush()


# A run of agent tasks (workload: agent): its runs are tasks of several requests, so the
# single-request notebooks (TR112's throughput, TTFT, success and decision tables) are not its.
AGENT_NOTEBOOKS = ("sweep", "gpu", "agent_loops")


# Notebooks only a run with closed-loop load (`concurrency`) has: sessions at scale, its knees.
LOAD_NOTEBOOKS = ("scale",)


# A peers run (python -m langbench peers: other tools beside langbench's clients) has one notebook.
PEERS_NOTEBOOKS = ("peers",)


def is_peers_run(run_dir: Path) -> bool:
    return storage.read_json(run_dir / "manifest.json").get("kind") == "peers"


def notebooks_for(run_dir: Path) -> tuple[str, ...]:
    if is_peers_run(run_dir):
        return PEERS_NOTEBOOKS
    params = storage.read_json(run_dir / "manifest.json").get("parameters") or {}
    chosen = AGENT_NOTEBOOKS if params.get("workload") == "agent" else NOTEBOOKS
    if params.get("concurrency") or "concurrency" in (params.get("matrix") or {}):
        chosen = chosen + LOAD_NOTEBOOKS
    return chosen


def render(run_dir: str | Path, notebooks=None) -> int:
    """Execute and render every notebook of a stored run (those of its workload); write
    index.html. 0 if all rendered."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists() or not storage.exists(run_dir / "records.jsonl"):
        from langbench.vocab import ParamsError
        raise ParamsError(f"{run_dir}: not a run directory (no manifest.json/records.jsonl): "
                          "run `make report` or `python -m langbench sweep` first")
    notebooks = notebooks or notebooks_for(run_dir)
    # An unreadable record stops it before anything is written. Read once: the summary and the
    # index are made from these (40,000 records are seconds to parse and frame)
    # (under the lock: no sweep appends between this read and what is made from it)
    with storage.locked(run_dir, "render"):
        if is_peers_run(run_dir):
            storage.read_records(run_dir / "records.jsonl")
            attempts = None
        else:
            attempts = metrics.load_attempts(run_dir)
        return _render(run_dir, notebooks, attempts)


def jobs(n_notebooks: int) -> int:
    """How many notebooks execute at once: one per CPU this process may use, at most 4 (each
    kernel is one busy process of a few hundred MB), never more than there are notebooks."""
    return max(1, min(4, len(os.sched_getaffinity(0)), n_notebooks))


def _render(run_dir: Path, notebooks, attempts=None) -> int:
    html_dir = run_dir / "html"
    html_dir.mkdir(parents=True, exist_ok=True)
    if attempts is not None:  # a peers run's table is its runs.csv
        summary.write_summary(run_dir, metrics.final_attempts(attempts))
    # Lanes side by side, each a thread with one kernel (a process) that executes its notebooks
    # one after another, reset between them (notebooks.Kernel says why and what is reset); a
    # lane takes the next notebook not yet taken, and the index lists them in the report's
    # order whatever order they end in.
    queue = collections.deque(notebooks)  # popleft is atomic: the lanes share it without a lock
    lanes = jobs(len(notebooks))
    halt = threading.Event()  # a stop signal: no lane takes a further notebook
    results: dict[str, dict] = {}

    def lane() -> None:
        kernel = Kernel()
        try:
            while not halt.is_set():
                try:
                    name = queue.popleft()
                except IndexError:
                    return
                results[name] = _execute_and_convert(kernel, name, run_dir, html_dir)
        finally:
            try:
                kernel.close()
            finally:
                # nbclient runs its coroutines on an event loop that jupyter_core makes for this
                # thread and never closes (a ResourceWarning when the thread ends): close it
                from jupyter_core.utils import ensure_event_loop
                loop = ensure_event_loop()
                asyncio.set_event_loop(None)
                loop.close()

    pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="render")
    try:
        for f in [pool.submit(lane) for _ in range(lanes)]:
            f.result()
    finally:  # a stop signal: the running notebooks end, no further one starts
        halt.set()
        pool.shutdown(wait=True)
    results = {name: results[name] for name in notebooks}
    write_index(run_dir, results, attempts)
    failed = [n for n, r in results.items() if not r["ok"]]
    say(f"{run_dir / 'index.html'} ({len(notebooks) - len(failed)}/{len(notebooks)} notebooks ok)")
    return 1 if failed else 0


def _execute_and_convert(kernel: Kernel, name: str, run_dir: Path, html_dir: Path) -> dict:
    """Execute one notebook on `kernel` and render its HTML (in a lane's thread); its result
    for the index."""
    stop.check()  # a stop signal whose exception was lost: render no further notebook
    started = time.monotonic()
    say(f"executing {name}")
    try:
        executed = kernel.execute(name, run_dir)
        result = {"ok": True}
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's error
        result = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:2000]}
        executed = run_dir / "notebooks" / f"{name}.ipynb"
        say(f"{name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if executed.exists():  # a failed notebook is rendered too: its error is the artefact
        try:
            to_html(executed, html_dir)
        except Exception as e:
            result = {"ok": False, "error": f"render: {type(e).__name__}: {e}"[:2000]}
    result["seconds"] = time.monotonic() - started
    return result
