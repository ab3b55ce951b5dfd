"""Secure aggregation: masked runs equal unmasked ones; central sees each site's reply only
masked and unrelated to it, their sum exactly; what cannot be masked, or would overflow, is
refused; a lost site makes its round start again with fresh masks."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from algorithms import _stats
from federation import secure
from federation.data import Table
from federation.errors import (
    FipError,
    InputError,
    ProtocolError,
    SiteFailed,
    SiteLost,
    SiteRefused,
)
from federation.job import CENTRAL, JobSpec, Target
from federation.policy import Policy
from federation.protocol import ErrorReply, Op, Reply, Request, decode, encode
from federation.replies import Value
from federation.runtime import JobResult, run_job
from federation.simulation import make_spec
from federation.site import OPEN, SiteRunner
from federation.transport import InMemoryTransport
from portal_common.states import JobState
from portal_site.job_info import Method, parse_job
from portal_site.jobs import LocalJob, LocalJobs
from tests.helpers import builtin, run, table

COLUMNS = ("x1", "x2", "x3", "g", "b")
GAUSSIAN_RTOL = 1e-9
NEWTON_TOLERANCE = 1.5e-5


def values(rng: np.random.Generator, rows: int, *, offset: float = 0.0) -> np.ndarray:
    """x1..x3 (x3 in the thousands, as a year or a price), g Gaussian and b logistic in them;
    g missing in a fifth of the rows, b in another fifth."""
    x = rng.normal(size=(rows, 3)) + [0.0, 0.0, 2000.0 + offset]
    g = 1.0 + x[:, 0] - 0.5 * x[:, 1] + 0.01 * (x[:, 2] - 2000) + rng.normal(size=rows)
    b = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(0.3 + x[:, 0])))).astype(np.float64)
    data = np.column_stack([x, g, b])
    u = rng.random(rows)
    data[u < 0.2, 3] = np.nan
    data[u > 0.8, 4] = np.nan
    return data


def federation(seed: int = 7, sites: int = 3) -> tuple[Table, dict[str, Table]]:
    rng = np.random.default_rng(seed)
    central = table("central", COLUMNS, values(rng, 150))
    remote = {
        f"site{k}": table(f"site{k}", COLUMNS, values(rng, 200 + 50 * k, offset=k))
        for k in range(sites)
    }
    return central, remote


def coefficients(result: JobResult) -> list[np.ndarray]:
    return [np.array(list(f["coefficients"].values())) for f in result.report["fits"]]


def same_imputations(a: JobResult, b: JobResult, *, rtol: float) -> None:
    """Equal to ``rtol`` relative to the scale of the imputed cells (a value near 0 inherits
    the rounding of the fit's coefficients, not a relative error of its own)."""
    assert len(a.imputed_cells) == len(b.imputed_cells)
    for x, y in zip(a.imputed_cells, b.imputed_cells, strict=True):
        scale = float(np.nanmax(np.abs(y))) if np.isfinite(y).any() else 1.0
        np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * scale)


# ---------------------------------------------------------------- the same results


def test_simi_gaussian_masked_equals_unmasked_to_1e_9() -> None:
    central, sites = federation()
    plain = run("SIMI", central, sites, [("g", "gaussian")], seed=3, imputations=4)
    masked = run(
        "SIMI", central, sites, [("g", "gaussian")], seed=3, imputations=4, secure_aggregation=True
    )
    (a,), (b,) = coefficients(plain), coefficients(masked)
    np.testing.assert_allclose(b, a, rtol=GAUSSIAN_RTOL)
    fa, fb = plain.report["fits"][0], masked.report["fits"][0]
    assert fa["n"] == fb["n"]
    assert fb["sse"] == pytest.approx(fa["sse"], rel=GAUSSIAN_RTOL)
    same_imputations(plain, masked, rtol=1e-9)
    summary = masked.report["secure_aggregation"]
    assert summary["masked_rounds"] == 1 and summary["restarts"] == 0
    assert set(summary["fingerprints"]) == set(sites)
    assert "sum" in summary["central_saw"]
    assert "secure_aggregation" not in plain.report
    assert plain.report["round_trips"] == masked.report["round_trips"]


def test_simi_logistic_masked_equals_unmasked_to_the_newton_tolerance() -> None:
    central, sites = federation(8)
    plain = run("SIMI", central, sites, [("b", "logistic")], seed=4, imputations=3)
    masked = run(
        "SIMI", central, sites, [("b", "logistic")], seed=4, imputations=3, secure_aggregation=True
    )
    (a,), (b,) = coefficients(plain), coefficients(masked)
    np.testing.assert_allclose(b, a, atol=NEWTON_TOLERANCE, rtol=0)
    assert plain.report["fits"][0]["iterations"] == masked.report["fits"][0]["iterations"]
    same_imputations(plain, masked, rtol=0)  # the same 0/1 draws


def test_simice_masked_equals_unmasked_for_the_same_seed() -> None:
    central, sites = federation(9)
    targets = [("g", "gaussian"), ("b", "logistic")]
    options: dict[str, Any] = {"imputations": 3, "iteration_before_first_imputation": 3}
    plain = run("SIMICE", central, sites, targets, seed=5, **options)
    masked = run("SIMICE", central, sites, targets, seed=5, secure_aggregation=True, **options)
    for a, b, fit in zip(
        coefficients(plain), coefficients(masked), plain.report["fits"], strict=True
    ):
        if fit["type"] == "gaussian":
            np.testing.assert_allclose(b, a, rtol=GAUSSIAN_RTOL)
        else:
            np.testing.assert_allclose(b, a, atol=NEWTON_TOLERANCE, rtol=0)
    same_imputations(plain, masked, rtol=1e-8)
    # The sites' target sums of the summary at open come masked too: one round trip more.
    assert masked.report["round_trips"] == plain.report["round_trips"] + 1


def _methods_federation(seed: int = 11) -> tuple[Table, dict[str, Table]]:
    """x1, x2, a stage in 1..3 (categorical or ordinal), a count and a skewed continuous
    column, each target missing in a fifth of the rows; central and three sites."""
    columns = ("x1", "x2", "stage", "count", "skewed")

    def rows(rng: np.random.Generator, n: int) -> np.ndarray:
        x = rng.normal(size=(n, 2))
        stage = 1.0 + np.digitize(x[:, 0] + rng.normal(size=n), [-0.5, 0.5])
        count = rng.poisson(np.exp(0.5 + 0.4 * x[:, 1])).astype(np.float64)
        skewed = np.exp(0.5 * x[:, 0] + rng.normal(size=n) * 0.3)
        data = np.column_stack([x, stage, count, skewed])
        for column in (2, 3, 4):
            data[rng.random(n) < 0.2, column] = np.nan
        return data

    rng = np.random.default_rng(seed)
    central = table("central", columns, rows(rng, 120))
    return central, {f"site{k}": table(f"site{k}", columns, rows(rng, 150)) for k in range(3)}


@pytest.mark.parametrize("stage", ["categorical", "ordinal"])
def test_simice_masked_equals_unmasked_for_every_newton_method_and_pmm(stage: str) -> None:
    """The new methods' statistics (level counts, saturation and overflow counts included) are
    summed masked as exactly as the Gaussian ones: the same fits to the Newton tolerance and,
    the fits agreeing, the same imputed levels, counts and donors for the same seed. From the
    second cycle on, the stage's and the count's fits open warm (``<family>_warm``, with the
    third derivatives, masked at the scale for products of three values)."""
    central, sites = _methods_federation()
    targets = [("stage", stage), ("count", "poisson"), ("skewed", "pmm")]
    options: dict[str, Any] = {
        "seed": 5,
        "imputations": 2,
        "iteration_before_first_imputation": 2,
        "iteration_between_imputations": 1,
        "levels": {"stage": [1.0, 2.0, 3.0]},
    }
    plain = run("SIMICE", central, sites, targets, **options)
    masked = run("SIMICE", central, sites, targets, secure_aggregation=True, **options)
    for a, b in zip(coefficients(plain), coefficients(masked), strict=True):
        np.testing.assert_allclose(b, a, rtol=NEWTON_TOLERANCE, atol=NEWTON_TOLERANCE)
    for x, y in zip(plain.imputed_cells, masked.imputed_cells, strict=True):
        np.testing.assert_array_equal(x, y)
    assert masked.report["secure_aggregation"]["masked_rounds"] > 0


# ---------------------------------------------------------------- what central sees


class Capture:
    """In-memory transport that keeps every reply frame per site: central's view."""

    def __init__(self, runners: Mapping[str, SiteRunner]) -> None:
        self._inner = InMemoryTransport(runners)
        self.replies: list[tuple[str, Request, Reply]] = []

    async def exchange(self, site: str, frame: bytes) -> bytes:
        answer = await self._inner.exchange(site, frame)
        request, reply = decode(frame), decode(answer)
        assert isinstance(request, Request)
        if isinstance(reply, Reply):
            self.replies.append((site, request, reply))
        return answer


def run_captured(
    central: Table, sites: Mapping[str, Table], **params: Any
) -> tuple[JobResult, Capture, dict[str, SiteRunner]]:
    algorithm = builtin("SIMI")
    spec = make_spec(
        algorithm=algorithm,
        central=central,
        sites=sites,
        targets=[("g", "gaussian")],
        params={"imputations": 2, "secure_aggregation": True, **params},
        seed=11,
    )
    runners = {
        name: SiteRunner(site=name, data=t, algorithm=algorithm) for name, t in sites.items()
    }
    capture = Capture(runners)
    local = SiteRunner(site=CENTRAL, data=central, algorithm=algorithm, is_central=True)
    result = asyncio.run(
        run_job(spec=spec, central_module=algorithm.central, local=local, transport=capture)
    )
    return result, capture, runners


def true_stats(data: Table) -> dict[str, Any]:
    """A site's n, X'X, X'y, y'y for g, computed here from its rows (complete ones)."""
    rows = data.values[~np.isnan(data.values).any(axis=1)]
    z = np.column_stack([rows, np.ones(rows.shape[0])])
    return _stats.gaussian_stats(z, None, 3)


def masked_round(capture: Capture) -> tuple[int, dict[str, dict[str, Any]]]:
    """The scale and every site's reply to the one masked round of a SIMI Gaussian job."""
    seen: dict[str, dict[str, Any]] = {}
    scale = 0
    for site, request, reply in capture.replies:
        for op, result in zip(request.ops, reply.results, strict=True):
            if op.name == secure.MASKED:
                scale = int(op.args["scale"])
                seen[site] = result
    return scale, seen


def test_central_sees_each_site_masked_and_only_the_sum_decodes() -> None:
    central, sites = federation(12)
    _, capture, _ = run_captured(central, sites)
    scale, seen = masked_round(capture)
    assert set(seen) == set(sites)
    truths = {name: true_stats(data) for name, data in sites.items()}
    declared = builtin("SIMI").replies.operations["gaussian_stats"]
    for name, reply in seen.items():
        # What central holds of one site: limbs that decode to nothing like the site's sums.
        assert reply["xtx"].dtype == np.int64 and reply["xtx"].shape == (5, 5, 2)
        decoded = secure.decode(reply["xtx"].view(np.uint64), scale)
        truth = truths[name]["xtx"]
        # The noise is uniform over +-2^(127 - scale), some 1e17 here: an entry lands within
        # 1e3 times its truth's size (at most about 1e9) once in 1e5 runs; 1e6 was 1 in 25.
        assert np.all(np.abs(decoded - truth) > 1e3 * (1 + np.abs(truth)))
        assert int(reply["n"]) == truths[name]["n"]  # the fit's n: declared at open anyway
    total = secure.unmask_sum(seen.values(), declared, scale)
    for key in ("xtx", "xty", "yty"):
        expected = sum(np.asarray(t[key]) for t in truths.values())
        np.testing.assert_allclose(total[key], expected, rtol=1e-12)
    assert total["n"] == sum(t["n"] for t in truths.values())


def test_the_masks_change_with_the_keys_of_each_job() -> None:
    central, sites = federation(13)
    _, first, _ = run_captured(central, sites)
    _, second, _ = run_captured(central, sites)
    scale_a, a = masked_round(first)
    scale_b, b = masked_round(second)
    assert scale_a == scale_b
    for name in sites:
        assert not np.array_equal(a[name]["xtx"], b[name]["xtx"])
        assert not np.array_equal(a[name]["yty"], b[name]["yty"])


def test_site_pages_and_central_report_show_the_same_fingerprints() -> None:
    central, sites = federation(14)
    result, _, runners = run_captured(central, sites)
    shown = result.report["secure_aggregation"]["fingerprints"]
    for runner in runners.values():
        assert runner.fingerprints == shown
    assert len({*shown.values()}) == len(sites)


# ---------------------------------------------------------------- refusals


def test_fewer_than_two_remote_sites_is_refused() -> None:
    central, sites = federation(15, sites=1)
    with pytest.raises(InputError, match="at least two remote sites"):
        run("SIMI", central, sites, [("g", "gaussian")], secure_aggregation=True)


def test_an_algorithm_whose_replies_are_not_all_summed_is_refused() -> None:
    for name in ("AVGMMI", "CSLMI"):
        replies = builtin(name).replies
        with pytest.raises(InputError, match="not summed"):
            secure.check_job(replies, {"secure_aggregation": True}, ["a", "b"])
    secure.check_job(builtin("SIMICE").replies, {"secure_aggregation": True}, ["a", "b"])


def test_an_overflow_of_the_chosen_scale_fails_the_job_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Central choosing too fine a scale makes every site refuse: never a wrapped sum. Each
    site checks the scale against what its own rows and magnitude allow before it looks at a
    value, so the refusal says nothing of the values."""
    central, sites = federation(16)
    chosen = secure.scale_for
    monkeypatch.setattr(secure, "scale_for", lambda **kw: chosen(**kw) + 60)
    with pytest.raises(SiteFailed, match="finer than this job allows"):
        run("SIMI", central, sites, [("g", "gaussian")], secure_aggregation=True)


def test_encoding_refuses_what_the_sum_could_not_hold() -> None:
    limit = 2.0 ** secure.limit_bits(4)
    secure.encode(np.array([limit - 2**80]), 0, sites=4)
    with pytest.raises(OverflowError):
        secure.encode(np.array([limit]), 0, sites=4)
    with pytest.raises(OverflowError):
        secure.encode(np.array([-limit]), 0, sites=4)


def test_fixed_point_round_trips_signs_and_sums_exactly() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(scale=10.0 ** rng.integers(-3, 9), size=(200, 200)) for _ in range(4)]
    scale = 60
    encoded = [secure.encode(p, scale, sites=4) for p in parts]
    for part, limbs in zip(parts, encoded, strict=True):
        np.testing.assert_array_equal(
            secure.decode(limbs, scale), np.ldexp(np.rint(np.ldexp(part, scale)), -scale)
        )
    acc = encoded[0]
    for limbs in encoded[1:]:
        acc = secure.add(acc, limbs)
    whole = [np.rint(np.ldexp(p, scale)).ravel() for p in parts]
    exact = np.array([float(sum(int(w[i]) for w in whole)) for i in range(whole[0].size)])
    np.testing.assert_allclose(
        secure.decode(acc, scale).ravel(), np.ldexp(exact, -scale), rtol=4e-16
    )


# ---------------------------------------------------------------- the site's side


def opened(runner: SiteRunner, spec: JobSpec) -> Reply:
    reply = decode(
        runner.handle(
            encode(
                Request(
                    job_id=spec.job_id, seq=0, ops=[Op(name=OPEN, args={"spec": spec.to_wire()})]
                )
            )
        )
    )
    assert isinstance(reply, Reply), reply
    return reply


def secure_spec(sites: tuple[str, ...] = ("site0", "site1", "site2")) -> JobSpec:
    algorithm = builtin("SIMI")
    return JobSpec(
        job_id="j1",
        algorithm="SIMI",
        version=algorithm.version,
        digest=algorithm.digest,
        columns=COLUMNS,
        targets=(Target(index=4, name="g", type="gaussian"),),
        params={
            "imputations": 2,
            "ridge": 0.001,
            "max_iter": 100,
            "min_rows": 15,
            "secure_aggregation": True,
        },
        seed=1,
        sites=sites,
    )


def test_a_site_of_a_secure_job_never_answers_a_summed_operation_in_the_clear() -> None:
    """A curious central asking for a site's X'X directly gets a refusal, not the sums."""
    _, sites = federation(17)
    runner = SiteRunner(site="site0", data=sites["site0"], algorithm=builtin("SIMI"))
    spec = secure_spec()
    summary = opened(runner, spec).results[0]
    assert summary[secure.PUBLIC_KEY].shape == (4,)
    frame = encode(Request(job_id="j1", seq=1, ops=[Op(name="gaussian_stats", args={"target": 4})]))
    answer = decode(runner.handle(frame))
    assert isinstance(answer, ErrorReply) and answer.kind == "refused"
    assert "only masked" in answer.message


def keys_for(runners: Mapping[str, SiteRunner], spec: JobSpec) -> np.ndarray:
    return np.stack([secure.key_words(runners[s].masks.public) for s in spec.sites])  # type: ignore[union-attr]


def test_a_mask_round_is_never_used_twice_and_a_substituted_own_key_is_refused() -> None:
    _, sites = federation(18)
    spec = secure_spec()
    runners = {
        name: SiteRunner(site=name, data=data, algorithm=builtin("SIMI"))
        for name, data in sites.items()
    }
    for runner in runners.values():
        opened(runner, spec)
    keys = keys_for(runners, spec)
    forged = keys.copy()
    forged[0] = secure.key_words(secure.SiteMasks(site="x", job_id="j1", sites=3).public)
    with pytest.raises(SiteRefused, match="not the one it made"):
        runners["site0"].call(secure.KEYS, {"sites": list(spec.sites), "keys": forged})
    # site2's key given to site0 as site1's too: site2, colluding with central, could then
    # derive both of site0's masks and read its sums alone.
    doubled = keys.copy()
    doubled[1] = keys[2]
    with pytest.raises(SiteRefused, match="one public key for two sites"):
        runners["site0"].call(secure.KEYS, {"sites": list(spec.sites), "keys": doubled})
    runner = runners["site1"]
    runner.call(secure.KEYS, {"sites": list(spec.sites), "keys": keys})

    def masked(round_number: int, seq: int) -> ErrorReply | Reply:
        args = {"op": "gaussian_stats", "args": {"target": 4}, "round": round_number, "scale": 40}
        frame = encode(Request(job_id="j1", seq=seq, ops=[Op(name=secure.MASKED, args=args)]))
        answer = decode(runner.handle(frame))
        assert isinstance(answer, ErrorReply | Reply)
        return answer

    assert isinstance(masked(3, 1), Reply)
    again = masked(3, 2)
    assert isinstance(again, ErrorReply) and "never used twice" in again.message


# ---------------------------------------------------------------- dropouts


class Dropping:
    """In-memory transport whose sites lose their connection during the masked requests
    ``drops[site]`` (numbered from 0 per site), before the request runs there
    (``after=False``) or after; keeps the requests site1 received."""

    def __init__(
        self, runners: Mapping[str, SiteRunner], *, drops: dict[str, set[int]], after: bool
    ) -> None:
        self._inner = InMemoryTransport(runners)
        self.drops, self.after = drops, after
        self.masked = dict.fromkeys(drops, 0)
        self.frames: list[Request] = []

    async def exchange(self, site: str, frame: bytes) -> bytes:
        request = decode(frame)
        assert isinstance(request, Request)
        masked = any(op.name == secure.MASKED for op in request.ops)
        if site in self.drops and masked:
            self.masked[site] += 1
            if self.masked[site] - 1 in self.drops[site]:
                if self.after:
                    await self._inner.exchange(site, frame)  # it ran; its reply is lost
                raise SiteLost("the connection dropped")
        if site == "site1":
            self.frames.append(request)
        return await self._inner.exchange(site, frame)


def run_dropping(
    *, drops: dict[str, set[int]], after: bool, algorithm: str = "SIMICE"
) -> tuple[JobResult, Dropping]:
    central, sites = federation(19)
    chosen = builtin(algorithm)
    targets = (
        [("g", "gaussian"), ("b", "logistic")] if algorithm == "SIMICE" else [("g", "gaussian")]
    )
    spec = make_spec(
        algorithm=chosen,
        central=central,
        sites=sites,
        targets=targets,
        params={"imputations": 2, "secure_aggregation": True},
        seed=21,
    )
    runners = {name: SiteRunner(site=name, data=t, algorithm=chosen) for name, t in sites.items()}
    transport = Dropping(runners, drops=drops, after=after)
    local = SiteRunner(site=CENTRAL, data=central, algorithm=chosen, is_central=True)
    result = asyncio.run(
        run_job(spec=spec, central_module=chosen.central, local=local, transport=transport)
    )
    return result, transport


@functools.cache
def undisturbed_run() -> JobResult:
    """The masked SIMICE job of ``run_dropping`` with no site lost: run once, shared (read only)
    by the tests that compare a disturbed run against it."""
    central, sites = federation(19)
    return run(
        "SIMICE",
        central,
        sites,
        [("g", "gaussian"), ("b", "logistic")],
        seed=21,
        imputations=2,
        secure_aggregation=True,
    )


@pytest.mark.parametrize("after", [False, True], ids=["before-it-ran", "after-it-ran"])
def test_a_site_lost_during_a_masked_round_restarts_it_with_fresh_masks(after: bool) -> None:
    """The round starts again with a new round number; the instructions that rode on the lost
    request run once at the lost site, so the imputations equal an undisturbed run's."""
    undisturbed = undisturbed_run()
    result, transport = run_dropping(drops={"site1": {0, 3}}, after=after)
    assert result.report["secure_aggregation"]["restarts"] == 2
    same_imputations(undisturbed, result, rtol=1e-12)
    restarts = [r for r in transport.frames if r.replaces is not None]
    assert len(restarts) == 2  # rounds 0 and 3 started again once each
    rounds = [
        op.args["round"] for r in transport.frames for op in r.ops if op.name == secure.MASKED
    ]
    assert len(rounds) == len(set(rounds))


class InTurn(Dropping):
    """site1 is lost on a masked request that carries an instruction (before it ran there),
    then site2 on the restart of that request (before it ran there)."""

    def __init__(self, runners: Mapping[str, SiteRunner]) -> None:
        super().__init__(runners, drops={}, after=False)
        self.first: int | None = None
        self.second = False

    async def exchange(self, site: str, frame: bytes) -> bytes:
        request = decode(frame)
        assert isinstance(request, Request)
        names = [op.name for op in request.ops]
        if site == "site1" and self.first is None and "impute" in names and request.seq > 3:
            self.first = request.seq
            raise SiteLost("the connection dropped")
        if site == "site2" and self.first and not self.second and request.replaces == self.first:
            self.second = True
            raise SiteLost("the connection dropped")
        return await self._inner.exchange(site, frame)


def test_sites_lost_in_turn_run_the_instructions_once() -> None:
    """site1 is lost on a round, site2 on its restart before it ran: the second restart still
    runs the instructions of the first request once at each site."""
    central, sites = federation(19)
    undisturbed = undisturbed_run()
    chosen = builtin("SIMICE")
    spec = make_spec(
        algorithm=chosen,
        central=central,
        sites=sites,
        targets=[("g", "gaussian"), ("b", "logistic")],
        params={"imputations": 2, "secure_aggregation": True},
        seed=21,
    )
    runners = {name: SiteRunner(site=name, data=t, algorithm=chosen) for name, t in sites.items()}
    local = SiteRunner(site=CENTRAL, data=central, algorithm=chosen, is_central=True)
    transport = InTurn(runners)
    result = asyncio.run(
        run_job(spec=spec, central_module=chosen.central, local=local, transport=transport)
    )
    assert transport.first is not None and transport.second
    assert result.report["secure_aggregation"]["restarts"] == 2
    same_imputations(undisturbed, result, rtol=1e-12)


def test_a_site_lost_again_and_again_fails_the_job_by_name() -> None:
    with pytest.raises(SiteFailed, match="site 'site1': lost during masked rounds"):
        run_dropping(
            drops={"site1": set(range(secure.MAX_RESTARTS + 1))}, after=False, algorithm="SIMI"
        )


def test_a_plain_job_is_not_restarted_when_a_site_is_lost() -> None:
    """Only masked rounds start again; elsewhere a lost site fails the job, naming it."""
    central, sites = federation(20)
    chosen = builtin("SIMI")
    spec = make_spec(
        algorithm=chosen,
        central=central,
        sites=sites,
        targets=[("g", "gaussian")],
        params={"imputations": 2},
        seed=1,
    )

    class Lost(InMemoryTransport):
        async def exchange(self, site: str, frame: bytes) -> bytes:
            request = decode(frame)
            assert isinstance(request, Request)
            if site == "site2" and request.ops[-1].name == "gaussian_stats":
                raise SiteLost("dropped")
            return await super().exchange(site, frame)

    runners = {name: SiteRunner(site=name, data=t, algorithm=chosen) for name, t in sites.items()}
    local = SiteRunner(site=CENTRAL, data=central, algorithm=chosen, is_central=True)
    with pytest.raises(FipError, match="site 'site2'"):
        asyncio.run(
            run_job(spec=spec, central_module=chosen.central, local=local, transport=Lost(runners))
        )


def test_keys_for_other_sites_and_rounds_asked_differently_unmask_nothing() -> None:
    """A central that relays keys for a set of sites other than the job's is refused; one that
    asks sites different things in one round (here: different scales) sums noise."""
    _, sites = federation(22)
    spec = secure_spec()
    runners = {
        name: SiteRunner(site=name, data=data, algorithm=builtin("SIMI"))
        for name, data in sites.items()
    }
    for runner in runners.values():
        opened(runner, spec)
    keys = keys_for(runners, spec)
    with pytest.raises(SiteRefused, match="other sites than the job's"):
        runners["site0"].call(secure.KEYS, {"sites": ["site0", "site1"], "keys": keys[:2]})
    for runner in runners.values():
        runner.call(secure.KEYS, {"sites": list(spec.sites), "keys": keys})

    def masked(runner: SiteRunner, scale: int) -> dict[str, Any]:
        args = {"op": "gaussian_stats", "args": {"target": 4}, "round": 1, "scale": scale}
        frame = encode(Request(job_id="j1", seq=1, ops=[Op(name=secure.MASKED, args=args)]))
        reply = decode(runner.handle(frame))
        assert isinstance(reply, Reply), reply
        return reply.results[0]

    declared = builtin("SIMI").replies.operations["gaussian_stats"]
    replies = [masked(r, 40 if name != "site2" else 41) for name, r in runners.items()]
    total = secure.unmask_sum(replies, declared, 40)
    truth = sum(np.asarray(true_stats(data)["xtx"]) for data in sites.values())
    assert np.all(np.abs(total["xtx"] - truth) > 1e3 * (1 + np.abs(truth)))


# ---------------------------------------------------------------- a malicious central


class Sites:
    """Three remote sites of a secure SIMICE job driven by hand, as a malicious central that
    sends each site the frames it likes."""

    def __init__(self, seed: int = 23, *, policy: Policy | None = None) -> None:
        central, tables = federation(seed)
        self.algorithm = builtin("SIMICE")
        self.spec = make_spec(
            algorithm=self.algorithm,
            central=central,
            sites=tables,
            targets=[("g", "gaussian"), ("b", "logistic")],
            params={"imputations": 2, "secure_aggregation": True, "chains": "single"},
            seed=1,
            job_id="j2",
        )
        self.runners = {
            name: SiteRunner(site=name, data=data, algorithm=self.algorithm, policy=policy)
            for name, data in tables.items()
        }
        self.seq = dict.fromkeys(self.runners, 0)
        for name in self.runners:
            self.send(name, [Op(name=OPEN, args={"spec": self.spec.to_wire()})])
        keys = keys_for(self.runners, self.spec)
        for name in self.runners:
            self.send(
                name, [Op(name=secure.KEYS, args={"sites": list(self.spec.sites), "keys": keys})]
            )

    def send(self, site: str, ops: list[Op], *, replaces: int | None = None) -> ErrorReply | Reply:
        request = Request(job_id="j2", seq=self.seq[site], ops=ops, replaces=replaces)
        self.seq[site] += 1
        answer = decode(self.runners[site].handle(encode(request)))
        assert isinstance(answer, ErrorReply | Reply)
        return answer

    def masked(
        self, site: str, round_number: int, scale: int, before: Sequence[Op] = ()
    ) -> dict[str, Any]:
        args = {
            "op": "gaussian_stats",
            "args": {"target": 5},
            "round": round_number,
            "scale": scale,
        }
        answer = self.send(site, [*before, Op(name=secure.MASKED, args=args)])
        assert isinstance(answer, Reply), answer
        result: dict[str, Any] = answer.results[-1]
        return result

    def clear(self, site: str) -> dict[str, Any]:
        """What the site's sums truly are now (read here, behind the protocol's back)."""
        return self.runners[site].call("gaussian_stats", {"target": 5})


def test_a_site_given_instructions_the_others_were_not_sums_noise() -> None:
    """Differencing attack: central asks every site the same question twice, but between the
    two rounds has only site0 impute (with parameters it chose: its imputed cells are then its
    own rows times alpha). If the masks cancelled, the difference of the two sums would be
    site0's own change of X'X. They cancel only among sites asked the same things in the
    same order, so the second sum is noise."""
    sites = Sites()
    declared = sites.algorithm.replies.operations["gaussian_stats"]
    scale = 40
    first = secure.unmask_sum((sites.masked(s, 1, scale) for s in sites.runners), declared, scale)
    before = sites.clear("site0")["xtx"]
    truth = sum(np.asarray(sites.clear(s)["xtx"]) for s in sites.runners)
    np.testing.assert_allclose(first["xtx"], truth, rtol=1e-12)  # an honest round: the sum

    impute = Op(
        name="impute",
        args={
            "target": 4,
            "alpha": np.array([[1.0, 2.0, 3.0, 0.5, 0.0]]),  # one chain's
            "sigma": np.array([0.0]),
        },
    )
    second_replies = [
        sites.masked(s, 2, scale, before=[impute] if s == "site0" else []) for s in sites.runners
    ]
    change = np.asarray(sites.clear("site0")["xtx"]) - before
    assert np.abs(change).max() > 1.0  # the imputation moved site0's sums
    second = secure.unmask_sum(second_replies, declared, scale)
    leaked = second["xtx"] - first["xtx"]
    assert np.all(np.abs(leaked - change) > 1e3 * (1 + np.abs(change)))


def test_one_value_sums_across_the_modulus_without_a_warning() -> None:
    """-1 + 1 over 2^128 for a scalar reply value (its limbs alone): numpy warns when a
    scalar wraps, and the test suite turns warnings into errors, as a site's would be."""
    minus_one = secure.encode(np.array(-1.0), 0, sites=2)
    one = secure.encode(np.array(1.0), 0, sites=2)
    assert minus_one.shape == (2,)
    np.testing.assert_array_equal(secure.add(minus_one, one), [0, 0])
    np.testing.assert_array_equal(secure.subtract(one, one), [0, 0])
    assert float(secure.decode(secure.add(minus_one, minus_one), 0)) == -2.0


def test_a_refused_masked_round_is_the_last_thing_a_site_answers_in_the_job() -> None:
    """The overflow oracle: central makes site0 impute huge values (parameters it chose), then
    asks at the scale the job allows. The site refuses rather than wrap, which tells central
    one bit about its values; asked again (a coarser scale, another question), it answers
    nothing more in that job, so the bits cannot be collected one by one."""
    sites = Sites()
    scale = 40  # what an honest central chooses here is finer still
    too_fine = sites.send(
        "site1",
        [
            Op(
                name=secure.MASKED,
                args={"op": "gaussian_stats", "args": {"target": 5}, "round": 1, "scale": 400},
            )
        ],
    )
    assert isinstance(too_fine, ErrorReply) and "finer than this job allows" in too_fine.message
    huge = Op(
        name="impute", args={"target": 4, "alpha": np.full((1, 5), 1e30), "sigma": np.zeros(1)}
    )
    args = {"op": "gaussian_stats", "args": {"target": 5}, "round": 1, "scale": scale}
    refused = sites.send("site0", [huge, Op(name=secure.MASKED, args=args)])
    assert isinstance(refused, ErrorReply) and "beyond the fixed-point range" in refused.message
    again = sites.send("site0", [Op(name=secure.MASKED, args={**args, "round": 2, "scale": 0})])
    assert isinstance(again, ErrorReply) and "answers nothing more" in again.message
    closed = sites.send("site0", [Op(name="fip.close")])
    assert isinstance(closed, Reply)  # closing still frees what the job holds
    # Any error answering a masked round stops the site, a handler's failure too.
    odd = {"op": "gaussian_stats", "args": {"target": 5, "odd": 1}, "round": 5, "scale": 40}
    failed = sites.send("site2", [Op(name=secure.MASKED, args=odd)])
    assert isinstance(failed, ErrorReply) and failed.kind == "failed"
    after = sites.send("site2", [Op(name=secure.MASKED, args={**args, "round": 6})])
    assert isinstance(after, ErrorReply) and "answers nothing more" in after.message


def test_a_secure_job_may_ask_a_site_only_its_restarts_beyond_the_declared_fits() -> None:
    """The budget: the key relay, the masked summary and one masked round per restart (at most
    MAX_RESTARTS), beyond what the fits declare; a restart's repeated instructions do not
    count at a site that skips them. Past it, and for a 'replaces' on anything but a masked
    round, the site answers no more."""
    sites = Sites(policy=Policy(max_newton_rounds=2))
    runner = sites.runners["site0"]
    declared = sites.algorithm.replies.request_budget(
        sites.spec.params, targets=2, rounds=runner.policy.max_newton_rounds
    )
    assert runner.budget == declared + 2 + secure.MAX_RESTARTS
    impute = Op(name="impute", args={"target": 4, "alpha": np.zeros((1, 5)), "sigma": np.ones(1)})
    answered = runner.requests
    sites.masked("site0", 1, 40, before=[impute])
    assert runner.requests == answered + 2
    restart = sites.send(
        "site0",
        [
            impute,
            Op(
                name=secure.MASKED,
                args={"op": "gaussian_stats", "args": {"target": 5}, "round": 2, "scale": 40},
            ),
        ],
        replaces=sites.seq["site0"] - 1,
    )
    assert isinstance(restart, Reply) and runner.requests == answered + 3  # the impute skipped
    with pytest.raises(ProtocolError, match="only a masked round"):
        sites.send("site0", [impute], replaces=sites.seq["site0"] - 1)
    round_number = 3
    while runner.requests < runner.budget:
        sites.masked("site0", round_number, 40)
        round_number += 1
    over = sites.send(
        "site0",
        [
            Op(
                name=secure.MASKED,
                args={
                    "op": "gaussian_stats",
                    "args": {"target": 5},
                    "round": round_number,
                    "scale": 40,
                },
            )
        ],
    )
    assert isinstance(over, ErrorReply) and "more operations than it declared" in over.message


def test_a_comparison_started_securely_is_not_opened_in_the_clear() -> None:
    """A comparison's methods take their own parameters, so the site cannot pin them all; it
    pins the option: a method the site started under a secure comparison must be opened
    securely, or the site does not take part (central could otherwise read its sums)."""
    _, tables = federation(24)
    algorithm = builtin("SIMI")
    jobs = LocalJobs(approved=lambda digest: True)
    jobs.site_id = "site0"
    spec = secure_spec()
    method = Method(
        id=2,
        algorithm=algorithm.name,
        version=algorithm.version,
        digest=algorithm.digest,
        state=JobState.CREATED,
        participants=spec.sites,
    )
    comparison = LocalJob(
        job_id="1",
        info=parse_job(
            {
                "id": 1,
                "name": "a comparison",
                "state": "waiting",
                "algorithm": "SIMI",
                "version": algorithm.version,
                "digest": algorithm.digest,
                "columns": list(COLUMNS),
                "targets": [{"index": 4, "name": "g", "type": "gaussian"}],
                "parameters": {"imputations": 2, "secure_aggregation": True},
                "methods": [method.model_dump()],
            }
        ),
        table=tables["site0"],
    )
    runner = jobs._runner(comparison, algorithm, method)
    assert runner.secure_required
    clear = JobSpec.from_wire(
        {**spec.to_wire(), "params": {**spec.params, "secure_aggregation": False}}
    )
    frame = encode(Request(job_id="j1", seq=0, ops=[Op(name=OPEN, args={"spec": clear.to_wire()})]))
    answer = decode(runner.handle(frame))
    assert isinstance(answer, ErrorReply) and "without secure aggregation" in answer.message
    runner = jobs._runner(comparison, algorithm, method)
    assert isinstance(opened(runner, spec), Reply)  # opened securely, it takes part


def test_whole_numbers_are_masked_and_summed_exactly_beyond_2_53() -> None:
    """A declared int value goes through no float: 2^53 + 1 and friends sum exactly."""
    parts = [np.array([2**53 + 1, -(2**62), 7]), np.array([2**53 + 3, 2**62 - 1, -9])]
    declared = {"counts": Value("int", (3,)), "one": Value("int")}
    masks = [secure.SiteMasks(site=name, job_id="j", sites=2) for name in ("a", "b")]
    keys = np.stack([secure.key_words(m.public) for m in masks])
    replies = []
    for masks_of, part in zip(masks, parts, strict=True):
        masks_of.agree(["a", "b"], keys)
        result = {"counts": part, "one": int(part[0])}
        replies.append(masks_of.mask("op", result, declared, round_number=1, scale=0))
    total = secure.unmask_sum(replies, declared, 0)
    np.testing.assert_array_equal(total["counts"], [2**54 + 4, -1, -2])
    assert total["one"] == 2**54 + 4 and isinstance(total["one"], int)
    big = secure.encode_whole(np.array([2**62, 2**62]))
    with pytest.raises(ProtocolError, match="beyond int64"):
        secure.decode_whole(secure.add(big[0], big[1]))


def test_third_derivatives_are_masked_at_a_scale_for_products_of_three_values() -> None:
    """A warm Newton start's reply holds sums of w x_a x_b x_c (declared over ``u``): its
    fixed point leaves E + 8 more bits of room than H's products of two values."""
    declared = builtin("SIMICE").replies.operations
    job = {"rows": 1000, "magnitude": 12, "width": 5, "largest_argument": 2.0, "sites": 3}

    two = secure.scale_for(**job)  # type: ignore[arg-type]
    three = secure.scale_for(**job, degree=3)  # type: ignore[arg-type]

    warm = [f"{family}_warm" for family in ("logistic", "poisson", "categorical", "ordinal")]
    assert [secure.degree(declared[op]) for op in warm] == [3, 3, 3, 3]
    assert secure.degree(declared["logistic_search"]) == secure.degree(declared["prepare"]) == 2
    assert two - three == 12 + secure.HEADROOM_BITS
