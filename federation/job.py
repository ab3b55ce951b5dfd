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
    codes of the data, e.g. 1..5 for Tanner stages); empty for any other method."""

    @property
    def column(self) -> int:
        """0-based position in the data matrix."""
        return self.index - 1


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

    def predictors(self, target: Target) -> list[str]:
        """Names of the design columns for a target: every other column, the site terms (if
        any), then the intercept."""
        others = [c for i, c in enumerate(self.columns) if i != target.column]
        return [*others, *self.site_terms(), "(intercept)"]

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
        each target's parameter length t and level count l (p counts the site terms)."""
        sites = len(self.site_terms())
        p = len(self.columns) + sites
        return Dims.of(
            len(self.columns),
            len(self.targets),
            {
                t.index: (methods.get(t.type).parameters(p, len(t.levels)), len(t.levels))
                for t in self.targets
            },
            site_terms=sites,
            chains=self.chains,
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
    return wire


def target_from_wire(raw: Mapping[str, Any]) -> Target:
    """A target as a job spec carries it (its levels only for a method with levels)."""
    method = methods.get(raw["type"], field="target type")
    levels = methods.level_list(raw.get("levels", ()), field=f"target '{raw['name']}' levels")
    return Target(int(raw["index"]), str(raw["name"]), method.name, levels)


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
