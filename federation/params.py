"""An algorithm's parameters: defaults from its JSON Schema, validation with named fields."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator

from federation.errors import InputError


def default_min_rows(width: int) -> int:
    """The fewest usable rows a site may answer for: max(10, 3p), p the width of the widest
    design any target's fit uses (:meth:`federation.job.JobSpec.design_width`).

    A target's design (``algorithms._predictors``) holds each of its predictors (every other
    modelled column, or the job's predictor list for it): a numeric one as one column, a factor
    or a categorical or ordinal target of K levels as its K - 1 treatment dummies; then one
    column per remote site with ``site_effect`` "intercept", then the intercept. With every
    column numeric, no predictor list and no site term, p is the number of modelled columns.
    """
    return max(10, 3 * width)


def resolve_params(
    schema: Mapping[str, Any],
    given: Mapping[str, Any],
    *,
    width: Callable[[Mapping[str, Any]], int] | None = None,
) -> dict[str, Any]:
    """Every parameter as the job will use it: given values over schema defaults, validated.

    ``width`` gives the job's widest design for the resolved parameters (its site terms depend
    on ``site_effect``): an unset ``min_rows`` becomes :func:`default_min_rows` of it. Without
    it the parameters are only checked, and ``min_rows`` stays as given.
    """
    properties: Mapping[str, Any] = schema.get("properties", {})
    unknown = sorted(set(given) - set(properties))
    if unknown:
        raise InputError(
            f"unknown parameter {', '.join(repr(u) for u in unknown)}; this algorithm takes "
            + ", ".join(repr(p) for p in properties)
        )
    check_finite(given)
    resolved = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    resolved.update(given)
    errors = sorted(Draft202012Validator(schema).iter_errors(resolved), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        field = ".".join(str(p) for p in first.path) or "parameters"
        raise InputError(f"parameter '{field}': {first.message}")
    if width is not None and resolved.get("min_rows") is None:  # the sites' privacy floor
        resolved["min_rows"] = default_min_rows(width(resolved))
    return resolved


PARAM_BOUND = 1e9
"""The largest magnitude of a number in a job's parameters. JSON Schema lets NaN, Infinity and
numbers such as 1e308 through ``minimum`` and ``exclusiveMinimum`` (and Python's JSON reader
accepts NaN and Infinity); every built-in parameter is far below this (a ridge is a small
fraction, counts are thousands at most), and ridge·N stays finite for any number of rows."""


def check_finite(given: Mapping[str, Any]) -> None:
    """Refuse NaN, infinities and magnitudes over :data:`PARAM_BOUND`, naming the parameter."""
    for name, value in given.items():
        problem = _number_problem(value)
        if problem:
            raise InputError(f"parameter '{name}': {problem}")


def _number_problem(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, not {value}"
    if isinstance(value, int | float) and abs(value) > PARAM_BOUND:
        shown = str(value) if len(str(value)) <= 24 else f"{str(value)[:20]}…"
        return f"must be between {-PARAM_BOUND:g} and {PARAM_BOUND:g}, not {shown}"
    if isinstance(value, list | tuple):
        return next((p for p in map(_number_problem, value) if p), None)
    if isinstance(value, dict):
        return next((p for p in map(_number_problem, value.values()) if p), None)
    return None


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it can be."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise InputError(f"--param expects key=value, got {text!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw
