"""The project's own files agree with each other."""

from __future__ import annotations

import re
import tomllib

import yaml

from langbench import paths


def test_environment_yml_pins_the_same_packages_as_pyproject():
    pyproject = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())
    pinned = set(pyproject["project"]["dependencies"])
    env = yaml.safe_load((paths.ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {p for p in pip if "==" in p} == pinned
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", p) for p in pinned)


def test_ci_runs_make_test():
    assert "make test" in (paths.ROOT / ".ci" / "run").read_text()


def test_constraints_lock_every_direct_pin_at_the_same_version():
    pyproject = tomllib.loads((paths.ROOT / "pyproject.toml").read_text())
    locked = dict(line.split("==") for line in (paths.ROOT / "constraints.txt").read_text().splitlines()
                  if line and not line.startswith("#"))
    locked = {k.lower().replace("_", "-"): v for k, v in locked.items()}
    for pin in pyproject["project"]["dependencies"]:
        name, version = pin.split("==")
        assert locked.get(name.lower()) == version, pin


def test_langbench_processes_import_jsonschema_without_rfc3987_syntax_and_still_validate():
    """rfc3987_syntax builds an Earley parser as it is imported (1.2 s in every CLI command and
    notebook kernel); langbench.schemas keeps it out, checks no format, and leaves it importable."""
    import subprocess
    import sys
    code = ("import sys; from langbench import schemas; "
            "assert 'rfc3987_syntax' not in sys.modules, 'imported'; "
            "assert schemas.problems('jobs', {}) and schemas.problems('jobs', {'model': 'm'}); "
            "import rfc3987_syntax; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
