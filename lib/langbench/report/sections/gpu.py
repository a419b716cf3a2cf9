"""GPU hosts: the offload the server did, power and energy per token."""

from __future__ import annotations

import pandas as pd

from langbench import storage
from langbench.analysis import metrics
from langbench.report import plots
from langbench.analysis.findings import Run
from langbench.report.sections import Section


def _gpu_frame(run: Run) -> pd.DataFrame:
    """Warm runs with the offload their batch ended in and their energy (empty off-GPU)."""
    tel = storage.read_jsonl(run.run_dir / "telemetry.jsonl")
    off = metrics.offload_table(run.processes)
    if not tel or off.empty or "layers_gpu" not in off:
        return pd.DataFrame()
    off = off.sort_values("attempt").groupby("batch_id").tail(1)[["batch_id", "layers_gpu", "layers_total",
                                                                  "size", "size_vram"]]
    idle = (run.manifest.get("gpu_idle") or {}).get("power_w") or {}
    w = metrics.energy_per_run(run.warm, tel, idle or None)
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


def length_dependence(run: Run) -> Section:
    """Throughput and server TTFT against the generation length (bench/length_probe.py's file
    in the run directory, made on the same host after the sweep): per num_predict the medians,
    and OLS slopes of decode throughput and TTFT on the length with their p-values."""
    import statsmodels.formula.api as smf

    from langbench.analysis.findings import p_text
    rows = storage.read_jsonl(run.run_dir / "length_probe.jsonl")
    if not rows:
        return Section("Throughput and TTFT against the generation length",
                       "This run has no length probe (bench/length_probe.py), so how throughput and TTFT "
                       "depend on the chosen length is not measured here.")
    d = pd.DataFrame(rows)
    d["throughput_tps"] = d["eval_count"] / d["eval_duration"] * 1e9
    d["server_ttft_ms"] = (d["load_duration"].fillna(0) + d["prompt_eval_duration"].fillna(0)) / 1e6
    t = (d.groupby("num_predict").agg(runs=("rep", "size"), tokens=("eval_count", "median"),
                                      throughput_tps=("throughput_tps", "median"),
                                      server_ttft_ms=("server_ttft_ms", "median")).reset_index())
    slope = {v: smf.ols(f"{v} ~ num_predict", data=d).fit() for v in ("throughput_tps", "server_ttft_ms")}
    lo, hi = t.iloc[0], t.iloc[-1]
    change = 100 * (hi.throughput_tps - lo.throughput_tps) / lo.throughput_tps
    chosen = (run.manifest.get("parameters", {}).get("fixed") or {}).get("num_predict")
    sentence = (f"From {int(lo.num_predict)} to {int(hi.num_predict)} tokens, decode throughput goes from "
                f"{lo.throughput_tps:.1f} to {hi.throughput_tps:.1f} tok/s ({change:+.1f} %; "
                f"{100 * slope['throughput_tps'].params['num_predict']:+.2f} tok/s per 100 tokens, "
                f"{p_text(slope['throughput_tps'].pvalues['num_predict'])}) and the server's TTFT from "
                f"{lo.server_ttft_ms:.1f} to {hi.server_ttft_ms:.1f} ms "
                f"({100 * slope['server_ttft_ms'].params['num_predict']:+.2f} ms per 100 tokens, "
                f"{p_text(slope['server_ttft_ms'].pvalues['num_predict'])})"
                + (f"; this study's runs generate {int(chosen)} tokens" if chosen else "") + ".")
    notes = [f"Probe options: {rows[0].get('options')}; {int(t['runs'].min())}+ requests per length, each "
             "length's first request (its reload) not counted; Ollama's own durations."]
    return Section("Throughput and TTFT against the generation length", sentence, t, notes=notes)
