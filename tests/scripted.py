"""Scripted Ollama streams with known delays and known bytes, for what the real server cannot
be made to do on demand (DESIGN.md: a scripted server only for known delays, error paths and
constructs the real server can't produce).

ScriptedServer answers /api/generate and /api/chat with the same NDJSON stream: `think`
thinking chunks, then `tokens` answer chunks, one `gap_ms` apart after a first chunk `first_ms`
after the request has been read, then the `done` line one gap later; /v1/completions gets the
same chunks on the same schedule as Ollama's Server-Sent Events (for the peers' load generator,
which speaks only OpenAI's API; no thinking there). Each chunk is sent at an
absolute deadline (so that a late wake-up does not shift the ones after it) on a socket with
Nagle off. The `done` line carries server durations that say the whole `first_ms` was prompt
evaluation, so a client's overhead over this server is its TTFT − first_ms.

CorpusServer replays one hostile but legal stream (CORPUS: NDJSON on /api; SSE_CORPUS: Server-Sent
Events on /v1) byte for byte, write by write.
"""

from __future__ import annotations

import json
import socket
import threading
import time

from loopback import LoopbackServer, QuietHandler


class NoDelayHandler(QuietHandler):
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_chunk(wfile, data: bytes) -> None:
    """One HTTP/1.1 chunk, flushed: one TCP write on a socket with Nagle off."""
    wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    wfile.flush()


class ScriptedServer(LoopbackServer):
    def __init__(self, first_ms: float = 200.0, gap_ms: float = 20.0, tokens: int = 12, think: int = 0):
        self.first_ms, self.gap_ms, self.tokens, self.think = first_ms, gap_ms, tokens, think
        self.sent: list[list[float]] = []  # per request: perf_counter of each chunk's send
        self.paths: list[str] = []
        self.bodies: list[dict] = []
        script = self

        class Handler(NoDelayHandler):
            def do_GET(self):  # what another tool asks before it measures (issue 43's peers)
                script.answer_json(self, IDENTITY.get(self.path))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/api/show":  # chimeraforge's model check
                    return script.answer_json(self, {"details": {"format": "scripted"}, "capabilities": ["completion"]})
                script.paths.append(self.path)
                script.bodies.append(json.loads(body))
                chat = self.path == "/api/chat"
                sse = self.path == "/v1/completions"
                start = time.perf_counter()
                if script.bodies[-1].get("stream") is False:  # the whole answer once, when the done line would go
                    if sse:
                        return script.answer_json(self, None)
                    return script.answer_whole(self, start, chat)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                times = []
                n = script.think + script.tokens
                usage = bool((script.bodies[-1].get("stream_options") or {}).get("include_usage"))
                for k in range(n + 1):
                    line = (script.event(k, k == n, usage) if sse else  # as Ollama's /v1 writes it
                            json.dumps(script.chunk(k, k == n, chat), separators=(",", ":")).encode() + b"\n")
                    deadline = start + (script.first_ms + k * script.gap_ms) / 1e3
                    while (left := deadline - time.perf_counter()) > 0:
                        time.sleep(left)  # no spin: on 2 cores it would take the client's CPU
                    send_chunk(self.wfile, line)
                    times.append(time.perf_counter())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                script.sent.append(times)

        super().__init__(Handler)

    @staticmethod
    def answer_json(handler, doc) -> None:
        """A JSON answer (404 with Ollama's error body where `doc` is None)."""
        data = json.dumps(doc if doc is not None else {"error": "not found"}).encode()
        handler.send_response(200 if doc is not None else 404)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def answer_whole(self, handler, start: float, chat: bool) -> None:
        """`stream: false`: one JSON body, the answer text joined, written when the streamed done
        line would have been (first_ms + n gaps after the request was read), with its durations."""
        n = self.think + self.tokens
        doc = self.chunk(n, True, chat)
        text = "".join(f"t{k} " for k in range(self.think, n))
        if chat:
            doc["message"]["content"] = text
        else:
            doc["response"] = text
        deadline = start + (self.first_ms + n * self.gap_ms) / 1e3
        while (left := deadline - time.perf_counter()) > 0:
            time.sleep(left)
        self.answer_json(handler, doc)
        self.sent.append([time.perf_counter()])

    def event(self, k: int, done: bool, usage: bool) -> bytes:
        """Chunk k on /v1/completions as Ollama 0.11.4 writes it (openai.go CompleteWriter): one
        `data:` event per generate line, each with zero usage where the request asked for usage;
        after the done line's event, the usage event (no choices) and `[DONE]`, in one write."""
        doc = self.chunk(k, done)
        reason = doc.get("done_reason")
        event = {"id": "cmpl-scripted", "object": "text_completion", "created": 1767225600,
                 "choices": [{"text": doc["response"], "index": 0, "finish_reason": reason}],
                 "model": "scripted", "system_fingerprint": "fp_ollama"}
        zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        data = b"data: %s\n\n" % json.dumps({**event, **({"usage": zero} if usage else {})},
                                            separators=(",", ":")).encode()
        if done:
            if usage:
                counts = {"prompt_tokens": doc["prompt_eval_count"], "completion_tokens": doc["eval_count"],
                          "total_tokens": doc["prompt_eval_count"] + doc["eval_count"]}
                data += b"data: %s\n\n" % json.dumps({**event, "choices": [], "usage": counts},
                                                     separators=(",", ":")).encode()
            data += b"data: [DONE]\n\n"
        return data

    def chunk(self, k: int, done: bool, chat: bool = False) -> dict:
        base = {"model": "scripted", "created_at": "2026-01-01T00:00:00Z"}
        thinking = k < self.think and not done
        text = "" if done or thinking else f"t{k} "
        if chat:
            msg = {"role": "assistant", "content": text, **({"thinking": f"h{k} "} if thinking else {})}
            base["message"] = msg
        else:
            base["response"] = text
            if thinking:
                base["thinking"] = f"h{k} "
        base["done"] = done
        if not done:
            return base
        ns, n = 1_000_000, self.think + self.tokens
        return {**base, "done_reason": "length",
                "total_duration": int((self.first_ms + n * self.gap_ms) * ns),
                "load_duration": 0, "prompt_eval_count": 1,
                "prompt_eval_duration": int(self.first_ms * ns), "eval_count": n,
                "eval_duration": int(n * self.gap_ms * ns)}


# GET answers that identify the scripted server as Ollama does, for tools that check first.
IDENTITY = {"/": "Ollama is running", "/api/version": {"version": "0.0.0-scripted"},
            "/api/tags": {"models": [{"name": "scripted", "model": "scripted"}]},
            "/v1/models": {"object": "list", "data": [{"id": "scripted", "object": "model", "created": 1767225600,
                                                       "owned_by": "library"}]}}


def _line(response: str, done: bool = False, **extra) -> bytes:
    """A generate line as Go's encoder writes it, except that non-ASCII is written raw (Go does
    the same for everything but U+2028/U+2029, which it escapes: writing those raw is still
    legal JSON, as another server may)."""
    doc = {"model": "scripted", "created_at": "2026-01-01T00:00:00Z", "response": response, "done": done, **extra}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _done(n: int) -> bytes:
    return _line("", True, done_reason="stop", total_duration=n * 1_000_000, load_duration=0,
                 prompt_eval_count=1, prompt_eval_duration=1_000_000, eval_count=n, eval_duration=n * 1_000_000)


def _plain(pieces: list[str]) -> list[bytes]:
    """One write per line: the pieces as chunks, then the done line."""
    return [_line(p) for p in pieces] + [_done(len(pieces))]


_EURO = "€".encode()  # 3 bytes: split after the first
_LONG = "x" * 1_000_000

# construct → (what it is, the HTTP chunks written one by one, each after `pause` seconds, and
# the answer text a client that reads it must get; None: a failure is the right reading).
CORPUS: dict[str, dict] = {
    "raw_u0085": {"what": "a response holding a raw U+0085 (NEL), which Go's encoder does not escape",
                  "writes": _plain(["a\u0085b", "c"]), "text": "a\u0085bc"},
    "raw_u2028_u2029": {"what": "raw U+2028 and U+2029 inside strings (legal JSON; Go escapes them, other servers need not)",
                        "writes": _plain(["a\u2028b", "c\u2029d"]), "text": "a\u2028bc\u2029d"},
    "utf8_split": {"what": "a UTF-8 character (€, 3 bytes) split across two HTTP chunks and TCP writes",
                   "writes": [(w := _line("1€2"))[: w.index(_EURO) + 1], w[w.index(_EURO) + 1:], _line("3"), _done(2)],
                   "pause": 0.02, "text": "1€23"},
    "line_split": {"what": "one JSON line split across two TCP writes 20 ms apart",
                   "writes": [(w := _line("ab"))[:17], w[17:], _line("cd"), _done(2)], "pause": 0.02,
                   "text": "abcd"},
    "long_line": {"what": "a 1 MB line (one chunk of one million characters)",
                  "writes": _plain([_LONG, "y"]), "text": _LONG + "y"},
    "error_after_200": {"what": 'an {"error": ...} line after HTTP 200 and two chunks',
                        "writes": [_line("a"), _line("b"), json.dumps({"error": "scripted failure"}).encode() + b"\n"],
                        "text": None, "kind": "server_error"},
    "stall": {"what": "a stream that stops sending after two chunks (longer than the client's 1 s timeout)",
              "writes": [_line("a"), _line("b")], "stall_s": 3.0, "text": None, "kind": "timeout"},
}


def _event(doc: dict, end: bytes = b"\n") -> bytes:
    """One SSE event as Ollama's /v1 writes it (`data: JSON` and a blank line), `end` its line end."""
    return b"data: " + json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + end + end


def _delta(text: str) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]}


def _finish(n: int) -> list[dict]:
    """The finish_reason chunk, then the usage event (stream_options.include_usage)."""
    end = {**_delta(""), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": "length"}]}
    return [end, {**_delta(""), "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": n,
                                                         "total_tokens": n + 1}}]


def _sse(pieces: list[str], end: bytes = b"\n", done: bool = True, first: int = 0) -> list[bytes]:
    """The events of `pieces` (after `first` pieces written otherwise), finish, usage, [DONE]."""
    writes = [_event(d, end) for d in [*map(_delta, pieces), *_finish(first + len(pieces))]]
    return writes + ([b"data: [DONE]" + end + end] if done else [])


_ERROR = {"error": {"message": "scripted failure", "type": "server_error"}}

# The /v1 corpus (openai-chat): construct → as CORPUS, plus `status` (an HTTP error status with
# its JSON body) where the server answers so.
SSE_CORPUS: dict[str, dict] = {
    "sse_error_after_200": {"what": 'a data: {"error": ...} event after HTTP 200 and two chunks',
                            "writes": [_event(_delta("a")), _event(_delta("b")), _event(_ERROR)],
                            "text": None, "kind": "server_error"},
    "sse_http_500_json": {"what": "HTTP 500 with a JSON error body ({\"error\": {\"message\": ...}})",
                          "status": 500, "body": json.dumps(_ERROR).encode(), "text": None, "kind": "http_500"},
    "sse_no_done": {"what": "a stream that ends after its finish_reason and usage without data: [DONE]",
                    "writes": _sse(["ab", "cd"], done=False), "text": "abcd"},
    "sse_comments_and_event_lines": {"what": "comment lines (': ping') and `event:`/`id:` fields between events",
                                     "writes": [b": ping\n\n", b"event: message\nid: 1\n" + _event(_delta("ab")),
                                                b": still here\n", b"retry: 1000\n" + _event(_delta("cd")),
                                                *[_event(d) for d in _finish(2)], b"data: [DONE]\n\n"],
                                     "text": "abcd"},
    "sse_crlf": {"what": "every line ended with CRLF", "writes": _sse(["ab", "cd"], b"\r\n"), "text": "abcd"},
    "sse_line_split": {"what": "one data line split across two TCP writes 20 ms apart",
                       "writes": [(w := _event(_delta("ab")))[:21], w[21:], *_sse(["cd"], first=1)],
                       "pause": 0.02, "text": "abcd"},
    "sse_multiline_data": {"what": "one event's JSON spread over two data: lines (joined by a newline: legal)",
                           "writes": [(lambda t: b"data: " + t[:t.index(b",")] + b"\ndata: " + t[t.index(b","):]
                                       + b"\n\n")(json.dumps(_delta("ab"), separators=(",", ":")).encode()),
                                      *_sse(["cd"], first=1)], "text": "abcd"},
    "sse_stall": {"what": "a stream that stops sending after two chunks (longer than the client's 1 s timeout)",
                  "writes": [_event(_delta("a")), _event(_delta("b"))], "stall_s": 3.0, "text": None, "kind": "timeout"},
}


class CorpusServer(LoopbackServer):
    """Replays corpus[construct] (CORPUS, or SSE_CORPUS on /v1) to every request, chunk by chunk;
    with `sequence` (constructs, each `per` times), request k gets sequence[k // per] instead, so
    that one client process reads them all in turn (and shows it recovers after each)."""

    def __init__(self, construct: str | None, corpus: dict | None = None, sequence: list[str] | None = None,
                 per: int = 1):
        corpus = CORPUS if corpus is None else corpus
        done = threading.Event()
        self.done = done
        sse = corpus is SSE_CORPUS
        served = iter(range(10**6))

        class Handler(NoDelayHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                k = next(served)
                case = corpus[sequence[min(k // per, len(sequence) - 1)] if sequence else construct]
                if "status" in case:
                    self.send_response(case["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(case["body"])))
                    self.end_headers()
                    self.wfile.write(case["body"])
                    self.wfile.flush()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                try:
                    for data in case["writes"]:
                        time.sleep(case.get("pause", 0))
                        send_chunk(self.wfile, data)
                    if "stall_s" in case:
                        done.wait(case["stall_s"])  # then close without the body's end
                        self.close_connection = True
                        return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    self.close_connection = True

        super().__init__(Handler)

    def __exit__(self, *exc) -> None:
        self.done.set()
        super().__exit__(*exc)


class AgentServer(LoopbackServer):
    """/api/chat for the agent loop's error paths and for the clients' ceiling: answers a
    request by its turn (the number of assistant messages in its history), so that concurrent
    sessions each get their own script. An answer is a dict:

        {"content": TEXT}            TEXT streamed in `pieces` chunks, then the done line
        {"tool_calls": [...]}        one chunk carrying the calls (as Ollama sends them), then done
        {"status": 500, "error": M}  an HTTP error status with Ollama's {"error": M} body
        {"error_line": M}            a chunk, then an {"error": M} line after HTTP 200

    Turns past the script repeat its last answer. Chunks are written as fast as TCP takes them
    (`gap_ms` apart when set). `bodies` keeps every request body as received (key order kept)."""

    def __init__(self, answers: list[dict], pieces: int = 4, gap_ms: float = 0.0):
        self.answers, self.pieces, self.gap_ms = answers, pieces, gap_ms
        self.bodies: list[dict] = []
        self.raw: list[bytes] = []
        script = self

        class Handler(NoDelayHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                script.raw.append(raw)
                script.bodies.append(body)
                turn = sum(m.get("role") == "assistant" for m in body.get("messages", []))
                answer = script.answers[min(turn, len(script.answers) - 1)]
                if "status" in answer:
                    data = json.dumps({"error": answer["error"]}).encode()
                    self.send_response(answer["status"])
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for line in script.lines(answer, len(raw)):
                    if script.gap_ms:
                        time.sleep(script.gap_ms / 1e3)
                    send_chunk(self.wfile, line)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        super().__init__(Handler)

    def lines(self, answer: dict, prompt_bytes: int) -> list[bytes]:
        base = {"model": "scripted", "created_at": "2026-01-01T00:00:00Z"}
        enc = lambda d: json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        out = []
        if "tool_calls" in answer:
            out.append(enc({**base, "message": {"role": "assistant", "content": "", "tool_calls": answer["tool_calls"]},
                            "done": False}))
            n = 1
        else:
            text = answer.get("content", "")
            k = max(1, min(self.pieces, len(text)))
            cuts = [len(text) * i // k for i in range(k + 1)]
            parts = [text[a:b] for a, b in zip(cuts, cuts[1:]) if b > a]
            out += [enc({**base, "message": {"role": "assistant", "content": p}, "done": False}) for p in parts]
            n = len(parts)
        if "error_line" in answer:
            return out + [json.dumps({"error": answer["error_line"]}).encode() + b"\n"]
        ns = 1_000_000
        return out + [enc({**base, "message": {"role": "assistant", "content": ""}, "done_reason": "stop",
                           "done": True, "total_duration": 2 * ns, "load_duration": 0,
                           "prompt_eval_count": prompt_bytes // 4, "prompt_eval_duration": ns,
                           "eval_count": n, "eval_duration": ns})]


class PacedOllama(LoopbackServer):
    """Just enough of Ollama for a sweep to run against it as `server.host: URL` (/api/version,
    /api/tags, /api/show, /api/ps, and /api/generate streamed), where each generate request
    takes a known time: `pace(options)` seconds (its options as the agent sent them), spent
    before the first token, then `num_predict` tokens (4 by default) `gap_ms` apart. For the
    schedule's test: cells of known, unequal cost, without a model's CPU time on a small host."""

    VERSION = "0.12.0"  # no num_batch clamp: the options arrive as the plan wrote them

    def __init__(self, model: str, pace, gap_ms: float = 5.0):
        self.model, self.pace, self.gap_ms = model, pace, gap_ms
        self.requests = 0
        script = self

        class Handler(NoDelayHandler):
            def _json(self, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/api/version":
                    return self._json({"version": script.VERSION})
                if self.path == "/api/tags":
                    return self._json({"models": [{"name": script.model, "model": script.model}]})
                if self.path == "/api/ps":
                    return self._json({"models": []})
                self.send_error(404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/show":
                    return self._json({"details": {"family": "paced", "format": "gguf"}, "modelfile": ""})
                if self.path != "/api/generate":
                    return self.send_error(404)
                script.requests += 1
                options = body.get("options") or {}
                tokens = int(options.get("num_predict", 4))
                start = time.perf_counter()
                first_s = max(0.0, script.pace(options) - tokens * script.gap_ms / 1e3)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                base = {"model": script.model, "created_at": "2026-01-01T00:00:00Z"}
                for k in range(tokens + 1):
                    done = k == tokens
                    deadline = start + first_s + k * script.gap_ms / 1e3
                    while (left := deadline - time.perf_counter()) > 0:
                        time.sleep(left)
                    line = {**base, "response": "" if done else f"t{k} ", "done": done}
                    if done:
                        ns = int(1e9)
                        line.update(done_reason="length", total_duration=int((time.perf_counter() - start) * ns),
                                    load_duration=0, prompt_eval_count=1, prompt_eval_duration=int(first_s * ns),
                                    eval_count=tokens, eval_duration=int(tokens * script.gap_ms * 1e6))
                    send_chunk(self.wfile, json.dumps(line, separators=(",", ":")).encode() + b"\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        super().__init__(Handler)


class AgentSSEServer(LoopbackServer):
    """/v1/chat/completions for the agent loop on /v1: answers a request by its turn (the
    assistant messages in its history), as AgentServer does on /api. An answer is
    {"content": TEXT} (streamed in `pieces` deltas) or {"tool_calls": [{"id", "name",
    "arguments"}]}, streamed as llama.cpp streams a call: a first delta with the id and name,
    then the arguments' text in three pieces, then finish_reason tool_calls. `bodies` keeps every
    request body as received."""

    def __init__(self, answers: list[dict], pieces: int = 3):
        self.answers, self.pieces = answers, pieces
        self.bodies: list[dict] = []
        script = self

        class Handler(NoDelayHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                script.bodies.append(body)
                turn = sum(m.get("role") == "assistant" for m in body.get("messages", []))
                answer = script.answers[min(turn, len(script.answers) - 1)]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for data in script.events(answer):
                    send_chunk(self.wfile, data)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        super().__init__(Handler)

    def events(self, answer: dict) -> list[bytes]:
        def chunk(delta: dict, finish=None) -> dict:
            return {**_delta(""), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out, n = [chunk({"role": "assistant", "content": None})], 0  # llama.cpp's first, token-less delta
        if "tool_calls" in answer:
            for i, call in enumerate(answer["tool_calls"]):
                out.append(chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                                  "function": {"name": call["name"], "arguments": ""}}]}))
                text, k = call["arguments"], self.pieces
                cuts = [len(text) * j // k for j in range(k + 1)]
                out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": text[a:b]}}]})
                        for a, b in zip(cuts, cuts[1:]) if b > a]
                n += len(text)
            finish = "tool_calls"
        else:
            text, k = answer["content"], self.pieces
            cuts = [len(text) * j // k for j in range(k + 1)]
            out += [chunk({"content": text[a:b]}) for a, b in zip(cuts, cuts[1:]) if b > a]
            n, finish = k, "stop"
        out.append(chunk({}, finish))
        out.append({**_delta(""), "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": n,
                                                             "total_tokens": n + 9}})
        return [_event(d) for d in out] + [b"data: [DONE]\n\n"]


class StampedServer(LoopbackServer):
    """The replay server's stamps, scripted: every JSON chunk carries `t_sent_ns`, its send time on
    CLOCK_MONOTONIC (time.monotonic_ns(), taken just before the write), and `t_arrival_ns`, when
    the request's body had been read (on /api both also in `created_at`, as "<sent>/<arrival>"),
    on /api/generate, /api/chat (NDJSON) and /v1/chat/completions (SSE).
    Request k gets the shape sequence[k] (the last repeats; with `by_turn`, /api/chat answers by
    the assistant messages in the history instead, for an agent task):

        tokens      a thinking chunk, three answer chunks, the end (/api: done; /v1: a role chunk
                    first, then finish_reason, usage, [DONE])
        tool        /api/chat: one chunk with the call add(1, 2), then done; /v1: the call
                    streamed as llama.cpp does (name, then the arguments in two pieces)
        finish      /api/chat: one chunk with the call finish("3"), then done
        empty       the end at once, no token (done_reason stop; /v1: finish chunk, usage, [DONE])
        disconnect  two answer chunks, then the connection closed mid-body
        no_done     two answer chunks, then the body's end (no done line / no finish_reason)
        error       one answer chunk, then {"error": ...} after HTTP 200
        bad_line    one answer chunk, then a line that is not JSON
        stall       one answer chunk, then nothing for `stall_s` (past the client's timeout)

    `gap_ms` apart (default 2). `kinds[k]`: the capture kinds a client must see for request k."""

    KINDS_API = {"tokens": "taaad", "tool": "cd", "finish": "cd", "empty": "d", "disconnect": "aa",
                 "no_done": "aa", "error": "ae", "bad_line": "a", "stall": "a"}
    KINDS_V1 = {"tokens": "etaaadu", "tool": "ecccdu", "empty": "du", "disconnect": "eaa", "no_done": "eaa",
                "error": "eae", "bad_line": "ea", "stall": "ea"}

    def __init__(self, sequence: list[str], gap_ms: float = 2.0, stall_s: float = 3.0, by_turn: bool = False):
        self.sequence, self.gap_ms, self.stall_s = sequence, gap_ms, stall_s
        self.requests: list[tuple[str, str]] = []  # (path, shape) as served
        self.arrival = threading.local()  # the request's arrival stamp, per handler thread
        done = threading.Event()
        self.done = done
        script = self
        served = iter(range(10**6))

        class Handler(NoDelayHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                script.arrival.ns = time.monotonic_ns()  # the whole request is in
                k = next(served)
                if by_turn:
                    k = sum(m.get("role") == "assistant" for m in body.get("messages", []))
                shape = script.sequence[min(k, len(script.sequence) - 1)]
                script.requests.append((self.path, shape))
                sse = self.path.startswith("/v1/")
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if sse else "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                pieces = (script._sse if sse else script._ndjson)(shape, self.path == "/api/chat")
                try:
                    for piece in pieces:
                        if piece == "stall":
                            done.wait(script.stall_s)
                            self.close_connection = True
                            return
                        if piece == "disconnect":
                            self.close_connection = True  # no last chunk: the body ends mid-stream
                            return
                        time.sleep(script.gap_ms / 1e3)
                        send_chunk(self.wfile, piece() if callable(piece) else piece)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    self.close_connection = True

        super().__init__(Handler)

    def _stamped(self, doc: dict, api: bool):
        """The chunk as a callable: stamped when it is sent (and with its request's arrival)."""
        def encode() -> bytes:
            ns, arrival = time.monotonic_ns(), self.arrival.ns
            stamped = {**doc, **({"created_at": f"{ns}/{arrival}"} if api else {}), "t_sent_ns": ns,
                       "t_arrival_ns": arrival}
            data = json.dumps(stamped, separators=(",", ":")).encode()
            return data + b"\n" if api else b"data: " + data + b"\n\n"
        return encode

    def _ndjson(self, shape: str, chat: bool) -> list:
        def line(text: str = "", thinking: str = "", done: bool = False, calls=None, **extra):
            if chat:
                msg = {"role": "assistant", "content": text, **({"thinking": thinking} if thinking else {}),
                       **({"tool_calls": calls} if calls else {})}
                doc = {"model": "scripted", "message": msg, "done": done, **extra}
            else:
                doc = {"model": "scripted", "response": text, **({"thinking": thinking} if thinking else {}),
                       "done": done, **extra}
            return self._stamped(doc, api=True)

        def end(n: int):
            return line(done=True, done_reason="stop", total_duration=n * 1000, load_duration=0, prompt_eval_count=1,
                        prompt_eval_duration=1000, eval_count=n, eval_duration=n * 1000)

        call = lambda name, args: [{"function": {"name": name, "arguments": args}}]
        return {
            "tokens": [line(thinking="h "), line("a "), line("b "), line("c"), end(4)],
            "tool": [line(calls=call("add", {"a": 1, "b": 2})), end(1)],
            "finish": [line(calls=call("finish", {"answer": "3"})), end(1)],
            "empty": [end(0)],
            "disconnect": [line("a "), line("b "), "disconnect"],
            "no_done": [line("a "), line("b ")],
            "error": [line("a "), self._stamped({"error": "scripted failure"}, api=True)],
            "bad_line": [line("a "), b"this is not JSON\n"],
            "stall": [line("a "), "stall"],
        }[shape]

    def _sse(self, shape: str, chat: bool) -> list:
        def chunk(delta: dict, finish=None):
            return self._stamped({"id": "c1", "object": "chat.completion.chunk", "model": "scripted",
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}, api=False)

        def end(reason: str, n: int) -> list:
            usage = self._stamped({"id": "c1", "object": "chat.completion.chunk", "model": "scripted", "choices": [],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}},
                                  api=False)
            return [chunk({}, reason), usage, b"data: [DONE]\n\n"]

        role = chunk({"role": "assistant", "content": None})
        return {
            "tokens": [role, chunk({"reasoning_content": "h "}), chunk({"content": "a "}), chunk({"content": "b "}),
                       chunk({"content": "c"}), *end("stop", 4)],
            "tool": [role, chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": "add", "arguments": ""}}]}),
                     chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1, '}}]}),
                     chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"b": 2}'}}]}),
                     *end("tool_calls", 3)],
            "empty": end("stop", 0),
            "disconnect": [role, chunk({"content": "a "}), chunk({"content": "b "}), "disconnect"],
            "no_done": [role, chunk({"content": "a "}), chunk({"content": "b "}), b"data: [DONE]\n\n"],
            "error": [role, chunk({"content": "a "}),
                      self._stamped({"error": {"message": "scripted failure", "type": "server_error"}}, api=False)],
            "bad_line": [role, chunk({"content": "a "}), b"data: this is not JSON\n\n"],
            "stall": [role, chunk({"content": "a "}), "stall"],
        }[shape]

    def __exit__(self, *exc) -> None:
        self.done.set()
        super().__exit__(*exc)


def serve(first_ms: float, gap_ms: float, tokens: int) -> None:
    """`python tests/scripted.py --serve FIRST_MS GAP_MS TOKENS`: a ScriptedServer in a process of
    its own (langbench peers runs every tool against it: issue 43, known delays); prints its URL,
    then serves until stdin closes or it is killed."""
    import sys
    with ScriptedServer(first_ms, gap_ms, tokens) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 5 or sys.argv[1] != "--serve":
        sys.exit("usage: python tests/scripted.py --serve FIRST_MS GAP_MS TOKENS")
    serve(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
