"""Plausibility plots of a finished job's imputations, on central's own data, as R mice draws them.

Per target: a continuous target gets the density of its observed cells and of each
imputation's imputed cells (mice's ``densityplot``: observed in blue, imputed in red); a target
of levels (binary, categorical, ordinal) gets each level's share among the observed cells and
among each imputation's imputed cells, as bars. Beside either: a strip plot per imputation
(mice's ``stripplot``: ``.imp`` 0 is the observed cells, 1..M each imputation's imputed cells).

The numbers beside each plot (n, mean, SD, min, quartiles, max; or counts and shares per level)
come from :func:`describe`, which the drawing also reads: the plot and its table cannot
disagree. Figures are drawn by matplotlib's SVG backend, set explicitly, with text kept as text
(searchable, read aloud), a ``<title>`` and a ``<desc>``, fixed ids (``svg.hashsalt``) and no date:
the same job gives the same bytes. Nothing is written to disk.
"""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from federation.diagnostics import unsettled_prefix
from federation.errors import InputError
from federation.runtime import JobResult

matplotlib.rcParams.update(
    {
        "svg.hashsalt": "fip-plausibility",  # ids from a fixed salt: same figure, same bytes
        "svg.fonttype": "none",  # text stays text, in the bundled DejaVu Sans; no font fetched
        "text.parse_math": False,  # a column named "cost ($) in $k" is text, not TeX
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans"],
    }
)

OBSERVED_COLOUR = "#006CC2"
IMPUTED_COLOUR = "#B61A51"
"""mice's colours (``mice.theme``): observed blue, imputed red."""
LEVEL_TYPES = frozenset({"logistic", "categorical", "ordinal"})
"""Target types drawn as bars per level; every other type (gaussian, and counts) as densities."""
RASTER_POINTS = 2000
"""A strip with more points than this is drawn as an embedded image inside the SVG, so that a
large table's plot stays small; the table beside it still has every number."""
DENSITY_POINTS = 512
Kind = Literal["density", "bars"]
_SVG = "http://www.w3.org/2000/svg"
_NAMESPACES = {
    "": _SVG,
    "xlink": "http://www.w3.org/1999/xlink",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://creativecommons.org/ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
}
for _prefix, _uri in _NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)


@dataclass(frozen=True)
class Cells:
    """One target's cells at central: the observed ones, and each imputation's imputed ones."""

    observed: np.ndarray
    imputed: tuple[np.ndarray, ...]

    def group(self, imp: int) -> np.ndarray:
        """``.imp`` 0: the observed cells; m: imputation m's imputed cells."""
        return self.observed if imp == 0 else self.imputed[imp - 1]

    @property
    def groups(self) -> int:
        return 1 + len(self.imputed)


@dataclass(frozen=True)
class Spread:
    """The numbers of one group of a continuous target's cells (NaN where there are too few)."""

    imp: int
    n: int
    mean: float
    sd: float
    min: float
    q1: float
    median: float
    q3: float
    max: float

    STATISTICS = ("n", "mean", "sd", "min", "q1", "median", "q3", "max")


@dataclass(frozen=True)
class Levels:
    """One group's count of cells per level."""

    imp: int
    counts: tuple[int, ...]

    @property
    def n(self) -> int:
        return sum(self.counts)

    @property
    def shares(self) -> tuple[float, ...]:
        total = self.n
        return tuple(c / total if total else math.nan for c in self.counts)


@dataclass(frozen=True)
class Numbers:
    """A target's table: per group (observed, then each imputation's imputed cells) its spread,
    or its counts per level."""

    name: str
    type: str
    kind: Kind
    spreads: tuple[Spread, ...] = ()
    levels: tuple[float, ...] = ()
    counts: tuple[Levels, ...] = ()

    @property
    def imputations(self) -> int:
        return max(len(self.spreads), len(self.counts)) - 1

    def rows(self) -> list[dict[str, Any]]:
        """The table as rows, one per group (spreads) or per group and level (counts)."""
        if self.kind == "density":
            return [
                {"imp": s.imp, "cells": _cells(s.imp)}
                | {k: _number(getattr(s, k)) for k in Spread.STATISTICS}
                for s in self.spreads
            ]
        return [
            {
                "imp": group.imp,
                "cells": _cells(group.imp),
                "level": level_label(level),
                "count": count,
                "share": _number(share),
            }
            for group in self.counts
            for level, count, share in zip(self.levels, group.counts, group.shares, strict=True)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "kind": self.kind, "rows": self.rows()}

    def csv(self) -> str:
        """The table as CSV, with the target's name on every row; empty cells where NaN."""
        rows = self.rows()
        keys = [k for k in rows[0] if k != "imp"] if rows else []
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["target", ".imp", *keys])
        for row in rows:
            writer.writerow(
                [self.name, row["imp"], *("" if row[k] is None else row[k] for k in keys)]
            )
        return buffer.getvalue()


@dataclass(frozen=True)
class TargetPlot:
    """One target's figure (SVG bytes) and the numbers it draws."""

    numbers: Numbers
    svg: bytes

    @property
    def name(self) -> str:
        return self.numbers.name


def target_cells(result: JobResult, column: int) -> Cells:
    """The observed cells of a column of central's table and each imputation's imputed ones."""
    table = result.table.values
    missing = np.isnan(table)
    # imputed_cells[m] lists the missing cells in row-major order; keep this column's.
    in_column = np.flatnonzero(missing) % table.shape[1] == column
    return Cells(
        observed=table[~missing[:, column], column],
        imputed=tuple(np.asarray(cells)[in_column] for cells in result.imputed_cells),
    )


def describe(name: str, type: str, cells: Cells) -> Numbers:
    """The numbers of a target's plot: spreads of a continuous target, counts of a levelled one.
    The drawing reads these, and the table shows them."""
    if type in LEVEL_TYPES:
        every = np.concatenate([cells.group(imp) for imp in range(cells.groups)])
        levels = np.unique(every[np.isfinite(every)])
        counts = tuple(
            Levels(
                imp=imp,
                counts=tuple(int(np.count_nonzero(cells.group(imp) == lv)) for lv in levels),
            )
            for imp in range(cells.groups)
        )
        return Numbers(
            name=name,
            type=type,
            kind="bars",
            levels=tuple(float(v) for v in levels),
            counts=counts,
        )
    return Numbers(
        name=name,
        type=type,
        kind="density",
        spreads=tuple(_spread(imp, cells.group(imp)) for imp in range(cells.groups)),
    )


def plausibility(result: JobResult) -> list[TargetPlot]:
    """Every target's figure and numbers, in the job's order of targets."""
    plots = []
    for target in result.spec.targets:
        cells = target_cells(result, target.column)
        numbers = describe(target.name, target.type, cells)
        plots.append(TargetPlot(numbers=numbers, svg=draw(numbers, cells)))
    return plots


def draw(numbers: Numbers, cells: Cells) -> bytes:
    """The target's figure as SVG: densities or bars on the left, the strip plot on the right."""
    figure = Figure(figsize=(10, 4.2))
    FigureCanvasSVG(figure)
    left, right = figure.subplots(1, 2, width_ratios=(1.25, 1))
    m_total = numbers.imputations
    if numbers.kind == "density":
        _densities(left, numbers, cells)
    else:
        _bars(left, numbers)
    _strips(right, numbers.name, cells)
    if numbers.kind == "bars":
        right.set_yticks(numbers.levels, [level_label(v) for v in numbers.levels])
    title = f"{numbers.name}: observed and imputed values at central, {m_total} imputations"
    figure.suptitle(title, fontsize=14)
    figure.subplots_adjust(left=0.075, right=0.985, bottom=0.14, top=0.84, wspace=0.22)
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="svg",
        metadata={"Title": title, "Date": None, "Creator": "fip (matplotlib)"},
    )
    return _with_description(buffer.getvalue(), _description(numbers))


# ---------------------------------------------------------------- traces of a chained job


CHAIN_COLOURS = ("#B61A51", "#006CC2", "#2A7F3F", "#8A5A00", "#6B3FA0", "#4D4D4D")
"""One colour per chain, cycling (a single chain is drawn in mice's imputed red)."""


@dataclass(frozen=True)
class Trace:
    """A target's traces: per chain, per cycle, the mean and SD of central's imputed cells
    (from ``report["traces"]``), with parallel chains their R-hat, and whether the job flagged
    it as not settled."""

    name: str
    method: str
    chains: tuple[tuple[tuple[int, float, float, float], ...], ...]
    """Per chain: (cycle, mean, sd, variance); NaN where central's cells define no number."""
    flagged: bool = False
    rhat: Mapping[str, float | None] = field(default_factory=dict)
    """Parallel chains: R-hat of the mean and of the SD over the chains (None: not finite)."""

    @property
    def rhat_text(self) -> str:
        """R-hat as a page says it, e.g. "mean 1.02, SD 1.01" (empty for one chain)."""
        return ", ".join(
            f"{'SD' if q == 'sd' else q} {'not available' if v is None else f'{v:.2f}'}"
            for q, v in self.rhat.items()
        )

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "chain": chain,
                "cycle": cycle,
                "mean": _number(mean),
                "sd": _number(sd),
                "variance": _number(variance),
            }
            for chain, points in enumerate(self.chains, start=1)
            for cycle, mean, sd, variance in points
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "flagged": self.flagged,
            **({"rhat": dict(self.rhat)} if self.rhat else {}),
            "rows": self.rows(),
        }

    def csv(self) -> str:
        """The numbers as CSV (target, chain, cycle, mean, sd, variance); empty where NaN."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["target", "chain", "cycle", "mean", "sd", "variance"])
        for row in self.rows():
            writer.writerow([self.name, *("" if v is None else v for v in row.values())])
        return buffer.getvalue()


@dataclass(frozen=True)
class TracePlot:
    """One target's trace figure (SVG bytes) and the numbers it draws."""

    numbers: Trace
    svg: bytes

    @property
    def name(self) -> str:
        return self.numbers.name


def trace_numbers(report: dict[str, Any]) -> list[Trace]:
    """Each target's traces from a report (none for a job without chains)."""
    entries: dict[str, Any] = report.get("traces", {})
    flagged = {
        name
        for name in entries
        for warning in report.get("warnings", ())
        if warning.startswith(unsettled_prefix(name))
    }
    return [
        Trace(
            name=name,
            method=entry["method"],
            chains=tuple(tuple(_trace_point(p) for p in points) for points in entry["chains"]),
            flagged=name in flagged,
            rhat=dict(entry.get("rhat", {})),
        )
        for name, entry in entries.items()
    ]


def _trace_point(point: dict[str, Any]) -> tuple[int, float, float, float]:
    def value(key: str) -> float:
        return math.nan if point[key] is None else float(point[key])

    return int(point["cycle"]), value("mean"), value("sd"), value("variance")


def traces(result: JobResult) -> list[TracePlot]:
    """Every target's trace figure and numbers, in the job's order of targets."""
    return [TracePlot(numbers=t, svg=draw_trace(t)) for t in trace_numbers(result.report)]


def draw_trace(trace: Trace) -> bytes:
    """The target's traces as SVG: the mean of its imputed cells at central against the cycle
    on the left, their SD on the right, one line per chain (mice's ``plot(imp)``)."""
    figure = Figure(figsize=(10, 3.8))
    FigureCanvasSVG(figure)
    panels = figure.subplots(1, 2)
    for axes, (quantity, column) in zip(panels, (("mean", 1), ("sd", 2)), strict=True):
        for chain, points in enumerate(trace.chains, start=1):
            cycles = [p[0] for p in points]
            values = [p[column] for p in points]
            (line,) = axes.plot(
                cycles,
                values,
                color=CHAIN_COLOURS[(chain - 1) % len(CHAIN_COLOURS)],
                linewidth=1.6,
                label=f"chain {chain}",
            )
            line.set_gid(f"trace-{quantity}-{chain}")
        label = "SD" if quantity == "sd" else quantity
        axes.set_xlabel("cycle", fontsize=12)
        axes.set_ylabel(f"{label} of imputed {trace.name}", fontsize=12)
        axes.set_title(label, fontsize=12)
        _style(axes)
    chains = len(trace.chains)
    title = (
        f"{trace.name} ({trace.method}): mean and SD of the imputed cells at central per cycle, "
        f"{chains} chain{'s' if chains != 1 else ''}"
    )
    figure.suptitle(title, fontsize=13)
    figure.subplots_adjust(left=0.08, right=0.985, bottom=0.15, top=0.82, wspace=0.25)
    buffer = io.BytesIO()
    figure.savefig(
        buffer,
        format="svg",
        metadata={"Title": title, "Date": None, "Creator": "fip (matplotlib)"},
    )
    return _with_description(buffer.getvalue(), _trace_description(trace))


def _trace_description(trace: Trace) -> str:
    last = "; ".join(
        f"chain {chain}: after cycle {points[-1][0]}, mean {_text(points[-1][1])}, "
        f"SD {_text(points[-1][2])}"
        for chain, points in enumerate(trace.chains, start=1)
        if points
    )
    if trace.rhat:
        verdict = (
            f"R-hat over the chains: {trace.rhat_text}. "
            + ("The job flagged it: the chains have not mixed." if trace.flagged else "")
        ).strip()
    else:
        verdict = (
            "The job flagged it: the chain still moves over its last half."
            if trace.flagged
            else "The job did not flag it."
        )
    return (
        f"Left: the mean of the imputed cells of {trace.name} at central after each cycle; "
        f"right: their SD; one line per chain. {last}. {verdict}"
    )


def level_label(level: float) -> str:
    return f"{level:g}"


def file_stem(name: str, taken: Sequence[str] = ()) -> str:
    """A file name for a target's plot, from its column name: safe characters only, unique
    among ``taken``."""
    stem = "plausibility_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "column")
    unique, k = stem, 2
    while unique in taken:
        unique, k = f"{stem}_{k}", k + 1
    return unique


def kernel_density(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of ``values`` on an evenly spaced ``grid`` with R's default
    bandwidth (bw.nrd0), as ``density()`` and so lattice's ``densityplot`` draw it. Like R, the
    values are binned linearly onto a fine grid (here at most a 50th of the bandwidth apart,
    covering ``grid``) and the kernel is applied by FFT: the time does not grow with rows times
    grid points. Values outside ``grid``'s range count at its ends."""
    bandwidth = bw_nrd0(values)
    low, high = float(grid[0]), float(grid[-1])
    points = int(min(max(grid.size, math.ceil(50 * (high - low) / bandwidth) + 1), 1 << 18))
    step = (high - low) / (points - 1)
    position = np.clip((values - low) / step, 0, points - 1)
    left = np.minimum(np.floor(position).astype(np.int64), points - 2)
    right_share = position - left
    counts = np.bincount(left, weights=1 - right_share, minlength=points)
    counts += np.bincount(left + 1, weights=right_share, minlength=points)
    half = int(math.ceil(5 * bandwidth / step))
    offsets = np.arange(-half, half + 1) * step / bandwidth
    kernel = np.exp(-0.5 * offsets * offsets) / (values.size * bandwidth * math.sqrt(2 * math.pi))
    fine = _convolve_same(counts, kernel)
    density: np.ndarray = np.interp(grid, np.linspace(low, high, points), np.maximum(fine, 0.0))
    return density


def _convolve_same(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``values`` convolved with ``kernel`` by FFT, the middle ``values.size`` of the full
    convolution (scipy's ``fftconvolve(..., mode="same")``; numpy's FFT spares a portal that
    draws plots the import of scipy.signal, about a second)."""
    full = values.size + kernel.size - 1
    size = 1 << (full - 1).bit_length()
    product = np.fft.rfft(values, size) * np.fft.rfft(kernel, size)
    convolved = np.fft.irfft(product, size)[:full]
    start = (full - values.size) // 2
    middle: np.ndarray = convolved[start : start + values.size]
    return middle


def bw_nrd0(values: np.ndarray) -> float:
    """R's ``bw.nrd0``: Silverman's rule of thumb, 0.9 min(SD, IQR/1.34) n^(-1/5)."""
    if values.size < 2:
        raise InputError("a density needs at least two values")
    sd = float(np.std(values, ddof=1))
    q1, q3 = np.quantile(values, [0.25, 0.75])
    low = min(sd, float(q3 - q1) / 1.34)
    if not low > 0:
        low = sd or abs(float(values[0])) or 1.0
    bandwidth: float = 0.9 * low * float(values.size) ** -0.2
    return bandwidth


def _spread(imp: int, values: np.ndarray) -> Spread:
    n = int(values.size)
    if n == 0:
        return Spread(imp, 0, *(math.nan,) * 7)
    q = np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0])
    sd = float(np.std(values, ddof=1)) if n > 1 else math.nan
    return Spread(imp, n, float(np.mean(values)), sd, *(float(v) for v in q))


def _densities(axes: Any, numbers: Numbers, cells: Cells) -> None:
    every = np.concatenate([cells.group(imp) for imp in range(cells.groups)])
    drawable = [imp for imp in range(cells.groups) if cells.group(imp).size >= 2]
    if drawable:
        bandwidth = max(bw_nrd0(cells.group(imp)) for imp in drawable)
        grid = np.linspace(every.min() - 3 * bandwidth, every.max() + 3 * bandwidth, DENSITY_POINTS)
    for imp in drawable:
        observed = imp == 0
        (line,) = axes.plot(
            grid,
            kernel_density(cells.group(imp), grid),
            color=OBSERVED_COLOUR if observed else IMPUTED_COLOUR,
            linewidth=2.4 if observed else 1.0,
            alpha=1.0 if observed else 0.75,
            zorder=3 if observed else 2,
            label=f"observed (n = {cells.group(0).size})"
            if observed
            else (f"imputed, each imputation (n = {cells.group(imp).size})" if imp == 1 else None),
        )
        line.set_gid(f"density-{imp}")
    if not drawable:
        axes.text(0.5, 0.5, "too few cells for a density", transform=axes.transAxes, ha="center")
    axes.set_xlabel(numbers.name, fontsize=12)
    axes.set_ylabel("density", fontsize=12)
    axes.set_title("density: observed (blue), imputed (red)", fontsize=12)
    _style(axes)
    if drawable:
        axes.set_ylim(0, axes.get_ylim()[1] * 1.3)  # room for the legend above the curves
        axes.legend(fontsize=10, frameon=False, loc="upper left")


def _bars(axes: Any, numbers: Numbers) -> None:
    groups = len(numbers.counts)
    width = 0.8 / groups
    for k, group in enumerate(numbers.counts):
        observed = group.imp == 0
        positions = np.arange(len(numbers.levels)) - 0.4 + (k + 0.5) * width
        bars = axes.bar(
            positions,
            [0.0 if math.isnan(s) else s for s in group.shares],
            width=width * 0.92,
            color=OBSERVED_COLOUR if observed else IMPUTED_COLOUR,
            alpha=1.0 if observed else 0.7,
            label="observed"
            if observed
            else ("imputed, imputations 1.." + str(groups - 1))
            if k == 1
            else None,
        )
        for level_index, bar in enumerate(bars):
            bar.set_gid(f"bar-{group.imp}-{level_index}")
    axes.set_xticks(np.arange(len(numbers.levels)), [level_label(v) for v in numbers.levels])
    axes.set_xlabel(f"{numbers.name} (level)", fontsize=12)
    axes.set_ylabel("share of the cells", fontsize=12)
    axes.set_ylim(0, 1.15)  # room for the legend above the bars
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_title("share per level: observed (blue), imputed (red)", fontsize=12)
    _style(axes)
    axes.legend(fontsize=10, frameon=False, loc="upper right")


def _strips(axes: Any, name: str, cells: Cells) -> None:
    jitter = np.random.default_rng(0)  # fixed: the same plot every time
    for imp in range(cells.groups):
        values = cells.group(imp)
        if values.size == 0:
            continue
        (points,) = axes.plot(
            imp + jitter.uniform(-0.22, 0.22, size=values.size),
            values,
            linestyle="none",
            marker="o",
            markersize=3.5,
            markeredgewidth=0.6,
            markerfacecolor="none",
            markeredgecolor=OBSERVED_COLOUR if imp == 0 else IMPUTED_COLOUR,
            alpha=0.8,
        )
        points.set_gid(f"strip-{imp}")
        points.set_rasterized(values.size > RASTER_POINTS)
    step = max(1, math.ceil(cells.groups / 12))
    axes.set_xticks(range(0, cells.groups, step))
    axes.set_xlim(-0.6, cells.groups - 0.4)
    axes.set_xlabel("imputation (0 = observed cells)", fontsize=12)
    axes.set_ylabel(name, fontsize=12)
    axes.set_title("strip plot per imputation", fontsize=12)
    _style(axes)


def _style(axes: Any) -> None:
    axes.tick_params(labelsize=11)
    axes.grid(True, color="#dddddd", linewidth=0.6)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)


def _description(numbers: Numbers) -> str:
    m_total = numbers.imputations
    if numbers.kind == "density":
        observed = numbers.spreads[0]
        imputed = numbers.spreads[1:]
        means = ", ".join(_text(s.mean) for s in imputed)
        return (
            f"Left: the density of {numbers.name} among the {observed.n} observed cells at "
            f"central (blue; mean {_text(observed.mean)}, SD {_text(observed.sd)}) and among the "
            f"imputed cells of each of the {m_total} imputations (red; "
            f"{imputed[0].n if imputed else 0} cells each, means {means}). Right: every value, "
            "imputation 0 being the observed cells."
        )
    shares = "; ".join(
        f"{'observed' if g.imp == 0 else f'imputation {g.imp}'}: "
        + ", ".join(
            f"{level_label(lv)} {c} ({s:.0%})" if not math.isnan(s) else f"{level_label(lv)} 0"
            for lv, c, s in zip(numbers.levels, g.counts, g.shares, strict=True)
        )
        for g in numbers.counts
    )
    return (
        f"Left: the share of each level of {numbers.name} among the observed cells at central "
        f"(blue) and among the imputed cells of each of the {m_total} imputations (red). "
        f"Counts per level, {shares}. Right: every value, imputation 0 being the observed cells."
    )


def _with_description(svg: bytes, description: str) -> bytes:
    """The SVG with a ``<desc>`` after its ``<title>``, and ``role="img"`` naming them both."""
    root = ET.fromstring(svg)
    title = root.find(f"{{{_SVG}}}title")
    desc = ET.Element(f"{{{_SVG}}}desc", {"id": "plot-desc"})
    desc.text = description
    position = list(root).index(title) + 1 if title is not None else 0
    if title is not None:
        title.set("id", "plot-title")
    root.insert(position, desc)
    root.set("role", "img")
    root.set("aria-labelledby", "plot-title plot-desc")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def _cells(imp: int) -> str:
    return "observed" if imp == 0 else "imputed"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _text(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "" if math.isnan(value) else f"{value:.6g}"
