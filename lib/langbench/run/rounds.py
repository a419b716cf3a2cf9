"""Rounds and the sequential stop (issue 26), for the single-server loop and the Dask client.

A plan is `batches` rounds, each a batch of every cell (plan.build). The fixed rule runs them
all as one wave; the sequential rule (`stop: {rule: sequential, min_batches, max_batches}`)
runs them round by round and, after each round from min_batches on, asks `decide(run_dir,
round) -> {"stop": bool, "open": [verdicts still open], "verdicts": [...]}` whether every
headline verdict is decided. The runner knows no statistics: `decide` is handed in from above
(langbench.cli, where the runner and the analysis meet), so run/ imports nothing of analysis/.

The manifest's "stopping" keeps the last look (its round, whether it stopped, the open
verdicts, every verdict's decisions with the round it was decided in) and one line per look;
a resumed run re-looks at the rounds it finished and goes on from there, and a run that
stopped stays stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from langbench import storage
from langbench.run import plan
from langbench.run.batches import now
from langbench.vocab import ParamsError

Decide = Callable[[Path, int], dict]


def sequential(params) -> bool:
    return (params.raw.get("stop") or {}).get("rule") == "sequential"


def check(params, decide: Decide | None) -> None:
    """A sequential file needs a decision to stop on: raised before anything is written."""
    if sequential(params) and decide is None:
        raise ParamsError(f"{params.path}: stop.rule: sequential needs the decision after each round, which "
                          "`python -m langbench sweep` (langbench.cli.sweep) hands the runner; "
                          "run_sweep was called without `decide`")


def stopped(manifest: dict) -> bool:
    """Whether a sequential run already stopped: every headline verdict was decided."""
    return bool((manifest.get("stopping") or {}).get("stop"))


def waves(params, batches: list[plan.Batch]) -> list[tuple[int | None, list[plan.Batch]]]:
    """(round, its batches) in run order under the sequential rule; one wave of every batch
    (round None) under the fixed one."""
    if not sequential(params):
        return [(None, list(batches))]
    return [(plan.round_of(wave[0].batch_id), wave) for wave in plan.rounds(batches)]


def look(params, run_dir: Path, manifest: dict, manifest_path: Path, round_: int,
         decide: Decide) -> dict | None:
    """After round `round_`: decide (from min_batches on), keep the look in the manifest
    (written), and return it; None before min_batches."""
    stop = params.raw["stop"]
    if round_ < stop.get("min_batches", 2):
        return None
    got = decide(run_dir, round_)
    state = manifest.get("stopping") or {}
    looks = [x for x in state.get("looks", []) if x["round"] < round_]
    looks.append({"round": round_, "at": now(), "stop": bool(got["stop"]), "open": list(got["open"])})
    manifest["stopping"] = {"rule": "sequential", "min_batches": stop.get("min_batches", 2),
                            "max_batches": stop["max_batches"], "round": round_, "stop": bool(got["stop"]),
                            "open": list(got["open"]), "verdicts": got["verdicts"],
                            "decided_in_round": {v["metric"]: (v["decisions"][-1]["stopping_round"]
                                                               if v["decisions"] else None)
                                                 for v in got["verdicts"]},
                            "looks": looks}
    storage.write_json(manifest_path, manifest)
    return manifest["stopping"]


def open_note(manifest: dict) -> str:
    """The progress bar's word on the verdicts still open ('' before the first look)."""
    state = manifest.get("stopping")
    if not state:
        return ""
    return f" · open: {', '.join(state['open'])}" if state["open"] else " · all verdicts decided"


def run(params, run_dir: Path, manifest: dict, manifest_path: Path, batches: list[plan.Batch],
        run_wave: Callable[[list[plan.Batch]], None], decide: Decide | None,
        say: Callable[[str], None] = lambda s: None) -> None:
    """Run `batches` wave by wave with run_wave, looking after each round of a sequential
    plan and stopping once every headline verdict is decided (or after the last round)."""
    for round_, wave in waves(params, batches):
        if round_ is not None and stopped(manifest) and round_ > manifest["stopping"]["round"]:
            break
        run_wave(wave)
        if round_ is None:
            continue
        state = look(params, run_dir, manifest, manifest_path, round_, decide)
        if state is not None:
            say(f"sweep: after round {round_} of {params.raw['stop']['max_batches']}: "
                + ("every verdict decided, stopping" if state["stop"] else
                   f"open: {', '.join(state['open']) or 'none'}"))
        if state is not None and state["stop"]:
            break
