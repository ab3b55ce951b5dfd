"""SIMICE, site half: the site's current data, its aggregates, and imputing its own cells."""

from __future__ import annotations

from typing import Any

import numpy as np

from algorithms._stats import augment, draw_values, gaussian_stats, linear_predictor, logistic_stats
from federation.site import SiteJob


def prepare(site: SiteJob) -> dict[str, Any]:
    """Keep rows whose non-target columns are complete; fill targets with the site's means."""
    values = site.data.values
    targets = site.targets
    target_columns = [t.column for t in targets]
    others = [c for c in range(values.shape[1]) if c not in target_columns]
    missing_other = np.isnan(values[:, others])
    incomplete = missing_other.any(axis=1)
    if site.is_central and incomplete.any():
        counts = missing_other.sum(axis=0)
        detail = ", ".join(
            f"'{site.data.columns[c]}' in {n} row(s)"
            for c, n in zip(others, counts, strict=True)
            if n
        )
        site.refuse(
            f"SIMICE needs central's non-target columns complete, but {detail} "
            "are missing; make such a column a target too"
        )
    z = augment(values[~incomplete])
    observed = {t.index: ~np.isnan(z[:, t.column]) for t in targets}
    minimum = int(site.params["min_rows"])
    for t in targets:
        count = int(observed[t.index].sum())
        if not site.is_central and count < minimum:
            site.refuse(
                f"only {count} usable row(s) observe '{t.name}', fewer than this job's minimum of "
                f"{minimum} (min_rows); this site does not take part"
            )
        if count:
            z[~observed[t.index], t.column] = z[observed[t.index], t.column].mean()
    site.state.update(z=z, observed=observed)
    return {
        "rows_used": int((~incomplete).sum()),
        "left_out": {"a non-target column missing": int(incomplete.sum())},
        "target_n": np.array([observed[t.index].sum() for t in targets], dtype=np.int64),
        "target_sum": np.array(
            [np.nansum(values[~incomplete, t.column]) for t in targets], dtype=np.float64
        ),
    }


def fill_unobserved(site: SiteJob, *, means: np.ndarray) -> None:
    """Targets this site never observes start at the pooled mean of all sites."""
    z = site.state["z"]
    for t, mean in zip(site.targets, means, strict=True):
        if not site.state["observed"][t.index].any():
            z[:, t.column] = mean


def gaussian_stats_handler(site: SiteJob, *, target: int) -> dict[str, Any]:
    return gaussian_stats(site.state["z"], site.state["observed"][target], target - 1)


def logistic_stats_handler(site: SiteJob, *, target: int, beta: np.ndarray) -> dict[str, Any]:
    return logistic_stats(site.state["z"], site.state["observed"][target], target - 1, beta)


def impute(site: SiteJob, *, target: int, alpha: np.ndarray, sigma: float | None = None) -> None:
    """Draw this site's missing cells of a target from the drawn parameters, own noise."""
    kind = next(t.type for t in site.targets if t.index == target)
    z = site.state["z"]
    rows = ~site.state["observed"][target]
    eta = linear_predictor(z, rows, target - 1, alpha)
    z[rows, target - 1] = draw_values(eta, kind, sigma, site.rng)


def completed(site: SiteJob) -> dict[str, Any]:
    """Central only: its current data, every target imputed."""
    return {"values": site.state["z"][:, :-1].copy()}


HANDLERS = {
    "fill_unobserved": fill_unobserved,
    "gaussian_stats": gaussian_stats_handler,
    "logistic_stats": logistic_stats_handler,
    "impute": impute,
}
LOCAL = {"completed": completed}
