"""Sweeps of the tests' parameter files, made as a user makes them: through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def sweep_fixture(name: str, outputs: Path, run_id: str) -> Path:
    """One uninterrupted sweep of tests/fixtures/<name> through the CLI into `outputs`."""
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep",
                           str(Path(__file__).parent / "fixtures" / name), "--run-id", run_id],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return outputs / run_id
