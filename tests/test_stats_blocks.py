"""The site's matrix Z built a block of rows at a time equals the one built from a whole copy."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms import _stats
from algorithms._stats import augment, gaussian_stats


@pytest.mark.parametrize("block", [1, 7, 64, 10_000])
def test_augment_of_selected_rows_in_blocks_equals_the_whole_copy(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_stats, "BLOCK_ROWS", block)
    rng = np.random.default_rng(3)
    values = rng.normal(size=(301, 5))
    values[rng.random(values.shape) < 0.2] = np.nan
    rows = np.asarray(~np.isnan(values).any(axis=1))
    whole = np.column_stack([values[rows], np.ones(int(rows.sum()))])

    z = augment(values, rows)

    assert z.flags.c_contiguous
    np.testing.assert_array_equal(z, whole)
    np.testing.assert_allclose(
        gaussian_stats(z, None, 0)["xtx"], gaussian_stats(whole, None, 0)["xtx"], rtol=1e-12
    )


def test_augment_of_no_selected_rows_is_empty() -> None:
    values = np.ones((5, 3))

    assert augment(values, np.zeros(5, dtype=bool)).shape == (0, 4)
