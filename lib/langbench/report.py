"""The report: papermill executes each notebook into the run, nbconvert renders HTML (full and
code-free), and index.html links them with the headline findings.

A notebook that fails leaves the others rendered; the index says which failed and why, and the
exit code is 1.
"""

from __future__ import annotations

import html
import sys
import time
import traceback
from pathlib import Path

from langbench import paths, stop, storage, summary

NOTEBOOKS = ("sweep", "throughput", "ttft", "success_patterns", "decision_matrix", "validity", "gpu",
             "concurrency")
TITLES = {
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
    print(f"report: {msg}", file=sys.stderr, flush=True)


def execute(name: str, run_dir: Path, parameters: dict | None = None) -> Path:
    """Execute notebooks/<name>.ipynb into <run_dir>/notebooks with papermill; its parameters
    are `parameters`, or (None) the run directory itself."""
    import papermill as pm
    out = run_dir / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                        parameters={"run_dir": str(run_dir.resolve())} if parameters is None else parameters,
                        kernel_name="python3", progress_bar=False, cwd=str(paths.ROOT))
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


def _render(run_dir: Path, notebooks) -> int:
    html_dir = run_dir / "html"
    html_dir.mkdir(parents=True, exist_ok=True)
    summary.write_summary(run_dir)
    results = {}
    for name in notebooks:
        stop.check()  # a stop signal whose exception was lost: render no further notebook
        started = time.monotonic()
        say(f"executing {name}")
        try:
            executed = execute(name, run_dir)
            results[name] = {"ok": True}
        except Exception as e:  # papermill raises PapermillExecutionError with the cell's error
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}".strip()[:2000]}
            executed = run_dir / "notebooks" / f"{name}.ipynb"
            say(f"{name} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        if executed.exists():  # a failed notebook is rendered too: its error is the artefact
            try:
                to_html(executed, html_dir)
            except Exception as e:
                results[name] = {"ok": False, "error": f"render: {type(e).__name__}: {e}"[:2000]}
        results[name]["seconds"] = time.monotonic() - started
    write_index(run_dir, results)
    failed = [n for n, r in results.items() if not r["ok"]]
    say(f"{run_dir / 'index.html'} ({len(notebooks) - len(failed)}/{len(notebooks)} notebooks ok)")
    return 1 if failed else 0


def headlines(run_dir: Path) -> list[str]:
    """The decision matrix's and the key comparisons' sentences, recomputed from the records."""
    from langbench import findings
    from langbench.sections import decision, success, throughput, ttft
    run = findings.Run.load(run_dir)
    sections = [run.header(), throughput.throughput_overall(run), ttft.ttft_warm(run),
                success.success_rates(run)[0], decision.decision_matrix(run)]
    import matplotlib.pyplot as plt
    plt.close("all")
    return [s.sentence for s in sections] + [n for s in sections for n in s.notes]


def write_index(run_dir: Path, results: dict) -> Path:
    manifest = storage.read_json(run_dir / "manifest.json")
    try:
        lines = headlines(run_dir)
    except Exception:
        lines = ["Headline findings could not be computed: " + traceback.format_exc(limit=1)]
    items = []
    for name in results:
        r = results[name]
        status = "ok" if r["ok"] else "FAILED"
        links = (f'<a href="html/{name}-nocode.html">report</a> · <a href="html/{name}.html">with code</a>'
                 f' · <a href="notebooks/{name}.ipynb">notebook</a>')
        err = "" if r["ok"] else f'<pre class="error">{html.escape(r["error"])}</pre>'
        items.append(f'<li class="{status.lower()}"><b>{html.escape(TITLES[name])}</b> '
                     f'<span class="status">[{status}, {r.get("seconds", 0):.1f} s]</span><br>{links}{err}</li>')
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>langbench report: {html.escape(manifest['run_id'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; line-height: 1.45; }}
li {{ margin: .6rem 0; }} .failed .status, .error {{ color: #b00020; }}
pre.error {{ white-space: pre-wrap; background: #fff4f4; padding: .5rem; }}
</style></head><body>
<h1>langbench report: {html.escape(manifest['run_id'])}</h1>
<p>Parameters: <code>{html.escape(str(manifest.get('parameters_file')))}</code>; started
{html.escape(str(manifest.get('started_at')))}, ended {html.escape(str(manifest.get('ended_at')))};
commit <code>{html.escape(str((manifest.get('git') or {}).get('commit')))}</code>.</p>
<h2>Headline findings</h2>
<ul>{''.join(f'<li>{html.escape(s)}</li>' for s in lines)}</ul>
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

