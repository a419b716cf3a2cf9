"""Sweeps of the tests' parameter files, made as a user makes them: through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sampling import sampled_yaml


def sweep_fixture(name: str, outputs: Path, run_id: str) -> Path:
    """One uninterrupted sweep of tests/fixtures/<name> through the CLI into `outputs`."""
    params_dir = outputs.with_name(outputs.name + "-params")  # beside the outputs, not a run in them
    params_dir.mkdir(exist_ok=True)
    params = sampled_yaml(Path(__file__).parent / "fixtures" / name, params_dir)
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(params), "--run-id", run_id],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return outputs / run_id
