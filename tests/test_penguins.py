"""Palmer Penguins as a user would bring it: text columns (species, island, sex), an ID column,
a site whose file has its columns in another order and R's write.csv row names, imputed with
``fip simulate`` and column roles (issue #11)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

from federation.cli import main

MEASURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def penguin_files(folder: Path) -> dict[str, Path]:
    """Central (100 rows), site a (120 rows, as pandas writes it) and site r (the rest, as R's
    write.csv writes it: row names, quotes, NA, columns in another order); an ``id`` per bird,
    body mass missing in 15% of the rows (the 2 birds without measurements left out)."""
    rng = np.random.default_rng(11)
    frame = load_penguins().dropna(subset=MEASURES).reset_index(drop=True)
    frame.insert(0, "id", [f"PAL-{i:04d}" for i in range(len(frame))])
    frame["body_mass_g"] = frame["body_mass_g"].astype("Int64")
    frame.loc[rng.random(len(frame)) < 0.15, "body_mass_g"] = pd.NA
    frame = frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)
    parts = {"central": frame.iloc[:100], "a": frame.iloc[100:220], "r": frame.iloc[220:]}
    paths = {name: folder / f"{name}.csv" for name in parts}
    parts["central"].to_csv(paths["central"], index=False)
    parts["a"].to_csv(paths["a"], index=False)
    reordered = parts["r"][["sex", "year", *MEASURES, "island", "species", "id"]]
    reordered.index = range(1, len(reordered) + 1)
    text = io.StringIO()
    reordered.to_csv(text, na_rep="NA", quoting=csv.QUOTE_NONNUMERIC, index_label="")
    paths["r"].write_text(text.getvalue())
    return paths


def test_penguins_end_to_end_with_text_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = penguin_files(tmp_path)
    out = tmp_path / "out"

    code = main(
        [
            "simulate",
            "--algorithm",
            "SIMICE",
            "--central",
            str(files["central"]),
            "--site",
            f"a={files['a']}",
            "--site",
            f"r={files['r']}",
            "--target",
            "sex:logistic",
            "--target",
            "body_mass_g:pmm",
            "--column",
            "id:carried",
            "--column",
            "species:factor",
            "--column",
            "island:factor",
            "--imputations",
            "3",
            "--seed",
            "5",
            "--out",
            str(out),
        ]
    )

    stderr = capsys.readouterr().err
    assert code == 0, stderr
    assert "r.csv: the first column has no name" in stderr
    central = pd.read_csv(files["central"], keep_default_na=False, dtype=str)
    long = pd.read_csv(out / "imputations_long.csv", keep_default_na=False, dtype=str)
    assert list(long.columns) == [".imp", ".id", *central.columns]
    for m in range(4):
        dataset = long[long[".imp"] == str(m)].reset_index(drop=True)
        for column in ("id", "species", "island", "year"):
            assert dataset[column].tolist() == central[column].tolist(), (m, column)
        observed = central["sex"] != ""
        assert dataset.loc[observed, "sex"].tolist() == central.loc[observed, "sex"].tolist()
        if m:
            assert set(dataset["sex"]) <= {"female", "male"}
            masses = dataset["body_mass_g"]
            assert masses.str.fullmatch(r"\d+").all()  # an integer column stays integer
            assert set(masses[central["body_mass_g"] == ""]) <= set(central["body_mass_g"])
    report = json.loads((out / "report.json").read_text())
    sex = report["targets"][0]
    assert sex["type"] == "logistic" and sex["labels"] == ["female", "male"]
    assert sex["predictors"] == ["species", "island", *MEASURES, "year"]
    assert report["factors"] == {
        "species": ["Adelie", "Chinstrap", "Gentoo"],
        "island": ["Biscoe", "Dream", "Torgersen"],
    }
    assert report["carried"] == ["id"]
    first = next(f for f in report["fits"] if f["target"] == "body_mass_g")
    assert "species=Gentoo" in first["coefficients"] and "island=Dream" in first["coefficients"]


def test_penguins_species_as_a_text_categorical_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = penguin_files(tmp_path)
    frame = pd.read_csv(files["central"], keep_default_na=False, dtype=str)
    frame.loc[::7, "species"] = "NA"
    frame.to_csv(files["central"], index=False)
    out = tmp_path / "out"

    code = main(
        [
            "simulate",
            "--algorithm",
            "SIMI",
            "--central",
            str(files["central"]),
            "--site",
            f"a={files['a']}",
            "--site",
            f"r={files['r']}",
            "--target",
            "species:categorical",
            "--column",
            "id:carried",
            "--column",
            "sex:carried",
            "--column",
            "island:factor",
            "--predictors",
            "species=bill_length_mm,bill_depth_mm,flipper_length_mm,island",
            "--imputations",
            "2",
            "--seed",
            "3",
            "--out",
            str(out),
        ]
    )

    stderr = capsys.readouterr().err
    assert code == 0, stderr
    long = pd.read_csv(out / "imputations_long.csv", keep_default_na=False, dtype=str)
    imputed = long[(long[".imp"] != "0") & (long[".id"].astype(int) % 7 == 1)]
    assert set(imputed["species"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert len(set(imputed["species"])) >= 2
    report = json.loads((out / "report.json").read_text())
    assert report["targets"][0]["labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert report["targets"][0]["predictors"] == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
    ]
