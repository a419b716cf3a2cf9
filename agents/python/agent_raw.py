"""python-raw: the Python floor at scale (DESIGN.md, "Sessions at scale"). No SDK: HTTP/1.1
written by hand on asyncio streams, the chunked body decoded here, each line parsed by the null
client's parser (agent_wire.py), on uvloop, in agent_async.py's loop like every Python client.
What the SDK clients spend beyond it is the SDK's; what it spends beyond the Rust agent is
Python's own.

One connection per session at a time, kept alive and reused (a pool of idle ones); a read that
waits longer than the jobs' timeout_s is a `timeout`; a body the server cut is
`stream_interrupted`; every other failure is named as the null client names it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from urllib.parse import urlsplit

import agent_wire as wire

AGENT_VERSION = "0.1.0+asyncio-raw"
CLIENT = f"asyncio streams, hand-written HTTP/1.1 (Python {sys.version.split()[0]})"


class Timing(wire.Exchange):
    """An Exchange with what agent_async's loop asks of a timing."""

    def __init__(self, jobs: dict, run: dict):
        super().__init__(CLIENT, time.monotonic_ns(), jobs.get("capture", False))
        self.t0_unix = time.time()
        self.jobs, self.run = jobs, run
        self.new_connection, self.connect_ms, self.sent = False, None, None

    def text(self) -> str:
        return "".join(self.parts)

    def calls(self) -> list:
        return self.tool_calls

    def failure(self) -> dict | None:
        return self.error

    def record(self, **extra) -> dict:
        jobs = self.jobs
        endpoint = jobs.get("endpoint", "chat" if jobs.get("workload") == "agent" else "generate")
        rec = wire.record_of(self, "python-raw", AGENT_VERSION, jobs, self.run, self.new_connection,
                             self.connect_ms, endpoint)
        rec.update(extra)
        return rec


class Closed(Exception):
    """The server closed the connection before the body's end."""


class Transport:
    client = CLIENT

    def __init__(self, host: str, jobs: dict):
        url = urlsplit(host if "://" in host else f"http://{host}")
        self.host, self.port = url.hostname, url.port or 80
        self.head = f"Host: {self.host}:{self.port}\r\nContent-Type: application/json\r\n".encode()
        self.timeout = jobs.get("timeout_s", 600)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    def timing(self, jobs: dict, run: dict) -> Timing:
        return Timing(jobs, run)

    def sent(self, timing: Timing) -> None:
        return None  # the loop's own history went on the wire as it is

    async def _connection(self, x: Timing):
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        x.new_connection, x.connect_ms = True, (time.perf_counter() - start) * 1e3
        return reader, writer

    async def stream(self, x: Timing, jobs: dict, run: dict, task) -> None:
        chat = task is not None or jobs.get("endpoint", "generate") == "chat"
        path, body = wire.request_body(jobs, run, task)
        writer = None
        keep = False
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                reader, writer = await self._connection(x)
                writer.write(b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
                             % (path.encode(), self.head, len(body), body))
                status, headers = await self._head(reader)
                if status != 200:
                    text = b"".join([part async for part in self._body(reader, headers, deadline)])
                    x.error = x.named(f"http_{status}", wire.error_message(text.decode(errors="replace"))[:500])
                elif path in wire.OPENAI_PATHS.values():
                    sse, v1_chat = wire.SSE(), path == wire.OPENAI_PATHS["openai-chat"]
                    async for line in self._lines(reader, headers, deadline):
                        event = sse.line(line)
                        if event is not None:
                            wire.take_event(x, event, time.monotonic_ns(), v1_chat)
                    wire.end_sse(x)
                else:
                    async for line in self._lines(reader, headers, deadline):
                        wire.take_line(x, line, time.monotonic_ns(), chat)
                keep = headers.get(b"connection", b"").lower() != b"close"
        except TimeoutError:
            x.error = x.named("timeout", f"no byte for {self.timeout:g} s")
        except ConnectionRefusedError as e:
            x.error = x.named("connect", str(e) or repr(e))
        except (OSError, Closed, asyncio.IncompleteReadError, ValueError) as e:
            x.error = x.named("stream_interrupted", str(e) or repr(e))
        wire.end(x)
        if writer is not None:
            if keep and x.error is None:
                self.idle.append((reader, writer))
            else:  # whatever is left of that body is not read: start clean
                writer.close()

    async def _head(self, reader: asyncio.StreamReader) -> tuple[int, dict]:
        line = await reader.readline()
        if not line:
            raise Closed("the server closed the connection before its status line")
        status = int(line.split(b" ", 2)[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _body(self, reader: asyncio.StreamReader, headers: dict, deadline):
        """The body's pieces as they arrive: chunked, sized, or to the connection's end."""
        loop = asyncio.get_running_loop()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size_line = await reader.readline()
                if not size_line:
                    raise Closed("the server closed the connection mid-body (chunked, no last chunk)")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                data = await reader.readexactly(size + 2)
                deadline.reschedule(loop.time() + self.timeout)  # a timeout is per read, as the SDKs' are
                yield data[:-2]
        elif b"content-length" in headers:
            yield await reader.readexactly(int(headers[b"content-length"]))
        else:
            while data := await reader.read(1 << 16):
                deadline.reschedule(loop.time() + self.timeout)
                yield data

    async def _lines(self, reader: asyncio.StreamReader, headers: dict, deadline):
        """The body's lines, split at b"\\n" only (a piece may hold several, or part of one)."""
        rest = b""
        async for data in self._body(reader, headers, deadline):
            if rest:
                data, rest = rest + data, b""
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                yield data[start:end + 1]
                start = end + 1
            rest = data[start:]
        if rest:
            yield rest

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
