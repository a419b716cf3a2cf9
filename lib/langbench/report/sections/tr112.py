"""The run at a glance: the language verdict table, and TR112's headline claims one by one
beside what this run measured (DESIGN.md, "Report": the index answers at a glance).

Claim verdicts: "supported" (this run shows it, by the test named), "contradicted" (this run
shows the opposite, or shows equivalence where the seed claims a difference beyond the margin),
"not shown" (inconclusive at this run's power), "not measurable here" (the host cannot produce
the factor: a CPU-only host has no GPU layers).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats as sps

from langbench.analysis import stats, stopping
from langbench.analysis.findings import HIGHER, LOWER, Run, p_text, paired_result
from langbench.report.sections import Section
from langbench.report.sections import validity

SUPPORTED, CONTRADICTED, NOT_SHOWN, NOT_MEASURABLE = ("supported", "contradicted", "not shown",
                                                      "not measurable here")

METRICS = stopping.HEADLINE  # (column, label, unit, better, which rows): the sweep stops on these too


def _rows(run: Run, which: str) -> pd.DataFrame:
    return stopping.rows(run, which)


def _fmt(x: float, unit: str) -> str:
    return f"{x:,.1f} {unit}" if unit in ("ms", "tok/s") else f"{x:,.3g} {unit}"


def verdicts(run: Run) -> Section:
    """One row per metric: each language's mean, Python − Rust with its 95 % CI, the pre-set
    margin, the rule that decided and the verdict (differs / equivalent / inconclusive)."""
    rows = []
    seq = stopping.summary(run)
    by_label = {v["metric"]: v for v in seq["verdicts"]} if seq else {}
    for value, label, unit, better, which in METRICS:
        data = _rows(run, which)
        if value not in data or data[value].notna().sum() == 0:
            continue
        py, rs = (data[data["agent"] == a] for a in ("python", "rust"))
        if py[value].notna().sum() < 2 or rs[value].notna().sum() < 2:
            continue
        c = run.compare(py, rs, value)
        if c.verdict == "not enough data":
            continue
        if label in by_label:  # a sequential stop: the verdict as of the round it was decided in
            rows.append(_sequential_row(by_label[label], label, unit, better, c, seq))
            continue
        decided = validity.deciding_rule(run, value, data)
        p = paired_result(run, value, data) if decided["rule"] == "paired" else None
        if decided["rule"] is None:
            verdict, verdict_text, rule = "inconclusive", "undecided: no calibrated rule", decided["why"]
        elif p is not None:
            verdict = p["verdict"]
            best = ("python" if p["mean_diff"] > 0 else "rust") if better == HIGHER else \
                   ("rust" if p["mean_diff"] > 0 else "python")
            verdict_text = f"differs: {best.capitalize()} better" if verdict == "differs" else verdict
            rule = (f"paired over {p['cells']} cells: t {p_text(p['t_p'])}, TOST {p_text(p['tost_p'])} "
                    f"(passed its A/A check)")
            rows.append({"metric": f"{label} ({unit})", "Python": _fmt(c.mean_a, unit), "Rust": _fmt(c.mean_b, unit),
                         "Python − Rust [95 % CI]": f"{p['mean_diff']:+,.2f} [{p['ci_low']:+,.2f}, {p['ci_high']:+,.2f}]",
                         "margin": f"±{p['margin']:,.2f}", "rule that decided": rule, "verdict": verdict_text,
                         "_class": verdict, "_sentence": _sentence(label, unit, c, verdict_text)})
            continue
        elif c.verdict.endswith("higher"):
            hi = c.verdict.split()[0]
            best = hi if better == HIGHER else ("rust" if hi == "python" else "python")
            verdict, rule = "differs", f"pooled: Welch {p_text(c.welch_p)}, |difference| beyond the margin"
            verdict_text = f"differs: {best.capitalize()} better"
        elif c.verdict == "equivalent":
            verdict, rule = "equivalent", f"pooled: TOST {p_text(c.tost_p)} within the margin"
            verdict_text = "equivalent"
        else:
            verdict, rule = "inconclusive", f"pooled: neither Welch {p_text(c.welch_p)} nor TOST {p_text(c.tost_p)}"
            verdict_text = "inconclusive"
        rows.append({"metric": f"{label} ({unit})", "Python": _fmt(c.mean_a, unit), "Rust": _fmt(c.mean_b, unit),
                     "Python − Rust [95 % CI]": f"{c.diff:+,.2f} [{c.diff_ci_low:+,.2f}, {c.diff_ci_high:+,.2f}]",
                     "margin": f"±{c.margin:,.2f}", "rule that decided": rule, "verdict": verdict_text,
                     "_class": verdict, "_sentence": _sentence(label, unit, c, verdict_text)})
    t = pd.DataFrame(rows)
    sentence = (f"{len(t)} metrics compared on warm runs, batches as the unit; a verdict needs its test at "
                f"α = {run.alpha} and the margin fixed in the parameter file, and is decided by the paired rule "
                "(per-cell differences) unless it failed this run's A/A check, then by the pooled rule, else by none.")
    if seq:
        sentence += " " + _stop_sentence(seq)
    return Section("The languages at a glance", sentence, t)


def _verdict_text(verdict: str, estimate: float | None, better: str) -> str:
    if verdict != "differs" or estimate is None:
        return verdict
    best = ("python" if estimate > 0 else "rust") if better == HIGHER else ("rust" if estimate > 0 else "python")
    return f"differs: {best.capitalize()} better"


def _sequential_row(v: dict, label: str, unit: str, better: str, c: stats.Comparison, seq: dict) -> dict:
    """A verdict table row of a sequential sweep: the verdict, its repeated CI and the round it
    was decided in (stopping.summary), what it cost and what the fixed design would have."""
    text = _verdict_text(v["verdict"], v["estimate"], better)
    at, max_rounds = v["decided_round"], seq["max_batches"]
    when = f"round {at} of {max_rounds}" if at else f"not decided in {seq['rounds_run']} of {max_rounds} rounds"
    ci = (f"{v['estimate']:+,.2f} [{v['lo']:+,.2f}, {v['hi']:+,.2f}]" if v["estimate"] is not None and v["lo"] is not None
          else "–")
    rule = (f"sequential {v['rule']} rule (O'Brien–Fleming α-spending), "
            + ("passed its A/A check" if v["rule_checked"] else "unchecked: too few cells or batches for an A/A split")
            if v["rule"] else v["why"] or "no calibrated rule")
    naive = (f"no-peeking-correction rule: {v['naive_verdict']} at round {v['naive_round']}"
             if v["naive_round"] else f"no-peeking-correction rule: {v['naive_verdict'] or 'inconclusive'}, undecided")
    if v["naive_lo"] is not None:
        naive += f"; its 95 % CI [{v['naive_lo']:+,.2f}, {v['naive_hi']:+,.2f}]"
    return {"metric": f"{label} ({unit})", "Python": _fmt(c.mean_a, unit), "Rust": _fmt(c.mean_b, unit),
            "Python − Rust [repeated 95 % CI]": ci, "margin": f"±{v['margin']:,.2f}", "rule that decided": rule,
            "verdict": text, "decided in": when, "runs, minutes": f"{v['runs']:,} runs, {v['minutes']:,.1f} min",
            "fixed design": f"{v['fixed_runs']:,} runs, ≈{v['fixed_minutes']:,.1f} min ({max_rounds} rounds)",
            "what it gave up": naive, "_class": v["verdict"],
            "_sentence": (f"{label[0].upper() + label[1:]}: {text} in {when} ({v['runs']:,} runs, "
                          f"{v['minutes']:,.1f} min; the fixed design: {v['fixed_runs']:,} runs, "
                          f"≈{v['fixed_minutes']:,.1f} min). Python {_fmt(c.mean_a, unit)}, Rust {_fmt(c.mean_b, unit)}.")}


def _stop_sentence(seq: dict) -> str:
    decided = [v for v in seq["verdicts"] if v["decided_round"]]
    how = (f"stopped after round {seq['rounds_run']} of at most {seq['max_batches']}: every headline verdict "
           "was decided" if seq["stopped"] else
           f"ran {seq['rounds_run']} of at most {seq['max_batches']} rounds; still open: {', '.join(seq['open'])}")
    return (f"The sweep was sequential (looks from round {seq['min_batches']}, O'Brien–Fleming α-spending, "
            f"valid under repeated looks) and {how}; {len(decided)} of {len(seq['verdicts'])} verdicts were "
            f"decided, each as of its round; {seq['runs_total']:,} warm runs were measured.")


def time_to_verdict(run: Run) -> Section:
    """A sequential sweep (`stop: {rule: sequential}`): per verdict the round it was decided in,
    its runs and minutes, the fixed design's, and the no-peeking-correction rule's round and CI."""
    seq = stopping.summary(run)
    if not seq:
        return Section("Time to a verdict", "This run used the fixed design (stop: fixed): every planned round ran.")
    t = pd.DataFrame([{k: v[k] for k in ("metric", "unit", "rule", "verdict", "decided_round", "estimate", "lo",
                                         "hi", "runs", "minutes", "fixed_runs", "fixed_minutes", "naive_verdict",
                                         "naive_round", "naive_lo", "naive_hi")} for v in seq["verdicts"]])
    t["decided_round"] = t["decided_round"].astype("Int64")
    t["naive_round"] = t["naive_round"].astype("Int64")
    saved = t["fixed_runs"].max() - t["runs"].max() if len(t) else 0
    sentence = _stop_sentence(seq) + (f" Against the fixed design of {seq['max_batches']} rounds it measured "
                                      f"{int(saved):,} fewer warm runs per verdict table." if saved > 0 else "")
    return Section("Time to a verdict", sentence, t)


def _sentence(label: str, unit: str, c: stats.Comparison, verdict: str) -> str:
    return (f"{label[0].upper() + label[1:]}: {verdict} (Python {_fmt(c.mean_a, unit)}, "
            f"Rust {_fmt(c.mean_b, unit)}).")


def _claim(claim: str, seed: str, measured: str, verdict: str, why: str) -> dict:
    return {"TR112 claim": claim, "seed": seed, "this run": measured, "verdict": verdict, "why": why}


def _direction(c: stats.Comparison, claimed_winner: str, better: str, claimed_gap: float) -> tuple[str, str]:
    """A difference claim against a comparison: the verdict and the test that decided."""
    if c.verdict.endswith("higher"):
        hi = c.verdict.split()[0]
        winner = hi if better == HIGHER else ("rust" if hi == "python" else "python")
        return (SUPPORTED if winner == claimed_winner else CONTRADICTED,
                f"Welch {p_text(c.welch_p)}: {winner.capitalize()} better beyond the ±{c.margin:,.2f} margin")
    if c.verdict == "equivalent":
        if abs(claimed_gap) > c.margin:
            return CONTRADICTED, (f"equivalent within ±{c.margin:,.2f} (TOST {p_text(c.tost_p)}), "
                                  f"where the seed claims a gap of {abs(claimed_gap):,.0f}")
        return NOT_SHOWN, (f"equivalent within ±{c.margin:,.2f} (TOST {p_text(c.tost_p)}): the claimed "
                           "gap is smaller than the margin, too small to show")
    return NOT_SHOWN, f"inconclusive at this run's power (Welch {p_text(c.welch_p)}, TOST {p_text(c.tost_p)})"


def _cv_ratio(py: np.ndarray, rs: np.ndarray, seed: int = 112, n: int = 2000) -> tuple[float, float, float]:
    """CV(Python) / CV(Rust) of per-cell means, with a bootstrap 95 % CI."""
    def cv(x):
        return np.std(x, ddof=1) / np.mean(x)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample of identical values has CV 0
        boots = np.array([cv(rng.choice(py, len(py))) / cv(rng.choice(rs, len(rs))) for _ in range(n)])
    boots = boots[np.isfinite(boots)]
    if len(boots) == 0:
        return cv(py) / cv(rs), float("nan"), float("nan")
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return cv(py) / cv(rs), float(lo), float(hi)


def claims(run: Run) -> Section:
    """TR112's headline claims (seed §3–7), each beside this run's number and verdict."""
    from langbench.report.sections import decision, success
    rows = []
    w = run.warm
    py, rs = (w[w["agent"] == a] for a in ("python", "rust"))
    c = run.compare(py, rs, "throughput_tps")
    gap = 100 * c.diff / c.mean_b if c.mean_b else float("nan")
    v, why = _direction(c, "python", HIGHER, 0.003 * c.mean_b)
    rows.append(_claim("Throughput: Python 0.3 % faster", "99.15 vs 98.86 tok/s (+0.3 %)",
                       f"{c.mean_a:,.1f} vs {c.mean_b:,.1f} tok/s ({gap:+.2f} %)", v, why))

    same = w
    gpus = run.manifest.get("host", {}).get("gpus") or []
    if gpus and "num_gpu" in w and w["num_gpu"].nunique() > 1:  # offloads that differ: the seed's (full) only
        same = w[(w["mode"] == "baseline") | (w["num_gpu"] == w["num_gpu"].max())]
    cells = same.groupby(["config_id", "mode", "agent"])["throughput_tps"].mean().unstack("agent").dropna()
    if {"python", "rust"} <= set(cells) and len(cells) >= 3:
        cp, cr = cells["python"].to_numpy(), cells["rust"].to_numpy()
        ratio, lo, hi = _cv_ratio(cp, cr)
        bf = sps.levene(cp, cr, center="median").pvalue
        cv_py, cv_rs = 100 * np.std(cp, ddof=1) / cp.mean(), 100 * np.std(cr, ddof=1) / cr.mean()
        measured = (f"CV {cv_rs:.2f} % (Rust) vs {cv_py:.2f} % (Python) over {len(cells)} cells"
                    + (" at full offload" if same is not w else ""))
        if bf < run.alpha:
            v = SUPPORTED if cv_rs < cv_py else CONTRADICTED
        else:
            v = NOT_SHOWN
        rows.append(_claim("Consistency: Rust's throughput varies less", "CV 0.40 % (Rust) vs 0.48 % (Python)",
                           measured, v, f"Brown–Forsythe on per-cell means {p_text(bf)}"))
        v = SUPPORTED if lo >= 6 else CONTRADICTED if hi < 6 else NOT_SHOWN
        rows.append(_claim("Consistency: Rust 6–12× more consistent", "0.4 % vs 2–5 % CV (the headline)",
                           f"CV ratio Python/Rust {ratio:.2f} [{lo:.2f}, {hi:.2f}]", v,
                           "bootstrap 95 % CI of the ratio against 6 (the seed's own table gives 1.2)"))

    tt = _rows(run, "cached")
    tpy, trs = (tt[tt["agent"] == a] for a in ("python", "rust"))
    if tpy["ttft_ms"].notna().sum() > 1 and trs["ttft_ms"].notna().sum() > 1:
        c = run.compare(tpy, trs, "ttft_ms")
        v, why = _direction(c, "python", LOWER, 3794 - 1409)
        rows.append(_claim("TTFT: Python's first token far sooner", "1,409 (Python) vs 3,794 ms (Rust)",
                           f"{c.mean_a:,.1f} vs {c.mean_b:,.1f} ms", v,
                           why + "; the seed timed TTFT differently in the two languages, this run with one contract"))

    t, d = success.success_rates(run)
    first = t.table.iloc[0]
    n = int(first["configs"])
    p = first["mcnemar_p"]
    if p < run.alpha:
        v = SUPPORTED if first["rust"] > first["python"] else CONTRADICTED
    else:
        v = NOT_SHOWN
    seed_p = stats.compare_rates(13, 18, 7, 18)["fisher_p"]
    rows.append(_claim("Optimization success: Rust 72 % vs Python 39 %, p < 0.01", "13/18 vs 7/18 configs",
                       f"{int(first['rust'])}/{n} vs {int(first['python'])}/{n} configs", v,
                       f"McNemar exact {p_text(p)} on the same configs (the seed's 13/18 vs 7/18 is "
                       f"Fisher {p_text(seed_p)}: not p < 0.01 even there)"))

    dp = d[d["agent"] == "python"].dropna(subset=["delta_pct"])
    if len(dp):
        best = dp.loc[dp["delta_pct"].idxmax()]
        measured = (f"Python's best +{best['delta_pct']:.2f} % [{best['delta_ci_low_pct']:+.2f}, "
                    f"{best['delta_ci_high_pct']:+.2f}] at {best['config_id']}")
        v = SUPPORTED if best["delta_ci_low_pct"] > 0 else NOT_SHOWN
        rows.append(_claim("Peak gain: Python +2.2 % at its best config", "+2.20 % (num_gpu 60, num_ctx 512, 0.8)",
                           measured, v, "95 % CI of that config's chimera − baseline delta "
                           "(the best of many noisy deltas is biased upward)"))

    m = decision.decision_matrix(run).table
    groups = m.drop_duplicates("group")["group_winner"].value_counts()
    r_w, p_w = int(groups.get("rust", 0)), int(groups.get("python", 0))
    v = SUPPORTED if r_w > p_w else CONTRADICTED if p_w > r_w else NOT_SHOWN
    rows.append(_claim("Decision matrix: Rust 8 wins, Python 5", "8 to 5 (5 of them scored by opinion)",
                       f"Rust {r_w}, Python {p_w} of {len(groups.index) and int(groups.sum())} measured groups", v,
                       "groups of correlated criteria, Holm across criteria; opinion criteria left out"))

    gpus = (run.manifest.get("host") or {}).get("gpus") or []
    for factor, seed_text in (("num_gpu", "Rust wins at 60, 80 and 120 layers"),
                              ("num_ctx", "Rust wins at 256, 512 and 1024"),
                              ("temperature", "Rust wins at 0.6 and 0.8")):
        claim = f"Success by {factor}: Rust better at every level"
        if factor == "num_gpu" and not gpus:
            rows.append(_claim(claim, seed_text, "no GPU on this host", NOT_MEASURABLE,
                               "a CPU-only host offloads no layer: num_gpu only forces a reload here"))
            continue
        if factor not in run.factors or factor not in d:
            rows.append(_claim(claim, seed_text, "factor not varied in this run", NOT_MEASURABLE,
                               "the parameter file does not vary it"))
            continue
        s = success.success_by(d, factor, run.alpha).table
        if s.empty:
            rows.append(_claim(claim, seed_text, "no config has a delta", NOT_MEASURABLE,
                               f"a delta needs {stats.DELTA_MIN_UNITS} warm runs in both modes"))
            continue
        winners = s["winner"].value_counts()
        measured = ", ".join(f"{lvl:g}: {wn}" if isinstance(lvl, (int, float)) else f"{lvl}: {wn}"
                             for lvl, wn in zip(s[factor], s["winner"]))
        v = (SUPPORTED if winners.get("rust", 0) == len(s) else
             CONTRADICTED if winners.get("python", 0) else NOT_SHOWN)
        rows.append(_claim(claim, seed_text, measured, v,
                           "McNemar exact per level, Holm across levels"))
    table = pd.DataFrame(rows)
    counts = table["verdict"].value_counts()
    sentence = (f"Of TR112's {len(table)} headline claims, this run supports {counts.get(SUPPORTED, 0)}, "
                f"contradicts {counts.get(CONTRADICTED, 0)}, does not show {counts.get(NOT_SHOWN, 0)} "
                f"(inconclusive at its power) and cannot measure {counts.get(NOT_MEASURABLE, 0)} on this host.")
    return Section("TR112, claim by claim", sentence, table)
