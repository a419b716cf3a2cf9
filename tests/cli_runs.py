"""Sweeps of the tests' parameter files, made as a user makes them: through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sampling import sampled_yaml


def fixture_params(name: str, outputs: Path) -> Path:
    """The parameter file a sweep of tests/fixtures/<name> into `outputs` runs: the file itself,
    or under LANGBENCH_TEST_SEED / LANGBENCH_TEST_TEMPERATURE its sampled copy, written beside
    the outputs (not a run in them). A test that resumes a fixture's run sweeps this file again:
    the unsampled one would be 'other parameters'."""
    params_dir = outputs.with_name(outputs.name + "-params")
    params_dir.mkdir(exist_ok=True)
    return sampled_yaml(Path(__file__).parent / "fixtures" / name, params_dir)


def sweep_fixture(name: str, outputs: Path, run_id: str) -> Path:
    """One uninterrupted sweep of tests/fixtures/<name> through the CLI into `outputs`."""
    params = fixture_params(name, outputs)
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(params), "--run-id", run_id],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return outputs / run_id
