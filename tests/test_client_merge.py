"""The client's pure fleet state: joins, ordering, re-syncs without duplicate finals,
reachability."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migwatch.client.merge import FleetState, severity_key
from migwatch.client.model import (
    AgentStatus,
    AgentUpdate,
    Convergence,
    Direction,
    FleetMigration,
    HostState,
    Migration,
    MigrationUpdate,
    MigrationVanished,
    Phase,
    SnapshotComplete,
    Update,
)

A, B = "hv-a:50051", "hv-b:50051"
UUID_1 = "a1823c35-4213-4f58-9463-51fe8ccabbf6"
UUID_2 = "0b3c3f51-9d8a-4c47-b9d4-2b6f0f6c1e11"
NOW = 1_800_000_000.0
DONE = SnapshotComplete(migration_count=0, sequence=0)
STATUS = AgentStatus(host="hv-a", backend="test", state=HostState.OK)


def mig(
    mid: str,
    *,
    phase: Phase = Phase.PRECOPY,
    uuid: str = UUID_1,
    name: str = "vm-1",
    direction: Direction = Direction.OUTGOING,
    src: str = "hv-a",
    dst: str = "hv-b",
    eta: float | None = None,
    convergence: Convergence = Convergence.UNKNOWN,
    iteration: int = 1,
) -> Migration:
    """One end of a migration; ``iteration`` tells versions of one id apart."""
    return Migration(
        id=mid,
        domain_uuid=uuid,
        domain_name=name,
        source_host=src,
        destination_host=dst,
        direction=direction,
        phase=phase,
        eta_s=eta,
        convergence=convergence,
        iteration=iteration,
    )


def connect(state: FleetState, target: str, *snapshot: Migration) -> list[Update]:
    """Open a connection to ``target`` and deliver a complete snapshot."""
    state.connecting(target)
    out = state.apply(target, STATUS, NOW)
    for m in snapshot:
        out += state.apply(target, m, NOW)
    return out + state.apply(target, DONE, NOW)


def finals(updates: list[Update]) -> list[str]:
    return [u.migration.id for u in updates if isinstance(u, MigrationUpdate) and u.migration.final]


def test_two_ends_join_into_one_record() -> None:
    """The source's OUTGOING end and the destination's INCOMING end join by domain UUID."""
    state = FleetState([A, B])
    connect(state, A, mig("out-1", eta=30.0))
    connect(state, B, mig("in-1", direction=Direction.INCOMING))
    (record,) = state.snapshot().migrations
    assert record.source is not None and record.source.id == "out-1"
    assert record.destination is not None and record.destination.id == "in-1"
    assert (record.source_agent, record.destination_agent) == (A, B)
    assert record.id == "out-1"
    assert record.eta_s == 30.0


def test_destination_only_record_reads_state_from_the_incoming_end() -> None:
    """With only the destination watched, the record exists with no progress and its phase."""
    state = FleetState([B])
    connect(state, B, mig("in-1", direction=Direction.INCOMING, phase=Phase.POSTCOPY))
    (record,) = state.snapshot().migrations
    assert record.source is None and record.phase is Phase.POSTCOPY and record.eta_s is None


def test_a_final_from_either_end_finishes_the_record() -> None:
    """When the source reports COMPLETED the record leaves the active list for ``finished``."""
    state = FleetState([A, B])
    connect(state, A, mig("out-1"))
    connect(state, B, mig("in-1", direction=Direction.INCOMING))
    state.apply(A, mig("out-1", phase=Phase.COMPLETED), NOW)
    snap = state.snapshot()
    assert snap.migrations == ()
    assert [r.id for r in snap.finished] == ["out-1"]
    assert snap.finished[0].destination is not None


def test_a_new_migration_along_the_same_path_gets_a_new_record() -> None:
    """The same domain migrating again between the same hosts does not reuse the finished record."""
    state = FleetState([A])
    connect(state, A, mig("out-1"))
    state.apply(A, mig("out-1", phase=Phase.COMPLETED), NOW)
    state.apply(A, mig("out-2"), NOW)
    snap = state.snapshot()
    assert [r.id for r in snap.migrations] == ["out-2"]


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        # Largest ETA first.
        ([("a", 10.0, Convergence.CONVERGING), ("b", 90.0, Convergence.CONVERGING)], ["b", "a"]),
        # Unknown ETA ranks as the worst.
        ([("a", 900.0, Convergence.SLOW), ("b", None, Convergence.UNKNOWN)], ["b", "a"]),
        # Among unknown ETAs, not converging first, then stalled, then no verdict yet.
        (
            [
                ("a", None, Convergence.UNKNOWN),
                ("b", None, Convergence.STALLED),
                ("c", None, Convergence.NOT_CONVERGING),
            ],
            ["c", "b", "a"],
        ),
        # A not-converging verdict never finishes, whatever ETA it carries.
        ([("a", 5.0, Convergence.NOT_CONVERGING), ("b", 600.0, Convergence.SLOW)], ["a", "b"]),
    ],
)
def test_active_migrations_are_ordered_slowest_first(
    records: list[tuple[str, float | None, Convergence]], expected: list[str]
) -> None:
    """Snapshot order: unknown or never-ending ETAs first (worst verdict first), then by ETA."""
    state = FleetState([A])
    connect(
        state,
        A,
        *(mig(i, uuid=f"uuid-{i}", name=i, eta=eta, convergence=c) for i, eta, c in records),
    )
    assert [m.id for m in state.snapshot().migrations] == expected


def test_severity_key_is_a_total_order_on_ties() -> None:
    """Equal ETAs and verdicts still sort deterministically, by domain name then id."""
    x = FleetMigration("u", "vm-b", "s", "d", source=mig("2", name="vm-b"))
    y = FleetMigration("u", "vm-a", "s", "d", source=mig("1", name="vm-a"))
    assert sorted([x, y], key=severity_key) == [y, x]


def test_queries_not_converging_and_by_domain() -> None:
    """not_converging() keeps stalled and not-converging; by_domain() matches UUID or name."""
    state = FleetState([A])
    connect(
        state,
        A,
        mig("1", uuid=UUID_1, name="db", convergence=Convergence.NOT_CONVERGING),
        mig("2", uuid=UUID_2, name="web", convergence=Convergence.CONVERGING, eta=3.0),
    )
    snap = state.snapshot()
    assert [m.id for m in snap.not_converging()] == ["1"]
    assert [m.id for m in snap.by_domain("web")] == ["2"]
    assert [m.id for m in snap.by_domain(UUID_1)] == ["1"]


def test_finals_in_the_first_snapshot_are_history_and_not_emitted() -> None:
    """Migrations that ended before we watched are not reported, unless include_finished."""
    old = mig("old", phase=Phase.COMPLETED)
    assert finals(connect(FleetState([A]), A, old)) == []
    assert finals(connect(FleetState([A], include_finished=True), A, old)) == ["old"]


def test_final_is_not_emitted_again_when_a_resync_redelivers_it() -> None:
    """A final reported live and re-sent by the next connection's snapshot is emitted once."""
    state = FleetState([A])
    out = connect(state, A)
    out += state.apply(A, mig("m1"), NOW)
    out += state.apply(A, mig("m1", phase=Phase.COMPLETED), NOW)
    state.disconnected(A, "connection reset", NOW)
    out += connect(state, A, mig("m1", phase=Phase.COMPLETED))
    assert finals(out) == ["m1"]


def test_final_reached_while_disconnected_is_emitted_at_resync() -> None:
    """An active migration that ended during the outage is reported final once, from the
    snapshot."""
    state = FleetState([A])
    connect(state, A, mig("m1"))
    state.disconnected(A, "partition", NOW)
    out = connect(state, A, mig("m1", phase=Phase.FAILED))
    assert finals(out) == ["m1"]


def test_migration_that_started_and_ended_during_an_outage_is_reported() -> None:
    """A final first seen in a re-sync snapshot happened while we were away: emit it."""
    state = FleetState([A])
    connect(state, A)
    state.disconnected(A, "partition", NOW)
    assert finals(connect(state, A, mig("m2", phase=Phase.CANCELLED))) == ["m2"]


def test_active_migration_missing_from_resync_is_reported_vanished() -> None:
    """A tracked id absent from the re-sync snapshot yields MigrationVanished and is dropped."""
    state = FleetState([A])
    connect(state, A, mig("m1"), mig("m2", uuid=UUID_2))
    state.disconnected(A, "agent restarted", NOW)
    out = connect(state, A, mig("m2", uuid=UUID_2))
    vanished = [u for u in out if isinstance(u, MigrationVanished)]
    assert [(v.agent, v.migration.id) for v in vanished] == [(A, "m1")]
    assert [m.id for m in state.snapshot().migrations] == ["m2"]


def test_unchanged_state_redelivered_by_resync_is_not_emitted() -> None:
    """Re-sync re-sends every active migration; unchanged ones produce no update."""
    state = FleetState([A])
    connect(state, A, mig("m1"))
    state.disconnected(A, "reset", NOW)
    out = connect(state, A, mig("m1"), mig("m2", uuid=UUID_2))
    assert [u.migration.id for u in out if isinstance(u, MigrationUpdate)] == ["m2"]


def test_states_after_a_final_are_ignored() -> None:
    """Once an id was reported final, later states of it (stale or replayed) are dropped."""
    state = FleetState([A])
    connect(state, A, mig("m1"))
    state.apply(A, mig("m1", phase=Phase.COMPLETED), NOW)
    assert state.apply(A, mig("m1", iteration=7), NOW) == []
    assert state.snapshot().migrations == ()


def test_unreachable_agent_is_marked_and_its_records_stale() -> None:
    """Disconnect marks the agent unreachable (one AgentUpdate) and its records stale."""
    state = FleetState([A, B])
    connect(state, A, mig("m1"))
    out = state.disconnected(A, "no message for 15 s", NOW + 1)
    assert len(out) == 1 and isinstance(out[0], AgentUpdate)
    assert out[0].state.reachable is False and out[0].state.error == "no message for 15 s"
    assert out[0].state.since == NOW + 1
    snap = state.snapshot()
    assert [a.target for a in snap.unreachable()] == [A, B]  # B was never reached
    assert snap.migrations[0].stale
    # The same failure again is no news.
    assert state.disconnected(A, "no message for 15 s", NOW + 2) == []


def test_reconnect_reports_reachable_then_synced() -> None:
    """A connection emits an AgentUpdate when the first message arrives and when synced."""
    state = FleetState([A])
    state.disconnected(A, "refused", NOW)
    out = connect(state, A)
    agent_states = [u.state for u in out if isinstance(u, AgentUpdate)]
    assert agent_states[0].reachable and not agent_states[0].synced
    assert agent_states[-1].reachable and agent_states[-1].synced
    assert agent_states[-1].status == STATUS


def test_degraded_agent_status_is_reported() -> None:
    """The agent's own DEGRADED status (hypervisor link down) reaches the fleet state."""
    state = FleetState([A])
    connect(state, A)
    degraded = replace(STATUS, state=HostState.DEGRADED, message="libvirt down for 12 s")
    (update,) = state.apply(A, degraded, NOW)
    assert isinstance(update, AgentUpdate) and update.state.status == degraded


def test_finished_records_and_final_memory_are_bounded() -> None:
    """Finished records and remembered final ids are capped; recent finals still de-duplicate."""
    state = FleetState([A], final_memory=3, finished_keep=2)
    connect(state, A)
    for i in range(10):
        state.apply(A, mig(f"m{i}", uuid=f"u{i}", phase=Phase.COMPLETED), NOW)
    assert [r.id for r in state.snapshot().finished] == ["m9", "m8"]
    state.disconnected(A, "reset", NOW)
    assert finals(connect(state, A, mig("m9", uuid="u9", phase=Phase.COMPLETED))) == []


# -- property: re-delivery after reconnects never emits a final twice ------------------------

_PHASES = [Phase.SETUP, Phase.PRECOPY, Phase.PRECOPY, Phase.COMPLETED, Phase.FAILED]


@st.composite
def histories(draw: st.DrawFn) -> list[Migration]:
    """One agent's published changes: a few ids, each moving on until (maybe) a final."""
    steps = draw(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(_PHASES)), max_size=40))
    ended: set[int] = set()
    events: list[Migration] = []
    for n, (i, phase) in enumerate(steps):
        if i in ended:
            continue  # an agent publishes nothing for an id after its final
        if phase.final:
            ended.add(i)
        events.append(mig(f"m{i}", uuid=f"u{i}", phase=phase, iteration=n))
    return events


@settings(max_examples=300, deadline=None)
@given(
    history=histories(),
    cuts=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=4),
)
def test_redelivering_any_prefix_after_reconnect_never_emits_a_final_twice(
    history: list[Migration], cuts: list[tuple[int, int]]
) -> None:
    """Whatever prefix a re-sync re-delivers, each final is emitted exactly once overall."""
    state = FleetState([A])
    out = connect(state, A)
    delivered = 0
    for stop, replay in cuts:
        stop = max(stop, delivered)
        for m in history[delivered:stop]:
            out += state.apply(A, m, NOW)
        delivered = min(stop, len(history))
        out += state.disconnected(A, "cut", NOW)
        # The new connection's snapshot re-delivers an arbitrary prefix of what was sent.
        out += connect(state, A, *history[: min(replay, delivered)])
    for m in history[delivered:]:
        out += state.apply(A, m, NOW)
    emitted = Counter(finals(out))
    assert all(n == 1 for n in emitted.values()), emitted
    assert set(emitted) == {m.id for m in history if m.final}
