"""Endpoints and servers (issue 25): what the OpenAI-compatible layer costs, and which server
kind was faster.

- `api_cost(run)`: per client, each /v1 endpoint against the Ollama endpoint it wraps
  (openai-chat against chat, openai-completions against generate) on the same server: TTFT
  (per request), ITL p50 and the client's decode rate (per token), with the /v1 − /api
  difference and its 95% CI over batch means, and the client's cost over the null client's
  floor on each endpoint. /v1 returns no server durations, so nothing here uses them: every
  time is the client's own clock, and throughput on /v1 is (usage tokens − 1) / decode time.
- `server_race(run)`: with `server.kind` as a factor, llama.cpp's llama-server against Ollama
  on the same GGUF, per client and over all clients: throughput (client clock, the same for
  both kinds: both speak /v1) and TTFT, difference with CI and verdict within the run's margins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis.findings import Run
from langbench.report.sections import Section
from langbench.vocab import OPENAI_ENDPOINTS

WRAPS = {"openai-chat": "chat", "openai-completions": "generate"}  # /v1 endpoint → Ollama endpoint it wraps
API_METRICS = (("ttft_ms", "TTFT", "ms", "per request"), ("itl_p50_ms", "ITL p50", "ms", "per token"),
               ("client_decode_tps", "client decode rate", "tok/s", "per token"))
RACE_METRICS = (("throughput_tps", "throughput (client clock)", "tok/s"), ("ttft_ms", "TTFT", "ms"))


def _warm_all(run: Run) -> pd.DataFrame:
    """The agents' and the null client's warm runs (the null client is a client too, here)."""
    from langbench.analysis import metrics
    data = pd.concat([run.df, run.floor], ignore_index=True) if len(run.floor) else run.df
    return metrics.warm(data)


def endpoint_pairs(run: Run) -> list[tuple[str, str]]:
    """(/v1 endpoint, the Ollama endpoint it wraps) pairs this run measured both sides of."""
    have = set(run.df["endpoint"].dropna()) if "endpoint" in run.df else set()
    return [(v1, api) for v1, api in WRAPS.items() if v1 in have and api in have]


def api_cost(run: Run) -> Section:
    title = "What the OpenAI-compatible layer costs, per client"
    pairs = endpoint_pairs(run)
    if not pairs:
        eps = sorted(set(run.df["endpoint"].dropna())) if "endpoint" in run.df else ["generate"]
        return Section(title, f"This run used {', '.join(eps)} only: there is no /v1 endpoint and the Ollama "
                              "endpoint it wraps to compare (matrix.endpoint: [chat, openai-chat]).")
    warm = _warm_all(run)
    rows, parts = [], []
    for v1, api in pairs:
        for agent, g in warm.groupby("agent"):
            a, b = g[g["endpoint"] == v1], g[g["endpoint"] == api]
            if a.empty or b.empty:
                continue
            row = {"client": agent, "endpoint": v1, "against": api, "runs_v1": len(a), "runs_api": len(b)}
            for value, label, unit, _per in API_METRICS:
                c = run.compare(a, b, value, (v1, api))
                row[f"{value}_api"], row[f"{value}_v1"] = c.mean_b, c.mean_a
                row[f"{value}_diff"], row[f"{value}_ci_low"], row[f"{value}_ci_high"] = \
                    c.diff, c.diff_ci_low, c.diff_ci_high
                row[f"{value}_verdict"] = c.verdict
            of = lambda d: float(pd.to_numeric(d["over_floor_ms"], errors="coerce").median()) \
                if "over_floor_ms" in d else np.nan  # noqa: E731
            row["over_floor_ms_api"], row["over_floor_ms_v1"] = of(b), of(a)
            rows.append(row)
            parts.append(f"{agent}: TTFT {row['ttft_ms_diff']:+.2f} ms [{row['ttft_ms_ci_low']:+.2f}, "
                         f"{row['ttft_ms_ci_high']:+.2f}] per request, ITL p50 {row['itl_p50_ms_diff']:+.2f} ms "
                         f"[{row['itl_p50_ms_ci_low']:+.2f}, {row['itl_p50_ms_ci_high']:+.2f}] and decode rate "
                         f"{row['client_decode_tps_diff']:+.2f} tok/s [{row['client_decode_tps_ci_low']:+.2f}, "
                         f"{row['client_decode_tps_ci_high']:+.2f}] per token on {v1} against {api}")
    t = pd.DataFrame(rows)
    sentence = ("/v1 − /api on the same server, warm runs, differences with 95% CIs over batch means: "
                + "; ".join(parts) + ".")
    notes = ["/v1 returns no server durations (those record fields are null, never 0), so nothing here uses "
             "them: TTFT, ITL and the decode rate are each client's own clock, the decode rate over the "
             "usage's token count ((completion_tokens − 1) / decode time), and each client's cost is taken "
             "over the null client's floor on the same endpoint (over_floor_ms: its TTFT less the null "
             "client's median TTFT in the same cell) instead of over the server's load + prompt evaluation.",
             "Ollama's /v1 sends temperature 1.0 and top_p 1.0 where the request has none (openai/openai.go), "
             "not /api's model defaults: a baseline (Ollama's defaults) differs between the endpoints; "
             "compare chimera cells with the sampling set, or set it under fixed."]
    if "new_connection" in warm:
        new = warm.groupby(["agent", "endpoint"])["new_connection"].mean().unstack("endpoint")
        if len(new.columns):
            notes.append("Share of warm runs that opened a TCP connection (its connect is in that run's TTFT): "
                         + "; ".join(f"{a}: " + ", ".join(f"{e} {100 * v:.0f}%" for e, v in r.items() if pd.notna(v))
                                     for a, r in new.iterrows()) + ".")
    return Section(title, sentence, t, notes=notes)


def server_race(run: Run) -> Section | None:
    """llama.cpp against Ollama on the same GGUF (server.kind a factor); None when it is not one."""
    title = "Which server was faster: llama.cpp's llama-server against Ollama"
    if "server_kind" not in run.df or run.df["server_kind"].nunique() < 2:
        return Section(title, "This run used one server kind: nothing to compare (server.kind: [ollama, "
                              "llama-cpp] makes it a factor).")
    warm = run.warm
    rows, parts = [], []
    for who, g in [("all agents", warm), *warm.groupby("agent")]:
        a, b = g[g["server_kind"] == "llama-cpp"], g[g["server_kind"] == "ollama"]
        if a.empty or b.empty:
            continue
        row = {"client": who, "runs_llama_cpp": len(a), "runs_ollama": len(b)}
        for value, label, unit in RACE_METRICS:
            c = run.compare(a, b, value, ("llama-cpp", "ollama"))
            row.update({f"{value}_llama_cpp": c.mean_a, f"{value}_ollama": c.mean_b, f"{value}_diff": c.diff,
                        f"{value}_ci_low": c.diff_ci_low, f"{value}_ci_high": c.diff_ci_high,
                        f"{value}_verdict": c.verdict})
        rows.append(row)
    t = pd.DataFrame(rows)
    if t.empty:
        return Section(title, "No client ran on both server kinds.")
    r = t.iloc[0]
    faster = lambda value, lower: ("llama.cpp" if (r[f"{value}_diff"] < 0) == lower else "Ollama")  # noqa: E731
    sure = lambda value: "" if "higher" in r[f"{value}_verdict"] else f" ({r[f'{value}_verdict']} within the margin)"  # noqa: E731
    pct = 100 * r["throughput_tps_diff"] / r["throughput_tps_ollama"] if r["throughput_tps_ollama"] else np.nan
    sentence = (f"{faster('throughput_tps', False)} decoded faster: llama-server {r['throughput_tps_llama_cpp']:.2f} "
                f"against Ollama {r['throughput_tps_ollama']:.2f} tok/s, llama.cpp − Ollama "
                f"{r['throughput_tps_diff']:+.2f} tok/s [{r['throughput_tps_ci_low']:+.2f}, "
                f"{r['throughput_tps_ci_high']:+.2f}] ({pct:+.1f}%){sure('throughput_tps')}; TTFT "
                f"{r['ttft_ms_llama_cpp']:.1f} against {r['ttft_ms_ollama']:.1f} ms, "
                f"{r['ttft_ms_diff']:+.1f} ms [{r['ttft_ms_ci_low']:+.1f}, {r['ttft_ms_ci_high']:+.1f}]"
                f"{sure('ttft_ms')} (all agents' warm runs, 95% CIs over batch means).")
    threads = (run.manifest.get("servers") or {})
    notes = ["Both servers serve the same GGUF file on the same host, interleaved batch by batch (the kind is "
             "a block: each batch runs on one), and both are read on /v1, so throughput is on the client's "
             "clock for both."]
    if threads:
        notes.append("Servers: " + "; ".join(f"{k}: {v.get('version')}{' (' + v['source'] + ')' if v.get('source') else ''}, "
                                             f"{v.get('threads')} threads"
                                             for k, v in threads.items() if isinstance(v, dict)) + ".")
    return Section(title, sentence, t, notes=notes)


def is_v1_run(run: Run) -> bool:
    return "endpoint" in run.df and run.df["endpoint"].isin(OPENAI_ENDPOINTS).any()
