"""CSLMICE, site half: its current data, its average gradients, and imputing its own cells."""

from __future__ import annotations

from algorithms import _chained
from algorithms._site import gradient_handler, local_fit_handler, surrogate_fit_handler

prepare = _chained.prepare


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "gradient": gradient_handler,
    "impute": _chained.impute,
}
LOCAL = {
    "completed": _chained.completed,
    "local_fit": local_fit_handler,
    "surrogate_fit": surrogate_fit_handler,
}
