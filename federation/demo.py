"""Demo data: three hospitals' tables of the same clinical-looking columns, with holes.

``bmi`` (continuous) and ``smoker`` (binary) are missing at random, more often for older
patients and men, so a complete-case analysis would be biased and imputation has work to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from federation.outputs import dataset_csv

COLUMNS = ("age", "sex", "bmi", "sbp", "cholesterol", "smoker")
SITES = {"central": 800, "north": 1500, "south": 1200}


def hospital(rows: int, rng: np.random.Generator, *, age_shift: float = 0.0) -> np.ndarray:
    """One hospital's table: rows x COLUMNS, NaN where missing."""
    age = np.clip(rng.normal(55 + age_shift, 12, rows), 18, 95).round()
    sex = (rng.random(rows) < 0.5).astype(np.float64)  # 1 = male
    bmi = (22 + 0.06 * age + 1.2 * sex + rng.normal(0, 3.5, rows)).round(1)
    smoker = (rng.random(rows) < 1 / (1 + np.exp(-(-1.2 + 0.6 * sex - 0.01 * (age - 55))))).astype(
        np.float64
    )
    sbp = (95 + 0.5 * age + 0.9 * bmi + 4 * smoker + rng.normal(0, 10, rows)).round()
    cholesterol = (3.8 + 0.015 * age + 0.03 * bmi + 0.2 * smoker + rng.normal(0, 0.7, rows)).round(
        2
    )
    values = np.column_stack([age, sex, bmi, sbp, cholesterol, smoker])
    risk = 1 / (1 + np.exp(-(-2.0 + 0.03 * (age - 55) + 0.4 * sex)))
    values[rng.random(rows) < risk, COLUMNS.index("bmi")] = np.nan
    values[rng.random(rows) < risk * 0.8, COLUMNS.index("smoker")] = np.nan
    return values


def write_demo_data(out_dir: Path, *, seed: int = 2020) -> dict[str, Path]:
    """Write ``central.csv``, ``north.csv`` and ``south.csv``; return their paths by site."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = {}
    for shift, (site, rows) in zip((0.0, 3.0, -4.0), SITES.items(), strict=True):
        path = out_dir / f"{site}.csv"
        path.write_bytes(dataset_csv(COLUMNS, hospital(rows, rng, age_shift=shift)))
        paths[site] = path
    return paths
