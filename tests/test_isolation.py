"""isolation: pinned (issue 9, item 8): disjoint CPUs for server and agents where there are enough."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from langbench.run import agents, isolation, params
from scripted import ScriptedServer
from test_agents_contract import jobs_doc

TINY = Path(__file__).parent / "fixtures" / "tiny.yaml"


def test_pinned_splits_the_cpus_in_two_disjoint_halves():
    p = isolation.plan("pinned", cpus=set(range(8)))
    assert p["applied"] and p["server_cpus"] == [0, 1, 2, 3] and p["agent_cpus"] == [4, 5, 6, 7]
    assert "server on CPUs 0–3, agents on CPUs 4–7" in p["reason"]


def test_pinned_is_not_applied_on_too_few_cpus_and_says_why():
    p = isolation.plan("pinned", cpus={0, 1})
    assert not p["applied"] and p["server_cpus"] == p["agent_cpus"] == [0, 1]
    assert "only 2 CPUs" in p["reason"]
    assert not isolation.plan("shared", cpus=set(range(8)))["applied"]


def test_the_parameter_file_takes_shared_or_pinned_only(tmp_path):
    text = (TINY).read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "isolation: apart\n")
    with pytest.raises(params.ParamsError, match="isolation"):
        params.load(bad)
    good = tmp_path / "good.yaml"
    good.write_text(text + "isolation: pinned\n")
    assert params.load(good).isolation == "pinned"
    assert params.load(TINY).isolation == "shared"


@pytest.mark.parametrize("agent", ["python", "rust"])
def test_an_agent_runs_on_the_cpus_it_is_given(agent, tmp_path):
    cpu = sorted(os.sched_getaffinity(0))[-1]
    jobs, out = tmp_path / "jobs.json", tmp_path / "out.jsonl"
    jobs.write_text(json.dumps(jobs_doc(model="scripted", runs=[
        {"run_id": "a", "prompt": 0, "options": {}, "keep_alive": -1, "warmup": False}])))
    with ScriptedServer(first_ms=50, gap_ms=5, tokens=3) as srv:
        pinned = agents.run(agent, srv.url, jobs, out, timeout=60, cpus=[cpu])
        free = agents.run(agent, srv.url, jobs, tmp_path / "free.jsonl", timeout=60)
    assert pinned.exit_code == 0 and pinned.cpus_allowed == str(cpu)
    assert free.cpus_allowed != str(cpu) or len(os.sched_getaffinity(0)) == 1
    assert pinned.startup_cpu_s is not None and 0 <= pinned.startup_cpu_s <= pinned.user_cpu_s + pinned.system_cpu_s


def test_make_tests_lanes_hand_out_the_heaviest_files_first_and_keep_each_files_order():
    import lanes
    here = Path(__file__).parent
    missing = [name for name in lanes.FILE_SECONDS if not (here / name).is_file()]
    assert not missing, f"tests/lanes.py FILE_SECONDS names files that are gone: {missing}"

    class Item:  # what heaviest_first reads of a pytest item
        def __init__(self, name, i):
            self.path, self.i = here / name, i
    items = [Item("test_servers.py", 0), Item("test_aa.py", 1), Item("test_thinking.py", 2), Item("test_aa.py", 3),
             Item("test_sweep.py", 4), Item("test_thinking.py", 5), Item("test_eta.py", 6), Item("test_servers.py", 7)]
    lanes.heaviest_first(items, build_pending=True)
    assert [(it.path.name, it.i) for it in items] == [  # test_servers.py (29 s) last: it waits for llama-server
        ("test_thinking.py", 2), ("test_thinking.py", 5), ("test_sweep.py", 4),
        ("test_aa.py", 1), ("test_aa.py", 3), ("test_eta.py", 6), ("test_servers.py", 0), ("test_servers.py", 7)]
    lanes.heaviest_first(items, build_pending=False)  # built: by its weight, before the lighter files
    assert [(it.path.name, it.i) for it in items] == [
        ("test_thinking.py", 2), ("test_thinking.py", 5), ("test_sweep.py", 4), ("test_servers.py", 0),
        ("test_servers.py", 7), ("test_aa.py", 1), ("test_aa.py", 3), ("test_eta.py", 6)]


def test_only_the_files_make_test_runs_last_start_llama_server():
    """make test builds llama-server beside the tests and runs lanes.LLAMA_SERVER_FILES last: a file
    that starts one earlier would wait for the build with the whole suite still queued behind it."""
    import re
    import lanes
    here = Path(__file__).parent
    kinds = [p.name for p in (here / "fixtures").glob("*.yaml") if re.search(r"kind:.*llama-cpp", p.read_text())]
    assert kinds, "no fixture sweeps llama-server: the pattern below no longer finds them"
    starts = re.compile("|".join([r"ensure_llama_server|LlamaCppKind|KINDS\[.llama-cpp.\]\.start",
                                  *map(re.escape, kinds)]))
    found = sorted(p.name for p in here.glob("test_*.py") if p.name != Path(__file__).name and any(
        starts.search(line) and "stand-in" not in line for line in p.read_text().splitlines()))
    assert found == sorted(lanes.LLAMA_SERVER_FILES), found


def _ask_once(root: str, out: str) -> None:  # one lane asking lanes.once (a process of its own)
    import lanes
    import time

    class Factory:  # what lanes.once reads of tmp_path_factory: a worker's own basetemp
        def getbasetemp(self):
            return Path(root) / f"popen-gw{os.getpid()}"

    def make(folder: Path) -> Path:
        with open(Path(root) / "made", "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # long enough for the other lane to ask meanwhile
        (folder / "run").mkdir()
        return folder / "run"
    os.environ["PYTEST_XDIST_WORKER"] = "gw9"
    Path(out).write_text(str(lanes.once(Factory(), "tiny", make)))


def test_what_make_tests_lanes_share_is_made_once_and_both_lanes_get_it(tmp_path):
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_ask_once, args=(str(tmp_path), str(tmp_path / f"got{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len((tmp_path / "made").read_text().split()) == 1
    got = {(tmp_path / f"got{i}").read_text() for i in range(2)}
    assert len(got) == 1 and Path(got.pop()).is_dir()


def test_pinned_gives_a_one_thread_server_one_cpu_of_two_and_the_agents_the_other():
    plan = isolation.plan("pinned", cpus={0, 1}, server_threads=1)
    assert plan["applied"] and plan["server_cpus"] == [0] and plan["agent_cpus"] == [1]
    assert not isolation.plan("pinned", cpus={0, 1})["applied"]  # Ollama computes on several threads
    assert not isolation.plan("pinned", cpus={3}, server_threads=1)["applied"]  # one CPU: nothing to split
