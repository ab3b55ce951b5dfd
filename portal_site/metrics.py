"""The site's metrics: the connection to central, and the replies and bytes sent to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from portal_site.state import SiteState


def families(state: Callable[[], SiteState]) -> Callable[[], Iterator[Metric]]:
    def collect() -> Iterator[Metric]:
        worker = state().worker
        yield GaugeMetricFamily(
            "fip_site_connected",
            "1 while the WebSocket to central is open.",
            value=1 if worker.status == "connected" else 0,
        )
        yield CounterMetricFamily(
            "fip_site_messages_sent", "Replies sent to central.", value=worker.sent["messages"]
        )
        yield CounterMetricFamily(
            "fip_site_bytes_sent", "Bytes of replies sent to central.", value=worker.sent["bytes"]
        )

    return collect
