"""Comparing methods on the same network: one report that sets their fits side by side.

A comparison runs several algorithms on the same data, targets, parameters and seed, and
measures each against the pooled-exact reference (SIMI for one target, SIMICE for chained
equations): per target, each method's coefficients, their distance from the reference's, the
rows each fit used, and per method the round trips, bytes and wall time it cost.

``comparison_report`` works from the methods' reports alone, so ``fip simulate --compare`` and
the portal's compare jobs (one child job per method) build the same report.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from federation.data import Table
from federation.errors import FipError, InputError
from federation.job import JobEvent
from federation.registry import Algorithm, Registry
from federation.runtime import JobResult
from federation.simulation import make_spec, simulate

REFERENCE_SINGLE = "SIMI"
REFERENCE_CHAINED = "SIMICE"


def reference_for(algorithms: Sequence[Algorithm]) -> str:
    """The pooled-exact method the others are measured against; all must impute alike."""
    kinds = {a.capabilities.multiple_targets for a in algorithms}
    if len(kinds) > 1:
        single = [a.name for a in algorithms if not a.capabilities.multiple_targets]
        chained = [a.name for a in algorithms if a.capabilities.multiple_targets]
        raise InputError(
            f"compare methods of one kind: {', '.join(single)} impute one target, "
            f"{', '.join(chained)} several by chained equations"
        )
    return REFERENCE_CHAINED if kinds == {True} else REFERENCE_SINGLE


def methods_to_compare(chosen: Sequence[Algorithm], registry: Registry) -> list[Algorithm]:
    """The methods to run, the reference first (added from ``registry`` when not chosen)."""
    names = [a.name for a in chosen]
    if len(set(names)) != len(names):
        raise InputError(f"a method is named twice in {', '.join(names)}")
    if not chosen:
        raise InputError("name the methods to compare, e.g. SIMI,CSLMI,AVGMMI,IMI")
    reference = reference_for(chosen)
    methods = list(chosen)
    if reference not in names:
        methods.append(registry.get(reference))
    methods.sort(key=lambda a: a.name != reference)  # stable: the reference first
    if len(methods) < 2:
        raise InputError(f"name at least one method to compare with {reference}")
    return methods


async def simulate_comparison(
    *,
    methods: Sequence[Algorithm],
    central: Table,
    sites: Mapping[str, Table],
    targets: Sequence[tuple[str | int, str]],
    params: Mapping[str, Any],
    seed: int | None = None,
    on_event: Callable[[str, JobEvent], None] | None = None,
    levels: Mapping[str, Sequence[object]] | None = None,
    roles: Mapping[str, str] | None = None,
    predictors: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, Any], dict[str, JobResult]]:
    """Run every method in this process with one seed; the comparison and each finished result.

    Parameters and targets are checked for every method before any runs. A method that fails
    is reported with its reason and the others still run.
    """
    fixed = secrets.randbelow(2**32) if seed is None else seed
    for algorithm in methods:
        try:
            make_spec(
                algorithm=algorithm,
                central=central,
                sites=sites,
                targets=targets,
                params=params,
                levels=levels,
                roles=roles,
                predictors=predictors,
            )
        except InputError as error:
            raise InputError(f"{algorithm.name}: {error}") from None
    results: dict[str, JobResult] = {}
    entries: list[dict[str, Any]] = []
    for algorithm in methods:

        def forward(event: JobEvent, name: str = algorithm.name) -> None:
            if on_event is not None:
                on_event(name, event)

        try:
            result = await simulate(
                algorithm=algorithm,
                central=central,
                sites=sites,
                targets=targets,
                params=params,
                seed=fixed,
                on_event=forward,
                levels=levels,
                roles=roles,
                predictors=predictors,
            )
        except FipError as error:
            entries.append({"algorithm": algorithm.name, "status": "failed", "message": str(error)})
            continue
        results[algorithm.name] = result
        entries.append(
            {"algorithm": algorithm.name, "status": "completed", "report": result.report}
        )
    comparison = comparison_report(entries, reference=reference_for(methods))
    comparison["seed"] = fixed
    return comparison, results


def summary_fits(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per target: the coefficients a method settled on, and the rows and cycles behind them.

    One-target methods fit once. Chained methods refit every cycle from imputed data: their
    coefficients are the mean over the cycles from the first imputed dataset on (the burn-in
    left out), so that the comparison is not one random cycle's draw; with parallel chains,
    the mean over the chains of their last cycle's fits (the cycle each dataset comes from).
    """
    burn_in = int(report["params"].get("iteration_before_first_imputation", 1))
    summaries: dict[str, dict[str, Any]] = {}
    for target in report["targets"]:
        fits = [f for f in report["fits"] if f["target"] == target["name"]]
        kept = [f for f in fits if f["cycle"] >= burn_in] or fits
        if not kept:
            continue
        names = list(kept[0]["coefficients"])
        mean = np.mean([[f["coefficients"][n] for n in names] for f in kept], axis=0)
        summaries[target["name"]] = {
            "coefficients": dict(zip(names, map(float, mean), strict=True)),
            "n": kept[-1]["n"],
            "cycles": [kept[0]["cycle"], kept[-1]["cycle"]],
        }
    return summaries


def comparison_report(methods: Sequence[Mapping[str, Any]], *, reference: str) -> dict[str, Any]:
    """The side-by-side report. Each method is ``{"algorithm", "status", "message", "report"}``
    (``report`` the job report when it completed, else None)."""
    fits = {m["algorithm"]: summary_fits(m["report"]) for m in methods if m.get("report")}
    targets: list[dict[str, Any]] = next(
        (m["report"]["targets"] for m in methods if m.get("report")), []
    )
    base = fits.get(reference, {})
    rows = []
    for target in targets:
        name = target["name"]
        entry: dict[str, Any] = {"name": name, "type": target["type"], "methods": {}}
        reference_beta = base.get(name, {}).get("coefficients")
        for method in methods:
            summary = fits.get(method["algorithm"], {}).get(name)
            if summary is None:
                continue
            result = dict(summary)
            gap = (
                None
                if reference_beta is None
                else distance(summary["coefficients"], reference_beta)
            )
            if gap is not None:
                result["distance"] = gap
            shift = _check(method, "covariate_means", name)
            if shift is not None:
                result["covariate_means"] = shift
            entry["methods"][method["algorithm"]] = result
        entry["coefficients"] = coefficient_names(entry)
        entry["equal_coefficients"] = _equal_coefficients(methods, name, reference=reference)
        rows.append(entry)
    return {
        "reference": reference,
        "summary": (
            "coefficients of one-target methods are their one fit; of chained methods, the mean "
            "of the fits from the first imputed dataset's cycles on. distance: from the "
            f"reference {reference}'s coefficients, relative (L2 norm of the difference over "
            "the reference's L2 norm) and largest absolute difference"
        ),
        "methods": [_cost(m) for m in methods],
        "targets": rows,
    }


def _check(method: Mapping[str, Any], kind: str, target: str) -> dict[str, Any] | None:
    """A site check of a method's report for a target (``federation.site_checks``), if any."""
    report = method.get("report") or {}
    found: dict[str, Any] | None = report.get("site_checks", {}).get(kind, {}).get(target)
    return found


def _equal_coefficients(
    methods: Sequence[Mapping[str, Any]], target: str, *, reference: str
) -> dict[str, Any]:
    """The test of equal coefficients across sites for a target: the reference's (from the
    sums its Gaussian fits received) or else that of the first method that fits each site
    alone (AVGMMI, AVGMMICE); ``from`` names it. Without either, a note says what would."""
    ordered = sorted(methods, key=lambda m: m["algorithm"] != reference)
    for method in ordered:
        found = _check(method, "equal_coefficients", target)
        if found is not None:
            return {"from": method["algorithm"], **found}
    return {
        "from": None,
        "note": "no method here saw each site's own fit of this target (the pooled methods "
        "do for a continuous target without secure aggregation): add AVGMMI or AVGMMICE to "
        "test whether the sites' coefficients are equal",
    }


def distance(
    coefficients: Mapping[str, float], reference: Mapping[str, float]
) -> dict[str, Any] | None:
    """How far coefficients are from the reference's: relative L2 and largest absolute gap.

    Over the coefficients both have (a method with a smaller model, such as an intercept-only
    one, is measured on those it fits, and ``over`` lists them); None when they share none.
    """
    names = [n for n in reference if n in coefficients]
    if not names:
        return None
    a = np.array([coefficients[n] for n in names])
    b = np.array([reference[n] for n in names])
    norm = float(np.linalg.norm(b))
    result: dict[str, Any] = {
        "relative": float(np.linalg.norm(a - b) / norm) if norm else float(np.linalg.norm(a - b)),
        "max_abs": float(np.max(np.abs(a - b))),
    }
    if len(names) < len(reference):
        result["over"] = names
    return result


def _cost(method: Mapping[str, Any]) -> dict[str, Any]:
    report = method.get("report")
    entry: dict[str, Any] = {
        "algorithm": method["algorithm"],
        "status": method["status"],
    }
    if method.get("message"):
        entry["message"] = method["message"]
    if report:
        entry.update(
            version=report["version"],
            round_trips=report["round_trips"],
            bytes_sent=report["bytes_sent"],
            bytes_received=report["bytes_received"],
            seconds=report["seconds"],
            sites=[s["name"] for s in report["sites"]],
        )
    return entry


def check_lines(target: Mapping[str, Any]) -> list[str]:
    """The site checks of a target's row as sentences: the test of equal coefficients across
    sites, and each method's warning on central's covariate means."""
    lines = []
    test = target.get("equal_coefficients") or {}
    if test.get("p_value") is not None:
        lines.append(
            f"equal coefficients across sites (from {test['from']}'s per-site fits): "
            f"Q = {test['statistic']:.3g}, df = {test['df']}, p = {test['p_value']:.3g}"
        )
    elif test.get("note"):
        lines.append(f"equal coefficients across sites: {test['note']}")
    if test.get("warning"):
        lines.append(f"warning: {test['warning']}")
    for name, method in target["methods"].items():
        shift = method.get("covariate_means") or {}
        if shift.get("warning"):
            lines.append(f"warning ({name}): {shift['warning']}")
    return lines


def coefficient_names(target: Mapping[str, Any]) -> list[str]:
    """Every coefficient any method fitted for a target, in the order they first appear."""
    names: dict[str, None] = {}
    for method in target["methods"].values():
        names.update(dict.fromkeys(method["coefficients"]))
    return list(names)


def format_table(comparison: Mapping[str, Any]) -> str:
    """The report as plain text: a table of coefficients per target, then the costs."""
    lines: list[str] = []
    reference = comparison["reference"]
    for target in comparison["targets"]:
        methods = list(target["methods"])
        if not methods:
            continue
        lines.append(f"target '{target['name']}' ({target['type']})")
        names = coefficient_names(target)
        width = max(len(n) for n in [*names, "distance from " + reference, "rows"]) + 2
        lines.append(" " * width + "".join(f"{m:>12}" for m in methods))
        for name in names:
            values = "".join(
                f"{target['methods'][m]['coefficients'].get(name, float('nan')):>12.5g}"
                for m in methods
            )
            lines.append(f"{name:<{width}}{values}")
        lines.append(
            f"{'rows':<{width}}" + "".join(f"{target['methods'][m]['n']:>12}" for m in methods)
        )
        lines.append(
            f"{'distance from ' + reference:<{width}}"
            + "".join(
                f"{target['methods'][m].get('distance', {}).get('relative', float('nan')):>12.3g}"
                for m in methods
            )
        )
        lines.extend(check_lines(target))
        lines.append("")
    lines.append(f"{'method':<12}{'status':>11}{'round trips':>13}{'bytes':>12}{'seconds':>10}")
    for method in comparison["methods"]:
        if "round_trips" in method:
            size = method["bytes_sent"] + method["bytes_received"]
            lines.append(
                f"{method['algorithm']:<12}{method['status']:>11}{method['round_trips']:>13}"
                f"{size:>12,}{method['seconds']:>10.2f}"
            )
        else:
            lines.append(
                f"{method['algorithm']:<12}{method['status']:>11}  {method.get('message', '')}"
            )
    return "\n".join(lines)
