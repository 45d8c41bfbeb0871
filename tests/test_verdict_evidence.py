"""Verdicts weigh the evidence at the time scale it speaks for (issue 12): a pre-flight
reading flags pass 1 only when the reading over about a pass's length outpaces the link, and
a remaining that keeps falling pass after pass is neither stalled nor "never"."""

from __future__ import annotations

import pytest
from migwatch.agent.estimate.advice import falling_steadily
from migwatch.agent.estimate.dirtyfit import ladder_rate_at
from migwatch.agent.estimate.estimator import EstimatorConfig, MigrationEstimator
from migwatch.agent.model import MIB, Convergence, JobSample, Limits, Preflight

from tests.test_estimator import pass1_samples


def test_ladder_rate_at_interpolates_distinct_bytes_in_log_period() -> None:
    """Between two periods the distinct bytes go linearly in log period; outside the ladder
    the nearest end's rate holds; no readings, no rate."""
    ladder = [(1.0, 100.0 * MIB), (4.0, 200.0 * MIB)]
    assert ladder_rate_at(ladder, 2.0) == pytest.approx(150.0 * MIB / 2.0)
    assert ladder_rate_at(ladder, 0.5) == pytest.approx(100.0 * MIB)
    assert ladder_rate_at(ladder, 16.0) == pytest.approx(50.0 * MIB)
    assert ladder_rate_at([], 2.0) is None


def _verdicts(samples: list[JobSample], bw_mib: int, pf: Preflight | None) -> list[Convergence]:
    est = MigrationEstimator(EstimatorConfig(), pf)
    limits = Limits(max_downtime_s=0.3, max_bandwidth_bps=bw_mib * MIB)
    return [est.observe(s, limits).convergence for s in samples]


def test_a_burst_over_one_second_does_not_flag_pass_1() -> None:
    """A stressor read 102 MiB/s over 1 s but 31 over 2 s (its ~80 MiB hot set re-sent in
    ~2 s at 40 MiB/s): the reading over a pass's length says the link keeps up, so pass 1 is
    not flagged on the pre-flight alone (the recorded migration converged)."""
    pf = Preflight(0.0, {1: 102.0, 2: 31.0, 4: 18.0, 8: 10.0, 16: 5.0})
    assert Convergence.NOT_CONVERGING not in _verdicts(pass1_samples(1536, 40, n=12), 40, pf)


def test_a_burst_over_one_second_leaves_an_eta_from_the_reading_over_a_pass() -> None:
    """The same stressor: the central rate is the 2 s reading (31 MiB/s, the one that speaks
    for a ~2 s pass), so pass 1 has a finite ETA; the slow edge keeps the 1 s burst."""
    pf = Preflight(0.0, {1: 102.0, 2: 31.0, 4: 18.0, 8: 10.0, 16: 5.0})
    est = MigrationEstimator(EstimatorConfig(), pf)
    limits = Limits(max_downtime_s=0.3, max_bandwidth_bps=40 * MIB)
    last = [est.observe(s, limits) for s in pass1_samples(1536, 40, n=12)][-1]
    assert last.eta_s is not None and last.dirty_rate_bps is not None
    assert 25 * MIB < last.dirty_rate_bps < 40 * MIB
    assert last.eta_low_s is not None and last.eta_low_s <= last.eta_s


def test_a_hot_set_outpacing_the_link_over_a_pass_flags_pass_1() -> None:
    """A guest reading 70 MiB/s over 4 s and 33 over 8 s, a ~270 MiB hot set that takes ~6 s
    to send at 45 MiB/s: over a pass's length it outpaces the link, so the pre-flight flags
    pass 1 at once."""
    pf = Preflight(0.0, {1: 116.0, 2: 119.0, 4: 70.0, 8: 33.0, 16: 15.0})
    assert _verdicts(pass1_samples(1024, 45, n=12), 45, pf)[0] is Convergence.NOT_CONVERGING


def test_falling_steadily_tells_a_slow_fall_from_a_levelled_one() -> None:
    """A remaining that falls 652 -> 362 MiB over four passes, 14 % over the last two, is
    falling; one that dropped once and then levelled off is not."""
    cfg = EstimatorConfig()
    assert falling_steadily([652.0, 532.0, 420.0, 432.0, 362.0], cfg)
    assert not falling_steadily([800.0, 400.0, 380.0, 390.0, 385.0], cfg)
    assert not falling_steadily([652.0, 532.0, 420.0, 432.0], cfg)  # 3-pass window: -3 %


def test_readings_at_the_link_rate_with_a_falling_remaining_are_not_flagged() -> None:
    """A key-value store's readings wobbling up to the link's rate (47, then 60 and 62 MiB/s
    against 60 MiB/s) while the remaining at each boundary keeps falling (652, 532, 420, 432,
    362, 300 MiB, as recorded in rp-redis64-hard, which converged): never NOT_CONVERGING or
    STALLED. Judged by the last window alone (420 -> 432 -> 362) it was flagged."""
    samples = pass1_samples(1024, 60, n=34)
    t = samples[-1].elapsed_s
    starts = [652, 532, 420, 432, 362, 300]
    readings = [22, 47, 47, 60, 62, 62]  # MiB/s, as the job stats carry them in each pass
    for it, (start, rate) in enumerate(zip(starts, readings, strict=True), start=2):
        steps = int(start / 60 / 0.5)
        for k in range(steps):
            t += 0.5
            samples.append(
                JobSample(
                    elapsed_s=t,
                    memory_total=1024 * MIB,
                    memory_processed=0,
                    memory_remaining=int((start - 30 * (k + 1)) * MIB),
                    memory_bps=60 * MIB,
                    dirty_pages_per_s=int(rate * MIB / 4096),
                    iteration=it,
                )
            )
    verdicts = _verdicts(samples, 60, None)
    assert not {Convergence.NOT_CONVERGING, Convergence.STALLED} & set(verdicts)
