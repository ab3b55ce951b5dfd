"""Predictive mean matching (``algorithms/_pmm``) as ALGORITHMS.md revision 2 and mice's
type-1 matching: values come only from the site's own observed rows, each missing row takes one
of its ``donors`` nearest donors with equal probability, tied donors are equally likely, and a
site with too few observed rows refuses by the target's name.

The references are brute force: every distance between a missing and an observed yhat.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from algorithms import _pmm
from algorithms._stats import augment
from federation.errors import SiteRefused
from tests.r_reference import run_r


def brute_force_nearest(observed: np.ndarray, target: float, donors: int) -> set[int]:
    """Indices of the ``donors`` observed yhat nearest to ``target`` (no ties in the data)."""
    return {int(i) for i in np.argsort(np.abs(observed - target), kind="stable")[:donors]}


def test_chosen_donors_are_among_the_nearest() -> None:
    rng = np.random.default_rng(1)
    observed = rng.normal(size=400)
    missing = np.concatenate([rng.normal(size=300), [-10.0, 10.0, observed[7]]])
    chosen = _pmm.match(observed, missing, donors=5, rng=np.random.default_rng(2))
    for target, index in zip(missing, chosen, strict=True):
        assert int(index) in brute_force_nearest(observed, float(target), 5)


def test_each_of_the_nearest_donors_is_equally_likely() -> None:
    observed = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    missing = np.full(50_000, 4.2)  # nearest five: 4, 5, 3, 6, 2
    chosen = _pmm.match(observed, missing, donors=5, rng=np.random.default_rng(3))
    counts = np.bincount(chosen, minlength=10)
    assert set(np.flatnonzero(counts)) == {2, 3, 4, 5, 6}
    assert stats.chisquare(counts[2:7]).pvalue > 1e-3


def test_tied_donors_are_equally_likely() -> None:
    """Seven donors at the same yhat, five drawn: mice shuffles the donors before sorting (once
    per call, so once per imputation), so over imputations each of the seven is drawn with
    probability 1/7 (without the shuffle the first five would always be)."""
    observed = np.concatenate([np.full(7, 1.0), [5.0, 6.0, 7.0]])
    rng = np.random.default_rng(4)
    chosen = [_pmm.match(observed, np.array([1.1]), donors=5, rng=rng)[0] for _ in range(7000)]
    counts = np.bincount(chosen, minlength=10)
    assert counts[7:].sum() == 0
    assert stats.chisquare(counts[:7]).pvalue > 1e-3


def test_at_the_ends_the_pool_extends_to_one_side() -> None:
    observed = np.arange(20.0)
    chosen = _pmm.match(observed, np.full(5_000, -3.0), donors=3, rng=np.random.default_rng(5))
    assert set(np.unique(chosen)) == {0, 1, 2}
    chosen = _pmm.match(observed, np.full(5_000, 99.0), donors=3, rng=np.random.default_rng(6))
    assert set(np.unique(chosen)) == {17, 18, 19}


def test_a_donor_tied_on_both_sides_goes_right_as_mice() -> None:
    observed = np.array([0.0, 2.0, 10.0])
    chosen = _pmm.match(observed, np.full(100, 1.0), donors=1, rng=np.random.default_rng(7))
    assert set(np.unique(chosen)) == {1}


def test_imputes_only_values_observed_at_that_site() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1000, 2))
    y = np.round(2.0 + x @ [1.0, -0.5] + rng.normal(size=1000), 1)
    y[rng.random(1000) < 0.3] = np.nan
    values = np.column_stack([x, y])
    z = augment(values)
    missing = np.isnan(z[:, 2])
    beta = np.array([1.0, -0.5, 2.0])
    alpha = beta + rng.normal(scale=0.1, size=3)
    imputed = _pmm.impute_rows(
        z, ~missing, missing, 2, np.array([0, 1, 3]), beta=beta, alpha=alpha, rng=rng, target="y"
    )
    assert imputed.size == missing.sum()
    assert set(imputed) <= set(y[~missing])


def test_observed_rows_are_matched_on_beta_and_missing_rows_on_alpha() -> None:
    """Type-1 matching: yhat of the donors uses the estimate, the missing rows' the draw."""
    x = np.arange(10.0)
    y = 100.0 + x  # the value tells which donor was taken
    values = np.column_stack([np.concatenate([x, [3.0]]), np.concatenate([y, [np.nan]])])
    z = augment(values)
    missing = np.isnan(z[:, 1])
    cols = np.array([0, 2])
    same = _pmm.impute_rows(
        z,
        ~missing,
        missing,
        1,
        cols,
        beta=np.array([1.0, 0.0]),
        alpha=np.array([1.0, 0.0]),
        donors=1,
        rng=np.random.default_rng(9),
        target="y",
    )
    assert same.tolist() == [103.0]
    shifted = _pmm.impute_rows(
        z,
        ~missing,
        missing,
        1,
        cols,
        beta=np.array([1.0, 0.0]),
        alpha=np.array([1.0, 4.0]),  # the drawn intercept moves the missing row's yhat to 7
        donors=1,
        rng=np.random.default_rng(9),
        target="y",
    )
    assert shifted.tolist() == [107.0]


def test_fewer_observed_rows_than_donors_is_refused_naming_the_target() -> None:
    observed = np.array([1.0, 2.0, 3.0])
    with pytest.raises(SiteRefused, match="target 'tv': .* 5 nearest .* this site observes 3"):
        _pmm.impute(
            observed, observed, np.array([2.5]), donors=5, rng=np.random.default_rng(), target="tv"
        )
    with pytest.raises(SiteRefused, match="target 'tv': pmm needs donors >= 1"):
        _pmm.impute(
            observed, observed, np.array([2.5]), donors=0, rng=np.random.default_rng(), target="tv"
        )


def test_nothing_to_impute_needs_no_donors() -> None:
    imputed = _pmm.impute(
        np.array([1.0]), np.array([1.0]), np.zeros(0), rng=np.random.default_rng(), target="y"
    )
    assert imputed.size == 0


def test_same_seed_same_matches() -> None:
    rng = np.random.default_rng(10)
    observed, missing = rng.normal(size=500), rng.normal(size=200)
    first = _pmm.match(observed, missing, donors=5, rng=np.random.default_rng(11))
    again = _pmm.match(observed, missing, donors=5, rng=np.random.default_rng(11))
    other = _pmm.match(observed, missing, donors=5, rng=np.random.default_rng(12))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.slow
def test_donor_pools_equal_mice_matchindex_on_boys(tmp_path: Path) -> None:
    """On boys' heights predicted from age (ties included: boys of the same age), mice's
    ``matchindex`` and ours reach the same donor values for each target: the nearest with one
    donor, and the same pool of five over repeated draws."""
    run_r(
        r"""
suppressMessages(library(mice))
set.seed(1)
ob <- boys[!is.na(boys$hgt), ]
d <- fitted(lm(hgt ~ age, data = ob))
t <- c(runif(60, min(d) - 5, max(d) + 5), d[1:10] + 1e-9)
write.csv(data.frame(d = d), "d.csv", row.names = FALSE)
write.csv(data.frame(t = t), "t.csv", row.names = FALSE)
write.csv(data.frame(one = d[matchindex(d, t, 1)]), "one.csv", row.names = FALSE)
draws <- sapply(1:300, function(i) d[matchindex(d, t, 5)])
write.csv(draws, "five.csv", row.names = FALSE)
""",
        cwd=tmp_path,
    )

    def column(name: str) -> np.ndarray:
        return np.loadtxt(tmp_path / name, delimiter=",", skiprows=1, ndmin=2)

    d, t = column("d.csv")[:, 0], column("t.csv")[:, 0]
    rng = np.random.default_rng(13)
    ours = d[_pmm.match(d, t, donors=1, rng=rng)]
    np.testing.assert_array_equal(ours, column("one.csv")[:, 0])
    theirs = column("five.csv")  # targets x draws
    ours_five = np.array([d[_pmm.match(d, t, donors=5, rng=rng)] for _ in range(300)]).T
    for row in range(t.size):
        assert set(ours_five[row]) == set(theirs[row]), row


def test_shifting_or_scaling_the_target_shifts_or_scales_its_imputations_exactly() -> None:
    """With the Gaussian fit equivariant (beta and alpha shift and scale with y), PMM's yhat
    move together for donors and recipients, so the same seed picks the same donors."""
    rng = np.random.default_rng(14)
    x = rng.normal(size=(500, 2))
    y = np.round(3.0 + x @ [1.0, 0.5] + rng.normal(size=500), 2)
    observed = rng.random(500) < 0.7
    beta = np.array([1.0, 0.5, 3.0])
    alpha = beta + rng.normal(scale=0.05, size=3)
    z = augment(np.column_stack([x, y]))
    cols = np.array([0, 1, 3])

    def impute(shift: float, scale: float) -> np.ndarray:
        moved = z.copy()
        moved[:, 2] = moved[:, 2] * scale + shift
        offset = np.array([0.0, 0.0, shift])
        return _pmm.impute_rows(
            moved,
            observed,
            ~observed,
            2,
            cols,
            beta=beta * scale + offset,
            alpha=alpha * scale + offset,
            rng=np.random.default_rng(15),
            target="y",
        )

    base = impute(0.0, 1.0)
    np.testing.assert_allclose(impute(1000.0, 1.0), base + 1000.0, rtol=0, atol=1e-9)
    np.testing.assert_allclose(impute(0.0, 1000.0), base * 1000.0, rtol=1e-15)
    np.testing.assert_allclose(impute(0.0, 0.001), base * 0.001, rtol=1e-15)
