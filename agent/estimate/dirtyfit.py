"""The guest's dirty rate: fitted from the pre-flight readings, then from the live passes.

Both kinds of reading count *distinct* pages dirtied in a window of ``t`` seconds, which for a
guest writing ``R`` B/s over a hot set of ``H`` bytes is ``min(R x t, H)``:

* pre-flight (libvirt page sampling, periods 1, 2 and 4 s before the migration): noisy, as
  QEMU hashes only 512 pages per GiB (each stands for 2 MiB), but taken over windows short
  enough that a fast writer's hot set rarely caps them all;
* live (``memory_dirty_rate`` at each pass boundary, over the pass that ended): an exact
  count of every page, but over a pass as long as the pass was, so the long pass 1 is
  often capped by the hot set: a lower bound of ``R`` whose volume then *is* ``H``.

``dirty_model`` combines the two: a live reading known to be uncapped is ``R`` (it counts
every page; the pre-flight's sampling noise has nothing to add); a live reading that may be
capped only bounds ``R`` from below, and the pre-flight, if any, says where above (it
"de-caps" the first reading); a capped reading's volume is the hot set. Pure: no I/O, no
clock.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.model import MIB, EtaBasis, Preflight


@dataclass(frozen=True, slots=True)
class DirtyFit:
    """A dirty-rate model ``distinct bytes in t = min(rate x t, hot)``, with doubt."""

    rate_bps: float
    rate_sigma_bps: float
    hot_bytes: float | None  # None: no saturation seen
    hot_low_bytes: float  # the hot set is at least this (most distinct bytes seen)
    # The readings of the current regime: (period s, distinct bytes), shortest first.
    readings: tuple[tuple[float, float], ...] = ()


def fit_preflight(
    preflight: Preflight,
    noise_mib: float = 10.7,
    chi2: float = 4.0,
    memory_mib: float | None = None,
) -> DirtyFit:
    """Fit ``min(R x P, H)`` to the pre-flight readings (period P s -> MiB/s).

    Each reading times its period is a count of distinct MiB. Its noise: QEMU hashes 512
    random pages per GiB, so with the guest's RAM ``memory_mib`` known a reading of V MiB is
    a binomial count with sd ``sqrt(2 V (1 - V / memory))`` MiB (at least one sampled page,
    2 MiB); without it a constant ``noise_mib``. A flat rate (no saturation) is kept unless a
    hot set explains the readings better by more than ``chi2``. Readings that fall as 1/P
    mean the guest rewrites a small hot set: then H is the level of the saturated readings
    and R the rate of the shorter unsaturated ones (or, if all are saturated, at least H /
    shortest period).
    """
    pts = _current_regime(
        sorted((p, max(v, 0.0) * p) for p, v in preflight.rates.items() if p > 0),
        memory_mib,
        noise_mib,
    )
    if not pts:
        return DirtyFit(0.0, math.inf, None, 0.0)
    readings = tuple((p, v * MIB) for p, v in pts)
    periods = [p for p, _ in pts]
    vols = [v for _, v in pts]
    hot_low = max(vols)
    var = [_reading_variance(v, memory_mib, noise_mib) for v in vols]
    w = [1.0 / x for x in var]

    def rate_fit(idx: Sequence[int]) -> float:
        return float(
            sum(w[i] * vols[i] * periods[i] for i in idx) / sum(w[i] * periods[i] ** 2 for i in idx)
        )

    def rate_sigma(idx: Sequence[int]) -> float:
        return 1.0 / math.sqrt(sum(w[i] * periods[i] ** 2 for i in idx))

    all_idx = range(len(pts))
    flat = rate_fit(all_idx)
    chi_flat = sum(w[i] * (vols[i] - flat * periods[i]) ** 2 for i in all_idx)
    best: tuple[float, float, float, float] | None = None  # chi, rate, sigma_r, hot
    for s in range(len(pts)):  # points s.. are saturated
        sat = range(s, len(pts))
        hot = sum(w[i] * vols[i] for i in sat) / sum(w[i] for i in sat)
        if s == 0:
            rate = hot / periods[0]
            sig_r = math.sqrt(var[0]) / periods[0]
            chi = sum(w[i] * (vols[i] - hot) ** 2 for i in sat)
        else:
            unsat = range(s)
            rate = rate_fit(unsat)
            if rate * periods[s] < hot * 0.9:  # saturating before the knee: inconsistent
                continue
            sig_r = rate_sigma(unsat)
            chi = sum(w[i] * (vols[i] - rate * periods[i]) ** 2 for i in unsat) + sum(
                w[i] * (vols[i] - hot) ** 2 for i in sat
            )
        if best is None or chi < best[0]:
            best = (chi, rate, sig_r, hot)
    if len(pts) >= 2 and best is not None and chi_flat - best[0] > chi2:
        _, rate, sig_r, hot = best
        return DirtyFit(rate * MIB, sig_r * MIB, hot * MIB, hot_low * MIB, readings)
    return DirtyFit(flat * MIB, rate_sigma(all_idx) * MIB, None, hot_low * MIB, readings)


def _reading_variance(vol_mib: float, memory_mib: float | None, noise_mib: float) -> float:
    """Variance (MiB^2) of a reading of ``vol_mib`` distinct MiB: binomial over QEMU's sampled
    pages when the guest's RAM is known (at least one page's worth), else ``noise_mib`` squared."""
    if memory_mib is not None and memory_mib > 0:
        return max(2.0 * vol_mib * (1.0 - min(vol_mib / memory_mib, 1.0)), 4.0)
    return max(noise_mib, 1e-9) ** 2


def _current_regime(
    pts: list[tuple[float, float]], memory_mib: float | None, noise_mib: float
) -> list[tuple[float, float]]:
    """The readings of the guest's current behaviour: drop those a later one disowns.

    The ladder's periods run one after another, shortest first. For a guest that behaves the
    same throughout, a longer period sees at least as many distinct pages as a shorter one.
    When a later, longer period sees clearly fewer (by three standard deviations of the two
    counts), the earlier readings caught a different regime that has ended: a guest still
    filling its memory after boot (seen in the lab: 90 and 76 MiB/s over 1 and 2 s, then 7,
    7 and 3 MiB/s over 4, 8 and 16 s, from a guest writing 8 MiB/s), or a batch job's last
    burst. Those readings are dropped up to the last one so disowned; what the guest does now
    is what a migration starting now will meet.
    """
    start = 0
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            vi, vj = pts[i][1], pts[j][1]
            spread = _reading_variance(vi, memory_mib, noise_mib) + _reading_variance(
                vj, memory_mib, noise_mib
            )
            if vi - vj > 3.0 * math.sqrt(spread):
                start = i + 1
    return pts[start:]


def preflight_dirty_model(preflight: Preflight) -> tuple[float, float | None]:
    """(dirty rate B/s, hot set bytes or ``None``) from the 1/2/4 s pre-flight readings."""
    fit = fit_preflight(preflight)
    return fit.rate_bps, fit.hot_bytes


@dataclass(frozen=True, slots=True)
class PassObservation:
    """What one completed pass told us: its length and the distinct bytes it dirtied."""

    iteration: int  # the pass that ended
    duration_s: float
    dirty_bps: float  # libvirt's memory_dirty_rate at the next pass, in B/s

    @property
    def volume(self) -> float:
        return self.dirty_bps * self.duration_s


@dataclass(frozen=True, slots=True)
class DirtyModel:
    """Central dirty model and the edges used for the band."""

    rate: float
    rate_low: float
    rate_high: float
    hot: float | None
    hot_low: float
    basis: EtaBasis
    measured: bool  # rate comes from a measurement (not the DEFAULT assumption)
    # Every reading was capped by the hot set: the true rate is higher by an unknown amount.
    capped: bool = False
    # The migration's own highest recent reading (``None`` before the first boundary): what
    # the verdict judges by once the migration has measured, even when the ETA still leans
    # on a pre-flight rate that says the reading may be capped.
    live_rate: float | None = None
    # The live reading is known not to be capped by the hot set (two passes of different
    # lengths agree, or the pre-flight does): without it one pass's rate is a lower bound.
    confirmed: bool = False
    # The band's slow edge leaves the hot set uncapped and dirties at least this (B/s):
    # before the first boundary a pre-flight of the idle guest may not be the guest that
    # migrates (a load that starts with the migration), so its hot set and rate bound the
    # central value, not the slow edge. 0: the model's own edges.
    slow_floor: float = 0.0
    # The pre-flight readings behind a PREFLIGHT model: (period s, distinct bytes).
    ladder: tuple[tuple[float, float], ...] = ()


def ladder_rate_at(ladder: Sequence[tuple[float, float]], period_s: float) -> float | None:
    """The dirty rate (B/s) the pre-flight readings show over a window of ``period_s``: the
    distinct bytes interpolated between the two nearest periods (linear in log period),
    over the period; outside the ladder, the rate of its nearest end. ``None``: no readings.
    """
    if not ladder:
        return None
    pts = sorted(ladder)
    if period_s <= pts[0][0]:
        return pts[0][1] / pts[0][0]
    if period_s >= pts[-1][0]:
        return pts[-1][1] / pts[-1][0]
    for (p0, v0), (p1, v1) in itertools.pairwise(pts):
        if p0 <= period_s <= p1:
            f = math.log(period_s / p0) / math.log(p1 / p0)
            return (v0 + f * (v1 - v0)) / period_s
    return None  # unreachable: period_s lies inside the ladder


def prior_model(
    preflight: DirtyFit | None, bandwidth_bps: float, memory_total: float, config: EstimatorConfig
) -> DirtyModel:
    """Before the first pass boundary: the pre-flight fit, or the DEFAULT assumption."""
    if preflight is None:
        return DirtyModel(
            rate=config.default_dirty_ratio * bandwidth_bps,
            rate_low=0.0,
            rate_high=config.default_dirty_ratio_high * bandwidth_bps,
            hot=None,
            hot_low=0.0,
            basis=EtaBasis.DEFAULT,
            measured=False,
        )
    sig = 2.0 * preflight.rate_sigma_bps
    hot = prior_hot_set(preflight, memory_total)
    rate = preflight.rate_bps
    if rate >= bandwidth_bps > 0 and hot is not None:
        # The fit says the guest outruns the link, from its short, noisy periods; the
        # reading over about as long as a pass of the hot set lasts is the one that speaks
        # for the passes, and when it says the link keeps up it is the central rate.
        over_a_pass = ladder_rate_at(preflight.readings, hot / bandwidth_bps)
        if over_a_pass is not None and over_a_pass < bandwidth_bps:
            rate = over_a_pass
    return DirtyModel(
        rate=rate,
        rate_low=max(0.0, min(rate, preflight.rate_bps - sig)),
        rate_high=preflight.rate_bps + sig,
        hot=hot,
        slow_floor=config.preflight_doubt * bandwidth_bps,
        hot_low=preflight.hot_low_bytes,
        basis=EtaBasis.PREFLIGHT,
        measured=True,
        ladder=preflight.readings,
    )


def prior_hot_set(preflight: DirtyFit, memory_bytes: float) -> float | None:
    """The hot set the pre-flight implies: its saturation level, or, when its readings never
    saturated, the middle on a log scale between what it saw and ``memory_bytes``, the most
    it can be (all of RAM, or what resident memory says was ever written): the median under
    a scale-free prior; the ETA only grows with the hot set, so its median is the ETA of
    this median."""
    if preflight.hot_bytes is not None:
        return preflight.hot_bytes
    if preflight.hot_low_bytes > 0 and memory_bytes > 0:
        return math.sqrt(preflight.hot_low_bytes * max(memory_bytes, preflight.hot_low_bytes))
    return None


def dirty_model(
    observations: Sequence[PassObservation],
    preflight: DirtyFit | None,
    bandwidth_bps: float,
    memory_total: float,
    config: EstimatorConfig,
) -> DirtyModel:
    """The posterior dirty model (``memory_total``: the ceiling of the hot set, see
    ``prior_hot_set``): live pass observations with the pre-flight fit (or the
    DEFAULT prior before the first boundary). See the module docstring."""
    recent = list(observations[-config.pass_window :])
    if not recent:
        return prior_model(preflight, bandwidth_bps, memory_total, config)
    tol = config.rate_tolerance
    top = max(recent, key=lambda o: o.dirty_bps)
    live = top.dirty_bps
    pf_floor = 0.0
    if preflight is not None:
        pf_floor = max(0.0, preflight.rate_bps - 2.0 * preflight.rate_sigma_bps)
    # Capped readings: clearly below a reading from a shorter pass, or below what the
    # pre-flight says the rate is at least. Their volume is the hot set.
    reference = max(live, pf_floor)
    capped = [
        o
        for o in observations
        if o.dirty_bps < (1.0 - tol) * reference
        and (o.duration_s > top.duration_s or o.dirty_bps < (1.0 - tol) * pf_floor)
    ]
    hot_low = max(o.volume for o in observations)
    hot: float | None = max(o.volume for o in capped) if capped else None
    if hot is None and preflight is not None and preflight.hot_bytes is not None:
        hot = max(preflight.hot_bytes, hot_low)  # the pre-flight saw the hot set saturate
    # The top reading is the true rate (not a capped one) when another pass of a different
    # length agrees with it, when it dirtied clearly less than the known hot set, or when
    # the pre-flight measurement agrees with it.
    agrees = preflight is not None and abs(preflight.rate_bps - live) <= max(
        tol * live, 2.0 * preflight.rate_sigma_bps
    )
    confirmed = (
        any(
            o is not top
            and abs(o.dirty_bps - live) <= tol * live
            and max(o.duration_s, top.duration_s) >= (1.0 + tol) * min(o.duration_s, top.duration_s)
            for o in recent
        )
        or (hot is not None and top.volume < (1.0 - tol) * hot)
        or agrees
    )
    # How much the uncapped readings disagree: the workload's own variability.
    rates = [o.dirty_bps for o in recent if o not in capped]
    spread = (max(rates) - min(rates)) / live if live > 0 and len(rates) > 1 else 0.0
    if preflight is not None and preflight.rate_bps > live and not confirmed:
        # The live reading may be capped (the long pass 1 mostly): it only says R >= live.
        # The pre-flight, taken over windows too short to be capped, says where above.
        sig = 2.0 * preflight.rate_sigma_bps
        # How far the central value stays with the pre-flight: the idle guest it measured
        # may not be the guest that is migrating (a load that started, or stopped).
        rate = live + config.preflight_over_live * (preflight.rate_bps - live)
        return DirtyModel(
            rate=rate,
            rate_low=live,  # the reading is a lower bound; the central value may be near it
            rate_high=preflight.rate_bps + sig,
            hot=hot,
            hot_low=hot_low,
            basis=EtaBasis.PREFLIGHT,
            measured=True,
            live_rate=live,
        )
    # A live reading counts every dirtied page of its pass: once it is known to be uncapped
    # it is the rate, and the pre-flight's sampling noise has nothing to add.
    headroom = tol if confirmed else config.live_rate_headroom
    high = live * (1.0 + max(headroom, spread))
    if not confirmed and preflight is None:
        # One reading that may be capped, and nothing else measured: the true rate may be
        # anything the DEFAULT band allowed in pass 1.
        high = max(high, config.default_dirty_ratio_high * bandwidth_bps)
    last = max(recent[-1].dirty_bps, min(rates, default=live))
    return DirtyModel(
        rate=live,
        rate_low=min(min(rates, default=live), last, live),
        rate_high=high,
        hot=hot,
        hot_low=hot_low,
        basis=EtaBasis.LIVE,
        measured=True,
        capped=hot is not None and top.volume >= (1.0 - tol) * hot,
        live_rate=live,
        confirmed=confirmed,
    )
