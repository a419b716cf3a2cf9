"""`python -m langbench peers` (issue 43): chimeraforge 0.76's bench and AIPerf 0.13's profile
beside langbench's null, Python and Rust clients on the embedded server, then against the
scripted server's known delays, rendered into the peers notebook; and AIPerf alone on scripted
servers (no Ollama). What is asserted holds on any CPU: outcomes, counts, definitions, what a
definition implies (chimeraforge's TTFT is the server's prompt evaluation; AIPerf's end-to-end
ends at the last token), a loose ratio for throughput, and the known-delay errors; never an
absolute speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import lanes
from langbench.analysis.peers import Peers, ci
from langbench.run import peers as run_peers
from langbench.vocab import ParamsError

FIXTURE = Path(__file__).parent / "fixtures" / "peers.yaml"
ALONE = Path(__file__).parent / "fixtures" / "peers-aiperf.yaml"
TOOLS = ["null", "python", "rust", "chimeraforge", "aiperf"]
CLIENT_TOOLS = ["null", "python", "rust"]
ROUNDS, RUNS, KNOWN_RUNS = 2, 2, 2

pytestmark = [pytest.mark.server, pytest.mark.slow]


def _peers(folder: Path) -> tuple[Path, subprocess.CompletedProcess]:
    done = subprocess.run([sys.executable, "-m", "langbench", "peers", str(FIXTURE), "--run-id", "peers"],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(folder)},
                          capture_output=True, text=True, timeout=900)
    (folder / "cli.stderr").write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    return folder / "peers"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return lanes.once(tmp_path_factory, "peers", _peers)


@pytest.fixture(scope="module")
def peers(run) -> Peers:
    return Peers.load(run)


def test_every_tool_ran_every_round_on_the_server_and_against_known_delays(peers):
    r = peers.runs.drop_duplicates(["server_role", "tool", "round", "run"])
    for role, rounds, runs in (("server", ROUNDS, RUNS), ("known", 1, KNOWN_RUNS)):
        measured = r[(r["server_role"] == role) & ~r["warmup"]]
        counts = measured.groupby("tool").size().to_dict()
        assert counts == {t: rounds * runs for t in TOOLS}, (role, counts)
        assert set(measured["outcome"]) == {"ok"}, measured[measured["outcome"] != "ok"][["tool", "error"]]
        warm = r[(r["server_role"] == role) & r["warmup"]].groupby("tool").size().to_dict()
        assert warm == {t: rounds for t in TOOLS}, (role, warm)  # one warm-up per tool per round, kept


def test_each_rounds_order_is_seeded_and_every_tool_runs_once_per_round(run):
    procs = pd.read_json(run / "processes.jsonl", lines=True)
    server = procs[procs["server_role"] == "server"]
    for _, batch in server.groupby("round"):
        assert sorted(batch["tool"]) == sorted(TOOLS)
        assert sorted(batch["position"]) == list(range(len(TOOLS)))


def test_every_number_carries_its_definition(peers):
    r = peers.runs
    assert r["definition"].notna().all() and (r["definition"].str.len() > 5).all()
    assert set(r["side"]) == {"server", "client"}
    cf = r[r["tool"] == "chimeraforge"]
    assert set(cf["side"]) == {"server"} and set(cf["streamed"].astype(str)) == {"False"}
    ours = r[r["tool"].isin(CLIENT_TOOLS)]
    assert set(ours.loc[ours["metric"] == "ttft_ms", "side"]) == {"client"}
    assert set(ours.loc[ours["metric"] == "ttft_ms", "point"]) == {"first chunk carrying a token"}
    ap = r[(r["tool"] == "aiperf")].set_index("metric")
    assert set(ap.loc["ttft_ms", "side"]) == {"client"} and set(ap.loc["ttft_ms", "point"]) == {
        "first SSE event carrying text"}
    assert set(ap.loc["throughput_tps", "side"]) == {"client"}  # /v1 returns no eval_duration
    assert set(ap.loc["eval_count", "side"]) == {"server"}  # its token counts are the server's usage


def test_chimeraforges_ttft_is_the_servers_prompt_evaluation_and_every_client_waits_longer(peers):
    m = peers.measured("server")
    w = m.pivot_table(index=["tool", "round", "run"], columns="metric", values="value")
    cf = w.loc["chimeraforge"]
    assert (cf["ttft_ms"] == cf["prompt_eval_ms"]).all()  # its definition, read from its own output
    for tool in ("null", "python", "rust"):  # a streamed client sees the first token after it was sampled
        ours = w.loc[tool]
        assert (ours["ttft_ms"] >= ours["prompt_eval_ms"]).all(), tool
        assert (ours["server_ttft_ms"] >= ours["prompt_eval_ms"]).all(), tool


def test_throughput_agrees_within_a_loose_ratio_every_tool_reads_the_servers_counters(peers):
    """Every tool's throughput is the server's eval_count / eval_duration of its own requests,
    exactly; across tools the medians agree only loosely, because on a shared 2-core host the
    server's own rate moved up to 10x from one batch to the next (seen with other builds running)."""
    w = peers.measured().pivot_table(index=["tool", "round", "run"], columns="metric", values="value")
    counters = w.drop(index="aiperf", level="tool")  # AIPerf's is its own clock's decode rate: /v1 has no durations
    assert ((counters["throughput_tps"] - counters["eval_count"] / (counters["eval_ms"] / 1e3)).abs()
            < 1e-6 * counters["throughput_tps"]).all()
    ap = w.loc["aiperf"]
    assert ((ap["throughput_tps"] - 1e3 / ap["itl_ms"]).abs() < 1e-6 * ap["throughput_tps"]).all()
    null = peers.median("null", "throughput_tps")
    for tool in TOOLS:
        assert 0.2 < peers.median(tool, "throughput_tps") / null < 5.0, tool
        assert peers.median(tool, "eval_count") == 6  # the same output length: num_predict reached everywhere


def test_each_tools_error_against_known_delays(peers):
    t = peers.known_delays().table
    err = t.set_index(["tool", "metric"])["error"]
    for tool in ("null", "python", "rust"):
        assert 0 <= err[tool, "TTFT"] < 100, tool  # never before the injected 200 ms
        assert abs(err[tool, "ITL"]) < 2, tool
        assert err[tool, "end-to-end"] >= 0
    assert err["chimeraforge", "TTFT"] == 0  # server-reported: the scripted server's own schedule
    assert ("chimeraforge", "ITL") not in err.index  # it never streams: no ITL at all
    _aiperf_known_errors_are_its_clocks(peers)
    assert "by construction" in peers.known_delays().sentence


def test_the_comparison_explains_or_names_every_difference(peers):
    t = peers.compare().table
    assert set(t["tool"]) == {"python", "rust", "chimeraforge", "aiperf"} and (t["rounds"] == ROUNDS).all()
    allowed = ("within noise", "explained: definition", "explained: named cost", "explained: the server's rate",
               "unexplained")
    assert set(t["verdict"]) <= set(allowed), t["verdict"]
    assert t["explanation"].str.len().gt(10).all()
    ttft = t[(t["tool"] == "chimeraforge") & (t["metric"] == "TTFT")].iloc[0]
    # its TTFT leaves out the load and the client's path; whether that shows beyond the rounds'
    # noise depends on the host (with other builds running, the server's own prompt eval moved
    # from 30 ms to 8 s between requests), so only the reading is checked, not its size
    assert "load_duration" in peers.definition("chimeraforge", "ttft_ms")["definition"]
    if ttft["verdict"].startswith("explained"):
        assert "load_duration" in ttft["explanation"]


def test_the_peers_notebook_and_the_index_render(run):
    html = (run / "html" / "peers-nocode.html").read_text()
    assert "Traceback" not in html and "Against known delays" in html and "TR112 v2" in html
    index = (run / "index.html").read_text()
    assert "agrees closest" in index and "Against known delays" in index
    assert "contradicted" in index or "supported" in index or "cannot measure" in index


def test_tr112_v2_claims_come_from_the_data_file_with_their_source(peers):
    t = peers.tr112().table
    assert list(t["claim"]) == ["throughput", "ttft", "consistency", "memory", "startup"]
    assert t["v2"].str.contains("line").all()
    assert "114.54" not in "".join(t["this run"])  # the report's numbers are data, this run's are measured
    assert set(t["verdict on v2"]) <= {"supported", "contradicted", "cannot measure"}
    assert "inside the server" in t.set_index("claim").loc["throughput", "mechanism"]


def test_the_peer_venv_is_cached_by_version_and_pins(run):
    started = time.monotonic()
    python = run_peers.ensure_peer("chimeraforge")
    assert time.monotonic() - started < 2  # a cache hit: nothing installed again
    assert "chimeraforge-0.76.0" in str(python) and (python.parents[1] / ".installed").exists()
    pins = subprocess.run([str(python), "-c", "import chimeraforge, click; print(chimeraforge.__version__)"],
                          capture_output=True, text=True)
    assert pins.stdout.strip() == "0.76.0", pins.stderr
    started = time.monotonic()
    python = run_peers.ensure_peer("aiperf")
    assert time.monotonic() - started < 2 and "aiperf-0.13.0" in str(python)
    pins = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('aiperf'))"],
                          capture_output=True, text=True)
    assert pins.stdout.strip() == "0.13.0", pins.stderr


def test_aiperf_sent_the_files_options_as_v1_fields_and_got_the_runners_context(run):
    """AIPerf posts /v1/completions: num_predict as max_tokens, the seed, and temperature and
    top_p at the model's defaults (/v1 would set 1.0 where /api leaves them to the model); num_ctx,
    which /v1 cannot carry, was the embedded server's default context, and /api/ps after its
    batches says its requests ran with it (no reload between tools)."""
    import json
    sent = json.loads((run / "peers" / "server-r0-aiperf" / "aiperf" / "inputs.json").read_text())
    payload = sent["data"][0]["payloads"][0]
    assert payload["max_tokens"] == 6 and payload["seed"] == 43
    assert payload["temperature"] == 0.8 and payload["top_p"] == 0.9 and payload["stream"] is True
    assert payload["prompt"] == (FIXTURE.parents[2] / "parameters/prompts/chimeraforge_medium.txt").read_text()
    procs = pd.read_json(run / "processes.jsonl", lines=True)
    ap = procs[(procs["tool"] == "aiperf") & (procs["server_role"] == "server")]
    assert list(ap["server_context_length"]) == [2048] * ROUNDS
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["server_env"] == {"OLLAMA_CONTEXT_LENGTH": "2048"}


def test_a_file_without_num_predict_is_refused_naming_the_key(tmp_path):
    bad = tmp_path / "p.yaml"
    text = FIXTURE.read_text().replace("../../parameters/prompts/", str(FIXTURE.parents[2] / "parameters/prompts") + "/")
    bad.write_text(text.replace("num_predict: 6, ", ""))
    with pytest.raises(ParamsError, match="num_predict"):
        run_peers.load(bad)
    bad.write_text(text + "bogus: 1\n")
    with pytest.raises(ParamsError, match="bogus"):
        run_peers.load(bad)


def test_a_claimed_difference_is_supported_contradicted_or_not_measurable():
    from langbench.analysis.peers import _verdict
    assert _verdict(2.0, 9.0, 5.0) == "supported"  # 0 excluded, the claim inside
    assert _verdict(-1.0, 1.0, 5.0) == "contradicted"  # the claim (+5) outside: no such difference
    assert _verdict(-9.0, 9.0, 5.0) == "cannot measure"  # both 0 and the claim inside: too noisy
    assert _verdict(float("nan"), float("nan"), 5.0) == "cannot measure"


def test_a_t_interval_over_rounds():
    m, lo, hi = ci([1.0, 3.0])
    assert m == 2.0 and lo < 0 < hi  # two rounds that disagree: 0 inside
    assert ci([5.0])[1] != ci([5.0])[1]  # one round: no interval (NaN)


KEPT = Path(__file__).parents[1] / "results" / "peers-cpu"
FIRST = Path(__file__).parents[1] / "results" / "peers-cpu-first"


def _rendered(kept: Path, tmp_path: Path) -> Peers:
    import shutil
    run = tmp_path / kept.name
    shutil.copytree(kept, run)
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "agrees closest" in (run / "index.html").read_text()
    return Peers.load(run)


def test_the_kept_peers_run_with_aiperf_renders_here_and_keeps_its_findings(tmp_path):
    """results/peers-cpu: `make peers` (parameters/peers.yaml: 3 rounds of 4 runs, 32 tokens) on
    the embedded server of the 2-core EPYC, nothing else running: every tool, AIPerf at a request
    rate beside its concurrency of 1 (docs/peers.md). What it found holds in its numbers: every
    run ok; AIPerf no longer starves the server it measures (its ITL and throughput within 15 % of
    the null client's; the run before the fix had 520-1,170 ms ITL); chimeraforge's TTFT is its
    prompt_eval_duration, 60-80 ms under every client's; every server-counter throughput within
    10 % of the eval rate; every client clock within 5 ms of the known delays."""
    p = _rendered(KEPT, tmp_path)
    assert p.manifest["kind"] == "peers" and set(p.tools()) == set(TOOLS)
    o = p.outcomes().table.set_index("tool")
    assert (o["ok"] == o["runs"]).all() and (o["runs"] == 12).all()
    side = p.side_by_side().table.set_index(["tool", "metric"])["median"]
    for metric in ("ITL", "throughput"):
        assert abs(side["aiperf", metric] / side["null", metric] - 1) < 0.15, (metric, side)
    a = p.agreement().table.set_index("tool")
    assert (a["throughput_vs_server_pct"].abs() < 10).all(), a
    assert -80 < a.loc["chimeraforge", "ttft_minus_server_ms"] < -60
    m = p.measured().pivot_table(index=["tool", "round", "run"], columns="metric", values="value")
    assert (m.loc["chimeraforge", "ttft_ms"] == m.loc["chimeraforge", "prompt_eval_ms"]).all()
    c = p.compare().table.set_index(["tool", "metric"])["verdict"]
    assert c["chimeraforge", "TTFT"] == "explained: definition"
    err = p.known_delays().table.set_index(["tool", "metric"])["error"]
    assert all(0 <= err[t, "TTFT"] < 5 and abs(err[t, "ITL"]) < 1 for t in ("null", "python", "rust", "aiperf"))
    _aiperf_known_errors_are_its_clocks(p)


@pytest.mark.skipif(not FIRST.exists(), reason="no first kept peers run")
def test_the_first_kept_peers_run_renders_here_and_keeps_its_findings(tmp_path):
    """results/peers-cpu-first: parameters/peers.yaml (3 rounds of 4 runs, 32 tokens) on the embedded
    server of a 2-core AMD EPYC while other engineers' builds and sweeps ran (load average 5.4-7.8):
    data only, rendered here. What it found holds in its numbers: the Python agent called one
    stream truncated (no done line, after 30 chunks) that the server logged as a whole 200, the
    null client and the Rust agent none; chimeraforge's TTFT is its prompt_eval_duration; the
    server's own rate moved more between batches than any tool differed, so no difference from
    the null client is beyond the rounds' noise; the known-delay errors are the clients' own."""
    p = _rendered(FIRST, tmp_path)
    # kept before AIPerf joined the peers (issue 43): the other tools, every one of them
    assert p.manifest["kind"] == "peers" and set(p.tools()) == set(TOOLS) - {"aiperf"}
    o = p.outcomes().table.set_index("tool")
    assert o.loc["python", "truncated"] == 1 and o[["error", "truncated"]].drop(index="python").sum().sum() == 0
    bad = p.runs[(p.runs["outcome"] == "truncated")].drop_duplicates(["tool", "round", "run"])
    assert list(bad["error"]) == ["no_done: stream ended without a done:true line"]
    m = p.measured().pivot_table(index=["tool", "round", "run"], columns="metric", values="value")
    assert (m.loc["chimeraforge", "ttft_ms"] == m.loc["chimeraforge", "prompt_eval_ms"]).all()
    rates = p.per_round()["throughput_tps"]
    assert rates.max() / rates.min() > 4  # the server's own rate, batch to batch, on a shared host
    assert set(p.compare().table["verdict"]) == {"within noise"}
    err = p.known_delays().table.set_index(["tool", "metric"])["error"]
    assert all(0 <= err[t, "TTFT"] < 100 and abs(err[t, "ITL"]) < 2 for t in ("null", "python", "rust"))


def test_the_kept_truncation_scan_found_no_stream_broken_by_either_line_splitter():
    """results/truncation-scan (bench/truncation_scan.py --n 30 --num-predict 128, chimeraforge's
    prompt unseeded, this 2-core EPYC under load): every stream ended with a done line on the wire,
    and both the null client's splitting and httpx's (ollama-python's) read every one whole; no
    answer held a character str.splitlines breaks at. So httpx's line splitting did not cause the
    Python agent's truncated stream in results/peers-cpu-first, and the server's bytes were whole here."""
    import json
    rows = [json.loads(x) for x in (Path(__file__).parents[1] / "results" / "truncation-scan" / "streams.jsonl")
            .read_text().splitlines()]
    assert len(rows) == 30
    assert all(r["server_done"] and r["newline_whole"] and r["httpx_whole"] for r in rows)
    assert not any(r["splitters_in_answer"] for r in rows)


def _aiperf_known_errors_are_its_clocks(peers: Peers) -> None:
    """AIPerf against the scripted server (first token 200 ms, then one every 20 ms): its TTFT
    never before the truth and within 100 ms of it, its ITL within 2 ms, its decode rate within
    5 % of 50 tok/s, and its end-to-end against the last token's time (its request_latency ends
    at the last SSE event with text, one gap before the done event)."""
    t = peers.known_delays().table.set_index(["tool", "metric"])
    err, truth = t["error"], t["truth"]
    assert 0 <= err["aiperf", "TTFT"] < 100
    assert abs(err["aiperf", "ITL"]) < 2
    assert abs(t.loc[("aiperf", "throughput"), "error_pct"]) < 5
    k = peers.manifest["known_delays"]
    assert truth["aiperf", "end-to-end"] == k["first_ms"] + (k["tokens"] - 1) * k["gap_ms"]
    assert 0 <= err["aiperf", "end-to-end"] < 100
    assert peers.median("aiperf", "eval_count", "known") == k["tokens"]  # the server's usage, read back


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> Peers:
    """AIPerf alone: `python -m langbench peers` with no langbench client, its server session on
    an in-process ScriptedServer given as --url, then the known-delay session run_peers starts."""
    from scripted import ScriptedServer
    folder = tmp_path_factory.mktemp("peers-aiperf")
    with ScriptedServer(first_ms=50, gap_ms=10, tokens=6) as srv:
        done = subprocess.run([sys.executable, "-m", "langbench", "peers", str(ALONE), "--url", srv.url,
                               "--run-id", "alone", "--no-render"],
                              env={**os.environ, "LANGBENCH_OUTPUTS": str(folder)},
                              capture_output=True, text=True, timeout=600)
        bodies = list(srv.bodies)
    assert done.returncode == 0, done.stderr[-4000:]
    p = Peers.load(folder / "alone")
    p.bodies = bodies
    return p


def test_aiperf_alone_against_known_delays_gives_its_clocks_error(alone):
    r = alone.runs.drop_duplicates(["server_role", "tool", "round", "run"])
    for role, runs in (("server", 2), ("known", 3)):
        one = r[r["server_role"] == role]
        assert len(one[~one["warmup"]]) == runs and len(one[one["warmup"]]) == 1, role
        assert set(one["outcome"]) == {"ok"}, one[one["outcome"] != "ok"][["error"]]
    _aiperf_known_errors_are_its_clocks(alone)


def test_aiperf_posts_v1_completions_with_the_files_options_and_the_models_defaults(alone):
    """What reached the server: /v1/completions, streamed with usage, max_tokens from num_predict,
    the seed, and temperature 0.8 and top_p 0.9 (Ollama's own defaults, where the model sets none:
    /v1 would send 1.0); one warm-up and two runs, one at a time."""
    assert len(alone.bodies) == 3
    for body in alone.bodies:
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert (body["max_tokens"], body["seed"], body["temperature"], body["top_p"]) == (6, 43, 0.8, 0.9)
        assert body["model"] == "scripted" and body["prompt"].startswith("You are a helpful assistant.")
    assert alone.manifest["server_env"] is None  # no num_ctx in the file: the server is left as it is


def test_the_tokenizer_made_from_the_gguf_counts_the_prompt_as_the_server_did():
    """AIPerf needs a tokenizer; the one made from the embedded GGUF's vocabulary (BPE merges
    ranked by the pieces' scores) counts chimeraforge's prompt as Ollama did in results/peers-cpu:
    35 tokens, BOS included, where the server evaluated the whole prompt."""
    from langbench.run import gguf_tokenizer, provision
    directory = gguf_tokenizer.ensure_tokenizer(provision.ensure_gguf())
    prompt = (FIXTURE.parents[2] / "parameters/prompts/chimeraforge_medium.txt").read_text()
    count = subprocess.run([str(run_peers.ensure_peer("aiperf")), "-c",
                            "import sys; from tokenizers import Tokenizer; "
                            "t = Tokenizer.from_file(sys.argv[1]); print(len(t.encode(sys.argv[2]).ids))",
                            str(directory / "tokenizer.json"), prompt], capture_output=True, text=True)
    assert count.stdout.strip() == "35", count.stderr
    counts = {json.loads(x).get("prompt_eval_count") for x in (KEPT / "records.jsonl").read_text().splitlines()}
    assert max(c for c in counts if c) == 35  # a whole evaluation (a cached prefix counts 1)


def test_a_v1_peer_refuses_an_option_v1_cannot_carry(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(ALONE.read_text().replace("../../parameters/prompts/", str(ALONE.parents[2] / "parameters/prompts")
                                             + "/").replace("seed: 43}", "seed: 43, num_thread: 2}"))
    with pytest.raises(ParamsError, match="options.num_thread: aiperf speaks /v1/completions"):
        run_peers.load(bad)
