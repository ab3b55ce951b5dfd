"""A site's disclosure policy: what it answers, decided by the site and enforced before it does.

The site's user sets it (the site portal's settings page); the site's runtime checks it when a
job opens, before anything but the refusal leaves, and counts the job's requests against it
while the job runs. Central sees only a summary, so that its job page can say before Start which
site would refuse and why; the enforcement stays at the site.

Presets name the rules of other federated systems: ``datashield`` (nfilter.subset 3,
nfilter.glm 0.33, nfilter.tab 3), ``vantage6-glm`` (10 rows, 3 per level) and ``nvflare``
(federated statistics' min_count 10).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from federation.errors import InputError


@dataclass(frozen=True)
class Policy:
    min_rows: int = 10
    """Fewest usable rows the site answers on (the job's own ``min_rows`` may ask for more)."""
    max_params_per_row: float = 0.33
    """Most coefficients a fit may have per row it uses, p / n (DataSHIELD's nfilter.glm)."""
    min_level_count: int = 3
    """Fewest rows of each level of a 0/1 column (DataSHIELD's nfilter.tab, vantage6's 3)."""
    min_sites: int = 2
    """Fewest participants a job must have, central included: with two, central's own data
    and the sum tell it this site's share."""
    allowed_columns: tuple[str, ...] = ()
    """When not empty, the only columns a job may use."""
    denied_columns: tuple[str, ...] = ()
    """Columns no job may use."""
    max_newton_rounds: int = 25
    """Requests the site answers per fit the job declares (Newton evaluations, for a binary
    target), so that the whole job's traffic is bounded."""
    preset: str = "default"

    def __post_init__(self) -> None:
        for name in ("min_rows", "min_level_count", "min_sites", "max_newton_rounds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"policy: {name} must be a whole number of 0 or more")
        if self.max_newton_rounds < 1:
            raise InputError("policy: max_newton_rounds must be 1 or more")
        ratio = self.max_params_per_row
        if not isinstance(ratio, int | float) or not 0 < float(ratio) <= 1 or ratio != ratio:
            raise InputError("policy: max_params_per_row must be a number in (0, 1]")

    # -------------------------------------------------------------- what a job may do

    def check_job(self, *, columns: Sequence[str], participants: int) -> list[str]:
        """Reasons this site refuses a job from its definition alone (no data needed)."""
        reasons = []
        if participants < self.min_sites:
            reasons.append(
                f"the job has {participants} participant(s), fewer than this site's "
                f"min_sites of {self.min_sites}"
            )
        deny = {_key(c) for c in self.denied_columns}
        allow = {_key(c) for c in self.allowed_columns}
        denied = [c for c in columns if _key(c) in deny]
        if allow:
            denied += [c for c in columns if _key(c) not in allow and c not in denied]
        if denied:
            shown = ", ".join(f"'{c}'" for c in denied[:5])
            reasons.append(f"the job uses column(s) this site does not allow: {shown}")
        return reasons

    def check_data(
        self,
        *,
        rows: int,
        rows_used: int,
        job_min_rows: int,
        target_rows: Mapping[str, int],
        design_width: int,
        levels: Mapping[str, tuple[int, int]],
    ) -> list[str]:
        """Reasons this site refuses a job on its data: counts only, never a value."""
        reasons = []
        minimum = max(self.min_rows, job_min_rows)
        if rows_used < minimum:
            source = "this site's own min_rows" if self.min_rows > job_min_rows else "min_rows"
            reasons.append(
                f"only {rows_used} usable row(s) of {rows}, fewer than the minimum of {minimum} "
                f"({source}); this site does not take part"
            )
        for target, n in target_rows.items():
            if n and design_width / n > self.max_params_per_row:
                reasons.append(
                    f"a fit of '{target}' has {design_width} coefficients on {n} rows, more than "
                    f"max_params_per_row {self.max_params_per_row:g} allows"
                )
        for column, (zeros, ones) in levels.items():
            if min(zeros, ones) < self.min_level_count and zeros + ones:
                reasons.append(
                    f"column '{column}' has a level held by fewer than {self.min_level_count} "
                    "row(s) (min_level_count)"
                )
        return reasons

    def foresee(self, *, columns: Sequence[str], participants: int) -> list[str]:
        """What central can tell before Start: the refusals the job's definition already
        causes, then the rows each target's fit will need at this site."""
        reasons = self.check_job(columns=columns, participants=participants)
        needed = max(self.min_rows, math.ceil(len(columns) / self.max_params_per_row))
        return [*reasons, f"needs at least {needed} usable rows per target"]

    # -------------------------------------------------------------- storage and display

    def summary(self) -> dict[str, Any]:
        """What central is told of this policy (to foresee a refusal), and what the site stores."""
        data = asdict(self)
        data["allowed_columns"] = list(self.allowed_columns)
        data["denied_columns"] = list(self.denied_columns)
        return data

    def to_json(self) -> str:
        return json.dumps(self.summary(), sort_keys=True)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Policy:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"policy: unknown setting(s) {unknown}")
        values = dict(raw)
        for name in ("allowed_columns", "denied_columns"):
            if name in values:
                values[name] = _columns(name, values[name])
        try:
            return cls(**values)
        except TypeError as error:
            raise InputError(f"policy: {error}") from None

    @classmethod
    def from_json(cls, text: str) -> Policy:
        try:
            raw = json.loads(text)
        except ValueError:
            raise InputError("policy: not valid JSON") from None
        if not isinstance(raw, dict):
            raise InputError("policy: a JSON object is needed")
        return cls.from_mapping(raw)

    @classmethod
    def preset_named(cls, name: str) -> Policy:
        if name not in PRESETS:
            raise InputError(f"policy preset '{name}' is not one of {', '.join(PRESETS)}")
        return PRESETS[name]

    def with_columns(self, *, allowed: Iterable[str], denied: Iterable[str]) -> Policy:
        return replace(self, allowed_columns=tuple(allowed), denied_columns=tuple(denied))


def _key(column: str) -> str:
    """How column names are compared: Unicode-normalised (NFC) and case-folded, so that 'Café'
    typed here and 'cafe\u0301' in a header are one column."""
    return unicodedata.normalize("NFC", column).casefold().strip()


def _columns(name: str, raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [c.strip() for c in raw.split(",")]
    if not isinstance(raw, list | tuple) or not all(isinstance(c, str) for c in raw):
        raise InputError(f"policy: {name} must be a list of column names")
    return tuple(c for c in raw if c)


def binary_levels(values: np.ndarray, columns: Sequence[str]) -> dict[str, tuple[int, int]]:
    """For every column whose observed values are all 0 or 1: how many rows hold each."""
    levels: dict[str, tuple[int, int]] = {}
    for j, name in enumerate(columns):
        column = values[:, j]
        observed = column[~np.isnan(column)]
        if observed.size and np.isin(observed, (0.0, 1.0)).all():
            ones = int(observed.sum())
            levels[name] = (int(observed.size) - ones, ones)
    return levels


PRESETS: dict[str, Policy] = {
    "default": Policy(),
    "datashield": Policy(
        min_rows=3, max_params_per_row=0.33, min_level_count=3, min_sites=2, preset="datashield"
    ),
    "vantage6-glm": Policy(
        min_rows=10, max_params_per_row=0.33, min_level_count=3, min_sites=2, preset="vantage6-glm"
    ),
    "nvflare": Policy(
        min_rows=10, max_params_per_row=1.0, min_level_count=10, min_sites=2, preset="nvflare"
    ),
}
OPEN = Policy(
    min_rows=0,
    max_params_per_row=1.0,
    min_level_count=0,
    min_sites=0,
    max_newton_rounds=1000,
    preset="open",
)
"""No rule of its own: ``fip simulate``'s sites and central's own data (the job's min_rows
still applies to the sites)."""
