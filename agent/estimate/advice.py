"""The verdict on a migration and the remedies for one that is not doing well. Pure.

``verdict`` judges a running migration from its dirty model and the remaining at the pass
boundaries ("windows, not single samples"); ``predict_verdict`` judges one before it starts;
``recommendations`` proposes max downtime, bandwidth, post-copy or abort, each with its
predicted effect from the same pass model as the ETA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def verdict(
    *,
    sit: Situation,
    eta: EtaBand,
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
    fmt_left = f"; ~{mib(left)} MiB left after each pass" if left is not None else ""
    keeps_pace = f"dirtying {mib(m.rate)} MiB/s against {mib(bw)} MiB/s bandwidth{fmt_left}"
    if in_pass1:
        # Only a measurement may judge before the first boundary: the pre-flight one.
        if (
            m.basis is EtaBasis.PREFLIGHT
            and bw > 0
            and m.rate_low >= bw
            and (m.hot is None or m.hot > cfg.stall_margin * threshold)
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
        )
    ac = sit.auto_converge
    if ac is not None:
        # QEMU throttles the guest until pre-copy converges: the plan follows its ladder,
        # so the plan, not the rate seen now, says whether and when it ends.
        now = f"auto-converge throttles the guest's CPU by {ac.throttle * 100:.0f} %"
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
    if rho >= cfg.not_converging_ratio and (left is None or left > threshold):
        return Convergence.NOT_CONVERGING, keeps_pace
    window = list(boundaries[-cfg.pass_window :])
    if (
        len(window) >= cfg.pass_window
        and window[-1] >= (1.0 - cfg.rate_tolerance) * window[0]
        and window[-1] > cfg.stall_margin * threshold
    ):
        return Convergence.STALLED, (
            f"~{mib(window[-1])} MiB left after each of the last {len(window)} passes"
            f" (was {mib(window[0])}); switch-over needs under {mib(threshold)} MiB"
            f" ({sit.max_downtime_s:.2f} s at {mib(bw)} MiB/s)"
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
    return Convergence.CONVERGING, (
        f"remaining after each pass {trail} MiB (x{rho:.2f} per pass at {mib(m.rate)} MiB/s"
        f" dirtied vs {mib(bw)} MiB/s); ~{eta.plan.passes + 1} more pass(es)"
    )


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
            f"; auto-converge would throttle the guest's CPU, by up to"
            f" {eta.plan.throttle * 100:.0f} % before it converges"
        )
    if eta.eta > cfg.budget_s:
        return Convergence.SLOW, f"predicted {secs(eta.eta)}, over the budget: " + pace
    return Convergence.CONVERGING, f"predicted ~{secs(eta.eta)}: " + pace
