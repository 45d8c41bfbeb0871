"""Verdicts a person can act on (agent/estimate/steady.py, advice.verdict, drift.py)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migwatch.agent.estimate.advice import flat_since
from migwatch.agent.estimate.drift import EndDrift
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.passmodel import pass1_drains_resident, resident_bound
from migwatch.agent.estimate.steady import SteadyVerdict, verdict_class
from migwatch.agent.model import MIB, Convergence

C, S, N, U = (
    Convergence.CONVERGING,
    Convergence.STALLED,
    Convergence.NOT_CONVERGING,
    Convergence.UNKNOWN,
)


def shown_along(steps: list[tuple[Convergence, int]], first_needed: int = 1) -> list[Convergence]:
    sv = SteadyVerdict(first_needed)
    return [sv.update(raw, raw.name, it).convergence for raw, it in steps]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        # The first decided verdict is free; agreeing readings keep it.
        ([(U, 1), (C, 2), (C, 3)], [U, C, C]),
        # One pass of disagreement is not enough; held over a boundary it is.
        ([(C, 2), (S, 3), (S, 3), (S, 4)], [C, C, C, S]),
        # A reading that agrees again starts the count over.
        ([(C, 2), (S, 3), (C, 3), (S, 4), (S, 4)], [C, C, C, C, C]),
        # Moving between the two flagged kinds is not a reversal.
        ([(N, 2), (S, 3)], [N, S]),
        # An UNKNOWN reading neither supports nor contradicts.
        ([(C, 2), (U, 3), (C, 4)], [C, C, C]),
        # The second reversal needs two boundaries.
        ([(C, 2), (S, 3), (S, 4), (C, 5), (C, 6), (C, 7)], [C, C, S, S, S, C]),
    ],
)
def test_steady_verdict_table(
    steps: list[tuple[Convergence, int]], expected: list[Convergence]
) -> None:
    """The shown verdict changes only on disagreement held over enough pass boundaries."""
    assert shown_along(steps) == expected


def test_key_value_store_flapping_is_held() -> None:
    """The issue's key-value store (71 vs 80 MiB/s): STALLED and CONVERGING alternating at
    every sample over 140 s of one-second passes reverse the shown verdict at most 3 times."""
    steps = [(S if k % 2 else C, 2 + k // 2) for k in range(280)]
    sv = SteadyVerdict()
    shown = [sv.update(raw, raw.name, it).convergence for raw, it in steps]
    changes = sum(1 for a, b in itertools.pairwise(shown) if a != b)
    assert changes == 0 and sv.reversals == 0


def test_not_falling_gives_way_and_new_facts_are_free() -> None:
    """'Not falling' knocks a CONVERGING off at once (a reversal; going on to STALLED is
    not another, going back to CONVERGING needs evidence); after new facts (a throttle) the
    next change follows at once and is not counted as a reversal."""
    sv = SteadyVerdict()
    assert sv.update(C, "c", 2).convergence is C
    assert sv.update(U, "flat", 3, against_converging=True).convergence is U
    assert sv.update(C, "c", 3).convergence is U
    assert sv.update(S, "s", 3).convergence is S
    assert sv.reversals == 1
    sv.new_facts()
    assert sv.update(C, "throttled", 4).convergence is C
    assert sv.reversals == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([C, S, N, U, Convergence.SLOW]), st.integers(0, 2)),
        max_size=300,
    )
)
def test_reversals_are_logarithmic_in_passes(steps: list[tuple[Convergence, int]]) -> None:
    """Whatever the per-sample verdicts, over n pass boundaries the shown verdict reverses
    at most log2(n + 1) + 1 times, and never without the boundaries it needed."""
    sv = SteadyVerdict()
    it = 2
    decided: str | None = None
    reversals = 0
    for raw, step in steps:
        it += step
        shown = sv.update(raw, raw.name, it).convergence
        if shown is not U:
            if decided is not None and verdict_class(shown) != decided:
                reversals += 1
            decided = verdict_class(shown)
    assert reversals <= sv.reversals
    assert sv.reversals <= math.log2(it - 1) + 1


def test_flat_since_needs_the_window_and_the_margin() -> None:
    """The remaining has not fallen since the first of the flat boundaries; falling, too few
    boundaries, or near the threshold: None."""
    cfg = EstimatorConfig()
    times = [10.0, 11.0, 12.0, 13.0]
    assert flat_since([400.0, 100.0, 105.0, 100.0], times, cfg, 10.0) == 11.0
    assert flat_since([400.0, 300.0, 200.0, 100.0], times, cfg, 10.0) is None
    assert flat_since([100.0, 100.0], times[:2], cfg, 10.0) is None
    assert flat_since([15.0, 15.0, 15.0, 15.0], times, cfg, 10.0) is None


def test_drift_widens_only_when_the_end_keeps_moving() -> None:
    """A still predicted end has no drift; one receding 0.5 s per second reads as receding,
    and the corrected ETA is longer than the model's."""
    still = EndDrift()
    for k in range(20):
        d = still.add(k * 0.5, 30.0 - k * 0.5)
    assert d.slope == pytest.approx(0.0, abs=1e-9) and d.eta == pytest.approx(20.5)
    moving = EndDrift()
    for k in range(20):
        d = moving.add(k * 0.5, 30.0 - k * 0.25)
    assert d.receding and d.eta > 30.0 - 19 * 0.25


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.01, 5.0), st.floats(0.0, 1e4)), min_size=1, max_size=60))
def test_drift_eta_never_negative(points: list[tuple[float, float]]) -> None:
    """Whatever the ETAs fed in, the drift-corrected ETA is finite and never negative."""
    d = EndDrift()
    t = 0.0
    for dt, eta in points:
        t += dt
        out = d.add(t, eta)
        assert 0.0 <= out.eta < math.inf
        assert abs(out.slope) <= 0.5


def test_loose_resident_memory_yields_to_the_walk() -> None:
    """A 2 GiB guest 1.9 GiB resident whose walk so far found 40 % zero pages: the central
    drain moves past what rss alone says, the slow edge keeps rss's hard bound."""
    memory = 2048.0 * MIB
    bound = resident_bound(memory, 1946.0 * MIB, 170.0 * MIB)
    walked = 1024.0 * MIB
    processed = 0.6 * walked
    central, fast, slow = pass1_drains_resident(
        memory_remaining=memory - walked,
        memory_processed=processed,
        bound=bound,
        memory_total=memory,
    )
    assert slow <= central <= fast
    # what rss alone would give: non-zero ahead = (1946 - 170) - 614 MiB of 1024 left
    rss_central = 1024.0 / (1946.0 - 170.0 - 0.6 * 1024.0)
    assert central > rss_central


@settings(max_examples=200, deadline=None)
@given(
    st.floats(256, 4096),
    st.floats(0.0, 1.2),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 0.6),
)
def test_resident_drains_ordered(
    mem_mib: float, rss_share: float, walked_share: float, sent_share: float, loose: float
) -> None:
    """The fast edge never drains slower than the central value, nor the slow edge faster;
    every drain is at least 1."""
    memory = mem_mib * MIB
    bound = resident_bound(memory, rss_share * memory, 170.0 * MIB)
    walked = walked_share * memory
    c, f, s = pass1_drains_resident(
        memory_remaining=memory - walked,
        memory_processed=sent_share * walked,
        bound=bound,
        memory_total=memory,
        loose_share=loose,
    )
    assert 1.0 <= s <= c <= f


def _verdict_at(rate_mib: float, boundaries: list[float], times: list[float]) -> Convergence:
    from migwatch.agent.estimate.advice import verdict
    from migwatch.agent.estimate.dirtyfit import DirtyModel
    from migwatch.agent.estimate.etaband import Situation, eta_band
    from migwatch.agent.model import EtaBasis

    rate = rate_mib * MIB
    model = DirtyModel(
        rate=rate,
        rate_low=rate,
        rate_high=rate * 1.2,
        hot=None,
        hot_low=0.0,
        basis=EtaBasis.LIVE,
        measured=True,
        live_rate=rate,
        confirmed=True,
    )
    sit = Situation(
        before_memory_s=0.0,
        pass_left=boundaries[-1] * MIB,
        pass_elapsed=0.5,
        drain=1.0,
        drain_fast=1.0,
        bandwidth=100.0 * MIB,
        bandwidth_spread=0.05,
        model=model,
        max_downtime_s=0.3,
        elapsed_s=times[-1] + 0.5,
    )
    cfg = EstimatorConfig()
    conv, _ = verdict(
        sit=sit,
        eta=eta_band(sit, cfg),
        boundaries=[b * MIB for b in boundaries],
        in_pass1=False,
        cfg=cfg,
        boundary_times=times,
    )
    return conv


@pytest.mark.parametrize(
    ("rate", "boundaries", "expected"),
    [
        # Keeping pace with the link, remaining flat: not converging.
        (95.0, [500.0, 480.0, 490.0], Convergence.NOT_CONVERGING),
        # The same reading while the remaining falls clearly: pre-copy is gaining.
        (92.0, [500.0, 420.0, 360.0], Convergence.CONVERGING),
        # Flat for under stall_min_s at a low rate: not CONVERGING, not yet STALLED.
        (30.0, [200.0, 200.0, 200.0], Convergence.UNKNOWN),
    ],
)
def test_one_reading_does_not_outweigh_the_boundaries(
    rate: float, boundaries: list[float], expected: Convergence
) -> None:
    """The per-sample verdict weighs the remaining at the pass boundaries against the rate."""
    times = [10.0 + k for k in range(len(boundaries))]
    assert _verdict_at(rate, boundaries, times) is expected


def test_boundaries_falling_faster_than_the_reading_shorten_the_eta() -> None:
    """Remaining at the pass boundaries halves each pass while the dirty-rate reading says
    x0.9: the central ETA follows the boundaries (the slow edge keeps the reading)."""
    from dataclasses import replace

    from migwatch.agent.estimate.estimator import MigrationEstimator
    from migwatch.agent.model import JobSample, Limits

    samples = [
        JobSample(
            elapsed_s=0.5 * (i + 1),
            memory_total=1024 * MIB,
            memory_processed=25 * MIB * (i + 1),
            memory_remaining=1024 * MIB - 25 * MIB * (i + 1),
            memory_bps=50 * MIB,
            iteration=1,
        )
        for i in range(40)
    ]
    t = samples[-1].elapsed_s
    for it, start in ((2, 200), (3, 100), (4, 50)):
        for k in range(max(start // 25, 1)):
            t += 0.5
            samples.append(
                JobSample(
                    elapsed_s=t,
                    memory_total=1024 * MIB,
                    memory_processed=1024 * MIB + int(t * 25 * MIB),
                    memory_remaining=(start - 25 * k) * MIB,
                    memory_bps=50 * MIB,
                    dirty_pages_per_s=(45 * MIB) // 4096,
                    iteration=it,
                )
            )
    limits = Limits(max_bandwidth_bps=50 * MIB)

    def last(cfg: EstimatorConfig) -> tuple[float, float | None]:
        est = MigrationEstimator(cfg)
        e = [est.observe(s, limits) for s in samples][-1]
        assert e.eta_s is not None
        return e.eta_s, e.eta_high_s

    checked, checked_high = last(EstimatorConfig())
    plain, plain_high = last(replace(EstimatorConfig(), boundary_ratio_weight=0.0))
    assert checked < plain
    assert checked_high == plain_high
