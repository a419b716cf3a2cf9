"""Issue 43, item 5: why the Python agent may call a stream truncated that the null client and
the Rust agent read whole. Each real stream is read once as bytes, then judged by both ways of
splitting it into lines, on the same bytes:

- the null client's and the Rust agent's: split at b"\\n" only, json.loads each line;
- ollama-python's (what the Python agent uses): httpx's Response.iter_lines, i.e. httpx 0.28's
  TextDecoder and LineDecoder (str.splitlines: it also breaks at U+0085, U+2028, U+2029,
  \\x0b, \\x0c, \\x1c-\\x1e), then json.loads each piece.

    python bench/truncation_scan.py --n 40 --num-predict 128 --out outputs/truncation_scan.jsonl

chimeraforge's prompt (parameters/prompts/chimeraforge_medium.txt), unseeded, num_ctx 2048, on an
embedded Ollama (or --url). One JSON line per stream: whether the server sent a done line (a
server-side truncation if not), whether each splitter reads it whole, and every character of the
answer that str.splitlines breaks at. Prints the counts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

from httpx._decoders import LineDecoder, TextDecoder

from langbench import paths
from langbench.run import server

SPLITLINES_EXTRA = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines breaks at besides \n, \r


def read_stream(url: str, body: dict) -> list[bytes]:
    """The response body as the network delivered it, piece by piece (chunked decoding done)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", "/api/generate", json.dumps(body).encode(), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    pieces = []
    while chunk := resp.read1(65536):
        pieces.append(chunk)
    conn.close()
    return pieces


def by_newline(pieces: list[bytes]) -> tuple[bool, str | None]:
    """The null client's reading: lines at b"\\n"; (a done line parsed, the first error)."""
    done = False
    for line in b"".join(pieces).split(b"\n"):
        if not line.strip():
            continue
        try:
            done = done or json.loads(line).get("done") is True
        except ValueError as e:
            return done, f"{type(e).__name__}: {e}"
    return done, None


def by_httpx(pieces: list[bytes]) -> tuple[bool, str | None]:
    """ollama-python's reading: httpx's iter_lines over the same pieces, json.loads each line."""
    text, lines, done = TextDecoder("utf-8"), LineDecoder(), False
    out = []
    for p in pieces:
        out += lines.decode(text.decode(p))
    out += lines.decode(text.flush()) + lines.flush()
    for line in out:
        try:
            done = done or json.loads(line).get("done") is True
        except ValueError as e:
            return done, f"{type(e).__name__}: {e} in {line[:60]!r}"
    return done, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--num-predict", type=int, default=128)
    ap.add_argument("--url")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    prompt = (paths.PARAMETERS / "prompts" / "chimeraforge_medium.txt").read_text()
    counts = {"streams": 0, "server_no_done": 0, "newline_broken": 0, "httpx_broken": 0, "answers_with_splitters": 0}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with server.ollama_server(a.url or "embedded", log_path=a.out.with_suffix(".ollama.log")) as srv, \
            open(a.out, "w") as out:
        body = {"model": paths.EMBEDDED_MODEL, "prompt": prompt, "stream": True, "keep_alive": -1,
                "options": {"num_ctx": 2048, "num_predict": a.num_predict}}
        read_stream(srv.url, body)  # the warm-up: the load
        for i in range(a.n):
            pieces = read_stream(srv.url, body)
            lines = [json.loads(x) for x in b"".join(pieces).split(b"\n") if x.strip()]
            answer = "".join(x.get("response", "") for x in lines)
            server_done = any(x.get("done") is True for x in lines)
            nl_done, nl_err = by_newline(pieces)
            hx_done, hx_err = by_httpx(pieces)
            found = sorted({f"U+{ord(c):04X}" for c in answer if c in SPLITTINGS})
            row = {"i": i, "chunks": len(lines), "server_done": server_done, "eval_count": lines[-1].get("eval_count"),
                   "newline_whole": nl_done and nl_err is None, "newline_error": nl_err,
                   "httpx_whole": hx_done and hx_err is None, "httpx_error": hx_err, "splitters_in_answer": found}
            out.write(json.dumps(row) + "\n")
            out.flush()
            counts["streams"] += 1
            counts["server_no_done"] += not server_done
            counts["newline_broken"] += not row["newline_whole"]
            counts["httpx_broken"] += not row["httpx_whole"]
            counts["answers_with_splitters"] += bool(found)
            print(f"{i}: {len(lines)} lines, done {server_done}, httpx {'ok' if row['httpx_whole'] else hx_err}"
                  f"{' ' + ','.join(found) if found else ''}", file=sys.stderr, flush=True)
    print(json.dumps(counts))
    return 0


SPLITTINGS = set(SPLITLINES_EXTRA)

if __name__ == "__main__":
    sys.exit(main())
