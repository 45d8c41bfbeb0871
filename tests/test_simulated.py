"""The pure simulated-migration model (pre-copy passes, controls, disk mirror, limits), and
the simulated host's idle guests."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import replace

import pytest
from migwatch.agent.backends.protocol import Observation
from migwatch.agent.backends.simulated import (
    CATALOG,
    SimulatedBackend,
    SimulatedMigration,
    expand_scenarios,
    idle_guests,
)
from migwatch.agent.errors import MigrationGone
from migwatch.agent.model import MIB, JobSample, Phase

TICK = 0.05  # the model's own resolution, so each step is one tick


def phase_of(sim: SimulatedMigration) -> Phase:
    """The phase now (a call, so mypy does not keep an earlier assert's narrowing)."""
    return sim.phase


def run(sim: SimulatedMigration, seconds: float) -> list[tuple[Phase, JobSample]]:
    """Step ``sim`` tick by tick for up to ``seconds``; every (phase, sample), stopping at an
    end."""
    trace = []
    for _ in range(round(seconds / TICK)):
        sim.step(TICK)
        trace.append((sim.phase, sim.sample()))
        if sim.phase.terminal:
            break
    return trace


def test_converging_completes_after_several_passes_having_resent_pages() -> None:
    """The converging guest completes by itself, after at least 3 passes and with re-sends."""
    sim = SimulatedMigration(CATALOG["converging"])
    trace = run(sim, 120)
    assert sim.phase is Phase.COMPLETED
    last = trace[-1][1]
    assert last.iteration >= 3
    assert last.memory_processed > last.memory_total
    assert last.memory_remaining == 0
    assert sim.actual_downtime_s is not None and 0 < sim.actual_downtime_s <= 0.3
    # A switch-over passes through PAUSED before COMPLETED.
    assert Phase.PAUSED in {phase for phase, _ in trace}


def test_remaining_is_a_sawtooth_that_rises_at_each_new_pass() -> None:
    """Within a pass remaining only falls; at each new pass it jumps up."""
    sim = SimulatedMigration(CATALOG["converging"])
    trace = [s for phase, s in run(sim, 120) if phase is Phase.PRECOPY]
    rises = 0
    for prev, cur in itertools.pairwise(trace):
        if cur.iteration == prev.iteration:
            assert cur.memory_remaining <= prev.memory_remaining
        elif cur.iteration == prev.iteration + 1:
            assert cur.memory_remaining > prev.memory_remaining
            rises += 1
    assert rises >= 2


def test_processed_never_decreases_and_setup_shows_zero_counters() -> None:
    """The first quarter second is all zeros; after that processed bytes only grow."""
    sim = SimulatedMigration(CATALOG["quick"])
    trace = run(sim, 60)
    phase0, first = trace[0]
    assert phase0 is Phase.SETUP
    assert (first.memory_total, first.memory_processed, first.iteration) == (0, 0, 0)
    processed = [s.memory_processed for _, s in trace]
    assert processed == sorted(processed)


def test_not_converging_never_completes_by_itself() -> None:
    """A guest dirtying faster than the bandwidth is still in pre-copy after 600 simulated s."""
    sim = SimulatedMigration(CATALOG["not-converging"])
    trace = run(sim, 600)
    assert sim.phase is Phase.PRECOPY
    assert not any(phase.terminal or phase is Phase.PAUSED for phase, _ in trace)
    assert trace[-1][1].iteration > 10
    assert trace[-1][1].dirty_bytes_per_s > 0


def test_force_complete_switches_to_postcopy_when_allowed_and_completes() -> None:
    """force_complete on a post-copy-enabled guest goes POSTCOPY, then COMPLETED."""
    sim = SimulatedMigration(CATALOG["not-converging"])
    run(sim, 30)
    assert sim.force_complete() is True
    assert phase_of(sim) is Phase.POSTCOPY
    trace = run(sim, 120)
    assert phase_of(sim) is Phase.COMPLETED
    assert {phase for phase, _ in trace} <= {Phase.POSTCOPY, Phase.COMPLETED}
    assert trace[-1][1].postcopy_requests > 0


def test_force_complete_pauses_when_postcopy_is_not_allowed_and_completes() -> None:
    """Without post-copy, force_complete pauses the guest, which stops dirtying and completes."""
    spec = replace(CATALOG["not-converging"], postcopy_allowed=False)
    sim = SimulatedMigration(spec)
    run(sim, 30)
    assert sim.force_complete() is False
    assert phase_of(sim) is Phase.PAUSED
    run(sim, 120)
    assert phase_of(sim) is Phase.COMPLETED


def test_abort_cancels_and_stays_cancelled() -> None:
    """abort ends the migration as CANCELLED; stepping further changes nothing."""
    sim = SimulatedMigration(CATALOG["converging"])
    run(sim, 5)
    sim.abort()
    assert sim.phase is Phase.CANCELLED
    before = sim.sample()
    sim.step(60)
    assert sim.phase is Phase.CANCELLED
    assert sim.sample() == before


def test_disk_scenario_mirrors_disk_first_with_memory_counters_at_zero() -> None:
    """Non-shared storage: the disk mirror runs with memory at zero, then memory copies."""
    sim = SimulatedMigration(CATALOG["disk"])
    trace = run(sim, 300)
    assert sim.phase is Phase.COMPLETED
    phases = [phase for phase, _ in trace]
    first_mirror = phases.index(Phase.DISK_MIRROR)
    first_memory = phases.index(Phase.PRECOPY)
    assert first_mirror < first_memory
    mirror = [s for phase, s in trace if phase is Phase.DISK_MIRROR]
    assert len(mirror) > 10
    for s in mirror:
        assert (s.memory_total, s.memory_processed, s.memory_remaining, s.iteration) == (0, 0, 0, 0)
        assert s.disk_total >= 2048 * MIB
    disk_done = [s.disk_processed for s in mirror]
    assert disk_done == sorted(disk_done) and disk_done[-1] > disk_done[0]
    memory = [s for phase, s in trace if phase is Phase.PRECOPY]
    assert memory[0].memory_total > 0 and memory[0].iteration == 1
    assert all(s.disk_remaining == 0 for s in memory)


def test_raising_max_downtime_makes_not_converging_complete() -> None:
    """set_limits with a max downtime that fits the hot set lets the stuck guest switch over."""
    sim = SimulatedMigration(CATALOG["not-converging"])
    run(sim, 60)
    assert phase_of(sim) is Phase.PRECOPY
    sim.set_limits(max_downtime_s=15.0, max_bandwidth_bps=None)
    assert sim.limits.max_downtime_s == 15.0
    assert sim.limits.max_bandwidth_bps == 100 * MIB  # left as it was
    run(sim, 120)
    assert phase_of(sim) is Phase.COMPLETED


def test_raising_bandwidth_makes_not_converging_complete() -> None:
    """set_limits with a bandwidth above the dirty rate makes the passes shrink to a switch-over."""
    sim = SimulatedMigration(CATALOG["not-converging"])
    run(sim, 60)
    sim.set_limits(max_downtime_s=None, max_bandwidth_bps=400 * MIB)
    assert sim.limits.max_downtime_s == CATALOG["not-converging"].max_downtime_s
    run(sim, 120)
    assert sim.phase is Phase.COMPLETED


def test_lowering_max_downtime_keeps_converging_from_switching_over() -> None:
    """A tiny max downtime keeps even the converging guest in pre-copy."""
    sim = SimulatedMigration(CATALOG["converging"])
    sim.set_limits(max_downtime_s=0.001, max_bandwidth_bps=None)
    run(sim, 300)
    assert sim.phase is Phase.PRECOPY


def test_expand_scenarios_repeats_and_rejects_unknown_names() -> None:
    """``name*N`` repeats a scenario; an unknown name or count is a ValueError naming it."""
    assert [s.name for s in expand_scenarios(("quick*3", "disk"))] == ["quick"] * 3 + ["disk"]
    with pytest.raises(ValueError, match="'nope'"):
        expand_scenarios(("nope",))
    with pytest.raises(ValueError, match="quick\\*x"):
        expand_scenarios(("quick*x",))


def test_idle_guests_are_named_per_scenario_and_numbered_from_the_second() -> None:
    """The simulated host's idle guests: sim-<scenario>, a repeat numbered -2, stable UUIDs."""
    guests = idle_guests(("quick*2", "converging"))
    assert [name for name, _ in guests.values()] == ["sim-quick", "sim-quick-2", "sim-converging"]
    assert idle_guests(("quick",)).keys() <= guests.keys()


@pytest.mark.asyncio(loop_scope="function")
async def test_migrate_sends_an_idle_guest_away_and_an_aborted_one_stays() -> None:
    """migrate() turns an idle guest into an outgoing migration; once completed it has left
    the host, while one aborted is idle again."""
    backend = SimulatedBackend(
        (), idle=("quick", "not-converging"), interval_s=0.01, speed=50.0, repeat=False
    )
    seen: list[Observation] = []
    task = asyncio.create_task(backend.run(seen.append, lambda *_: None))
    try:
        await asyncio.sleep(0)
        quick = backend.migrate("sim-quick")
        hot = backend.migrate("sim-not-converging")
        assert set(await backend.guests()) == {quick, hot}
        assert (await backend.describe("sim-quick")).migrating
        await backend.abort(hot)
        for _ in range(500):
            if quick not in await backend.guests():
                break
            await asyncio.sleep(0.01)
        assert await backend.guests() == (hot,)  # the aborted one is back, idle
        assert not (await backend.describe("sim-not-converging")).migrating
        with pytest.raises(MigrationGone, match="sim-quick"):
            await backend.describe("sim-quick")
        assert any(o.info.domain_uuid == quick and o.phase is Phase.COMPLETED for o in seen)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
