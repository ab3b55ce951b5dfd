"""``fip_mids.R`` in R (slow: R): the shipped function on a real ``fip simulate`` download (SIMICE,
every target method, a column named ``age (y)``) gives a mice ``mids`` whose ``plot()`` and
``densityplot()`` run, whose ``method`` names fip's methods by mice's names, whose binary and
categorical targets are factors, and whose ``pool(with(imp, ...))`` equals ``fip pool`` on the
same long CSV to 1e-8; read from the zip as downloaded, from the folder, with one chain or with
M; the README's R lines run as printed; and each input error names its file and column.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.analysis import COLUMNS
from federation.cli import main
from tests.r_reference import run_r

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
COLUMNS_OF_DATA = ("x", "age (y)", "smoker", "stage", "grade", "visits", "bmi")
TARGETS = {
    "age (y)": ("gaussian", "norm"),
    "smoker": ("logistic", "logreg"),
    "stage": ("categorical", "polyreg"),
    "grade": ("ordinal", "polr"),
    "visits": ("poisson", "poisson"),
    "bmi": ("pmm", "pmm"),
}
M = 5
CYCLES = 13
"""SIMICE's defaults: M parallel chains of 13 cycles, chain m giving dataset m."""


def _write(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    columns = {
        "x": x,
        "age (y)": 50 + 5 * x + 3 * rng.normal(size=rows),
        "smoker": (rng.random(rows) < 1 / (1 + np.exp(-x))).astype(float),
        "stage": np.digitize(x + rng.normal(size=rows), [-0.5, 0.5]) + 1.0,
        "grade": np.digitize(x + rng.normal(size=rows), [-0.7, 0.0, 0.7]) + 1.0,
        "visits": rng.poisson(np.exp(0.5 + 0.3 * x)).astype(float),
        "bmi": np.round(25 + 2 * x + 2 * rng.normal(size=rows), 1),
    }
    for name in COLUMNS_OF_DATA[1:]:
        columns[name][rng.random(rows) < 0.25] = np.nan
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS_OF_DATA)
        for i in range(rows):
            writer.writerow(
                ["NA" if np.isnan(columns[c][i]) else repr(float(columns[c][i])) for c in columns]
            )


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``fip simulate`` wrote for SIMICE over central and two sites."""
    folder = tmp_path_factory.mktemp("fip_mids")
    for name, rows, seed in (("central", 150, 1), ("a", 200, 2), ("b", 200, 3)):
        _write(folder / f"{name}.csv", rows, seed)
    out = folder / "results"
    targets = [
        arg for name, (method, _) in TARGETS.items() for arg in ("--target", f"{name}:{method}")
    ]
    code = main(
        [
            "simulate", "--algorithm", "SIMICE", "--central", str(folder / "central.csv"),
            "--site", str(folder / "a.csv"), "--site", str(folder / "b.csv"), *targets,
            "--imputations", str(M), "--seed", "3", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return out


def _pool(long: Path, model: str, family: str, out: Path) -> pd.DataFrame:
    code = main(
        [
            "pool", "--long", str(long), "--model", model, "--family", family,
            "--factor", "stage", "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    return pd.read_csv(out)


R_MIDS = r"""
suppressMessages(library(mice))
source("results/fip_mids.R")
folder <- fip_mids("results")
imp <- fip_mids("results/imputations.zip")
stopifnot(is.mids(imp), inherits(imp, "fip_mids"))
stopifnot(identical(complete(imp, "long", include = TRUE),
                    complete(folder, "long", include = TRUE)))
stopifnot(identical(imp$chainMean, folder$chainMean), identical(imp$method, folder$method))
say <- function(key, value) cat(key, "=", paste(value, collapse = "|"), "\n", sep = "")
say("class", class(imp))
say("m", imp$m)
say("names", names(imp$data))
say("method", paste(names(imp$method), imp$method, sep = ":"))
say("fip_method", paste(names(imp$fip_method), imp$fip_method, sep = ":"))
say("classes", vapply(imp$data, function(c) class(c)[1], ""))
say("smoker_levels", levels(imp$data$smoker))
say("stage_levels", levels(imp$data$stage))
say("grade_levels", levels(imp$data$grade))
say("formula_age", deparse(imp$formulas[["age (y)"]]))
say("chain_dim", dim(imp$chainMean))
say("chain_rows", dimnames(imp$chainMean)[[1]])
say("iteration", imp$iteration)
say("x_trace", is.nan(imp$chainMean["x", , 1]))
write.csv(data.frame(mean = sprintf("%.17g", imp$chainMean["age (y)", , 1]),
                     variance = sprintf("%.17g", imp$chainVar["age (y)", , 1])),
          "age_chain.csv", row.names = FALSE)
# complete(imp, "long") passes the names through data.frame(), which makes them syntactic
# (mice's own): each dataset by itself keeps them.
codes <- do.call(rbind, lapply(0:imp$m, function(i) {
  data.frame(.imp = i, .id = seq_len(nrow(imp$data)), complete(imp, i), check.names = FALSE)
}))
codes[] <- lapply(codes, function(c) if (is.factor(c)) as.numeric(as.character(c)) else c)
write.csv(data.frame(lapply(codes, function(c) sprintf("%.17g", c)), check.names = FALSE),
          "complete.csv", row.names = FALSE)
png("plot%d.png")
print(plot(imp))
print(densityplot(imp))
print(stripplot(imp, smoker + stage ~ .imp))
print(bwplot(imp))
dev.off()
exact <- function(s, file) {
  s <- as.data.frame(s)
  out <- data.frame(term = as.character(s$term))
  for (name in setdiff(names(s), "term")) out[[name]] <- sprintf("%.17g", s[[name]])
  write.csv(out, file, row.names = FALSE)
}
linear <- pool(with(imp, lm(`age (y)` ~ x + smoker + stage)))
exact(summary(linear, conf.int = TRUE, type = "all"), "linear.csv")
# glm's standard errors come from the weights of its step before the last (see test_analysis):
# started again at its own estimate, they are those at the estimate.
refit <- function(data) {
  formula <- smoker ~ x + `age (y)` + stage
  first <- glm(formula, family = binomial, data = data)
  glm(formula, family = binomial, data = data, start = coef(first))
}
logistic <- pool(as.mira(lapply(seq_len(imp$m), function(i) refit(complete(imp, i)))))
exact(summary(logistic, conf.int = TRUE, type = "all"), "logistic.csv")
"""


def _said(stdout: str) -> dict[str, list[str]]:
    pairs = (line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    return {key: value.split("|") for key, value in pairs}


def test_the_shipped_function_gives_a_full_mids_whose_plots_and_pool_work(
    results: Path, tmp_path: Path
) -> None:
    """From the zip as downloaded and from the folder alike: mice's methods of fip's, factors,
    the chains (M parallel ones, as SIMICE ran), the data as fip wrote it, the plots, and
    pool() equal to fip pool on the same long CSV."""
    shutil.copytree(results, tmp_path / "results")

    said = _said(run_r(R_MIDS, cwd=tmp_path))

    assert said["class"] == ["fip_mids", "mids"]
    assert said["m"] == [str(M)]
    assert said["names"] == list(COLUMNS_OF_DATA)
    assert said["method"] == ["x:"] + [f"{name}:{mice}" for name, (_, mice) in TARGETS.items()]
    assert said["fip_method"] == ["x:"] + [f"{n}:{fip}" for n, (fip, _) in TARGETS.items()]
    assert said["classes"] == [
        "numeric", "numeric", "factor", "factor", "ordered", "integer", "numeric",
    ]  # fmt: skip
    assert said["smoker_levels"] == ["0", "1"]
    assert said["stage_levels"] == ["1", "2", "3"]
    assert said["grade_levels"] == ["1", "2", "3", "4"]
    assert said["formula_age"] == ["`age (y)` ~ x + smoker + stage + grade + visits + bmi"]
    assert said["chain_dim"] == [str(len(COLUMNS_OF_DATA)), str(CYCLES), str(M)]
    assert said["chain_rows"] == list(COLUMNS_OF_DATA)
    assert said["iteration"] == [str(CYCLES)]
    assert said["x_trace"] == ["TRUE"] * CYCLES  # not imputed: NaN, as mice

    chains = pd.read_csv(results / "chains.csv")
    age = chains[(chains["target"] == "age (y)") & (chains["chain"] == 1)].sort_values("cycle")
    in_r = pd.read_csv(tmp_path / "age_chain.csv")
    np.testing.assert_allclose(in_r["mean"], age["mean"], rtol=1e-15, atol=0)
    np.testing.assert_allclose(in_r["variance"], age["variance"], rtol=1e-15, atol=0)

    long = pd.read_csv(results / "imputations_long.csv")
    completed = pd.read_csv(tmp_path / "complete.csv")
    assert list(completed.columns) == list(long.columns)
    # R's and Python's parsers of the same text may differ in the last bit
    np.testing.assert_allclose(
        completed.to_numpy(dtype=float), long.to_numpy(dtype=float), rtol=1e-15, atol=0
    )

    plots = sorted(tmp_path.glob("plot*.png"))
    assert len(plots) >= 4 and all(p.stat().st_size > 5000 for p in plots)

    for family, model, reference, renamed in (
        ("linear", "`age (y)` ~ x + smoker + stage", "linear.csv", {"smoker1": "smoker"}),
        ("logistic", "smoker ~ x + `age (y)` + stage", "logistic.csv", {}),
    ):
        fip_pool = _pool(results / "imputations_long.csv", model, family, tmp_path / "p.csv")
        mice_pool = pd.read_csv(tmp_path / reference).rename(
            columns={"2.5 %": "conf.low", "97.5 %": "conf.high"}
        )
        terms = [renamed.get(t, t) for t in mice_pool["term"]]
        assert terms == list(fip_pool["term"]), family
        for name in COLUMNS[1:-1]:
            np.testing.assert_allclose(
                fip_pool[name].to_numpy(dtype=float),
                mice_pool[name].to_numpy(dtype=float),
                rtol=1e-8,
                atol=0,
                err_msg=f"{family}: {name}",
            )


R_CHAINS = r"""
suppressMessages(library(mice))
source("results/fip_mids.R")
imp <- fip_mids("results/imputations_long.csv", chains = "parallel.csv",
                methods = "results/methods.csv")
cat("dim=", paste(dim(imp$chainMean), collapse = "|"), "\n", sep = "")
cat("chains=", paste(dimnames(imp$chainMean)[[3]], collapse = "|"), "\n", sep = "")
cat("value=", sprintf("%.17g", imp$chainMean["age (y)", 4, 3]), "\n", sep = "")
cat("iteration=", imp$iteration, "\n", sep = "")
png("chains.png")
print(plot(imp))
dev.off()
plain <- fip_mids("results/imputations_long.csv")
cat("plain=", paste(unique(plain$method), collapse = ","), "\n", sep = "")
cat("plot=", tryCatch(plot(plain), error = function(e) conditionMessage(e)), "\n", sep = "")
"""


def test_parallel_chains_fill_mice_s_chain_dimension(results: Path, tmp_path: Path) -> None:
    """A chains.csv with M chains (parallel chains, as R mice runs them): chainMean is
    variable x iteration x M, plot() draws them; the long CSV alone gives a mids without chains
    (plot() says so) whose methods mice chose (as.mids), as documented."""
    shutil.copytree(results, tmp_path / "results")
    chains = pd.read_csv(results / "chains.csv")
    single = chains[chains["chain"] == 1]
    cycles = 5
    parts = []
    for chain in range(1, M + 1):
        part = single[single["cycle"] <= cycles].copy()
        part["chain"] = chain
        part["mean"] = part["mean"] + 0.25 * chain
        parts.append(part)
    pd.concat(parts).to_csv(tmp_path / "parallel.csv", index=False)

    said = _said(run_r(R_CHAINS, cwd=tmp_path))

    assert said["dim"] == [str(len(COLUMNS_OF_DATA)), str(cycles), str(M)]
    assert said["chains"] == [f"Chain {c}" for c in range(1, M + 1)]
    row = single[(single["target"] == "age (y)") & (single["cycle"] == 4)]
    assert float(said["value"][0]) == float(row["mean"].iloc[0]) + 0.75
    assert said["iteration"] == [str(cycles)]
    assert (tmp_path / "chains.png").stat().st_size > 5000
    assert said["plain"] == [",pmm"]
    assert said["plot"] == [
        "plot: no chains: fip records them for the chained family (SIMICE, IMICE, AVGMMICE, "
        "CSLMICE) in chains.csv"
    ]


def _readme_r_block() -> str:
    """The indented R lines of the README that start with ``library(mice)``."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("    library(mice)")
    block = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        block.append(line.removeprefix("    "))
    return "\n".join(block) + "\n"


def test_the_readme_s_r_lines_run_as_printed(results: Path, tmp_path: Path) -> None:
    """In a folder holding fip simulate's results/: every line runs, the plots are drawn and
    the pooled table is printed."""
    shutil.copytree(results, tmp_path / "results")
    block = _readme_r_block()
    assert 'fip_mids("results")' in block and "plot(imp)" in block

    printed = run_r(block, cwd=tmp_path)

    assert "smoker1" in printed and "stage3" in printed and '"polyreg"' in printed
    assert (tmp_path / "Rplots.pdf").stat().st_size > 5000


R_ERRORS = r"""
source("results/fip_mids.R")
try_it <- function(...) {
  message <- tryCatch({ fip_mids(...); "no error" }, error = function(e) conditionMessage(e))
  cat(message, "\n", sep = "")
}
try_it("nowhere")
try_it("empty")
try_it("results", methods = "bad_column.csv")
try_it("results", methods = "bad_levels.csv")
try_it("results", chains = "bad_chains.csv")
try_it("results/methods.csv")
try_it("results", methods = "bad_class.csv")
"""


def test_each_input_error_names_its_file_and_column(results: Path, tmp_path: Path) -> None:
    shutil.copytree(results, tmp_path / "results")
    (tmp_path / "empty").mkdir()
    methods = (results / "methods.csv").read_text()
    (tmp_path / "bad_column.csv").write_text(methods.replace("\nbmi,", "\nbmi2,"))
    (tmp_path / "bad_levels.csv").write_text(methods.replace("factor,0;1", "factor,0"))
    (tmp_path / "bad_class.csv").write_text(methods.replace("factor,0;1", "logical,0;1"))
    (tmp_path / "bad_chains.csv").write_text(
        (results / "chains.csv").read_text().replace("\nvisits,", "\nvisit,", 1)
    )

    said = run_r(R_ERRORS, cwd=tmp_path).splitlines()

    assert said[0] == "fip_mids: nowhere: no such file or folder"
    assert said[1] == (
        "fip_mids: empty holds neither imputations_long.csv nor original.csv with "
        "imputation_<m>.csv: not fip's results"
    )
    assert said[2] == "bad_column.csv: column 'bmi2' is not in the data"
    assert said[3].startswith("bad_levels.csv: column 'smoker' holds ")
    assert said[3].endswith(" value(s) outside its levels 0")
    assert said[4] == "bad_chains.csv: target 'visit' is not in the data"
    assert said[5] == "results/methods.csv: no column '.imp', '.id'"
    assert said[6] == (
        "bad_class.csv: column 'smoker': class 'logical' is not numeric, factor or ordered"
    )
