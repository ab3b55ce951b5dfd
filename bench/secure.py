"""Benchmark: what secure aggregation costs, SIMI and SIMICE with and without masking.

Run::

    .venv/bin/python bench/secure.py                      # central + 4 sites x 100,000 rows
    .venv/bin/python bench/secure.py --rows 20000 --repeat 1
    .venv/bin/python bench/secure.py --width 200          # also: masking one p = 200 reply

What it measures:

- Data as ``bench/engine.py`` makes it (covariates x1.., g1, g2 continuous, b binary, about 25%
  of each target missing at random given x1), ``--rows`` rows at central and at each of
  ``--sites`` remote sites, ``--columns`` columns. SIMI imputes g1; SIMICE g1, g2 and b with
  its default cycles; M = ``--imputations``; the same seed masked and not.
- Each job runs in one process (``federation.simulation.simulate``, the real codec, sites in
  worker threads). Seconds are the best of ``--repeat`` runs; round trips and bytes come from
  the job's report (a request counted once per remote site). The largest difference between the
  masked and unmasked fits' coefficients is printed too.
- ``--width P``: the cost of one masked reply of P x P + P + 2 values (a Gaussian fit of P
  columns): a site's encoding and masking against the other sites' seeds, and central's sum
  and decoding of every site's reply, best of 20.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import Layout, make_tables  # noqa: E402

from federation import secure  # noqa: E402
from federation.registry import Registry  # noqa: E402
from federation.replies import Value  # noqa: E402
from federation.runtime import JobResult  # noqa: E402
from federation.simulation import simulate  # noqa: E402

TARGETS = {
    "SIMI": [("g1", "gaussian")],
    "SIMICE": [("g1", "gaussian"), ("g2", "gaussian"), ("b", "logistic")],
}


def run(algorithm: str, tables: dict[str, Any], imputations: int, masked: bool) -> JobResult:
    central, *remote = tables
    return asyncio.run(
        simulate(
            algorithm=Registry.with_builtins().get(algorithm),
            central=tables[central],
            sites={name: tables[name] for name in remote},
            targets=TARGETS[algorithm],
            params={"imputations": imputations, "secure_aggregation": masked},
            seed=1,
        )
    )


def best(repeat: int, job: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = job()
        times.append(time.perf_counter() - start)
    return min(times), result


def jobs(args: argparse.Namespace) -> None:
    layout = Layout.of(args.columns)
    print(
        f"central + {args.sites} sites x {args.rows:,} rows x {args.columns} columns, "
        f"M = {args.imputations}, best of {args.repeat}"
    )
    print(
        f"{'job':<16}{'round trips':>12}{'sent':>14}{'received':>14}{'seconds':>10}  fits vs plain"
    )
    for algorithm in ("SIMI", "SIMICE"):
        targets = [name for name, _ in TARGETS[algorithm]]
        tables = make_tables(layout, args.rows, args.sites + 1, args.seed, targets)
        plain: JobResult | None = None
        for masked in (False, True):
            seconds, result = best(
                args.repeat,
                lambda a=algorithm, t=tables, m=masked: run(a, t, args.imputations, m),
            )
            report = result.report
            gap = ""
            if plain is None:
                plain = result
            else:
                worst = max(
                    float(
                        np.max(
                            np.abs(
                                np.subtract(
                                    list(a["coefficients"].values()),
                                    list(b["coefficients"].values()),
                                )
                            )
                        )
                    )
                    for a, b in zip(plain.report["fits"], report["fits"], strict=True)
                )
                rounds = report["secure_aggregation"]["masked_rounds"]
                gap = f"max |coef diff| {worst:.1e}; {rounds} masked rounds"
            name = f"{algorithm}{' masked' if masked else ''}"
            print(
                f"{name:<16}{report['round_trips']:>12}{report['bytes_sent']:>14,}"
                f"{report['bytes_received']:>14,}{seconds:>10.3f}  {gap}"
            )


def one_reply(width: int, sites: int) -> None:
    rng = np.random.default_rng(0)
    declared = {
        "n": Value("rows"),
        "xtx": Value("float", ("p", "p")),
        "xty": Value("float", ("p",)),
        "yty": Value("float"),
    }
    names = [f"site{k}" for k in range(sites)]
    parties = [secure.SiteMasks(site=name, job_id="bench", sites=sites) for name in names]
    keys = np.stack([secure.key_words(p.public) for p in parties])
    for party in parties:
        party.agree(names, keys)
    replies: list[dict[str, Any]] = []
    for _ in range(sites):
        x = rng.standard_normal((1000, width))
        replies.append(
            {"n": 1000, "xtx": x.T @ x, "xty": x.T @ x[:, 0], "yty": float(x[:, 0] @ x[:, 0])}
        )
    scale = secure.scale_for(
        rows=1000 * sites, magnitude=4, width=width, largest_argument=0, sites=sites
    )
    mask_times, sum_times = [], []
    for round_number in range(20):
        start = time.perf_counter()
        masked = [
            p.mask("gaussian_stats", r, declared, round_number=round_number, scale=scale)
            for p, r in zip(parties, replies, strict=True)
        ]
        mask_times.append((time.perf_counter() - start) / sites)
        start = time.perf_counter()
        total = secure.unmask_sum(masked, declared, scale)
        sum_times.append(time.perf_counter() - start)
    exact = np.sum([r["xtx"] for r in replies], axis=0)
    error = float(np.max(np.abs(total["xtx"] - exact) / np.maximum(1.0, np.abs(exact))))
    print(
        f"one masked reply of p = {width} ({width * width + width + 2:,} values), {sites} sites: "
        f"a site masks it in {min(mask_times) * 1e3:.1f} ms, central sums and decodes all in "
        f"{min(sum_times) * 1e3:.1f} ms; max relative error of the sum {error:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows at central and at each site"
    )
    parser.add_argument("--sites", type=int, default=4, help="remote sites (at least 2)")
    parser.add_argument("--columns", type=int, default=10)
    parser.add_argument("--imputations", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--width", type=int, default=0, help="also time one masked reply of this p")
    args = parser.parse_args()
    if args.sites < 2:
        raise SystemExit("--sites: secure aggregation needs at least two remote sites")
    jobs(args)
    if args.width:
        one_reply(args.width, args.sites)


if __name__ == "__main__":
    main()
