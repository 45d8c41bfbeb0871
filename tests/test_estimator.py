"""Tests for the live estimator and predict() (agent/estimate/estimator.py and
prediction.py), on QEMU-like runs."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import migwatch.agent.estimate.estimator as estimator_module
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migwatch.agent.backends.trace import read_trace
from migwatch.agent.backends.tracefacts import (
    memory_size_hint,
    preflight_of,
    resident_of,
    source_steps,
    true_duration_s,
)
from migwatch.agent.estimate.estimator import (
    EstimatorConfig,
    MigrationEstimator,
    predict,
)
from migwatch.agent.model import (
    MIB,
    Action,
    Convergence,
    Estimate,
    EtaBasis,
    JobSample,
    Limits,
    Preflight,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def synth(
    mem_mib: float,
    bw_mib: float,
    rate_mib: float,
    hot_mib: float,
    *,
    downtime: float = 0.3,
    zero_mib: float = 0.0,
    poll_ticks: int = 5,
    max_s: float = 120.0,
) -> tuple[list[JobSample], float | None]:
    """A QEMU-like pre-copy: 50 ms bursts at the bandwidth, a sync whenever what is pending
    drops below bandwidth x downtime, the sync adding min(rate x pass, hot set), the dirty
    rate refreshed over >= 1 s. Pass 1 meets `zero_mib` of zero pages at its end. Returns the
    samples (every `poll_ticks` x 50 ms) and the switch-over time (None: never)."""
    step = 0.05
    total, bw, rate, hot = mem_mib * MIB, bw_mib * MIB, rate_mib * MIB, hot_mib * MIB
    zero = zero_mib * MIB
    threshold = bw * downtime
    remaining, processed, iteration = total, 0.0, 1
    pass_start = last_rate = 0.0
    dirty_pages = 0
    samples: list[JobSample] = []
    tick = 0
    while tick * step < max_s:
        tick += 1
        t = tick * step
        sent = min(bw * step, remaining)
        remaining -= sent
        processed += sent
        if iteration == 1 and remaining <= zero:
            remaining = 0.0
        if remaining < threshold:
            period = t - pass_start
            new = min(rate * period, hot)
            if t - last_rate >= 1.0:
                dirty_pages = int(new / max(period, step) / 4096)
                last_rate = t
            remaining += new
            if remaining < threshold:
                return samples, t
            iteration += 1
            pass_start = t
        if tick % poll_ticks == 0:
            samples.append(
                JobSample(
                    elapsed_s=round(t, 3),
                    memory_total=int(total),
                    memory_processed=int(processed),
                    memory_remaining=int(remaining),
                    memory_bps=int(bw),
                    dirty_pages_per_s=dirty_pages,
                    iteration=iteration,
                )
            )
    return samples, None


def pass1_samples(mem_mib: int, bw_mib: int, n: int, step_s: float = 0.5) -> list[JobSample]:
    """``n`` samples of pass 1, one every ``step_s``: a guest of ``mem_mib`` sent at
    ``bw_mib`` MiB/s, no zero pages yet."""
    return [
        JobSample(
            elapsed_s=step_s * (i + 1),
            memory_total=mem_mib * MIB,
            memory_processed=int(bw_mib * MIB * step_s * (i + 1)),
            memory_remaining=int(mem_mib * MIB - bw_mib * MIB * step_s * (i + 1)),
            memory_bps=bw_mib * MIB,
            iteration=1,
        )
        for i in range(n)
    ]


def replay(
    samples: list[JobSample],
    limits: Limits,
    *,
    preflight: Preflight | None = None,
    config: EstimatorConfig | None = None,
) -> list[Estimate]:
    est = MigrationEstimator(config or EstimatorConfig(), preflight)
    return [est.observe(s, limits) for s in samples]


def check_invariants(e: Estimate) -> None:
    if e.eta_s is not None:
        assert e.eta_s >= 0
        assert e.eta_low_s is not None and 0 <= e.eta_low_s <= e.eta_s
        if e.eta_high_s is not None:
            assert e.eta_s <= e.eta_high_s
    if e.eta_low_s is not None:
        assert e.eta_low_s >= 0
    if e.projected_remaining_bytes is not None:
        assert e.projected_remaining_bytes >= 0


# --- the live estimator -------------------------------------------------------------------


def test_public_names_stay_importable_from_estimator() -> None:
    """The names other modules import from ``migwatch.agent.estimate.estimator`` are still there."""
    for name in (
        "EstimatorConfig",
        "MigrationEstimator",
        "predict",
        "preflight_dirty_model",
        "fit_preflight",
        "plan_passes",
        "PassPlan",
    ):
        assert name in estimator_module.__all__ and hasattr(estimator_module, name)


LIMITS = Limits(max_downtime_s=0.3, max_bandwidth_bps=50 * MIB)


def test_setup_sample_has_no_eta() -> None:
    """Before the first memory pass (and without disks) nothing can be estimated."""
    e = MigrationEstimator().observe(JobSample(elapsed_s=0.25), LIMITS)
    assert e.eta_s is None and e.convergence is Convergence.UNKNOWN
    assert e.basis is EtaBasis.UNKNOWN


def test_first_pass_basis_default_then_preflight() -> None:
    """Pass 1 leans on the default assumption, or on the pre-flight measurement if given."""
    samples, _ = synth(512, 50, 10, 128, max_s=3)
    plain = replay(samples, LIMITS)[-1]
    prior = replay(samples, LIMITS, preflight=Preflight(0.0, {1: 10, 2: 10, 4: 10}))[-1]
    assert plain.basis is EtaBasis.DEFAULT and plain.dirty_rate_bps is None
    assert prior.basis is EtaBasis.PREFLIGHT
    assert prior.dirty_rate_bps == pytest.approx(10 * MIB)
    assert plain.convergence is Convergence.UNKNOWN


def test_converging_migration_eta_and_verdict() -> None:
    """rho = 1/3: after pass 1 the ETA is within 5 %; the verdict waits for a second reading
    (one pass's rate may be capped by the hot set) and is CONVERGING from pass 3."""
    samples, done = synth(1024, 60, 20, 512)
    assert done is not None
    limits = Limits(max_bandwidth_bps=60 * MIB)
    estimates = replay(samples, limits)
    for s, e in zip(samples, estimates):
        check_invariants(e)
        assert e.convergence not in (Convergence.NOT_CONVERGING, Convergence.STALLED)
        if s.iteration >= 2:
            expected = Convergence.CONVERGING if s.iteration >= 3 else Convergence.UNKNOWN
            assert e.convergence is expected and e.basis is EtaBasis.LIVE
            assert e.eta_s is not None
            assert abs(s.elapsed_s + e.eta_s - done) / done < 0.05
            assert e.eta_low_s is not None and e.eta_high_s is not None
            assert e.eta_low_s <= done - s.elapsed_s <= e.eta_high_s


def test_band_narrows_as_passes_accumulate() -> None:
    """The band is wider in pass 1 (assumed rate) than once passes were measured."""
    samples, _ = synth(1024, 60, 20, 512)
    estimates = replay(samples, Limits(max_bandwidth_bps=60 * MIB))
    width = [(e.eta_high_s or math.inf) - (e.eta_low_s or 0) for e in estimates if e.eta_s]
    first = [w for s, w in zip(samples, width) if s.iteration == 1]
    later = [w for s, w in zip(samples[len(samples) - len(width) :], width) if s.iteration >= 3]
    assert later and max(later) < min(first)


def test_non_converging_flagged_within_three_iterations() -> None:
    """200 MiB/s over a 256 MiB hot set at 50 MiB/s: NOT_CONVERGING by iteration 3, no ETA."""
    samples, done = synth(1024, 50, 200, 256, max_s=40)
    assert done is None
    estimates = replay(samples, LIMITS)
    flagged = [
        (s, e) for s, e in zip(samples, estimates) if e.convergence is Convergence.NOT_CONVERGING
    ]
    assert flagged and flagged[0][0].iteration <= 3
    _, e = flagged[-1]
    assert e.eta_s is None
    assert "MiB/s against" in e.reason and "bandwidth" in e.reason
    assert [r.action for r in e.recommendations] == [Action.ABORT]


def test_non_converging_recommends_postcopy_when_allowed() -> None:
    """With the post-copy flag, post-copy replaces the abort."""
    samples, _ = synth(1024, 50, 200, 256, max_s=40)
    e = replay(samples, Limits(max_bandwidth_bps=50 * MIB, postcopy_allowed=True))[-1]
    actions = [r.action for r in e.recommendations]
    assert Action.POST_COPY in actions and Action.ABORT not in actions


def test_small_hot_set_recommends_max_downtime() -> None:
    """A 64 MiB hot set rewritten every pass fits in ~1.5 s: raise max downtime to that."""
    samples, _ = synth(512, 50, 200, 64, max_s=30)
    e = replay(samples, LIMITS)[-1]
    assert e.convergence is Convergence.NOT_CONVERGING
    rec = {r.action: r for r in e.recommendations}[Action.RAISE_MAX_DOWNTIME]
    assert rec.max_downtime_s is not None and 64 / 50 <= rec.max_downtime_s <= 2.0
    assert rec.predicted_eta_s is not None and rec.predicted_eta_s < 2.0


def test_stalled_when_boundaries_stop_falling() -> None:
    """Remaining ~100 MiB at every boundary, though the dirty rate reads low: not CONVERGING
    once three boundaries show no fall, and STALLED once that has lasted stall_min_s."""
    samples = pass1_samples(1024, 50, n=38)
    t = samples[-1].elapsed_s
    for it in range(2, 8):  # passes of 2 s: 100 MiB falling at 50 MiB/s
        for k in range(4):
            t += 0.5
            samples.append(
                JobSample(
                    elapsed_s=t,
                    memory_total=1024 * MIB,
                    memory_processed=0,
                    memory_remaining=int((100 - 25 * k) * MIB),
                    memory_bps=50 * MIB,
                    dirty_pages_per_s=int(10 * MIB / 4096),
                    iteration=it,
                )
            )
    estimates = replay(samples, LIMITS)
    verdicts = [e.convergence for e in estimates]
    assert Convergence.STALLED in verdicts
    first = verdicts.index(Convergence.STALLED)
    assert samples[first].iteration == 4  # three boundaries after pass 1
    assert "left after each pass for 5.0 s" in estimates[first].reason
    flat = next(e for s, e in zip(samples, estimates) if s.iteration == 4)
    assert flat.convergence is Convergence.UNKNOWN and "not falling" in flat.reason


def test_slow_when_over_budget() -> None:
    """A migration that will finish after the budget is SLOW, with a bandwidth remedy."""
    samples, _ = synth(1024, 60, 20, 512, max_s=23)
    config = EstimatorConfig(budget_s=25)
    e = replay(samples, Limits(max_bandwidth_bps=60 * MIB), config=config)[-1]
    assert e.convergence is Convergence.SLOW and e.eta_s is not None
    rec = {r.action: r for r in e.recommendations}[Action.RAISE_BANDWIDTH]
    assert rec.max_bandwidth_bps is not None and rec.max_bandwidth_bps > 60 * MIB


def test_postcopy_eta_is_remaining_over_rate() -> None:
    """In post-copy every page goes once: ETA = remaining / post-copy rate."""
    est = MigrationEstimator()
    limits = Limits(postcopy_allowed=True, postcopy_bandwidth_bps=20 * MIB)
    e = est.observe(
        JobSample(
            elapsed_s=20.0,
            memory_total=1024 * MIB,
            memory_remaining=200 * MIB,
            memory_bps=20 * MIB,
            iteration=3,
            postcopy_requests=5,
        ),
        limits,
        postcopy=True,
    )
    assert e.eta_s == pytest.approx(10.0)
    assert e.convergence is Convergence.CONVERGING and e.basis is EtaBasis.LIVE
    check_invariants(e)


def test_disk_phase_needs_memory_size() -> None:
    """During the disk mirror the ETA needs the guest's RAM size; without it, only a floor."""
    samples = [
        JobSample(
            elapsed_s=0.5 * i,
            disk_total=512 * MIB,
            disk_processed=int(25 * MIB * i),
            disk_remaining=int(512 * MIB - 25 * MIB * i),
        )
        for i in range(1, 8)
    ]
    plain = replay(samples, LIMITS)[-1]
    assert plain.eta_s is None and plain.eta_low_s == pytest.approx((512 - 175) / 50, rel=0.05)
    hinted_est = MigrationEstimator(memory_bytes=512 * MIB)
    hinted = [hinted_est.observe(s, LIMITS) for s in samples][-1]
    assert plain.eta_low_s is not None and hinted.eta_s is not None
    assert hinted.eta_s > plain.eta_low_s + 512 / 50 * 0.5


def test_disk_phase_counts_the_whole_memory_pass() -> None:
    """With ``memory_bytes`` the disk-phase ETA is the disk copy plus pass 1 of all RAM."""
    samples = [
        JobSample(
            elapsed_s=0.5 * i,
            disk_total=256 * MIB,
            disk_processed=int(50 * MIB * 0.5 * i),
            disk_remaining=int(256 * MIB - 50 * MIB * 0.5 * i),
        )
        for i in range(1, 5)
    ]
    est = MigrationEstimator(memory_bytes=1024 * MIB)
    e = [est.observe(s, LIMITS) for s in samples][-1]
    disk_s = (256 - 100) / 50
    assert e.eta_s is not None and e.eta_low_s is not None and e.eta_high_s is not None
    assert e.eta_s >= disk_s + (1024 - 12.5) / 50  # and the dirty passes after it
    assert e.eta_low_s < disk_s + 1024 / 50 / 2 + 1  # up to half of RAM may be zero pages
    assert e.basis is EtaBasis.DEFAULT


def test_band_holds_a_zero_page_tail_late_in_pass_1() -> None:
    """A guest whose top 40 % of RAM was never written: the band's low edge allows it."""
    samples, done = synth(1024, 100, 5, 64, zero_mib=410)
    assert done is not None
    estimates = replay(samples, Limits(max_bandwidth_bps=100 * MIB))
    for s, e in zip(samples, estimates):
        if s.iteration == 1 and e.eta_low_s is not None:
            assert e.eta_low_s <= done - s.elapsed_s


def test_joining_mid_migration() -> None:
    """An agent that starts watching in pass 4 still estimates, without a false flag."""
    samples, done = synth(1024, 60, 20, 512)
    late = [s for s in samples if s.iteration >= 4]
    estimates = replay(late, Limits(max_bandwidth_bps=60 * MIB))
    assert done is not None and late
    for e in estimates:
        check_invariants(e)
        assert e.convergence not in (Convergence.NOT_CONVERGING, Convergence.STALLED)
    assert estimates[-1].eta_s is not None


def test_repeated_sample_returns_previous_estimate() -> None:
    """A sample that does not move the job clock forward changes nothing."""
    samples, _ = synth(256, 50, 5, 64, max_s=2)
    est = MigrationEstimator()
    last = [est.observe(s, LIMITS) for s in samples][-1]
    assert est.observe(samples[0], LIMITS) is last


def test_predict_idle_guest() -> None:
    """An idle 512 MiB guest at 50 MiB/s: one pass, ~(512 - leftover) / 50 s."""
    p = predict(512 * MIB, 0, 0.0, None, 50 * MIB, 0.3)
    assert p.convergence is Convergence.CONVERGING and p.basis is EtaBasis.PREFLIGHT
    assert p.eta_s == pytest.approx((512 - 12.5) / 50)
    check_invariants(p)


def test_predict_matches_synthetic_migration() -> None:
    """The pre-flight prediction and a QEMU-like run agree within 5 %."""
    _, done = synth(1024, 60, 20, 512)
    p = predict(1024 * MIB, 0, 20 * MIB, 512 * MIB, 60 * MIB, 0.3)
    assert done is not None and p.eta_s is not None
    assert abs(p.eta_s - done) / done < 0.05


def test_predict_non_converging() -> None:
    """200 MiB/s over 256 MiB at 50 MiB/s will not converge: no ETA, a verdict with numbers."""
    p = predict(1024 * MIB, 0, 200 * MIB, 256 * MIB, 50 * MIB, 0.3)
    assert p.eta_s is None and p.convergence is Convergence.NOT_CONVERGING
    assert "200 MiB/s against 50 MiB/s" in p.reason
    assert p.recommendations


@FAST
@given(
    mem=st.integers(64, 2048),
    bw=st.integers(10, 200),
    rate=st.floats(0, 300),
    hot_frac=st.floats(0.001, 1.0),
    downtime=st.floats(0.05, 2.0),
    zero=st.floats(0, 0.6),
    pf=st.booleans(),
)
def test_synthetic_migrations_keep_invariants(
    mem: int, bw: int, rate: float, hot_frac: float, downtime: float, zero: float, pf: bool
) -> None:
    """On any QEMU-like run: ETA never negative, low <= eta <= high, bytes never negative."""
    samples, _ = synth(
        mem,
        bw,
        rate,
        mem * hot_frac,
        downtime=downtime,
        zero_mib=mem * zero,
        poll_ticks=10,
        max_s=40,
    )
    limits = Limits(max_downtime_s=downtime, max_bandwidth_bps=bw * MIB)
    preflight = Preflight(0.0, {1: rate, 2: rate, 4: rate}) if pf else None
    for e in replay(samples, limits, preflight=preflight):
        check_invariants(e)


@FAST
@given(
    st.lists(
        st.tuples(
            st.floats(0.01, 5),
            st.integers(0, 2**34),
            st.integers(0, 2**34),
            st.integers(0, 2**34),
            st.integers(0, 2**28),
            st.integers(0, 10**6),
            st.integers(0, 30),
            st.integers(0, 2**34),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_arbitrary_samples_keep_invariants(
    rows: list[tuple[float, int, int, int, int, int, int, int, bool]],
) -> None:
    """Even nonsense counters never produce a negative ETA or an inverted band."""
    est = MigrationEstimator(preflight=Preflight(0.0, {1: 50.0, 4: 20.0}))
    t = 0.0
    for dt, total, proc, rem, bps, dirty, it, disk, pc in rows:
        t += dt
        sample = JobSample(
            elapsed_s=t,
            memory_total=total,
            memory_processed=proc,
            memory_remaining=rem,
            memory_bps=bps,
            dirty_pages_per_s=dirty,
            iteration=it,
            disk_total=disk,
            disk_remaining=disk // 2,
            disk_processed=disk // 2,
        )
        check_invariants(est.observe(sample, LIMITS, postcopy=pc))


def test_resident_bytes_sets_pass1_zero_pages() -> None:
    """1024 MiB guest at 100 MiB/s; rss 500 MiB -> 330 MiB non-zero (170 MiB overhead).
    Early in pass 1 (50 MiB sent and walked), 280 MiB of non-zero pages are ahead: ~2.8 s
    plus what the dirtying adds, far less than the ~9.7 s walk without the bound."""
    lim = Limits(max_downtime_s=0.3, max_bandwidth_bps=100 * MIB)
    total = 1024 * MIB
    s0 = JobSample(
        elapsed_s=0.25,
        memory_total=total,
        memory_remaining=total,
        memory_bps=100 * MIB,
        iteration=1,
    )
    s1 = JobSample(
        elapsed_s=0.75,
        memory_total=total,
        memory_remaining=total - 50 * MIB,
        memory_processed=50 * MIB,
        memory_bps=100 * MIB,
        iteration=1,
    )
    plain, known = MigrationEstimator(), MigrationEstimator(resident_bytes=500 * MIB)
    for s in (s0, s1):
        p, k = plain.observe(s, lim), known.observe(s, lim)
    assert p.eta_s is not None and k.eta_s is not None
    assert k.eta_s < 0.6 * p.eta_s
    assert 2.8 <= k.eta_s <= 4.5
    assert k.eta_low_s is not None and k.eta_high_s is not None
    assert k.eta_low_s <= k.eta_s <= k.eta_high_s
    # The slow edge (rss as a hard bound: 500 MiB non-zero, 450 ahead) covers >= 4.5 s.
    assert k.eta_high_s >= 4.5


def test_predict_with_resident_bytes() -> None:
    from migwatch.agent.estimate.estimator import predict

    base = predict(1024 * MIB, 0, 0.0, None, 100 * MIB, 0.3)
    known = predict(1024 * MIB, 0, 0.0, None, 100 * MIB, 0.3, resident_bytes=500 * MIB)
    assert base.eta_s is not None and known.eta_s is not None
    assert base.eta_s == pytest.approx(10.24 - 0.25, abs=0.1)  # all of RAM, leftover aside
    # 330 MiB non-zero: pass 1 walks all but the 25 MiB leftover, 330/1024 of it sent
    assert known.eta_s == pytest.approx(3.30 * 999 / 1024, abs=0.05)


# --- auto-converge on a real recorded migration -----------------------------------------

AC_TRACE = Path(__file__).resolve().parent.parent / "bench" / "traces" / "ac-close.jsonl"


def test_auto_converge_is_followed_once_libvirt_shows_the_throttle() -> None:
    """ac-close (lab): 55 MiB/s over 200 MiB at 50 MiB/s with auto-converge; QEMU throttles
    20 % from pass 4, +10 % every two passes, and the guest's dirtying only collapses at 90 %
    (74.8 s). Without a declared policy nothing says auto-converge is on before libvirt
    reports a throttle: pass 3 is flagged NOT_CONVERGING, as any such guest would be. From
    pass 4 on (QEMU's throttle is a new fact, not a wobble) the verdict is CONVERGING with
    the reason, the band follows QEMU's ladder and holds the true end, and no remedy is
    proposed. The central plan puts the bite halfway up the rest of the ladder (60 % from
    20 %), not knowing this guest's is late: within 30 % at pass 4."""
    trace = read_trace(AC_TRACE)
    true = true_duration_s(trace)
    assert true is not None
    est = MigrationEstimator(
        EstimatorConfig(),
        preflight_of(trace),
        memory_bytes=memory_size_hint(trace),
        resident_bytes=resident_of(trace),
    )
    seen: dict[int, list[Estimate]] = {}
    for step in source_steps(trace):
        undeclared = replace(step.limits, auto_converge=False)
        e = est.observe(step.sample, undeclared, postcopy=step.postcopy)
        seen.setdefault(step.sample.iteration, []).append(e)
    assert seen[3][-1].convergence is Convergence.NOT_CONVERGING
    for it in range(4, 19):
        for e in seen[it]:
            assert e.convergence is Convergence.CONVERGING, (it, e.reason)
            assert "auto-converge throttles the guest's CPU" in e.reason
            assert not e.recommendations
    first = seen[4][0]
    elapsed = next(st.sample.elapsed_s for st in source_steps(trace) if st.sample.iteration == 4)
    assert first.eta_s is not None
    assert abs(elapsed + first.eta_s - true) / true < 0.30
    assert first.eta_low_s is not None and first.eta_high_s is not None
    assert first.eta_low_s <= true - elapsed <= first.eta_high_s


def test_declared_auto_converge_is_never_flagged_on_ac_close() -> None:
    """ac-close with auto-converge declared (the recording's flags, as --migration-policy
    auto-converge would): no sample is NOT_CONVERGING or STALLED, pass 1 included, though the
    guest dirties faster than the link until QEMU's throttle bites."""
    trace = read_trace(AC_TRACE)
    est = MigrationEstimator(
        EstimatorConfig(),
        preflight_of(trace),
        memory_bytes=memory_size_hint(trace),
        resident_bytes=resident_of(trace),
    )
    verdicts = [
        est.observe(step.sample, step.limits, postcopy=step.postcopy).convergence
        for step in source_steps(trace)
    ]
    assert all(step.limits.auto_converge for step in source_steps(trace))
    assert Convergence.NOT_CONVERGING not in verdicts
    assert Convergence.STALLED not in verdicts
    assert verdicts[-1] is Convergence.CONVERGING


def test_pass_1_eta_does_not_swing_with_a_pre_flight_rate_near_the_link() -> None:
    """rp-redis32-hard's pre-flight (46, 37, 36, 24, 16 MiB/s over 1-16 s: a central rate
    of ~37 MiB/s) against a transfer rate wobbling between 37.5 and 39.5 MiB/s: uncapped,
    the geometric tail's length swung the pass-1 ETA between 140 s and 380 s from one
    sample to the next (recorded: 50 s to 1,100 s). The central plan counts at most
    more_passes_min more passes in pass 1 too, so the ETA falls steadily as pass 1 goes; the
    band's slow edge keeps the long tail."""
    pf = Preflight(0.0, {1: 46.0, 2: 37.0, 4: 36.0, 8: 24.0, 16: 16.0})
    est = MigrationEstimator(EstimatorConfig(), pf, memory_bytes=1536 * MIB)
    limits = Limits(max_downtime_s=0.3, max_bandwidth_bps=40 * MIB)
    processed = 0.0
    etas: list[float] = []
    for i in range(80):
        rate = (37.5 if i % 3 else 39.5) * MIB
        processed += rate * 0.5
        e = est.observe(
            JobSample(
                elapsed_s=0.5 * (i + 1),
                memory_total=1536 * MIB,
                memory_processed=int(processed),
                memory_remaining=int(1536 * MIB - processed),
                memory_bps=int(rate),
                iteration=1,
            ),
            limits,
        )
        assert e.eta_s is not None
        etas.append(e.eta_s)
    assert max(etas) < 60.0
    assert all(b <= a + 1.0 for a, b in itertools.pairwise(etas))
