"""pmm: predictive mean matching (mice's default pmm, type-1 matching) for a continuous or count
target: the exact pooled Gaussian fit and draw, then each missing row takes the observed value
of one of the ``donors`` nearest observed rows of the same participant (``algorithms._pmm``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from algorithms import _pmm
from algorithms._stats import Fit, linear_predictor
from algorithms.methods._method import Observed, Rows, chosen
from algorithms.methods.gaussian import Gaussian


class Pmm(Gaussian):
    name = "pmm"
    label = "matched"
    mice = "pmm"
    when = (
        "a continuous or count column whose values must stay plausible (skewed, bounded, "
        "integer): imputes only values observed at the imputing site"
    )
    expects = "any number"

    def check(self, observed: Observed, *, column: str, params: Mapping[str, Any]) -> str | None:
        """Donors are the imputing participant's own observed rows: a column with missing cells
        needs at least ``donors`` observed ones."""
        donors = int(params.get("donors") or _pmm.DONORS)
        if observed.missing and observed.count < donors:
            return (
                f"column '{column}' is imputed by pmm from this table's own observed values, but "
                f"only {observed.count} are observed, fewer than the {donors} donors (parameter "
                "'donors'); lower it or choose gaussian"
            )
        return super().check(observed, column=column, params=params)

    def draw(self, fit: Fit, rng: np.random.Generator, *, target: str) -> dict[str, Any]:
        """The Gaussian draw (alpha, sigma) and the fit's beta, on which donors are matched."""
        return {**super().draw(fit, rng, target=target), "beta": fit.beta}

    def impute(
        self,
        missing: Rows,
        donors: Rows,
        column: int,
        rng: np.random.Generator,
        *,
        target: str,
        levels: Sequence[float] = (),
        params: Mapping[str, Any] | None = None,
        **drawn: Any,
    ) -> np.ndarray:
        """yhat = x'alpha for the missing rows, x'beta for the donors; each missing row takes a
        donor's observed value among the ``donors`` nearest (job parameter, default 5)."""
        z_missing, missing_rows = chosen(missing)
        z_donors, donor_rows = chosen(donors)
        yhat_missing = linear_predictor(z_missing, missing_rows, column, drawn["alpha"])
        count = int((params or {}).get("donors") or _pmm.DONORS)
        return _pmm.impute(
            z_donors[donor_rows, column],
            linear_predictor(z_donors, donor_rows, column, drawn["beta"]),
            yhat_missing,
            donors=count,
            rng=rng,
            target=target,
        )

    def simulate(self, eta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        values: np.ndarray = np.round(eta + rng.standard_normal(eta.size), 1)
        return values


PMM = Pmm()
