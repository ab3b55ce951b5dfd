"""Central's metrics: jobs by state, sites online, and the frames and bytes with the sites."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select

from portal_central.jobs.status import TRANSITIONS
from portal_central.models import Job
from portal_central.state import CentralState


def families(state: Callable[[], CentralState]) -> Callable[[], Iterator[Metric]]:
    def collect() -> Iterator[Metric]:
        central = state()
        with central.database.session() as session:
            counts = dict(
                session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
        jobs = GaugeMetricFamily("fip_jobs", "Jobs by state.", labels=["state"])
        for name in TRANSITIONS:
            jobs.add_metric([name], counts.get(name, 0))
        yield jobs
        yield GaugeMetricFamily(
            "fip_sites_online", "Sites connected now.", value=central.connections.count()
        )
        traffic = central.connections.traffic
        for direction in ("sent", "received"):
            yield CounterMetricFamily(
                f"fip_messages_{direction}",
                f"Request/reply frames {direction}.",
                value=traffic["messages_" + direction],
            )
            yield CounterMetricFamily(
                f"fip_bytes_{direction}",
                f"Bytes of request/reply frames {direction}.",
                value=traffic["bytes_" + direction],
            )

    return collect
