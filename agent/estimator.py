"""ETA, band and convergence verdict for a pre-copy live migration. Pure: no I/O, no clock.

How pre-copy works (QEMU 7.2, what the model below follows)
-----------------------------------------------------------
* Pass 1 sends all of RAM. ``memory_remaining`` starts at ``memory_total`` and falls at the
  bandwidth for normal pages, but much faster over never-written (zero) pages, which QEMU
  sends as a flag of a few bytes. ``memory_processed`` counts bytes actually sent, so the
  ratio (fall of remaining) / (growth of processed) measures the zero-page share seen so
  far (the pass-1 *drain factor*).
* QEMU checks after every rate-limited burst (``BUFFER_DELAY`` = 100 ms) whether what is
  pending is below ``threshold = bandwidth x max_downtime``. When it is, it syncs the dirty
  bitmap: that ends the pass (``memory_iteration`` +1) and adds every page dirtied since the
  previous sync. If the total is still >= threshold, a new pass starts; otherwise QEMU
  stops the guest and sends the rest unthrottled (the downtime: 12-39 ms in the lab).
  So a pass ends with a leftover ``L`` just under the threshold, on average
  ``threshold - bandwidth x 50 ms``.
* The bytes a pass adds are the *distinct* pages written during it: ``min(R x t, H)`` for a
  guest writing ``R`` B/s over a hot set of ``H`` bytes during a pass of ``t`` seconds.
  libvirt's ``memory_dirty_rate`` is that count divided by the pass time, so it is a lower
  bound of ``R`` that saturates at ``H / t`` (long passes hide fast writers).
* Hence, with ``e`` the excess of a pass over ``L``: each pass takes ``e / bandwidth`` and
  leaves ``e' = min(R x e / bandwidth, H)``: a geometric fall by ``rho = R / bandwidth``
  until ``e`` is below ``threshold - L``; never when ``rho >= 1``.
* With non-shared storage the NBD mirror runs first and the memory counters are all zero
  (memory size unknown from the job stats); in post-copy every page left goes once at the
  post-copy bandwidth.

What the estimate leans on (``EtaBasis``): DEFAULT (pass 1, nothing measured: an assumed
dirty rate as a fraction of the bandwidth, with a wide band), PREFLIGHT (libvirt's
page-sampling measurement before the migration, ``preflight_dirty_model``), LIVE (the
migration's own per-pass dirty counts).

The ETA is ``None`` (and the verdict says why) when: no memory pass has started and there is
no disk copy to time (setup); during the disk mirror, unless the guest's memory size was
passed in (``memory_bytes``), since the job stats say nothing about memory then; while the
transfer rate is unknown (first sample); and when the model says pre-copy will not finish
(NOT_CONVERGING) or not within ``horizon_factor x budget_s``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from migwatch.agent.model import (
    Action,
    Convergence,
    Estimate,
    EtaBasis,
    JobSample,
    Limits,
    Preflight,
    Recommendation,
)

MIB = 1024.0 * 1024.0


@dataclass(frozen=True, slots=True)
class EstimatorConfig:
    """Tunables of the estimator. Each one is a statement about pre-copy or about the
    operator's tolerance, not a fit to recorded traces."""

    # A migration whose projected total job time exceeds this is SLOW.
    budget_s: float = 900.0
    # Time constant (s, job clock) of the transfer-rate EWMA: a few QEMU rate windows
    # (100 ms) and a few polls, so one late poll does not swing the ETA.
    rate_tau_s: float = 2.0
    # Samples kept to measure how unstable the transfer rate is (widens the band).
    rate_window: int = 16
    # Iteration boundaries the verdict looks back over ("windows, not single samples").
    pass_window: int = 3
    # QEMU re-checks pending bytes after each rate-limited burst (BUFFER_DELAY, 100 ms).
    check_interval_s: float = 0.1
    # QEMU refreshes memory_dirty_rate only over periods of >= 1 s.
    min_pass_for_rate_s: float = 1.0
    # dirty rate / bandwidth at which pre-copy is called NOT_CONVERGING: at 0.9 each pass
    # removes only a tenth of what is left, ~30 passes per factor of 20.
    not_converging_ratio: float = 0.9
    # Relative change that counts as a real difference between two dirty-rate readings
    # (pass times are known to a poll interval) and as "no longer falls" at boundaries.
    rate_tolerance: float = 0.2
    # STALLED needs the boundary remaining above this multiple of the switch-over
    # threshold: near the threshold the short tail passes hover by design.
    stall_margin: float = 2.0
    # DEFAULT basis (pass 1, nothing measured): assumed dirty rate as a fraction of the
    # bandwidth, and the upper edge of the band. A guest that is expected to migrate at
    # all dirties well below the link; the band, not the central value, carries the doubt.
    default_dirty_ratio: float = 0.2
    default_dirty_ratio_high: float = 0.8
    # A single live dirty-rate reading from a long pass may be capped by the hot set
    # (a lower bound): until two passes of different lengths agree, the band's upper
    # edge assumes the true rate may be this much higher.
    live_rate_headroom: float = 0.5
    # The band's lower edge in pass 1 assumes up to this share of what pass 1 has left
    # may be never-written pages (sent almost for free); the central value uses the share
    # seen so far. A freshly booted or over-provisioned guest easily has half its RAM free.
    zero_share_low: float = 0.5
    # Pre-flight page-sampling noise, as MiB of distinct pages per reading: QEMU samples
    # 512 pages per GiB, each standing for 2 MiB (lab: sd 10.7 MiB/s at 1 s, 7.7 at 2 s,
    # 2.7 at 4 s on a 1 GiB guest, i.e. ~11 MiB per reading whatever the period).
    preflight_noise_mib: float = 10.7
    # chi-square improvement needed to prefer a saturating (hot set) pre-flight fit over a
    # flat rate: one extra parameter at about 2 sigma.
    preflight_saturation_chi2: float = 4.0
    # Band floor: a poll interval and the tail's 100 ms checks make +-0.5 s unavoidable,
    # and bandwidth is never exactly constant.
    band_floor_s: float = 0.5
    band_floor_rel: float = 0.05
    # Beyond budget_s x this the plan counts as never finishing.
    horizon_factor: float = 10.0
    # The largest max downtime and bandwidth (x the rate now seen) a recommendation may
    # propose; past them, and without post-copy, the remedy is to abort.
    downtime_ceiling_s: float = 2.0
    bandwidth_ceiling_factor: float = 4.0


# --- the pass model (shared by live estimates and pre-flight prediction) -----------------


@dataclass(frozen=True, slots=True)
class PassPlan:
    """What the pass model says is left: time and bytes until switch-over."""

    converges: bool
    time_s: float  # until the switch-over (math.inf when it never comes)
    bytes: float  # still to send, re-sends and the final stop-and-copy included
    passes: int  # pass boundaries still to come (not counting the current pass)


def plan_passes(
    *,
    pass_left_bytes: float,
    pass_elapsed_s: float,
    bandwidth_bps: float,
    dirty_rate_bps: float,
    hot_set_bytes: float | None,
    max_downtime_s: float,
    drain_factor: float = 1.0,
    check_interval_s: float = 0.1,
    horizon_s: float = math.inf,
    max_passes: int = 1_000_000,
) -> PassPlan:
    """Simulate the remaining pre-copy passes (see the module docstring).

    Args:
        pass_left_bytes: ``memory_remaining`` now, in the current pass.
        pass_elapsed_s: how long the current pass has run (its dirtying counts already).
        drain_factor: how much faster than the bandwidth ``memory_remaining`` falls in
            this pass (zero pages in pass 1; 1.0 otherwise).
        hot_set_bytes: cap on the distinct bytes one pass can dirty (``None``: no cap).
    """
    if bandwidth_bps <= 0:
        return PassPlan(False, math.inf, math.inf, 0)
    threshold = bandwidth_bps * max_downtime_s
    leftover = max(0.0, threshold - bandwidth_bps * check_interval_s / 2.0)
    enough = threshold - leftover  # a pass adding less than this ends pre-copy
    cap = math.inf if hot_set_bytes is None else max(hot_set_bytes, 0.0)
    rate = max(dirty_rate_bps, 0.0)
    drain = max(drain_factor, 1.0)

    # The current pass: send what is above the leftover, zero pages going `drain` x faster.
    above = max(pass_left_bytes - leftover, 0.0)
    time = above / (bandwidth_bps * drain)
    sent = above / drain
    excess = min(rate * (pass_elapsed_s + time), cap)
    rho = rate / bandwidth_bps
    passes = 0
    never = PassPlan(False, math.inf, math.inf, 0)
    if excess > 0 and enough <= 0:
        return never  # a zero max downtime never lets QEMU switch over
    # While the hot set caps a pass, step one pass at a time (at most once: after a capped
    # pass e <= cap, so rho x e < cap unless rho >= 1, which never converges anyway).
    while excess >= enough and excess > 0:
        if rho >= 1.0:
            return never
        nxt = rho * excess
        if nxt > cap:
            passes += 1
            time += excess / bandwidth_bps
            sent += excess
            if cap >= excess:
                return never
            excess = cap
            continue
        # Geometric from here: e_k = excess x rho^k for the n passes until e_n < enough.
        if rho <= 0.0:
            n = 1
        else:
            n = max(1, math.ceil(math.log(enough / excess) / math.log(rho)))
        if n > max_passes:
            return never
        total = excess * (1.0 - rho**n) / (1.0 - rho)
        passes += n
        time += total / bandwidth_bps
        sent += total
        excess = excess * rho**n
        break
    if time > horizon_s:
        return never
    # Switch-over: the leftover and the last pass's dirt go unthrottled while paused.
    return PassPlan(True, time, sent + leftover + excess, passes)


# --- dirty-rate models -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirtyFit:
    """A dirty-rate model ``distinct bytes in t = min(rate x t, hot)``, with doubt."""

    rate_bps: float
    rate_sigma_bps: float
    hot_bytes: float | None  # None: no saturation seen
    hot_low_bytes: float  # the hot set is at least this (most distinct bytes seen)


def fit_preflight(preflight: Preflight, noise_mib: float = 10.7, chi2: float = 4.0) -> DirtyFit:
    """Fit ``min(R x P, H)`` to the pre-flight readings (period P s -> MiB/s).

    Each reading times its period is a count of distinct MiB with roughly constant noise
    ``noise_mib``. A flat rate (no saturation) is kept unless a hot set explains the
    readings better by more than ``chi2``. Readings that fall as 1/P mean the guest rewrites
    a small hot set: then H is the level of the saturated readings and R the rate of the
    shorter unsaturated ones (or, if all are saturated, at least H / shortest period).
    """
    pts = sorted((p, max(v, 0.0) * p) for p, v in preflight.rates.items() if p > 0)
    if not pts:
        return DirtyFit(0.0, math.inf, None, 0.0)
    sigma = max(noise_mib, 1e-9)
    periods = [p for p, _ in pts]
    vols = [v for _, v in pts]
    hot_low = max(vols)

    def rate_fit(idx: Sequence[int]) -> float:
        return float(sum(vols[i] * periods[i] for i in idx) / sum(periods[i] ** 2 for i in idx))

    all_idx = range(len(pts))
    flat = rate_fit(all_idx)
    chi_flat = sum((vols[i] - flat * periods[i]) ** 2 for i in all_idx) / sigma**2
    best: tuple[float, float, float, float] | None = None  # chi, rate, sigma_r, hot
    for s in range(len(pts)):  # points s.. are saturated
        sat = range(s, len(pts))
        hot = sum(vols[i] for i in sat) / len(sat)
        if s == 0:
            rate = hot / periods[0]
            sig_r = sigma / periods[0]
            chi = sum((vols[i] - hot) ** 2 for i in sat) / sigma**2
        else:
            unsat = range(s)
            rate = rate_fit(unsat)
            if rate * periods[s] < hot * 0.9:  # saturating before the knee: inconsistent
                continue
            sig_r = sigma / math.sqrt(sum(periods[i] ** 2 for i in unsat))
            chi = (
                sum((vols[i] - rate * periods[i]) ** 2 for i in unsat)
                + sum((vols[i] - hot) ** 2 for i in sat)
            ) / sigma**2
        if best is None or chi < best[0]:
            best = (chi, rate, sig_r, hot)
    mib = MIB
    if len(pts) >= 2 and best is not None and chi_flat - best[0] > chi2:
        _, rate, sig_r, hot = best
        return DirtyFit(rate * mib, sig_r * mib, hot * mib, hot_low * mib)
    sig_flat = sigma / math.sqrt(sum(p * p for p in periods))
    return DirtyFit(flat * mib, sig_flat * mib, None, hot_low * mib)


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


def dirty_model(
    observations: Sequence[PassObservation],
    preflight: DirtyFit | None,
    bandwidth_bps: float,
    memory_total: float,
    config: EstimatorConfig,
) -> DirtyModel:
    """Combine live pass observations with the pre-flight fit (or the default prior).

    Live readings are lower bounds. One from a long pass that reads clearly below a later,
    shorter pass (or below the pre-flight rate) was capped by the hot set: its volume *is*
    the hot set. Two passes of different lengths that agree rule the cap out.
    """
    tol = config.rate_tolerance
    recent = list(observations[-config.pass_window :])
    if not recent:
        if preflight is not None:
            sig = 2.0 * preflight.rate_sigma_bps
            prior_hot = preflight.hot_bytes
            if prior_hot is None and preflight.hot_low_bytes > 0 and memory_total > 0:
                # Hot set somewhere between what was seen and all of RAM: take the middle
                # on a log scale (a scale-free prior).
                prior_hot = math.sqrt(preflight.hot_low_bytes * max(memory_total, 1.0))
            return DirtyModel(
                rate=preflight.rate_bps,
                rate_low=max(0.0, preflight.rate_bps - sig),
                rate_high=preflight.rate_bps + sig,
                hot=prior_hot,
                hot_low=preflight.hot_low_bytes,
                basis=EtaBasis.PREFLIGHT,
                measured=True,
            )
        return DirtyModel(
            rate=config.default_dirty_ratio * bandwidth_bps,
            rate_low=0.0,
            rate_high=config.default_dirty_ratio_high * bandwidth_bps,
            hot=None,
            hot_low=0.0,
            basis=EtaBasis.DEFAULT,
            measured=False,
        )
    top = max(recent, key=lambda o: o.dirty_bps)
    live = top.dirty_bps
    pf_floor = 0.0
    if preflight is not None:
        pf_floor = max(0.0, preflight.rate_bps - 2.0 * preflight.rate_sigma_bps)
    reference = max(live, pf_floor)
    saturated = [
        o
        for o in observations
        if o.dirty_bps < (1.0 - tol) * reference
        and (o.duration_s > top.duration_s or o.dirty_bps < (1.0 - tol) * pf_floor)
    ]
    hot_low = max(o.volume for o in observations)
    hot: float | None = max(o.volume for o in saturated) if saturated else None
    if hot is None and preflight is not None and preflight.hot_bytes is not None:
        hot = max(preflight.hot_bytes, hot_low)
    # The top reading is the true rate (not a capped one) when another pass of a different
    # length agrees with it, when it dirtied clearly less than the known hot set, or when
    # the pre-flight measurement agrees with it.
    confirmed = (
        any(
            o is not top
            and abs(o.dirty_bps - live) <= tol * live
            and max(o.duration_s, top.duration_s)
            >= (1.0 + tol) * min(o.duration_s, top.duration_s)
            for o in recent
        )
        or (hot is not None and top.volume < (1.0 - tol) * hot)
        or (preflight is not None and abs(preflight.rate_bps - live)
            <= max(tol * live, 2.0 * preflight.rate_sigma_bps))
    )
    # How much the uncapped readings disagree: the workload's own variability.
    rates = [o.dirty_bps for o in recent if o not in saturated]
    spread = (max(rates) - min(rates)) / live if live > 0 and len(rates) > 1 else 0.0
    # The pre-flight rate stands in for a live reading that may be capped (the long pass 1
    # mostly); once a live reading is confirmed uncapped, the migration's own count wins.
    if preflight is not None and preflight.rate_bps > live and not confirmed:
        sig = 2.0 * preflight.rate_sigma_bps
        return DirtyModel(
            rate=preflight.rate_bps,
            rate_low=max(live, preflight.rate_bps - sig),
            rate_high=preflight.rate_bps + sig,
            hot=hot,
            hot_low=hot_low,
            basis=EtaBasis.PREFLIGHT,
            measured=True,
        )
    headroom = tol if confirmed else config.live_rate_headroom
    last = max(recent[-1].dirty_bps, min(rates, default=live))
    return DirtyModel(
        rate=live,
        rate_low=min(min(rates, default=live), last, live),
        rate_high=live * (1.0 + max(headroom, spread)),
        hot=hot,
        hot_low=hot_low,
        basis=EtaBasis.LIVE,
        measured=True,
        capped=hot is not None and top.volume >= (1.0 - tol) * hot,
    )


# --- turning a situation into an estimate ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Situation:
    """Everything the ETA needs at one moment, job-clock based."""

    before_memory_s: float  # time still needed before memory starts (disk mirror)
    pass_left: float
    pass_elapsed: float
    drain: float  # central pass-1 drain factor (1.0 after pass 1)
    drain_fast: float  # optimistic drain (band's lower edge)
    bandwidth: float
    bandwidth_spread: float  # relative
    model: DirtyModel
    max_downtime_s: float
    elapsed_s: float


def _plan(sit: _Situation, cfg: EstimatorConfig, *, rate: float, hot: float | None,
          bandwidth: float, drain: float) -> PassPlan:
    return plan_passes(
        pass_left_bytes=sit.pass_left,
        pass_elapsed_s=sit.pass_elapsed,
        bandwidth_bps=bandwidth,
        dirty_rate_bps=rate,
        hot_set_bytes=hot,
        max_downtime_s=sit.max_downtime_s,
        drain_factor=drain,
        check_interval_s=cfg.check_interval_s,
        horizon_s=cfg.budget_s * cfg.horizon_factor,
    )


@dataclass(frozen=True, slots=True)
class _Eta:
    plan: PassPlan
    eta: float | None
    low: float | None
    high: float | None


def _eta_band(sit: _Situation, cfg: EstimatorConfig) -> _Eta:
    m = sit.model
    spread = sit.bandwidth_spread
    central = _plan(sit, cfg, rate=m.rate, hot=m.hot, bandwidth=sit.bandwidth, drain=sit.drain)
    if not central.converges:
        return _Eta(central, None, None, None)
    fast = _plan(sit, cfg, rate=m.rate_low, hot=m.hot if m.hot is not None else m.hot_low or None,
                 bandwidth=sit.bandwidth * (1.0 + spread), drain=sit.drain_fast)
    slow = _plan(sit, cfg, rate=m.rate_high, hot=m.hot,
                 bandwidth=sit.bandwidth * max(1.0 - spread, 0.1), drain=1.0)
    eta = sit.before_memory_s + central.time_s
    margin = cfg.band_floor_s + cfg.band_floor_rel * eta
    low = min(sit.before_memory_s + fast.time_s, eta - margin)
    high = (max(sit.before_memory_s + slow.time_s, eta + margin)
            if slow.converges else None)
    return _Eta(central, eta, max(low, 0.0), high)


def _mib(b: float) -> str:
    v = b / MIB
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _secs(s: float) -> str:
    if s >= 120:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _recommendations(
    *,
    verdict: Convergence,
    sit: _Situation,
    limits: Limits,
    pass_remaining: float,
    boundary_remaining: float,
    cfg: EstimatorConfig,
) -> tuple[Recommendation, ...]:
    """Remedies with their predicted effect, for a migration that is not doing well."""
    if verdict not in (Convergence.NOT_CONVERGING, Convergence.STALLED, Convergence.SLOW):
        return ()
    bw = sit.bandwidth
    m = sit.model
    recs: list[Recommendation] = []
    why_not: list[str] = []
    # 1. Max downtime: switch-over happens at a sync when what is pending fits in
    #    bandwidth x max downtime; what is pending at a sync is about the boundary remaining.
    if verdict is not Convergence.SLOW and bw > 0:
        need = boundary_remaining * (1.0 + cfg.rate_tolerance) / bw
        need = math.ceil(max(need, limits.max_downtime_s) * 20.0) / 20.0  # 50 ms steps
        if need <= cfg.downtime_ceiling_s:
            eta = max(pass_remaining - bw * need, 0.0) / bw
            recs.append(Recommendation(
                action=Action.RAISE_MAX_DOWNTIME,
                summary=(f"raise max downtime to {need:.2f} s: the ~{_mib(boundary_remaining)}"
                         f" MiB left after each pass then fits at {_mib(bw)} MiB/s; switch-over"
                         f" within ~{_secs(eta)} (the final copy is unthrottled, so the real"
                         " pause is usually far shorter)"),
                max_downtime_s=need,
                predicted_eta_s=eta,
            ))
        else:
            why_not.append(f"max downtime would need {need:.1f} s")
    # 2. Bandwidth: the smallest limit (x1.25 steps) at which the plan finishes in budget.
    #    Not when every reading was capped by the hot set: the true rate is unknown then.
    if m.capped:
        why_not.append(f"the dirty rate is hidden by the hot set (at least {_mib(m.rate)}"
                       " MiB/s), so no bandwidth can be promised")
    elif limits.max_bandwidth_bps is not None and bw > 0:
        found: tuple[float, PassPlan] | None = None
        candidate = max(float(limits.max_bandwidth_bps), bw) * 1.25
        ceiling = bw * cfg.bandwidth_ceiling_factor
        while candidate <= ceiling:
            # The band's upper dirty rate: a bandwidth that only works for the central
            # rate is a coin toss, not a recommendation.
            plan = plan_passes(
                pass_left_bytes=pass_remaining, pass_elapsed_s=sit.pass_elapsed,
                bandwidth_bps=candidate, dirty_rate_bps=m.rate_high, hot_set_bytes=m.hot,
                max_downtime_s=sit.max_downtime_s, check_interval_s=cfg.check_interval_s,
                horizon_s=cfg.budget_s * cfg.horizon_factor,
            )
            if plan.converges and sit.elapsed_s + plan.time_s <= cfg.budget_s:
                found = (candidate, plan)
                break
            candidate *= 1.25
        if found is not None:
            target, plan = found
            recs.append(Recommendation(
                action=Action.RAISE_BANDWIDTH,
                summary=(f"raise bandwidth to {_mib(target)} MiB/s: dirtying"
                         f" {_mib(m.rate)}-{_mib(m.rate_high)} MiB/s would then leave"
                         f" x{m.rate_high / target:.2f} or less after each pass;"
                         f" done in ~{_secs(plan.time_s)}"),
                max_bandwidth_bps=int(target),
                predicted_eta_s=plan.time_s,
            ))
        else:
            why_not.append(f"bandwidth would need over {_mib(ceiling)} MiB/s")
    elif limits.max_bandwidth_bps is None:
        why_not.append("bandwidth is not limited (the link is the bottleneck)")
    # 3. Post-copy: the guest moves now and every page left goes once.
    if limits.postcopy_allowed:
        pc_bw = float(limits.postcopy_bandwidth_bps or bw)
        pc_eta = pass_remaining / pc_bw if pc_bw > 0 else None
        recs.append(Recommendation(
            action=Action.POST_COPY,
            summary=(f"switch to post-copy: the guest runs on the destination at once;"
                     f" ~{_mib(pass_remaining)} MiB left at {_mib(pc_bw)} MiB/s"
                     + (f", ~{_secs(pc_eta)}" if pc_eta is not None else "")),
            predicted_eta_s=pc_eta,
        ))
    else:
        why_not.append("post-copy was not enabled at start")
    if not recs and verdict is not Convergence.SLOW:
        recs.append(Recommendation(
            action=Action.ABORT,
            summary=("abort: " + "; ".join(why_not)
                     + "; the guest keeps running on the source"),
        ))
    return tuple(recs)


def _verdict(
    *,
    sit: _Situation,
    eta: _Eta,
    boundaries: Sequence[float],
    in_pass1: bool,
    cfg: EstimatorConfig,
) -> tuple[Convergence, str]:
    """The verdict from the dirty model and the remaining at iteration boundaries.

    ``boundaries`` are the remaining bytes at the start of each pass after the first.
    """
    m = sit.model
    bw = sit.bandwidth
    threshold = bw * sit.max_downtime_s
    rho = m.rate / bw if bw > 0 else math.inf
    left = boundaries[-1] if boundaries else None
    fmt_left = f"; ~{_mib(left)} MiB left after each pass" if left is not None else ""
    keeps_pace = (
        f"dirtying {_mib(m.rate)} MiB/s against {_mib(bw)} MiB/s bandwidth{fmt_left}"
    )
    if in_pass1:
        # Only a measurement may judge before the first boundary: the pre-flight one.
        if (m.basis is EtaBasis.PREFLIGHT and bw > 0
                and m.rate_low >= bw and (m.hot is None or m.hot > cfg.stall_margin * threshold)):
            return Convergence.NOT_CONVERGING, "pre-flight: " + keeps_pace
        if eta.eta is None:
            return Convergence.UNKNOWN, "first pass: no dirty rate measured yet"
        return Convergence.UNKNOWN, (
            f"first pass: {_mib(sit.pass_left)} MiB to go at {_mib(bw)} MiB/s; "
            + ("dirty rate assumed" if not m.measured else
               f"pre-flight dirty rate {_mib(m.rate)} MiB/s")
        )
    if rho >= cfg.not_converging_ratio and (left is None or left > threshold):
        return Convergence.NOT_CONVERGING, keeps_pace
    window = list(boundaries[-cfg.pass_window :])
    if (len(window) >= cfg.pass_window
            and window[-1] >= (1.0 - cfg.rate_tolerance) * window[0]
            and window[-1] > cfg.stall_margin * threshold):
        return Convergence.STALLED, (
            f"~{_mib(window[-1])} MiB left after each of the last {len(window)} passes"
            f" (was {_mib(window[0])}); switch-over needs under {_mib(threshold)} MiB"
            f" ({sit.max_downtime_s:.2f} s at {_mib(bw)} MiB/s)"
        )
    if eta.eta is None:
        if rho < cfg.not_converging_ratio:  # converges, but beyond the planning horizon
            return Convergence.SLOW, (
                f"would take over {_secs(cfg.budget_s * cfg.horizon_factor)}: " + keeps_pace)
        return Convergence.NOT_CONVERGING, keeps_pace
    total = sit.elapsed_s + eta.eta
    if total > cfg.budget_s:
        return Convergence.SLOW, (
            f"will finish in ~{_secs(eta.eta)} ({_secs(total)} in all, over the"
            f" {_secs(cfg.budget_s)} budget): dirtying {_mib(m.rate)} MiB/s against"
            f" {_mib(bw)} MiB/s"
        )
    trail = " -> ".join(_mib(b) for b in window) if window else "?"
    return Convergence.CONVERGING, (
        f"remaining after each pass {trail} MiB (x{rho:.2f} per pass at {_mib(m.rate)} MiB/s"
        f" dirtied vs {_mib(bw)} MiB/s); ~{eta.plan.passes + 1} more pass(es)"
    )


# --- pre-flight prediction (issue 6) -----------------------------------------------------


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
    limits: Limits | None = None,
    config: EstimatorConfig = EstimatorConfig(),
) -> Estimate:
    """Predict a migration before it starts, with the same pass model as the live ETA.

    The disk (if any) is mirrored first at the bandwidth, then pass 1 sends all memory
    (``zero_share`` of it never written, if known: those go almost for free), then the
    passes follow the dirty model. ``eta_s`` is the whole job time.
    """
    bw = float(bandwidth_bps)
    sig2 = 2.0 * max(dirty_rate_sigma_bps, 0.0)
    hot = hot_set_bytes
    if hot is None and hot_set_low_bytes > 0 and memory_bytes > 0:
        hot = math.sqrt(hot_set_low_bytes * memory_bytes)
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
    sit = _Situation(
        before_memory_s=disk_bytes / bw if bw > 0 else math.inf,
        pass_left=float(memory_bytes),
        pass_elapsed=0.0,
        drain=1.0 / (1.0 - share),
        drain_fast=1.0 / (1.0 - fast_share),
        bandwidth=bw,
        bandwidth_spread=0.0,
        model=model,
        max_downtime_s=max_downtime_s,
        elapsed_s=0.0,
    )
    eta = _eta_band(sit, config)
    lim = limits or Limits(max_downtime_s=max_downtime_s, max_bandwidth_bps=int(bw))
    verdict, reason = _predict_verdict(sit, eta, config)
    recs = _recommendations(
        verdict=verdict, sit=sit, limits=lim, pass_remaining=float(memory_bytes),
        boundary_remaining=float(hot if hot is not None else memory_bytes), cfg=config,
    )
    return Estimate(
        transfer_rate_bps=bw,
        dirty_rate_bps=dirty_rate_bps,
        eta_s=eta.eta,
        eta_low_s=eta.low,
        eta_high_s=eta.high,
        projected_remaining_bytes=(disk_bytes + eta.plan.bytes) if eta.eta is not None else None,
        convergence=verdict,
        reason=reason,
        recommendations=recs,
        basis=EtaBasis.PREFLIGHT if eta.eta is not None else EtaBasis.UNKNOWN,
    )


def _predict_verdict(sit: _Situation, eta: _Eta, cfg: EstimatorConfig) -> tuple[Convergence, str]:
    m = sit.model
    bw = sit.bandwidth
    pace = f"dirtying {_mib(m.rate)} MiB/s against {_mib(bw)} MiB/s bandwidth"
    if eta.eta is None:
        hot = f"; a hot set of ~{_mib(m.hot)} MiB re-dirtied each pass" if m.hot else ""
        return Convergence.NOT_CONVERGING, pace + hot
    if eta.eta > cfg.budget_s:
        return Convergence.SLOW, f"predicted {_secs(eta.eta)}, over the budget: " + pace
    return Convergence.CONVERGING, f"predicted ~{_secs(eta.eta)}: " + pace


# --- the live estimator ------------------------------------------------------------------


class MigrationEstimator:
    """Feeds on one migration's samples (source side) and returns an ``Estimate`` each time.

    Time comes only from ``sample.elapsed_s``. Samples that do not move the job clock
    forward are answered with the previous estimate.
    """

    def __init__(
        self,
        config: EstimatorConfig = EstimatorConfig(),
        preflight: Preflight | None = None,
        *,
        memory_bytes: int | None = None,
    ) -> None:
        self._cfg = config
        self._pf = fit_preflight(
            preflight, config.preflight_noise_mib, config.preflight_saturation_chi2
        ) if preflight is not None and preflight.rates else None
        self._memory_hint = memory_bytes
        self._prev: JobSample | None = None
        self._last: Estimate = Estimate(reason="no job statistics yet")
        self._rate: float | None = None  # EWMA transfer rate, current phase
        self._rates: list[float] = []  # recent instantaneous rates
        self._phase = ""
        self._limit: int | None = None
        self._pass_start: float | None = None
        self._iteration = 0
        self._obs: list[PassObservation] = []
        self._boundaries: list[float] = []  # remaining at the start of passes >= 2
        self._disk_origin: tuple[float, int] | None = None  # (elapsed, disk_processed)

    # -- rate -------------------------------------------------------------------------

    def _update_rate(self, phase: str, sample: JobSample, limits: Limits) -> None:
        prev = self._prev
        if phase != self._phase:
            self._phase = phase
            self._rate = None
            self._rates = []
            if phase == "postcopy" and limits.postcopy_bandwidth_bps:
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
            if phase == "disk":
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
        if phase == "postcopy" and sample.iteration <= self._iteration:
            # migrateStartPostCopy() returned but QEMU has not switched yet: that
            # sample's memory_bps is still the pre-copy rate.
            inst = None
        elif phase != "disk" and sample.memory_bps > 0:
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
                    sample.elapsed_s - sample.memory_processed / max(bw, 1.0), 0.0)
            else:
                # Joined mid-migration (agent restart): this pass's start is unknown;
                # counting from now under-states its dirtying only until the next boundary.
                self._pass_start = sample.elapsed_s
            self._iteration = it
            return
        if it <= self._iteration or prev is None:
            return
        threshold = bw * limits.max_downtime_s
        drain = self._drain(prev) if self._iteration == 1 else 1.0
        gap = sample.elapsed_s - prev.elapsed_s
        to_end = max(prev.memory_remaining - threshold, 0.0) / max(bw * drain, 1.0)
        end = prev.elapsed_s + min(to_end, gap)
        duration = end - self._pass_start
        if (it == self._iteration + 1 and duration >= self._cfg.min_pass_for_rate_s
                and sample.dirty_pages_per_s > 0):
            self._obs.append(PassObservation(self._iteration, duration,
                                             float(sample.dirty_bytes_per_s)))
        start_remaining = sample.memory_remaining + bw * (sample.elapsed_s - end)
        self._boundaries.append(float(start_remaining))
        self._pass_start = end
        self._iteration = it

    @staticmethod
    def _drain(sample: JobSample) -> float:
        """Pass-1 drain factor: how much faster remaining fell than bytes were sent."""
        if sample.memory_processed <= 0 or sample.memory_total <= 0:
            return 1.0
        fell = float(sample.memory_total - sample.memory_remaining)
        ratio: float = fell / float(sample.memory_processed)
        return min(max(ratio, 1.0), 20.0)

    # -- main -------------------------------------------------------------------------

    def observe(self, sample: JobSample, limits: Limits, *, postcopy: bool = False) -> Estimate:
        """Take one running-job sample and return the estimate after it."""
        prev = self._prev
        if prev is not None and sample.elapsed_s <= prev.elapsed_s:
            return self._last
        if postcopy or sample.postcopy_requests > 0:
            phase = "postcopy"
        elif sample.iteration > 0:
            phase = "precopy"
        elif sample.disk_total > 0:
            phase = "disk"
        else:
            phase = "setup"
        self._update_rate(phase, sample, limits)
        bw = self._effective_bandwidth(limits)
        if phase == "precopy":
            self._track_passes(sample, limits, bw or float(sample.memory_bps))
        self._prev = sample
        if phase == "postcopy":
            est = self._postcopy(sample, bw)
        elif phase == "precopy":
            est = self._precopy(sample, limits, bw)
        elif phase == "disk":
            est = self._disk(sample, limits, bw)
        else:
            est = Estimate(reason="setting up: nothing sent yet")
        self._last = est
        return est

    def _effective_bandwidth(self, limits: Limits) -> float:
        rate = self._rate or 0.0
        if limits.max_bandwidth_bps is not None and self._phase != "postcopy":
            rate = min(rate, float(limits.max_bandwidth_bps)) if rate > 0 else 0.0
        return rate

    def _postcopy(self, sample: JobSample, bw: float) -> Estimate:
        if bw <= 0:
            return Estimate(convergence=Convergence.CONVERGING,
                            reason="post-copy: measuring the transfer rate")
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
            reason=(f"post-copy: {_mib(sample.memory_remaining)} MiB left at {_mib(bw)} MiB/s;"
                    " every page goes once"),
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
                reason=(f"copying disks: {_mib(sample.disk_remaining)} MiB left at"
                        f" {_mib(bw)} MiB/s (~{_secs(disk_s)}); memory size unknown until"
                        " memory starts"),
            )
        # Memory goes at the migration's bandwidth limit once the mirror is in sync.
        mem_bw = float(limits.max_bandwidth_bps or bw)
        model = dirty_model(self._obs, self._pf, mem_bw, float(self._memory_hint), self._cfg)
        spread = self._spread()
        sit = _Situation(
            before_memory_s=disk_s, pass_left=float(self._memory_hint), pass_elapsed=0.0,
            drain=1.0, drain_fast=1.0 / (1.0 - self._cfg.zero_share_low), bandwidth=mem_bw,
            bandwidth_spread=0.1, model=model,
            max_downtime_s=limits.max_downtime_s, elapsed_s=sample.elapsed_s,
        )
        eta = _eta_band(sit, self._cfg)
        # The disk part's own doubt: its rate may wobble by `spread`.
        low = None if eta.low is None else max(eta.low - disk_s * spread, 0.0)
        high = None if eta.high is None else eta.high + disk_s * spread
        return Estimate(
            transfer_rate_bps=bw,
            dirty_rate_bps=model.rate if model.measured else None,
            eta_s=eta.eta, eta_low_s=low, eta_high_s=high,
            projected_remaining_bytes=(sample.disk_remaining + eta.plan.bytes
                                       if eta.eta is not None else None),
            reason=f"copying disks: {_mib(sample.disk_remaining)} MiB left, then memory",
            basis=model.basis if eta.eta is not None else EtaBasis.UNKNOWN,
        )

    def _precopy(self, sample: JobSample, limits: Limits, bw: float) -> Estimate:
        cfg = self._cfg
        if bw <= 0:
            return Estimate(reason="measuring the transfer rate")
        in_pass1 = self._iteration <= 1
        model = dirty_model(self._obs, self._pf, bw,
                            float(sample.memory_total), cfg)
        if in_pass1:
            drain = self._drain(sample)
            seen_zero = 1.0 - 1.0 / drain
            drain_fast = 1.0 / (1.0 - max(seen_zero, cfg.zero_share_low))
        else:
            drain = drain_fast = 1.0
        start = self._pass_start if self._pass_start is not None else sample.elapsed_s
        sit = _Situation(
            before_memory_s=0.0,
            pass_left=float(sample.memory_remaining),
            pass_elapsed=max(sample.elapsed_s - start, 0.0),
            drain=drain,
            drain_fast=drain_fast,
            bandwidth=bw,
            bandwidth_spread=self._spread(),
            model=model,
            max_downtime_s=limits.max_downtime_s,
            elapsed_s=sample.elapsed_s,
        )
        eta = _eta_band(sit, cfg)
        verdict, reason = _verdict(sit=sit, eta=eta, boundaries=self._boundaries,
                                   in_pass1=in_pass1, cfg=cfg)
        if verdict in (Convergence.NOT_CONVERGING, Convergence.STALLED):
            eta = _Eta(eta.plan, None, None, None)
        # What will be pending at the next sync: the last boundary's remaining, or in
        # pass 1 the hot set if one is known (else everything left).
        if self._boundaries:
            boundary = self._boundaries[-1]
        else:
            boundary = float(model.hot if model.hot is not None else sample.memory_remaining)
        recs = _recommendations(
            verdict=verdict, sit=sit, limits=limits,
            pass_remaining=float(sample.memory_remaining),
            boundary_remaining=boundary, cfg=cfg,
        )
        est = Estimate(
            transfer_rate_bps=bw,
            dirty_rate_bps=model.rate if model.measured else None,
            eta_s=eta.eta,
            eta_low_s=eta.low,
            eta_high_s=eta.high,
            projected_remaining_bytes=eta.plan.bytes if eta.eta is not None else None,
            convergence=verdict,
            reason=reason,
            recommendations=recs,
            basis=model.basis if eta.eta is not None else EtaBasis.UNKNOWN,
        )
        return est if eta.eta is None or eta.eta >= 0 else replace(est, eta_s=0.0)
