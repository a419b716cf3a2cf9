"""Options verified (issue 15, item 5): names checked against the pinned server's list before
anything runs, that list checked against the real server's own `invalid option provided`
warning, and after a sweep each factor checked against what the server did."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import yaml

from langbench import paths, storage
from langbench.analysis import metrics, verify
from langbench.run import params
from langbench.run.batches import Offload

FIXTURES = Path(__file__).parent / "fixtures"
VALID = {"num_ctx": 512, "num_batch": 512, "num_gpu": 0, "main_gpu": 0, "use_mmap": True, "num_thread": 2,
         "num_keep": 4, "seed": 1, "num_predict": 1, "top_k": 40, "top_p": 0.9, "min_p": 0.05,
         "typical_p": 1.0, "repeat_last_n": 64, "temperature": 0.8, "repeat_penalty": 1.1,
         "presence_penalty": 0.0, "frequency_penalty": 0.0, "stop": ["\n\n"]}


def test_misspelt_matrix_option_exits_2_naming_the_key_before_anything_runs(tmp_path):
    doc = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())
    doc["matrix"] = {"num_ctxx": [256, 1024], "keep_alive": [0, -1]}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(bad), "--run-id", "never"],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "matrix.num_ctxx" in done.stderr and "did you mean num_ctx" in done.stderr
    assert not (tmp_path / "out" / "never").exists()  # nothing ran, nothing was written
    assert time.monotonic() - start < 30  # no server was started


def test_request_fields_are_factors_but_not_baseline_options(tmp_path):
    doc = yaml.safe_load((FIXTURES / "tiny.yaml").read_text())
    doc["matrix"] = {"think": [True, False], "keep_alive": [0, "5m"]}
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump(doc))
    params.load(ok)
    doc["baseline"] = {"keep_alive": 0}
    ok.write_text(yaml.safe_dump(doc))
    try:
        params.load(ok)
        raise AssertionError("baseline.keep_alive was accepted")
    except params.ParamsError as e:
        assert "baseline.keep_alive" in str(e) and "request-level" in str(e)


def _warned(log: Path, offset: int) -> set[str]:
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return {m[1] for m in Offload.INVALID.findall(text)}


def test_option_list_is_what_the_real_server_accepts(ollama):
    """Every name in params.OLLAMA_OPTIONS passes Options.FromMap without a warning; a misspelt
    one and the request-level fields put under options are warned about (and ignored)."""
    offset = ollama.log_path.stat().st_size
    r = httpx.post(f"{ollama.url}/api/generate", timeout=120, json={
        "model": paths.EMBEDDED_MODEL, "prompt": "The", "raw": True, "stream": False, "keep_alive": -1,
        "options": {**VALID, "num_ctxx": 256, "keep_alive": 0, "think": True}})
    assert r.status_code == 200, r.text
    time.sleep(0.2)
    assert set(VALID) == params.OLLAMA_OPTIONS
    assert _warned(ollama.log_path, offset) == {"num_ctxx", "keep_alive", "think"}


def test_server_state_after_a_batch_shows_context_unloads_and_rejected_options(ollama):
    """What Offload.after_batch reads from the real server: the context length of the loaded
    model, an unload after keep_alive 0, and the options it rejected, from its log."""
    off = Offload(ollama.log_path)
    off.offset = ollama.log_path.stat().st_size
    gen = lambda options, keep_alive: httpx.post(f"{ollama.url}/api/generate", timeout=120, json={
        "model": paths.EMBEDDED_MODEL, "prompt": "The", "raw": True, "stream": False,
        "keep_alive": keep_alive, "options": {"num_predict": 1, **options}}).raise_for_status()
    gen({"num_ctx": 1024, "num_ctxx": 7}, -1)
    kept = off.after_batch(ollama.url, paths.EMBEDDED_MODEL, -1)
    assert kept["loaded"] is True and kept["context_length"] == 1024
    assert kept["invalid_options"] == ["num_ctxx"]
    gen({"num_ctx": 1024}, 0)
    gone = off.after_batch(ollama.url, paths.EMBEDDED_MODEL, 0)
    assert gone["loaded"] is False and gone["invalid_options"] == []
    gen({}, -1)  # leave it loaded with the defaults for the tests after this one


def test_factor_checks_on_a_real_sweep(tiny_run):
    """The tiny sweep (num_ctx 256 / 1024, temperature 0.6) against the embedded server:
    num_ctx applied at both levels (context length from /api/ps), temperature accepted."""
    df = metrics.load_run(tiny_run)
    procs = pd.DataFrame(storage.read_jsonl(tiny_run / "processes.jsonl"))
    checks = verify.factor_checks(df, procs, ["num_ctx", "temperature"])
    print("\n" + checks.to_string())
    ctx = checks[checks["factor"] == "num_ctx"]
    assert list(ctx["applied"]) == [verify.APPLIED, verify.APPLIED], ctx
    assert list(checks[checks["factor"] == "temperature"]["applied"]) == [verify.UNOBSERVABLE]
    assert verify.not_applied(checks) == {}


def test_a_factor_the_server_logged_as_invalid_is_not_applied():
    """A factor named in `invalid option provided` lines is not applied at any level, whatever
    else the server's state shows."""
    df = pd.DataFrame({"agent": ["python"] * 2, "mode": ["chimera"] * 2, "batch_id": ["b1", "b2"],
                       "num_ctxx": [256, 1024], "outcome": ["ok"] * 2})
    procs = pd.DataFrame({"batch_id": ["b1", "b2"],
                          "offload": [{"invalid_options": ["num_ctxx"], "loaded": True}] * 2})
    checks = verify.factor_checks(df, procs, ["num_ctxx"])
    assert list(checks["applied"]) == [verify.NOT_APPLIED] * 2
    assert "invalid option provided" in verify.not_applied(checks)["num_ctxx"]
