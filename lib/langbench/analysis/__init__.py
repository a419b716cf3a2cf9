"""analysis/: reads a run directory (records into tables, statistics, findings, checks)."""
