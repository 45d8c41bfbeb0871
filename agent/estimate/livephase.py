"""One sample's ``Estimate``, assembled for the phase the migration is in. Pure: no I/O, no
clock, no state.

``MigrationEstimator`` (``estimator``) keeps the state (``livetrack``) and the shown
verdict's hysteresis; these functions take what it has tracked and build the estimate and
its reason text for one sample:

* post-copy: every page goes once, at the transfer rate;
* disk mirror: the disks' remaining, then memory planned as a pass 1 over all of the RAM;
* pre-copy: ``precopy_situation`` gathers what the pass model (``etaband``) is given, and
  ``precopy_estimate`` turns the band and the verdict shown into the ``Estimate`` with its
  remedies (``advice``). Between the two the estimator follows the drift and the verdict,
  the only steps that remember earlier samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from migwatch.agent.estimate.advice import mib, recommendations, secs
from migwatch.agent.estimate.dirtyfit import DirtyModel, PassObservation
from migwatch.agent.estimate.etaband import EtaBand, Situation, eta_band
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.livemodel import GuestFacts
from migwatch.agent.estimate.livetrack import PassLog
from migwatch.agent.estimate.passmodel import drain_for
from migwatch.agent.estimate.steady import Shown
from migwatch.agent.model import Convergence, Estimate, EtaBasis, JobSample, Limits

__all__ = ["disk_estimate", "postcopy_estimate", "precopy_estimate", "precopy_situation"]


def postcopy_estimate(
    sample: JobSample, bw: float, spread: float, cfg: EstimatorConfig
) -> Estimate:
    """Post-copy at transfer rate ``bw`` (its relative wobble ``spread``)."""
    if bw <= 0:
        return Estimate(
            convergence=Convergence.CONVERGING, reason="post-copy: measuring the transfer rate"
        )
    eta = sample.memory_remaining / bw
    margin = cfg.band_floor_s + max(cfg.band_floor_rel, spread) * eta
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


def disk_estimate(
    sample: JobSample,
    limits: Limits,
    bw: float,
    spread: float,
    facts: GuestFacts,
    observations: Sequence[PassObservation],
) -> Estimate:
    """The disk mirror at transfer rate ``bw`` (its relative wobble ``spread``), then memory
    if its size is known (``facts.memory_hint``)."""
    if bw <= 0:
        return Estimate(reason="copying disks: measuring the transfer rate")
    disk_s = sample.disk_remaining / bw
    if facts.memory_hint is None:
        return Estimate(
            transfer_rate_bps=bw,
            eta_low_s=disk_s,
            reason=(
                f"copying disks: {mib(sample.disk_remaining)} MiB left at"
                f" {mib(bw)} MiB/s (~{secs(disk_s)}); memory size unknown until"
                " memory starts"
            ),
        )
    cfg = facts.config
    # Memory goes at the migration's bandwidth limit once the mirror is in sync; pass 1
    # will walk all of the guest's RAM, none of it walked yet (no zero pages seen).
    memory = float(facts.memory_hint)
    mem_bw = float(limits.max_bandwidth_bps or bw)
    model = facts.dirty_model(observations, mem_bw, memory, throttled=False)
    bound = facts.bound(memory)
    if bound is not None:
        drain, fast, slow = (
            drain_for(memory, bound.central),
            drain_for(memory, bound.high),
            drain_for(memory, bound.low),
        )
    else:
        drain, fast, slow = 1.0, drain_for(memory, cfg.zero_share_low * memory), 1.0
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
    eta = eta_band(sit, cfg)
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


def _ceiling(bw: float, limits: Limits, cfg: EstimatorConfig) -> float | None:
    """The band's fast-edge transfer rate: the bandwidth limit when the migration sends
    at under ``starved_ratio`` of it (``Situation.bandwidth_ceiling``)."""
    cap = limits.max_bandwidth_bps
    if cap is None or bw >= cfg.starved_ratio * cap:
        return None
    return float(cap)


def _pass1_rate(bw: float, limits: Limits, cfg: EstimatorConfig) -> float:
    """Pass 1's central transfer rate: the rate seen, leaning ``starved_lean`` of the way
    to the limit when the migration sends well under it (``_ceiling``)."""
    cap = _ceiling(bw, limits, cfg)
    return bw if cap is None else bw + cfg.starved_lean * (cap - bw)


def precopy_situation(
    sample: JobSample,
    limits: Limits,
    bw: float,
    spread: float,
    facts: GuestFacts,
    passes: PassLog,
) -> tuple[Situation, DirtyModel]:
    """What the pass model is given at a pre-copy sample (transfer rate ``bw`` > 0, its
    relative wobble ``spread``), and the dirty model in it."""
    cfg = facts.config
    in_pass1 = passes.iteration <= 1
    memory = float(sample.memory_total or facts.memory_hint or 0)
    # libvirt reports a throttle only once QEMU has throttled: only then is
    # auto-converge known to be on, unless it was declared (policy) or read (QMP).
    ac = passes.auto_converge(limits) if not in_pass1 or limits.auto_converge else None
    model = facts.dirty_model(passes.observations, bw, memory, throttled=ac is not None)
    if ac is None and cfg.boundary_ratio_weight > 0:
        model = facts.boundary_checked(model, passes.boundaries, bw)
    drain, drain_fast, drain_slow = facts.pass1_drain(sample) if in_pass1 else (1.0, 1.0, 1.0)
    start = passes.pass_start if passes.pass_start is not None else sample.elapsed_s
    sit = Situation(
        before_memory_s=0.0,
        pass_left=float(sample.memory_remaining),
        pass_elapsed=max(sample.elapsed_s - start, 0.0),
        drain=drain,
        drain_fast=drain_fast,
        drain_slow=drain_slow,
        bandwidth=_pass1_rate(bw, limits, cfg) if in_pass1 else bw,
        bandwidth_spread=spread,
        model=model,
        max_downtime_s=limits.max_downtime_s,
        elapsed_s=sample.elapsed_s,
        auto_converge=ac,
        bandwidth_ceiling=_ceiling(bw, limits, cfg),
        # In pass 1 too: a pre-flight rate within a few percent of the transfer rate (which
        # wobbles) would otherwise swing the central ETA between 50 s and 1,000 s.
        pass_cap=(
            max(math.ceil(cfg.more_passes_factor * passes.iteration), cfg.more_passes_min)
            if cfg.more_passes_factor > 0
            else None
        ),
    )
    return sit, model


def precopy_estimate(
    sample: JobSample,
    limits: Limits,
    bw: float,
    *,
    sit: Situation,
    model: DirtyModel,
    eta: EtaBand,
    shown: Shown,
    drift_note: str,
    boundaries: Sequence[float],
    cfg: EstimatorConfig,
    hovering: bool = False,
) -> Estimate:
    """The pre-copy estimate from the band (``eta``, drift followed: ``drift_note``) and the
    verdict ``shown``: no ETA for a flagged migration, at least this pass for one held
    against a plan that never ends, and the remedies."""
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
    if boundaries:
        boundary = boundaries[-1]
    else:
        boundary = float(model.hot if model.hot is not None else sample.memory_remaining)
    recs = recommendations(
        verdict=conv,
        sit=sit,
        limits=limits,
        pass_remaining=float(sample.memory_remaining),
        boundary_remaining=boundary,
        cfg=cfg,
        hovering=hovering,
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
