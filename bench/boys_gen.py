"""Benchmark: why fip's imputed Tanner stages (``gen``) on mice's ``boys`` differ from stock
mice's, and that they agree once mice's polr fits the same model.

Run (needs R with mice; about 2 minutes per replication on a quiet machine)::

    .venv/bin/python bench/boys_gen.py                    # 5 replications
    .venv/bin/python bench/boys_gen.py --replications 2
    .venv/bin/python bench/boys_gen.py --undrawn          # also fip with ordinal's optimum

Everything runs on the pooled 748 rows (no federation: IMICE at central alone, which SIMICE
equals). Three imputers, each over the replications (seed r, M = 5 chains of 5 cycles, mice's
default methods; fip: pmm, ordinal for gen and phb, categorical for reg):

- ``mice``: stock mice, whose polr always adds White, Daniel and Royston's pseudo-rows;
- ``mice, polr w/o pseudo-rows``: the same with polr fitted on the observed rows alone
  (``tests/test_boys_mice.py``'s R method), as fip's contract fits when nothing separates;
- ``fip IMICE``; with ``--undrawn`` also fip imputing gen and phb from the fitted ordinal
  model's optimum instead of a posterior draw of its parameters, as mice's polr does (an
  ablation: the contract draws).

For each it prints the mean imputed ``gen`` over the 503 rows without it, with its Monte Carlo
standard error over the replications, and the share of imputed stages G2 or above among the
boys younger than 2 and than 8 (``gen`` is observed only from age 7.8; 322 of the rows to
impute are younger). Before that, one step on one completed dataset (stock mice's, seed 1):
the expected imputed ``gen`` (the mean over the rows to impute of sum_k k P(gen = k)) from
``MASS::polr`` without and with mice's pseudo-rows, and from fip's ordinal fit, which equals
polr's without them.
"""

from __future__ import annotations

import argparse
import csv
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from algorithms import _newton  # noqa: E402
from algorithms._stats import Fit  # noqa: E402
from algorithms.methods.ordinal import Ordinal, proportional_odds  # noqa: E402
from tests.helpers import run, table  # noqa: E402
from tests.test_boys_mice import LEVELS, POLR_WITHOUT_PSEUDO_ROWS, TARGETS  # noqa: E402

AGES = (2, 8)
GEN = np.arange(1.0, 6.0)

R_SCRIPT = """
{methods}
b <- boys
codes <- function(d) data.frame(age = d$age, hgt = d$hgt, wgt = d$wgt, bmi = d$bmi, hc = d$hc,
                                gen = as.integer(d$gen), phb = as.integer(d$phb), tv = d$tv,
                                reg = as.integer(d$reg))
write.csv(codes(b), "boys.csv", row.names = FALSE, na = "")
missing <- is.na(b$gen)
summarise <- function(imp) sapply(seq_len(imp$m), function(m) {{
  gen <- as.integer(complete(imp, m)$gen)
  c(mean(gen[missing]), sapply(c({ages}), function(a) mean(gen[missing & b$age < a] >= 2)))
}})
polrmle <- make.method(b)
polrmle[c("gen", "phb")] <- "polrmle"
res <- NULL
for (r in 1:{replications}) {{
  stock <- rowMeans(summarise(mice(b, m = 5, maxit = 5, printFlag = FALSE, seed = r)))
  plain <- rowMeans(summarise(mice(b, m = 5, maxit = 5, printFlag = FALSE, seed = r,
                                   method = polrmle)))
  res <- rbind(res, c(stock, plain))
}}
write.csv(res, "mice.csv", row.names = FALSE)

# One step: polr for gen on one completed dataset, without and with mice's pseudo-rows.
d <- complete(mice(b, m = 1, maxit = 5, printFlag = FALSE, seed = 1), 1)
write.csv(codes(d), "completed.csv", row.names = FALSE)
x <- model.matrix(~ age + hgt + wgt + bmi + hc + phb + tv + reg, data = d)[, -1]
expected <- function(a) {{
  frame <- data.frame(y = a$y, a$x)
  fit <- suppressWarnings(polr(y ~ ., data = frame[a$ry, ], weights = a$w[a$ry]))
  mean(predict(fit, frame[a$wy, ], type = "probs") %*% 1:5)
}}
plain <- list(y = d$gen, x = x, ry = !missing, wy = missing, w = rep(1, nrow(d)))
write.csv(data.frame(without = expected(plain),
                     with = expected(mice:::augment(d$gen, !missing, x, missing))),
          "step.csv", row.names = FALSE)
"""


def _read(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    values = [[float(v) if v not in ("", "NA") else np.nan for v in r] for r in rows[1:]]
    return rows[0], np.array(values)


def _fip_step(completed: np.ndarray, columns: list[str], observed: np.ndarray) -> float:
    """fip's ordinal fit of gen on the completed rows where gen was observed (predictors as
    fip's default design: every other column, phb and reg as treatment dummies); the expected
    imputed gen over the others."""
    col = {name: completed[:, j] for j, name in enumerate(columns)}
    parts = [col[name] for name in ("age", "hgt", "wgt", "bmi", "hc")]
    parts += [(col["phb"] == k).astype(float) for k in range(2, 7)]
    parts.append(col["tv"])
    parts += [(col["reg"] == k).astype(float) for k in range(2, 6)]
    x = np.column_stack(parts)
    z = np.column_stack([x, col["gen"], np.ones(x.shape[0])])
    names = [f"x{j}" for j in range(x.shape[1])] + ["(intercept)"]
    fit = _newton.fit_own(
        _newton.ORDINAL,
        z,
        observed,
        x.shape[1],
        ridge=1e-5,
        max_iter=100,
        names=names,
        target="gen",
        levels=tuple(GEN),
    )
    slopes = x.shape[1]
    level = proportional_odds(x[~observed] @ fit.beta[:slopes], fit.beta[slopes:])
    return float((level @ GEN).mean())


def _fip(boys: np.ndarray, columns: list[str], replications: int) -> np.ndarray:
    gen, age = columns.index("gen"), columns.index("age")
    missing = np.isnan(boys[:, gen])
    out = []
    for seed in range(1, replications + 1):
        result = run(
            "IMICE",
            table("central", columns, boys),
            {},
            TARGETS,
            seed=seed,
            levels=LEVELS,
            imputations=5,
            iteration_before_first_imputation=5,
        )
        per_m = []
        for m in range(1, 6):
            imputed = result.dataset(m)[:, gen]
            shares = [np.mean(imputed[missing & (boys[:, age] < a)] >= 2) for a in AGES]
            per_m.append([imputed[missing].mean(), *shares])
        out.append(np.mean(per_m, axis=0))
    return np.array(out)


def _optimum(self: Ordinal, fit: Fit, rng: np.random.Generator, *, target: str) -> dict[str, Any]:
    """The ablation's ordinal "draw": the fitted optimum itself."""
    return {"alpha": fit.beta.copy()}


def _line(label: str, values: np.ndarray) -> str:
    mean = values.mean(axis=0)
    se = values[:, 0].std(ddof=1) / np.sqrt(values.shape[0]) if values.shape[0] > 1 else np.nan
    shares = "  ".join(f"{s:6.3f}" for s in mean[1:])
    return f"{label:30s} {mean[0]:8.4f} {se:8.4f}  {shares}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=5)
    parser.add_argument(
        "--undrawn",
        action="store_true",
        help="also run fip with the ordinal parameters at their optimum (mice's polr's way)",
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the short chains' R-hat warnings, once per job
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        script = R_SCRIPT.format(
            methods=POLR_WITHOUT_PSEUDO_ROWS,
            ages=", ".join(map(str, AGES)),
            replications=args.replications,
        )
        (work / "bench.R").write_text(script, encoding="utf-8")
        subprocess.run(["Rscript", "--vanilla", "bench.R"], cwd=work, check=True)
        columns, boys = _read(work / "boys.csv")
        _, mice = _read(work / "mice.csv")
        _, step = _read(work / "step.csv")
        completed_columns, completed = _read(work / "completed.csv")
    observed = ~np.isnan(boys[:, columns.index("gen")])
    fip_step = _fip_step(completed, completed_columns, observed)
    print("one step, gen on stock mice's completed dataset (seed 1): expected imputed gen")
    print(f"  MASS::polr without pseudo-rows  {step[0, 0]:.4f}")
    print(f"  MASS::polr with mice's pseudo-rows {step[0, 1]:.4f}")
    print(f"  fip ordinal fit                 {fip_step:.4f}")
    fip = _fip(boys, columns, args.replications)
    under = "  ".join(f"G2+ <{a}y" for a in AGES)
    print(f"\n{'imputer':30s} {'gen':>8s} {'MC SE':>8s}  {under}")
    width = 1 + len(AGES)
    print(_line("mice", mice[:, :width]))
    print(_line("mice, polr w/o pseudo-rows", mice[:, width:]))
    print(_line("fip IMICE", fip))
    if args.undrawn:
        with mock.patch.object(Ordinal, "draw", _optimum):
            undrawn = _fip(boys, columns, args.replications)
        print(_line("fip IMICE, ordinal undrawn", undrawn))


if __name__ == "__main__":
    main()
