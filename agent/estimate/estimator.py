"""ETA, band and convergence verdict for a pre-copy live migration. Pure: no I/O, no clock.

``MigrationEstimator`` follows one migration's samples (source side) and ``predict`` judges
one before it starts. They share the pieces, each in its own module:

* ``passmodel``: how long the passes still to come take (QEMU 7.2 pre-copy arithmetic),
  and pass 1's never-written pages;
* ``dirtyfit``: the guest's dirty rate and hot set, from the pre-flight readings and the
  live pass boundaries;
* ``etaband``: central ETA and band from those;
* ``advice``: the verdict and the remedies;
* ``steady``: hysteresis over the per-sample verdict (what is shown changes only on
  evidence that outweighs the last change);
* ``drift``: a predicted end that keeps receding or approaching widens the band.

What the estimate leans on (``EtaBasis``): DEFAULT (pass 1, nothing measured: an assumed
dirty rate as a fraction of the bandwidth, with a wide band), PREFLIGHT (libvirt's
page-sampling measurement before the migration), LIVE (the migration's own per-pass dirty
counts).

The ETA is ``None`` (and the verdict says why) when: no memory pass has started and there is
no disk copy to time (setup); during the disk mirror, unless the guest's memory size was
passed in (``memory_bytes``, virDomainGetInfo), since the job stats say nothing about memory
then; while the transfer rate is unknown (first sample); and when the model says pre-copy
will not finish (NOT_CONVERGING) or not within ``horizon_factor x budget_s``.
"""

from __future__ import annotations

import math
from dataclasses import replace

from migwatch.agent.estimate.advice import NOT_FALLING, mib, recommendations, secs, verdict
from migwatch.agent.estimate.dirtyfit import (
    DirtyFit,
    DirtyModel,
    PassObservation,
    dirty_model,
    fit_preflight,
    preflight_dirty_model,
)
from migwatch.agent.estimate.drift import EndDrift
from migwatch.agent.estimate.etaband import EtaBand, Situation, eta_band
from migwatch.agent.estimate.etaconfig import DEFAULT_CONFIG, EstimatorConfig
from migwatch.agent.estimate.passmodel import (
    AutoConverge,
    PassPlan,
    ResidentBound,
    drain_for,
    hot_ceiling,
    pass1_drain,
    pass1_drains_resident,
    plan_passes,
    resident_bound,
)
from migwatch.agent.estimate.prediction import predict
from migwatch.agent.estimate.steady import SteadyVerdict
from migwatch.agent.model import (
    MIB,
    Convergence,
    Estimate,
    EtaBasis,
    JobSample,
    Limits,
    Phase,
    Preflight,
    running_phase,
)

__all__ = [
    "DirtyFit",
    "EstimatorConfig",
    "MigrationEstimator",
    "PassPlan",
    "fit_preflight",
    "plan_passes",
    "predict",
    "preflight_dirty_model",
]


class MigrationEstimator:
    """Feeds on one migration's samples (source side) and returns an ``Estimate`` each time.

    Time comes only from ``sample.elapsed_s``. Samples that do not move the job clock
    forward are answered with the previous estimate.

    Args:
        config: the tunables.
        preflight: the guest's latest pre-flight dirty-rate measurement, if any.
        memory_bytes: the guest's RAM (``virDomainGetInfo``): during a disk mirror the job
            stats' memory counters are all zero, and only this lets the ETA include memory.
        resident_bytes: the source QEMU's resident memory when the migration was found
            (``virDomainMemoryStats`` ``rss``), or ``None``: bounds the guest's non-zero
            bytes, hence pass 1's never-written pages (``passmodel.ResidentBound``).
    """

    def __init__(
        self,
        config: EstimatorConfig = DEFAULT_CONFIG,
        preflight: Preflight | None = None,
        *,
        memory_bytes: int | None = None,
        resident_bytes: int | None = None,
    ) -> None:
        self._cfg = config
        self._resident = (
            resident_bytes if resident_bytes is not None and resident_bytes > 0 else None
        )
        self._pf = (
            fit_preflight(
                preflight,
                config.preflight_noise_mib,
                config.preflight_saturation_chi2,
                memory_mib=memory_bytes / MIB if memory_bytes else None,
            )
            if preflight is not None and preflight.rates
            else None
        )
        self._memory_hint = memory_bytes if memory_bytes is not None and memory_bytes > 0 else None
        self._prev: JobSample | None = None
        self._last: Estimate = Estimate(reason="no job statistics yet")
        self._rate: float | None = None  # EWMA transfer rate, current phase
        self._rates: list[float] = []  # recent instantaneous rates
        self._phase: Phase | None = None
        self._limit: int | None = None
        self._pass_start: float | None = None
        self._iteration = 0
        self._obs: list[PassObservation] = []
        self._boundaries: list[float] = []  # remaining at the start of passes >= 2
        self._boundary_times: list[float] = []  # job time at each of those starts
        self._steady = SteadyVerdict(config.reversal_boundaries)
        self._prev_limits: Limits | None = None
        self._drift = EndDrift(
            window_s=config.drift_window_s,
            min_span_s=config.drift_min_span_s,
            max_slope=config.drift_max_slope,
        )
        self._disk_origin: tuple[float, int] | None = None  # (elapsed, disk_processed)
        self._throttle: int | None = None  # auto-converge's CPU throttle (%), once seen
        self._boundary_throttles: list[int] = []  # the throttle at each pass boundary

    # -- rate -------------------------------------------------------------------------

    def _update_rate(self, phase: Phase, sample: JobSample, limits: Limits) -> None:
        prev = self._prev
        if phase != self._phase:
            self._phase = phase
            self._rate = None
            self._rates = []
            if phase == Phase.POSTCOPY and limits.postcopy_bandwidth_bps:
                self._rate = float(limits.postcopy_bandwidth_bps)
        if limits.max_bandwidth_bps != self._limit:
            if self._limit is not None and limits.max_bandwidth_bps is not None:
                self._rate = float(limits.max_bandwidth_bps)  # a new limit applies at once
                self._rates = []
            self._limit = limits.max_bandwidth_bps
        # QEMU's own memory_bps (bytes sent over its last rate window) is the hypervisor's
        # measurement; bytes moved between two polls jitter with QEMU's 100 ms bursts, so
        # they are only the fallback (disk mirror, or memory_bps not reported yet).
        inst: float | None = None
        alpha = 1.0
        if prev is not None and sample.elapsed_s > prev.elapsed_s:
            dt = sample.elapsed_s - prev.elapsed_s
            alpha = 1.0 - math.exp(-dt / self._cfg.rate_tau_s)
            if phase == Phase.DISK_MIRROR:
                # The block job reports progress in chunks of several MiB: average over
                # the whole mirror so far instead of poll to poll.
                if self._disk_origin is None:
                    if prev.disk_processed > 0:
                        self._disk_origin = (prev.elapsed_s, prev.disk_processed)
                else:
                    t0, p0 = self._disk_origin
                    if sample.elapsed_s - t0 > 0 and sample.disk_processed > p0:
                        inst = (sample.disk_processed - p0) / (sample.elapsed_s - t0)
                        alpha = 1.0
            elif sample.memory_bps <= 0:
                moved = sample.memory_processed - prev.memory_processed
                if moved > 0 and prev.memory_processed > 0:
                    inst = moved / dt
        if phase == Phase.POSTCOPY and sample.iteration <= self._iteration:
            # migrateStartPostCopy() returned but QEMU has not switched yet: that
            # sample's memory_bps is still the pre-copy rate.
            inst = None
        elif phase != Phase.DISK_MIRROR and sample.memory_bps > 0:
            inst = float(sample.memory_bps)
        if inst is None or inst <= 0:
            return
        self._rates = (self._rates + [inst])[-self._cfg.rate_window :]
        self._rate = inst if self._rate is None else self._rate + alpha * (inst - self._rate)

    def _spread(self) -> float:
        """Relative instability of the transfer rate: 2 x coefficient of variation."""
        xs = self._rates
        if len(xs) < 3:
            return 0.1  # too few readings to tell: assume a modest wobble
        mean = sum(xs) / len(xs)
        var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
        return min(max(2.0 * math.sqrt(var) / mean, 0.02), 0.3) if mean > 0 else 0.3

    # -- iterations -------------------------------------------------------------------

    def _track_passes(self, sample: JobSample, limits: Limits, bw: float) -> None:
        prev = self._prev
        it = sample.iteration
        if it <= 0:
            return
        if self._pass_start is None or self._iteration == 0:
            if it == 1:
                # Pass 1 began when the first byte went: back off by what was sent.
                self._pass_start = max(
                    sample.elapsed_s - sample.memory_processed / max(bw, 1.0), 0.0
                )
            else:
                # Joined mid-migration (agent restart): this pass's start is unknown;
                # counting from now under-states its dirtying only until the next boundary.
                self._pass_start = sample.elapsed_s
            self._iteration = it
            return
        if it <= self._iteration or prev is None:
            return
        threshold = bw * limits.max_downtime_s
        drain = self._pass1_drain(prev)[0] if self._iteration == 1 else 1.0
        gap = sample.elapsed_s - prev.elapsed_s
        to_end = max(prev.memory_remaining - threshold, 0.0) / max(bw * drain, 1.0)
        end = prev.elapsed_s + min(to_end, gap)
        duration = end - self._pass_start
        if (
            it == self._iteration + 1
            and duration >= self._cfg.min_pass_for_rate_s
            and sample.dirty_pages_per_s > 0
        ):
            self._obs.append(
                PassObservation(self._iteration, duration, float(sample.dirty_bytes_per_s))
            )
        start_remaining = sample.memory_remaining + bw * (sample.elapsed_s - end)
        self._boundaries.append(float(start_remaining))
        self._boundary_times.append(end)
        self._boundary_throttles.append(sample.auto_converge_throttle or 0)
        self._pass_start = end
        self._iteration = it

    def _dirty_model(self, bw: float, memory: float, *, throttled: bool) -> DirtyModel:
        if not throttled or not self._obs:
            return dirty_model(self._obs, self._pf, bw, self._hot_ceiling(memory), self._cfg)
        # Auto-converge changes the guest's dirtying with each throttle step: the last pass's
        # rate is the rate now, and the pre-flight (taken unthrottled) does not speak; the
        # earlier passes still tell the hot set.
        full = dirty_model(self._obs, None, bw, self._hot_ceiling(memory), self._cfg)
        last = self._obs[-1].dirty_bps
        # A pass can dirty at most the guest's RAM (or what it ever wrote): without that cap
        # a rate above the link grows each pass without bound while QEMU climbs its ladder.
        hot = full.hot if full.hot is not None else self._hot_ceiling(memory)
        return replace(
            full,
            rate=last,
            rate_low=min(full.rate_low, last),
            rate_high=max(full.rate_high, last),
            hot=hot,
        )

    def _boundary_checked(self, model: DirtyModel, bw: float) -> DirtyModel:
        """The central dirty rate checked against what the passes did: the remaining at
        consecutive pass boundaries falls by ``rate / bandwidth`` a pass when the model is
        right, and by less when the hot set caps it. When the boundaries fall faster than
        the model says (dirtied pages that go as zero pages, a workload that slowed, a short
        pass that reads high), the central rate moves ``boundary_ratio_weight`` of the way to
        the one the boundaries show; the slow edge keeps the model's."""
        b = self._boundaries[-(self._cfg.pass_window + 1) :]
        if len(b) < 2 or bw <= 0 or min(b) <= 0:
            return model
        seen = (b[-1] / b[0]) ** (1.0 / (len(b) - 1))  # geometric mean fall per pass
        if seen >= model.rate / bw:
            return model
        w = self._cfg.boundary_ratio_weight
        rate = model.rate + w * (seen * bw - model.rate)
        return replace(model, rate=rate, rate_low=min(model.rate_low, rate))

    def _auto_converge(self, limits: Limits) -> AutoConverge | None:
        """QEMU's throttle as the pass model follows it, once libvirt has reported one, or
        before QEMU has throttled when the capability is known to be on (declared by the
        host's migration policy, or read by the QMP backend)."""
        if not self._throttle:
            if not limits.auto_converge:
                return None
            return AutoConverge(0.0, high=self._high_count(), measured_at=0.0)
        return AutoConverge(
            self._throttle / 100.0,
            high=self._high_count(),
            measured_at=self._throttle_of_last_pass() / 100.0,
        )

    def _throttle_of_last_pass(self) -> int:
        """The throttle (%) the last measured pass ran under: the one at its start."""
        marks = self._boundary_throttles
        return marks[-2] if len(marks) >= 2 else 0

    def _high_count(self) -> int:
        """Where QEMU's count towards the next throttle step stands: the passes since the
        throttle last changed (QEMU steps every second qualifying sync)."""
        marks = self._boundary_throttles
        since = 0
        for before, after in zip(reversed(marks[:-1]), reversed(marks[1:]), strict=True):
            if before != after:
                break
            since += 1
        return since % 2

    def _hot_ceiling(self, memory: float) -> float:
        return hot_ceiling(memory, self._bound(memory))

    def _bound(self, memory: float) -> ResidentBound | None:
        if self._resident is None or memory <= 0:
            return None
        return resident_bound(
            memory, float(self._resident), float(self._cfg.resident_overhead_bytes)
        )

    def _pass1_drain(self, sample: JobSample) -> tuple[float, float, float]:
        """(central, fast, slow) drain factors for the rest of pass 1."""
        bound = self._bound(float(sample.memory_total))
        if bound is not None and sample.memory_remaining > 0:
            # Resident memory says how much of RAM is non-zero: what pass 1 has not sent
            # of it is ahead, the rest of what is left is zero pages.
            return pass1_drains_resident(
                memory_remaining=float(sample.memory_remaining),
                memory_processed=float(sample.memory_processed),
                bound=bound,
                memory_total=float(sample.memory_total),
                loose_share=self._cfg.resident_loose_share,
                loose_weight=self._cfg.resident_loose_weight,
            )
        d = pass1_drain(
            memory_total=float(sample.memory_total),
            memory_remaining=float(sample.memory_remaining),
            memory_processed=float(sample.memory_processed),
            never_written_share=self._cfg.zero_share_low,
        )
        return d.central, d.optimistic, 1.0

    # -- main -------------------------------------------------------------------------

    def observe(self, sample: JobSample, limits: Limits, *, postcopy: bool = False) -> Estimate:
        """Take one running-job sample and return the estimate after it."""
        prev = self._prev
        if prev is not None and sample.elapsed_s <= prev.elapsed_s:
            return self._last
        # Post-copy shows in the counters only once pages are requested; the caller knows.
        held = Phase.POSTCOPY if postcopy or sample.postcopy_requests > 0 else None
        phase = running_phase(sample, held)
        self._update_rate(phase, sample, limits)
        if sample.auto_converge_throttle is not None:
            if sample.auto_converge_throttle and not self._throttle:
                self._steady.new_facts()  # QEMU acts: not a wobble of the readings
            self._throttle = sample.auto_converge_throttle
        if self._prev_limits is not None and (
            limits.max_bandwidth_bps != self._prev_limits.max_bandwidth_bps
            or limits.max_downtime_s != self._prev_limits.max_downtime_s
        ):
            self._steady.new_facts()  # an operator changed the migration
            self._drift.reset()
        self._prev_limits = limits
        bw = self._effective_bandwidth(limits)
        if phase == Phase.PRECOPY:
            before = len(self._boundaries)
            self._track_passes(sample, limits, bw or float(sample.memory_bps))
            if before == 0 and self._boundaries and self._steady.shown is not Convergence.UNKNOWN:
                # A verdict from pass 1 stood on the pre-flight alone: it yields to the
                # migration's own first measurement (not a reversal, a better witness).
                self._steady = SteadyVerdict(self._cfg.reversal_boundaries)
        self._prev = sample
        if phase == Phase.POSTCOPY:
            est = self._postcopy(sample, bw)
        elif phase == Phase.PRECOPY:
            est = self._precopy(sample, limits, bw)
        elif phase == Phase.DISK_MIRROR:
            est = self._disk(sample, limits, bw)
        else:
            est = Estimate(reason="setting up: nothing sent yet")
        self._last = est
        return est

    def _ceiling(self, bw: float, limits: Limits) -> float | None:
        """The band's fast-edge transfer rate: the bandwidth limit when the migration sends
        at under ``starved_ratio`` of it (``Situation.bandwidth_ceiling``)."""
        cap = limits.max_bandwidth_bps
        if cap is None or bw >= self._cfg.starved_ratio * cap:
            return None
        return float(cap)

    def _pass1_rate(self, bw: float, limits: Limits) -> float:
        """Pass 1's central transfer rate: the rate seen, leaning ``starved_lean`` of the way
        to the limit when the migration sends well under it (``_ceiling``)."""
        cap = self._ceiling(bw, limits)
        return bw if cap is None else bw + self._cfg.starved_lean * (cap - bw)

    def _effective_bandwidth(self, limits: Limits) -> float:
        rate = self._rate or 0.0
        if limits.max_bandwidth_bps is not None and self._phase != Phase.POSTCOPY:
            rate = min(rate, float(limits.max_bandwidth_bps)) if rate > 0 else 0.0
        return rate

    def _postcopy(self, sample: JobSample, bw: float) -> Estimate:
        if bw <= 0:
            return Estimate(
                convergence=Convergence.CONVERGING, reason="post-copy: measuring the transfer rate"
            )
        eta = sample.memory_remaining / bw
        margin = self._cfg.band_floor_s + max(self._cfg.band_floor_rel, self._spread()) * eta
        return Estimate(
            transfer_rate_bps=bw,
            dirty_rate_bps=None,
            eta_s=eta,
            eta_low_s=max(eta - margin, 0.0),
            eta_high_s=eta + margin,
            projected_remaining_bytes=float(sample.memory_remaining),
            convergence=Convergence.CONVERGING,
            reason=(
                f"post-copy: {mib(sample.memory_remaining)} MiB left at {mib(bw)} MiB/s;"
                " every page goes once"
            ),
            basis=EtaBasis.LIVE,
        )

    def _disk(self, sample: JobSample, limits: Limits, bw: float) -> Estimate:
        if bw <= 0:
            return Estimate(reason="copying disks: measuring the transfer rate")
        disk_s = sample.disk_remaining / bw
        if self._memory_hint is None:
            return Estimate(
                transfer_rate_bps=bw,
                eta_low_s=disk_s,
                reason=(
                    f"copying disks: {mib(sample.disk_remaining)} MiB left at"
                    f" {mib(bw)} MiB/s (~{secs(disk_s)}); memory size unknown until"
                    " memory starts"
                ),
            )
        # Memory goes at the migration's bandwidth limit once the mirror is in sync; pass 1
        # will walk all of the guest's RAM, none of it walked yet (no zero pages seen).
        memory = float(self._memory_hint)
        mem_bw = float(limits.max_bandwidth_bps or bw)
        model = dirty_model(self._obs, self._pf, mem_bw, self._hot_ceiling(memory), self._cfg)
        spread = self._spread()
        bound = self._bound(memory)
        if bound is not None:
            drain, fast, slow = (
                drain_for(memory, bound.central),
                drain_for(memory, bound.high),
                drain_for(memory, bound.low),
            )
        else:
            drain, fast, slow = 1.0, drain_for(memory, self._cfg.zero_share_low * memory), 1.0
        sit = Situation(
            before_memory_s=disk_s,
            pass_left=memory,
            pass_elapsed=0.0,
            drain=drain,
            drain_fast=fast,
            drain_slow=slow,
            bandwidth=mem_bw,
            bandwidth_spread=0.1,
            model=model,
            max_downtime_s=limits.max_downtime_s,
            elapsed_s=sample.elapsed_s,
        )
        eta = eta_band(sit, self._cfg)
        # The disk part's own doubt: its rate may wobble by `spread`.
        low = None if eta.low is None else max(eta.low - disk_s * spread, 0.0)
        high = None if eta.high is None else eta.high + disk_s * spread
        return Estimate(
            transfer_rate_bps=bw,
            dirty_rate_bps=model.rate if model.measured else None,
            eta_s=eta.eta,
            eta_low_s=low,
            eta_high_s=high,
            projected_remaining_bytes=(
                sample.disk_remaining + eta.plan.bytes if eta.eta is not None else None
            ),
            reason=f"copying disks: {mib(sample.disk_remaining)} MiB left, then memory",
            basis=model.basis if eta.eta is not None else EtaBasis.UNKNOWN,
        )

    def _precopy(self, sample: JobSample, limits: Limits, bw: float) -> Estimate:
        cfg = self._cfg
        if bw <= 0:
            return Estimate(reason="measuring the transfer rate")
        in_pass1 = self._iteration <= 1
        memory = float(sample.memory_total or self._memory_hint or 0)
        # libvirt reports a throttle only once QEMU has throttled: only then is
        # auto-converge known to be on, unless it was declared (policy) or read (QMP).
        ac = self._auto_converge(limits) if not in_pass1 or limits.auto_converge else None
        model = self._dirty_model(bw, memory, throttled=ac is not None)
        if ac is None and cfg.boundary_ratio_weight > 0:
            model = self._boundary_checked(model, bw)
        drain, drain_fast, drain_slow = self._pass1_drain(sample) if in_pass1 else (1.0, 1.0, 1.0)
        start = self._pass_start if self._pass_start is not None else sample.elapsed_s
        sit = Situation(
            before_memory_s=0.0,
            pass_left=float(sample.memory_remaining),
            pass_elapsed=max(sample.elapsed_s - start, 0.0),
            drain=drain,
            drain_fast=drain_fast,
            drain_slow=drain_slow,
            bandwidth=self._pass1_rate(bw, limits) if in_pass1 else bw,
            bandwidth_spread=self._spread(),
            model=model,
            max_downtime_s=limits.max_downtime_s,
            elapsed_s=sample.elapsed_s,
            auto_converge=ac,
            bandwidth_ceiling=self._ceiling(bw, limits),
            pass_cap=(
                max(math.ceil(cfg.more_passes_factor * self._iteration), cfg.more_passes_min)
                if cfg.more_passes_factor > 0 and not in_pass1
                else None
            ),
        )
        eta = eta_band(sit, cfg)
        drift_note = ""
        if in_pass1 or eta.eta is None:
            self._drift.reset()  # only the migration's own measured passes drift
        elif cfg.drift_max_slope > 0:
            eta, drift_note = self._follow_drift(eta, sample.elapsed_s)
        raw, raw_reason = verdict(
            sit=sit,
            eta=eta,
            boundaries=self._boundaries,
            in_pass1=in_pass1,
            cfg=cfg,
            boundary_times=self._boundary_times,
        )
        shown = self._steady.update(
            raw, raw_reason, self._iteration, against_converging=raw_reason.startswith(NOT_FALLING)
        )
        conv, reason = shown.convergence, shown.reason
        if conv in (Convergence.NOT_CONVERGING, Convergence.STALLED):
            eta = EtaBand(eta.plan, None, None, None)
        elif eta.eta is None and shown.held and conv is not Convergence.UNKNOWN:
            # Held against a reading whose plan never ends: at least this pass is left (the
            # naive remaining / rate), and no upper edge.
            least = float(sample.memory_remaining) / bw
            eta = EtaBand(eta.plan, least, least, None)
        # What will be pending at the next sync: the last boundary's remaining, or in
        # pass 1 the hot set if one is known (else everything left).
        if self._boundaries:
            boundary = self._boundaries[-1]
        else:
            boundary = float(model.hot if model.hot is not None else sample.memory_remaining)
        recs = recommendations(
            verdict=conv,
            sit=sit,
            limits=limits,
            pass_remaining=float(sample.memory_remaining),
            boundary_remaining=boundary,
            cfg=cfg,
        )
        est = Estimate(
            transfer_rate_bps=bw,
            dirty_rate_bps=model.rate if model.measured else None,
            eta_s=eta.eta,
            eta_low_s=eta.low,
            eta_high_s=eta.high,
            projected_remaining_bytes=(
                None
                if eta.eta is None
                else eta.plan.bytes
                if eta.plan.converges
                else float(sample.memory_remaining)
            ),
            convergence=conv,
            reason=reason + (drift_note if eta.eta is not None else ""),
            recommendations=recs,
            basis=model.basis if eta.eta is not None else EtaBasis.UNKNOWN,
        )
        return est if eta.eta is None or eta.eta >= 0 else replace(est, eta_s=0.0)

    def _follow_drift(self, eta: EtaBand, elapsed_s: float) -> tuple[EtaBand, str]:
        """The band widened for a predicted end that keeps moving (``drift``), and a note
        that says so. The central value stays the model's: on the lab's traces following
        the drift made it worse (a pass boundary's jump on new evidence reads as drift)."""
        assert eta.eta is not None
        d = self._drift.add(elapsed_s, eta.eta)
        if abs(d.slope) < 0.05:
            return eta, ""
        low = None if eta.low is None else max(min(eta.low, d.eta), 0.0)
        high = None if eta.high is None else max(eta.high, d.eta)
        way = "receding" if d.receding else "coming closer"
        note = (
            f"; the predicted end is {way} (~{abs(d.slope):.2f} s per second): band widened"
            f" to {secs(d.eta)}, where it ends if that goes on"
        )
        return EtaBand(eta.plan, eta.eta, low, high), note
