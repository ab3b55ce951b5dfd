"""Benchmark: what each method of the family costs, and how far it lands from the exact one.

Run::

    .venv/bin/python bench/compare.py                # 4 sites x 250,000 rows x 20 columns, M = 5
    .venv/bin/python bench/compare.py --quick        # 20,000 rows per site
    .venv/bin/python bench/compare.py --small-site 200   # the last remote site holds 200 rows

The data is ``bench/engine.py``'s (same model, same missingness), in memory. Two comparisons
run through ``federation.compare.simulate_comparison`` exactly as ``fip simulate --compare``
does, minus files: the one-target family (SIMI, CSLMI, AVGMMI, IMI) on g1 (Gaussian) and on b
(logistic), and the chained family (SIMICE, CSLMICE, AVGMMICE, IMICE) on g1, g2 and b. For
each method it prints the wall time, round trips, bytes sent and received, and per target the
relative distance of the coefficients from the reference's (the L2 norm of the difference over
the reference's; chained methods: the mean of the fits after the burn-in). With
``--small-site N`` the last remote site holds N rows, which shows how each method drifts when
a site is small.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from engine import QUICK_ROWS, Layout, make_tables  # bench/ is on sys.path when run as a script

from federation.compare import methods_to_compare, simulate_comparison
from federation.data import Table
from federation.registry import Registry

SINGLE = ("SIMI", "CSLMI", "AVGMMI", "IMI")
CHAINED = ("SIMICE", "CSLMICE", "AVGMMICE", "IMICE")


def run(
    names: Sequence[str],
    tables: dict[str, Table],
    targets: Sequence[tuple[str, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    registry = Registry.with_builtins()
    methods = methods_to_compare([registry.get(n) for n in names], registry)
    central, *_ = tables.values()
    sites = {name: table for name, table in tables.items() if table is not central}
    comparison, _ = asyncio.run(
        simulate_comparison(
            methods=methods,
            central=central,
            sites=sites,
            targets=targets,
            params={"imputations": args.imputations},
            seed=args.seed,
        )
    )
    return comparison


def print_comparison(title: str, comparison: dict[str, Any]) -> None:
    targets = [t for t in comparison["targets"] if t["methods"]]
    header = ["method", "seconds", "round trips", "bytes sent", "bytes received"]
    header += [f"distance {t['name']}" for t in targets]
    rows = []
    for method in comparison["methods"]:
        name = method["algorithm"]
        if method["status"] != "completed":
            rows.append([name, method["status"], method.get("message", "")[:60]])
            continue
        cells = [
            name,
            f"{method['seconds']:.3f}",
            str(method["round_trips"]),
            f"{method['bytes_sent']:,}",
            f"{method['bytes_received']:,}",
        ]
        for target in targets:
            distance = target["methods"].get(name, {}).get("distance", {}).get("relative")
            cells.append("" if distance is None else f"{distance:.2e}")
        rows.append(cells)
    widths = [
        max(len(row[i]) for row in [header, *rows] if i < len(row)) for i in range(len(header))
    ]
    print(title)
    for row in [header, *rows]:
        print("  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=False)))
    print()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=250_000, help="rows per site (250,000)")
    parser.add_argument("--sites", type=int, default=4, help="participants, central included")
    parser.add_argument("--columns", type=int, default=20, help="columns per site (20)")
    parser.add_argument("--imputations", type=int, default=5, help="M (5)")
    parser.add_argument("--seed", type=int, default=2024, help="data and job seed")
    parser.add_argument("--small-site", type=int, metavar="N", help="rows of the last remote site")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows per site")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = QUICK_ROWS
    if args.sites < 2:
        parser.error("--sites must be at least 2 (central and one remote site)")
    layout = Layout.of(args.columns)
    print(
        f"{args.sites} sites (central + {args.sites - 1} remote) x {args.rows:,} rows x "
        f"{len(layout.columns)} columns, M = {args.imputations}"
        + (f"; the last remote site holds {args.small_site} rows" if args.small_site else ""),
        flush=True,
    )
    for targets, names in (
        ([("g1", "gaussian")], SINGLE),
        ([("b", "logistic")], SINGLE),
        ([("g1", "gaussian"), ("g2", "gaussian"), ("b", "logistic")], CHAINED),
    ):
        tables = make_tables(layout, args.rows, args.sites, args.seed, [t for t, _ in targets])
        if args.small_site:
            last = list(tables)[-1]
            small = tables[last]
            tables[last] = Table(
                label=small.label, columns=small.columns, values=small.values[: args.small_site]
            )
        title = ", ".join(f"{t} ({k})" for t, k in targets)
        print_comparison(f"{title}:", run(names, tables, targets, args))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
