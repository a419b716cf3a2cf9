"""The report's sections, one module per notebook; each function builds a Section: a
findings.Section (analysis/) whose table is shown styled for people (tables.style)."""

from __future__ import annotations

from langbench.analysis import findings
from langbench.report import tables


class Section(findings.Section):
    def styled_table(self):
        return tables.style(self.table)
