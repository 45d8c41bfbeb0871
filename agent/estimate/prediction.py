"""Predicting a migration before it starts (``EstimateMigration``). Pure.

The same pass model as the running ETA (``estimator.predict``), fed with what
the agent knows of a guest that is not migrating yet: its RAM, the disks a
storage copy would mirror, the limits, and the latest pre-flight dirty-rate
measurement (``Preflight``). Without a measurement the dirty rate is assumed
as the running estimator assumes it in pass 1, and the basis says DEFAULT.
"""

from __future__ import annotations

from dataclasses import replace

from migwatch.agent.estimate.estimator import EstimatorConfig, fit_preflight, predict
from migwatch.agent.model import MIB, EtaBasis, Limits, Prediction, Preflight


def predict_migration(
    memory_bytes: int,
    disk_bytes: int,
    preflight: Preflight | None,
    limits: Limits,
    config: EstimatorConfig | None = None,
    resident_bytes: int | None = None,
    auto_converge: bool = False,
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
        fit = fit_preflight(preflight, config.preflight_noise_mib, config.preflight_saturation_chi2,
                            memory_mib=memory_bytes / MIB)
        estimate = predict(
            memory_bytes, disk_bytes, fit.rate_bps, fit.hot_bytes, float(bandwidth),
            limits.max_downtime_s, dirty_rate_sigma_bps=fit.rate_sigma_bps,
            hot_set_low_bytes=fit.hot_low_bytes, resident_bytes=resident_bytes,
            limits=limits, config=config, auto_converge=auto_converge,
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
        limits=limits, config=config, auto_converge=auto_converge,
    )  # fmt: skip
    return Prediction(replace(estimate, basis=EtaBasis.DEFAULT), None, None)
