"""The worked example of docs/algorithms.md: it loads, runs, does its maths, and the doc shows it.

``docs/examples/MEANDRAW`` is the "pooled normal draw" pair that the contract document walks
through. These tests keep the example honest: the registry accepts it, ``fip algorithms
--check`` passes, its fit equals the fit of the pooled rows, its imputations centre on the
pooled mean, sites send three numbers each, and every file the document shows is byte for byte
the file on disk.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.cli import main
from federation.data import Table
from federation.errors import SiteFailed
from federation.job import CENTRAL
from federation.protocol import Reply, Request, decode
from federation.registry import Algorithm, load_folder
from federation.runtime import JobResult, run_job
from federation.simulation import make_spec, simulate, smoke_test
from federation.site import SiteRunner
from federation.transport import InMemoryTransport

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "MEANDRAW"
DOC = ROOT / "docs" / "algorithms.md"
_FILE_MARKER = re.compile(r"^\*\*`(docs/examples/[^`]+)`\*\*$")


# ---------------------------------------------------------------- builders


def example() -> Algorithm:
    return load_folder(EXAMPLE)


def hospital(label: str, rows: int, *, centre: float, seed: int, missing: float = 0.25) -> Table:
    """Columns y (the target, Normal(centre, 2)) and x (noise), a share of y missing."""
    rng = np.random.default_rng(seed)
    values = np.column_stack([rng.normal(centre, 2.0, rows), rng.normal(size=rows)])
    values[rng.random(rows) < missing, 0] = np.nan
    return Table(label=label, columns=("y", "x"), values=values)


def three_hospitals(offset: float = 0.0) -> tuple[Table, dict[str, Table]]:
    central = hospital("central.csv", 200, centre=offset + 10.0, seed=1)
    sites = {
        "a": hospital("a.csv", 300, centre=offset + 12.0, seed=2),
        "b": hospital("b.csv", 250, centre=offset + 15.0, seed=3),
    }
    return central, sites


def run(
    central: Table, sites: Mapping[str, Table], *, imputations: int, seed: int = 7
) -> JobResult:
    return asyncio.run(
        simulate(
            algorithm=example(),
            central=central,
            sites=sites,
            targets=[("y", "gaussian")],
            params={"imputations": imputations},
            seed=seed,
        )
    )


@functools.cache
def three_hospitals_run(seed: int) -> JobResult:
    """``run(*three_hospitals(), imputations=3, seed=seed)``, run once and shared by the tests
    that only read it (``dataset`` and the comparisons copy; nothing mutates it)."""
    central, sites = three_hospitals()
    return run(central, sites, imputations=3, seed=seed)


def observed_target(*tables: Table) -> np.ndarray:
    values = np.concatenate([t.values[:, 0] for t in tables])
    kept: np.ndarray = values[~np.isnan(values)]
    return kept


class RecordingTransport:
    """The in-memory transport, keeping every request and reply it carries, decoded."""

    def __init__(self, runners: Mapping[str, SiteRunner]) -> None:
        self._inner = InMemoryTransport(runners)
        self.exchanges: list[tuple[str, Request, Reply]] = []

    async def exchange(self, site: str, frame: bytes) -> bytes:
        answer = await self._inner.exchange(site, frame)
        request, reply = decode(frame), decode(answer)
        assert isinstance(request, Request) and isinstance(reply, Reply)
        self.exchanges.append((site, request, reply))
        return answer


# ---------------------------------------------------------------- the package


def test_the_example_is_a_valid_package_and_passes_the_smoke_test() -> None:
    algorithm = example()

    result = smoke_test(algorithm)

    assert (algorithm.name, algorithm.version) == ("MEANDRAW", "1.0.0")
    assert not algorithm.capabilities.multiple_targets
    assert algorithm.capabilities.target_types == ("gaussian",)
    assert len(result.imputed_cells) == 2
    assert result.report["digest"] == algorithm.digest


def test_fip_algorithms_check_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["algorithms", "--check", str(EXAMPLE)])

    out = capsys.readouterr().out
    assert code == 0
    assert "MEANDRAW 1.0.0 is valid" in out
    assert example().digest in out


def test_fip_simulate_runs_the_example_folder(
    demo_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "meandraw"

    code = main(
        [
            "simulate",
            "--algorithm",
            str(EXAMPLE),
            "--central",
            str(demo_files["central"]),
            "--site",
            str(demo_files["north"]),
            "--site",
            str(demo_files["south"]),
            "--target",
            "bmi:gaussian",
            "--imputations",
            "4",
            "--seed",
            "7",
            "--out",
            str(out),
        ]
    )

    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["algorithm"] == "MEANDRAW"
    assert [s["name"] for s in report["sites"]] == [CENTRAL, "north", "south"]
    assert report["round_trips"] == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "fip_mids.R",
        "imputations.zip",
        "imputations_long.csv",
        "methods.csv",
        "report.json",
    ]


# ---------------------------------------------------------------- the maths


def test_the_fit_equals_the_pooled_rows_even_far_from_zero() -> None:
    # A mean of 1e6 with a spread of 2: y'y - N ybar^2 would keep only 4-5 digits of the SSE;
    # the centred sums the sites send keep it exact to rounding.
    central, sites = three_hospitals(offset=1e6)
    pooled = observed_target(central, *sites.values())

    result = run(central, sites, imputations=1)

    (fit,) = result.report["fits"]
    assert fit["n"] == pooled.size
    assert fit["coefficients"]["(intercept)"] == pytest.approx(pooled.mean(), rel=1e-14)
    assert set(fit["coefficients"]) == {"(intercept)"}
    assert fit["sse"] == pytest.approx(np.square(pooled - pooled.mean()).sum(), rel=1e-9)


def test_imputations_centre_on_the_pooled_mean_and_spread() -> None:
    central, sites = three_hospitals()
    pooled = observed_target(central, *sites.values())
    missing = np.isnan(central.values[:, 0])
    m_total = 400

    result = run(central, sites, imputations=m_total)

    imputed = np.stack(result.imputed_cells)  # (M, cells missing at central)
    assert imputed.shape == (m_total, missing.sum())
    # Each dataset's mean has variance about s^2/N + s^2/k; over M datasets, divided by M.
    s2 = pooled.var(ddof=1)
    error = np.sqrt((s2 / pooled.size + s2 / missing.sum()) / m_total)
    assert abs(imputed.mean() - pooled.mean()) < 4 * error
    assert imputed.var() == pytest.approx(s2, rel=0.05)
    # Central's own rows are centred at 10, the pool at about 12.5: the draws follow the pool.
    assert abs(imputed.mean() - np.nanmean(central.values[:, 0])) > 1.0


def test_observed_cells_and_other_columns_are_untouched() -> None:
    central, _ = three_hospitals()

    result = three_hospitals_run(11)

    missing = np.isnan(central.values[:, 0])
    for m in (1, 2, 3):
        dataset = result.dataset(m)
        assert not np.isnan(dataset).any()
        np.testing.assert_array_equal(dataset[~missing], central.values[~missing])
        np.testing.assert_array_equal(dataset[:, 1], central.values[:, 1])


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    central, sites = three_hospitals()

    first = three_hospitals_run(11)  # run apart from `again`: the cache is not what repeats
    again = run(central, sites, imputations=3, seed=11)
    other = run(central, sites, imputations=3, seed=12)

    for a, b in zip(first.imputed_cells, again.imputed_cells, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.imputed_cells[0], other.imputed_cells[0])


# ---------------------------------------------------------------- what the sites send


def test_a_site_sends_three_numbers_and_nothing_else() -> None:
    central, sites = three_hospitals()
    algorithm = example()
    spec = make_spec(
        algorithm=algorithm,
        central=central,
        sites=sites,
        targets=[("y", "gaussian")],
        params={"imputations": 2},
        seed=3,
    )
    runners = {
        name: SiteRunner(site=name, data=table, algorithm=algorithm)
        for name, table in sites.items()
    }
    transport = RecordingTransport(runners)

    result = asyncio.run(
        run_job(
            spec=spec,
            central_module=algorithm.central,
            local=SiteRunner(site=CENTRAL, data=central, algorithm=algorithm, is_central=True),
            transport=transport,
        )
    )

    moments = [
        (site, reply)
        for site, request, reply in transport.exchanges
        if request.ops[-1].name == "moments"
    ]
    assert sorted(site for site, _ in moments) == ["a", "b"]
    for site, reply in moments:
        (answer,) = reply.results
        assert set(answer) == {"n", "sum", "ss"}
        assert all(isinstance(v, int | float) for v in answer.values())
        kept = observed_target(sites[site])
        assert answer["n"] == kept.size
        assert answer["sum"] == pytest.approx(kept.sum(), rel=1e-12)
    report = result.report
    assert report["round_trips"] == 3  # open, moments, close
    assert report["bytes_received"] < 2_000
    assert len(transport.exchanges) == 3 * len(sites)


def test_a_site_with_too_few_values_refuses() -> None:
    central, sites = three_hospitals()
    sites["tiny"] = hospital("tiny.csv", 8, centre=12.0, seed=4, missing=0.0)

    with pytest.raises(SiteFailed) as caught:
        run(central, sites, imputations=1)

    assert set(caught.value.failures) == {"tiny"}
    assert "min_rows" in caught.value.failures["tiny"]


# ---------------------------------------------------------------- the document


def shown_files(text: str) -> dict[str, list[str]]:
    """Fenced blocks preceded by a line ``**`docs/examples/...`**``: path -> block texts."""
    lines = text.splitlines()
    shown: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        marker = _FILE_MARKER.match(line.strip())
        if marker is None:
            continue
        start = i + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        assert start < len(lines) and lines[start].startswith("```"), (
            f"docs/algorithms.md line {i + 1}: {marker.group(1)} is not followed by a code block"
        )
        end = lines.index("```", start + 1)
        shown.setdefault(marker.group(1), []).append("\n".join(lines[start + 1 : end]) + "\n")
    return shown


def signature(content: str) -> str:
    """A file's first telling line: its docstring's first line, or a JSON file's name line."""
    return next(line for line in content.splitlines() if len(line.strip()) > 3)


def code_blocks(text: str) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^```[a-z]*\n(.*?)^```$", text, re.M | re.S)]


def test_the_document_shows_every_example_file_exactly() -> None:
    text = DOC.read_text()
    on_disk = {
        f"docs/examples/MEANDRAW/{path.name}": path.read_text()
        for path in sorted(EXAMPLE.iterdir())
        if path.is_file()
    }

    shown = shown_files(text)

    assert set(shown) == set(on_disk)
    for path, blocks in shown.items():
        for block in blocks:
            assert block == on_disk[path], f"docs/algorithms.md shows {path} other than the file"
    # A copy shown without its marker would escape the comparison: there must be none.
    signatures = [signature(content) for content in on_disk.values()]
    copies = [b for b in code_blocks(text) if any(s in b.splitlines() for s in signatures)]
    assert len(copies) == sum(len(blocks) for blocks in shown.values())


def test_the_documented_pytest_example_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in code_blocks(DOC.read_text()) if "def test_" in b]
    assert blocks, "docs/algorithms.md shows no pytest example"
    monkeypatch.chdir(ROOT)  # the example loads docs/examples/MEANDRAW by a relative path

    for block in blocks:
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(block, "docs/algorithms.md", "exec"), namespace)
        tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
        assert tests
        for test in tests:
            test()
