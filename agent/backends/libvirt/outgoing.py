"""The outgoing migrations of one libvirt host: a sampling task per job, its events and
the operator's controls on it.

Each job's state is a pure ``watcher.JobWatcher``; this module does the I/O around it:
``jobStats()`` every ``sample_interval_s`` (at once on MIGRATION_ITERATION), the limits at
each new pass, the wait for JOB_COMPLETED once the job left ``jobStats()``, the completed
stats and state after it, and the trace recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import libvirt
from migwatch.agent.backends.jobstats import completed_job
from migwatch.agent.backends.learned import HostLearning
from migwatch.agent.backends.libvirt import controls, scan
from migwatch.agent.backends.libvirt.connection import (
    CONNECTION_LOST,
    code,
    map_control_error,
    unreachable,
)
from migwatch.agent.backends.libvirt.preflight import PreflightSampler
from migwatch.agent.backends.libvirt.watcher import (
    OPERATION_MIGRATION_OUT,
    Final,
    JobWatcher,
    Lifecycle,
    Update,
    detail_name,
    job_started_at,
    lifecycle_name,
)
from migwatch.agent.backends.protocol import MigrationInfo, Observation, ObservationSink
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.errors import MigrationGone
from migwatch.agent.model import MIB, Direction, Phase
from migwatch.agent.tasks import stop_task

log = logging.getLogger(__name__)

T = TypeVar("T")

_SETTLE_POLL_S = 0.1  # how often the wait for JOB_COMPLETED looks whether it came


async def _call(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


@dataclass(slots=True)
class Outgoing:
    """An outgoing job being watched: its pure state and the task that samples it.
    Holds no libvirt objects."""

    job: JobWatcher
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def info(self) -> MigrationInfo:
        return self.job.info


class OutgoingJobs:
    """The watched outgoing jobs of one host, by domain UUID."""

    def __init__(
        self,
        *,
        uri: str,
        sample_interval_s: float,
        recorder: TraceRecorder | None,
        preflight: PreflightSampler,
        learning: HostLearning,
        conn: Callable[[], Any],
        host: Callable[[], str],
        clock: Callable[[], float],
    ) -> None:
        self.jobs: dict[str, Outgoing] = {}
        self.observe: ObservationSink = lambda _obs: None  # set by the backend's run()
        self._uri = uri
        self._interval = sample_interval_s
        self._recorder = recorder
        self._preflight = preflight
        self._learning = learning
        # Completed jobs whose source has not stopped yet (uuid -> the job's end, wall s),
        # and watched jobs whose source stopped before their end was concluded (uuid -> the
        # stop): the two halves of a teardown reading. Bounded: a stop may never come.
        self._ended: dict[str, float] = {}
        self._stopped: dict[str, float] = {}
        self._conn = conn
        self._host = host
        self._clock = clock

    async def stop_tasks(self) -> None:
        """Stop the sampling tasks; the jobs' state stays, to resume after a reconnect."""
        for watch in self.jobs.values():
            if watch.task is not None:
                watch.task.cancel()
        for watch in self.jobs.values():
            if watch.task is not None:
                await stop_task(watch.task)
                watch.task = None

    def start(self, found: scan.FoundJob, now: float) -> None:
        started_at = job_started_at(found.stats, now)
        info = MigrationInfo(
            domain_uuid=found.uuid,
            domain_name=found.name,
            source_host=self._host(),
            destination_host="",  # libvirt does not say; the fleet client joins the ends
            direction=Direction.OUTGOING,
            started_at=started_at,
            memory_bytes=found.memory_bytes or None,
            resident_bytes=found.resident_bytes,
            free_bytes=found.free_bytes,
            resident_overhead_bytes=self._learning.overhead.value(),
        )
        watch = Outgoing(JobWatcher(info))
        self.jobs[found.uuid] = watch
        log.info(
            "outgoing migration of %s (%s) found, %.1fs into the job; resident %s, guest free %s",
            found.name, found.uuid, now - started_at, _mib(found.resident_bytes),
            _mib(found.free_bytes),
        )  # fmt: skip
        self.ensure_watcher(watch)

    def ensure_watcher(self, watch: Outgoing) -> None:
        if watch.task is None and not watch.job.done:
            watch.task = asyncio.create_task(
                self._watch(watch), name=f"watch-{watch.info.domain_name}"
            )

    async def check_lost(self, jobs: set[str]) -> None:
        """Watched outgoing jobs the scan no longer sees (e.g. across a reconnect)."""
        for uuid, watch in list(self.jobs.items()):
            if uuid not in jobs and not watch.job.done and watch.task is None:
                await self.resolve_end(watch)

    async def _watch(self, watch: Outgoing) -> None:
        conn = self._conn()
        if conn is None:
            return
        job = watch.job
        try:
            dom = await _call(conn.lookupByUUIDString, watch.info.domain_uuid)
        except libvirt.libvirtError:
            watch.task = None
            await self.resolve_end(watch)
            return
        try:
            job.watching(await _call(scan.read_limits, dom, job.limits))
            while not job.done:
                began = time.monotonic()
                try:
                    stats = await _call(dom.jobStats)
                except libvirt.libvirtError as exc:
                    if self._recorder is not None:
                        self._recorder.stats_error(
                            watch.info.domain_uuid, exc.get_error_message() or str(exc), code(exc)
                        )
                    if code(exc) in CONNECTION_LOST and self._conn() is None:
                        return
                    # NO_DOMAIN (transient guest gone) or OPERATION_INVALID
                    # ("domain is not running" while QEMU is torn down after
                    # the switch-over): the job is over either way.
                    break
                step = job.on_stats(stats)
                if step.reread_limits and step.sample is not None:
                    job.on_limits(await _call(scan.read_limits, dom, job.limits))
                    if self._recorder is not None and (
                        step.sample.iteration or step.sample.disk_total
                    ):
                        self._recorder.start(
                            watch.info, job.limits, self._interval,
                            self._preflight.of(watch.info.domain_uuid), uri=self._uri,
                        )  # fmt: skip
                if self._recorder is not None:
                    self._recorder.stats(
                        watch.info.domain_uuid, stats, (time.monotonic() - began) * 1000
                    )
                if step.over:
                    break
                self._publish(watch, job.on_running(step))
                watch.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.wake.wait(), self._interval)
            del dom  # drop the reference before the slow end-of-job wait
            await self.resolve_end(watch)
        finally:
            watch.task = None

    async def resolve_end(self, watch: Outgoing) -> None:
        """The job is gone from jobStats(): completed, failed or cancelled?"""
        job = watch.job
        # After a switch-over JOB_COMPLETED is due within ~2 s.
        deadline = time.monotonic() + job.settle_wait_s()
        while job.final_params is None and time.monotonic() < deadline and not job.done:
            await asyncio.sleep(_SETTLE_POLL_S)
        if job.done:
            return
        facts = scan.EndFacts({}, None)
        conn = self._conn()
        if conn is not None and job.final_params is None:
            try:
                facts = await _call(scan.end_facts, conn, watch.info.domain_uuid)
            except libvirt.libvirtError as exc:
                log.debug("end of %s: %s", watch.info.domain_name, exc.get_error_message())
        self._conclude(watch, job.settle(facts.completed, facts.state, self._clock()))

    def _conclude(self, watch: Outgoing, final: Final | None) -> None:
        """Publish the job's end, learn from it, record it, and stop watching it."""
        if final is None:
            return
        update = final.update
        if update.phase is Phase.COMPLETED and final.completed:
            self._learning.completed_job(
                watch.info.domain_name, watch.info.resident_bytes, final.completed
            )
            self._job_ended(watch.info, final.completed)
        self._publish(watch, update)
        if self._recorder is not None:
            self._recorder.finish(
                watch.info.domain_uuid, final.outcome, update.error_message or None,
                final.completed,
            )  # fmt: skip
        self.jobs.pop(watch.info.domain_uuid, None)
        if watch.task is not None and watch.task is not asyncio.current_task():
            watch.task.cancel()

    def _job_ended(self, info: MigrationInfo, params: Mapping[str, Any]) -> None:
        """A completed job's end on the wall clock: half of a teardown reading."""
        job = completed_job(params)
        if job is None:
            return
        end = info.started_at + job.elapsed_s
        stopped = self._stopped.pop(info.domain_uuid, None)
        if stopped is None:
            _bounded_put(self._ended, info.domain_uuid, end)
        else:
            self._learning.stopped_after_job(info.domain_name, end, stopped)

    def _source_stopped(self, uuid: str, name: str) -> None:
        """The domain stopped here (STOPPED event): the other half of a teardown reading."""
        now = self._clock()
        end = self._ended.pop(uuid, None)
        if end is not None:
            self._learning.stopped_after_job(name, end, now)
        elif uuid in self.jobs:
            _bounded_put(self._stopped, uuid, now)

    def _publish(self, watch: Outgoing, update: Update | None) -> None:
        if update is None:
            return
        self.observe(
            Observation(
                info=watch.info,
                now=self._clock(),
                phase=update.phase,
                limits=update.limits,
                sample=update.sample,
                error_message=update.error_message,
                actual_downtime_s=update.actual_downtime_s,
                preflight=self._preflight.of(watch.info.domain_uuid),
            )
        )

    # -- events (on the event loop, via libvirtaio) -----------------------------------
    def on_iteration(self, dom: Any, iteration: int) -> bool:
        """MIGRATION_ITERATION: sample now. False: not a job watched here."""
        watch = self.jobs.get(dom.UUIDString())
        if watch is None:
            return False
        if self._recorder is not None:
            self._recorder.event(
                watch.info.domain_uuid, "MIGRATION_ITERATION", dom=dom.name(), iteration=iteration
            )
        watch.wake.set()
        return True

    def on_job_completed(self, dom: Any, params: dict[str, Any], now: float | None = None) -> None:
        """JOB_COMPLETED: the job's final stats. An outgoing migration no scan had found (over
        within a scan interval) is taken up from them, so it still gets its final state."""
        uuid = dom.UUIDString()
        watch = self.jobs.get(uuid)
        if watch is None:
            op = params.get("operation")
            if now is None or op is None or int(op) != OPERATION_MIGRATION_OUT:
                return
            memory = int(params.get("memory_total", 0) or 0)
            self.start(scan.FoundJob(uuid, dom.name(), True, dict(params), memory, None), now)
            watch = self.jobs[uuid]
        final = watch.job.on_job_completed(params)
        if final is None:
            return  # another kind of job
        if self._recorder is not None:
            self._recorder.event(
                watch.info.domain_uuid, "JOB_COMPLETED", dom=dom.name(),
                params=watch.job.final_params,
            )  # fmt: skip
        self._conclude(watch, final)

    def on_lifecycle(self, dom: Any, event: int, detail: int) -> bool:
        """A lifecycle event. False: not a job watched here."""
        uuid = dom.UUIDString()
        if event == Lifecycle.STOPPED:
            self._source_stopped(uuid, dom.name())
        watch = self.jobs.get(uuid)
        if watch is None:
            return False
        if self._recorder is not None:
            self._recorder.event(
                uuid, "LIFECYCLE", dom=dom.name(), lifecycle=lifecycle_name(event),
                detail=detail_name(event, detail), raw=[event, detail],
            )  # fmt: skip
        self._publish(watch, watch.job.on_lifecycle(event, detail))
        watch.wake.set()
        return True

    def active(self, domain_uuid: str) -> Outgoing:
        watch = self.jobs.get(domain_uuid)
        if watch is None or watch.job.done:
            raise MigrationGone(f"domain {domain_uuid} has no outgoing migration on {self._host()}")
        if self._conn() is None:
            raise unreachable(self._uri)
        return watch

    async def _control(self, domain_uuid: str, what: str, fn: Callable[[Any], T]) -> T:
        watch = self.active(domain_uuid)
        conn = self._conn()
        assert conn is not None

        def call() -> T:
            dom = conn.lookupByUUIDString(domain_uuid)
            return fn(dom)

        try:
            return await _call(call)
        except libvirt.libvirtError as exc:
            raise map_control_error(exc, f"{what} of {watch.info.domain_name}") from exc

    async def abort(self, domain_uuid: str) -> None:
        watch = self.active(domain_uuid)
        watch.job.on_abort_requested()
        await self._control(domain_uuid, "abort", controls.abort)
        # No event will come on the source: the job's disappearance is the news.
        watch.wake.set()
        if watch.task is None:
            await self.resolve_end(watch)

    async def force_complete(self, domain_uuid: str) -> bool:
        watch = self.active(domain_uuid)
        by_postcopy = await self._control(domain_uuid, "force-complete", controls.force_complete)
        # None when the job ended while the call ran: its final is out.
        self._publish(watch, watch.job.on_forced(by_postcopy))
        if not watch.job.done:
            watch.wake.set()
        return by_postcopy

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        watch = self.active(domain_uuid)
        mib_s = controls.whole_mib_s(max_bandwidth_bps)
        await self._control(
            domain_uuid, "set-limits", lambda dom: controls.set_limits(dom, max_downtime_s, mib_s)
        )
        # Report what was really set: whole MiB/s.
        update = watch.job.on_limits_set(max_downtime_s, None if mib_s is None else mib_s * MIB)
        self._publish(watch, update)
        if update is not None:
            watch.wake.set()


#: Teardown halves kept at most: a job whose stop never comes must not grow the dict.
_PENDING_MAX = 64


def _bounded_put(pending: dict[str, float], key: str, value: float) -> None:
    """Put ``key``, dropping the oldest entries beyond ``_PENDING_MAX`` (insertion order)."""
    pending.pop(key, None)
    pending[key] = value
    while len(pending) > _PENDING_MAX:
        del pending[next(iter(pending))]


def _mib(n: int | None) -> str:
    """A memory figure for the log: MiB, or why there is none."""
    return "unknown" if n is None else f"{n / (1 << 20):.0f} MiB"
