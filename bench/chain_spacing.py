"""Single chain or parallel chains in the hard design of issue #12: how independent the datasets
are, how far the pooled estimate is off, and what it costs.

Two incomplete columns y1, y2 correlated 0.95 given x, missing together (MAR on x), at central
and two sites of --rows rows each. One SIMICE job per replication and setting:

- ``single:B:S``: one chain, dataset 1 after B cycles, then one every S cycles (MIDN's way;
  the old default was single:5:2);
- ``parallel:B``: M independent chains of B cycles each, one dataset each (mice's way).

Per job, the estimates of two analyses on each of central's M datasets (the OLS slope of y1 on
x, and the mean of y1). Printed per setting, averaged over replications: the lag-1
autocorrelation of those estimates over consecutive datasets; the pooled mean of y1 minus its
value on central's complete data (before the cells were removed), in units of Rubin's total
standard error (``bias/SE``), and the root mean square of that; the rate at which the flag of
an unsettled target fires; the round trips, the bytes central received and the seconds of a
job, with their ratio to the first setting's. Usage:

    .venv/bin/python bench/chain_spacing.py --settings single:5:2 single:5:20 parallel:5 \\
        parallel:13 --imputations 5 --replications 20
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

from federation.data import Table
from federation.registry import Registry
from federation.simulation import simulate


def hard_design(seed: int, rows: int) -> tuple[dict[str, Table], np.ndarray]:
    """The three tables, and central's complete values (before the cells were removed)."""
    rng = np.random.default_rng(seed)
    tables, complete = {}, np.empty(0)
    for name in ("central", "a", "b"):
        x = rng.normal(size=rows)
        e = rng.multivariate_normal([0, 0], [[1, 0.95], [0.95, 1]], size=rows)
        values = np.column_stack([x, x + e[:, 0], x + e[:, 1]])
        if name == "central":
            complete = values.copy()
        values[rng.random(rows) < 1 / (1 + np.exp(-(2 * x - 0.5))), 1:] = np.nan
        tables[name] = Table(label=name, columns=("x", "y1", "y2"), values=values)
    return tables, complete


def lag1(series: np.ndarray) -> float:
    centred = series - series.mean()
    return float(np.sum(centred[1:] * centred[:-1]) / np.sum(centred**2))


def params_of(setting: str, imputations: int) -> dict[str, object]:
    kind, *numbers = setting.split(":")
    if kind == "single" and len(numbers) == 2:
        before, between = map(int, numbers)
        return {
            "chains": "single",
            "imputations": imputations,
            "iteration_before_first_imputation": before,
            "iteration_between_imputations": between,
        }
    if kind == "parallel" and len(numbers) == 1:
        return {
            "chains": "parallel",
            "imputations": imputations,
            "iteration_before_first_imputation": int(numbers[0]),
        }
    raise SystemExit(f"--settings: {setting!r} is neither single:B:S nor parallel:B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings", nargs="+", default=["single:5:2", "single:5:20", "parallel:5", "parallel:13"]
    )
    parser.add_argument("--imputations", type=int, default=5)
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--rows", type=int, default=300)
    args = parser.parse_args()
    algorithm = Registry.with_builtins().get("SIMICE")
    baseline: dict[str, float] = {}
    for setting in args.settings:
        params = params_of(setting, args.imputations)
        slopes, means, biases, flagged = [], [], [], []
        cost = {"round_trips": 0.0, "bytes_received": 0.0, "seconds": 0.0}
        for rep in range(args.replications):
            tables, complete = hard_design(100 + rep, args.rows)
            started = time.perf_counter()
            result = asyncio.run(
                simulate(
                    algorithm=algorithm,
                    central=tables["central"],
                    sites={"a": tables["a"], "b": tables["b"]},
                    targets=[("y1", "gaussian"), ("y2", "gaussian")],
                    params=params,
                    seed=rep + 1,
                )
            )
            cost["seconds"] += time.perf_counter() - started
            cost["round_trips"] += result.report["round_trips"]
            cost["bytes_received"] += result.report["bytes_received"]
            slope, mean, within = [], [], []
            for m in range(1, args.imputations + 1):
                data = result.dataset(m)
                slope.append(np.polyfit(data[:, 0], data[:, 1], 1)[0])
                mean.append(data[:, 1].mean())
                within.append(data[:, 1].var(ddof=1) / data.shape[0])
            slopes.append(lag1(np.array(slope)))
            means.append(lag1(np.array(mean)))
            m_count = args.imputations
            total = np.mean(within) + (1 + 1 / m_count) * np.var(mean, ddof=1)
            biases.append((np.mean(mean) - complete[:, 1].mean()) / np.sqrt(total))
            flagged.append(any("may not have settled" in w for w in result.report["warnings"]))
        cost = {k: v / args.replications for k, v in cost.items()}
        if not baseline:
            baseline = dict(cost)
        bias = np.array(biases)
        print(
            f"{setting:>14} M={args.imputations} rows/site={args.rows} "
            f"replications={args.replications}: lag-1 slope {np.mean(slopes):+.2f}, "
            f"lag-1 mean {np.mean(means):+.2f}; bias/SE of the pooled mean of y1 "
            f"{bias.mean():+.2f} (RMS {np.sqrt(np.mean(bias**2)):.2f}); flagged "
            f"{np.mean(flagged):.0%}; per job {cost['round_trips']:.0f} round trips "
            f"(x{cost['round_trips'] / baseline['round_trips']:.2f}), "
            f"{cost['bytes_received'] / 1024:.0f} KiB received "
            f"(x{cost['bytes_received'] / baseline['bytes_received']:.2f}), "
            f"{cost['seconds']:.3f} s (x{cost['seconds'] / baseline['seconds']:.2f})"
        )


if __name__ == "__main__":
    main()
