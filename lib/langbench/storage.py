"""Files of a run directory: JSON lines appended durably, JSON documents written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append whole lines and fsync: a crash leaves at most a torn last line, never a lost one."""
    if not rows:
        return
    data = "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Every complete line. A torn last line (a crash mid-write) is ignored, or cut off the
    file when `repair` is set, so that appending after it cannot glue two records together."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    rows, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
        good += len(line)
    if repair and good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


def write_json(path: Path, doc: dict) -> None:
    """Write via a temporary file and rename: readers see the old or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
