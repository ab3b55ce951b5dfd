"""How central fits a target: the strategies of the built-in families, and the report entry.

- ``fit_pooled`` (SIMI, SIMICE; IMI, IMICE when central is the only participant): the exact fit
  on every participant's rows, from their aggregates, as the target's method fits it
  (``algorithms.methods``: one round trip of sums, or Newton).
- ``fit_averaged`` (AVGMMI, AVGMMICE): every participant fits alone; central averages the fits
  weighted by rows (one ask).
- ``fit_surrogate`` (CSLMI, CSLMICE): central fits alone, every participant sends its average
  gradient there, central re-solves its own problem with the gradient correction (one ask).

Each takes (job, target, warm start or None) and returns a ``Fit`` that the method draws from.
The remote halves name their handlers as ``_site`` does. The chained family fits every chain of
a target at once (``_chains``): ``pooled_chains``, ``averaged_chains`` and ``surrogate_chains``
take one warm start a chain and return one fit a chain, from one request a step.

The site checks (``federation.site_checks``) come from replies a fit is sent anyway: a single
fit's, or chain 1's of parallel chains (each cycle's replaces the last, so the report holds
chain 1's last cycle); never with secure aggregation, where central sees only the sum.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from algorithms import _newton, methods
from algorithms._chains import Asked, Replies, chain_replies, lockstep
from algorithms._stats import Fit, covariance, fit_from, fit_gaussian, total
from algorithms.methods._method import Ask, FitOptions
from federation import site_checks
from federation.errors import FitError
from federation.job import CENTRAL, Target
from federation.runtime import CentralJob

FitTarget = Callable[[CentralJob, Target, np.ndarray | None], Awaitable[Fit]]
FitChains = Callable[[CentralJob, Target, list[np.ndarray | None]], Awaitable[list[Fit]]]
"""A chained strategy: one warm start (or None) a chain in, one fit a chain out."""


async def fit_pooled(job: CentralJob, target: Target, start: np.ndarray | None = None) -> Fit:
    """Fit one target over every participant, as its method does."""

    async def ask(operation: str, **args: Any) -> Mapping[str, Mapping[str, Any]]:
        return await _pooled(job, operation, target=target.index, **args)

    return await _fit_with(job, target, start, ask, check=True)


async def pooled_chains(
    job: CentralJob, target: Target, starts: list[np.ndarray | None]
) -> list[Fit]:
    """Every chain's pooled fit of a target, all chains' asks of a step in one request."""

    async def exchange(asked: list[Asked], running: frozenset[int]) -> list[Replies]:
        operation, args, keys = _combined(asked, running)
        replies = await _pooled(job, operation, target=target.index, **args)
        return [chain_replies(replies, c, keys[c]) for c in range(len(asked))]

    def fit(chain: int, start: np.ndarray | None) -> Callable[[Ask], Awaitable[Fit]]:
        return lambda ask: _fit_with(job, target, start, ask, check=chain == 0)

    return await lockstep([fit(c, start) for c, start in enumerate(starts)], exchange)


def _combined(
    asked: list[Asked], running: frozenset[int]
) -> tuple[str, dict[str, Any], list[list[str] | None]]:
    """One operation for every chain's ask, and the reply keys each chain asked for.

    Sums (``gaussian_stats``) and a Newton fit's first evaluation (``<family>_start``, or
    ``<family>_warm`` from a warm start) are asked of every chain at once. Later Newton asks
    differ by chain: a chain evaluating one theta (``_stats``), one searching (``_search``, 1
    to 4 candidates), one already done (its last theta again, once): they travel as one
    ``_search`` of every chain's candidates (one row for a single theta) with their
    ``candidates`` count, or as ``_stats`` when every chain evaluates one theta. The steps of
    each chain are those it takes alone."""
    live = [asked[c][0] for c in sorted(running)]
    if all("theta" not in args for _, args in asked):  # sums: one ask, the same for all
        (operation,) = set(live)
        return operation, {}, [None] * len(asked)
    family = live[0].rsplit("_", 1)[0]
    for first in (f"{family}_start", f"{family}_warm"):  # every fit's first evaluation
        if all(op == first for op in live):
            theta = np.stack([np.asarray(args["theta"]) for _, args in asked])
            return first, {"theta": theta}, [None] * len(asked)
    rows = []
    for c, (_, args) in enumerate(asked):
        theta = np.asarray(args["theta"])
        theta = theta if theta.ndim == 2 else theta[np.newaxis]
        rows.append(theta if c in running else theta[:1])
    stats = [*_STATS_KEYS, "saturated", "overflow"]
    wanted: list[list[str] | None] = [None if op.endswith("_search") else stats for op, _ in asked]
    if all(len(r) == 1 for r in rows):
        return f"{family}_stats", {"theta": np.stack([r[0] for r in rows])}, [None] * len(asked)
    width = _newton.SEARCH
    padded = np.stack([np.vstack([r, np.repeat(r[:1], width - len(r), axis=0)]) for r in rows])
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    return f"{family}_search", {"theta": padded, "candidates": counts}, wanted


_STATS_KEYS = ("n", "h", "g", "q")


async def _fit_with(
    job: CentralJob, target: Target, start: np.ndarray | None, ask: Ask, *, check: bool
) -> Fit:
    """The target's method fits it over every participant through ``ask``; with ``check``
    (a single fit, or chain 1 of parallel chains) the test of equal coefficients across sites
    from the replies this fit was sent (nothing more is asked; not with secure aggregation,
    where central sees only the sum)."""
    asked: dict[str, Replies] = {}
    last: list[tuple[np.ndarray, Replies]] = []

    async def capture(operation: str, **args: Any) -> Replies:
        asked[operation] = await ask(operation, **args)
        if "theta" in args:  # a Newton evaluation: H and g at theta (a search's: its first row)
            last[:] = [(np.atleast_2d(args["theta"])[0], asked[operation])]
        return asked[operation]

    fit = await methods.get(target.type).fit_pooled(
        capture if check and not job.secure else ask,
        FitOptions.of(
            job.params, names=job.spec.predictors(target), target=target.name, levels=target.levels
        ),
        start=start,
    )
    if not fit.converged:
        job.warn(
            f"target '{target.name}': Newton did not converge in {fit.iterations} iterations "
            "(max_iter); the last coefficients are used"
        )
    if "gaussian_stats" in asked and len(asked["gaussian_stats"]) > 1:
        check_gaussian_sites(job, target, asked["gaussian_stats"])
    if last and len(last[0][1]) > 1:
        check_newton_sites(job, target, *last[0])
    return fit


def check_gaussian_sites(
    job: CentralJob, target: Target, replies: Mapping[str, Mapping[str, Any]]
) -> None:
    """The test of equal coefficients across sites from each participant's own Gaussian fit,
    solved from the sums it sent for the pooled fit (nothing more is asked); a participant
    whose own rows cannot be fitted alone is left out of the test. Computed when the job
    ends, for the target's last fit (``record_check``)."""
    names = job.spec.predictors(target)

    def check() -> dict[str, Any]:
        own: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for site, reply in replies.items():
            n = int(reply["n"])
            if n <= len(names):
                continue
            try:
                fit = fit_gaussian(
                    {site: reply},
                    ridge=float(job.params["ridge"]),
                    names=names,
                    target=target.name,
                )
            except FitError:
                continue
            assert fit.sse is not None
            own[site] = (fit.beta, covariance(fit) * fit.sse / (n - len(names)))
        return site_checks.equal_coefficients(
            target.name, names, own, site_intercepts=bool(job.spec.site_terms())
        )

    job.record_check("equal_coefficients", target, check)


def check_newton_sites(
    job: CentralJob, target: Target, theta: np.ndarray, replies: Mapping[str, Mapping[str, Any]]
) -> None:
    """The test of equal coefficients across sites for a Newton fit, from the H_k and g_k each
    participant sent at the pooled fit's last evaluation theta: its one-step estimate
    theta + H_k^-1 g_k (one Newton step on its own rows from the pooled fit: as efficient as its
    own fit, Lehmann and Casella 1998, 6.4) with covariance H_k^-1. Site terms are left out (in
    a site's own rows its column is its intercept, the others' are 0). Computed when the job
    ends, for the target's last fit (``record_check``)."""
    names = methods.get(target.type).parameter_names(job.spec.predictors(target), target.levels)
    terms = job.spec.site_terms()
    keep = [i for i, name in enumerate(names) if not any(name.startswith(t) for t in terms)]

    def check() -> dict[str, Any]:
        own: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for site, reply in replies.items():
            if int(reply["n"]) <= len(keep):
                continue
            h = np.asarray(reply["h"])[np.ix_(keep, keep)]
            g = np.asarray(reply["g"])[keep]
            cov = np.linalg.pinv(h, hermitian=True)
            own[site] = (theta[keep] + cov @ g, cov)
        return site_checks.equal_coefficients(
            target.name, [names[i] for i in keep], own, site_intercepts=bool(terms)
        )

    job.record_check("equal_coefficients", target, check)


async def _pooled(job: CentralJob, name: str, **args: Any) -> dict[str, dict[str, Any]]:
    """Every participant's reply; with secure aggregation only their sum, as one reply."""
    if job.secure:
        return {"the participants together": await job.ask_sum(name, **args)}
    return await job.ask(name, **args)


async def fit_averaged(job: CentralJob, target: Target, start: np.ndarray | None = None) -> Fit:
    """beta = sum(n_k beta_k) / N and V = sum(n_k^2 V_k) / N^2 over every participant's own fit.

    A Gaussian target's sigma^2 is drawn from N and the summed SSE of the sites' own fits, and
    alpha from Normal(beta, sigma^2 V). Sites keep their own warm starts: ``start`` is unused.
    """
    return _averaged(job, target, await job.ask("local_fit", target=target.index), check=True)


async def averaged_chains(
    job: CentralJob, target: Target, starts: list[np.ndarray | None]
) -> list[Fit]:
    """:func:`fit_averaged` of every chain, from one request (each site fits every chain);
    the test of equal coefficients across sites from chain 1's fits."""
    replies = await job.ask("local_fit", target=target.index)
    return [
        _averaged(job, target, chain_replies(replies, c), check=c == 0) for c in range(len(starts))
    ]


def _averaged(job: CentralJob, target: Target, replies: Replies, *, check: bool) -> Fit:
    names = job.spec.predictors(target)
    method = methods.get(target.type)
    n = int(total(replies, "n"))
    if n == 0:
        raise FitError(f"target '{target.name}': no row has it and every predictor observed")
    for site, reply in replies.items():
        if not int(reply["converged"]):
            job.warn(
                f"target '{target.name}': {site}'s own Newton fit did not converge (max_iter); "
                "its last coefficients are averaged"
            )
    if check and len(replies) > 1:  # central and at least one site
        job.record_check(
            "equal_coefficients",
            target,
            site_checks.equal_coefficients(
                target.name,
                names,
                {
                    site: own
                    for site, reply in replies.items()
                    if (own := _own_fit(reply, method.residual_variance, len(names))) is not None
                },
            ),
        )
    return fit_from(
        target.type,
        n=n,
        beta=np.asarray(total(replies, "beta_n")) / n,
        covariance=np.asarray(total(replies, "cov_n2")) / float(n) ** 2,
        mean=np.asarray(total(replies, "sums")) / n,
        sse=float(total(replies, "sse")) if method.residual_variance else None,
        names=names,
        target=target.name,
    )


def _own_fit(
    reply: Mapping[str, Any], residual_variance: bool, p: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """A participant's own coefficients and their covariance from its ``local_fit`` reply
    (n theta, n^2 V; a Gaussian V times SSE / (n - p)); None when it has no fit to compare:
    no row, Newton not converged, or no residual degree of freedom."""
    n = int(reply["n"])
    if n == 0 or not int(reply["converged"]) or (residual_variance and n <= p):
        return None
    covariance = np.asarray(reply["cov_n2"]) / float(n) ** 2
    if residual_variance:
        covariance = covariance * float(reply["sse"]) / (n - p)
    return np.asarray(reply["beta_n"]) / n, covariance


async def fit_surrogate(job: CentralJob, target: Target, start: np.ndarray | None = None) -> Fit:
    """Communication-efficient surrogate likelihood: central's own fit beta_1, every
    participant's average gradient at it (one ask), central's fit corrected by the gradients,
    its Gram or Hessian (and SSE) scaled by N / n_central. Central keeps its own warm starts."""
    (fit,) = await _surrogate(job, target, chains=None)
    return fit


async def surrogate_chains(
    job: CentralJob, target: Target, starts: list[np.ndarray | None]
) -> list[Fit]:
    """:func:`fit_surrogate` of every chain: central's own fits of each, then every chain's
    gradients from one request (central's local operations take the chain); the check of
    central's covariate means from chain 1's sums."""
    return await _surrogate(job, target, chains=len(starts))


async def _surrogate(job: CentralJob, target: Target, *, chains: int | None) -> list[Fit]:
    names = job.spec.predictors(target)
    at = [{}] if chains is None else [{"chain": c} for c in range(chains)]
    owns = [await job.local("local_fit", target=target.index, **where) for where in at]
    if int(owns[0]["n"]) == 0:
        raise FitError(
            f"target '{target.name}': {job.spec.algorithm} starts from central's own fit, but "
            "central has no row with it and every predictor observed (use SIMI or AVGMMI)"
        )
    betas = [np.asarray(own["beta_n"]) / int(own["n"]) for own in owns]
    replies = await job.ask(
        "gradient", target=target.index, beta=betas[0] if chains is None else np.stack(betas)
    )
    fits = []
    for c, (beta, where) in enumerate(zip(betas, at, strict=True)):
        mine = replies if chains is None else chain_replies(replies, c)
        n = int(total(mine, "n"))
        gradient = sum(int(r["n"]) * np.asarray(r["gradient"]) for r in mine.values()) / n
        if c == 0 and len(mine) > 1:  # central and at least one site
            job.record_check(
                "covariate_means",
                target,
                site_checks.covariate_means(
                    target.name,
                    names,
                    central_n=int(owns[c]["n"]),
                    central_sums=np.asarray(mine[CENTRAL]["sums"]),
                    n=n,
                    sums=np.asarray(total(mine, "sums")),
                    squares=np.asarray(total(mine, "squares")),
                    algorithm=job.spec.algorithm,
                ),
            )
        surrogate = await job.local(
            "surrogate_fit", target=target.index, beta=beta, gradient=gradient, n=n, **where
        )
        if not int(surrogate["converged"]):
            job.warn(
                f"target '{target.name}': Newton on the surrogate likelihood did not converge "
                f"in {surrogate['iterations']} iterations (max_iter); the last coefficients are "
                "used"
            )
        fits.append(
            fit_from(
                target.type,
                n=n,
                beta=np.asarray(surrogate["beta"]),
                covariance=np.asarray(surrogate["covariance"]),
                mean=np.asarray(surrogate["mean"]),
                sse=(
                    float(surrogate["sse"]) if methods.get(target.type).residual_variance else None
                ),
                names=names,
                target=target.name,
            )
        )
    return fits


def record(
    job: CentralJob, target: Target, fit: Fit, *, cycle: int, chain: int | None = None
) -> None:
    """Put a fit in the report: with the predictors it left out as constant (mice's
    loggedEvents) and whether separation made it augment its rows."""
    message = (
        f"target '{target.name}': the fit separates the rows (its coefficients diverge), so it "
        "was refitted with augmented pseudo-rows (White, Daniel and Royston 2010), as mice's "
        "logreg does; the report's fits say which"
    )
    if fit.augmented and message not in job.warnings:  # once per target, not once per cycle
        job.warn(message)
    job.record_fit(
        target=target,
        cycle=cycle,
        n=fit.n,
        coefficients=fit.beta,
        sse=fit.sse,
        iterations=fit.iterations,
        dropped=fit.dropped,
        augmented=fit.augmented,
        chain=chain,
    )
