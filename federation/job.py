"""What a job is, as both halves see it: its targets, its parameters, its seed and its events."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from algorithms import methods
from federation.errors import InputError
from federation.replies import Dims

CENTRAL = "central"
"""The name of central's own participant, in reports and in the random streams."""


@dataclass(frozen=True)
class Target:
    """A column to impute. ``index`` is 1-based, as algorithms are called with it; ``type`` is
    the name of its method in ``algorithms.methods``."""

    index: int
    name: str
    type: str
    levels: tuple[float, ...] = ()
    """The level values of a categorical or ordinal target, in the job's order (the integer
    codes of the data, e.g. 1..5 for Tanner stages; 0..K-1 for a text target); empty for any
    other method."""
    labels: tuple[str, ...] = ()
    """A text target's levels as written, in the job's order (its cells are coded 0..K-1, a
    logistic one 0 and 1, and imputed as these texts); empty for a numeric target."""

    @property
    def column(self) -> int:
        """0-based position in the data matrix."""
        return self.index - 1


@dataclass(frozen=True)
class Design:
    """What the design of a target is made of: its predictors (0-based columns of the job's
    ``columns``, in their order), each one's level values (empty for a numeric column), and the
    names of the design's columns: a numeric predictor's own, one per level but the first of a
    factor or of a categorical or ordinal target (``name=level``, treatment coding, the job's
    level order, as mice codes a factor), then ``(intercept)``. ``algorithms._predictors`` builds
    the matrix."""

    sources: tuple[int, ...]
    levels: tuple[tuple[float, ...], ...]
    """Per source, the values its cells hold for its levels, in the job's order: a factor's
    level indices 0..K-1, a categorical or ordinal target's ``Target.levels``; empty for a column
    entering as itself (numeric predictors, gaussian, logistic, poisson and pmm targets)."""
    names: tuple[str, ...]
    default: bool
    """Every other column, none expanded: the design is the site's data matrix itself."""
    site_terms: int = 0
    """The site term's columns (``JobSpec.site_terms``), after the predictors: in a
    participant's rows they come after the job's columns, before the ones."""

    @property
    def p(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class JobSpec:
    """Everything a site needs to know about a job, sent to every site when the job opens."""

    job_id: str
    algorithm: str
    version: str
    digest: str
    columns: tuple[str, ...]
    targets: tuple[Target, ...]
    params: Mapping[str, Any]
    seed: int
    sites: tuple[str, ...]
    factors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """The factor columns (categorical predictors) and their levels as written, in the job's
    order: the first is the reference of the treatment coding (``federation.roles``)."""
    carried: tuple[str, ...] = ()
    """Columns never modelled: not in ``columns``, ignored at sites, written back unchanged in
    central's outputs."""
    predictor_lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per target name, the columns its design uses (mice's predictorMatrix), when not the
    default: every other column."""

    def design(self, target: Target) -> Design:
        """The design of a target's fits (ALGORITHMS.md, Conventions)."""
        listed = self.predictor_lists.get(target.name)
        sources = tuple(
            i
            for i, name in enumerate(self.columns)
            if i != target.column and (listed is None or name in listed)
        )
        labels = [self._level_labels(self.columns[i]) for i in sources]
        levels = tuple(values for values, _ in labels)
        names: list[str] = []
        for i, (values, texts) in zip(sources, labels, strict=True):
            name = self.columns[i]
            names += [f"{name}={text}" for text in texts[1:]] if values else [name]
        terms = self.site_terms()  # in a participant's rows after the job's columns
        return Design(
            sources=sources,
            levels=levels,
            names=(*names, *terms, "(intercept)"),
            default=listed is None and not any(levels),
            site_terms=len(terms),
        )

    def _level_labels(self, name: str) -> tuple[tuple[float, ...], tuple[str, ...]]:
        """A column's level values in the data and their names, when it enters designs as
        treatment dummies: a factor (cells 0..K-1) or a categorical or ordinal target (its
        ``levels``; named by its text labels, else by the values); else two empty tuples."""
        if name in self.factors:
            written = self.factors[name]
            return tuple(float(k) for k in range(len(written))), tuple(written)
        for target in self.targets:
            if target.name == name and methods.get(target.type).levels:
                texts = target.labels or tuple(f"{v:g}" for v in target.levels)
                return tuple(target.levels), texts
        return (), ()

    def predictors(self, target: Target) -> list[str]:
        """Names of the design columns for a target (:meth:`design`), the intercept last."""
        return list(self.design(target).names)

    def design_width(self) -> int:
        """The widest design of the job's targets."""
        return max((self.design(t).p for t in self.targets), default=len(self.columns))

    def site_terms(self) -> tuple[str, ...]:
        """The site term's columns (option ``site_effect``, ALGORITHMS.md "Conventions"): with
        ``intercept``, one 0/1 column per remote site, in the job's order; else none."""
        if self.params.get("site_effect", "none") != "intercept":
            return ()
        return tuple(f"(site {site})" for site in self.sites)

    @property
    def chains(self) -> int:
        """How many chains the job runs (ALGORITHMS.md, SIMICE): M = ``imputations`` with
        ``chains`` = "parallel", else one; the ``m`` of its replies' shapes."""
        return chain_count(self.params)

    def dims(self) -> Dims:
        """The sizes its replies are checked against (``federation.replies``): p, c, k, m, and
        each target's design width p (site terms included), parameter length t and level
        count l."""
        sites = len(self.site_terms())
        widths = {t.index: self.design(t).p for t in self.targets}
        return Dims.of(
            len(self.columns),
            len(self.targets),
            {
                t.index: (
                    methods.get(t.type).parameters(widths[t.index], len(t.levels)),
                    len(t.levels),
                )
                for t in self.targets
            },
            site_terms=sites,
            chains=self.chains,
            widths=widths,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "algorithm": self.algorithm,
            "version": self.version,
            "digest": self.digest,
            "columns": list(self.columns),
            "targets": [target_to_wire(t) for t in self.targets],
            "params": dict(self.params),
            "seed": self.seed,
            "sites": list(self.sites),
            **({"factors": {k: list(v) for k, v in self.factors.items()}} if self.factors else {}),
            **({"carried": list(self.carried)} if self.carried else {}),
            **(
                {"predictors": {k: list(v) for k, v in self.predictor_lists.items()}}
                if self.predictor_lists
                else {}
            ),
        }

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> JobSpec:
        return cls(
            job_id=str(raw["job_id"]),
            algorithm=str(raw["algorithm"]),
            version=str(raw["version"]),
            digest=str(raw["digest"]),
            columns=tuple(raw["columns"]),
            targets=tuple(target_from_wire(t) for t in raw["targets"]),
            params=dict(raw["params"]),
            seed=int(raw["seed"]),
            sites=tuple(raw["sites"]),
            factors={str(k): tuple(map(str, v)) for k, v in raw.get("factors", {}).items()},
            carried=tuple(map(str, raw.get("carried", ()))),
            predictor_lists={
                str(k): tuple(map(str, v)) for k, v in raw.get("predictors", {}).items()
            },
        )


PARALLEL = "parallel"
"""The ``chains`` parameter's value for M independent chains (mice's way); "single" is MIDN's."""


def chain_count(params: Mapping[str, Any]) -> int:
    """The chains of a job with these parameters (see :attr:`JobSpec.chains`)."""
    return int(params["imputations"]) if params.get("chains") == PARALLEL else 1


def target_to_wire(target: Target) -> dict[str, Any]:
    """A target as a job spec carries it (its levels only for a method with levels)."""
    wire: dict[str, Any] = {"index": target.index, "name": target.name, "type": target.type}
    if target.levels:
        wire["levels"] = list(target.levels)
    if target.labels:
        wire["labels"] = list(target.labels)
    return wire


def target_from_wire(raw: Mapping[str, Any]) -> Target:
    """A target as a job spec carries it (its levels only for a method with levels)."""
    method = methods.get(raw["type"], field="target type")
    levels = methods.level_list(raw.get("levels", ()), field=f"target '{raw['name']}' levels")
    labels = tuple(str(label) for label in raw.get("labels", ()))
    return Target(int(raw["index"]), str(raw["name"]), method.name, levels, labels)


def make_targets(
    columns: Sequence[str],
    requested: Iterable[tuple[str | int, str]],
    *,
    label: str,
    values: np.ndarray | None = None,
    levels: Mapping[str, Sequence[float]] | None = None,
) -> tuple[Target, ...]:
    """Turn (column name or 1-based index, method name) pairs into targets, checking each one.

    A categorical or ordinal target takes its levels from ``levels`` (by column name) or else
    from the values observed in ``values`` (central's table); see ``methods.levels_for``."""
    targets: list[Target] = []
    for key, kind in requested:
        if isinstance(key, int):
            if not 1 <= key <= len(columns):
                raise InputError(
                    f"target index {key} is out of range: {label} has {len(columns)} columns "
                    f"(1..{len(columns)})"
                )
            index = key
        elif key in columns:
            index = columns.index(key) + 1
        else:
            raise InputError(
                f"target '{key}' is not a column of {label}; its columns are "
                + ", ".join(f"'{c}'" for c in columns)
            )
        method = methods.get(kind, field=f"target '{columns[index - 1]}'")
        if any(t.index == index for t in targets):
            raise InputError(f"target '{columns[index - 1]}' is given twice")
        name = columns[index - 1]
        chosen = methods.levels_for(
            method,
            column=name,
            given=(levels or {}).get(name),
            cells=None if values is None else values[:, index - 1],
        )
        targets.append(Target(index=index, name=name, type=method.name, levels=chosen))
    if not targets:
        raise InputError("no target given: name at least one column to impute")
    return tuple(targets)


def random_stream(seed: int, key: str) -> np.random.Generator:
    """The random stream of one participant: derived from (job seed, key), nothing else."""
    digest = hashlib.sha256(key.encode()).digest()
    spawn_key = (int.from_bytes(digest[:8], "little"),)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=spawn_key))


@dataclass(frozen=True)
class JobEvent:
    """Progress and messages of a running job, for progress bars and event logs."""

    kind: Literal["progress", "log", "warning", "fit"]
    message: str
    fraction: float | None = None
    site: str | None = None
    at: float = field(default_factory=time.time)
