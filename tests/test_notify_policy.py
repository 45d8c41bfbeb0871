"""The notification policy (pure): what goes on the bus when, on plain numbers."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from migwatch.agent.model import Convergence, Direction, HostState, Migration, Phase
from migwatch.agent.notify import payload as pl
from migwatch.agent.notify.policy import HostReport, Kind, NotifyPolicy, PolicyConfig


def _m(
    i: int = 1,
    phase: Phase = Phase.PRECOPY,
    verdict: Convergence = Convergence.UNKNOWN,
    it: int = 1,
) -> Migration:
    return Migration(
        id=f"m{i}",
        domain_uuid=f"u{i}",
        domain_name=f"vm{i}",
        source_host="a",
        destination_host="b",
        direction=Direction.OUTGOING,
        phase=phase,
        backend="sim",
        agent_host="a",
        iteration=it,
        convergence=verdict,
    )


def _kinds(policy: NotifyPolicy, now: float) -> list[tuple[Kind, str]]:
    notes = policy.take(now)
    policy.sent(notes)
    return [(n.kind, n.key) for n in notes]


def test_start_then_progress_at_most_once_per_interval() -> None:
    """The first state is a start; later states go out as progress once per interval,
    the latest one winning (conflated)."""
    p = NotifyPolicy(PolicyConfig(interval_s=10))
    p.observe(_m(it=1), 0.0)
    assert _kinds(p, 0.0) == [(Kind.START, "m1")]
    for t in range(1, 10):
        p.observe(_m(it=t + 1), float(t))
        assert _kinds(p, float(t)) == []
    assert p.next_due(9.0) == 10.0
    notes = p.take(10.0)
    assert [(n.kind, n.migration.iteration if n.migration else 0) for n in notes] == [
        (Kind.PROGRESS, 10)
    ]
    assert p.stats.conflated == 8


def test_phase_or_verdict_change_goes_out_at_once() -> None:
    """A change of phase or of verdict is not held back by the interval."""
    p = NotifyPolicy(PolicyConfig(interval_s=10))
    p.observe(_m(), 0.0)
    _kinds(p, 0.0)
    p.observe(_m(verdict=Convergence.NOT_CONVERGING), 1.0)
    assert _kinds(p, 1.0) == [(Kind.PROGRESS, "m1")]
    p.observe(_m(phase=Phase.POSTCOPY, verdict=Convergence.NOT_CONVERGING), 2.0)
    assert _kinds(p, 2.0) == [(Kind.PROGRESS, "m1")]


def test_end_supersedes_progress_and_nothing_follows_it() -> None:
    """The final state is sent as an end (unsent progress dropped), once, and later states
    of that migration are ignored."""
    p = NotifyPolicy(PolicyConfig(interval_s=10))
    p.observe(_m(), 0.0)
    _kinds(p, 0.0)
    p.observe(_m(it=2), 1.0)
    p.observe(_m(phase=Phase.COMPLETED), 2.0)
    assert _kinds(p, 2.0) == [(Kind.END, "m1")]
    p.observe(_m(phase=Phase.COMPLETED), 3.0)
    p.observe(_m(it=9), 3.0)
    assert _kinds(p, 100.0) == [] and p.pending == 0


def test_a_migration_first_seen_finished_gets_start_and_end() -> None:
    """One that ended between two samples still gets its start, then its end, in order."""
    p = NotifyPolicy(PolicyConfig())
    p.observe(_m(phase=Phase.FAILED), 0.0)
    assert _kinds(p, 0.0) == [(Kind.START, "m1"), (Kind.END, "m1")]


def test_failed_sends_are_put_back_and_an_end_waits_for_the_broker() -> None:
    """Start and end that failed are retried until taken; a failed progress only if
    nothing newer replaced it."""
    p = NotifyPolicy(PolicyConfig(interval_s=10))
    p.observe(_m(), 0.0)
    notes = p.take(0.0)
    p.failed(notes)
    p.observe(_m(phase=Phase.COMPLETED), 1.0)
    for t in range(2, 50):  # a long outage: every attempt fails
        p.failed(p.take(float(t)))
    assert p.unsent_ends == 1
    assert _kinds(p, 60.0) == [(Kind.START, "m1"), (Kind.END, "m1")]
    assert p.unsent_ends == 0


def test_too_many_unsent_ends_drop_the_oldest_and_count_it() -> None:
    """The queue is bounded: past ``max_unsent_ends`` the oldest waiting end goes."""
    p = NotifyPolicy(PolicyConfig(max_unsent_ends=3))
    for i in range(5):
        p.observe(_m(i, phase=Phase.COMPLETED), 0.0)
    assert p.stats.dropped_ends == 2
    assert [k for k in _kinds(p, 0.0) if k[0] is Kind.END] == [
        (Kind.END, "m2"),
        (Kind.END, "m3"),
        (Kind.END, "m4"),
    ]


def test_host_state_is_sent_on_change_only() -> None:
    """The host report goes out once per change."""
    p = NotifyPolicy(PolicyConfig())
    ok = HostReport("a", "sim", HostState.OK, "", "0")
    p.observe_host(ok)
    assert _kinds(p, 0.0) == [(Kind.HOST, "")]
    p.observe_host(ok)
    assert _kinds(p, 1.0) == []
    p.observe_host(replace(ok, state=HostState.DEGRADED, message="libvirtd gone"))
    assert _kinds(p, 2.0) == [(Kind.HOST, "")]


def test_payload_keeps_memory_and_disk_apart_in_versioned_objects() -> None:
    """The payload is a versioned object; end carries the outcome and the duration."""
    m = replace(
        _m(phase=Phase.COMPLETED), started_at=100.0, finished_at=130.5, actual_downtime_s=0.02
    )
    body = pl.migration_payload(m)
    assert body["migwatch_object.name"] == "MigrationPayload"
    data = body["migwatch_object.data"]
    assert data["memory"]["migwatch_object.name"] == "TransferPayload"
    assert set(data) >= {"disk", "eta_low_s", "eta_high_s", "convergence", "top_remedy"}
    assert (data["outcome"], data["duration_s"]) == ("completed", 30.5)
    assert data["finished_at"].startswith("1970-01-01T00:02:10.5")


_ops = st.lists(
    st.tuples(
        st.sampled_from(["observe", "end", "send_ok", "send_fail", "tick"]), st.integers(0, 4)
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_no_end_is_ever_lost_whatever_the_broker_does(ops: list[tuple[str, int]]) -> None:
    """Across any interleaving of states, ends, failed and successful sends, every
    migration that ended gets exactly one end taken once the broker answers, after its
    start."""
    p = NotifyPolicy(PolicyConfig(interval_s=2))
    now, ended, sent = 0.0, set(), []
    for op, i in ops:
        now += 0.5
        if op == "observe":
            p.observe(_m(i, it=int(now)), now)
        elif op == "end":
            p.observe(_m(i, phase=Phase.COMPLETED), now)
            ended.add(f"m{i}")
        else:
            notes = p.take(now)
            if op == "send_fail":
                p.failed(notes)
            else:
                p.sent(notes)
                sent += [(n.kind, n.key) for n in notes]
    for _ in range(3):
        now += 5
        notes = p.take(now)
        p.sent(notes)
        sent += [(n.kind, n.key) for n in notes]
    ends = [k for kind, k in sent if kind is Kind.END]
    assert sorted(ends) == sorted(set(ends)) and set(ends) == ended
    for key in ended:
        assert sent.index((Kind.START, key)) < sent.index((Kind.END, key))
    assert p.pending == 0
