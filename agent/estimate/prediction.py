"""Predicting a migration before it starts (``EstimateMigration``). Pure.

The same pass model as the running ETA (``predict``), fed with what
the agent knows of a guest that is not migrating yet: its RAM, the disks a
storage copy would mirror, the limits, and the latest pre-flight dirty-rate
measurement (``Preflight``). Without a measurement the dirty rate is assumed
as the running estimator assumes it in pass 1, and the basis says DEFAULT.
"""

from __future__ import annotations

import math
from dataclasses import replace

from migwatch.agent.estimate.advice import predict_verdict, recommendations
from migwatch.agent.estimate.dirtyfit import DirtyFit, DirtyModel, fit_preflight, prior_hot_set
from migwatch.agent.estimate.etaband import Situation, eta_band
from migwatch.agent.estimate.etaconfig import DEFAULT_CONFIG, EstimatorConfig
from migwatch.agent.estimate.passmodel import AutoConverge, drain_for, hot_ceiling, resident_bound
from migwatch.agent.model import MIB, Estimate, EtaBasis, Limits, Prediction, Preflight


def predict(
    memory_bytes: int,
    disk_bytes: int,
    dirty_rate_bps: float,
    hot_set_bytes: float | None,
    bandwidth_bps: float,
    max_downtime_s: float,
    *,
    dirty_rate_sigma_bps: float = 0.0,
    hot_set_low_bytes: float = 0.0,
    zero_share: float = 0.0,
    resident_bytes: int | None = None,
    limits: Limits | None = None,
    config: EstimatorConfig = DEFAULT_CONFIG,
    auto_converge: bool = False,
    free_bytes: int | None = None,
) -> Estimate:
    """Predict a migration before it starts, with the same pass model as the live ETA.

    The disk (if any) is mirrored first at the bandwidth, then pass 1 sends all memory
    (``zero_share`` of it never written, if known: those go almost for free), then the
    passes follow the dirty model. ``eta_s`` is the whole job time. ``resident_bytes`` (the
    guest QEMU's ``rss``), when given, replaces ``zero_share`` by the never-written share it
    implies (``passmodel.ResidentBound``), and bounds the band's edges; ``free_bytes`` (the
    guest's free memory, balloon statistics) caps the never-written bytes it may assume.
    """
    bw = float(bandwidth_bps)
    sig2 = 2.0 * max(dirty_rate_sigma_bps, 0.0)
    fit = DirtyFit(dirty_rate_bps, max(dirty_rate_sigma_bps, 0.0), hot_set_bytes, hot_set_low_bytes)
    bound = (
        resident_bound(
            float(memory_bytes),
            float(resident_bytes),
            float(config.resident_overhead_bytes),
            free_bytes=float(free_bytes) if free_bytes else None,
        )
        if resident_bytes is not None and resident_bytes > 0 and memory_bytes > 0
        else None
    )
    hot = prior_hot_set(fit, hot_ceiling(float(memory_bytes), bound))
    model = DirtyModel(
        rate=dirty_rate_bps,
        rate_low=max(0.0, dirty_rate_bps - sig2),
        rate_high=dirty_rate_bps + sig2,
        hot=hot,
        hot_low=hot_set_low_bytes,
        basis=EtaBasis.PREFLIGHT,
        measured=True,
    )
    share = min(max(zero_share, 0.0), 0.95)
    fast_share = max(share, config.zero_share_low)
    slow_share = 0.0
    if bound is not None:
        share, fast_share, slow_share = (
            bound.central / memory_bytes,
            bound.high / memory_bytes,
            bound.low / memory_bytes,
        )
    sit = Situation(
        before_memory_s=disk_bytes / bw if bw > 0 else math.inf,
        pass_left=float(memory_bytes),
        pass_elapsed=0.0,
        drain=drain_for(1.0, share),
        drain_fast=drain_for(1.0, fast_share),
        drain_slow=drain_for(1.0, slow_share),
        bandwidth=bw,
        bandwidth_spread=0.0,
        model=model,
        max_downtime_s=max_downtime_s,
        elapsed_s=0.0,
        # Started with auto-converge: QEMU's throttle ladder from no throttle at all.
        auto_converge=AutoConverge(0.0) if auto_converge else None,
    )
    eta = eta_band(sit, config)
    lim = limits or Limits(max_downtime_s=max_downtime_s, max_bandwidth_bps=int(bw))
    conv, reason = predict_verdict(sit, eta, config)
    recs = recommendations(
        verdict=conv,
        sit=sit,
        limits=lim,
        pass_remaining=float(memory_bytes),
        boundary_remaining=float(hot if hot is not None else memory_bytes),
        cfg=config,
    )
    return Estimate(
        transfer_rate_bps=bw,
        dirty_rate_bps=dirty_rate_bps,
        eta_s=eta.eta,
        eta_low_s=eta.low,
        eta_high_s=eta.high,
        projected_remaining_bytes=(disk_bytes + eta.plan.bytes) if eta.eta is not None else None,
        convergence=conv,
        reason=reason,
        recommendations=recs,
        basis=EtaBasis.PREFLIGHT if eta.eta is not None else EtaBasis.UNKNOWN,
    )


def predict_migration(
    memory_bytes: int,
    disk_bytes: int,
    preflight: Preflight | None,
    limits: Limits,
    config: EstimatorConfig | None = None,
    resident_bytes: int | None = None,
    auto_converge: bool = False,
    free_bytes: int | None = None,
) -> Prediction:
    """Duration, band and verdict of a migration with these inputs.

    ``limits.max_bandwidth_bps`` must be set: with no bandwidth limit there is
    no rate to predict with (the caller asks the user for one).
    """
    config = config or EstimatorConfig()
    bandwidth = limits.max_bandwidth_bps
    if not bandwidth:
        raise ValueError("a bandwidth is needed to predict a migration")
    if preflight is not None and preflight.rates:
        fit = fit_preflight(
            preflight,
            config.preflight_noise_mib,
            config.preflight_saturation_chi2,
            memory_mib=memory_bytes / MIB,
        )
        estimate = predict(
            memory_bytes, disk_bytes, fit.rate_bps, fit.hot_bytes, float(bandwidth),
            limits.max_downtime_s, dirty_rate_sigma_bps=fit.rate_sigma_bps,
            hot_set_low_bytes=fit.hot_low_bytes, resident_bytes=resident_bytes,
            limits=limits, config=config, auto_converge=auto_converge, free_bytes=free_bytes,
        )  # fmt: skip
        # Even a verdict without a duration (never converges) leaned on it.
        return Prediction(replace(estimate, basis=EtaBasis.PREFLIGHT), fit.rate_bps, fit.hot_bytes)
    # Nothing measured: the running estimator's pass-1 assumption, with its
    # doubt spread over the band.
    rate = config.default_dirty_ratio * bandwidth
    high = config.default_dirty_ratio_high * bandwidth
    estimate = predict(
        memory_bytes, disk_bytes, rate, None, float(bandwidth), limits.max_downtime_s,
        dirty_rate_sigma_bps=(high - rate) / 2, resident_bytes=resident_bytes,
        limits=limits, config=config, auto_converge=auto_converge, free_bytes=free_bytes,
    )  # fmt: skip
    return Prediction(replace(estimate, basis=EtaBasis.DEFAULT), None, None)
