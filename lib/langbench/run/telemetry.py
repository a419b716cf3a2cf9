"""GPU telemetry: the runner (never an agent) samples NVML through each batch.

    sampler = Sampler.start(run_dir / "telemetry.jsonl")   # None on a host without a GPU
    with sampler.batch("c03-chimera-rust"):                 # ≥ 10 Hz while the batch runs
        ...
    sampler.idle_baseline(seconds=3)                        # before the sweep: idle power

Each sample: time, batch, GPU index, power (W), the total-energy counter (mJ, where the GPU
has one: probed once, some answer NOT_SUPPORTED), SM and memory utilisation (%), memory used,
SM and memory clocks (MHz), temperature (°C) and the throttle-reason bitmask.
Energy per run is joined to records by time in metrics.energy_per_run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from langbench import storage

HZ = 10.0  # the issue asks ≥ 10 Hz; a 10-minute sweep stays near 2 MB of samples


def _nvml():
    import pynvml
    return pynvml


class Sampler:
    def __init__(self, path: Path | None, nvml, handles: list, has_energy: list[bool], hz: float = HZ,
                 indices: list[int] | None = None):
        self.path, self.nvml, self.handles, self.has_energy = path, nvml, handles, has_energy
        self.indices = indices if indices is not None else list(range(len(handles)))  # NVML indices
        self.last_rows: list[dict] = []  # the last batch's rows (what a Dask worker returns)
        self.every = 1.0 / hz
        self._rows: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tag: str | None = None

    @classmethod
    def start(cls, path: Path | None, nvml=None, hz: float = HZ,
              indices: list[int] | None = None) -> "Sampler | None":
        """A sampler for every NVIDIA GPU (or only those of NVML `indices`: a Dask worker's own
        GPU), or None where NVML or a GPU is missing. `path` None: rows are kept in
        `last_rows` after each batch instead of appended to a file."""
        try:
            nvml = nvml or _nvml()
            nvml.nvmlInit()
            indices = list(range(nvml.nvmlDeviceGetCount())) if indices is None else indices
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        except Exception:  # no driver, no library: a CPU host, not an error
            return None
        if not handles:
            return None
        has_energy = []
        for h in handles:  # probe once: NOT_SUPPORTED on some GPUs
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(h)
                has_energy.append(True)
            except Exception:
                has_energy.append(False)
        return cls(path, nvml, handles, has_energy, hz, indices)

    def sample(self, tag: str | None) -> list[dict]:
        n, rows, now = self.nvml, [], time.time()
        for i, h in enumerate(self.handles):
            row = {"t_unix": now, "batch_id": tag, "gpu": self.indices[i]}
            for key, read in (
                ("power_w", lambda: n.nvmlDeviceGetPowerUsage(h) / 1000.0),
                ("energy_mj", lambda: n.nvmlDeviceGetTotalEnergyConsumption(h) if self.has_energy[i] else None),
                ("sm_util_pct", lambda: n.nvmlDeviceGetUtilizationRates(h).gpu),
                ("mem_util_pct", lambda: n.nvmlDeviceGetUtilizationRates(h).memory),
                ("mem_used_bytes", lambda: n.nvmlDeviceGetMemoryInfo(h).used),
                ("sm_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
                ("mem_clock_mhz", lambda: n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
                ("temp_c", lambda: n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
                ("throttle_reasons", lambda: n.nvmlDeviceGetCurrentClocksEventReasons(h)),
            ):
                try:
                    row[key] = read()
                except Exception:
                    row[key] = None
            rows.append(row)
        return rows

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._rows += self.sample(self._tag)
            self._stop.wait(max(0.0, self.every - (time.monotonic() - started)))

    @contextlib.contextmanager
    def batch(self, tag: str) -> Iterator[None]:
        """Sample at `hz` while the body runs; the rows are appended to the file after it."""
        self._tag, self._rows = tag, []
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nvml-sampler")
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()
            self._rows += self.sample(tag)  # one closing sample: the window is covered to its end
            self.last_rows = self._rows
            if self.path is not None:
                storage.append_jsonl(self.path, self._rows)

    def idle_baseline(self, seconds: float = 3.0) -> dict:
        """Mean power of each GPU with nothing running, sampled before the sweep."""
        with self.batch("idle"):
            time.sleep(seconds)
        rows = [r for r in (storage.read_jsonl(self.path) if self.path else self.last_rows)
                if r["batch_id"] == "idle"]
        by_gpu: dict[int, list[float]] = {}
        for r in rows:
            if r.get("power_w") is not None:
                by_gpu.setdefault(r["gpu"], []).append(r["power_w"])
        return {"seconds": seconds, "samples": len(rows),
                "power_w": {str(g): sum(v) / len(v) for g, v in by_gpu.items()},
                "energy_counter": dict(zip(self.indices, self.has_energy))}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()
