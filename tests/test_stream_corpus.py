"""Hostile but legal streams (issue 15, item 4), replayed byte for byte by a scripted server to
all three clients: each client reads a construct as the others do (the same answer text, to the
byte), or records a failure whose error names its client and says what it met. A client that
reads a stream wrong and calls it ok fails the test. The table of client × construct is printed
(`pytest tests/test_stream_corpus.py -s`)."""

from __future__ import annotations

import hashlib

import pytest

from langbench import schemas
from langbench.run import agents
from scripted import CORPUS, CorpusServer
from test_agents_contract import jobs_doc, run_agent

RUNS = 2  # the second run shows whether the client recovered (and reconnected) after the first


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("corpus")
    runs = [{"run_id": f"k{i}", "prompt": 0, "options": {"num_predict": 4}, "keep_alive": -1, "warmup": False}
            for i in range(RUNS)]
    out = {}
    for construct in CORPUS:
        for agent in agents.AGENTS:
            with CorpusServer(construct) as srv:
                d = tmp / f"{construct}-{agent}"
                d.mkdir()
                stats, records = run_agent(agent, srv.url, jobs_doc(model="scripted", runs=runs, timeout_s=1), d,
                                           timeout=60)
            out[construct, agent] = (stats, records)
    width = max(map(len, CORPUS)) + 2
    lines = [f"{'construct':<{width}}" + "".join(f"{a:<34}" for a in agents.AGENTS)]
    for construct in CORPUS:
        cells = []
        for agent in agents.AGENTS:
            recs = out[construct, agent][1]
            cells.append(", ".join("ok" if r["outcome"] == "ok" else f"{r['error']['kind']}" for r in recs))
        lines.append(f"{construct:<{width}}" + "".join(f"{c:<34}" for c in cells))
    print("\nstream corpus: client × construct (one entry per run)\n" + "\n".join(lines))
    for (construct, agent), (_, recs) in out.items():
        for r in recs:
            if r["outcome"] != "ok":
                print(f"  {construct} / {agent}: {r['error']['kind']} [{r['error'].get('client')}]: "
                      f"{r['error']['message'][:220]}")
    return out


@pytest.mark.parametrize("construct", list(CORPUS))
@pytest.mark.parametrize("agent", agents.AGENTS)
def test_each_client_reads_the_construct_or_names_its_failure(corpus, agent, construct):
    stats, records = corpus[construct, agent]
    case = CORPUS[construct]
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
    assert stats.exit_code == (0 if all(r["outcome"] == "ok" for r in records) else 1), stats.stderr_tail


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
