"""One notebook of notebooks/ executed into a folder (papermill) and rendered to HTML, full and
code-free (nbconvert): for the report (render.py) and for a comparison of two runs (compare).

A report runs several notebooks one after another on each of its lanes (render.py), and a
kernel's start-up and its imports (ipykernel, pandas, scipy, statsmodels, matplotlib: about 3 s
of CPU on this project's 2-core machines) are most of a thin notebook's cost. So a `Kernel`
keeps one python3 kernel for the notebooks of one lane: before each notebook after the first it
closes every figure and resets the kernel's namespace (IPython's `reset(new_session=True)`: no
variable, import name or history of the notebook before is left, and execution counts start at
1 again), so a notebook that needs a name it does not define fails here as it would alone. What
stays is what a fresh kernel would rebuild the same way: the modules already imported.
"""

from __future__ import annotations

import functools
from pathlib import Path

from langbench import paths

# Run silently in a reused kernel before its next notebook (see the module's docstring).
_RESET = ("import matplotlib.pyplot as _langbench_plt\n_langbench_plt.close('all')\n"
          "get_ipython().reset(new_session=True, aggressive=False)\n")


class Kernel:
    """A python3 kernel that executes notebooks one after another, from one thread (its
    asyncio loop is that thread's). Started by the first notebook; a kernel that died is
    replaced by a fresh one for the next. `close()` shuts it down (idempotent)."""

    def __init__(self) -> None:
        self._km = None

    def execute(self, name: str, run_dir: Path, parameters: dict | None = None) -> Path:
        from jupyter_core.utils import run_sync
        if self._km is not None:
            if run_sync(self._km.is_alive)():
                self._reset()
            else:  # a notebook killed it: the next one gets a new kernel
                self.close()
        if self._km is None:
            from jupyter_client.manager import AsyncKernelManager
            self._km = AsyncKernelManager(kernel_name="python3")  # started by nbclient's setup_kernel
        return execute(name, run_dir, parameters, km=self._km)

    def _reset(self) -> None:
        from jupyter_core.utils import run_sync
        kc = self._km.client()
        kc.start_channels()
        try:
            run_sync(kc.wait_for_ready)(timeout=60)
            reply = run_sync(kc.execute_interactive)(_RESET, silent=True, store_history=False,
                                                     timeout=60, allow_stdin=False)
        finally:
            kc.stop_channels()
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the kernel's reset failed: {reply['content'].get('evalue')}")

    def close(self) -> None:
        km, self._km = self._km, None
        if km is not None and km.has_kernel:
            from jupyter_core.utils import run_sync
            run_sync(km.shutdown_kernel)(now=True)


def execute(name: str, run_dir: Path, parameters: dict | None = None, km=None) -> Path:
    """Execute notebooks/<name>.ipynb into <run_dir>/notebooks with papermill; its parameters
    are `parameters`, or (None) the run directory itself. `km`: the kernel manager to run it on
    (a `Kernel`'s); None: a kernel of its own, shut down at the end."""
    import papermill as pm
    if km is not None:
        _register_engine()
    out = run_dir / "notebooks" / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    # the kernel starts in the repo root (nbclient's resources path), not through papermill's
    # cwd=, which chdirs the whole process: notebooks run in threads side by side (_render)
    pm.execute_notebook(str(paths.NOTEBOOKS / f"{name}.ipynb"), str(out),
                        parameters={"run_dir": str(run_dir.resolve())} if parameters is None else parameters,
                        kernel_name="python3", progress_bar=False,
                        engine_name=None if km is None else _KEPT_KERNEL,
                        resources={"metadata": {"path": str(paths.ROOT)}},
                        # the kernel's own log is noise here: "running over TCP without encryption",
                        # and "KeyboardInterrupt caught" as jupyter_client interrupts every kernel
                        # it shuts down; a cell's error is in the notebook and fails the render
                        extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                        **({} if km is None else {"km": km}))
    return out


_KEPT_KERNEL = "langbench-kept-kernel"


@functools.cache
def _register_engine() -> None:
    """Once: papermill's nbclient engine on a kernel manager it does not own: nbclient then leaves
    the kernel running, and this engine closes the client's channels, which it would not."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import Engine, papermill_engines
    from papermill.log import logger
    from papermill.utils import remove_args

    class KeptKernelEngine(Engine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                     stderr_file=None, start_timeout=60, execution_timeout=None, **kwargs):
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            client = PapermillNotebookClient(nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
                                             kernel_name=kernel_name, log=logger, log_output=log_output, stdout_file=stdout_file,
                                             stderr_file=stderr_file, **kwargs)
            try:
                return client.execute()
            finally:
                if client.kc is not None:
                    client.kc.stop_channels()

    papermill_engines.register(_KEPT_KERNEL, KeptKernelEngine)


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
