"""The report's sections: each builds its table, its figure and its sentence from a run's data.

Notebooks call these and display what they return; every number in a sentence comes from the
data, and every claim says which test backs it; a comparison is "differs", "equivalent" (TOST
within the margin fixed in the parameter file) or "inconclusive", never a tie by default.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from langbench import metrics, plots, stats, storage

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

    def show(self) -> None:
        from IPython.display import HTML, display
        text = "".join(f"<p>{html.escape(s)}</p>" for s in [self.sentence, *self.notes] if s)
        display(HTML(f"<h3>{html.escape(self.title)}</h3>{text}"))
        if self.table is not None:
            display(self.table.style.format(precision=3, na_rep="–", escape="html").hide(axis="index"))
        if self.figure is not None:  # as PNG bytes: independent of the kernel's backend
            import io

            import matplotlib.pyplot as plt
            from IPython.display import Image
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(self.figure)
            display(Image(data=buf.getvalue(), format="png"))


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
    def load(cls, run_dir: str | Path = "", alpha: float = stats.ALPHA, margin_rel: float = 0.02) -> "Run":
        """`run_dir` empty: the newest run under outputs/ (what JupyterLab users usually want)."""
        run_dir = Path(run_dir) if str(run_dir) else newest_run()
        manifest = storage.read_json(run_dir / "manifest.json")
        attempts = metrics.load_attempts(run_dir)
        df = metrics.final_attempts(attempts)
        if df.empty:
            raise ValueError(f"{run_dir}: no records: run the sweep first")
        factors = metrics.factors(manifest, df)
        procs = metrics.processes(storage.read_jsonl(run_dir / "processes.jsonl"))
        null = df["agent"] == "null"
        if not procs.empty:
            procs = procs[procs["agent"] != "null"]
        return cls(run_dir, manifest, df[~null], procs, factors,
                   attempts[attempts["agent"] != "null"], df[null], alpha, margin_rel)

    @property
    def margins(self) -> dict:
        """The equivalence margins fixed in the parameter file (defaults where it set none)."""
        from langbench.params import MARGINS
        return {**MARGINS, **(self.manifest.get("parameters", {}).get("margins") or {})}

    def margin(self, value: str) -> tuple[float | None, str]:
        """The margin for `value`: (absolute, or None for ±throughput_pct of the reference
        mean; how to print it)."""
        m = self.margins
        if value in ("ttft_ms", "e2e_ms", "itl_p99_ms"):
            return m["ttft_ms"], f"±{m['ttft_ms']:g} ms"
        if value == "client_overhead_ms":
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
        sentence = (f"Run {m['run_id']}: {model.get('name')} ({model.get('parameter_size')}, "
                    f"{model.get('quantization_level')}) on Ollama {m.get('ollama_version')}, "
                    f"{host.get('cpu_model')} with {host.get('cpu_logical')} logical cores, {gpus}. "
                    f"{m.get('counts', {}).get('planned_runs')} runs planned, "
                    f"{m.get('counts', {}).get('failed_runs')} failed.")
        notes = []
        if not host.get("gpus"):
            notes.append("These numbers come from a CPU-only host: num_gpu only forces a reload "
                         "here, and a small model on a few cores is not the seed's GPU setting. "
                         "Read the differences, not the absolute speeds.")
        if (m.get("model") or {}).get("note"):
            notes.append(f"Model: {m['model']['note']}.")
        notes += [n for n in (self.clamp_sentence(), self.mixed_sentence()) if n]
        return Section("What was measured", sentence, notes=notes)

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
        sessions = self.manifest.get("sessions", [])
        values = {k: sorted({str((s.get("provenance") or {}).get(k)) for s in sessions}) for k in mixed}
        return (f"This run is mixed: its {len(sessions)} sessions differ in "
                + "; ".join(f"{k} ({' vs '.join(v)})" for k, v in values.items())
                + ". It was resumed with --allow-mixed; comparisons across sessions mix those conditions.")


# --- sweep ------------------------------------------------------------------------------------

def sweep_overview(run: Run) -> Section:
    t = run.df.groupby(["phase", "outcome"]).size().unstack(fill_value=0).reset_index()
    counts = run.df["outcome"].value_counts()
    sentence = (f"{len(run.df)} runs recorded: {counts.get('ok', 0)} ok, "
                f"{counts.get('error', 0)} errors, {counts.get('truncated', 0)} truncated, over "
                f"{run.df['config_id'].nunique()} configs × {run.df['mode'].nunique()} modes × "
                f"{run.df['agent'].nunique()} agents.")
    sessions = run.manifest.get("sessions", [])
    restarts = sum(s.get("server_restarts", 0) for s in sessions)
    notes = [f"The sweep ran in {len(sessions)} session(s); the embedded Ollama was restarted "
             f"{restarts} time(s) after it died"
             + (" (runs in flight then are counted among the failed attempts below)." if restarts else ".")]
    return Section("What ran", sentence, t, plots.timeline(run.df), notes=notes)


def failures(run: Run) -> Section:
    bad = run.df[run.df["outcome"] != "ok"]
    failed_attempts = run.attempts[run.attempts["outcome"] != "ok"]
    recovered = sorted(set(failed_attempts["run_id"]) - set(bad["run_id"]))
    retry_note = (f"{len(failed_attempts)} attempts failed in all; {len(recovered)} runs failed "
                  f"first and succeeded on a retry (their failed attempts stay in records.jsonl and "
                  f"count here): "
                  + ", ".join(f"{k} {v}" for k, v in failed_attempts["error_kind"].value_counts().items())
                  + ".") if len(failed_attempts) else ""
    if bad.empty:
        return Section("Failures", "No run failed in its final attempt.",
                       notes=[retry_note] if retry_note else [])
    t = (bad.groupby(["config_id", *run.factors, "mode", "agent", "outcome", "error_kind"], dropna=False)
         .agg(runs=("run_id", "size"), message=("error_message", "first")).reset_index())
    t["message"] = t["message"].str.slice(0, 160)
    cells = bad.groupby(["config_id", "mode"]).size()
    sentence = (f"{len(bad)} runs failed in {len(cells)} config × mode cells; the commonest cause "
                f"is {bad['error_kind'].value_counts().index[0]} "
                f"({bad['error_kind'].value_counts().iloc[0]} runs). Cells without measured runs "
                f"drop out of the comparisons that need them.")
    return Section("Failures", sentence, t, notes=[n for n in (_failure_pattern(run, bad), retry_note) if n])


def _failure_pattern(run: Run, bad: pd.DataFrame) -> str:
    """A factor whose failing levels never succeed and whose other levels never fail, if any."""
    for mode, in_mode in run.df.groupby("mode"):
        failed = bad[bad["mode"] == mode]
        if failed.empty:
            continue
        for f in run.factors:
            failing = set(failed[f])
            clean = set(in_mode[f]) - failing
            ok_at_failing = in_mode[(in_mode[f].isin(failing)) & (in_mode["outcome"] == "ok")]
            if clean and ok_at_failing.empty:
                return (f"Every {mode} run with {f} ∈ {sorted(failing)} failed and no {mode} run with "
                        f"{f} ∈ {sorted(clean)} did: the failure follows {f}.")
    return ""


# --- throughput -------------------------------------------------------------------------------

def _by_agent(run: Run, value: str, data: pd.DataFrame | None = None) -> pd.DataFrame:
    data = run.warm if data is None else data
    return stats.describe_by(data, value, ["agent"])


LABELS = {"throughput_tps": "throughput", "ttft_ms": "TTFT", "client_overhead_ms": "client overhead",
          "e2e_ms": "end-to-end latency", "itl_p99_ms": "ITL p99"}


def _language_claim(run: Run, value: str, unit: str, better: str, data=None,
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


def _paired_claim(run: Run, value: str, unit: str, data=None) -> str:
    """Both languages ran the same config × mode cells: the per-cell differences, paired."""
    data = run.warm if data is None else data
    cells = (data.groupby(["config_id", "mode", "agent", "batch_id"])[value].mean()
             .groupby(["config_id", "mode", "agent"]).mean().unstack("agent"))
    if not {"python", "rust"} <= set(cells.columns):
        return ""
    p = stats.paired(cells["python"], cells["rust"], run.margin_for(value, float(cells["rust"].mean())), run.alpha)
    if p["verdict"] == "not enough data":
        return ""
    label = LABELS.get(value, value)
    return (f"{label[0].upper() + label[1:]}, paired over the {p['cells']} cells both languages ran: "
            f"Python − Rust = {p['mean_diff']:+.2f} {unit} "
            f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] (paired t {p_text(p['t_p'])}, Wilcoxon "
            f"{p_text(p['wilcoxon_p'])}, TOST ±{p['margin']:.2f} {unit} {p_text(p['tost_p'])}): {p['verdict']}.")


def throughput_overall(run: Run) -> Section:
    t = _by_agent(run, "throughput_tps")
    _, sentence = _language_claim(run, "throughput_tps", "tok/s", HIGHER, label="warm throughput")
    notes = [n for n in [_paired_claim(run, "throughput_tps", "tok/s")] if n]
    return Section("3.1–3.2 Throughput by language (warm runs, both modes)", sentence, t,
                   plots.distribution(run.warm, "throughput_tps", "throughput (tok/s)"), notes=notes)


def throughput_top(run: Run, k: int = 5) -> Section:
    s = run.warm.groupby(["agent", "config_id", *run.factors, "mode"], dropna=False)["throughput_tps"].mean()
    t = s.sort_values(ascending=False).head(2 * k).reset_index()
    t.insert(0, "rank", range(1, len(t) + 1))
    top = t.head(k)
    spread = top["throughput_tps"].max() - top["throughput_tps"].min()
    within = run.warm.groupby(["agent", "config_id", "mode"])["throughput_tps"].std().median()
    sentence = (f"The fastest cell is {top.iloc[0]['agent']} at {top.iloc[0]['config_id']} "
                f"({top.iloc[0]['mode']}, {top.iloc[0]['throughput_tps']:.2f} tok/s); of the top {k}, "
                f"{(top['agent'] == 'python').sum()} are Python and {(top['agent'] == 'rust').sum()} Rust. "
                f"The top {k} span {spread:.2f} tok/s, against a median within-cell standard deviation "
                f"of {within:.2f} tok/s: the ranking is {'within' if spread < within else 'wider than'} "
                "run-to-run noise.")
    return Section(f"3.3 Top {2 * k} cells by mean throughput", sentence, t)


def improvement(run: Run, value: str = "throughput_tps", better: str = HIGHER, label: str = "throughput",
                number: str = "") -> Section:
    d = stats.deltas(run.warm, value, run.factors, run.alpha)
    sign = 1 if better == HIGHER else -1
    rows = []
    for agent, g in d.groupby("agent"):
        g = g.dropna(subset=["delta_pct"])
        good = (sign * g["delta_pct"] > 0).sum()
        sig = ((g["delta_ci_low_pct"] > 0) if better == HIGHER else (g["delta_ci_high_pct"] < 0)).sum()
        rows.append({"agent": agent, "configs": len(g), "naive_improved": int(good),
                     "significant_improved": int(sig), "mean_delta_pct": g["delta_pct"].mean(),
                     "best_delta_pct": (g["delta_pct"].max() if better == HIGHER else g["delta_pct"].min()),
                     "worst_delta_pct": (g["delta_pct"].min() if better == HIGHER else g["delta_pct"].max()),
                     "delta_std_pct": g["delta_pct"].std()})
    t = pd.DataFrame(rows)
    aa = stats.aa_delta_pairs(run.warm, value, run.factors, run.alpha)
    side = aa["significant_success"] if better == HIGHER else aa["significant_loss"]
    aa_rate = max(float(side.mean()) if len(aa) else 0.0, run.alpha / 2)  # never below the nominal
    t["aa_rate"] = aa_rate
    t["p_above_aa"] = [stats.rate_against(int(r.significant_improved), int(r.configs), aa_rate)["p_above"]
                       for r in t.itertuples()]
    parts = [f"{r.agent}: {r.naive_improved}/{r.configs} configs improve naively (delta "
             f"{'>' if better == HIGHER else '<'} 0), {r.significant_improved}/{r.configs} with a 95% CI "
             f"that excludes 0 ({'more than' if r.p_above_aa < run.alpha else 'not more than'} the "
             f"{100 * aa_rate:.1f}% that the same rule finds between identical baseline cells, "
             f"{p_text(r.p_above_aa)}), mean delta {r.mean_delta_pct:+.2f}%" for r in t.itertuples()]
    return Section(f"{number} Chimera vs baseline: {label} delta per config".strip(), "; ".join(parts) + ".", t,
                   plots.delta_heatmap(d, run.factors, label, lower_is_better=better == LOWER))


# --- TTFT -------------------------------------------------------------------------------------

def ttft_warm(run: Run) -> Section:
    """The seed's TTFT comparison: uncached (the prompt evaluated in full) where the run has it."""
    w = run.warm
    uncached = w[w["prompt_cache"] == "uncached"]
    data, which = (uncached, "uncached prompt") if len(uncached) else (w, "cached prompt only")
    t = _by_agent(run, "ttft_ms", data)
    _, sentence = _language_claim(run, "ttft_ms", "ms", LOWER, data=data, label=f"warm TTFT ({which})")
    notes = [n for n in [_paired_claim(run, "ttft_ms", "ms", data)] if n]
    return Section(f"4.1 Warm TTFT by language ({which}; same instrument in both agents)", sentence, t,
                   plots.distribution(data, "ttft_ms", "TTFT (ms)"), notes=notes)


def ttft_by_config(run: Run) -> Section:
    """The seed's 4.2: best and worst config per language, and the typical range."""
    cells = run.warm.groupby(["agent", "config_id", *run.factors, "mode"], dropna=False)["ttft_ms"].mean().reset_index()
    rows = []
    for agent, g in cells.groupby("agent"):
        best, worst = g.loc[g["ttft_ms"].idxmin()], g.loc[g["ttft_ms"].idxmax()]
        rows.append({"agent": agent, "best_cell": f"{best['config_id']} {best['mode']}", "best_ms": best["ttft_ms"],
                     "worst_cell": f"{worst['config_id']} {worst['mode']}", "worst_ms": worst["ttft_ms"],
                     "p25_ms": g["ttft_ms"].quantile(0.25), "p75_ms": g["ttft_ms"].quantile(0.75)})
    t = pd.DataFrame(rows)
    parts = [f"{r.agent}: best {r.best_ms:.1f} ms ({r.best_cell}), typical {r.p25_ms:.1f}–{r.p75_ms:.1f} ms "
             f"(middle half of cells), worst {r.worst_ms:.1f} ms ({r.worst_cell})" for r in t.itertuples()]
    return Section("4.2 Warm TTFT by config: best, typical, worst", "; ".join(parts) + ".", t)


def ttft_cold(run: Run) -> Section:
    cold = metrics.cold(run.df)
    t = stats.describe_by(cold, "ttft_ms", ["agent", "reload_expected"]) if not cold.empty else None
    _, sentence = _language_claim(run, "ttft_ms", "ms", LOWER, data=cold, label="cold TTFT")
    return Section("4.1b Cold TTFT (first run of each agent process, reported apart)",
                   sentence + " " + _cold_reload_sentence(cold), t)


def _cold_reload_sentence(cold: pd.DataFrame) -> str:
    """Whether cold runs paid a reload where the plan expected one (a load option changed
    since the previous batch), from the server's own load_duration."""
    if cold.empty or "reload_expected" not in cold:
        return ""
    exp = cold.loc[cold["reload_expected"].astype(bool), "load_ms"].dropna()
    not_exp = cold.loc[~cold["reload_expected"].astype(bool), "load_ms"].dropna()
    if exp.empty or not_exp.empty:
        which = "expected" if len(exp) else "not expected"
        vals = exp if len(exp) else not_exp
        return (f"All {len(vals)} cold runs had a reload {which}; their median load was {vals.median():.1f} ms.")
    from scipy import stats as sps
    p = sps.mannwhitneyu(exp, not_exp, alternative="greater").pvalue
    holds = p < stats.ALPHA and exp.median() > not_exp.median()
    return (f"Cold runs where a reload was expected (a load option changed) had a median load of "
            f"{exp.median():.1f} ms (n = {len(exp)}), those where none was expected {not_exp.median():.1f} ms "
            f"(n = {len(not_exp)}; Mann–Whitney, one-sided, {p_text(p)}): "
            + ("the reloads happened where the plan expected them." if holds else
               "the load times do not show the expected reloads; cold TTFT here is not a reload cost."))


def ttft_phases(run: Run) -> Section:
    data = run.df[run.df["outcome"] == "ok"].copy()
    data["kind"] = np.where(data["phase"] == "cold", "cold", np.where(data["phase"] == "measured", "warm", "other"))
    data = data[data["kind"] != "other"]
    t = (data.groupby(["agent", "kind"])[["load_ms", "prompt_eval_ms", "server_ttft_ms", "ttft_ms", "client_overhead_ms"]]
         .median().reset_index())
    w = t[t["kind"] == "warm"].set_index("agent")
    parts = [f"{a}: server {w.loc[a, 'server_ttft_ms']:.1f} ms (load {w.loc[a, 'load_ms']:.1f} + prompt "
             f"{w.loc[a, 'prompt_eval_ms']:.1f}) of a client TTFT of {w.loc[a, 'ttft_ms']:.1f} ms"
             for a in w.index]
    if {"python", "rust"} <= set(w.index):
        ratio = w.loc["rust", "ttft_ms"] / w.loc["python", "ttft_ms"]
        parts.append(f"Rust/Python median warm TTFT ratio {ratio:.2f}× (the seed reported 2.69×)")
    return Section("4.2b Where TTFT goes: server phases beside client TTFT (medians)",
                   "Warm medians — " + "; ".join(parts) + ".", t, plots.ttft_phases(t))


# --- success patterns -------------------------------------------------------------------------

SUCCESS_RULES = (("naive_success", "naive (delta > 0)"),
                 ("significant_success", "significant (95% CI of the delta above 0)"),
                 ("holm_success", "significant after Holm across configs"))


def success_table(run: Run, d: pd.DataFrame) -> pd.DataFrame:
    """Per rule: each language's successes over every config of the run (a config whose delta
    could not be computed counts as failed, not as missing), McNemar's exact test on the configs
    where only one language succeeded, and the seed's naive Fisher / chi-square (Yates) view."""
    configs = sorted(run.df["config_id"].unique())
    per = {a: d[d["agent"] == a].set_index("config_id").reindex(configs) for a in ("rust", "python")}
    rows = []
    for kind, label in SUCCESS_RULES:
        ok = {a: per[a][kind].astype("boolean").fillna(False).astype(bool).to_numpy() for a in per}
        mc = stats.mcnemar_paired(ok["rust"], ok["python"])
        naive = stats.compare_rates(int(ok["rust"].sum()), len(configs), int(ok["python"].sum()), len(configs))
        rows.append({"rule": label, "configs": len(configs),
                     "rust": int(ok["rust"].sum()), "python": int(ok["python"].sum()),
                     "rust_failed": int(per["rust"]["delta_pct"].isna().sum()),
                     "python_failed": int(per["python"]["delta_pct"].isna().sum()),
                     "rust_only": mc["a_only"], "python_only": mc["b_only"], "mcnemar_p": mc["mcnemar_p"],
                     "fisher_p": naive["fisher_p"], "chi2_yates_p": naive["chi2_p"],
                     "odds_ratio": naive["odds_ratio"]})
    return pd.DataFrame(rows)


def success_rates(run: Run) -> tuple[Section, pd.DataFrame]:
    d = stats.deltas(run.warm, "throughput_tps", run.factors, run.alpha)
    t = success_table(run, d)
    n = len(t) and int(t.iloc[0]["configs"])

    def one(r) -> str:
        verdict = "different" if r.mcnemar_p < run.alpha else "not shown different"
        return (f"{r.rule}: Rust {r.rust}/{n} vs Python {r.python}/{n}; {r.rust_only} configs succeed for "
                f"Rust only and {r.python_only} for Python only, McNemar exact {p_text(r.mcnemar_p)} "
                f"({verdict} at α = {run.alpha}; the seed's unpaired view: Fisher {p_text(r.fisher_p)}, "
                f"chi-square (Yates) {p_text(r.chi2_yates_p)})")
    first = t.iloc[0]
    failed = (f"Both languages are scored on the same {n} configs; configs without a delta count as "
              f"failures (Rust {first['rust_failed']}, Python {first['python_failed']}). ")
    seed = stats.compare_rates(13, 18, 7, 18)
    sentence = (failed + "; ".join(one(r) for r in t.itertuples()) + ". For comparison, the seed's "
                f"13/18 vs 7/18 gives Fisher {p_text(seed['fisher_p'])}, not p < 0.01 (and, being the "
                "same configs, it needed McNemar's test on the discordant ones, which the seed does not give).")
    return Section("5.1 Optimization success rate by language", sentence, t), d.dropna(subset=["delta_pct"])


def best_configs(d: pd.DataFrame, factors: list[str]) -> Section:
    idx = d.groupby("agent")["delta_pct"].idxmax()
    t = d.loc[idx, ["agent", "config_id", *factors, "delta_pct", "delta_ci_low_pct", "delta_ci_high_pct", "significant_success"]]
    parts = [f"{r.agent}: {r.config_id} {r.delta_pct:+.2f}% [{r.delta_ci_low_pct:+.2f}, {r.delta_ci_high_pct:+.2f}]"
             f" ({'CI excludes 0' if r.significant_success else 'CI includes 0'})" for r in t.itertuples()]
    return Section("5.2 Best config per language", "; ".join(parts) + ".", t)


def delta_variance(d: pd.DataFrame) -> Section:
    groups = {a: g["delta_pct"].to_numpy() for a, g in d.groupby("agent")}
    t = pd.DataFrame([{"agent": a, "delta_std_pct": np.std(v, ddof=1), "configs": len(v)} for a, v in groups.items()])
    ev = stats.equal_variance(groups)
    sentence = (f"Spread of the deltas: " + ", ".join(f"{r.agent} {r.delta_std_pct:.2f}%" for r in t.itertuples())
                + f"; Brown–Forsythe {p_text(ev['brown_forsythe_p'])} "
                f"({'different' if ev['brown_forsythe_p'] < stats.ALPHA else 'not significantly different'}).")
    return Section("5.3 Variance in improvements", sentence, t)


def success_by(d: pd.DataFrame, factor: str, alpha: float = stats.ALPHA) -> Section:
    """Naive success per level of `factor`: the same configs in both languages, so McNemar's
    exact test per level, Holm-adjusted across the levels."""
    rows = []
    for level, g in d.groupby(factor):
        w = g.pivot_table(index="config_id", columns="agent", values="naive_success", aggfunc="first")
        w = w.reindex(columns=["rust", "python"]).astype("boolean").fillna(False).astype(bool)
        mc = stats.mcnemar_paired(w["rust"], w["python"])
        rows.append({factor: level, "configs": len(w), "rust_success_pct": 100 * w["rust"].mean(),
                     "python_success_pct": 100 * w["python"].mean(), "rust_only": mc["a_only"],
                     "python_only": mc["b_only"], "mcnemar_p": mc["mcnemar_p"]})
    t = pd.DataFrame(rows)
    t["mcnemar_p_holm"] = stats.holm(t["mcnemar_p"])
    t["winner"] = np.where(~(t["mcnemar_p_holm"] < alpha), "inconclusive",
                           np.where(t["rust_only"] > t["python_only"], "rust", "python"))
    ties = (t["winner"] == "inconclusive").sum()
    sentence = (f"By {factor}: {ties} of {len(t)} levels show no significant difference in naive success "
                f"between the languages (McNemar's exact test on the same configs, Holm across the levels, "
                f"α = {alpha}); smallest adjusted p: {p_text(t['mcnemar_p_holm'].min())}.")
    return Section(f"6 Success rate by {factor}", sentence, t)


def overlap(d: pd.DataFrame, factors: list[str]) -> Section:
    w = metrics.labelled(d, factors).pivot_table(index=["config_id", *factors], columns="agent",
                                                 values="naive_success", aggfunc="first")
    both = w[(w.get("python") == True) & (w.get("rust") == True)].reset_index()  # noqa: E712
    sig = d.pivot_table(index="config_id", columns="agent", values="significant_success", aggfunc="first")
    both_sig = int(((sig.get("python") == True) & (sig.get("rust") == True)).sum())  # noqa: E712
    sentence = (f"{len(both)} configs improve in both languages by the naive rule, {both_sig} by the CI rule.")
    return Section("6.4 Configuration overlap", sentence, both)


# --- decision matrix --------------------------------------------------------------------------

# Criteria that share a component are one group and count once: warm TTFT, client overhead and
# end-to-end latency all contain the client's time to first token.
CRITERIA_GROUPS = {"Throughput (warm)": "throughput", "TTFT warm": "latency", "Client overhead": "latency",
                   "End-to-end latency": "latency", "TTFT cold": "cold start", "ITL p99": "decode pacing",
                   "Throughput consistency (per-cell CV)": "consistency", "Peak RSS": "memory",
                   "Start-up (spawn → first request)": "start-up", "CPU per run (from the first request)": "CPU",
                   "Optimization success rate": "optimization"}


def _matrix_rows(run: Run) -> list[tuple[str, stats.Comparison | dict, str, str]]:
    warm, cold = run.warm, metrics.cold(run.df)
    rows = []

    def add(criterion, data, value, better, unit):
        c = run.compare(data[data["agent"] == "rust"], data[data["agent"] == "python"], value, ("rust", "python"))
        rows.append((criterion, c, better, unit))

    add("Throughput (warm)", warm, "throughput_tps", HIGHER, "tok/s")
    uncached = warm[warm["prompt_cache"] == "uncached"]
    add("TTFT warm", uncached if len(uncached) else warm, "ttft_ms", LOWER, "ms")
    add("Client overhead", warm, "client_overhead_ms", LOWER, "ms")
    add("End-to-end latency", warm, "e2e_ms", LOWER, "ms")
    add("TTFT cold", cold, "ttft_ms", LOWER, "ms")
    add("ITL p99", warm, "itl_p99_ms", LOWER, "ms")
    cv = (warm.groupby(["agent", "config_id", "mode"])["throughput_tps"]
          .agg(lambda x: 100 * x.std(ddof=1) / x.mean()).rename("cv_pct").reset_index())
    add("Throughput consistency (per-cell CV)", cv, "cv_pct", LOWER, "%")
    procs = run.processes
    if not procs.empty:
        add("Peak RSS", procs, "peak_rss_mib", LOWER, "MiB")
        add("Start-up (spawn → first request)", procs, "startup_ms", LOWER, "ms")
        add("CPU per run (from the first request)", procs, "cpu_s_per_run", LOWER, "s")
    rates = success_table(run, stats.deltas(warm, "throughput_tps", run.factors, run.alpha))
    rows.append(("Optimization success rate", rates.iloc[0].to_dict(), HIGHER, "configs"))
    return rows


def decision_matrix(run: Run) -> Section:
    """Every criterion's comparison, Holm-adjusted across the criteria (one family for the
    'differs' tests, one for the equivalence tests), then one verdict per group of correlated
    criteria: a group is won when its decided members agree, 'mixed' when they do not."""
    rows = _matrix_rows(run)
    welch = stats.holm([c.welch_p if isinstance(c, stats.Comparison) else c["mcnemar_p"] for _, c, _, _ in rows])
    tost = stats.holm([c.tost_p if isinstance(c, stats.Comparison) else np.nan for _, c, _, _ in rows])
    out = []
    for (criterion, c, better, unit), wp, tp in zip(rows, welch, tost):
        if isinstance(c, stats.Comparison):
            if c.verdict == "not enough data":
                verdict = "not enough data"
            elif wp < run.alpha and abs(c.diff) > c.margin:
                verdict = "rust higher" if c.diff > 0 else "python higher"
            elif tp < run.alpha:
                verdict = "equivalent"
            else:
                verdict = "inconclusive"
            row = {"rust": c.mean_a, "python": c.mean_b, "unit": unit,
                   "test": f"Welch {p_text(c.welch_p)} (Holm {p_text(wp)}); TOST ±{c.margin:.3g} {unit} "
                           f"{p_text(c.tost_p)} (Holm {p_text(tp)})"}
        else:
            verdict = ("inconclusive" if not wp < run.alpha else
                       "rust higher" if c["rust_only"] > c["python_only"] else "python higher")
            row = {"rust": c["rust"], "python": c["python"], "unit": f"of {c['configs']} configs",
                   "test": f"McNemar exact {p_text(c['mcnemar_p'])} (Holm {p_text(wp)})"}
        if verdict.endswith("higher"):
            hi = verdict.split()[0]
            winner = hi if better == HIGHER else ("python" if hi == "rust" else "rust")
        else:
            winner = verdict
        out.append({"group": CRITERIA_GROUPS.get(criterion, criterion), "criterion": criterion, **row,
                    "verdict": verdict, "winner": winner})
    t = pd.DataFrame(out)
    groups = {}
    for g, members in t.groupby("group", sort=False)["winner"]:
        decided = set(members) - {"inconclusive", "not enough data"}
        groups[g] = decided.pop() if len(decided) == 1 else ("mixed" if decided else "inconclusive")
    t["group_winner"] = t["group"].map(groups)
    wins = pd.Series(groups).value_counts()
    decided = sum(wins.get(k, 0) for k in ("rust", "python", "equivalent"))
    shared = [g for g, n in t["group"].value_counts().items() if n > 1]
    sentence = (f"{len(t)} criteria in {len(groups)} groups (criteria that share a component count once: "
                + "; ".join(f"{g} = {', '.join(t.loc[t['group'] == g, 'criterion'])}" for g in shared)
                + f"). Of the {len(groups)} groups, {decided} are decided: Rust wins {wins.get('rust', 0)}, "
                f"Python {wins.get('python', 0)}, equivalent within the pre-set margins {wins.get('equivalent', 0)}; "
                f"{wins.get('mixed', 0)} are mixed (their criteria disagree) and {wins.get('inconclusive', 0)} "
                f"inconclusive (neither shown different beyond the margin nor equivalent at α = {run.alpha} after "
                "Holm's adjustment across the criteria); those are not counted. Deployment, iteration speed and "
                "dependencies are not measured here and are left out (the seed scored them by opinion).")
    return Section("7.1 Decision matrix", sentence, t)


def appendix_b(run: Run) -> Section:
    c, sentence = _language_claim(run, "throughput_tps", "tok/s", HIGHER)
    return Section("Appendix B: the seed's tests, redone", sentence + " A p-value above α alone "
                   "does not make two languages indistinguishable: only TOST can say equivalent.",
                   pd.DataFrame([c.as_dict()]))


def anova(run: Run, value: str, label: str) -> Section:
    table, r2 = stats.factor_anova(run.warm, value, run.factors)
    t = table.reset_index(names="term")
    sig = t[(t["PR(>F)"] < run.alpha)]["term"].tolist()
    sentence = (f"OLS of {label} on language × mode plus {', '.join(run.factors)} (R² = {r2:.2f}); "
                f"terms significant at α = {run.alpha}: {', '.join(sig) if sig else 'none'}.")
    return Section(f"Factors behind {label} (type-II ANOVA)", sentence, t)


# --- validity ---------------------------------------------------------------------------------

def client_vs_server(run: Run) -> Section:
    w = run.warm
    t = (w.groupby("agent").agg(overhead_median_ms=("client_overhead_ms", "median"),
                                overhead_p95_ms=("client_overhead_ms", lambda x: x.quantile(0.95)),
                                decode_ratio_median=("decode_rate_ratio", "median"),
                                itl_p50_ms=("itl_p50_ms", "median"), itl_p99_ms=("itl_p99_ms", "median"),
                                itl_max_ms=("itl_max_ms", "max")).reset_index())
    _, diff = _language_claim(run, "client_overhead_ms", "ms", LOWER)
    parts = [f"{r.agent} adds a median {r.overhead_median_ms:.2f} ms (p95 {r.overhead_p95_ms:.2f}) to the "
             f"server's TTFT and sees {r.decode_ratio_median:.3f}× the server's decode rate" for r in t.itertuples()]
    return Section("Client vs server timing (Appendix C answered)", "; ".join(parts) + ". " + diff, t,
                   plots.overhead(w))


def drift(run: Run) -> Section:
    """Throughput over the run order, fitted with agent and mode terms: a common slope, and
    whether it differs between the agents or the modes (then the balanced order does not
    cancel it from their comparison)."""
    t, fit = stats.drift(run.warm, "throughput_tps")
    if fit is None:
        return Section("Drift over run order", "Too few batches to fit a drift.")
    parts = [f"{r.agent} {r.slope_tps_per_batch:+.4f} tok/s per batch ({p_text(r.p)})" for r in t.itertuples()]
    common = (f"A fit of throughput on order with agent × mode terms gives a common slope of "
              f"{fit['slope']:+.4f} tok/s per batch ({p_text(fit['slope_p'])}); it differs by agent "
              f"{p_text(fit['by_agent_p'])} and by mode {p_text(fit['by_mode_p'])}")
    if fit["by_agent_p"] < run.alpha or fit["by_mode_p"] < run.alpha:
        verdict = ("the drift is not the same for every agent and mode, so the balanced order does not spread it "
                   "evenly: comparisons between them carry part of it")
    elif fit["slope_p"] < run.alpha:
        verdict = "the drift is shared by every agent and mode, so the balanced (ABBA) order spreads it over them"
    else:
        verdict = f"no significant drift at α = {run.alpha}"
    return Section("Drift over run order", "Per agent: " + "; ".join(parts) + f". {common}: {verdict}.", t,
                   plots.drift(run.warm))


def footprint(run: Run) -> Section:
    p = run.processes
    if p.empty:
        return Section("Process footprint", "No process measurements in this run.")
    t = p.groupby("agent")[["peak_rss_mib", "startup_ms", "cpu_s_per_run", "wall_s"]].median().reset_index()
    parts = [f"{r.agent}: peak RSS {r.peak_rss_mib:.1f} MiB, start-up {r.startup_ms:.1f} ms, "
             f"{1e3 * r.cpu_s_per_run:.1f} ms CPU per run" for r in t.itertuples()]
    notes = []
    if "server_cpu_s" in p and p["server_cpu_s"].notna().any():
        busy = p["server_cpu_s"] / p["wall_s"]
        iso = run.manifest.get("isolation") or {}
        where = (f"Server and agents ran on disjoint CPUs ({iso['reason']})" if iso.get("applied") else
                 f"Server and agents shared the host's {int(p['host_cpus'].max())} logical CPUs "
                 f"({iso.get('reason', 'no pinning')})")
        notes.append(f"{where}: "
                     f"median host load {p['host_load_1m'].median():.2f} during batches; the embedded server used "
                     f"a median {busy.median():.2f} CPU-seconds per second of batch, the agents "
                     + ", ".join(f"{a} {((g['user_cpu_s'] + g['system_cpu_s']) / g['wall_s']).median():.2f}"
                                 for a, g in p.groupby("agent")) + ".")
    return Section("Process footprint (medians per agent process)", "; ".join(parts) + ".", t, notes=notes)


def reloads(run: Run) -> Section:
    ev = pd.DataFrame(storage.read_jsonl(run.run_dir / "events.jsonl"))
    if ev.empty:
        return Section("Unexpected reloads", "No warm run paid a reload (load_duration stayed near the warm median).")
    return Section("Unexpected reloads", f"{len(ev)} warm runs paid a reload where none was expected; "
                   "they are in the warm statistics and explain outliers there.", ev)


# --- GPU: offload, power, energy ---------------------------------------------------------------

def _gpu_frame(run: Run) -> pd.DataFrame:
    """Warm runs with the offload their batch ended in and their energy (empty off-GPU)."""
    tel = storage.read_jsonl(run.run_dir / "telemetry.jsonl")
    off = metrics.offload_table(run.processes)
    if not tel or off.empty or "layers_gpu" not in off:
        return pd.DataFrame()
    off = off.sort_values("attempt").groupby("batch_id").tail(1)[["batch_id", "layers_gpu", "layers_total",
                                                                  "size", "size_vram"]]
    idle = (run.manifest.get("gpu_idle") or {}).get("power_w") or {}
    w = metrics.energy_per_run(run.warm, tel, sum(idle.values()) if idle else None)
    w = w.merge(off, on="batch_id", how="left")
    w["offload"] = [f"{int(a)}/{int(b)}" if pd.notna(a) and pd.notna(b) else "?"
                    for a, b in zip(w["layers_gpu"], w["layers_total"])]
    return w


def gpu_setting(run: Run) -> Section:
    gpus = run.manifest.get("host", {}).get("gpus", [])
    tel = storage.read_jsonl(run.run_dir / "telemetry.jsonl")
    if not gpus or not tel:
        return Section("GPU", "This run was made on a host without an NVIDIA GPU (NVML found none), so "
                       "it has no GPU telemetry, no offload and no energy figures; nothing in this "
                       "section applies.")
    idle = (run.manifest.get("gpu_idle") or {}).get("power_w") or {}
    counter = (run.manifest.get("telemetry") or {}).get("energy_counter") or []
    t = pd.DataFrame(tel)
    span = t["t_unix"].max() - t["t_unix"].min()
    sentence = (f"{len(gpus)} GPU ({', '.join(g['name'] for g in gpus)}, driver {gpus[0].get('driver')}); "
                f"{len(t)} NVML samples over {span:.0f} s (median gap {1e3 * t.groupby(['batch_id', 'gpu'])['t_unix'].diff().median():.0f} ms); "
                f"idle power before the sweep {sum(idle.values()):.1f} W; energy from "
                f"{'the GPU energy counter' if counter and all(counter) else 'integrated power samples'}.")
    return Section("GPU and telemetry", sentence, figure=plots.power_trace(t))


def gpu_offload(run: Run) -> Section:
    w = _gpu_frame(run)
    if w.empty:
        return Section("Offload actually done", "No offload was recorded (no GPU in this run).")
    by = (w.groupby(["mode", "num_gpu"] if "num_gpu" in w else ["mode"], dropna=False)
          .agg(offload=("offload", lambda x: ", ".join(sorted(set(x)))),
               size_gb=("size", lambda x: x.mean() / 1e9), size_vram_gb=("size_vram", lambda x: x.mean() / 1e9))
          .reset_index())
    chim = by[by["mode"] == "chimera"]
    groups = chim.groupby("offload")["num_gpu"].apply(lambda x: sorted(int(v) for v in x)) if "num_gpu" in chim else {}
    parts = []
    for offload, values in (groups.items() if len(groups) else []):
        names = ", ".join(map(str, values))
        parts.append(f"num_gpu {names} {'all ' if len(values) > 1 else ''}ended with {offload} layers on the GPU"
                     + (" (one setting)" if len(values) > 1 else ""))
    base = by[by["mode"] == "baseline"]["offload"].unique()
    sentence = ("; ".join(parts) + f". Ollama's default (baseline) offloaded {', '.join(base)}.") if parts else         "No chimera batch recorded its offload."
    return Section("Offload actually done (server log and /api/ps)", sentence, by)


def gpu_energy(run: Run) -> Section:
    w = _gpu_frame(run)
    if w.empty or w["energy_j"].isna().all():
        return Section("Power and energy per token", "No energy figures (no GPU telemetry in this run).")
    t = (w.groupby(["offload", "agent"])
         .agg(runs=("run_id", "size"), throughput_tps=("throughput_tps", "mean"), ttft_ms=("ttft_ms", "median"),
              power_w=("power_w", "mean"), j_per_token=("j_per_token", "mean"),
              j_per_token_above_idle=("j_per_token_above_idle", "mean"))
         .reset_index())
    pooled = w.groupby("offload").agg(tps=("throughput_tps", "mean"), power=("power_w", "mean"),
                                      jpt=("j_per_token", "mean"), ttft=("ttft_ms", "median"))
    parts = [f"with {o} layers on the GPU, {r.tps:.1f} tok/s, median TTFT {r.ttft:.1f} ms, {r.power:.0f} W, "
             f"{r.jpt:.3f} J/token" for o, r in pooled.sort_index(key=lambda i: i.map(_layers), ascending=False).iterrows()]
    sources = ", ".join(sorted(w["energy_source"].dropna().unique()))
    return Section("Throughput, power and energy against the offload", "; ".join(parts) +
                   f" (energy per run from {sources}, joined to each run's own time window).", t,
                   plots.gpu_by_offload(w.dropna(subset=["j_per_token"])))


def _layers(offload: str) -> int:
    try:
        return int(offload.split("/")[0])
    except ValueError:
        return -1


# --- issue 9: the prompt cache, the null client's floor, early stops, A/A ------------------------

def ttft_cache(run: Run) -> Section:
    """Cached TTFT (the prompt repeated: Ollama reuses its KV prefix) and uncached (a unique
    prefix per run: the prompt evaluated in full), apart."""
    w = run.warm
    if (w["prompt_cache"] == "uncached").sum() == 0:
        return Section("TTFT with and without the prompt cache", "This run measured no uncached TTFT "
                       "(uncached_repetitions: 0): every warm TTFT here reuses the server's KV prefix.")
    t = (w.groupby(["agent", "prompt_cache"])
         .agg(runs=("run_id", "size"), ttft_ms=("ttft_ms", "median"), prompt_eval_ms=("prompt_eval_ms", "median"),
              prompt_tokens=("prompt_eval_count", "median"), server_ttft_ms=("server_ttft_ms", "median"))
         .reset_index())
    parts = []
    for agent, g in t.groupby("agent"):
        c, u = (g.set_index("prompt_cache").loc[k] for k in ("cached", "uncached"))
        parts.append(f"{agent}: {c.ttft_ms:.1f} ms cached (prompt evaluation {c.prompt_eval_ms:.1f} ms, "
                     f"{c.prompt_tokens:.0f} prompt tokens) vs {u.ttft_ms:.1f} ms uncached "
                     f"({u.prompt_eval_ms:.1f} ms, {u.prompt_tokens:.0f} tokens)")
    _, claim = _language_claim(run, "ttft_ms", "ms", LOWER, data=w[w["prompt_cache"] == "uncached"])
    return Section("TTFT with and without the prompt cache (medians)",
                   "; ".join(parts) + ". Uncached, the seed's comparison: " + claim, t)


def client_floor(run: Run) -> Section:
    """Each agent's client overhead against the null client's, measured in the same run."""
    floor = metrics.warm(run.floor)
    if floor.empty:
        return Section("Client overhead over the null client's floor",
                       "This run has no null client (null_client: false), so client overhead is "
                       "reported against the server's own timings only.")
    base = metrics.warm(run.df[run.df["mode"] == "baseline"])
    f = float(floor["client_overhead_ms"].median())
    rows = [{"client": "null (floor)", "runs": len(floor), "overhead_median_ms": f, "over_floor_ms": 0.0,
             "over_floor_ci_low": np.nan, "over_floor_ci_high": np.nan}]
    parts = []
    for agent, g in base.groupby("agent"):
        c = run.compare(g, floor, "client_overhead_ms", (agent, "null"))
        rows.append({"client": agent, "runs": len(g), "overhead_median_ms": float(g["client_overhead_ms"].median()),
                     "over_floor_ms": c.diff, "over_floor_ci_low": c.diff_ci_low, "over_floor_ci_high": c.diff_ci_high})
        parts.append(f"{agent} adds {c.diff:+.2f} ms [{c.diff_ci_low:+.2f}, {c.diff_ci_high:+.2f}] over the floor "
                     f"({c.verdict} at the ±{c.margin:g} ms margin)")
    sentence = (f"The null client (raw HTTP/1.1, no JSON model) sees a median {f:.2f} ms between the server's "
                f"load + prompt evaluation and its first token: the floor on this host. In the same baseline "
                f"batches, " + "; ".join(parts) + ".")
    return Section("Client overhead over the null client's floor", sentence, pd.DataFrame(rows))


def early_stops(run: Run) -> Section:
    ok = run.df[(run.df["outcome"] == "ok") & (run.df["phase"] == "measured")]
    early = ok[ok["stopped_early"]]
    if early.empty:
        return Section("Runs that stopped early", f"All {len(ok)} measured runs generated their num_predict "
                       "tokens (done_reason \"length\"): no option shortened a generation.")
    t = early.groupby(["config_id", "mode", "agent", "done_reason"]).size().rename("runs").reset_index()
    return Section("Runs that stopped early", f"{len(early)} of {len(ok)} measured runs stopped before "
                   f"num_predict (in {t[['config_id', 'mode']].drop_duplicates().shape[0]} cells): they are "
                   "shorter, not faster, and are kept out of every throughput and latency comparison.", t)


AA_METRICS = (("throughput_tps", "throughput"), ("ttft_ms", "TTFT"))


def aa_check(run: Run) -> Section:
    """Each decision rule on identical treatments (baseline vs baseline) of this run."""
    rows = []
    for value, label in AA_METRICS:
        d = stats.aa_delta_pairs(run.warm, value, run.factors, run.alpha)
        r = stats.rate_against(int(d["differs"].sum()), len(d), run.alpha)
        rows.append({"rule": "per-config delta (Welch 95% CI of chimera − baseline)", "metric": label, **r})
        s = stats.aa_language_splits(run.warm, lambda a, b, v=value: run.compare(a, b, v, ("a", "b")))
        r = stats.rate_against(int(s["differs"].sum()) if len(s) else 0, len(s), run.alpha)
        rows.append({"rule": "language comparison (pooled runs, Welch + margin)", "metric": label, **r})
        base = run.warm[run.warm["mode"] == "baseline"]
        margin = run.margin_for(value, float(base[value].mean())) if len(base) else 0.0
        s = stats.aa_paired_splits(run.warm, value, margin, run.alpha)
        r = stats.rate_against(int(s["differs"].sum()) if len(s) else 0, len(s), run.alpha)
        rows.append({"rule": "language comparison (paired over cells, t + margin)", "metric": label, **r})
    t = pd.DataFrame(rows)
    t["flag"] = np.where(t["p_above"] < run.alpha, "above α beyond binomial noise", "")
    flagged = t[t["flag"] != ""]
    short = {"per-config delta": "per-config delta", "language comparison (pooled": "pooled language comparison",
             "language comparison (paired": "paired language comparison"}
    name = lambda rule: next(v for k, v in short.items() if rule.startswith(k))  # noqa: E731
    parts = [f"{name(r.rule)} on {r.metric}: {r.k}/{r.n} = {100 * r.rate:.1f}% "
             f"[{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]" for r in t.itertuples() if r.n]
    sentence = (f"A/A check on this run's own baseline batches (identical treatments, α = {run.alpha}): "
                + "; ".join(parts) + ". "
                + (f"{len(flagged)} rule × metric combinations call identical treatments different more often "
                   f"than α allows (exact binomial test, p < {run.alpha}): their 'differs' verdicts in this run "
                   "are not to be trusted at face value." if len(flagged) else
                   "No rule exceeds α beyond its binomial noise."))
    return Section("A/A check: false-positive rate of each decision rule", sentence, t)
