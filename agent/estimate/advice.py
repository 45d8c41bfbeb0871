"""The verdict on a migration and the remedies for one that is not doing well. Pure.

``verdict`` judges a running migration from its dirty model and the remaining at the pass
boundaries ("windows, not single samples"); ``predict_verdict`` judges one before it starts;
``recommendations`` proposes max downtime, bandwidth, post-copy or abort, each with its
predicted effect from the same pass model as the ETA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from migwatch.agent.estimate.dirtyfit import DirtyModel, ladder_rate_at
from migwatch.agent.estimate.etaband import EtaBand, Situation
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.passmodel import PassPlan, plan_passes
from migwatch.agent.model import MIB, Action, Convergence, EtaBasis, Limits, Recommendation


def mib(b: float) -> str:
    """Bytes as MiB for a sentence: no decimals from 10 MiB on."""
    v = b / MIB
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def secs(s: float) -> str:
    """Seconds for a sentence: minutes from 2 min on, one decimal below 10 s."""
    if s >= 120:
        return f"{s / 60:.0f} min"
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def recommendations(
    *,
    verdict: Convergence,
    sit: Situation,
    limits: Limits,
    pass_remaining: float,
    boundary_remaining: float,
    cfg: EstimatorConfig,
    hovering: bool = False,
) -> tuple[Recommendation, ...]:
    """Remedies with their predicted effect, for a migration that is not doing well.
    ``hovering``: the switch-over lottery (``hover``), which a little more max downtime
    ends at once, slow or not."""
    if verdict not in (Convergence.NOT_CONVERGING, Convergence.STALLED, Convergence.SLOW):
        return ()
    bw = sit.bandwidth
    m = sit.model
    recs: list[Recommendation] = []
    why_not: list[str] = []
    # 1. Max downtime: switch-over happens at a sync when what is pending fits in
    #    bandwidth x max downtime; what is pending at a sync is about the boundary remaining.
    if (verdict is not Convergence.SLOW or hovering) and bw > 0:
        need = boundary_remaining * (1.0 + cfg.rate_tolerance) / bw
        need = math.ceil(max(need, limits.max_downtime_s) * 20.0) / 20.0  # 50 ms steps
        if need <= cfg.downtime_ceiling_s:
            eta = max(pass_remaining - bw * need, 0.0) / bw
            recs.append(
                Recommendation(
                    action=Action.RAISE_MAX_DOWNTIME,
                    summary=(
                        f"raise max downtime to {need:.2f} s: the ~{mib(boundary_remaining)}"
                        f" MiB left after each pass then fits at {mib(bw)} MiB/s; switch-over"
                        f" within ~{secs(eta)} (the final copy is unthrottled, so the real"
                        " pause is usually far shorter)"
                    ),
                    max_downtime_s=need,
                    predicted_eta_s=eta,
                )
            )
        else:
            why_not.append(f"max downtime would need {need:.1f} s")
    # 2. Bandwidth: the smallest limit (x1.25 steps) at which the plan finishes in budget.
    #    Not when every reading was capped by the hot set: the true rate is unknown then.
    if m.capped:
        why_not.append(
            f"the dirty rate is hidden by the hot set (at least {mib(m.rate)}"
            " MiB/s), so no bandwidth can be promised"
        )
    elif limits.max_bandwidth_bps is not None and bw > 0:
        found: tuple[float, PassPlan] | None = None
        candidate = max(float(limits.max_bandwidth_bps), bw) * 1.25
        ceiling = bw * cfg.bandwidth_ceiling_factor
        while candidate <= ceiling:
            # The band's upper dirty rate: a bandwidth that only works for the central
            # rate is a coin toss, not a recommendation.
            plan = plan_passes(
                pass_left_bytes=pass_remaining,
                pass_elapsed_s=sit.pass_elapsed,
                bandwidth_bps=candidate,
                dirty_rate_bps=m.rate_high,
                hot_set_bytes=m.hot,
                max_downtime_s=sit.max_downtime_s,
                check_interval_s=cfg.check_interval_s,
                horizon_s=cfg.budget_s * cfg.horizon_factor,
            )
            if plan.converges and sit.elapsed_s + plan.time_s <= cfg.budget_s:
                found = (candidate, plan)
                break
            candidate *= 1.25
        if found is not None:
            target, plan = found
            recs.append(
                Recommendation(
                    action=Action.RAISE_BANDWIDTH,
                    summary=(
                        f"raise bandwidth to {mib(target)} MiB/s: dirtying"
                        f" {mib(m.rate)}-{mib(m.rate_high)} MiB/s would then leave"
                        f" x{m.rate_high / target:.2f} or less after each pass;"
                        f" done in ~{secs(plan.time_s)}"
                    ),
                    max_bandwidth_bps=int(target),
                    predicted_eta_s=plan.time_s,
                )
            )
        else:
            why_not.append(f"bandwidth would need over {mib(ceiling)} MiB/s")
    elif limits.max_bandwidth_bps is None:
        why_not.append("bandwidth is not limited (the link is the bottleneck)")
    # 3. Post-copy: the guest moves now and every page left goes once.
    if limits.postcopy_allowed:
        pc_bw = float(limits.postcopy_bandwidth_bps or bw)
        pc_eta = pass_remaining / pc_bw if pc_bw > 0 else None
        recs.append(
            Recommendation(
                action=Action.POST_COPY,
                summary=(
                    f"switch to post-copy: the guest runs on the destination at once;"
                    f" ~{mib(pass_remaining)} MiB left at {mib(pc_bw)} MiB/s"
                    + (f", ~{secs(pc_eta)}" if pc_eta is not None else "")
                ),
                predicted_eta_s=pc_eta,
            )
        )
    else:
        why_not.append("post-copy was not enabled at start")
    if not recs and verdict is not Convergence.SLOW:
        recs.append(
            Recommendation(
                action=Action.ABORT,
                summary=(
                    "abort: " + "; ".join(why_not) + "; the guest keeps running on the source"
                ),
            )
        )
    return tuple(recs)


def _outpaced_over_a_pass(m: DirtyModel, bw: float) -> bool:
    """Whether the pre-flight reading taken over about as long as a pass will last says the
    guest dirties at least as fast as the link. A pass that re-sends the hot set lasts
    ``hot / bandwidth``; the pre-flight's short periods are its noisiest readings (QEMU
    samples 512 pages per GiB) and catch bursts, so a fit that the reading over the pass's
    own time scale contradicts (a stressor reading 102 MiB/s over 1 s but 31 over 2 s, where
    a pass of its 80 MiB hot set lasts 2 s at 40 MiB/s: it converged) is not enough to flag
    a migration before it has measured anything. Without readings, the fit decides."""
    hot = m.hot if m.hot is not None else (max((v for _, v in m.ladder), default=0.0) or None)
    if not m.ladder or hot is None:
        return True
    rate = ladder_rate_at(m.ladder, hot / bw)
    return rate is None or rate >= bw


def verdict(
    *,
    sit: Situation,
    eta: EtaBand,
    boundaries: Sequence[float],
    in_pass1: bool,
    cfg: EstimatorConfig,
    boundary_times: Sequence[float] = (),
    hover_s: float | None = None,
) -> tuple[Convergence, str]:
    """The verdict from the dirty model and the remaining at iteration boundaries.

    ``boundaries`` are the remaining bytes at the start of each pass after the first,
    ``boundary_times`` the job's elapsed time at each (same length; empty: unknown, then
    a flat window counts as long enough). ``hover_s``: for how long the passes have been
    short enough to leave just over the switch-over threshold (``hover``; None: they are
    not): a flat remaining is then the switch-over lottery, whose ETA grows with the wait,
    not a stall; SLOW once it has gone on for ``stall_min_s``. One sample's verdict:
    ``steady.SteadyVerdict`` decides whether it changes what is shown.
    """
    m = sit.model
    bw = sit.bandwidth
    threshold = bw * sit.max_downtime_s
    # Once the migration has measured its own dirty rate, the verdict judges by it: a
    # pre-flight rate that the first pass contradicts may still shape the ETA (the pass's
    # reading may be capped by the hot set), but it does not flag the migration.
    judged = m.live_rate if m.live_rate is not None else m.rate
    rho = judged / bw if bw > 0 else math.inf
    left = boundaries[-1] if boundaries else None
    fmt_left = f"; ~{mib(left)} MiB left after each pass" if left is not None else ""
    keeps_pace = f"dirtying {mib(judged)} MiB/s against {mib(bw)} MiB/s bandwidth{fmt_left}"
    ac = sit.auto_converge
    if in_pass1:
        # Only a measurement may judge before the first boundary: the pre-flight one, and
        # not when auto-converge is declared (QEMU will throttle the guest until it fits).
        if (
            m.basis is EtaBasis.PREFLIGHT
            and ac is None
            and bw > 0
            and m.rate_low >= bw
            and (m.hot is None or m.hot > cfg.stall_margin * threshold)
            and _outpaced_over_a_pass(m, bw)
        ):
            return Convergence.NOT_CONVERGING, "pre-flight: " + keeps_pace
        if eta.eta is None:
            return Convergence.UNKNOWN, "first pass: no dirty rate measured yet"
        return Convergence.UNKNOWN, (
            f"first pass: {mib(sit.pass_left)} MiB to go at {mib(bw)} MiB/s; "
            + (
                "dirty rate assumed"
                if not m.measured
                else f"pre-flight dirty rate {mib(m.rate)} MiB/s"
            )
            + ("; auto-converge declared" if ac is not None else "")
        )
    if ac is not None:
        # QEMU throttles the guest until pre-copy converges: the plan follows its ladder,
        # so the plan, not the rate seen now, says whether and when it ends.
        now = (
            f"auto-converge throttles the guest's CPU by {ac.throttle * 100:.0f} %"
            if ac.throttle > 0
            else "auto-converge is on (declared) and will throttle the guest's CPU"
        )
        if eta.eta is None:
            return Convergence.NOT_CONVERGING, (
                f"{now}; even at {ac.maximum * 100:.0f} % it would not converge: " + keeps_pace
            )
        total = sit.elapsed_s + eta.eta
        how = (
            f"{now} and adds {ac.increment * 100:.0f} % every {ac.every} passes, up to"
            f" {ac.maximum * 100:.0f} %: pre-copy converges by then at the latest (dirtying"
            f" {mib(m.rate)} MiB/s now against {mib(bw)} MiB/s; at most"
            f" ~{eta.plan.passes + 1} more passes)"
        )
        if total > cfg.budget_s:
            return Convergence.SLOW, f"will finish in ~{secs(eta.eta)}, over the budget: {how}"
        return Convergence.CONVERGING, how
    window = list(boundaries[-cfg.pass_window :])
    falling = falling_steadily(boundaries, cfg)
    hovering = hover_s is not None
    flat_for = (
        None if falling or hovering else flat_since(boundaries, boundary_times, cfg, threshold)
    )
    flat = flat_for is not None
    # The final burst of a hard convergence is a run of short passes whose remaining hovers
    # before the switch-over: a stall is flat over a stretch of job time, not just passes.
    span = sit.elapsed_s - flat_for if flat_for is not None else 0.0
    # Falling (``falling_steadily``): whatever one reading says, pre-copy is gaining.
    if rho >= cfg.not_converging_ratio and (left is None or left > threshold) and not falling:
        return Convergence.NOT_CONVERGING, keeps_pace
    if flat and span >= cfg.stall_min_s:
        return Convergence.STALLED, (
            f"~{mib(window[-1])} MiB left after each pass for {secs(span)} (the last"
            f" {len(window)}: {' -> '.join(mib(b) for b in window)} MiB); switch-over needs"
            f" under {mib(threshold)} MiB ({sit.max_downtime_s:.2f} s at {mib(bw)} MiB/s)"
        )
    if flat:
        # Not fallen over several passes: not "converging", whatever one pass's rate says;
        # too short a stretch to call a stall.
        return Convergence.UNKNOWN, (
            f"{NOT_FALLING}~{mib(window[-1])} MiB left after each of the last"
            f" {len(window)} passes (was {mib(window[0])}) for {secs(span)}; a stall if it"
            f" lasts {secs(cfg.stall_min_s)}"
        )
    if len(boundaries) < 2:
        # One pass measured, and its reading may be capped by the hot set (a lower bound of
        # the rate), or be the pre-flight's idle guest agreeing with a capped reading:
        # calling it "converging" now would be the first verdict to reverse.
        return Convergence.UNKNOWN, (
            f"one pass measured: dirtied {mib(judged)} MiB/s against {mib(bw)} MiB/s (at"
            " least that, the hot set may cap a long pass); the next pass confirms"
        )
    if eta.eta is None:
        if rho < cfg.not_converging_ratio:  # converges, but beyond the planning horizon
            return Convergence.SLOW, (
                f"would take over {secs(cfg.budget_s * cfg.horizon_factor)}: " + keeps_pace
            )
        return Convergence.NOT_CONVERGING, keeps_pace
    total = sit.elapsed_s + eta.eta
    if total > cfg.budget_s:
        return Convergence.SLOW, (
            f"will finish in ~{secs(eta.eta)} ({secs(total)} in all, over the"
            f" {secs(cfg.budget_s)} budget): dirtying {mib(m.rate)} MiB/s against"
            f" {mib(bw)} MiB/s"
        )
    trail = " -> ".join(mib(b) for b in window) if window else "?"
    if hover_s is not None and hover_s >= cfg.stall_min_s:
        # Not stuck (a lucky pass ends it, and the ETA says how long luck takes), but slow
        # for no good reason: a little more max downtime ends it at once (the remedy).
        return Convergence.SLOW, (
            f"for {secs(hover_s)} each pass has left a little more than the {mib(threshold)}"
            f" MiB that fits in the max downtime at {mib(bw)} MiB/s ({trail} MiB): it ends"
            " at a lucky pass, or at once with a little more max downtime"
        )
    if hovering:
        return Convergence.CONVERGING, (
            f"remaining after each pass {trail} MiB: just over the {mib(threshold)} MiB that"
            f" fits in the max downtime at {mib(bw)} MiB/s"
        )
    return Convergence.CONVERGING, (
        f"remaining after each pass {trail} MiB (x{rho:.2f} per pass at {mib(judged)} MiB/s"
        f" dirtied vs {mib(bw)} MiB/s); ~{eta.plan.passes + 1} more pass(es)"
    )


#: The reason prefix of a verdict that is UNKNOWN because the remaining stopped falling:
#: ``steady.SteadyVerdict`` takes it as evidence against a CONVERGING shown.
NOT_FALLING = "not falling: "


def falling_steadily(boundaries: Sequence[float], cfg: EstimatorConfig) -> bool:
    """Whether the remaining at the pass boundaries is falling: by ``rate_tolerance`` over
    the last ``pass_window`` boundaries, or steadily over twice as many (by
    ``rate_tolerance`` over the longer stretch and half as much over the last window). A
    guest dirtying at about the link's rate, its readings wobbling around it, whose
    remaining still shrinks pass after pass (652 -> 532 -> 420 -> 432 -> 362 MiB: a
    key-value store at 60 MiB/s against 60) is slow, not stalled and not "never"; a fall
    that has levelled off (800 -> 400 -> 380 -> 390 -> 385) does not count."""
    window = boundaries[-cfg.pass_window :]
    if len(window) >= 2 and window[-1] < (1.0 - cfg.rate_tolerance) * max(window):
        return True
    longer = boundaries[-(2 * cfg.pass_window - 1) :]
    return (
        len(longer) >= 2 * cfg.pass_window - 1
        and longer[-1] < (1.0 - cfg.rate_tolerance) * longer[0]
        and window[-1] < (1.0 - cfg.rate_tolerance / 2.0) * max(window)
    )


def flat_since(
    boundaries: Sequence[float],
    times: Sequence[float],
    cfg: EstimatorConfig,
    threshold: float,
) -> float | None:
    """The job time since which the remaining at the pass boundaries has not fallen (by
    ``rate_tolerance``) while above ``stall_margin x threshold``, over at least
    ``pass_window`` boundaries; ``None`` if it is falling. Without times: ``-inf``."""
    if len(boundaries) < cfg.pass_window or boundaries[-1] <= cfg.stall_margin * threshold:
        return None
    last = boundaries[-1]
    start = len(boundaries) - 1
    while start > 0 and last >= (1.0 - cfg.rate_tolerance) * boundaries[start - 1]:
        start -= 1
    if len(boundaries) - start < cfg.pass_window:
        return None
    return times[start] if len(times) == len(boundaries) else -math.inf


def predict_verdict(sit: Situation, eta: EtaBand, cfg: EstimatorConfig) -> tuple[Convergence, str]:
    """The verdict on a migration that has not started (``predict``)."""
    m = sit.model
    bw = sit.bandwidth
    pace = f"dirtying {mib(m.rate)} MiB/s against {mib(bw)} MiB/s bandwidth"
    if eta.eta is None:
        hot = f"; a hot set of ~{mib(m.hot)} MiB re-dirtied each pass" if m.hot else ""
        return Convergence.NOT_CONVERGING, pace + hot
    if sit.auto_converge is not None and eta.plan.throttle:
        pace += (
            f"; auto-converge would throttle the guest's CPU by ~{eta.plan.throttle * 100:.0f} %"
            f" before it converges (by up to {sit.auto_converge.maximum * 100:.0f} % if the"
            " guest keeps its pace until the top of QEMU's ladder)"
        )
    if eta.eta > cfg.budget_s:
        return Convergence.SLOW, f"predicted {secs(eta.eta)}, over the budget: " + pace
    return Convergence.CONVERGING, f"predicted ~{secs(eta.eta)}: " + pace
