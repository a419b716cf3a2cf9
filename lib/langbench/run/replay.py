"""The runner's side of the replay server (DESIGN.md, "The replay server"): the server block it
is started from, with its profile found, and what the manifest says of a replay run: the
profile and the real run it replays, so that the report can say so on its first screen."""

from __future__ import annotations

import json

from langbench import paths, vocab
from langbench.run.params import Params, profile_path


def setting(params: Params) -> dict:
    """params.server, with a replay profile resolved to its file (other kinds: as written)."""
    block = dict(params.server)
    if block.get("kind") == "replay":
        block["profile"] = str(profile_path(params.path, params.raw))
    return block


def manifest_entry(params: Params) -> dict:
    """The manifest's `replay`: the profile (repository-relative where it lies inside), the run it
    was captured from, and the replay's settings, including the lateness bound a batch must keep."""
    file = profile_path(params.path, params.raw)
    doc = json.loads(file.read_text(encoding="utf-8"))
    shown = file.resolve()
    try:
        shown = shown.relative_to(paths.ROOT)
    except ValueError:
        pass
    server = params.server
    return {"profile": str(shown), "source": doc.get("source", {}), "donors": len(doc.get("donors", [])),
            "turns": len(doc.get("turns", {})), "time_scale": server.get("time_scale", 1),
            "load": server.get("load", "ideal"), "faults": server.get("faults", {}),
            "lateness_p99_ms": server.get("lateness_p99_ms", vocab.REPLAY_LATENESS_P99_MS)}
