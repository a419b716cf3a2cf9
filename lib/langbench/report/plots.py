"""Figures (seaborn/matplotlib). Each returns a Figure; the caller displays and closes it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

# the two languages, and the Python clients of the scale study (issue 41), which any figure by agent meets
PALETTE = {"python": "#3572A5", "rust": "#DEA584", "python-tuned": "#7FA7D1", "python-raw": "#1B3A5C"}
sns.set_theme(style="whitegrid", context="notebook")


def distribution(df: pd.DataFrame, value: str, label: str):
    fig, ax = plt.subplots(figsize=(7, 3.6))
    sns.boxplot(data=df, x="mode", y=value, hue="agent", palette=PALETTE, ax=ax, showfliers=False)
    sns.stripplot(data=df, x="mode", y=value, hue="agent", palette=PALETTE, ax=ax, dodge=True,
                  size=3, alpha=0.5, legend=False)
    ax.set(ylabel=label, xlabel="", title=f"{label} per warm run, by mode and language")
    fig.tight_layout()
    return fig


def delta_heatmap(d: pd.DataFrame, factors: list[str], label: str, lower_is_better: bool = False):
    from langbench.analysis.metrics import labelled
    from langbench.analysis.stats import DELTA_MIN_UNITS
    d = labelled(d, factors)
    d["config"] = d[factors].agg(" / ".join, axis=1)
    grid = d.pivot_table(index="config", columns="agent", values="delta_pct")
    if grid.empty:  # no cell has the warm runs a mode that stats.deltas needs for a delta
        fig, ax = plt.subplots(figsize=(4.5, 1.2))
        most = int(d[["n_baseline", "n_chimera"]].min(axis=1).max()) if len(d) else 0
        ax.text(0.5, 0.5, f"no delta: a config needs {DELTA_MIN_UNITS} warm runs in each mode, this run has at most {most}",
                ha="center", va="center", wrap=True)
        ax.set(title=f"chimera vs baseline, {label} (%)", xticks=[], yticks=[])
        return fig
    fig, ax = plt.subplots(figsize=(4.5, 0.3 * len(grid) + 1.2))
    # blue = better for the user: a gain in throughput, a drop in latency
    sns.heatmap(grid, annot=True, fmt=".1f", center=0, cmap="RdBu_r" if lower_is_better else "RdBu",
                ax=ax, cbar_kws={"label": "delta %"})
    ax.set(title=f"chimera vs baseline, {label} (%)", ylabel=" / ".join(factors), xlabel="")
    fig.tight_layout()
    return fig


def ttft_phases(t: pd.DataFrame):
    t = t.copy()
    t["label"] = t["agent"] + " " + t["kind"]
    fig, ax = plt.subplots(figsize=(7, 3))
    left = pd.Series(0.0, index=t.index)
    for col, color in (("load_ms", "#8da0cb"), ("prompt_eval_ms", "#66c2a5"), ("client_overhead_ms", "#fc8d62")):
        ax.barh(t["label"], t[col].clip(lower=0), left=left, color=color, label=col.removesuffix("_ms"))
        left += t[col].clip(lower=0)
    ax.set(xlabel="ms (median)", title="TTFT by phase (median, ms)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def timeline(df: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3))
    ok = df[df["outcome"] == "ok"]
    sns.scatterplot(data=ok, x="t0_unix", y="throughput_tps", hue="agent", style="phase",
                    palette=PALETTE, s=14, ax=ax)
    bad = df[df["outcome"] != "ok"]
    if not bad.empty:
        ax.scatter(bad["t0_unix"], [ok["throughput_tps"].min()] * len(bad), marker="x", color="red", label="failed")
        ax.legend(fontsize=7)
    ax.set(xlabel="time (unix s)", ylabel="throughput (tok/s)", title="Throughput of every run over the sweep")
    fig.tight_layout()
    return fig


def overhead(df: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 3))
    sns.ecdfplot(data=df, x="client_overhead_ms", hue="agent", palette=PALETTE, ax=ax)
    ax.set(xlabel="client TTFT − server TTFT (ms)", title="Client overhead per run (ms)")
    fig.tight_layout()
    return fig


def drift(df: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3))
    sns.regplot(data=df[df["agent"] == "python"], x="order", y="throughput_tps", ax=ax, color=PALETTE["python"],
                scatter_kws={"s": 8}, label="python")
    sns.regplot(data=df[df["agent"] == "rust"], x="order", y="throughput_tps", ax=ax, color=PALETTE["rust"],
                scatter_kws={"s": 8}, label="rust")
    ax.set(xlabel="batch order", ylabel="throughput (tok/s)", title="Drift: batch mean throughput in run order")
    ax.legend()
    fig.tight_layout()
    return fig


def gpu_by_offload(t: pd.DataFrame):
    """Throughput, GPU power and J/token against the offload (one panel each)."""
    panels = [("throughput_tps", "throughput (tok/s)"), ("power_w", "GPU power (W)"),
              ("j_per_token", "energy (J/token)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 3.4))
    for ax, (col, label) in zip(axes, panels):
        sns.barplot(data=t, x="offload", y=col, hue="agent", palette=PALETTE, ax=ax, errorbar=("ci", 95))
        ax.set(ylabel=label, xlabel="layers on GPU")
        if ax is not axes[0]:
            ax.get_legend().remove() if ax.get_legend() else None
    fig.tight_layout()
    return fig


def power_trace(tel: pd.DataFrame):
    """GPU power over the sweep, coloured by batch offload."""
    fig, ax = plt.subplots(figsize=(11, 2.8))
    t0 = tel["t_unix"].min()
    ax.plot(tel["t_unix"] - t0, tel["power_w"], lw=0.6, color="#444")
    ax.set(xlabel="seconds into the sweep", ylabel="GPU power (W)", title="GPU power over the sweep")
    fig.tight_layout()
    return fig


def scaling(t: pd.DataFrame):
    """Aggregate throughput and scaling efficiency against N, per agent (modes pooled)."""
    g = t.groupby(["agent", "concurrency"], as_index=False)[["agg_tps", "efficiency"]].mean()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    sns.lineplot(data=g, x="concurrency", y="agg_tps", hue="agent", palette=PALETTE, marker="o", ax=a)
    a.set(xscale="log", xlabel="streams N", ylabel="aggregate tok/s", title="throughput")
    sns.lineplot(data=g, x="concurrency", y="efficiency", hue="agent", palette=PALETTE, marker="o", ax=b,
                 legend=False)
    b.axhline(1.0, color="grey", lw=0.8, ls="--")
    b.set(xscale="log", xlabel="streams N", ylabel="efficiency vs N = 1", title="scaling efficiency")
    for ax in (a, b):
        ax.minorticks_off()
        ax.set_xticks(sorted(g["concurrency"].unique()), labels=[str(int(n)) for n in sorted(g["concurrency"].unique())])
    fig.tight_layout()
    return fig


def pareto(b: pd.DataFrame):
    """Throughput against latency across the load points: each point a batch."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, value, label in ((axes[0], "ttft_p95_ms", "TTFT p95 (ms)"), (axes[1], "itl_p99_ms", "ITL p99 (ms)")):
        sns.scatterplot(data=b, x="agg_tps", y=value, hue="agent", style="load_point", palette=PALETTE, ax=ax,
                        legend=ax is axes[1])
        ax.set(xlabel="aggregate tok/s", ylabel=label)
    if axes[1].get_legend():
        sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    fig.tight_layout()
    return fig


AGENT_COLOURS = {**PALETTE, "null": "#777777"}


def ttft_by_context(turns: pd.DataFrame):
    """Agent loops: each turn's TTFT against its prompt's length, by client, marked by turn."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.scatterplot(data=turns, x="prompt_eval_count", y="ttft_ms", hue="agent", style="turn",
                    palette=AGENT_COLOURS, ax=ax, s=40, alpha=0.8)
    ax.set(xlabel="prompt tokens (prompt_eval_count)", ylabel="TTFT (ms)", title="TTFT per turn against context length")
    fig.tight_layout()
    return fig


def prefix_cache(turns: pd.DataFrame):
    """Agent loops: prompt-eval time against prompt length, as sent against a unique opening prefix."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    sns.scatterplot(data=turns, x="prompt_eval_count", y="prompt_eval_ms", hue="prompt_cache", style="turn",
                    ax=ax, s=40, alpha=0.8)
    ax.set(xlabel="prompt tokens (prompt_eval_count)", ylabel="prompt evaluation (ms)",
           title="Prompt-eval cost per turn: cached prefix vs unique prefix")
    fig.tight_layout()
    return fig


# Sessions at scale: the four clients of issue 41 (Python's SDK, tuned and raw; Rust)
CLIENT_COLOURS = {**PALETTE, "null": "#777777"}


def _log_n(ax, ns) -> None:
    ns = sorted({int(n) for n in ns})
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns, labels=[str(n) for n in ns])


def _endpoint_panels(c: pd.DataFrame):
    """One panel per endpoint of a scale table: (figure, axes, [(ax, endpoint, its rows by N)])."""
    endpoints = sorted(c["endpoint"].unique())
    fig, axes = plt.subplots(1, len(endpoints), figsize=(4.6 * len(endpoints), 3.6), squeeze=False)
    return fig, axes, [(ax, e, c[c["endpoint"] == e].sort_values("concurrency")) for ax, e in zip(axes[0], endpoints)]


def scale_throughput(c: pd.DataFrame):
    """Sessions at scale: tok/s received (mean over batches, 95 % CI bars) against tok/s
    offered, per client, one panel per endpoint; the dashed line is received = offered."""
    fig, axes, panels = _endpoint_panels(c)
    for ax, endpoint, g in panels:
        for agent, a in g.groupby("agent"):
            colour = CLIENT_COLOURS.get(agent)
            ax.plot(a["concurrency"], a["tps_received"], marker="o", color=colour, label=agent)
            if a["tps_received_ci_low"].notna().any():
                ax.fill_between(a["concurrency"], a["tps_received_ci_low"], a["tps_received_ci_high"],
                                color=colour, alpha=0.15)
        offered = g.groupby("concurrency")["tps_offered"].first()
        ax.plot(offered.index, offered.to_numpy(), ls="--", color="grey", label="offered")
        ax.set_yscale("log")
        _log_n(ax, g["concurrency"])
        ax.set(xlabel="sessions asked (N)", ylabel="tok/s received, one process", title=endpoint)
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig


def scale_lag(c: pd.DataFrame):
    """Sessions at scale: the client's lag behind the server's send stamp per chunk, p50 (solid)
    and p99 (dotted), against N, per client, one panel per endpoint."""
    fig, axes, panels = _endpoint_panels(c)
    for ax, endpoint, g in panels:
        for agent, a in g.groupby("agent"):
            colour = CLIENT_COLOURS.get(agent)
            ax.plot(a["concurrency"], a["lag_p50_ms"], marker="o", color=colour, label=f"{agent} p50")
            ax.plot(a["concurrency"], a["lag_p99_ms"], marker=".", ls=":", color=colour, label=f"{agent} p99")
        ax.set_yscale("log")
        _log_n(ax, g["concurrency"])
        ax.set(xlabel="sessions asked (N)", ylabel="client lag per chunk (ms)", title=endpoint)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.tight_layout()
    return fig
