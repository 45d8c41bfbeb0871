"""The migration watcher of one QEMU guest, fed QMP answers. Pure: no I/O, no clock.

One ``GuestWatcher`` per QMP socket. The I/O edge (``backend.py``) feeds it what one
command batch returned (``Poll``: ``query-status``, ``query-migrate`` and, during a
migration, the limits), the events a dedicated monitor delivers, and "the socket is
gone"; it returns the ``Observation`` values to publish. Rules, as measured on QEMU 7.2:

* Outgoing: ``query-migrate`` on the source has a running ``status`` (``jobs.RUNNING``).
  Its last status (completed, failed, cancelled) stays until the next migration, so a
  finished one seen by a fresh watcher is not a job.
* Incoming: the run state is ``inmigrate`` from the start of a QEMU run with
  ``-incoming`` until the migration ends; the destination then runs (or stays paused
  with ``-S``, as Proxmox starts it): COMPLETED. During post-copy it already runs, with
  a post-copy ``status``. A failed incoming migration makes QEMU exit, so the socket
  going away while ``inmigrate`` is a failure.
* Storage first (Proxmox with local disks): ``drive-mirror`` jobs into the destination's NBD
  export run before ``migrate`` is called (``jobs.mirror_of``). A mirror still copying on a
  running guest starts the outgoing migration in DISK_MIRROR, on the watcher's clock; when
  ``migrate`` follows, QEMU's ``total-time`` continues that clock and the mirrors stay its
  disk counters. Mirrors that vanish or fail before ``migrate``: CANCELLED or FAILED.
  Until ``migrate`` starts, a ``query-migrate`` status is the previous migration's.
* A source QEMU gone before its switch-over took the guest with it: FAILED. Gone after
  the switch-over (the management stack stops it once the destination runs) is taken as
  COMPLETED, as libvirt's backend does with a transient source domain that vanishes.

Invariant: ``role`` is not None iff a migration is being reported and its final state
has not been returned yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from migwatch.agent.backends.jobstats import parse_job_stats
from migwatch.agent.backends.protocol import Ending, MigrationInfo, Observation
from migwatch.agent.model import Direction, JobSample, Limits, Phase, Preflight, running_phase

from .jobs import (
    POSTCOPY,
    RUNNING,
    SWITCHOVER,
    Mirror,
    job_stats,
    mirror_stats,
    status_of,
    with_mirror,
)


@dataclass(frozen=True, slots=True)
class Guest:
    """What identifies the guest behind one QMP socket."""

    vmid: str  # the socket's file name without ``.qmp`` (Proxmox's VM id)
    uuid: str  # ``query-uuid``; the fleet client joins both ends on it
    name: str  # ``query-name``; the vmid when QEMU has no -name
    memory_bytes: int | None = None  # ``query-memory-size-summary`` base-memory


@dataclass(frozen=True, slots=True)
class Poll:
    """What one command batch returned."""

    runstate: str  # ``query-status`` ``status``: running, paused, inmigrate, ...
    migrate: Mapping[str, object] = field(default_factory=dict)  # ``query-migrate``
    limits: Limits | None = None  # parameters and capabilities, when read in this batch
    resident_bytes: int | None = None  # the QEMU process's VmRSS, when read
    free_bytes: int | None = None  # the guest's free memory (balloon ``guest-stats``), then
    mirror: Mirror | None = None  # the migration's disk mirrors (``jobs.mirror_of``)
    # This host's QEMU overhead in rss, learned from completed migrations (None: not yet).
    resident_overhead_bytes: int | None = None


class GuestWatcher:
    """Turns one guest's QMP answers into observations of its migrations."""

    def __init__(self, guest: Guest, host: str) -> None:
        self.guest = guest
        self.host = host
        self.preflight: Preflight | None = None  # set by the I/O edge; sent along
        self._info: MigrationInfo | None = None
        self._phase = Phase.SETUP
        self._sample: JobSample | None = None
        self._limits = Limits()
        self._switched_over = False
        self.runstate = ""
        self.status = "none"  # the last ``query-migrate`` status seen
        self._migrate: Mapping[str, object] = {}  # the last ``query-migrate`` reply
        # The job stats of the last outgoing poll, disk mirrors merged in: what the
        # recorder writes, so a replay sees what the estimator saw.
        self.last_stats: dict[str, object] = {}
        self._mirror_began: float | None = None  # when the storage phase was first seen
        self._ram_seen = True  # ``migrate`` has started (False during the storage phase)
        self._offset_ms = 0  # storage phase before ``migrate``, added to QEMU's clock

    @property
    def role(self) -> Direction | None:
        """The direction of the migration being reported; None when there is none."""
        return None if self._info is None else self._info.direction

    @property
    def info(self) -> MigrationInfo | None:
        return self._info

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def idle(self) -> bool:
        """Running, with no migration: a pre-flight measurement may start."""
        return self._info is None and self.runstate == "running" and self.status not in RUNNING

    def poll(self, now: float, poll: Poll) -> list[Observation]:
        """Fold one batch's answers in; the observations to publish."""
        self.runstate = poll.runstate
        self.status = status = status_of(poll.migrate)
        self._migrate = poll.migrate
        if poll.limits is not None:
            self._limits = poll.limits
        if self._info is None:
            if poll.runstate == "inmigrate":
                return [self._start(now, Direction.INCOMING, 0.0, None)]
            if status in RUNNING:
                stats = job_stats(poll.migrate)
                elapsed_ms = stats.get("time_elapsed", 0)
                elapsed = elapsed_ms / 1000 if isinstance(elapsed_ms, int) else 0.0
                self._start(
                    now, Direction.OUTGOING, elapsed, poll.resident_bytes,
                    poll.resident_overhead_bytes, poll.free_bytes,
                )  # fmt: skip
            elif poll.mirror is not None and not poll.mirror.ready and poll.runstate == "running":
                # Still copying: a migration's storage phase. A ready mirror alone is not
                # taken (a failed migration's mirrors wait to be cancelled, ready).
                self._start(
                    now, Direction.OUTGOING, 0.0, poll.resident_bytes,
                    poll.resident_overhead_bytes, poll.free_bytes,
                )  # fmt: skip
                self._mirror_began, self._ram_seen = now, False
            else:
                return []
        assert self._info is not None
        if self._info.direction is Direction.INCOMING:
            return self._incoming(now, poll.runstate, status, poll.migrate)
        if not self._ram_seen:
            if status not in RUNNING:
                return self._storage(now, poll.mirror)
            self._ram_seen = True
            total = job_stats(poll.migrate).get("time_elapsed")
            since = int((now - (self._mirror_began or now)) * 1000)
            self._offset_ms = max(since - (total if isinstance(total, int) else 0), 0)
        return self._outgoing(now, poll.runstate, status, poll.migrate, poll.mirror)

    def event(self, now: float, name: str, data: Mapping[str, object]) -> list[Observation]:
        """A QMP event (dedicated monitors only); polls stay authoritative."""
        if self._info is None or self._info.direction is not Direction.OUTGOING:
            return []
        if name == "STOP" or (name == "MIGRATION" and data.get("status") in SWITCHOVER):
            self._switched_over = self._switched_over or name == "MIGRATION"
            return self._set_phase(now, Phase.PAUSED)
        if name == "MIGRATION" and data.get("status") in POSTCOPY:
            return self._set_phase(now, Phase.POSTCOPY)
        return []

    def outcome(self, direction: Direction) -> Ending | None:
        """How this guest's migration in ``direction`` ended, for one the previous agent was
        following (``Backend.outcome_of``): None while one is still running or reported."""
        if self._info is not None:
            return None  # found again: it is being reported
        error = self._migrate.get("error-desc")
        failed = Ending(
            Phase.FAILED, error if isinstance(error, str) and error else "migration failed"
        )
        if direction is Direction.INCOMING:
            if self.runstate == "inmigrate":
                return None
            return failed if self.status == "failed" else Ending(Phase.COMPLETED)
        if self.status == "completed":
            downtime = self._migrate.get("downtime")
            return Ending(
                Phase.COMPLETED,
                actual_downtime_s=downtime / 1000 if isinstance(downtime, int) else None,
            )
        if self.status == "cancelled":
            return Ending(Phase.CANCELLED)
        if self.status in RUNNING:
            return None
        if self.status == "failed":
            return failed
        return Ending(Phase.FAILED, "the migration is no longer known to QEMU (restarted?)")

    def controlled(
        self, now: float, *, phase: Phase | None = None, limits: Limits | None = None
    ) -> list[Observation]:
        """A control this agent applied: report its effect before the next poll shows it."""
        if self._info is None or self._info.direction is not Direction.OUTGOING:
            return []
        if limits is not None:
            self._limits = limits
        if phase is not None:
            self._phase = phase
        return [self._observe(now)]

    def gone(self, now: float) -> list[Observation]:
        """The QMP socket went away: the QEMU process exited."""
        info = self._info
        if info is None:
            return []
        if info.direction is Direction.INCOMING:
            return [
                self._end(
                    now, Phase.FAILED, "the destination QEMU exited before the migration completed"
                )
            ]
        if self._switched_over and self._phase is not Phase.POSTCOPY:
            # Ended unseen after the switch-over: the last sample's counters are stale.
            if self._sample is not None:
                self._sample = replace(
                    self._sample, memory_remaining=0, disk_remaining=0,
                    elapsed_s=max(self._sample.elapsed_s, now - info.started_at),
                )  # fmt: skip
            return [self._end(now, Phase.COMPLETED)]
        where = "during post-copy" if self._phase is Phase.POSTCOPY else "before the switch-over"
        return [
            self._end(
                now, Phase.FAILED, f"the source QEMU exited {where}: the migration did not complete"
            )
        ]

    # -- internals --------------------------------------------------------------------
    def _start(
        self,
        now: float,
        direction: Direction,
        elapsed_s: float,
        resident: int | None,
        overhead: int | None = None,
        free: int | None = None,
    ) -> Observation:
        outgoing = direction is Direction.OUTGOING
        self._info = MigrationInfo(
            domain_uuid=self.guest.uuid,
            domain_name=self.guest.name,
            source_host=self.host if outgoing else "",
            destination_host="" if outgoing else self.host,  # the fleet client joins the ends
            direction=direction,
            # Rounded so a restarted agent derives the same id for the same job.
            started_at=round(now - elapsed_s, 1),
            memory_bytes=self.guest.memory_bytes if outgoing else None,
            resident_bytes=resident if outgoing else None,
            resident_overhead_bytes=overhead if outgoing else None,
            free_bytes=free if outgoing else None,
        )
        self._phase = Phase.SETUP if outgoing else Phase.PRECOPY
        self._sample = None
        self._switched_over = False
        self._mirror_began, self._ram_seen, self._offset_ms = None, True, 0
        return self._observe(now)

    def _storage(self, now: float, mirror: Mirror | None) -> list[Observation]:
        """Before ``migrate``: the disk mirrors are the whole migration so far."""
        if mirror is None:
            return [self._end(now, Phase.CANCELLED, "the disk mirrors stopped before the memory")]
        if mirror.error:
            return [self._end(now, Phase.FAILED, f"disk mirror failed: {mirror.error}")]
        self.last_stats = mirror_stats(int((now - (self._mirror_began or now)) * 1000), mirror)
        self._sample = parse_job_stats(self.last_stats)
        self._phase = _running_phase("active", "running", self._sample)
        return [self._observe(now)]

    def _outgoing(
        self,
        now: float,
        runstate: str,
        status: str,
        migrate: Mapping[str, object],
        mirror: Mirror | None = None,
    ) -> list[Observation]:
        stats = with_mirror(job_stats(migrate), mirror, self._offset_ms)
        self.last_stats = stats
        sample = parse_job_stats(stats)
        if status == "completed":
            if sample is not None:
                self._sample = sample
            downtime = stats.get("downtime")
            return [
                self._end(
                    now,
                    Phase.COMPLETED,
                    actual_downtime_s=(downtime / 1000 if isinstance(downtime, int) else None),
                )
            ]
        if status == "failed":
            error = migrate.get("error-desc")
            return [
                self._end(
                    now,
                    Phase.FAILED,
                    error if isinstance(error, str) and error else "migration failed",
                )
            ]
        if status == "cancelled":
            return [self._end(now, Phase.CANCELLED)]
        if status not in RUNNING:
            # "none": a new QEMU run behind the same socket; the old one is gone.
            return self.gone(now)
        if sample is not None:
            self._sample = sample
        if status in SWITCHOVER or runstate == "finish-migrate":
            self._switched_over = True
        self._phase = _running_phase(status, runstate, self._sample)
        return [self._observe(now)]

    def _incoming(
        self, now: float, runstate: str, status: str, migrate: Mapping[str, object]
    ) -> list[Observation]:
        if status == "failed":
            error = migrate.get("error-desc")
            return [
                self._end(
                    now,
                    Phase.FAILED,
                    error if isinstance(error, str) and error else "migration failed",
                )
            ]
        if status in POSTCOPY and runstate != "inmigrate":
            return self._set_phase(now, Phase.POSTCOPY)
        if runstate == "inmigrate":
            return []  # still loading: nothing new to say
        return [self._end(now, Phase.COMPLETED)]

    def _set_phase(self, now: float, phase: Phase) -> list[Observation]:
        if phase is self._phase:
            return []
        self._phase = phase
        return [self._observe(now)]

    def _end(
        self, now: float, phase: Phase, error: str = "", actual_downtime_s: float | None = None
    ) -> Observation:
        self._phase = phase
        obs = self._observe(now, error, actual_downtime_s)
        self._info = None
        self._sample = None
        return obs

    def _observe(
        self, now: float, error: str = "", actual_downtime_s: float | None = None
    ) -> Observation:
        assert self._info is not None
        outgoing = self._info.direction is Direction.OUTGOING
        return Observation(
            info=self._info,
            now=now,
            phase=self._phase,
            limits=self._limits if outgoing else Limits(),
            sample=self._sample if outgoing else None,
            error_message=error,
            actual_downtime_s=actual_downtime_s,
            preflight=self.preflight if outgoing else None,
        )


def _running_phase(status: str, runstate: str, sample: JobSample | None) -> Phase:
    """QMP's own say first (post-copy, switch-over, the guest stopped by ``stop``), then the
    counters by the one rule every backend uses (``model.running_phase``)."""
    if status in POSTCOPY:
        return Phase.POSTCOPY
    if status in SWITCHOVER or runstate in ("finish-migrate", "paused"):
        # The final copy, or the guest stopped (``stop``, the pause control) so it
        # no longer dirties memory.
        return Phase.PAUSED
    if status == "setup" or sample is None:
        return Phase.SETUP
    return running_phase(sample)
