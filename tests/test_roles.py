"""Column roles (ALGORITHMS.md, Conventions): factor predictors expanded to treatment dummies,
carried columns never modelled and written back unchanged, text targets, predictor lists per
target, and the errors of each, named by file, column or field.

The pooled references are plain numpy, written from ALGORITHMS.md: the design of a target is
its predictors with each factor as one 0/1 column per level but the first (the job's order),
then an intercept column; the ridge is lambda times each column's pooled sum of squared
deviations, 0 for the intercept.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.special import expit

from algorithms._predictors import target_matrix
from federation.data import Table, read_csv
from federation.errors import InputError, SiteFailed
from federation.job import JobSpec
from federation.roles import (
    CARRIED,
    FACTOR,
    PREDICTOR,
    define_columns,
    parse_roles,
    role_of,
    text_columns,
)
from federation.simulation import make_spec
from tests.helpers import builtin, run

RIDGE = 1e-5
LEVELS = ("east", "north", "west")  # sorted: the default order
QUICK: dict[str, Any] = {"imputations": 2, "iteration_before_first_imputation": 3}
"""Few cycles for the tests that compare two SIMICE runs for equality: how the chains mix is
tested in tests/test_parallel_chains.py."""


def csv_bytes(rows: list[list[object]], columns: list[str]) -> bytes:
    lines = [",".join(columns)]
    lines += [",".join("" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def make_rows(seed: int, n: int, *, y_missing: float = 0.2) -> list[list[object]]:
    """x numeric, f a factor of three text levels, y gaussian in both, b binary in both, an id."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    f = rng.integers(0, 3, size=n)
    effect = np.array([0.0, 1.5, -1.0])[f]
    y = 2.0 + 0.8 * x + effect + rng.normal(size=n)
    b = (rng.random(n) < expit(-0.3 + 0.7 * x + effect)).astype(int)
    rows: list[list[object]] = []
    for i in range(n):
        missing = rng.random() < y_missing
        rows.append(
            [f"id-{seed}-{i}", round(float(x[i]), 6), LEVELS[f[i]], None if missing else y[i], b[i]]
        )
    return rows


COLUMNS = ["id", "x", "f", "y", "b"]
TEXT = {"id", "f"}


def tables(
    seeds: dict[str, int], sizes: dict[str, int], *, order: dict[str, list[str]] | None = None
) -> dict[str, Table]:
    out = {}
    for name, seed in seeds.items():
        rows = make_rows(seed, sizes[name])
        columns = (order or {}).get(name, COLUMNS)
        positions = [COLUMNS.index(c) for c in columns]
        content = csv_bytes([[row[p] for p in positions] for row in rows], columns)
        out[name] = read_csv(content, label=f"{name}.csv", text=TEXT)
    return out


def pooled_design(parts: list[Table], predictors: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows where y and every predictor are observed, stacked, as numpy builds them: a
    numeric predictor as it is, f as dummies of north and west (east, the first, the
    reference)."""
    xs, ys = [], []
    for part in parts:
        y = part.values[:, part.column("y")]
        columns = []
        for name in predictors:
            if name == "f":
                cells = part.text["f"]
                columns += [(cells == level).astype(float) for level in LEVELS[1:]]
            else:
                columns.append(part.values[:, part.column(name)])
        x = np.column_stack([*columns, np.ones(y.size)])
        keep = ~np.isnan(y) & ~np.isnan(x).any(axis=1)
        xs.append(x[keep])
        ys.append(y[keep])
    return np.vstack(xs), np.concatenate(ys)


def penalty(x: np.ndarray) -> np.ndarray:
    ssd = ((x - x.mean(axis=0)) ** 2).sum(axis=0)
    ssd[-1] = 0.0
    return np.diag(RIDGE * ssd)


def test_a_gaussian_fit_with_a_factor_equals_the_pooled_fit_with_the_same_dummies() -> None:
    data = tables({"central": 1, "a": 2, "b": 3}, {"central": 80, "a": 120, "b": 90})
    central = data.pop("central")

    result = run(
        "SIMI",
        central,
        data,
        [("y", "gaussian")],
        roles={"id": CARRIED, "f": FACTOR},
        imputations=2,
    )

    x, y = pooled_design([central, *data.values()], ["x", "f", "b"])
    beta = np.linalg.solve(x.T @ x + penalty(x), x.T @ y)
    (fit,) = result.report["fits"]
    assert list(fit["coefficients"]) == ["x", "f=north", "f=west", "b", "(intercept)"]
    np.testing.assert_allclose(list(fit["coefficients"].values()), beta, rtol=1e-9)
    assert fit["n"] == y.size
    assert result.report["targets"][0]["predictors"] == ["x", "f", "b"]
    assert result.report["factors"] == {"f": list(LEVELS)}
    assert result.report["carried"] == ["id"]


def test_a_logistic_fit_with_a_factor_equals_the_pooled_newton_fit() -> None:
    data = tables({"central": 4, "a": 5}, {"central": 150, "a": 250})
    central = data.pop("central")
    b = central.column("b")
    central.values[::5, b] = np.nan  # cells to impute

    result = run(
        "SIMI",
        central,
        data,
        [("b", "logistic")],
        roles={"id": CARRIED, "f": FACTOR},
        predictors={"b": ["x", "f"]},
    )

    parts = []
    for part in (central, *data.values()):  # b as the outcome, y as a predictor
        swapped = part.values.copy()
        swapped[:, [part.column("y"), b]] = swapped[:, [b, part.column("y")]]
        parts.append(Table(part.label, part.columns, swapped, text=part.text))
    x, outcome = pooled_design(parts, ["x", "f"])
    beta = np.zeros(x.shape[1])
    p = penalty(x)
    for _ in range(50):
        mu = expit(x @ beta)
        step = np.linalg.solve(
            (x * (mu * (1 - mu))[:, None]).T @ x + p, x.T @ (outcome - mu) - p @ beta
        )
        beta += step
    (fit,) = result.report["fits"]
    assert list(fit["coefficients"]) == ["x", "f=north", "f=west", "(intercept)"]
    np.testing.assert_allclose(list(fit["coefficients"].values()), beta, atol=1.5e-5)


def test_a_predictor_list_leaves_the_other_columns_out_of_the_fit() -> None:
    data = tables({"central": 6, "a": 7}, {"central": 80, "a": 120})
    central = data.pop("central")

    result = run(
        "SIMI",
        central,
        data,
        [("y", "gaussian")],
        roles={"id": CARRIED, "f": FACTOR},
        predictors={"y": ["f", "x"]},
        imputations=2,
    )

    x, y = pooled_design([central, *data.values()], ["x", "f"])
    beta = np.linalg.solve(x.T @ x + penalty(x), x.T @ y)
    (fit,) = result.report["fits"]
    assert list(fit["coefficients"]) == ["x", "f=north", "f=west", "(intercept)"]
    np.testing.assert_allclose(list(fit["coefficients"].values()), beta, rtol=1e-9)
    assert result.report["targets"][0]["predictors"] == ["x", "f"]


def test_simice_with_a_factor_and_a_site_in_another_order_equals_the_same_order() -> None:
    sizes = {"central": 70, "a": 90, "b": 80}
    seeds = {"central": 8, "a": 9, "b": 10}
    same = tables(seeds, sizes)
    other = tables(seeds, sizes, order={"b": ["b", "f", "y", "id", "x"]})
    targets = [("y", "pmm"), ("b", "logistic")]
    roles = {"id": CARRIED, "f": FACTOR}

    first = run("SIMICE", same.pop("central"), same, targets, roles=roles, **QUICK)
    second = run("SIMICE", other.pop("central"), other, targets, roles=roles, **QUICK)

    assert first.report["fits"] == second.report["fits"]
    for m in (1, 2):
        np.testing.assert_array_equal(first.dataset(m), second.dataset(m))


def test_a_numeric_job_is_unchanged_by_roles() -> None:
    """A job without factors, carried columns or predictor lists takes the data matrix itself
    as every design: the same fits as a job that names every column a predictor."""
    data = tables({"central": 11, "a": 12}, {"central": 60, "a": 90})
    numeric = {
        name: Table(t.label, ("x", "y", "b"), t.values[:, [1, 3, 4]]) for name, t in data.items()
    }
    central = numeric.pop("central")

    plain = run("SIMICE", central, numeric, [("y", "gaussian")], **QUICK)
    named = run(
        "SIMICE",
        central,
        numeric,
        [("y", "gaussian")],
        roles={"x": PREDICTOR, "b": PREDICTOR},
        predictors={"y": ["x", "b"]},
        **QUICK,
    )

    assert plain.report["fits"] == named.report["fits"]
    np.testing.assert_array_equal(plain.dataset(2), named.dataset(2))


# ---------------------------------------------------------------- text targets and outputs


def test_a_text_categorical_target_is_imputed_as_its_levels() -> None:
    data = tables({"central": 13, "a": 14}, {"central": 90, "a": 150})
    central = data.pop("central")
    f = central.text["f"]
    f[::4] = None

    result = run(
        "SIMI",
        central,
        data,
        [("f", "categorical")],
        roles={"id": CARRIED},
        levels={"f": ["west", "north", "east"]},
        predictors={"f": ["x", "b"]},
        imputations=3,
    )

    (target,) = result.spec.targets
    assert target.labels == ("west", "north", "east") and target.levels == (0.0, 1.0, 2.0)
    from federation.outputs import long_csv

    lines = long_csv(result).decode().splitlines()
    assert lines[0] == ".imp,.id,id,x,f,y,b"
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        original = f[int(row[1]) - 1]
        assert row[2] == central.text["id"][int(row[1]) - 1]
        if row[0] == "0":
            assert row[4] == (original if original is not None else "NA")
        else:
            assert row[4] in LEVELS
            if original is not None:
                assert row[4] == original


def test_a_factor_at_a_site_with_an_unknown_level_refuses_with_a_count_only() -> None:
    data = tables({"central": 15, "a": 16}, {"central": 60, "a": 80})
    central = data.pop("central")
    data["a"].text["f"][[3, 9]] = "south"
    logged: list[str] = []

    with pytest.raises(SiteFailed) as raised:
        run(
            "SIMI",
            central,
            data,
            [("y", "gaussian")],
            roles={"id": CARRIED, "f": FACTOR},
            on_event=lambda event: logged.append(event.message),
        )

    message = str(raised.value)
    assert "a.csv" in message and "'f'" in message and "2 cell(s)" in message
    assert "south" not in message
    assert any("south" in line and "line" in line for line in logged)


def test_an_integer_coded_factor_matches_its_levels_as_numbers() -> None:
    """A factor written as integer codes: "2" and "2.0" are the same level."""
    central = read_csv(
        csv_bytes([[i % 3 + 1, i * 0.1, i % 2 or None] for i in range(30)], ["g", "x", "y"]),
        label="central.csv",
        text={"g"},
    )
    site = read_csv(
        csv_bytes([[f"{i % 3 + 1}.0", i * 0.2, i % 2] for i in range(30)], ["g", "x", "y"]),
        label="a.csv",
        text={"g"},
    )

    result = run("SIMI", central, {"a": site}, [("y", "gaussian")], roles={"g": FACTOR})

    assert result.spec.factors == {"g": ("1", "2", "3")}
    assert list(result.report["fits"][0]["coefficients"])[:2] == ["g=2", "g=3"]


# ---------------------------------------------------------------- input errors


def _central(roles: dict[str, str]) -> Table:
    return read_csv(
        csv_bytes(make_rows(1, 20), COLUMNS), label="central.csv", text=text_columns(roles, [])
    )


def test_the_text_columns_before_a_job_is_fixed() -> None:
    roles = {"id": CARRIED, "f": FACTOR, "x": PREDICTOR}
    targets: list[tuple[str | int, str]] = [
        ("y", "gaussian"),
        ("s", "logistic"),
        ("k", "categorical"),
        (2, "ordinal"),
    ]
    assert text_columns(roles, targets) == {"id", "f", "s", "k"}


def test_a_factor_with_one_level_is_an_error_naming_the_column() -> None:
    table = read_csv(
        csv_bytes([["a", i, i % 2] for i in range(10)], ["k", "x", "y"]),
        label="central.csv",
        text={"k"},
    )
    with pytest.raises(InputError, match=r"factor column 'k' of central.csv has 1 level"):
        define_columns(table, targets=[("y", "gaussian")], roles={"k": FACTOR})


def test_a_carried_column_named_as_a_predictor_is_an_error_naming_it() -> None:
    table = _central({"id": CARRIED, "f": FACTOR})
    with pytest.raises(InputError, match=r"--predictors y: column 'id' is carried"):
        define_columns(
            table,
            targets=[("y", "gaussian")],
            roles={"id": CARRIED, "f": FACTOR},
            predictors={"y": ["x", "id"]},
        )


def test_text_in_a_predictor_column_names_file_column_and_line() -> None:
    with pytest.raises(InputError) as raised:
        read_csv(csv_bytes(make_rows(1, 20), COLUMNS), label="central.csv", text={"id"})
    message = str(raised.value)
    assert "central.csv" in message and "column 'f'" in message and "line 2" in message
    assert "factor" in message


def test_text_in_a_gaussian_target_names_the_column() -> None:
    table = read_csv(
        csv_bytes([[i, "high" if i % 2 else "low"] for i in range(10)], ["x", "y"]),
        label="central.csv",
        text={"y"},
    )
    with pytest.raises(InputError, match=r"central.csv: column 'y' holds text, but a gaussian"):
        define_columns(table, targets=[("y", "gaussian")])


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("id", "expects NAME:ROLE"),
        ("id:target", "unknown role 'target'"),
        ("id:text", "unknown role 'text'"),
    ],
)
def test_a_bad_role_names_the_field(entry: str, words: str) -> None:
    with pytest.raises(InputError, match=words):
        parse_roles([entry])


def test_a_role_of_an_unknown_column_names_it() -> None:
    with pytest.raises(InputError, match=r"column 'weight' is not a column of central.csv"):
        define_columns(
            _central({"id": CARRIED, "f": FACTOR}),
            targets=[("y", "gaussian")],
            roles={"weight": CARRIED},
        )


def test_a_target_given_a_role_too_is_an_error() -> None:
    table = _central({"id": CARRIED, "f": FACTOR})
    with pytest.raises(InputError, match=r"column 'y' is a target and is given the role factor"):
        define_columns(table, targets=[("y", "gaussian")], roles={"y": FACTOR, "id": CARRIED})


# ---------------------------------------------------------------- reading and the wire


def test_r_write_csv_row_names_are_left_out_with_a_note() -> None:
    content = b'"","x","y"\n"1",1.5,2\n"2",NA,3\n"3",2.5,NA\n'

    table = read_csv(content, label="r.csv")

    assert table.columns == ("x", "y")
    np.testing.assert_array_equal(table.values, [[1.5, 2.0], [np.nan, 3.0], [2.5, np.nan]])
    assert table.notes and "r.csv" in table.notes[0] and "row names" in table.notes[0]


def test_a_job_with_roles_survives_the_wire() -> None:
    data = tables({"central": 1}, {"central": 30})
    spec = make_spec(
        algorithm=builtin("SIMICE"),
        central=data["central"],
        sites=["a"],
        targets=[("y", "gaussian"), ("b", "logistic")],
        params={},
        seed=1,
        roles={"id": CARRIED, "f": FACTOR},
        predictors={"b": ["x", "f"]},
    )

    again = JobSpec.from_wire(spec.to_wire())

    assert again == spec
    assert spec.columns == ("x", "f", "y", "b")
    assert spec.design(spec.targets[0]).names == ("x", "f=north", "f=west", "b", "(intercept)")
    dims = spec.dims()
    assert dims.as_map(spec.targets[0].index)["p"] == 5
    assert dims.as_map(spec.targets[1].index)["p"] == 4


def test_a_categorical_target_enters_the_other_designs_as_treatment_dummies() -> None:
    """A text categorical target predicts the other targets as one 0/1 column per level but
    the first, in the job's order and named by its text; a logistic target stays one column;
    the replies' widths follow."""
    data = tables({"central": 2}, {"central": 40})
    spec = make_spec(
        algorithm=builtin("SIMICE"),
        central=data["central"],
        sites=["a"],
        targets=[("y", "gaussian"), ("f", "categorical"), ("b", "logistic")],
        params={},
        seed=1,
        roles={"id": CARRIED},
        levels={"f": ["west", "north", "east"]},
    )

    y, f, b = spec.targets
    design = spec.design(y)
    assert design.names == ("x", "f=north", "f=east", "b", "(intercept)")
    assert design.levels == ((), (0.0, 1.0, 2.0), ()) and not design.default
    assert spec.design(b).names == ("x", "f=north", "f=east", "y", "(intercept)")
    assert spec.design(f).names == ("x", "y", "b", "(intercept)") and spec.design(f).default
    dims = spec.dims()
    assert [dims.as_map(t.index)["p"] for t in (y, f, b)] == [5, 4, 5]
    coded = np.array([[0.5, 2.0, 1.3, 1.0, 1.0], [0.1, 1.0, 0.2, 0.0, 1.0]])
    matrix, column = target_matrix(coded, design, y.column)
    np.testing.assert_array_equal(matrix, [[0.5, 0, 1, 1, 1.3, 1], [0.1, 1, 0, 0, 0.2, 1]])
    assert column == 4


def test_the_default_min_rows_follows_the_widest_design_a_factor_widens() -> None:
    """min_rows defaults to max(10, 3p), p the widest design a target's fit uses: a 6-level
    factor is 5 treatment dummies there (p = 3 + 5 + 1 = 9), one column as a number (p = 5)."""
    rows: list[list[object]] = [
        [i % 7 * 0.5, i % 3, i % 5, i % 6 + 1, None if i % 4 == 0 else i * 0.1] for i in range(40)
    ]
    table = read_csv(csv_bytes(rows, ["x1", "x2", "x3", "region", "y"]), label="central.csv")

    def spec(roles: dict[str, str]) -> JobSpec:
        return make_spec(
            algorithm=builtin("SIMI"),
            central=table,
            sites=["a"],
            targets=[("y", "gaussian")],
            params={},
            seed=1,
            roles=roles,
        )

    numeric, factor = spec({}), spec({"region": FACTOR})

    assert numeric.design_width() == 5 and numeric.params["min_rows"] == 15
    assert factor.design_width() == 9 and factor.params["min_rows"] == 27
    with_sites = make_spec(
        algorithm=builtin("SIMI"),
        central=table,
        sites=["a", "b", "c"],
        targets=[("y", "gaussian")],
        params={"site_effect": "intercept"},
        seed=1,
        roles={"region": FACTOR},
    )
    assert with_sites.params["min_rows"] == 3 * (9 + 3)  # a 0/1 column per remote site


@pytest.mark.parametrize(
    ("numeric", "integer", "distinct", "observed", "role"),
    [
        (True, False, 100, 100, PREDICTOR),  # a measurement
        (True, True, 100, 100, CARRIED),  # an ID
        (False, False, 3, 100, FACTOR),  # a few text levels
        (False, False, 100, 100, CARRIED),  # free text
        (False, False, 40, 100, CARRIED),  # many text levels
        (True, True, 5, 100, PREDICTOR),  # integer codes stay numeric unless chosen
    ],
)
def test_the_proposed_role_of_a_column(
    numeric: bool, integer: bool, distinct: int, observed: int, role: str
) -> None:
    assert role_of(numeric=numeric, integer=integer, distinct=distinct, observed=observed) == role


@pytest.mark.parametrize("shift", [1000.0, -1000.0])
def test_a_job_with_a_factor_stays_invariant_to_a_predictors_offset(shift: float) -> None:
    """Shifting x by a constant changes no imputation of y or b (pmm, logistic) in a SIMICE
    job with a factor: the dummies are 0/1 columns like any other, centred and penalised by
    their own pooled sums of squared deviations (ALGORITHMS.md, Ridge)."""
    seeds, sizes = {"central": 17, "a": 18}, {"central": 80, "a": 120}
    plain, moved = tables(seeds, sizes), tables(seeds, sizes)
    for table in moved.values():
        table.values[:, table.column("x")] += shift
    targets = [("y", "gaussian"), ("b", "logistic")]
    roles = {"id": CARRIED, "f": FACTOR}

    first = run("SIMICE", plain.pop("central"), plain, targets, roles=roles, **QUICK)
    second = run("SIMICE", moved.pop("central"), moved, targets, roles=roles, **QUICK)

    for m in (1, 2):
        a, b = first.dataset(m), second.dataset(m)
        for name in ("y", "b"):
            j = first.table.columns.index(name)
            scale = np.nanstd(a[:, j])
            np.testing.assert_allclose(a[:, j] / scale, b[:, j] / scale, rtol=0, atol=1e-8)


def test_the_job_layout_a_block_at_a_time_equals_the_coded_table() -> None:
    """A file in another order, with a carried text column, a text factor and a text target:
    the upload's checks read it a block of rows at a time (``check_upload``'s coding), and
    those blocks are the coded table's rows to the bit; a target's bad cell is still named by
    its line."""
    from federation.roles import check_upload, code_table

    order = ["b", "f", "id", "y", "x"]
    (central,) = tables({"central": 21}, {"central": 50}, order={"central": order}).values()
    central.text["f"][[2, 7]] = None
    spec = make_spec(
        algorithm=builtin("SIMICE"),
        central=central,
        sites=["a"],
        targets=[("y", "gaussian"), ("f", "categorical")],
        params={},
        roles={"id": CARRIED},
    )

    coding = check_upload(central, spec)
    coded = code_table(central, spec)
    assert coded.columns == coding.columns == tuple(spec.columns) != central.columns
    blocks = np.vstack([coding.rows(start, start + 7) for start in range(0, central.rows, 7)])
    assert np.array_equal(blocks.view(np.int64), coded.values.view(np.int64))
    assert np.isnan(coded.values[[2, 7], coded.columns.index("f")]).all()

    central.values[4, central.column("b")] = 0.5
    spec_b = make_spec(
        algorithm=builtin("SIMI"),
        central=central,
        sites=["a"],
        targets=[("b", "logistic")],
        params={},
        roles={"id": CARRIED, "f": FACTOR},
    )
    with pytest.raises(InputError, match=r"central\.csv: column 'b'.*0\.5 \(line 6\)"):
        check_upload(central, spec_b)
