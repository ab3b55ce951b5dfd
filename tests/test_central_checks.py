"""Central checks every reply as the algorithm declared it, whatever a site's own runtime did:
a hostile or broken site is refused by name, and nothing it sent beyond the declaration is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from federation.errors import FitError, SiteFailed
from federation.job import CENTRAL
from federation.protocol import ErrorReply, Reply, Request, decode, encode
from federation.registry import Registry
from federation.runtime import JobResult, run_job
from federation.simulation import make_spec
from federation.site import MESSAGE_CHARS, OPEN, SiteRunner
from federation.transport import InMemoryTransport
from tests.helpers import table

Rewrite = Callable[[str, Request, Reply | ErrorReply], Reply | ErrorReply | None]
"""What a hostile site sends instead of its runner's answer (None: never answers)."""


class HostileTransport(InMemoryTransport):
    """Sites answer through their real runners; ``rewrite`` then changes what reaches central,
    as a site whose own runtime was replaced would."""

    def __init__(self, runners: dict[str, SiteRunner], rewrite: Rewrite) -> None:
        super().__init__(runners)
        self._rewrite = rewrite

    async def exchange(self, site: str, frame: bytes) -> bytes:
        answer = decode(await super().exchange(site, frame))
        request = decode(frame)
        assert isinstance(request, Request) and isinstance(answer, Reply | ErrorReply)
        changed = self._rewrite(site, request, answer)
        if changed is None:
            await asyncio.Event().wait()  # never answers
        assert changed is not None
        return encode(changed)


def _data(seed: int, rows: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    y = 1 + 2 * x + rng.normal(size=rows)
    y[:5] = np.nan
    return np.column_stack([x, y])


def _run(rewrite: Rewrite, *, deadline: float = 30) -> JobResult:
    algorithm = Registry.with_builtins().get("SIMI")
    central = table("central.csv", ["x", "y"], _data(0, 100))
    sites = {s: table(f"{s}.csv", ["x", "y"], _data(i + 1, 300)) for i, s in enumerate("ab")}
    spec = make_spec(
        algorithm=algorithm,
        central=central,
        sites=sites,
        targets=[("y", "gaussian")],
        params={},
        seed=3,
    )
    runners = {s: SiteRunner(site=s, data=t, algorithm=algorithm) for s, t in sites.items()}
    local = SiteRunner(site=CENTRAL, data=central, algorithm=algorithm, is_central=True)
    return asyncio.run(
        run_job(
            spec=spec,
            central_module=algorithm.central,
            local=local,
            transport=HostileTransport(runners, rewrite),
            deadline=deadline,
        )
    )


def _at(site: str, op: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Rewrite:
    """Change the result of ``op`` in replies of ``site``; everything else passes."""

    def rewrite(name: str, request: Request, answer: Reply | ErrorReply) -> Reply | ErrorReply:
        if name != site or not isinstance(answer, Reply):
            return answer
        results = [
            change(dict(result)) if o.name == op else result
            for o, result in zip(request.ops, answer.results, strict=True)
        ]
        return answer.model_copy(update={"results": results})

    return rewrite


def _refusal(rewrite: Rewrite) -> str:
    with pytest.raises(SiteFailed) as caught:
        _run(rewrite)
    assert set(caught.value.failures) == {"b"}, caught.value.failures
    message = caught.value.failures["b"]
    assert len(message) <= MESSAGE_CHARS
    return message


def test_an_honest_run_passes_every_check() -> None:
    result = _run(lambda site, request, answer: answer)

    assert result.report["fits"][0]["n"] == 95 + 2 * 295


@pytest.mark.parametrize(
    ("n", "said"),
    [
        (1_000_417, "'n' (rows) is outside 0..295, the rows the site declared"),
        (100, "'n' (rows) is 100, but the site declared 295 rows for that target"),
    ],
)
def test_a_poisoned_n_is_refused_naming_the_site(n: int, said: str) -> None:
    """A site that claims other rows than it declared for the fit when the job opened."""
    message = _refusal(_at("b", "gaussian_stats", lambda r: {**r, "n": n}))

    assert said in message


def test_a_consistent_liar_is_caught_by_its_own_sums() -> None:
    """It declares 1,000,417 rows at open and in the fit, but X'X still counts 295."""

    def inflate(result: dict[str, Any]) -> dict[str, Any]:
        big = 1_000_417
        return {**result, "rows": big, "rows_used": big, "target_rows": np.array([big])}

    lie = _at("b", OPEN, inflate)
    fit = _at("b", "gaussian_stats", lambda r: {**r, "n": 1_000_417})

    with pytest.raises(FitError, match="b sent n = 1000417 with sums of 295 rows"):
        _run(lambda s, q, a: fit(s, q, lie(s, q, a)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda r: {**r, "yty": "1.5,2.5,3.5"}, "is a str"),
        (lambda r: {**r, "yty": {"rows": [1.5, 2.5]}}, "is a dict"),
        (lambda r: {**r, "rows": np.arange(600.0)}, "undeclared ['rows']"),
        (lambda r: {k: v for k, v in r.items() if k != "xty"}, "missing ['xty']"),
        (lambda r: {**r, "xty": np.full(2, np.nan)}, "NaN"),
        (lambda r: {**r, "xtx": np.zeros((40, 40))}, "has shape [40, 40], declared [2, 2]"),
    ],
    ids=["text", "nested", "extra key", "missing key", "NaN", "oversized"],
)
def test_an_undeclared_reply_is_refused_naming_the_site(
    change: Callable[[dict[str, Any]], dict[str, Any]], said: str
) -> None:
    message = _refusal(_at("b", "gaussian_stats", change))

    assert "not what was declared" in message and said in message
    assert "1.5,2.5" not in message


def test_a_long_error_text_from_a_site_is_cut_before_it_is_kept() -> None:
    def shout(site: str, request: Request, answer: Reply | ErrorReply) -> Reply | ErrorReply:
        if site == "b" and request.ops[-1].name == "gaussian_stats":
            return ErrorReply(
                job_id=request.job_id, seq=request.seq, kind="failed", message="row " * 2_500_000
            )
        return answer

    message = _refusal(shout)

    assert message.startswith("row row") and len(message) == MESSAGE_CHARS


def test_a_site_that_never_answers_fails_the_job_by_the_deadline_naming_it() -> None:
    def silent(
        site: str, request: Request, answer: Reply | ErrorReply
    ) -> Reply | ErrorReply | None:
        return None if site == "b" and request.ops[-1].name == "gaussian_stats" else answer

    with pytest.raises(SiteFailed) as caught:
        _run(silent, deadline=0.5)

    assert caught.value.failures == {
        "b": "did not answer 'gaussian_stats' within 0.5 s (the request deadline)"
    }
