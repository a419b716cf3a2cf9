"""The tests' sampling, and the one-line switch that changes it (issue 22).

Seeded text differs between CPUs (other SIMD paths, other rounding), so a real-model test must
hold whatever text the model samples. To check that a test does, run the whole suite under
another seed and temperature:

    LANGBENCH_TEST_SEED=11 LANGBENCH_TEST_TEMPERATURE=0.9 make test

Every seed and temperature a test sends to the real server then goes through `sampled` (the
options of jobs files) or `sampled_yaml` (the parameter files under tests/fixtures/), so the
same tests run on other text. Unset, each test keeps the values written in it.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def _env(name: str, kind):
    raw = os.environ.get(name, "").strip()
    return kind(raw) if raw else None


SEED = _env("LANGBENCH_TEST_SEED", int)
TEMPERATURE = _env("LANGBENCH_TEST_TEMPERATURE", float)


def sampled(options: dict) -> dict:
    """`options` with its seed and temperature replaced by the switch's, where it sets them
    (a key the options lack is not added: an absent option means Ollama's default)."""
    out = dict(options)
    if SEED is not None and "seed" in out:
        out["seed"] = SEED
    if TEMPERATURE is not None and "temperature" in out:
        out["temperature"] = TEMPERATURE
    return out


def sampled_yaml(src: Path, dest_dir: Path) -> Path:
    """The parameter file `src`, with the switch applied to `fixed` and to a temperature
    factor of one level, written under `dest_dir` (the file itself when the switch is off);
    the files it names relative to itself (prompts' `file`, tasks' `conversations`) are named
    by their absolute paths, so the copy reads what `src` reads."""
    if SEED is None and TEMPERATURE is None:
        return src
    doc = yaml.safe_load(src.read_text())
    here = Path(src).resolve().parent
    for entry in doc.get("prompts") or []:
        if "file" in entry:
            entry["file"] = str(here / entry["file"])
    for task in doc.get("tasks") or []:
        if "conversations" in task:
            task["conversations"] = str(here / task["conversations"])
    doc["fixed"] = sampled(doc.get("fixed") or {})
    levels = (doc.get("matrix") or {}).get("temperature")
    if TEMPERATURE is not None and isinstance(levels, list) and len(levels) == 1:
        doc["matrix"]["temperature"] = [TEMPERATURE]  # a one-level factor keeps its one level
    dest = Path(dest_dir) / src.name
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def describe() -> str:
    """One line for the test report's header."""
    if SEED is None and TEMPERATURE is None:
        return "sampling: each test's own seed and temperature"
    return f"sampling: seed {SEED if SEED is not None else 'as written'}, " \
           f"temperature {TEMPERATURE if TEMPERATURE is not None else 'as written'} (LANGBENCH_TEST_*)"
