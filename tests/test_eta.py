"""The sweep says, before it starts, the server's decode rate and the ETA built from it (issue 22),
and that ETA is a bound that holds: it learns the run's own pace as batches end (issue 44)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from langbench import paths, storage
from langbench.run import eta, params, plan

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_eta_adds_generation_prompts_reloads_and_start_ups_of_what_is_left():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    batches = plan.build(params.load(FIXTURES / "tiny.yaml"))
    left = [(b, len(b.runs)) for b in batches]
    want = sum(len(b.runs) * (4 / 40.0 + 0.05) + eta.STARTUP_S[b.agent] + (1.0 if b.reload_expected else 0.0)
               for b in batches)  # tiny.yaml: num_predict 4
    assert eta.estimate_s(left, rate) == pytest.approx(want)
    assert eta.estimate_s([(b, 0) for b in batches], rate) == 0  # nothing left, nothing to wait for
    half = [(b, n if i % 2 else 0) for i, (b, n) in enumerate(left)]
    assert 0 < eta.estimate_s(half, rate) < want
    line = eta.describe(rate, want, 50)
    assert "40.0 tok/s" in line and f"at most {want / 60:.1f} min" in line and "at most 50 runs" in line


def test_the_first_line_says_when_other_model_servers_share_the_host():
    """A bound from a probe taken beside another server holds only while that server does as it
    did (on the busy EPYC the first line said 36.7 min and the pace that followed meant 2 hours)."""
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    assert "other model server" not in eta.describe(rate, 600.0, 50)
    assert "2 other model servers run on this host: the bound holds only while" in eta.describe(rate, 600.0, 50, others=2)
    assert eta.other_servers(None) >= 0  # counts this host's Ollama runners and llama-servers, none of them ours


def test_no_num_predict_means_no_eta_and_says_so():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    b = plan.build(params.load(FIXTURES / "tiny.yaml"))[0]
    unbounded = plan.Batch(**{**b.__dict__, "options": {k: v for k, v in b.options.items() if k != "num_predict"}})
    assert eta.estimate_s([(unbounded, 3)], rate) is None
    assert "no ETA: num_predict is not fixed" in eta.describe(rate, None, 3)
    assert "could not be measured" in eta.describe(None, None, 3)


def test_an_unreachable_server_gives_no_rate_instead_of_an_error():
    from langbench.run import server
    assert eta.probe(f"http://127.0.0.1:{server.free_port()}", "gemma3:270m", timeout_s=5) is None


def test_the_sweep_measured_the_rate_before_it_started_and_kept_it(tiny_run):
    manifest = json.loads((tiny_run / "manifest.json").read_text())
    probe = manifest["sessions"][0]["decode_probe"]
    assert probe["tokens"] >= 2 and probe["tokens_per_s"] > 1 and probe["eta_s"] > 0
    records = [json.loads(line) for line in (tiny_run / "records.jsonl").read_text().splitlines()]
    planned = json.loads((tiny_run / "plan.json").read_text())["batches"]
    assert len(records) == sum(len(b["runs"]) for b in planned)  # the probe is no run: no record of it


def test_an_agent_task_counts_its_most_turns_and_says_the_eta_is_an_upper_bound():
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)
    p = params.load(FIXTURES / "tiny-agent.yaml")
    left = [(b, len(b.runs)) for b in plan.build(p)]
    turns = max(t["max_turns"] for t in p.tasks)
    one, all_turns = eta.estimate_s(left, rate), eta.estimate_s(left, rate, turns)
    startups = sum(eta.STARTUP_S[b.agent] + (1.0 if b.reload_expected else 0.0) for b, _ in left)
    assert all_turns - startups == pytest.approx(turns * (one - startups))
    line = eta.describe(rate, all_turns, 12, turns=turns, constrained=True)
    assert f"12 tasks of up to {turns} requests ≈ at most" in line and "under a JSON grammar" in line


def test_the_probe_under_a_json_grammar_measures_the_constrained_rate(ollama):
    """Structured actions decode under Ollama's grammar: the probe sends `format` and the real
    server times it. (How much slower it is depends on how often the grammar rejects the model's
    own top token, so on the text sampled: not asserted here.)"""
    from relay import Relay
    with Relay(ollama.url) as relay:
        constrained = eta.probe(relay.url, "gemma3:270m", fmt="json")
    assert relay.bodies[0]["format"] == "json"
    assert constrained is not None and constrained.tokens >= 2 and constrained.tokens_per_s > 0


# --- the bound learns the run's pace (issue 44) ------------------------------------------------

RATE = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=50.0, load_ms=1000.0)


def test_before_any_batch_the_bound_is_the_estimate_times_the_first_pace_and_margin():
    left = [(b, len(b.runs)) for b in plan.build(params.load(FIXTURES / "tiny.yaml"))]
    pace = eta.Pace(RATE)
    assert pace.bound_s(left) == pytest.approx(eta.estimate_s(left, RATE) * eta.FIRST_PACE * (1 + eta.MARGIN))
    assert eta.FIRST_PACE >= 1.19  # the fresh clone of issue 44 took 8 min 14 s against 6.9 min estimated


def test_a_run_slower_than_its_estimate_raises_the_bound_of_what_is_left_to_its_pace():
    batches = plan.build(params.load(FIXTURES / "tiny.yaml"))
    pace = eta.Pace(RATE)
    for b in batches[:len(batches) // 2]:  # every finished batch took twice its estimate
        pace.took(b, len(b.runs), 2 * eta.batch_s(b, len(b.runs), RATE))
    left = [(b, len(b.runs)) for b in batches[len(batches) // 2:]]
    seen = {eta.shape(b) for b in batches[:len(batches) // 2]}
    want = sum(eta.batch_s(b, n, RATE) * (2 if eta.shape(b) in seen else max(2, eta.FIRST_PACE)) * (1 + eta.MARGIN)
               for b, n in left)
    assert pace.bound_s(left) == pytest.approx(want)
    assert pace.bound_s(left) > 2 * eta.estimate_s(left, RATE)  # at least the pace it kept, never the estimate


def test_a_shape_that_slows_down_late_is_bounded_by_its_recent_pace():
    b = plan.build(params.load(FIXTURES / "tiny.yaml"))[0]
    est = eta.batch_s(b, len(b.runs), RATE)
    pace = eta.Pace(RATE)
    for _ in range(20):
        pace.took(b, len(b.runs), est)  # on pace for 20 batches
    for _ in range(eta.RECENT):
        pace.took(b, len(b.runs), 3 * est)  # then three times slower (a build started beside it)
    assert pace.factor(b) == pytest.approx(3 * (1 + eta.MARGIN))


def _unix(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def replay(run_dir: Path, session: int):
    """A recorded session as the runner saw it: its start, its end, the batches it planned, the
    runs done before it, and each batch attempt as (end, batch, runs), in the order they ended
    (an attempt ends with its last record's t_last)."""
    m = storage.read_json(run_dir / "manifest.json")
    s = m["sessions"][session]
    start, end = _unix(s["started_at"]), _unix(s["ended_at"])
    batches = [plan.batch_from_dict(b) for b in storage.read_json(run_dir / "plan.json")["batches"]]
    records = storage.read_jsonl(run_dir / "records.jsonl")
    before: dict[str, set] = {}
    attempts: dict[tuple, list] = {}
    for r in records:
        if r["t0_unix"] < start:
            before.setdefault(r["batch_id"], set()).add(r["run_id"])
        elif r["t0_unix"] <= end:
            attempts.setdefault((r["batch_id"], r.get("attempt", 1)), []).append(r)
    by_id = {b.batch_id: b for b in batches}
    ended = sorted((max(r["t0_unix"] + (r.get("e2e_ms") or 0) / 1e3 for r in rs), by_id[k[0]],
                    len({r["run_id"] for r in rs})) for k, rs in attempts.items())
    return m, s, start, end, batches, before, ended


def bounds(run_dir: Path, session: int, rate: eta.DecodeRate | None = None) -> tuple[float, list[tuple[float, float]]]:
    """What the session's batches took (from its start to its last batch's end, as the sweep's
    `took_s`: stopping the servers after it is not in the bound), and at its start and after each
    batch attempt: (seconds so far, seconds so far + the bound on what was left), as the sweep
    computes them."""
    m, s, start, end, batches, before, ended = replay(run_dir, session)
    p = m["parameters"]
    turns = max(t.get("max_turns", 1) for t in p["tasks"]) if p.get("workload") == "agent" else 1
    probe = s.get("decode_probe") or {}
    rate = rate or eta.DecodeRate(probe["tokens_per_s"], probe["tokens"], probe["prompt_eval_ms"], probe["load_ms"])
    pace = eta.Pace(rate, turns, p.get("cold_num_predict"))
    done = {b.batch_id: len(before.get(b.batch_id, ())) for b in batches}
    left = lambda: [(b, max(len(b.runs) - done[b.batch_id], 0)) for b in batches]  # noqa: E731
    out, last = [(0.0, pace.bound_s(left()))], start
    for at, b, runs in ended:
        pace.took(b, runs, at - last)
        last, done[b.batch_id] = at, done[b.batch_id] + runs
        out.append((at - start, at - start + pace.bound_s(left())))
    return (ended[-1][0] if ended else end) - start, out


# Sessions of kept runs that ran to the end of their plan (the others were cut by the lent GPU
# time running out, so they end before any bound would): run, session.
KEPT_ENDS = (("results/agent-gpu-h200", 0), ("results/tr112-gpu-h200x2/one_gpu", 1), ("results/tr112-gpu-h200x2", 2))


@pytest.mark.parametrize("run, session", KEPT_ENDS)
def test_on_kept_gpu_runs_the_bound_holds_once_every_config_has_run(run, session):
    """GPU plans whose configs decode at rates 7× apart (partial offload against full; the probe
    sees Ollama's defaults): a config's pace is known once one of its batches has run, and from
    then on the bound holds. These runs were made by the Dask runner (no probe): the rate is
    the first measured run's, as the probe would have seen it."""
    run_dir = paths.ROOT / run
    m, s, start, end, batches, before, ended = replay(run_dir, session)
    first = min((r for r in storage.read_jsonl(run_dir / "records.jsonl") if start <= r["t0_unix"] <= end
                 and r.get("phase") == "measured" and r.get("eval_duration")), key=lambda r: r["t0_unix"])
    rate = None if s.get("decode_probe") else eta.DecodeRate(
        first["eval_count"] / (first["eval_duration"] / 1e9), first["eval_count"],
        first["prompt_eval_duration"] / 1e6, max(r.get("load_duration") or 0 for r in [first]) / 1e6)
    took, seen = bounds(run_dir, session, rate)
    configs, known_at = {b.config_id for b in batches}, None
    ran: set = set()
    for at, b, _ in ended:
        ran.add(b.config_id)
        if ran >= {c for c in configs if any(x.config_id == c for _, x, _ in ended)}:
            known_at = at - start
            break
    assert known_at is not None and known_at < took
    late = [(t, bound) for t, bound in seen if t >= known_at]
    # the session's start is kept to the second: one second of slack, no more
    assert late and all(bound >= took - 1 for _, bound in late), (took, [x for x in late if x[1] < took - 1][:3])


# Sweeps made on this machine kind with the bound, each with a README.md that says how: run, batches
RECORDED = (("quick-2026-12-07-epyc", 180), ("quick-cut-2026-12-07-epyc", 20))


@pytest.mark.parametrize("run, batches", RECORDED)
def test_on_a_recorded_cpu_sweep_the_first_line_and_every_bound_after_it_held(run, batches):
    """make report (quick.yaml) and quick.yaml cut to 2 configs on the 2-core EPYC, with other
    tests coming and going beside them: the replay computes the very bound the first line printed,
    and no bound from then on, after any batch, was below what the sweep took."""
    run_dir = FIXTURES / "runs" / run
    took, seen = bounds(run_dir, 0)
    probe = storage.read_json(run_dir / "manifest.json")["sessions"][0]["decode_probe"]
    assert seen[0][1] == pytest.approx(probe["bound_s"])  # the arithmetic is the sweep's own
    assert probe["took_s"] <= probe["bound_s"] and took <= probe["bound_s"]
    assert len(seen) == batches + 1 and all(bound >= took - 1 for _, bound in seen), \
        [x for x in seen if x[1] < took - 1]


def test_a_replay_run_promises_no_first_bound_and_counts_v1_and_its_sessions_side_by_side():
    """On a replay server every session keeps its captured pace, so a batch of N sessions takes
    what one does at the server's rate (side by side), /v1's max_tokens counts as num_predict,
    and the first line promises nothing: the clients' own pace at N is what the run measures."""
    from types import SimpleNamespace as B
    rate = eta.DecodeRate(tokens_per_s=40.0, tokens=32, prompt_eval_ms=20.0, load_ms=0.0)
    v1 = B(options={"max_tokens": 4}, agent="rust", reload_expected=False, streams=64, runs=[None] * 65)
    serial = eta.batch_s(v1, 65, rate)
    side = eta.batch_s(v1, 65, rate, side_by_side=True)
    assert serial == pytest.approx(65 * (4 / 40 + 0.02) + eta.STARTUP_S["rust"])
    assert side == pytest.approx(2 * (4 / 40 + 0.02) + eta.STARTUP_S["rust"])  # ceil(65 / 64) rounds
    assert eta.batch_s(B(options={}, agent="rust", reload_expected=False, streams=1, runs=[None]), 1, rate) is None
    line = eta.describe(rate, 100.0, 65, side_by_side=True)
    assert "no first bound" in line and "at most" not in line
    assert "at most" in eta.describe(rate, 100.0, 65)
