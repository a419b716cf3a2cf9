"""Per-chunk lag against the server's send stamps, the send delay before them, and `capture: true`
(DESIGN.md, "The replay server", "Sessions at scale"), against tests/scripted.py's StampedServer:
every chunk carries `t_sent_ns` and its request's `t_arrival_ns` on CLOCK_MONOTONIC. Counts and
shapes only, never speeds: the lag is present, as many as the stamped chunks, ordered and
non-negative, and small enough to show it is the same clock; the send delay (arrival − t0) is
non-negative and before the first chunk was parsed; the capture's kinds match the stream chunk for
chunk. The replay server's faults end as named outcomes in one process that goes on to its next
run. The Python clients' stamp reading (agent_jobs.Trace, created_stamps) is checked by hand too.

The Rust agent only for now: the Python agent and the null client gain the same fields in a
change of their own (add them to CLIENTS when it lands)."""

from __future__ import annotations

import json
import sys

import pytest

from langbench import paths, schemas
from scripted import ScriptedServer, StampedServer
from test_agents_contract import run_agent

CLIENTS = ["rust"]
SAME_CLOCK_MS = 5000  # a lag past this is another clock (the realtime clock, Instant's epoch), not a slow host

# shape → (outcome, error kind) every client must record
OUTCOMES = {"tokens": ("ok", None), "tool": ("ok", None), "empty": ("ok", None),
            "disconnect": ("truncated", "stream_interrupted"), "no_done": ("truncated", "no_done"),
            "error": ("truncated", "server_error"), "bad_line": ("truncated", "bad_chunk"),
            "stall": ("truncated", "timeout")}
# the stall last: the client's 1 s timeout; an empty stream between others, so a later run shows it did no harm
API_SEQUENCE = ["tokens", "empty", "tokens", "disconnect", "no_done", "error", "bad_line", "empty", "tokens", "stall"]
V1_SEQUENCE = ["tokens", "tool", "empty", "disconnect", "no_done", "error", "bad_line", "empty", "tokens", "stall"]


def request_doc(endpoint: str, sequence: list[str], **extra) -> dict:
    chat = endpoint in ("chat", "openai-chat")
    runs = [{"run_id": f"{shape}.{i}", "prompt": 0, "options": {}, "keep_alive": -1, "warmup": False}
            for i, shape in enumerate(sequence)]
    return {"schema_version": 1, "model": "scripted", "endpoint": endpoint, "timeout_s": 1,
            "prompts": [[{"role": "user", "content": "go"}]] if chat else ["go"], "runs": runs, **extra}


def check_lag(rec: dict, stamped: int) -> None:
    lag = rec["lag_ms"]
    if stamped == 0:
        assert lag is None
        return
    assert lag["n"] == stamped, rec["run_id"]
    assert 0 <= lag["first"] <= lag["max"] < SAME_CLOCK_MS
    assert 0 <= lag["p50"] <= lag["p99"] <= lag["max"]
    # t0 to the server's having the whole request: the same clock, before any chunk was parsed
    assert lag["send"] is not None and 0 <= lag["send"] < SAME_CLOCK_MS, rec["run_id"]
    if "capture" in rec:
        assert lag["send"] * 1e3 <= rec["capture"]["t_us"][0] + 1  # t_us: whole µs from t0


def check_capture(rec: dict, kinds: str) -> None:
    cap = rec["capture"]
    assert cap["kinds"] == kinds, rec["run_id"]
    assert len(cap["t_us"]) == len(cap["bytes"]) == len(cap["text"]) == len(kinds)
    assert cap["t_us"] == sorted(cap["t_us"]) and all(t >= 0 for t in cap["t_us"])
    assert all(b > 0 for b in cap["bytes"])
    for kind, text in zip(kinds, cap["text"]):
        if kind in "due":
            assert text == ""
        elif kind == "c":
            assert isinstance(json.loads(text), list)
        else:
            assert text
    # chunks counts the token-carrying ones: the capture's t, a and c entries
    assert rec["chunks"] == sum(k in "tac" for k in kinds)


def run_sequence(agent: str, tmp_path, endpoint: str, sequence: list[str], kinds: dict) -> list[dict]:
    with StampedServer(sequence) as srv:
        stats, records = run_agent(agent, srv.url, request_doc(endpoint, sequence, capture=True), tmp_path, timeout=120)
    assert [r["run_id"].split(".")[0] for r in records] == sequence, stats.stderr_tail  # every later run still ran
    assert stats.exit_code == 1  # failures on purpose
    for rec, shape in zip(records, sequence):
        assert schemas.problems("record", rec) == []
        outcome, kind = OUTCOMES[shape]
        assert rec["outcome"] == outcome, (shape, rec["error"])
        assert (rec["error"] or {}).get("kind") == kind, (shape, rec["error"])
        check_capture(rec, kinds[shape])
        check_lag(rec, len(kinds[shape]))  # every captured chunk was stamped
        if shape == "empty":
            assert rec["chunks"] == 0 and rec["ttft_ms"] is None and rec["done_reason"] == "stop"
    return records


@pytest.mark.parametrize("agent", CLIENTS)
@pytest.mark.parametrize("endpoint", ["generate", "chat"])
def test_api_lag_capture_and_faults(agent, endpoint, tmp_path):
    records = run_sequence(agent, tmp_path, endpoint, API_SEQUENCE, StampedServer.KINDS_API)
    tokens = records[0]
    assert tokens["capture"]["text"] == ["h ", "a ", "b ", "c", ""]
    assert tokens["chunks_thinking"] == 1 and tokens["chunks_answer"] == 3


@pytest.mark.parametrize("agent", CLIENTS)
def test_v1_lag_capture_and_faults(agent, tmp_path):
    records = run_sequence(agent, tmp_path, "openai-chat", V1_SEQUENCE, StampedServer.KINDS_V1)
    tokens, tool = records[0], records[1]
    assert tokens["capture"]["text"][1:5] == ["h ", "a ", "b ", "c"]
    # each c entry is that delta's tool_calls as sent
    calls = [json.loads(t) for t in tool["capture"]["text"][1:4]]
    assert calls[0][0]["function"]["name"] == "add"
    assert "".join(c[0]["function"]["arguments"] for c in calls) == '{"a": 1, "b": 2}'
    assert tool["done_reason"] == "tool_calls"


@pytest.mark.parametrize("agent", CLIENTS)
def test_agent_turns_carry_lag_and_capture(agent, tmp_path):
    doc = {**request_doc("chat", ["task"]), "workload": "agent", "actions": "native", "tools": ["add", "finish"],
           "capture": True, "timeout_s": 30}
    doc["runs"][0]["max_turns"] = 4
    with StampedServer(["tool", "finish"], by_turn=True) as srv:
        stats, records = run_agent(agent, srv.url, doc, tmp_path, timeout=120)
    assert stats.exit_code == 0, stats.stderr_tail
    assert [r["turn"] for r in records] == [0, 1] and records[-1]["task_outcome"] == "finished"
    for rec, name, args in zip(records, ["add", "finish"], [{"a": 1, "b": 2}, {"answer": "3"}]):
        assert schemas.problems("record", rec) == []
        check_capture(rec, "cd")
        assert json.loads(rec["capture"]["text"][0]) == [{"name": name, "arguments": args}]
        check_lag(rec, 2)


@pytest.mark.parametrize("agent", CLIENTS)
def test_concurrent_sessions_carry_lag_without_capture(agent, tmp_path):
    doc = request_doc("generate", ["tokens"] * 6, streams=3, timeout_s=30)
    with StampedServer(["tokens"]) as srv:
        stats, records = run_agent(agent, srv.url, doc, tmp_path, timeout=120)
    assert stats.exit_code == 0, stats.stderr_tail
    assert len(records) == 6 and {r["stream"] for r in records} == {0, 1, 2}
    for rec in records:
        assert schemas.problems("record", rec) == []
        assert "capture" not in rec  # records stay as they were without capture: true
        check_lag(rec, len(StampedServer.KINDS_API["tokens"]))


# each reader of the stamps on each wire: ollama-python's `created_at` (python on /api's two
# response types), the openai SDK's extras (python on httpx, python-tuned on aiohttp), the
# hand-written parser on NDJSON and SSE (python-raw on asyncio, null on http.client)
PYTHON_READERS = [("python", "generate"), ("python", "chat"), ("python", "openai-chat"),
                  ("python-tuned", "openai-chat"), ("python-raw", "chat"), ("python-raw", "openai-chat"),
                  ("null", "generate"), ("null", "openai-chat")]


@pytest.mark.parametrize(("agent", "endpoint"), PYTHON_READERS)
def test_every_python_client_records_lag_and_send_delay(agent, endpoint, tmp_path):
    """The send delay through every Python reader of the stamps. Clean streams only: the faults'
    outcomes are test_api_lag_capture_and_faults'."""
    kinds = (StampedServer.KINDS_V1 if endpoint == "openai-chat" else StampedServer.KINDS_API)["tokens"]
    doc = request_doc(endpoint, ["tokens", "tokens"], capture=True, timeout_s=30)
    with StampedServer(["tokens"]) as srv:
        stats, records = run_agent(agent, srv.url, doc, tmp_path, timeout=120)
    assert stats.exit_code == 0, stats.stderr_tail
    assert len(records) == 2
    for rec in records:
        assert schemas.problems("record", rec) == []
        assert rec["capture"]["kinds"] == kinds  # its bytes are null through an SDK
        check_lag(rec, len(kinds))


def _agent_jobs():
    sys.path.insert(0, str(paths.AGENTS / "python"))
    import agent_jobs
    return agent_jobs


def test_python_clients_read_both_stamps_from_created_at_and_real_ollamas_time_as_none():
    aj = _agent_jobs()
    assert aj.created_stamps("5040000000/5031000000") == (5040000000, 5031000000)
    assert aj.created_stamps("5040000000") == (5040000000, None)  # a server that stamps its sends only
    for none in ("2026-01-01T00:00:00.123456789Z", "", None, "/5031000000", "1.5", "²/3", 5):
        assert aj.created_stamps(none) == (None, None), none
    assert aj.created_stamps("5040000000/x") == (5040000000, None)
    assert aj.stamp_of(7) == 7 and aj.stamp_of("7") == 7
    assert aj.stamp_of(True) is None and aj.stamp_of("²") is None and aj.stamp_of(7.0) is None


def test_the_python_trace_gives_send_as_arrival_less_t0_and_null_without_an_arrival():
    aj = _agent_jobs()
    t0 = 5_000_000_000
    t = aj.Trace(t0, keep=False)
    t.add(t0 + 41_000_000, "a", "x", None, t0 + 40_000_000, None)  # no arrival on this one: the next counts
    t.add(t0 + 43_000_000, "d", "", None, t0 + 42_000_000, t0 + 31_000_000)
    t.add(t0 + 44_000_000, "d", "", None, t0 + 43_500_000, t0 + 99_000_000)  # the first arrival stays
    lag = t.fields()["lag_ms"]
    assert list(lag) == ["send", "first", "p50", "p99", "max", "n"]  # the Rust agent's order
    assert lag["send"] == pytest.approx(31.0) and lag["first"] == pytest.approx(1.0) and lag["n"] == 3
    only_sent = aj.Trace(t0, keep=False)
    only_sent.add(t0 + 2_000_000, "a", "x", None, t0 + 1_000_000)
    assert only_sent.fields()["lag_ms"]["send"] is None
    assert aj.Trace(t0, keep=False).fields() == {"lag_ms": None}


@pytest.mark.parametrize("agent", CLIENTS)
def test_a_server_without_stamps_gives_null_lag(agent, tmp_path):
    with ScriptedServer(first_ms=5, gap_ms=2, tokens=3) as srv:
        stats, records = run_agent(agent, srv.url, request_doc("generate", ["plain"]), tmp_path, timeout=60)
    assert stats.exit_code == 0, stats.stderr_tail
    (rec,) = records
    assert rec["lag_ms"] is None and "capture" not in rec and schemas.problems("record", rec) == []
