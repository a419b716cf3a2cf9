"""`python -m langbench COMMAND`: setup, sweep, report, render.

Exit codes: 0 done; 1 a run or notebook failed, or the server could not be used; 2 bad input
(parameter file, run id, run directory); 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys


def _sigterm_as_interrupt(signum, frame):  # so context managers stop the embedded server
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="langbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup", help="find or build ollama, assemble and register the model, build the Rust agent")
    p = sub.add_parser("sweep", help="run (or resume) a sweep into outputs/<run-id>")
    p.add_argument("params", help="parameter file, e.g. parameters/quick.yaml")
    p.add_argument("--run-id", help="resume this run id (or start it); default: <name>-<time>")
    p = sub.add_parser("report", help="sweep, then execute and render every notebook")
    p.add_argument("params", help="parameter file, e.g. parameters/quick.yaml")
    p.add_argument("--run-id", help="resume this run id (or start it); default: <name>-<time>")
    p = sub.add_parser("render", help="execute and render the notebooks of a stored run")
    p.add_argument("run_dir", help="outputs/<run-id>")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)

    from langbench.agents import AgentMissing
    from langbench.params import ParamsError
    from langbench.server import ServerError
    try:
        if args.command == "setup":
            from langbench import provision
            return provision.main()
        if args.command == "sweep":
            from langbench.sweep import run_sweep
            run_dir = run_sweep(args.params, args.run_id)
            print(run_dir)
            return 0
        from langbench import report
        if args.command == "report":
            return report.report(args.params, args.run_id)
        return report.render(args.run_dir)
    except ParamsError as e:
        print(f"langbench: bad input: {e}", file=sys.stderr)
        return 2
    except (ServerError, AgentMissing) as e:
        print(f"langbench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("langbench: interrupted; rerun with the same --run-id to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
