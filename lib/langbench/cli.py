"""`python -m langbench COMMAND`: setup, sweep, report, render.

Exit codes: 0 done; 1 a run or notebook failed, or the server could not be used; 2 bad input
(parameter file, run id, a run directory that is corrupt, busy or would mix
sessions); 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from langbench import stop


def main(argv: list[str] | None = None) -> int:
    # First: SIGTERM and SIGINT raise KeyboardInterrupt (context managers stop the embedded
    # server) and are remembered, whatever mask or SIG_IGN the parent left (langbench.stop).
    stop.install()
    parser = argparse.ArgumentParser(prog="langbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("setup", help="find or build ollama, assemble and register the model, build the Rust agent and the replay server")
    p.add_argument("--llama-cpp", action="store_true",
                   help="build llama.cpp's llama-server too (make test does; a sweep with server.kind "
                        "llama-cpp builds it on first need)")
    p.add_argument("--llama-cpp-background", action="store_true",
                   help="start llama-server's build at idle CPU priority and return without waiting for it "
                        "(make test does; what starts llama-server first waits for the build)")
    for name, text in (("sweep", "run (or resume) a sweep into outputs/<run-id>"),
                       ("report", "sweep, then execute and render every notebook")):
        p = sub.add_parser(name, help=text)
        p.add_argument("params", help="parameter file, e.g. parameters/quick.yaml")
        p.add_argument("--run-id", help="resume this run id (or start it); default: <name>-<time>")
        p.add_argument("--allow-mixed", action="store_true",
                       help="resume even if Ollama, model, parameters or host differ from the "
                            "first session (each session's provenance is kept; the report says so), "
                            "or with --cluster, when the workers serve different model digests")
        p.add_argument("--cluster", metavar="ADDRESS",
                       help="run the batches on dask.distributed workers, one Ollama server each: "
                            "'local' (a LocalCluster: one worker per GPU found through NVML) or a "
                            "scheduler address (tcp://host:8786); default: the parameter file's cluster:")
        p.add_argument("--workers", type=int, metavar="N",
                       help="with --cluster local: N workers, each with an embedded CPU server")
    p = sub.add_parser("peers", help="other benchmark tools beside langbench's clients on one server (issue 43)")
    p.add_argument("params", nargs="?", default="parameters/peers.yaml", help="peers parameter file")
    p.add_argument("--url", help="the server to use instead of the file's (an Ollama URL)")
    p.add_argument("--run-id", help="the run directory's name under outputs/ (default: <name>-<time>)")
    p.add_argument("--no-render", action="store_true", help="run only; `render` the run directory later")
    p = sub.add_parser("render", help="execute and render the notebooks of a stored run")
    p.add_argument("run_dir", help="outputs/<run-id>")
    p = sub.add_parser("profile", help="a replay profile from a run swept with `capture: true` (server.kind: replay reads it)")
    p.add_argument("run_dir", help="outputs/<run-id>")
    p.add_argument("--out", help="where to write it (default: <run>/profile.json)")
    p = sub.add_parser("compare", help="compare two stored runs: every shared metric and cell, rendered to HTML")
    p.add_argument("run_a", help="the reference run directory (A)")
    p.add_argument("run_b", help="the run compared with it (B)")
    p.add_argument("--out", help="where to write (default outputs/compare-<A>-vs-<B>)")
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="compare runs of different models (the report says so at the top)")
    p = sub.add_parser("bundle", help="build what a GPU host without internet needs (≤ 64 MiB)")
    p.add_argument("kind", choices=["gpu"])
    p.add_argument("--out", default="gpu-bundle", help="the bundle's folder (replaced)")
    p.add_argument("--ollama", metavar="PATH", help="pack this ollama binary instead of building the "
                   "portable one (needs --ollama-cflags: what it was built with; the tests use it)")
    p.add_argument("--ollama-cflags", metavar="FLAGS", help="the CGO flags the --ollama binary was built with")
    p.add_argument("--server", choices=["both", "ollama", "llama-cpp"], default="both",
                   help="whose sources it carries: both (default), or one (llama-cpp leaves out Ollama's "
                        "binary and ggml, 31 MB, so that bundle and checkout fit one device call)")
    p = sub.add_parser("gpu-host", help="on a GPU host: CUDA backend, layout, synthetic model, check")
    p.add_argument("bundle", help="the folder `bundle gpu` made")
    p.add_argument("--work", default="/tmp/langbench-gpu", help="where to build and lay out")
    p.add_argument("--server", choices=["ollama", "llama-cpp"], default="ollama",
                   help="ollama (default): its CUDA backend and the gemma3:latest-shaped model; llama-cpp: "
                        "llama-server built with CUDA for this GPU and the text-only 2-block model "
                        "(server.kind: llama-cpp), Ollama untouched")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel compile jobs (default: every CPU)")
    p.add_argument("--small", action="store_true", help="a 2-block model (tests)")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA backend (a CPU host)")
    args = parser.parse_args(argv)

    from langbench.run.agents import AgentMissing
    from langbench.vocab import ParamsError
    from langbench.run.server import ServerError
    from langbench.storage import RunDirError
    try:
        code = _command(args)
        stop.check()  # a signal whose exception was lost on the way still stops with 130
        return code
    except (ParamsError, RunDirError) as e:
        print(f"langbench: bad input: {e}", file=sys.stderr)
        return 2
    except (ServerError, AgentMissing) as e:
        print(f"langbench: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("langbench: interrupted; rerun with the same --run-id to resume", file=sys.stderr)
        return 130


def _command(args: argparse.Namespace) -> int:
    if args.command == "setup":
        from langbench.run import provision
        return provision.main(llama_cpp=args.llama_cpp, llama_cpp_background=args.llama_cpp_background)
    if args.command == "sweep":
        run_dir = sweep(args.params, args.run_id, allow_mixed=args.allow_mixed,
                        cluster=args.cluster, workers=args.workers)
        print(run_dir)
        return 0
    if args.command == "peers":
        from langbench.run.peers import run_peers
        run_dir = run_peers(args.params, args.url, args.run_id)
        print(run_dir)
        if args.no_render:
            return 0
        from langbench.report import render as report
        return report.render(run_dir)
    if args.command in ("bundle", "gpu-host"):
        from langbench.gpuhost import bundle
        try:
            if args.command == "bundle":
                servers = bundle.SERVERS if args.server == "both" else (args.server,)
                bundle.bundle(Path(args.out), Path(args.ollama) if args.ollama else None, args.ollama_cflags, servers)
            elif args.server == "llama-cpp":
                bundle.prepare_llama_cpp_host(Path(args.bundle), Path(args.work), not args.no_cuda, args.jobs)
            else:
                bundle.prepare_host(Path(args.bundle), Path(args.work), args.small, not args.no_cuda)
        except bundle.GpuError as e:
            print(f"langbench: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "profile":
        from langbench.analysis import profile
        try:
            print(profile.write(args.run_dir, args.out))
        except profile.ProfileError as e:
            print(f"langbench: {e}", file=sys.stderr)
            return 2
        return 0
    if args.command == "compare":
        from langbench.report.sections import compare
        print(compare.render(args.run_a, args.run_b, args.out, args.allow_model_mismatch))
        return 0
    if args.command == "report":  # a sweep, then a render: the runner never imports the report
        run_dir = sweep(args.params, args.run_id, allow_mixed=args.allow_mixed,
                        cluster=args.cluster, workers=args.workers, summarise=False)  # render writes it
        from langbench.report import render as report
        return report.render(run_dir)
    from langbench.report import render as report
    return report.render(args.run_dir)


def sweep(params_file: str | Path, run_id: str | None = None, outputs: Path | None = None,
          summarise: bool = True, **kw) -> Path:
    """A sweep (run/, which writes the records), then summary.csv (analysis/, which reads them):
    the runner imports no analysis, so what a finished sweep leaves beside its records is written
    here, where both floors meet. The same holds for a sequential stop: the decision after each
    round needs the analysis (analysis/stopping.py), so it is handed to the runner from here as
    a plain callable. Returns the run directory."""
    from langbench.run.sweep import run_sweep
    kw.setdefault("decide", _decide)
    kw.setdefault("decide_knees", _decide_knees)
    run_dir = run_sweep(params_file, run_id, **kw) if outputs is None else \
        run_sweep(params_file, run_id, outputs=outputs, **kw)
    if summarise:  # (`report` renders next, and its render writes the summary from the records it reads)
        from langbench.analysis import summary  # pandas and scipy load only once there is a run to read:
        summary.write_summary(run_dir)          # a parameter file refused with exit 2 costs no import of them
    return run_dir


def _decide(run_dir: str | Path, round_: int) -> dict:
    """analysis.stopping.decide, imported at the first look of a sequential sweep."""
    from langbench.analysis import stopping
    return stopping.decide(run_dir, round_)


def _decide_knees(run_dir: str | Path, n: int) -> dict:
    """analysis.scale.decided_below, before each load level of a knee-rule sweep."""
    from langbench.analysis import scale
    return scale.decided_below(run_dir, n)


def run_into(params_file: str | Path, run_dir: str | Path = "") -> str:
    """The sweep notebook's entry: run or resume `params_file` into `run_dir` (a new run id
    under outputs/ when empty), as `python -m langbench sweep` does; returns the run directory."""
    if str(run_dir):
        return str(sweep(params_file, Path(run_dir).name, outputs=Path(run_dir).parent))
    return str(sweep(params_file))


if __name__ == "__main__":
    sys.exit(main())
