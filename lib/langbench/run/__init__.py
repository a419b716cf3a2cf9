"""run/: writes a run directory (the plan, the batches on one server or on Dask workers, the records)."""
