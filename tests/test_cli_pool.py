"""``fip pool`` on the long CSV that ``fip simulate`` writes, ``fip simulate --analysis``, and
their errors: each exits 1 with one ``fip: error:`` line naming what is wrong, writing nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federation.analysis import COLUMNS
from tests.test_cli import fip, simi_args, simulated, write_csv

MODEL = "y ~ x1 + x2"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "data"
    folder.mkdir()
    return {
        "central": write_csv(folder / "central.csv", simulated(60, 1)),
        "a": write_csv(folder / "a.csv", simulated(80, 2)),
        "b": write_csv(folder / "b.csv", simulated(70, 3)),
    }


@pytest.fixture
def long_csv(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """imputations_long.csv of a real SIMI run, M = 6."""
    out = tmp_path / "results"
    code, _, stderr = fip(capsys, *simi_args(files, out, "--imputations", "6", "--seed", "5"))
    assert code == 0, stderr
    return out / "imputations_long.csv"


def _ols_by_dataset(long_csv: Path) -> tuple[np.ndarray, np.ndarray]:
    """Independently: per imputed dataset, OLS of y on [1, x1, x2] by the normal equations."""
    frame = pd.read_csv(long_csv)
    estimates, variances = [], []
    for _, data in frame[frame[".imp"] > 0].groupby(".imp"):
        x = np.column_stack([np.ones(len(data)), data["x1"], data["x2"]])
        y = data["y"].to_numpy()
        inverse = np.linalg.inv(x.T @ x)
        beta = inverse @ x.T @ y
        sigma2 = float(np.sum((y - x @ beta) ** 2)) / (len(y) - 3)
        estimates.append(beta)
        variances.append(sigma2 * np.diag(inverse))
    return np.array(estimates), np.array(variances)


def test_pool_on_a_simulated_long_csv(
    long_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0; the table printed; the CSV has mice's columns, one row per term, and numbers
    equal to Rubin's rules over an independent OLS of each dataset."""
    out = tmp_path / "pooled" / "pooled.csv"
    code, stdout, stderr = fip(
        capsys, "pool", "--long", str(long_csv), "--model", MODEL, "--out", str(out)
    )
    assert code == 0, stderr
    assert stdout.splitlines()[0].split() == [
        "term", "estimate", "std.error", "statistic", "df", "p.value", "conf.low", "conf.high",
        "fmi",
    ]  # fmt: skip
    assert "pooled over m = 6" in stdout
    assert str(out) in stdout
    table = pd.read_csv(out)
    assert tuple(table.columns) == COLUMNS
    assert list(table["term"]) == ["(Intercept)", "x1", "x2"]
    estimates, variances = _ols_by_dataset(long_csv)
    m = 6
    b = estimates.var(axis=0, ddof=1)
    t = variances.mean(axis=0) + (1 + 1 / m) * b
    np.testing.assert_allclose(table["estimate"], estimates.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(table["t"], t, rtol=1e-10)
    np.testing.assert_allclose(table["std.error"], np.sqrt(t), rtol=1e-10)
    assert (table["m"] == 6).all() and (table["dfcom"] == 57).all()


def test_simulate_with_analysis_puts_the_pooled_table_in_the_report(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report's analysis is the table fip pool gives on the same run's long CSV."""
    out = tmp_path / "results"
    code, _, stderr = fip(
        capsys,
        *simi_args(files, out, "--imputations", "5", "--seed", "9", "--analysis", MODEL),
    )
    assert code == 0, stderr
    analysis: dict[str, Any] = json.loads((out / "report.json").read_text())["analysis"]
    assert analysis["model"] == MODEL and analysis["family"] == "linear"
    assert analysis["m"] == 5 and analysis["columns"] == list(COLUMNS)
    assert analysis["imputations_needed"] >= 1 and "Meng 1994" in analysis["note"]
    pooled = tmp_path / "pooled.csv"
    assert fip(capsys, "pool", "--long", str(out / "imputations_long.csv"), "--model", MODEL,
               "--out", str(pooled))[0] == 0  # fmt: skip
    table = pd.read_csv(pooled)
    for name in COLUMNS[1:]:
        np.testing.assert_allclose(
            table[name], [row[name] for row in analysis["pooled"]], rtol=1e-15, err_msg=name
        )


def test_simulate_logistic_analysis_and_a_failed_fit(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--analysis-family logistic; a model that cannot be fitted leaves the imputations written,
    its reason in the report and a warning."""
    out = tmp_path / "results"
    code, _, stderr = fip(
        capsys,
        *simi_args(files, out, "--imputations", "3", "--analysis", "x1 ~ y"),
        "--analysis-family",
        "logistic",
    )
    assert code == 0
    analysis = json.loads((out / "report.json").read_text())["analysis"]
    assert "must be 0 or 1" in analysis["error"]
    assert "fip: warning: analysis not pooled:" in stderr
    assert (out / "imputations_long.csv").exists()


def test_compare_with_analysis_pools_each_method(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "comparison"
    code, _, stderr = fip(
        capsys, "simulate", "--compare", "SIMI,IMI", "--central", str(files["central"]),
        "--site", str(files["a"]), "--target", "y:gaussian", "--imputations", "3",
        "--analysis", MODEL, "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    for method in ("SIMI", "IMI"):
        report = json.loads((out / method / "report.json").read_text())
        assert [row["term"] for row in report["analysis"]["pooled"]] == ["(Intercept)", "x1", "x2"]


@pytest.mark.parametrize(
    ("model", "extra", "words"),
    [
        ("y ~ x9", [], "has no column named 'x9'"),
        ("y ~ x1 * x2", [], "interactions"),
        ("y ~ x1", ["--family", "logistic"], "'y' of a logistic model must be 0 or 1"),
        ("y ~ x1", ["--factor", "sex"], "no column named 'sex' (declared a factor)"),
    ],
)
def test_pool_errors_write_nothing(
    long_csv: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    extra: list[str],
    words: str,
) -> None:
    out = tmp_path / "pooled.csv"
    code, stdout, stderr = fip(
        capsys, "pool", "--long", str(long_csv), "--model", model, "--out", str(out), *extra
    )
    assert code == 1
    assert stderr.startswith("fip: error: ") and words in stderr
    if "*" not in model:  # a data error names the file; a syntax error is the model's own
        assert str(long_csv) in stderr
    assert not out.exists() and stdout == ""


def test_pool_names_a_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere.csv"
    code, _, stderr = fip(capsys, "pool", "--long", str(missing), "--model", MODEL)
    assert code == 1 and f"{missing}: no such file" in stderr
    plain = write_csv(tmp_path / "plain.csv", simulated(5, 1))
    code, _, stderr = fip(capsys, "pool", "--long", str(plain), "--model", MODEL)
    assert code == 1 and f"{plain}: no '.imp' column" in stderr


def test_simulate_refuses_an_unknown_analysis_column_before_running(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    code, _, stderr = fip(capsys, *simi_args(files, out, "--analysis", "y ~ bmx"))
    assert code == 1
    assert "no column named 'bmx'" in stderr and str(files["central"]) in stderr
    assert not out.exists()


def test_fip_starts_without_the_analysis_code() -> None:
    """The pooled analysis is imported only when it runs."""
    probe = (
        "import sys, federation.cli; "
        "print(sorted(m for m in sys.modules if m in "
        "('federation.analysis', 'federation.formula', 'federation.long_format')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
