"""AVGMMICE, site half: its current data, its own weighted fits, and imputing its own cells."""

from __future__ import annotations

from algorithms import _chained
from algorithms._site import local_fit_handler

prepare = _chained.prepare


HANDLERS = {
    "fill_unobserved": _chained.fill_unobserved,
    "local_fit": local_fit_handler,
    "impute": _chained.impute,
}
LOCAL = {"completed": _chained.completed}
