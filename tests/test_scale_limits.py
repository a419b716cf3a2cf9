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


def _excluding(tmp_path, exclude):
    doc = yaml.safe_load((paths.ROOT / "tests" / "fixtures" / "tiny-concurrency.yaml").read_text())
    doc["exclude"] = exclude
    out = tmp_path / "exclude.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def test_exclude_leaves_an_agent_out_of_the_cells_it_names_and_nothing_else():
    """parameters/scale.yaml runs python-tuned on /v1 only: its plan has no python-tuned batch on
    /api/chat, and every other agent × endpoint × N cell keeps all its batches."""
    from collections import Counter
    from langbench.run import plan
    p = params.load(paths.ROOT / "parameters" / "scale.yaml")
    batches = Counter((b.agent, b.config["endpoint"], b.config["concurrency"]) for b in plan.build(p))
    assert not [k for k in batches if k[:2] == ("python-tuned", "chat")]
    cells = {(e, n) for _, e, n in batches}
    for agent in p.agents:
        for endpoint, n in cells:
            want = 0 if (agent, endpoint) == ("python-tuned", "chat") else p.batches * 2  # x 2 modes
            assert batches[(agent, endpoint, n)] == want, (agent, endpoint, n)


def test_exclude_names_only_this_files_agents_and_levels_and_never_a_whole_agent(tmp_path):
    for exclude, words in (([{"agent": "go"}], "exclude[0].agent: 'go' is not a level"),
                           ([{"endpoint": "chat"}], "exclude[0].endpoint: not an agent or factor"),
                           ([{"agent": "rust", "concurrency": 5}], "exclude[0].concurrency: 5 is not a level"),
                           ([{"agent": "rust"}], "leaves agent rust no cell to run")):
        try:
            params.load(_excluding(tmp_path, exclude))
        except params.ParamsError as e:
            assert words in str(e), (exclude, str(e))
        else:
            raise AssertionError(f"exclude {exclude} was accepted")
    done = subprocess.run([sys.executable, "-m", "langbench", "sweep", str(_excluding(tmp_path, [{"agent": "go"}]))],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "exclude[0].agent" in done.stderr
    ok = params.load(_excluding(tmp_path, [{"agent": "rust", "concurrency": 3}]))
    assert ok.excluded("rust", {"concurrency": 3, "temperature": 0.6})
    assert not ok.excluded("rust", {"concurrency": 1, "temperature": 0.6})
    assert not ok.excluded("python", {"concurrency": 3, "temperature": 0.6})
