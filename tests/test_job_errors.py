"""Job-level errors through ``simulate``: each is refused with the right error type and a message
that names the file, site, column or parameter at fault, and says what to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from federation.data import Table
from federation.errors import FitError, InputError, SiteFailed
from tests.helpers import run, table

COLUMNS = ("x1", "x2", "y", "b")
"""Two predictors, a continuous ``y`` and a binary ``b``."""
Y, B = 2, 3


def make(label: str, rows: int, *, seed: int, y_missing: float = 0.25) -> Table:
    """A site's table: complete predictors and ``b``, ``y`` missing in about a quarter of rows.

    The first row always misses ``y`` and the second always has it, so central always has work.
    """
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.normal(size=rows)
    y = 1.0 + x1 - x2 + rng.normal(size=rows)
    b = (rng.random(rows) < 1 / (1 + np.exp(-(x1 + x2)))).astype(np.float64)
    values = np.column_stack([x1, x2, y, b])
    gone = rng.random(rows) < y_missing
    gone[:2] = [True, False]
    values[gone, Y] = np.nan
    return table(label, COLUMNS, values)


def edited(source: Table, edit: Callable[[np.ndarray], object]) -> Table:
    """A copy of ``source`` with ``edit(values)`` applied in place."""
    values = source.values.copy()
    edit(values)
    return table(source.label, source.columns, values)


def central() -> Table:
    return make("central.csv", 40, seed=1)


def site_a() -> Table:
    return make("a.csv", 60, seed=2)


def site_b() -> Table:
    return make("b.csv", 50, seed=3)


def fails(error: type[Exception], *args: Any, **params: Any) -> str:
    """Run a job that must fail with ``error``; return its message."""
    with pytest.raises(error) as raised:
        run(*args, **params)
    return str(raised.value)


# ---------------------------------------------------------------- targets


@pytest.mark.parametrize("index", [0, 5, 99])
def test_target_index_out_of_range(index: int) -> None:
    """The index, the file and the valid range are in the message."""
    message = fails(InputError, "SIMI", central(), {"a": site_a()}, [(index, "gaussian")])

    assert f"target index {index}" in message
    assert "out of range" in message
    assert "central.csv" in message
    assert "1..4" in message


def test_target_index_counts_from_one() -> None:
    """Index 3 is the third column, ``y``: the job runs and fits ``y``."""
    result = run("SIMI", central(), {"a": site_a()}, [(3, "gaussian")], imputations=1)

    assert result.report["fits"][0]["target"] == "y"


def test_target_name_not_in_header() -> None:
    """An unknown name is quoted and the header's columns listed."""
    message = fails(InputError, "SIMI", central(), {"a": site_a()}, [("bmi", "gaussian")])

    assert "'bmi'" in message
    assert "central.csv" in message
    assert "'x1', 'x2', 'y', 'b'" in message


def test_unknown_target_type() -> None:
    """A method the registry does not know is named with the known ones."""
    message = fails(InputError, "SIMI", central(), {"a": site_a()}, [("y", "negbin")])

    assert "'negbin'" in message
    assert "'y'" in message
    assert "gaussian" in message and "logistic" in message


def test_same_target_twice_by_name_and_index() -> None:
    """Naming ``y`` once by name and once by index is the same target twice."""
    message = fails(
        InputError, "SIMICE", central(), {"a": site_a()}, [("y", "gaussian"), (3, "gaussian")]
    )

    assert "'y'" in message
    assert "twice" in message


def test_no_target() -> None:
    message = fails(InputError, "SIMI", central(), {"a": site_a()}, [])

    assert "no target" in message


def test_simi_with_two_targets_suggests_simice() -> None:
    """SIMI takes one target; the message says how many were given and points to SIMICE."""
    message = fails(
        InputError, "SIMI", central(), {"a": site_a()}, [("y", "gaussian"), ("b", "logistic")]
    )

    assert "SIMI" in message
    assert "2" in message
    assert "SIMICE" in message


def test_binary_target_with_other_values_at_central() -> None:
    """Central's bad cells are shown with its file name, as an input error."""
    bad = edited(central(), lambda v: v.__setitem__((5, B), 2.0))

    message = fails(InputError, "SIMI", bad, {"a": site_a()}, [("b", "logistic")])

    assert "central.csv" in message
    assert "'b'" in message
    assert "0 or 1" in message
    assert "2 (line 7)" in message


@pytest.mark.parametrize(
    ("algorithm", "targets"),
    [
        ("SIMI", [("b", "logistic")]),
        ("SIMICE", [("y", "gaussian"), ("b", "logistic")]),
    ],
)
def test_binary_target_with_other_values_at_a_site(
    algorithm: str, targets: list[tuple[str | int, str]]
) -> None:
    """A remote's bad cells fail the job naming that site, its file and the lines, never the
    values: the message travels to central."""
    bad = edited(site_a(), lambda v: v.__setitem__((slice(3, 5), B), [0.5, 7.0]))

    with pytest.raises(SiteFailed) as raised:
        run(algorithm, central(), {"a": bad, "b": site_b()}, targets)

    assert set(raised.value.failures) == {"a"}
    message = str(raised.value)
    assert "site 'a'" in message
    assert "'b'" in message
    assert "0 or 1" in message
    assert "on line(s) 5, 6" in message
    assert "0.5" not in message and "7.0" not in message and "7 (" not in message


def test_site_error_names_the_file_once() -> None:
    """The site's file label is not repeated ('a.csv: a.csv: ...') in a site's refusal."""
    bad = edited(site_a(), lambda v: v.__setitem__((3, B), 5.0))

    message = fails(SiteFailed, "SIMI", central(), {"a": bad}, [("b", "logistic")])

    assert message.count("a.csv") == 1, message


def test_target_with_no_observed_value_central_only() -> None:
    """Central alone, target all empty: nothing to fit, and the message says so."""
    empty = edited(central(), lambda v: v.__setitem__((slice(None), Y), np.nan))

    message = fails(InputError, "SIMI", empty, {}, [("y", "gaussian")])

    assert "'y'" in message
    assert "no observed value" in message


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_target_with_no_observed_value_anywhere(algorithm: str) -> None:
    """Empty at every site: every site refuses with its count of usable rows (a refusal is
    all a site sends), and the job fails naming each."""

    def clear(values: np.ndarray) -> None:
        values[:, Y] = np.nan

    message = fails(
        SiteFailed,
        algorithm,
        edited(central(), clear),
        {"a": edited(site_a(), clear), "b": edited(site_b(), clear)},
        [("y", "gaussian")],
    )

    assert "site 'a'" in message and "site 'b'" in message
    assert "only 0 usable row(s)" in message


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_target_with_nothing_missing_at_central_warns(algorithm: str) -> None:
    """A warning in the report, and still M datasets, each equal to the original."""
    full = make("central.csv", 40, seed=4, y_missing=0.0)
    full = edited(full, lambda v: v.__setitem__((0, Y), 0.5))

    result = run(algorithm, full, {"a": site_a()}, [("y", "gaussian")], imputations=3)

    warnings = result.report["warnings"]
    assert len(warnings) == 1
    assert "'y'" in warnings[0]
    assert "no missing value" in warnings[0]
    assert "central.csv" in warnings[0]
    assert len(result.imputed_cells) == 3
    for m in (1, 2, 3):
        assert np.array_equal(result.dataset(m), full.values)


# ---------------------------------------------------------------- singular systems


def collinear(values: np.ndarray) -> None:
    values[:, 1] = 2.0 * values[:, 0]


def constant(values: np.ndarray) -> None:
    values[:, 1] = 3.0


@pytest.mark.parametrize(
    ("algorithm", "targets"),
    [
        ("SIMI", [("y", "gaussian")]),
        ("SIMI", [("b", "logistic")]),
        ("SIMICE", [("b", "logistic"), ("y", "gaussian")]),
    ],
)
def test_collinear_columns_with_ridge_zero(
    algorithm: str, targets: list[tuple[str | int, str]]
) -> None:
    """The target and the collinear columns are named, and ridge > 0 suggested."""
    message = fails(
        FitError,
        algorithm,
        edited(central(), collinear),
        {"a": edited(site_a(), collinear)},
        targets,
        ridge=0,
    )

    assert f"target '{targets[0][0]}'" in message
    assert "singular" in message
    assert "'x1'" in message and "'x2'" in message
    assert "collinear" in message
    assert "ridge > 0" in message


def test_collinear_columns_solve_with_the_default_ridge() -> None:
    """The same data runs with the default ridge: the error is specific to ridge 0."""
    result = run(
        "SIMI",
        edited(central(), collinear),
        {"a": edited(site_a(), collinear)},
        [("y", "gaussian")],
        imputations=1,
    )

    assert result.report["params"]["ridge"] > 0


@pytest.mark.parametrize(("target", "kind"), [("y", "gaussian"), ("b", "logistic")])
def test_constant_column_is_left_out_and_reported(target: str, kind: str) -> None:
    """A predictor constant over the fit's rows is left out of that fit, even with ridge 0, as
    mice does (its loggedEvents): the fit's report entry names it and its coefficient is 0."""
    result = run(
        "SIMI",
        edited(central(), constant),
        {"a": edited(site_a(), constant)},
        [(target, kind)],
        ridge=0,
        imputations=1,
    )

    (fit,) = result.report["fits"]
    assert fit["dropped"] == ["x2"]
    assert fit["coefficients"]["x2"] == 0.0
    assert all(np.isfinite(v) for v in fit["coefficients"].values())


# ---------------------------------------------------------------- too few rows at a site


def test_site_with_fewer_rows_than_the_default_minimum_refuses() -> None:
    """Default min_rows is max(10, 3p) = 12 for p = 4: an 11-row site refuses, named."""
    small = make("small.csv", 11, seed=5, y_missing=0.0)

    with pytest.raises(SiteFailed) as raised:
        run("SIMI", central(), {"a": site_a(), "small": small}, [("y", "gaussian")])

    assert set(raised.value.failures) == {"small"}
    message = str(raised.value)
    assert "site 'small'" in message
    assert "10 usable row(s) of 11" in message
    assert "12" in message
    assert "min_rows" in message


def test_default_minimum_is_reported() -> None:
    """The resolved default, max(10, 3 * 4) = 12, is the one the report shows."""
    result = run("SIMI", central(), {"a": site_a()}, [("y", "gaussian")], imputations=1)

    assert result.report["params"]["min_rows"] == 12


def test_default_minimum_grows_with_the_columns() -> None:
    """With 5 columns, max(10, 15) = 15: a 14-row site refuses."""
    rng = np.random.default_rng(6)
    columns = ("x1", "x2", "x3", "x4", "y")

    def wide(label: str, rows: int) -> Table:
        values = rng.normal(size=(rows, 5))
        values[:2, 4] = [np.nan, 1.0]
        return table(label, columns, values)

    message = fails(
        SiteFailed, "SIMI", wide("central.csv", 30), {"w": wide("w.csv", 15)}, [("y", "gaussian")]
    )

    assert "site 'w'" in message
    assert "minimum of 15" in message


def test_explicit_min_rows() -> None:
    """min_rows=100 makes a 60-row site refuse, with its usable count and the minimum."""
    with pytest.raises(SiteFailed) as raised:
        run("SIMI", central(), {"a": site_a()}, [("y", "gaussian")], min_rows=100)

    message = str(raised.value)
    assert set(raised.value.failures) == {"a"}
    assert "site 'a'" in message
    assert "of 60" in message
    assert "100" in message
    assert "min_rows" in message


def test_explicit_min_rows_lets_a_small_site_take_part() -> None:
    """A lower min_rows admits the 11-row site the default refuses."""
    small = make("small.csv", 11, seed=5, y_missing=0.0)

    result = run("SIMI", central(), {"small": small}, [("y", "gaussian")], min_rows=5)

    assert [s["name"] for s in result.report["sites"]] == ["central", "small"]


def test_simice_site_with_few_observed_target_cells_refuses() -> None:
    """SIMICE counts, per target, the rows that observe it: the site says which target."""
    sparse = edited(site_a(), lambda v: v.__setitem__((slice(5, None), Y), np.nan))

    message = fails(SiteFailed, "SIMICE", central(), {"a": sparse}, [("y", "gaussian")])

    assert "site 'a'" in message
    assert "'y'" in message
    assert "min_rows" in message


# ---------------------------------------------------------------- incomplete predictors


def test_simi_central_row_missing_target_and_predictor_suggests_simice() -> None:
    """The message counts the rows, names the target and the missing predictor, and suggests
    SIMICE."""
    stuck = edited(central(), lambda v: v.__setitem__((0, 0), np.nan))

    message = fails(InputError, "SIMI", stuck, {"a": site_a()}, [("y", "gaussian")])

    assert "central.csv" in message
    assert "1 row(s)" in message
    assert "'y'" in message
    assert "'x1'" in message
    assert "'x2'" not in message
    assert "SIMICE" in message


def test_simi_remote_rows_with_missing_predictor_are_left_out() -> None:
    """At a remote, such rows are not an error: they are counted as left out in the report."""
    full = make("a.csv", 60, seed=2, y_missing=0.0)
    holes = edited(full, lambda v: v.__setitem__((slice(1, 6), 0), np.nan))

    result = run("SIMI", central(), {"a": holes}, [("y", "gaussian")], imputations=1)

    (site,) = [s for s in result.report["sites"] if s["name"] == "a"]
    assert site["left_out"]["a predictor missing"] == 5
    assert site["rows_used"] + sum(site["left_out"].values()) == site["rows"]


def test_simice_central_missing_non_target_cell() -> None:
    """SIMICE names the incomplete non-target column and says to make it a target."""
    holes = edited(central(), lambda v: v.__setitem__((slice(3, 5), 1), np.nan))

    message = fails(InputError, "SIMICE", holes, {"a": site_a()}, [("y", "gaussian")])

    assert "central.csv" in message
    assert "'x2'" in message
    assert "2 row(s)" in message
    assert "target" in message


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "name", ["iteration_before_first_imputation", "iteration_between_imputations"]
)
def test_simice_iteration_counts_below_one(name: str) -> None:
    """Zero cycles is refused, naming the parameter."""
    message = fails(
        InputError, "SIMICE", central(), {"a": site_a()}, [("y", "gaussian")], **{name: 0}
    )

    assert f"'{name}'" in message
    assert "minimum of 1" in message


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_zero_imputations(algorithm: str) -> None:
    message = fails(
        InputError, algorithm, central(), {"a": site_a()}, [("y", "gaussian")], imputations=0
    )

    assert "'imputations'" in message
    assert "minimum of 1" in message


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"ridge": -0.1}, ["'ridge'", "minimum"]),
        ({"imputations": 2.5}, ["'imputations'", "integer"]),
        ({"imputations": "3"}, ["'imputations'", "integer"]),
        ({"min_rows": 0}, ["'min_rows'", "minimum"]),
        ({"max_iter": 0}, ["'max_iter'", "minimum"]),
    ],
)
def test_invalid_parameter_values(params: dict[str, Any], words: list[str]) -> None:
    """Other out-of-schema values name their parameter too."""
    message = fails(InputError, "SIMI", central(), {"a": site_a()}, [("y", "gaussian")], **params)

    for word in words:
        assert word in message


def test_unknown_parameter_lists_the_known_ones() -> None:
    message = fails(
        InputError, "SIMI", central(), {"a": site_a()}, [("y", "gaussian")], iterations=3
    )

    assert "unknown parameter 'iterations'" in message
    for known in ("'imputations'", "'ridge'", "'max_iter'", "'min_rows'"):
        assert known in message


def test_simice_parameter_is_unknown_to_simi() -> None:
    """SIMI does not silently accept SIMICE's cycle counts."""
    message = fails(
        InputError,
        "SIMI",
        central(),
        {"a": site_a()},
        [("y", "gaussian")],
        iteration_between_imputations=2,
    )

    assert "'iteration_between_imputations'" in message


# ---------------------------------------------------------------- columns between sites


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_site_with_other_columns_is_named(algorithm: str) -> None:
    """The site and its file are named, with the missing and unexpected columns."""
    renamed = table("a.csv", ("x1", "x2", "y", "smoker"), site_a().values)

    with pytest.raises(SiteFailed) as raised:
        run(algorithm, central(), {"a": renamed, "b": site_b()}, [("y", "gaussian")])

    assert set(raised.value.failures) == {"a"}
    message = str(raised.value)
    assert "site 'a'" in message
    assert "a.csv" in message
    assert "missing 'b'" in message
    assert "unexpected 'smoker'" in message


@pytest.mark.parametrize("algorithm", ["SIMI", "SIMICE"])
def test_a_site_with_its_columns_in_another_order_gives_the_same_result(algorithm: str) -> None:
    """Columns are matched by name: a site's file in another order changes nothing."""
    b = site_b()
    order = [2, 3, 1, 0]
    swapped = table("b.csv", tuple(b.columns[j] for j in order), b.values[:, order])

    same = run(algorithm, central(), {"a": site_a(), "b": b}, [("y", "gaussian")], imputations=3)
    other = run(
        algorithm, central(), {"a": site_a(), "b": swapped}, [("y", "gaussian")], imputations=3
    )

    for m in range(1, 4):
        np.testing.assert_array_equal(other.dataset(m), same.dataset(m))
    assert other.report["fits"] == same.report["fits"]


def test_every_failing_site_is_named() -> None:
    """Two bad sites: one failure naming both, so both can be fixed at once."""
    short = table("a.csv", ("x1", "x2", "y"), site_a().values[:, :3])
    extra = table("b.csv", (*COLUMNS, "z"), np.column_stack([site_b().values, np.ones(50)]))

    with pytest.raises(SiteFailed) as raised:
        run("SIMI", central(), {"a": short, "b": extra}, [("y", "gaussian")])

    assert set(raised.value.failures) == {"a", "b"}
    message = str(raised.value)
    assert "missing 'b'" in message
    assert "unexpected 'z'" in message
