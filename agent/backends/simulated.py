"""A simulated hypervisor: pre-copy migrations with libvirt-shaped numbers.

The embedded default behind ``make run`` and the load generator for scale
tests; never evidence that the libvirt path works. Every record it produces
says so: its hosts are named ``sim-...`` and its backend is "simulated".

The model (``SimulatedMigration``, pure, stepped by the caller) follows what
NOTES.md records of QEMU: an optional disk mirror first with memory counters at
zero; pass 1 sends all of RAM, never-written pages as cheap zero pages; each
later pass re-sends the distinct pages dirtied during the previous one, which
saturate at the hot set; ``memory_remaining`` falls within a pass and jumps up
at the next; ``memory_processed`` counts re-sends so it ends above the total;
the dirty rate is reported per pass, in pages/s, as the distinct pages dirtied
(a lower bound of the guest's write rate); switch-over happens once what is
left fits in max downtime at the bandwidth.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from migwatch.agent.backends.protocol import (
    Ending,
    MigrationInfo,
    Observation,
    ObservationSink,
    StatusSink,
)
from migwatch.agent.errors import ControlRefused, MigrationGone
from migwatch.agent.model import (
    MIB,
    Direction,
    DomainFacts,
    HostState,
    JobSample,
    Limits,
    Phase,
    Preflight,
)

log = logging.getLogger(__name__)

PAGE = 4096
_STEP_S = 0.05  # simulation resolution, in simulated seconds
_ZERO_PAGE_COST = 1 / 32  # a zero page costs ~1/32 of a normal page on the wire
_SETUP_S = 0.25  # libvirt's job shows all-zero counters for its first ~0.25 s
_SWITCHOVER_S = 0.03  # observed actual downtimes were 12-39 ms


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """A simulated guest and how it is migrated. Sizes in MiB, rates in MiB/s."""

    name: str
    ram_mib: int
    fill_mib: int  # non-zero at start; the rest goes as zero pages in pass 1
    hot_mib: int  # the set the guest keeps rewriting
    dirty_mib_s: float
    bandwidth_mib_s: float
    disk_mib: int = 0  # non-shared storage to mirror first; 0: shared storage
    disk_write_mib_s: float = 0.0
    postcopy_allowed: bool = False
    max_downtime_s: float = 0.3


CATALOG: dict[str, GuestSpec] = {
    # Converges by itself after a handful of passes.
    "converging": GuestSpec("converging", 2048, 1536, 512, 30, 120),
    # Converges, but a 16 GiB guest at 25 MiB/s takes longer than the default budget.
    "slow": GuestSpec("slow", 16384, 12288, 256, 4, 25),
    # Dirties 150 MiB/s against 100 MiB/s: never switches over by itself.
    "not-converging": GuestSpec(
        "not-converging", 4096, 3072, 1024, 150, 100, postcopy_allowed=True
    ),
    # Non-shared storage: a 2 GiB disk mirrored before memory.
    "disk": GuestSpec("disk", 1024, 768, 128, 10, 80, disk_mib=2048, disk_write_mib_s=4),
    # Small and quick; handy for tests and load.
    "quick": GuestSpec("quick", 256, 192, 32, 5, 200),
}


class SimulatedMigration:
    """One pre-copy migration. Pure: ``step`` advances it by simulated seconds."""

    def __init__(self, spec: GuestSpec) -> None:
        self.spec = spec
        self.limits = Limits(
            max_downtime_s=spec.max_downtime_s,
            max_bandwidth_bps=int(spec.bandwidth_mib_s * MIB),
            postcopy_allowed=spec.postcopy_allowed,
        )
        self.phase = Phase.SETUP
        self.elapsed = 0.0
        self.iteration = 0
        self.memory_total = spec.ram_mib * MIB + MIB // 2  # libvirt adds 0.5 MiB
        self.processed = 0.0
        self.remaining = 0.0
        self.zero_left = 0.0  # zero-page bytes still in pass 1's remaining
        self.dirty = 0.0  # distinct bytes dirtied since the current pass began
        self.pass_started = 0.0
        self.dirty_pages_per_s = 0
        self.paused = False
        self.disk_total = spec.disk_mib * MIB
        self.disk_processed = 0.0
        self.disk_remaining = float(self.disk_total)
        self.postcopy_requests = 0
        self.actual_downtime_s: float | None = None
        self._switchover_left = 0.0

    @property
    def bandwidth(self) -> float:
        return float(self.limits.max_bandwidth_bps or 10_000 * MIB)

    @property
    def write_rate(self) -> float:
        return 0.0 if self.paused or self.phase is Phase.POSTCOPY else self.spec.dirty_mib_s * MIB

    def step(self, seconds: float) -> None:
        steps = max(1, round(seconds / _STEP_S))
        for _ in range(steps):
            if self.phase.terminal:
                return
            self._tick(seconds / steps)

    def _tick(self, dt: float) -> None:
        self.elapsed += dt
        if self.phase is Phase.SETUP:
            if self.elapsed >= _SETUP_S:
                if self.disk_total:
                    self.phase = Phase.DISK_MIRROR
                else:
                    self._start_memory()
        elif self.phase is Phase.DISK_MIRROR:
            self._tick_disk(dt)
        elif self.phase is Phase.PAUSED and self._switchover_left > 0:
            self._switchover_left -= dt
            if self._switchover_left <= 0:
                self.processed += self.remaining
                self.remaining = 0.0
                self.phase = Phase.COMPLETED
        elif self.phase is Phase.POSTCOPY:
            sent = min(self.remaining, self.bandwidth * dt)
            self.remaining -= sent
            self.processed += sent
            self.postcopy_requests += int(sent / PAGE / 50)
            if self.remaining <= 0:
                self.phase = Phase.COMPLETED
        else:
            self._tick_memory(dt)

    def _tick_disk(self, dt: float) -> None:
        written = self.spec.disk_write_mib_s * MIB * dt
        copied_share = self.disk_processed / max(1.0, self.disk_total)
        self.disk_total += int(written * copied_share)  # rewrites of copied blocks go again
        self.disk_remaining += written * copied_share
        sent = min(self.disk_remaining, self.bandwidth * dt)
        self.disk_remaining -= sent
        self.disk_processed += sent
        if self.disk_remaining <= self.bandwidth * 0.5:
            # In sync: the rest is mirrored synchronously alongside memory.
            self.disk_processed += self.disk_remaining
            self.disk_remaining = 0.0
            self._start_memory()

    def _start_memory(self) -> None:
        self.phase = Phase.PAUSED if self.paused else Phase.PRECOPY
        self.iteration = 1
        self.remaining = float(self.memory_total)
        self.zero_left = float((self.spec.ram_mib - self.spec.fill_mib) * MIB)
        self.pass_started = self.elapsed
        self.dirty = 0.0

    def _tick_memory(self, dt: float) -> None:
        budget = self.bandwidth * dt  # wire bytes this tick
        # Zero pages cost little on the wire, so pass 1 drains them fast.
        zero_share = self.zero_left / self.remaining if self.remaining > 0 else 0.0
        cost_per_byte = (1 - zero_share) + zero_share * _ZERO_PAGE_COST
        drained = min(self.remaining, budget / cost_per_byte)
        self.zero_left = max(0.0, self.zero_left - drained * zero_share)
        self.remaining -= drained
        self.processed += drained * cost_per_byte
        hot = self.spec.hot_mib * MIB
        self.dirty = min(hot, self.dirty + self.write_rate * dt)
        if self.spec.disk_mib:
            written = self.spec.disk_write_mib_s * MIB * dt
            self.disk_total += int(written)
            self.disk_processed += written
        if self.remaining > 0:
            return
        pass_time = max(1e-6, self.elapsed - self.pass_started)
        self.dirty_pages_per_s = int(self.dirty / pass_time / PAGE)
        if self.dirty / self.bandwidth <= self.limits.max_downtime_s:
            self.phase = Phase.PAUSED
            self.remaining = self.dirty
            # The final stop-and-copy is not rate-limited (NOTES.md).
            self._switchover_left = _SWITCHOVER_S
            self.actual_downtime_s = _SWITCHOVER_S + self.dirty / (1000 * MIB)
            self.iteration += 1
            return
        self.iteration += 1
        self.remaining = self.dirty
        self.dirty = 0.0
        self.pass_started = self.elapsed

    def sample(self) -> JobSample:
        in_memory = self.iteration > 0
        expected_ms: int | None
        if self.iteration <= 1:
            expected_ms = int(self.limits.max_downtime_s * 1000)
        else:
            expected_ms = int(self.remaining / self.bandwidth * 1000)
        return JobSample(
            elapsed_s=self.elapsed,
            memory_total=self.memory_total if in_memory else 0,
            memory_processed=int(self.processed),
            memory_remaining=int(self.remaining),
            memory_bps=int(self.bandwidth) if in_memory else 0,
            dirty_pages_per_s=self.dirty_pages_per_s,
            iteration=self.iteration,
            disk_total=int(self.disk_total),
            disk_processed=int(self.disk_processed),
            disk_remaining=int(self.disk_remaining),
            expected_downtime_ms=expected_ms,
            postcopy_requests=self.postcopy_requests,
        )

    # -- controls ------------------------------------------------------------------
    def abort(self) -> None:
        self.phase = Phase.CANCELLED

    def force_complete(self) -> bool:
        if self.limits.postcopy_allowed and self.iteration >= 1:
            self.phase = Phase.POSTCOPY
            self.iteration += 1
            self.dirty = 0.0
            return True
        self.paused = True
        if self.phase is Phase.PRECOPY:
            self.phase = Phase.PAUSED
        return False

    def set_limits(self, max_downtime_s: float | None, max_bandwidth_bps: int | None) -> None:
        self.limits = replace(
            self.limits,
            max_downtime_s=self.limits.max_downtime_s if max_downtime_s is None else max_downtime_s,
            max_bandwidth_bps=(
                self.limits.max_bandwidth_bps if max_bandwidth_bps is None else max_bandwidth_bps
            ),
        )


def _facts(
    spec: GuestSpec, domain_uuid: str, name: str, now: float, migrating: bool = False
) -> DomainFacts:
    # What page sampling would read: distinct pages written in P seconds, which
    # level off at the hot set (NOTES.md).
    rates = {p: min(spec.dirty_mib_s * p, spec.hot_mib) / p for p in (1.0, 2.0, 4.0, 8.0, 16.0)}
    return DomainFacts(
        domain_uuid=domain_uuid,
        domain_name=name,
        memory_bytes=spec.ram_mib * MIB,
        disk_bytes=spec.disk_mib * MIB,
        limits=Limits(
            max_downtime_s=spec.max_downtime_s,
            max_bandwidth_bps=int(spec.bandwidth_mib_s * MIB),
            postcopy_allowed=spec.postcopy_allowed,
        ),
        preflight=Preflight(measured_at=now - 30.0, rates=rates),
        migrating=migrating,
    )


def expand_scenarios(names: tuple[str, ...]) -> list[GuestSpec]:
    """``("converging", "quick*3")`` -> specs; raises ValueError naming a bad entry."""
    specs: list[GuestSpec] = []
    for entry in names:
        name, _, count = entry.partition("*")
        if name not in CATALOG:
            raise ValueError(
                f"unknown simulated scenario {name!r}: choose from {', '.join(CATALOG)}"
            )
        if count and not count.isdigit():
            raise ValueError(f"scenario {entry!r}: the count after '*' must be a number")
        specs.extend([CATALOG[name]] * (int(count) if count else 1))
    return specs


@dataclass(slots=True)
class _Running:
    info: MigrationInfo
    sim: SimulatedMigration
    slot: int  # the scenario slot it restarts in; -1 for an idle guest sent away by migrate()


def idle_guests(scenarios: tuple[str, ...]) -> dict[str, tuple[str, GuestSpec]]:
    """UUID -> (name, spec) of the idle guests a simulated host offers: ``sim-<scenario>``,
    numbered from the second of a kind (``sim-quick``, ``sim-quick-2``)."""
    guests: dict[str, tuple[str, GuestSpec]] = {}
    seen: dict[str, int] = {}
    for spec in expand_scenarios(scenarios):
        seen[spec.name] = seen.get(spec.name, 0) + 1
        name = f"sim-{spec.name}" + (f"-{seen[spec.name]}" if seen[spec.name] > 1 else "")
        guests[str(uuid.uuid5(uuid.NAMESPACE_DNS, name))] = (name, spec)
    return guests


class SimulatedBackend:
    """Runs the catalog's scenarios, restarting each a while after it ends."""

    def __init__(
        self,
        scenarios: tuple[str, ...],
        *,
        host: str = "sim-host-a",
        destination: str = "sim-host-b",
        interval_s: float = 0.5,
        speed: float = 1.0,
        repeat: bool = True,
        restart_after_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        idle: tuple[str, ...] = tuple(CATALOG),
        drain: int = 0,
    ) -> None:
        self._specs = expand_scenarios(scenarios)
        # Guests that sit on the host without a job until ``migrate`` sends them away:
        # what EstimateMigration and EstimateEvacuation predict.
        self._idle = idle_guests(idle)
        # With drain=N the host drains itself, N idle guests at a time, each sent once (an
        # aborted one stays): a drain for `migwatch drain-progress` to follow.
        self._drain = drain
        self._drained: set[str] = set()
        self._host = host
        self._destination = destination
        self._interval = interval_s
        self._speed = speed
        self._repeat = repeat
        self._restart_after = restart_after_s
        self._clock = clock
        self._running: dict[str, _Running] = {}
        self._observe: ObservationSink | None = None
        self._serial = itertools.count(1)

    @property
    def name(self) -> str:
        return "simulated"

    @property
    def host(self) -> str:
        return self._host

    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._observe = observe
        status(HostState.OK, "")
        restart_at: dict[int, float] = {}
        for slot, spec in enumerate(self._specs):
            self._start(slot, spec)
        while True:
            await asyncio.sleep(self._interval)
            now = self._clock()
            for key, run in list(self._running.items()):
                run.sim.step(self._interval * self._speed)
                self._emit(run)
                if run.sim.phase.terminal:
                    del self._running[key]
                    if run.slot < 0:
                        if run.sim.phase is not Phase.COMPLETED:  # it stays on the host
                            self._idle[key] = (run.info.domain_name, run.sim.spec)
                    elif self._repeat and not self._drain:  # a draining host takes no new work
                        restart_at[run.slot] = now + self._restart_after / self._speed
            for slot, when in list(restart_at.items()):
                if when <= now:
                    del restart_at[slot]
                    self._start(slot, self._specs[slot])
            self._drain_more()

    def _drain_more(self) -> None:
        moving = sum(1 for r in self._running.values() if r.slot < 0)
        for domain_uuid in [u for u in self._idle if u not in self._drained]:
            if moving >= self._drain:
                return
            self._drained.add(domain_uuid)
            self.migrate(domain_uuid)
            moving += 1

    def _start(self, slot: int, spec: GuestSpec, domain: tuple[str, str] | None = None) -> None:
        domain_uuid, name = domain or (str(uuid.uuid4()), f"sim-{spec.name}-{next(self._serial)}")
        info = MigrationInfo(
            domain_uuid=domain_uuid,
            domain_name=name,
            source_host=self._host,
            destination_host=self._destination,
            direction=Direction.OUTGOING,
            started_at=self._clock(),
            memory_bytes=spec.ram_mib * MIB,
        )
        run = _Running(info, SimulatedMigration(spec), slot)
        self._running[info.domain_uuid] = run
        self._emit(run)

    def _emit(self, run: _Running) -> None:
        assert self._observe is not None
        sim = run.sim
        self._observe(
            Observation(
                info=run.info,
                now=self._clock(),
                phase=sim.phase,
                limits=sim.limits,
                sample=sim.sample() if sim.phase is not Phase.CANCELLED else None,
                actual_downtime_s=sim.actual_downtime_s if sim.phase is Phase.COMPLETED else None,
                # As the libvirt backend's background measurement would have read it.
                preflight=_facts(sim.spec, "", "", run.info.started_at).preflight,
            )
        )

    def _find(self, domain_uuid: str) -> _Running:
        run = self._running.get(domain_uuid)
        if run is None or run.sim.phase.terminal:
            raise MigrationGone(f"domain {domain_uuid} has no migration running on {self._host}")
        return run

    async def abort(self, domain_uuid: str) -> None:
        run = self._find(domain_uuid)
        run.sim.abort()
        self._emit(run)  # the run loop drops it, and restarts its slot later

    async def force_complete(self, domain_uuid: str) -> bool:
        run = self._find(domain_uuid)
        if run.sim.phase in (Phase.POSTCOPY, Phase.PAUSED):
            raise ControlRefused(
                f"migration of {run.info.domain_name} is already {run.sim.phase.name.lower()}"
            )
        by_postcopy = run.sim.force_complete()
        self._emit(run)
        return by_postcopy

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        run = self._find(domain_uuid)
        run.sim.set_limits(max_downtime_s, max_bandwidth_bps)
        self._emit(run)

    def migrate(self, domain: str) -> str:
        """Start migrating the idle guest ``domain`` (UUID or name) away; returns its UUID.

        Not part of the ``Backend`` seam (migwatch observes migrations, it does not start
        them): this is the simulated host's stand-in for nova draining it. A guest whose
        migration completes has left the host; one aborted or failed stays idle.
        """
        if self._observe is None:
            raise ControlRefused("the simulated host is not running yet")
        for domain_uuid, (name, spec) in self._idle.items():
            if domain in (domain_uuid, name):
                del self._idle[domain_uuid]
                self._start(-1, spec, (domain_uuid, name))
                return domain_uuid
        raise MigrationGone(f"no idle simulated guest {domain!r} on {self._host}")

    async def guests(self) -> tuple[str, ...]:
        migrating = (k for k, r in self._running.items() if not r.sim.phase.terminal)
        return (*migrating, *self._idle)

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending:
        # Nothing of a simulated or replayed migration outlives its agent.
        return Ending(Phase.FAILED, f"the {self.name} migration ended with the previous agent")

    async def describe(self, domain: str) -> DomainFacts:
        """A migrating simulated guest, or an idle one (``sim-<scenario>``)."""
        for run in self._running.values():
            if domain in (run.info.domain_uuid, run.info.domain_name):
                return _facts(run.sim.spec, run.info.domain_uuid, run.info.domain_name,
                              self._clock(), migrating=True)  # fmt: skip
        for domain_uuid, (name, spec) in self._idle.items():
            if domain in (domain_uuid, name):
                return _facts(spec, domain_uuid, name, self._clock())
        raise MigrationGone(
            f"no simulated domain {domain!r} on {self._host}: give a migrating one's name or"
            " UUID, or an idle one: " + (", ".join(n for n, _ in self._idle.values()) or "none")
        )

    async def close(self) -> None:
        self._running.clear()
