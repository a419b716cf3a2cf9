"""What each endpoint and server can carry (issue 25), checked before anything runs: a factor or
fixed value that /v1 or a non-Ollama server cannot carry exits 2 naming the key and the
endpoint; what /v1 does carry is sent under its own field names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from langbench.run import params, plan
from langbench.vocab import OPENAI_FIELDS

FIXTURES = Path(__file__).parent / "fixtures"


def doc(**changes) -> dict:
    d = yaml.safe_load((FIXTURES / "tiny-endpoints.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            d.pop(key, None)
        else:
            d[key] = value
    return d


def load(tmp_path: Path, d: dict) -> params.Params:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(d))
    return params.load(path)


BAD = {
    "num_ctx_on_v1": (dict(matrix={"endpoint": ["chat", "openai-chat"], "num_ctx": [256]}),
                      "matrix.num_ctx", "openai-chat"),
    "num_gpu_in_baseline": (dict(matrix={"temperature": [0.6]}, endpoint="openai-completions", baseline={"num_gpu": 0}),
                            "baseline.num_gpu", "openai-completions"),
    "num_thread_fixed": (dict(matrix={"temperature": [0.6]}, endpoint="openai-chat",
                              fixed={"num_predict": 4, "seed": 7, "num_thread": 2}), "fixed.num_thread", "openai-chat"),
    "keep_alive_fixed": (dict(matrix={"temperature": [0.6]}, endpoint="openai-chat",
                              fixed={"num_predict": 4, "seed": 7, "keep_alive": -1}), "fixed.keep_alive", "openai-chat"),
    "raw_fixed": (dict(matrix={"endpoint": ["generate", "openai-completions"]},
                       fixed={"num_predict": 4, "seed": 7, "raw": True}), "fixed.raw", "openai-completions"),
    "think_factor": (dict(matrix={"endpoint": ["chat", "openai-chat"], "think": [True, False]}),
                     "matrix.think", "openai-chat"),
    "api_on_llama_cpp": (dict(server={"host": "embedded", "kind": ["ollama", "llama-cpp"]}),
                         "matrix.endpoint[0]", "chat"),
    "api_on_openai_server": (dict(server={"host": "http://127.0.0.1:9", "api": "openai"}, matrix={"temperature": [0.6]},
                                  endpoint="generate"), "endpoint", "generate"),
    "unknown_endpoint": (dict(matrix={"endpoint": ["chat", "openai-chats"]}), "matrix.endpoint[1]", "openai-chats"),
    "both_places": (dict(endpoint="chat"), "endpoint", "not both"),
    "kind_on_url": (dict(server={"host": "http://127.0.0.1:9", "kind": "llama-cpp"}, matrix={"temperature": [0.6]},
                         endpoint="openai-chat"), "server.kind", "embedded"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_what_an_endpoint_cannot_carry_is_refused_naming_key_and_endpoint(case, tmp_path):
    changes, key, named = BAD[case]
    with pytest.raises(params.ParamsError) as e:
        load(tmp_path, doc(**changes))
    assert f"{key}:" in str(e.value) and named in str(e.value), str(e.value)


def test_the_cli_exits_2_before_any_server_starts(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc(matrix={"endpoint": ["chat", "openai-chat"], "num_gpu": [0, 99]})))
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(path), "--run-id", "never"],
                          env={**os.environ, "LANGBENCH_OUTPUTS": str(tmp_path / "out")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "matrix.num_gpu" in done.stderr and "openai-chat" in done.stderr and "/v1/chat/completions" in done.stderr
    assert not (tmp_path / "out" / "never").exists()


def test_v1_batches_send_the_options_under_v1_names_and_api_batches_as_given(tmp_path):
    p = load(tmp_path, doc(matrix={"endpoint": ["chat", "openai-chat"], "temperature": [0.6], "top_p": [0.9]}))
    batches = plan.build(p)
    assert {b.config["endpoint"] for b in batches} == {"chat", "openai-chat"}
    for b in batches:
        jobs = plan.jobs_document(p, b, list(b.runs))
        assert jobs["endpoint"] == b.config["endpoint"] and not jobs["raw"]
        want = plan.options_for(p, b.config, b.mode)
        assert all(r["options"] == want for r in jobs["runs"])
        if b.config["endpoint"] == "openai-chat":
            assert "max_tokens" in want and "num_predict" not in want
            assert set(want) <= set(OPENAI_FIELDS.values())
            if b.mode == "chimera":
                assert want == {"temperature": 0.6, "top_p": 0.9, "max_tokens": 4, "seed": 7}
        else:
            assert "num_predict" in want and "max_tokens" not in want
        assert "endpoint" not in b.options  # a factor of where requests go, never an option


def test_server_kind_is_a_factor_each_config_has_once(tmp_path):
    p = load(tmp_path, doc(matrix={"temperature": [0.6]}, endpoint="openai-chat",
                           server={"host": "embedded", "kind": ["ollama", "llama-cpp"]}))
    cells = plan.configs(p)
    assert [c["server_kind"] for _, c in cells] == ["ollama", "llama-cpp"]
    assert all("server_kind" not in b.options for b in plan.build(p))


def test_server_kinds_are_refused_on_a_dask_cluster(tmp_path):
    path = tmp_path / "kinds.yaml"
    path.write_text(yaml.safe_dump(doc(matrix={"temperature": [0.6]}, endpoint="openai-chat",
                                       server={"host": "embedded", "kind": ["ollama", "llama-cpp"]})))
    from langbench.run import sweep
    with pytest.raises(params.ParamsError, match="server.kind"):
        sweep.run_sweep(path, "never", outputs=tmp_path / "out", cluster="local")
    assert not (tmp_path / "out" / "never").exists()


def test_v1_takes_sessions_at_scale(tmp_path):
    """Issue 41: concurrency on /v1 is no longer refused (every Python client and the Rust agent
    run N sessions on it)."""
    p = load(tmp_path, doc(matrix={"temperature": [0.6]}, endpoint="openai-chat", concurrency=[1, 64]))
    assert p.raw["concurrency"] == [1, 64]
