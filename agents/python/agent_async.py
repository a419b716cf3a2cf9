"""The Python clients' one asyncio loop (DESIGN.md, "Sessions at scale"): `streams` sessions
in one process, as typical agent code runs them, with the transport behind it.

Warm-ups go first, one at a time; then the measured runs of each session go one after another
in N concurrent sessions (closed loop), or each at its `send_at_s` from the start of the
measured phase whatever else is in flight (open loop; its record says how late it was sent,
`schedule_lag_ms`). A run is one request, or with `workload: agent` one task: send, parse, act,
append, until finish or max_turns, its history growing turn by turn.

A transport is one object: `client` (named in every error and task error), `timing(jobs, run)`
(a fresh timing, its t0 taken now), `await stream(timing, jobs, run, task)` (send and read the
stream to its end, every chunk into the timing, a failure into timing.error), `sent(timing)`
(the messages as they went on the wire, or None) and `await close()`. A timing has t0, t_last,
`text()`, `calls()`, `failure()` and `record(**extra)`. The clients:

- python: the official SDKs' async clients, ollama.AsyncClient on /api and openai.AsyncOpenAI
  (httpx2) on /v1, on asyncio's own loop (agent_ollama.py, agent_openai.py);
- python-tuned: the same SDKs on uvloop, and on /v1 the openai SDK's aiohttp transport
  (`DefaultAioHttpClient`): the fix the peers' issues give; ollama-python has no aiohttp
  transport, so on /api only the loop changes;
- python-raw: no SDK, HTTP/1.1 on asyncio streams and the null client's parser, on uvloop: the
  Python floor (agent_raw.py).
"""

from __future__ import annotations

import asyncio
import time

import agent_tools


async def run_one(t, jobs: dict, run: dict, **extra) -> dict:
    timing = t.timing(jobs, run)
    await t.stream(timing, jobs, run, None)
    return timing.record(**extra)


async def run_task(t, jobs: dict, run: dict, write, **extra) -> None:
    """One task (DESIGN.md, "Agent loops"): send, parse, act, append, until finish or max_turns."""
    task = agent_tools.Task(jobs, run, t.client)
    timeout = jobs.get("timeout_s", 600)
    while not task.over:
        timing = t.timing(jobs, run)
        task.before_send(timing.t0)
        await t.stream(timing, jobs, run, task)
        wait_ms = task.act(timing.text(), timing.calls(), timing.failure(), timing.t_last, timeout)
        if wait_ms:
            await asyncio.sleep(wait_ms / 1e3)
        task.after_tool()
        write({**timing.record(**extra), **task.fields(t.sent(timing))})
        task.after_record()


async def run_all(t, jobs: dict, write) -> None:
    """Every run of the jobs file: warm-ups one at a time, then the measured runs in `streams`
    sessions (closed loop) or each at its `send_at_s` (open loop)."""
    n = jobs.get("streams", 1)
    agent = jobs.get("workload") == "agent"

    async def one(run: dict, **extra) -> None:
        if agent:
            await run_task(t, jobs, run, write, **extra)
        else:
            write(await run_one(t, jobs, run, **extra))

    try:
        tag = (lambda **kw: kw) if "streams" in jobs else (lambda **kw: {})
        for run in (r for r in jobs["runs"] if r["warmup"]):
            await one(run, **tag(concurrency=n, stream=run.get("stream", 0)))
        measured = [r for r in jobs["runs"] if not r["warmup"]]
        if measured and "send_at_s" in measured[0]:
            start = time.perf_counter()

            async def at(i: int, run: dict) -> None:
                await asyncio.sleep(max(0.0, start + run["send_at_s"] - time.perf_counter()))
                lag_ms = (time.perf_counter() - start - run["send_at_s"]) * 1e3
                write(await run_one(t, jobs, run, concurrency=n, stream=run.get("stream", i), schedule_lag_ms=lag_ms))

            await asyncio.gather(*(at(i, r) for i, r in enumerate(measured)))
            return

        async def session(k: int, own: list[dict]) -> None:
            for run in own:
                await one(run, **tag(concurrency=n, stream=k))

        by_stream: dict[int, list[dict]] = {k: [] for k in range(n)}
        for i, run in enumerate(measured):
            by_stream[run.get("stream", i % n)].append(run)
        await asyncio.gather(*(session(k, own) for k, own in by_stream.items()))
    finally:
        await t.close()


def run(make_transport, host: str, jobs: dict, write, uvloop: bool = False) -> None:
    """run_all on a fresh loop (uvloop's where asked), the transport made inside it."""
    async def main() -> None:
        await run_all(make_transport(host, jobs), jobs, write)

    if uvloop:
        import uvloop as _uvloop  # only the clients that run on it load it
        _uvloop.run(main())
    else:
        asyncio.run(main())
