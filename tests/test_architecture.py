"""The floors import downward only (pyproject.toml, [tool.importlinter]; DESIGN.md, "Layout"):
run/ writes a run, analysis/ reads it, report/ shows it, and the notebooks stand on report/ and
analysis/."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path

from langbench import paths
from langbench.analysis import metrics
from langbench.run import batches

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# What a notebook may import: the reading floors, and the one entry by which the sweep notebook
# (params_file set) runs a sweep as `python -m langbench sweep` does.
NOTEBOOK_FLOORS = ("langbench.report", "langbench.analysis")
NOTEBOOK_ENTRIES = {("langbench.cli", "run_into")}


def test_every_import_points_down_and_none_goes_round(tmp_path):
    """lint-imports checks every contract; a broken one names the importer, the imported module
    and the line (e.g. `langbench.analysis.metrics -> langbench.run.plan (l.22)`)."""
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(paths.ROOT / "pyproject.toml")],
                          cwd=paths.ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout, done.stdout[-6000:]


def _notebook_imports(notebook: Path) -> list[tuple[str, str]]:
    """(module, name) for each langbench import in the notebook's code cells."""
    found = []
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("langbench"):
                found += [(node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(a.name, "") for a in node.names if a.name.startswith("langbench")]
    return found


def test_the_notebooks_import_only_report_and_analysis():
    notebooks = sorted(paths.NOTEBOOKS.glob("*.ipynb"))
    assert notebooks
    wrong = []
    for nb in notebooks:
        imports = _notebook_imports(nb)
        assert imports, nb.name  # a notebook that imports nothing of langbench reads nothing
        for module, name in imports:
            full = f"{module}.{name}" if name else module
            if (module, name) in NOTEBOOK_ENTRIES:
                continue
            if not any(full == f or full.startswith(f + ".") for f in NOTEBOOK_FLOORS):
                wrong.append(f"{nb.name}: from {module} import {name}" if name else f"{nb.name}: import {module}")
    assert not wrong, wrong


def test_the_notebook_check_catches_a_notebook_that_imports_the_runner(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": ["from langbench.run import sweep\n", "import langbench.gpuhost.bundle"],
                     "metadata": {}, "outputs": [], "execution_count": None}]}
    (tmp_path / "x.ipynb").write_text(json.dumps(nb))
    assert _notebook_imports(tmp_path / "x.ipynb") == [("langbench.run", "sweep"), ("langbench.gpuhost.bundle", "")]


def test_the_runners_failure_counts_are_the_analysis_counts():
    """batches.failure_counts (run/, no pandas) gives the manifest what metrics gives the report:
    the same numbers and the same order of kinds (most first, ties as the records show them)."""
    rng = random.Random(23)
    for _ in range(20):
        records, seen = [], set()
        for _ in range(rng.randrange(0, 80)):
            key = (f"r{rng.randrange(25)}", rng.randrange(1, 4))
            if key in seen:
                continue
            seen.add(key)
            ok = rng.random() < 0.6
            records.append({"run_id": key[0], "attempt": key[1], "outcome": "ok" if ok else "error",
                            "phase": "measured", "mode": "chimera",
                            "error": None if ok else {"kind": rng.choice(["http_500", "timeout", "crash", None])}})
        attempts = metrics.frame(records)
        if not attempts.empty:
            attempts["order_key"] = range(len(attempts))
        final = metrics.final_attempts(attempts)
        failed = final[final["outcome"] != "ok"] if len(final) else final
        failed_attempts = attempts[attempts["outcome"] != "ok"] if len(attempts) else attempts
        expected = {"failed_runs": len(failed), "failed_attempts": len(failed_attempts),
                    "recovered_on_retry": len(set(failed_attempts.get("run_id", [])) - set(failed.get("run_id", []))),
                    "failed_by_kind": failed["error_kind"].value_counts().to_dict() if len(failed) else {},
                    "failed_attempts_by_kind": (failed_attempts["error_kind"].value_counts().to_dict()
                                                if len(failed_attempts) else {})}
        got = batches.failure_counts(records)
        assert got == expected
        assert [list(got[k]) for k in ("failed_by_kind", "failed_attempts_by_kind")] == \
            [list(expected[k]) for k in ("failed_by_kind", "failed_attempts_by_kind")]
