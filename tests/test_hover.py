"""The switch-over lottery (``hover``): a remaining that hovers just over the switch-over
point in passes of a tenth of a second gets an ETA that grows with the wait, not "one
more pass" for ever."""

from __future__ import annotations

import pytest
from migwatch.agent.estimate.estimator import EstimatorConfig, MigrationEstimator
from migwatch.agent.estimate.etaband import EtaBand
from migwatch.agent.estimate.hover import hovering_since, lottery_band
from migwatch.agent.estimate.passmodel import PassPlan
from migwatch.agent.model import MIB, Action, Convergence, JobSample, Limits

from tests.test_estimator import pass1_samples

CFG = EstimatorConfig()


def test_hovering_since_needs_short_passes_on_average() -> None:
    """Passes averaging 0.1 s (two a sample) hover from where they began; a 3 s pass before
    them is where the hovering starts; too few passes, or long ones, do not hover."""
    times = [10.0, 13.0, 13.25, 13.5, 13.75, 14.0]
    iters = [2, 3, 5, 7, 9, 11]
    assert hovering_since(times, iters, 0.3, CFG) == 13.0  # the 3 s pass from 10 s is not
    assert hovering_since(times[:3], iters[:3], 0.3, CFG) is None  # 2 passes
    assert hovering_since([10.0, 13.0, 16.0, 19.0], [2, 3, 4, 5], 0.3, CFG) is None


def test_lottery_band_is_the_median_wait_and_its_90th_percentile() -> None:
    """Hovered 8 s: the central ETA is 8 s more, the slow edge 72 s, the fast edge the
    plan's (the next sync may be the lucky one); a plan already longer stays."""
    plan = PassPlan(True, 0.1, 40 * MIB, 1)
    band = lottery_band(EtaBand(plan, 0.1, 0.05, 0.4), 8.0)
    assert (band.eta, band.low, band.high) == (8.0, 0.05, 72.0)
    assert lottery_band(EtaBand(plan, 30.0, 20.0, 50.0), 8.0).eta == 30.0
    assert lottery_band(EtaBand(plan, None, None, None), 8.0).eta is None


def _hovering_samples() -> list[JobSample]:
    """Pass 1 of 1 GiB at 120 MiB/s, then 20 s of two ~0.12 s passes per 0.25 s sample,
    each leaving 40-50 MiB against a 36 MiB threshold."""
    samples = pass1_samples(1024, 120, n=34, step_s=0.25)
    t, it = samples[-1].elapsed_s, 2
    for k in range(80):
        t += 0.25
        it += 2
        samples.append(
            JobSample(
                elapsed_s=t,
                memory_total=1024 * MIB,
                memory_processed=0,
                memory_remaining=int((40 + 10 * (k % 2)) * MIB),
                memory_bps=120 * MIB,
                dirty_pages_per_s=int(400 * MIB / 4096),
                iteration=it,
            )
        )
    return samples


def test_hovering_migration_eta_grows_with_the_wait_and_is_not_flagged() -> None:
    """A stressor's 48 MiB hot set at 120 MiB/s against a 36 MiB threshold: after pass 1,
    two passes of ~0.12 s end per 0.25 s sample, each leaving 40-50 MiB. The ETA is about
    as long as the hovering has lasted (the pass model alone said ~0.4 s), it says why, and
    no sample is flagged STALLED or NOT_CONVERGING; once it has hovered 5 s it is SLOW, with
    the remedy that ends it at once (a little more max downtime)."""
    limits = Limits(max_downtime_s=0.3, max_bandwidth_bps=120 * MIB)
    est = MigrationEstimator(CFG)
    samples = _hovering_samples()
    out = [(s, est.observe(s, limits)) for s in samples]
    assert not {Convergence.STALLED, Convergence.NOT_CONVERGING} & {e.convergence for _, e in out}
    hover_start = samples[34].elapsed_s
    late = [(s, e) for s, e in out if s.elapsed_s >= hover_start + 10.0]
    assert late
    for s, e in late:
        assert e.eta_s is not None
        assert e.eta_s == pytest.approx(s.elapsed_s - hover_start, abs=1.0)
        assert e.eta_high_s is not None and e.eta_high_s >= 8 * e.eta_s
        assert "a matter of luck" in e.reason
        # Slow for no good reason, and the remedy says so: a little more max downtime.
        assert e.convergence is Convergence.SLOW
        fix = {r.action: r for r in e.recommendations}.get(Action.RAISE_MAX_DOWNTIME)
        assert fix is not None and fix.max_downtime_s is not None
        assert 0.3 < fix.max_downtime_s <= 1.0, fix.summary


def test_no_lottery_under_auto_converge() -> None:
    """The same passes with auto-converge on: QEMU's throttle ladder raises the odds of each
    draw, so the plan's ETA stands and no sample speaks of luck."""
    limits = Limits(max_downtime_s=0.3, max_bandwidth_bps=120 * MIB, auto_converge=True)
    est = MigrationEstimator(CFG)
    for s in _hovering_samples():
        e = est.observe(s, limits)
        assert "a matter of luck" not in e.reason
