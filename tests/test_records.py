"""Records say their version (issue 22, item 5): every stored run stays readable, a record of
an unknown version is a named error (exit 2), and what the clients write is the current one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from langbench import paths, schemas, storage
from langbench.analysis import metrics
from langbench.report import render as report

FIXTURES = Path(__file__).parent / "fixtures"
V1_EARLIEST = FIXTURES / "runs" / "v1-2026-11-28-gpu"  # before endpoint, think, chunks by kind
V1_KEPT = paths.ROOT / "results" / "tr112-gpu-h200x2"  # v1 with every field of its day


def test_the_record_schema_is_the_current_version():
    doc = json.loads((paths.SCHEMAS / "record.schema.json").read_text())
    assert doc["properties"]["schema_version"] == {"const": storage.RECORD_VERSION} == {"const": 2}


@pytest.mark.parametrize("run_dir", [V1_EARLIEST, V1_KEPT], ids=["v1-earliest", "v1-kept"])
def test_every_stored_version_1_run_reads_with_its_derived_metrics(run_dir):
    raw = storage.read_jsonl(run_dir / "records.jsonl")
    assert {r["schema_version"] for r in raw} == {1}
    df = metrics.load_run(run_dir)
    assert len(df) == len(raw) and set(df["schema_version"]) == {1}
    ok = df[df["outcome"] == "ok"]
    assert len(ok) > 0 and (ok["throughput_tps"] > 0).all() and ok["client_overhead_ms"].notna().all()
    assert set(df["endpoint"]) == {"generate"}  # a v1 record without one was a /api/generate run


def test_the_earliest_version_1_run_renders(tmp_path):
    run = tmp_path / V1_EARLIEST.name
    shutil.copytree(V1_EARLIEST, run)
    assert report.render(run, notebooks=("sweep", "throughput")) == 0
    page = (run / "html" / "throughput-nocode.html").read_text()
    assert "c11" in page and "Traceback" not in page


def test_a_record_of_an_unknown_version_is_a_named_error_with_exit_2(tmp_path):
    run = tmp_path / "future"
    shutil.copytree(V1_EARLIEST, run)
    lines = (run / "records.jsonl").read_text().splitlines()
    rec = json.loads(lines[3])
    rec["schema_version"] = 99
    lines[3] = json.dumps(rec)
    (run / "records.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(storage.RecordVersionError, match=r"record 4 .* schema_version 99"):
        metrics.load_run(run)
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "records.jsonl" in done.stderr and "schema_version 99" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (run / "html").exists() and not (run / "index.html").exists()  # nothing half-written


def test_a_record_without_a_version_is_named_too(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps({"run_id": "x"}) + "\n")
    with pytest.raises(storage.RecordVersionError, match="schema_version None"):
        storage.read_records(path)
    path.write_text(json.dumps({"run_id": "x", "schema_version": True}) + "\n")  # == 1 in Python
    with pytest.raises(storage.RecordVersionError, match="schema_version True"):
        storage.read_records(path)


def test_a_current_record_is_read_as_written(tiny_run):
    raw = storage.read_jsonl(tiny_run / "records.jsonl")
    assert {r["schema_version"] for r in raw} == {storage.RECORD_VERSION}
    assert storage.read_records(tiny_run / "records.jsonl") == raw
    assert all(schemas.problems("record", {k: v for k, v in r.items() if k in RECORD_KEYS}) == [] for r in raw)


RECORD_KEYS = set(json.loads((paths.SCHEMAS / "record.schema.json").read_text())["properties"])


def test_a_kept_runs_compressed_files_read_as_the_plain_ones(tmp_path):
    """A run kept under results/ may hold records.jsonl and plan.json as .xz twins: every reader
    reads them as written; a plain file wins where both exist; a compressed one is never cut."""
    import lzma
    rows = [{"a": 1}, {"b": [2, 3]}]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "records.jsonl.xz").write_bytes(lzma.compress(text.encode() + b'{"torn'))
    (tmp_path / "plan.json.xz").write_bytes(lzma.compress(b'{"batches": []}'))
    assert storage.exists(tmp_path / "records.jsonl") and not (tmp_path / "records.jsonl").exists()
    assert storage.read_jsonl(tmp_path / "records.jsonl", repair=True) == rows  # the torn tail dropped
    assert lzma.decompress((tmp_path / "records.jsonl.xz").read_bytes()).endswith(b'{"torn')  # not cut
    assert storage.read_json(tmp_path / "plan.json") == {"batches": []}
    (tmp_path / "plan.json").write_text('{"batches": [1]}')
    assert storage.read_json(tmp_path / "plan.json") == {"batches": [1]}
    assert storage.read_jsonl(tmp_path / "missing.jsonl") == [] and not storage.exists(tmp_path / "missing.jsonl")
