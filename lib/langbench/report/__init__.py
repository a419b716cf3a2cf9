"""report/: shows a run (the notebooks rendered to HTML, the index, the sections, plots and tables)."""
