"""What one migration job is doing, from what libvirt says about it. Pure: sans-I/O.

A ``JobWatcher`` is fed what the backend reads and hears about one outgoing job: job-stats
dicts (``jobStats()``), lifecycle and JOB_COMPLETED events, the controls the agent applied,
and, once the job has left ``jobStats()``, its completed stats and the domain's state (or
the fact that the domain is gone). It returns what to publish (``Update``) and, once, how
the job ended (``Final``). It never imports libvirt, asyncio or a clock: the backend does
the calls, the waiting and the timing, and passes the wall time in where it matters.

Invariants (what the lab showed, ``lab/NOTES.md``):

* ``done`` is set exactly once, by ``finish``; after it every input returns ``None``.
* A job that switched over (SUSPENDED/MIGRATED or STOPPED/MIGRATED on the source) ends
  COMPLETED unless libvirt says FAILED: JOB_COMPLETED follows within ~2 s.
* An abort sends no event on the source: the job's stats turn CANCELLED once, then NONE,
  while the guest keeps running. A job that leaves ``jobStats()`` with no completed stats
  and a running guest was cancelled.
* POSTCOPY and PAUSED come from events and controls, never from the counters, so a sample
  never moves the phase back out of them.

The incoming side has no job statistics at all (error 84 on the destination): its phase is
the domain's state and lifecycle events (``incoming_phase``, ``incoming_event``).

libvirt's numbers are mirrored here as enums (as ``jobstats.JobType`` mirrors
``VIR_DOMAIN_JOB_*``); ``connection.check_mirrors`` compares them with the binding at import.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from migwatch.agent.backends.jobstats import (
    JobType,
    actual_downtime_s,
    job_over,
    job_type,
    no_job,
    parse_job_stats,
)
from migwatch.agent.backends.protocol import Ending, MigrationInfo
from migwatch.agent.model import JobSample, Limits, Phase, running_phase

#: ``VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT``: the only job operation watched on a source.
OPERATION_MIGRATION_OUT = 5
#: After a switch-over JOB_COMPLETED follows within 1.4-1.8 s (NOTES.md): wait this long.
FINAL_EVENT_WAIT_S = 5.0
#: Otherwise the job may have completed unseen a moment ago: a short grace.
GRACE_WAIT_S = 0.5


class Lifecycle(enum.IntEnum):
    """``virDomainEventType``."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5


class Suspended(enum.IntEnum):
    """``virDomainEventSuspendedDetailType`` (those the watcher tells apart)."""

    PAUSED = 0
    MIGRATED = 1
    POSTCOPY = 7


class Resumed(enum.IntEnum):
    """``virDomainEventResumedDetailType`` (those the watcher tells apart)."""

    UNPAUSED = 0
    MIGRATED = 1
    POSTCOPY = 3


class Stopped(enum.IntEnum):
    """``virDomainEventStoppedDetailType`` (those the watcher tells apart)."""

    DESTROYED = 1
    MIGRATED = 3
    FAILED = 5


class Started(enum.IntEnum):
    """``virDomainEventStartedDetailType`` (those the watcher tells apart)."""

    MIGRATED = 1


class DomainStateCode(enum.IntEnum):
    """``virDomainState`` (those the watcher tells apart)."""

    RUNNING = 1
    SHUTOFF = 5


#: ``VIR_DOMAIN_RUNNING_POSTCOPY``: the reason of a RUNNING destination during post-copy.
RUNNING_POSTCOPY = 10

_DETAILS: dict[int, type[enum.IntEnum]] = {
    Lifecycle.SUSPENDED: Suspended,
    Lifecycle.RESUMED: Resumed,
    Lifecycle.STOPPED: Stopped,
}


def lifecycle_name(event: int) -> str:
    """The event's name as recorded in traces (``"SUSPENDED"``), or its number."""
    try:
        return Lifecycle(event).name
    except ValueError:
        return str(event)


def detail_name(event: int, detail: int) -> str:
    """The detail's name as recorded in traces (``"MIGRATED"``), or its number."""
    kind = _DETAILS.get(event)
    if kind is None:
        return str(detail)
    try:
        return kind(detail).name
    except ValueError:
        return str(detail)


class DomainState(NamedTuple):
    """``dom.state()``: the state and its reason."""

    state: int
    reason: int


@dataclass(frozen=True, slots=True)
class Update:
    """What to publish about the job now (the backend adds the wall time and pre-flight)."""

    phase: Phase
    limits: Limits
    sample: JobSample | None
    error_message: str = ""
    actual_downtime_s: float | None = None


@dataclass(frozen=True, slots=True)
class Final:
    """How the job ended: the last update, and the completed stats libvirt kept (if any),
    which the backend learns QEMU's overhead from and records."""

    update: Update
    completed: Mapping[str, Any] | None

    @property
    def outcome(self) -> str:
        """The trace recorder's word for it."""
        return {Phase.COMPLETED: "completed", Phase.CANCELLED: "aborted"}.get(
            self.update.phase, "failed"
        )


class StatsStep(NamedTuple):
    """What one ``jobStats()`` result said."""

    sample: JobSample | None
    over: bool  # the job left jobStats(): settle it (``settle_wait_s``, then ``settle``)
    reread_limits: bool  # a new pass (or the first sample): the limits may have changed


def job_started_at(stats: Mapping[str, Any], now: float) -> float:
    """When the job in ``stats`` started, from the wall time ``now`` and its own clock;
    rounded so an agent started mid-job (or restarted) derives the same migration id."""
    sample = parse_job_stats(stats)
    return round(now - (sample.elapsed_s if sample is not None else 0.0), 1)


def classify_end(
    completed: Mapping[str, Any],
    state: DomainState | None,
    *,
    stopped: str = "",
    cancelled: bool = False,
) -> tuple[Phase, str]:
    """How an outgoing job that left ``jobStats()`` ended: the phase and an error.

    ``completed`` is ``jobStats(COMPLETED)``, ``state`` the domain's state (None: it is
    gone), ``stopped`` a non-migration stop seen as a lifecycle event, ``cancelled``
    whether an abort was requested or a CANCELLED job type was seen.
    """
    kind = job_type(completed) if completed else JobType.NONE
    if kind is JobType.COMPLETED:
        return Phase.COMPLETED, ""
    if kind is JobType.FAILED:
        return Phase.FAILED, str(completed.get("errmsg", "")) or "migration failed"
    if stopped:
        return Phase.FAILED, (
            f"the guest stopped on the source ({stopped.lower()}) before the migration completed"
        )
    if cancelled or kind is JobType.CANCELLED:
        return Phase.CANCELLED, ""
    if state is None or state.state == DomainStateCode.SHUTOFF:
        # A transient guest vanishes after success; a persistent one stays shut
        # off with reason MIGRATED. Neither is an error.
        return Phase.COMPLETED, ""
    # Still running here with no completed stats: the job was cancelled (libvirt
    # keeps no completed stats for an abort, NOTES.md).
    return Phase.CANCELLED, ""


def ending_of(completed: Mapping[str, Any], state: DomainState | None) -> Ending:
    """How a job that ran while no agent watched ended (``Backend.outcome_of``)."""
    phase, error = classify_end(completed, state)
    downtime = actual_downtime_s(completed) if phase is Phase.COMPLETED else None
    return Ending(phase, error, downtime)


def is_outgoing_migration(stats: Mapping[str, Any]) -> bool:
    """Whether a ``jobStats()`` dict is a running outgoing migration (not another job)."""
    op = stats.get("operation")
    return not job_over(stats) and (op is None or int(op) == OPERATION_MIGRATION_OUT)


def is_idle(stats: Mapping[str, Any]) -> bool:
    """Whether a ``jobStats()`` dict shows no job of any kind (pre-flight may measure)."""
    return no_job(stats)


def incoming_phase(state: DomainState | None) -> Phase | None:
    """The phase of an incoming migration whose domain is in ``state`` (None: gone), or
    None while its state says nothing new (paused, still copying)."""
    if state is None or state.state == DomainStateCode.SHUTOFF:
        return Phase.FAILED
    if state.state == DomainStateCode.RUNNING:
        return Phase.POSTCOPY if state.reason == RUNNING_POSTCOPY else Phase.COMPLETED
    return None


def incoming_event(event: int, detail: int) -> Phase | None:
    """The phase a lifecycle event on an incoming domain moves it to, if any."""
    if event == Lifecycle.RESUMED:
        if detail == Resumed.POSTCOPY:
            return Phase.POSTCOPY
        if detail == Resumed.MIGRATED:
            return Phase.COMPLETED
        return None
    if event == Lifecycle.STOPPED:
        return Phase.FAILED
    return None


def is_incoming_start(event: int, detail: int) -> bool:
    """STARTED/MIGRATED: the destination QEMU of a new incoming migration started."""
    return event == Lifecycle.STARTED and detail == Started.MIGRATED


@dataclass(slots=True)
class JobWatcher:
    """One outgoing migration job (see the module docstring for its invariants)."""

    info: MigrationInfo
    limits: Limits = field(default_factory=Limits)
    phase: Phase = Phase.SETUP
    sample: JobSample | None = None
    final_params: dict[str, Any] | None = None  # JOB_COMPLETED's params, once it came
    saw_cancelled: bool = False  # a CANCELLED job type was seen
    abort_requested: bool = False
    switched_over: bool = False  # the source guest stopped for the final copy
    stopped: str = ""  # the guest stopped on the source for another reason (e.g. DESTROYED)
    done: bool = False
    _limits_iteration: int = -1  # the pass whose limits were last read

    def update(self, error: str = "", downtime: float | None = None) -> Update:
        return Update(self.phase, self.limits, self.sample, error, downtime)

    # -- what the backend reads ----------------------------------------------------------
    def on_stats(self, stats: Mapping[str, Any]) -> StatsStep:
        """One ``jobStats()`` result. Call ``on_running`` next unless the step is ``over``."""
        sample = parse_job_stats(stats)
        reread = sample is not None and sample.iteration != self._limits_iteration
        if reread and sample is not None:
            # The migration's own bandwidth and downtime apply only once the job is past
            # setup; they are re-read at each pass.
            self._limits_iteration = sample.iteration
        if job_type(stats) is JobType.CANCELLED:
            self.saw_cancelled = True
        return StatsStep(sample, job_over(stats), reread)

    def on_running(self, step: StatsStep) -> Update | None:
        """The sample of a running job: what to publish (None: nothing to say)."""
        if self.done or step.over or step.sample is None:
            return None
        self.sample = step.sample
        held = self.phase if self.phase in (Phase.POSTCOPY, Phase.PAUSED) else None
        self.phase = running_phase(step.sample, held)
        return self.update()

    def watching(self, limits: Limits) -> None:
        """A sampling task starts (the job was found, or libvirt reconnected) with the limits
        read now; its first sample re-reads them."""
        self.limits = limits
        self._limits_iteration = -1

    def on_limits(self, limits: Limits) -> None:
        """The limits read from libvirt at a new pass (``StatsStep.reread_limits``)."""
        self.limits = limits

    # -- what the backend hears ----------------------------------------------------------
    def on_lifecycle(self, event: int, detail: int) -> Update | None:
        """A lifecycle event of the source domain."""
        if self.done:
            return None
        if event == Lifecycle.SUSPENDED:
            if detail == Suspended.POSTCOPY:
                self.phase = Phase.POSTCOPY
            elif detail == Suspended.MIGRATED:
                self.switched_over = True
                self.phase = Phase.PAUSED
            else:
                self.phase = Phase.PAUSED
            return self.update()
        if event == Lifecycle.STOPPED:
            if detail == Stopped.MIGRATED:
                self.switched_over = True
            else:
                self.stopped = detail_name(event, detail)
        return None

    def on_job_completed(self, params: Mapping[str, Any]) -> Final | None:
        """JOB_COMPLETED: the job succeeded; its params are the final stats."""
        op = params.get("operation")
        if self.done or (op is not None and int(op) != OPERATION_MIGRATION_OUT):
            return None
        self.final_params = dict(params)
        return self.finish(Phase.COMPLETED, self.final_params)

    # -- what the agent did --------------------------------------------------------------
    def on_abort_requested(self) -> None:
        self.abort_requested = True

    def on_forced(self, by_postcopy: bool) -> Update | None:
        """force-complete went through: post-copy started, or the guest was paused."""
        if self.done:
            return None
        self.phase = Phase.POSTCOPY if by_postcopy else Phase.PAUSED
        if by_postcopy:
            self.limits = replace(self.limits, postcopy_allowed=True)
        return self.update()

    def on_limits_set(
        self, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> Update | None:
        """New limits were applied (``None`` leaves one as it was)."""
        if self.done:
            return None
        self.limits = replace(
            self.limits,
            max_downtime_s=self.limits.max_downtime_s if max_downtime_s is None else max_downtime_s,
            max_bandwidth_bps=(
                self.limits.max_bandwidth_bps if max_bandwidth_bps is None else max_bandwidth_bps
            ),
        )
        return self.update()

    # -- the end -------------------------------------------------------------------------
    def settle_wait_s(self) -> float:
        """How long to wait for JOB_COMPLETED once the job left ``jobStats()``."""
        if self.done or self.final_params is not None:
            return 0.0
        if self.switched_over:
            return FINAL_EVENT_WAIT_S
        return 0.0 if self.saw_cancelled else GRACE_WAIT_S

    def settle(
        self, completed: Mapping[str, Any], state: DomainState | None, now: float
    ) -> Final | None:
        """The job is gone from ``jobStats()`` and the wait is over: completed, failed or
        cancelled? ``completed`` is ``jobStats(COMPLETED)`` (``{}`` when it could not be
        read), ``state`` the domain's (None: gone or unknown), ``now`` the wall time."""
        if self.done:
            return None
        if self.final_params is not None:
            return self.finish(Phase.COMPLETED, self.final_params)
        phase, error = classify_end(
            completed,
            state,
            stopped=self.stopped,
            cancelled=self.saw_cancelled or self.abort_requested,
        )
        kept = bool(completed) and job_type(completed) in (JobType.COMPLETED, JobType.FAILED)
        if (
            phase is Phase.COMPLETED
            and not kept
            and self.sample is not None
            and not self.switched_over
        ):
            # It ended unseen (libvirt was unreachable): the last sample's counters are
            # stale, and only the wall clock knows the duration.
            self.sample = replace(
                self.sample,
                elapsed_s=max(self.sample.elapsed_s, now - self.info.started_at),
                memory_remaining=0,
                disk_remaining=0,
            )
        return self.finish(phase, completed if kept else None, error)

    def finish(
        self, phase: Phase, params: Mapping[str, Any] | None = None, error: str = ""
    ) -> Final | None:
        """End the job once: the final update, with the completed stats when known."""
        if self.done:
            return None
        self.done = True
        downtime: float | None = None
        if params:
            final = parse_job_stats({**params, "type": int(JobType.COMPLETED)})
            if final is not None:
                self.sample = final
            if phase is Phase.COMPLETED:
                downtime = actual_downtime_s(params)
        self.phase = phase
        return Final(self.update(error, downtime), params)
