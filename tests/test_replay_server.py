"""The replay server (agents/replay, DESIGN.md "The replay server"): its wire formats, its stamps,
its absolute schedule, token limits, faults on purpose and its refusals, against the built binary
on a hand-made profile (agents/replay/tests/profile.json). Timing asserts are ratios and
orderings that hold on a slow shared 2-core machine, never absolute speeds."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from langbench import paths
from langbench.run import provision

PROFILE = paths.REPLAY_CRATE / "tests" / "profile.json"
TURN_MESSAGES = [{"role": "user", "content": "add 1 and 2"}]  # the profile's one captured turn
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replay_bin() -> Path:
    return provision.ensure_replay_server()


class Replay:
    """The server on a free loopback port for the length of a `with`."""

    def __init__(self, binary: Path, *args: str, profile: Path = PROFILE):
        self.cmd = [str(binary), "--profile", str(profile), *args]

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("langbench-replay listening on http://127.0.0.1:"):
            self.__exit__()
            raise AssertionError(f"no listening line: {line!r}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path: str) -> tuple[int, dict]:
        c = self.conn()
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, json.loads(r.read())
        finally:
            c.close()

    def post(self, path: str, body, headers: dict | None = None, timeout: float = 10):
        """(response, [(receive monotonic ns, raw line)]) read line by line as it arrives."""
        c = self.conn(timeout)
        try:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            c.request("POST", path, data, {"Content-Type": "application/json", **(headers or {})})
            r = c.getresponse()
            lines = []
            while line := r.readline():
                lines.append((time.monotonic_ns(), line))
            return r, lines
        finally:
            c.close()

    def stats(self, reset: bool = False) -> dict:
        return self.get("/replay/stats" + ("?reset=1" if reset else ""))[1]


def ndjson(lines) -> list[dict]:
    return [json.loads(raw) for _, raw in lines]


def sse(lines) -> list:
    """The data: payloads, JSON decoded ([DONE] kept as the string)."""
    out = []
    for _, raw in lines:
        raw = raw.decode().rstrip("\n")
        if raw.startswith("data: "):
            body = raw[len("data: "):]
            out.append(body if body == "[DONE]" else json.loads(body))
        else:
            assert raw == "", raw
    return out


@pytest.fixture(scope="module")
def fast(replay_bin):
    """Ten times the captured rate: 4 ms to the first chunk, 2 ms between chunks."""
    with Replay(replay_bin, "--time-scale", "10") as srv:
        yield srv


CHAT = {"model": "gemma3:270m", "messages": [{"role": "user", "content": "hi"}]}


def test_side_endpoints_answer_as_ollama_and_openai_do(fast):
    assert fast.get("/api/version") == (200, {"version": "0.11.4", "replay": True})
    assert fast.get("/health") == (200, {"status": "ok"})
    status, tags = fast.get("/api/tags")
    assert status == 200 and [m["name"] for m in tags["models"]] == ["gemma3:270m"]
    assert tags["models"][0]["details"]["family"] == "gemma3"
    r, lines = fast.post("/api/show", {"model": "gemma3:270m"})
    assert r.status == 200 and json.loads(b"".join(raw for _, raw in lines))["details"]["family"] == "gemma3"
    assert fast.post("/api/show", {"model": "nope"})[0].status == 404
    status, models = fast.get("/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["gemma3:270m"]
    status, err = fast.get("/nope")
    assert status == 404 and "error" in err


def test_a_bad_body_is_a_400_with_a_json_error(fast):
    for path, body in [("/api/chat", b"{not json"), ("/api/chat", {"messages": "x"}), ("/v1/completions", b"[1]")]:
        r, lines = fast.post(path, body)
        assert r.status == 400
        assert "error" in json.loads(b"".join(raw for _, raw in lines))
    r, _ = fast.post("/api/chat", CHAT, {"X-Replay-Fault": "boom"})
    assert r.status == 400


def test_api_chat_streams_ollama_chunks_stamped_on_the_monotonic_clock(fast):
    sent = time.monotonic_ns()
    r, lines = fast.post("/api/chat", CHAT)
    assert r.status == 200 and r.getheader("Content-Type") == "application/x-ndjson"
    chunks = ndjson(lines)
    assert chunks[0]["message"] == {"role": "assistant", "content": "", "thinking": 'hmm "quoted"\n'}
    assert [c["message"]["content"] for c in chunks[1:-1]] == ["Hello", ", ", "wörld ✓", "!"]
    assert all(c["done"] is False and c["model"] == "gemma3:270m" for c in chunks[:-1])
    done = chunks[-1]
    assert done["done"] is True and done["done_reason"] == "stop" and done["eval_count"] == 5
    assert done["prompt_eval_count"] == 74 and done["message"] == {"role": "assistant", "content": ""}
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(done[key], int)
    stamps = [c["t_sent_ns"] for c in chunks]
    # created_at carries both stamps, the one field ollama-python keeps: "<t_sent_ns>/<t_arrival_ns>"
    assert all(c["created_at"] == f"{c['t_sent_ns']}/{c['t_arrival_ns']}" for c in chunks)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for (received, _), stamp in zip(lines, stamps):
        assert sent < stamp <= received < stamp + 5e9  # the same clock as time.monotonic_ns()
    # the arrival: one instant per stream, after the request was sent, the schedule's origin (ttft 40 ms / 10)
    (arrival,) = {c["t_arrival_ns"] for c in chunks}
    assert sent < arrival and arrival + 4e6 <= stamps[0]


def test_api_generate_streams_and_answers_once_without_stream(fast):
    r, lines = fast.post("/api/generate", {"prompt": "count"})
    chunks = ndjson(lines)
    assert [c["response"] for c in chunks] == ["one", " two", " three", " four", ""]
    assert chunks[-1]["done"] is True and chunks[-1]["eval_count"] == 4
    r, lines = fast.post("/api/generate", {"prompt": "count", "stream": False})
    assert r.getheader("Content-Type").startswith("application/json")
    [whole] = ndjson(lines)
    assert whole["response"] == "one two three four" and whole["done"] is True
    assert whole["created_at"] == f"{whole['t_sent_ns']}/{whole['t_arrival_ns']}"
    r, lines = fast.post("/api/chat", {**CHAT, "stream": False})
    [whole] = ndjson(lines)
    assert whole["message"] == {"role": "assistant", "content": "Hello, wörld ✓!", "thinking": 'hmm "quoted"\n'}


def test_v1_chat_streams_sse_with_role_chunk_finish_usage_and_done(fast):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    r, lines = fast.post("/v1/chat/completions", body)
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    events = sse(lines)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and "t_sent_ns" in c for c in chunks)
    assert len({c["t_arrival_ns"] for c in chunks}) == 1 and chunks[0]["t_arrival_ns"] < chunks[0]["t_sent_ns"]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "ABCD"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    usage = [c for c in chunks if not c["choices"]]
    assert len(usage) == 1 and usage[0]["usage"] == {"prompt_tokens": 20, "completion_tokens": 4, "total_tokens": 24}
    stamps = [c["t_sent_ns"] for c in chunks]
    assert stamps == sorted(stamps)
    # no usage unless asked
    events = sse(fast.post("/v1/chat/completions", {**CHAT, "stream": True})[1])
    assert events[-1] == "[DONE]" and all(c["choices"] for c in events[:-1])


def test_v1_completions_and_non_streaming_objects(fast):
    events = sse(fast.post("/v1/completions", {"prompt": "x", "stream": True})[1])
    assert "".join(c["choices"][0]["text"] for c in events[:-1]) == "xyzw"
    assert events[-2]["choices"][0]["finish_reason"] == "stop" and events[-1] == "[DONE]"
    r, lines = fast.post("/v1/completions", {"prompt": "x"})  # OpenAI's default: no stream
    [whole] = ndjson(lines)
    assert whole["object"] == "text_completion" and whole["choices"][0]["text"] == "xyzw"
    assert whole["usage"]["completion_tokens"] == 4
    [whole] = ndjson(fast.post("/v1/chat/completions", CHAT)[1])
    assert whole["object"] == "chat.completion" and whole["choices"][0]["message"]["content"] == "ABCD"


def test_token_limit_cuts_or_repeats_the_answer_and_says_length(fast):
    chunks = ndjson(fast.post("/api/chat", {**CHAT, "options": {"num_predict": 2}})[1])
    assert len(chunks) == 3 and chunks[-1]["done_reason"] == "length" and chunks[-1]["eval_count"] == 2
    chunks = ndjson(fast.post("/api/chat", {**CHAT, "options": {"num_predict": 9}})[1])
    texts = [c["message"]["content"] for c in chunks[1:-1]]
    assert texts == ["Hello", ", ", "wörld ✓", "!", "Hello", ", ", "wörld ✓", "!"]
    assert chunks[-1]["done_reason"] == "length" and chunks[-1]["eval_count"] == 9
    events = sse(fast.post("/v1/chat/completions", {**CHAT, "stream": True, "max_tokens": 2,
                                                     "stream_options": {"include_usage": True}})[1])
    assert [c["choices"][0]["finish_reason"] for c in events[:-1] if c["choices"]][-1] == "length"
    assert [c["usage"]["completion_tokens"] for c in events[:-1] if not c["choices"]] == [2]


def test_a_captured_turn_replays_its_own_content(fast):
    chunks = ndjson(fast.post("/api/chat", {"model": "gemma3:270m", "messages": TURN_MESSAGES})[1])
    assert chunks[0]["message"]["tool_calls"] == [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]
    assert chunks[-1]["done"] is True and chunks[-1]["prompt_eval_count"] == 90
    events = sse(fast.post("/v1/chat/completions", {"messages": TURN_MESSAGES, "stream": True})[1])
    call = events[0]["choices"][0]["delta"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "add"
    assert json.loads(call["function"]["arguments"]) == {"a": 1, "b": 2}
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_schedule_is_absolute_and_scales_with_time_scale(replay_bin):
    """Each chunk leaves no earlier than arrival + (ttft + gaps) / time_scale; twice the scale
    takes about half the time; the chunks' spacing keeps no drift from a late one."""
    spans = {}
    for scale in ("1", "2"):
        with Replay(replay_bin, "--time-scale", scale) as srv:
            sent = time.monotonic_ns()
            chunks = ndjson(srv.post("/api/generate", {"prompt": "count", "options": {"num_predict": 12}})[1])
            stamps = [c["t_sent_ns"] for c in chunks]
            k = float(scale)
            for i, stamp in enumerate(stamps):  # ttft 40 ms, gaps 20 ms (the generate donor)
                assert stamp - sent >= (40e6 + 20e6 * i) / k
            spans[scale] = stamps[-1] - stamps[0]
            assert spans[scale] < 12 * 20e6 / k + 40e6  # the schedule's 220 ms / k, late by less than 40 ms at the end
    assert 1.6 < spans["1"] / spans["2"] < 2.4


FAULT_KINDS = ("disconnect", "no_done", "stall", "error_after_200", "malformed", "empty")


def raw_exchange(srv: Replay, path: str, body: dict, headers: dict) -> bytes:
    """The response's bytes as they came off the socket, until the server closed it."""
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n{head}\r\n".encode() + data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


def test_disconnect_cuts_the_connection_mid_stream(fast):
    got = raw_exchange(fast, "/api/chat", {**CHAT, "options": {"num_predict": 8}}, {"X-Replay-Fault": "disconnect"})
    assert got.startswith(b"HTTP/1.1 200")
    assert not got.endswith(b"0\r\n\r\n")  # no chunked terminator: the body never ends cleanly
    assert 2 <= got.count(b'"done":false') <= 7 and b'"done":true' not in got
    clean = raw_exchange(fast, "/api/chat", {**CHAT, "options": {"num_predict": 8}}, {"Connection": "close"})
    assert clean.endswith(b"0\r\n\r\n")


def test_no_done_ends_the_body_cleanly_without_the_done_line(fast):
    chunks = ndjson(fast.post("/api/chat", CHAT, {"X-Replay-Fault": "no_done"})[1])
    assert len(chunks) == 5 and not any(c["done"] for c in chunks)
    events = sse(fast.post("/v1/chat/completions", {**CHAT, "stream": True}, {"X-Replay-Fault": "no_done"})[1])
    assert "[DONE]" not in events and not any(c["choices"][0]["finish_reason"] for c in events)


def test_error_after_200_sends_an_error_line_then_ends(fast):
    r, lines = fast.post("/api/chat", CHAT, {"X-Replay-Fault": "error_after_200"})
    chunks = ndjson(lines)
    assert r.status == 200 and chunks[-1] == {"error": "replay: injected error"}
    assert 1 <= len(chunks) - 1 <= 5 and not any(c.get("done") for c in chunks)
    events = sse(fast.post("/v1/chat/completions", {**CHAT, "stream": True}, {"X-Replay-Fault": "error_after_200"})[1])
    assert events[-1] == {"error": {"message": "replay: injected error", "type": "server_error"}}


def test_malformed_sends_one_line_that_is_not_json_and_goes_on(fast):
    r, lines = fast.post("/api/chat", CHAT, {"X-Replay-Fault": "malformed"})
    bad = [raw for _, raw in lines if not raw.startswith(b'{"model":"')]
    assert bad == [b'{"model": "\n']
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0])
    good = [json.loads(raw) for _, raw in lines if raw not in bad]
    assert len(good) == 6 and good[-1]["done"] is True


def test_empty_is_only_the_done_line(fast):
    [done] = ndjson(fast.post("/api/chat", CHAT, {"X-Replay-Fault": "empty"})[1])
    assert done["done"] is True and done["eval_count"] == 0 and done["message"]["content"] == ""
    events = sse(fast.post("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                           {"X-Replay-Fault": "empty"})[1])
    assert events[0]["choices"][0]["finish_reason"] == "stop" and events[0]["choices"][0]["delta"]["content"] == ""
    assert events[1]["usage"]["completion_tokens"] == 0 and events[2] == "[DONE]" and len(events) == 3


def test_a_stall_holds_until_the_client_gives_up_and_then_frees_the_stream(fast):
    before = fast.stats()["in_flight"]
    with pytest.raises(TimeoutError):
        fast.post("/api/chat", CHAT, {"X-Replay-Fault": "stall"}, timeout=0.5)
    deadline = time.monotonic() + 5
    while fast.stats()["in_flight"] > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fast.stats()["in_flight"] == before


def test_faults_are_counted_and_seeded_shares_repeat_with_the_seed(replay_bin, tmp_path):
    draws = []
    for run in range(2):
        out = tmp_path / f"late{run}.jsonl"
        with Replay(replay_bin, "--time-scale", "100", "--seed", "7", "--lateness-out", str(out),
                    "--faults", json.dumps({"empty": 0.3, "no_done": 0.3})) as srv:
            kinds = []
            for _ in range(20):
                chunks = ndjson(srv.post("/api/generate", {"prompt": "count"})[1])
                kinds.append("empty" if len(chunks) == 1 else "no_done" if not chunks[-1]["done"] else None)
            stats = srv.stats(reset=True)
            assert stats["faults"]["empty"] == kinds.count("empty") and stats["faults"]["no_done"] == kinds.count("no_done")
            assert stats["streams"] == 20 and stats["chunks"] > 0 and stats["time_scale"] == 100
            assert srv.stats()["streams"] == 0  # reset
            assert srv.stop() == 0
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [line["fault"] for line in lines] == kinds
        assert all(line["end"] == ("complete" if line["fault"] is None else "fault") for line in lines)
        draws.append(kinds)
    assert draws[0] == draws[1] and 0 < draws[0].count(None) < 20


def test_a_client_that_leaves_frees_its_stream_and_the_lateness_file_says_so(replay_bin, tmp_path):
    out = tmp_path / "late.jsonl"
    with Replay(replay_bin, "--lateness-out", str(out)) as srv:
        c = srv.conn()
        c.request("POST", "/api/generate", json.dumps({"prompt": "count", "options": {"num_predict": 1000}}))
        r = c.getresponse()
        assert json.loads(r.readline())["done"] is False
        c.sock.close()
        c.close()
        deadline = time.monotonic() + 5
        while srv.stats()["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.stats()["in_flight"] == 0
        assert srv.stop() == 0  # SIGTERM: flushed, exit 0
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["end"] == "client_closed" and line["path"] == "/api/generate" and line["donor"] == "gen-c1"
    assert 1 <= line["chunks"] < 1000 and set(line["late_us"]) == {"p50", "p99", "max"}
    assert line["fault"] is None and isinstance(line["arrival_ns"], int)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3"])
def test_a_host_that_is_not_loopback_is_refused_with_exit_2(replay_bin, host):
    done = subprocess.run([str(replay_bin), "--profile", str(PROFILE), "--host", host], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "loopback" in done.stderr and done.stdout == ""


def test_a_bad_profile_or_argument_is_one_line_and_exit_2(replay_bin, tmp_path):
    bad = tmp_path / "bad.json"
    cases = {"kind": (json.dumps({"schema_version": 1, "kind": "other", "donors": []}), []),
             "schema_version": (json.dumps({"schema_version": 2, "kind": "langbench-replay-profile", "donors": []}), []),
             "no donors": (json.dumps({"schema_version": 1, "kind": "langbench-replay-profile", "donors": []}), []),
             "not a replay profile": ("{", []),
             "unknown kind": (PROFILE.read_text(), ["--faults", '{"boom": 0.1}']),
             "time-scale": (PROFILE.read_text(), ["--time-scale", "0"])}
    for cause, (text, args) in cases.items():
        bad.write_text(text)
        done = subprocess.run([str(replay_bin), "--profile", str(bad), *args], capture_output=True, text=True, timeout=10)
        assert done.returncode == 2, cause
        assert cause in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = subprocess.run([str(replay_bin), "--profile", str(tmp_path / "missing.json")], capture_output=True, text=True, timeout=10)
    assert done.returncode == 2 and "missing.json" in done.stderr


def test_workspace_digest_covers_both_crates_and_the_lock():
    files = {f.relative_to(paths.AGENTS).as_posix() for f in paths._workspace_sources(paths.AGENTS)}
    assert {"Cargo.toml", "Cargo.lock", "rust/Cargo.toml", "rust/src/main.rs", "replay/Cargo.toml",
            "replay/src/main.rs", "replay/tests/profile.json"} <= files
    assert not any(f.startswith(("rust/target/", "replay/target/")) for f in files)
    assert paths.replay_server_bin().parent == paths.rust_agent_bin().parent
    assert os.path.basename(paths.replay_server_bin()) == "langbench-replay"
