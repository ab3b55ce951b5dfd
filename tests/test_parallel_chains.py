"""Parallel chains of the chained family (ALGORITHMS.md, SIMICE; issue #12): M independent
chains whose fits of a target travel in one request. Each chain's fit equals the pooled fit on
that chain's current data; the round trips are those of one chain of the same length; a site
refuses a request or a reply that does not hold one entry per chain; secure aggregation sums the
stacked fits exactly; the report, chains.csv and the trace plots carry every chain and R-hat."""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from algorithms import _chains
from algorithms._stats import Fit
from federation import diagnostics
from federation.errors import AlgorithmInvalid, ProtocolError
from federation.job import JobEvent
from federation.outputs import chains_csv
from federation.plots import traces
from federation.protocol import ErrorReply, Op, Reply, Request, decode, encode
from federation.replies import Bounds, Dims, ReplySchema
from federation.simulation import make_spec
from federation.site import OPEN
from tests.helpers import builtin, run, table
from tests.r_reference import run_r
from tests.test_chain_traces import hard_design
from tests.test_exactness import (  # logistic_fits: the fixture
    COLUMNS,
    RIDGE,
    Harness,
    assert_gaussian_fit,
    assert_logistic_beta,
    coefficients,
    gaussian_reference,
    logistic_fits,  # noqa: F401
    logistic_hessian,
    pooled_design,
    predictor_names,
    simice_tables,
)
from tests.test_round_trips import harness as newton_harness

SVG = "{http://www.w3.org/2000/svg}"


def chain_table(job: Any, chain: int) -> np.ndarray:
    """A participant's current data in one chain (0-based), read behind the protocol's back."""
    z = np.array(job.state["z"], copy=True)
    for t in job.targets:
        z[~job.state["rows"][t.index], t.column] = job.state["cells"][t.index][chain]
    return z


def test_each_chain_fit_equals_the_pooled_fit_of_that_chain_current_data(
    logistic_fits: list[Fit],  # noqa: F811 (the fixture imported above)
) -> None:
    """Three chains, a Gaussian and a logistic target, 2 cycles: every fit of every chain equals
    the pooled fit over the concatenation of every participant's data in that chain."""
    central, sites = simice_tables(21)
    harness = Harness("SIMICE", central, sites)
    snapshots: list[list[list[np.ndarray]]] = []
    observed: list[dict[int, np.ndarray]] = []

    def on_event(event: JobEvent) -> None:
        if event.kind == "fit":  # every chain's table, at every participant, as the fit saw it
            jobs = [runner.job for runner in harness.participants]
            snapshots.append([[chain_table(job, c) for c in range(3)] for job in jobs])
            observed[:] = [dict(job.state["rows"]) for job in jobs if job is not None]

    result = harness.run(
        [("g", "gaussian"), ("b", "logistic")],
        on_event=on_event,
        imputations=3,
        iteration_before_first_imputation=2,
        chains="parallel",
    )

    fits = result.report["fits"]
    assert [(f["cycle"], f["target"], f["chain"]) for f in fits] == [
        (c, t, m) for c in (1, 2) for t in ("g", "b") for m in (1, 2, 3)
    ]
    assert len(snapshots) == len(fits) and len(result.imputed_cells) == 3
    for fit, snap in zip(fits, snapshots, strict=True):
        chain = fit["chain"] - 1
        index = COLUMNS.index(fit["target"]) + 1
        values = np.vstack([tables[chain][:, :-1] for tables in snap])
        rows = np.concatenate([masks[index] for masks in observed])
        x, y = pooled_design(values[rows], index)
        assert fit["n"] == y.size
        assert list(fit["coefficients"]) == predictor_names(index)
        if fit["type"] == "gaussian":
            assert_gaussian_fit(fit, gaussian_reference(x, y, RIDGE))
        else:
            beta = coefficients(fit)
            assert_logistic_beta(beta, x, y, RIDGE)
            (same,) = [f for f in logistic_fits if np.array_equal(f.beta, beta)]
            np.testing.assert_allclose(same.matrix, logistic_hessian(x, beta, RIDGE), rtol=1e-9)
    # the chains are independent: their imputations differ from the first cycle on
    first = snapshots[0][1]
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])


def test_parallel_chains_cost_the_round_trips_of_one_chain_of_their_length() -> None:
    """Gaussian targets: 4 chains of 5 cycles make exactly the requests of one chain of 5
    cycles (open, the fits, close); every reply holds 4 fits."""
    central, sites = simice_tables(22)
    targets = [("g", "gaussian"), ("b", "gaussian")]
    one = Harness("SIMICE", central, sites)
    single = one.run(targets, imputations=1, iteration_before_first_imputation=5, chains="single")
    four = Harness("SIMICE", central, sites)
    parallel = four.run(
        targets, imputations=4, iteration_before_first_imputation=5, chains="parallel"
    )

    assert parallel.report["round_trips"] == single.report["round_trips"] == 2 + 2 * 5
    assert four.transport.operations() == one.transport.operations()
    assert parallel.report["chains"] == {"kind": "parallel", "chains": 4, "cycles": 5}
    assert single.report["chains"] == {"kind": "single", "chains": 1, "cycles": 5}
    assert len(parallel.imputed_cells) == 4


def test_newton_chains_in_one_request_cost_the_round_trips_of_the_slowest() -> None:
    """Logistic and categorical targets: each request carries every chain's ask (a search of
    several candidates beside a single evaluation, a finished chain evaluated again), so a fit
    costs the round trips of its slowest chain: at least 1 + its iterations, at most 1 + twice
    them (an accepted shorter step costs one more)."""
    job = newton_harness("SIMICE", "b", "c")
    result = job.run(
        [("b", "logistic"), ("c", "categorical")],
        imputations=3,
        iteration_before_first_imputation=2,
        ridge=1e-3,
        chains="parallel",
    )
    fits = result.report["fits"]
    slowest = [
        max(int(f["iterations"]) for f in fits if (f["cycle"], f["target"]) == key)
        for key in dict.fromkeys((f["cycle"], f["target"]) for f in fits)
    ]
    assert len(slowest) == 2 * 2
    trips = result.report["round_trips"]
    assert 2 + sum(1 + s for s in slowest) <= trips <= 2 + sum(1 + 2 * s for s in slowest)
    assert trips == len(job.transport.operations())


def test_secure_aggregation_sums_every_chain_fits_exactly() -> None:
    """Three remote sites, parallel chains of a Gaussian and a logistic target: the masked job's
    fits equal the clear job's to 1e-9, and its round trips too."""
    job = newton_harness("SIMICE", "g", "b")
    params: dict[str, Any] = {
        "imputations": 3,
        "iteration_before_first_imputation": 2,
        "ridge": 1e-3,
        "chains": "parallel",
    }
    targets = [("g", "gaussian"), ("b", "logistic")]
    sites = {f"s{k}": t for k, t in enumerate([*job.sites.values(), job.sites["north"]])}
    clear = run("SIMICE", job.central, sites, targets, seed=4, **params)
    masked = run("SIMICE", job.central, sites, targets, seed=4, secure_aggregation=True, **params)

    assert masked.report["secure_aggregation"]["masked_rounds"] > 0
    assert len(masked.report["fits"]) == len(clear.report["fits"]) == 2 * 2 * 3
    for mine, theirs in zip(masked.report["fits"], clear.report["fits"], strict=True):
        assert (mine["chain"], mine["cycle"], mine["n"]) == (
            theirs["chain"],
            theirs["cycle"],
            theirs["n"],
        )
        np.testing.assert_allclose(coefficients(mine), coefficients(theirs), rtol=1e-9, atol=1e-12)


def opened_site(chains: str = "parallel") -> tuple[Any, Any]:
    """A remote site of a 3-imputation SIMICE job (logistic b, Gaussian g), opened."""
    job = newton_harness("SIMICE", "g", "b")
    algorithm = builtin("SIMICE")
    spec = make_spec(
        algorithm=algorithm,
        central=job.central,
        sites=job.sites,
        targets=[("g", "gaussian"), ("b", "logistic")],
        params={"imputations": 3, "chains": chains},
        seed=1,
        job_id="j",
    )
    runner = job.runners["north"]
    answer = decode(
        runner.handle(
            encode(Request(job_id="j", seq=0, ops=[Op(name=OPEN, args={"spec": spec.to_wire()})]))
        )
    )
    assert isinstance(answer, Reply), answer
    return runner, spec


def ask(runner: Any, seq: int, name: str, **args: Any) -> ErrorReply | Reply:
    answer = decode(
        runner.handle(encode(Request(job_id="j", seq=seq, ops=[Op(name=name, args=args)])))
    )
    assert isinstance(answer, ErrorReply | Reply)
    return answer


def test_a_site_refuses_a_request_that_is_not_one_entry_per_chain() -> None:
    runner, spec = opened_site()
    b = spec.columns.index("b") + 1
    p = len(spec.columns)
    good = ask(runner, 1, "logistic_stats", target=b, theta=np.zeros((3, p)))
    assert isinstance(good, Reply)
    assert np.asarray(good.results[0]["h"]).shape == (3, p, p)  # one Hessian a chain, one n
    assert int(good.results[0]["n"]) == runner.job.state["rows"][b].sum()
    sent = runner.numbers_sent
    wrong: list[tuple[str, dict[str, Any]]] = [
        ("logistic_stats", {"theta": np.zeros((4, p))}),  # a fourth chain: more than declared
        ("logistic_stats", {"theta": np.zeros(p)}),  # one theta: no chain dimension
        ("impute", {"alpha": np.zeros((2, p))}),
        ("logistic_search", {"theta": np.zeros((3, 4, p)), "candidates": np.array([1, 5, 1])}),
    ]
    for seq, (name, args) in enumerate(wrong, start=2):
        refused = ask(runner, seq, name, target=b, **args)
        assert isinstance(refused, ErrorReply) and refused.kind == "refused", (name, refused)
        assert "chain" in refused.message or "candidates" in refused.message
        assert refused.message.startswith("north")
    assert runner.numbers_sent == sent  # nothing more left the site


def test_a_reply_of_the_wrong_chains_is_refused_and_declarations_are_checked() -> None:
    schema = builtin("SIMICE").replies
    dims = Dims.of(4, 2, {4: (4, 0)}, chains=3)
    reply = {"n": 10, "xtx": np.eye(4), "xty": np.zeros(4), "yty": 1.0}  # one chain's, unstacked
    bounds = Bounds(rows_used=50, target_rows={4: 10})
    with pytest.raises(ProtocolError, match="'xtx'.*shape \\[4, 4\\], declared \\[3, 4, 4\\]"):
        schema.check("gaussian_stats", reply, dims=dims, bounds=bounds, target=4)
    stacked = {
        "n": 10,
        "xtx": np.stack([np.eye(4)] * 3),
        "xty": np.zeros((3, 4)),
        "yty": np.ones(3),
    }
    checked = schema.check("gaussian_stats", stacked, dims=dims, bounds=bounds, target=4)
    assert checked["n"] == 10 and checked["xtx"].shape == (3, 4, 4)
    one = schema.largest_reply(Dims.of(4, 2, {4: (4, 0)}))
    assert schema.largest_reply(dims) == 3 * (one - 1) + 1  # every value but n, once a chain
    for bad in ("float[p,m]", "float[m,p,p,p]", "float[p,p,p]"):
        with pytest.raises(AlgorithmInvalid, match="m \\(the chains\\) only|a leading m"):
            ReplySchema.parse({"replies": {"op": {"v": bad}}, "parameters": {}})
    assert _chains.declared({"op": {"n": "rows", "h": "float[t,t]", "q": "float"}}) == {
        "op": {"n": "rows", "h": "float[m,t,t]", "q": "float[m]"}
    }


def test_the_report_chains_csv_and_trace_plot_hold_every_chain_and_rhat() -> None:
    tables = hard_design(1)
    result = run(
        "SIMICE",
        tables["central"],
        {"a": tables["a"], "b": tables["b"]},
        [("y1", "gaussian"), ("y2", "gaussian")],
        imputations=4,
        iteration_before_first_imputation=6,
    )
    assert result.report["params"]["chains"] == "parallel"  # the default
    missing = result.missing
    for column, (name, entry) in enumerate(result.report["traces"].items(), start=1):
        assert len(entry["chains"]) == 4 and all(len(c) == 6 for c in entry["chains"])
        for m, chain in enumerate(entry["chains"], start=1):  # dataset m is chain m's last cycle
            cells = result.dataset(m)[missing[:, column], column]
            assert chain[-1]["mean"] == pytest.approx(cells.mean(), rel=1e-12)
            assert chain[-1]["sd"] == pytest.approx(cells.std(ddof=1), rel=1e-12)
        judged = {
            q: diagnostics.rhat(np.array([[p[q] for p in c] for c in entry["chains"]]))
            for q in ("mean", "sd")
        }
        assert entry["rhat"] == pytest.approx(judged, rel=1e-15)
        flagged = any(
            w.startswith(f"target '{name}' may not have settled") for w in result.report["warnings"]
        )
        assert flagged == any(v > diagnostics.RHAT_LIMIT for v in judged.values())
    rows = list(csv.DictReader(io.StringIO((chains_csv(result.report) or b"").decode())))
    assert sorted({int(r["chain"]) for r in rows}) == [1, 2, 3, 4] and len(rows) == 2 * 4 * 6
    plot = traces(result)[0]
    assert plot.numbers.rhat == result.report["traces"]["y1"]["rhat"]
    root = ET.fromstring(plot.svg)
    for chain in range(1, 5):
        assert root.find(f".//{SVG}g[@id='trace-mean-{chain}']") is not None
    desc = root.find(f"{SVG}desc")
    assert desc is not None and "R-hat over the chains: mean" in str(desc.text)


@pytest.mark.slow
def test_a_short_parallel_run_in_the_hard_design_is_flagged_and_a_long_one_not() -> None:
    """5 chains in the hard design: after 8 cycles they are still climbing from the observed
    values towards the imputed cells' own level (R-hat 1.6 to 2.5 over seeds 1..5); after 400
    cycles they have mixed (R-hat over every cycle, burn-in included, as mice's convergence()).
    Measured with the data's seed = the job's: at 200 cycles 2 of 10 targets over seeds 1..5
    were above 1.1, at 400 cycles 2 of 20 over seeds 1..10 (largest 1.13), none of seed 1's."""
    tables = hard_design(1)

    def job(cycles: int) -> dict[str, Any]:
        return run(
            "SIMICE",
            tables["central"],
            {"a": tables["a"], "b": tables["b"]},
            [("y1", "gaussian"), ("y2", "gaussian")],
            imputations=5,
            iteration_before_first_imputation=cycles,
            chains="parallel",
        ).report

    short = job(8)
    flagged = [w for w in short["warnings"] if "may not have settled" in w]
    assert len(flagged) == 2 and all("have not mixed" in w for w in flagged)
    assert all(
        v > diagnostics.RHAT_LIMIT for e in short["traces"].values() for v in e["rhat"].values()
    )
    long = job(400)
    assert not [w for w in long["warnings"] if "may not have settled" in w]
    assert all(
        v <= diagnostics.RHAT_LIMIT for e in long["traces"].values() for v in e["rhat"].values()
    )


R_RANK_RHAT = r"""
# Written from Vehtari et al. (2021), section 4 (as test_diagnostics.py): split, rank-normalise,
# classic R-hat; the same on the draws folded about their median; the larger of the two.
classic <- function(sims) {
  if (max(sims) - min(sims) < .Machine$double.eps) return(1)
  n <- nrow(sims)
  sqrt((n * var(colMeans(sims)) / mean(apply(sims, 2, var)) + n - 1) / n)
}
halves <- function(sims) {
  n <- nrow(sims)
  cbind(sims[seq_len(n %/% 2), , drop = FALSE], sims[(n - n %/% 2 + 1):n, , drop = FALSE])
}
scores <- function(sims) matrix(qnorm((rank(sims) - 0.5) / length(sims)), nrow(sims))
rank_rhat <- function(sims) {
  max(classic(scores(halves(sims))), classic(scores(halves(abs(sims - median(sims))))))
}
out <- c()
for (f in c("y1_mean", "y1_sd", "y2_mean", "y2_sd")) {
  sims <- as.matrix(read.csv(paste0(f, ".csv")))
  out <- c(out, sprintf("%.17g", rank_rhat(sims)))
}
writeLines(out, "rhat.txt")
"""


@pytest.mark.slow
def test_the_report_rhat_equals_an_independent_r_computation(tmp_path: Path) -> None:
    tables = hard_design(2)
    report = run(
        "SIMICE",
        tables["central"],
        {"a": tables["a"], "b": tables["b"]},
        [("y1", "gaussian"), ("y2", "gaussian")],
        imputations=5,
        iteration_before_first_imputation=15,
    ).report
    expected = []
    for name in ("y1", "y2"):
        for quantity in ("mean", "sd"):
            chains = report["traces"][name]["chains"]
            sims = pd.DataFrame({f"c{m}": [p[quantity] for p in c] for m, c in enumerate(chains)})
            sims.to_csv(tmp_path / f"{name}_{quantity}.csv", index=False, float_format="%.17g")
            expected.append(report["traces"][name]["rhat"][quantity])
    run_r(R_RANK_RHAT, cwd=tmp_path)
    got = [float(v) for v in (tmp_path / "rhat.txt").read_text().split()]
    np.testing.assert_allclose(expected, got, rtol=1e-12)


# ---------------------------------------------------------------- the request budget


@pytest.mark.parametrize("algorithm", ["SIMICE", "IMICE", "AVGMMICE", "CSLMICE"])
def test_the_request_budget_counts_parallel_chains_fits_once(algorithm: str) -> None:
    """M parallel chains of ``before`` cycles fit side by side, one request a step: the
    declared fits are targets x before, not the single chain's targets x (before + between x
    (M - 1))."""
    schema = builtin(algorithm).replies
    params = {
        "imputations": 5,
        "iteration_before_first_imputation": 4,
        "iteration_between_imputations": 3,
        "chains": "parallel",
    }

    parallel = schema.request_budget(params, targets=2, rounds=3, chains=5)
    single = schema.request_budget(params | {"chains": "single"}, targets=2, rounds=3)

    assert parallel == 2 + 2 * 4 * 3
    assert single == 2 + 2 * (4 + 3 * 4) * 3


def test_a_parallel_chains_job_runs_within_its_tight_budget_and_not_one_request_more() -> None:
    """Three parallel chains of 2 cycles, two Gaussian targets: each fit is one gaussian_stats
    and one impute for every chain, so with 3 rounds a fit the budget, 2 + 2 x 2 x 3 = 14, holds
    the job's 10 counted operations (open, fill_unobserved, 4 fits x 2), where the single
    chain's formula gave 74."""
    import asyncio

    from federation.job import CENTRAL
    from federation.policy import Policy
    from federation.runtime import run_job
    from federation.site import SiteRunner
    from federation.transport import InMemoryTransport

    rng = np.random.default_rng(4)

    def values(rows: int) -> np.ndarray:
        data = rng.normal(size=(rows, 4))
        data[rng.random(rows) < 0.2, 2] = np.nan
        data[rng.random(rows) < 0.2, 3] = np.nan
        return data

    columns = ("x1", "x2", "g1", "g2")
    central = table("central", columns, values(60))
    sites = {name: table(name, columns, values(80)) for name in ("north", "south")}
    algorithm = builtin("SIMICE")
    params = {
        "imputations": 3,
        "iteration_before_first_imputation": 2,
        "iteration_between_imputations": 5,
        "chains": "parallel",
    }
    spec = make_spec(
        algorithm=algorithm,
        central=central,
        sites=sites,
        targets=[("g1", "gaussian"), ("g2", "gaussian")],
        params=params,
        seed=3,
    )
    policy = Policy(max_newton_rounds=3)
    runners = {
        name: SiteRunner(site=name, data=data, algorithm=algorithm, policy=policy)
        for name, data in sites.items()
    }
    local = SiteRunner(site=CENTRAL, data=central, algorithm=algorithm, is_central=True)

    result = asyncio.run(
        run_job(
            spec=spec,
            central_module=algorithm.central,
            local=local,
            transport=InMemoryTransport(runners),
        )
    )

    assert len(result.imputed_cells) == 3
    for runner in runners.values():
        assert runner.budget == 2 + 2 * 2 * 3  # single chain: 2 + 2 x (2 + 5 x 2) x 3 = 74
        assert runner.requests == 10
