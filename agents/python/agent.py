#!/usr/bin/env python3
"""langbench Python agent: streams Ollama's /api/generate or /api/chat through the official
`ollama` client, or an OpenAI-compatible /v1/chat/completions or /v1/completions through the
official `openai` SDK.

    agent.py --host URL --jobs JOBS.json --out RECORDS.jsonl

One persistent client for every run; one JSON line per run appended to RECORDS.jsonl and
flushed as soon as the run ends. Exit 0 when every run ended `ok`, 1 when some run did not,
2 when the jobs file or the arguments are bad (and then nothing is written).

The jobs file's endpoint picks the path: agent_ollama.py (`generate`, `chat`) or
agent_openai.py (`openai-chat`, `openai-completions`); only that path's client is imported.
`--client tuned` runs the same SDKs on uvloop (and /v1 on the openai SDK's aiohttp transport),
`--client raw` no SDK at all (agent_raw.py): agent_async.py is the one asyncio loop of all three.
Only the standard library and those clients are imported: this program's start-up and memory
are part of what is measured, so it must not carry langbench.
"""

from __future__ import annotations

import argparse
import sys

from agent_jobs import OPENAI_ENDPOINTS, JobsError, Writer, load_jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="server base URL, e.g. http://127.0.0.1:11434")
    parser.add_argument("--jobs", required=True, help="jobs file (JSON)")
    parser.add_argument("--out", required=True, help="records file (JSON lines, appended)")
    parser.add_argument("--client", choices=("sdk", "tuned", "raw"), default="sdk",
                        help="sdk: the official clients (agent `python`); tuned: the same on uvloop, and on /v1 "
                             "the openai SDK's aiohttp transport (`python-tuned`); raw: no SDK, asyncio on uvloop "
                             "(`python-raw`, the Python floor)")
    args = parser.parse_args(argv)
    try:
        jobs = load_jobs(args.jobs)
    except JobsError as e:
        print(f"python agent: bad jobs file: {e}", file=sys.stderr)
        return 2
    with open(args.out, "a", encoding="utf-8") as out:
        write = Writer(out, len(jobs["runs"]), "python" if args.client == "sdk" else f"python-{args.client}")
        if args.client == "raw":
            import agent_async
            import agent_raw
            agent_async.run(agent_raw.Transport, args.host, jobs, write, uvloop=True)
        else:
            if jobs.get("endpoint", "generate") in OPENAI_ENDPOINTS:
                import agent_openai as path
            else:
                import agent_ollama as path
            path.run(args.host, jobs, write, tuned=args.client == "tuned")
    return 1 if write.failed else 0


if __name__ == "__main__":
    sys.exit(main())
