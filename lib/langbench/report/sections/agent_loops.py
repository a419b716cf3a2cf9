"""Agent loops (issue 24; DESIGN.md, "Agent loops"): multi-turn tasks, timed turn by turn in
every client, and the agent_loops report's sections.

- the conversation check: the languages held the same conversation when every turn's
  history_sha256 (and response_sha256) is the same for the runs that did the same work
  (`run_key`: config, mode, round, task, repetition); a mismatch is named with its turn;
- TTFT per turn, against the turn and the prompt's length (prompt_eval_count);
- the agent's own time: agent_ms per turn (turns 1..), and per task (summed), per language with
  bootstrap CIs, compared with the run's rule (batches as units where there are two or more)
  and the pre-set margin (margins.overhead_ms), the verdict kept only where the rule passes its
  own A/A check (one agent against itself, its batches split in halves);
- the client's share of task time: agent_ms summed over the task's end-to-end time;
- the prefix cache: prompt-eval time per prompt token against the prompt's length, for tasks
  sent as planned (the opening repeated: its prefix cached) and with a unique opening prefix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from langbench.analysis import metrics, stats
from langbench.analysis.findings import Run, p_text
from langbench.report import plots
from langbench.report.sections import Section

LANGS = ("python", "rust")


def all_rows(run: Run) -> pd.DataFrame:
    """The agents' and the null client's rows together (the null client is the floor)."""
    return pd.concat([run.df, run.floor], ignore_index=True)


def turns(run: Run) -> pd.DataFrame:
    return metrics.warm_turns(all_rows(run))


def tasks(run: Run) -> pd.DataFrame:
    t = metrics.tasks(all_rows(run))
    return t[t["phase"] == "measured"] if not t.empty else t


def is_agent_run(run: Run) -> bool:
    return "turn" in run.df and run.df["turn"].notna().any()


def _none(title: str) -> Section:
    return Section(title, "This run has no agent tasks (a parameter file sets them with `workload: agent` "
                          "and `tasks:`).")


# --- sections -----------------------------------------------------------------------------

def overview(run: Run) -> Section:
    if not is_agent_run(run):
        return _none("Agent tasks")
    t = metrics.tasks(all_rows(run))
    t = t[t["phase"] == "measured"]
    table = (t.groupby(["agent", "task_id", "task_outcome"]).agg(tasks=("run_id", "size"), turns=("turns", "mean"))
             .reset_index())
    replays = t["replay"].dropna() if "replay" in t else pd.Series(dtype=object)
    kinds = [f"{', '.join(sorted(t['actions'].dropna().unique()))} actions"] if t["actions"].notna().any() else []
    kinds += [f"{len(replays)} replayed conversations: "
              + ", ".join(f"{n} {m}" for m, n in sorted(replays.value_counts().items()))] if len(replays) else []
    outcome = t["task_outcome"].value_counts()
    parts = ", ".join(f"{n} {o}" for o, n in outcome.items())
    sentence = (f"{len(t)} measured tasks ({'; '.join(kinds)}) over {t['task_id'].nunique()} task kinds, "
                f"{int(t['turns'].sum())} turns, by {', '.join(sorted(t['agent'].unique()))}: {parts}. "
                "A task ends by finish, at max_turns, or on the turn whose answer is no valid action, names a "
                "tool that does not exist, or whose request failed (each a named outcome on that turn).")
    return Section("Agent tasks", sentence, table)


def conversation_matches(run: Run) -> pd.DataFrame:
    """Per run_key and turn: whether every client that ran it sent the same history and got the
    same answer."""
    t = metrics.turns(all_rows(run))
    if t.empty or "run_key" not in t:
        return pd.DataFrame()
    rows = []
    for (key, turn), g in t.groupby(["run_key", "turn"]):
        rows.append({"run_key": key, "turn": turn, "agents": ", ".join(sorted(g["agent"])),
                     "history_match": g["history_sha256"].nunique() == 1,
                     "response_match": g["response_sha256"].nunique() == 1})
    return pd.DataFrame(rows)


def conversations(run: Run) -> Section:
    title = "The same conversation in every language"
    if not is_agent_run(run):
        return _none(title)
    m = conversation_matches(run)
    multi = m[m["agents"].str.contains(",")]
    if multi.empty:
        return Section(title, "No task was run by more than one client: nothing to match.")
    bad = multi[~(multi["history_match"] & multi["response_match"])]
    sentence = (f"{len(multi) - len(bad)} of {len(multi)} turns that several clients ran held the same history "
                "and got the same answer in every client (seeded sampling, the same history).")
    if len(bad):
        first = bad.iloc[0]
        what = "history" if not first["history_match"] else "answer"
        sentence += (f" {len(bad)} did not; the first is {first['run_key']} at turn {first['turn']} "
                     f"(the {what} differs between {first['agents']}).")
    return Section(title, sentence, bad if len(bad) else None)


def ttft_by_turn(run: Run) -> Section:
    title = "TTFT per turn, against turn and context length"
    if not is_agent_run(run):
        return _none(title)
    t = turns(run)
    table = (t.groupby(["agent", "turn"]).agg(turns=("run_id", "size"), ttft_ms=("ttft_ms", "median"),
                                              prompt_tokens=("prompt_eval_count", "median"),
                                              prompt_eval_ms=("prompt_eval_ms", "median"),
                                              e2e_ms=("e2e_ms", "median")).reset_index())
    pooled = t.groupby("turn").agg(ttft_ms=("ttft_ms", "median"), prompt_tokens=("prompt_eval_count", "median"))
    parts = [f"turn {k}: {r.ttft_ms:.0f} ms at {r.prompt_tokens:.0f} prompt tokens" for k, r in pooled.iterrows()]
    rho = stats_spearman(t["prompt_eval_count"], t["ttft_ms"])
    sentence = ("Median TTFT per turn, every client: " + "; ".join(parts) + "." +
                (f" Across turns, TTFT rises with the prompt's length (Spearman ρ = {rho:.2f})." if rho is not None
                 and rho > 0 else f" Spearman ρ of TTFT on prompt length: {rho:.2f}." if rho is not None else ""))
    return Section(title, sentence, table, plots.ttft_by_context(t),
                   caption="Each point one turn; the history grows by the answer and the tool's result each turn "
                           "(a replay: by the recorded turns up to the next answer).")


def stats_spearman(x, y) -> float | None:
    from scipy import stats as sps
    d = pd.DataFrame({"x": pd.to_numeric(x, errors="coerce"), "y": pd.to_numeric(y, errors="coerce")}).dropna()
    if len(d) < 3 or d["x"].nunique() < 2:
        return None
    return float(sps.spearmanr(d["x"], d["y"]).statistic)


def _aa(run: Run, data: pd.DataFrame, value: str, splits: int = 50) -> dict:
    """The language rule applied to each agent against itself: its batches split in halves
    (distinct splits, seeded); the share of splits the rule calls different."""
    rng = np.random.default_rng(112)
    out = {"checked": False, "rate": np.nan, "tests": 0}
    rates = []
    for agent in LANGS:
        g = data[data["agent"] == agent]
        ids = np.array(sorted(g["batch_id"].unique()))
        if len(ids) < 4:
            continue
        for half in stats._half_splits(ids, splits, rng):
            a, b = g[g["batch_id"].isin(half)], g[~g["batch_id"].isin(half)]
            c = run.compare(a, b, value, ("a", "b"))
            rates.append(c.verdict.endswith("higher"))
    if rates:
        out = {"checked": True, "rate": float(np.mean(rates)), "tests": len(rates)}
    return out


def own_time_table(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(descriptive rows per agent and level, comparisons python vs rust per level); computed once
    per loaded run (the index asks for it twice, and its A/A splits bootstrap hundreds of CIs)."""
    kept = getattr(run, "_own_time_table", None)
    if kept is None:
        kept = _own_time_table(run)
        run._own_time_table = kept
    return kept


def _own_time_table(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_turn = turns(run)
    per_turn = per_turn[per_turn["agent_ms"].notna()].copy()
    per_task = tasks(run)
    desc, comps = [], []
    for level, data, value in (("per turn", per_turn, "agent_ms"), ("per task", per_task, "task_agent_ms")):
        if data.empty:
            continue
        for agent, g in data.groupby("agent"):
            d = stats.describe(g[value])
            desc.append({"level": level, "agent": agent, "n": d.get("n"), "mean_ms": d.get("mean"),
                         "ci_low": d.get("mean_ci_low"), "ci_high": d.get("mean_ci_high"),
                         "median_ms": d.get("median"), "p95_ms": float(g[value].quantile(0.95)),
                         "batches": g["batch_id"].nunique()})
        py, rs = (data[data["agent"] == a] for a in LANGS)
        if py.empty or rs.empty:
            continue
        c = run.compare(py, rs, value)
        aa = _aa(run, data, value)
        fails = aa["checked"] and aa["rate"] > 2 * run.alpha
        verdict = c.verdict if not fails else "not decided (the rule fails its A/A check)"
        comps.append({"level": level, "metric": value, "python_ms": c.mean_a, "rust_ms": c.mean_b,
                      "units": f"{c.n_a} vs {c.n_b}", "diff_ms": c.diff, "ci_low": c.diff_ci_low,
                      "ci_high": c.diff_ci_high, "welch_p": c.welch_p, "margin_ms": c.margin, "tost_p": c.tost_p,
                      "aa_false_positive_rate": aa["rate"], "aa_tests": aa["tests"], "verdict": verdict})
    return pd.DataFrame(desc), pd.DataFrame(comps)


def own_time(run: Run) -> Section:
    title = "The agent's own time, per turn and per task"
    if not is_agent_run(run):
        return _none(title)
    desc, comps = own_time_table(run)
    if desc.empty:
        return Section(title, "No measured turn after a first one: agent_ms is defined from turn 1.")
    turn_rows = desc[desc["level"] == "per turn"].set_index("agent")
    parts = [f"{a}: median {r.median_ms:.3f} ms, mean {r.mean_ms:.3f} ms [{r.ci_low:.3f}, {r.ci_high:.3f}]"
             for a, r in turn_rows.iterrows()]
    sentence = ("Between a turn's last chunk and the next request (tools and record keeping excluded), per turn — "
                + "; ".join(parts) + ".")
    notes = []
    for r in comps.itertuples():
        aa = (f"A/A false-positive rate {100 * r.aa_false_positive_rate:.0f}% over {r.aa_tests} splits"
              if r.aa_tests else "A/A check not possible (fewer than 4 batches per agent): the verdict is unchecked")
        notes.append(f"{r.level.capitalize()}: Python {r.python_ms:.3f} vs Rust {r.rust_ms:.3f} ms, difference "
                     f"{r.diff_ms:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] ms (Welch {p_text(r.welch_p)}, TOST within "
                     f"±{r.margin_ms:g} ms {p_text(r.tost_p)}; units {r.units}): {r.verdict}. {aa}.")
    table = desc.merge(comps[["level", "verdict"]], on="level", how="left") if not comps.empty else desc
    if "verdict" in table:  # the verdict is Python against Rust: the null client's rows are the floor
        table.loc[~table["agent"].isin(LANGS), "verdict"] = "floor"
    return Section(title, sentence, table, notes=notes)


def verdicts(run: Run) -> pd.DataFrame:
    """The task-level verdicts the index shows beside the single-request ones."""
    return own_time_table(run)[1] if is_agent_run(run) else pd.DataFrame()


def client_share(run: Run) -> Section:
    title = "The client's share of task time"
    if not is_agent_run(run):
        return _none(title)
    t = tasks(run)
    if t.empty:
        return Section(title, "No measured task ended.")
    t = t.assign(server_share=t["server_ms"] / t["task_e2e_ms"], tool_share=t["tool_ms"] / t["task_e2e_ms"])
    table = (t.groupby("agent").agg(tasks=("run_id", "size"), task_e2e_ms=("task_e2e_ms", "median"),
                                    task_agent_ms=("task_agent_ms", "median"), client_share=("client_share", "median"),
                                    server_share=("server_share", "median"), tool_share=("tool_share", "median"))
             .reset_index())
    parts = [f"{r.agent}: {100 * r.client_share:.3f}% of {r.task_e2e_ms:.0f} ms ({r.task_agent_ms:.2f} ms)"
             for r in table.itertuples()]
    sentence = ("Median share of a task's end-to-end time that is the client's own work between turns: "
                + "; ".join(parts) + ". The rest is the server (its total_duration summed over turns), the "
                "tools, and the client's time inside each request (sending, reading the stream).")
    return Section(title, sentence, table)


def prefix_cache(run: Run) -> Section:
    title = "The prefix cache: prompt-eval cost against prompt length"
    if not is_agent_run(run):
        return _none(title)
    t = turns(run)
    t = t[t["prompt_eval_us_per_token"].notna()]
    if t.empty:
        return Section(title, "No turn reported its prompt evaluation.")
    table = (t.groupby(["prompt_cache", "turn"]).agg(turns=("run_id", "size"), prompt_tokens=("prompt_eval_count", "median"),
                                                     prompt_eval_ms=("prompt_eval_ms", "median"),
                                                     us_per_prompt_token=("prompt_eval_us_per_token", "median"))
             .reset_index())
    cached, unique = (t[t["prompt_cache"] == c] for c in ("cached", "uncached"))
    parts = []
    for k in sorted(t["turn"].unique()):
        a, b = cached[cached["turn"] == k], unique[unique["turn"] == k]
        if len(a) and len(b):
            parts.append(f"turn {k}: {a['prompt_eval_ms'].median():.0f} ms as sent vs {b['prompt_eval_ms'].median():.0f} ms "
                         f"with a unique prefix ({a['prompt_eval_count'].median():.0f} tokens)")
    sentence = ("Ollama's prompt_eval_count is the whole prompt and prompt_eval_duration only the part it evaluated, "
                "so the time per prompt token shows what the cache saved. Median prompt evaluation — "
                + ("; ".join(parts) if parts else "no turn ran both ways") + ". From turn 1 on, both kinds reuse "
                "their own conversation's earlier turns: the unique prefix only makes the first turn pay in full. "
                "In Ollama prompt evaluation runs until the first token is sampled, so under a structured "
                "action's grammar it also holds that token's grammar-constrained sampling.")
    return Section(title, sentence, table, plots.prefix_cache(t),
                   caption="prompt_eval_duration against prompt_eval_count, each point one turn.")


def loop_claims(run: Run) -> Section:
    """TR112's "the language matters less than expected", put to the test for loops, claim by
    claim (the seed's §3–4 and its conclusion), each on this run's turns or tasks, Python
    against Rust with the run's rule (batch means as units where there are two or more) and its
    pre-set margins (tr112.claims does the same on single requests)."""
    from scipy import stats as sps

    from langbench.analysis.findings import HIGHER, LOWER
    from langbench.report.sections.tr112 import CONTRADICTED, NOT_SHOWN, SUPPORTED, _claim, _direction
    title = "TR112's claims, tested on agent loops"
    if not is_agent_run(run):
        return _none(title)
    u, t = turns(run), tasks(run)
    u, t = u[u["agent"].isin(LANGS)], t[t["agent"].isin(LANGS)]
    if t.empty or t["agent"].nunique() < 2:
        return Section(title, "Both languages need measured tasks for these claims.")
    rows = []
    py, rs = (t[t["agent"] == a] for a in LANGS)
    c = run.compare(py, rs, "task_e2e_ms")
    v = (SUPPORTED if c.verdict == "equivalent" else CONTRADICTED if c.verdict.endswith("higher") else NOT_SHOWN)
    rows.append(_claim("The language matters less than expected: a task takes as long in either",
                       "similar throughput (99.15 vs 98.86 tok/s)",
                       f"task end-to-end {c.mean_a:,.0f} vs {c.mean_b:,.0f} ms ({c.diff:+,.1f} "
                       f"[{c.diff_ci_low:+,.1f}, {c.diff_ci_high:+,.1f}] ms)", v,
                       f"{c.verdict} within ±{c.margin:,.1f} ms (Welch {p_text(c.welch_p)}, TOST {p_text(c.tost_p)})"))
    own = own_time_table(run)[1]
    per_task = own[own["level"] == "per task"] if not own.empty else own
    if len(per_task):
        r = per_task.iloc[0]
        median_task = float(t["task_e2e_ms"].median())
        share_hi = max(abs(r.ci_low), abs(r.ci_high)) / median_task if median_task else float("nan")
        v = SUPPORTED if share_hi < run.margins["throughput_pct"] / 100 else NOT_SHOWN
        rows.append(_claim("…because the client's own cost is small next to the model's",
                           "not measured (one request per run)",
                           f"agent's own time per task {r.python_ms:.3f} vs {r.rust_ms:.3f} ms: the gap's 95% CI reaches "
                           f"{100 * share_hi:.3f}% of a median task ({median_task:,.0f} ms)", v,
                           f"against the {run.margins['throughput_pct']:g}% margin of the task time; the language "
                           f"verdict on the own time itself: {r.verdict}"))
    tpy, trs = (u[u["agent"] == a] for a in LANGS)
    if tpy["throughput_tps"].notna().sum() > 1 and trs["throughput_tps"].notna().sum() > 1:
        c = run.compare(tpy, trs, "throughput_tps")
        v, why = _direction(c, "python", HIGHER, 0.003 * c.mean_b)
        rows.append(_claim("Throughput: Python 0.3 % faster", "99.15 vs 98.86 tok/s (+0.3 %)",
                           f"per turn {c.mean_a:,.1f} vs {c.mean_b:,.1f} tok/s", v, why))
    if tpy["ttft_ms"].notna().sum() > 1 and trs["ttft_ms"].notna().sum() > 1:
        c = run.compare(tpy, trs, "ttft_ms")
        v, why = _direction(c, "python", LOWER, 3794 - 1409)
        rows.append(_claim("TTFT: Python's first token far sooner", "1,409 (Python) vs 3,794 ms (Rust)",
                           f"per turn {c.mean_a:,.1f} vs {c.mean_b:,.1f} ms", v, why))
    a, b = py["task_e2e_ms"].dropna().to_numpy(), rs["task_e2e_ms"].dropna().to_numpy()
    if len(a) >= 3 and len(b) >= 3:
        bf = sps.levene(a, b, center="median").pvalue
        cv_py, cv_rs = (100 * np.std(x, ddof=1) / np.mean(x) for x in (a, b))
        v = (SUPPORTED if cv_rs < cv_py else CONTRADICTED) if bf < run.alpha else NOT_SHOWN
        rows.append(_claim("Consistency: Rust varies less", "CV 0.40 % (Rust) vs 0.48 % (Python)",
                           f"task end-to-end CV {cv_rs:.1f} % (Rust) vs {cv_py:.1f} % (Python), {len(a)} vs {len(b)} tasks",
                           v, f"Brown–Forsythe on task times {p_text(bf)}"))
    table = pd.DataFrame(rows)
    counts = table["verdict"].value_counts()
    sentence = (f"{len(table)} of TR112's claims on loops of {int(t['turns'].sum())} turns in {len(t)} tasks: "
                + ", ".join(f"{n} {v}" for v, n in counts.items()) + ". "
                + f"{table.iloc[0]['TR112 claim']}: {table.iloc[0]['verdict']} ({table.iloc[0]['this run']}).")
    return Section(title, sentence, table)
