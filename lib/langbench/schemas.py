"""The JSON Schemas kept in the repo: one for a jobs file, one for a record."""

from __future__ import annotations

import json
from functools import cache

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
