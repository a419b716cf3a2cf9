"""Was each factor applied? Each factor level checked against what the server did (issue 15,
item 5), from processes.jsonl's per-batch `offload` (langbench.run.batches.Offload: /api/ps after the
batch, the batch's part of the server log) and the records themselves.

- any factor the server logged as `invalid option provided`: not applied;
- num_ctx: /api/ps context_length after the chimera batch equals the level;
- num_gpu: layers offloaded (server log) differ between levels; the same count for every level
  (a CPU-only host: 0) means the factor changed nothing but a reload;
- keep_alive: 0 leaves the model unloaded after the batch, any other value loaded;
- think: true gives thinking chunks, false none;
- endpoint: every record of the level's batches says it went to that endpoint;
- server_kind: processes.jsonl says each of the level's batches ran on a server of that kind;
- any other option: accepted (no warning), its effect not observable from the server.
"""

from __future__ import annotations

import pandas as pd

from langbench.vocab import LOAD_FACTORS

APPLIED, NOT_APPLIED, UNOBSERVABLE, UNKNOWN = "yes", "no", "not observable", "no evidence"


def _offloads(procs: pd.DataFrame) -> dict[str, dict]:
    """batch_id → the offload dict of its last attempt."""
    if procs.empty or "offload" not in procs:
        return {}
    out = {}
    for b, o in zip(procs["batch_id"], procs["offload"]):
        if isinstance(o, dict) and "error" not in o:
            out[b] = o
    return out


def factor_checks(df: pd.DataFrame, procs: pd.DataFrame, factors: list[str]) -> pd.DataFrame:
    """One row per factor × level (chimera batches): batches, applied (yes / no / not
    observable / no evidence) and the evidence as a sentence."""
    offload = _offloads(procs)
    chim = df[(df.get("mode") == "chimera") & (df["agent"] != "null")] if "mode" in df else df.iloc[0:0]
    rows = []
    for f in (f for f in factors if f not in LOAD_FACTORS and f in chim):
        invalid_in = [b for b, o in offload.items() if f in (o.get("invalid_options") or [])]
        layers_by_level = {}
        for level, g in chim.groupby(f, dropna=False):
            batches = list(dict.fromkeys(g["batch_id"]))
            seen = [offload[b] for b in batches if b in offload]
            row = {"factor": f, "level": _level(level), "batches": len(batches), "checked": len(seen)}
            if invalid_in:
                row.update(applied=NOT_APPLIED, evidence=f"the server logged `invalid option provided` for {f} "
                                                         f"({len(invalid_in)} batches): Ollama ignored it")
            elif f == "endpoint":
                went = sorted(set(g["endpoint"].dropna().astype(str)))
                row.update(applied=APPLIED if went == [str(level)] else NOT_APPLIED,
                           evidence=f"the records say their requests went to {', '.join(went) or 'nothing'}")
            elif f == "server_kind":
                kinds = sorted(set(procs.loc[procs["batch_id"].isin(batches), "server_kind"].dropna())) \
                    if "server_kind" in procs else []
                row.update(applied=UNKNOWN if not kinds else APPLIED if kinds == [level] else NOT_APPLIED,
                           evidence=f"processes.jsonl: the batches ran on {', '.join(kinds) or 'no recorded'} server(s)")
            elif not seen:
                row.update(applied=UNKNOWN, evidence="no server state recorded for these batches")
            elif f == "num_ctx":
                ctx = sorted({o.get("context_length") for o in seen}, key=str)
                if ctx == [None]:  # a server state without the context length (older records)
                    row.update(applied=UNKNOWN, evidence="no context length recorded for these batches")
                else:
                    row.update(applied=APPLIED if ctx == [level] else NOT_APPLIED,
                               evidence=f"/api/ps context length after the batch: {', '.join(map(str, ctx))}")
            elif f == "num_gpu":
                layers = sorted({(o.get("layers_gpu"), o.get("layers_total")) for o in seen}, key=str)
                layers_by_level[level] = layers
                said = "layers on GPU (server log): " + ", ".join(
                    f"{a}/{b}" if a is not None else "not logged" for a, b in layers)
                logged = [(a, b) for a, b in layers if a is not None and b is not None]
                if not logged:
                    row.update(applied=UNKNOWN, evidence=said)
                else:  # num_gpu n puts min(n, layers) layers on the GPU where the server has one
                    ok = all(a == min(int(level), b) for a, b in logged)
                    row.update(applied=APPLIED if ok else NOT_APPLIED,
                               evidence=said + ("" if ok else f" where num_gpu {_level(level)} asks for "
                                                f"{min(int(level), logged[0][1])}"))
            elif f == "keep_alive":
                want = level not in (0, "0", "0s", "0m")
                loaded = [o.get("loaded") for o in seen]
                ok = all(x is want for x in loaded)
                row.update(applied=APPLIED if ok else NOT_APPLIED,
                           evidence=f"model loaded after {sum(bool(x) for x in loaded)} of {len(loaded)} batches "
                                    f"(/api/ps; {'kept' if want else 'unloaded'} expected)")
            elif f == "think":
                thinking = g["chunks_thinking"] if "chunks_thinking" in g else pd.Series(dtype=float)
                ok_runs = g[g["outcome"] == "ok"]
                n_think = int((ok_runs.get("chunks_thinking", pd.Series(0, index=ok_runs.index)) > 0).sum())
                want = bool(level)
                ok = len(ok_runs) > 0 and (n_think == len(ok_runs) if want else n_think == 0)
                row.update(applied=APPLIED if ok else NOT_APPLIED,
                           evidence=f"{n_think} of {len(ok_runs)} ok runs streamed thinking chunks"
                                    + ("" if len(thinking) else " (records without token kinds)"))
            else:
                row.update(applied=UNOBSERVABLE, evidence="accepted (no `invalid option provided`); the server "
                                                          "reports nothing that shows its effect")
            rows.append(row)
        if f == "num_gpu" and len(layers_by_level) > 1 and len({tuple(v) for v in layers_by_level.values()}) == 1:
            for r in rows:
                if r["factor"] == "num_gpu":
                    r["evidence"] += "; the same for every level: the factor changed nothing but a reload"
    return pd.DataFrame(rows, columns=["factor", "level", "batches", "checked", "applied", "evidence"])


def _level(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def not_applied(checks: pd.DataFrame) -> dict[str, str]:
    """factor → why, for every factor with a level the server did not apply."""
    out = {}
    for f, g in checks[checks["applied"] == NOT_APPLIED].groupby("factor", sort=False):
        levels = "every level" if len(g) == (checks["factor"] == f).sum() else \
            "level " + ", ".join(_level(v) for v in g["level"])
        out[f] = f"{f} ({levels}): {g['evidence'].iloc[0]}"
    return out
