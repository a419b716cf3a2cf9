"""What every report section stands on: a run loaded once (Run), a section (its table, its
figure, its sentence), and the language comparison as a sentence. The sections themselves are
in langbench.report.sections, one module per notebook.

Notebooks call the sections and display what they return; every number in a sentence comes from
the data, and every claim says which test backs it; a comparison is "differs", "equivalent" (TOST
within the margin fixed in the parameter file) or "inconclusive", never a tie by default.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from langbench import storage
from langbench.analysis import metrics, stats

HIGHER, LOWER = "higher", "lower"


def p_text(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass
class Section:
    title: str
    sentence: str
    table: pd.DataFrame | None = None
    figure: object | None = None
    notes: list[str] = field(default_factory=list)
    caption: str | None = None  # what the figure shows, beyond its title

    def styled_table(self):
        """The table as shown: as it is here; the report's sections style it for people
        (report.sections.Section, through report/tables.py)."""
        return self.table

    def show(self) -> None:
        from IPython.display import HTML, display
        text = "".join(f"<p>{html.escape(s)}</p>" for s in [self.sentence, *self.notes] if s)
        display(HTML(f"<h3>{html.escape(self.title)}</h3>{text}"))
        if self.table is not None:
            display(self.styled_table())
        if self.figure is not None:  # as PNG bytes: independent of the kernel's backend
            import io

            import matplotlib.pyplot as plt
            from IPython.display import Image
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(self.figure)
            display(Image(data=buf.getvalue(), format="png"))
            display(HTML(f'<p style="font-size: 90%; color: #444">Figure: {html.escape(self.title)}. '
                         f'{html.escape(self.caption or "")}</p>'))


def newest_run() -> Path:
    from langbench import paths
    runs = sorted((p.parent for p in paths.OUTPUTS.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"no run under {paths.OUTPUTS}: run `make report` first")
    return runs[-1]


@dataclass
class Run:
    """A run directory, loaded once: all records (final attempts) and the warm subset."""
    run_dir: Path
    manifest: dict
    df: pd.DataFrame
    processes: pd.DataFrame
    factors: list[str]
    attempts: pd.DataFrame  # every record, failed attempts that a retry replaced included
    floor: pd.DataFrame  # the null client's records (the server's floor), apart from the agents
    alpha: float = stats.ALPHA
    margin_rel: float = 0.02

    @classmethod
    def load(cls, run_dir: str | Path = "", alpha: float = stats.ALPHA, margin_rel: float = 0.02,
             attempts: pd.DataFrame | None = None) -> "Run":
        """`run_dir` empty: the newest run under outputs/ (what JupyterLab users usually want).
        `attempts`: metrics.load_attempts(run_dir), where the caller has read it already."""
        run_dir = Path(run_dir) if str(run_dir) else newest_run()
        manifest = storage.read_json(run_dir / "manifest.json")
        attempts = metrics.load_attempts(run_dir) if attempts is None else attempts
        df = metrics.final_attempts(attempts)
        if df.empty:
            raise ValueError(f"{run_dir}: no records: run the sweep first")
        factors = metrics.factors(manifest, df)
        procs = metrics.processes(storage.read_jsonl(run_dir / "processes.jsonl"))
        null = df["agent"] == "null"
        df = df.assign(over_floor_ms=metrics.over_floor(df, df[null]))  # the client's cost where /v1 gives no timings
        if not procs.empty:
            procs = procs[procs["agent"] != "null"]
        return cls(run_dir, manifest, df[~null], procs, factors,
                   attempts[attempts["agent"] != "null"], df[null], alpha, margin_rel)

    @property
    def margins(self) -> dict:
        """The equivalence margins fixed in the parameter file (defaults where it set none)."""
        from langbench.vocab import MARGINS
        return {**MARGINS, **(self.manifest.get("parameters", {}).get("margins") or {})}

    def margin(self, value: str) -> tuple[float | None, str]:
        """The margin for `value`: (absolute, or None for ±throughput_pct of the reference
        mean; how to print it)."""
        m = self.margins
        if value in ("ttft_ms", "e2e_ms", "itl_p99_ms", "itl_max_ms"):
            return m["ttft_ms"], f"±{m['ttft_ms']:g} ms"
        if value in ("client_overhead_ms", "agent_ms", "task_agent_ms"):  # the client's own time
            return m["overhead_ms"], f"±{m['overhead_ms']:g} ms"
        return None, f"±{m['throughput_pct']:g}%"

    def margin_for(self, value: str, reference_mean: float) -> float:
        """The margin for `value` as an absolute number, around `reference_mean`."""
        margin_abs, _ = self.margin(value)
        return margin_abs if margin_abs is not None else abs(self.margins["throughput_pct"] / 100 * reference_mean)

    def compare(self, a, b, value: str, names=("python", "rust")) -> stats.Comparison:
        """The language comparison every section uses, with the pre-set margin for `value`.
        `a` and `b` are frames (their batch means are the units when each has two batches or
        more, stats.units) or plain series of values."""
        if isinstance(a, pd.DataFrame):
            (a, b), _ = stats.units([a, b], value)
        margin_abs, _ = self.margin(value)
        return stats.compare(a, b, value, names, self.margins["throughput_pct"] / 100, self.alpha, margin_abs)

    def workers(self, data: pd.DataFrame | None = None) -> list[str]:
        """The Dask workers that ran this run's batches (`--cluster`); [] for one server."""
        data = self.df if data is None else data
        return sorted(data["worker"].dropna().unique()) if "worker" in data else []

    @property
    def warm(self) -> pd.DataFrame:
        return metrics.warm(self.df)

    @property
    def agents(self) -> list[str]:
        return sorted(self.df["agent"].unique())

    def header(self) -> Section:
        m = self.manifest
        model, host = m.get("model", {}), m.get("host", {})
        gpus = ", ".join(g["name"] for g in host.get("gpus", [])) or "no GPU"
        sentence = (f"{self.progress()} Model {model.get('name')} ({model.get('parameter_size')}, "
                    f"{model.get('quantization_level')}) on Ollama {m.get('ollama_version')}, "
                    f"{host.get('cpu_model')} with {host.get('cpu_logical')} logical cores, {gpus}.")
        notes = []
        if not host.get("gpus"):
            notes.append("These numbers come from a CPU-only host: num_gpu only forces a reload "
                         "here, and a small model on a few cores is not the seed's GPU setting. "
                         "Read the differences, not the absolute speeds.")
        if (m.get("model") or {}).get("note"):
            notes.append(f"Model: {m['model']['note']}.")
        notes += [n for n in (self.clamp_sentence(), self.mixed_sentence(), self.not_applied_sentence()) if n]
        return Section("What was measured", sentence, notes=notes)

    def progress(self) -> str:
        """How far the run got, and why it stopped if it did not finish: the first line of
        every report. Counts come from the manifest, else from plan.json and the records."""
        m = self.manifest
        counts = m.get("counts") or {}
        planned = counts.get("planned_runs")
        if planned is None and storage.exists(self.run_dir / "plan.json"):
            batches = storage.read_json(self.run_dir / "plan.json").get("batches", [])
            planned = sum(len(b.get("runs", [])) for b in batches) or None
        all_runs = pd.concat([self.df, self.floor])
        final = all_runs[all_runs["phase"] != "resume"] if "phase" in all_runs else all_runs
        if "turn" in final:  # agent tasks: a task is its last turn (its outcome); partial turns are not runs
            final = final[final["turn"].isna() | final["task_outcome"].notna()]
        done, failed = len(final), int((final["outcome"] != "ok").sum())
        of = f" of {planned:,} planned" if planned else ""
        sessions = m.get("sessions") or []
        last = sessions[-1] if sessions else {}
        st = m.get("stopping") or {}
        if st.get("stop") and m.get("ended_at"):
            return (f"Run {m['run_id']} finished: {done:,}{of} runs recorded, {failed:,} failed "
                    f"(ended {m['ended_at']}); the sequential rule stopped it after round {st['round']} "
                    f"of at most {st['max_batches']}: every headline verdict was decided.")
        if m.get("complete") is not False and m.get("ended_at"):
            ladder = ""
            if st.get("rule") == "knee" and st.get("skipped"):
                ladder = (f"; the knee rule skipped {len(st['skipped']):,} batches of clients past their decided "
                          "knees, keeping one batch per load point (their curves, without CIs there)")
            return (f"Run {m['run_id']} finished: {done:,}{of} runs recorded, {failed:,} failed "
                    f"(ended {m['ended_at']}){ladder}.")
        why = last.get("stopped_by") or ("its last session has no end time: the runner was killed "
                                        "(SIGKILL, power loss) or is still running"
                                        if not last.get("ended_at") else "the sweep did not reach its end")
        since = f"; last session {last.get('started_at')} to {last.get('ended_at') or 'no end recorded'}"
        return (f"Run {m['run_id']} stopped early: {done:,}{of} runs recorded ({failed:,} failed), "
                f"because {why}{since}. Resume it with `python -m langbench sweep "
                f"{m.get('parameters_file')} --run-id {m['run_id']}`; until then every comparison "
                "below covers only the cells that ran.")

    def not_applied_sentence(self) -> str:
        """Factors the server did not apply (langbench.analysis.verify), said in every notebook's header:
        every section that uses such a factor compares levels the server treated alike."""
        from langbench.analysis import verify
        why = verify.not_applied(verify.factor_checks(self.df, self.processes, self.factors))
        if not why:
            return ""
        return ("Factors the server did not apply, so their levels are not different treatments in any "
                "section here: " + "; ".join(why.values()) + ".")

    def clamp_sentence(self) -> str:
        """The num_batch clamp sent to a server older than 0.12.0, from the records."""
        clamp = self.manifest.get("num_batch_clamp") or {}
        if "num_batch_clamp" not in self.df:
            return ""
        hit = self.df[self.df["num_batch_clamp"].notna()]
        if hit.empty:
            return ""
        sizes = sorted({(c["num_batch_from"], c["num_batch_to"]) for c in hit["num_batch_clamp"]})
        configs = sorted(hit["config_id"].unique())
        return (f"Ollama {self.manifest.get('ollama_version')} predates {clamp.get('fixed_in_ollama', '0.12.0')}, "
                f"which clamps num_batch to num_ctx itself, so the runner sent that clamp "
                f"(num_batch {', '.join(f'{a}→{b}' for a, b in sizes)}) in {len(hit)} runs of "
                f"{len(configs)} configs ({', '.join(configs)}); the other runs were sent as planned.")

    def mixed_sentence(self) -> str:
        mixed = self.manifest.get("mixed")
        if not mixed:
            return ""
        digests = {w["worker"]: str(w.get("model_digest"))[:12] for w in self.manifest.get("workers", [])}
        if len(set(digests.values())) > 1:  # one cluster, workers serving other weights
            return ("This run is mixed: its workers serve different model digests ("
                    + ", ".join(f"{w}: {d}" for w, d in sorted(digests.items()))
                    + "), let through with --allow-mixed; per-worker results mix those models.")
        sessions = self.manifest.get("sessions", [])
        values = {k: sorted({str((s.get("provenance") or {}).get(k)) for s in sessions}) for k in mixed}
        return (f"This run is mixed: its {len(sessions)} sessions differ in "
                + "; ".join(f"{k} ({' vs '.join(v)})" for k, v in values.items())
                + ". It was resumed with --allow-mixed; comparisons across sessions mix those conditions.")


def by_agent(run: Run, value: str, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """stats.describe per agent; attrs["unit"] is `value`'s unit (ms, tok/s) for the table."""
    data = run.warm if data is None else data
    t = stats.describe_by(data, value, ["agent"])
    t.attrs["unit"] = "ms" if value.endswith("_ms") else "tok/s" if value.endswith("_tps") else None
    return t


LABELS = {"throughput_tps": "throughput", "ttft_ms": "TTFT", "client_overhead_ms": "client overhead",
          "e2e_ms": "end-to-end latency", "itl_p99_ms": "ITL p99"}


def language_claim(run: Run, value: str, unit: str, better: str, data=None,
                    label: str | None = None) -> tuple[stats.Comparison, str]:
    """The language comparison as a sentence that names its metric (it is quoted alone, as a
    headline of index.html)."""
    data = run.warm if data is None else data
    label = label or LABELS.get(value, value)
    py, rs = (data[data["agent"] == a] for a in ("python", "rust"))
    c = run.compare(py, rs, value)
    tests = (f"Welch t {p_text(c.welch_p)}, Mann–Whitney {p_text(c.mw_p)}, Hedges' g = {c.hedges_g:.2f}; "
             f"TOST within the pre-set margin {run.margin(value)[1]} ({c.margin:.2f} {unit}) {p_text(c.tost_p)}")
    if c.verdict == "equivalent":
        claim = (f"Python and Rust are statistically equivalent on {label}: "
                 f"{c.mean_a:.2f} vs {c.mean_b:.2f} {unit}")
    elif c.verdict == "inconclusive":
        claim = (f"Inconclusive on {label}: Python ({c.mean_a:.2f} {unit}) and Rust ({c.mean_b:.2f} {unit}) "
                 f"differ by {c.diff:+.2f} {unit}, neither shown different beyond the ±{c.margin:.2f} {unit} "
                 f"margin nor equivalent within it")
    elif c.verdict == "not enough data":
        return c, f"Not enough data to compare {label} between the agents."
    else:
        winner = c.verdict.split()[0]
        if better == LOWER:
            winner = "rust" if winner == "python" else "python"
        claim = (f"{winner.capitalize()} is better on {label}: {c.mean_a:.2f} (Python) vs "
                 f"{c.mean_b:.2f} (Rust) {unit}, difference {c.diff:+.2f} "
                 f"[{c.diff_ci_low:+.2f}, {c.diff_ci_high:+.2f}]")
    return c, f"{claim} ({tests})."


def paired_result(run: Run, value: str, data=None) -> dict | None:
    """stats.paired over the config × mode cells both languages ran (batch means averaged per
    cell), or None when they share too few cells."""
    data = run.warm if data is None else data
    within = run.workers(data)  # several servers: pairs within each worker (the worker is a block)
    keys = ["worker", "config_id", "mode"] if len(within) > 1 else ["config_id", "mode"]
    cells = (data.groupby([*keys, "agent", "batch_id"])[value].mean()
             .groupby([*keys, "agent"]).mean().unstack("agent"))
    if not {"python", "rust"} <= set(cells.columns):
        return None
    p = stats.paired(cells["python"], cells["rust"], run.margin_for(value, float(cells["rust"].mean())), run.alpha)
    return None if p["verdict"] == "not enough data" else p


def paired_claim(run: Run, value: str, unit: str, data=None) -> str:
    """Both languages ran the same config × mode cells: the per-cell differences, paired."""
    p = paired_result(run, value, data)
    if p is None:
        return ""
    within = run.workers(run.warm if data is None else data)
    label = LABELS.get(value, value)
    where = (f"cells × workers both languages ran (pairs within each of {len(within)} workers)"
             if len(within) > 1 else "cells both languages ran")
    return (f"{label[0].upper() + label[1:]}, paired over the {p['cells']} {where}: "
            f"Python − Rust = {p['mean_diff']:+.2f} {unit} "
            f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] (paired t {p_text(p['t_p'])}, Wilcoxon "
            f"{p_text(p['wilcoxon_p'])}, TOST ±{p['margin']:.2f} {unit} {p_text(p['tost_p'])}): {p['verdict']}.")
