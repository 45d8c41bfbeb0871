"""The tracker: ids per migration, finals published once, records within their bounds."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migwatch.agent.backends.protocol import MigrationInfo, Observation
from migwatch.agent.backends.simulated import CATALOG, SimulatedMigration
from migwatch.agent.core.tracker import Tracker
from migwatch.agent.model import MIB, Direction, JobSample, Limits, Migration, Phase

UUID_A = "a1823c35-4213-4f58-9463-51fe8ccabbf6"
UUID_B = "0b3c3f51-9d8a-4c47-b9d4-2b6f0f6c1e11"
T0 = 1_800_000_000.0


def info(
    uuid: str = UUID_A, direction: Direction = Direction.OUTGOING, started_at: float = T0
) -> MigrationInfo:
    return MigrationInfo(
        domain_uuid=uuid,
        domain_name=f"vm-{uuid[:4]}",
        source_host="h1",
        destination_host="h2",
        direction=direction,
        started_at=started_at,
        memory_bytes=1024 * MIB,
    )


def sample(
    elapsed: float, processed: int = 0, remaining: int = 1024 * MIB, it: int = 1
) -> JobSample:
    return JobSample(
        elapsed_s=elapsed,
        memory_total=1024 * MIB,
        memory_processed=processed,
        memory_remaining=remaining,
        memory_bps=100 * MIB,
        iteration=it,
    )


def obs(
    mi: MigrationInfo, phase: Phase, elapsed: float = 1.0, s: JobSample | None = None
) -> Observation:
    if s is None and mi.direction is Direction.OUTGOING and phase is not Phase.CANCELLED:
        s = sample(elapsed)
    return Observation(info=mi, now=mi.started_at + elapsed, phase=phase, sample=s)


@pytest.fixture
def tracker() -> Tracker:
    return Tracker(lambda: "h1", "test")


def published(tracker: Tracker, o: Observation) -> Migration:
    m = tracker.observe(o)
    assert m is not None
    return m


def test_one_id_per_domain_and_direction_while_active(tracker: Tracker) -> None:
    """Every observation of an active migration maps to one id; each end and domain has its own."""
    out = [published(tracker, obs(info(), Phase.PRECOPY, t)).id for t in (1.0, 2.0, 3.0)]
    assert len(set(out)) == 1
    incoming = published(tracker, obs(info(direction=Direction.INCOMING), Phase.PRECOPY)).id
    other = published(tracker, obs(info(UUID_B), Phase.PRECOPY)).id
    assert len({out[0], incoming, other}) == 3
    assert tracker.active_ids() == {out[0], incoming, other}
    assert UUID_A in out[0] and ".out." in out[0] and ".in." in incoming


def test_repeated_final_is_published_once(tracker: Tracker) -> None:
    """A backend reporting the same end twice (event and poll) yields one final record."""
    mi = info()
    published(tracker, obs(mi, Phase.PRECOPY, 1.0))
    final = published(tracker, obs(mi, Phase.COMPLETED, 2.0))
    assert final.phase is Phase.COMPLETED and final.finished_at == T0 + 2.0
    assert tracker.observe(obs(mi, Phase.COMPLETED, 2.5)) is None
    assert tracker.observe(obs(mi, Phase.FAILED, 3.0)) is None
    assert tracker.active_ids() == set()


def test_stale_running_observation_after_the_final_is_ignored(tracker: Tracker) -> None:
    """A running-state observation of a finished migration (a poll that raced the end) publishes
    nothing: the final state stays the last record of that id."""
    mi = info()
    published(tracker, obs(mi, Phase.PRECOPY, 1.0))
    published(tracker, obs(mi, Phase.COMPLETED, 2.0))
    assert tracker.observe(obs(mi, Phase.PRECOPY, 1.5)) is None
    assert tracker.active_ids() == set()


def test_new_migration_after_a_final_gets_a_new_id(tracker: Tracker) -> None:
    """The same domain migrating again later is a new id, and its own final is published."""
    first = published(tracker, obs(info(), Phase.PRECOPY))
    published(tracker, obs(info(), Phase.CANCELLED, 2.0))
    again = info(started_at=T0 + 60)
    second = published(tracker, obs(again, Phase.PRECOPY))
    assert second.id != first.id
    assert second.phase is Phase.PRECOPY and second.finished_at is None
    assert published(tracker, obs(again, Phase.FAILED, 3.0)).id == second.id
    # A migration that is final at its first sighting is still published.
    third = published(tracker, obs(info(started_at=T0 + 120), Phase.FAILED))
    assert third.id not in (first.id, second.id)


def test_completed_has_zero_eta_and_full_fraction(tracker: Tracker) -> None:
    """A COMPLETED record says ETA 0 (band too) and fraction_done 1; CANCELLED has no ETA."""
    mi = info()
    running = published(tracker, obs(mi, Phase.PRECOPY, 5.0, sample(5.0, 500 * MIB, 524 * MIB)))
    assert running.memory.fraction_done < 1
    done = published(tracker, obs(mi, Phase.COMPLETED, 9.0, sample(9.0, 1100 * MIB, 0, 3)))
    assert (done.eta_s, done.eta_low_s, done.eta_high_s) == (0.0, 0.0, 0.0)
    assert done.memory.fraction_done == 1.0
    assert done.recommendations == () and done.expected_downtime_s is None
    other = info(UUID_B)
    published(tracker, obs(other, Phase.PRECOPY, 5.0))
    cancelled = published(tracker, obs(other, Phase.CANCELLED, 6.0))
    assert (cancelled.eta_s, cancelled.eta_low_s, cancelled.eta_high_s) == (None, None, None)


def test_incoming_end_without_stats_completes_with_zero_eta(tracker: Tracker) -> None:
    """The destination's record, which has no job stats, still completes with ETA 0."""
    mi = info(direction=Direction.INCOMING)
    running = published(tracker, obs(mi, Phase.PRECOPY, 1.0))
    assert running.eta_s is None and running.memory.fraction_done == 0.0
    done = published(tracker, obs(mi, Phase.COMPLETED, 20.0))
    assert done.eta_s == 0.0 and done.memory.fraction_done == 1.0
    assert done.elapsed_s == pytest.approx(20.0)


@pytest.mark.parametrize("scenario", ["converging", "slow", "disk", "quick"])
def test_simulated_runs_keep_fraction_within_bounds_and_complete_at_eta_zero(
    tracker: Tracker, scenario: str
) -> None:
    """Through a whole simulated migration fraction_done stays in [0, 1], the ETA is never
    negative, and the COMPLETED record has ETA 0."""
    spec = CATALOG[scenario]
    sim = SimulatedMigration(spec)
    mi = info()
    last = None
    for _ in range(20_000):
        sim.step(0.5)
        last = published(
            tracker, Observation(mi, T0 + sim.elapsed, sim.phase, sim.limits, sim.sample())
        )
        for t in (last.memory, last.disk):
            assert 0.0 <= t.fraction_done <= 1.0
        for eta in (last.eta_s, last.eta_low_s, last.eta_high_s):
            assert eta is None or eta >= 0
        if sim.phase.terminal:
            break
    assert last is not None and last.phase is Phase.COMPLETED
    assert last.eta_s == 0.0 and last.memory.fraction_done == 1.0


_counts = st.integers(0, 64 * 1024 * MIB)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.01, 30),  # elapsed increment
            _counts,  # total
            _counts,  # processed
            _counts,  # remaining
            st.integers(0, 10_000 * MIB),  # bytes per second
            st.integers(0, 1_000_000),  # dirty pages per second
            st.integers(0, 40),  # iteration
            st.tuples(_counts, _counts, _counts),  # disk total, processed, remaining
            st.sampled_from(
                [Phase.SETUP, Phase.DISK_MIRROR, Phase.PRECOPY, Phase.POSTCOPY, Phase.PAUSED]
            ),
        ),
        min_size=1,
        max_size=25,
    ),
    end=st.sampled_from([Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED, None]),
    max_downtime=st.floats(0.001, 10),
)
def test_fraction_done_never_exceeds_one(
    steps: list[tuple[Any, ...]], end: Phase | None, max_downtime: float
) -> None:
    """Whatever counters a backend reports, fraction_done stays within [0, 1] and ETAs are
    never negative."""
    tracker = Tracker(lambda: "h1", "test")
    mi = info()
    limits = Limits(max_downtime_s=max_downtime, max_bandwidth_bps=100 * MIB)
    elapsed = 0.0
    records = []
    for dt, total, processed, remaining, bps, dirty, it, disk, phase in steps:
        elapsed += dt
        s = JobSample(
            elapsed_s=elapsed,
            memory_total=total,
            memory_processed=processed,
            memory_remaining=remaining,
            memory_bps=bps,
            dirty_pages_per_s=dirty,
            iteration=it,
            disk_total=disk[0],
            disk_processed=disk[1],
            disk_remaining=disk[2],
        )
        records.append(published(tracker, Observation(mi, T0 + elapsed, phase, limits, s)))
    if end is not None:
        records.append(published(tracker, Observation(mi, T0 + elapsed + 1, end, limits)))
    for m in records:
        for t in (m.memory, m.disk):
            assert 0.0 <= t.fraction_done <= 1.0
        for eta in (m.eta_s, m.eta_low_s, m.eta_high_s):
            assert eta is None or eta >= 0
    if end is Phase.COMPLETED:
        assert records[-1].eta_s == 0.0 and records[-1].memory.fraction_done == 1.0


def test_declared_auto_converge_reaches_the_estimator() -> None:
    """With --migration-policy auto-converge, a guest dirtying faster than the link is not
    NOT_CONVERGING after its first pass (QEMU will throttle it); without it, it is."""
    from migwatch.agent.model import Convergence, MigrationPolicy

    def last_verdict(policy: MigrationPolicy) -> Convergence:
        t = Tracker(lambda: "h1", "test", policy=policy)
        mi = info()
        rec = None
        steps = [
            (1.0 + k, 100 * MIB * (k + 1), 1024 * MIB - 100 * MIB * (k + 1), 1) for k in range(9)
        ]
        steps += [(10.5 + k, 1000 * MIB + 100 * MIB * k, 900 * MIB, 2) for k in range(6)]
        steps += [(16.5 + k, 1600 * MIB + 100 * MIB * k, 900 * MIB, 3) for k in range(3)]
        for elapsed, processed, remaining, it in steps:
            s = JobSample(
                elapsed_s=elapsed,
                memory_total=1024 * MIB,
                memory_processed=processed,
                memory_remaining=remaining,
                memory_bps=100 * MIB,
                dirty_pages_per_s=(150 * MIB) // 4096 if it >= 2 else 0,
                iteration=it,
            )
            o = Observation(
                info=mi,
                now=mi.started_at + elapsed,
                phase=Phase.PRECOPY,
                limits=Limits(max_bandwidth_bps=100 * MIB),
                sample=s,
            )
            rec = t.observe(o)
        assert rec is not None
        return rec.convergence

    assert last_verdict(MigrationPolicy()) is Convergence.NOT_CONVERGING
    assert last_verdict(MigrationPolicy(auto_converge=True)) is not Convergence.NOT_CONVERGING
