"""The imputed datasets and the report as files: a zip of CSVs, one long CSV, report.json,
methods.csv (each target's method), fip_mids.R (an R function that builds a mice ``mids`` from
them) and, for the chained family, chains.csv (the chain means and variances).

The zip holds what R needs beside the M datasets: ``original.csv`` (central's table with its
missing cells), methods.csv, chains.csv and fip_mids.R, so that ``fip_mids("....zip")`` in R
gives a ``mids`` whose ``plot()``, ``densityplot()``, ``method`` and ``pool(with(...))`` work.

The long CSV is the layout of R mice's ``complete(imp, "long", include = TRUE)``: columns
``.imp`` (0 = the original with its missing cells, then 1..M) and ``.id`` (row number from 1),
then the data columns in the order of central's file (carried columns included). Missing cells
are written as ``NA``. Carried and factor columns are written back as they were read, text
unchanged; a text target's observed cells as read and its imputed cells as the job's levels.
A numeric column whose values are all whole numbers is written without decimals, any other
value in the shortest text that reads back to the same float64 (polars' writer: positional at
moderate magnitudes, with an exponent for very small or large ones). So an integer column
stays integer wherever its imputations are whole (pmm, poisson, logistic, categorical and
ordinal always are); gaussian imputations of an integer column are not rounded (rounding
biases the imputations; mice does not round either), so that column is written with
decimals in that dataset: use pmm for an integer column. Same inputs and seed, same bytes.

Both files are produced as a stream of chunks of a few MiB, each built from central's table and
the imputed cells of a block of rows: neither the M imputed copies nor a whole file is ever held
in memory, so the portal can send them as the client reads (:func:`zip_chunks`,
:func:`long_chunks`) and ``fip`` writes them straight to disk (:func:`write_outputs`).
Formatting a chunk (polars, outside the GIL) overlaps compressing or sending the one before.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from algorithms import methods
from federation.job import Target
from federation.roles import as_written
from federation.runtime import JobResult
from federation.zipstream import ZipStream, deflate

ZIP_NAME = "imputations.zip"
LONG_NAME = "imputations_long.csv"
REPORT_NAME = "report.json"
CHAINS_NAME = "chains.csv"
METHODS_NAME = "methods.csv"
R_NAME = "fip_mids.R"
ORIGINAL_NAME = "original.csv"
"""Central's table with its missing cells, in the zip (the long CSV's ``.imp`` 0)."""
COMPARISON_NAME = "comparison.json"
COMPARISON_TABLE_NAME = "comparison.txt"
ZIP_LEVEL = 1
"""ISA-L deflate level of the zip, chosen by measurement (central of 100k rows x 20 columns,
M = 10, 393 MB of CSV; CPU seconds, the machine being shared): formatting the CSV 1.4 s; zlib's
level 1 3.6 s for 194 MB (level 6: 8x that for 6% less); ISA-L's level 1 1.3 s for 191 MB, its
level 0 the same time for 234 MB. Level 1 halves what crosses the network for about the
formatting's own cost, on the two cores the chunks are made on."""
_CHUNK_CELLS = 1 << 16
"""Cells formatted at a time (512 KiB of float64, about 1.3 MB of text)."""
_AHEAD = 2
"""Chunks formatted ahead of the one being compressed or sent."""
_WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Threads formatting and deflating the zip's chunks at once."""
_WHOLE_LIMIT = 2.0**53
_ZIP64_SIZE = 0xFFFFFFFF
"""An entry whose text may reach this size (4 GiB) is written with zip64 sizes: its size is
unknown when its header is written."""


def dataset_csv(columns: tuple[str, ...], values: np.ndarray) -> bytes:
    """One table as CSV bytes, in the same format as the outputs."""
    plan = _Plan(columns, values, np.zeros(values.shape, dtype=bool), [])
    return b"".join(_run(plan.dataset_tasks(0)))


def dataset_chunks(result: JobResult, m: int) -> Iterator[bytes]:
    """Imputed dataset ``m`` (1..M; 0 is the original with its missing cells) as CSV chunks."""
    return _run(_Plan.of(result).dataset_tasks(m))


def long_chunks(result: JobResult) -> Iterator[bytes]:
    """All datasets, the original first, stacked with ``.imp`` and ``.id`` columns, in chunks."""
    return _run(_Plan.of(result).long_tasks())


def zip_chunks(result: JobResult, *, level: int = ZIP_LEVEL) -> Iterator[bytes]:
    """A zip holding ``imputation_<m>.csv`` for m = 1..M, then ``original.csv`` and the files R
    needs to rebuild a ``mids`` (:func:`r_files`), with fixed timestamps, in chunks.

    The zip is written as a stream (:mod:`federation.zipstream`): each chunk of CSV is
    formatted and deflated in a worker thread, two at a time, while the one before is sent.
    Built whole or sent as it is made, the bytes are the same.
    """
    plan = _Plan.of(result)
    m_total = len(result.imputed_cells)
    width = len(str(m_total))
    zip64 = plan.estimated_bytes >= _ZIP64_SIZE
    tasks = (
        _deflated(m, task, level)
        for m in (*range(1, m_total + 1), 0)
        for task in plan.dataset_tasks(m)
    )
    archive = ZipStream()
    current: int | None = None
    for m, raw, deflated in _run(tasks, workers=_WORKERS):
        if m != current:
            if current is not None:
                yield archive.end()
            name = f"imputation_{m:0{width}d}.csv" if m else ORIGINAL_NAME
            yield archive.begin(name, zip64=zip64)
            current = m
        yield archive.add(raw, deflated)
    if current is not None:
        yield archive.end()
    for name, content in r_files(result).items():
        yield archive.begin(name, zip64=False)
        yield archive.add(content, deflate(content, level))
        yield archive.end()
    yield archive.finish()


def long_csv(result: JobResult) -> bytes:
    """The long CSV whole (see :func:`long_chunks`)."""
    return b"".join(long_chunks(result))


def zip_bytes(result: JobResult) -> bytes:
    """The zip whole (see :func:`zip_chunks`)."""
    return b"".join(zip_chunks(result))


def report_json(report: dict[str, Any]) -> bytes:
    return (json.dumps(report, indent=2, allow_nan=False) + "\n").encode()


def chains_csv(report: dict[str, Any]) -> bytes | None:
    """The chain means and variances of a chained job (mice's ``chainMean`` and ``chainVar``),
    one row per target, chain and cycle: ``target,chain,cycle,mean,variance``; ``NA`` where
    central's cells do not define the number. None for a job without traces."""
    traces = report.get("traces")
    if not traces:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["target", "chain", "cycle", "mean", "variance"])
    for target, entry in traces.items():
        for chain, points in enumerate(entry["chains"], start=1):
            for point in points:
                writer.writerow(
                    [
                        target,
                        chain,
                        point["cycle"],
                        *(
                            "NA" if point[k] is None else repr(point[k])
                            for k in ("mean", "variance")
                        ),
                    ]
                )
    return buffer.getvalue().encode()


def methods_csv(targets: Iterable[Target]) -> bytes:
    """Each target's method, for R (``fip_mids.R``): ``column,method,mice,class,levels``: its
    fip method, R mice's name for it, how R holds the column (numeric, factor or ordered) and,
    for a factor, its levels in order as the data's codes, separated by ``;``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["column", "method", "mice", "class", "levels"])
    for target in targets:
        method = methods.get(target.type, field=f"target '{target.name}'")
        levels = method.factor_levels(target.levels) if method.r_class != "numeric" else ()
        writer.writerow(
            [
                target.name,
                method.name,
                method.mice,
                method.r_class,
                ";".join(_level_text(level) for level in levels),
            ]
        )
    return buffer.getvalue().encode()


def r_function() -> bytes:
    """``fip_mids.R``: the R function that builds a mice ``mids`` from these files."""
    return (resources.files("federation") / "r" / R_NAME).read_bytes()


def r_files(result: JobResult) -> dict[str, bytes]:
    """The files R needs beside the data to rebuild a full ``mids``, by name: methods.csv,
    chains.csv (chained family) and fip_mids.R."""
    files = {METHODS_NAME: methods_csv(result.spec.targets)}
    chains = chains_csv(result.report)
    if chains is not None:
        files[CHAINS_NAME] = chains
    files[R_NAME] = r_function()
    return files


def write_outputs(result: JobResult, out_dir: Path) -> list[Path]:
    """Write the files into ``out_dir``: the zip, the long CSV, report.json, methods.csv,
    fip_mids.R and, for a chained job, chains.csv; all of them, or (on any error) none.

    The zip and the long CSV are written at the same time, each by its own thread.
    """
    contents: dict[str, Callable[[], Iterable[bytes]]] = {
        ZIP_NAME: lambda: zip_chunks(result),
        LONG_NAME: lambda: long_chunks(result),
        REPORT_NAME: lambda: [report_json(result.report)],
    }
    for name, content in r_files(result).items():
        contents[name] = lambda content=content: [content]  # type: ignore[misc]
    return _write_all(out_dir, contents)


def write_plots(result: JobResult, out_dir: Path) -> list[Path]:
    """Each target's plausibility plot (``plausibility_<column>.svg``) and its numbers
    (``plausibility_<column>.csv``) into ``out_dir``, and for a chained job its trace plot
    (``trace_<column>.svg``, ``trace_<column>.csv``): all of them, or none."""
    from federation.plots import file_stem, plausibility, traces  # matplotlib when asked for

    contents: dict[str, Callable[[], Iterable[bytes]]] = {}
    taken: list[str] = []
    stems: dict[str, str] = {}
    for plot in plausibility(result):
        stem = file_stem(plot.name, taken)
        taken.append(stem)
        stems[plot.name] = stem.removeprefix("plausibility_")
        svg, numbers = plot.svg, plot.numbers.csv().encode()
        contents[f"{stem}.svg"] = lambda svg=svg: [svg]  # type: ignore[misc]
        contents[f"{stem}.csv"] = lambda numbers=numbers: [numbers]  # type: ignore[misc]
    for trace in traces(result):
        stem = f"trace_{stems[trace.name]}"
        svg, numbers = trace.svg, trace.numbers.csv().encode()
        contents[f"{stem}.svg"] = lambda svg=svg: [svg]  # type: ignore[misc]
        contents[f"{stem}.csv"] = lambda numbers=numbers: [numbers]  # type: ignore[misc]
    return _write_all(out_dir, contents)


def write_comparison(comparison: dict[str, Any], table: str, out_dir: Path) -> list[Path]:
    """Write ``comparison.json`` and the same as a text table, ``comparison.txt``."""
    return _write_all(
        out_dir,
        {
            COMPARISON_NAME: lambda: [report_json(comparison)],
            COMPARISON_TABLE_NAME: lambda: [(table + "\n").encode()],
        },
    )


def _write_all(out_dir: Path, contents: dict[str, Callable[[], Iterable[bytes]]]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = [(out_dir / f".{name}.partial", out_dir / name) for name in contents]

    def write(temporary: Path, chunks: Callable[[], Iterable[bytes]]) -> None:
        with temporary.open("wb") as handle:
            for chunk in chunks():
                handle.write(chunk)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="fip-outputs") as pool:
        futures = [
            pool.submit(write, temporary, chunks)
            for (temporary, _), chunks in zip(staged, contents.values(), strict=True)
        ]
    try:
        for future in futures:
            future.result()
    except BaseException:
        for temporary, _ in staged:
            if temporary.is_file():
                temporary.unlink()
        raise
    for temporary, final in staged:
        os.replace(temporary, final)
    return [final for _, final in staged]


# ---------------------------------------------------------------- formatting


Task = Callable[[], bytes]
T = TypeVar("T")


@dataclass(frozen=True)
class _Plan:
    """How to format central's table with each dataset's imputed cells, a block of rows at a
    time: where each row's cells start among the imputed cells (row-major order), and which
    columns are whole numbers in each dataset."""

    columns: tuple[str, ...]
    values: np.ndarray
    missing: np.ndarray
    cells: list[np.ndarray]
    order: tuple[str, ...] = ()
    """The output's columns (central's file order, carried ones included); default: columns."""
    text: Mapping[str, np.ndarray] = field(default_factory=dict)
    """Columns written back as they were read (carried, factor, text target), by name."""
    labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """A text target's levels: its imputed cells (level indices) are written as these."""

    @classmethod
    def of(cls, result: JobResult) -> _Plan:
        table = result.table
        return cls(
            table.columns,
            table.values,
            result.missing,
            result.imputed_cells,
            order=table.layout or table.columns,
            text=table.text,
            labels={t.name: t.labels for t in result.spec.targets if t.labels},
        )

    @property
    def shown(self) -> tuple[str, ...]:
        return self.order or self.columns

    @property
    def rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def block(self) -> int:
        return max(1, _CHUNK_CELLS // max(1, len(self.columns)))

    @property
    def estimated_bytes(self) -> int:
        """An upper bound of one dataset's CSV (25 characters a cell at most)."""
        return self.values.size * 25 + 1024

    @cached_property
    def starts(self) -> np.ndarray:
        """Offset of each row's first imputed cell, and the total last (rows + 1 entries)."""
        offsets = np.zeros(self.rows + 1, dtype=np.int64)
        np.cumsum(np.count_nonzero(self.missing, axis=1), out=offsets[1:])
        return offsets

    @cached_property
    def whole(self) -> np.ndarray:
        """(M + 1, columns) booleans: is the column all whole numbers in dataset m (0 = the
        original with its missing cells)."""
        p = len(self.columns)
        observed = np.ones(p, dtype=bool)
        for j in range(p):
            column = self.values[:, j]
            column = column[~np.isnan(column)]
            observed[j] = _all_whole(column)
        result = np.tile(observed, (len(self.cells) + 1, 1))
        if self.cells:
            where = np.broadcast_to(np.arange(p, dtype=np.int32), self.missing.shape)[self.missing]
            for m, cells in enumerate(self.cells, start=1):
                bad = ~np.isnan(cells) & (
                    (cells != np.round(cells)) | (np.abs(cells) >= _WHOLE_LIMIT)
                )
                result[m] &= np.bincount(where[bad], minlength=p) == 0
        return result

    def dataset_tasks(self, m: int) -> Iterator[Task]:
        whole = self.whole[m]
        yield lambda: _header(self.shown)
        for first in range(0, self.rows, self.block):
            last = min(first + self.block, self.rows)
            yield self._task(m, first, last, whole, long=False)

    def long_tasks(self) -> Iterator[Task]:
        whole = np.asarray(self.whole.all(axis=0))
        yield lambda: _header((".imp", ".id", *self.shown))
        for m in range(len(self.cells) + 1):
            for first in range(0, self.rows, self.block):
                last = min(first + self.block, self.rows)
                yield self._task(m, first, last, whole, long=True)

    def _task(self, m: int, first: int, last: int, whole: np.ndarray, *, long: bool) -> Task:
        starts = self.starts

        def format_rows() -> bytes:
            block = self.values[first:last].copy()
            if m > 0:
                block[self.missing[first:last]] = self.cells[m - 1][starts[first] : starts[last]]
            series = []
            if long:
                series.append(pl.Series(".imp", np.full(last - first, m, dtype=np.int64)))
                series.append(pl.Series(".id", np.arange(first + 1, last + 1, dtype=np.int64)))
            for k, name in enumerate(self.shown):
                if name in self.text:
                    series.append(self._text(k, name, block, first, last))
                    continue
                j = self.columns.index(name) if self.order else k
                column = pl.Series(f"c{k}", np.ascontiguousarray(block[:, j]), nan_to_null=True)
                series.append(column.cast(pl.Int64) if whole[j] else column)
            buffer = io.BytesIO()
            pl.DataFrame(series).write_csv(
                buffer, include_header=False, null_value="NA", line_terminator="\n"
            )
            return buffer.getvalue()

        return format_rows

    def _text(self, k: int, name: str, block: np.ndarray, first: int, last: int) -> pl.Series:
        """A column written back as it was read; a text target's imputed cells as levels."""
        cells = self.text[name][first:last]
        labels = self.labels.get(name)
        if labels is not None:
            cells = as_written(cells, block[:, self.columns.index(name)], labels)
        return pl.Series(f"c{k}", cells.tolist(), dtype=pl.Utf8)


def _level_text(level: float) -> str:
    """A level as the data's CSV writes it: a whole number without decimals."""
    return str(int(level)) if float(level).is_integer() else repr(float(level))


def _all_whole(values: np.ndarray) -> bool:
    return bool(np.all(values == np.round(values)) and np.all(np.abs(values) < _WHOLE_LIMIT))


def _header(columns: Iterable[str]) -> bytes:
    """The header line, names quoted where CSV needs it (as the csv module does)."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(list(columns))
    return text.getvalue().encode()


def _deflated(m: int, task: Task, level: int) -> Callable[[], tuple[int, bytes, bytes]]:
    """A chunk of dataset ``m`` formatted, then deflated."""

    def run() -> tuple[int, bytes, bytes]:
        raw = task()
        return m, raw, deflate(raw, level)

    return run


def _run(tasks: Iterable[Callable[[], T]], *, workers: int = 1) -> Iterator[T]:
    """The tasks' results in order, each made in a worker thread a few chunks ahead."""
    pending: deque[Future[T]] = deque()
    iterator = iter(tasks)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fip-format") as pool:
        try:
            for task in iterator:
                pending.append(pool.submit(task))
                if len(pending) > _AHEAD + workers - 1:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
