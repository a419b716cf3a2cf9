"""The replay twin of a parameter file (issue 42): the same design on the replay server of a
profile made from its capture, written as a parameter file of its own and checked.

    python3 bench/replay_twin.py parameters/scale-gpu.yaml outputs/<run>/profile.json OUT.yaml
    python3 -m langbench sweep OUT.yaml

`--time-scale` (default 1: the captured pace) and `--load` (default profile: each N replays the
captured level nearest it; ideal: the lowest level's timing at every N) set the replay server's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from langbench.run import params, replay
from langbench.vocab import ParamsError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("params", type=Path, help="the real run's parameter file")
    ap.add_argument("profile", type=Path, help="the profile `python -m langbench profile RUN` made of its capture")
    ap.add_argument("out", type=Path, help="the twin's parameter file (written)")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--load", choices=["profile", "ideal"], default="profile")
    args = ap.parse_args(argv)
    doc = replay.twin(args.params, args.profile, args.time_scale, args.load)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        params.load(args.out)
    except ParamsError as e:
        print(f"replay_twin: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
