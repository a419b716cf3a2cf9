"""Sessions at scale on the replay server (issue 41): a short sweep of every client at N = 1, 8 and
64 on /api/chat and /v1/chat/completions, and its scale notebook with knees and CIs. What is
asserted holds on any host: outcomes, counts, stamps on one clock, what the notebook shows."""

from __future__ import annotations

import collections
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runs import sweep_fixture
from langbench import storage
from langbench.analysis import scale
from langbench.analysis.findings import Run

pytestmark = pytest.mark.server
CLIENTS = ("python", "python-tuned", "python-raw", "rust")


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    return sweep_fixture("tiny-scale.yaml", tmp_path_factory.mktemp("scale"), "scale")


def test_every_client_holds_every_session_asked_on_both_endpoints(scaled):
    records = [r for r in storage.read_jsonl(scaled / "records.jsonl") if r["phase"] == "measured"]
    ok = collections.Counter((r["agent"], r["endpoint"], r["concurrency"]) for r in records if r["outcome"] == "ok")
    # the knee rule (stop: {rule: knee}) may skip a client's batches past its decided knees: one a cell stays
    manifest = storage.read_json(scaled / "manifest.json")
    skipped = set(manifest["stopping"]["skipped"])
    planned = storage.read_json(scaled / "plan.json")["batches"]
    assert len({p["batch_id"] for p in storage.read_jsonl(scaled / "processes.jsonl")}) == len(planned) - len(skipped)
    for client in CLIENTS:
        for endpoint in ("chat", "openai-chat"):
            for n in (1, 8, 64):
                cell = [b for b in planned if b["agent"] == client and b["config"]["endpoint"] == endpoint
                        and b["streams"] == n]
                ran = [b for b in cell if b["batch_id"] not in skipped]
                assert len(cell) == 4 and len(ran) in (1, 4), (client, endpoint, n)  # 2 rounds x 2 modes
                assert ok[(client, endpoint, n)] == len(ran) * 2 * n, (client, endpoint, n)  # x 2 repetitions
    if skipped:  # only where the look before that level found the client's knees decided below it
        looks = {x["n"]: x["decided"] for x in manifest["stopping"]["looks"]}
        for b in planned:
            if b["batch_id"] in skipped:
                assert f"{b['agent']} {b['config']['endpoint']}" in looks[b["streams"]]
    level = {b["batch_id"]: b["streams"] for b in planned}
    ran_levels = [level[p["batch_id"]] for p in storage.read_jsonl(scaled / "processes.jsonl")]
    assert ran_levels == sorted(ran_levels)  # the ladder: every batch of a level before the next level
    assert all(r["lag_ms"] is not None and r["lag_ms"]["first"] >= 0 for r in records)
    assert all(r["lag_ms"]["send"] is not None and r["lag_ms"]["send"] >= 0 for r in records)  # the arrival stamp
    b = scale.batches(Run.load(scaled))
    assert not b["failed"].any()
    assert (b["added_basis"] == "stamps").all()  # the added time is measured on the stamps, send delay included
    at64 = b[b["concurrency"] == 64]
    assert (at64["in_flight_max"] > 8).all()  # the sessions were in flight together, not one after another
    assert (b["cpu_ms_per_token"] > 0).all()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_scale_notebook_renders_the_knees_with_cis(scaled):
    k = scale.knee_table(scale.batches(Run.load(scaled)))
    assert set(k["agent"]) == set(CLIENTS) and set(k["endpoint"]) == {"chat", "openai-chat"}
    assert k["knee"].str.match(r"N = \d+|none up to N = 64").all(), k["knee"].tolist()
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(scaled)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    page = (scaled / "html" / "scale-nocode.html").read_text()
    assert "knee at 1 %: sessions" in page and "Traceback" not in page
    index = (scaled / "index.html").read_text()
    assert "no server-side finding comes from this run" in index and "language matters less than expected" in index


KEPT = Path(__file__).resolve().parent.parent / "results" / "scale-cpu"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_kept_scale_run_renders_each_clients_knee_here(tmp_path):
    """results/scale-cpu (`make report PARAMS=parameters/scale.yaml` on a 2-core EPYC, records and
    plan kept as .xz): the four clients at N = 1 … 1,024 on /api/chat and /v1/chat/completions,
    rendered on this machine. Each client has a knee or a "none up to"; the SDK client's knee is
    decided (a CI) and comes no later than the raw client's; the knee rule skipped only batches
    of clients whose knees were decided below; CPU per token is there at every N."""
    import shutil
    run = tmp_path / KEPT.name
    shutil.copytree(KEPT, run)
    manifest = storage.read_json(run / "manifest.json")
    assert manifest["complete"] and manifest["stopping"]["rule"] == "knee"
    looks = {x["n"]: x["decided"] for x in manifest["stopping"]["looks"]}
    planned = storage.read_json(run / "plan.json")["batches"]
    for b in planned:
        if b["batch_id"] in set(manifest["stopping"]["skipped"]):
            assert f"{b['agent']} {b['config']['endpoint']}" in looks[b["streams"]]
    done = subprocess.run([sys.executable, "-m", "langbench", "render", str(run)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    b = scale.batches(Run.load(run))
    assert set(b["concurrency"]) == {1, 16, 128, 1024} and set(b["agent"]) == set(CLIENTS)
    assert (b["added_basis"] == "stamps").all() and not b["failed"].any()
    cpu = b.groupby(["agent", "concurrency"])["cpu_ms_per_token"].median()
    assert (cpu > 0).all() and len(cpu) == 4 * 4
    k = scale.knee_table(b).set_index(["endpoint", "agent", "threshold"])
    for endpoint in ("chat", "openai-chat"):
        sdk = k.loc[(endpoint, "python", 0.05)]
        assert sdk["knee"].startswith("N = ") and sdk["tps_received_ci_low"] > 0, sdk  # decided, with its CI
        raw = k.loc[(endpoint, "python-raw", 0.05)]
        assert raw["knee"].startswith("none up to") or raw["knee_n"] >= sdk["knee_n"], (sdk, raw)
    page = (run / "html" / "scale-nocode.html").read_text()
    assert "knee at 1 %: sessions" in page and "Traceback" not in page
