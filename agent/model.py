"""The agent's records: plain frozen values shared by every layer (the bottom one).

Records that cross the backend seam live here, with the model, not behind the estimator
(``DomainFacts`` for predictions, ``Prediction``), as do the two translations every layer
needs: ``MIB`` and ``running_phase``. Nothing here does I/O. The gRPC messages are built
from these in ``core/convert.py``;
libvirt's job-stats dicts are turned into ``JobSample`` in ``backends/jobstats.py`` (the one
place that knows libvirt's key names).

Units: bytes, bytes per second and seconds everywhere, as floats where a value is
derived and ints where libvirt counts. ``None`` means "not known", never zero.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

#: Bytes in a mebibyte: libvirt's MiB/s limits, QEMU's dirty-rate readings, and our messages.
MIB = 1 << 20


class Phase(enum.Enum):
    """Where a migration is. Mirrors ``migwatch.v1.Phase``."""

    SETUP = 1  # job exists, nothing sent yet
    DISK_MIRROR = 2  # non-shared storage: the block copy runs before memory
    PRECOPY = 3  # memory passes while the guest runs on the source
    POSTCOPY = 4  # guest runs on the destination, pulling the rest
    PAUSED = 5  # guest paused on the source: switch-over or forced completion
    COMPLETED = 6  # terminal: guest runs on the destination
    FAILED = 7  # terminal: the job failed; guest runs on the source
    CANCELLED = 8  # terminal: aborted; guest runs on the source

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)


class Direction(enum.Enum):
    """Which end of the migration this agent sees. Mirrors ``migwatch.v1.Direction``."""

    OUTGOING = 1  # this host is the source: live job stats
    INCOMING = 2  # this host is the destination: state only


class Convergence(enum.Enum):
    """The verdict on whether pre-copy will finish. Mirrors ``migwatch.v1.Convergence``."""

    UNKNOWN = 0  # not enough evidence yet (first pass, or no job stats)
    CONVERGING = 1  # remaining falls pass over pass; will finish within budget
    SLOW = 2  # will finish, but later than the configured budget
    STALLED = 3  # remaining no longer falls between passes
    NOT_CONVERGING = 4  # dirtying keeps pace with the bandwidth


class Action(enum.Enum):
    """A remedy an operator can apply. Mirrors ``migwatch.v1.RecommendedAction``."""

    RAISE_MAX_DOWNTIME = 1
    RAISE_BANDWIDTH = 2
    POST_COPY = 3
    PAUSE = 4
    ABORT = 5


class EtaBasis(enum.Enum):
    """What the ETA leaned on. Mirrors ``migwatch.v1.EtaBasis``."""

    UNKNOWN = 0  # no ETA
    DEFAULT = 1  # assumed dirty rate (first pass, nothing measured)
    PREFLIGHT = 2  # a pre-flight dirty-rate measurement of this guest
    LIVE = 3  # the migration's own measured rates


class HostState(enum.Enum):
    """Health of the agent's link to its hypervisor. Mirrors ``migwatch.v1.HostState``."""

    OK = 1
    DEGRADED = 2  # hypervisor unreachable; reconnecting, updates paused


@dataclass(frozen=True, slots=True)
class JobSample:
    """One normalised sample of a migration job's statistics (source side).

    ``elapsed_s`` is the job's own clock (libvirt ``time_elapsed``), so estimates
    computed from a recorded trace line up with the live ones.
    """

    elapsed_s: float
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    memory_bps: int = 0  # hypervisor-measured transfer rate; 0 while unknown
    dirty_pages_per_s: int = 0  # distinct pages dirtied per second during the last pass
    page_size: int = 4096
    iteration: int = 0  # memory pass number; 0 before memory starts
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    expected_downtime_ms: int | None = None  # QEMU's prediction while running
    postcopy_requests: int = 0
    auto_converge_throttle: int | None = None  # percent, when auto-converge is on

    @property
    def dirty_bytes_per_s(self) -> int:
        return self.dirty_pages_per_s * self.page_size


def running_phase(sample: JobSample, held: Phase | None = None) -> Phase:
    """The phase a running job's sample shows: SETUP, DISK_MIRROR (storage copy before the
    first memory pass) or PRECOPY. ``held`` is POSTCOPY or PAUSED when an event or a control
    said so: the counters cannot show those, so a sample never moves the phase out of them."""
    if held in (Phase.POSTCOPY, Phase.PAUSED):
        return held
    if sample.iteration == 0:
        return Phase.DISK_MIRROR if sample.disk_total > 0 else Phase.SETUP
    return Phase.PRECOPY


@dataclass(frozen=True, slots=True)
class Limits:
    """The migration's tunables in force when a sample was taken."""

    max_downtime_s: float = 0.3  # libvirt/QEMU default
    max_bandwidth_bps: int | None = None  # None: unlimited
    postcopy_allowed: bool = False  # started with the post-copy flag
    postcopy_bandwidth_bps: int | None = None  # `bandwidth.postcopy`; None: same as pre-copy
    # The auto-converge capability is on: declared by the host's migration policy
    # (``--migration-policy auto-converge``) or read by a backend that can (QMP); libvirt's
    # job stats say it only once a throttle is reported (``JobSample.auto_converge_throttle``).
    auto_converge: bool = False


@dataclass(frozen=True, slots=True)
class MigrationPolicy:
    """What the control plane permits for migrations from this host (``--migration-policy``),
    as nova's ``live_migration_permit_auto_converge`` / ``live_migration_permit_post_copy``:
    the job statistics do not say which flags a migration was started with (libvirt shows
    auto-converge only once QEMU throttles), so the host declares them."""

    auto_converge: bool = False  # migrations are started with VIR_MIGRATE_AUTO_CONVERGE
    post_copy: bool = False  # ... with VIR_MIGRATE_POSTCOPY (post-copy may be switched to)

    def apply(self, limits: Limits) -> Limits:
        """``limits`` with what this policy declares (never takes away what the backend saw)."""
        if not (self.auto_converge and not limits.auto_converge) and not (
            self.post_copy and not limits.postcopy_allowed
        ):
            return limits
        return replace(
            limits,
            auto_converge=limits.auto_converge or self.auto_converge,
            postcopy_allowed=limits.postcopy_allowed or self.post_copy,
        )


@dataclass(frozen=True, slots=True)
class Preflight:
    """A dirty-rate measurement taken before the migration (issue 6).

    ``rates`` maps a sampling period in seconds to the measured MiB/s.
    """

    measured_at: float  # unix seconds
    rates: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One remedy and what it is predicted to do."""

    action: Action
    summary: str  # one sentence with numbers
    max_downtime_s: float | None = None
    max_bandwidth_bps: int | None = None
    predicted_eta_s: float | None = None


@dataclass(frozen=True, slots=True)
class Estimate:
    """What the estimator derives from a migration's samples. All optional values are
    ``None`` while they cannot be known."""

    transfer_rate_bps: float | None = None  # smoothed
    dirty_rate_bps: float | None = None  # best estimate of the guest's write rate
    eta_s: float | None = None
    eta_low_s: float | None = None
    eta_high_s: float | None = None
    # Bytes still to send, re-sends included: drives an honest ``fraction_done``.
    projected_remaining_bytes: float | None = None
    convergence: Convergence = Convergence.UNKNOWN
    reason: str = ""
    recommendations: tuple[Recommendation, ...] = ()
    basis: EtaBasis = EtaBasis.UNKNOWN


@dataclass(frozen=True, slots=True)
class Transfer:
    """Progress of one stream of bytes (memory or disk)."""

    total_bytes: int = 0
    processed_bytes: int = 0
    remaining_bytes: int = 0
    bytes_per_second: int = 0
    fraction_done: float = 0.0


@dataclass(frozen=True, slots=True)
class Migration:
    """The published state of one migration, as one agent sees it."""

    id: str
    domain_uuid: str
    domain_name: str
    source_host: str
    destination_host: str
    direction: Direction
    phase: Phase
    backend: str  # "libvirt", "qmp", "simulated", "replay"
    agent_host: str  # the host whose agent reports this record
    memory: Transfer = Transfer()
    disk: Transfer = Transfer()
    dirty_rate_bps: int = 0
    iteration: int = 0
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
    limits: Limits = Limits()
    started_at: float | None = None  # unix seconds
    updated_at: float | None = None
    finished_at: float | None = None
    error_message: str = ""
    auto_converge_throttle: int | None = None
    postcopy_requests: int = 0
    sequence: int = 0  # assigned by the hub on publication


@dataclass(frozen=True, slots=True)
class DomainFacts:
    """What a backend knows of a running guest, for a prediction (``Backend.describe``)."""

    domain_uuid: str
    domain_name: str
    memory_bytes: int
    disk_bytes: int  # capacity of the disks a storage copy would mirror
    limits: Limits  # the domain's current migration limits
    preflight: Preflight | None  # latest background measurement, if any
    migrating: bool = False
    resident_bytes: int | None = None  # the guest QEMU's `rss` (memoryStats), if known
    free_bytes: int | None = None  # the guest's free memory (balloon stats' `unused`), if known
    resident_overhead_bytes: int | None = None  # learned on this host (backend.MigrationInfo)
    # Seconds a migration goes on after its job's clock (teardown), learned on this host.
    migration_overhead_s: float | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """A migration predicted before it starts (``estimate.prediction.predict_migration``)."""

    estimate: Estimate
    dirty_rate_bps: float | None
    hot_set_bytes: float | None
