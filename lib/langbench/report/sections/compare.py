"""Two runs side by side (as pyperf's compare_to, asv compare): for every metric and every cell
both runs have, the difference B − A with its batch-level CI and a three-way verdict; the cells
one run has and the other lacks; provenance side by side.

A cell is (agent, mode, prompt cache, and the values of the factors both runs share), so runs
made from different parameter files still meet where their cells coincide. Runs of different
models are compared only when asked (`allow_model_mismatch`), and the report says so first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from langbench import storage
from langbench.analysis import stats
from langbench.analysis.findings import HIGHER, LOWER, Run, p_text
from langbench.report.sections import Section
from langbench.vocab import ParamsError

METRICS = (("throughput_tps", "tok/s", HIGHER), ("ttft_ms", "ms", LOWER), ("e2e_ms", "ms", LOWER),
           ("itl_p99_ms", "ms", LOWER), ("client_overhead_ms", "ms", LOWER))


class CompareError(ParamsError):
    """The two runs cannot be compared as asked; the message says why (exit 2)."""


@dataclass
class Pair:
    a: Run
    b: Run
    models_differ: bool

    @property
    def names(self) -> tuple[str, str]:
        return self.a.run_dir.name, self.b.run_dir.name

    @property
    def cell_keys(self) -> list[str]:
        shared = [f for f in self.a.factors if f in self.b.factors]
        return ["agent", "mode", "prompt_cache", *shared]


def load(run_a: str | Path, run_b: str | Path, allow_model_mismatch: bool = False) -> Pair:
    for r in (run_a, run_b):
        if not (Path(r) / "manifest.json").exists() or not storage.exists(Path(r) / "records.jsonl"):
            raise CompareError(f"{r}: not a run directory (no manifest.json/records.jsonl)")
    a, b = Run.load(run_a), Run.load(run_b)
    ma, mb = (_model_id(r.manifest) for r in (a, b))
    if ma != mb and not allow_model_mismatch:
        raise CompareError(f"the runs served different models ({ma} in {a.run_dir.name}, {mb} in {b.run_dir.name}): "
                           "compare them anyway with --allow-model-mismatch (the report then says so at the top)")
    return Pair(a, b, ma != mb)


def _model_id(manifest: dict) -> str:
    m = manifest.get("model") or {}
    return f"{m.get('name', manifest.get('parameters', {}).get('model'))} ({(m.get('gguf_sha256') or '?')[:12]})"


def differences(pair: Pair) -> pd.DataFrame:
    """Every metric × cell both runs measured: means, B − A with its CI over batch means (runs
    where a cell has fewer than two batches), % change, and the verdict within the margin of
    run A's parameter file."""
    keys = pair.cell_keys
    wa, wb = pair.a.warm, pair.b.warm
    rows = []
    for value, unit, better in METRICS:
        ga, gb = _cells(wa, keys), _cells(wb, keys)
        for key in sorted(set(ga) & set(gb), key=str):
            xa, xb = ga[key], gb[key]
            (ua, ub), unit_kind = stats.units([xa, xb], value)
            margin = pair.a.margin_for(value, float(np.mean(ua))) if len(ua) else np.nan
            c = stats.compare(ub, ua, value, ("B", "A"), alpha=pair.a.alpha, margin_abs=margin)
            if c.verdict.endswith("higher"):
                higher = c.verdict.startswith("B")
                verdict = "B better" if higher == (better == HIGHER) else "B worse"
            else:
                verdict = c.verdict
            rows.append({"metric": value, **dict(zip(keys, key)), "unit": unit, "units": unit_kind,
                         "n_a": c.n_b, "n_b": c.n_a, "mean_a": c.mean_b, "mean_b": c.mean_a,
                         "diff": c.diff, "ci_low": c.diff_ci_low, "ci_high": c.diff_ci_high,
                         "change_pct": 100 * c.diff / c.mean_b if c.mean_b else np.nan,
                         "welch_p": c.welch_p, "margin": c.margin, "tost_p": c.tost_p, "verdict": verdict})
    return pd.DataFrame(rows)


def _cells(df: pd.DataFrame, keys: list[str]) -> dict[tuple, pd.DataFrame]:
    """The cells of a run's warm runs by key; a factor a row did not send (baseline) is None,
    so that the cells of two runs match (NaN never equals NaN)."""
    return {tuple(None if pd.isna(v) else v for v in k): g for k, g in df.groupby(keys, dropna=False)}


def unmatched(pair: Pair) -> pd.DataFrame:
    """The cells one run measured and the other did not."""
    keys = pair.cell_keys
    ca, cb = set(_cells(pair.a.warm, keys)), set(_cells(pair.b.warm, keys))
    rows = [{"only_in": pair.names[0], **dict(zip(keys, k))} for k in sorted(ca - cb, key=str)]
    rows += [{"only_in": pair.names[1], **dict(zip(keys, k))} for k in sorted(cb - ca, key=str)]
    return pd.DataFrame(rows, columns=["only_in", *keys])


def provenance(pair: Pair) -> pd.DataFrame:
    def facts(r: Run) -> dict:
        m = r.manifest
        host, model = m.get("host") or {}, m.get("model") or {}
        gpus = ", ".join(g.get("name", "?") for g in host.get("gpus") or []) or "none"
        return {"parameters": m.get("parameters_file"), "Ollama": m.get("ollama_version"),
                "model": model.get("name"), "model digest": (model.get("gguf_sha256") or "")[:12],
                "CPU": host.get("cpu_model"), "logical CPUs": host.get("cpu_logical"), "GPU": gpus,
                "git commit": ((m.get("git") or {}).get("commit") or "")[:12], "started": m.get("started_at"),
                "warm runs": len(r.warm), "batches": r.df["batch_id"].nunique() if "batch_id" in r.df else None}
    fa, fb = facts(pair.a), facts(pair.b)
    return pd.DataFrame([{"": k, pair.names[0]: fa[k], pair.names[1]: fb[k],
                          "same": "yes" if str(fa[k]) == str(fb[k]) else "no"} for k in fa])


# --- sections -----------------------------------------------------------------------------

def header(pair: Pair) -> Section:
    a, b = pair.names
    notes = []
    if pair.models_differ:
        notes.append(f"These runs served different models ({_model_id(pair.a.manifest)} against "
                     f"{_model_id(pair.b.manifest)}), compared because it was asked: every difference below "
                     "includes the model's.")
    p = provenance(pair)
    differ = p.loc[p["same"] == "no", ""].tolist()
    own = {n: [f for f in r.factors if f not in pair.cell_keys] for n, r in zip(pair.names, (pair.a, pair.b))}
    if any(own.values()):
        notes.append("Factors only one run varies are pooled within each shared cell: "
                     + "; ".join(f"{', '.join(fs)} in {n}" for n, fs in own.items() if fs) + ".")
    sentence = (f"A = {a}, B = {b}. They differ in: {', '.join(differ) if differ else 'nothing recorded'}. "
                f"Differences are B − A; margins and α are run A's ({pair.a.margin('throughput_tps')[1]} throughput, "
                f"{pair.a.margin('ttft_ms')[1]} latency, α = {pair.a.alpha}).")
    return Section("The two runs", sentence, p, notes=notes)


def summary(pair: Pair, d: pd.DataFrame) -> Section:
    if d.empty:
        return Section("Differences", "The runs share no cell: nothing to compare.")
    counts = d["verdict"].value_counts()
    parts = []
    for value, unit, better in METRICS:
        g = d[d["metric"] == value]
        if len(g):
            parts.append(f"{value}: median change {g['change_pct'].median():+.1f}% over {len(g)} cells "
                         f"(B better in {int((g['verdict'] == 'B better').sum())}, worse in "
                         f"{int((g['verdict'] == 'B worse').sum())})")
    sentence = (f"{len(d)} metric × cell comparisons: B better in {counts.get('B better', 0)}, B worse in "
                f"{counts.get('B worse', 0)}, equivalent within the margin in {counts.get('equivalent', 0)}, "
                f"inconclusive in {counts.get('inconclusive', 0) + counts.get('not enough data', 0)}. "
                + "; ".join(parts) + ".")
    return Section("Differences (every shared cell)", sentence, d)


def largest(pair: Pair, d: pd.DataFrame, k: int = 10) -> Section:
    decided = d[d["verdict"].isin(["B better", "B worse"])]
    if decided.empty:
        return Section("Largest differences", "No cell differs beyond its margin.")
    t = decided.reindex(decided["change_pct"].abs().sort_values(ascending=False).index).head(k)
    r = t.iloc[0]
    cell = ", ".join(f"{c} {r[c]}" for c in pair.cell_keys if pd.notna(r[c]))
    sentence = (f"The largest: {r['metric']} at {cell}: {r['mean_a']:.2f} → {r['mean_b']:.2f} {r['unit']} "
                f"({r['change_pct']:+.1f}%, B − A {r['diff']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}], "
                f"Welch {p_text(r['welch_p'])}).")
    return Section(f"Largest differences (top {len(t)})", sentence, t)


def missing(pair: Pair) -> Section:
    u = unmatched(pair)
    a, b = pair.names
    sentence = (f"{int((u['only_in'] == a).sum())} cells only in {a}, {int((u['only_in'] == b).sum())} only in {b}."
                if len(u) else "Both runs measured the same cells.")
    return Section("What one run has and the other lacks", sentence, u if len(u) else None)


def output_dir(run_a: str | Path, run_b: str | Path) -> Path:
    from langbench import paths
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"compare-{Path(run_a).name}-vs-{Path(run_b).name}")
    return paths.OUTPUTS / name


def render(run_a: str | Path, run_b: str | Path, out: str | Path | None = None,
           allow_model_mismatch: bool = False) -> Path:
    """Execute notebooks/compare.ipynb for the two runs and write its HTML; the path of the
    HTML (with code hidden). Checks the runs first, so that bad input fails before papermill."""
    from langbench.report import notebooks
    load(run_a, run_b, allow_model_mismatch)
    out = Path(out) if out else output_dir(run_a, run_b)
    (out / "html").mkdir(parents=True, exist_ok=True)
    executed = notebooks.execute("compare", out, {"run_a": str(Path(run_a).resolve()), "run_b": str(Path(run_b).resolve()),
                                               "allow_model_mismatch": allow_model_mismatch})
    notebooks.to_html(executed, out / "html")
    storage.write_json(out / "compare.json", {"run_a": str(Path(run_a).resolve()), "run_b": str(Path(run_b).resolve()),
                                              "allow_model_mismatch": allow_model_mismatch})
    return out / "html" / "compare-nocode.html"
