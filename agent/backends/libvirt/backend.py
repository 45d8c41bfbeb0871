"""The libvirt backend: every migration job on one libvirt host.

What it relies on was measured on real QEMU migrations (``lab/NOTES.md``):

* Outgoing jobs are sampled with ``jobStats()`` every ``sample_interval_s``
  and at once on MIGRATION_ITERATION; a periodic scan (and any event) finds
  jobs the events did not announce, e.g. those started before the agent.
* How late a new outgoing job is found: at the next scan, every ``scan_interval_s``
  (default 1 s), or at once when an event wakes the scan (MIGRATION_ITERATION of an
  unknown job, a lifecycle event, the pre-flight finding a job on a guest it was about to
  measure). A scan is a few ms of ``jobStats()`` calls in the default thread pool; the
  pre-flight has its own thread, never starts a measurement on a guest with a job (it
  looks first, in the same blocking call) and never holds up the scan. So the bound is
  ``scan_interval_s`` plus one scan, unless libvirtd itself stalls ``jobStats()``. A
  migration over before any scan saw it is taken up from its JOB_COMPLETED event and
  still gets its final state.
* The destination has no job statistics (error 84, "available only on the
  source host"): that error is how an incoming job is recognised, and its
  progress is the domain's state and lifecycle events.
* Success: JOB_COMPLETED carries the final stats, including the actual
  downtime; a transient source domain then vanishes (NO_DOMAIN is not an
  error). An abort sends no event on the source: the job just disappears from
  ``jobStats()`` while the guest keeps running, and that is how it is noticed.
* Blocking calls run in worker threads; events arrive on the event loop
  through libvirtaio, registered before the first ``libvirt.open``. Domain
  objects are held only by the task that uses them, so closing the connection
  really closes it (NOTES.md, Pitfall 10).

This module does the I/O and the timing; what each job is doing is decided by the pure
``watcher.JobWatcher``. The package's other modules: ``connection`` (open, close, error
translation), ``scan`` (blocking reads), ``controls`` (blocking writes), ``outgoing`` and
``incoming`` (the jobs of each direction), ``preflight`` (idle guests' dirty rates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import libvirt
import libvirtaio
from migwatch.agent.backends.learned import HostLearning
from migwatch.agent.backends.libvirt import scan
from migwatch.agent.backends.libvirt.connection import (
    CONNECTION_LOST,
    EVENT_ITERATION,
    EVENT_JOB_COMPLETED,
    EVENT_LIFECYCLE,
    close_connection,
    code,
    event_impl,
    map_control_error,
    open_connection,
    unreachable,
)
from migwatch.agent.backends.libvirt.incoming import IncomingJobs
from migwatch.agent.backends.libvirt.outgoing import OutgoingJobs
from migwatch.agent.backends.libvirt.preflight import PreflightSampler
from migwatch.agent.backends.libvirt.watcher import ending_of, is_incoming_start
from migwatch.agent.backends.protocol import Ending, ObservationSink, StatusSink
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.model import Direction, DomainFacts, HostState
from migwatch.agent.tasks import stop_task

log = logging.getLogger(__name__)

_BACKOFF_START_S, _BACKOFF_MAX_S = 0.5, 10.0
_DRAIN_TIMEOUT_S = 5.0


class LibvirtBackend:
    """Watches one libvirt URI (``qemu:///system``, ``qemu+tcp://``, ``qemu+ssh://``)."""

    def __init__(
        self,
        uri: str,
        *,
        sample_interval_s: float = 0.5,
        scan_interval_s: float = 1.0,
        host_name: str = "",
        recorder: TraceRecorder | None = None,
        preflight_interval_s: float = 120.0,
        preflight_periods: tuple[int, ...] = (1, 2, 4, 8, 16),
        preflight_concurrency: int = 4,
        clock: Callable[[], float] = time.time,
        state_dir: str = "",
    ) -> None:
        self._uri = uri
        self._recorder = recorder
        self._scan_interval = scan_interval_s
        self._host_override = host_name
        self._host = host_name or uri
        self._clock = clock
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._closed_event: asyncio.Event | None = None
        self._discover_now: asyncio.Event | None = None
        self._impl: libvirtaio.virEventAsyncIOImpl | None = None
        self._preflight = PreflightSampler(
            interval_s=preflight_interval_s,
            periods=preflight_periods,
            concurrency=preflight_concurrency,
            busy=lambda: set(self._outgoing.jobs) | set(self._incoming.jobs),
            clock=clock,
            job_seen=self._scan_now,
        )
        # QEMU's own share of rss on this host and the teardown after each job, learned
        # from completed migrations (kept across restarts with --state-dir).
        self._learning = HostLearning(state_dir)
        self._outgoing = OutgoingJobs(
            uri=uri,
            sample_interval_s=sample_interval_s,
            recorder=recorder,
            preflight=self._preflight,
            learning=self._learning,
            conn=lambda: self._conn,
            host=lambda: self._host,
            clock=clock,
        )
        self._incoming = IncomingJobs(conn=lambda: self._conn, host=lambda: self._host, clock=clock)

    @property
    def name(self) -> str:
        return "libvirt"

    @property
    def host(self) -> str:
        return self._host

    # -- connection ------------------------------------------------------------------
    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._outgoing.observe = self._incoming.observe = observe
        self._impl = event_impl()
        backoff = _BACKOFF_START_S
        while True:
            try:
                await self._connect()
            except libvirt.libvirtError as exc:
                status(
                    HostState.DEGRADED,
                    f"cannot connect to {self._uri}: {exc.get_error_message()}; "
                    f"retrying in {backoff:.1f}s",
                )
                await asyncio.sleep(backoff)
                backoff = min(_BACKOFF_MAX_S, backoff * 2)
                continue
            backoff = _BACKOFF_START_S
            status(HostState.OK, "")
            try:
                await self._serve_connection()
            finally:
                await self._disconnect()
            status(
                HostState.DEGRADED, f"lost the connection to libvirt at {self._uri}; reconnecting"
            )

    async def _connect(self) -> None:
        closed = asyncio.Event()
        conn, ids = await open_connection(
            self._uri,
            closed,
            [
                (EVENT_LIFECYCLE, self._on_lifecycle),
                (EVENT_ITERATION, self._on_iteration),
                (EVENT_JOB_COMPLETED, self._on_job_completed),
            ],
        )
        self._closed_event = closed
        self._discover_now = asyncio.Event()
        self._callback_ids = ids
        if not self._host_override:
            self._host = await asyncio.to_thread(conn.getHostname)
        self._conn = conn
        log.info("connected to libvirt at %s (host %s)", self._uri, self._host)

    async def _serve_connection(self) -> None:
        """Scan for jobs until the connection closes."""
        assert self._closed_event is not None and self._discover_now is not None
        closed = asyncio.create_task(self._closed_event.wait())
        conn = self._conn
        sampler = (
            asyncio.create_task(
                self._preflight.run(conn, lambda: self._conn is not None), name="dirtyrate"
            )
            if self._preflight.interval_s > 0 and conn is not None
            else None
        )
        try:
            while not self._closed_event.is_set():
                try:
                    await self._discover()
                except libvirt.libvirtError as exc:
                    if code(exc) in CONNECTION_LOST:
                        return
                    log.warning("scan of %s failed: %s", self._uri, exc.get_error_message())
                wake = asyncio.create_task(self._discover_now.wait())
                await asyncio.wait(
                    (closed, wake), timeout=self._scan_interval, return_when=asyncio.FIRST_COMPLETED
                )
                wake.cancel()
                self._discover_now.clear()
        finally:
            closed.cancel()
            if sampler is not None:
                await stop_task(sampler)

    async def _disconnect(self) -> None:
        """Stop watchers (their state stays, to resume after a reconnect) and close."""
        await self._outgoing.stop_tasks()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        ids, self._callback_ids = self._callback_ids, []
        await asyncio.to_thread(close_connection, conn, ids)
        del conn  # the last reference: libvirt frees the connection now (Pitfall 10)

    async def close(self) -> None:
        self._preflight.close()
        if self._recorder is not None:
            self._recorder.close()
        self._outgoing.jobs.clear()
        self._incoming.jobs.clear()
        await self._disconnect()
        if self._impl is not None:
            # Let libvirt free its handles while the loop still runs (Pitfall 10).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._impl.drain(), _DRAIN_TIMEOUT_S)

    # -- discovery -------------------------------------------------------------------
    async def _discover(self) -> None:
        conn = self._conn
        if conn is None:
            return
        found = await asyncio.to_thread(
            scan.scan_jobs, conn, frozenset(self._outgoing.jobs), self._clock
        )
        now = self._clock()
        for job in found:
            if job.outgoing and job.uuid not in self._outgoing.jobs:
                self._outgoing.start(job, job.read_at)
            elif job.outgoing:
                self._outgoing.ensure_watcher(self._outgoing.jobs[job.uuid])
            elif job.uuid not in self._incoming.jobs:
                self._incoming.start(job.uuid, job.name, now)
        await self._incoming.check({job.uuid for job in found if not job.outgoing})
        await self._outgoing.check_lost({job.uuid for job in found if job.outgoing})

    def _scan_now(self) -> None:
        """Wake the scan loop now (a job was seen where none was known)."""
        if self._discover_now is not None:
            self._discover_now.set()

    # -- events (on the event loop, via libvirtaio) -----------------------------------
    def _on_iteration(self, _conn: Any, dom: Any, iteration: int, _opaque: Any) -> None:
        if not self._outgoing.on_iteration(dom, iteration) and self._discover_now is not None:
            self._discover_now.set()

    def _on_job_completed(self, _conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
        self._outgoing.on_job_completed(dom, params, self._clock())

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        if self._outgoing.on_lifecycle(dom, event, detail):
            return
        uuid = dom.UUIDString()
        if self._incoming.on_lifecycle(uuid, event, detail):
            return
        if is_incoming_start(event, detail):
            self._incoming.start(uuid, dom.name(), self._clock())
        elif self._discover_now is not None:
            self._discover_now.set()

    # -- controls and questions ------------------------------------------------------
    async def abort(self, domain_uuid: str) -> None:
        await self._outgoing.abort(domain_uuid)

    async def force_complete(self, domain_uuid: str) -> bool:
        return await self._outgoing.force_complete(domain_uuid)

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        await self._outgoing.update_limits(domain_uuid, max_downtime_s, max_bandwidth_bps)

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        conn = self._conn
        if conn is None:
            raise unreachable(self._uri)
        if domain_uuid in self._outgoing.jobs or domain_uuid in self._incoming.jobs:
            return None
        try:
            if direction is Direction.INCOMING:
                return await IncomingJobs.outcome(conn, domain_uuid)
            facts = await asyncio.to_thread(scan.settle_facts, conn, domain_uuid)
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, f"outcome of {domain_uuid}") from exc
        if facts.running:
            return None
        return ending_of(facts.completed, facts.state)

    async def describe(self, domain: str) -> DomainFacts:
        conn = self._conn
        if conn is None:
            raise unreachable(self._uri)
        try:
            found = await asyncio.to_thread(scan.describe, conn, domain)
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, f"estimate of {domain}") from exc
        return DomainFacts(
            domain_uuid=found.uuid,
            domain_name=found.name,
            memory_bytes=found.memory_bytes,
            disk_bytes=found.disk_bytes,
            limits=found.limits,
            preflight=self._preflight.of(found.uuid, found.domain_id),
            migrating=found.migrating,
            resident_bytes=found.resident_bytes,
            free_bytes=found.free_bytes,
            resident_overhead_bytes=self._learning.overhead.value(),
            migration_overhead_s=self._learning.teardown.value(),
        )

    async def guests(self) -> tuple[str, ...]:
        conn = self._conn
        if conn is None:
            raise unreachable(self._uri)
        try:
            active = await asyncio.to_thread(scan.active_domains, conn)
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, "listing the guests") from exc
        # An incoming end is a guest arriving, not one to move away.
        return tuple(uuid for uuid in active if uuid not in self._incoming.jobs)
