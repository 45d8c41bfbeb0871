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

``MigrationEstimator`` itself is the flow from sample to estimate; its parts sit beside it:

* ``livetrack``: the state that follows the job (transfer rate, passes, throttle);
* ``livemodel``: the guest's fixed facts (pre-flight fit, RAM, resident memory) and the
  dirty model and pass-1 drains they give;
* ``livephase``: one sample's ``Estimate`` for each phase, pure functions.

This module stays the public face: the names other modules import from it are here.

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

from migwatch.agent.estimate.advice import NOT_FALLING, secs, verdict
from migwatch.agent.estimate.dirtyfit import DirtyFit, fit_preflight, preflight_dirty_model
from migwatch.agent.estimate.drift import EndDrift
from migwatch.agent.estimate.etaband import EtaBand, eta_band
from migwatch.agent.estimate.etaconfig import DEFAULT_CONFIG, EstimatorConfig
from migwatch.agent.estimate.hover import hovering_since, lottery_band
from migwatch.agent.estimate.livemodel import GuestFacts
from migwatch.agent.estimate.livephase import (
    disk_estimate,
    postcopy_estimate,
    precopy_estimate,
    precopy_situation,
)
from migwatch.agent.estimate.livetrack import PassLog, TransferRate
from migwatch.agent.estimate.passmodel import PassPlan, plan_passes
from migwatch.agent.estimate.prediction import predict
from migwatch.agent.estimate.steady import SteadyVerdict
from migwatch.agent.model import (
    Convergence,
    Estimate,
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
        free_bytes: the guest's free memory read with it (balloon statistics ``unused``),
            or ``None``: a never-written page is a free one, so it caps the zero pages.
    """

    def __init__(
        self,
        config: EstimatorConfig = DEFAULT_CONFIG,
        preflight: Preflight | None = None,
        *,
        memory_bytes: int | None = None,
        resident_bytes: int | None = None,
        free_bytes: int | None = None,
    ) -> None:
        self._cfg = config
        self._facts = GuestFacts.of(
            config,
            preflight,
            memory_bytes=memory_bytes,
            resident_bytes=resident_bytes,
            free_bytes=free_bytes,
        )
        self._prev: JobSample | None = None
        self._last: Estimate = Estimate(reason="no job statistics yet")
        self._transfer = TransferRate(config)
        self._passes = PassLog(config)
        self._steady = SteadyVerdict(config.reversal_boundaries)
        self._prev_limits: Limits | None = None
        self._drift = EndDrift(
            window_s=config.drift_window_s,
            min_span_s=config.drift_min_span_s,
            max_slope=config.drift_max_slope,
        )

    def observe(self, sample: JobSample, limits: Limits, *, postcopy: bool = False) -> Estimate:
        """Take one running-job sample and return the estimate after it."""
        prev = self._prev
        if prev is not None and sample.elapsed_s <= prev.elapsed_s:
            return self._last
        # Post-copy shows in the counters only once pages are requested; the caller knows.
        held = Phase.POSTCOPY if postcopy or sample.postcopy_requests > 0 else None
        phase = running_phase(sample, held)
        self._transfer.update(phase, prev, sample, limits, self._passes.iteration)
        if self._passes.note_throttle(sample.auto_converge_throttle):
            self._steady.new_facts()  # QEMU acts: not a wobble of the readings
        if self._prev_limits is not None and (
            limits.max_bandwidth_bps != self._prev_limits.max_bandwidth_bps
            or limits.max_downtime_s != self._prev_limits.max_downtime_s
        ):
            self._steady.new_facts()  # an operator changed the migration
            self._drift.reset()
        self._prev_limits = limits
        bw = self._transfer.effective(limits)
        if phase == Phase.PRECOPY:
            before = len(self._passes.boundaries)
            self._passes.track(
                prev, sample, limits, bw or float(sample.memory_bps), self._facts.pass1_drain
            )
            if (
                before == 0
                and self._passes.boundaries
                and self._steady.shown is not Convergence.UNKNOWN
            ):
                # A verdict from pass 1 stood on the pre-flight alone: it yields to the
                # migration's own first measurement (not a reversal, a better witness).
                self._steady = SteadyVerdict(self._cfg.reversal_boundaries)
        self._prev = sample
        if phase == Phase.POSTCOPY:
            est = postcopy_estimate(sample, bw, self._transfer.spread(), self._cfg)
        elif phase == Phase.PRECOPY:
            est = self._precopy(sample, limits, bw)
        elif phase == Phase.DISK_MIRROR:
            est = disk_estimate(
                sample, limits, bw, self._transfer.spread(), self._facts, self._passes.observations
            )
        else:
            est = Estimate(reason="setting up: nothing sent yet")
        self._last = est
        return est

    def _precopy(self, sample: JobSample, limits: Limits, bw: float) -> Estimate:
        """The pre-copy estimate: the band (``livephase``), then the two steps that
        remember earlier samples, the drift of the predicted end and the verdict shown."""
        cfg = self._cfg
        if bw <= 0:
            return Estimate(reason="measuring the transfer rate")
        passes = self._passes
        in_pass1 = passes.iteration <= 1
        sit, model = precopy_situation(
            sample, limits, bw, self._transfer.spread(), self._facts, passes
        )
        eta = eta_band(sit, cfg)
        drift_note = ""
        if in_pass1 or eta.eta is None:
            self._drift.reset()  # only the migration's own measured passes drift
        elif cfg.drift_max_slope > 0:
            eta, drift_note = self._follow_drift(eta, sample.elapsed_s)
        # Under auto-converge QEMU raises the odds of each draw with every throttle step:
        # its ladder, which the plan follows, not a constant-odds lottery, ends the wait.
        span = (
            self._hover_span(limits.max_downtime_s, sample.elapsed_s)
            if sit.auto_converge is None
            else None
        )
        if span is not None and eta.eta is not None:
            eta = lottery_band(eta, span)
            drift_note = (  # the lottery, not a drift, is why the end moves
                f"; for {secs(span)} each pass has left a little more than fits in the"
                f" {secs(limits.max_downtime_s)} max downtime: it ends at the first pass that"
                f" leaves less, a matter of luck (~{secs(span)} more at the median)"
            )
        raw, raw_reason = verdict(
            sit=sit,
            eta=eta,
            boundaries=passes.boundaries,
            in_pass1=in_pass1,
            cfg=cfg,
            boundary_times=passes.boundary_times,
            hover_s=span,
        )
        shown = self._steady.update(
            raw, raw_reason, passes.iteration, against_converging=raw_reason.startswith(NOT_FALLING)
        )
        return precopy_estimate(
            sample,
            limits,
            bw,
            sit=sit,
            model=model,
            eta=eta,
            shown=shown,
            drift_note=drift_note,
            boundaries=passes.boundaries,
            cfg=cfg,
            hovering=span is not None,
        )

    def _hover_span(self, max_downtime_s: float, elapsed_s: float) -> float | None:
        """How long the remaining has hovered just over the switch-over point (``hover``)."""
        passes = self._passes
        since = hovering_since(
            passes.boundary_times, passes.boundary_iterations, max_downtime_s, self._cfg
        )
        return None if since is None else max(elapsed_s - since, 0.0)

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
