"""Small builders shared by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from federation.data import Table
from federation.registry import Algorithm, Registry
from federation.runtime import EventSink, JobResult
from federation.simulation import simulate


@cache
def builtin(name: str) -> Algorithm:
    """A built-in algorithm, loaded once per test session."""
    return Registry.with_builtins().get(name)


def table(label: str, columns: Sequence[str], values: np.ndarray) -> Table:
    return Table(label=label, columns=tuple(columns), values=np.asarray(values, dtype=np.float64))


def run(
    algorithm: str | Algorithm,
    central: Table,
    sites: Mapping[str, Table],
    targets: Sequence[tuple[str | int, str]],
    *,
    seed: int = 1,
    on_event: EventSink | None = None,
    levels: Mapping[str, Sequence[object]] | None = None,
    roles: Mapping[str, str] | None = None,
    predictors: Mapping[str, Sequence[str]] | None = None,
    **params: Any,
) -> JobResult:
    """Simulate a job synchronously; ``params`` are the algorithm's parameters."""
    chosen = builtin(algorithm) if isinstance(algorithm, str) else algorithm
    return asyncio.run(
        simulate(
            algorithm=chosen,
            central=central,
            sites=sites,
            targets=targets,
            params=params,
            seed=seed,
            on_event=on_event,
            levels=levels,
            roles=roles,
            predictors=predictors,
        )
    )


def metric_samples(text: str) -> dict[str, float]:
    """The samples of a /metrics page as a Prometheus scraper parses them, by name and labels
    as written (``fip_jobs{state="created"}``)."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def sse_events(lines: Iterable[str], count: int) -> list[tuple[str, str]]:
    """The first ``count`` server-sent events of a stream's lines, as (event, data): a data
    field's lines joined by newlines, as a browser's EventSource joins them."""
    events: list[tuple[str, str]] = []
    name, data = "", []
    for line in lines:
        if line.startswith("event:"):
            name = line.removeprefix("event:").removeprefix(" ")
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").removeprefix(" "))
        elif not line and name:
            events.append((name, "\n".join(data)))
            name, data = "", []
            if len(events) == count:
                break
    return events
