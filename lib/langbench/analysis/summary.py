"""summary.csv: one row per language × config × mode (the seed's
rust_vs_python_sweep_summary.csv), written when a sweep ends (langbench.cli.sweep: the runner
imports no analysis) and again by a render."""

from __future__ import annotations

from pathlib import Path

from langbench import storage
from langbench.analysis import metrics


def write_summary(run_dir: Path, df=None) -> None:
    """Write <run_dir>/summary.csv from the stored records (atomically; nothing when there are
    no records). `df`: metrics.load_run(run_dir) when the caller has it already."""
    df = metrics.load_run(run_dir) if df is None else df
    if df.empty:
        return
    factors = metrics.factors(storage.read_json(run_dir / "manifest.json"), df)
    tmp = run_dir / "summary.csv.tmp"
    metrics.summary(df, factors).to_csv(tmp, index=False)
    tmp.replace(run_dir / "summary.csv")
