"""Rounds and the sequential stop (issue 26), for the single-server loop and the Dask client.

A plan is `batches` rounds, each a batch of every cell (plan.build). The fixed rule runs them
all as one wave; the sequential rule (`stop: {rule: sequential, min_batches, max_batches}`)
runs them round by round and, after each round from min_batches on, asks `decide(run_dir,
round) -> {"stop": bool, "open": [verdicts still open], "verdicts": [...]}` whether every
headline verdict is decided. The runner knows no statistics: `decide` is handed in from above
(langbench.cli, where the runner and the analysis meet), so run/ imports nothing of analysis/.

The knee rule (`stop: {rule: knee}`, a scale study's load ladder) runs the load levels in
ascending order, every round of one level before the next, and before each level past the first
asks `decide_knees(run_dir, n) -> {"<agent> <endpoint>": {threshold: knee N}}` which clients have
every knee decided below N (analysis/scale.py: a CI over the batches of the levels below). Past
its knees a client runs one batch per cell, enough for its curve (lag, tok/s, CPU per token),
and its other batches there are skipped: they would only narrow CIs that no knee needs. The
manifest's "stopping" keeps each look and the skipped batches.

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
DecideKnees = Callable[[Path, int], dict]


def sequential(params) -> bool:
    return (params.raw.get("stop") or {}).get("rule") == "sequential"


def knee_rule(params) -> bool:
    return (params.raw.get("stop") or {}).get("rule") == "knee"


def skipped(manifest: dict) -> set[str]:
    """The batches the knee rule skipped (empty for every other rule)."""
    return set((manifest.get("stopping") or {}).get("skipped") or ())


def skipped_runs(manifest: dict, batches: list[plan.Batch]) -> int:
    gone = skipped(manifest)
    return sum(len(b.runs) for b in batches if b.batch_id in gone)


def level_of(batch: plan.Batch) -> int:
    return int(batch.streams or 1)


def thin(params, wave: list[plan.Batch], decided: dict) -> tuple[list[plan.Batch], list[plan.Batch]]:
    """(kept, skipped) of one load level's batches under the knee rule: a client whose every
    knee on the batch's endpoint is decided (`decided`'s "<agent> <endpoint>" keys) keeps its
    first batch of each cell, in run order; every other client keeps them all."""
    kept, gone, seen = [], [], set()
    for b in wave:
        who = f"{b.agent} {plan.endpoint_of(params, b.config)}"
        cell = (who, b.config_id)
        if who in decided and cell in seen:
            gone.append(b)
        else:
            kept.append(b)
            seen.add(cell)
    return kept, gone


def check(params, decide: Decide | None, decide_knees: DecideKnees | None = None) -> None:
    """A sequential file needs a decision to stop on, a knee file the knees: raised before
    anything is written."""
    if knee_rule(params) and decide_knees is None:
        raise ParamsError(f"{params.path}: stop.rule: knee needs the knees decided before each load level, "
                          "which `python -m langbench sweep` (langbench.cli.sweep) hands the runner; "
                          "run_sweep was called without `decide_knees`")
    if sequential(params) and decide is None:
        raise ParamsError(f"{params.path}: stop.rule: sequential needs the decision after each round, which "
                          "`python -m langbench sweep` (langbench.cli.sweep) hands the runner; "
                          "run_sweep was called without `decide`")


def stopped(manifest: dict) -> bool:
    """Whether a sequential run already stopped: every headline verdict was decided."""
    return bool((manifest.get("stopping") or {}).get("stop"))


def waves(params, batches: list[plan.Batch]) -> list[tuple[int | None, list[plan.Batch]]]:
    """(round, its batches) in run order under the sequential rule; one wave of every batch
    (round None) under the fixed one; under the knee rule one wave per load level, ascending
    (round None: the rule looks before a level, not after a round)."""
    if knee_rule(params):
        levels = sorted({level_of(b) for b in batches})
        return [(None, [b for b in batches if level_of(b) == n]) for n in levels]
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
    if state.get("rule") == "knee":
        decided = sorted((state.get("looks") or [{}])[-1].get("decided") or ())
        return f" · knees decided: {', '.join(decided)}" if decided else ""
    return f" · open: {', '.join(state['open'])}" if state["open"] else " · all verdicts decided"


def look_knees(params, run_dir: Path, manifest: dict, manifest_path: Path, wave: list[plan.Batch],
               first: bool, decide_knees: DecideKnees | None) -> list[plan.Batch]:
    """Before a load level of the knee rule: which clients' knees are decided below it, kept
    in the manifest with the batches it skips (written); returns the batches to run."""
    state = manifest.setdefault("stopping", {"rule": "knee", "looks": [], "skipped": []})
    n = level_of(wave[0])
    done = skipped(manifest)
    if first or decide_knees is None:
        return [b for b in wave if b.batch_id not in done]
    decided = decide_knees(run_dir, n)
    kept, gone = thin(params, wave, decided)
    state["looks"] = [x for x in state.get("looks", []) if x["n"] != n] + [
        {"n": n, "at": now(), "decided": decided, "skipped": len(gone)}]
    state["skipped"] = sorted(done | {b.batch_id for b in gone})
    storage.write_json(manifest_path, manifest)
    return [b for b in kept if b.batch_id not in done]


def run(params, run_dir: Path, manifest: dict, manifest_path: Path, batches: list[plan.Batch],
        run_wave: Callable[[list[plan.Batch]], None], decide: Decide | None,
        say: Callable[[str], None] = lambda s: None, decide_knees: DecideKnees | None = None,
        skip: Callable[[list[plan.Batch]], None] = lambda gone: None) -> None:
    """Run `batches` wave by wave with run_wave, looking after each round of a sequential
    plan and stopping once every headline verdict is decided (or after the last round); under
    the knee rule, looking before each load level and handing what it skips to `skip`."""
    if knee_rule(params):
        for k, (_, wave) in enumerate(waves(params, batches)):
            todo = look_knees(params, run_dir, manifest, manifest_path, wave, k == 0, decide_knees)
            gone = [b for b in wave if b.batch_id in skipped(manifest)]
            if gone:
                skip(gone)
                last = (manifest["stopping"]["looks"] or [{}])[-1]
                say(f"sweep: N = {level_of(wave[0])}: knees decided below it for "
                    f"{', '.join(sorted(last.get('decided') or {})) or 'no client'}; "
                    f"{len(gone)} of their batches skipped (one batch per cell is kept)")
            run_wave(todo)
        return
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
