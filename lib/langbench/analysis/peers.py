"""A peers run read (issue 43): every tool's numbers beside langbench's null client on the same
server, each with its definition; each tool's error against the scripted server's known delays;
which tool agrees with the server's own durations; TR112's claims, v1 beside v2.

    p = Peers.load("outputs/peers-…")
    p.compare().table      # per tool and metric: its median, the null client's, the difference
                           # over rounds with its CI, and what explains it (or "unexplained")

The unit is the round: each round runs every tool once (one process, several requests), so a
difference is taken per round (the tool's median less the null client's) and its 95 % CI is a t
interval over rounds. A difference whose CI excludes 0 is beyond the batches' noise; it is then
explained by a definition (the same tool measured against the null client's number of the same
definition agrees) or by a named cost (the client's own overhead, with the server's part equal),
or reported "unexplained".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from langbench import paths, storage

CLIENTS = ("null", "python", "rust")
METRICS = ("throughput_tps", "ttft_ms", "itl_ms", "e2e_ms")
NAMES = {"throughput_tps": "throughput", "ttft_ms": "TTFT", "itl_ms": "ITL", "e2e_ms": "end-to-end"}
# A tool's number → the null client's number of the same definition, where the label is shared
# but the definition is not (run/peers.py DEFINITIONS).
SAME_DEFINITION = {("chimeraforge", "ttft_ms"): "prompt_eval_ms", ("chimeraforge", "e2e_ms"): "server_total_ms",
                   ("aiperf", "throughput_tps"): "decode_tps", ("aiperf", "itl_ms"): "itl_mean_ms"}
# What such a tool's number leaves out or puts in, against the label's usual meaning.
DIFFERS = {("chimeraforge", "e2e_ms"): "it is the server's total_duration, not the client's wait",
           ("aiperf", "throughput_tps"): "it is the client's decode rate (1000 / its mean ITL), not the server's "
                                         "eval_count / eval_duration, which /v1 does not return",
           ("aiperf", "itl_ms"): "it is a mean gap per request over the server's token count, not a median "
                                 "of the gaps between chunks"}
# A client-side metric → its server-side part in the same records (the rest is the client's).
SERVER_PART = {"ttft_ms": "server_ttft_ms", "e2e_ms": "server_total_ms", "itl_ms": "throughput_tps"}
CLAIMS_FILE = paths.PACKAGE / "data" / "tr112_claims.json"


@dataclass
class Section:
    title: str
    sentence: str
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)


def ci(values) -> tuple[float, float, float]:
    """Mean and t 95 % CI over rounds (NaN bounds with fewer than two)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    h = float(sps.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - h, m + h


def _verdict(lo: float, hi: float, claimed: float) -> str:
    """A claimed difference (Rust less Python, scaled to this run) against the CI over rounds:
    supported when the CI excludes 0 on the claim's side and holds the claim, contradicted when it
    excludes the claim, else this run cannot measure it (its CI holds both 0 and the claim)."""
    if lo != lo or hi != hi:
        return "cannot measure"
    if lo <= claimed <= hi:
        return "supported" if (lo > 0 if claimed > 0 else hi < 0) else "cannot measure"
    return "contradicted"


def _fmt(x: float, unit: str) -> str:
    return "–" if x != x else f"{x:,.1f} {unit}" if unit != "%" else f"{x:+.1f} %"


@dataclass
class Peers:
    run_dir: Path
    manifest: dict
    runs: pd.DataFrame  # runs.csv: one row per (server_role, tool, request, metric)
    processes: list[dict]

    @classmethod
    def load(cls, run_dir: str | Path) -> "Peers":
        run_dir = Path(run_dir)
        runs = pd.read_csv(run_dir / "runs.csv", keep_default_na=False, na_values=[""],
                           dtype={"tool": str, "server_role": str})
        runs["warmup"] = runs["warmup"].astype(str) == "True"
        runs["value"] = pd.to_numeric(runs["value"], errors="coerce")
        procs = storage.read_jsonl(run_dir / "processes.jsonl") if (run_dir / "processes.jsonl").exists() else []
        return cls(run_dir, storage.read_json(run_dir / "manifest.json"), runs, procs)

    # --- views ---------------------------------------------------------------------------------
    def tools(self, role: str = "server") -> list[str]:
        have = set(self.runs.loc[self.runs["server_role"] == role, "tool"])
        order = [*CLIENTS, *sorted(have - set(CLIENTS))]
        return [t for t in order if t in have]

    def label(self, tool: str) -> str:
        return self.manifest.get("labels", {}).get(tool, tool)

    def measured(self, role: str = "server") -> pd.DataFrame:
        r = self.runs
        return r[(r["server_role"] == role) & ~r["warmup"] & (r["outcome"] == "ok")]

    def per_round(self, role: str = "server") -> pd.DataFrame:
        """Median per (tool, round, metric) of measured ok runs."""
        return self.measured(role).groupby(["tool", "round", "metric"])["value"].median().unstack("metric")

    def median(self, tool: str, metric: str, role: str = "server") -> float:
        m = self.measured(role)
        v = m[(m["tool"] == tool) & (m["metric"] == metric)]["value"].dropna()
        return float(v.median()) if len(v) else float("nan")

    def paired(self, tool: str, metric: str, ref_tool: str, ref_metric: str, role: str = "server"):
        """Per round: tool's median of `metric` less ref_tool's median of `ref_metric`."""
        pr = self.per_round(role)
        if metric not in pr or ref_metric not in pr:
            return []
        a = pr.loc[tool, metric] if tool in pr.index.get_level_values(0) else pd.Series(dtype=float)
        b = pr.loc[ref_tool, ref_metric] if ref_tool in pr.index.get_level_values(0) else pd.Series(dtype=float)
        d = (a - b).dropna()
        return list(d)

    def definition(self, tool: str, metric: str) -> dict | None:
        return (self.manifest.get("definitions", {}).get(tool) or {}).get(metric)

    # --- sections -------------------------------------------------------------------------------
    def outcomes(self, role: str = "server") -> Section:
        r = self.runs[(self.runs["server_role"] == role) & ~self.runs["warmup"]]
        one = r.drop_duplicates(["tool", "round", "run"])
        t = one.groupby(["tool", "outcome"]).size().unstack("outcome", fill_value=0)
        for col in ("ok", "error", "truncated"):
            if col not in t:
                t[col] = 0
        t = t[["ok", "error", "truncated"]].reindex(self.tools(role)).reset_index()
        t.insert(1, "client", [self.label(x) for x in t["tool"]])
        t["runs"] = t[["ok", "error", "truncated"]].sum(axis=1)
        bad = t[t["ok"] < t["runs"]]
        sentence = ("Every measured run of every tool ended ok." if not len(bad) else
                    "Runs that did not end ok: " + "; ".join(
                        f"{row.client} {row.runs - row.ok}/{row.runs} ({row.error} error, {row.truncated} truncated)"
                        for row in bad.itertuples()) + ".")
        errors = r[(r["outcome"] != "ok") & r["error"].notna()].drop_duplicates(["tool", "round", "run"])
        notes = [f"{self.label(tool)}: {msg[:220]}" for tool, msg in
                 errors.groupby("tool")["error"].first().items()]
        return Section("Outcomes per tool (measured runs)", sentence, t, notes)

    def side_by_side(self, role: str = "server") -> Section:
        """Per tool and metric: median, its definition (who measured it, streamed, which point)."""
        rows = []
        for tool in self.tools(role):
            for metric in METRICS:
                d = self.definition(tool, metric)
                why = (self.manifest.get("not_reported", {}).get(tool) or {}).get(metric)
                rows.append({"tool": tool, "client": self.label(tool), "metric": NAMES[metric],
                             "median": self.median(tool, metric, role),
                             "unit": d["unit"] if d else ("tok/s" if metric == "throughput_tps" else "ms"),
                             "side": d["side"] if d else "–", "streamed": (d["streamed"] if d else "–"),
                             "point": d["point"] if d else "–",
                             "definition": d["definition"] if d else f"not reported ({why or 'no such number'})"})
        t = pd.DataFrame(rows)
        return Section("Throughput, TTFT, ITL and end-to-end, per tool, each with its definition",
                       "Medians of measured runs (warm-ups excluded); `side` says whose clock or counter the "
                       "number is, `point` which instant ends a TTFT.", t)

    def compare(self, role: str = "server") -> Section:
        """Each tool's number against the null client's, per round, and what explains a difference."""
        rows = []
        for tool in self.tools(role):
            if tool == "null":
                continue
            for metric in METRICS:
                if self.definition(tool, metric) is None:
                    continue
                d = self.paired(tool, metric, "null", metric, role)
                diff, lo, hi = ci(d)
                ref = self.median("null", metric, role)
                verdict, why = self._explain(tool, metric, d, lo, hi, role)
                rows.append({"tool": tool, "metric": NAMES[metric], "tool_median": self.median(tool, metric, role),
                             "null_median": ref, "diff": diff, "diff_ci_low": lo, "diff_ci_high": hi,
                             "rounds": len(d), "verdict": verdict, "explanation": why})
        t = pd.DataFrame(rows)
        un = t[t["verdict"] == "unexplained"] if len(t) else t
        sentence = (f"{len(t)} differences from the null client; "
                    f"{int((t['verdict'] == 'within noise').sum()) if len(t) else 0} within the rounds' noise, "
                    f"{int(t['verdict'].str.startswith('explained').sum()) if len(t) else 0} explained, "
                    f"{len(un)} unexplained" + (": " + "; ".join(f"{r.tool} {r.metric}" for r in un.itertuples())
                                                if len(un) else "") + ".")
        return Section("Each tool against the null client, round by round", sentence, t)

    def _explain(self, tool, metric, d, lo, hi, role) -> tuple[str, str]:
        if len(d) < 2:
            return "no noise estimate", "fewer than two rounds: the batches' noise is not measured"
        if lo <= 0 <= hi:
            return "within noise", "the 95 % CI over rounds contains 0"
        same = SAME_DEFINITION.get((tool, metric))
        if same:
            r = self.paired(tool, metric, "null", same, role)
            m, rlo, rhi = ci(r)
            unit = self.definition(tool, metric)["unit"]
            if (tool, metric) == ("chimeraforge", "ttft_ms"):
                load = self.median("null", "load_ms", role)
                client = self.median("null", "ttft_ms", role) - self.median("null", "server_ttft_ms", role)
                left_out = f"it leaves out load_duration ({load:.1f} ms) and the client's path ({client:.1f} ms)"
            else:
                left_out = DIFFERS[(tool, metric)]
            if rlo <= 0 <= rhi:
                return ("explained: definition",
                        f"{self.definition(tool, metric)['definition']}; against the null client's {same} of "
                        f"the same rounds it differs by {m:+.1f} {unit} [{rlo:+.1f}, {rhi:+.1f}]: {left_out}")
            return "unexplained", (f"even against the null client's {same} it differs by {m:+.1f} {unit} "
                                   f"[{rlo:+.1f}, {rhi:+.1f}]" + self._endpoint_note(tool))
        part = SERVER_PART.get(metric)
        if tool in CLIENTS and part:
            s = self.paired(tool, part, "null", part, role)
            sm, slo, shi = ci(s)
            if metric == "itl_ms":
                if not (slo <= 0 <= shi):
                    return ("explained: the server's rate",
                            f"the server decoded at another rate in these batches ({sm:+.2f} tok/s "
                            f"[{slo:+.2f}, {shi:+.2f}] against the null client's)")
                return ("explained: named cost", "the client's own time per chunk: the server's decode rate "
                        f"was the same ({sm:+.2f} tok/s [{slo:+.2f}, {shi:+.2f}])")
            own = [a - b for a, b in zip(d, s)]
            om, olo, ohi = ci(own)
            if slo <= 0 <= shi:
                return ("explained: named cost",
                        f"the {self.label(tool)}'s own overhead over the null floor: {om:+.2f} ms "
                        f"[{olo:+.2f}, {ohi:+.2f}], with the server's part ({part}) the same")
            return "unexplained", (f"the server's part ({part}) differs too, by {sm:+.1f} [{slo:+.1f}, {shi:+.1f}]: "
                                   "not the client's own cost")
        if metric == "throughput_tps":
            return "unexplained", ("both read the server's counters (eval_count / eval_duration): no client can "
                                   "move them; the server ran at another rate in these batches")
        return "unexplained", "no definition or named cost accounts for it" + self._endpoint_note(tool)

    def _endpoint_note(self, tool: str) -> str:
        """For a tool on another endpoint: the costs this run cannot take apart."""
        if (self.manifest.get("peers", {}).get(tool) or {}).get("api") != "openai":
            return ""
        return ("; it posts /v1/completions and langbench's clients /api/generate, so Ollama's /v1 wrapper "
                "(SSE framing, its own JSON) and the tool's own client path are not separated here (no "
                "langbench client ran on /v1 in this run)")

    def agreement(self) -> Section:
        """Which tool agrees with the server's own durations, and by how much."""
        srv_ttft = self.median("null", "server_ttft_ms")
        srv_rate = self.median("null", "throughput_tps")
        rows = []
        m = self.measured()
        wide = m.pivot_table(index=["tool", "round", "run"], columns="metric", values="value")
        for tool in self.tools():
            own = tool in CLIENTS
            ttft = self.median(tool, "ttft_ms")
            if own:  # per request: its TTFT less the server's own for that request (the client's overhead)
                w = wide.loc[tool]
                gap = float((w["ttft_ms"] - w["server_ttft_ms"]).median())
                ref_ttft = float(w["server_ttft_ms"].median())
                pct = float((100 * (w["ttft_ms"] - w["server_ttft_ms"]) / w["server_ttft_ms"]).median())
            else:  # it keeps no load_duration: against the server's own in the null client's requests
                ref_ttft = srv_ttft
                gap, pct = ttft - ref_ttft, 100 * (ttft - ref_ttft) / ref_ttft if ref_ttft else float("nan")
            rate = self.median(tool, "throughput_tps")
            ref_rate = srv_rate
            rows.append({"tool": tool, "client": self.label(tool), "ttft_ms": ttft, "server_ttft_ms": ref_ttft,
                         "ttft_minus_server_ms": gap, "ttft_vs_server_pct": pct,
                         "throughput_tps": rate, "server_rate_tps": ref_rate,
                         "throughput_vs_server_pct": 100 * (rate - ref_rate) / ref_rate if ref_rate else float("nan")})
        t = pd.DataFrame(rows)
        if not len(t) or t["ttft_minus_server_ms"].isna().all():
            return Section("Agreement with the server's own durations", "No TTFT to compare.", t)
        t["abs"] = t["ttft_minus_server_ms"].abs()
        best = t.loc[t["abs"].idxmin()]
        worst = t.loc[t["abs"].idxmax()]
        server_side = [tool for tool in t["tool"] if (self.definition(tool, "throughput_tps") or {}).get("side")
                       == "server"]
        on_counters = t[t["tool"].isin(server_side)]
        spread = on_counters["throughput_vs_server_pct"].abs().max()
        own_clock = t[~t["tool"].isin(server_side) & t["throughput_tps"].notna()]
        sentence = (f"Against the server's own time to first token (load + prompt eval, {srv_ttft:.1f} ms median; "
                    "per request for langbench's clients, which keep it) "
                    f"the {best.client} agrees closest: {best.ttft_minus_server_ms:+.1f} ms "
                    f"({best.ttft_vs_server_pct:+.1f} %); the farthest is the {worst.client}, "
                    f"{worst.ttft_minus_server_ms:+.1f} ms ({worst.ttft_vs_server_pct:+.1f} %). "
                    f"Every tool's throughput that reads the server's counters is within {spread:.1f} % of its "
                    f"eval rate ({srv_rate:.1f} tok/s in the null client's runs)" +
                    "".join(f"; the {r.client}'s is its own clock's decode rate, "
                            f"{r.throughput_vs_server_pct:+.1f} %" for r in own_clock.itertuples()) + ".")
        return Section("Agreement with the server's own durations", sentence, t.drop(columns=["abs"]))

    def known_delays(self) -> Section:
        """Each tool against the scripted server's injected truth."""
        k = self.manifest.get("known_delays") or {}
        if "first_ms" not in k or "skipped" in k or not len(self.measured("known")):
            return Section("Against known delays", "Not run: " + k.get("skipped", "no known_delays in the file."))
        n = k["tokens"]
        truth = {"ttft_ms": k["first_ms"], "itl_ms": k["gap_ms"], "throughput_tps": 1000 / k["gap_ms"],
                 "e2e_ms": k["first_ms"] + n * k["gap_ms"]}
        rows = []
        for tool in self.tools("known"):
            for metric, true in truth.items():
                d = self.definition(tool, metric)
                if d is None:
                    continue
                if metric == "e2e_ms" and d["point"].startswith("last"):  # it ends at the last token, not done
                    true = k["first_ms"] + (n - 1) * k["gap_ms"]
                med = self.median(tool, metric, "known")
                basis = ("client's clock" if d["side"] == "client" else
                         "server-reported: the scripted server reports its own schedule, so this checks parsing only")
                rows.append({"tool": tool, "client": self.label(tool), "metric": NAMES[metric], "truth": true,
                             "median": med, "error": med - true, "error_pct": 100 * (med - true) / true,
                             "basis": basis})
        t = pd.DataFrame(rows)
        ttft = t[t["metric"] == "TTFT"]
        sentence = (f"The scripted server sends its first token {k['first_ms']:g} ms after the request, then one "
                    f"every {k['gap_ms']:g} ms ({n} tokens). TTFT error: " +
                    ", ".join(f"{r.client} {r.error:+.2f} ms" for r in ttft.itertuples()) +
                    ". A server-side number equals the truth by construction here; only a client's clock is "
                    "tested by it.")
        return Section("Against known delays: each tool's error against the injected truth", sentence, t)

    def tr112(self) -> Section:
        """TR112 v1 and v2, claim by claim, beside what this run can say."""
        doc = json.loads(CLAIMS_FILE.read_text())
        rows = []
        procs = pd.DataFrame([p for p in self.processes if p.get("server_role") == "server"])
        for c in doc["claims"]:
            v1, v2 = c["v1"], c["v2"]
            measured, verdict, mech = self._claim(c["id"], procs)
            rows.append({"claim": c["id"], "v1 (seed)": v1["text"], "v2": f"{v2['text']} (line {v2['line']})",
                         "this run": measured, "verdict on v2": verdict, "mechanism": mech})
        src = doc["source"]
        return Section("TR112 v2, claim by claim, beside v1",
                       f"Claims from {src['repository']} at {src['commit'][:10]} ({src['v2']}), kept as data in "
                       "lib/langbench/data/tr112_claims.json. This run: Python and Rust agents against one server, "
                       "same prompt and options, rounds interleaved.", pd.DataFrame(rows))

    def _claim(self, cid: str, procs: pd.DataFrame) -> tuple[str, str, str]:
        py, rs = self.median("python", "throughput_tps"), self.median("rust", "throughput_tps")
        if cid == "throughput":
            d = self.paired("rust", "throughput_tps", "python", "throughput_tps")
            m, lo, hi = ci(d)
            gap = 100 * (rs - py) / py if py else float("nan")
            verdict = _verdict(lo, hi, 0.152 * py)
            return (f"Rust {rs:.1f} vs Python {py:.1f} tok/s ({gap:+.1f} %; per round {m:+.2f} [{lo:+.2f}, {hi:+.2f}])",
                    verdict, "eval_count / eval_duration is timed inside the server from the first sampled token to "
                    "the last; the client only reads it. A client's language cannot move it: v2's 15.2 % sets "
                    "Rust's session against TR109's Python session (line 90), a difference between two server "
                    "sessions, not two languages.")
        if cid == "ttft":
            d = self.paired("rust", "ttft_ms", "python", "ttft_ms")
            m, lo, hi = ci(d)
            pt, rt = self.median("python", "ttft_ms"), self.median("rust", "ttft_ms")
            verdict = _verdict(lo, hi, -(1437 - 603) / 1437 * pt)
            return (f"warm, streamed: Rust {rt:.1f} vs Python {pt:.1f} ms (per round {m:+.2f} [{lo:+.2f}, {hi:+.2f}] ms)",
                    verdict, "v2's TTFT is a cold start that includes load_duration (its line 223): the model load "
                    "belongs to whichever session loaded it, not to the client; the client's own share is the "
                    "overhead over the null floor, a few ms here, far short of 834 ms.")
        if cid == "consistency":
            cv = {}
            for t in ("python", "rust"):
                m = self.measured()
                v = m[(m["tool"] == t) & (m["metric"] == "throughput_tps")]["value"].dropna()
                cv[t] = 100 * v.std(ddof=1) / v.mean() if len(v) > 1 else float("nan")
            return (f"throughput CV Rust {cv['rust']:.2f} % vs Python {cv['python']:.2f} %",
                    "cannot measure" if cv["rust"] != cv["rust"] or cv["python"] != cv["python"] else
                    ("supported" if cv["rust"] < cv["python"] / 1.46 else "contradicted"),
                    "a CV of eval_count / eval_duration is the server's variation; v2's own table (line 351) gives "
                    "Python 0.36 % against Rust 2.6 %, the reverse of its summary.")
        if cid == "memory":
            if not len(procs) or "peak_rss_bytes" not in procs:
                return "no process measured", "cannot measure", ""
            rss = procs.groupby("tool")["peak_rss_bytes"].median() / 2**20
            if not {"python", "rust"} <= set(rss.dropna().index):
                return "no process measured", "cannot measure", ""
            return (f"peak RSS Rust {rss['rust']:.1f} MB vs Python {rss['python']:.1f} MB",
                    "supported" if rss["rust"] < 0.5 * rss["python"] else "contradicted",
                    "v2's figures are estimates (its line 644), not measurements; this run polls VmHWM of each "
                    "agent process")
        if cid == "startup":
            if not len(procs) or "startup_ms" not in procs:
                return "no process measured", "cannot measure", ""
            st = procs.groupby("tool")["startup_ms"].median()
            if not {"python", "rust"} <= set(st.dropna().index):
                return "no process measured", "cannot measure", ""
            return (f"spawn to first request: Rust {st['rust']:.0f} ms vs Python {st['python']:.0f} ms",
                    "supported" if st["rust"] < st["python"] else "contradicted",
                    "v2 gives 0.2 s against 1.5 s as typical figures, not measured; this run times spawn to the "
                    "first request of each agent process")
        return "", "cannot measure", ""

    def headline(self) -> list[str]:
        """The index's first screen: agreement, known delays, unexplained differences."""
        out = [self.agreement().sentence]
        k = self.known_delays()
        if k.table is not None and len(k.table):
            t = k.table[k.table["metric"].isin(["TTFT", "ITL"])]
            out.append("Against known delays: " + "; ".join(
                f"{r.client} {r.metric} {r.error:+.2f} ms" for r in t.itertuples()) + ".")
        out.append(self.compare().sentence)
        return out
