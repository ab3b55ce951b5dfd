"""IMICE, central's own half (no site takes part): its current data, sums and imputations."""

from __future__ import annotations

from algorithms import _chained
from algorithms._site import gaussian_stats_handler, logistic_stats_handler

prepare = _chained.prepare


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "gaussian_stats": gaussian_stats_handler,
    "logistic_stats": logistic_stats_handler,
    "impute": _chained.impute,
}
LOCAL = {"completed": _chained.completed}
