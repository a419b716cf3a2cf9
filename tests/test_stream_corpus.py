"""Hostile but legal streams (issue 15, item 4; /v1's Server-Sent Events: issue 25), replayed byte
for byte by a scripted server to all three clients: each client reads a construct as the others do (the same answer text, to the
byte), or records a failure whose error names its client and says what it met. A client that
reads a stream wrong and calls it ok fails the test. The table of client × construct is printed
(`pytest tests/test_stream_corpus.py -s`)."""

from __future__ import annotations

import hashlib

import pytest

from langbench import schemas
from langbench.run import agents
from scripted import CORPUS, SSE_CORPUS, CorpusServer
from test_agents_contract import jobs_doc, run_agent

RUNS = 2  # the second run shows whether the client recovered (and reconnected) after the first


def replay(tmp, cases: dict, doc: dict) -> dict:
    """Every construct of `cases` to every client: {(construct, agent): (stats, records)}, the
    table printed."""
    out = {}
    for construct in cases:
        for agent in agents.AGENTS:
            with CorpusServer(construct, cases) as srv:
                d = tmp / f"{construct}-{agent}"
                d.mkdir()
                stats, records = run_agent(agent, srv.url, doc, d, timeout=60)
            out[construct, agent] = (stats, records)
    _table(cases, out, doc.get("endpoint", "generate"))
    return out


def _table(cases: dict, out: dict, endpoint: str) -> None:
    width = max(map(len, cases)) + 2
    lines = [f"{'construct':<{width}}" + "".join(f"{a:<34}" for a in agents.AGENTS)]
    for construct in cases:
        cells = []
        for agent in agents.AGENTS:
            recs = out[construct, agent][1]
            cells.append(", ".join("ok" if r["outcome"] == "ok" else f"{r['error']['kind']}" for r in recs))
        lines.append(f"{construct:<{width}}" + "".join(f"{c:<34}" for c in cells))
    print(f"\nstream corpus ({endpoint}): client × construct (one entry per run)\n" + "\n".join(lines))
    for (construct, agent), (_, recs) in out.items():
        for r in recs:
            if r["outcome"] != "ok":
                print(f"  {construct} / {agent}: {r['error']['kind']} [{r['error'].get('client')}]: "
                      f"{r['error']['message'][:220]}")


def _runs(options: dict) -> list[dict]:
    return [{"run_id": f"k{i}", "prompt": 0, "options": options, "keep_alive": -1, "warmup": False}
            for i in range(RUNS)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    doc = jobs_doc(model="scripted", runs=_runs({"num_predict": 4}), timeout_s=1)
    return replay(tmp_path_factory.mktemp("corpus"), CORPUS, doc)


@pytest.fixture(scope="module")
def sse_corpus(tmp_path_factory):
    """One process per client reads the whole /v1 corpus in turn (RUNS runs of each construct,
    the stall last): a client that did not recover from a construct fails the next one's runs."""
    tmp = tmp_path_factory.mktemp("sse-corpus")
    order = sorted(SSE_CORPUS, key=lambda c: "stall_s" in SSE_CORPUS[c])
    runs = [{"run_id": f"{c}.k{i}", "prompt": 0, "options": {"max_tokens": 4}, "keep_alive": -1, "warmup": False}
            for c in order for i in range(RUNS)]
    doc = {"schema_version": 1, "model": "scripted", "endpoint": "openai-chat", "timeout_s": 1,
           "prompts": [[{"role": "user", "content": "go"}]], "runs": runs}
    out = {}
    for agent in agents.AGENTS:
        with CorpusServer(None, SSE_CORPUS, order, RUNS) as srv:
            d = tmp / agent
            d.mkdir()
            stats, records = run_agent(agent, srv.url, doc, d, timeout=120)
        assert [r["run_id"] for r in records] == [r["run_id"] for r in runs], stats.stderr_tail
        for c in order:
            mine = [r for r in records if r["run_id"].startswith(f"{c}.")]
            out[c, agent] = (stats, [{**r, "run_id": r["run_id"].split(".", 1)[1]} for r in mine])
    _table(SSE_CORPUS, out, "openai-chat")
    return out


def _check(case: dict, agent: str, construct: str, stats, records, own_process: bool = True) -> None:
    assert [r["run_id"] for r in records] == [f"k{i}" for i in range(RUNS)], stats.stderr_tail
    for rec in records:
        assert schemas.problems("record", rec) == []
        if rec["outcome"] == "ok":
            assert case["text"] is not None, f"{agent} called {construct} ok: {case['what']}"
            assert rec["response_sha256"] == hashlib.sha256(case["text"].encode()).hexdigest(), \
                f"{agent} read {construct} wrong and called it ok"
            assert rec["response_chars"] == len(case["text"])
        else:
            err = rec["error"]
            assert err["client"] and err["message"], rec  # names the client and the cause
            if case["text"] is None:
                assert err["kind"] == case["kind"], err
    if own_process:
        assert stats.exit_code == (0 if all(r["outcome"] == "ok" for r in records) else 1), stats.stderr_tail


@pytest.mark.parametrize("construct", list(CORPUS))
@pytest.mark.parametrize("agent", agents.AGENTS)
def test_each_client_reads_the_construct_or_names_its_failure(corpus, agent, construct):
    _check(CORPUS[construct], agent, construct, *corpus[construct, agent])


@pytest.mark.parametrize("construct", list(SSE_CORPUS))
@pytest.mark.parametrize("agent", agents.AGENTS)
def test_each_client_reads_the_sse_construct_or_names_its_failure(sse_corpus, agent, construct):
    stats, records = sse_corpus[construct, agent]
    _check(SSE_CORPUS[construct], agent, construct, stats, records, own_process=False)
    assert stats.exit_code == 1, stats.stderr_tail  # the corpus holds failures: not every run ended ok
    for rec in records:  # /v1: no server durations, whatever the stream
        assert all(rec[f] is None for f in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"))
        if rec["outcome"] == "ok":
            assert rec["eval_count"] == 2 and rec["done_reason"] == "length"  # the usage event's count


@pytest.mark.parametrize("construct", [c for c, case in SSE_CORPUS.items() if case["text"] is not None])
@pytest.mark.parametrize("agent", agents.AGENTS)
def test_every_client_reads_every_legal_sse_construct(sse_corpus, agent, construct):
    """SSE has one spec and every client here follows it (the SDK's decoder, eventsource-stream,
    the null client's few lines): each legal construct reads ok in every run, in all three."""
    recs = sse_corpus[construct, agent][1]
    assert all(r["outcome"] == "ok" for r in recs), recs[0]["error"]


@pytest.mark.parametrize("construct", [c for c, case in CORPUS.items() if case["text"] is not None])
@pytest.mark.parametrize("agent", ["rust", "null"])
def test_our_own_parsers_read_every_legal_construct(corpus, agent, construct):
    """The Rust agent and the null client split lines at b'\\n' only and decode whole lines:
    every legal construct reads ok, in every run."""
    assert all(r["outcome"] == "ok" for r in corpus[construct, agent][1]), corpus[construct, agent][1][0]["error"]


@pytest.mark.parametrize("construct", [c for c, case in CORPUS.items() if case["text"] is not None])
def test_the_official_python_client_fails_only_where_its_line_splitter_cuts(corpus, construct):
    """ollama-python reads lines with httpx's iter_lines (str.splitlines): it cuts a line at raw
    U+0085, U+2028 and U+2029. That is a finding about the Python ecosystem (the agent keeps the
    official client); every other legal construct must read ok, and the cut must be named."""
    recs = corpus[construct, "python"][1]
    if construct in ("raw_u0085", "raw_u2028_u2029"):
        for r in recs:
            assert r["outcome"] != "ok" and r["error"]["kind"] == "bad_chunk", r["error"]
            assert "ollama-python" in r["error"]["client"] and "U+0085" in r["error"]["message"]
    else:
        assert all(r["outcome"] == "ok" for r in recs), recs[0]["error"]
