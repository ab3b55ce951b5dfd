"""Plausibility plots: their numbers equal the data, their SVG draws those numbers.

The job is a real SIMICE run (central and two sites in memory) with a continuous and a binary
target; the expected numbers are computed here from the imputed datasets with the standard
library, not with the module's own code.
"""

from __future__ import annotations

import re
import statistics
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from federation.plots import (
    RASTER_POINTS,
    Cells,
    TargetPlot,
    bw_nrd0,
    describe,
    draw,
    file_stem,
    kernel_density,
    plausibility,
)
from federation.runtime import JobResult
from tests.helpers import run, table
from tests.r_reference import run_r

SVG = "{http://www.w3.org/2000/svg}"
M = 4


def _tables() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(12)
    made = []
    for rows in (90, 120, 120):
        x = rng.normal(size=rows)
        g = 2 + x + rng.normal(size=rows)
        b = (rng.random(rows) < 1 / (1 + np.exp(-x))).astype(float)
        values = np.column_stack([x, g, b])
        values[rng.random(rows) < 0.3, 1] = np.nan
        values[rng.random(rows) < 0.25, 2] = np.nan
        made.append(values)
    return tuple(made)


@pytest.fixture(scope="module")
def result() -> JobResult:
    central, a, b = _tables()
    columns = ("x", "weight (kg)", "smoker")
    return run(
        "SIMICE",
        table("central.csv", columns, central),
        {"a": table("a.csv", columns, a), "b": table("b.csv", columns, b)},
        [("weight (kg)", "gaussian"), ("smoker", "logistic")],
        seed=5,
        imputations=M,
    )


@pytest.fixture(scope="module")
def plots(result: JobResult) -> tuple[TargetPlot, ...]:
    """The job's figures, drawn once and read by several tests (a tuple: none may replace one)."""
    return tuple(plausibility(result))


def _groups(result: JobResult, column: int) -> list[list[float]]:
    """Observed cells, then each imputation's imputed cells, from the datasets themselves."""
    original = result.dataset(0)
    missing = [np.isnan(v) for v in original[:, column]]
    groups = [[float(v) for v, gone in zip(original[:, column], missing, strict=True) if not gone]]
    for m in range(1, M + 1):
        column_m = result.dataset(m)[:, column]
        groups.append([float(v) for v, gone in zip(column_m, missing, strict=True) if gone])
    return groups


def test_the_density_table_equals_the_data(
    result: JobResult, plots: tuple[TargetPlot, ...]
) -> None:
    assert [p.name for p in plots] == ["weight (kg)", "smoker"]
    rows = plots[0].numbers.rows()
    assert [(r["imp"], r["cells"]) for r in rows] == [(0, "observed")] + [
        (m, "imputed") for m in range(1, M + 1)
    ]
    for row, cells in zip(rows, _groups(result, 1), strict=True):
        q1, median, q3 = statistics.quantiles(cells, n=4, method="inclusive")
        assert row["n"] == len(cells) > 0
        assert row["mean"] == pytest.approx(statistics.fmean(cells), rel=1e-12)
        assert row["sd"] == pytest.approx(statistics.stdev(cells), rel=1e-12)
        assert (row["min"], row["max"]) == (min(cells), max(cells))
        assert (row["q1"], row["median"], row["q3"]) == pytest.approx((q1, median, q3), rel=1e-12)


def test_the_bar_table_counts_each_level(result: JobResult, plots: tuple[TargetPlot, ...]) -> None:
    numbers = plots[1].numbers
    assert numbers.kind == "bars" and numbers.levels == (0.0, 1.0)
    by_group: dict[int, dict[str, tuple[int, float]]] = {}
    for row in numbers.rows():
        by_group.setdefault(row["imp"], {})[row["level"]] = (row["count"], row["share"])
    for imp, cells in enumerate(_groups(result, 2)):
        counted = Counter(cells)
        assert by_group[imp] == {
            "0": (counted[0.0], counted[0.0] / len(cells)),
            "1": (counted[1.0], counted[1.0] / len(cells)),
        }


def _svg(plot_svg: bytes) -> ET.Element:
    return ET.fromstring(plot_svg)  # parses as XML, or the test fails here


def _group(root: ET.Element, gid: str) -> ET.Element:
    found = root.find(f".//{SVG}g[@id='{gid}']")
    assert found is not None, f"no group {gid}"
    return found


def test_the_svg_has_a_title_a_description_and_a_point_per_cell(
    result: JobResult, plots: tuple[TargetPlot, ...]
) -> None:
    density = plots[0]
    root = _svg(density.svg)
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text is not None and "weight (kg)" in title.text
    assert desc is not None and desc.text is not None and f"{M} imputations" in desc.text
    assert root.get("role") == "img"
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"weight (kg)", "density", "imputation (0 = observed cells)"} <= texts
    for imp, cells in enumerate(_groups(result, 1)):
        assert len(_group(root, f"strip-{imp}").findall(f".//{SVG}use")) == len(cells)
        assert _group(root, f"density-{imp}").find(f"{SVG}path") is not None
    assert root.find(f".//{SVG}g[@id='density-{M + 1}']") is None


def _bar_height(root: ET.Element, gid: str) -> float:
    path = _group(root, gid).find(f"{SVG}path")
    assert path is not None
    ys = [float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", path.get("d", ""))]
    return max(ys) - min(ys)


def test_bar_heights_are_proportional_to_the_counts(
    result: JobResult, plots: tuple[TargetPlot, ...]
) -> None:
    bars = plots[1]
    root = _svg(bars.svg)
    ratios = []
    for imp, cells in enumerate(_groups(result, 2)):
        counted = Counter(cells)
        for level_index, level in enumerate((0.0, 1.0)):
            height = _bar_height(root, f"bar-{imp}-{level_index}")
            ratios.append(height / (counted[level] / len(cells)))
        points = _group(root, f"strip-{imp}").findall(f".//{SVG}use")
        assert len(points) == len(cells)
    assert max(ratios) - min(ratios) < 1e-3 * max(ratios)


def test_the_same_job_draws_the_same_bytes_with_no_date(
    result: JobResult, plots: tuple[TargetPlot, ...]
) -> None:
    first, second = plots, plausibility(result)  # drawn apart: the fixture's, then again
    assert [p.svg for p in first] == [p.svg for p in second]
    assert b"<dc:date>" not in first[0].svg


def test_any_set_of_levels_is_counted_and_drawn() -> None:
    cells = Cells(
        observed=np.array([1.0, 2, 2, 3, 3, 3]),
        imputed=(np.array([3.0, 3, 1]), np.array([2.0, 2, 2])),
    )
    numbers = describe("grade", "ordinal", cells)
    assert numbers.levels == (1.0, 2.0, 3.0)
    assert [g.counts for g in numbers.counts] == [(1, 2, 3), (1, 0, 2), (0, 3, 0)]
    root = _svg(draw(numbers, cells))
    assert _bar_height(root, "bar-2-1") > 0
    assert "target,.imp,cells,level,count,share\ngrade,0,observed,1,1," in numbers.csv()


def test_a_target_complete_at_central_has_an_empty_imputed_row() -> None:
    cells = Cells(observed=np.array([1.0, 2.0, 4.0]), imputed=(np.array([]), np.array([])))
    numbers = describe("age", "gaussian", cells)
    assert numbers.rows()[1] == {"imp": 1, "cells": "imputed", "n": 0} | dict.fromkeys(
        ("mean", "sd", "min", "q1", "median", "q3", "max")
    )
    assert "age,1,imputed,0,,,,,,," in numbers.csv()
    root = _svg(draw(numbers, cells))
    assert root.find(f".//{SVG}g[@id='density-1']") is None


def test_a_large_strip_is_drawn_as_an_image_inside_the_svg() -> None:
    rng = np.random.default_rng(0)
    cells = Cells(observed=rng.normal(size=RASTER_POINTS + 1), imputed=(rng.normal(size=50),))
    root = _svg(draw(describe("y", "gaussian", cells), cells))
    assert root.find(f".//{SVG}g[@id='strip-0']") is None  # no vector points for it
    assert root.find(f".//{SVG}image") is not None
    assert len(_group(root, "strip-1").findall(f".//{SVG}use")) == 50


def test_file_stems_are_safe_and_unique() -> None:
    assert file_stem("age (y)") == "plausibility_age_y"
    assert file_stem("age/y", taken=["plausibility_age_y"]) == "plausibility_age_y_2"
    assert file_stem("***") == "plausibility_column"


def _exact_density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The kernel sum written out: every value's Gaussian at every grid point."""
    bandwidth = bw_nrd0(values)
    z = (grid[:, None] - values[None, :]) / bandwidth
    exact: np.ndarray = np.exp(-0.5 * z * z).sum(axis=1) / (
        values.size * bandwidth * np.sqrt(2 * np.pi)
    )
    return exact


def _bimodal() -> np.ndarray:
    rng = np.random.default_rng(8)
    return np.concatenate([rng.normal(-15, 3, 170), rng.normal(17, 4, 80), [40.0]])


@pytest.mark.parametrize("size", [5, 300, pytest.param(20_000, marks=pytest.mark.slow)])
def test_the_binned_density_equals_the_kernel_sum(size: int) -> None:
    values = np.random.default_rng(size).gamma(2.0, 3.0, size=size)
    for data in (values, _bimodal()):
        bandwidth = bw_nrd0(data)
        grid = np.linspace(data.min() - 3 * bandwidth, data.max() + 3 * bandwidth, 512)
        exact = _exact_density(data, grid)
        assert np.max(np.abs(kernel_density(data, grid) - exact)) < 1e-4 * exact.max()


R_DENSITY = r"""
x <- scan("x.txt", quiet = TRUE)
d <- density(x, from = min(x) - 3 * bw.nrd0(x), to = max(x) + 3 * bw.nrd0(x), n = 512)
writeLines(format(c(bw.nrd0(x), d$y), digits = 17), "density.txt")
"""


@pytest.mark.slow
def test_bandwidth_and_density_equal_r(tmp_path: Path) -> None:
    """bw.nrd0 to 1e-12; density() to 1e-3 of its peak: R bins onto a coarser grid (1,024
    points over the range), and the distance from it is no more than R's own from the kernel
    sum written out, plus 1e-4 of the peak."""
    values = _bimodal()
    (tmp_path / "x.txt").write_text("\n".join(repr(float(v)) for v in values))
    run_r(R_DENSITY, cwd=tmp_path)
    bandwidth, *expected = (float(v) for v in (tmp_path / "density.txt").read_text().split())
    assert bw_nrd0(values) == pytest.approx(bandwidth, rel=1e-12)
    grid = np.linspace(values.min() - 3 * bandwidth, values.max() + 3 * bandwidth, 512)
    reference = np.array(expected)
    ours = kernel_density(values, grid)
    peak = reference.max()
    assert np.max(np.abs(ours - reference)) < 1e-3 * peak
    r_error = np.max(np.abs(reference - _exact_density(values, grid)))
    assert np.max(np.abs(ours - reference)) <= r_error + 1e-4 * peak


def test_a_column_name_with_dollars_is_drawn_as_it_is() -> None:
    cells = Cells(observed=np.array([1.0, 2.0, 4.0]), imputed=(np.array([3.0, 5.0]),))
    name = "cost ($) in $k_{2}$"
    root = _svg(draw(describe(name, "gaussian", cells), cells))
    assert name in {t.text for t in root.iter(f"{SVG}text")}
