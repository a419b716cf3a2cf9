"""A scripted /api/generate with known delays, for the timing contract only (DESIGN.md).

Every answer is the same NDJSON stream: the first chunk `first_ms` after the request has been
read, then one chunk every `gap_ms`, then the `done` line one gap later, each chunk sent at
an absolute deadline (so that a late wake-up does not shift the ones after it) on a socket with
Nagle off. The `done` line carries server durations that say the whole `first_ms` was prompt
evaluation, so a client's overhead over this server is its TTFT − first_ms.
"""

from __future__ import annotations

import json
import socket
import time

from loopback import LoopbackServer, QuietHandler


class ScriptedServer(LoopbackServer):
    def __init__(self, first_ms: float = 200.0, gap_ms: float = 20.0, tokens: int = 12):
        self.first_ms, self.gap_ms, self.tokens = first_ms, gap_ms, tokens
        self.sent: list[list[float]] = []  # per request: perf_counter of each chunk's send
        script = self

        class Handler(QuietHandler):
            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                start = time.perf_counter()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                times = []
                for k in range(script.tokens + 1):
                    done = k == script.tokens
                    line = json.dumps(script.chunk(k, done), separators=(",", ":")).encode() + b"\n"  # as Go writes it
                    deadline = start + (script.first_ms + k * script.gap_ms) / 1e3
                    while (left := deadline - time.perf_counter()) > 0:
                        time.sleep(left)  # no spin: on 2 cores it would take the client's CPU
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                    self.wfile.flush()
                    times.append(time.perf_counter())
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                script.sent.append(times)

        super().__init__(Handler)

    def chunk(self, k: int, done: bool) -> dict:
        base = {"model": "scripted", "created_at": "2026-01-01T00:00:00Z", "done": done}
        if not done:
            return {**base, "response": f"t{k} "}
        ns = 1_000_000
        return {**base, "response": "", "done_reason": "length",
                "total_duration": int((self.first_ms + self.tokens * self.gap_ms) * ns),
                "load_duration": 0, "prompt_eval_count": 1,
                "prompt_eval_duration": int(self.first_ms * ns), "eval_count": self.tokens,
                "eval_duration": int(self.tokens * self.gap_ms * ns)}
