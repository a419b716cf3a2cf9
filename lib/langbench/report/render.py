"""The report: papermill executes each notebook into the run, nbconvert renders HTML (full and
code-free), and index.html links them with the headline findings.

A notebook that fails leaves the others rendered; the index says which failed and why, and the
exit code is 1.
"""

from __future__ import annotations

import asyncio
import html
import os
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from langbench import paths, stop, storage, summary

NOTEBOOKS = ("tr112", "sweep", "throughput", "ttft", "success_patterns", "decision_matrix", "validity", "gpu",
             "concurrency")
TITLES = {
    "tr112": "TR112, claim by claim, and the verdict table",
    "sweep": "Sweep: what ran, what failed",
    "throughput": "Throughput (seed §3)",
    "ttft": "Time to first token (seed §4)",
    "success_patterns": "Optimization success patterns (seed §5–6)",
    "decision_matrix": "Decision matrix and factor models (seed §7, Appendix B)",
    "validity": "Measurement validity (seed Appendix C)",
    "gpu": "GPU: offload, power and energy per token",
    "concurrency": "Concurrency: N streams and open-loop arrivals (TR110/TR113)",
}


def say(msg: str) -> None:
    sys.stderr.write(f"report: {msg}\n")  # one write: notebooks run in threads side by side
    sys.stderr.flush()


def execute(name: str, run_dir: Path, parameters: dict | None = None) -> Path:
    """Execute notebooks/<name>.ipynb into <run_dir>/notebooks with papermill; its parameters
    are `parameters`, or (None) the run directory itself."""
    import papermill as pm
    out = run_dir / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel starts in the repo root (nbclient's resources path), not through papermill's
    # cwd=, which chdirs the whole process: notebooks run in threads side by side (_render)
    pm.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                        parameters={"run_dir": str(run_dir.resolve())} if parameters is None else parameters,
                        kernel_name="python3", progress_bar=False,
                        resources={"metadata": {"path": str(paths.ROOT)}},
                        # the kernel's own log is noise here: "running over TCP without encryption",
                        # and "KeyboardInterrupt caught" as jupyter_client interrupts every kernel
                        # it shuts down; a cell's error is in the notebook and fails the render
                        extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    return out


def to_html(notebook: Path, html_dir: Path) -> list[Path]:
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(notebook, as_version=4)
    written = []
    for suffix, exclude in (("", False), ("-nocode", True)):
        exporter = HTMLExporter(exclude_input=exclude, exclude_input_prompt=exclude,
                                exclude_output_prompt=exclude)
        body, _ = exporter.from_notebook_node(nb)
        target = html_dir / f"{notebook.stem}{suffix}.html"
        tmp = target.with_suffix(".html.tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written


def render(run_dir: str | Path, notebooks=NOTEBOOKS) -> int:
    """Execute and render every notebook of a stored run; write index.html. 0 if all rendered."""
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists() or not (run_dir / "records.jsonl").exists():
        from langbench.params import ParamsError
        raise ParamsError(f"{run_dir}: not a run directory (no manifest.json/records.jsonl): "
                          "run `make report` or `python -m langbench sweep` first")
    with storage.locked(run_dir, "render"):
        return _render(run_dir, notebooks)


def jobs(n_notebooks: int) -> int:
    """How many notebooks execute at once: one per CPU this process may use, at most 4 (each
    kernel is one busy process of a few hundred MB), never more than there are notebooks."""
    return max(1, min(4, len(os.sched_getaffinity(0)), n_notebooks))


def _render(run_dir: Path, notebooks) -> int:
    html_dir = run_dir / "html"
    html_dir.mkdir(parents=True, exist_ok=True)
    summary.write_summary(run_dir)
    # Each notebook is its own kernel (a process), so they run side by side; the index lists
    # them in the report's order whatever order they end in.
    pool = ThreadPoolExecutor(max_workers=jobs(len(notebooks)), thread_name_prefix="render")
    try:
        futures = {name: pool.submit(_render_one, name, run_dir, html_dir) for name in notebooks}
        results = {name: futures[name].result() for name in notebooks}
    finally:  # a stop signal: start no further notebook, let the running ones end
        pool.shutdown(wait=True, cancel_futures=True)
    write_index(run_dir, results)
    failed = [n for n, r in results.items() if not r["ok"]]
    say(f"{run_dir / 'index.html'} ({len(notebooks) - len(failed)}/{len(notebooks)} notebooks ok)")
    return 1 if failed else 0


def _render_one(name: str, run_dir: Path, html_dir: Path) -> dict:
    """Execute one notebook and render its HTML (in a worker thread); its result for the index."""
    try:
        return _execute_and_convert(name, run_dir, html_dir)
    finally:
        # nbclient runs its coroutines on an event loop that jupyter_core makes for this thread
        # and never closes (a ResourceWarning when the thread ends): close it; the thread's next
        # notebook gets a new one
        from jupyter_core.utils import ensure_event_loop
        loop = ensure_event_loop()
        asyncio.set_event_loop(None)
        loop.close()


def _execute_and_convert(name: str, run_dir: Path, html_dir: Path) -> dict:
    stop.check()  # a stop signal whose exception was lost: render no further notebook
    started = time.monotonic()
    say(f"executing {name}")
    try:
        executed = execute(name, run_dir)
        result = {"ok": True}
    except Exception as e:  # papermill raises PapermillExecutionError with the cell's error
        result = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:2000]}
        executed = run_dir / "notebooks" / f"{name}.ipynb"
        say(f"{name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    if executed.exists():  # a failed notebook is rendered too: its error is the artefact
        try:
            to_html(executed, html_dir)
        except Exception as e:
            result = {"ok": False, "error": f"render: {type(e).__name__}: {e}"[:2000]}
    result["seconds"] = time.monotonic() - started
    return result


def glance(run_dir: Path) -> dict:
    """What the index's first screen shows, recomputed from the records: the first line (how
    far the run got), the verdict table, the TR112 claim table, two key figures (PNG, base64,
    with captions) and short sentences, one fact each."""
    import base64
    import io

    import matplotlib.pyplot as plt

    from langbench import findings, tables
    from langbench.sections import throughput, tr112, ttft
    run = findings.Run.load(run_dir)
    header = run.header()
    v = tr112.verdicts(run)
    c = tr112.claims(run)
    vt = v.table
    verdict_html = ""
    if len(vt):
        shown = vt.drop(columns=["_class", "_sentence"])
        classes = pd.DataFrame("", index=shown.index, columns=shown.columns)
        classes["verdict"] = "v-" + vt["_class"]
        verdict_html = tables.to_html(shown, classes=classes)
    classes = pd.DataFrame("", index=c.table.index, columns=c.table.columns)
    classes["verdict"] = "c-" + c.table["verdict"].str.replace(" ", "-")
    claims_html = tables.to_html(c.table, classes=classes)
    figures = []
    for section, caption in ((throughput.throughput_overall(run), "Throughput per run (tok/s), warm runs, "
                              "by mode and language: boxes are quartiles, dots single runs."),
                             (ttft.ttft_warm(run), "Time to first token (ms), warm runs, by mode and "
                              "language.")):
        if section.figure is None:
            continue
        fig = section.figure
        fig.set_size_inches(5.2, 2.8)
        fig.axes[0].set_title(section.title.split(" ", 1)[-1], fontsize=9)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        figures.append((base64.b64encode(buf.getvalue()).decode(), caption))
    plt.close("all")
    sentences = [r for r in vt["_sentence"]] if len(vt) else []
    sentences += [c.sentence, *header.notes]
    return {"first_line": run.progress(), "host": header.sentence.split(" Model ", 1)[-1],
            "verdicts": verdict_html, "verdicts_note": v.sentence, "claims": claims_html,
            "figures": figures, "sentences": sentences}


def write_index(run_dir: Path, results: dict) -> Path:
    manifest = storage.read_json(run_dir / "manifest.json")
    try:
        g = glance(run_dir)
    except Exception:
        first = "The findings could not be computed: " + traceback.format_exc(limit=1)
        try:  # how far the run got, even so
            from langbench import findings
            first = findings.Run.load(run_dir).progress() + " " + first
        except Exception:
            pass
        g = {"first_line": first,
             "host": "", "verdicts": "", "verdicts_note": "", "claims": "", "figures": [], "sentences": []}
    items = []
    for name in results:
        r = results[name]
        status = "ok" if r["ok"] else "FAILED"
        links = (f'<a href="html/{name}-nocode.html">report</a> · <a href="html/{name}.html">with code</a>'
                 f' · <a href="notebooks/{name}.ipynb">notebook</a>')
        err = "" if r["ok"] else f'<pre class="error">{html.escape(r["error"])}</pre>'
        items.append(f'<li class="{status.lower()}"><b>{html.escape(TITLES[name])}</b> '
                     f'<span class="status">[{status}, {r.get("seconds", 0):.1f} s]</span><br>{links}{err}</li>')
    figures = "".join(f'<figure><img alt="{html.escape(cap)}" src="data:image/png;base64,{png}">'
                      f'<figcaption>{html.escape(cap)}</figcaption></figure>' for png, cap in g["figures"])
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>langbench report: {html.escape(manifest['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 84rem; margin: .6rem auto; padding: 0 1rem;
       line-height: 1.35; font-size: 14px; }}
h1 {{ font-size: 1.15rem; margin: .2rem 0; }} h2 {{ font-size: 1rem; margin: .6rem 0 .2rem; }}
p.first {{ margin: .2rem 0; font-weight: 600; }} p.host {{ margin: 0 0 .3rem; color: #444; font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ padding: 1px 6px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }}
table.verdicts thead th {{ background: #1f4e79; color: #fff; }}
table.verdicts {{ border-bottom: 3px solid #0b6e4f; }}
table.claims thead th {{ background: #5b2c6f; color: #fff; }}
table.claims {{ border-bottom: 3px solid #b35c00; }}
table.claims td:last-child {{ color: #555; font-size: 11px; }}
td.v-differs {{ background: #fde2c4; }} td.v-equivalent {{ background: #d4f0dc; }}
td.v-inconclusive {{ background: #e6e6e6; }}
td.c-supported {{ background: #d4f0dc; }} td.c-contradicted {{ background: #f8d0d0; }}
td.c-not-shown {{ background: #e6e6e6; }} td.c-not-measurable-here {{ background: #dde7f7; }}
.figs {{ display: flex; gap: 1rem; flex-wrap: wrap; }} figure {{ margin: 0; }}
figcaption {{ font-size: 12px; color: #444; max-width: 30rem; }}
li {{ margin: .3rem 0; }} .failed .status, .error {{ color: #b00020; }}
pre.error {{ white-space: pre-wrap; background: #fff4f4; padding: .5rem; }}
</style></head><body>
<h1>langbench report: {html.escape(manifest['run_id'])}</h1>
<p class="first">{html.escape(g["first_line"])}</p>
<p class="host">{html.escape(g["host"])} Parameters <code>{html.escape(str(manifest.get('parameters_file')))}</code>,
commit <code>{html.escape(str((manifest.get('git') or {}).get('commit'))[:12])}</code>.</p>
<h2>Python vs Rust</h2>
{g["verdicts"].replace('<table ', '<table class="verdicts" ', 1)}
<h2>TR112, claim by claim</h2>
{g["claims"].replace('<table ', '<table class="claims" ', 1)}
<h2>Key figures</h2>
<div class="figs">{figures}</div>
<h2>In short</h2>
<ul>{''.join(f'<li>{html.escape(s)}</li>' for s in [g["verdicts_note"], *g["sentences"]] if s)}</ul>
<h2>Notebooks</h2>
<ol>{''.join(items)}</ol>
<p>Data: <a href="summary.csv">summary.csv</a> · <a href="manifest.json">manifest.json</a> ·
<a href="records.jsonl">records.jsonl</a> · <a href="processes.jsonl">processes.jsonl</a></p>
</body></html>
"""
    target = run_dir / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target
