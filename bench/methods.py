"""Benchmark: the maths of the categorical, ordinal and Poisson fits and of PMM, without a network.

Run::

    .venv/bin/python bench/methods.py                  # 4 sites x 100,000 rows, 10 predictors
    .venv/bin/python bench/methods.py --rows 20000     # a smoke run

What it measures, for each family (categorical and ordinal with 5 levels): data drawn in
memory from the family's model (not timed), split into ``--sites`` tables of ``--rows`` rows;
the pooled Newton fit from a cold start with the default ridge, each evaluation computing every
site's statistics in turn (``_glm.family_stats``; the first also ``moments``), as a federated run
would over the network minus the transport. It prints the evaluations asked (= round trips of
a federated fit), the Newton iterations, the seconds of the whole fit, and the seconds of one
site's statistics. PMM: ``_pmm.match`` of ``--rows`` missing rows against ``--rows`` observed
rows with 5 donors (one site's imputation of one target). Times are the best of ``--repeat``.

With ``--job``: a whole SIMICE job through ``federation.simulation.simulate`` (the real codec and
in-memory transport, as ``fip simulate`` minus files), central plus ``--sites - 1`` remote sites
of ``--rows`` rows each: ``--predictors`` complete covariates, a categorical target of 5 levels
and a pmm target, each missing in about 25% of rows; default cycles (5 before the first
imputation, 2 between), M = 5. It prints the round trips, bytes and seconds from the report::

    .venv/bin/python bench/methods.py --job            # 4 sites x 100,000 rows
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from algorithms import _glm, _newton, _pmm
from algorithms._stats import Fit, augment

LEVELS = 5


def simulate(family: str, rows: int, predictors: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(rows, predictors))
    beta = rng.normal(scale=0.3, size=predictors)
    if family == "categorical":
        eta = x @ rng.normal(scale=0.3, size=(predictors, LEVELS - 1))
        cumulative = np.cumsum(_glm.softmax_with_reference(eta), axis=1)
        y = (cumulative[:, :-1] < rng.random(rows)[:, None]).sum(axis=1)
    elif family == "ordinal":
        y = np.digitize(x @ beta + rng.logistic(size=rows), [-1.5, -0.5, 0.5, 1.5])
    else:
        y = rng.poisson(np.exp(0.5 + x @ beta / 2.0))
    return augment(np.column_stack([x, y.astype(np.float64)]))


def fit(family: str, sites: list[np.ndarray]) -> tuple[Fit, int]:
    column = sites[0].shape[1] - 2
    kind = _newton.Family(family)
    levels = tuple(float(v) for v in range(LEVELS if family != "poisson" else 0))
    asked = 0

    async def evaluate(theta: np.ndarray, first: bool) -> Mapping[str, Mapping[str, Any]]:
        nonlocal asked
        asked += 1
        return {
            str(k): kind.stats(z, None, column, theta, levels=levels, moments=first)
            for k, z in enumerate(sites)
        }

    names = [*(f"c{j}" for j in range(column)), "(intercept)"]
    result = asyncio.run(
        _newton.fit_pooled(
            kind,
            evaluate,
            start=None,
            ridge=1e-5,
            max_iter=100,
            names=names,
            target="y",
            levels=levels,
        )
    )
    return result, asked


def best(repeat: int, work: Any) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--predictors", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--job", action="store_true", help="a SIMICE job: categorical + pmm")
    args = parser.parse_args()
    if args.job:
        job(args)
        return
    rng = np.random.default_rng(0)
    print(f"{args.sites} sites x {args.rows} rows, {args.predictors} predictors")
    for family in _glm.FAMILIES:
        sites = [simulate(family, args.rows, args.predictors, rng) for _ in range(args.sites)]
        result, asked = fit(family, sites)
        seconds = best(args.repeat, lambda sites=sites, family=family: fit(family, sites))
        z = sites[0]
        cols = _glm.design(z, args.predictors, family)
        levels = LEVELS if family != "poisson" else 0
        one = best(
            args.repeat,
            lambda z=z, cols=cols, family=family, levels=levels, theta=result.beta: (
                _glm.family_stats(family, z, None, args.predictors, theta, cols, levels=levels)
            ),
        )
        print(
            f"{family:12s} evaluations (round trips) {asked:3d}  iterations {result.iterations:3d}"
            f"  converged {result.converged}  fit {seconds:7.3f} s"
            f"  one site's statistics {one:6.3f} s"
        )
    observed = rng.normal(size=args.rows)
    missing = rng.normal(size=args.rows)
    seconds = best(
        args.repeat, lambda: _pmm.match(observed, missing, donors=5, rng=np.random.default_rng(1))
    )
    print(f"pmm match {args.rows} missing against {args.rows} observed, 5 donors: {seconds:.3f} s")


def job(args: argparse.Namespace) -> None:
    """A SIMICE job with a categorical and a pmm target (see the module's docstring)."""
    from federation.data import Table
    from federation.registry import Registry
    from federation.simulation import simulate as run_job

    rng = np.random.default_rng(1)
    columns = (*(f"x{j + 1}" for j in range(args.predictors)), "cat", "cont")

    def values(rows: int) -> np.ndarray:
        x = rng.normal(size=(rows, args.predictors))
        eta = x @ rng.normal(scale=0.3, size=(args.predictors, LEVELS - 1))
        cumulative = np.cumsum(_glm.softmax_with_reference(eta), axis=1)
        cat = 1.0 + (cumulative[:, :-1] < rng.random(rows)[:, None]).sum(axis=1)
        cont = np.exp(x[:, 0] * 0.3 + rng.normal(size=rows) * 0.5)
        data = np.column_stack([x, cat, cont])
        for column in (-2, -1):
            data[rng.random(rows) < 0.25, column] = np.nan
        return data

    central = Table(label="central", columns=columns, values=values(args.rows))
    sites = {
        f"site{k}": Table(label=f"site{k}", columns=columns, values=values(args.rows))
        for k in range(1, args.sites)
    }
    start = time.perf_counter()
    result = asyncio.run(
        run_job(
            algorithm=Registry.with_builtins().get("SIMICE"),
            central=central,
            sites=sites,
            targets=[("cat", "categorical"), ("cont", "pmm")],
            params={"imputations": 5},
            seed=7,
        )
    )
    seconds = time.perf_counter() - start
    report = result.report
    fits = [f for f in report["fits"] if f["target"] == "cat"]
    print(
        f"SIMICE, {args.sites} sites x {args.rows} rows, {args.predictors} predictors, "
        f"categorical (5 levels) + pmm, M = 5, {len(fits)} cycles"
    )
    print(
        f"round trips {report['round_trips']}  sent {report['bytes_sent'] / 2**20:.1f} MiB  "
        f"received {report['bytes_received'] / 2**20:.1f} MiB  "
        f"Newton iterations per categorical fit {[f['iterations'] for f in fits]}  "
        f"seconds {seconds:.1f} (report: {report['seconds']:.1f})"
    )


if __name__ == "__main__":
    main()
