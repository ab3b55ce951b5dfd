"""An algorithm's parameters: defaults from its JSON Schema, validation with named fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

from federation.errors import InputError


def default_min_rows(columns: int) -> int:
    """The fewest usable rows a site may answer for: max(10, 3p), p the design's width.

    The design of a target is every other column plus an intercept, so p equals the number of
    columns of the table.
    """
    return max(10, 3 * columns)


def resolve_params(
    schema: Mapping[str, Any], given: Mapping[str, Any], *, columns: int
) -> dict[str, Any]:
    """Every parameter as the job will use it: given values over schema defaults, validated."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    unknown = sorted(set(given) - set(properties))
    if unknown:
        raise InputError(
            f"unknown parameter {', '.join(repr(u) for u in unknown)}; this algorithm takes "
            + ", ".join(repr(p) for p in properties)
        )
    resolved = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    resolved.update(given)
    errors = sorted(Draft202012Validator(schema).iter_errors(resolved), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.path) or "parameters"
        raise InputError(f"parameter '{field}': {first.message}")
    if resolved.get("min_rows") is None:  # every job has one: the sites' privacy floor
        resolved["min_rows"] = default_min_rows(columns)
    return resolved


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it can be."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise InputError(f"--param expects key=value, got {text!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw
