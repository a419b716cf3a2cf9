"""Which worker runs which batches under --cluster (issue 27): cost-first list scheduling of groups.

The limits the analysis needs, so that a worker stays a block:

- **A group stays on one worker, in plan order.** A group is every batch of one config in one
  round (`c2-b3`: baseline and chimera, python and rust, and the null client's batch). The
  analysis pairs python with rust within (worker, config, mode) (findings.paired_result; the
  sequential look, stopping.paired_diffs, does it round by round), compares chimera with
  baseline within a config (the optimization delta), and takes the null client's floor right
  after a baseline batch on the same server; the plan's ABBA order inside a config keeps drift
  and the cold run off one factor. So all of a group runs on one worker, one batch after
  another in plan order, and no comparison the analysis makes ever spans two workers.
- **Whole groups move freely.** A worker need not run every cell, nor every cell equally
  often: which worker ran a group is recorded (the manifest's session `schedule`, each
  record's `worker`). The worker effect (stats.worker_effect: batch means as cell + worker) is
  estimable only where workers share cells; the A/A check within a worker needs two baseline
  batches of one cell on it. Both say so where a schedule did not give them that.
- **Rounds stay rounds.** A sequential plan (run/rounds.py) is scheduled one round at a time:
  a round's groups spread over the workers, then the look. `batches` need not be a multiple of
  the workers.

The order, longest expected cost first (LPT, Graham 1969): whenever a worker is idle it takes
the pending group with the highest expected cost (ties: plan order), except that groups holding
work not yet measured go before those whose costs are known (so the first round runs first, in
plan order, and an unknown cost is never the last thing left). With exact costs and every
worker idle at the start this is LPT list scheduling, within 4/3 of the best makespan; with
any costs it is list scheduling, within 2 − 1/workers of it. Round-robin rounds (the schedule
this replaces: round r on worker (r − 1) mod workers) cannot balance `batches` that are not a
multiple of the workers, and runs a sequential round on one worker while the others idle.

Dask's own work stealing stays off (cluster.connect): it moves single tasks, which would split
a group. The client holds the queue and hands a worker its next group when it has finished the
last, which is the stealing the limits above allow.

Expected cost (`expected_cost`) is seconds where anything of the run has been measured (this
session or an earlier one), and planned tokens before that; it is only ever compared within one
unit.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from langbench.run import plan
from langbench.vocab import ParamsError

RULE = "cost-first"
UNIT = "config × round"  # what one group is


@dataclass(frozen=True)
class Group:
    """The batches that must share a worker: one config's batches of one round, in plan order.
    `key` is `<config_id>-b<round>`; `order` is its first batch's plan order."""
    key: str
    round: int
    config_id: str
    batches: tuple[plan.Batch, ...]

    @property
    def order(self) -> int:
        return self.batches[0].order

    @property
    def batch_ids(self) -> list[str]:
        return [b.batch_id for b in self.batches]


def group_key(batch: plan.Batch) -> str:
    """The group a batch belongs to: `<config_id>-b<round>` (`c1-b1` in a one-round plan too)."""
    return f"{batch.config_id}-b{plan.round_of(batch.batch_id)}"


def groups(batches: Iterable[plan.Batch]) -> list[Group]:
    """`batches` (any subset of a plan) cut into groups, each in plan order, the groups ordered
    by their first batch."""
    out: dict[str, list[plan.Batch]] = {}
    for b in sorted(batches, key=lambda b: b.order):
        out.setdefault(group_key(b), []).append(b)
    return [Group(k, plan.round_of(bs[0].batch_id), bs[0].config_id, tuple(bs)) for k, bs in out.items()]


def check_workers(workers: int, where: str = "--workers") -> None:
    """The one schedule nothing can fit: no worker. ParamsError naming `where`."""
    if not isinstance(workers, int) or workers < 1:
        raise ParamsError(f"{where} {workers}: a cluster schedule needs at least one worker")


# --- expected cost -------------------------------------------------------------------------------

def cell(batch: plan.Batch) -> tuple[str, str, str]:
    """(config_id, mode, agent): the batches of one cell do the same work, round after round."""
    return batch.config_id, batch.mode, batch.agent


def _options_key(batch: plan.Batch) -> str:
    return json.dumps(batch.options, sort_keys=True)


@dataclass
class Measured:
    """Seconds per run of finished batch attempts, by cell and by the options sent (what the
    server did: every baseline batch of a run sends the same options)."""
    by_cell: dict[tuple, list[float]] = field(default_factory=dict)
    by_options: dict[str, list[float]] = field(default_factory=dict)
    every: list[float] = field(default_factory=list)

    def add(self, batch: plan.Batch, seconds: float, runs: int) -> None:
        """One attempt of `batch` that took `seconds` (wall, s) for `runs` runs (≥ 1)."""
        if runs < 1 or not seconds or seconds <= 0:
            return
        per_run = seconds / runs
        self.by_cell.setdefault(cell(batch), []).append(per_run)
        self.by_options.setdefault(_options_key(batch), []).append(per_run)
        self.every.append(per_run)

    @classmethod
    def from_rows(cls, rows: Iterable[dict], batches: Iterable[plan.Batch]) -> Measured:
        """From processes.jsonl rows ({"batch_id", "runs", "wall_s"}, and "started_unix" /
        "ended_unix" where the Dask runner wrote them: the worker's whole span of the batch),
        for the batches of `batches` (rows of others are skipped)."""
        by_id = {b.batch_id: b for b in batches}
        m = cls()
        for row in rows:
            b = by_id.get(row.get("batch_id"))
            if b is not None:
                m.add(b, span_s(row), int(row.get("runs") or 0))
        return m


def span_s(row: dict) -> float:
    """A processes row's batch time, s: the worker's span (ended − started) where recorded,
    else the agent process's wall time."""
    start, end = row.get("started_unix"), row.get("ended_unix")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start:
        return float(end - start)
    return float(row.get("wall_s") or 0.0)


@dataclass(frozen=True)
class Cost:
    value: float
    unit: str  # "s" | "tokens"
    source: str  # "cell" | "options" | "run" | "plan"


def planned_tokens(batch: plan.Batch, runs: int) -> float:
    """The plan's work for `runs` runs of `batch`: num_predict each (1 where it is not a fixed
    positive number: then the unit is runs). An agent task counts max_turns requests, so its
    runs weigh as much as a request each at most; concurrency and offload are not known to the
    plan (the model's layer count is the server's), and come in through measured times."""
    n = (batch.options or {}).get("num_predict")
    return float(runs * (n if isinstance(n, int) and n > 0 else 1))


def expected_cost(batch: plan.Batch, runs: int, measured: Measured) -> Cost:
    """The expected cost of `runs` runs of `batch` (its runs still to do): the median seconds
    per run of the same cell's finished batches × runs; else of batches that sent the same
    options (another agent, or another config's baseline); else of every finished batch;
    and before anything was measured, the plan's tokens (planned_tokens). Units: seconds in the
    first three cases, tokens in the last: `measured` empty or not decides for every batch at
    once, so costs compared with each other share a unit."""
    if runs <= 0:
        return Cost(0.0, "s" if measured.every else "tokens", "done")
    for source, values in (("cell", measured.by_cell.get(cell(batch))),
                           ("options", measured.by_options.get(_options_key(batch))),
                           ("run", measured.every)):
        if values:
            return Cost(runs * statistics.median(values), "s", source)
    return Cost(planned_tokens(batch, runs), "tokens", "plan")


KNOWN = ("cell", "options", "done")  # sources that measured this very work


def group_cost(group: Group, measured: Measured, runs_left: Callable[[plan.Batch], int]) -> Cost:
    """Σ expected_cost over the group's batches, each for `runs_left(batch)` runs; its source
    is the batches' one, or "mixed"."""
    costs = [expected_cost(b, runs_left(b), measured) for b in group.batches]
    sources = {c.source for c in costs if c.source != "done"}
    return Cost(sum(c.value for c in costs), costs[0].unit,
                sources.pop() if len(sources) == 1 else ("mixed" if sources else "done"))


def known(group: Group, measured: Measured, runs_left: Callable[[plan.Batch], int]) -> bool:
    """Whether every batch of the group left to run does work already measured (its cell's,
    or the same options')."""
    return all(expected_cost(b, runs_left(b), measured).source in KNOWN for b in group.batches)


def pick(queue: Sequence[Group], measured: Measured, runs_left: Callable[[plan.Batch], int]) -> Group:
    """The group an idle worker takes next: a group with work not yet measured first (the
    first round, and the later rounds of configs whose first batches still run: a cost not
    known is risked early, where a long one can still be balanced, not last); then the
    highest expected cost (LPT); ties by plan order. `queue` must not be empty."""
    return min(queue, key=lambda g: (known(g, measured, runs_left), -group_cost(g, measured, runs_left).value,
                                     g.order))


# --- pure schedules, for predictions, tests and the benchmark ------------------------------------

def lpt(costs: Sequence[float], workers: int) -> list[int]:
    """Longest processing time first: item i's worker (0 … workers-1). Items are taken by
    cost, highest first (ties: lower index), each to the least loaded worker (ties: lower
    index). ParamsError for fewer than one worker."""
    check_workers(workers)
    load = [0.0] * workers
    out = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        w = min(range(workers), key=lambda k: (load[k], k))
        out[i] = w
        load[w] += costs[i]
    return out


def round_robin(rounds: Sequence[int], workers: int) -> list[int]:
    """The schedule issue 27 replaces: each item (a batch or group) of round r (1, 2, …) on
    worker (r − 1) mod workers, whole rounds in turn."""
    check_workers(workers)
    return [(r - 1) % workers for r in rounds]


def makespan(durations: Sequence[float], assignment: Sequence[int], workers: int) -> float:
    """The longest worker's total (same unit as durations) when item i runs on assignment[i]
    and each worker runs its items one after another with no gap."""
    load = [0.0] * workers
    for d, w in zip(durations, assignment):
        load[w] += d
    return max(load) if load else 0.0


@dataclass(frozen=True)
class Slot:
    group: str
    worker: int
    start: float
    end: float


def simulate(waves: Sequence[Sequence[Group]], duration: Callable[[plan.Batch], float], workers: int,
             measured: Measured | None = None) -> tuple[float, list[Slot]]:
    """The cost-first policy replayed on known batch durations (s): wave after wave (a
    sequential plan's rounds; one wave for a fixed plan), every worker idle at a wave's start,
    the earliest-free worker (ties: lower index) taking `pick`'s group, its estimates made from
    the batches finished by then (and `measured`, e.g. an earlier session's). Returns
    (makespan in s, one Slot per group)."""
    check_workers(workers)
    measured = measured or Measured()
    finished: list[tuple[float, plan.Batch, float]] = []  # (end, batch, seconds), not yet in measured
    slots: list[Slot] = []
    t0 = 0.0
    for wave in waves:
        free = [t0] * workers
        queue = list(wave)
        while queue:
            w = min(range(workers), key=lambda k: (free[k], k))
            now = free[w]
            for item in sorted((x for x in finished if x[0] <= now + 1e-12), key=lambda x: x[0]):
                measured.add(item[1], item[2], len(item[1].runs))
                finished.remove(item)
            g = pick(queue, measured, lambda b: len(b.runs))
            queue.remove(g)
            t = now
            for b in g.batches:
                t += duration(b)
                finished.append((t, b, duration(b)))
            slots.append(Slot(g.key, w, now, t))
            free[w] = t
        t0 = max(free)
    return t0, slots
