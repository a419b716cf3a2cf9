"""Files of a run directory: JSON lines appended durably, JSON documents written atomically,
one writer at a time (an exclusive lock on the directory)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson


class RunDirError(ValueError):
    """A run directory cannot be used as it is (corrupt file, busy, mixed); the message says
    which file or run and what to do. The CLI turns it into exit 2."""


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def user_file_mode() -> int:
    """The permissions of a file the user creates (0666 less the umask): what a web server
    serving a shared run needs, unlike mkstemp's 0600."""
    return 0o666 & ~_umask()


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append whole lines and fsync: a crash leaves at most a torn last line, never a lost one."""
    if not rows:
        return
    data = "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows)
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def kept(path: Path) -> Path:
    """`path`, or its `.xz` twin where only that exists: a run kept under results/ may hold its
    big files compressed (records.jsonl.xz), and every reader here reads either."""
    path = Path(path)
    if path.exists():
        return path
    xz = path.with_name(path.name + ".xz")
    return xz if xz.exists() else path


def exists(path: Path) -> bool:
    """Whether `path` or its `.xz` twin exists (kept)."""
    return kept(path).exists()


def read_bytes(path: Path) -> bytes:
    """The bytes of `path`, or of its `.xz` twin decompressed (kept)."""
    import lzma
    found = kept(path)
    return lzma.decompress(found.read_bytes()) if found.suffix == ".xz" and found != Path(path) else found.read_bytes()


def _loads(line: bytes):
    """One JSON line: orjson's parser, and the json module's where orjson refuses what Python
    writes and reads (NaN, Infinity, integers past 64 bits); a ValueError if neither reads it."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def read_jsonl(path: Path, repair: bool = False) -> list[dict]:
    """Every line. Only a torn last line (no newline: a crash mid-write) is dropped, and cut
    off the file when `repair` is set, so that appending after it cannot glue two records
    together. A malformed complete line anywhere is a RunDirError naming file and line:
    nothing after it is ever cut off. A kept run's `.xz` twin is read in its place (kept)."""
    path = Path(path)
    if not exists(path):
        return []
    repair = repair and path.exists()  # a compressed kept file is never cut
    raw = read_bytes(path)
    rows, good = [], 0
    for number, line in enumerate(raw.splitlines(keepends=True), 1):
        if not line.endswith(b"\n"):
            break  # the torn last line
        if line.strip():
            try:
                rows.append(_loads(line))
            except ValueError as e:
                after = raw.count(b"\n") - number
                raise RunDirError(
                    f"{path}:{number}: malformed JSON line ({e}); the {after} "
                    "line(s) after it are intact. Nothing was changed: fix or delete that line "
                    "by hand (keep a copy first), then rerun.") from None
            if not isinstance(rows[-1], dict):
                raise RunDirError(f"{path}:{number}: a JSON line that is not an object; "
                                  "fix or delete that line by hand, then rerun.")
        good += len(line)
    if repair and good < len(raw):
        with open(path, "r+b") as f:
            f.truncate(good)
    return rows


# A record's schema_version. 1: the first contract, which gained fields while keeping its number
# (endpoint, think, ttft_answer_ms, chunks by kind, thinking_chars, new_connection, connect_ms,
# itl_ms.n, prompt_cache, worker_*): a v1 record may lack any of them. 2: every field of
# schemas/record.schema.json is present (null where it does not apply).
RECORD_VERSION = 2
# What a v1 record may lack, and the value that means "not recorded" for it.
V1_OPTIONAL = {"endpoint": "generate", "think": None, "ttft_answer_ms": None, "chunks_thinking": None,
               "chunks_answer": None, "thinking_chars": None, "new_connection": None, "connect_ms": None}


class RecordVersionError(RunDirError):
    """A record of a schema_version this langbench cannot read (a newer one, or none)."""


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """records.jsonl of any known version, each record as the current version reads it: a v1
    record gets the fields it predates (V1_OPTIONAL; `schema_version` keeps saying 1, so the
    report can tell). A record of an unknown version is a RecordVersionError naming the file,
    the line and the version; nothing is changed."""
    rows = read_jsonl(path, repair=repair)
    for number, rec in enumerate(rows, 1):
        version = rec.get("schema_version")
        if version == 1 and not isinstance(version, bool):  # true == 1 in Python; it is no version
            for key, value in V1_OPTIONAL.items():
                rec.setdefault(key, value)
        elif version != RECORD_VERSION:
            raise RecordVersionError(
                f"{path}: record {number} ({rec.get('run_id', 'no run_id')}) has schema_version "
                f"{version!r}; this langbench reads versions 1 to {RECORD_VERSION}. Render it with "
                "the langbench that wrote it (its commit is in manifest.json), or upgrade.")
    return rows


def write_json(path: Path, doc: dict) -> None:
    """Write via a temporary file and rename: readers see the old or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, user_file_mode())
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
    return json.loads(read_bytes(path).decode("utf-8"))


@contextlib.contextmanager
def _holding(lock_path: Path, line: str, busy) -> Iterator[None]:
    """Hold `lock_path`'s exclusive flock with `line` written in it (who holds it); where another
    process holds it, `busy(its line)` first: it raises to give up, or returns to wait for it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, user_file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            free = True
        except BlockingIOError:
            free = False
        if not free:  # outside the except: what busy raises is its own error, not a BlockingIOError's
            busy(os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{line} (pid {os.getpid()})\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(run_dir: Path, what: str) -> Iterator[None]:
    """Hold the run directory's exclusive lock (flock on run_dir/.lock) for `what` (sweep,
    render); a second holder gets a RunDirError at once, never a wait or a mixed file."""
    run_dir.mkdir(parents=True, exist_ok=True)

    def busy(holder: str) -> None:
        raise RunDirError(f"{run_dir}: in use by {holder}; wait for it to end, or use another --run-id")
    with _holding(run_dir / ".lock", f"langbench {what}", busy):
        yield


@contextlib.contextmanager
def building(lock_path: Path, what: str, waiting=None) -> Iterator[None]:
    """Hold `lock_path`'s exclusive flock while `what` is built into a cache, waiting first for
    another process that holds it (its own build of the same thing): `waiting(holder)` is called
    once if so, with the holder's line. The caller checks again for what it builds once it holds
    the lock. Released when the block ends, however the process ends."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with _holding(lock_path, what, waiting or (lambda holder: None)):
        yield


def build_holder(lock_path: Path) -> str | None:
    """Who holds `lock_path` (storage.building), or None if nobody does now."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)


def wait_built(lock_path: Path, timeout_s: float) -> str | None:
    """Wait until nobody holds `lock_path` (a build in another process), at most `timeout_s`
    seconds (then TimeoutError naming the holder). Returns the holder it waited for, None if
    there was none."""
    holder = build_holder(lock_path)
    deadline = time.monotonic() + timeout_s
    while build_holder(lock_path) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{holder} still holds {lock_path} after {timeout_s:.0f} s")
        time.sleep(0.5)
    return holder
