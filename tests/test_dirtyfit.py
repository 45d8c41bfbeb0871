"""Tests for the dirty-rate fits and the live/pre-flight posterior (agent/estimate/dirtyfit.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from migwatch.agent.estimate.dirtyfit import (
    DirtyFit,
    PassObservation,
    dirty_model,
    fit_preflight,
    preflight_dirty_model,
    prior_hot_set,
)
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.model import MIB, EtaBasis, Preflight

CFG = EstimatorConfig()
BW = 55.0 * MIB
RAM = 896.0 * MIB


def test_preflight_flat_readings_are_a_rate() -> None:
    """Readings flat across periods (pf-easy1: 20/16/18) mean no hot set: a P^2-weighted rate."""
    fit = fit_preflight(Preflight(0.0, {1: 20, 2: 16, 4: 18}))
    assert fit.hot_bytes is None
    assert fit.rate_bps == pytest.approx((20 + 32 * 2 + 72 * 4) / 21 * MIB)
    assert fit.hot_low_bytes == pytest.approx(72 * MIB)


def test_preflight_falling_readings_reveal_hot_set() -> None:
    """Readings falling as 1/P (pf-abort: 140/97/51) give the hot set from the long periods."""
    rate, hot = preflight_dirty_model(Preflight(0.0, {1: 140, 2: 97, 4: 51}))
    assert rate == pytest.approx(140 * MIB)
    assert hot is not None and hot == pytest.approx((194 + 204) / 2 * MIB)


def test_prior_hot_set_is_the_log_middle_when_readings_never_saturate() -> None:
    """A flat pre-flight bounds the hot set by what 4 s saw and by RAM: the log-scale middle."""
    fit = DirtyFit(44 * MIB, 2.3 * MIB, None, 180 * MIB)
    hot = prior_hot_set(fit, RAM)
    assert hot == pytest.approx(math.sqrt(180 * 896) * MIB)
    assert prior_hot_set(DirtyFit(44 * MIB, 2.3 * MIB, 200 * MIB, 200 * MIB), RAM) == 200 * MIB


def test_the_long_periods_of_the_ladder_find_a_hot_set_4s_cannot() -> None:
    """mw4-a (20 MiB/s over 160 MiB; real readings 18/22/19/18/10 MiB/s at 1-16 s): the 1-4 s
    readings alone are flat (no hot set seen); the 16 s one saturates, and the fit puts the
    hot set at what it counted and the rate at the unsaturated periods' slope."""
    short = fit_preflight(Preflight(0.0, {1: 18, 2: 22, 4: 19}))
    assert short.hot_bytes is None
    ladder = fit_preflight(Preflight(0.0, {1: 18, 2: 22, 4: 19, 8: 18, 16: 10}))
    assert ladder.hot_bytes == pytest.approx(160 * MIB)
    rate = (18 * 1 + 44 * 2 + 76 * 4 + 144 * 8) / (1 + 4 + 16 + 64)
    assert ladder.rate_bps == pytest.approx(rate * MIB)
    # Longer unsaturated periods pin the rate down: the noise is per reading, in MiB.
    assert ladder.rate_sigma_bps < short.rate_sigma_bps / 2


def test_with_the_ram_known_the_noise_is_binomial() -> None:
    """QEMU hashes 512 random pages per GiB: a reading of V MiB out of M is a binomial count,
    sd sqrt(2 V (1 - V/M)) MiB, so long readings weigh less than with a constant noise, and
    the rate's sigma follows."""
    pf = Preflight(0.0, {1: 40, 2: 40, 4: 40})
    fit = fit_preflight(pf, memory_mib=1024)
    var = {p: 2 * 40 * p * (1 - 40 * p / 1024) for p in (1, 2, 4)}
    assert fit.hot_bytes is None and fit.rate_bps == pytest.approx(40 * MIB)
    assert fit.rate_sigma_bps == pytest.approx(
        MIB / math.sqrt(sum(p * p / v for p, v in var.items()))
    )
    # A small guest's same readings are a larger share of its RAM: less binomial noise.
    assert fit_preflight(pf, memory_mib=256).rate_sigma_bps < fit.rate_sigma_bps
    # Readings of zero (an idle guest) still carry one sampled page's worth of doubt.
    idle = fit_preflight(Preflight(0.0, {1: 0, 2: 0, 4: 0}), memory_mib=1024)
    assert idle.rate_bps == 0.0 and idle.rate_sigma_bps > 0


def test_the_hot_set_guess_is_capped_by_what_resident_memory_says_was_written() -> None:
    """No saturation seen: the log-middle between what was seen and the ceiling, where the
    ceiling is all of RAM, or the written part of it when resident memory tells it."""
    fit = DirtyFit(20 * MIB, 1.0 * MIB, None, 80 * MIB)
    assert prior_hot_set(fit, 1024 * MIB) == pytest.approx(math.sqrt(80 * 1024) * MIB)
    assert prior_hot_set(fit, 320 * MIB) == pytest.approx(160 * MIB)


# --- the posterior ------------------------------------------------------------------------

# mw-hard: 40 MiB/s over a 288 MiB hot set at 55 MiB/s. Pass 1 (12 s) rewrote the hot set
# more than once, so its reading is 288 / 12 = 24 MiB/s; pass 2 (5.2 s) reads 38 MiB/s.
PASS1 = PassObservation(1, 12.0, 24 * MIB)
PASS2 = PassObservation(2, 5.2, 38 * MIB)
FLAT_PF = DirtyFit(44 * MIB, 2.3 * MIB, None, 180 * MIB)


def test_before_any_boundary_the_prior_speaks() -> None:
    """No boundary yet: the pre-flight fit with a 2-sigma band, else the DEFAULT assumption."""
    pf = dirty_model([], FLAT_PF, BW, RAM, CFG)
    assert pf.basis is EtaBasis.PREFLIGHT and pf.rate == 44 * MIB
    assert pf.rate_low == pytest.approx(39.4 * MIB) and pf.rate_high == pytest.approx(48.6 * MIB)
    default = dirty_model([], None, BW, RAM, CFG)
    assert default.basis is EtaBasis.DEFAULT and not default.measured
    assert default.rate == pytest.approx(0.2 * BW) and default.rate_high == pytest.approx(0.8 * BW)


def test_preflight_decaps_the_first_live_reading() -> None:
    """A pass-1 reading far below the pre-flight may be capped: its volume is the hot set,
    and the central rate meets the pre-flight's half way (the idle guest the pre-flight
    measured may not be the one migrating)."""
    m = dirty_model([PASS1], FLAT_PF, BW, RAM, CFG)
    assert m.basis is EtaBasis.PREFLIGHT and m.rate == pytest.approx((24 + 0.5 * 20) * MIB)
    full = dirty_model([PASS1], FLAT_PF, BW, RAM, replace(CFG, preflight_over_live=1.0))
    assert full.rate == pytest.approx(44 * MIB)
    assert m.hot == pytest.approx(288 * MIB)
    assert m.rate_low >= 24 * MIB  # the live reading stays a lower bound


def test_single_unconfirmed_reading_keeps_the_default_upper_edge() -> None:
    """Without a pre-flight, one pass-1 reading may be capped: the band keeps 0.8 x bandwidth."""
    m = dirty_model([PASS1], None, BW, RAM, CFG)
    assert m.basis is EtaBasis.LIVE and m.rate == 24 * MIB
    assert m.rate_high == pytest.approx(0.8 * BW)


def test_a_shorter_faster_pass_reveals_the_cap() -> None:
    """Pass 2 reads clearly more than the longer pass 1: pass 1 was capped, the rate is pass 2's."""
    m = dirty_model([PASS1, PASS2], None, BW, RAM, CFG)
    assert m.rate == 38 * MIB and m.hot == pytest.approx(288 * MIB)
    assert m.rate_high == pytest.approx(38 * MIB * (1 + CFG.rate_tolerance))  # confirmed


def test_agreeing_passes_of_different_lengths_confirm_the_rate() -> None:
    """Two passes of different lengths reading the same rate rule the cap out: a narrow band."""
    obs = [PassObservation(2, 4.6, 20 * MIB), PassObservation(3, 1.6, 20.1 * MIB)]
    m = dirty_model(obs, None, 60 * MIB, 1024 * MIB, CFG)
    assert m.rate == pytest.approx(20.1 * MIB) and m.hot is None
    assert m.rate_high <= 20.1 * MIB * (1 + CFG.rate_tolerance) + 1


def test_preflight_prior_leaves_the_slow_edge_in_doubt() -> None:
    """Before the first boundary the pre-flight bounds the central value, but the band's
    slow edge dirties at least preflight_doubt x bandwidth with no hot-set cap (the guest
    that migrates may run a load the idle one did not)."""
    from migwatch.agent.estimate.etaband import Situation, eta_band

    m = dirty_model([], FLAT_PF, BW, RAM, CFG)
    assert m.slow_floor == pytest.approx(CFG.preflight_doubt * BW)
    sit = Situation(
        before_memory_s=0.0,
        pass_left=800 * MIB,
        pass_elapsed=5.0,
        drain=1.0,
        drain_fast=1.0,
        bandwidth=BW,
        bandwidth_spread=0.05,
        model=replace(m, rate=2 * MIB, rate_low=MIB, rate_high=3 * MIB, hot=16 * MIB),
        max_downtime_s=0.3,
        elapsed_s=5.0,
    )
    doubtful = eta_band(sit, CFG)
    trusting = eta_band(replace(sit, model=replace(sit.model, slow_floor=0.0)), CFG)
    assert doubtful.eta == trusting.eta
    assert doubtful.high is not None and trusting.high is not None
    assert doubtful.high > trusting.high


def test_readings_of_an_ended_regime_are_dropped() -> None:
    """A guest still filling memory during the first periods (90 and 76 MiB/s over 1 and 2 s,
    then 7, 7 and 3 MiB/s: fewer distinct pages in 4 s than in 1 s) is fitted on what it does
    now, as the lab's 8 MiB/s guest with a 64 MiB hot set did right after boot."""
    ladder: dict[float, float] = {1: 90, 2: 76, 4: 7, 8: 7, 16: 3}
    fit = fit_preflight(Preflight(0.0, ladder), memory_mib=512)
    assert fit.rate_bps < 10 * MIB
    assert fit.hot_bytes is None or fit.hot_bytes < 80 * MIB
    # The same readings in a stationary order (volumes never fall) keep the fast rate.
    steady = fit_preflight(Preflight(0.0, {1: 90, 2: 76, 4: 60}), memory_mib=512)
    assert steady.rate_bps > 50 * MIB


def test_noise_alone_drops_nothing() -> None:
    """A saturated hot set read with sampling noise (volumes level off, wobbling) keeps all its
    readings: the fit is the same as without the regime rule would give."""
    fit = fit_preflight(Preflight(0.0, {1: 140, 2: 97, 4: 51, 8: 24, 16: 13}), memory_mib=1024)
    assert fit.hot_bytes is not None and 180 * MIB < fit.hot_bytes < 230 * MIB
    assert fit.rate_bps > 100 * MIB
