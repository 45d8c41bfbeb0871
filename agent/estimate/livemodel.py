"""What the live estimator knows of the guest beyond the job's counters, and the dirty model
and pass-1 drains that follow from it. Pure: no I/O, no clock.

Fixed when the migration is found: the pre-flight fit (``dirtyfit.fit_preflight``), the
guest's RAM (``virDomainGetInfo``; during a disk mirror the job stats' memory counters are
all zero) and the source QEMU's resident memory (bounds the guest's non-zero bytes, hence
pass 1's never-written pages: ``passmodel.ResidentBound``). Apart from ``MigrationEstimator``
(``estimator``) because none of it changes from sample to sample: ``GuestFacts`` is frozen,
and its answers depend only on it and on the passes ``livetrack.PassLog`` has seen, passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from migwatch.agent.estimate.dirtyfit import (
    DirtyFit,
    DirtyModel,
    PassObservation,
    dirty_model,
    fit_preflight,
)
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.passmodel import (
    ResidentBound,
    hot_ceiling,
    pass1_drain,
    pass1_drains_resident,
    resident_bound,
)
from migwatch.agent.model import MIB, JobSample, Preflight

__all__ = ["GuestFacts"]


@dataclass(frozen=True, slots=True)
class GuestFacts:
    """The guest's facts as the live estimator uses them (``of`` builds them).

    Attributes:
        config: the tunables.
        preflight: the fit of the latest pre-flight dirty-rate measurement, if any.
        memory_hint: the guest's RAM in bytes, if known.
        resident: the source QEMU's resident memory in bytes, if known.
        free: the guest's free memory in bytes (balloon statistics), if known.
    """

    config: EstimatorConfig
    preflight: DirtyFit | None
    memory_hint: int | None
    resident: int | None
    free: int | None = None

    @classmethod
    def of(
        cls,
        config: EstimatorConfig,
        preflight: Preflight | None,
        *,
        memory_bytes: int | None,
        resident_bytes: int | None,
        free_bytes: int | None = None,
    ) -> GuestFacts:
        """The facts from ``MigrationEstimator``'s arguments: a pre-flight without readings
        and a size that is not positive count as unknown."""
        fit = (
            fit_preflight(
                preflight,
                config.preflight_noise_mib,
                config.preflight_saturation_chi2,
                memory_mib=memory_bytes / MIB if memory_bytes else None,
            )
            if preflight is not None and preflight.rates
            else None
        )
        return cls(
            config=config,
            preflight=fit,
            memory_hint=memory_bytes if memory_bytes is not None and memory_bytes > 0 else None,
            resident=resident_bytes if resident_bytes is not None and resident_bytes > 0 else None,
            free=free_bytes if free_bytes is not None and free_bytes > 0 else None,
        )

    def bound(self, memory: float) -> ResidentBound | None:
        """What resident memory says of a guest of ``memory`` bytes' non-zero bytes."""
        if self.resident is None or memory <= 0:
            return None
        return resident_bound(
            memory,
            float(self.resident),
            float(self.config.resident_overhead_bytes),
            free_bytes=float(self.free) if self.free is not None else None,
        )

    def hot_ceiling(self, memory: float) -> float:
        """The most a pass can dirty: the guest's RAM, or what it ever wrote."""
        return hot_ceiling(memory, self.bound(memory))

    def pass1_drain(self, sample: JobSample) -> tuple[float, float, float]:
        """(central, fast, slow) drain factors for the rest of pass 1."""
        cfg = self.config
        bound = self.bound(float(sample.memory_total))
        if bound is not None and sample.memory_remaining > 0:
            # Resident memory says how much of RAM is non-zero: what pass 1 has not sent
            # of it is ahead, the rest of what is left is zero pages.
            return pass1_drains_resident(
                memory_remaining=float(sample.memory_remaining),
                memory_processed=float(sample.memory_processed),
                bound=bound,
                memory_total=float(sample.memory_total),
                loose_share=cfg.resident_loose_share,
                loose_weight=cfg.resident_loose_weight,
            )
        d = pass1_drain(
            memory_total=float(sample.memory_total),
            memory_remaining=float(sample.memory_remaining),
            memory_processed=float(sample.memory_processed),
            never_written_share=cfg.zero_share_low,
        )
        return d.central, d.optimistic, 1.0

    def dirty_model(
        self,
        observations: Sequence[PassObservation],
        bw: float,
        memory: float,
        *,
        throttled: bool,
    ) -> DirtyModel:
        """The guest's dirtying from the pre-flight fit and the measured passes
        (``observations``), at transfer rate ``bw``; ``throttled``: auto-converge acts."""
        if not throttled or not observations:
            return dirty_model(
                observations, self.preflight, bw, self.hot_ceiling(memory), self.config
            )
        # Auto-converge changes the guest's dirtying with each throttle step: the last pass's
        # rate is the rate now, and the pre-flight (taken unthrottled) does not speak; the
        # earlier passes still tell the hot set.
        full = dirty_model(observations, None, bw, self.hot_ceiling(memory), self.config)
        last = observations[-1].dirty_bps
        # A pass can dirty at most the guest's RAM (or what it ever wrote): without that cap
        # a rate above the link grows each pass without bound while QEMU climbs its ladder.
        hot = full.hot if full.hot is not None else self.hot_ceiling(memory)
        return replace(
            full,
            rate=last,
            rate_low=min(full.rate_low, last),
            rate_high=max(full.rate_high, last),
            hot=hot,
        )

    def boundary_checked(
        self, model: DirtyModel, boundaries: Sequence[float], bw: float
    ) -> DirtyModel:
        """The central dirty rate checked against what the passes did: the remaining at
        consecutive pass boundaries falls by ``rate / bandwidth`` a pass when the model is
        right, and by less when the hot set caps it. When the boundaries fall faster than
        the model says (dirtied pages that go as zero pages, a workload that slowed, a short
        pass that reads high), the central rate moves ``boundary_ratio_weight`` of the way to
        the one the boundaries show; the slow edge keeps the model's."""
        b = boundaries[-(self.config.pass_window + 1) :]
        if len(b) < 2 or bw <= 0 or min(b) <= 0:
            return model
        seen = (b[-1] / b[0]) ** (1.0 / (len(b) - 1))  # geometric mean fall per pass
        if seen >= model.rate / bw:
            return model
        w = self.config.boundary_ratio_weight
        rate = model.rate + w * (seen * bw - model.rate)
        return replace(model, rate=rate, rate_low=min(model.rate_low, rate))
