"""Tables for people: one formatter per column kind, units in the headers, the same names
everywhere (TTFT, ITL, tok/s). Every section's table goes through `style` (Section.show) and
the index's tables through `to_html`.

    tables.style(df, unit="ms")   # a pandas Styler: integers as integers, ms 1 decimal, …

Column kinds, by name first and then by values: p-values (3 decimals, "< 0.001"), counts and
integer factor levels (integers, thousands separated), ms and tok/s (1 decimal), percentages
(2 decimals), other numbers (3 significant digits), text (escaped). `unit` names the unit of a
describe() table's unit-less columns (mean, median, std, …).
"""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

COUNTS = {"n", "runs", "configs", "records", "batches", "cells", "rank", "attempt", "chunks", "count",
          "levels", "rust", "python", "rust_only", "python_only", "rust_failed", "python_failed",
          "naive_improved", "significant_improved", "ok", "error", "truncated", "eval_count",
          "prompt_eval_count", "streams", "exit_code"}
LEVELS = {"concurrency", "num_ctx", "num_gpu", "num_batch", "num_thread", "num_predict", "seed", "order",
          "load_point", "main_gpu"}  # Ollama option names: printed as they are set, 1024 not 1,024
DESCRIBED = {"mean", "median", "min", "max", "range", "std", "q1", "q3", "iqr", "mean_ci_low",
             "mean_ci_high", "diff", "diff_ci_low", "diff_ci_high", "margin"}
NAMES = {"throughput_tps": "throughput", "ttft_ms": "TTFT", "itl_p99_ms": "ITL p99", "itl_p50_ms": "ITL p50",
         "e2e_ms": "end-to-end", "client_overhead_ms": "client overhead", "server_ttft_ms": "server TTFT",
         "cv_pct": "CV", "cv_ci_low": "CV CI low", "cv_ci_high": "CV CI high", "mcnemar_p": "McNemar p",
         "mcnemar_p_holm": "McNemar p (Holm)", "fisher_p": "Fisher p", "chi2_yates_p": "χ² (Yates) p",
         "welch_p": "Welch p", "tost_p": "TOST p", "mw_p": "Mann–Whitney p", "p_above_aa": "p above A/A",
         "aa_rate": "A/A rate", "config_id": "config", "agent": "agent", "tps": "tok/s",
         "agg_tps": "aggregate throughput", "load_point": "load point", "batch_id": "batch", "task_id": "task",
         "run_id": "run", "j_per_token": "energy per token (J)",
         "j_per_token_above_idle": "energy per token above idle (J)", "temp_c": "temperature (°C)",
         "partial_eta_sq": "partial η²", "sum_sq": "sum of squares", "odds_ratio": "odds ratio",
         "sd_ratio": "SD ratio", "diff": "difference", "ci_low": "CI low", "ci_high": "CI high",
         "n_a": "n (A)", "n_b": "n (B)", "mean_a": "mean (A)", "mean_b": "mean (B)",
         "agent_ms": "agent's own time per turn", "task_agent_ms": "agent's own time per task",
         "task_e2e_ms": "task end-to-end", "over_floor_ms": "over the null client's floor",
         "client_decode_tps": "client decode rate"}
# Words of column ids as people write them (header() builds a name from the id's words).
WORDS = {"ttft": "TTFT", "itl": "ITL", "e2e": "end-to-end", "ci": "CI", "aa": "A/A", "cv": "CV", "cpu": "CPU",
         "rss": "RSS", "gpu": "GPU", "sm": "SM", "agg": "aggregate", "api": "/api", "v1": "/v1", "sd": "SD",
         "vram": "VRAM", "mcnemar": "McNemar", "holm": "(Holm)", "welch": "Welch", "tost": "TOST",
         "fisher": "Fisher", "levene": "Levene", "wilcoxon": "Wilcoxon", "chi2": "χ²", "yates": "(Yates)",
         "llama.cpp": "llama.cpp", "python": "Python", "rust": "Rust", "ollama": "Ollama", "diff": "difference",
         "avg": "mean", "eval": "evaluation", "temp": "temperature", "brown": "Brown–", "forsythe": "Forsythe"}
# Units as the last word of a column id, or anywhere before its qualifiers (throughput_tps_ci_low).
UNIT_WORDS = {"ms": "ms", "tps": "tok/s", "pct": "%", "s": "s", "mib": "MiB", "w": "W", "mhz": "MHz", "us": "µs",
              "j": "J"}
KIND_OF_UNIT = {"ms": "ms", "tok/s": "tps", "%": "pct"}


def kind(name: str, values: pd.Series, unit: str | None = None) -> str:
    """The column kind: 'p', 'int', 'level', 'ms', 'tps', 'pct', 'num' or 'text'."""
    n = str(name).lower()
    present = values.dropna()
    if pd.api.types.is_bool_dtype(values) or (len(present) and present.map(type).eq(bool).all()):
        return "text"  # True / False as they are
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() < values.notna().sum() or values.notna().sum() == 0:
        return "text"
    if n == "p" or n.endswith("_p") or n.startswith("p_") or n.endswith("_p_holm") or n == "p_value":
        return "p"
    finite = numeric.dropna()
    finite = finite[np.isfinite(finite)]
    integral = bool(len(finite)) and bool(np.all(np.isclose(finite, finite.round())))
    if n in LEVELS:
        return "level" if integral else "num"
    if n in COUNTS or n.startswith("n_") or n.endswith("_count") or n.endswith("_runs"):
        return "int" if integral else "num"
    if n.endswith("_ms"):
        return "ms"
    if n.endswith("_tps") or "tok/s" in n:
        return "tps"
    if re.search(r"_ms_(ci_low|ci_high|diff|api|v1|llama_cpp|ollama)$", n):
        return "ms"
    if re.search(r"_tps_(ci_low|ci_high|diff|api|v1|llama_cpp|ollama)$", n):
        return "tps"
    if n.endswith("_pct") or n.endswith("rate") or n.startswith("cv"):
        return "pct"
    if n in DESCRIBED and unit in KIND_OF_UNIT:
        return KIND_OF_UNIT[unit]
    if pd.api.types.is_integer_dtype(values) or (integral and pd.api.types.is_object_dtype(values)):
        return "int"
    return "num"


def _p(x) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return "< 0.001" if x < 0.001 else f"{x:.3f}"


FORMATS = {
    "p": _p,
    "int": lambda x: f"{int(round(x)):,}",
    "level": lambda x: f"{int(round(x))}",
    "ms": lambda x: f"{x:,.1f}",
    "tps": lambda x: f"{x:,.1f}",
    "pct": lambda x: f"{x:,.2f}",
    "num": lambda x: (f"{x:,.0f}" if float(x).is_integer() else f"{x:.3g}" if abs(x) < 1000
                      else f"{x:,.1f}"),
}
HEADER_UNIT = {"ms": "ms", "tps": "tok/s", "pct": "%"}


def header(name: str, k: str) -> str:
    """A column's header for people: its name (TTFT, ITL, …) and its unit; an id's words made
    readable (throughput_tps_ci_low: "throughput CI low (tok/s)"), Ollama's option names kept."""
    n = str(name)
    if n in LEVELS and n != "load_point":
        return n
    unit = HEADER_UNIT.get(k)
    base = NAMES.get(n)
    metric = next((m for m in sorted(NAMES, key=len, reverse=True) if n.startswith(m + "_") and "_" in m), None)
    if base is None and metric:  # a metric's id and what of it: throughput_tps_ci_low, ttft_ms_v1
        found = next((UNIT_WORDS[w] for w in metric.split("_")[1:] if w in UNIT_WORDS), None)
        unit = None if k == "text" else unit or found
        rest = n[len(metric) + 1:].replace("llama_cpp", "llama.cpp").split("_")
        base = " ".join([NAMES[metric], *(WORDS.get(w, w) for w in rest)])
    if base is None:
        words = n.replace("llama_cpp", "llama.cpp").split("_")
        if words[-1] == "id" and len(words) > 1:
            words = words[:-1]
        found = None
        for i, w in enumerate(words):  # the unit: the id's first unit word after its first word
            if i and w in UNIT_WORDS and words[i - 1] != "per":
                found = UNIT_WORDS[w]
                words = words[:i] + words[i + 1:]
                break
        unit = None if k == "text" else unit or found
        base = " ".join(WORDS.get(w, w) for w in words).replace("Brown– Forsythe", "Brown–Forsythe")
    if unit and f"({unit})" not in base:
        return f"{base} ({unit})"
    return base


ID = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)+")


def name_of(value) -> object:
    """A metric's id as a cell shows it ("itl_p99_ms" → "ITL p99 (ms)"); anything else as it is."""
    if not isinstance(value, str) or not ID.fullmatch(value):
        return value
    n = value
    k = "ms" if re.search(r"_ms(_|$)", n) else "tps" if re.search(r"_tps(_|$)", n) else \
        "pct" if re.search(r"_pct(_|$)", n) else "num"
    return header(n, k)


ID_COLUMNS = ("metric", "value", "measure")  # columns whose cells name a metric by its id


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns that hold only numbers (describe_by's transposed rows) as numbers."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_object_dtype(out[c]):
            conv = pd.to_numeric(out[c], errors="coerce")
            if conv.notna().sum() == out[c].notna().sum() and out[c].notna().any():
                out[c] = conv
    return out


def _cell(f):
    """A formatter that takes what a cell holds (a number, a numeric label, a missing value)."""
    def cell(x) -> str:
        try:
            v = float(x)
        except (TypeError, ValueError):
            return "–" if x is None else html.escape(str(x))
        return "–" if not np.isfinite(v) else html.escape(f(v))
    return cell


def style(df: pd.DataFrame, unit: str | None = None, caption: str | None = None):
    """`df` as a Styler: one formatter per column kind, headers named with units, no index.
    `unit` defaults to df.attrs["unit"] (findings.by_agent sets it)."""
    unit = unit or df.attrs.get("unit")
    df = _numeric(df.reset_index(drop=True).drop(columns=[c for c in df.columns if str(c).startswith("_")]))
    for c in df.columns:
        if str(c) in ID_COLUMNS and not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = df[c].map(name_of)
    kinds = {c: kind(c, df[c], unit) for c in df.columns}
    headers = {c: header(c, k) for c, k in kinds.items()}
    shown = df.rename(columns=headers)
    formats = {headers[c]: _cell(FORMATS[k]) for c, k in kinds.items() if k in FORMATS}
    st = shown.style.format(formats, na_rep="–", escape="html").hide(axis="index")
    if caption:
        st = st.set_caption(caption)
    return st


def to_html(df: pd.DataFrame, unit: str | None = None, caption: str | None = None,
            classes: dict | None = None) -> str:
    """The styled table as HTML (for index.html); `classes`: a frame of CSS classes per cell."""
    st = style(df, unit, caption)
    if classes is not None:
        st = st.set_td_classes(classes.reset_index(drop=True).rename(columns=dict(zip(classes.columns, st.data.columns))))
    return st.to_html()
