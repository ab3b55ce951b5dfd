"""The ``fip`` command: a simulated job from CSV files to the three output files, its report,
its options, and errors that exit 1 with one ``fip: error:`` line and write nothing."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from algorithms.methods import METHODS
from federation.cli import main
from federation.data import read_csv
from federation.demo import COLUMNS as DEMO_COLUMNS
from federation.registry import BUILTIN_DIR, file_names, package_digest
from tests.helpers import builtin

FIP = Path(sys.executable).parent / "fip"
COLUMNS = ("x1", "x2", "y")
OUTPUT_NAMES = [
    "imputations.zip",
    "imputations_long.csv",
    "report.json",
    "methods.csv",
    "fip_mids.R",
]


def write_csv(path: Path, values: np.ndarray, columns: tuple[str, ...] = COLUMNS) -> Path:
    """A CSV with NA for missing cells and every number in its shortest exact form."""
    lines = [",".join(columns)]
    lines += [",".join("NA" if np.isnan(v) else repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def simulated(rows: int, seed: int, *, y_missing: float = 0.3) -> np.ndarray:
    """x1, x2 complete; y = 1 + x1 - x2 + noise, missing in about ``y_missing`` of the rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    y = 1.0 + x[:, 0] - x[:, 1] + rng.normal(size=rows)
    values = np.column_stack([x, y])
    gone = rng.random(rows) < y_missing
    gone[0] = True
    values[gone, 2] = np.nan
    return values


@pytest.fixture
def small_files(tmp_path: Path) -> dict[str, Path]:
    """central (30 rows, y partly missing), and sites a and b, in their own folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    return {
        "central": write_csv(folder / "central.csv", simulated(30, 1)),
        "a": write_csv(folder / "a.csv", simulated(50, 2)),
        "b": write_csv(folder / "b.csv", simulated(40, 3)),
    }


def simi_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "simulate",
        "--algorithm",
        "SIMI",
        "--central",
        str(files["central"]),
        "--site",
        str(files["a"]),
        "--site",
        str(files["b"]),
        "--target",
        "y:gaussian",
        "--out",
        str(out),
        *extra,
    ]


def fip(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``fip args`` in process: exit code, stdout, stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def report(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / "report.json").read_text())
    return loaded


def long_frame(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "imputations_long.csv")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------- a SIMI run


def test_simi_run_writes_its_files(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0, the output files and nothing else in --out, a one-line summary and the paths."""
    out = tmp_path / "results"

    code, stdout, stderr = fip(capsys, *simi_args(small_files, out, "--imputations", "4"))

    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)
    assert "SIMI" in stdout
    assert "4 imputed datasets" in stdout
    for name in OUTPUT_NAMES:
        assert str(out / name) in stdout
    assert "error" not in stderr


def test_simi_zip_holds_one_csv_per_imputation(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each CSV in the zip has central's columns and rows, its observed cells unchanged, and
    the target filled."""
    out = tmp_path / "results"
    assert fip(capsys, *simi_args(small_files, out, "--imputations", "3"))[0] == 0
    original = read_csv(small_files["central"]).values

    with zipfile.ZipFile(out / "imputations.zip") as archive:
        names = archive.namelist()
        frames = [pd.read_csv(io.BytesIO(archive.read(name))) for name in names[:3]]

    assert names == [
        "imputation_1.csv", "imputation_2.csv", "imputation_3.csv",
        "original.csv", "methods.csv", "fip_mids.R",
    ]  # fmt: skip
    observed = ~np.isnan(original)
    for frame in frames:
        assert tuple(frame.columns) == COLUMNS
        values = frame.to_numpy(dtype=np.float64)
        assert values.shape == original.shape
        assert np.array_equal(values[observed], original[observed])
        assert not np.isnan(values).any()
    assert not np.array_equal(frames[0].to_numpy(), frames[1].to_numpy())


def test_simi_long_csv_has_the_mice_layout(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """.imp 0..M, .id 1..n, then the original columns; .imp 0 is the original with NA."""
    out = tmp_path / "results"
    assert fip(capsys, *simi_args(small_files, out, "--imputations", "3"))[0] == 0
    original = read_csv(small_files["central"]).values
    n = original.shape[0]

    text = (out / "imputations_long.csv").read_text()
    frame = long_frame(out)

    assert text.splitlines()[0] == ".imp,.id,x1,x2,y"
    assert frame[".imp"].tolist() == [m for m in range(4) for _ in range(n)]
    assert frame[".id"].tolist() == list(range(1, n + 1)) * 4
    first = frame[frame[".imp"] == 0][list(COLUMNS)].to_numpy(dtype=np.float64)
    assert np.array_equal(np.isnan(first), np.isnan(original))
    assert np.array_equal(first[~np.isnan(first)], original[~np.isnan(original)])
    assert ",NA" in text.splitlines()[1 + int(np.flatnonzero(np.isnan(original[:, 2]))[0])]
    for m in (1, 2, 3):
        imputed = frame[frame[".imp"] == m][list(COLUMNS)].to_numpy(dtype=np.float64)
        assert not np.isnan(imputed[:, 2]).any()
        assert np.array_equal(imputed[:, :2], original[:, :2])


def test_long_csv_rows_equal_the_zip_datasets(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The long CSV and the zip hold the same imputations, number for number."""
    out = tmp_path / "results"
    assert fip(capsys, *simi_args(small_files, out, "--imputations", "2"))[0] == 0
    frame = long_frame(out)

    with zipfile.ZipFile(out / "imputations.zip") as archive:
        for m in (1, 2):
            dataset = pd.read_csv(io.BytesIO(archive.read(f"imputation_{m}.csv")))
            stacked = frame[frame[".imp"] == m][list(COLUMNS)].reset_index(drop=True)
            assert np.array_equal(stacked.to_numpy(np.float64), dataset.to_numpy(np.float64))


def test_simi_report_has_the_required_keys(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """algorithm, version, digest, params with defaults, seed, sites, fits and traffic."""
    out = tmp_path / "results"
    assert fip(capsys, *simi_args(small_files, out, "--imputations", "2", "--seed", "7"))[0] == 0
    found = report(out)

    assert found["algorithm"] == "SIMI"
    assert found["version"] == builtin("SIMI").version
    files = {name: (BUILTIN_DIR / "SIMI" / name).read_bytes() for name in file_names("SIMI")}
    assert re.fullmatch(r"[0-9a-f]{64}", found["digest"])
    assert found["digest"] == package_digest(files)
    assert found["params"] == {
        "imputations": 2,
        "ridge": 1e-5,
        "max_iter": 100,
        "min_rows": 10,
        "donors": 5,
        "site_effect": "none",
    }
    assert found["seed"] == 7

    sites = found["sites"]
    assert [s["name"] for s in sites] == ["central", "a", "b"]
    assert [s["rows"] for s in sites] == [30, 50, 40]
    for site in sites:
        assert set(site) >= {"name", "rows", "rows_used", "left_out"}
        assert site["rows_used"] + sum(site["left_out"].values()) == site["rows"]
        assert all(isinstance(reason, str) for reason in site["left_out"])

    (fit,) = found["fits"]
    assert fit["target"] == "y"
    assert fit["type"] == "gaussian"
    assert fit["cycle"] == 1
    assert fit["n"] == sum(s["rows_used"] for s in sites)
    assert list(fit["coefficients"]) == ["x1", "x2", "(intercept)"]
    assert fit["sse"] > 0
    assert "iterations" not in fit

    assert found["round_trips"] >= 2
    assert found["bytes_sent"] > 0
    assert found["bytes_received"] > 0
    assert isinstance(found["seconds"], float) and found["seconds"] >= 0


def test_seed_is_drawn_and_reported_when_omitted(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --seed the report still holds the seed used, and imputations default to 5."""
    out = tmp_path / "results"
    code, stdout, _ = fip(capsys, *simi_args(small_files, out))

    assert code == 0
    found = report(out)
    assert isinstance(found["seed"], int)
    assert f"seed {found['seed']}" in stdout
    assert found["params"]["imputations"] == 5
    assert long_frame(out)[".imp"].max() == 5


def test_same_seed_same_bytes(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs with the same seed write byte-identical imputations."""
    first, second = tmp_path / "one", tmp_path / "two"
    assert fip(capsys, *simi_args(small_files, first, "--seed", "11"))[0] == 0
    assert fip(capsys, *simi_args(small_files, second, "--seed", "11"))[0] == 0

    for name in ("imputations.zip", "imputations_long.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


def test_target_by_index(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target 3:gaussian is the third column, y."""
    out = tmp_path / "results"
    args = simi_args(small_files, out, "--imputations", "1")
    args[args.index("y:gaussian")] = "3:gaussian"

    assert fip(capsys, *args)[0] == 0
    assert report(out)["fits"][0]["target"] == "y"


def test_nothing_missing_at_central_warns_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run succeeds, writes M copies, and prints the report's warning on stderr."""
    values = simulated(20, 4)
    values[:, 2] = np.where(np.isnan(values[:, 2]), 0.5, values[:, 2])
    files = {
        "central": write_csv(tmp_path / "central.csv", values),
        "a": write_csv(tmp_path / "a.csv", simulated(40, 5)),
        "b": write_csv(tmp_path / "b.csv", simulated(40, 6)),
    }
    out = tmp_path / "results"

    code, _, stderr = fip(capsys, *simi_args(files, out, "--imputations", "2"))

    assert code == 0
    assert "fip: warning:" in stderr
    assert "no missing value" in stderr
    assert report(out)["warnings"]
    assert long_frame(out)[".imp"].max() == 2


# ---------------------------------------------------------------- SIMICE on the demo data


def test_simice_on_demo_data(
    demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two targets of both types: every cycle's fits in order, all cells of both filled."""
    out = tmp_path / "results"
    code, stdout, stderr = fip(
        capsys,
        "simulate",
        "--algorithm",
        "SIMICE",
        "--central",
        str(demo_files["central"]),
        "--site",
        str(demo_files["north"]),
        "--site",
        str(demo_files["south"]),
        "--target",
        "bmi:gaussian",
        "--target",
        "smoker:logistic",
        "--imputations",
        "2",
        "--seed",
        "3",
        "--param",
        "iteration_before_first_imputation=2",
        "--param",
        "iteration_between_imputations=1",
        "--param",
        "chains=single",
        "--out",
        str(out),
    )

    assert code == 0, stderr
    assert "SIMICE" in stdout
    found = report(out)
    assert found["algorithm"] == "SIMICE"
    assert found["params"]["iteration_before_first_imputation"] == 2
    assert found["params"]["iteration_between_imputations"] == 1
    assert found["params"]["ridge"] == 1e-5
    assert found["params"]["min_rows"] == 18  # max(10, 3 * 6)
    assert [s["name"] for s in found["sites"]] == ["central", "north", "south"]
    fits = found["fits"]
    assert [(f["target"], f["cycle"]) for f in fits] == [
        ("bmi", 1),
        ("smoker", 1),
        ("bmi", 2),
        ("smoker", 2),
        ("bmi", 3),
        ("smoker", 3),
    ]
    for fit in fits:
        if fit["target"] == "bmi":
            assert fit["type"] == "gaussian" and "sse" in fit
        else:
            assert fit["type"] == "logistic" and fit["iterations"] >= 1
        assert fit["n"] > 0
        assert list(fit["coefficients"])[-1] == "(intercept)"
        assert fit["target"] not in fit["coefficients"]

    frame = long_frame(out)
    assert list(frame.columns) == [".imp", ".id", *DEMO_COLUMNS]
    original = frame[frame[".imp"] == 0]
    assert original["bmi"].isna().any() and original["smoker"].isna().any()
    for m in (1, 2):
        imputed = frame[frame[".imp"] == m]
        assert not imputed.isna().any().any()
        assert set(imputed["smoker"].unique()) <= {0, 1}


def test_simi_on_demo_data_fails_and_suggests_simice(
    demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Central rows miss bmi and smoker together: SIMI refuses, naming both and SIMICE."""
    out = tmp_path / "results"
    code, stdout, stderr = fip(
        capsys,
        "simulate",
        "--algorithm",
        "SIMI",
        "--central",
        str(demo_files["central"]),
        "--site",
        str(demo_files["north"]),
        "--target",
        "bmi:gaussian",
        "--out",
        str(out),
    )

    assert code == 1
    assert stdout == ""
    assert stderr.startswith("fip: error: ")
    assert str(demo_files["central"]) in stderr
    assert "'bmi'" in stderr and "'smoker'" in stderr
    assert "SIMICE" in stderr
    assert not out.exists()


# ---------------------------------------------------------------- options


def test_param_values_are_read_as_json(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--param key=value: numbers become numbers, and reach the report as used."""
    out = tmp_path / "results"
    args = simi_args(
        small_files,
        out,
        "--param",
        "ridge=0.01",
        "--param",
        "max_iter=50",
        "--param",
        "min_rows=5",
        "--param",
        "imputations=2",
    )

    code, _, stderr = fip(capsys, *args)

    assert code == 0, stderr
    params = report(out)["params"]
    assert params == {
        "imputations": 2,
        "ridge": 0.01,
        "max_iter": 50,
        "min_rows": 5,
        "donors": 5,
        "site_effect": "none",
    }
    assert isinstance(params["max_iter"], int)


def test_site_effect_is_a_param_of_simulate(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--param site_effect=intercept: one site term per remote site in the fit; a bad value or
    an algorithm without sites is refused naming the parameter."""
    out = tmp_path / "results"

    code, _, stderr = fip(capsys, *simi_args(small_files, out, "--param", "site_effect=intercept"))

    assert code == 0, stderr
    found = report(out)
    assert found["params"]["site_effect"] == "intercept"
    (fit,) = found["fits"]
    assert list(fit["coefficients"]) == ["x1", "x2", "(site a)", "(site b)", "(intercept)"]

    code, _, stderr = fip(
        capsys, *simi_args(small_files, tmp_path / "bad", "--param", "site_effect=slope")
    )
    assert code != 0 and "parameter 'site_effect': 'slope' is not one of" in stderr
    imi = simi_args(small_files, tmp_path / "imi", "--param", "site_effect=intercept")
    imi[imi.index("SIMI")] = "IMI"
    code, _, stderr = fip(capsys, *imi)
    assert code != 0 and "unknown parameter 'site_effect'" in stderr


@pytest.mark.parametrize(
    ("param", "words"),
    [
        ("ridge", ["--param", "key=value", "'ridge'"]),
        ("=1", ["--param", "key=value"]),
        ("ridge=abc", ["'ridge'", "'abc'", "number"]),
        ("ridge=-1", ["'ridge'", "minimum"]),
        ("iterations=3", ["unknown parameter 'iterations'"]),
    ],
)
def test_bad_param(
    param: str,
    words: list[str],
    small_files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A malformed or invalid --param exits 1 and says which."""
    code, _, stderr = fip(capsys, *simi_args(small_files, tmp_path / "out", "--param", param))

    assert code == 1
    assert stderr.startswith("fip: error: ")
    for word in words:
        assert word in stderr


def test_named_sites(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--site NAME=path names the site in the report; without a name, the file stem is used."""
    out = tmp_path / "results"
    args = simi_args(small_files, out, "--imputations", "1")
    args[args.index(str(small_files["a"]))] = f"north={small_files['a']}"

    assert fip(capsys, *args)[0] == 0
    assert [s["name"] for s in report(out)["sites"]] == ["central", "north", "b"]


@pytest.mark.parametrize("how", ["same stem", "same name", "central"])
def test_duplicate_site_name(
    how: str, small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sites with one name (or a site called central) exit 1 and suggest NAME=path."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = write_csv(other / "a.csv", simulated(40, 9))
    first, second = {
        "same stem": (str(small_files["a"]), str(twin)),
        "same name": (f"x={small_files['a']}", f"x={small_files['b']}"),
        "central": (f"central={small_files['a']}", str(small_files["b"])),
    }[how]
    out = tmp_path / "results"
    args = simi_args(small_files, out)
    args[args.index(str(small_files["a"]))] = first
    args[args.index(str(small_files["b"]))] = second

    code, _, stderr = fip(capsys, *args)

    assert code == 1
    assert stderr.startswith("fip: error: site name")
    assert "NAME=path" in stderr
    assert not out.exists()


def test_target_without_type(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = simi_args(small_files, tmp_path / "out")
    args[args.index("y:gaussian")] = "y"

    code, _, stderr = fip(capsys, *args)

    assert code == 1
    assert "COLUMN:METHOD" in stderr
    assert "'y'" in stderr


def test_target_with_an_unknown_method(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target y:foo is refused naming the option and every known method; nothing is written."""
    out = tmp_path / "out"
    args = simi_args(small_files, out)
    args[args.index("y:gaussian")] = "y:foo"

    code, _, stderr = fip(capsys, *args)

    assert code == 1
    assert "--target y:foo" in stderr and "'foo'" in stderr
    assert "gaussian" in stderr and "logistic" in stderr
    assert not out.exists()


def test_unknown_algorithm(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = simi_args(small_files, tmp_path / "out")
    args[args.index("SIMI")] = "NOPE"

    code, _, stderr = fip(capsys, *args)

    assert code == 1
    assert "'NOPE'" in stderr
    assert "SIMI" in stderr and "SIMICE" in stderr


def test_missing_required_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own usage errors exit 2, as usual for command-line tools."""
    with pytest.raises(SystemExit) as raised:
        main(["simulate", "--algorithm", "SIMI"])

    assert raised.value.code == 2
    assert "--central" in capsys.readouterr().err


# ---------------------------------------------------------------- errors write nothing


def break_file(files: dict[str, Path], how: str) -> tuple[str, list[str]]:
    """Spoil one input; return the --target to use and the words the error must hold."""
    if how == "non-numeric site":
        files["b"].write_text("x1,x2,y\n1,2,3\n4,five,6\n")
        return "y:gaussian", [str(files["b"]), "'x2'", "'five'", "line 3"]
    if how == "missing file":
        files["a"].unlink()
        return "y:gaussian", [str(files["a"]), "no such file"]
    if how == "empty central":
        files["central"].write_text("")
        return "y:gaussian", [str(files["central"]), "empty"]
    if how == "unknown target":
        return "bmi:gaussian", ["'bmi'", str(files["central"])]
    if how == "site columns differ":
        files["a"].write_text("x1,x2,z\n" + "1,2,3\n" * 20)
        return "y:gaussian", ["site 'a'", "missing 'y'", "unexpected 'z'"]
    if how == "too few rows":
        write_csv(files["b"], simulated(5, 8, y_missing=0.0))
        return "y:gaussian", ["site 'b'", "min_rows"]
    assert how == "singular"
    for name, path in files.items():
        values = simulated(40, len(name))
        values[:, 1] = 2 * values[:, 0]
        write_csv(path, values)
    return "y:gaussian", ["singular", "'x1'", "'x2'", "ridge > 0"]


ERRORS = [
    "non-numeric site",
    "missing file",
    "empty central",
    "unknown target",
    "site columns differ",
    "too few rows",
    "singular",
]


@pytest.mark.parametrize("how", ERRORS)
def test_error_exits_one_with_a_message_and_writes_nothing(
    how: str, small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 1, one 'fip: error:' message naming the file or column, and no --out folder."""
    target, words = break_file(small_files, how)
    out = tmp_path / "results"
    args = simi_args(small_files, out, "--param", "ridge=0")
    args[args.index("y:gaussian")] = target

    code, stdout, stderr = fip(capsys, *args)

    assert code == 1
    assert stdout == ""
    assert stderr.startswith("fip: error: ")
    assert "Traceback" not in stderr
    for word in words:
        assert word in stderr, stderr
    assert not out.exists()


@pytest.mark.parametrize("how", ["non-numeric site", "too few rows", "singular"])
def test_error_leaves_previous_results_untouched(
    how: str, small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failed run into a folder of earlier results changes no byte and adds no file."""
    out = tmp_path / "results"
    assert fip(capsys, *simi_args(small_files, out, "--seed", "1"))[0] == 0
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    target, _ = break_file(small_files, how)
    args = simi_args(small_files, out, "--param", "ridge=0", "--seed", "2")
    args[args.index("y:gaussian")] = target

    code, _, _ = fip(capsys, *args)

    assert code == 1
    assert snapshot(out) == before


def test_out_is_an_existing_file(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out naming a file is a clear error (exit 1), not a traceback; the file is kept."""
    out = tmp_path / "results"
    out.write_text("keep me\n")

    code, _, stderr = fip(capsys, *simi_args(small_files, out, "--imputations", "1"))

    assert code == 1
    assert stderr.startswith("fip: error: ")
    assert str(out) in stderr
    assert out.read_text() == "keep me\n"


def test_central_is_a_folder(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--central naming a folder is a clear error naming it, not a traceback."""
    args = simi_args(small_files, tmp_path / "out")
    folder = small_files["central"].parent
    args[args.index(str(small_files["central"]))] = str(folder)

    code, _, stderr = fip(capsys, *args)

    assert code == 1
    assert stderr.startswith("fip: error: ")
    assert str(folder) in stderr


# ---------------------------------------------------------------- other commands


def test_algorithms_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    """Both built-ins, with their version, capabilities and parameter defaults."""
    code, stdout, _ = fip(capsys, "algorithms")

    assert code == 0
    names = [line.split()[0] for line in stdout.splitlines() if not line.startswith(" ")]
    assert names == ["AVGMMI", "AVGMMICE", "CSLMI", "CSLMICE", "IMI", "IMICE", "SIMI", "SIMICE"]
    assert "targets: one" in stdout
    assert "targets: several" in stdout
    assert '"iteration_before_first_imputation": 13' in stdout
    assert '"chains": "parallel"' in stdout


@pytest.mark.parametrize("name", ["SIMI", "SIMICE"])
def test_algorithms_check_a_folder(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--check validates the folder and runs it once; it prints the digest."""
    code, stdout, stderr = fip(capsys, "algorithms", "--check", str(BUILTIN_DIR / name))

    assert code == 0, stderr
    assert f"{name} " in stdout
    assert "valid" in stdout
    assert builtin(name).digest in stdout


def test_algorithms_check_refuses_a_folder_without_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty folder is not an algorithm: exit 1, naming the files it needs."""
    folder = tmp_path / "MINE"
    folder.mkdir()

    code, _, stderr = fip(capsys, "algorithms", "--check", str(folder))

    assert code == 1
    assert stderr.startswith("fip: error: ")
    assert "MINECentral.py" in stderr


def test_demo_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three readable hospital CSVs with the demo columns, bmi and smoker partly missing."""
    out = tmp_path / "demo"

    code, stdout, _ = fip(capsys, "demo-data", "--out", str(out))

    assert code == 0
    for site in ("central", "north", "south"):
        path = out / f"{site}.csv"
        assert f"{site}: {path}" in stdout
        table = read_csv(path)
        assert table.columns == DEMO_COLUMNS
        missing = np.isnan(table.values).any(axis=0)
        assert missing.tolist() == [c in ("bmi", "smoker") for c in DEMO_COLUMNS]


def test_demo_data_seed_changes_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same seed, same files; another seed, other files."""
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert fip(capsys, "demo-data", "--out", str(tmp_path / name), "--seed", seed)[0] == 0
    central = {name: (tmp_path / name / "central.csv").read_bytes() for name in "abc"}

    assert central["a"] == central["b"]
    assert central["a"] != central["c"]


# ---------------------------------------------------------------- the console script


def run_fip(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FIP), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_console_script_help() -> None:
    """The installed `fip` runs and lists its commands; `simulate --help` shows the example."""
    top = run_fip("--help")
    sim = run_fip("simulate", "--help")

    assert top.returncode == 0, top.stderr
    for command in ("simulate", "algorithms", "demo-data"):
        assert command in top.stdout
    assert sim.returncode == 0
    assert "--target bmi:gaussian" in sim.stdout
    assert "imputations_long.csv" in sim.stdout


def test_console_script_runs_a_job(small_files: dict[str, Path], tmp_path: Path) -> None:
    """A real process writes its files; a failing one exits 1 without a traceback."""
    out = tmp_path / "results"
    done = run_fip(*simi_args(small_files, out, "--imputations", "2", "--seed", "5"))

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_NAMES)
    assert report(out)["seed"] == 5

    args = simi_args(small_files, tmp_path / "other")
    args[args.index("y:gaussian")] = "nope:gaussian"
    failed = run_fip(*args)

    assert failed.returncode == 1
    assert failed.stderr.startswith("fip: error: ")
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "other").exists()


def test_secure_aggregation_from_the_command_line(
    small_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--param secure_aggregation=true masks the sites' sums: the same files as unmasked
    (the fit agrees to rounding), a report saying what central saw; one site is refused."""
    plain, masked = tmp_path / "plain", tmp_path / "masked"
    assert fip(capsys, *simi_args(small_files, plain, "--seed", "3"))[0] == 0
    code, _, stderr = fip(
        capsys,
        *simi_args(small_files, masked, "--seed", "3", "--param", "secure_aggregation=true"),
    )
    assert code == 0, stderr
    secured = report(masked)
    assert secured["secure_aggregation"]["masked_rounds"] == 1
    assert "sum" in secured["secure_aggregation"]["central_saw"]
    (a,), (b,) = report(plain)["fits"], secured["fits"]
    for name, value in a["coefficients"].items():
        assert b["coefficients"][name] == pytest.approx(value, rel=1e-9)
    pd.testing.assert_frame_equal(long_frame(plain), long_frame(masked), rtol=1e-9)

    one_site = simi_args(small_files, tmp_path / "one")
    at = one_site.index(str(small_files["b"]))
    del one_site[at - 1 : at + 1]  # "--site b"
    code, _, stderr = fip(capsys, *one_site, "--param", "secure_aggregation=true")
    assert code == 1
    assert "at least two remote sites" in stderr


# ---------------------------------------------------------------- the new target methods


def _levels_files(tmp_path: Path) -> dict[str, Path]:
    """x1, x2 and a stage s in 1..3 (missing in some rows), central and two sites."""
    folder = tmp_path / "levels"
    folder.mkdir()
    files = {}
    for name, rows, seed in (("central", 60, 1), ("a", 80, 2), ("b", 70, 3)):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(rows, 2))
        stage = 1.0 + np.digitize(x[:, 0] + rng.normal(size=rows), [-0.5, 0.5])
        stage[rng.random(rows) < 0.2] = np.nan
        files[name] = write_csv(folder / f"{name}.csv", np.column_stack([x, stage]))
    return files


def test_categorical_target_with_levels_imputes_only_levels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _levels_files(tmp_path)
    out = tmp_path / "out"
    args = simi_args(files, out, "--levels", "y=1,2,3", "--imputations", "3", "--seed", "2")
    args[args.index("y:gaussian")] = "y:categorical"

    code, _, stderr = fip(capsys, *args)

    assert code == 0, stderr
    frame = long_frame(out)
    assert set(frame["y"].dropna().unique()) <= {1.0, 2.0, 3.0}
    assert frame.loc[frame[".imp"] > 0, "y"].notna().all()
    assert report(out)["targets"][0] == {
        "name": "y",
        "index": 3,
        "type": "categorical",
        "levels": [1.0, 2.0, 3.0],
        "predictors": ["x1", "x2"],
    }


@pytest.mark.parametrize(
    ("levels", "words"),
    [
        ("y", "--levels expects COLUMN=a,b,c"),
        ("y=1,2,x", "--levels y: level 'x' is not a number"),
        ("y=1,2,2.5", "--levels y: level '2.5' is not an integer code"),
        ("y=1,2", "column 'y' has 2 level(s); categorical needs at least 3 (use logistic)"),
        ("y=1,2,4", "central.csv: column 'y' holds"),
    ],
)
def test_bad_levels_are_refused_naming_the_option_or_column(
    levels: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _levels_files(tmp_path)
    out = tmp_path / "out"
    args = simi_args(files, out, "--levels", levels)
    args[args.index("y:gaussian")] = "y:categorical"

    code, _, stderr = fip(capsys, *args)

    assert code == 1
    assert words in stderr
    assert not out.exists()


def test_simulate_help_lists_every_method_with_when_to_use() -> None:
    sim = run_fip("simulate", "--help")
    text = " ".join(sim.stdout.split())
    for method in METHODS.values():
        assert f"{method.name} for {' '.join(method.when.split())}" in text
    assert "--levels" in text


def test_simulate_has_numpy_blas_run_one_thread_unless_the_user_set_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sites answer in threads at once; BLAS threads on top of them only compete (read by
    BLAS when numpy loads, so fip sets them before; in this process numpy is long loaded)."""
    from federation import cli

    unset = {k: v for k, v in os.environ.items() if k not in cli.BLAS_THREADS}
    monkeypatch.setattr(os, "environ", unset)
    cli._parser(["simulate", "--central", "c.csv"])
    assert unset["OPENBLAS_NUM_THREADS"] == "1" and unset["MKL_NUM_THREADS"] == "1"

    chosen = {**unset, "OMP_NUM_THREADS": "2"}
    del chosen["OPENBLAS_NUM_THREADS"], chosen["MKL_NUM_THREADS"]
    monkeypatch.setattr(os, "environ", chosen)
    cli._parser(["simulate", "--central", "c.csv"])
    assert "OPENBLAS_NUM_THREADS" not in chosen and chosen["OMP_NUM_THREADS"] == "2"

    other = {k: v for k, v in unset.items() if k not in cli.BLAS_THREADS}
    monkeypatch.setattr(os, "environ", other)
    cli._parser(["pool", "--long", "x.csv"])
    assert not set(cli.BLAS_THREADS) & set(other)
