"""The JSON Schemas kept in the repo: one for a jobs file, one for a record."""

from __future__ import annotations

import json
import sys
from functools import cache

if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
    # jsonschema registers an "iri" format checker from rfc3987_syntax when that is installed
    # (jupyter-events pulls it in), and rfc3987_syntax builds an Earley parser as it is
    # imported: 1.2 s in every process that imports this module (each CLI command, notebook
    # kernel and Dask worker). Our validators check no format, so jsonschema is imported
    # without it; a module imported after this one still gets rfc3987_syntax if it asks.
    sys.modules["rfc3987_syntax"] = None  # its import fails: jsonschema skips that checker
    try:
        import jsonschema  # noqa: F401
    finally:
        del sys.modules["rfc3987_syntax"]

from jsonschema import Draft202012Validator

from langbench import paths


@cache
def validator(name: str) -> Draft202012Validator:
    """`name` is "jobs" or "record"."""
    schema = json.loads((paths.SCHEMAS / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def problems(name: str, document: dict) -> list[str]:
    """Every way `document` breaks the schema, as "path: message" lines (empty when valid)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}"
            for e in validator(name).iter_errors(document)]
