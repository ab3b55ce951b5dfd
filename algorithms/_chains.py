"""The chains of the chained family (ALGORITHMS.md, SIMICE): one chain (MIDN's way) or M
independent chains (mice's), and how every chain's fit of a target travels in one request.

Site side. A participant keeps one table, ``state["z"]``, and per target its imputed cells in
every chain, ``state["cells"][target]`` (chains x its missing cells of the target): M copies of
the imputed cells only, never M tables. :func:`use` writes a chain's cells into the table
before anything reads it. Every operation that fits answers for every chain at once
(:func:`per_chain`): the arguments that differ by chain (``theta``, ``beta``, the drawn
parameters) come stacked, one a chain, and every value of the reply but the rows ``n`` (the same
in every chain: the rows where the target was observed) has a leading chain dimension, declared
``m`` in params.json (:func:`declared`). A request whose stack does not hold one entry per chain
of the job is refused before any row is read, so a job's chains bound what a site sends.

Central side. :func:`lockstep` runs the M fits of a target side by side, each as its method
writes it, and sends all their asks of a step in one request: a Gaussian target still costs one
round trip per cycle, and a Newton one as many as its slowest chain needs. :func:`chain_replies`
takes one chain's part of the replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from algorithms._site import Handler
from algorithms._stats import Fit
from algorithms.methods._method import Ask
from federation.errors import ProtocolError
from federation.replies import CHAINS
from federation.site import SiteJob

STACKED = ("theta", "beta")
"""Arguments of a fitting operation that come one a chain."""
CANDIDATES = "candidates"
"""With a stacked line search: how many of each chain's rows of ``theta`` are candidates."""
SHARED = ("n",)
"""Reply values the same in every chain, sent once (the rows a fit uses)."""


# ---------------------------------------------------------------- a site's chains


def count(site: SiteJob) -> int:
    return site.spec.chains


def start_cells(site: SiteJob, z: np.ndarray, observed: Mapping[int, np.ndarray]) -> None:
    """Each chain's own starting draws of every target's missing cells, from this site's own
    observed values of it (mice's initialisation); chain 1's are written into ``z``."""
    cells: dict[int, np.ndarray] = {}
    for t in site.targets:
        holes = ~observed[t.index]
        seen = z[observed[t.index], t.column]
        draws = np.zeros((count(site), int(holes.sum())))
        if seen.size:
            for c in range(count(site)):
                draws[c] = seen[site.rng.integers(0, seen.size, size=draws.shape[1])]
        cells[t.index] = draws
        z[holes, t.column] = draws[0]
    site.state.update(z=z, rows=dict(observed), cells=cells, chain=0)


def use(site: SiteJob, chain: int) -> np.ndarray:
    """The table with ``chain``'s imputed cells (0-based), and that chain's warm starts in
    ``state["starts"]`` (a participant's own Newton fits, AVGMMICE and CSLMICE)."""
    z: np.ndarray = site.state["z"]
    if site.state["chain"] != chain:
        for t in site.targets:
            z[~site.state["rows"][t.index], t.column] = site.state["cells"][t.index][chain]
        site.state["chain"] = chain
    site.state["starts"] = site.state.setdefault("chain_starts", {}).setdefault(chain, {})
    return z


def store(site: SiteJob, target: int, chain: int, values: np.ndarray) -> None:
    """New imputed cells of a target in a chain (the one :func:`use` wrote in)."""
    assert site.state["chain"] == chain
    site.state["cells"][target][chain] = values
    site.state["z"][~site.state["rows"][target], target - 1] = values


def stacked(site: SiteJob, name: str, value: Any) -> np.ndarray:
    """An argument that must hold one entry per chain of the job; refused otherwise."""
    array = np.asarray(value)
    if array.ndim == 0 or array.shape[0] != count(site):
        found = "no chain dimension" if array.ndim == 0 else f"{array.shape[0]} chain(s)"
        raise ProtocolError(
            f"'{name}' must hold one entry per chain of the job ({count(site)}), it holds {found}; "
            "nothing was computed"
        )
    return array


def stack(replies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One reply from every chain's: each value stacked, the shared ones (``n``) once."""
    result: dict[str, Any] = {}
    for key in replies[0]:
        values = [reply[key] for reply in replies]
        if key in SHARED:
            if any(int(v) != int(values[0]) for v in values):
                raise ProtocolError(f"'{key}' differs between chains: the rows changed")
            result[key] = values[0]
        else:
            result[key] = np.stack([np.asarray(v) for v in values])
    return result


def per_chain(handler: Handler) -> Handler:
    """A fitting operation answered for every chain: the stacked arguments split, the handler
    run on each chain's table, the replies stacked."""

    def run(site: SiteJob, **args: Any) -> dict[str, Any]:
        chains = count(site)
        own = {k: stacked(site, k, args.pop(k)) for k in STACKED if k in args}
        candidates = args.pop(CANDIDATES, None)
        if candidates is not None:
            candidates = stacked(site, CANDIDATES, candidates)
            theta = own.get("theta")
            if (
                theta is None
                or theta.ndim != 3
                or candidates.dtype.kind not in "iu"
                or not np.all((candidates >= 1) & (candidates <= theta.shape[1]))
            ):
                raise ProtocolError("a stacked line search needs 1 to its rows candidates a chain")
        replies = []
        for c in range(chains):
            use(site, c)
            mine = {k: v[c] for k, v in own.items()}
            if candidates is not None:
                mine["theta"] = mine["theta"][: int(candidates[c])]
            replies.append(handler(site, **args, **mine))
        return stack(replies)

    run.__doc__ = f"Every chain's: {handler.__doc__ or ''}".strip()
    return run


def at_chain(handler: Handler) -> Handler:
    """A central-only operation on one chain's table (argument ``chain``, 0-based)."""

    def run(site: SiteJob, *, chain: int, **args: Any) -> dict[str, Any]:
        if not 0 <= int(chain) < count(site):
            raise ProtocolError(f"chain {chain} is not one of the job's {count(site)}")
        use(site, int(chain))
        return handler(site, **args)

    run.__doc__ = handler.__doc__
    return run


def declared(replies: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """Replies as a chained algorithm declares them: a leading ``m`` on every value but the
    rows (``float[p,p]`` becomes ``float[m,p,p]``, ``float`` becomes ``float[m]``)."""

    def chained(kind: str) -> str:
        if kind == "rows":
            return kind
        name, _, dims = kind.partition("[")
        return f"{name}[{CHAINS},{dims}" if dims else f"{name}[{CHAINS}]"

    return {op: {k: chained(v) for k, v in keys.items()} for op, keys in replies.items()}


# ---------------------------------------------------------------- central's chains

Replies = Mapping[str, Mapping[str, Any]]
Asked = tuple[str, Mapping[str, Any]]
Exchange = Callable[[list[Asked], frozenset[int]], Awaitable[list[Replies]]]
"""``exchange(asked, running)``: one request for every chain's ask (a finished chain's last one
again, ``running`` the chains still fitting), and each chain's part of the replies."""


def chain_replies(replies: Replies, chain: int, keys: Sequence[str] | None = None) -> Replies:
    """One chain's part of every participant's stacked reply (only ``keys``, when given)."""
    return {
        site: {
            k: v if k in SHARED else v[chain] for k, v in reply.items() if keys is None or k in keys
        }
        for site, reply in replies.items()
    }


def stack_draws(drawn: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Every chain's drawn parameters as one instruction: each value stacked, one a chain."""
    return {key: np.stack([np.asarray(d[key]) for d in drawn]) for key in drawn[0]}


async def lockstep(
    fits: Sequence[Callable[[Ask], Awaitable[Fit]]], exchange: Exchange
) -> list[Fit]:
    """Run the fits side by side, each with its own ``ask``: once every fit still running has
    asked, one :data:`Exchange` carries all the asks, and each fit gets its own replies. The
    result does not depend on how the fits interleave: the request is formed in chain order."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def asker(chain: int) -> Ask:
        async def ask(operation: str, **args: Any) -> Replies:
            future: asyncio.Future[Replies] = loop.create_future()
            queue.put_nowait((chain, (operation, args, future)))
            return await future

        return ask

    async def one(chain: int, fit: Callable[[Ask], Awaitable[Fit]]) -> None:
        try:
            queue.put_nowait((chain, await fit(asker(chain))))
        except Exception as error:  # the job fails with the first chain's error
            queue.put_nowait((chain, error))

    tasks = [asyncio.create_task(one(c, fit)) for c, fit in enumerate(fits)]
    done: dict[int, Fit] = {}
    waiting: dict[int, tuple[str, Mapping[str, Any], asyncio.Future[Replies]]] = {}
    last: dict[int, Asked] = {}
    try:
        while len(done) < len(fits):
            chain, item = await queue.get()
            if isinstance(item, Exception):
                raise item
            if isinstance(item, tuple):
                waiting[chain] = item
                last[chain] = (item[0], item[1])
            else:
                done[chain] = item
            if waiting and len(waiting) + len(done) == len(fits):
                asked = [last[c] for c in range(len(fits))]
                replies = await exchange(asked, frozenset(waiting))
                for c, (_, _, future) in waiting.items():
                    future.set_result(replies[c])
                waiting = {}
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [done[c] for c in range(len(fits))]
