"""Sessions past what the host can open are refused before anything runs (issue 41, item 5)."""

from __future__ import annotations

import subprocess
import sys

import yaml

from langbench import paths
from langbench.run import params


def _file(tmp_path, n: int):
    doc = yaml.safe_load((paths.ROOT / "tests" / "fixtures" / "tiny-concurrency.yaml").read_text())
    doc["concurrency"] = [1, n]
    out = tmp_path / "many.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def test_sessions_past_the_hosts_file_descriptors_are_refused_with_exit_2_naming_the_limit(tmp_path, monkeypatch):
    limits = params.host_limits()
    assert limits["fds"] == -1 or limits["fds"] > 0
    monkeypatch.setattr(params, "host_limits", lambda: {"fds": 300, "ports": 28232})
    try:
        params.load(_file(tmp_path, 1024))
    except params.ParamsError as e:
        assert "concurrency: 1024 sessions" in str(e) and "RLIMIT_NOFILE" in str(e)
    else:
        raise AssertionError("1,024 sessions on 300 file descriptors were accepted")
    params.load(_file(tmp_path, 200))  # within the limit: accepted


def test_sessions_past_the_loopback_ports_are_refused_naming_the_range(tmp_path, monkeypatch):
    monkeypatch.setattr(params, "host_limits", lambda: {"fds": 100000, "ports": 500})
    try:
        params.load(_file(tmp_path, 1024))
    except params.ParamsError as e:
        assert "1024 sessions need 1024 loopback ports" in str(e) and "ip_local_port_range" in str(e)
    else:
        raise AssertionError("1,024 sessions on 500 ports were accepted")


def test_the_cli_refuses_an_impossible_concurrency_with_exit_2_before_anything_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(_file(tmp_path, 5000))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "concurrency" in done.stderr and "Traceback" not in done.stderr
