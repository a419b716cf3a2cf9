"""`python -m langbench COMMAND`: setup, sweep, render, report, serve."""

from __future__ import annotations

import argparse
import signal
import sys


def _sigterm_as_interrupt(signum, frame):  # so context managers stop the embedded server
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="langbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="build/find ollama, assemble and register the model, build the Rust agent")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    if args.command == "setup":
        from langbench import provision
        return provision.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
