"""Shared fixtures: one real embedded Ollama for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from langbench.run import agents, server
from cli_runs import sweep_fixture
import lanes
import sampling


def pytest_report_header(config):
    return sampling.describe()


def pytest_configure(config):
    """In a worker of `pytest -n N` (make test): its lane, a CPU and a model store of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:  # the controller, before any worker starts: one file order for all lanes
        os.environ[lanes.BUILD_PENDING_ENV] = "1" if lanes.llama_server_pending() else "0"
    config.stash[LANE] = lanes.enter(worker) if worker else None


def pytest_unconfigure(config):
    lanes.leave(config.stash.get(LANE, None))


LANE = pytest.StashKey()


@pytest.fixture(scope="session")
def ollama(tmp_path_factory) -> server.Server:
    """The real embedded Ollama serving the embedded default model; stopped at the end."""
    log = tmp_path_factory.mktemp("ollama") / "ollama.log"
    with server.ollama_server("embedded", log_path=log) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One uninterrupted sweep of tests/fixtures/tiny.yaml, shared read-only (tests that change
    a run copy it first), by every lane of make test (lanes.once)."""
    return lanes.once(tmp_path_factory, "tiny", lambda folder: sweep_fixture("tiny.yaml", folder, "ref"))


@pytest.fixture(scope="session")
def agent_commands() -> dict[str, list[str]]:
    """How to launch each agent, as the sweep does."""
    return {agent: agents.command(agent) for agent in ("python", "rust")}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        lanes.heaviest_first(items)  # in lanes, files go out heaviest first (lanes.FILE_SECONDS)
    for item in items:
        if {"ollama", "tiny_run"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
