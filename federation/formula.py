"""An analysis model written as R writes it, ``y ~ x1 + x2``, and its design matrix.

Names are column names; a name that is not a syntactic R name (``age (y)``) is written in
backquotes, as in R. A term is a column, or ``factor(column)`` to treat a numeric column as
categorical; a text column, or one declared a factor, expands to one 0/1 column per level but
the first (treatment coding, the first level the reference), named as R names them:
``regionsouth``, ``factor(stage)2``, ```my region`south``. ``1`` (the intercept) may be named;
it is always there. Interactions, transformations and removing the intercept are not offered.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from federation.errors import InputError

INTERCEPT = "(Intercept)"

_SYNTACTIC = re.compile(r"^((\.[A-Za-z._]|[A-Za-z])[A-Za-z0-9._]*|\.)$")
_R_RESERVED = {
    "if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE", "FALSE",
    "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in",
}  # fmt: skip
_NAME = r"(`[^`]+`|[A-Za-z._][A-Za-z0-9._]*)"
_TERM = re.compile(rf"^(?:factor\(\s*{_NAME}\s*\)|{_NAME})$")


@dataclass(frozen=True)
class Term:
    """A column on the right of ``~``; ``factor`` when written as ``factor(column)``."""

    column: str
    factor: bool = False

    @property
    def label(self) -> str:
        """How R prints the term: ``x``, ```age (y)```, ``factor(x)``."""
        name = r_name(self.column)
        return f"factor({name})" if self.factor else name


@dataclass(frozen=True)
class Formula:
    outcome: str
    terms: tuple[Term, ...]
    text: str

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the model reads, the outcome first."""
        return (self.outcome, *(t.column for t in self.terms))


def r_name(column: str) -> str:
    """A column name as R writes it in a formula or a coefficient name."""
    if _SYNTACTIC.match(column) and column not in _R_RESERVED and not keyword.iskeyword(column):
        return column
    return f"`{column}`"


def parse_formula(text: str) -> Formula:
    """Parse ``outcome ~ term + term ...``; a message says what is wrong and how to write it."""
    pieces = _split_outside_quotes(text, "~")
    if len(pieces) != 2 or not pieces[0].strip() or not pieces[1].strip():
        raise InputError(
            f"model {text!r}: write it as 'outcome ~ predictor + predictor', e.g. 'y ~ x1 + x2'"
        )
    outcome_text = pieces[0].strip()
    outcome = _TERM.match(outcome_text)
    if outcome is None or outcome.group(1) is not None:
        raise InputError(
            f"model {text!r}: the outcome must be one column name, got {outcome_text!r}"
        )
    terms: list[Term] = []
    for piece in _split_outside_quotes(pieces[1], "+"):
        term_text = piece.strip()
        if term_text == "1":
            continue
        match = _TERM.match(term_text)
        if match is None:
            raise InputError(
                f"model {text!r}: cannot read the term {term_text!r}; a term is a column name "
                "(in backquotes when it is not a plain name, e.g. `age (y)`) or factor(column); "
                "interactions, transformations and '-' are not supported"
            )
        factor_name, plain_name = match.groups()
        term = Term(_unquote(factor_name or plain_name), factor=factor_name is not None)
        if term in terms:
            raise InputError(f"model {text!r}: the term {term_text!r} is named twice")
        terms.append(term)
    return Formula(outcome=_unquote(outcome.group(2)), terms=tuple(terms), text=text.strip())


def check_columns(formula: Formula, columns: Sequence[str], *, label: str) -> None:
    """Every column the model names must be one of ``columns``; the message names the first
    unknown one and lists what there is."""
    for name in formula.columns:
        if name not in columns:
            shown = ", ".join(f"'{c}'" for c in columns)
            raise InputError(
                f"model {formula.text!r}: {label} has no column named '{name}' (its columns: "
                f"{shown})"
            )
    if formula.outcome in (t.column for t in formula.terms):
        raise InputError(
            f"model {formula.text!r}: the outcome '{formula.outcome}' is also a predictor"
        )


def factor_levels(cells: Sequence[np.ndarray]) -> tuple[str, ...]:
    """The levels of a categorical column over every dataset, in R's default order: numeric
    values in numeric order, text in sorted order."""
    seen: set[str] = set()
    numeric: set[float] = set()
    for column in cells:
        if column.dtype == object:
            seen.update(str(v) for v in column if v is not None)
        else:
            numeric.update(float(v) for v in column[~np.isnan(column)])
    if seen:
        seen.update(_level(v) for v in numeric)
        return tuple(sorted(seen))
    return tuple(_level(v) for v in sorted(numeric))


def design(
    formula: Formula,
    data: Mapping[str, np.ndarray],
    levels: Mapping[str, Sequence[str]],
) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """The design matrix (intercept first, rows with a missing cell are NaN), R's coefficient
    names, and the column behind each. ``levels`` holds the levels of every categorical term
    (text columns and ``factor()`` terms), first the reference."""
    n = next(iter(data.values())).shape[0]
    blocks = [np.ones((n, 1))]
    names = [INTERCEPT]
    sources = [INTERCEPT]
    for term in formula.terms:
        cells = data[term.column]
        if term.column in levels:
            texts = _as_text(cells)
            chosen = levels[term.column]
            for level in chosen[1:]:
                column = np.where(texts == level, 1.0, 0.0)
                column[_missing(cells)] = np.nan
                blocks.append(column[:, None])
                names.append(f"{term.label}{level}")
                sources.append(term.column)
        else:
            blocks.append(cells.astype(np.float64)[:, None])
            names.append(term.label)
            sources.append(term.column)
    return np.hstack(blocks), tuple(names), tuple(sources)


def categorical_columns(formula: Formula, data: Sequence[Mapping[str, np.ndarray]]) -> set[str]:
    """The predictors that expand to dummies: text columns and ``factor()`` terms."""
    return {
        t.column
        for t in formula.terms
        if t.factor or any(d[t.column].dtype == object for d in data)
    }


def _as_text(cells: np.ndarray) -> np.ndarray:
    if cells.dtype == object:
        return np.array(["" if v is None else str(v) for v in cells], dtype=object)
    return np.array([_level(float(v)) if not np.isnan(v) else "" for v in cells], dtype=object)


def _missing(cells: np.ndarray) -> np.ndarray:
    if cells.dtype == object:
        return np.array([v is None for v in cells], dtype=bool)
    mask: np.ndarray = np.isnan(cells)
    return mask


def _level(value: float) -> str:
    """A number as R prints it as a factor level: 2 not 2.0, 1.5 as 1.5."""
    return str(int(value)) if value.is_integer() else repr(value)


def _unquote(name: str) -> str:
    return name[1:-1] if name.startswith("`") else name


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split on ``separator`` where it is not inside backquotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == "`":
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
