"""Is a replay true to the real server it copies? (DESIGN.md, "The replay server": honest use.)

The same design runs on the real server with `capture: true` and on the replay of its profile
at `time_scale: 1`. For every client and endpoint this sets the two runs' warm TTFT and ITL
(each run's median inter-chunk gap) side by side: the medians, their distance, and a two-sample
Kolmogorov–Smirnov test; and it sets the language verdicts of the two runs side by side.

The stated distance: a replay is true to its server where no client's TTFT or ITL distribution
is told apart from the real run's by the two-sample KS test at ALPHA, Holm-adjusted over every
client × endpoint × metric of the check (`agrees`). The medians and their distance stand beside
it, with whether the distance is within DISTANCE_REL of the real median or DISTANCE_ABS_MS where
that is wider (`within bound`): the tighter reading, which a few runs per cell on a busy 2-core
host cannot always give (a donor is drawn per request: a small sample's median moves with the
draw). Verdicts agree unless they contradict: one run finds a difference the other finds
equivalent, or the two find opposite differences ("inconclusive" contradicts nothing).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from scipy import stats as sps

from langbench.analysis import findings, stats

DISTANCE_REL = 0.20
DISTANCE_ABS_MS = 5.0
ALPHA = 0.01
METRICS = {"ttft_ms": "TTFT", "itl_p50_ms": "ITL (median gap)"}


def _warm(run: findings.Run) -> pd.DataFrame:
    floor = run.floor[run.floor["phase"] == "measured"] if "phase" in run.floor else run.floor
    return pd.concat([run.warm, floor[floor["outcome"] == "ok"]], ignore_index=True)


def distances(real_dir: str | Path, replay_dir: str | Path) -> pd.DataFrame:
    """One row per client × endpoint × metric: the real and replayed medians, their distance,
    the bound, whether it holds, and the KS statistic and p-value."""
    real, replay = findings.Run.load(real_dir), findings.Run.load(replay_dir)
    a, b = _warm(real), _warm(replay)
    rows = []
    for (agent, endpoint), x in a.groupby(["agent", "endpoint"]):
        y = b[(b["agent"] == agent) & (b["endpoint"] == endpoint)]
        for metric, label in METRICS.items():
            xs, ys = x[metric].dropna(), y[metric].dropna()
            if xs.empty or ys.empty:
                continue
            m_real, m_replay = float(xs.median()), float(ys.median())
            bound = max(DISTANCE_REL * m_real, DISTANCE_ABS_MS)
            ks = sps.ks_2samp(xs, ys) if len(xs) > 1 and len(ys) > 1 else None
            rows.append({"client": agent, "endpoint": endpoint, "metric": label, "runs real": len(xs),
                         "runs replay": len(ys), "real median (ms)": m_real, "replay median (ms)": m_replay,
                         "distance (ms)": m_replay - m_real, "bound (ms)": bound,
                         "within bound": abs(m_replay - m_real) <= bound,
                         "KS statistic": float(ks.statistic) if ks else float("nan"),
                         "KS p": float(ks.pvalue) if ks else float("nan")})
    out = pd.DataFrame(rows)
    if not out.empty:
        p = out["KS p"].fillna(1.0).to_numpy()
        out["KS p (Holm)"] = stats.holm(p)
        out["agrees"] = out["KS p (Holm)"] >= ALPHA
    return out


def _contradict(u: str, v: str) -> bool:
    differs = lambda s: s.endswith(" higher")
    if "inconclusive" in (u, v) or "not enough data" in (u, v):
        return False
    return (differs(u) != differs(v)) or (differs(u) and u != v)


def verdicts(real_dir: str | Path, replay_dir: str | Path) -> pd.DataFrame:
    """Python against Rust on each endpoint and metric, in the real run and in the replay."""
    real, replay = findings.Run.load(real_dir), findings.Run.load(replay_dir)
    rows = []
    for endpoint in sorted(real.warm["endpoint"].unique()):
        for metric, label in METRICS.items():
            out = {"endpoint": endpoint, "metric": label}
            for name, run in (("real", real), ("replay", replay)):
                data = run.warm[run.warm["endpoint"] == endpoint]
                py, rs = (data[data["agent"] == a] for a in ("python", "rust"))
                out[f"verdict, {name}"] = run.compare(py, rs, metric).verdict
            out["agree"] = not _contradict(out["verdict, real"], out["verdict, replay"])
            rows.append(out)
    return pd.DataFrame(rows)
