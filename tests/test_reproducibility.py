"""Same inputs and seed, same bytes; the randomness is keyed by (seed, site name) only; and
float64 values cross the wire exactly."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from federation.data import Table
from federation.job import random_stream
from federation.outputs import long_csv, zip_bytes
from federation.protocol import Op, Reply, Request, decode, encode
from federation.runtime import JobResult
from tests.helpers import run, table

COLUMNS = ("x1", "x2", "g", "b")


def site_values(
    rng: np.random.Generator, rows: int, *, dyadic: bool = False, missing: tuple[int, ...] = (2, 3)
) -> np.ndarray:
    """x1, x2 normal, g linear in them plus noise, b logistic in them; the 0-based columns
    ``missing`` (g and b) miss ~20% of their cells.

    ``dyadic`` rounds x1, x2 and g to multiples of 1/8, so that every sum of products a site
    sends is exact in float64 and sums over sites do not depend on their order.
    """
    x = rng.normal(size=(rows, 2))
    g = 0.5 + x @ np.array([1.0, -0.7]) + rng.normal(size=rows)
    b = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(x @ np.array([0.9, 0.4]))))).astype(float)
    values = np.column_stack([x, g, b])
    if dyadic:
        values[:, :3] = np.round(values[:, :3] * 8.0) / 8.0
    for column in missing:
        values[rng.random(rows) < 0.2, column] = np.nan
    return values


def tables(
    seed: int, *, dyadic: bool = False, central_missing: tuple[int, ...] = (2, 3)
) -> tuple[Table, dict[str, Table]]:
    """Central and three sites of a few hundred rows; central misses ``central_missing``."""
    rng = np.random.default_rng(seed)
    central_values = site_values(rng, 150, dyadic=dyadic, missing=central_missing)
    central = table("central", COLUMNS, central_values)
    sites = {
        name: table(name, COLUMNS, site_values(rng, rows, dyadic=dyadic))
        for name, rows in (("north", 200), ("south", 250), ("east", 180))
    }
    return central, sites


def simi(seed: int, kind: str, *, sites_reversed: bool = False, dyadic: bool = False) -> JobResult:
    column = 2 if kind == "gaussian" else 3
    central, sites = tables(5, dyadic=dyadic, central_missing=(column,))
    if sites_reversed:
        sites = dict(reversed(sites.items()))
    target = COLUMNS[column]
    return run("SIMI", central, sites, [(target, kind)], seed=seed, imputations=3)


def simice(seed: int, sites: dict[str, Table] | None = None) -> JobResult:
    central, default_sites = tables(6)
    chosen = default_sites if sites is None else sites
    targets = [("g", "gaussian"), ("b", "logistic")]
    return run(
        "SIMICE",
        central,
        chosen,
        targets,
        seed=seed,
        imputations=3,
        iteration_before_first_imputation=2,
        iteration_between_imputations=1,
    )


def test_simi_same_seed_same_bytes() -> None:
    """Two SIMI runs with the same data and seed give byte-identical zip and long CSV."""
    first, second = simi(42, "gaussian"), simi(42, "gaussian")

    assert zip_bytes(first) == zip_bytes(second)
    assert long_csv(first) == long_csv(second)
    assert first.report["fits"] == second.report["fits"]


def test_simice_same_seed_same_bytes() -> None:
    """Two SIMICE runs (Gaussian and logistic targets, three sites) with the same seed give
    byte-identical outputs, although every site draws its own noise in threads."""
    first, second = simice(42), simice(42)

    assert zip_bytes(first) == zip_bytes(second)
    assert long_csv(first) == long_csv(second)
    assert first.report["fits"] == second.report["fits"]


@pytest.mark.parametrize("kind", ["gaussian", "logistic"])
def test_simi_different_seed_different_imputations(kind: str) -> None:
    """Another seed draws other imputations (and the fit, which is not random, is the same)."""
    first, second = simi(42, kind), simi(43, kind)

    assert first.report["fits"] == second.report["fits"]
    for a, b in zip(first.imputed_cells, second.imputed_cells, strict=True):
        assert not np.array_equal(a, b)
    if kind == "gaussian":
        assert np.mean(first.imputed_cells[0] != second.imputed_cells[0]) == 1.0
    assert zip_bytes(first) != zip_bytes(second)


def test_simice_different_seed_different_imputations() -> None:
    """Another seed gives other SIMICE imputations of every target."""
    first, second = simice(42), simice(43)

    missing = first.missing
    for m in range(1, 4):
        a, b = first.dataset(m), second.dataset(m)
        assert not np.array_equal(a[missing[:, 2], 2], b[missing[:, 2], 2])
        assert not np.array_equal(a[missing[:, 3], 3], b[missing[:, 3], 3])
    assert long_csv(first) != long_csv(second)


def test_random_stream_depends_on_seed_and_key_only() -> None:
    """random_stream(seed, key) is a pure function of its two arguments."""
    draws = random_stream(7, "north").random(5)

    assert np.array_equal(random_stream(7, "north").random(5), draws)
    assert not np.array_equal(random_stream(7, "south").random(5), draws)
    assert not np.array_equal(random_stream(8, "north").random(5), draws)
    assert not np.array_equal(random_stream(7, "north ").random(5), draws)


@pytest.mark.parametrize("kind", ["gaussian", "logistic"])
def test_simi_results_do_not_depend_on_site_order(kind: str) -> None:
    """Listing the same sites in another order does not change SIMI's imputations: nothing
    random is keyed by a site's position. With dyadic data every sum is exact, so the
    Gaussian outputs are byte-identical; logistic sums may differ in the last bit, so its
    fit is compared to 1e-12 and its 0/1 draws exactly."""
    listed, reversed_ = (
        simi(42, kind, dyadic=True),
        simi(42, kind, sites_reversed=True, dyadic=True),
    )

    fits = listed.report["fits"][0], reversed_.report["fits"][0]
    np.testing.assert_allclose(
        list(fits[0]["coefficients"].values()),
        list(fits[1]["coefficients"].values()),
        rtol=1e-12,
    )
    for a, b in zip(listed.imputed_cells, reversed_.imputed_cells, strict=True):
        np.testing.assert_array_equal(a, b)
    if kind == "gaussian":
        assert zip_bytes(listed) == zip_bytes(reversed_)
        assert long_csv(listed) == long_csv(reversed_)


def test_simice_results_do_not_depend_on_site_order() -> None:
    """Reordering the sites leaves SIMICE's imputations unchanged up to rounding: each site's
    noise comes from (seed, its name), not from its place in the list."""
    _, sites = tables(6)
    reordered = {name: sites[name] for name in ("east", "north", "south")}

    listed, shuffled = simice(42, sites), simice(42, reordered)

    for a, b in zip(listed.imputed_cells, shuffled.imputed_cells, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_simice_results_depend_on_site_names() -> None:
    """Renaming a site changes its random stream, hence its imputed cells and, through the
    pooled fits, central's imputations: the name is part of the key."""
    _, sites = tables(6)
    renamed = {("west" if name == "north" else name): data for name, data in sites.items()}

    listed, other = simice(42, sites), simice(42, renamed)

    assert not np.array_equal(listed.imputed_cells[-1], other.imputed_cells[-1])


def float_bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


AWKWARD = [
    0.1,
    0.1 + 0.2,
    -1.0 / 3.0,
    1e-300,
    -0.0,
    5e-324,  # smallest subnormal
    2.225073858507201e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    1e-320,
    2.0**53,
    2.0**53 + 2.0,
    123456789012345678.0,
    1e22,
    1.7976931348623157e308,
]


def test_float64_arrays_cross_the_wire_bit_for_bit() -> None:
    """Arrays of awkward float64 values, any bit pattern (NaN payloads, infinities,
    subnormals), non-contiguous and 2-D, decode to the same bytes, shape and dtype."""
    awkward = np.array(AWKWARD)
    patterns = np.random.default_rng(3).integers(0, 2**64, size=64, dtype=np.uint64)
    any_bits = patterns.view(np.float64)
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4) / 7.0
    request = Request(
        job_id="j",
        seq=1,
        ops=[Op(name="f", args={"a": awkward, "bits": any_bits, "t": matrix.T, "s": awkward[::3]})],
    )

    decoded = decode(encode(request))

    assert isinstance(decoded, Request)
    args = decoded.ops[0].args

    for key, sent in (("a", awkward), ("bits", any_bits), ("t", matrix.T), ("s", awkward[::3])):
        received = args[key]
        assert received.dtype == np.float64
        assert received.shape == sent.shape
        assert received.tobytes() == np.ascontiguousarray(sent).tobytes(), key
    assert np.signbit(args["a"][AWKWARD.index(-0.0)])


def test_float64_scalars_cross_the_wire_exactly() -> None:
    """Scalar results (Python floats and numpy float64, as Q and y'y travel) keep every bit,
    -0.0 and subnormals included; large integers stay integers."""
    results: list[dict[str, Any]] = [{"q": v, "yty": np.float64(v)} for v in AWKWARD]
    results.append({"n": np.int64(2**63 - 1), "m": -(2**63)})
    reply = Reply(job_id="j", seq=2, results=results)

    decoded = decode(encode(reply))

    assert isinstance(decoded, Reply)
    received = decoded.results[:-1]
    assert float_bits([r["q"] for r in received]) == float_bits(AWKWARD)
    assert float_bits([r["yty"] for r in received]) == float_bits(AWKWARD)
    assert decoded.results[-1] == {"n": 2**63 - 1, "m": -(2**63)}
