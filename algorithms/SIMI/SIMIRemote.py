"""SIMI, site half: aggregates of the complete rows; at central, imputation of its own rows."""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms._stats import augment, draw_values, gaussian_stats, linear_predictor, logistic_stats
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep the rows where every column is observed; at central, find the rows to impute."""
    (target,) = site.targets
    values = site.data.values
    missing = np.isnan(values)
    target_missing = missing[:, target.column]
    predictor_missing = np.delete(missing, target.column, axis=1).any(axis=1)
    if site.is_central:
        stuck = target_missing & predictor_missing
        if stuck.any():
            counts = np.delete(missing[stuck], target.column, axis=1).sum(axis=0)
            others = [c for i, c in enumerate(site.data.columns) if i != target.column]
            detail = ", ".join(f"'{c}' in {n}" for c, n in zip(others, counts, strict=True) if n)
            site.refuse(
                f"{int(stuck.sum())} row(s) miss '{target.name}' and a predictor too ({detail}); "
                "SIMI imputes only rows whose predictors are complete: use SIMICE for several "
                "incomplete columns"
            )
        site.state["impute_rows"] = target_missing
    complete = ~(target_missing | predictor_missing)
    site.state["z"] = augment(values[complete])
    return {
        "rows_used": int(complete.sum()),
        "left_out": {
            f"'{target.name}' missing": int(target_missing.sum()),
            "a predictor missing": int((predictor_missing & ~target_missing).sum()),
        },
    }


def gaussian_stats_handler(site: SiteJob, *, target: int) -> dict[str, Any]:
    return gaussian_stats(site.state["z"], None, target - 1)


def logistic_stats_handler(site: SiteJob, *, target: int, beta: np.ndarray) -> dict[str, Any]:
    return logistic_stats(site.state["z"], None, target - 1, beta)


def impute(
    site: SiteJob, *, target: int, alpha: np.ndarray, sigma: float | None = None
) -> dict[str, Any]:
    """Central only: a copy of central's data with the target's missing cells drawn."""
    (spec_target,) = site.targets
    values = site.data.values.copy()
    rows = site.state["impute_rows"]
    z = augment(values[rows])
    eta = linear_predictor(z, np.ones(z.shape[0], dtype=bool), target - 1, alpha)
    values[rows, target - 1] = draw_values(eta, spec_target.type, sigma, site.rng)
    return {"values": values}


HANDLERS = {"gaussian_stats": gaussian_stats_handler, "logistic_stats": logistic_stats_handler}
LOCAL = {"impute": impute}
