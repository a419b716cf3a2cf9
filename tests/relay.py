"""A recording relay in front of the real Ollama, for the agents' contract tests.

It forwards every request unchanged to the real server, keeps each request body, and
re-chunks the streamed response into tiny writes so that NDJSON lines (or SSE events, on /v1)
arrive split across network reads. It serves nothing of its own: the answers are the real server's.
"""

from __future__ import annotations

import json

import httpx

from loopback import LoopbackServer, QuietHandler


class Relay(LoopbackServer):
    def __init__(self, upstream: str, piece: int = 7):
        self.upstream = upstream
        self.piece = piece
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        self.finals: list[dict] = []  # the server's own `done` line of each response (/v1: its usage event)
        relay = self

        class Handler(QuietHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                relay.bodies.append(json.loads(body))
                relay.paths.append(self.path)
                with httpx.Client(timeout=120) as client, client.stream(
                        "POST", relay.upstream + self.path, content=body,
                        headers={"Content-Type": "application/json"}) as r:
                    self.send_response(r.status_code)
                    self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    received = b""
                    for data in r.iter_bytes():
                        received += data
                        # record the done line before the agent can see it (no race at exit)
                        complete = received[:received.rfind(b"\n") + 1]
                        if self.path.startswith("/v1/"):  # SSE: the usage event, which has no choices
                            events = [json.loads(x[6:]) for x in complete.splitlines() if x.startswith(b"data: {")]
                            done = [x for x in events if x.get("usage") and not x.get("choices")]
                        else:
                            done = [x for x in map(json.loads, filter(bytes.strip, complete.splitlines()))
                                    if x.get("done")]
                        if done and done[-1] not in relay.finals:
                            relay.finals.append(done[-1])
                        for i in range(0, len(data), relay.piece):
                            part = data[i:i + relay.piece]
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                            self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()

        super().__init__(Handler)
