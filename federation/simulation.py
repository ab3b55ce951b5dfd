"""A whole job in one process: central and every site in memory, through the real codec.

This is what ``fip simulate`` runs, what algorithm authors test with, and what the registry
runs once on synthetic data before it accepts a package.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from algorithms import methods
from federation.data import Table
from federation.job import CENTRAL, JobSpec
from federation.params import resolve_params
from federation.registry import Algorithm
from federation.roles import as_written, define_columns
from federation.runtime import EventSink, JobResult, run_job
from federation.secure import check_job
from federation.site import SiteRunner
from federation.transport import InMemoryTransport


def make_spec(
    *,
    algorithm: Algorithm,
    central: Table,
    sites: Iterable[str],
    targets: Iterable[tuple[str | int, str]],
    params: Mapping[str, Any],
    seed: int | None = None,
    job_id: str = "simulation",
    levels: Mapping[str, Sequence[object]] | None = None,
    roles: Mapping[str, str] | None = None,
    predictors: Mapping[str, Sequence[str]] | None = None,
) -> JobSpec:
    """Check targets, column roles and parameters against the algorithm and central's table;
    fix the seed.

    An algorithm on central's data alone (IMI, IMICE) gets no sites, whatever is given. The
    levels of a factor or a categorical or ordinal target are ``levels``' or else those central
    observes (``federation.roles.define_columns``).
    """
    chosen = define_columns(
        central, targets=targets, roles=roles, levels=levels, predictors=predictors
    )
    algorithm.check_targets(t.type for t in chosen.targets)
    remote = tuple(sites) if algorithm.capabilities.uses_sites else ()
    resolved = resolve_params(
        algorithm.schema,
        params,
        width=lambda resolved: chosen.spec(params=resolved, sites=remote).design_width(),
    )
    check_job(algorithm.replies, resolved, remote)
    return replace(
        chosen.spec(params=resolved, sites=remote),
        job_id=job_id,
        algorithm=algorithm.name,
        version=algorithm.version,
        digest=algorithm.digest,
        seed=secrets.randbelow(2**32) if seed is None else seed,
    )


async def simulate(
    *,
    algorithm: Algorithm,
    central: Table,
    sites: Mapping[str, Table],
    targets: Iterable[tuple[str | int, str]],
    params: Mapping[str, Any],
    seed: int | None = None,
    on_event: EventSink | None = None,
    levels: Mapping[str, Sequence[object]] | None = None,
    roles: Mapping[str, str] | None = None,
    predictors: Mapping[str, Sequence[str]] | None = None,
) -> JobResult:
    """Run a job with central and ``sites`` (name -> table) in this process. Tables with
    text in their factor, carried or text-target columns are read with
    ``read_csv(text=federation.roles.text_columns(roles, targets))``."""
    spec = make_spec(
        algorithm=algorithm,
        central=central,
        sites=sites,
        targets=targets,
        params=params,
        seed=seed,
        levels=levels,
        roles=roles,
        predictors=predictors,
    )
    runners = {
        name: SiteRunner(site=name, data=sites[name], algorithm=algorithm, on_event=on_event)
        for name in spec.sites
    }
    local = SiteRunner(
        site=CENTRAL, data=central, algorithm=algorithm, is_central=True, on_event=on_event
    )
    try:
        return await run_job(
            spec=spec,
            central_module=algorithm.central,
            local=local,
            transport=InMemoryTransport(runners),
            on_event=on_event,
        )
    finally:
        for runner in (local, *runners.values()):
            runner.close()


def check_analysis(model: str, family: str, columns: Iterable[str], *, label: str) -> None:
    """Refuse an analysis model that ``columns`` cannot answer, before any job runs."""
    from federation.analysis import FAMILIES
    from federation.errors import InputError
    from federation.formula import check_columns, parse_formula

    if family not in FAMILIES:
        raise InputError(f"analysis family must be linear or logistic, got {family!r}")
    check_columns(parse_formula(model), tuple(columns), label=label)


def central_datasets(result: JobResult) -> list[dict[str, np.ndarray]]:
    """Central's M imputed datasets, each as column name -> cells, for an analysis: a factor or
    text target as its text (an object array), carried columns left out."""
    columns = result.table.columns
    labels = {t.name: t.labels for t in result.spec.targets if t.labels}
    datasets = []
    for m in range(1, len(result.imputed_cells) + 1):
        values = result.dataset(m)
        data = {name: values[:, j] for j, name in enumerate(columns)}
        for name, cells in result.table.text.items():
            if name in data:
                data[name] = as_written(cells, data[name], labels.get(name))
        datasets.append(data)
    return datasets


def _levels(result: JobResult) -> dict[str, tuple[str, ...]]:
    """The job's levels of its text columns, the reference first, for an analysis."""
    levels = {name: tuple(v) for name, v in result.spec.factors.items()}
    levels.update({t.name: t.labels for t in result.spec.targets if t.labels})
    return {name: v for name, v in levels.items() if name in result.table.text}


def add_analysis(result: JobResult, model: str, family: str = "linear") -> str | None:
    """Fit ``model`` on each of central's M imputed datasets, pool by Rubin's rules, and put the
    pooled table in the report under ``analysis``. A model that cannot be fitted (a singular
    design, separation) leaves the imputations as they are: the report's ``analysis`` holds the
    reason, which is also returned."""
    from federation.analysis import analyse
    from federation.errors import FipError

    try:
        analysis = analyse(
            central_datasets(result),
            model,
            family,
            label=result.table.label,
            levels=_levels(result),
        )
    except FipError as error:
        result.report["analysis"] = {"model": model, "family": family, "error": str(error)}
        return str(error)
    result.report["analysis"] = analysis.to_dict()
    return None


def smoke_test(algorithm: Algorithm, on_event: EventSink | None = None) -> JobResult:
    """Run ``algorithm`` once on small synthetic data: central and two sites, one target of
    each method it supports (only the first when it takes one), M = 2, and two cycles when it
    declares ``iteration_before_first_imputation`` (the check proves the code runs, not that its
    chains converge). Raises what the run raises; the sites' own words (a sandboxed half's
    exception, say) reach ``on_event`` as warnings.
    """
    kinds = list(algorithm.capabilities.target_types)
    if not algorithm.capabilities.multiple_targets:
        kinds = kinds[:1]
    names = [f"t{k + 1}" for k in range(len(kinds))]
    targets = list(zip(names, kinds, strict=True))
    columns = ("x1", "x2", *names)
    rng = np.random.default_rng(0)
    params: dict[str, object] = {"imputations": 2}
    if "iteration_before_first_imputation" in algorithm.schema.get("properties", {}):
        params["iteration_before_first_imputation"] = 2

    def table(label: str, rows: int) -> Table:
        x = rng.normal(size=(rows, 2))
        eta = 0.5 + x @ np.array([1.0, -1.0])
        values = np.column_stack([x, *(methods.get(k).simulate(eta, rng) for k in kinds)])
        for position in range(len(kinds)):
            values[rng.random(rows) < 0.2, 2 + position] = np.nan
        return Table(label=label, columns=columns, values=values)

    return asyncio.run(
        simulate(
            algorithm=algorithm,
            central=table("synthetic central", 120),
            sites={"a": table("synthetic site a", 150), "b": table("synthetic site b", 150)},
            targets=targets,
            params=params,
            seed=1,
            on_event=on_event,
        )
    )
