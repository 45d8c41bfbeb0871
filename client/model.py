"""The client's records: frozen values users work with instead of protobuf messages.

Nothing here does I/O or imports gRPC/protobuf; ``convert.py`` is the one place that
builds these from ``migwatch.v1`` messages.

Units: bytes and bytes per second as ``int``; durations as ``float`` seconds in
fields ending in ``_s``; instants as timezone-aware UTC ``datetime``. ``None`` means
"not known" (the contract leaves such fields unset, never zero).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, TypeAlias


class Phase(enum.Enum):
    """Where a migration is. Values mirror ``migwatch.v1.Phase``."""

    UNKNOWN = 0  # unset, or a phase newer than this client
    SETUP = 1  # the job exists; nothing sent yet
    DISK_MIRROR = 2  # non-shared storage: the block copy runs before memory
    PRECOPY = 3  # memory passes while the guest runs on the source
    POSTCOPY = 4  # the guest runs on the destination and pulls the rest
    PAUSED = 5  # the guest is paused on the source: switch-over or forced completion
    COMPLETED = 6  # final: the guest runs on the destination
    FAILED = 7  # final: the job failed; the guest stays on the source
    CANCELLED = 8  # final: aborted; the guest stays on the source

    @property
    def final(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED: nothing follows."""
        return self in _FINAL_PHASES


_FINAL_PHASES = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED})


class Direction(enum.Enum):
    """Which end of the migration the reporting agent is. Mirrors ``migwatch.v1.Direction``."""

    UNKNOWN = 0  # unset
    OUTGOING = 1  # the source: live progress
    INCOMING = 2  # the destination: state only


class Convergence(enum.Enum):
    """The verdict on whether pre-copy finishes by itself. Mirrors ``migwatch.v1.Convergence``."""

    UNKNOWN = 0  # not enough evidence yet, e.g. during the first memory pass
    CONVERGING = 1  # remaining memory falls pass over pass; ETA within budget
    SLOW = 2  # it will finish, later than the agent's budget
    STALLED = 3  # remaining memory at pass boundaries no longer falls
    NOT_CONVERGING = 4  # the guest dirties memory as fast as it is sent


class EtaBasis(enum.Enum):
    """What the ETA leaned on. Mirrors ``migwatch.v1.EtaBasis``."""

    UNKNOWN = 0  # no ETA
    DEFAULT = 1  # an assumed dirty rate: nothing measured yet
    PREFLIGHT = 2  # a pre-flight dirty-rate measurement of this guest
    LIVE = 3  # the migration's own measured rates


class Action(enum.Enum):
    """A remedy an operator can apply. Mirrors ``migwatch.v1.RecommendedAction``."""

    UNKNOWN = 0  # unset, or an action newer than this client
    RAISE_MAX_DOWNTIME = 1  # set_limits(max_downtime_s=recommendation.max_downtime_s)
    RAISE_BANDWIDTH = 2  # set_limits(max_bandwidth=recommendation.max_bandwidth)
    POST_COPY = 3  # force_complete on a post-copy-enabled migration
    PAUSE = 4  # force_complete without post-copy: the guest pauses until the copy ends
    ABORT = 5  # abort: nothing else will make it finish


class HostState(enum.Enum):
    """Health of an agent's link to its hypervisor. Mirrors ``migwatch.v1.HostState``."""

    UNKNOWN = 0  # unset
    OK = 1  # connected; updates flow
    DEGRADED = 2  # the hypervisor is unreachable; the agent reconnects, updates paused


class ForceCompleteMethod(enum.Enum):
    """How force_complete made the migration finish. Mirrors ``migwatch.v1.ForceCompleteMethod``."""

    UNKNOWN = 0  # unset
    POST_COPY = 1  # switched to post-copy
    PAUSE = 2  # paused the guest on the source


@dataclass(frozen=True, slots=True)
class Transfer:
    """Progress of one stream of bytes: memory or disk."""

    total_bytes: int = 0
    processed_bytes: int = 0  # re-sent pages count again: may end above total_bytes
    remaining_bytes: int = 0  # in the current pass; for memory a sawtooth
    bytes_per_second: int = 0
    fraction_done: float = 0.0  # 0..1, does not jump back at each pass


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One remedy with its predicted effect."""

    action: Action
    summary: str  # one sentence with numbers
    max_downtime_s: float | None = None  # for RAISE_MAX_DOWNTIME
    max_bandwidth: int | None = None  # bytes/s, for RAISE_BANDWIDTH
    predicted_eta_s: float | None = None


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration as one agent sees it (one *end*: see ``direction``)."""

    id: str  # unique on its agent, stable across the agent's restarts; opaque
    domain_uuid: str
    domain_name: str
    source_host: str
    destination_host: str
    direction: Direction
    phase: Phase
    memory: Transfer = Transfer()
    disk: Transfer = Transfer()
    dirty_rate_bytes_per_second: int = 0
    iteration: int = 0  # memory pass number; 0 before memory copy starts
    elapsed_s: float | None = None
    eta_s: float | None = None
    eta_low_s: float | None = None
    eta_high_s: float | None = None
    eta_basis: EtaBasis = EtaBasis.UNKNOWN
    convergence: Convergence = Convergence.UNKNOWN
    convergence_reason: str = ""
    recommendations: tuple[Recommendation, ...] = ()
    expected_downtime_s: float | None = None
    actual_downtime_s: float | None = None
    max_downtime_s: float | None = None
    max_bandwidth: int | None = None  # bytes/s; None: unlimited
    postcopy_allowed: bool = False
    auto_converge_throttle_percent: int = 0
    postcopy_requests: int = 0
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    error_message: str = ""
    sequence: int = 0  # per agent, increases with every published change
    agent_host: str = ""  # the hypervisor host whose agent reported this record
    backend: str = ""  # "libvirt", "simulated" or "replay"

    @property
    def final(self) -> bool:
        """True once the phase is COMPLETED, FAILED or CANCELLED."""
        return self.phase.final


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What an agent says about itself and its link to the hypervisor."""

    host: str  # the hypervisor host this agent watches
    backend: str
    state: HostState
    message: str = ""  # why the state is not OK
    version: str = ""


@dataclass(frozen=True, slots=True)
class SnapshotComplete:
    """End of a watch stream's initial snapshot."""

    migration_count: int
    sequence: int


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent by the agent when nothing changed for a heartbeat interval."""

    time: datetime | None
    sequence: int


WatchEvent: TypeAlias = Migration | SnapshotComplete | Heartbeat | AgentStatus
"""One event of a single agent's watch stream (``AgentClient.watch``)."""


@dataclass(frozen=True, slots=True)
class AgentState:
    """The fleet watcher's view of one agent.

    ``reachable`` is about the client's link to the agent; ``status`` is the agent's own
    report about its link to the hypervisor (``status.state``), as last received.
    """

    target: str  # "host:port" as given to the fleet
    reachable: bool = False
    synced: bool = False  # reachable, and the stream's snapshot has been applied
    status: AgentStatus | None = None
    error: str = ""  # why it is unreachable; "" while connecting for the first time
    since: float | None = None  # unix seconds of the last reachability change


@dataclass(frozen=True, slots=True)
class FleetMigration:
    """One migration joined from its two ends by ``domain_uuid``.

    ``source`` is the OUTGOING end (live progress), ``destination`` the INCOMING end
    (state only). Either may be missing when its agent is not watched. ``stale`` is
    true when an agent that reported an end is currently unreachable.
    """

    domain_uuid: str
    domain_name: str
    source_host: str
    destination_host: str
    source: Migration | None = None
    destination: Migration | None = None
    source_agent: str | None = None  # the target that reported ``source``
    destination_agent: str | None = None
    stale: bool = False

    @property
    def primary(self) -> Migration:
        """The end to read progress from: the source when known."""
        end = self.source or self.destination
        assert end is not None, "a fleet record always has at least one end"
        return end

    @property
    def id(self) -> str:
        """The id to act on (abort, force-complete, limits): the source end's id."""
        return self.primary.id

    @property
    def phase(self) -> Phase:
        """The source's phase; a final phase reported by either end wins."""
        for end in (self.source, self.destination):
            if end is not None and end.final:
                return end.phase
        return self.primary.phase

    @property
    def final(self) -> bool:
        """True once either end reports a final phase."""
        return self.phase.final

    @property
    def eta_s(self) -> float | None:
        """Time left, from the source's view; ``None`` while unknown."""
        return self.source.eta_s if self.source is not None else None

    @property
    def convergence(self) -> Convergence:
        """The source's verdict."""
        return self.source.convergence if self.source is not None else Convergence.UNKNOWN


@dataclass(frozen=True, slots=True)
class MigrationUpdate:
    """An end of a migration appeared or changed (``migration.final``: it ended)."""

    kind: ClassVar[str] = "migration"
    agent: str  # the "host:port" target that reported it
    migration: Migration
    record: FleetMigration  # the joined record after this update


@dataclass(frozen=True, slots=True)
class MigrationVanished:
    """An end the fleet tracked is gone from its agent with no final state seen.

    Happens when a migration ended while the client was disconnected and the agent
    no longer retains it (or the agent lost its state). ``migration`` is the last
    state seen.
    """

    kind: ClassVar[str] = "vanished"
    agent: str
    migration: Migration


@dataclass(frozen=True, slots=True)
class AgentUpdate:
    """An agent's reachability, sync state or self-reported status changed."""

    kind: ClassVar[str] = "agent status"
    agent: str
    state: AgentState


@dataclass(frozen=True, slots=True)
class MigrationEstimate:
    """A migration predicted before it starts (``EstimateMigration``)."""

    domain_uuid: str
    domain_name: str
    duration_s: float | None  # None: it will not converge (or cannot be known)
    duration_low_s: float | None
    duration_high_s: float | None
    convergence: Convergence
    reason: str
    recommendations: tuple[Recommendation, ...]
    memory_bytes: int
    disk_bytes: int
    bandwidth: int  # bytes/s assumed
    max_downtime_s: float | None
    dirty_rate_bytes_per_second: int  # 0: not measured
    hot_set_bytes: int  # 0: not known
    measured_at: datetime | None  # when the guest's dirty rate was measured
    measurement_age_s: float | None
    basis: EtaBasis


@dataclass(frozen=True, slots=True)
class EvacuationEntry:
    """One guest of an evacuation plan: planned, in flight, or left out (``EstimateEvacuation``)."""

    domain_uuid: str
    domain_name: str
    in_flight: bool  # already migrating away: duration is its live ETA
    planned: bool  # False: it would not converge, and is left out of the total
    order: int  # start position from 1; 0 when in flight or left out
    start_offset_s: float | None  # from now; None when left out
    duration_s: float | None  # None: it would not finish
    duration_low_s: float | None
    duration_high_s: float | None  # None with a duration: open above
    convergence: Convergence
    reason: str
    recommendations: tuple[Recommendation, ...]
    basis: EtaBasis
    measurement_age_s: float | None  # None: never measured, or in flight
    bandwidth: int  # bytes/s assumed
    post_copy_applied: bool  # planned as switched to post-copy


@dataclass(frozen=True, slots=True)
class EvacuationEstimate:
    """How long until a host is empty (``EstimateEvacuation``)."""

    host: str
    total_s: float | None  # until every planned guest and migration in flight has left
    total_low_s: float | None
    total_high_s: float | None  # None with a total: open above
    empties: bool  # False: the guests in ``blocking_domains`` stay until remedied
    entries: tuple[EvacuationEntry, ...]  # in flight, planned in start order, left out
    order: tuple[str, ...]  # names, in start order
    blocking_domains: tuple[str, ...]
    unmeasured_domains: tuple[str, ...]
    oldest_measurement_age_s: float | None
    newest_measurement_age_s: float | None
    concurrency: int
    link_bandwidth: int  # 0: not shared
    order_given: bool
    band_method: str


Update: TypeAlias = MigrationUpdate | MigrationVanished | AgentUpdate
"""One item of the fleet's merged stream; ``update.kind`` names its type."""


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """The fleet at one moment, queryable. ``migrations`` holds the active ones, worst
    first (see ``merge.severity_key``); ``finished`` the recently finished ones, newest
    first."""

    agents: tuple[AgentState, ...]
    migrations: tuple[FleetMigration, ...]
    finished: tuple[FleetMigration, ...] = ()

    def not_converging(self) -> tuple[FleetMigration, ...]:
        """Active migrations judged STALLED or NOT_CONVERGING, worst first."""
        bad = (Convergence.STALLED, Convergence.NOT_CONVERGING)
        return tuple(m for m in self.migrations if m.convergence in bad)

    def by_domain(self, domain: str) -> tuple[FleetMigration, ...]:
        """Active and recently finished migrations of a domain, by UUID or name."""
        return tuple(
            m for m in self.migrations + self.finished if domain in (m.domain_uuid, m.domain_name)
        )

    def unreachable(self) -> tuple[AgentState, ...]:
        """Agents the client cannot reach right now (including never reached)."""
        return tuple(a for a in self.agents if not a.reachable)
