"""The report's sections, one module per notebook; each function builds a findings.Section."""
