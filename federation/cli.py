"""The ``fip`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from federation import __version__
from federation.errors import FipError, InputError

if TYPE_CHECKING:
    from federation.data import Table
    from federation.job import JobEvent
    from federation.registry import Algorithm

SIMULATE_EXAMPLE = """\
examples:
  fip simulate --algorithm SIMI --central central.csv --site a.csv --site b.csv \\
      --target bmi:gaussian --imputations 20 --seed 7 --out results/
  fip simulate --compare SIMI,CSLMI,AVGMMI,IMI --central central.csv --site a.csv \\
      --site b.csv --target sbp:gaussian --seed 7 --out comparison/

Writes results/imputations.zip (one CSV per imputation, then original.csv, methods.csv,
chains.csv and fip_mids.R), results/imputations_long.csv (R mice's long layout: .imp 0 is the
original, .id the row), results/report.json, results/methods.csv (each target's method, mice's
name for it, and how R holds it) and results/fip_mids.R; for the chained family (SIMICE, IMICE,
AVGMMICE, CSLMICE) also results/chains.csv (target, chain, cycle, mean, variance of central's
imputed cells: mice's chainMean and chainVar). The chained family runs M independent chains,
one per dataset (--param chains=single: one chain, a dataset every
iteration_between_imputations cycles); report.json gives each target's R-hat over the chains.
In R, source("results/fip_mids.R"); imp <- fip_mids("results") gives a mice mids: plot(imp),
densityplot(imp), imp$method and pool(with(imp, lm(...))) work, whatever the column names.
With --compare: comparison/comparison.json and comparison.txt (the table also printed), and
comparison/<METHOD>/ with each method's output files. A method that fails is reported with
its reason, the others still run, and the exit status is 1.
Cells that are empty, NA, NaN, nan, N/A or NULL are missing.
"""

POOL_EXAMPLE = """\
example:
  fip pool --long results/imputations_long.csv --model "y ~ x1 + x2" --out pooled.csv
  fip pool --long results/imputations_long.csv --model "smoker ~ bmi + factor(site)" \\
      --family logistic

Prints the pooled table (estimate, std.error, statistic, df, p.value, conf.low, conf.high,
fmi) and, with --out, writes every column of mice's pool() and summary(pool(fit),
conf.int = TRUE) as CSV: term, estimate, std.error, statistic, df, p.value, conf.low,
conf.high, ubar, b, t, dfcom, riv, lambda, fmi, m.
"""


def main(argv: Sequence[str] | None = None) -> int:
    # The engine's log lines are for the portals' logs; here warnings are printed once, below.
    engine = logging.getLogger("federation")
    if not engine.handlers:
        engine.addHandler(logging.NullHandler())
    args = _parser(argv).parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except FipError as error:
        print(f"fip: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # writing the outputs: a full disk, a path that is a file, ...
        where = f"{error.filename}: " if error.filename else ""
        print(f"fip: error: {where}{error.strerror or error}; nothing was written", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fip: interrupted; nothing was written", file=sys.stderr)
        return 130


COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": (
        "federation.cli:configure_simulate",
        "run a whole job in this process (central and sites in memory)",
    ),
    "algorithms": (
        "federation.cli:configure_algorithms",
        "list the built-in algorithms, or check a folder holding a new one",
    ),
    "pool": (
        "federation.cli:configure_pool",
        "fit a model on each imputed dataset of a long CSV and pool by Rubin's rules",
    ),
    "demo-data": (
        "federation.cli:configure_demo_data",
        "write three demo hospital CSVs (central, north, south)",
    ),
    "central": (
        "portal_central.cli:configure",
        "run the central portal, or manage it (create-admin, unlock, db upgrade)",
    ),
    "site": (
        "portal_site.cli:configure",
        "run the site portal: a local browser UI and the worker that answers central",
    ),
    "demo": (
        "portal_central.demo:configure",
        "run central and two demo sites locally, with demo data and accounts",
    ),
}
"""Every command: where its arguments are declared (``module:function``, given the command's
parser) and its line in ``fip --help``. Only the command being run is imported and declared,
so ``fip simulate`` loads neither portal nor any web framework, and ``fip --help`` no engine."""


def _parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv`` (default: this process's arguments): every command listed, and
    the one that ``argv`` names declared in full."""
    words = sys.argv[1:] if argv is None else list(argv)
    chosen = next((w for w in words if not w.startswith("-")), None)
    parser = argparse.ArgumentParser(
        prog="fip",
        description="Federated Imputation Portal: multiple imputation across sites that share "
        "aggregates, never rows.",
    )
    parser.add_argument("--version", action="version", version=f"fip {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    for name, (where, help_line) in COMMANDS.items():
        command = commands.add_parser(name, help=help_line)
        if name == chosen:
            if name == "simulate":
                _one_blas_thread()
            module, function = where.split(":")
            configure: Callable[[argparse.ArgumentParser], None] = getattr(
                importlib.import_module(module), function
            )
            configure(command)
    return parser


BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""The variables that set how many threads numpy's BLAS runs (OpenBLAS reads them in this
order; MKL its own)."""


def _one_blas_thread() -> None:
    """Have numpy's BLAS run one thread, unless the user set a count: ``fip simulate`` answers
    every site in a thread of its own, at once, and BLAS threads on top of those only compete
    for the cores (bench/engine.py --whole: 2 to 3 times the CPU time of a SIMICE job on 2
    cores). BLAS reads the variables when numpy is first imported, so before the engine is."""
    if not any(name in os.environ for name in BLAS_THREADS):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"


def configure_simulate(sim: argparse.ArgumentParser) -> None:
    from algorithms import methods

    sim.description = (
        "Run a whole federated job in one process, with every site's file read "
        "locally and messages passed in memory through the real wire codec. The sites answer "
        "in parallel threads, so numpy's BLAS runs one thread each unless "
        "OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS, MKL_NUM_THREADS) is set."
    )
    sim.epilog = SIMULATE_EXAMPLE
    sim.formatter_class = argparse.RawDescriptionHelpFormatter
    which = sim.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--algorithm",
        metavar="NAME|FOLDER",
        help="a built-in algorithm (SIMI, SIMICE, IMI, IMICE, AVGMMI, AVGMMICE, CSLMI, CSLMICE) "
        "or a folder with <Name>Central.py, <Name>Remote.py and params.json",
    )
    which.add_argument(
        "--compare",
        metavar="NAME,NAME,...",
        help="run several methods on the same data and seed, and report them side by side "
        "against the pooled-exact one (SIMI, or SIMICE for chained equations, added when not "
        "named): coefficients, distance, round trips, bytes and time",
    )
    sim.add_argument(
        "--central",
        required=True,
        type=Path,
        metavar="CSV",
        help="central's data: the rows to impute",
    )
    sim.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="[NAME=]CSV",
        help="a remote site's data (repeatable); the name defaults to the file stem",
    )
    sim.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="COLUMN:METHOD",
        help="a column to impute, by name or 1-based index, with its method (repeatable): "
        + "; ".join(f"{m.name} for {m.when}" for m in methods.METHODS.values()),
    )
    sim.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="COLUMN:ROLE",
        help="the role of a column that is not a target (repeatable): predictor (numeric, the "
        "default), factor (a categorical predictor, text or integer codes, expanded to one 0/1 "
        "column per level but the first) or carried (IDs, dates, free text: never modelled, "
        "ignored at sites, written back unchanged)",
    )
    sim.add_argument(
        "--levels",
        action="append",
        default=[],
        metavar="COLUMN=a,b,c",
        help="the levels of a factor or of a categorical, ordinal or text target, in order "
        "(the first is the reference), as the data writes them: integer codes or text "
        "(repeatable); default: the values central observes in the column, sorted. A site "
        "whose column holds another value refuses",
    )
    sim.add_argument(
        "--predictors",
        action="append",
        default=[],
        metavar="TARGET=col1,col2",
        help="the columns a target's model uses (repeatable; mice's predictorMatrix); default: "
        "every predictor and factor column and every other target",
    )
    sim.add_argument("--imputations", type=int, metavar="M", help="number of imputed datasets")
    sim.add_argument("--seed", type=int, help="random seed (drawn and reported when omitted)")
    sim.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an algorithm parameter, e.g. ridge=0.01 (repeatable)",
    )
    sim.add_argument(
        "--analysis",
        metavar="FORMULA",
        help='an analysis model, e.g. "y ~ x1 + x2", fitted on each imputed dataset and '
        "pooled by Rubin's rules into report.json under 'analysis' (as fip pool)",
    )
    sim.add_argument(
        "--analysis-family",
        choices=("linear", "logistic"),
        default="linear",
        help="the analysis model's family (default: linear)",
    )
    sim.add_argument(
        "--plots",
        action="store_true",
        help="also write each target's plausibility plot, observed against imputed cells at "
        "central (plausibility_<column>.svg), and its numbers (plausibility_<column>.csv), "
        "and for the chained family its trace plot and numbers (trace_<column>.svg, .csv) "
        "into --out (each method's folder with --compare)",
    )
    sim.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for imputations.zip, imputations_long.csv, report.json, methods.csv, "
        "fip_mids.R and, for the chained family, chains.csv (with "
        "--compare: comparison.json, comparison.txt and one such folder per method)",
    )
    sim.set_defaults(handler=_simulate)


def configure_algorithms(algos: argparse.ArgumentParser) -> None:
    algos.description = (
        "List the built-in algorithms. With --check, validate an algorithm folder "
        "and run it once on synthetic data, as central does before it accepts an upload."
    )
    algos.add_argument("--check", type=Path, metavar="FOLDER", help="an algorithm folder to check")
    algos.set_defaults(handler=_algorithms)


def configure_pool(pool: argparse.ArgumentParser) -> None:
    pool.description = (
        "Fit a linear or logistic model on each imputed dataset of a long CSV "
        "(mice's layout, as fip writes imputations_long.csv) and pool the fits by Rubin's rules "
        "with Barnard-Rubin degrees of freedom, as R mice's pool() and summary(pool(fit), "
        "conf.int = TRUE)."
    )
    pool.epilog = POOL_EXAMPLE
    pool.formatter_class = argparse.RawDescriptionHelpFormatter
    pool.add_argument(
        "--long",
        required=True,
        type=Path,
        metavar="CSV",
        help="the long CSV: .imp (0 = the original, 1..M the imputed datasets), .id, columns",
    )
    pool.add_argument(
        "--model",
        required=True,
        metavar="FORMULA",
        help='the analysis model as in R, e.g. "y ~ x1 + x2"; `backquote` names that are '
        "not plain (`age (y)`); text columns and factor(column) become treatment dummies",
    )
    pool.add_argument(
        "--family", choices=("linear", "logistic"), default="linear", help="default: linear"
    )
    pool.add_argument(
        "--factor",
        action="append",
        default=[],
        metavar="COLUMN",
        help="treat a numeric column as categorical (repeatable), like factor(COLUMN)",
    )
    pool.add_argument("--out", type=Path, metavar="CSV", help="write the pooled table here as CSV")
    pool.set_defaults(handler=_pool)


def configure_demo_data(demo: argparse.ArgumentParser) -> None:
    demo.description = "Write demo data: three hospitals' tables with missing bmi and smoker."
    demo.add_argument("--out", required=True, type=Path, metavar="DIR")
    demo.add_argument("--seed", type=int, default=2020)
    demo.set_defaults(handler=_demo_data)


def _simulate(args: argparse.Namespace) -> int:
    import asyncio

    from federation.outputs import write_outputs, write_plots
    from federation.roles import parse_roles
    from federation.simulation import add_analysis, simulate

    if args.compare is not None:
        return _compare(args)
    algorithm = _algorithm(args.algorithm)
    central, sites, targets, params = _inputs(args)
    _check_analysis(args, central)
    if sites and not algorithm.capabilities.uses_sites:
        print(
            f"fip: note: {algorithm.name} uses central's data only; "
            f"{_count(len(sites), 'site')} not used",
            file=sys.stderr,
        )
    progress = _Progress(sys.stderr)
    result = asyncio.run(
        simulate(
            algorithm=algorithm,
            central=central,
            sites=sites,
            targets=targets,
            params=params,
            seed=args.seed,
            on_event=progress,
            levels=_parse_levels(args.levels),
            roles=parse_roles(args.column),
            predictors=_parse_predictors(args.predictors),
        )
    )
    progress.done()
    failed = None
    if args.analysis is not None:
        failed = add_analysis(result, args.analysis, args.analysis_family)
    written = write_outputs(result, args.out)
    if args.plots:
        written += write_plots(result, args.out)
    report = result.report
    for warning in report["warnings"]:
        print(f"fip: warning: {warning}", file=sys.stderr)
    print(
        f"{algorithm.name} {algorithm.version}: "
        f"{_count(len(result.imputed_cells), 'imputed dataset')} of {central.label} "
        f"(seed {report['seed']}), {_count(len(report['fits']), 'fit')}, "
        f"{report['round_trips']} round trips, {_size(report['bytes_sent'])} sent, "
        f"{_size(report['bytes_received'])} received, {report['seconds']:.2f} s"
    )
    for path in written:
        print(f"  {path}")
    if failed is not None:
        print(f"fip: warning: analysis not pooled: {failed}", file=sys.stderr)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import asyncio

    from federation.compare import format_table, methods_to_compare, simulate_comparison
    from federation.job import JobEvent
    from federation.outputs import write_comparison, write_outputs, write_plots
    from federation.registry import Registry
    from federation.roles import parse_roles
    from federation.simulation import add_analysis

    chosen = [_algorithm(name.strip()) for name in args.compare.split(",") if name.strip()]
    methods = methods_to_compare(chosen, Registry.with_builtins())
    central, sites, targets, params = _inputs(args)
    _check_analysis(args, central)
    progress = _Progress(sys.stderr)
    comparison, results = asyncio.run(
        simulate_comparison(
            methods=methods,
            central=central,
            sites=sites,
            targets=targets,
            params=params,
            seed=args.seed,
            levels=_parse_levels(args.levels),
            roles=parse_roles(args.column),
            predictors=_parse_predictors(args.predictors),
            on_event=lambda name, event: progress(
                JobEvent(
                    kind=event.kind, message=f"{name}: {event.message}", fraction=event.fraction
                )
            ),
        )
    )
    progress.done()
    if args.analysis is not None:
        for name, result in results.items():
            reason = add_analysis(result, args.analysis, args.analysis_family)
            if reason is not None:
                print(f"fip: warning: {name}: analysis not pooled: {reason}", file=sys.stderr)
    written = [
        path for name, result in results.items() for path in write_outputs(result, args.out / name)
    ]
    if args.plots:
        for name, result in results.items():
            written += write_plots(result, args.out / name)
    table = format_table(comparison)
    written += write_comparison(comparison, table, args.out)
    for name, result in results.items():
        for warning in result.report["warnings"]:
            print(f"fip: warning: {name}: {warning}", file=sys.stderr)
    names = ", ".join(m.name for m in methods)
    print(f"compared {names} on {central.label} (seed {comparison['seed']})")
    print(table)
    for path in written:
        print(f"  {path}")
    failed = [m for m in comparison["methods"] if m["status"] != "completed"]
    return 1 if failed else 0


def _check_analysis(args: argparse.Namespace, central: Table) -> None:
    from federation.simulation import check_analysis

    if args.analysis is not None:
        check_analysis(args.analysis, args.analysis_family, central.columns, label=central.label)


def _pool(args: argparse.Namespace) -> int:
    from federation.analysis import analyse
    from federation.long_format import read_long

    analysis = analyse(
        read_long(args.long),
        args.model,
        args.family,
        label=str(args.long),
        factors=args.factor,
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(analysis.csv(), encoding="utf-8")
    print(analysis.text())
    if args.out is not None:
        print(f"  {args.out}")
    return 0


def _inputs(
    args: argparse.Namespace,
) -> tuple[Table, dict[str, Table], list[tuple[str | int, str]], dict[str, Any]]:
    """Central's and the sites' tables, the targets and the parameters ``simulate`` was given."""
    from concurrent.futures import ThreadPoolExecutor

    from federation.data import read_csv
    from federation.job import CENTRAL
    from federation.params import parse_param
    from federation.roles import parse_roles, text_columns

    targets = [_parse_target(text) for text in args.target]
    text = text_columns(parse_roles(args.column), targets)
    paths = {CENTRAL: args.central, **_site_paths(args.site)}
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fip-read") as pool:
        # Two files at a time: Arrow parses outside the GIL. The first failing file, in the
        # order given, is the one reported.
        reading = [pool.submit(read_csv, path, text=text) for path in paths.values()]
        central, *others = [future.result() for future in reading]
    sites = dict(zip(list(paths)[1:], others, strict=True))
    for table in (central, *sites.values()):
        for note in table.notes:
            print(f"fip: note: {note}", file=sys.stderr)
    params = dict(parse_param(p) for p in args.param)
    if args.imputations is not None:
        params["imputations"] = args.imputations
    return central, sites, targets, params


def _algorithms(args: argparse.Namespace) -> int:
    import json

    from federation.registry import Registry, load_folder

    if args.check is not None:
        from federation.simulation import smoke_test

        algorithm = load_folder(args.check)
        smoke_test(algorithm)
        print(f"{algorithm.name} {algorithm.version} is valid and ran on synthetic data")
        print(f"digest {algorithm.digest}")
        return 0
    registry = Registry.with_builtins()
    for name in registry.names():
        for algorithm in registry.versions(name):
            caps = algorithm.capabilities
            print(
                f"{algorithm.name} {algorithm.version}  targets: "
                f"{'several' if caps.multiple_targets else 'one'} "
                f"({', '.join(caps.target_types)})  digest {algorithm.digest[:12]}"
            )
            print(f"    {algorithm.description}")
            print(f"    parameters: {json.dumps(_defaults(algorithm))}")
    return 0


def _demo_data(args: argparse.Namespace) -> int:
    from federation.demo import write_demo_data

    for site, path in write_demo_data(args.out, seed=args.seed).items():
        print(f"{site}: {path}")
    return 0


def _defaults(algorithm: Algorithm) -> dict[str, object]:
    return {k: v.get("default") for k, v in algorithm.schema.get("properties", {}).items()}


def _algorithm(text: str) -> Algorithm:
    from federation.registry import Registry, load_folder

    folder = Path(text)
    if folder.is_dir():
        return load_folder(folder)
    return Registry.builtin(text)


def _site_paths(entries: Sequence[str]) -> dict[str, Path]:
    """Each ``--site [NAME=]CSV`` as name -> path; a name given twice (or central's) refused."""
    from federation.job import CENTRAL

    sites: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = Path(entry).stem, entry
        if name == CENTRAL or name in sites:
            raise InputError(f"site name '{name}' is taken; name sites apart with --site NAME=path")
        sites[name] = Path(path)
    return sites


def _parse_target(text: str) -> tuple[str | int, str]:
    from algorithms import methods

    column, sep, kind = text.rpartition(":")
    if not sep or not column:
        raise InputError(
            f"--target expects COLUMN:METHOD ({', '.join(methods.names())}), got {text!r}"
        )
    method = methods.get(kind, field=f"--target {text}")
    return (int(column) if column.isdigit() else column), method.name


def _parse_levels(entries: list[str]) -> dict[str, tuple[str, ...]]:
    """``--levels COLUMN=a,b,c`` as column -> levels as written (checked against the column's
    role and method by ``federation.roles.define_columns``)."""
    levels: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        column, sep, listed = entry.partition("=")
        if not sep or not column or not listed:
            raise InputError(f"--levels expects COLUMN=a,b,c, got {entry!r}")
        if column in levels:
            raise InputError(f"--levels {column}: given twice")
        levels[column] = tuple(level.strip() for level in listed.split(","))
    return levels


def _parse_predictors(entries: list[str]) -> dict[str, tuple[str, ...]]:
    """``--predictors TARGET=col1,col2`` as target -> its predictor columns."""
    lists: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        target, sep, listed = entry.partition("=")
        names = tuple(name.strip() for name in listed.split(",") if name.strip())
        if not sep or not target or not names:
            raise InputError(f"--predictors expects TARGET=col1,col2, got {entry!r}")
        if target in lists:
            raise InputError(f"--predictors {target}: given twice")
        lists[target] = names
    return lists


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _size(count: int) -> str:
    for unit in ("B", "kB", "MB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    return f"{count:.1f} GB"


class _Progress:
    """A one-line progress bar on a terminal; silent when the output is not one."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._active = stream.isatty()

    def __call__(self, event: JobEvent) -> None:
        if not self._active or event.kind != "progress" or event.fraction is None:
            return
        filled = int(event.fraction * 30)
        bar = "#" * filled + "." * (30 - filled)
        self._stream.write(f"\r[{bar}] {event.fraction:4.0%} {event.message[:60]:<60}")
        self._stream.flush()

    def done(self) -> None:
        if self._active:
            self._stream.write("\n")
