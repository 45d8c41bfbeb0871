"""Turns backend observations into published ``Migration`` records.

Pure state: no I/O, no clock (time arrives in each ``Observation``). One track
per (domain, direction) while the migration is active; a terminal observation
closes the track, and later terminal observations for it are ignored so a final
state is published exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from migwatch.agent.backends.protocol import MigrationInfo, Observation
from migwatch.agent.estimate.estimator import EstimatorConfig, MigrationEstimator
from migwatch.agent.estimate.etaconfig import with_overhead
from migwatch.agent.model import (
    Direction,
    Estimate,
    JobSample,
    Migration,
    MigrationPolicy,
    Phase,
    Transfer,
)

_DIRECTION_TAG = {Direction.OUTGOING: "out", Direction.INCOMING: "in"}


def migration_id(info: MigrationInfo) -> str:
    """A stable id: domain UUID, direction and the job's start in unix milliseconds."""
    return f"{info.domain_uuid}.{_DIRECTION_TAG[info.direction]}.{int(info.started_at * 1000)}"


def track_key(info: MigrationInfo) -> str:
    """The key of a migration in flight, as the store keeps it."""
    return f"{info.domain_uuid}.{_DIRECTION_TAG[info.direction]}"


# A job found again after a restart has a start time derived from the clock and
# the job's elapsed time: the same job within this much is the same migration.
_SAME_START_S = 5.0


@dataclass(slots=True)
class _Track:
    id: str
    info: MigrationInfo
    estimator: MigrationEstimator
    last_sample: JobSample | None = None
    estimate: Estimate = field(default_factory=Estimate)
    disk_rate_bps: float = 0.0


class Tracker:
    """Keeps one estimator per active migration and builds its public record."""

    def __init__(
        self,
        host: Callable[[], str],
        backend: str,
        config: EstimatorConfig | None = None,
        known: dict[str, tuple[str, float]] | None = None,
        policy: MigrationPolicy | None = None,
    ) -> None:
        """``known``: ids of migrations in flight before a restart (``store.active()``),
        reused for the same jobs when they are found again. ``policy``: what the control
        plane permits (``--migration-policy``), applied to every migration's limits here,
        the one place, before the estimator and the record see them."""
        self._policy = policy or MigrationPolicy()
        self._known = dict(known or {})
        # A callable: the libvirt backend learns its host name only once connected.
        self._host = host
        self._backend = backend
        self._config = config or EstimatorConfig()
        self._active: dict[tuple[str, Direction], _Track] = {}
        # The id of the last final published per (domain, direction): a backend
        # may report an end twice (event and poll), the record goes out once.
        self._finished: dict[tuple[str, Direction], str] = {}

    @property
    def config(self) -> EstimatorConfig:
        return self._config

    @property
    def policy(self) -> MigrationPolicy:
        """The host's declared migration policy (also for predictions)."""
        return self._policy

    def config_for(
        self, resident_overhead_bytes: int | None, migration_overhead_s: float | None = None
    ) -> EstimatorConfig:
        """The estimator's configuration for a guest on a host whose QEMU overhead was
        learned (``MigrationInfo``/``DomainFacts.resident_overhead_bytes``, and
        ``DomainFacts.migration_overhead_s``, the teardown after each job): the one place
        the learned values replace the configured ones, for running ETAs and predictions."""
        return with_overhead(self._config, resident_overhead_bytes, migration_overhead_s)

    def active_ids(self) -> set[str]:
        return {t.id for t in self._active.values()}

    def observe(self, obs: Observation) -> Migration | None:
        """Fold one observation in; return the record to publish, or None if the
        observation is a repeat of a final state already published."""
        key = (obs.info.domain_uuid, obs.info.direction)
        track = self._active.get(key)
        if track is None:
            if self._finished.get(key) == migration_id(obs.info):
                return None
            track = _Track(
                id=self._adopt_id(obs.info),
                info=obs.info,
                estimator=MigrationEstimator(
                    self.config_for(obs.info.resident_overhead_bytes),
                    obs.preflight,
                    memory_bytes=obs.info.memory_bytes,
                    resident_bytes=obs.info.resident_bytes,
                    free_bytes=obs.info.free_bytes,
                ),
            )
            self._active[key] = track
        obs = replace(obs, limits=self._policy.apply(obs.limits))
        if obs.sample is not None:
            self._fold_sample(track, obs)
        if obs.phase.terminal:
            del self._active[key]
            self._finished[key] = track.id
        return self._record(track, obs)

    def _adopt_id(self, info: MigrationInfo) -> str:
        known = self._known.pop(track_key(info), None)
        if known is not None and abs(known[1] - info.started_at) <= _SAME_START_S:
            return known[0]
        return migration_id(info)

    def _fold_sample(self, track: _Track, obs: Observation) -> None:
        sample = obs.sample
        assert sample is not None
        previous = track.last_sample
        if previous is not None and sample.elapsed_s > previous.elapsed_s:
            step = (sample.disk_processed - previous.disk_processed) / (
                sample.elapsed_s - previous.elapsed_s
            )
            # Light smoothing: the NBD mirror's rate is steady but samples jitter.
            track.disk_rate_bps = max(0.0, 0.5 * track.disk_rate_bps + 0.5 * step)
        track.last_sample = sample
        if not obs.phase.terminal:
            track.estimate = track.estimator.observe(
                sample, obs.limits, postcopy=obs.phase is Phase.POSTCOPY
            )

    def _record(self, track: _Track, obs: Observation) -> Migration:
        sample = track.last_sample
        est = track.estimate
        phase = obs.phase
        memory, disk = _transfers(sample, est, track.disk_rate_bps, phase)
        eta, low, high = est.eta_s, est.eta_low_s, est.eta_high_s
        if phase is Phase.COMPLETED:
            eta = low = high = 0.0
        elif phase.terminal:
            eta = low = high = None
        elapsed = (
            sample.elapsed_s if sample is not None else max(0.0, obs.now - obs.info.started_at)
        )
        return Migration(
            id=track.id,
            domain_uuid=obs.info.domain_uuid,
            domain_name=obs.info.domain_name,
            source_host=obs.info.source_host,
            destination_host=obs.info.destination_host,
            direction=obs.info.direction,
            phase=phase,
            backend=self._backend,
            agent_host=self._host(),
            memory=memory,
            disk=disk,
            dirty_rate_bps=int(est.dirty_rate_bps or 0),
            iteration=sample.iteration if sample is not None else 0,
            elapsed_s=elapsed,
            eta_s=eta,
            eta_low_s=low,
            eta_high_s=high,
            eta_basis=est.basis,
            convergence=est.convergence,
            convergence_reason=est.reason,
            recommendations=() if phase.terminal else est.recommendations,
            expected_downtime_s=(
                sample.expected_downtime_ms / 1000
                if sample is not None
                and sample.expected_downtime_ms is not None
                and not phase.terminal
                else None
            ),
            actual_downtime_s=obs.actual_downtime_s,
            limits=obs.limits,
            started_at=obs.info.started_at,
            updated_at=obs.now,
            finished_at=obs.now if phase.terminal else None,
            error_message=obs.error_message,
            auto_converge_throttle=sample.auto_converge_throttle if sample is not None else None,
            postcopy_requests=sample.postcopy_requests if sample is not None else 0,
        )


def _transfers(
    sample: JobSample | None, est: Estimate, disk_rate_bps: float, phase: Phase
) -> tuple[Transfer, Transfer]:
    if sample is None:
        done = 1.0 if phase is Phase.COMPLETED else 0.0
        return Transfer(fraction_done=done), Transfer(fraction_done=done)
    memory = Transfer(
        total_bytes=sample.memory_total,
        processed_bytes=sample.memory_processed,
        remaining_bytes=sample.memory_remaining,
        # During a disk mirror the link carries disk, not memory: no memory rate.
        bytes_per_second=int(est.transfer_rate_bps or sample.memory_bps)
        if sample.memory_total
        else 0,
        fraction_done=_memory_fraction(sample, est, phase),
    )
    disk = Transfer(
        total_bytes=sample.disk_total,
        processed_bytes=sample.disk_processed,
        remaining_bytes=sample.disk_remaining,
        bytes_per_second=int(disk_rate_bps) if sample.disk_remaining else 0,
        fraction_done=(
            1.0
            if phase is Phase.COMPLETED or (sample.disk_total and not sample.disk_remaining)
            else _ratio(sample.disk_processed, sample.disk_total)
        ),
    )
    return memory, disk


def _memory_fraction(sample: JobSample, est: Estimate, phase: Phase) -> float:
    if phase is Phase.COMPLETED:
        return 1.0
    if sample.memory_total == 0:
        return 0.0
    if est.projected_remaining_bytes is not None:
        # Against everything still to send, re-sends included, the fraction does
        # not jump back when a new pass starts, unlike 1 - remaining/total.
        return _ratio(
            sample.memory_processed, sample.memory_processed + est.projected_remaining_bytes
        )
    return _ratio(sample.memory_total - sample.memory_remaining, sample.memory_total)


def _ratio(part: float, whole: float) -> float:
    if whole <= 0:
        return 0.0
    return min(1.0, max(0.0, part / whole))
