"""A loopback HTTP/1.1 server on a free port, run in a thread for the length of a `with`: the
base of the tests' relay and scripted servers. It counts the TCP connections it accepted
(`connections`): how many a client opened."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Ollama

    def log_message(self, *args):
        pass


class _CountingHTTPServer(ThreadingHTTPServer):
    connections = 0

    def process_request(self, request, client_address):
        self.connections += 1  # serve_forever's one thread: no race
        super().process_request(request, client_address)


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = _CountingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        return self.httpd.connections

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
