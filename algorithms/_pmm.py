"""Predictive mean matching at one site (method pmm; ALGORITHMS.md revision 2).

Type-1 matching, mice's default: the pooled Gaussian fit gives beta (its estimate) and one
drawn alpha. For a site's missing rows yhat = x'alpha, for its own observed rows
yhat = x'beta; each missing row takes the observed value of one of the ``donors`` observed rows
of the same site whose yhat is nearest, chosen uniformly. Donors are the site's own rows only,
so every imputed value is a value observed at that site and no value crosses a site.

The matching follows mice's ``matchindex`` (mice >= 3.12): the observed rows are shuffled
before a stable sort, so that donors with equal yhat are equally likely; for each missing row
the h-th nearest donor is taken, h uniform in 1..donors, nearness measured from the insertion
point of its yhat in the sorted donors, left and right merged, a tie going to the right. It
costs a sort of the donors and a binary search per missing row: O((n_obs + n_mis) log n_obs)
time and O(n_mis * donors) memory, never an n_obs x n_mis distance matrix.
"""

from __future__ import annotations

import numpy as np

from federation.errors import SiteRefused

DONORS = 5
"""mice's default pool size."""

BLOCK_ROWS = 65_536


def match(
    observed: np.ndarray, missing: np.ndarray, *, donors: int, rng: np.random.Generator
) -> np.ndarray:
    """For each entry of ``missing`` (yhat of a missing row), the index in ``observed`` (yhat of
    the observed rows) of a donor drawn uniformly among the ``donors`` nearest.

    Draws, in this order: one permutation of the observed rows, one integer per missing row.
    Requires ``len(observed) >= donors >= 1``.
    """
    n_obs = observed.size
    if donors < 1 or n_obs < donors:
        raise ValueError(f"need donors >= 1 and at least {donors} observed rows, got {n_obs}")
    shuffled = rng.permutation(n_obs)
    order = shuffled[np.argsort(observed[shuffled], kind="stable")]
    ordered = observed[order]
    pick = rng.integers(0, donors, size=missing.size)
    result = np.empty(missing.size, dtype=np.intp)
    offsets = np.arange(donors)
    for start in range(0, missing.size, BLOCK_ROWS):
        target = missing[start : start + BLOCK_ROWS]
        right = np.searchsorted(ordered, target, side="left")  # first donor >= target
        # Candidates: the `donors` nearest on each side of the insertion point; the h-th
        # nearest overall is among them. Right ones first, so a stable sort sends ties right.
        positions = np.concatenate([right[:, None] + offsets, right[:, None] - 1 - offsets], axis=1)
        valid = (positions >= 0) & (positions < n_obs)
        clipped = np.clip(positions, 0, n_obs - 1)
        distance = np.where(valid, np.abs(ordered[clipped] - target[:, None]), np.inf)
        nearest = np.argsort(distance, axis=1, kind="stable")
        rows = np.arange(target.size)
        chosen = nearest[rows, pick[start : start + BLOCK_ROWS]]
        result[start : start + BLOCK_ROWS] = order[clipped[rows, chosen]]
    return result


def impute(
    y_observed: np.ndarray,
    yhat_observed: np.ndarray,
    yhat_missing: np.ndarray,
    *,
    donors: int = DONORS,
    rng: np.random.Generator,
    target: str,
) -> np.ndarray:
    """The imputed values of a site's missing rows: each the observed value of a donor drawn
    among the ``donors`` observed rows of this site with the nearest yhat.

    A site with fewer observed rows than ``donors`` refuses, naming the target.
    """
    if donors < 1:
        raise SiteRefused(f"target '{target}': pmm needs donors >= 1, got {donors}")
    if y_observed.size != yhat_observed.size:
        raise ValueError("y_observed and yhat_observed differ in length")
    if yhat_missing.size == 0:
        return np.zeros(0)
    if y_observed.size < donors:
        raise SiteRefused(
            f"target '{target}': pmm draws each value among the {donors} nearest observed rows "
            f"of this site, and this site observes {y_observed.size}; "
            "lower donors, or impute this target with gaussian"
        )
    values: np.ndarray = y_observed[match(yhat_observed, yhat_missing, donors=donors, rng=rng)]
    return values


def impute_rows(
    z: np.ndarray,
    observed: np.ndarray,
    missing: np.ndarray,
    column: int,
    cols: np.ndarray,
    *,
    beta: np.ndarray,
    alpha: np.ndarray,
    donors: int = DONORS,
    rng: np.random.Generator,
    target: str,
) -> np.ndarray:
    """PMM on a site's ``z`` layout: ``observed`` and ``missing`` are boolean row masks of
    target ``column``, ``cols`` its design; yhat = x'beta for the observed rows, x'alpha for
    the missing ones, computed block by block."""
    return impute(
        z[observed, column],
        _predict(z, observed, cols, beta),
        _predict(z, missing, cols, alpha),
        donors=donors,
        rng=rng,
        target=target,
    )


def _predict(z: np.ndarray, rows: np.ndarray, cols: np.ndarray, coef: np.ndarray) -> np.ndarray:
    parts = []
    for start in range(0, z.shape[0], BLOCK_ROWS):
        block = z[start : start + BLOCK_ROWS][rows[start : start + BLOCK_ROWS]]
        if block.shape[0]:
            parts.append(block[:, cols] @ coef)
    return np.concatenate(parts) if parts else np.zeros(0)
