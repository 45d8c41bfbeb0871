"""The hub's fan-out: conflation, final states, bounds, snapshot atomicity, filters, retention."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from migwatch.agent.core.hub import (
    Filter,
    Hub,
    HubClosed,
    SubscriberLimitReached,
    Subscription,
    Update,
)
from migwatch.agent.model import Direction, HostState, Migration, Phase, Transfer
from migwatch.v1 import migwatch_pb2 as pb

UUID_A = "a1823c35-4213-4f58-9463-51fe8ccabbf6"
UUID_B = "0b3c3f51-9d8a-4c47-b9d4-2b6f0f6c1e11"


NOW = 1_800_000_000.0


class FakeClock:
    """A settable unix clock."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_hub(clock: FakeClock | None = None, **kwargs: Any) -> Hub:
    return Hub(host=lambda: "h1", backend="test", version="0", clock=clock or FakeClock(), **kwargs)


def mig(
    mid: str,
    *,
    phase: Phase = Phase.PRECOPY,
    processed: int = 0,
    uuid: str = UUID_A,
    name: str = "vm-a",
    finished_at: float | None = None,
) -> Migration:
    """A migration record; ``processed`` tells versions of one id apart."""
    return Migration(
        id=mid,
        domain_uuid=uuid,
        domain_name=name,
        source_host="h1",
        destination_host="h2",
        direction=Direction.OUTGOING,
        phase=phase,
        backend="test",
        agent_host="h1",
        memory=Transfer(total_bytes=1 << 30, processed_bytes=processed),
        finished_at=finished_at if finished_at is not None else (NOW if phase.terminal else None),
    )


async def drain(sub: Subscription) -> list[Update]:
    """What a reader gets now, without waiting for more."""
    return await sub.next_batch(timeout=0)


def migrations_of(batch: list[Update]) -> list[Migration]:
    return [u.migration for u in batch if u.migration is not None]


@pytest.mark.asyncio
async def test_conflation_keeps_only_the_latest_state_per_id() -> None:
    """Unsent states of one migration are replaced by the newest, keeping its queue position."""
    hub = make_hub()
    _, sub = hub.subscribe(Filter())
    for v in range(1, 6):
        hub.publish(mig("m1", processed=v))
    hub.publish(mig("m2", processed=1))
    hub.publish(mig("m1", processed=6))
    batch = migrations_of(await drain(sub))
    assert [(m.id, m.memory.processed_bytes) for m in batch] == [("m1", 6), ("m2", 1)]
    assert sub.conflated == 5
    assert await drain(sub) == []


@pytest.mark.asyncio
async def test_payload_bytes_are_the_published_state() -> None:
    """Each delivered update's bytes decode to the migration with its stamped sequence."""
    hub = make_hub()
    _, sub = hub.subscribe(Filter())
    published = hub.publish(mig("m1", processed=42))
    (update,) = await drain(sub)
    msg = pb.WatchMigrationsResponse.FromString(update.payload)
    assert msg.migration.id == "m1"
    assert msg.migration.memory.processed_bytes == 42
    assert msg.migration.sequence == published.sequence == hub.sequence


@pytest.mark.asyncio
async def test_final_state_survives_ten_thousand_updates_for_a_slow_subscriber() -> None:
    """A subscriber that reads only after 10k updates still gets every migration's final state."""
    hub = make_hub()
    _, slow = hub.subscribe(Filter())
    ids = [f"m{i}" for i in range(100)]
    for v in range(99):
        for mid in ids:
            hub.publish(mig(mid, processed=v))
    for mid in ids:
        hub.publish(mig(mid, phase=Phase.COMPLETED, processed=99))
    assert hub.sequence == 10_000
    batch = migrations_of(await drain(slow))
    assert not slow.overflowed
    assert sorted(m.id for m in batch) == sorted(ids)
    assert all(m.phase is Phase.COMPLETED and m.memory.processed_bytes == 99 for m in batch)


@pytest.mark.asyncio
async def test_final_state_is_delivered_between_partial_reads() -> None:
    """A final published while a reader is mid-stream is the last thing it sees for that id."""
    hub = make_hub()
    _, sub = hub.subscribe(Filter())
    seen: dict[str, Migration] = {}
    for v in range(5_000):
        mid = f"m{v % 7}"
        phase = Phase.CANCELLED if v >= 4_993 else Phase.PRECOPY
        hub.publish(mig(mid, phase=phase, processed=v))
        if v % 313 == 0:
            seen.update({m.id: m for m in migrations_of(await drain(sub))})
    seen.update({m.id: m for m in migrations_of(await drain(sub))})
    assert {m.phase for m in seen.values()} == {Phase.CANCELLED}
    assert len(seen) == 7


@pytest.mark.asyncio
async def test_buffer_is_bounded_and_overflow_closes_with_a_flag() -> None:
    """More distinct pending ids than the capacity closes the subscription as overflowed."""
    hub = make_hub(subscriber_capacity=8)
    _, sub = hub.subscribe(Filter())
    for i in range(8):
        hub.publish(mig(f"m{i}"))
    assert not sub.overflowed and not sub.closed
    hub.publish(mig("m8"))
    assert sub.overflowed and sub.closed
    for i in range(9, 1_000):
        hub.publish(mig(f"m{i}"))
    batch = await drain(sub)
    assert len(batch) <= 9  # nothing is buffered after the overflow
    # A healthy subscriber alongside is unaffected while it keeps up.
    _, healthy = hub.subscribe(Filter())
    hub.publish(mig("m0", processed=1))
    assert len(await drain(healthy)) == 1 and not healthy.overflowed


@pytest.mark.asyncio
async def test_snapshot_then_live_feed_has_no_gap() -> None:
    """An update published right after subscribe comes after the snapshot, newer than it."""
    hub = make_hub()
    hub.publish(mig("m1", processed=1))
    hub.publish(mig("m2", processed=1))
    snapshot, sub = hub.subscribe(Filter())
    hub.publish(mig("m1", processed=2))
    assert snapshot[0].migration is None  # the agent status goes first
    assert pb.WatchMigrationsResponse.FromString(snapshot[0].payload).HasField("agent_status")
    snap = migrations_of(snapshot)
    assert sorted(m.id for m in snap) == ["m1", "m2"]
    (live,) = migrations_of(await drain(sub))
    assert (live.id, live.memory.processed_bytes) == ("m1", 2)
    assert live.sequence > max(m.sequence for m in snap)


@pytest.mark.asyncio
async def test_filters_select_by_uuid_and_name_but_status_always_passes() -> None:
    """A subscriber gets only its domain's migrations, plus agent-status changes."""
    hub = make_hub()
    hub.publish(mig("a1", uuid=UUID_A, name="vm-a"))
    hub.publish(mig("b1", uuid=UUID_B, name="vm-b"))
    snap_uuid, by_uuid = hub.subscribe(Filter(domain_uuid=UUID_B))
    snap_name, by_name = hub.subscribe(Filter(domain_name="vm-a"))
    assert [m.id for m in migrations_of(snap_uuid)] == ["b1"]
    assert [m.id for m in migrations_of(snap_name)] == ["a1"]
    hub.publish(mig("a1", uuid=UUID_A, name="vm-a", processed=1))
    hub.publish(mig("b1", uuid=UUID_B, name="vm-b", processed=1))
    hub.set_status(HostState.DEGRADED, "libvirtd unreachable for 3 s")
    got_uuid = await drain(by_uuid)
    got_name = await drain(by_name)
    assert [m.id for m in migrations_of(got_uuid)] == ["b1"]
    assert [m.id for m in migrations_of(got_name)] == ["a1"]
    for batch in (got_uuid, got_name):
        statuses = [
            pb.WatchMigrationsResponse.FromString(u.payload) for u in batch if u.migration is None
        ]
        assert [s.agent_status.state for s in statuses] == [pb.HOST_STATE_DEGRADED]


def test_include_finished_selects_finished_migrations_in_list_and_snapshot() -> None:
    """Finished migrations are listed only with include_finished, after the active ones."""
    hub = make_hub()
    hub.publish(mig("done", phase=Phase.COMPLETED))
    hub.publish(mig("live"))
    assert [m.id for m in hub.matching(Filter())] == ["live"]
    assert [m.id for m in hub.matching(Filter(include_finished=True))] == ["live", "done"]
    snapshot, _ = hub.subscribe(Filter(include_finished=True))
    assert [m.id for m in migrations_of(snapshot)] == ["live", "done"]


@pytest.mark.asyncio
async def test_final_state_is_delivered_without_include_finished() -> None:
    """A migration that finishes while watched is sent even when finished ones are not wanted."""
    hub = make_hub()
    _, sub = hub.subscribe(Filter(include_finished=False))
    hub.publish(mig("m1", phase=Phase.FAILED))
    assert [m.phase for m in migrations_of(await drain(sub))] == [Phase.FAILED]


def test_retention_prunes_only_finished_migrations_past_the_horizon() -> None:
    """Finished migrations older than the retention are forgotten; active ones never are."""
    clock = FakeClock(1_000.0)
    hub = make_hub(clock, retention_s=60.0)
    hub.publish(mig("old", phase=Phase.COMPLETED, finished_at=1_000.0))
    hub.publish(mig("recent", phase=Phase.CANCELLED, finished_at=1_050.0))
    hub.publish(mig("active"))
    clock.now = 1_000.0 + 60.0
    assert hub.get("old") is not None  # exactly at the horizon it is kept
    clock.now = 1_000.0 + 61.0
    listed = [m.id for m in hub.matching(Filter(include_finished=True))]
    assert listed == ["active", "recent"]
    assert hub.get("old") is None
    clock.now = 10_000.0
    hub.prune()
    assert [m.id for m in hub.matching(Filter(include_finished=True))] == ["active"]
    snapshot, _ = hub.subscribe(Filter(include_finished=True))
    assert [m.id for m in migrations_of(snapshot)] == ["active"]


def test_subscriber_limit_raises_and_frees_on_unsubscribe() -> None:
    """Past max_subscribers, subscribe raises a message saying what to do; a leaver frees a slot."""
    hub = make_hub(max_subscribers=2)
    _, first = hub.subscribe(Filter())
    hub.subscribe(Filter())
    with pytest.raises(SubscriberLimitReached, match="max_subscribers"):
        hub.subscribe(Filter())
    assert hub.subscriber_count == 2
    hub.unsubscribe(first)
    assert hub.subscriber_count == 1
    hub.subscribe(Filter())
    assert hub.subscriber_count == 2


@pytest.mark.asyncio
async def test_close_ends_every_stream_and_refuses_new_ones() -> None:
    """Shutdown wakes each subscriber as closed, not overflowed, and refuses new ones as
    shutdown (HubClosed), not as the overload SubscriberLimitReached."""
    hub = make_hub()
    _, sub = hub.subscribe(Filter())
    hub.close()
    assert await sub.next_batch(timeout=5) == []
    assert sub.closed and not sub.overflowed
    with pytest.raises(HubClosed):
        hub.subscribe(Filter())
    assert not issubclass(HubClosed, SubscriberLimitReached)


# -- property -----------------------------------------------------------------------------
# An op is ("publish", slot, final) or ("drain",). Like the tracker, once a slot's
# migration is final, the slot's next publish starts a new migration id.
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(0, 4), st.booleans()),
        st.tuples(st.just("drain")),
    ),
    max_size=120,
)


@pytest.mark.asyncio
@settings(max_examples=200, deadline=None)
@given(before=_ops, after=_ops)
async def test_every_final_delivered_once_and_last_delivered_is_latest(
    before: list[tuple[object, ...]], after: list[tuple[object, ...]]
) -> None:
    """For any interleaving, each final published after subscribe arrives once, and per id the
    last delivered state is the latest published."""
    hub = make_hub()
    generation = [0] * 5
    version = 0
    latest: dict[str, int] = {}
    finals_after: set[str] = set()

    def run_publish(slot: int, final: bool, record: bool) -> None:
        nonlocal version
        version += 1
        mid = f"s{slot}.g{generation[slot]}"
        hub.publish(mig(mid, phase=Phase.COMPLETED if final else Phase.PRECOPY, processed=version))
        if record:
            latest[mid] = version
            if final:
                finals_after.add(mid)
        if final:
            generation[slot] += 1

    for op in before:
        if op[0] == "publish":
            run_publish(op[1], op[2], record=False)  # type: ignore[arg-type]
    _, sub = hub.subscribe(Filter())
    delivered: list[Migration] = []
    for op in after:
        if op[0] == "publish":
            run_publish(op[1], op[2], record=True)  # type: ignore[arg-type]
        else:
            delivered += migrations_of(await drain(sub))
    delivered += migrations_of(await drain(sub))

    finals = [m.id for m in delivered if m.phase.terminal]
    assert sorted(finals) == sorted(finals_after)  # each exactly once
    last: dict[str, int] = {}
    for m in delivered:
        assert m.memory.processed_bytes > last.get(m.id, -1)  # never goes back
        last[m.id] = m.memory.processed_bytes
    assert last == latest
