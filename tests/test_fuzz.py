"""Bad input, tried at scale (issue 8 part 10): property-based fuzzing of the parameter loader
and of both agents' jobs loaders, with random documents and mutations of valid ones.

Each input ends in a verdict and a message, never a traceback, a panic or a run directory.
How many inputs were tried is printed (pytest -s shows it) and kept in FUZZ_COUNTS.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from langbench.run import params as params_mod
from langbench import cli, paths, schemas, stop, storage
from langbench.run import plan, sweep

FIXTURES = Path(__file__).parent / "fixtures"
TINY_DOC = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())
FUZZ_COUNTS: dict[str, int] = {}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)


def _paths(doc, prefix=()):
    """Every key path in a nested document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw, valid: dict):
    """A valid document with one to three edits: a value replaced, a key deleted or added."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        spots = [p for p in _paths(doc) if p]
        if not spots:
            break
        where = draw(st.sampled_from(spots))
        parent = doc
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[where[-1]] = draw(json_values)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
        else:
            parent.append(draw(json_values))
    return doc


def _count(name: str) -> None:
    FUZZ_COUNTS[name] = FUZZ_COUNTS.get(name, 0) + 1


# --- the parameter loader --------------------------------------------------------------------

param_docs = st.one_of(mutated(TINY_DOC), json_values,
                       st.text(max_size=80).map(lambda t: ("raw", t)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=param_docs)
def test_any_parameter_document_loads_or_is_a_params_error(doc):
    _count("parameters (in process)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        text = doc[1] if isinstance(doc, tuple) else yaml.safe_dump(doc)
        path.write_text(text, encoding="utf-8")
        (Path(tmp) / "prompts").mkdir()
        try:
            loaded = params_mod.load(path)
        except params_mod.ParamsError as e:
            assert str(path) in str(e)
            return
        batches = plan.build(loaded)  # a document that loads must plan
        assert batches and all(b.runs for b in batches)
        for b in batches[:4]:
            assert schemas.problems("jobs", plan.jobs_document(loaded, b, list(b.runs))) == []
        outputs = Path(tmp) / "outputs"
        try:
            sweep.prepare(path, "fuzz", outputs)
        except params_mod.ParamsError:
            pass
        assert not outputs.exists(), "prepare wrote a run directory"


SUBPROCESS_CHECKS = 3  # the first bad files also go through a real `python -m langbench` process


def _cli_in_process(args: list[str]) -> tuple[int, str]:
    """`python -m langbench ARGS` in this process: cli.main's return value (the exit code:
    langbench/__main__.py exits with it) and what it wrote to stderr. The signal handlers
    that cli.main installs are put back afterwards."""
    saved = {s: signal.getsignal(s) for s in stop.SIGNALS}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            code = cli.main(args)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    return code, err.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated(TINY_DOC))
def test_a_bad_parameter_file_through_the_cli_exits_2_with_a_message(doc):
    """Through cli.main in this process (0.7 s of interpreter start-up each saved), the first
    SUBPROCESS_CHECKS bad files through a real process as well: the same verdict both ways."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(yaml.safe_dump(doc), encoding="utf-8")
        try:
            params_mod.load(path)
            return  # valid: the CLI would start a real sweep; the in-process test covers it
        except params_mod.ParamsError:
            pass
        _count("parameters (CLI)")
        run_id = f"fuzz-{uuid.uuid4().hex[:12]}"
        code, stderr = _cli_in_process(["sweep", str(path), "--run-id", run_id])
        assert code == 2, stderr
        assert stderr.startswith("langbench: bad input: ") and "Traceback" not in stderr
        assert not (paths.OUTPUTS / run_id).exists()
        if FUZZ_COUNTS.get("parameters (CLI, own process)", 0) < SUBPROCESS_CHECKS:
            _count("parameters (CLI, own process)")
            outputs = Path(tmp) / "outputs"
            done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(path), "--run-id", "x"],
                                  capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "LANGBENCH_OUTPUTS": str(outputs)})
            assert done.returncode == 2, done.stderr
            assert done.stderr == stderr.replace(run_id, "x") and "Traceback" not in done.stderr
            assert not outputs.exists()


# --- the agents' jobs loaders -------------------------------------------------------------------

VALID_JOBS = {"schema_version": 1, "model": "m", "prompts": ["Hello"], "raw": True, "timeout_s": 5,
              "runs": [{"run_id": "r1", "prompt": 0, "options": {"num_predict": 1},
                        "keep_alive": -1, "warmup": False}]}
jobs_docs = st.one_of(mutated(VALID_JOBS), mutated(VALID_JOBS), json_values,
                      st.binary(max_size=40).map(lambda b: ("raw", b)))


# What the fuzzing found (both agents accepted these, which the schema rejects, and the Python
# agent crashed on the first): kept as explicit examples.
EMPTY_MODEL = {**VALID_JOBS, "model": ""}
EMPTY_RUN_ID = {**VALID_JOBS, "runs": [{**VALID_JOBS["runs"][0], "run_id": ""}]}
NOT_UTF8 = ("raw", b"\x80")
BOOL_VERSION = {**VALID_JOBS, "schema_version": True}  # == 1 in Python, not an integer in JSON Schema (found by this fuzz)
ZERO_TIMEOUT = {**VALID_JOBS, "timeout_s": 0}  # the schema's exclusiveMinimum; the Python agent took it (found by this fuzz)


def _closed_port() -> str:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


def _agent_verdict(command: list[str], doc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        jobs, out = Path(tmp) / "jobs.json", Path(tmp) / "out.jsonl"
        jobs.write_bytes(doc[1] if isinstance(doc, tuple) else json.dumps(doc).encode())
        done = subprocess.run([*command, "--host", _closed_port(), "--jobs", str(jobs), "--out", str(out)],
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in done.stderr and "panicked" not in done.stderr, done.stderr
        schema_ok = isinstance(doc, dict) and schemas.problems("jobs", doc) == []
        if done.returncode == 2:
            assert str(jobs) in done.stderr, done.stderr  # the message names the file
            assert not out.exists(), "a rejected jobs file wrote records"
            return
        # accepted: the schema must agree, and every run is recorded (a connect error here)
        assert done.returncode == 1, (done.returncode, done.stderr)
        assert schema_ok, f"the agent accepted a jobs file the schema rejects: {doc!r}"
        records = storage.read_jsonl(out)  # str.splitlines() would split at U+2028, U+0085 in strings
        assert [r["run_id"] for r in records] == [r["run_id"] for r in doc["runs"]]
        assert all(r["outcome"] == "error" and r["error"]["kind"] == "connect" for r in records)


@pytest.mark.parametrize("agent, examples", [("python", 60), ("rust", 300)])
def test_each_agent_rejects_bad_jobs_with_exit_2_or_records_every_run(agent_commands, agent, examples):
    """The Python agent starts in ~0.5 s, the Rust one in ~2 ms: each gets what fits."""
    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=jobs_docs)
    @example(doc=EMPTY_MODEL)
    @example(doc=EMPTY_RUN_ID)
    @example(doc=NOT_UTF8)
    @example(doc=BOOL_VERSION)
    @example(doc=ZERO_TIMEOUT)
    def fuzz(doc):
        _count(f"{agent} agent jobs")
        _agent_verdict(agent_commands[agent], doc)
    fuzz()


def test_zz_report_how_many_inputs_were_fuzzed(capsys):
    """Prints the counts (run last in this module); fails if a fuzz test ran nothing."""
    if not FUZZ_COUNTS:
        pytest.skip("run with the fuzz tests to see the counts")
    with capsys.disabled():
        print("\nfuzzed inputs: " + ", ".join(f"{k} {v}" for k, v in FUZZ_COUNTS.items()))
    assert all(v > 0 for v in FUZZ_COUNTS.values())
