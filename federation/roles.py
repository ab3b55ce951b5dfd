"""Column roles: what a job does with each column, and a table put in a job's layout.

A column of a job is a **target** (imputed; ``federation.job.Target``), a **predictor** (numeric,
the default), a **factor** (a categorical predictor: text or integer codes, with the job's fixed
list of levels, expanded to treatment dummies in every design: ``algorithms._predictors``) or
**carried** (IDs, dates, free text: never modelled, ignored at sites, written back unchanged in
central's outputs). ALGORITHMS.md, Conventions.

The job's levels are part of the job a site's user approves; a site codes its own cells against
them here, and a cell outside them makes it refuse, naming the column and the count of such cells
(the values only in its own log). Nothing of a text cell ever leaves a site: the numbers a site
sends are sums over the coded design.

:func:`code_table` puts a table read by ``federation.data.read_csv`` in a job's layout: the job's
columns in the job's order (matched by name, in whatever order the file holds them), a factor or
a text target as its level's index 0..K-1, carried columns out of the matrix (central keeps their
text for its outputs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from algorithms import methods
from algorithms.methods._levels import MAX_LEVELS
from federation.data import Table, check_columns, check_target_values
from federation.errors import InputError
from federation.job import JobSpec, Target, make_targets

TARGET = "target"
PREDICTOR = "predictor"
FACTOR = "factor"
CARRIED = "carried"
ROLES = (PREDICTOR, FACTOR, CARRIED)
"""The roles a column that is not a target may take (``--column NAME:ROLE``, the API)."""
TEXT_TARGETS = frozenset(m.name for m in methods.METHODS.values() if m.levels) | {"logistic"}
"""Methods whose column may hold text levels (categorical, ordinal; logistic with two)."""
ROLE_FIELDS = ("factors", "carried", "predictors")
"""The keys of a job's roles in its wire form (``JobSpec.to_wire``, the portal's ``roles``)."""
FEW_LEVELS = 12
"""A text column with at most this many distinct values is proposed as a factor."""
_EXAMPLES = 3


def role_of(*, numeric: bool, integer: bool, distinct: int, observed: int) -> str:
    """The role central's header scan proposes for a column that is not a target: one value
    per row of text or integers (an ID) is carried, text with few distinct values a factor,
    text with many carried, a numeric column a predictor. ``numeric``: every observed cell is
    a number; ``integer``: every one a whole number; ``distinct``: its distinct observed values
    (at least ``FEW_LEVELS + 1`` when the scan stopped counting them)."""
    if observed > FEW_LEVELS and distinct >= observed and (integer or not numeric):
        return CARRIED
    if numeric:
        return PREDICTOR
    return FACTOR if distinct <= FEW_LEVELS else CARRIED


def parse_roles(entries: Iterable[str], *, field: str = "--column") -> dict[str, str]:
    """``NAME:ROLE`` entries as column -> role."""
    roles: dict[str, str] = {}
    for entry in entries:
        name, sep, role = entry.rpartition(":")
        if not sep or not name:
            raise InputError(f"{field} expects NAME:ROLE ({', '.join(ROLES)}), got {entry!r}")
        if role not in ROLES:
            raise InputError(
                f"{field} {entry}: unknown role {role!r}; roles are {', '.join(ROLES)} (a "
                "target is named with --target)"
            )
        if name in roles:
            raise InputError(f"{field} {name}: given twice")
        roles[name] = role
    return roles


def text_columns(
    roles: Mapping[str, str], targets: Iterable[tuple[str | int, str]]
) -> frozenset[str]:
    """The columns a file may hold text in, before the job is fixed: factors, carried columns
    and targets whose method takes levels (named targets; an index names no text column)."""
    named = {str(key) for key, kind in targets if kind in TEXT_TARGETS and isinstance(key, str)}
    return frozenset(name for name, role in roles.items() if role in (FACTOR, CARRIED)) | named


def spec_text_columns(spec: JobSpec) -> frozenset[str]:
    """The columns a participant's file may hold text in, for a fixed job."""
    return (
        frozenset(spec.factors)
        | frozenset(spec.carried)
        | frozenset(t.name for t in spec.targets if t.type in TEXT_TARGETS)
    )


@dataclass(frozen=True)
class Columns:
    """A job's columns by role, as ``JobSpec`` holds them."""

    columns: tuple[str, ...]
    targets: tuple[Target, ...]
    factors: Mapping[str, tuple[str, ...]]
    carried: tuple[str, ...]
    predictor_lists: Mapping[str, tuple[str, ...]]

    def spec(self, *, params: Mapping[str, Any], sites: Sequence[str]) -> JobSpec:
        """The job these columns make with ``params`` and the remote ``sites``, before it has
        an identity (its id, algorithm and seed are left empty): enough for what its designs
        decide, the default ``min_rows`` (``JobSpec.design_width``) and its replies' sizes
        (``JobSpec.dims``)."""
        return JobSpec(
            job_id="",
            algorithm="",
            version="",
            digest="",
            columns=self.columns,
            targets=self.targets,
            params=params,
            seed=0,
            sites=tuple(sites),
            factors=self.factors,
            carried=self.carried,
            predictor_lists=self.predictor_lists,
        )


def define_columns(
    table: Table,
    *,
    targets: Iterable[tuple[str | int, str]],
    roles: Mapping[str, str] | None = None,
    levels: Mapping[str, Sequence[object]] | None = None,
    predictors: Mapping[str, Sequence[str]] | None = None,
) -> Columns:
    """A job's columns from central's table (read with :func:`text_columns` as text) and the
    user's choices: each column's role (default predictor), levels of factors and targets
    (default: those central observes), a predictor list per target (default: every other
    column). Every error names the column or the field."""
    roles = dict(roles or {})
    levels = dict(levels or {})
    predictors = dict(predictors or {})
    for name in (*roles, *levels, *predictors):
        if name not in table.columns:
            raise InputError(
                f"column '{name}' is not a column of {table.label}; its columns are "
                + ", ".join(f"'{c}'" for c in table.columns)
            )
    carried = tuple(c for c in table.columns if roles.get(c) == CARRIED)
    modelled = tuple(c for c in table.columns if c not in carried)
    requested = list(targets)
    named: list[str | int] = [
        (table.columns[key - 1] if isinstance(key, int) and 1 <= key <= len(table.columns) else key)
        for key, _ in requested
    ]
    for entry in named:
        if isinstance(entry, str) and entry in roles:
            raise InputError(
                f"column '{entry}' is a target and is given the role {roles[entry]} too; a target "
                "is a target"
            )
    factors = {
        c: _factor_levels(table, c, levels.get(c)) for c in modelled if roles.get(c) == FACTOR
    }
    for name in modelled:
        if name not in factors and name not in named:
            _require_numbers(table, name, "a predictor")
    positions = [
        modelled.index(name) + 1 if isinstance(name, str) and name in modelled else name
        for name in named
    ]
    numeric_levels: dict[str, Sequence[float]] = {}
    text_targets: dict[str, tuple[str, ...]] = {}
    for entry, (_, kind) in zip(named, requested, strict=True):
        if not isinstance(entry, str):
            continue
        name = entry
        if name in table.text and _has_text(table, name):
            text_targets[name] = _target_labels(table, name, kind, levels.get(name))
            if methods.get(kind).levels:  # coded 0..K-1
                numeric_levels[name] = tuple(range(len(text_targets[name])))
        elif name in levels:
            numeric_levels[name] = methods.level_list(levels[name], field=f"--levels {name}")
        if name in table.columns and name not in text_targets:
            _require_numbers(table, name, "a target")
    model = table.values[:, [table.columns.index(c) for c in modelled]]
    chosen = make_targets(
        modelled,
        [(position, kind) for position, (_, kind) in zip(positions, requested, strict=True)],
        label=table.label,
        values=model,
        levels=numeric_levels,
    )
    chosen = tuple(
        _as_text_target(t, text_targets[t.name]) if t.name in text_targets else t for t in chosen
    )
    lists = _predictor_lists(predictors, chosen, modelled, carried, table.label)
    return Columns(
        columns=modelled,
        targets=chosen,
        factors=factors,
        carried=carried,
        predictor_lists=lists,
    )


def _predictor_lists(
    predictors: Mapping[str, Sequence[str]],
    targets: Sequence[Target],
    modelled: Sequence[str],
    carried: Sequence[str],
    label: str,
) -> dict[str, tuple[str, ...]]:
    """The predictor lists, checked, each in the job's column order."""
    target_names = {t.name for t in targets}
    lists: dict[str, tuple[str, ...]] = {}
    for target, listed in predictors.items():
        if target not in target_names:
            raise InputError(f"--predictors {target}: '{target}' is not a target of the job")
        for name in listed:
            if name in carried:
                raise InputError(
                    f"--predictors {target}: column '{name}' is carried (never modelled), so it "
                    "cannot be a predictor; give it the role predictor or factor, or leave it "
                    "out of the list"
                )
            if name not in modelled:
                raise InputError(f"--predictors {target}: '{name}' is not a column of {label}")
            if name == target:
                raise InputError(f"--predictors {target}: a target cannot predict itself")
        lists[target] = tuple(c for c in modelled if c in listed)
    return lists


def define_job_columns(
    columns: Sequence[str],
    targets: Sequence[tuple[str, str, Sequence[object]]],
    *,
    factors: Mapping[str, Sequence[object]] | None = None,
    carried: Sequence[str] = (),
    predictors: Mapping[str, Sequence[str]] | None = None,
    label: str = "the job's columns",
) -> Columns:
    """A job's columns from its definition alone (the portal's API and wizard, before any data):
    the header, targets as (column, method, levels), each factor with its levels (at least
    two), the carried columns and the predictor lists. A target's levels are its integer codes,
    or its text levels (a text target: categorical, ordinal, or logistic with two)."""
    chosen_factors = {
        k: tuple(str(v).strip() for v in levels) for k, levels in (factors or {}).items()
    }
    for name in (*chosen_factors, *carried):
        if name not in columns:
            raise RoleError(f"column '{name}' is not one of {label}")
    for name, listed in chosen_factors.items():
        if name in carried:
            raise RoleError(f"column '{name}' is given two roles, factor and carried")
        if len(listed) < 2 or len(set(listed)) != len(listed):
            raise RoleError(
                f"factor column '{name}': give at least two levels, each once (it has "
                f"{', '.join(listed) or 'none'})"
            )
        if len(listed) > MAX_LEVELS:
            raise RoleError(
                f"factor column '{name}': {len(listed)} levels, at most {MAX_LEVELS}; make it "
                "carried, or give fewer levels"
            )
    for name, _, _ in targets:
        if name in chosen_factors or name in carried:
            raise RoleError(f"column '{name}' is a target and is given another role too")
    modelled = tuple(c for c in columns if c not in carried)
    numeric: dict[str, Sequence[float]] = {}
    labels: dict[str, tuple[str, ...]] = {}
    for name, kind, levels in targets:
        if not levels:
            continue
        if all(_number(str(v)) is not None for v in levels):
            numeric[name] = methods.level_list(levels, field=f"target '{name}' levels")
            continue
        method = methods.get(kind, field=f"target '{name}'")
        given = tuple(str(v).strip() for v in levels)
        if kind not in TEXT_TARGETS or (kind == "logistic" and len(given) != 2):
            raise InputError(
                f"target '{name}': text levels suit a categorical, ordinal or (two levels) "
                f"logistic target, not {method.name} with {len(given)}"
            )
        problem = method.level_problem(len(given), column=name)
        if problem:
            raise InputError(problem)
        labels[name] = given
        if method.levels:
            numeric[name] = tuple(range(len(given)))
    chosen = make_targets(
        modelled,
        [(name, kind) for name, kind, _ in targets],
        label=label,
        levels=numeric,
    )
    chosen = tuple(_as_text_target(t, labels[t.name]) if t.name in labels else t for t in chosen)
    try:
        lists = _predictor_lists(predictors or {}, chosen, modelled, carried, label)
    except InputError as error:
        raise RoleError(str(error)) from None
    return Columns(
        columns=modelled,
        targets=chosen,
        factors=chosen_factors,
        carried=tuple(c for c in columns if c in carried),
        predictor_lists=lists,
    )


def spec_of_definition(
    columns: Sequence[str], targets: Sequence[Target], roles: Mapping[str, object]
) -> JobSpec:
    """The parts of a job a participant checks its file against, from the job's stored
    definition (its header, targets and roles): the rest is left empty."""
    carried = tuple(str(c) for c in roles.get("carried", ()))  # type: ignore[attr-defined]
    return Columns(
        columns=tuple(c for c in columns if c not in carried),
        targets=tuple(targets),
        factors={k: tuple(v) for k, v in roles.get("factors", {}).items()},  # type: ignore[attr-defined]
        carried=carried,
        predictor_lists={k: tuple(v) for k, v in roles.get("predictors", {}).items()},  # type: ignore[attr-defined]
    ).spec(params={}, sites=())


def roles_to_wire(columns: Columns) -> dict[str, object]:
    """A job's roles as the portal stores and sends them (empty parts left out)."""
    wire: dict[str, object] = {}
    if columns.factors:
        wire["factors"] = {k: list(v) for k, v in columns.factors.items()}
    if columns.carried:
        wire["carried"] = list(columns.carried)
    if columns.predictor_lists:
        wire["predictors"] = {k: list(v) for k, v in columns.predictor_lists.items()}
    return wire


def check_upload(
    table: Table, spec: JobSpec, *, show_values: bool = True, alone: bool = False
) -> Coding:
    """Everything a job needs of an uploaded table, at central and at sites, before anyone
    waits: its columns (by name), its factors' and text targets' cells among the job's levels,
    each target's observed cells values its method takes; ``alone`` (central's table in a job
    of no site) refuses a target it never observes. How the table goes into the job's layout
    (its matrix in that layout is not built: a copy of the whole table)."""
    coding = coding_of(table, spec, show_values=show_values)
    for target in spec.targets:
        cells = coding.column(target.column)
        if alone and np.isnan(cells).all():
            raise InputError(
                f"{table.label}: column '{target.name}' is a target but every cell is missing, "
                "and no site takes part: there is nothing to fit it on"
            )
        column = Table(
            label=table.label, columns=(target.name,), values=cells[:, None], lines=table.lines
        )
        check_target_values(column, 0, target.type, show_values=show_values, levels=target.levels)
    return coding


@dataclass(frozen=True)
class Coding:
    """How a table goes into a job's layout: the table position of each of the job's
    ``columns``, and the level indices of its factors and text targets (by job position)."""

    table: Table
    columns: tuple[str, ...]
    positions: tuple[int, ...]
    codes: Mapping[int, np.ndarray]

    @property
    def unchanged(self) -> bool:
        """The table's matrix is already the job's (same columns in order, nothing coded)."""
        return self.positions == tuple(range(len(self.table.columns))) and not self.codes

    def column(self, j: int) -> np.ndarray:
        """The job's column ``j`` (a view of the table's where it is not coded)."""
        codes = self.codes.get(j)
        return codes if codes is not None else self.table.values[:, self.positions[j]]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` in the job's layout (a new array)."""
        block = self.table.values[start:stop][:, list(self.positions)]
        for j, codes in self.codes.items():
            block[:, j] = codes[start:stop]
        return block


def coding_of(table: Table, spec: JobSpec, *, show_values: bool = True) -> Coding:
    """How ``table`` goes into the job's layout, refusing what cannot (see
    :func:`code_table`), without building the matrix."""
    check_columns(table, spec.columns, ignore=spec.carried)
    positions = tuple(table.column(name) for name in spec.columns)
    labels = {t.name: t.labels for t in spec.targets if t.labels}
    codes: dict[int, np.ndarray] = {}
    for j, name in enumerate(spec.columns):
        if name in spec.factors:
            codes[j] = _codes(table, name, spec.factors[name], show_values, "factor")
        elif name in labels:
            codes[j] = _codes(table, name, labels[name], show_values, "target")
        elif name in table.text:
            _require_numbers(table, name, "a numeric column", show_values=show_values)
    return Coding(table=table, columns=tuple(spec.columns), positions=positions, codes=codes)


def code_table(table: Table, spec: JobSpec, *, show_values: bool = True) -> Table:
    """``table`` in the job's layout (see the module's docstring). A site (``show_values``
    False) names the columns and counts of its offending cells, never their values: those are
    in the error's ``private`` text, for its own log."""
    if table.coded:
        check_columns(table, spec.columns)
        return table
    coding = coding_of(table, spec, show_values=show_values)
    if coding.unchanged and not table.text:
        return replace(table, coded=True)
    labels = {t.name for t in spec.targets if t.labels}
    kept = set(spec.factors) | labels | (set(spec.carried) & set(table.columns))
    return Table(
        label=table.label,
        columns=tuple(spec.columns),
        values=coding.rows(0, table.rows),
        lines=table.lines,
        text={name: cells for name, cells in table.text.items() if name in kept},
        notes=table.notes,
        layout=table.columns,
        coded=True,
    )


def as_written(cells: np.ndarray, codes: np.ndarray, labels: Sequence[str] | None) -> np.ndarray:
    """A column as central writes it back: its cells as they were read, and a text target's
    imputed cells (level indices in ``codes`` where ``cells`` is missing) as their levels."""
    result = cells.copy()
    if labels:
        filled = np.flatnonzero((cells == None) & ~np.isnan(codes))  # noqa: E711
        result[filled] = [labels[int(code)] for code in codes[filled]]
    return result


class RoleError(InputError):
    """A column's role, a factor's levels or a predictor list that the job cannot take."""


class LevelError(InputError):
    """Cells outside the job's levels; ``private`` shows their values (the site's own log)."""

    def __init__(self, message: str, private: str) -> None:
        super().__init__(message)
        self.private = private


def _codes(
    table: Table, name: str, levels: Sequence[str], show_values: bool, kind: str
) -> np.ndarray:
    """A factor's or text target's cells as level indices 0..K-1 (NaN where missing)."""
    position = table.column(name)
    index = {level: float(i) for i, level in enumerate(levels)}
    numeric: dict[float | None, float] = {}
    for i, level in enumerate(levels):
        number = _number(level)
        if number is not None:
            numeric.setdefault(number, float(i))
    cells = table.text.get(name)
    if cells is None:  # a table of numbers (built in memory)
        numbers = table.values[:, position]
        codes = np.full(numbers.shape, np.nan)
        for number, code in numeric.items():
            codes[numbers == number] = code
        bad = np.flatnonzero(~np.isnan(numbers) & np.isnan(codes))
        shown = [_format(numbers[i]) for i in bad[:_EXAMPLES]]
    else:
        codes = np.full(cells.shape, np.nan)
        present = np.flatnonzero(cells != None)  # noqa: E711 - elementwise over objects
        distinct, inverse = np.unique(cells[present].astype(str), return_inverse=True)
        mapped = np.array([index.get(v.strip(), numeric.get(_number(v), np.nan)) for v in distinct])
        codes[present] = mapped[inverse] if distinct.size else codes[present]
        bad = present[np.isnan(codes[present])]
        shown = [repr(str(cells[i]).strip()) for i in bad[:_EXAMPLES]]
    if bad.size:
        where = ", e.g. " + ", ".join(
            f"{value} (line {table.line(int(i))})" for value, i in zip(shown, bad, strict=False)
        )
        message = (
            f"{table.label}: {kind} column '{name}' holds {bad.size} cell(s) outside the job's "
            f"levels"
        )
        listed = f" ({', '.join(levels)})"
        advice = "; recode them or ask central to add the level to the job"
        if show_values:
            raise LevelError(message + listed + where + advice, message + listed + where)
        raise LevelError(message + advice, message + listed + where)
    return codes


def _factor_levels(table: Table, name: str, given: Sequence[object] | None) -> tuple[str, ...]:
    """A factor's levels: ``given``, else the distinct values central observes (sorted, as
    numbers when they all are); at least two."""
    if given:
        chosen = tuple(str(v).strip() for v in given)
        if len(set(chosen)) != len(chosen):
            raise InputError(f"--levels {name}: a level is given twice")
    else:
        chosen = _observed_labels(table, name)
    if len(chosen) < 2:
        raise InputError(
            f"factor column '{name}' of {table.label} has {len(chosen)} level(s) "
            f"({', '.join(chosen) or 'none'}); a factor needs at least two (make it carried, "
            "or give its levels with --levels)"
        )
    if len(chosen) > MAX_LEVELS:
        raise InputError(
            f"factor column '{name}' of {table.label} has {len(chosen)} levels, at most "
            f"{MAX_LEVELS}; make it carried, or give fewer levels with --levels"
        )
    return chosen


def _observed_labels(table: Table, name: str) -> tuple[str, ...]:
    cells = table.text.get(name)
    if cells is None:
        numbers = table.values[:, table.column(name)]
        return tuple(_format(v) for v in np.unique(numbers[~np.isnan(numbers)]))
    present = {str(v).strip() for v in cells if v is not None}
    as_numbers = {v: _number(v) for v in present}
    if all(n is not None for n in as_numbers.values()):
        by_value: dict[float, str] = {}
        for text in sorted(present, key=lambda v: as_numbers[v] or 0.0):
            by_value.setdefault(as_numbers[text] or 0.0, text)
        return tuple(by_value.values())
    return tuple(sorted(present))


def _target_labels(
    table: Table, name: str, kind: str, given: Sequence[object] | None
) -> tuple[str, ...]:
    method = methods.get(kind, field=f"target '{name}'")
    if kind not in TEXT_TARGETS:
        raise InputError(
            f"{table.label}: column '{name}' holds text, but a {method.name} target needs "
            f"{method.expects}; text suits a categorical, ordinal or (two levels) logistic target"
        )
    labels = tuple(str(v).strip() for v in given) if given else _observed_labels(table, name)
    if len(set(labels)) != len(labels):
        raise InputError(f"--levels {name}: a level is given twice")
    if kind == "logistic" and len(labels) != 2:
        raise InputError(
            f"column '{name}' has {len(labels)} text level(s) ({', '.join(labels)}); a logistic "
            "target takes two (the first is coded 0): use categorical for more"
        )
    problem = method.level_problem(len(labels), column=name)
    if problem:
        raise InputError(problem)
    return labels


def _as_text_target(target: Target, labels: tuple[str, ...]) -> Target:
    levels = tuple(float(i) for i in range(len(labels))) if methods.get(target.type).levels else ()
    return replace(target, levels=levels, labels=labels)


def _has_text(table: Table, name: str) -> bool:
    cells = table.text[name]
    numbers = table.values[:, table.column(name)]
    return bool(((cells != None) & np.isnan(numbers)).any())  # noqa: E711


def _require_numbers(table: Table, name: str, what: str, *, show_values: bool = True) -> None:
    """A column read as text that must be numeric: its text cells are an error."""
    if name not in table.text:
        return
    cells = table.text[name]
    bad = np.flatnonzero((cells != None) & np.isnan(table.values[:, table.column(name)]))  # noqa: E711
    if bad.size:
        first = int(bad[0])
        value = f" {str(cells[first]).strip()!r}" if show_values else " text"
        raise InputError(
            f"{table.label}: column '{name}' is {what} but is not numeric: line "
            f"{table.line(first)} has{value}"
            + (f" ({bad.size} such cells)" if bad.size > 1 else "")
            + "; make it a factor or carried, or a categorical target"
        )


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
