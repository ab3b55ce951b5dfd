"""Comparing methods: ``fip simulate --compare`` from CSV files to the comparison report and
one folder per method, its errors, and ``federation.compare`` used directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.cli import main
from federation.compare import (
    comparison_report,
    distance,
    format_table,
    methods_to_compare,
    simulate_comparison,
    summary_fits,
)
from federation.errors import InputError
from federation.registry import Registry
from tests.helpers import builtin, run, table

COLUMNS = ("x1", "x2", "y")
OUTPUT_NAMES = [
    "imputations.zip",
    "imputations_long.csv",
    "report.json",
    "methods.csv",
    "fip_mids.R",
]
KNOWN = ["AVGMMI", "AVGMMICE", "CSLMI", "CSLMICE", "IMI", "IMICE", "SIMI", "SIMICE"]
CHAINED_PARAMS = [
    "--param",
    "chains=single",
    "--param",
    "iteration_before_first_imputation=2",
    "--param",
    "iteration_between_imputations=1",
]


def write_csv(path: Path, values: np.ndarray) -> Path:
    """A CSV with NA for missing cells and every number in its shortest exact form."""
    lines = [",".join(COLUMNS)]
    lines += [",".join("NA" if np.isnan(v) else repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def simulated(rows: int, seed: int, *, x2_missing: float = 0.0) -> np.ndarray:
    """x1 complete; y = 1 + x1 - x2 + noise, missing in about 30% of the rows; x2 missing in
    about ``x2_missing`` of them (for chained equations, where x2 is a target too)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    y = 1.0 + x[:, 0] - x[:, 1] + rng.normal(size=rows)
    values = np.column_stack([x, y])
    gone = rng.random(rows) < 0.3
    gone[0] = True
    values[gone, 2] = np.nan
    values[rng.random(rows) < x2_missing, 1] = np.nan
    return values


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """central (60 rows, y partly missing), and sites a (80) and b (70), in their own folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    return {
        "central": write_csv(folder / "central.csv", simulated(60, 1)),
        "a": write_csv(folder / "a.csv", simulated(80, 2)),
        "b": write_csv(folder / "b.csv", simulated(70, 3)),
    }


def compare_args(files: dict[str, Path], out: Path, methods: str, *extra: str) -> list[str]:
    return [
        "simulate",
        "--compare",
        methods,
        "--central",
        str(files["central"]),
        "--site",
        str(files["a"]),
        "--site",
        str(files["b"]),
        "--target",
        "y:gaussian",
        "--imputations",
        "2",
        "--out",
        str(out),
        *extra,
    ]


def fip(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``fip args`` in process: exit code, stdout, stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def vector(coefficients: dict[str, float]) -> np.ndarray:
    return np.array(list(coefficients.values()))


# ---------------------------------------------------------------- fip simulate --compare


def test_compare_writes_the_report_and_a_folder_per_method(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0; comparison.json, comparison.txt and one folder per method (the reference SIMI
    added, first) with its three files; stdout names the methods in order, prints the table
    that comparison.txt holds, and lists every file written."""
    out = tmp_path / "comparison"

    code, stdout, stderr = fip(capsys, *compare_args(files, out, "CSLMI,AVGMMI,IMI", "--seed", "7"))

    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["comparison.json", "comparison.txt", "SIMI", "CSLMI", "AVGMMI", "IMI"]
    )
    for method in ("SIMI", "CSLMI", "AVGMMI", "IMI"):
        assert sorted(p.name for p in (out / method).iterdir()) == sorted(OUTPUT_NAMES)
        assert load(out / method / "report.json")["algorithm"] == method
        for name in OUTPUT_NAMES:
            assert str(out / method / name) in stdout
    assert stdout.startswith(f"compared SIMI, CSLMI, AVGMMI, IMI on {files['central']} (seed 7)")
    table = (out / "comparison.txt").read_text()
    assert table.rstrip("\n") in stdout
    assert "target 'y' (gaussian)" in table
    assert "distance from SIMI" in table
    for method in ("SIMI", "CSLMI", "AVGMMI", "IMI"):
        assert any(line.split()[:2] == [method, "completed"] for line in table.splitlines())
    assert str(out / "comparison.json") in stdout and str(out / "comparison.txt") in stdout
    assert "error" not in stderr


def test_comparison_json_structure(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per target per method: the coefficients (equal to the method's own report), rows, cycles
    and the distance from SIMI (relative L2 and largest absolute gap; 0 for SIMI); per method
    the status, round trips, bytes, seconds and the sites that took part."""
    out = tmp_path / "comparison"
    assert fip(capsys, *compare_args(files, out, "AVGMMI,IMI,CSLMI", "--seed", "7"))[0] == 0

    comparison = load(out / "comparison.json")

    assert comparison["reference"] == "SIMI"
    assert comparison["seed"] == 7
    assert isinstance(comparison["summary"], str)
    methods = comparison["methods"]
    assert [m["algorithm"] for m in methods] == ["SIMI", "AVGMMI", "IMI", "CSLMI"]
    for method in methods:
        report = load(out / method["algorithm"] / "report.json")
        assert method["status"] == "completed"
        assert "message" not in method
        assert method["version"] == report["version"]
        for key in ("round_trips", "bytes_sent", "bytes_received", "seconds"):
            assert method[key] == report[key], key
        assert method["sites"] == [s["name"] for s in report["sites"]]
    costs = {m["algorithm"]: m for m in methods}
    assert costs["IMI"]["sites"] == ["central"] and costs["IMI"]["round_trips"] == 0
    assert costs["SIMI"]["sites"] == ["central", "a", "b"]
    assert costs["AVGMMI"]["round_trips"] == costs["CSLMI"]["round_trips"] == 3

    (target,) = comparison["targets"]
    assert (target["name"], target["type"]) == ("y", "gaussian")
    assert list(target["methods"]) == ["SIMI", "AVGMMI", "IMI", "CSLMI"]
    reference = vector(target["methods"]["SIMI"]["coefficients"])
    for name, entry in target["methods"].items():
        (fit,) = load(out / name / "report.json")["fits"]
        assert entry["coefficients"] == fit["coefficients"]
        assert list(entry["coefficients"]) == ["x1", "x2", "(intercept)"]
        assert entry["n"] == fit["n"]
        assert entry["cycles"] == [1, 1]
        gap = vector(entry["coefficients"]) - reference
        assert entry["distance"]["relative"] == pytest.approx(
            np.linalg.norm(gap) / np.linalg.norm(reference), rel=1e-12, abs=1e-15
        )
        assert entry["distance"]["max_abs"] == pytest.approx(np.max(np.abs(gap)), abs=1e-15)
    assert target["methods"]["SIMI"]["distance"] == {"relative": 0.0, "max_abs": 0.0}
    assert target["methods"]["IMI"]["distance"]["relative"] > 0
    assert target["methods"]["IMI"]["n"] < target["methods"]["SIMI"]["n"]


def test_every_method_runs_with_one_seed(
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --seed one seed is drawn for all (made deterministic here by fixing what
    ``secrets`` draws): every method's report has the comparison's seed, and each method's
    imputations are byte for byte those of its own run with that seed."""

    def drawn(upper: int) -> int:
        assert upper == 2**32
        return 3_141_592_653

    monkeypatch.setattr("federation.compare.secrets.randbelow", drawn)
    out = tmp_path / "comparison"
    assert fip(capsys, *compare_args(files, out, "CSLMI,IMI"))[0] == 0
    seed = load(out / "comparison.json")["seed"]
    assert seed == 3_141_592_653

    for method in ("SIMI", "CSLMI", "IMI"):
        assert load(out / method / "report.json")["seed"] == seed
    alone = tmp_path / "alone"
    args = compare_args(files, alone, "", "--seed", str(seed))
    args[args.index("--compare") : args.index("--compare") + 2] = ["--algorithm", "CSLMI"]
    assert fip(capsys, *args)[0] == 0
    for name in ("imputations.zip", "imputations_long.csv"):
        assert (alone / name).read_bytes() == (out / "CSLMI" / name).read_bytes()


def test_reference_named_is_still_run_first(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--compare IMI,SIMI runs SIMI first and once."""
    out = tmp_path / "comparison"

    code, stdout, _ = fip(capsys, *compare_args(files, out, "IMI,SIMI", "--seed", "1"))

    assert code == 0
    assert stdout.startswith("compared SIMI, IMI on ")
    comparison = load(out / "comparison.json")
    assert [m["algorithm"] for m in comparison["methods"]] == ["SIMI", "IMI"]


def test_chained_methods_are_compared_with_simice(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chained methods get SIMICE as the reference; their coefficients are the mean of the
    fits from cycle iteration_before_first_imputation on."""
    for seed, (name, path) in enumerate(files.items(), 1):
        write_csv(path, simulated(70, seed, x2_missing=0.2 if name != "central" else 0.0))
    out = tmp_path / "comparison"
    args = compare_args(files, out, "AVGMMICE,CSLMICE", "--seed", "2", *CHAINED_PARAMS)
    args += ["--target", "x2:gaussian"]

    code, stdout, stderr = fip(capsys, *args)

    assert code == 0, stderr
    assert stdout.startswith("compared SIMICE, AVGMMICE, CSLMICE on ")
    comparison = load(out / "comparison.json")
    assert comparison["reference"] == "SIMICE"
    assert [m["algorithm"] for m in comparison["methods"]] == ["SIMICE", "AVGMMICE", "CSLMICE"]
    assert [t["name"] for t in comparison["targets"]] == ["y", "x2"]
    for target in comparison["targets"]:
        assert target["methods"]["SIMICE"]["distance"]["relative"] == 0.0
        for name, entry in target["methods"].items():
            report = load(out / name / "report.json")
            fits = [f for f in report["fits"] if f["target"] == target["name"]]
            assert [f["cycle"] for f in fits] == [1, 2, 3]  # 2 + 1 * (2 - 1) cycles
            assert entry["cycles"] == [2, 3]
            mean = np.mean([vector(f["coefficients"]) for f in fits[1:]], axis=0)
            np.testing.assert_allclose(vector(entry["coefficients"]), mean, rtol=1e-12)
            assert entry["distance"]["relative"] > 0 or name == "SIMICE"
    assert "distance from SIMICE" in (out / "comparison.txt").read_text()


@pytest.mark.parametrize(
    ("methods", "words"),
    [
        ("CSLMI,IMICE", ["CSLMI impute one target", "IMICE several by chained equations"]),
        (
            "SIMI,AVGMMI,AVGMMICE,CSLMICE",
            ["SIMI, AVGMMI impute one target", "AVGMMICE, CSLMICE several"],
        ),
        ("CSLMI,NOPE", ["no algorithm named 'NOPE'", "known: " + ", ".join(KNOWN)]),
        ("AVGMMI,CSLMI,AVGMMI", ["named twice", "AVGMMI, CSLMI, AVGMMI"]),
        ("SIMI", ["at least one method to compare with SIMI"]),
        (",", ["name the methods to compare"]),
    ],
)
def test_bad_method_list_exits_one_and_writes_nothing(
    methods: str,
    words: list[str],
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Mixing one-target and chained methods names both groups; an unknown name lists the
    known ones; a name given twice, or no method beside the reference, is an error."""
    out = tmp_path / "comparison"

    code, stdout, stderr = fip(capsys, *compare_args(files, out, methods))

    assert code == 1
    assert stdout == ""
    assert stderr.startswith("fip: error: ")
    for word in words:
        assert word in stderr, stderr
    assert not out.exists()


def test_compare_and_algorithm_together_is_a_usage_error(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = compare_args(files, tmp_path / "out", "CSLMI", "--algorithm", "SIMI")

    with pytest.raises(SystemExit) as raised:
        main(args)

    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "--algorithm" in err and "--compare" in err and "not allowed" in err
    assert not (tmp_path / "out").exists()


def test_a_failing_method_is_reported_and_the_others_complete(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Central observes y only in rows missing x1: CSLMI cannot fit central alone and fails
    with its reason; SIMI and AVGMMI (central contributing no row) complete; exit 1."""
    values = simulated(60, 1)
    values[~np.isnan(values[:, 2]), 0] = np.nan
    write_csv(files["central"], values)
    out = tmp_path / "comparison"

    code, stdout, stderr = fip(capsys, *compare_args(files, out, "CSLMI,AVGMMI", "--seed", "4"))

    assert code == 1
    comparison = load(out / "comparison.json")
    status = {m["algorithm"]: m for m in comparison["methods"]}
    assert [m["algorithm"] for m in comparison["methods"]] == ["SIMI", "CSLMI", "AVGMMI"]
    assert status["SIMI"]["status"] == status["AVGMMI"]["status"] == "completed"
    failed = status["CSLMI"]
    assert failed["status"] == "failed"
    assert "'y'" in failed["message"] and "use SIMI or AVGMMI" in failed["message"]
    assert "round_trips" not in failed
    (target,) = comparison["targets"]
    assert list(target["methods"]) == ["SIMI", "AVGMMI"]
    assert target["methods"]["AVGMMI"]["distance"]["relative"] > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["comparison.json", "comparison.txt", "SIMI", "AVGMMI"]
    )
    line = next(s for s in stdout.splitlines() if s.startswith("CSLMI"))
    assert "failed" in line and "use SIMI or AVGMMI" in line
    assert "Traceback" not in stderr


# ---------------------------------------------------------------- federation.compare directly


def tables() -> tuple[Any, dict[str, Any]]:
    central = table("central", COLUMNS, simulated(60, 1))
    return central, {
        "a": table("a", COLUMNS, simulated(80, 2)),
        "b": table("b", COLUMNS, simulated(70, 3)),
    }


def names(methods: Sequence[Any]) -> list[str]:
    return [m.name for m in methods]


def test_methods_to_compare_puts_the_reference_first() -> None:
    registry = Registry.with_builtins()

    def chosen(*methods: str) -> list[str]:
        return names(methods_to_compare([builtin(m) for m in methods], registry))

    assert chosen("CSLMI", "AVGMMI") == ["SIMI", "CSLMI", "AVGMMI"]
    assert chosen("IMI", "SIMI", "CSLMI") == ["SIMI", "IMI", "CSLMI"]
    assert chosen("IMICE") == ["SIMICE", "IMICE"]
    assert chosen("CSLMICE", "SIMICE") == ["SIMICE", "CSLMICE"]
    with pytest.raises(InputError, match="one kind"):
        chosen("SIMI", "SIMICE")


def test_simulate_comparison_matches_separate_runs() -> None:
    """In process: each method's result is its own run with the comparison's seed, and the
    report is ``comparison_report`` of those runs."""
    central, sites = tables()
    methods = [builtin(m) for m in ("SIMI", "AVGMMI", "CSLMI")]

    comparison, results = asyncio.run(
        simulate_comparison(
            methods=methods,
            central=central,
            sites=sites,
            targets=[("y", "gaussian")],
            params={"imputations": 2},
            seed=9,
        )
    )

    assert list(results) == ["SIMI", "AVGMMI", "CSLMI"]
    for name, result in results.items():
        alone = run(name, central, sites, [("y", "gaussian")], seed=9, imputations=2)
        assert result.report["fits"] == alone.report["fits"]
        for mine, theirs in zip(result.imputed_cells, alone.imputed_cells, strict=True):
            assert mine.tobytes() == theirs.tobytes()
    rebuilt = comparison_report(
        [
            {"algorithm": name, "status": "completed", "report": result.report}
            for name, result in results.items()
        ],
        reference="SIMI",
    )
    assert comparison["targets"] == rebuilt["targets"]
    assert comparison["seed"] == 9
    assert format_table(comparison).startswith("target 'y' (gaussian)")


def test_summary_fits_of_a_chained_report_averages_from_the_first_imputation() -> None:
    """SIMICE with 2 burn-in cycles and 3 datasets 2 cycles apart (6 cycles): the summary is
    the mean of the fits of cycles 2..6, with the last fit's rows."""
    central = table("central", COLUMNS, simulated(60, 1))
    sites = {
        name: table(name, COLUMNS, simulated(80, seed, x2_missing=0.2))
        for name, seed in (("a", 2), ("b", 3))
    }
    report = run(
        "SIMICE",
        central,
        sites,
        [("y", "gaussian"), ("x2", "gaussian")],
        imputations=3,
        iteration_before_first_imputation=2,
        iteration_between_imputations=2,
        chains="single",
    ).report
    fits = [f for f in report["fits"] if f["target"] == "y"]
    assert [f["cycle"] for f in fits] == [1, 2, 3, 4, 5, 6]

    summary = summary_fits(report)

    assert list(summary) == ["y", "x2"]
    entry = summary["y"]
    assert entry["cycles"] == [2, 6]
    assert entry["n"] == fits[-1]["n"]
    assert list(entry["coefficients"]) == ["x1", "x2", "(intercept)"]
    mean = np.mean([vector(f["coefficients"]) for f in fits[1:]], axis=0)
    np.testing.assert_allclose(vector(entry["coefficients"]), mean, rtol=1e-12)
    assert not np.allclose(vector(entry["coefficients"]), vector(fits[0]["coefficients"]))


def test_summary_fits_by_hand() -> None:
    """A report written by hand: burn-in 3, fits of cycles 1..4 for two targets; only cycles
    3 and 4 count, each target apart."""

    def fit(target: str, cycle: int, a: float, n: int) -> dict[str, Any]:
        return {"target": target, "cycle": cycle, "n": n, "coefficients": {"c": a, "(i)": -a}}

    report = {
        "params": {"iteration_before_first_imputation": 3},
        "targets": [{"name": "u", "type": "gaussian"}, {"name": "v", "type": "logistic"}],
        "fits": [fit(t, c, 10.0 * c + (t == "v"), 100 + c) for c in (1, 2, 3, 4) for t in "uv"],
    }

    summary = summary_fits(report)

    assert summary["u"] == {"coefficients": {"c": 35.0, "(i)": -35.0}, "n": 104, "cycles": [3, 4]}
    assert summary["v"] == {"coefficients": {"c": 36.0, "(i)": -36.0}, "n": 104, "cycles": [3, 4]}
    assert distance({"c": 1.0, "(i)": 2.0}, {"c": 3.0, "(i)": 4.0}) == {
        "relative": pytest.approx(np.sqrt(8.0) / 5.0),
        "max_abs": 2.0,
    }
