"""The bus publisher's counters on the agent's ``/metrics``.

Read at scrape time from the publisher's plain counters (ints the event loop bumps; the
scrape thread only reads them), like the migration collector reads the hub.
"""

from __future__ import annotations

from collections.abc import Iterator

from migwatch.agent.notify.policy import Kind
from migwatch.agent.notify.publisher import BusPublisher
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class NotifyCollector(Collector):
    """``migwatch_notifications_*`` and ``migwatch_notification_bus_*``."""

    def __init__(self, publisher: BusPublisher) -> None:
        self._publisher = publisher

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        p = self._publisher
        stats = p.policy.stats
        sent = CounterMetricFamily(
            "migwatch_notifications_sent",
            "Notifications the broker took, by event.",
            labels=["event"],
        )
        for kind in Kind:
            sent.add_metric([kind.value], stats.sent[kind])
        yield sent
        yield CounterMetricFamily(
            "migwatch_notifications_conflated",
            "Progress notifications replaced by a newer state before they were sent.",
            value=stats.conflated,
        )
        yield CounterMetricFamily(
            "migwatch_notifications_retried",
            "Notifications put back after a failed send (sent again later).",
            value=stats.failed,
        )
        yield CounterMetricFamily(
            "migwatch_notifications_dropped_ends",
            "Migration end notifications dropped because too many waited for the broker.",
            value=stats.dropped_ends,
        )
        yield GaugeMetricFamily(
            "migwatch_notifications_pending",
            "Notifications waiting to be sent.",
            value=p.policy.pending,
        )
        yield CounterMetricFamily(
            "migwatch_notification_bus_outages",
            "Times the bus became unreachable.",
            value=p.outages,
        )
        yield GaugeMetricFamily(
            "migwatch_notification_bus_up",
            "1 while the last send to the bus went through.",
            value=int(p.up),
        )
