"""fip simulate --plots: each target's plausibility plot and its numbers beside the other files."""

from __future__ import annotations

import csv
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_cli import OUTPUT_NAMES, fip, simi_args, small_files, write_csv

__all__ = ["small_files"]  # the fixture, used by name


def test_simulate_writes_the_plots_and_their_numbers(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, stdout, _ = fip(capsys, *simi_args(small_files, out, "--plots", "--imputations", "3"))
    assert code == 0
    names = ["plausibility_y.svg", "plausibility_y.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES + names)
    for name in names:
        assert f"  {out / name}" in stdout.splitlines()
    root = ET.parse(out / "plausibility_y.svg").getroot()
    assert root.find("{http://www.w3.org/2000/svg}title") is not None

    long = pd.read_csv(out / "imputations_long.csv", na_values=["NA"])
    original = long[long[".imp"] == 0]["y"].to_numpy()
    missing = np.isnan(original)
    rows = list(csv.DictReader((out / "plausibility_y.csv").read_text().splitlines()))
    assert [(r["target"], r[".imp"], r["cells"]) for r in rows] == [("y", "0", "observed")] + [
        ("y", str(m), "imputed") for m in (1, 2, 3)
    ]
    for row in rows:
        m = int(row[".imp"])
        column = long[long[".imp"] == m]["y"].to_numpy()
        cells = list(original[~missing] if m == 0 else column[missing])
        assert int(row["n"]) == len(cells)
        assert float(row["mean"]) == pytest.approx(statistics.fmean(cells), rel=1e-12)
        assert float(row["max"]) == max(cells)


def test_without_the_flag_no_plots_are_written(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert fip(capsys, *simi_args(small_files, out))[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)


def test_a_comparison_writes_each_methods_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(size=(40, 3))
    values[rng.random(40) < 0.3, 2] = np.nan
    central = write_csv(tmp_path / "central.csv", values, ("x1", "age (y)", "bmi (kg/m2)"))
    out = tmp_path / "out"
    code, _, _ = fip(
        capsys,
        "simulate", "--compare", "IMI", "--central", str(central),
        "--target", "bmi (kg/m2):gaussian", "--plots", "--out", str(out),
    )  # fmt: skip
    assert code == 0
    for method in ("SIMI", "IMI"):
        assert (out / method / "plausibility_bmi_kg_m2.svg").is_file()
        assert (out / method / "plausibility_bmi_kg_m2.csv").is_file()
