"""Prometheus metrics, read when Prometheus asks, written out by ``prometheus_client``.

Each portal declares a collector of what it already counts (:class:`Snapshot` over a function
that yields metric families); :func:`metrics_response` writes them in the format the scraper
asks for in its Accept header (OpenMetrics, or the Prometheus text format by default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response


class Snapshot(Collector):
    """Metric families made by ``families`` at each scrape, from the portal's own counts."""

    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to read before the portal has started


def registry(families: Callable[[], Iterable[Metric]]) -> CollectorRegistry:
    """A registry of the portal's own (not the process-wide default, which every app in one
    process would share)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(Snapshot(families))
    return found


def metrics_response(request: Request, metrics: CollectorRegistry) -> Response:
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics), media_type=content_type)
