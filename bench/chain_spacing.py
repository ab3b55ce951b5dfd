"""Lag-1 autocorrelation of consecutive SIMICE datasets in the hard design (issue #12).

Two incomplete columns y1, y2 correlated 0.95 given x, missing together (MAR on x), at central
and two sites of --rows rows each. One job per replication with M datasets from one chain, after
--before cycles and then one every --between cycles; per dataset, the estimate of the analysis
(the OLS slope of y1 on x at central, and the mean of y1); printed: the lag-1 autocorrelation of
that series over consecutive datasets, averaged over replications, and the last trace split
R-hat of the chain. Usage:

    .venv/bin/python bench/chain_spacing.py --between 2 10 --imputations 30 --replications 5
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np

from federation.data import Table
from federation.registry import Registry
from federation.simulation import simulate


def hard_design(seed: int, rows: int) -> dict[str, Table]:
    rng = np.random.default_rng(seed)
    tables = {}
    for name in ("central", "a", "b"):
        x = rng.normal(size=rows)
        e = rng.multivariate_normal([0, 0], [[1, 0.95], [0.95, 1]], size=rows)
        values = np.column_stack([x, x + e[:, 0], x + e[:, 1]])
        values[rng.random(rows) < 1 / (1 + np.exp(-(2 * x - 0.5))), 1:] = np.nan
        tables[name] = Table(label=name, columns=("x", "y1", "y2"), values=values)
    return tables


def lag1(series: np.ndarray) -> float:
    centred = series - series.mean()
    return float(np.sum(centred[1:] * centred[:-1]) / np.sum(centred**2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--between", type=int, nargs="+", default=[2, 10])
    parser.add_argument("--before", type=int, default=5)
    parser.add_argument("--imputations", type=int, default=30)
    parser.add_argument("--replications", type=int, default=5)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    algorithm = Registry.with_builtins().get("SIMICE")
    for between in args.between:
        slopes, means = [], []
        for rep in range(args.replications):
            tables = hard_design(100 + rep, args.rows)
            result = asyncio.run(
                simulate(
                    algorithm=algorithm,
                    central=tables["central"],
                    sites={"a": tables["a"], "b": tables["b"]},
                    targets=[("y1", "gaussian"), ("y2", "gaussian")],
                    params={
                        "imputations": args.imputations,
                        "iteration_before_first_imputation": args.before,
                        "iteration_between_imputations": between,
                    },
                    seed=rep + 1,
                )
            )
            slope, mean = [], []
            for m in range(1, args.imputations + 1):
                data = result.dataset(m)
                slope.append(np.polyfit(data[:, 0], data[:, 1], 1)[0])
                mean.append(data[:, 1].mean())
            slopes.append(lag1(np.array(slope)))
            means.append(lag1(np.array(mean)))
        print(
            f"before={args.before} between={between} M={args.imputations} "
            f"rows/site={args.rows} replications={args.replications}: lag-1 autocorrelation "
            f"of consecutive datasets, slope of y1 on x {np.mean(slopes):.2f} "
            f"(per replication {', '.join(f'{v:.2f}' for v in slopes)}), "
            f"mean of y1 {np.mean(means):.2f}"
        )


if __name__ == "__main__":
    main()
