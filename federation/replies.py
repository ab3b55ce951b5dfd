"""What a site may send: the declared shape of every reply, checked at both ends.

An algorithm's ``params.json`` declares, for every operation its remote half answers, the keys of
the reply and the kind and shape of each value::

    "replies": {
      "prepare":        {"target_sum": "float[k]"},
      "gaussian_stats": {"n": "rows", "xtx": "float[p,p]", "xty": "float[p]", "yty": "float"},
      "impute":         {}
    },
    "left_out": ["a non-target column missing"],
    "fits": "targets * (iteration_before_first_imputation + 2 * (imputations - 1))",
    "summed": ["gaussian_stats"]

A value is a number or an array of numbers, never text and never nested:

- ``float``, ``float[d]``, ``float[d,d]``: finite float64 numbers;
- ``int``, ``int[d]``, ``int[d,d]``: int64 numbers;
- ``count``: a whole number from 0 to the rows the site declared when the job opened;
- ``rows``: the rows a fit of the operation's ``target`` argument (in a job of one target: of
  that target) uses, as the site declared them when the job opened, so that a fit's n cannot
  disagree with what the site said it holds;
- ``flag``: 0 or 1.

A dimension ``d`` is ``p`` (the width of the operation's target's design: its predictors, each
factor as one column per level but the first, one site term per remote site when the
job's ``site_effect`` is intercept, and the intercept; by default the job's columns,
the target's place taken by the intercept), ``c`` (the job's columns), ``k`` (the job's
targets), ``t`` (the length of the parameters of the operation's target's fit: p, (K-1)p for
a categorical target of K levels, p - 1 + K - 1 for an ordinal one; ``algorithms.methods``),
``l`` (the levels of the operation's target), ``u`` (the pairs of the fit's parameters,
t(t+1)/2, for a fit of at most :data:`PAIRS_WIDTH` parameters, else 0: a symmetric
third-derivative tensor is t x u numbers) or a whole number up to 64. At most two dimensions,
so a value holds at most max(p, c, k, t)^2 numbers (t x u: at most 8.5 t^2); a reply holds at most
:data:`MAX_KEYS` values. ``prepare`` declares what the site adds to the runtime's own summary
when the job opens (``rows``, ``rows_used``, ``observed``, ``target_rows``, ``left_out``); its
``left_out`` reasons are the labels listed here, so no text of the site's travels.
One more dimension may come first: ``m``, the job's chains (the chained family's parameter
``chains``: 1 for a single chain, M = ``imputations`` for parallel chains), for an operation
that answers for every chain at once (``float[m,p,p]``: one X'X a chain); such a reply holds m
times as many numbers, still bounded by the job.

``fits`` is the most fits the job makes, as arithmetic (+, -, *, parentheses) over the job's
whole-number parameters, ``targets`` and ``chains`` (the job's chains, as ``m``; parallel
chains fit side by side, one request a step for all of them, so they count as one fit): a site
answers at most ``2 + fits * max_newton_rounds`` requests (its policy's rounds per fit), which
bounds everything it sends in a job.

``summed`` lists the operations whose replies central only ever adds up over the participants
(every value of them; ``prepare`` for the algorithm's values in the summary at open); only an
algorithm whose every operation that answers values is summed can offer secure aggregation
(``federation.secure``), where central sees just the sum over the sites.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from federation.errors import AlgorithmInvalid, ProtocolError

Kind = Literal["float", "int", "count", "rows", "flag"]
MAX_KEYS = 16
MAX_DIM = 64
PAIRS_WIDTH = 16
"""The most parameters of a fit whose pairs (``u``) a reply may hold."""
PREPARE = "prepare"
"""The pseudo-operation whose declared values the site adds to its summary at open."""
RUNTIME_SUMMARY = ("rows", "rows_used", "observed", "target_rows", "left_out")
"""Keys of the summary the runtime itself sends at open; an algorithm may not declare them."""
_VALUE = re.compile(
    r"^(float|int|count|rows|flag)(?:\[([a-z0-9]+)(?:,([a-z0-9]+))?(?:,([a-z0-9]+))?\])?$"
)
_SYMBOLS = ("p", "c", "k", "t", "l", "u")
CHAINS = "m"
"""The leading dimension of a value with one entry per chain (:attr:`Dims.m`)."""
FITS_NAMES = ("targets", "chains")
"""The names ``fits`` may use besides the whole-number parameters: the job's targets, chains."""
_LABEL = re.compile(r"^[A-Za-z0-9 '(){}_.,-]{1,80}$")


@dataclass(frozen=True)
class Value:
    """One declared value of a reply."""

    kind: Kind
    shape: tuple[str | int, ...] = ()

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.kind}[{dims}]" if dims else self.kind

    def size(self, dims: Mapping[str, int]) -> int:
        return math.prod(d if isinstance(d, int) else dims[d] for d in self.shape)


@dataclass(frozen=True)
class Dims:
    """The sizes a job gives the symbols: design width, columns, targets, chains."""

    p: int
    c: int
    k: int
    per_target: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    """(t, l) of each target, by its 1-based column index (default: t = p, l = 0)."""
    m: int = 1
    """The job's chains (``federation.job.JobSpec.chains``): the leading ``m`` of a value."""
    widths: Mapping[int, int] = field(default_factory=dict)
    """Each target's design width p, by its 1-based column index, where its factors or its
    predictor list make it other than the job's p."""

    @classmethod
    def of(
        cls,
        columns: int,
        targets: int,
        per_target: Mapping[int, tuple[int, int]] | None = None,
        *,
        site_terms: int = 0,
        chains: int = 1,
        widths: Mapping[int, int] | None = None,
    ) -> Dims:
        """p is the columns plus the site terms (one per remote site with ``site_effect``
        intercept: the target's place is the intercept's), c the columns, m the chains."""
        return cls(
            p=columns + site_terms,
            c=columns,
            k=targets,
            per_target=dict(per_target or {}),
            m=chains,
            widths=dict(widths or {}),
        )

    def as_map(self, target: int | None = None) -> dict[str, int]:
        """The sizes of the symbols; ``p``, ``t`` and ``l`` are those of ``target`` (the
        operation's)."""
        if target is None and len(self.per_target) == 1:
            (target,) = self.per_target
        p = self.widths.get(target, self.p) if target is not None else self.p
        t, levels = self.per_target.get(target, (p, 0)) if target is not None else (p, 0)
        pairs = t * (t + 1) // 2 if t <= PAIRS_WIDTH else 0
        return {"p": p, "c": self.c, "k": self.k, "t": t, "l": levels, "u": pairs, CHAINS: self.m}

    def reply_limit(self) -> int:
        """The most numbers one operation's reply may hold, whatever it declares."""
        widest = max((t for t, _ in self.per_target.values()), default=0)
        largest = max(self.p, self.c, self.k, widest, *self.widths.values())
        return MAX_KEYS * largest * largest * self.m


@dataclass(frozen=True)
class Bounds:
    """What the site declared when the job opened, for ``count`` and ``rows`` values."""

    rows_used: int
    target_rows: Mapping[int, int]
    """The rows a fit of each target uses, by the target's 1-based column index."""


@dataclass(frozen=True)
class ReplySchema:
    """Every reply an algorithm's remote half may send, as its ``params.json`` declares."""

    operations: Mapping[str, Mapping[str, Value]]
    left_out: tuple[str, ...]
    fits: str
    summed: frozenset[str] = frozenset()
    """Operations whose every reply value central only sums over the participants."""

    @classmethod
    def parse(cls, meta: Mapping[str, Any]) -> ReplySchema:
        """Read ``replies``, ``left_out`` and ``fits`` from params.json; ``AlgorithmInvalid``
        says what is wrong."""
        raw = meta.get("replies")
        if not isinstance(raw, dict) or not raw:
            raise AlgorithmInvalid(
                "params.json has no 'replies': declare the keys and shapes of every operation's "
                'reply, e.g. {"moments": {"n": "rows", "sum": "float"}}'
            )
        operations: dict[str, dict[str, Value]] = {}
        for op, keys in raw.items():
            if not isinstance(keys, dict):
                raise AlgorithmInvalid(f"params.json: replies.{op} must map keys to value kinds")
            if len(keys) > MAX_KEYS:
                raise AlgorithmInvalid(
                    f"params.json: replies.{op} declares {len(keys)} values, at most {MAX_KEYS}"
                )
            operations[str(op)] = {
                str(k): _parse_value(f"replies.{op}.{k}", v) for k, v in keys.items()
            }
        for key in operations.get(PREPARE, {}):
            if key in RUNTIME_SUMMARY:
                raise AlgorithmInvalid(
                    f"params.json: replies.prepare.{key} is the runtime's own; choose another name"
                )
        if any(v.kind == "rows" for v in operations.get(PREPARE, {}).values()):
            raise AlgorithmInvalid("params.json: replies.prepare cannot hold 'rows' values")
        left_out = meta.get("left_out", [])
        if not isinstance(left_out, list) or not all(
            isinstance(s, str) and _LABEL.match(s) for s in left_out
        ):
            raise AlgorithmInvalid(
                "params.json: left_out must be a list of short labels (letters, digits, spaces, "
                "quotes and punctuation; at most 80 characters each)"
            )
        fits = meta.get("fits", "1")
        if not isinstance(fits, str | int):
            raise AlgorithmInvalid('params.json: fits must be an expression, such as "targets"')
        names = [
            k
            for k, v in meta.get("parameters", {}).get("properties", {}).items()
            if isinstance(v, dict) and v.get("type") == "integer"
        ]
        _expression(str(fits), [*names, *FITS_NAMES])  # refuses anything but arithmetic
        summed = meta.get("summed", [])
        if not isinstance(summed, list) or not all(isinstance(s, str) for s in summed):
            raise AlgorithmInvalid("params.json: summed must be a list of operation names")
        unknown = sorted(set(summed) - set(operations))
        if unknown:
            raise AlgorithmInvalid(
                f"params.json: summed names {unknown}, which replies does not declare"
            )
        return cls(
            operations=operations,
            left_out=tuple(left_out),
            fits=str(fits),
            summed=frozenset(summed),
        )

    def unsummed(self) -> list[str]:
        """Operations that answer values but are not declared summed (``prepare`` stands for
        the algorithm's values in the summary at open)."""
        return sorted(
            op for op, values in self.operations.items() if values and op not in self.summed
        )

    def largest_reply(self, dims: Dims) -> int:
        """The most numbers one operation's declared reply holds for a job of these sizes."""
        every = [dims.as_map(target) for target in dims.per_target] or [dims.as_map()]
        return max(
            (
                sum(v.size(sizes) for v in values.values())
                for values in self.operations.values()
                for sizes in every
            ),
            default=0,
        )

    def check_handlers(self, file_name: str, handlers: Sequence[str]) -> None:
        """Every operation a remote half answers must have a declared reply, and back."""
        declared = set(self.operations) - {PREPARE}
        undeclared = sorted(set(handlers) - declared)
        if undeclared:
            raise AlgorithmInvalid(
                f"{file_name}: HANDLERS {undeclared} have no declared reply in params.json "
                "('replies')"
            )
        unused = sorted(declared - set(handlers))
        if unused:
            raise AlgorithmInvalid(
                f"params.json: replies declares {unused}, which {file_name} does not answer"
            )

    def left_out_label(self, label: str, targets: Sequence[str]) -> str:
        """A left-out reason as a person reads it (``{target}`` is the one target's name)."""
        return label.replace("{target}", f"'{targets[0]}'") if len(targets) == 1 else label

    def request_budget(
        self, params: Mapping[str, Any], *, targets: int, rounds: int, chains: int = 1
    ) -> int:
        """The most requests a site answers for a job of ``targets`` targets and ``chains``
        chains: open, close, and ``rounds`` a fit."""
        names = {
            k: int(v) for k, v in params.items() if isinstance(v, int) and not isinstance(v, bool)
        }
        given = names | {"targets": targets, "chains": chains}
        fits: int = _expression(self.fits, [*names, *FITS_NAMES])(given)
        return 2 + max(fits, 1) * rounds

    def check(
        self,
        op: str,
        result: Mapping[str, Any],
        *,
        dims: Dims,
        bounds: Bounds | None,
        target: int | None = None,
    ) -> dict[str, Any]:
        """The reply of ``op`` as declared: exact keys, kinds, shapes, finite numbers, counts
        within the site's declared rows. Raises ``ProtocolError`` naming the key at fault;
        returns the values normalised (arrays as numpy arrays, numbers as Python numbers)."""
        declared = self.operations.get(op)
        if declared is None:
            raise ProtocolError(f"operation '{op}' has no declared reply")
        return check_values(op, result, declared, dims=dims, bounds=bounds, target=target)


def check_values(
    op: str,
    result: Mapping[str, Any],
    declared: Mapping[str, Value],
    *,
    dims: Dims,
    bounds: Bounds | None,
    target: int | None = None,
) -> dict[str, Any]:
    """Check ``result`` against ``declared`` (see :meth:`ReplySchema.check`)."""
    if not isinstance(result, Mapping):
        raise ProtocolError(f"'{op}' answered a {type(result).__name__}, not named values")
    keys, expected = set(result), set(declared)
    if keys != expected:
        extra, missing = sorted(keys - expected), sorted(expected - keys)
        parts = [f"undeclared {extra}" if extra else "", f"missing {missing}" if missing else ""]
        raise ProtocolError(
            f"'{op}': reply keys differ from the declared ones: " + "; ".join(p for p in parts if p)
        )
    sizes = dims.as_map(target)
    checked: dict[str, Any] = {}
    total = 0
    for key, value in declared.items():
        checked[key] = _check_value(op, key, result[key], value, sizes, bounds, target)
        total += value.size(sizes)
    if total > dims.reply_limit():
        raise ProtocolError(f"'{op}': {total} numbers, more than a reply may hold")
    return checked


def _check_value(
    op: str,
    key: str,
    raw: Any,
    value: Value,
    sizes: Mapping[str, int],
    bounds: Bounds | None,
    target: int | None,
) -> Any:
    where = f"'{op}' value '{key}' ({value.describe()})"
    shape = tuple(d if isinstance(d, int) else sizes[d] for d in value.shape)
    if isinstance(raw, bool) or not isinstance(raw, int | float | np.ndarray | np.generic):
        raise ProtocolError(f"{where} is a {type(raw).__name__}, not a number or an array")
    array = np.asarray(raw)
    if array.shape != shape:
        raise ProtocolError(f"{where} has shape {list(array.shape)}, declared {list(shape)}")
    if value.kind == "float":
        if array.dtype.kind not in "fiu":
            raise ProtocolError(f"{where} holds {array.dtype}, not numbers")
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ProtocolError(f"{where} holds a NaN or an infinite number")
        return float(array) if not shape else array
    if array.dtype.kind not in "iu" and not (
        array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise ProtocolError(f"{where} holds {array.dtype}, not whole numbers")
    if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise ProtocolError(f"{where} is out of range")
    whole = array.astype(np.int64)
    if value.kind == "flag" and not np.isin(whole, (0, 1)).all():
        raise ProtocolError(f"{where} is not 0 or 1")
    if value.kind in ("count", "rows"):
        if bounds is None:
            raise ProtocolError(f"{where} before the site declared its rows")
        if (whole < 0).any() or (whole > bounds.rows_used).any():
            raise ProtocolError(
                f"{where} is outside 0..{bounds.rows_used}, the rows the site declared"
            )
        if value.kind == "rows":
            if target is None and len(bounds.target_rows) == 1:
                (target,) = bounds.target_rows  # a job of one target: the operation's own
            if target is None or target not in bounds.target_rows:
                raise ProtocolError(f"{where}: the operation names no target of the job")
            if int(whole) != bounds.target_rows[target]:
                raise ProtocolError(
                    f"{where} is {int(whole)}, but the site declared "
                    f"{bounds.target_rows[target]} rows for that target when the job opened"
                )
    return int(whole) if not shape else whole


def _parse_value(where: str, raw: Any) -> Value:
    match = _VALUE.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise AlgorithmInvalid(
            f"params.json: {where} is {raw!r}; a value is float, int, count, rows or flag, "
            "optionally with one or two dimensions such as float[p,p] (p, c, k, t, l, u or a "
            "number), and a leading m (one entry per chain) such as float[m,p,p]"
        )
    kind, *raw_dims = match.groups()
    given = [dim for dim in raw_dims if dim is not None]
    if CHAINS in given[1:] or len(given) - (given[:1] == [CHAINS]) > 2:
        raise AlgorithmInvalid(
            f"params.json: {where} is {raw!r}; at most two dimensions, and m (the chains) only "
            "as a leading third"
        )
    dims: list[str | int] = []
    for dim in given:
        if dim in _SYMBOLS or dim == CHAINS:
            dims.append(dim)
        elif dim.isdigit() and 1 <= int(dim) <= MAX_DIM:
            dims.append(int(dim))
        else:
            raise AlgorithmInvalid(
                f"params.json: {where}: dimension '{dim}' is not p, c, k, t, l, u, m or a number "
                f"1..{MAX_DIM}"
            )
    if kind == "rows" and dims:
        raise AlgorithmInvalid(f"params.json: {where}: a 'rows' value is one number")
    return Value(kind=kind, shape=tuple(dims))  # type: ignore[arg-type]


def _expression(text: str, names: Sequence[str]) -> Any:
    """Compile whole-number arithmetic over ``names``; refuse anything else."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise AlgorithmInvalid(f"params.json: fits {text!r} is not arithmetic") from None
    allowed = (
        ast.Expression,
        ast.BinOp,
        ast.Add,
        ast.Sub,
        ast.Mult,
        ast.Constant,
        ast.Name,
        ast.Load,
    )
    for node in ast.walk(tree):
        if not isinstance(node, allowed):
            raise AlgorithmInvalid(f"params.json: fits {text!r} may use only + - * and parentheses")
        if isinstance(node, ast.Constant) and (
            not isinstance(node.value, int) or isinstance(node.value, bool)
        ):
            raise AlgorithmInvalid(f"params.json: fits {text!r} may hold only whole numbers")
        if isinstance(node, ast.Name) and node.id not in names:
            raise AlgorithmInvalid(
                f"params.json: fits {text!r} names '{node.id}', which is not an integer parameter "
                "or 'targets' or 'chains'"
            )

    def evaluate(values: Mapping[str, int], node: ast.AST = tree.body) -> int:
        if isinstance(node, ast.Constant):
            assert isinstance(node.value, int)
            return node.value
        if isinstance(node, ast.Name):
            return int(values[node.id])
        assert isinstance(node, ast.BinOp)
        left, right = evaluate(values, node.left), evaluate(values, node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        return left * right

    return evaluate
