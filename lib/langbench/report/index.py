"""index.html: the run at a glance (how far it got, the verdict and claim tables, two key
figures, one fact a sentence) and a link to each rendered notebook, with its status."""

from __future__ import annotations

import html
import traceback
from pathlib import Path

import pandas as pd

from langbench import storage

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
    "agent_loops": "Agent loops: multi-turn tasks, the agent's own time per turn and per task",
    "servers": "Endpoints and servers: what /v1 costs per client, llama.cpp against Ollama",
    "scale": "Sessions at scale: each client's knee, lag per chunk, the SDK's share and the language's",
    "peers": "Peers: other benchmark tools beside langbench's clients, with definitions and known delays",
}


def glance(run_dir: Path, run=None) -> dict:
    """What the index's first screen shows, recomputed from the records: the first line (how
    far the run got), the verdict table, the TR112 claim table, two key figures (PNG, base64,
    with captions) and short sentences, one fact each."""
    import base64
    import io

    import matplotlib.pyplot as plt

    from langbench.analysis import findings
    from langbench.report import tables
    from langbench.report.sections import agent_loops, throughput, tr112, ttft
    run = run if run is not None else findings.Run.load(run_dir)
    header = run.header()
    agent_run = agent_loops.is_agent_run(run)
    if agent_run:  # its runs are tasks: the single-request verdicts and TR112's claims are not its
        v = findings.Section("Python vs Rust", "An agent run: its verdicts are the task-level ones below.",
                             pd.DataFrame())
        c = findings.Section("TR112, claim by claim", "", pd.DataFrame(columns=["verdict"]))
    else:
        v = tr112.verdicts(run)
        c = tr112.claims(run)
    vt = v.table
    agent_html, agent_note = "", ""
    if agent_run:  # task-level verdicts beside the single-request ones
        at = agent_loops.verdicts(run)
        if len(at):
            shown = at[["level", "metric", "python_ms", "rust_ms", "diff_ms", "ci_low", "ci_high", "margin_ms",
                        "aa_false_positive_rate", "verdict"]]
            agent_html = tables.to_html(shown)
            agent_note = agent_loops.own_time(run).sentence
    verdict_html = ""
    if len(vt):
        shown = vt.drop(columns=["_class", "_sentence"])
        classes = pd.DataFrame("", index=shown.index, columns=shown.columns)
        classes["verdict"] = "v-" + vt["_class"]
        verdict_html = tables.to_html(shown, classes=classes)
    claims_html = ""
    if len(c.table):
        classes = pd.DataFrame("", index=c.table.index, columns=c.table.columns)
        classes["verdict"] = "c-" + c.table["verdict"].str.replace(" ", "-")
        claims_html = tables.to_html(c.table, classes=classes)
    figures = []
    key_sections = ((agent_loops.ttft_by_turn(run), "TTFT per turn (ms) against the prompt's length, every "
                     "client."), (agent_loops.prefix_cache(run), "Prompt evaluation (ms) per turn against the "
                     "prompt's length: cached prefix vs unique prefix.")) if agent_run else \
        ((throughput.throughput_overall(run), "Throughput per run (tok/s), warm runs, "
          "by mode and language: boxes are quartiles, dots single runs."),
         (ttft.ttft_warm(run), "Time to first token (ms), warm runs, by mode and language."))
    for section, caption in key_sections:
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
    race_html, race_note = "", ""
    if "server_kind" in run.factors:  # which server was faster, on the first screen
        from langbench.report.sections import servers
        race = servers.server_race(run)
        race_note = race.sentence
        if race.table is not None and len(race.table):
            cols = [c for c in race.table.columns if not c.endswith("_verdict")] + \
                [c for c in race.table.columns if c.endswith("_verdict")]
            race_html = tables.to_html(race.table[cols])
    return {"first_line": run.progress(), "host": header.sentence.split(" Model ", 1)[-1],
            "verdicts": verdict_html, "verdicts_note": v.sentence, "claims": claims_html,
            "agent_verdicts": agent_html, "agent_note": agent_note, "race": race_html, "race_note": race_note,
            "figures": figures, "sentences": sentences}


def scale_glance(run_dir: Path, run=None) -> dict:
    """The knees table and TR112's "language matters less than expected" judged at each load,
    for a run with a scale study (closed-loop load); empty strings otherwise. Apart from glance:
    a failure of either says so in its own place and leaves the other standing."""
    from langbench.analysis import findings
    from langbench.analysis import scale as scale_analysis
    keys = ("knees", "knees_note", "loads", "loads_note")
    try:
        run = run if run is not None else findings.Run.load(run_dir)
        if not scale_analysis.has_scale(run):
            return dict.fromkeys(keys, "")
    except Exception:
        return dict.fromkeys(keys, "")
    return dict(zip(keys, _scale_parts(run)))


def _scale_parts(run) -> tuple[str, str, str, str]:
    from langbench.report import tables
    from langbench.report.sections import scale
    try:
        b = scale.study(run)
        section = scale.knees(run, b)
        knees_html = tables.to_html(section.table) if section.table is not None and len(section.table) else ""
        loads = scale.load_claims(run, b)
        loads_html, loads_note = "", ""
        if len(loads):
            classes = pd.DataFrame("", index=loads.index, columns=loads.columns)
            classes["verdict"] = "c-" + loads["verdict"].str.replace(" ", "-")
            loads_html = tables.to_html(loads, classes=classes)
            counts = loads["verdict"].value_counts()
            loads_note = (f"TR112 found the agent's language mattered less than expected (at one request at a time). "
                          f"Judged at each of {len(loads)} endpoint × N load points of this run: supported at "
                          f"{counts.get('supported', 0)} (Python and Rust equivalent on the client's added time "
                          f"per turn, send delay included), "
                          f"contradicted at {counts.get('contradicted', 0)} (a knee separates them), not shown at "
                          f"{counts.get('not shown', 0)}.")
        return knees_html, section.sentence, loads_html, loads_note
    except Exception:
        return "", "The scale findings could not be computed: " + traceback.format_exc(limit=1), "", ""


def replay_note(manifest: dict) -> str:
    """The first screen's line on a replay run: what it replays and what it cannot show."""
    if not manifest.get("replay"):
        return ""
    from langbench.report.sections import scale
    return scale.replay_sentence(manifest)


def write_index(run_dir: Path, results: dict, attempts=None) -> Path:
    """index.html: the first screen and the notebooks' links. `attempts`: the run's records as
    metrics.load_attempts reads them, where the caller has them."""
    manifest = storage.read_json(run_dir / "manifest.json")
    if manifest.get("kind") == "peers":  # its own first screen (report/sections/peers.py)
        from langbench.report.sections import peers
        return peers.write_index(run_dir, results, TITLES)
    run = None
    try:
        from langbench.analysis import findings
        run = findings.Run.load(run_dir, attempts=attempts)  # once, for the first screen and the scale glance
        g = glance(run_dir, run)
    except Exception:
        first = "The findings could not be computed: " + traceback.format_exc(limit=1)
        try:  # how far the run got, even so
            from langbench.analysis import findings
            first = findings.Run.load(run_dir).progress() + " " + first
        except Exception:
            pass
        g = {"first_line": first, "host": "", "verdicts": "", "verdicts_note": "", "claims": "",
             "agent_verdicts": "", "agent_note": "", "race": "", "race_note": "", "figures": [], "sentences": []}
    g.update(scale_glance(run_dir, run))
    try:
        replay = replay_note(manifest)
    except Exception:
        replay = "A replay run (its replay description could not be read): no server-side finding comes from it."
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
p.first {{ margin: .2rem 0; font-weight: 600; }}
p.replay {{ margin: .2rem 0; padding: .2rem .4rem; background: #fff3cd; border-left: 3px solid #b35c00; }} p.host {{ margin: 0 0 .3rem; color: #444; font-size: 12px; }}
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
{f'<p class="replay">{html.escape(replay)}</p>' if replay else ""}
<p class="host">{html.escape(g["host"])} Parameters <code>{html.escape(str(manifest.get('parameters_file')))}</code>,
commit <code>{html.escape(str((manifest.get('git') or {}).get('commit'))[:12])}</code>.</p>
{f'<h2>Which server was faster: llama.cpp against Ollama</h2><p class="race">{html.escape(g["race_note"])}</p>'
  + g["race"].replace('<table ', '<table class="verdicts" ', 1) if g["race_note"] else ""}
<h2>Python vs Rust</h2>
{g["verdicts"].replace('<table ', '<table class="verdicts" ', 1)}
{f'<h2>Agent loops: the agent&#39;s own time, task-level verdicts</h2><p>{html.escape(g["agent_note"])}</p>'
  + g["agent_verdicts"].replace('<table ', '<table class="verdicts" ', 1) if g["agent_verdicts"] else ""}
{f'<h2>Sessions at scale: each client&#39;s knee</h2><p>{html.escape(g["knees_note"])}</p>'
  + g["knees"].replace('<table ', '<table class="verdicts knees" ', 1) if g["knees_note"] else ""}
{f'<h2>TR112: &ldquo;language matters less than expected&rdquo;, at each load</h2><p>{html.escape(g["loads_note"])}</p>'
  + g["loads"].replace('<table ', '<table class="claims" ', 1) if g["loads_note"] else ""}
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
