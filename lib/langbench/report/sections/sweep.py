"""What ran and what failed: the sweep notebook's sections."""

from __future__ import annotations

import pandas as pd

from langbench.report import plots
from langbench.analysis.findings import Run
from langbench.report.sections import Section


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
         .agg(runs=("run_id", "size"), message=("error_message", "first"),
              **({"client": ("error_client", "first")} if "error_client" in bad else {})).reset_index())
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
