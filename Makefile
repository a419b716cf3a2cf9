# langbench: every target sets up what it needs. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PARAMS ?= parameters/quick.yaml
RUN ?=
A ?=
B ?=
RUN_ID ?=
URL ?=
CLUSTER ?=
WORKERS ?=
LAB_DIR ?= notebooks
LAB_ARGS ?=
SETUP_ARGS ?=

## help: list the targets
help:
	@awk 'BEGIN{FS=": "} /^## /{sub(/^## /,""); split($$0,a,": "); printf "  make %-12s %s\n", a[1], substr($$0, length(a[1])+3)}' $(MAKEFILE_LIST)

# The venv from the pinned constraints: uv (from PyPI, pinned, kept in the per-user cache) makes
# it in seconds from its own cache; pip is the fallback when uv cannot be had or fails.
# uv leaves the .pyc files out (pip writes them). Where Python may not write them itself
# (PYTHONDONTWRITEBYTECODE, as on the CI machines) every process compiled what it imported again:
# 6.5 s to import the analysis in each notebook kernel, not 2.4 s. So every target runs with
# bytecode writes allowed (unexport below): a module is compiled once, by the first process that
# imports it. uv's --compile-bytecode compiled all of site-packages instead: 14 of the 17 s a warm
# venv took.
unexport PYTHONDONTWRITEBYTECODE
UV_VERSION := 0.13.9
CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/langbench
UV := $(CACHE)/uv-$(UV_VERSION)/bin/uv

$(VENV)/.installed: pyproject.toml constraints.txt
	@started=$$(date +%s); rm -rf $(VENV); \
	if [ -z "$(NO_UV)" ] && { [ -x $(UV) ] || $(PYTHON) -m pip install --quiet --disable-pip-version-check \
	      --target $(CACHE)/uv-$(UV_VERSION) uv==$(UV_VERSION) >/dev/null 2>&1; } && \
	   $(UV) venv --quiet --seed --python $(PYTHON) $(VENV) && \
	   $(UV) pip install --quiet --python $(PY) -c constraints.txt -e .; then how="uv $(UV_VERSION)"; \
	else echo "setup: uv unavailable or failed; installing with pip (about 2 minutes)" >&2; rm -rf $(VENV); \
	   $(PYTHON) -m venv $(VENV) && \
	   $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e . || exit 1; how=pip; fi; \
	echo "setup: venv with $$how in $$(( $$(date +%s) - started )) s" >&2
	touch $@

# The Python clients' own venv (lib/langbench/paths.py AGENT_VENV says why): the packages the
# Python agent imports, at the same pins; uv from the step above, pip where it failed.
AGENT_VENV := .venv-agent
AGENT_PACKAGES := ollama openai aiohttp uvloop

$(AGENT_VENV)/.installed: constraints.txt $(VENV)/.installed
	@started=$$(date +%s); rm -rf $(AGENT_VENV); \
	if [ -z "$(NO_UV)" ] && [ -x $(UV) ] && $(UV) venv --quiet --python $(PYTHON) $(AGENT_VENV) && \
	   $(UV) pip install --quiet --python $(AGENT_VENV)/bin/python -c constraints.txt $(AGENT_PACKAGES); then how="uv $(UV_VERSION)"; \
	else rm -rf $(AGENT_VENV); $(PYTHON) -m venv $(AGENT_VENV) && \
	   $(AGENT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt $(AGENT_PACKAGES) || exit 1; how=pip; fi; \
	echo "setup: the Python agent's venv ($(AGENT_PACKAGES)) with $$how in $$(( $$(date +%s) - started )) s" >&2
	touch $@

## setup: venvs with pinned packages, ollama binary, Gemma 3 270M, Rust agent, llama-server (idempotent)
setup: $(VENV)/.installed $(AGENT_VENV)/.installed
	$(PY) -m langbench setup $(SETUP_ARGS)

## report: sweep PARAMS (default parameters/quick.yaml) on the embedded Ollama (CLUSTER=local|tcp://… [WORKERS=N]: on Dask workers), then render the HTML report
report: setup
	$(PY) -m langbench report $(PARAMS) $(if $(RUN_ID),--run-id $(RUN_ID)) $(if $(ALLOW_MIXED),--allow-mixed) \
	  $(if $(CLUSTER),--cluster $(CLUSTER)) $(if $(WORKERS),--workers $(WORKERS))

## peers: chimeraforge, AIPerf and langbench's clients on one server, then against known delays, rendered (PARAMS default parameters/peers.yaml; URL=… another server)
peers: setup
	$(PY) -m langbench peers $(if $(filter parameters/quick.yaml,$(PARAMS)),parameters/peers.yaml,$(PARAMS)) $(if $(URL),--url $(URL)) $(if $(RUN_ID),--run-id $(RUN_ID))

## render: re-render a stored run's notebooks and HTML from its records: make render RUN=outputs/<run>
render: setup
	@test -n "$(RUN)" || { echo "make render needs RUN=outputs/<run>" >&2; exit 2; }
	$(PY) -m langbench render $(RUN)

## compare: compare two stored runs, rendered to HTML: make compare A=outputs/<run> B=outputs/<run>
compare: setup
	@test -n "$(A)" -a -n "$(B)" || { echo "make compare needs A=outputs/<run> B=outputs/<run>" >&2; exit 2; }
	$(PY) -m langbench compare $(A) $(B) $(if $(ALLOW_MODEL_MISMATCH),--allow-model-mismatch)

# make test's lanes: pytest-xdist workers, one per CPU this shell may use (at most 4), each pinned to
# its CPU with servers that compute on one thread (tests/lanes.py says why). LANES=0: one process.
LANES ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))

## test: unit, contract, integration (real Ollama), notebook and browser tests (LANES=0: serially)
# make test needs llama-server too: its setup starts the build at idle CPU priority and the tests run
# beside it, taking the CPU first; test_servers.py, the only file that starts llama-server, runs last
# and waits for the build where it is not done (provision.start_llama_server_build, tests/lanes.py)
test: SETUP_ARGS := --llama-cpp-background
test: setup browser
	$(PY) -m pytest $(if $(filter-out 0 1,$(LANES)),-n $(LANES) --dist loadfile --no-loadscope-reorder)

## lab: JupyterLab on notebooks/ (LAB_DIR, LAB_ARGS to change); as root too, as in containers
lab: setup
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "lab: running as root (usual in containers), so JupyterLab gets --allow-root" >&2; fi
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS) $(LAB_DIR)

## browser: Debian's chromium for the HTML tests (installed with apt-get when missing)
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests" >&2; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium >/dev/null; }; }

## clean: remove the venvs and every run under outputs/ (the per-user cache stays)
clean:
	rm -rf $(VENV) $(AGENT_VENV) .pytest_cache
	find outputs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +

## clean-cache: remove the per-user cache (ollama build, model, Rust agent build)
clean-cache:
	rm -rf "$${XDG_CACHE_HOME:-$$HOME/.cache}/langbench"

.PHONY: help setup report peers render compare test lab browser clean clean-cache
