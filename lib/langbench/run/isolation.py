"""Where the server and the agents may run: `isolation: pinned` gives them disjoint CPUs where
the host has enough, so that a client's cost is not the server's queueing for the same core.

The split is decided once per session and recorded in the manifest; the report says whether
server and agents shared CPUs. With fewer than MIN_CPUS usable CPUs, pinning is not applied
(each side would get one core or none) and the manifest says why.
"""

from __future__ import annotations

import os

MIN_CPUS = 4


def plan(mode: str, cpus: set[int] | None = None, server_threads: int | None = None) -> dict:
    """{"requested", "applied", "server_cpus", "agent_cpus", "reason"} for `mode` over the CPUs
    this process may use (`cpus`, for tests). Server gets the first half, agents the rest. A
    server of one thread (`server_threads` 1: the replay server) needs one CPU, so two CPUs
    pin it apart from the agents: one each, as a client study on a 2-core host needs."""
    usable = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    shared = {"requested": mode, "applied": False, "server_cpus": usable, "agent_cpus": usable}
    if mode != "pinned":
        return {**shared, "reason": "isolation: shared (the default): server and agents share every CPU"}
    if server_threads == 1 and len(usable) >= 2:
        return {"requested": mode, "applied": True, "server_cpus": usable[:1], "agent_cpus": usable[1:],
                "reason": f"the one-thread server on CPU {usable[0]}, agents on CPUs {_ranges(usable[1:])}"}
    if len(usable) < MIN_CPUS:
        return {**shared, "reason": f"isolation: pinned was asked, but only {len(usable)} CPUs are usable "
                                    f"(at least {MIN_CPUS} needed): server and agents share them"}
    half = len(usable) // 2
    return {"requested": mode, "applied": True, "server_cpus": usable[:half], "agent_cpus": usable[half:],
            "reason": f"server on CPUs {_ranges(usable[:half])}, agents on CPUs {_ranges(usable[half:])}"}


def pin(pid: int, cpus: list[int]) -> None:
    """Restrict `pid` (0: this process) to `cpus`; children started later inherit it."""
    os.sched_setaffinity(pid, cpus)


def _ranges(cpus: list[int]) -> str:
    out, start = [], None
    for i, c in enumerate(cpus):
        start = c if start is None else start
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(f"{start}" if start == c else f"{start}–{c}")
            start = None
    return ",".join(out)
