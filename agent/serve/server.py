"""The agent process: a grpc.aio server around one backend.

``Agent`` is what ``__main__`` runs and what tests start in-process on
127.0.0.1:0: the migwatch service, the standard health service and server
reflection (so grpcurl needs no .proto files). TLS and the roles are ``serve/auth/``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import migwatch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from migwatch.agent.backends.protocol import Backend
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.backends.trace import TraceError, read_trace
from migwatch.agent.config import AgentConfig, ConfigError, is_loopback, policy_of
from migwatch.agent.core.hub import Hub
from migwatch.agent.core.monitor import Monitor
from migwatch.agent.core.store import FinalStore
from migwatch.agent.core.tracker import Tracker
from migwatch.agent.estimate.estimator import EstimatorConfig
from migwatch.agent.model import Migration
from migwatch.agent.notify.metrics import NotifyCollector
from migwatch.agent.notify.policy import HostReport
from migwatch.agent.notify.publisher import BusConfig, BusPublisher, BusUnavailable, redact
from migwatch.agent.serve.auth import load_security
from migwatch.agent.serve.metrics import AgentView, MetricsServer
from migwatch.agent.serve.service import SERVICE_NAME
from migwatch.agent.serve.servicer import MigrationServicer, generic_handler
from migwatch.agent.tasks import stop_task

log = logging.getLogger(__name__)

# Bursts of thousands of new streams are otherwise CANCELLED silently by
# grpc's default pending-request backlog; client keepalive pings every 20 s
# must not count as abuse (GOAWAY too_many_pings).
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.so_reuseport", 0),  # a second agent on a port in use must fail, not share it
]


def make_backend(config: AgentConfig) -> Backend:
    """The backend the config names; ConfigError when it cannot be built here."""
    if config.backend == "simulated":
        from migwatch.agent.backends.simulated import SimulatedBackend

        try:
            return SimulatedBackend(
                config.simulated_scenarios,
                host=config.host_name or "sim-host-a",
                interval_s=config.sample_interval_s,
                speed=config.simulated_speed,
                repeat=config.simulated_repeat,
                drain=config.simulated_drain,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if config.backend == "libvirt":
        try:
            from migwatch.agent.backends.libvirt.backend import LibvirtBackend
        except ImportError as exc:
            raise ConfigError(
                f"the libvirt backend cannot load: {exc}; install libvirt-python "
                "(pip install 'migwatch[libvirt]', needs libvirt-dev)"
            ) from exc
        return LibvirtBackend(
            config.libvirt_uri,
            sample_interval_s=config.sample_interval_s,
            scan_interval_s=config.scan_interval_s,
            host_name=config.host_name,
            recorder=(
                TraceRecorder(Path(config.record_dir), policy=policy_of(config))
                if config.record_dir
                else None
            ),
            preflight_interval_s=config.preflight_interval_s,
            preflight_periods=config.preflight_periods_s,
            preflight_concurrency=config.preflight_concurrency,
            state_dir=config.state_dir,
        )
    if config.backend == "qmp":
        try:
            from migwatch.agent.backends.qmp.backend import QmpBackend
        except ImportError as exc:
            raise ConfigError(f"the qmp backend cannot load: {exc}; install qemu.qmp") from exc
        return QmpBackend(
            config.qmp_sockets,
            sample_interval_s=config.sample_interval_s,
            scan_interval_s=config.scan_interval_s,
            host_name=config.host_name,
            recorder=TraceRecorder(Path(config.record_dir)) if config.record_dir else None,
            preflight_interval_s=config.preflight_interval_s,
            preflight_periods=config.preflight_periods_s,
            preflight_concurrency=config.preflight_concurrency,
            state_dir=config.state_dir,
        )
    if config.backend == "replay":
        from migwatch.agent.backends.replay import ReplayBackend

        traces = []
        for path in config.traces:
            if not Path(path).is_file():
                raise ConfigError(f"trace file {path} does not exist")
            try:
                traces.append(read_trace(path))
            except TraceError as exc:
                raise ConfigError(str(exc)) from exc
        try:
            return ReplayBackend(traces, speed=config.speed, host_name=config.host_name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    raise ConfigError(f"unknown backend {config.backend!r}")


class Agent:
    """One running agent: server, backend task, and their orderly shutdown."""

    def __init__(self, config: AgentConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.security = load_security(config)  # first: bad files fail before anything starts
        self.backend = backend or make_backend(config)
        self.hub = Hub(
            host=lambda: self.backend.host,
            backend=self.backend.name,
            version=migwatch.__version__,
            clock=time.time,
            retention_s=config.retention_s,
            max_subscribers=config.max_subscribers,
        )
        self.store: FinalStore | None = None
        known: dict[str, tuple[str, float]] = {}
        self._orphans: dict[str, Migration] = {}
        if config.state_dir:
            path = Path(config.state_dir) / "finals.sqlite3"
            try:
                self.store = FinalStore(path)
            except (OSError, sqlite3.Error) as exc:
                raise ConfigError(
                    f"state_dir {config.state_dir}: cannot open {path}: {exc}; give a "
                    "directory the agent can create and write (--state-dir)"
                ) from exc
            kept = self.store.load(time.time() - config.retention_s)
            self.hub.restore(kept, self.store.sequence_floor())
            known = self.store.active()
            self._orphans = self.store.active_records()
            log.info(
                "restored %d finished and %d in-flight migrations from %s",
                len(kept),
                len(known),
                self.store.path,
            )
        self.tracker = Tracker(
            lambda: self.backend.host,
            self.backend.name,
            EstimatorConfig(
                budget_s=config.slow_budget_s,
                migration_overhead_s=config.migration_overhead_s,
            ),
            known,
            policy_of(config),
        )
        self.monitor = Monitor(self.backend, self.tracker, self.hub, self.store)
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server(
            options=SERVER_OPTIONS, interceptors=self.security.interceptors
        )
        self.server.add_generic_rpc_handlers(
            (generic_handler(MigrationServicer(self.monitor, self.hub, time.time)),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = 0
        self.metrics: MetricsServer | None = None
        self.bus: BusPublisher | None = None
        self._bus_task: asyncio.Task[None] | None = None
        if config.notify_url:
            self.bus = self._make_bus()
        self._backend_task: asyncio.Task[None] | None = None
        self._stopped = False
        self._settle_task: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind, start serving and start the backend; returns the bound port."""
        credentials = self.security.credentials
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(self.config.listen)
            else:
                self.port = self.server.add_secure_port(self.config.listen, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {self.config.listen}: {exc}") from exc
        if self.config.metrics_listen:  # before serving: a port in use fails the start cleanly
            self.metrics = self._start_metrics()
        await self.server.start()
        if self.bus is not None:  # before the backend: its first records are announced
            self._bus_task = asyncio.create_task(self.bus.run(), name="notify")
            self._bus_task.add_done_callback(_log_crash)
        self._backend_task = asyncio.create_task(self._run_backend(), name="backend")
        if self._orphans:
            self._settle_task = asyncio.create_task(
                self.monitor.settle(self._orphans, max(2.0, 2 * self.config.scan_interval_s)),
                name="settle",
            )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "migwatch agent %s serving %s on %s (backend %s, host %s; %s)",
            migwatch.__version__,
            SERVICE_NAME,
            self.config.listen.rpartition(":")[0] + f":{self.port}",
            self.backend.name,
            self.backend.host,
            self.security.summary,
        )
        if credentials is None and not is_loopback(self.config.listen.rpartition(":")[0]):
            log.warning(
                "--insecure: serving plaintext on %s; anyone on the network can read %s",
                self.config.listen,
                "the traffic, bearer tokens included"
                if self.config.token_file
                else "migrations, and abort or steer them (no TLS, no token file)",
            )
        return self.port

    def _make_bus(self) -> BusPublisher:
        def host_report() -> HostReport:
            state, message = self.hub.status
            return HostReport(
                self.backend.host, self.backend.name, state, message, migwatch.__version__
            )

        config = BusConfig(
            self.config.notify_url,
            self.config.notify_topic,
            self.config.notify_interval_s,
            config_file=self.config.notify_config,
        )
        try:
            bus = BusPublisher(config, self.hub, host_report)
        except BusUnavailable as exc:
            raise ConfigError(str(exc)) from exc
        log.info(
            "notifications on %s, topic %s, progress at most every %g s",
            redact(config.url),
            config.topic,
            config.interval_s,
        )
        return bus

    def _start_metrics(self) -> MetricsServer:
        host, _, port = self.config.metrics_listen.rpartition(":")
        view = AgentView(
            migrations=self.hub.snapshot,
            subscribers=lambda: self.hub.subscriber_count,
            published=lambda: self.hub.sequence,
            host_state=lambda: self.hub.status[0],
        )
        try:
            server = MetricsServer(
                view,
                host,
                int(port),
                certfile=self.config.tls_cert or None,
                keyfile=self.config.tls_key or None,
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.config.metrics_listen}: {exc.strerror or exc}"
            ) from exc
        if self.bus is not None:
            server.registry.register(NotifyCollector(self.bus))
        log.info(
            "Prometheus metrics on %s://%s:%d/metrics",
            "https" if self.config.tls_cert else "http",
            host,
            server.port,
        )
        return server

    async def _run_backend(self) -> None:
        try:
            await self.monitor.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A backend bug must not leave a server that looks healthy.
            log.exception("backend %s crashed", self.backend.name)
            await self.health.enter_graceful_shutdown()
            raise

    async def stop(self) -> None:
        """Streams end with UNAVAILABLE, the server drains, the backend closes."""
        if self._stopped:
            return
        self._stopped = True
        log.info("shutting down")
        await self.health.enter_graceful_shutdown()
        self.hub.close()
        await self.server.stop(self.config.grace_s)
        # A cancellation of stop() itself propagates out of stop_task (never swallowed).
        if self._settle_task is not None:
            await stop_task(self._settle_task)
        if self._backend_task is not None:
            await stop_task(self._backend_task)
        await self.backend.close()
        if self.bus is not None and self._bus_task is not None:
            await stop_task(self._bus_task)
            await self.bus.close(self.config.grace_s)
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        if self.store is not None:
            self.store.close()

    async def wait_for_backend(self) -> None:
        """Returns if the backend task ends by itself (a crash)."""
        if self._backend_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._backend_task)


def _log_crash(task: asyncio.Task[None]) -> None:
    # A bug in the bus publisher stops notifications, never the agent: say so loudly.
    if not task.cancelled() and task.exception() is not None:
        log.error("the notification publisher stopped", exc_info=task.exception())


@contextlib.asynccontextmanager
async def running_agent(
    config: AgentConfig, backend: Backend | None = None
) -> AsyncIterator[Agent]:
    """Start an agent for the duration of a block (tests, embedding)."""
    agent = Agent(config, backend)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()
