"""The peers notebook and a peers run's index.html (issue 43): other benchmark tools beside
langbench's clients on one server, each number with its definition; each tool's error against
known delays; TR112 v2 claim by claim beside v1. Every sentence is built from the numbers
(analysis/peers.py)."""

from __future__ import annotations

import html
from pathlib import Path

from langbench import storage
from langbench.analysis import peers as analysis
from langbench.analysis.peers import Peers
from langbench.report import tables
from langbench.report.sections import Section


def load(run_dir: str | Path) -> Peers:
    return Peers.load(run_dir)


def _styled(s: analysis.Section) -> Section:
    return Section(s.title, s.sentence, s.table, notes=s.notes)


def header(p: Peers) -> Section:
    m = p.manifest
    srv = m.get("server") or {}
    par = m.get("parameters") or {}
    host = m.get("host") or {}
    load = p.processes[0].get("host_load_1m") if p.processes else None
    sentence = (f"Run {m['run_id']}: {par.get('rounds')} round(s) of {par.get('runs')} measured run(s) "
                f"after {par.get('warmups')} warm-up(s) per tool, on {srv.get('kind', 'ollama')} "
                f"{srv.get('version')} at {srv.get('url')} ({'embedded' if srv.get('embedded') else 'external'}), "
                f"model {par.get('model')}, options {par.get('options')}; host {host.get('cpu_model')} "
                f"({host.get('cpus', '?')} CPUs)" + (f", load average {load:.2f} at the first batch" if load else "")
                + ". Tools: " + ", ".join(p.label(t) for t in p.tools()) + ".")
    peers_ = m.get("peers") or {}
    notes = [f"{name} {v['version']}: a venv of its own from {len(v['pins'])} pinned packages ({v['venv']})"
             for name, v in peers_.items()]
    return Section("What ran", sentence, notes=notes)


def outcomes(p: Peers) -> Section:
    return _styled(p.outcomes())


def side_by_side(p: Peers) -> Section:
    return _styled(p.side_by_side())


def compare(p: Peers) -> Section:
    return _styled(p.compare())


def agreement(p: Peers) -> Section:
    return _styled(p.agreement())


def known_delays(p: Peers) -> Section:
    return _styled(p.known_delays())


def tr112(p: Peers) -> Section:
    return _styled(p.tr112())


def write_index(run_dir: Path, results: dict, titles: dict) -> Path:
    """index.html of a peers run: its first screen says which tool agrees with the server's own
    durations and by how much, each tool's error against known delays, and TR112 v2's claims."""
    manifest = storage.read_json(run_dir / "manifest.json")
    try:
        p = Peers.load(run_dir)
        first = p.headline()
        agree = p.agreement().table
        claims = p.tr112().table
        known = p.known_delays().table
        blocks = [("Agreement with the server's own durations", agree),
                  ("Against known delays", known), ("TR112 v2, claim by claim, beside v1", claims)]
    except Exception as e:  # the page still links the notebook and its error
        first, blocks = [f"The peers tables could not be computed: {type(e).__name__}: {e}"], []
    items = []
    for name, r in results.items():
        status = "ok" if r["ok"] else "FAILED"
        err = "" if r["ok"] else f'<pre class="error">{html.escape(r["error"])}</pre>'
        items.append(f'<li><b>{html.escape(titles.get(name, name))}</b> [{status}, {r.get("seconds", 0):.1f} s]<br>'
                     f'<a href="html/{name}-nocode.html">report</a> · <a href="html/{name}.html">with code</a> · '
                     f'<a href="notebooks/{name}.ipynb">notebook</a>{err}</li>')
    body = "".join(f"<h2>{html.escape(t)}</h2>{tables.to_html(df)}" for t, df in blocks
                   if df is not None and len(df))
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>langbench peers: {html.escape(manifest['run_id'])}</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 84rem; margin: .6rem auto; padding: 0 1rem;
font-size: 14px; }} table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ padding: 1px 6px; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }}
p.first {{ font-weight: 600; margin: .2rem 0; }} .error {{ color: #b00020; white-space: pre-wrap; }}</style>
</head><body>
<h1>langbench peers: {html.escape(manifest['run_id'])}</h1>
{''.join(f'<p class="first">{html.escape(s)}</p>' for s in first)}
{body}
<h2>Notebooks</h2><ol>{''.join(items)}</ol>
<p>Data: <a href="runs.csv">runs.csv</a> · <a href="manifest.json">manifest.json</a> ·
<a href="records.jsonl">records.jsonl</a> · <a href="processes.jsonl">processes.jsonl</a> · peers/</p>
</body></html>
"""
    target = run_dir / "index.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target
