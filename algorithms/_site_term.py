"""The site term (ALGORITHMS.md, Conventions; option ``site_effect`` of SIMI and SIMICE).

With ``site_effect`` = intercept, every participant but central puts one 0/1 column per remote
site into its rows' design, 1 in its own column and 0 in the others', between its data columns
and the intercept. The pooled fit then has one intercept per site, from the summed aggregates
alone (a Gram matrix with site columns is still a sum over the sites), and central, whose site
columns are all 0, imputes with its own (the baseline) intercept. The site columns are
predictors like any other: their slopes are penalised by the ridge, lambda times their pooled
sum of squared deviations, and a site with no row in a fit leaves a constant column that the
fit leaves out.

``with_site_columns`` is the only change to a participant's rows (``Z`` of ``_stats``); the
column names are ``JobSpec.site_terms``.
"""

from __future__ import annotations

import numpy as np

from federation.site import SiteJob


def with_site_columns(site: SiteJob, z: np.ndarray) -> np.ndarray:
    """``z`` (data columns, then the ones) with the job's site columns before the ones; ``z``
    itself when the job has no site term."""
    terms = site.spec.site_terms()
    if not terms:
        return z
    columns = np.zeros((z.shape[0], len(terms)))
    if not site.is_central:
        columns[:, site.spec.sites.index(site.site)] = 1.0
    return np.ascontiguousarray(np.concatenate([z[:, :-1], columns, z[:, -1:]], axis=1))


def data_columns(site: SiteJob, z: np.ndarray) -> np.ndarray:
    """The data columns of ``z``: without the site columns and the ones."""
    result: np.ndarray = z[:, : len(site.spec.columns)]
    return result


def check_central_rows(site: SiteJob, target: str, observed: int) -> None:
    """Central imputes with its own intercept, estimated from its own rows: refuse, naming the
    target, when central observes none of them (the intercept would be the ridge's guess)."""
    if site.is_central and site.spec.site_terms() and observed == 0:
        site.refuse(
            f"site_effect=intercept imputes central's cells of '{target}' with central's own "
            f"intercept, estimated from central's rows that observe '{target}', and central has "
            "none; use site_effect=none"
        )
