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
         "aa_rate": "A/A rate", "config_id": "config", "agent": "agent", "tps": "tok/s"}
UNITS = {"ms": "ms", "tps": "tok/s", "pct": "%", "s": "s", "bytes": "bytes", "mb": "MB", "w": "W", "j": "J"}
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
    """A column's header for people: its name (TTFT, ITL, …) and its unit."""
    n = str(name)
    if n in LEVELS:
        return n
    base = NAMES.get(n)
    if base is None:
        base = re.sub(r"_(ms|tps|pct)$", "", n).replace("_", " ")
        base = re.sub(r"\bttft\b", "TTFT", re.sub(r"\bitl\b", "ITL", re.sub(r"\btps\b", "tok/s", base)))
    unit = HEADER_UNIT.get(k)
    return f"{base} ({unit})" if unit and f"({unit})" not in base else base


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
