"""The seam between hypervisor backends and the rest of the agent.

A backend (libvirt, simulated, replay) watches the jobs on its host and reports
each thing it learns as an ``Observation`` to a sink; it never computes ETAs or
verdicts itself. The ``Tracker`` turns observations into published ``Migration``
records, so every backend gets the same estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from migwatch.agent.model import (
    Direction,
    DomainFacts,
    HostState,
    JobSample,
    Limits,
    Phase,
    Preflight,
)


@dataclass(frozen=True, slots=True)
class MigrationInfo:
    """What identifies one end of one migration."""

    domain_uuid: str
    domain_name: str
    source_host: str
    destination_host: str
    direction: Direction
    started_at: float  # unix seconds; with uuid and direction it makes the id
    memory_bytes: int | None = None  # guest RAM, known before memory copy starts
    # The source QEMU's resident memory (virDomainMemoryStats `rss`) when the job was
    # found: bounds the guest's non-zero RAM; None = unknown.
    resident_bytes: int | None = None
    # The guest's own count of its free memory (balloon statistics ``unused``) read with it:
    # bounds the never-written (zero) RAM from above; None = the guest does not report it.
    free_bytes: int | None = None
    # The host's QEMU overhead in rss (not guest RAM), learned from its completed
    # migrations (``overhead.ResidentOverhead``); None: use the configured value.
    resident_overhead_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing a backend learned about a migration at wall time ``now``."""

    info: MigrationInfo
    now: float  # unix seconds
    phase: Phase
    limits: Limits = field(default_factory=Limits)
    sample: JobSample | None = None  # source job stats; None on the destination
    error_message: str = ""
    actual_downtime_s: float | None = None  # set with the final state when known
    preflight: Preflight | None = None  # the guest's latest pre-flight measurement


@dataclass(frozen=True, slots=True)
class Ending:
    """The outcome of a migration that ended while no agent watched it."""

    phase: Phase  # COMPLETED, FAILED or CANCELLED
    error_message: str = ""
    actual_downtime_s: float | None = None


ObservationSink = Callable[[Observation], None]
StatusSink = Callable[[HostState, str], None]


class Backend(Protocol):
    """A source of migrations for one host. Controls are keyed by domain UUID and
    direction is implied: only outgoing migrations can be controlled."""

    @property
    def name(self) -> str:
        """ "libvirt", "qmp", "simulated" or "replay"."""
        ...

    @property
    def host(self) -> str:
        """The hypervisor host name this backend reports as."""
        ...

    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        """Watch the host until cancelled, reporting through the two sinks."""
        ...

    async def abort(self, domain_uuid: str) -> None:
        """Cancel the outgoing migration of this domain."""
        ...

    async def force_complete(self, domain_uuid: str) -> bool:
        """Make the migration finish; return True if by post-copy, False if by pausing."""
        ...

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        """Apply new limits; ``None`` leaves a limit as it is."""
        ...

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        """How a migration that was in flight when the previous agent stopped ended, or
        None while it still runs (the backend will find it again)."""
        ...

    async def describe(self, domain: str) -> DomainFacts:
        """What a prediction needs of a running domain, by UUID or name; raises
        MigrationGone when there is no such running domain."""
        ...

    async def guests(self) -> tuple[str, ...]:
        """UUIDs of the guests running on this host that an evacuation would move: the
        idle ones and the sources of outgoing migrations, never an incoming end."""
        ...

    async def close(self) -> None:
        """Release hypervisor connections. Called once, after ``run`` ended."""
        ...
