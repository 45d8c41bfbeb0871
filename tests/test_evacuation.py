"""Tests for the pure evacuation planner (agent/estimate/evacuation.py): scheduling, order, band."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migwatch.agent.estimate.evacuation import (
    BandConfig,
    Job,
    Spread,
    lpt_order,
    plan_evacuation,
    post_copy_spread,
    schedule,
    shared_bandwidth,
    total_band,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL_BAND = BandConfig(draws=200)


def _job(
    name: str,
    central: float,
    low: float | None = None,
    high: float | None = None,
    *,
    in_flight: bool = False,
) -> Job:
    spread = Spread(central, central if low is None else low, central if high is None else high)
    return Job(key=f"uuid-{name}", name=name, spread=spread, in_flight=in_flight)


# -- scheduling: table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("durations", "concurrency", "in_flight", "starts", "makespan"),
    [
        ([], 1, [], [], 0.0),
        ([10.0], 1, [], [0.0], 10.0),
        ([10.0, 20.0, 5.0], 1, [], [0.0, 10.0, 30.0], 35.0),
        ([10.0, 20.0, 5.0], 2, [], [0.0, 0.0, 10.0], 20.0),
        ([10.0, 20.0, 5.0], 3, [], [0.0, 0.0, 0.0], 20.0),
        # One in flight for 7 s holds the only slot.
        ([10.0], 1, [7.0], [7.0], 17.0),
        # Two in flight at concurrency 1 (started by hand): the guest waits for both.
        ([10.0], 1, [7.0, 3.0], [7.0], 17.0),
        # At concurrency 2 the guest takes the slot the shorter one frees.
        ([10.0], 2, [7.0, 3.0], [3.0], 13.0),
        # Nothing queued: the longest migration in flight decides.
        ([], 2, [7.0, 30.0], [], 30.0),
    ],
)
def test_schedule_table(
    durations: list[float],
    concurrency: int,
    in_flight: list[float],
    starts: list[float],
    makespan: float,
) -> None:
    """List scheduling starts each guest when a slot frees and ends at the latest end."""
    got_starts, got_makespan = schedule(durations, concurrency, in_flight)
    assert got_starts == starts
    assert got_makespan == makespan


def test_schedule_refuses_zero_concurrency() -> None:
    """Concurrency 0 would never start anything: it is refused."""
    with pytest.raises(ValueError, match="concurrency"):
        schedule([1.0], 0)


def test_lpt_order_longest_first_ties_by_name_skips_blocked_and_flying() -> None:
    """The chosen order is longest first, ties by name; blocked and in-flight jobs are not in it."""
    jobs = [
        _job("b", 5),
        _job("a", 5),
        _job("c", 50),
        Job("uuid-x", "x", None),
        _job("f", 99, in_flight=True),
    ]
    assert [j.name for j in lpt_order(jobs)] == ["c", "a", "b"]


def test_lpt_beats_a_bad_given_order() -> None:
    """Two short guests then a long one at concurrency 2: longest first ends sooner."""
    jobs = [_job("s1", 1), _job("s2", 1), _job("long", 4)]
    given_order = plan_evacuation(jobs, 2, random.Random(0), order_given=True, band=SMALL_BAND)
    chosen = plan_evacuation(jobs, 2, random.Random(0), band=SMALL_BAND)
    assert given_order.total.central == 5.0
    assert chosen.total.central == 4.0
    assert chosen.order == ("uuid-long", "uuid-s1", "uuid-s2")
    assert given_order.order == ("uuid-s1", "uuid-s2", "uuid-long")


def test_plan_places_in_flight_first_and_names_blocked() -> None:
    """In-flight migrations hold a slot from 0; a guest without a duration is left out and named."""
    jobs = [_job("g1", 10), Job("uuid-nc", "nc", None), _job("fly", 6, in_flight=True)]
    plan = plan_evacuation(jobs, 1, random.Random(0), band=SMALL_BAND)
    assert [(p.key, p.order, p.start_s, p.end_s) for p in plan.placed] == [
        ("uuid-fly", 0, 0.0, 6.0),
        ("uuid-g1", 1, 6.0, 16.0),
    ]
    assert plan.blocked == ("uuid-nc",)
    assert not plan.empties
    assert plan.total.central == 16.0


def test_empty_host_plans_zero() -> None:
    """Nothing to move and nothing in flight: the host is empty now."""
    plan = plan_evacuation([], 1, random.Random(0))
    assert plan.total == Spread(0.0, 0.0, 0.0)
    assert plan.empties


# -- band ------------------------------------------------------------------------------


def test_band_of_exact_durations_is_a_point() -> None:
    """Durations without doubt give a total without doubt."""
    plan = plan_evacuation([_job("a", 10), _job("b", 20)], 1, random.Random(3), band=SMALL_BAND)
    assert plan.total == Spread(30.0, 30.0, 30.0)


def test_band_full_correlation_is_the_interval_rule() -> None:
    """At correlation 1, guest bands read as the total's coverage, the band is the plan at
    everyone's low and at everyone's high."""
    guests = [Spread(100, 80, 150), Spread(60, 50, 90), Spread(30, 20, 40)]
    low, high = total_band(
        guests, [], 1, random.Random(1), BandConfig(draws=4000, correlation=1.0, guest_coverage=0.8)
    )
    assert low == pytest.approx(80 + 50 + 20, rel=0.03)
    assert high == pytest.approx(150 + 90 + 40, rel=0.03)


def test_band_narrower_when_independent() -> None:
    """Independent errors partly cancel in a sum: the band is narrower than the interval rule."""
    guests = [Spread(100, 80, 150)] * 8
    lo0, hi0 = total_band(guests, [], 1, random.Random(1), BandConfig(draws=2000, correlation=0))
    lo1, hi1 = total_band(guests, [], 1, random.Random(1), BandConfig(draws=2000, correlation=1))
    assert hi0 - lo0 < 0.6 * (hi1 - lo1)


def test_band_open_above_when_a_guest_band_is() -> None:
    """A guest whose slow edge never converges leaves the total's band open above."""
    plan = plan_evacuation(
        [_job("a", 10, 8, math.inf), _job("b", 5)], 1, random.Random(0), band=SMALL_BAND
    )
    assert plan.total.central == 15.0
    assert math.isinf(plan.total.high)
    assert plan.total.low <= 15.0


def test_same_seed_same_band() -> None:
    """The band depends on the RNG only through its seed: a re-call gives the same plan."""
    jobs = [_job("a", 10, 5, 20), _job("b", 40, 30, 70), _job("c", 25, 20, 28)]
    p1 = plan_evacuation(jobs, 2, random.Random(42))
    p2 = plan_evacuation(jobs, 2, random.Random(42))
    assert p1 == p2


def test_band_config_rejects_nonsense() -> None:
    """A correlation outside 0..1 or a coverage outside (0, 1) is refused."""
    with pytest.raises(ValueError, match="correlation"):
        BandConfig(correlation=1.5)
    with pytest.raises(ValueError, match="total_coverage"):
        BandConfig(total_coverage=1.0)


def test_spread_rejects_disordered_edges() -> None:
    """A band with low above central is a bug, not a duration."""
    with pytest.raises(ValueError, match="low <= central"):
        Spread(10, 12, 20)


# -- helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_migration", "link", "concurrency", "expected"),
    [
        (100, None, 4, 100),  # no shared bottleneck: each keeps its limit
        (100, 300, 2, 100),  # a 150 share is more than its own limit
        (100, 300, 4, 75),  # four share 300
        (100, 300, 1, 100),
    ],
)
def test_shared_bandwidth(
    per_migration: int, link: int | None, concurrency: int, expected: int
) -> None:
    """A migration gets the smaller of its own limit and an even share of the link."""
    assert shared_bandwidth(per_migration, link, concurrency) == expected


def test_post_copy_spread() -> None:
    """Post-copy after pass 1: RAM once, then the hot set once; the low edge sends RAM only."""
    s = post_copy_spread(4096.0, 1024.0, 100.0)
    assert s == Spread(central=51.2, low=40.96, high=51.2)


# -- properties ------------------------------------------------------------------------

_spreads = st.builds(
    lambda c, lo, hi: Spread(c, c * lo, c * hi),
    st.floats(0.5, 1000),
    st.floats(0.2, 1.0),
    st.floats(1.0, 3.0),
)
_jobs = st.lists(_spreads, min_size=1, max_size=8).map(
    lambda ss: [Job(f"u{i}", f"g{i}", s) for i, s in enumerate(ss)]
)
_flying = st.lists(_spreads, max_size=3).map(
    lambda ss: [Job(f"f{i}", f"f{i}", s, in_flight=True) for i, s in enumerate(ss)]
)


@FAST
@given(_jobs, _flying, st.integers(1, 4), st.integers(0, 2**32))
def test_total_at_least_longest_and_band_contains_central(
    jobs: list[Job], flying: list[Job], concurrency: int, seed: int
) -> None:
    """The total is at least the longest single migration, and its band contains it."""
    plan = plan_evacuation(jobs + flying, concurrency, random.Random(seed), band=SMALL_BAND)
    longest = max(j.spread.central for j in jobs + flying if j.spread is not None)
    assert plan.total.central >= longest - 1e-9
    assert plan.total.low <= plan.total.central <= plan.total.high
    # Work conservation: no schedule beats the total work spread over the slots.
    work = sum(j.spread.central for j in jobs if j.spread is not None)
    assert plan.total.central >= work / max(concurrency, 1) - 1e-9


@FAST
@given(_jobs, _flying, st.integers(0, 2**32))
def test_two_at_a_time_never_slower_than_one(jobs: list[Job], flying: list[Job], seed: int) -> None:
    """Concurrency 2 empties the host no later than concurrency 1."""
    one = plan_evacuation(jobs + flying, 1, random.Random(seed), band=SMALL_BAND)
    two = plan_evacuation(jobs + flying, 2, random.Random(seed), band=SMALL_BAND)
    assert two.total.central <= one.total.central + 1e-9


@FAST
@given(_jobs, st.integers(1, 4))
def test_every_planned_guest_starts_once_within_the_slots(
    jobs: list[Job], concurrency: int
) -> None:
    """Each guest is placed exactly once, and no more than `concurrency` run at any start."""
    plan = plan_evacuation(jobs, concurrency, random.Random(0), band=BandConfig(draws=1))
    assert sorted(p.key for p in plan.placed) == sorted(j.key for j in jobs)
    for p in plan.placed:
        running = [q for q in plan.placed if q.start_s <= p.start_s < q.end_s]
        assert len(running) <= concurrency


@FAST
@given(_jobs, st.integers(1, 3), st.integers(0, 2**32))
def test_band_within_the_interval_rule(jobs: list[Job], concurrency: int, seed: int) -> None:
    """Whatever the correlation, the band stays within the plan at all lows and all highs."""
    plan = plan_evacuation(jobs, concurrency, random.Random(seed), band=SMALL_BAND)
    order = {k: i for i, k in enumerate(plan.order)}
    ordered = sorted(jobs, key=lambda j: order[j.key])
    # The guest bands are 10th-90th percentiles and the total's too: the total's edges can
    # sit beyond them only by the draws' tails; 3x each edge's distance bounds that loosely.
    lows = [
        max(0.0, j.spread.central - 3 * (j.spread.central - j.spread.low))
        for j in ordered
        if j.spread
    ]
    highs = [j.spread.central + 3 * (j.spread.high - j.spread.central) for j in ordered if j.spread]
    assert plan.total.low >= schedule(lows, concurrency)[1] - 1e-6
    assert plan.total.high <= schedule(highs, concurrency)[1] + 1e-6


def test_band_holds_recorded_totals_on_pretend_hosts() -> None:
    """On hosts made of recorded migrations (bench.evacuation), the agent's band holds the true
    total of at least 80 % of 3- and 5-guest hosts, at concurrency 1 and 2."""
    from bench.evacuation import guests, score

    pool = guests()
    assert len(pool) >= 40
    for size in (3, 5):
        for concurrency in (1, 2):
            s = score(pool, size, concurrency, BandConfig().correlation, 80, seed=15)
            assert s["coverage"] >= 0.8, (size, concurrency, s)
            assert s["width_median"] < 0.6, (size, concurrency, s)  # not honest by being huge
