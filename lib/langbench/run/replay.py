"""The runner's side of the replay server (DESIGN.md, "The replay server"): the server block it
is started from, with its profile found, what the manifest says of a replay run: the
profile and the real run it replays, so that the report can say so on its first screen, and the
replay twin of a real parameter file (bench/replay_twin.py)."""

from __future__ import annotations

import json
from pathlib import Path

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


def twin(params_path: Path, profile: Path, time_scale: float = 1.0, load: str = "profile") -> dict:
    """The design of the parameter file `params_path` again, on the replay server of `profile`
    (DESIGN.md, "Honest use": a replay is validated against the real server it copies, same design,
    same clients): the same agents, workload, matrix, load points, batches and order; the server
    block replaced by the replay's (`load: profile`: each N replays the captured level nearest it);
    no capture; its prompt and conversation files made absolute, so that the twin can be written
    anywhere. Returns the document (yaml.safe_dump it; params.load checks it)."""
    import yaml
    params_path = Path(params_path)
    doc = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    base = params_path.resolve().parent
    real = doc["name"]
    doc["name"] = f"{real}-replay"
    doc["description"] = (f"the replay of a capture of {real} (time_scale {time_scale:g}, load {load}): "
                          + doc.get("description", ""))
    doc["server"] = {"host": "embedded", "kind": "replay", "profile": str(Path(profile).resolve()),
                     "time_scale": time_scale, "load": load}
    doc.pop("capture", None)
    for prompt in doc.get("prompts") or []:
        if "file" in prompt:
            prompt["file"] = str((base / prompt["file"]).resolve())
    for task in doc.get("tasks") or []:
        if "conversations" in task:
            task["conversations"] = str((base / task["conversations"]).resolve())
    return doc
