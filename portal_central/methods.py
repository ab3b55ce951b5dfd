"""The built-in methods' names spelled out, with a line on when to use each: shown wherever a
user picks or reads a method (the algorithms list and page, the job wizard, a comparison).

Kept here, keyed by algorithm name, rather than in each ``params.json``: a package's files are
what sites approve by digest, and words for people should change without a new version.
An uploaded algorithm has no entry and shows its own description only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodName:
    title: str
    """The name spelled out."""
    when: str
    """One line: when to use it."""


_POOLED = "the fit equals one on the rows of every site pooled"
_CENTRAL_ONLY = "a baseline: what central gets without the network; compare it with the pooled fit"

METHODS: dict[str, MethodName] = {
    "SIMI": MethodName(
        "Pooled exact imputation, one target",
        f"The first choice for one target: {_POOLED}.",
    ),
    "SIMICE": MethodName(
        "Pooled exact imputation by chained equations, several targets",
        "The first choice for several targets: every fit in every cycle equals one on the rows "
        "of every site pooled.",
    ),
    "IMI": MethodName(
        "Imputation at central alone, one target (no site takes part)",
        f"When no site can take part, or as {_CENTRAL_ONLY}.",
    ),
    "IMICE": MethodName(
        "Imputation at central alone by chained equations (no site takes part)",
        f"When no site can take part, or as {_CENTRAL_ONLY}.",
    ),
    "AVGMMI": MethodName(
        "Averaged-fit imputation (average mixture, AVGM), one target",
        "When round trips are costly: one per fit; close to the pooled fit when the sites are "
        "large and alike (an approximation).",
    ),
    "AVGMMICE": MethodName(
        "Averaged-fit imputation (average mixture, AVGM) by chained equations",
        "When round trips are costly: one per target and cycle; close to the pooled fit when the "
        "sites are large and alike (an approximation).",
    ),
    "CSLMI": MethodName(
        "Surrogate-likelihood imputation (communication-efficient surrogate likelihood, CSL), "
        "one target",
        "When round trips are costly and central observes the target on many rows: one per fit "
        "(an approximation; poor when central is small).",
    ),
    "CSLMICE": MethodName(
        "Surrogate-likelihood imputation (communication-efficient surrogate likelihood, CSL) "
        "by chained equations",
        "When round trips are costly and central observes every target on many rows: one per "
        "target and cycle (an approximation; poor when central is small).",
    ),
}


def method_name(name: str) -> MethodName | None:
    """The spelled-out name of a built-in method, or None for an uploaded one."""
    return METHODS.get(name)
