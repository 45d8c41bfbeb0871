"""The on-disk store of final states, and an agent restart that keeps them."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from migwatch.agent.backends.protocol import MigrationInfo, Observation
from migwatch.agent.config import AgentConfig
from migwatch.agent.core.convert import migration_from_pb, migration_to_pb
from migwatch.agent.core.hub import Filter
from migwatch.agent.core.store import SEQUENCE_BLOCK, FinalStore
from migwatch.agent.core.tracker import Tracker, migration_id, track_key
from migwatch.agent.model import (
    Action,
    Convergence,
    Direction,
    EtaBasis,
    Limits,
    Migration,
    Phase,
    Recommendation,
    Transfer,
)
from migwatch.agent.serve.server import running_agent


def _final(i: int, finished_at: float, phase: Phase = Phase.COMPLETED) -> Migration:
    return Migration(
        id=f"00000000-0000-0000-0000-{i:012d}.out.{i}",
        domain_uuid=f"00000000-0000-0000-0000-{i:012d}",
        domain_name=f"vm{i}",
        source_host="a",
        destination_host="b",
        direction=Direction.OUTGOING,
        phase=phase,
        backend="test",
        agent_host="a",
        memory=Transfer(1 << 30, 3 << 29, 0, 50 << 20, 1.0),
        disk=Transfer(1 << 28, 1 << 28, 0, 0, 1.0),
        iteration=5,
        elapsed_s=21.5,
        eta_s=0.0,
        eta_low_s=0.0,
        eta_high_s=0.0,
        eta_basis=EtaBasis.LIVE,
        convergence=Convergence.SLOW,
        convergence_reason="reason",
        recommendations=(Recommendation(Action.RAISE_MAX_DOWNTIME, "s", 1.5, None, 2.0),),
        actual_downtime_s=0.025,
        limits=Limits(0.5, 50 << 20, True),
        started_at=finished_at - 22,
        updated_at=finished_at,
        finished_at=finished_at,
        error_message="boom" if phase is Phase.FAILED else "",
        postcopy_requests=7,
        sequence=i,
    )


def test_protobuf_round_trip_keeps_every_field() -> None:
    """A record converted to migwatch.v1 and back serializes to the same bytes."""
    m = _final(3, 1_800_000_000.0, Phase.FAILED)
    again = migration_from_pb(migration_to_pb(m))
    assert migration_to_pb(again).SerializeToString() == migration_to_pb(m).SerializeToString()
    assert again.recommendations[0].action is Action.RAISE_MAX_DOWNTIME
    assert again.limits.postcopy_allowed and again.error_message == "boom"


def test_store_keeps_finals_within_retention_only(tmp_path: Path) -> None:
    """Saved finals load back oldest first; those older than the retention are deleted."""
    store = FinalStore(tmp_path / "f.sqlite3")
    store.save(_final(1, 1000.0), retention_s=10_000)
    store.save(_final(2, 2000.0), retention_s=10_000)
    store.save(_final(3, 3000.0), retention_s=10_000)
    assert [m.domain_name for m in store.load(since=1500.0)] == ["vm2", "vm3"]
    store.close()
    again = FinalStore(tmp_path / "f.sqlite3")
    assert [m.domain_name for m in again.load(since=0.0)] == ["vm2", "vm3"]
    again.save(_final(4, 9000.0), retention_s=2000)  # prunes what ended before 7000
    assert [m.domain_name for m in again.load(since=0.0)] == ["vm4"]


def test_sequence_floor_survives_restarts_with_one_write_per_block(tmp_path: Path) -> None:
    """Reserving sequences writes once per block and the next run starts above them."""
    store = FinalStore(tmp_path / "f.sqlite3")
    assert store.sequence_floor() == 0
    for seq in range(1, 50):
        store.reserve(seq)
    store.close()
    reopened = FinalStore(tmp_path / "f.sqlite3")
    assert reopened.sequence_floor() == 1 + SEQUENCE_BLOCK


def test_unreadable_row_is_skipped(tmp_path: Path) -> None:
    """A corrupt stored record is skipped, not fatal to the agent's start."""
    store = FinalStore(tmp_path / "f.sqlite3")
    store.save(_final(1, 1000.0), retention_s=10_000)
    store.close()
    with sqlite3.connect(tmp_path / "f.sqlite3") as db:
        db.execute("INSERT INTO finals VALUES ('x', 1001.0, X'DEADBEEF')")
    assert [m.domain_name for m in FinalStore(tmp_path / "f.sqlite3").load(0.0)] == ["vm1"]


@pytest.mark.asyncio(loop_scope="function")
async def test_restarted_agent_serves_the_same_finals_and_a_higher_sequence(tmp_path: Path) -> None:
    """An agent restarted with the same state_dir lists the finals of its previous run
    under the same ids, and its sequence keeps increasing."""
    config = AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("quick", "quick"),
        simulated_speed=20,
        simulated_repeat=False,
        sample_interval_s=0.05,
        state_dir=str(tmp_path),
        grace_s=0.2,
    )
    everything = Filter(include_finished=True)
    async with running_agent(config) as agent:
        for _ in range(100):
            finals = [m for m in agent.hub.matching(everything) if m.phase.terminal]
            if len(finals) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(finals) == 2
        last_sequence = agent.hub.sequence
    async with running_agent(config) as agent:
        kept = [m for m in agent.hub.matching(everything) if m.phase.terminal]
        assert sorted(m.id for m in kept) == sorted(m.id for m in finals)
        assert {m.id: m.sequence for m in kept} == {m.id: m.sequence for m in finals}
        assert agent.hub.sequence > last_sequence


def _info(started_at: float) -> MigrationInfo:
    return MigrationInfo(
        domain_uuid="00000000-0000-0000-0000-000000000042",
        domain_name="vm42",
        source_host="a",
        destination_host="",
        direction=Direction.OUTGOING,
        started_at=started_at,
    )


def test_tracker_reuses_the_id_of_a_job_in_flight_before_a_restart() -> None:
    """A job found again after a restart, with a start time within seconds of the stored
    one, keeps its id; a later job of the same domain gets a new one."""
    before = migration_id(_info(1000.0))
    known = {track_key(_info(1000.0)): (before, 1000.0)}
    tracker = Tracker(lambda: "a", "test", known=known)
    again = tracker.observe(Observation(_info(1001.3), 1010.0, Phase.PRECOPY))
    assert again is not None and again.id == before
    tracker.observe(Observation(_info(1001.3), 1020.0, Phase.COMPLETED))
    later = tracker.observe(Observation(_info(2000.0), 2001.0, Phase.PRECOPY))
    assert later is not None and later.id != before


def test_store_remembers_migrations_in_flight(tmp_path: Path) -> None:
    """In-flight ids survive a reopen and are forgotten when the migration ends."""
    store = FinalStore(tmp_path / "f.sqlite3")
    one, two = _final(1, 100.0), _final(2, 200.0)
    store.remember_active("k1", one, 10.0)
    store.remember_active("k2", two, 20.0)
    store.forget_active("k1")
    store.close()
    again = FinalStore(tmp_path / "f.sqlite3")
    assert again.active() == {"k2": (two.id, 20.0)}
    assert again.active_records()["k2"].domain_name == "vm2"


@pytest.mark.asyncio(loop_scope="function")
async def test_migration_in_flight_when_the_agent_stopped_gets_a_final_after_restart(
    tmp_path: Path,
) -> None:
    """A migration still running when the agent stopped, and gone when it restarts, is
    given a final state under its old id (here: the simulator's migration died with the
    agent), so no client is left waiting for it."""
    config = AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("not-converging",),
        simulated_repeat=False,
        sample_interval_s=0.05,
        scan_interval_s=0.5,
        state_dir=str(tmp_path),
        grace_s=0.2,
    )
    async with running_agent(config) as agent:
        for _ in range(100):
            running = agent.hub.matching(Filter())
            if running:
                break
            await asyncio.sleep(0.05)
        assert running
        orphan = running[0].id
    async with running_agent(config) as agent:
        for _ in range(100):
            settled = agent.hub.get(orphan)
            if settled is not None:
                break
            await asyncio.sleep(0.1)
        assert settled is not None and settled.phase is Phase.FAILED
        assert "ended with the previous agent" in settled.error_message
        in_flight = FinalStore(tmp_path / "finals.sqlite3").active()
        assert orphan not in {mid for mid, _ in in_flight.values()}, "settled, forgotten"
