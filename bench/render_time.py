"""Benchmark: how long `make render` takes on a stored run (target: at most 60 s here).

    .venv/bin/python bench/render_time.py outputs/<run>

Re-renders a copy of the run (the original is left untouched) and prints the wall time of the
whole render and of each notebook.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0


def main() -> int:
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "records.jsonl").exists():
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / Path(sys.argv[1]).name
        shutil.copytree(sys.argv[1], run, ignore=shutil.ignore_patterns("html", "notebooks", "index.html"))
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run)],
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        index = (run / "index.html").read_text() if (run / "index.html").exists() else ""
    for name, status in re.findall(r"<b>(.*?)</b> <span class=\"status\">\[(.*?)\]", index):
        print(f"  {status:>16}  {name}")
    print(f"render: {wall:.1f} s (target <= {TARGET_S:.0f} s: {'met' if wall <= TARGET_S else 'MISS'}), exit {done.returncode}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
