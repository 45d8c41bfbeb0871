"""Prometheus metrics of the agent: every active migration's progress, ETA and verdict.

A custom collector reads the hub's current records at scrape time, so publishing an update
costs nothing extra and a scrape always sees the latest state. Per-migration series exist
only while the migration runs (finished ones leave, counted by phase in
``migwatch_migrations``), which keeps the series count bounded by what is in flight.

``prometheus_client``'s HTTP server answers scrapes from its own thread: the collector only
takes a list of the hub's records (one atomic copy under the GIL) and reads immutable
dataclasses, so it never races the event loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from migwatch.agent.model import Convergence, HostState, Migration, Phase
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric, StateSetMetricFamily
from prometheus_client.registry import Collector

# Series are keyed by the migration id (with the domain and direction for reading); the
# rest of what identifies a migration is on ``migwatch_migration_info``, to join on ``id``.
_LABELS = ["id", "domain", "direction"]
_INFO_LABELS = [
    "id",
    "domain_uuid",
    "domain_name",
    "direction",
    "source_host",
    "destination_host",
    "backend",
]
_PHASES = [p.name.lower() for p in Phase]
_VERDICTS = [c.name.lower() for c in Convergence]


@dataclass(frozen=True)
class AgentView:
    """What the collector reads, as callables so it always sees the current state."""

    migrations: Callable[[], Sequence[Migration]]
    subscribers: Callable[[], int]
    published: Callable[[], int]
    host_state: Callable[[], HostState]


class MigrationCollector(Collector):
    """The metrics (see the module docstring); ``describe`` is empty so registering it does
    not scrape."""

    def __init__(self, view: AgentView) -> None:
        self._view = view

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        migrations = list(self._view.migrations())
        active = [m for m in migrations if not m.phase.terminal]
        yield from self._agent_metrics(migrations)
        yield from self._migration_metrics(active)

    def _agent_metrics(self, migrations: list[Migration]) -> Iterator[Metric]:
        by_phase = Counter(m.phase.name.lower() for m in migrations)
        count = GaugeMetricFamily(
            "migwatch_migrations",
            "Migrations the agent reports, by phase (finished ones for as long as it keeps them).",
            labels=["phase"],
        )
        for phase in _PHASES:
            count.add_metric([phase], by_phase.get(phase, 0))
        yield count
        yield GaugeMetricFamily(
            "migwatch_watch_streams",
            "Open WatchMigrations streams.",
            value=self._view.subscribers(),
        )
        yield GaugeMetricFamily(
            "migwatch_updates_published",
            "Migration updates published since the agent started (sequence).",
            value=self._view.published(),
        )
        state = StateSetMetricFamily(
            "migwatch_host_state", "The hypervisor connection's state as the agent sees it."
        )
        now = self._view.host_state()
        state.add_metric([], {s.name.lower(): s is now for s in HostState})
        yield state

    def _migration_metrics(self, active: list[Migration]) -> Iterator[Metric]:
        def gauge(name: str, doc: str, extra: Sequence[str] = ()) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=[*_LABELS, *extra])

        info = GaugeMetricFamily(
            "migwatch_migration_info",
            "Each active migration's identity (always 1).",
            labels=_INFO_LABELS,
        )
        phase = StateSetMetricFamily(
            "migwatch_migration_phase", "Phase of each active migration.", labels=_LABELS
        )
        verdict = StateSetMetricFamily(
            "migwatch_migration_convergence",
            "Convergence verdict of each active migration.",
            labels=_LABELS,
        )
        total = gauge(
            "migwatch_migration_total_bytes", "Bytes to copy, memory and disk apart.", ["kind"]
        )
        remaining = gauge("migwatch_migration_remaining_bytes", "Bytes still to copy.", ["kind"])
        rate = gauge(
            "migwatch_migration_transfer_rate_bytes_per_second",
            "Transfer rate, memory and disk together.",
        )
        dirty = gauge(
            "migwatch_migration_dirty_rate_bytes_per_second", "Guest dirty rate (0 while unknown)."
        )
        iteration = gauge("migwatch_migration_iteration", "Memory pass (0 before memory starts).")
        elapsed = gauge("migwatch_migration_elapsed_seconds", "Time since the job started.")
        eta = gauge(
            "migwatch_migration_eta_seconds",
            "Time left until the guest runs on the destination: central value and band"
            " (absent while it cannot be known).",
            ["bound"],
        )
        throttle = gauge(
            "migwatch_migration_auto_converge_throttle_ratio",
            "Share of the guest's CPU QEMU's auto-converge takes (0: none).",
        )
        for m in active:
            direction = m.direction.name.lower()
            labels = [m.id, m.domain_name or m.domain_uuid, direction]
            info.add_metric(
                [
                    m.id,
                    m.domain_uuid,
                    m.domain_name,
                    direction,
                    m.source_host,
                    m.destination_host,
                    m.backend,
                ],
                1,
            )
            phase.add_metric(labels, {p: m.phase.name.lower() == p for p in _PHASES})
            verdict.add_metric(labels, {v: m.convergence.name.lower() == v for v in _VERDICTS})
            for kind, t in (("memory", m.memory), ("disk", m.disk)):
                total.add_metric([*labels, kind], t.total_bytes)
                remaining.add_metric([*labels, kind], t.remaining_bytes)
            rate.add_metric(labels, m.memory.bytes_per_second + m.disk.bytes_per_second)
            dirty.add_metric(labels, m.dirty_rate_bps)
            iteration.add_metric(labels, m.iteration)
            if m.elapsed_s is not None:
                elapsed.add_metric(labels, m.elapsed_s)
            for bound, value in (
                ("central", m.eta_s),
                ("low", m.eta_low_s),
                ("high", m.eta_high_s),
            ):
                if value is not None:
                    eta.add_metric([*labels, bound], value)
            throttle.add_metric(labels, (m.auto_converge_throttle or 0) / 100.0)
        yield from (
            info,
            phase,
            verdict,
            total,
            remaining,
            rate,
            dirty,
            iteration,
            elapsed,
            eta,
            throttle,
        )


class MetricsServer:
    """``/metrics`` on ``host:port`` (Prometheus text format), TLS when given a certificate."""

    def __init__(
        self,
        view: AgentView,
        host: str,
        port: int,
        *,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MigrationCollector(view))
        self._server: WSGIServer
        self._thread: Thread
        self._server, self._thread = start_http_server(
            port,
            addr=host.strip("[]"),
            registry=self.registry,
            certfile=certfile,
            keyfile=keyfile,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
