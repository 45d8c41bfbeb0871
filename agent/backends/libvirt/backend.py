"""The libvirt backend: every migration job on one libvirt host.

The only module that imports libvirt. What it relies on was measured on real
QEMU migrations (``lab/NOTES.md``):

* Outgoing jobs are sampled with ``jobStats()`` every ``sample_interval_s``
  and at once on MIGRATION_ITERATION; a periodic scan (and any event) finds
  jobs the events did not announce, e.g. those started before the agent.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import libvirt
import libvirtaio
from migwatch.agent.backends.jobstats import parse_job_stats
from migwatch.agent.backends.protocol import (
    Ending,
    MigrationInfo,
    Observation,
    ObservationSink,
    StatusSink,
)
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.errors import BackendUnavailable, ControlError, ControlRefused, MigrationGone
from migwatch.agent.estimate.overhead import ResidentOverhead
from migwatch.agent.model import (
    Direction,
    DomainFacts,
    HostState,
    JobSample,
    Limits,
    Phase,
    Preflight,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_UNLIMITED_MIB_S = 1 << 40  # libvirt reports "no limit" as a huge MiB/s value
_BACKOFF_START_S, _BACKOFF_MAX_S = 0.5, 10.0
_FINAL_EVENT_WAIT_S = 5.0  # JOB_COMPLETED follows the switch-over by 1.4-1.8 s
_DRAIN_TIMEOUT_S = 5.0

# Error codes, by name so an old binding missing one fails loudly at import.
_NO_DOMAIN = libvirt.VIR_ERR_NO_DOMAIN  # 42
_OPERATION_INVALID = libvirt.VIR_ERR_OPERATION_INVALID  # 55
_OPERATION_UNSUPPORTED = libvirt.VIR_ERR_OPERATION_UNSUPPORTED  # 84: no stats on the destination
_CONNECTION_LOST = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_INTERNAL_ERROR,
}

_JOB_NONE = libvirt.VIR_DOMAIN_JOB_NONE
_JOB_COMPLETED = libvirt.VIR_DOMAIN_JOB_COMPLETED
_JOB_FAILED = libvirt.VIR_DOMAIN_JOB_FAILED
_JOB_CANCELLED = libvirt.VIR_DOMAIN_JOB_CANCELLED
_OP_MIGRATION_OUT = getattr(libvirt, "VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT", 5)


def _code(exc: libvirt.libvirtError) -> int:
    return int(exc.get_error_code() or 0)


def map_control_error(exc: libvirt.libvirtError, what: str) -> ControlError:
    """The one translation of libvirt failures of a control into our errors."""
    code = _code(exc)
    message = exc.get_error_message() or str(exc)
    if code == _NO_DOMAIN:
        return MigrationGone(f"{what}: the domain is no longer on this host ({message})")
    if code in _CONNECTION_LOST:
        return BackendUnavailable(f"{what}: libvirt is unreachable ({message}); retry shortly")
    return ControlRefused(f"{what} refused by libvirt: {message}")


@dataclass(slots=True)
class _Outgoing:
    """An outgoing job being watched. Holds no libvirt objects."""

    info: MigrationInfo
    limits: Limits
    phase: Phase = Phase.SETUP
    sample: JobSample | None = None
    final_params: dict[str, Any] | None = None
    saw_cancelled: bool = False
    abort_requested: bool = False
    switched_over: bool = False  # the source guest stopped for the final copy
    stopped: str = ""  # the guest stopped on the source for another reason (e.g. DESTROYED)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    done: bool = False


@dataclass(slots=True)
class _Incoming:
    info: MigrationInfo
    phase: Phase = Phase.PRECOPY
    done: bool = False


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
    ) -> None:
        self._uri = uri
        self._recorder = recorder
        self._interval = sample_interval_s
        self._scan_interval = scan_interval_s
        self._host_override = host_name
        self._host = host_name or uri
        self._clock = clock
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._outgoing: dict[str, _Outgoing] = {}
        self._incoming: dict[str, _Incoming] = {}
        self._observe: ObservationSink | None = None
        self._status: StatusSink | None = None
        self._closed_event: asyncio.Event | None = None
        self._discover_now: asyncio.Event | None = None
        self._impl: libvirtaio.virEventAsyncIOImpl | None = None
        self._preflight_interval = preflight_interval_s
        self._preflight_periods = tuple(preflight_periods)
        self._preflight_concurrency = max(1, preflight_concurrency)
        # Latest pre-flight measurement per domain UUID, with the libvirt domain id
        # it was taken on: a guest restarted under the same UUID is a new workload.
        self._preflight: dict[str, tuple[int, Preflight]] = {}
        # Starting a measurement while a migration job runs blocks until the job
        # ends (NOTES.md): give those calls their own thread, so a blocked one
        # can never starve job sampling of workers.
        self._dirtyrate_pool = ThreadPoolExecutor(1, thread_name_prefix="dirtyrate")
        # QEMU's own share of rss on this host, learned from completed migrations.
        self._overhead = ResidentOverhead()

    @property
    def name(self) -> str:
        return "libvirt"

    @property
    def host(self) -> str:
        return self._host

    # -- connection ------------------------------------------------------------------
    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._observe, self._status = observe, status
        self._impl = _event_impl()
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
            status(HostState.DEGRADED, f"lost the connection to libvirt at {self._uri}; reconnecting")

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        conn = await asyncio.to_thread(libvirt.open, self._uri)
        closed = asyncio.Event()
        self._closed_event = closed
        self._discover_now = asyncio.Event()

        def on_close(_conn: Any, reason: int, _opaque: Any) -> None:
            log.warning("libvirt connection to %s closed (reason %d)", self._uri, reason)
            loop.call_soon_threadsafe(closed.set)

        conn.registerCloseCallback(on_close, None)
        # Without keepalive a hung (not dead) libvirtd is never noticed.
        await asyncio.to_thread(conn.setKeepAlive, 5, 3)
        ids = []
        for event_id, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION, self._on_iteration),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed),
        ):
            ids.append(
                await asyncio.to_thread(conn.domainEventRegisterAny, None, event_id, callback, None)
            )
        self._callback_ids = ids
        if not self._host_override:
            self._host = await asyncio.to_thread(conn.getHostname)
        self._conn = conn
        log.info("connected to libvirt at %s (host %s)", self._uri, self._host)

    async def _serve_connection(self) -> None:
        """Scan for jobs until the connection closes."""
        assert self._closed_event is not None and self._discover_now is not None
        closed = asyncio.create_task(self._closed_event.wait())
        sampler = (
            asyncio.create_task(self._sample_dirty_rates(), name="dirtyrate")
            if self._preflight_interval > 0
            else None
        )
        try:
            while not self._closed_event.is_set():
                try:
                    await self._discover()
                except libvirt.libvirtError as exc:
                    if _code(exc) in _CONNECTION_LOST:
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
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sampler

    async def _disconnect(self) -> None:
        """Stop watchers (their state stays, to resume after a reconnect) and close."""
        for watch in self._outgoing.values():
            if watch.task is not None:
                watch.task.cancel()
        for watch in self._outgoing.values():
            if watch.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch.task
                watch.task = None
        conn, self._conn = self._conn, None
        if conn is None:
            return
        ids, self._callback_ids = self._callback_ids, []

        def close(c: Any) -> None:
            for cb_id in ids:
                with contextlib.suppress(libvirt.libvirtError):
                    c.domainEventDeregisterAny(cb_id)
            with contextlib.suppress(libvirt.libvirtError):
                c.unregisterCloseCallback()
            with contextlib.suppress(libvirt.libvirtError):
                c.close()

        await asyncio.to_thread(close, conn)
        del conn  # the last reference: libvirt frees the connection now (Pitfall 10)

    async def close(self) -> None:
        self._dirtyrate_pool.shutdown(wait=False, cancel_futures=True)
        if self._recorder is not None:
            self._recorder.close()
        self._outgoing.clear()
        self._incoming.clear()
        await self._disconnect()
        if self._impl is not None:
            # Let libvirt free its handles while the loop still runs (Pitfall 10).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._impl.drain(), _DRAIN_TIMEOUT_S)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    # -- discovery -------------------------------------------------------------------
    async def _discover(self) -> None:
        conn = self._conn
        if conn is None:
            return
        # (uuid, name, kind, stats, memory, resident)
        found = await self._call(_scan_jobs, conn, frozenset(self._outgoing))
        now = self._clock()
        for uuid, name, kind, stats, memory, resident in found:
            if kind == "out" and uuid not in self._outgoing:
                self._start_outgoing(uuid, name, stats, memory, now, resident)
            elif kind == "out":
                self._ensure_watcher(self._outgoing[uuid])
            elif kind == "in" and uuid not in self._incoming:
                self._start_incoming(uuid, name, now, Phase.PRECOPY)
        await self._check_incoming({f[0]: f[2] for f in found})
        await self._check_lost_outgoing({f[0] for f in found if f[2] == "out"})

    def _start_outgoing(
        self, uuid: str, name: str, stats: Mapping[str, Any], memory: int, now: float,
        resident: int | None = None,
    ) -> None:
        sample = parse_job_stats(stats)
        elapsed = sample.elapsed_s if sample is not None else 0.0
        info = MigrationInfo(
            domain_uuid=uuid,
            domain_name=name,
            source_host=self._host,
            destination_host="",  # libvirt does not say; the fleet client joins the ends
            direction=Direction.OUTGOING,
            # Rounded so a restarted agent derives the same id for the same job.
            started_at=round(now - elapsed, 1),
            memory_bytes=memory or None,
            resident_bytes=resident,
            resident_overhead_bytes=self._overhead.value(),
        )
        watch = _Outgoing(info=info, limits=Limits())
        self._outgoing[uuid] = watch
        log.info("outgoing migration of %s (%s) found, %.1fs into the job", name, uuid, elapsed)
        self._ensure_watcher(watch)

    def _ensure_watcher(self, watch: _Outgoing) -> None:
        if watch.task is None and not watch.done:
            watch.task = asyncio.create_task(
                self._watch_outgoing(watch), name=f"watch-{watch.info.domain_name}"
            )

    def _start_incoming(self, uuid: str, name: str, now: float, phase: Phase) -> None:
        info = MigrationInfo(
            domain_uuid=uuid,
            domain_name=name,
            source_host="",
            destination_host=self._host,
            direction=Direction.INCOMING,
            started_at=round(now, 1),
        )
        watch = _Incoming(info=info, phase=phase)
        self._incoming[uuid] = watch
        log.info("incoming migration of %s (%s) found", name, uuid)
        self._emit_incoming(watch, phase)

    async def _check_incoming(self, jobs: Mapping[str, str]) -> None:
        """Incoming ends whose job is gone: decide from the domain's state."""
        for uuid, watch in list(self._incoming.items()):
            if jobs.get(uuid) == "in" or watch.done:
                continue
            conn = self._conn
            if conn is None:
                return
            state = await self._call(_domain_state, conn, uuid)
            if state is None:
                self._emit_incoming(watch, Phase.FAILED, "the incoming domain disappeared before the migration completed")
            elif state[0] == libvirt.VIR_DOMAIN_RUNNING and state[1] == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY:
                self._emit_incoming(watch, Phase.POSTCOPY)
            elif state[0] == libvirt.VIR_DOMAIN_RUNNING:
                self._emit_incoming(watch, Phase.COMPLETED)
            elif state[0] == libvirt.VIR_DOMAIN_SHUTOFF:
                self._emit_incoming(watch, Phase.FAILED, "the incoming domain stopped before the migration completed")

    async def _check_lost_outgoing(self, jobs: set[str]) -> None:
        """Watched outgoing jobs the scan no longer sees (e.g. across a reconnect)."""
        for uuid, watch in list(self._outgoing.items()):
            if uuid not in jobs and not watch.done and watch.task is None:
                await self._resolve_end(watch)

    # -- outgoing --------------------------------------------------------------------
    async def _watch_outgoing(self, watch: _Outgoing) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            dom = await self._call(conn.lookupByUUIDString, watch.info.domain_uuid)
        except libvirt.libvirtError:
            watch.task = None
            await self._resolve_end(watch)
            return
        try:
            watch.limits = await self._call(_read_limits, dom, watch.limits)
            limits_iteration = -1
            while not watch.done:
                began = time.monotonic()
                try:
                    stats = await self._call(dom.jobStats)
                except libvirt.libvirtError as exc:
                    if self._recorder is not None:
                        self._recorder.stats_error(
                            watch.info.domain_uuid, exc.get_error_message() or str(exc), _code(exc)
                        )
                    if _code(exc) in _CONNECTION_LOST and self._conn is None:
                        return
                    # NO_DOMAIN (transient guest gone) or OPERATION_INVALID
                    # ("domain is not running" while QEMU is torn down after
                    # the switch-over): the job is over either way.
                    break
                sample = parse_job_stats(stats)
                if sample is not None and sample.iteration != limits_iteration:
                    # The migration's own bandwidth and downtime apply only once
                    # the job is past setup; re-read them at each pass.
                    limits_iteration = sample.iteration
                    watch.limits = await self._call(_read_limits, dom, watch.limits)
                    if self._recorder is not None and (sample.iteration or sample.disk_total):
                        self._recorder.start(
                            watch.info, watch.limits, self._interval,
                            self._preflight_of(watch.info.domain_uuid), uri=self._uri,
                        )  # fmt: skip
                if self._recorder is not None:
                    self._recorder.stats(
                        watch.info.domain_uuid, stats, (time.monotonic() - began) * 1000
                    )
                job_type = int(stats.get("type", _JOB_NONE))
                if job_type == _JOB_CANCELLED:
                    watch.saw_cancelled = True
                if job_type in (_JOB_NONE, _JOB_COMPLETED, _JOB_FAILED, _JOB_CANCELLED):
                    break
                if sample is not None:
                    watch.sample = sample
                    watch.phase = _running_phase(watch, sample)
                    self._emit_outgoing(watch)
                watch.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.wake.wait(), self._interval)
            del dom  # drop the reference before the slow end-of-job wait
            await self._resolve_end(watch)
        finally:
            watch.task = None

    async def _resolve_end(self, watch: _Outgoing) -> None:
        """The job is gone from jobStats(): completed, failed or cancelled?"""
        if watch.done:
            return
        if watch.final_params is None and (watch.switched_over or not watch.saw_cancelled):
            # After a switch-over JOB_COMPLETED is due within ~2 s.
            deadline = time.monotonic() + (_FINAL_EVENT_WAIT_S if watch.switched_over else 0.5)
            while watch.final_params is None and time.monotonic() < deadline and not watch.done:
                await asyncio.sleep(0.1)
        if watch.done:
            return
        if watch.final_params is not None:
            self._finish(watch, Phase.COMPLETED, watch.final_params)
            return
        conn = self._conn
        completed: dict[str, Any] = {}
        state: tuple[int, int] | None = None
        if conn is not None:
            try:
                completed, state = await self._call(_completed_and_state, conn, watch.info.domain_uuid)
            except libvirt.libvirtError as exc:
                log.debug("end of %s: %s", watch.info.domain_name, exc.get_error_message())
        phase, error = _classify_end(
            completed,
            state,
            stopped=watch.stopped,
            cancelled=watch.saw_cancelled or watch.abort_requested,
        )
        kept = int(completed.get("type", _JOB_NONE)) in (_JOB_COMPLETED, _JOB_FAILED)
        if phase is Phase.COMPLETED and not kept and watch.sample is not None and not watch.switched_over:
            # It ended unseen (libvirt was unreachable): the last sample's
            # counters are stale, and only the wall clock knows the duration.
            watch.sample = replace(
                watch.sample,
                elapsed_s=max(watch.sample.elapsed_s, self._clock() - watch.info.started_at),
                memory_remaining=0,
                disk_remaining=0,
            )
        self._finish(watch, phase, completed if kept else None, error)

    def _finish(
        self, watch: _Outgoing, phase: Phase, params: Mapping[str, Any] | None = None, error: str = ""
    ) -> None:
        if watch.done:
            return
        watch.done = True
        downtime: float | None = None
        if params:
            final = parse_job_stats({**params, "type": _JOB_COMPLETED})
            if final is not None:
                watch.sample = final
            if phase is Phase.COMPLETED and "downtime" in params:
                downtime = float(params["downtime"]) / 1000
            if phase is Phase.COMPLETED:
                self._learn_overhead(watch.info, params)
        watch.phase = phase
        self._emit_outgoing(watch, error, downtime)
        if self._recorder is not None:
            outcome = {Phase.COMPLETED: "completed", Phase.CANCELLED: "aborted"}.get(phase, "failed")
            self._recorder.finish(watch.info.domain_uuid, outcome, error or None, params)
        self._outgoing.pop(watch.info.domain_uuid, None)
        if watch.task is not None and watch.task is not asyncio.current_task():
            watch.task.cancel()

    def _learn_overhead(self, info: MigrationInfo, params: Mapping[str, Any]) -> None:
        reading = self._overhead.learn(
            resident_bytes=info.resident_bytes,
            memory_total=int(params.get("memory_total", 0) or 0),
            zero_pages=int(params.get("memory_constant", -1)),
            page_size=int(params.get("memory_page_size", 4096) or 4096),
        )
        if reading is not None:
            log.info("QEMU resident overhead from the migration of %s: %.0f MiB (now using %.0f"
                     " MiB, median of %d)", info.domain_name, reading / 2**20,
                     (self._overhead.value() or 0) / 2**20, self._overhead.readings)

    def _emit_outgoing(self, watch: _Outgoing, error: str = "", downtime: float | None = None) -> None:
        assert self._observe is not None
        self._observe(
            Observation(
                info=watch.info,
                now=self._clock(),
                phase=watch.phase,
                limits=watch.limits,
                sample=watch.sample,
                error_message=error,
                actual_downtime_s=downtime,
                preflight=self._preflight_of(watch.info.domain_uuid),
            )
        )

    def _emit_incoming(self, watch: _Incoming, phase: Phase, error: str = "") -> None:
        assert self._observe is not None
        if watch.done:
            return
        watch.phase = phase
        if phase.terminal:
            watch.done = True
            self._incoming.pop(watch.info.domain_uuid, None)
        self._observe(
            Observation(info=watch.info, now=self._clock(), phase=phase, error_message=error)
        )

    # -- events (on the event loop, via libvirtaio) -----------------------------------
    def _on_iteration(self, _conn: Any, dom: Any, iteration: int, _opaque: Any) -> None:
        watch = self._outgoing.get(dom.UUIDString())
        if watch is not None:
            if self._recorder is not None:
                self._recorder.event(
                    watch.info.domain_uuid, "MIGRATION_ITERATION", dom=dom.name(), iteration=iteration
                )
            watch.wake.set()
        elif self._discover_now is not None:
            self._discover_now.set()

    def _on_job_completed(self, _conn: Any, dom: Any, params: dict[str, Any], _opaque: Any) -> None:
        watch = self._outgoing.get(dom.UUIDString())
        if watch is None:
            return
        op = params.get("operation")
        if op is not None and int(op) != _OP_MIGRATION_OUT:
            return
        watch.final_params = dict(params)
        if self._recorder is not None:
            self._recorder.event(
                watch.info.domain_uuid, "JOB_COMPLETED", dom=dom.name(), params=watch.final_params
            )
        self._finish(watch, Phase.COMPLETED, watch.final_params)

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        uuid = dom.UUIDString()
        out = self._outgoing.get(uuid)
        if out is not None:
            if self._recorder is not None:
                self._recorder.event(
                    uuid, "LIFECYCLE", dom=dom.name(), lifecycle=_LIFECYCLE.get(event, str(event)),
                    detail=_detail_name(event, detail), raw=[event, detail],
                )  # fmt: skip
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY:
                    out.phase = Phase.POSTCOPY
                elif detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED:
                    out.switched_over = True
                    out.phase = Phase.PAUSED
                else:
                    out.phase = Phase.PAUSED
                self._emit_outgoing(out)
            elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
                    out.switched_over = True
                else:
                    out.stopped = _detail_name(event, detail)
            out.wake.set()
            return
        inc = self._incoming.get(uuid)
        if inc is not None:
            if event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
                if detail == libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY:
                    self._emit_incoming(inc, Phase.POSTCOPY)
                elif detail == libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED:
                    self._emit_incoming(inc, Phase.COMPLETED)
            elif event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._emit_incoming(
                    inc,
                    Phase.FAILED,
                    "the incoming migration stopped on the destination "
                    "(aborted or failed at the source)",
                )
            return
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED and detail == libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED:
            self._start_incoming(uuid, dom.name(), self._clock(), Phase.PRECOPY)
        elif self._discover_now is not None:
            self._discover_now.set()

    # -- controls --------------------------------------------------------------------
    def _active(self, domain_uuid: str) -> _Outgoing:
        watch = self._outgoing.get(domain_uuid)
        if watch is None or watch.done:
            raise MigrationGone(f"domain {domain_uuid} has no outgoing migration on {self._host}")
        if self._conn is None:
            raise BackendUnavailable(f"libvirt at {self._uri} is unreachable; retry after it reconnects")
        return watch

    async def _control(self, domain_uuid: str, what: str, fn: Callable[[Any], T]) -> T:
        watch = self._active(domain_uuid)
        conn = self._conn
        assert conn is not None

        def call() -> T:
            dom = conn.lookupByUUIDString(domain_uuid)
            return fn(dom)

        try:
            return await self._call(call)
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, f"{what} of {watch.info.domain_name}") from exc

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        conn = self._conn
        if conn is None:
            raise BackendUnavailable(f"libvirt at {self._uri} is unreachable; retry after it reconnects")
        if domain_uuid in self._outgoing or domain_uuid in self._incoming:
            return None
        try:
            if direction is Direction.INCOMING:
                state = await self._call(_domain_state, conn, domain_uuid)
                if state is None or state[0] == libvirt.VIR_DOMAIN_SHUTOFF:
                    return Ending(Phase.FAILED, "the incoming domain is gone: the migration did not complete")
                if state[0] == libvirt.VIR_DOMAIN_RUNNING and state[1] != libvirt.VIR_DOMAIN_RUNNING_POSTCOPY:
                    return Ending(Phase.COMPLETED)
                return None
            completed, state, running = await self._call(_settle_outgoing, conn, domain_uuid)
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, f"outcome of {domain_uuid}") from exc
        if running:
            return None
        phase, error = _classify_end(completed, state)
        downtime = completed.get("downtime") if phase is Phase.COMPLETED else None
        return Ending(phase, error, float(downtime) / 1000 if downtime is not None else None)

    async def describe(self, domain: str) -> DomainFacts:
        conn = self._conn
        if conn is None:
            raise BackendUnavailable(f"libvirt at {self._uri} is unreachable; retry after it reconnects")
        try:
            uuid, name, dom_id, memory, disk, limits, busy, resident = await self._call(
                _describe, conn, domain
            )
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, f"estimate of {domain}") from exc
        return DomainFacts(
            domain_uuid=uuid,
            domain_name=name,
            memory_bytes=memory,
            disk_bytes=disk,
            limits=limits,
            preflight=self._preflight_of(uuid, dom_id),
            migrating=busy,
            resident_bytes=resident,
            resident_overhead_bytes=self._overhead.value(),
        )

    # -- pre-flight dirty-rate measurements -------------------------------------------
    async def _sample_dirty_rates(self) -> None:
        """Measure every idle running guest's dirty rate about once per
        ``preflight_interval_s``, at most ``preflight_concurrency`` guests at a time, the
        longest-unmeasured first."""
        while True:
            conn = self._conn
            if conn is None:
                return
            idle = dict(await self._call(_idle_domains, conn))  # uuid -> domain id
            busy = set(self._outgoing) | set(self._incoming)
            for known in set(self._preflight) - busy:
                if self._preflight_of(known, idle.get(known)) is None:
                    del self._preflight[known]  # the guest left, stopped or restarted
            now = self._clock()
            age = {uuid: now - (self._preflight_of(uuid) or _NEVER).measured_at for uuid in idle}
            due = sorted(
                (uuid for uuid in idle if uuid not in busy and age[uuid] >= self._preflight_interval),
                key=lambda uuid: -age[uuid],
            )
            if not due:
                await asyncio.sleep(min(self._preflight_interval, 10.0))
                continue
            batch = due[: self._preflight_concurrency]
            await asyncio.gather(*(self._measure_guest(conn, uuid, idle[uuid]) for uuid in batch))
            # Spread the guests over the interval rather than measuring in bursts.
            await asyncio.sleep(self._preflight_interval / max(1, len(idle)) / 4)

    async def _measure_guest(self, conn: Any, uuid: str, domain_id: int) -> None:
        """The period ladder on one guest; kept only if it stayed idle throughout."""
        rates: dict[float, float] = {}
        for period in self._preflight_periods:
            if uuid in self._outgoing or uuid in self._incoming:
                break  # never start one on a guest with a job
            mbps = await self._measure_dirty_rate(conn, uuid, period)
            if mbps is None or uuid in self._outgoing or uuid in self._incoming:
                break  # failed, or a migration began while it ran: not an idle reading
            rates[float(period)] = mbps
        if rates:
            self._preflight[uuid] = (domain_id, Preflight(measured_at=self._clock(), rates=rates))
            log.debug("pre-flight dirty rate of %s: %s MiB/s", uuid, rates)

    async def _measure_dirty_rate(self, conn: Any, uuid: str, period: int) -> float | None:
        """One page-sampling measurement over ``period`` s, in MiB/s; ``None`` if it could not
        be made. QEMU measures on its own: the wait is on the event loop, and the
        pre-flight thread is held only for the start and the reads."""
        loop = asyncio.get_running_loop()
        pool = self._dirtyrate_pool
        try:
            previous = await loop.run_in_executor(pool, _start_dirty_rate, conn, uuid, period)
            await asyncio.sleep(period + 0.3)
            deadline = loop.time() + 3.0
            while True:
                mbps = await loop.run_in_executor(pool, _dirty_rate_result, conn, uuid, previous)
                if mbps is not None or loop.time() > deadline:
                    return mbps
                await asyncio.sleep(0.2)
        except libvirt.libvirtError as exc:
            log.debug("dirty-rate measurement of %s failed: %s", uuid, exc.get_error_message())
            return None

    def _preflight_of(self, uuid: str, domain_id: int | None = -1) -> Preflight | None:
        """The measurement of this guest; with ``domain_id``, only if taken on that
        instance of it (``None``: the guest is not running)."""
        entry = self._preflight.get(uuid)
        if entry is None or domain_id is None or (domain_id != -1 and entry[0] != domain_id):
            return None
        return entry[1]

    async def abort(self, domain_uuid: str) -> None:
        watch = self._active(domain_uuid)
        watch.abort_requested = True
        await self._control(domain_uuid, "abort", lambda dom: dom.abortJob())
        # No event will come on the source: the job's disappearance is the news.
        watch.wake.set()
        if watch.task is None:
            await self._resolve_end(watch)

    async def force_complete(self, domain_uuid: str) -> bool:
        watch = self._active(domain_uuid)

        def force(dom: Any) -> bool:
            try:
                dom.migrateStartPostCopy(0)
                return True
            except libvirt.libvirtError as exc:
                if _code(exc) != _OPERATION_INVALID or "post-copy" not in (exc.get_error_message() or ""):
                    raise
            # Not started with VIR_MIGRATE_POSTCOPY: pause the guest, so it stops
            # dirtying memory and the copy finishes.
            dom.suspend()
            return False

        by_postcopy = await self._control(domain_uuid, "force-complete", force)
        if watch.done:
            return by_postcopy  # the job ended while the call ran: its final is out
        watch.phase = Phase.POSTCOPY if by_postcopy else Phase.PAUSED
        if by_postcopy:
            watch.limits = replace(watch.limits, postcopy_allowed=True)
        self._emit_outgoing(watch)
        watch.wake.set()
        return by_postcopy

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        watch = self._active(domain_uuid)
        # libvirt takes whole MiB/s: round up, and report what was really set.
        mib_s = None if max_bandwidth_bps is None else -(-max_bandwidth_bps // (1 << 20))

        def apply(dom: Any) -> None:
            if max_downtime_s is not None:
                dom.migrateSetMaxDowntime(max(1, round(max_downtime_s * 1000)), 0)
            if mib_s is not None:
                dom.migrateSetMaxSpeed(mib_s, 0)

        await self._control(domain_uuid, "set-limits", apply)
        if watch.done:
            return
        watch.limits = replace(
            watch.limits,
            max_downtime_s=watch.limits.max_downtime_s if max_downtime_s is None else max_downtime_s,
            max_bandwidth_bps=watch.limits.max_bandwidth_bps if mib_s is None else mib_s << 20,
        )
        self._emit_outgoing(watch)
        watch.wake.set()


# -- blocking helpers (run in worker threads) -------------------------------------------
def _resident_bytes(dom: Any) -> int | None:
    """The guest QEMU's resident memory (``virDomainMemoryStats`` ``rss``, KiB) in bytes, or
    None. Needs no balloon driver. Never-written guest pages are not resident, so it bounds
    the RAM pass 1 must send as non-zero pages (``passmodel.ResidentBound``)."""
    try:
        rss = dom.memoryStats().get("rss")
    except libvirt.libvirtError as exc:
        log.debug("memoryStats of %s failed: %s", dom.name(), exc.get_error_message())
        return None
    return int(rss) * 1024 if isinstance(rss, int) and rss > 0 else None


def _scan_jobs(conn: Any, known: frozenset[str] = frozenset()
               ) -> list[tuple[str, str, str, dict[str, Any], int, int | None]]:
    """(uuid, name, "out"|"in", stats, RAM bytes, resident bytes) for every active domain
    with a migration job. The RAM size lets the ETA cover a disk mirror, during which
    the memory counters are all zero; the resident size (read only for jobs not in
    ``known``: once, when the job is found) bounds pass 1's non-zero pages."""
    found: list[tuple[str, str, str, dict[str, Any], int, int | None]] = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            stats = dom.jobStats()
        except libvirt.libvirtError as exc:
            if _code(exc) == _OPERATION_UNSUPPORTED:
                found.append((dom.UUIDString(), dom.name(), "in", {}, 0, None))
            continue
        job_type = int(stats.get("type", _JOB_NONE))
        op = stats.get("operation")
        if job_type in (_JOB_NONE, _JOB_COMPLETED, _JOB_FAILED, _JOB_CANCELLED):
            continue
        if op is not None and int(op) != _OP_MIGRATION_OUT:
            continue
        uuid = dom.UUIDString()
        found.append((uuid, dom.name(), "out", stats, int(dom.info()[1]) * 1024,
                      None if uuid in known else _resident_bytes(dom)))
    return found


_NEVER = Preflight(measured_at=float("-inf"))


def _idle_domains(conn: Any) -> list[tuple[str, int]]:
    """(UUID, domain id) of running domains with no job."""
    idle = []
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING):
        try:
            if int(dom.jobStats().get("type", _JOB_NONE)) == _JOB_NONE:
                idle.append((dom.UUIDString(), int(dom.ID())))
        except libvirt.libvirtError:
            continue
    return idle


def _start_dirty_rate(conn: Any, uuid: str, period: int) -> Any:
    """Start one page-sampling measurement; returns the previous result's start time, which
    tells the new result from the old one. Never the dirty-bitmap mode: on QEMU 7.2 under
    TCG it killed the guest (NOTES.md)."""
    dom = conn.lookupByUUIDString(uuid)
    previous_start = _dirty_rate_stats(conn, dom).get("dirtyrate.calc_start_time")
    dom.startDirtyRateCalc(int(period), libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
    return previous_start


def _dirty_rate_result(conn: Any, uuid: str, previous_start: Any) -> float | None:
    """The measurement's MiB/s once QEMU has it; ``None`` while it is still running."""
    current = _dirty_rate_stats(conn, conn.lookupByUUIDString(uuid))
    fresh = current.get("dirtyrate.calc_start_time") != previous_start
    if fresh and int(current.get("dirtyrate.calc_status", 0)) == 2:  # measured
        return float(current.get("dirtyrate.megabytes_per_second", 0))
    return None


def _dirty_rate_stats(conn: Any, dom: Any) -> dict[str, Any]:
    ((_, found),) = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE, 0)
    return dict(found)


def _describe(conn: Any, domain: str
              ) -> tuple[str, str, int, int, int, Limits, bool, int | None]:
    try:
        dom = conn.lookupByUUIDString(domain)
    except libvirt.libvirtError:
        dom = conn.lookupByName(domain)
    if not dom.isActive():
        raise libvirt.libvirtError(f"domain {domain} is not running")
    memory = int(dom.info()[1]) * 1024
    disk = 0
    root = ET.fromstring(dom.XMLDesc(0))
    for target in root.findall("./devices/disk[@device='disk']/target"):
        with contextlib.suppress(libvirt.libvirtError):
            disk += int(dom.blockInfo(target.get("dev", ""))[0])  # capacity
    limits = _read_limits(dom, Limits())
    busy = int(dom.jobStats().get("type", _JOB_NONE)) != _JOB_NONE
    return (dom.UUIDString(), dom.name(), int(dom.ID()), memory, disk, limits, busy,
            _resident_bytes(dom))


def _domain_state(conn: Any, uuid: str) -> tuple[int, int] | None:
    try:
        dom = conn.lookupByUUIDString(uuid)
        state, reason = dom.state()
        return int(state), int(reason)
    except libvirt.libvirtError as exc:
        if _code(exc) == _NO_DOMAIN:
            return None
        raise


def _completed_and_state(conn: Any, uuid: str) -> tuple[dict[str, Any], tuple[int, int] | None]:
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as exc:
        if _code(exc) == _NO_DOMAIN:
            return {}, None
        raise
    completed = dict(dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED))
    state, reason = dom.state()
    return completed, (int(state), int(reason))


def _classify_end(
    completed: Mapping[str, Any],
    state: tuple[int, int] | None,
    *,
    stopped: str = "",
    cancelled: bool = False,
) -> tuple[Phase, str]:
    """How an outgoing job that left ``jobStats()`` ended: the phase and an error.

    ``completed`` is ``jobStats(COMPLETED)``, ``state`` the domain's state (None: it is
    gone), ``stopped`` a non-migration stop seen as a lifecycle event, ``cancelled``
    whether an abort was requested or a CANCELLED job type was seen.
    """
    job_type = int(completed.get("type", _JOB_NONE))
    if job_type == _JOB_COMPLETED:
        return Phase.COMPLETED, ""
    if job_type == _JOB_FAILED:
        return Phase.FAILED, str(completed.get("errmsg", "")) or "migration failed"
    if stopped:
        return Phase.FAILED, (
            f"the guest stopped on the source ({stopped.lower()}) before the migration completed"
        )
    if cancelled or job_type == _JOB_CANCELLED:
        return Phase.CANCELLED, ""
    if state is None or state[0] == libvirt.VIR_DOMAIN_SHUTOFF:
        # A transient guest vanishes after success; a persistent one stays shut
        # off with reason MIGRATED. Neither is an error.
        return Phase.COMPLETED, ""
    # Still running here with no completed stats: the job was cancelled (libvirt
    # keeps no completed stats for an abort, NOTES.md).
    return Phase.CANCELLED, ""


def _settle_outgoing(conn: Any, uuid: str) -> tuple[dict[str, Any], tuple[int, int] | None, bool]:
    """Completed stats, state, and whether a migration job still runs."""
    completed, state = _completed_and_state(conn, uuid)
    if state is None:
        return completed, None, False
    dom = conn.lookupByUUIDString(uuid)
    job_type = int(dom.jobStats().get("type", _JOB_NONE))
    return completed, state, job_type not in (_JOB_NONE, _JOB_COMPLETED, _JOB_FAILED, _JOB_CANCELLED)


def _read_limits(dom: Any, current: Limits) -> Limits:
    downtime_s = current.max_downtime_s
    bandwidth = current.max_bandwidth_bps
    with contextlib.suppress(libvirt.libvirtError):
        downtime_s = dom.migrateGetMaxDowntime(0) / 1000
    with contextlib.suppress(libvirt.libvirtError):
        mib_s = int(dom.migrateGetMaxSpeed(0))
        bandwidth = None if mib_s <= 0 or mib_s >= _UNLIMITED_MIB_S else mib_s << 20
    return replace(current, max_downtime_s=downtime_s, max_bandwidth_bps=bandwidth)


def _running_phase(watch: _Outgoing, sample: JobSample) -> Phase:
    if watch.phase in (Phase.POSTCOPY, Phase.PAUSED):
        return watch.phase  # set by a lifecycle event or a control
    if sample.iteration == 0:
        return Phase.DISK_MIRROR if sample.disk_total > 0 else Phase.SETUP
    return Phase.PRECOPY


_LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "DEFINED",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "UNDEFINED",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "STARTED",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "SUSPENDED",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "RESUMED",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "STOPPED",
}
_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: {
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: "PAUSED",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: "MIGRATED",
        libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: "POSTCOPY",
    },
    libvirt.VIR_DOMAIN_EVENT_RESUMED: {
        libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED: "UNPAUSED",
        libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED: "MIGRATED",
        libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY: "POSTCOPY",
    },
    libvirt.VIR_DOMAIN_EVENT_STOPPED: {
        libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "MIGRATED",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "FAILED",
        libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "DESTROYED",
    },
}


def _detail_name(event: int, detail: int) -> str:
    return _DETAILS.get(event, {}).get(detail, str(detail))


_impl_loop: asyncio.AbstractEventLoop | None = None
_impl: libvirtaio.virEventAsyncIOImpl | None = None


def _event_impl() -> libvirtaio.virEventAsyncIOImpl:
    """libvirtaio on the running loop, registered before any ``libvirt.open``.

    libvirt takes one event implementation per process and ignores later ones,
    so a second event loop in the same process could never receive events.
    """
    global _impl_loop, _impl
    loop = asyncio.get_running_loop()
    if _impl is None:
        # libvirt prints every error to stderr by default, caught or not.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        _impl = libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        _impl_loop = loop
    elif _impl_loop is not loop:
        raise RuntimeError(
            "libvirt's event loop is bound to another asyncio loop in this process; "
            "run one libvirt backend per process"
        )
    return _impl
