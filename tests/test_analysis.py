"""The pooled analysis: model formulas, the fits, Rubin's rules against R mice's ``pool()``, and
every input error a user can reach, each named."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.analysis import COLUMNS, analyse, barnard_rubin, imputations_needed, pool
from federation.errors import FipError, FitError, InputError
from federation.formula import parse_formula, r_name
from federation.long_format import read_long
from tests.r_reference import run_r

# ---------------------------------------------------------------- R mice as the reference

R_POOL = r"""
suppressMessages(library(mice))
imp <- mice(nhanes2, m = 5, seed = 11, printFlag = FALSE)
write.csv(complete(imp, "long", include = TRUE), "long.csv", row.names = FALSE)
# Fit on the very cells Python reads: the long CSV, read back.
back <- read.csv("long.csv", stringsAsFactors = TRUE)
back$age <- factor(back$age)
back$hyp <- factor(back$hyp)
mids <- as.mids(back)
exact <- function(s, file) {
  s <- as.data.frame(s)
  out <- data.frame(term = as.character(s$term))
  for (name in setdiff(names(s), "term")) out[[name]] <- sprintf("%.17g", s[[name]])
  write.csv(out, file, row.names = FALSE)
}
linear <- pool(with(mids, lm(chl ~ bmi + age + hyp)))
exact(summary(linear, conf.int = TRUE, type = "all"), "linear.csv")
# glm stops when the deviance changes by < 1e-8 and takes its standard errors from the weights
# of the step before (about 1e-6 off the information at the estimate): started again at its
# own estimate, its weights are those at the estimate.
refit <- function(formula, data) {
  first <- glm(formula, family = binomial, data = data)
  glm(formula, family = binomial, data = data, start = coef(first))
}
fits <- lapply(seq_len(mids$m), function(i) refit(hyp ~ bmi + chl, complete(mids, i)))
logistic <- pool(as.mira(fits))
exact(summary(logistic, conf.int = TRUE, type = "all"), "logistic.csv")
"""


def _mice_table(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    return frame.rename(columns={"2.5 %": "conf.low", "97.5 %": "conf.high"})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "family", "reference"),
    [
        ("chl ~ bmi + age + hyp", "linear", "linear.csv"),
        ("hyp ~ bmi + chl", "logistic", "logistic.csv"),
    ],
)
def test_pooled_table_equals_mice_pool(
    tmp_path: Path, model: str, family: str, reference: str
) -> None:
    """mice on nhanes2 (text factors age and hyp) in R; the same long CSV pooled in Python:
    every column of summary(pool(fit), conf.int = TRUE, type = "all") to 1e-8, df included."""
    run_r(R_POOL, cwd=tmp_path)
    expected = _mice_table(tmp_path / reference)
    analysis = analyse(read_long(tmp_path / "long.csv"), model, family)
    got = pd.DataFrame(analysis.table)
    assert list(got["term"]) == list(expected["term"])
    for name in COLUMNS[1:]:
        np.testing.assert_allclose(
            got[name].to_numpy(dtype=float),
            expected[name].to_numpy(dtype=float),
            rtol=1e-8,
            atol=0,
            err_msg=f"{family} {model}: column {name}",
        )


# ---------------------------------------------------------------- the rules by hand


def test_pool_by_hand() -> None:
    """Three datasets, one term: estimates 1, 2, 3 with variances 0.5 each, dfcom 10."""
    row = pool(["x"], np.array([[1.0], [2.0], [3.0]]), np.array([[0.5], [0.5], [0.5]]), dfcom=10)[0]
    assert row["estimate"] == 2.0
    assert row["b"] == pytest.approx(1.0)
    assert row["t"] == pytest.approx(0.5 + 4 / 3)
    assert row["riv"] == pytest.approx((4 / 3) / 0.5)
    lam = (4 / 3) / (0.5 + 4 / 3)
    assert row["lambda"] == pytest.approx(lam)
    df_old = 2 / lam**2
    df_obs = 11 / 13 * 10 * (1 - lam)
    assert row["df"] == pytest.approx(df_old * df_obs / (df_old + df_obs))
    assert row["fmi"] == pytest.approx((row["riv"] + 2 / (row["df"] + 3)) / (row["riv"] + 1))
    assert row["std.error"] == pytest.approx(math.sqrt(row["t"]))
    assert row["conf.low"] < 2.0 < row["conf.high"]
    assert (row["m"], row["dfcom"]) == (3, 10)


def test_barnard_rubin_without_between_variance_stays_finite() -> None:
    """b = 0 (the term is untouched by imputation): mice floors lambda at 1e-4."""
    df = barnard_rubin(5, np.array([0.0]), np.array([1.0]), 30.0)
    df_old = 4 / 1e-8
    df_obs = 31 / 33 * 30 * (1 - 1e-4)
    assert df[0] == pytest.approx(df_old * df_obs / (df_old + df_obs))
    assert barnard_rubin(5, np.array([0.2]), np.array([1.0]), math.inf)[0] == pytest.approx(
        4 / (1.2 * 0.2) ** 2
    )


def test_imputations_needed_follows_von_hippel() -> None:
    """fmi 0.5 from 20 imputations: upper bound expit(1.96 sqrt(0.1)) = 0.6502, so
    1 + (0.6502 / 0.05)^2 / 2 = 85.6, rounded up."""
    assert imputations_needed(0.5, 20) == 86
    assert imputations_needed(0.05, 100) < imputations_needed(0.05, 5)


# ---------------------------------------------------------------- formulas and designs


def _data(rows: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    region = rng.choice(["north", "south", "east"], size=rows).astype(object)
    return {
        "y": 1 + 2 * x1 + (region == "south") + rng.normal(size=rows),
        "x1": x1,
        "age (y)": rng.uniform(20, 80, size=rows),
        "region": region,
        "stage": rng.integers(1, 4, size=rows).astype(np.float64),
        "b": (rng.random(rows) < 0.5).astype(np.float64),
    }


def test_terms_are_named_as_r_names_them() -> None:
    """Text columns give treatment dummies (first level in sorted order the reference),
    factor() of a number likewise, non-syntactic names are backquoted."""
    datasets = [_data(seed=1), _data(seed=2)]
    analysis = analyse(datasets, "y ~ x1 + `age (y)` + region + factor(stage)")
    assert [row["term"] for row in analysis.table] == [
        "(Intercept)", "x1", "`age (y)`", "regionnorth", "regionsouth",
        "factor(stage)2", "factor(stage)3",
    ]  # fmt: skip
    assert r_name("_x") == "`_x`"
    assert r_name("if") == "`if`"
    assert r_name("x.1_a") == "x.1_a"


def test_declared_factors_and_levels() -> None:
    datasets = [_data(seed=1), _data(seed=2)]
    analysis = analyse(
        datasets, "y ~ stage + region", factors=["stage"], levels={"region": ["south", "east"]}
    )
    terms = [row["term"] for row in analysis.table]
    assert terms == ["(Intercept)", "stage2", "stage3", "regioneast"]


def test_logistic_on_text_outcome_models_the_second_level() -> None:
    """As R's glm: a two-level text outcome is 1 for the second level."""
    base = [_data(seed=1), _data(seed=2)]
    numeric = analyse(base, "b ~ x1", "logistic")
    text = [{**d, "b": np.where(d["b"] == 1, "yes", "no").astype(object)} for d in base]
    as_text = analyse(text, "b ~ x1", "logistic")
    for a, b in zip(numeric.table, as_text.table, strict=True):
        assert a["estimate"] == pytest.approx(b["estimate"], rel=1e-12)


def test_linear_fit_equals_normal_equations() -> None:
    data = [_data(seed=3), _data(seed=4)]
    analysis = analyse(data, "y ~ x1")
    x = np.column_stack([np.ones(40), data[0]["x1"]])
    beta0 = np.linalg.solve(x.T @ x, x.T @ data[0]["y"])
    x = np.column_stack([np.ones(40), data[1]["x1"]])
    beta1 = np.linalg.solve(x.T @ x, x.T @ data[1]["y"])
    assert analysis.table[1]["estimate"] == pytest.approx((beta0[1] + beta1[1]) / 2, rel=1e-12)
    assert analysis.table[0]["dfcom"] == 38
    assert analysis.rows == 40


def test_rows_with_missing_cells_are_left_out_as_r_does() -> None:
    data = [_data(seed=3), _data(seed=4)]
    data[0]["x1"] = data[0]["x1"].copy()
    data[0]["x1"][:5] = np.nan
    analysis = analyse(data, "y ~ x1")
    assert analysis.rows == 35
    assert analysis.table[0]["dfcom"] == 33
    assert "different numbers of rows" in analysis.warnings[0]


def test_table_as_csv_and_text() -> None:
    analysis = analyse([_data(seed=1), _data(seed=2)], "y ~ x1")
    lines = analysis.csv().splitlines()
    assert lines[0] == ",".join(COLUMNS)
    assert lines[1].startswith("(Intercept),")
    assert float(lines[2].split(",")[1]) == analysis.table[1]["estimate"]
    text = analysis.text()
    assert "conf.low" in text and "Meng 1994" in text and "von Hippel" in text
    report = analysis.to_dict()
    assert report["pooled"][1]["term"] == "x1"
    assert report["imputations_needed"] == analysis.imputations_needed


# ---------------------------------------------------------------- every error, named


@pytest.mark.parametrize(
    ("model", "family", "error", "words"),
    [
        ("y x1", "linear", InputError, "outcome ~ predictor"),
        ("y ~ ", "linear", InputError, "outcome ~ predictor"),
        ("y ~ x1 ~ x2", "linear", InputError, "outcome ~ predictor"),
        ("y + b ~ x1", "linear", InputError, "one column name"),
        ("y ~ x1:stage", "linear", InputError, "interactions"),
        ("y ~ log(x1)", "linear", InputError, "'log(x1)'"),
        ("y ~ x1 + x1", "linear", InputError, "named twice"),
        ("y ~ x9", "linear", InputError, "no column named 'x9'"),
        ("y ~ `age(y)`", "linear", InputError, "no column named 'age(y)'"),
        ("y ~ y", "linear", InputError, "also a predictor"),
        ("region ~ x1", "linear", InputError, "'region' is text"),
        ("region ~ x1", "logistic", InputError, "must have 2 levels, it has 3"),
        ("y ~ x1", "logistic", InputError, "'y' of a logistic model must be 0 or 1"),
        ("y ~ x1", "poisson", InputError, "linear or logistic"),
        ("const ~ x1", "linear", InputError, "'const' never varies"),
        ("zeros ~ x1", "logistic", InputError, "'zeros' is always 0"),
        ("y ~ x1 + twice", "linear", FitError, "column 'twice'"),
        ("y ~ x1 + const", "linear", FitError, "column 'const' (term const) is constant"),
        ("sep ~ x1", "logistic", FitError, "did not converge"),
    ],
)
def test_input_errors_name_what_is_wrong(
    model: str, family: str, error: type[FipError], words: str
) -> None:
    datasets = []
    for seed in (1, 2):
        data = _data(seed=seed)
        data["const"] = np.full(40, 3.0)
        data["zeros"] = np.zeros(40)
        data["twice"] = 2 * data["x1"] - 1
        data["sep"] = (data["x1"] > 0).astype(np.float64)
        datasets.append(data)
    with pytest.raises(error) as caught:
        analyse(datasets, model, family, label="imputations_long.csv")
    assert words in str(caught.value)


def test_too_few_datasets_and_rows_and_unknown_factor() -> None:
    with pytest.raises(InputError, match="at least 2 imputed datasets, found 1"):
        analyse([_data()], "y ~ x1")
    with pytest.raises(InputError, match="2 complete rows for 2 coefficients"):
        analyse([_data(rows=2), _data(rows=2, seed=1)], "y ~ x1")
    with pytest.raises(InputError, match="no column named 'sex' \\(declared a factor\\)"):
        analyse([_data(), _data(seed=1)], "y ~ x1", factors=["sex"])


def test_formula_keeps_backquoted_names() -> None:
    formula = parse_formula("`weight (kg)` ~ `age (y)` + factor(`my region`) + 1")
    assert formula.outcome == "weight (kg)"
    assert [t.label for t in formula.terms] == ["`age (y)`", "factor(`my region`)"]


# ---------------------------------------------------------------- reading the long CSV


def test_read_long_gives_the_imputed_datasets(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text(
        '".imp",".id","y","g"\n0,1,NA,a\n0,2,2,NA\n1,1,1.5,a\n1,2,2,b\n2,1,0.5,a\n2,2,2,a\n'
    )
    datasets = read_long(path)
    assert len(datasets) == 2
    np.testing.assert_array_equal(datasets[1]["y"], [0.5, 2.0])
    assert list(datasets[0]["g"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("y,x\n1,2\n", "no '.imp' column"),
        (".imp,y\n0,1\n", "no '.id' column"),
        (".imp,.id,y\n0,1,1\n0,2,NA\n", "no imputed datasets"),
        (".imp,.id,y\n0,1,1\nx,2,2\n", "line 3 has 'x'"),
        (".imp,.id,y\n0,1,1\n1.5,2,2\n", "whole numbers"),
        ("", "the file is empty"),
    ],
)
def test_read_long_errors_name_the_file(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(InputError) as caught:
        read_long(path)
    assert str(path) in str(caught.value)
    assert words in str(caught.value)


def test_read_long_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_long(tmp_path / "nowhere.csv")
