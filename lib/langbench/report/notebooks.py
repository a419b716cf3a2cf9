"""One notebook of notebooks/ executed into a folder (papermill) and rendered to HTML, full and
code-free (nbconvert): for the report (render.py) and for a comparison of two runs (compare)."""

from __future__ import annotations

from pathlib import Path

from langbench import paths


def execute(name: str, run_dir: Path, parameters: dict | None = None) -> Path:
    """Execute notebooks/<name>.ipynb into <run_dir>/notebooks with papermill; its parameters
    are `parameters`, or (None) the run directory itself."""
    import papermill as pm
    out = run_dir / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel starts in the repo root (nbclient's resources path), not through papermill's
    # cwd=, which chdirs the whole process: notebooks run in threads side by side (_render)
    pm.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                        parameters={"run_dir": str(run_dir.resolve())} if parameters is None else parameters,
                        kernel_name="python3", progress_bar=False,
                        resources={"metadata": {"path": str(paths.ROOT)}},
                        # the kernel's own log is noise here: "running over TCP without encryption",
                        # and "KeyboardInterrupt caught" as jupyter_client interrupts every kernel
                        # it shuts down; a cell's error is in the notebook and fails the render
                        extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    return out


def to_html(notebook: Path, html_dir: Path) -> list[Path]:
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(notebook, as_version=4)
    written = []
    for suffix, exclude in (("", False), ("-nocode", True)):
        exporter = HTMLExporter(exclude_input=exclude, exclude_input_prompt=exclude,
                                exclude_output_prompt=exclude)
        body, _ = exporter.from_notebook_node(nb)
        target = html_dir / f"{notebook.stem}{suffix}.html"
        tmp = target.with_suffix(".html.tmp")
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(target)
        written.append(target)
    return written
