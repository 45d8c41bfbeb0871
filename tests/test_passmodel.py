"""Tests for the pure pre-copy pass arithmetic (agent/estimate/passmodel.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migwatch.agent.estimate.passmodel import (
    MAX_DRAIN,
    AutoConverge,
    PassPlan,
    drain_for,
    pass1_drain,
    plan_passes,
)
from migwatch.agent.model import MIB

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_plan_idle_guest_is_one_pass() -> None:
    """No dirtying: the current pass sends all but the leftover, then switch-over."""
    plan = plan_passes(
        pass_left_bytes=100 * MIB,
        pass_elapsed_s=0.0,
        bandwidth_bps=50 * MIB,
        dirty_rate_bps=0.0,
        hot_set_bytes=None,
        max_downtime_s=0.3,
    )
    # leftover = 50 MiB/s x (0.3 s - 0.05 s) = 12.5 MiB -> (100 - 12.5) / 50 = 1.75 s
    assert plan.converges and plan.passes == 0
    assert plan.time_s == pytest.approx(1.75)


def test_plan_geometric_passes() -> None:
    """rho = 1/3: each pass is a third of the one before, until below threshold - leftover."""
    plan = plan_passes(
        pass_left_bytes=280 * MIB,
        pass_elapsed_s=0.0,
        bandwidth_bps=60 * MIB,
        dirty_rate_bps=20 * MIB,
        hot_set_bytes=None,
        max_downtime_s=0.3,
    )
    first = (280 - 15) / 60  # leftover 15 MiB
    e0 = 20 * first  # MiB dirtied meanwhile; passes until e < 3 MiB: 4
    expected = first + e0 * (1 - (1 / 3) ** 4) / (2 / 3) / 60
    assert plan.converges and plan.passes == 4
    assert plan.time_s == pytest.approx(expected)


@pytest.mark.parametrize(
    ("rate", "hot", "converges"),
    [
        (60.0, None, False),  # dirtying equals the bandwidth
        (200.0, 256.0, False),  # fast writer, hot set far above what fits in the downtime
        (200.0, 2.0, True),  # fast writer on a 2 MiB hot set: fits after one pass
        (10.0, 256.0, True),
    ],
)
def test_plan_convergence_table(rate: float, hot: float | None, converges: bool) -> None:
    """Whether pre-copy ends depends on rate vs bandwidth and on the hot set."""
    plan = plan_passes(
        pass_left_bytes=500 * MIB,
        pass_elapsed_s=2.0,
        bandwidth_bps=50 * MIB,
        dirty_rate_bps=rate * MIB,
        hot_set_bytes=None if hot is None else hot * MIB,
        max_downtime_s=0.3,
    )
    assert plan.converges is converges
    assert math.isinf(plan.time_s) is not converges


def _plan_hot256(rate_mib: float, ac: AutoConverge | None) -> PassPlan:
    """A 256 MiB hot set at 50 MiB/s, dirtied at ``rate_mib`` under ``ac``."""
    return plan_passes(
        pass_left_bytes=256 * MIB,
        pass_elapsed_s=0.0,
        bandwidth_bps=50 * MIB,
        dirty_rate_bps=rate_mib * MIB,
        hot_set_bytes=256 * MIB,
        max_downtime_s=0.3,
        auto_converge=ac,
    )


def test_auto_converge_throttles_until_the_passes_shrink() -> None:
    """110 MiB/s over a 256 MiB hot set at 50 MiB/s never converges by itself. Under
    auto-converge (throttled 20 % now) QEMU adds 10 % every two passes that dirtied more than
    half of what they sent. If the throttle slows the guest proportionally (a CPU-bound
    writer) the passes shrink once 110 x (1 - t) is well under the bandwidth; the central
    plan (a writer the throttle only slows at the top of the ladder, as in the lab) runs the
    ladder to 99 %: eight steps of two passes each, then a last short pass."""
    plan = _plan_hot256
    assert not plan(110, None).converges
    fast = plan(88, AutoConverge(0.2, proportional=True))  # 110 x 0.8 at 20 %
    assert fast.converges and fast.throttle is not None
    assert round(fast.throttle * 10, 6) == round(fast.throttle * 10)  # on the 10 % ladder
    assert 110 * (1 - fast.throttle) < 0.5 * 50  # converging for good at the end
    assert fast.passes >= 2 * round((fast.throttle - 0.2) / 0.1)  # two passes per step
    central = plan(88, AutoConverge(0.2))
    assert central.converges and central.throttle == pytest.approx(0.99)
    assert central.passes == 2 * 8 + 1
    # Each of those passes re-sends the 256 MiB hot set at 50 MiB/s.
    assert central.time_s == pytest.approx((256 - 12.5) / 50 + 16 * 256 / 50, rel=0.05)
    assert fast.time_s < central.time_s
    # Throttled harder already, it ends sooner.
    later = plan(33, AutoConverge(0.7))  # 110 x 0.3
    assert later.converges and later.time_s < central.time_s


def test_auto_converge_bite_halfway_up_the_ladder_ends_between_the_edges() -> None:
    """The central plan's bite (``mid_ladder``): 60 MiB/s at 20 % (75 unthrottled) against
    50 MiB/s. From 20 % the bite is at 59.5 %, so the dirtying holds at 60 MiB/s through
    50 % and falls as 1 - t from the 60 % step (30 MiB/s): the plan ends at 70 %, later
    than the proportional plan and much sooner than the one that bites only at 99 %."""

    def plan(ac: AutoConverge) -> PassPlan:
        return _plan_hot256(60, ac)

    ac = AutoConverge(0.2)
    mid = ac.mid_ladder()
    assert mid.bite == pytest.approx((0.2 + 0.99) / 2)
    central, top, fast = plan(mid), plan(ac), plan(replace(ac, proportional=True))
    assert central.converges and central.throttle == pytest.approx(0.7)
    assert top.throttle == pytest.approx(0.99)
    assert fast.time_s < central.time_s < top.time_s
    # Readings taken under a higher throttle than the one now showed no bite yet.
    assert AutoConverge(0.2, measured_at=0.4).mid_ladder().bite == pytest.approx(0.695)


def test_auto_converge_rate_is_unthrottled_with_the_throttle_it_was_measured_under() -> None:
    """QEMU has just stepped to 99 %; the last pass (50 MiB/s over a 250 MiB hot set) ran at
    90 %. At 99 % that guest dirties a tenth as fast, and the next pass is short; reading the
    50 MiB/s as if measured at 99 % would call it hopeless."""

    def plan(measured_at: float | None) -> PassPlan:
        return plan_passes(
            pass_left_bytes=250 * MIB,
            pass_elapsed_s=0.0,
            bandwidth_bps=50 * MIB,
            dirty_rate_bps=50 * MIB,
            hot_set_bytes=250 * MIB,
            max_downtime_s=0.3,
            auto_converge=AutoConverge(0.99, measured_at=measured_at),
        )

    assert plan(0.9).converges and plan(0.9).time_s < 8.0
    assert not plan(None).converges


def test_auto_converge_cannot_save_a_guest_that_outruns_even_99_percent() -> None:
    plan = plan_passes(
        pass_left_bytes=256 * MIB,
        pass_elapsed_s=0.0,
        bandwidth_bps=1 * MIB,
        dirty_rate_bps=400 * MIB,
        hot_set_bytes=None,
        max_downtime_s=0.3,
        auto_converge=AutoConverge(0.2),
    )
    assert not plan.converges


def test_plan_zero_downtime_never_switches() -> None:
    """A zero max downtime leaves nothing that fits, unless nothing is dirtied."""

    def plan(rate: float) -> bool:
        return plan_passes(
            pass_left_bytes=10 * MIB,
            pass_elapsed_s=1.0,
            bandwidth_bps=50 * MIB,
            dirty_rate_bps=rate,
            hot_set_bytes=None,
            max_downtime_s=0.0,
        ).converges

    assert not plan(1 * MIB)
    assert plan(0.0)


@FAST
@given(
    left=st.floats(0, 4e9),
    more=st.floats(0, 4e9),
    bw=st.floats(1e6, 1e9),
    rate=st.floats(0, 2e8),
    hot=st.one_of(st.none(), st.floats(0, 4e9)),
    downtime=st.floats(0.01, 5),
    drain=st.floats(1, 10),
)
def test_plan_properties(
    left: float,
    more: float,
    bw: float,
    rate: float,
    hot: float | None,
    downtime: float,
    drain: float,
) -> None:
    """Plans are never negative, and more bytes left never means less time."""

    def plan(pass_left: float) -> PassPlan:
        return plan_passes(
            pass_left_bytes=pass_left,
            pass_elapsed_s=0.0,
            bandwidth_bps=bw,
            dirty_rate_bps=rate,
            hot_set_bytes=hot,
            max_downtime_s=downtime,
            drain_factor=drain,
        )

    a, b = plan(left), plan(left + more)
    assert a.time_s >= 0 and a.bytes >= 0
    if a.converges and b.converges:
        assert b.time_s >= a.time_s - 1e-9


# --- pass 1's never-written pages ---------------------------------------------------------


def test_pass1_drain_central_is_the_share_seen() -> None:
    """200 MiB walked, 150 MiB sent: a quarter was zero, so a quarter of what is left is assumed
    zero."""
    d = pass1_drain(
        memory_total=1024 * MIB,
        memory_remaining=824 * MIB,
        memory_processed=150 * MIB,
        never_written_share=0.5,
    )
    assert d.zero_seen_bytes == pytest.approx(50 * MIB)
    assert d.central == pytest.approx(4 / 3)


def test_pass1_drain_optimistic_edge_allows_the_whole_tail() -> None:
    """Late in pass 1 all that is left may be the never-written top of RAM (converge: 134 MiB)."""
    d = pass1_drain(
        memory_total=1024 * MIB,
        memory_remaining=157 * MIB,
        memory_processed=820 * MIB,
        never_written_share=0.5,
    )
    assert d.central < 1.5  # the 47 MiB seen early say little about the tail
    assert d.optimistic == MAX_DRAIN  # up to 512 MiB may be never written: all 157 MiB


def test_pass1_drain_before_anything_was_sent() -> None:
    """With nothing sent yet nothing was seen: both drains are 1."""
    d = pass1_drain(
        memory_total=1024 * MIB,
        memory_remaining=1024 * MIB,
        memory_processed=0,
        never_written_share=0.5,
    )
    assert (d.central, d.optimistic, d.zero_seen_bytes) == (1.0, 1.0, 0.0)


@FAST
@given(
    total=st.floats(1, 1e10),
    remaining_frac=st.floats(0, 1),
    sent_frac=st.floats(0, 1),
    share=st.floats(0, 1),
)
def test_pass1_drain_properties(
    total: float, remaining_frac: float, sent_frac: float, share: float
) -> None:
    """Drains stay within [1, MAX_DRAIN] and the optimistic one is never below the central."""
    remaining = total * remaining_frac
    processed = (total - remaining) * sent_frac
    d = pass1_drain(
        memory_total=total,
        memory_remaining=remaining,
        memory_processed=processed,
        never_written_share=share,
    )
    assert 1.0 <= d.central <= d.optimistic <= MAX_DRAIN
    assert 0.0 <= d.zero_seen_bytes <= total


@pytest.mark.parametrize(
    ("left", "zero", "expected"),
    [
        (100.0, 0.0, 1.0),
        (100.0, 50.0, 2.0),
        (100.0, 100.0, MAX_DRAIN),
        (0.0, 10.0, 1.0),
    ],
)
def test_drain_for_table(left: float, zero: float, expected: float) -> None:
    """The drain factor is what is left over the normal bytes in it, capped at MAX_DRAIN."""
    assert drain_for(left, zero) == pytest.approx(expected)


# --- resident memory (virDomainMemoryStats rss) as a bound on the non-zero pages ------


def test_resident_bound_plain_numbers() -> None:
    from migwatch.agent.estimate.passmodel import resident_bound

    mib = 1024 * 1024
    # 1024 MiB guest, QEMU resident 500 MiB, 170 MiB of it QEMU's own: 330 MiB non-zero.
    b = resident_bound(1024 * mib, 500 * mib, 170 * mib)
    assert b.central == 694 * mib  # 1024 - (500 - 170)
    assert b.low == 524 * mib  # 1024 - 500: overhead 0, the hard bound
    assert b.high == 864 * mib  # 1024 - (500 - 340)
    # Resident above RAM + overhead: nothing known to be zero; clamped to [0, RAM].
    assert resident_bound(512 * mib, 800 * mib, 170 * mib).central == 0
    assert resident_bound(512 * mib, 100 * mib, 170 * mib).central == 512 * mib


def test_pass1_drains_from_resident() -> None:
    from migwatch.agent.estimate.passmodel import pass1_drains_resident, resident_bound

    mib = 1024 * 1024
    b = resident_bound(1024 * mib, 500 * mib, 170 * mib)  # 330 MiB non-zero (central)
    # 130 MiB sent, 824 MiB left to walk: 200 MiB of it non-zero -> drain 824 / 200.
    central, fast, slow = pass1_drains_resident(
        memory_remaining=824 * mib, memory_processed=130 * mib, bound=b, memory_total=1024 * mib
    )
    assert central == pytest.approx(824 / 200)
    assert fast == pytest.approx(20.0)  # 30 MiB of 824 ahead non-zero: capped at MAX_DRAIN
    assert slow == pytest.approx(824 / 370)  # 500 MiB non-zero in all: 370 ahead
    assert fast > central > slow >= 1.0


def test_free_memory_caps_the_never_written_bytes() -> None:
    """The guest's free memory (balloon statistics) caps the zero bytes every edge may
    assume: a never-written page is a free one. 2048 MiB guest, rss 1876 MiB (a tight rss,
    as rp-gzip-mid's): rss alone allows 342 MiB never written and, read as loose, leans the
    central value towards 60 % of RAM; with 360 MiB free, no edge assumes more than 360."""
    from migwatch.agent.estimate.passmodel import pass1_drains_resident, resident_bound

    mib = 1024 * 1024
    plain = resident_bound(2048 * mib, 1876 * mib, 170 * mib)
    capped = resident_bound(2048 * mib, 1876 * mib, 170 * mib, free_bytes=360 * mib)
    assert plain.ceiling == 2048 * mib and capped.ceiling == 360 * mib
    assert capped.central == plain.central == 342 * mib  # under the ceiling: unchanged
    assert capped.high == 360 * mib < plain.high  # the fast edge: at most what is free
    # A guest with less free than rss implies: the ceiling wins everywhere.
    tight = resident_bound(2048 * mib, 1500 * mib, 170 * mib, free_bytes=300 * mib)
    assert tight.central == tight.high == tight.low == 300 * mib

    def drains(b: object) -> tuple[float, float, float]:
        return pass1_drains_resident(
            memory_remaining=1431 * mib,
            memory_processed=617 * mib,
            bound=b,  # type: ignore[arg-type]
            memory_total=2048 * mib,
            loose_share=0.6,
            loose_weight=0.25,
        )

    (c0, f0, _), (c1, f1, _) = drains(plain), drains(capped)
    # Fewer zero pages ahead: pass 1 drains slower, so its end is later and nearer the truth.
    assert c1 < c0 and f1 < f0
    # The central leans a quarter of the way from 342 to the capped 360 MiB never written:
    # 346.5, so 2048 - 346.5 - 617 = 1084.5 MiB non-zero ahead (without the cap: 564 MiB).
    assert c1 == pytest.approx(1431 / 1084.5)
    assert c0 == pytest.approx(1431 / (2048 - (342 + 0.25 * (0.6 * 2048 - 342)) - 617))


def test_pass_cap_truncates_only_an_ill_conditioned_tail() -> None:
    """At x0.97 a pass the geometric tail is cut at the cap; at x0.5 the cap changes
    nothing (the tail is short and well determined); the capped plan still converges."""
    from migwatch.agent.estimate.passmodel import plan_passes

    mib = 1024 * 1024

    def plan(rate_mib: float, cap: int | None) -> float:
        p = plan_passes(
            pass_left_bytes=300 * mib,
            pass_elapsed_s=1.0,
            bandwidth_bps=40 * mib,
            dirty_rate_bps=rate_mib * mib,
            hot_set_bytes=None,
            max_downtime_s=0.3,
            pass_cap=cap,
            pass_cap_rho=0.85,
        )
        assert p.converges
        return p.time_s

    assert plan(38.8, 3) < 0.5 * plan(38.8, None)
    assert plan(20.0, 3) == plan(20.0, None)
