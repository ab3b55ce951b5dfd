"""Federated fits equal the fit of all sites' rows put together, and cost what they should.

The references here are written from ALGORITHMS.md with plain numpy, independently of
``algorithms/``: the design of target j is every other column, then an intercept column
appended last; the ridge penalty is P = lambda * diag(C), C the sums of squared deviations of
the design's columns over the fit's rows, 0 for the intercept (ALGORITHMS.md, Conventions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from algorithms import _newton
from algorithms._stats import Fit
from federation.data import Table
from federation.job import CENTRAL, JobEvent
from federation.protocol import Request, decode
from federation.runtime import JobResult, run_job
from federation.simulation import make_spec
from federation.site import SiteRunner
from federation.transport import InMemoryTransport
from tests.helpers import builtin, run, table

COLUMNS = ("x1", "x2", "x3", "g", "b")
G, B = 4, 5  # 1-based indices of the Gaussian and the binary column
RIDGE = 1e-5

GAUSSIAN_RTOL = 1e-9
NEWTON_TOLERANCE = 1e-5
# The federated Newton stops when the direction it would take next, or the step it just took,
# moves no coefficient by 1e-5 (TOLERANCE in _stats). Near the optimum a Newton direction is
# the distance to the optimum up to O(|d|^2), so the returned beta is within 1e-5 (+ ~1e-10)
# of the pooled optimum, and nothing better is promised: when it stops on the direction test
# the error *is* that last untaken direction, e.g. 6e-6 on some of these data sets, even though
# convergence is quadratic. So beta is checked to 1.5e-5 absolute. What does not depend on
# convergence is checked tightly: the Hessian equals the pooled one at the federated beta to
# 1e-9, and the pooled Newton step from the federated beta is below the stopping tolerance.
LOGISTIC_ATOL = 1.5 * NEWTON_TOLERANCE


# ---------------------------------------------------------------- data


def complete_values(rng: np.random.Generator, rows: int) -> np.ndarray:
    """x1..x3 standard normal, g linear in them plus noise, b logistic in them."""
    x = rng.normal(size=(rows, 3))
    g = 1.0 + x @ np.array([0.5, -1.0, 0.3]) + rng.normal(size=rows)
    eta = 0.3 + x @ np.array([0.8, -0.5, 0.2])
    b = (rng.random(rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return np.column_stack([x, g, b])


def punch(rng: np.random.Generator, values: np.ndarray, column: int, fraction: float) -> None:
    """Make ``fraction`` of the cells of 0-based ``column`` missing, in place."""
    values[rng.random(values.shape[0]) < fraction, column] = np.nan


def simi_data(seed: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Central's values and the remote rows (to be split among sites) for a SIMI target.

    Central misses the target in some rows (to impute) and a predictor in a few rows whose
    target is observed; remote rows miss the target and, in some rows, a predictor.
    """
    rng = np.random.default_rng(seed)
    central = complete_values(rng, 200)
    remote = complete_values(rng, 600)
    punch(rng, central, target - 1, 0.2)
    predictor = 0 if target != 1 else 1
    observed = ~np.isnan(central[:, target - 1])
    central[observed & (rng.random(200) < 0.05), predictor] = np.nan
    punch(rng, remote, target - 1, 0.2)
    punch(rng, remote, predictor, 0.1)
    punch(rng, remote, 2, 0.05)
    return central, remote


def split(
    remote: np.ndarray, sizes: Sequence[int], order: np.ndarray | None = None
) -> dict[str, Table]:
    """Remote rows cut into sites of ``sizes`` rows, after reordering them by ``order``."""
    rows = remote if order is None else remote[order]
    cuts = np.cumsum([0, *sizes])
    assert cuts[-1] == rows.shape[0]
    return {
        f"site{k}": table(f"site{k}", COLUMNS, rows[cuts[k] : cuts[k + 1]])
        for k in range(len(sizes))
    }


# ---------------------------------------------------------------- reference maths


def pooled_design(values: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) over the rows with every cell observed: X = the other columns, then ones."""
    complete = values[~np.isnan(values).any(axis=1)]
    others = [c for c in range(values.shape[1]) if c != target - 1]
    x = np.column_stack([complete[:, others], np.ones(complete.shape[0])])
    return x, complete[:, target - 1]


@dataclass(frozen=True)
class GaussianReference:
    beta: np.ndarray
    sse: float
    n: int


def penalty(x: np.ndarray, ridge: float) -> np.ndarray:
    """P = ridge * diag(sum of squared deviations of each column), the intercept's 0."""
    deviations = ((x - x.mean(axis=0)) ** 2).sum(axis=0)
    deviations[-1] = 0.0
    return ridge * np.diag(deviations)


def gaussian_reference(x: np.ndarray, y: np.ndarray, ridge: float) -> GaussianReference:
    """beta = (X'X + P)^-1 X'y, SSE = |y - X beta|^2."""
    n = y.size
    gram = x.T @ x + penalty(x, ridge)
    beta = np.linalg.solve(gram, x.T @ y)
    residual = y - x @ beta
    return GaussianReference(beta=beta, sse=float(residual @ residual), n=n)


def sigmoid(eta: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.exp(-np.logaddexp(0.0, -eta))
    return result


def logistic_hessian(x: np.ndarray, beta: np.ndarray, ridge: float) -> np.ndarray:
    """X'WX + P at ``beta``, W = diag(p(1 - p))."""
    mu = sigmoid(x @ beta)
    hessian: np.ndarray = (x * (mu * (1.0 - mu))[:, None]).T @ x
    hessian += penalty(x, ridge)
    return hessian


def logistic_step(x: np.ndarray, y: np.ndarray, beta: np.ndarray, ridge: float) -> np.ndarray:
    """The Newton direction H^-1 g of the penalised log-likelihood at ``beta``."""
    gradient = x.T @ (y - sigmoid(x @ beta)) - penalty(x, ridge) @ beta
    step: np.ndarray = np.linalg.solve(logistic_hessian(x, beta, ridge), gradient)
    return step


def logistic_reference(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """The penalised maximum-likelihood beta by plain Newton, run to 1e-12 (relative to the
    coefficient's size, for an intercept in the thousands)."""
    beta: np.ndarray = np.zeros(x.shape[1])
    for _ in range(100):
        step = logistic_step(x, y, beta, ridge)
        beta = beta + step
        if np.max(np.abs(step) / (1.0 + np.abs(beta))) < 1e-12:
            return beta
    raise AssertionError("the reference Newton did not converge")


# ---------------------------------------------------------------- reading results


def coefficients(fit: Mapping[str, Any]) -> np.ndarray:
    return np.array(list(fit["coefficients"].values()))


def predictor_names(target: int) -> list[str]:
    return [c for i, c in enumerate(COLUMNS) if i != target - 1] + ["(intercept)"]


def assert_gaussian_fit(fit: Mapping[str, Any], ref: GaussianReference) -> None:
    assert fit["n"] == ref.n
    np.testing.assert_allclose(coefficients(fit), ref.beta, rtol=GAUSSIAN_RTOL, atol=1e-12)
    assert fit["sse"] == pytest.approx(ref.sse, rel=GAUSSIAN_RTOL)


def assert_logistic_beta(beta: np.ndarray, x: np.ndarray, y: np.ndarray, ridge: float) -> None:
    """Within the Newton tolerance of the pooled optimum, and pooled-stationary to it."""
    np.testing.assert_allclose(beta, logistic_reference(x, y, ridge), rtol=0, atol=LOGISTIC_ATOL)
    assert np.max(np.abs(logistic_step(x, y, beta, ridge))) < NEWTON_TOLERANCE


@pytest.fixture
def logistic_fits(monkeypatch: pytest.MonkeyPatch) -> list[Fit]:
    """Every logistic ``Fit`` the central halves compute (their Hessians are not reported)."""
    captured: list[Fit] = []
    original = _newton.fit_pooled

    async def recording(*args: Any, **kwargs: Any) -> Fit:
        fit = await original(*args, **kwargs)
        if fit.kind == "logistic":
            captured.append(fit)
        return fit

    monkeypatch.setattr("algorithms._newton.fit_pooled", recording)
    return captured


# ---------------------------------------------------------------- a job built by hand


class RecordingTransport:
    """In-memory transport that keeps every request (once, not once per site)."""

    def __init__(self, runners: Mapping[str, SiteRunner]) -> None:
        self._inner = InMemoryTransport(runners)
        self.requests: dict[int, Request] = {}

    async def exchange(self, site: str, frame: bytes) -> bytes:
        request = decode(frame)
        assert isinstance(request, Request)
        self.requests.setdefault(request.seq, request)
        return await self._inner.exchange(site, frame)

    def operations(self) -> list[list[str]]:
        """The operation names of each request, in order."""
        return [[op.name for op in self.requests[s].ops] for s in sorted(self.requests)]


@dataclass
class Harness:
    """Central and its sites as ``simulate`` builds them, but with the runners at hand."""

    algorithm: str
    central: Table
    sites: Mapping[str, Table]
    local: SiteRunner = field(init=False)
    runners: dict[str, SiteRunner] = field(init=False)
    transport: RecordingTransport = field(init=False)

    def __post_init__(self) -> None:
        algorithm = builtin(self.algorithm)
        self.local = SiteRunner(
            site=CENTRAL, data=self.central, algorithm=algorithm, is_central=True
        )
        self.runners = {
            name: SiteRunner(site=name, data=data, algorithm=algorithm)
            for name, data in self.sites.items()
        }
        self.transport = RecordingTransport(self.runners)

    @property
    def participants(self) -> list[SiteRunner]:
        """Central's own runner first, then the sites in the job's order."""
        return [self.local, *self.runners.values()]

    def run(
        self,
        targets: Sequence[tuple[str | int, str]],
        *,
        on_event: Callable[[JobEvent], None] | None = None,
        seed: int = 1,
        **params: Any,
    ) -> JobResult:
        algorithm = builtin(self.algorithm)
        spec = make_spec(
            algorithm=algorithm,
            central=self.central,
            sites=self.sites,
            targets=targets,
            params=params,
            seed=seed,
        )
        return asyncio.run(
            run_job(
                spec=spec,
                central_module=algorithm.central,
                local=self.local,
                transport=self.transport,
                on_event=on_event,
            )
        )


# ---------------------------------------------------------------- SIMI


def test_simi_gaussian_equals_pooled_fit() -> None:
    """SIMI's Gaussian beta, SSE and N equal the pooled closed form to 1e-9 relative,
    remote rows missing a predictor being left out of both."""
    central, remote = simi_data(11, G)
    sites = split(remote, [150, 200, 250])
    x, y = pooled_design(np.vstack([central, remote]), G)

    result = run("SIMI", table("central", COLUMNS, central), sites, [("g", "gaussian")])

    (fit,) = result.report["fits"]
    assert list(fit["coefficients"]) == predictor_names(G)
    assert_gaussian_fit(fit, gaussian_reference(x, y, RIDGE))
    assert sum(s["rows_used"] for s in result.report["sites"]) == y.size


def test_simi_logistic_equals_pooled_fit(logistic_fits: list[Fit]) -> None:
    """SIMI's logistic beta is the pooled penalised optimum (to the Newton tolerance) and its
    Hessian is the pooled X'WX + P at that beta (to 1e-9)."""
    central, remote = simi_data(12, B)
    sites = split(remote, [150, 200, 250])
    x, y = pooled_design(np.vstack([central, remote]), B)

    result = run("SIMI", table("central", COLUMNS, central), sites, [("b", "logistic")])

    (fit,) = result.report["fits"]
    (captured,) = logistic_fits
    beta = coefficients(fit)
    assert fit["n"] == captured.n == y.size
    assert np.array_equal(beta, captured.beta)
    assert_logistic_beta(beta, x, y, RIDGE)
    np.testing.assert_allclose(
        captured.matrix, logistic_hessian(x, beta, RIDGE), rtol=GAUSSIAN_RTOL, atol=0
    )
    np.testing.assert_allclose(
        captured.matrix,
        logistic_hessian(x, logistic_reference(x, y, RIDGE), RIDGE),
        rtol=1e-4,
    )


def test_simi_without_ridge_equals_unpenalised_pooled_fit(logistic_fits: list[Fit]) -> None:
    """With ridge = 0 on well-conditioned data, both fits equal the plain pooled MLE / OLS."""
    central_g, remote_g = simi_data(13, G)
    central_b, remote_b = simi_data(14, B)
    xg, yg = pooled_design(np.vstack([central_g, remote_g]), G)
    xb, yb = pooled_design(np.vstack([central_b, remote_b]), B)

    gaussian = run(
        "SIMI",
        table("central", COLUMNS, central_g),
        split(remote_g, [300, 300]),
        [("g", "gaussian")],
        ridge=0.0,
    )
    logistic = run(
        "SIMI",
        table("central", COLUMNS, central_b),
        split(remote_b, [300, 300]),
        [("b", "logistic")],
        ridge=0.0,
    )

    assert_gaussian_fit(gaussian.report["fits"][0], gaussian_reference(xg, yg, 0.0))
    beta = coefficients(logistic.report["fits"][0])
    assert_logistic_beta(beta, xb, yb, 0.0)
    np.testing.assert_allclose(
        logistic_fits[0].matrix, logistic_hessian(xb, beta, 0.0), rtol=GAUSSIAN_RTOL, atol=0
    )


@pytest.mark.parametrize(("target", "kind"), [(G, "gaussian"), (B, "logistic")])
def test_simi_fit_with_an_offset_predictor_and_a_constant_one(
    target: int, kind: str, logistic_fits: list[Fit]
) -> None:
    """x1 moved to a calendar year (2008 + x1) and x3 constant: the penalty does not shrink the
    year's slope (it is lambda * its sum of squared deviations), and x3 is left out of the fit
    and named; the rest equals the pooled fit without x3 (Gaussian: 1e-7, since the sites'
    X'X holds 2008^2 and C is the difference of such sums, rounding costs about six digits of
    2008 / sd(x1) squared; logistic: the Newton tolerance)."""
    central, remote = simi_data(16, target)
    for values in (central, remote):
        values[:, 0] = 2008.0 + values[:, 0]
        values[:, 2] = 7.0
    sites = split(remote, [250, 350])
    x, y = pooled_design(np.vstack([central, remote]), target)
    kept = [c for c in range(x.shape[1]) if c != 2]  # x3 is design column 2 for g and b
    name = COLUMNS[target - 1]

    result = run("SIMI", table("central", COLUMNS, central), sites, [(name, kind)])

    (fit,) = result.report["fits"]
    assert fit["dropped"] == ["x3"] and fit["coefficients"]["x3"] == 0.0
    beta = np.delete(coefficients(fit), 2)
    if kind == "gaussian":
        reference = gaussian_reference(x[:, kept], y, RIDGE)
        np.testing.assert_allclose(beta, reference.beta, rtol=1e-7, atol=1e-12)
        assert fit["sse"] == pytest.approx(reference.sse, rel=1e-7)
    else:
        expected = logistic_reference(x[:, kept], y, RIDGE)
        np.testing.assert_allclose(beta[:-1], expected[:-1], rtol=0, atol=LOGISTIC_ATOL)
        # The intercept absorbs 2008 times the year's slope, and with it that slope's error.
        assert beta[-1] == pytest.approx(expected[-1], abs=2008 * LOGISTIC_ATOL)


@pytest.mark.parametrize(("target", "kind"), [(G, "gaussian"), (B, "logistic")])
def test_simi_fit_does_not_depend_on_how_rows_are_split(target: int, kind: str) -> None:
    """Central keeping its rows, the remote rows in 1 site, in 3 sites, or shuffled across
    3 sites of other sizes give the same fit (1e-9 Gaussian, Newton tolerance logistic)."""
    central, remote = simi_data(15, target)
    shuffled = np.random.default_rng(99).permutation(remote.shape[0])
    layouts = {
        "one site": split(remote, [600]),
        "three sites": split(remote, [200, 200, 200]),
        "shuffled": split(remote, [90, 310, 200], order=shuffled),
    }
    name = COLUMNS[target - 1]

    fits = {
        label: run("SIMI", table("central", COLUMNS, central), sites, [(name, kind)]).report[
            "fits"
        ][0]
        for label, sites in layouts.items()
    }

    first = fits["one site"]
    for label in ("three sites", "shuffled"):
        assert fits[label]["n"] == first["n"], label
        if kind == "gaussian":
            np.testing.assert_allclose(
                coefficients(fits[label]), coefficients(first), rtol=GAUSSIAN_RTOL, atol=1e-12
            )
            assert fits[label]["sse"] == pytest.approx(first["sse"], rel=GAUSSIAN_RTOL)
        else:
            np.testing.assert_allclose(
                coefficients(fits[label]), coefficients(first), rtol=0, atol=2 * LOGISTIC_ATOL
            )


# ---------------------------------------------------------------- SIMICE


def simice_tables(seed: int) -> tuple[Table, dict[str, Table]]:
    """Central and two sites; g and b miss cells everywhere, the sites also miss some x1."""
    rng = np.random.default_rng(seed)
    values = {"central": complete_values(rng, 250), "north": complete_values(rng, 300)}
    values["south"] = complete_values(rng, 200)
    for name, v in values.items():
        punch(rng, v, G - 1, 0.25)
        punch(rng, v, B - 1, 0.2)
        if name != "central":
            punch(rng, v, 0, 0.05)
    tables = {name: table(name, COLUMNS, v) for name, v in values.items()}
    central = tables.pop("central")
    return central, tables


@dataclass(frozen=True)
class Snapshot:
    """Every participant's current data (z) and observed masks, at one fit event."""

    z: list[np.ndarray]
    observed: list[dict[int, np.ndarray]]


def snapshot_on_fit(harness: Harness, snapshots: list[Snapshot]) -> Callable[[JobEvent], None]:
    def on_event(event: JobEvent) -> None:
        if event.kind != "fit":
            return
        jobs = [runner.job for runner in harness.participants]
        assert all(job is not None for job in jobs)
        snapshots.append(
            Snapshot(
                z=[job.state["z"].copy() for job in jobs if job is not None],
                observed=[
                    {k: v.copy() for k, v in job.state["rows"].items()}
                    for job in jobs
                    if job is not None
                ],
            )
        )

    return on_event


def test_simice_every_fit_equals_pooled_fit_of_current_data(logistic_fits: list[Fit]) -> None:
    """In every cycle, each SIMICE fit (Gaussian g, logistic b) equals the pooled fit over the
    concatenation of all participants' current data, on the rows where the target was
    originally observed."""
    central, sites = simice_tables(21)
    harness = Harness("SIMICE", central, sites)
    snapshots: list[Snapshot] = []
    targets = [("g", "gaussian"), ("b", "logistic")]

    result = harness.run(
        targets,
        on_event=snapshot_on_fit(harness, snapshots),
        imputations=2,
        iteration_before_first_imputation=2,
        iteration_between_imputations=1,
        chains="single",
    )

    fits = result.report["fits"]
    assert [(f["cycle"], f["target"]) for f in fits] == [
        (c, t) for c in (1, 2, 3) for t in ("g", "b")
    ]
    assert len(snapshots) == len(fits)
    originals = [central, *sites.values()]
    logistic = iter(logistic_fits)
    for k, (fit, snap) in enumerate(zip(fits, snapshots, strict=True)):
        index = COLUMNS.index(fit["target"]) + 1
        for data, z, observed in zip(originals, snap.z, snap.observed, strict=True):
            check_current_data(data.values, z, observed, b_imputed=k >= 2)
        values = np.vstack([z[:, :-1] for z in snap.z])
        rows = np.concatenate([observed[index] for observed in snap.observed])
        x, y = pooled_design(values[rows], index)
        assert fit["n"] == y.size
        assert list(fit["coefficients"]) == predictor_names(index)
        if fit["type"] == "gaussian":
            assert_gaussian_fit(fit, gaussian_reference(x, y, RIDGE))
        else:
            beta = coefficients(fit)
            assert_logistic_beta(beta, x, y, RIDGE)
            np.testing.assert_allclose(
                next(logistic).matrix, logistic_hessian(x, beta, RIDGE), rtol=GAUSSIAN_RTOL
            )
    first_g, later_g = snapshots[0].z[1][:, G - 1], snapshots[2].z[1][:, G - 1]
    assert not np.array_equal(first_g, later_g), "the sites' imputed cells should move"


def check_current_data(
    original: np.ndarray, z: np.ndarray, observed: dict[int, np.ndarray], *, b_imputed: bool
) -> None:
    """z is the rows with complete non-targets, observed cells unchanged, every cell filled
    (b's missing cells hold draws of the site's observed b from the start: 0 or 1)."""
    kept = original[~np.isnan(original[:, [0, 1, 2]]).any(axis=1)]
    assert z.shape == (kept.shape[0], len(COLUMNS) + 1)
    assert np.all(z[:, -1] == 1.0)
    assert not np.isnan(z).any()
    np.testing.assert_array_equal(z[:, :3], kept[:, :3])
    for index in (G, B):
        mask = observed[index]
        np.testing.assert_array_equal(mask, ~np.isnan(kept[:, index - 1]))
        np.testing.assert_array_equal(z[mask, index - 1], kept[mask, index - 1])
    if b_imputed:
        assert set(np.unique(z[:, B - 1])) <= {0.0, 1.0}


# ---------------------------------------------------------------- round trips


def test_simi_logistic_accepted_step_costs_one_round_trip() -> None:
    """Each Newton evaluation is one request carrying one operation at new betas, its reply
    gives H, g and Q together (the first, logistic_start, also the design's sums and squares
    that set the penalty): with every full step accepted, round trips = iterations + 3.

    fit_pooled evaluates the start (1), then per iteration: if the direction at the current
    point is below the tolerance it stops without asking; otherwise one logistic_search asks
    for Q at the steps 1, 1/2, ... and H, g at step 1. With each full step accepted that is
    one evaluation per iteration, so evaluations = iterations + 1, plus open and close.
    """
    central, remote = simi_data(12, B)
    harness = Harness("SIMI", table("central", COLUMNS, central), split(remote, [300, 300]))

    result = harness.run([("b", "logistic")])

    iterations = result.report["fits"][0]["iterations"]
    operations = harness.transport.operations()
    assert operations[0] == ["fip.open"] and operations[-1] == ["fip.close"]
    evaluations = operations[1:-1]
    assert evaluations == [["logistic_start"]] + [["logistic_search"]] * (len(evaluations) - 1)
    betas = {
        request.ops[0].args["theta"].tobytes()
        for request in list(harness.transport.requests.values())[1:-1]
    }
    assert len(betas) == len(evaluations), "no beta is evaluated twice"
    assert iterations >= 3
    assert len(evaluations) == iterations + 1
    assert result.report["round_trips"] == iterations + 3


def test_simice_gaussian_costs_one_round_trip_per_target_per_cycle() -> None:
    """A Gaussian-only SIMICE job makes open + targets * cycles + close round trips: the
    instruction to impute a target rides on the request for the next target's fit."""
    central, sites = simice_tables(22)
    harness = Harness("SIMICE", central, sites)
    cycles = 3 + 2 * 2

    result = harness.run(
        [("g", "gaussian"), ("b", "gaussian")],
        imputations=3,
        iteration_before_first_imputation=3,
        iteration_between_imputations=2,
        chains="single",
    )

    assert len(result.report["fits"]) == 2 * cycles
    assert result.report["round_trips"] == 2 + 2 * cycles
    operations = harness.transport.operations()
    assert operations == [
        ["fip.open"],
        ["fill_unobserved", "gaussian_stats"],
        *[["impute", "gaussian_stats"]] * (2 * cycles - 1),
        ["fip.close"],
    ]
