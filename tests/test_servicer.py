"""MigrationService over real gRPC on 127.0.0.1: stream order, heartbeats, filters, errors,
controls, cancellation and shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from migwatch.agent.backends.protocol import (
    Backend,
    Ending,
    MigrationInfo,
    Observation,
    ObservationSink,
    StatusSink,
)
from migwatch.agent.config import AgentConfig
from migwatch.agent.errors import MigrationGone
from migwatch.agent.model import Direction, DomainFacts, HostState, JobSample, Phase
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from migwatch.agent.serve.server import Agent

pytestmark = pytest.mark.asyncio(loop_scope="function")

Stub = pb_grpc.MigrationServiceStub
UNKNOWN_ID = "a1823c35-4213-4f58-9463-51fe8ccabbf6.out.1795598854580"
TERMINAL = (pb.PHASE_COMPLETED, pb.PHASE_FAILED, pb.PHASE_CANCELLED)
WAIT_S = 10.0  # generous bound for anything the simulation does at 20x


def seconds(s: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(s * 1e9))
    return d


async def read(call: Any, timeout: float = WAIT_S) -> pb.WatchMigrationsResponse:
    """The next stream message; fails the test instead of hanging."""
    msg = await asyncio.wait_for(call.read(), timeout)
    assert msg is not grpc.aio.EOF, "stream ended"
    return msg  # type: ignore[no-any-return]


async def read_snapshot(
    call: Any,
) -> tuple[pb.AgentStatus, list[pb.Migration], pb.SnapshotComplete]:
    """agent_status, the snapshot's migrations, and the snapshot_complete marker."""
    first = await read(call)
    assert first.WhichOneof("event") == "agent_status"
    migrations: list[pb.Migration] = []
    while True:
        msg = await read(call)
        if msg.WhichOneof("event") == "snapshot_complete":
            return first.agent_status, migrations, msg.snapshot_complete
        assert msg.WhichOneof("event") == "migration", msg
        migrations.append(msg.migration)


async def read_until(
    call: Any, done: Callable[[pb.WatchMigrationsResponse], bool], timeout: float = WAIT_S
) -> list[pb.WatchMigrationsResponse]:
    """Messages up to and including the first for which ``done`` holds."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        msg = await read(call, max(0.01, deadline - time.monotonic()))
        seen.append(msg)
        if done(msg):
            return seen


async def poll(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def active(stub: Stub, scenario: str, phase: int = pb.PHASE_PRECOPY) -> pb.Migration:
    """A simulated migration of ``scenario`` (sim-<scenario>-N) in ``phase``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        reply = await stub.ListMigrations(pb.ListMigrationsRequest(), timeout=5)
        for m in reply.migrations:
            if m.domain_name.startswith(f"sim-{scenario}-") and m.phase == phase:
                found: pb.Migration = m
                return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no active {scenario} migration")


async def expect_error(call: Any, code: grpc.StatusCode) -> tuple[str, Any]:
    """A call that must fail with ``code`` (a unary call, or a stream's first read); gives its
    message and its google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        if isinstance(call, grpc.aio.UnaryStreamCall):
            await read(call)
        else:
            await call
    assert info.value.code() is code, info.value.details()
    status = await rpc_status.aio.from_call(call)
    assert status is not None, "no google.rpc.Status in the trailers"
    assert status.code == getattr(code_pb2, code.name)
    return info.value.details() or "", status


def bad_request_fields(status: Any) -> list[str]:
    fields = []
    for detail in status.details:
        br = error_details_pb2.BadRequest()
        if detail.Unpack(br):
            fields += [v.field for v in br.field_violations]
    return fields


# -- a backend that reports only what the test tells it to -----------------------------------
class ScriptedBackend:
    """A Backend (agent/backends/protocol.py) fed by the test: nothing happens unless ``emit``
    is called."""

    name = "scripted"
    host = "scripted-host"

    def __init__(self) -> None:
        self._observe: ObservationSink | None = None
        self.aborted: list[str] = []

    async def run(self, observe: ObservationSink, status: StatusSink) -> None:
        self._observe = observe
        status(HostState.OK, "")
        await asyncio.Event().wait()

    def emit(self, mi: MigrationInfo, phase: Phase, elapsed: float = 1.0) -> None:
        assert self._observe is not None, "backend not running yet"
        self._observe(
            Observation(
                info=mi,
                now=mi.started_at + elapsed,
                phase=phase,
                sample=JobSample(elapsed_s=elapsed, memory_total=1 << 30, iteration=1),
            )
        )

    async def abort(self, domain_uuid: str) -> None:
        self.aborted.append(domain_uuid)
        raise MigrationGone(f"domain {domain_uuid} has no migration running on {self.host}")

    async def force_complete(self, domain_uuid: str) -> bool:
        raise MigrationGone(f"domain {domain_uuid} has no migration running on {self.host}")

    async def update_limits(
        self, domain_uuid: str, max_downtime_s: float | None, max_bandwidth_bps: int | None
    ) -> None:
        raise MigrationGone(f"domain {domain_uuid} has no migration running on {self.host}")

    async def outcome_of(self, domain_uuid: str, direction: Direction) -> Ending | None:
        return None  # nothing was in flight before this agent

    async def describe(self, domain: str) -> DomainFacts:
        raise MigrationGone(f"domain {domain} is not running on {self.host}")

    async def guests(self) -> tuple[str, ...]:
        return ()

    async def close(self) -> None:
        pass


if TYPE_CHECKING:  # the fake satisfies the seam every backend implements
    _scripted: Backend = ScriptedBackend()


def scripted_info(name: str = "vm-1") -> MigrationInfo:
    return MigrationInfo(
        domain_uuid=str(uuid.uuid4()),
        domain_name=name,
        source_host="scripted-host",
        destination_host="elsewhere",
        direction=Direction.OUTGOING,
        started_at=time.time(),
    )


class TestStream:
    async def test_watch_sends_status_snapshot_marker_then_live_updates(
        self, agent: Agent, stub: Stub
    ) -> None:
        """Watch opens with agent_status, the snapshot, snapshot_complete, then live changes with
        sequences above the snapshot's, increasing per migration."""
        call = stub.WatchMigrations(pb.WatchMigrationsRequest())
        status, snapshot, marker = await read_snapshot(call)
        assert status.host == "sim-host-a" and status.backend == "simulated"
        assert status.state == pb.HOST_STATE_OK
        assert marker.migration_count == len(snapshot) >= 1
        assert all(m.sequence <= marker.sequence for m in snapshot)
        live: list[pb.Migration] = []
        deadline = time.monotonic() + WAIT_S
        while len(live) < 30:
            assert time.monotonic() < deadline
            msg = await read(call)
            if msg.HasField("migration"):
                live.append(msg.migration)
        last: dict[str, int] = {m.id: m.sequence for m in snapshot}
        for m in live:
            assert m.sequence > marker.sequence, "a live update at or below the snapshot's sequence"
            assert m.sequence > last.get(m.id, 0)
            last[m.id] = m.sequence
        call.cancel()

    async def test_stream_carries_progress_to_a_final_state(self, agent: Agent, stub: Stub) -> None:
        """A converging simulated migration is followed on the stream until COMPLETED, with ETA
        0."""
        call = stub.WatchMigrations(pb.WatchMigrationsRequest())
        await read_snapshot(call)
        msgs = await read_until(
            call, lambda r: r.HasField("migration") and r.migration.phase == pb.PHASE_COMPLETED
        )
        final = msgs[-1].migration
        assert final.eta.ToNanoseconds() == 0 and final.HasField("eta")
        assert final.memory.fraction_done == 1.0 and final.HasField("finished_at")
        assert final.iteration >= 3
        call.cancel()

    async def test_filters_by_domain_uuid_and_name(self, agent: Agent, stub: Stub) -> None:
        """A watch filtered by domain_uuid or domain_name streams only that domain."""
        target = await active(stub, "not-converging")
        for request in (
            pb.WatchMigrationsRequest(domain_uuid=target.domain_uuid),
            pb.WatchMigrationsRequest(domain_name=target.domain_name),
            pb.WatchMigrationsRequest(domain_uuid=target.domain_uuid.upper()),
        ):
            call = stub.WatchMigrations(request)
            _, snapshot, _ = await read_snapshot(call)
            assert [m.id for m in snapshot] == [target.id]
            updates: list[pb.Migration] = []
            while len(updates) < 10:
                msg = await read(call)
                if msg.HasField("migration"):
                    updates.append(msg.migration)
            assert {m.domain_uuid for m in updates} == {target.domain_uuid}
            call.cancel()
        listed = await stub.ListMigrations(pb.ListMigrationsRequest(domain_name=target.domain_name))
        assert [m.id for m in listed.migrations] == [target.id]

    async def test_include_finished_brings_finished_migrations_into_the_snapshot(
        self, agent: Agent, stub: Stub
    ) -> None:
        """Finished migrations appear in the snapshot only with include_finished."""
        call = stub.WatchMigrations(pb.WatchMigrationsRequest())
        await read_snapshot(call)
        await read_until(call, lambda r: r.migration.phase in TERMINAL)
        call.cancel()
        _, without, _ = await read_snapshot(stub.WatchMigrations(pb.WatchMigrationsRequest()))
        assert all(m.phase not in TERMINAL for m in without)
        with_finished = stub.WatchMigrations(pb.WatchMigrationsRequest(include_finished=True))
        _, snapshot, _ = await read_snapshot(with_finished)
        assert any(m.phase in TERMINAL for m in snapshot)
        with_finished.cancel()


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


class TestQuietStream:
    @pytest.fixture
    def agent_backend(self, scripted: ScriptedBackend) -> ScriptedBackend:
        return scripted

    async def test_quiet_stream_gets_heartbeats(self, agent: Agent, stub: Stub) -> None:
        """With nothing changing, a watch gets heartbeats carrying the agent's sequence."""
        call = stub.WatchMigrations(pb.WatchMigrationsRequest(heartbeat_interval=seconds(0.2)))
        status, snapshot, _ = await read_snapshot(call)
        assert status.host == "scripted-host" and snapshot == []
        beats = [await read(call, timeout=2.0) for _ in range(3)]
        assert all(b.WhichOneof("event") == "heartbeat" for b in beats)
        assert all(b.heartbeat.sequence == agent.hub.sequence for b in beats)
        assert all(abs(b.heartbeat.time.ToNanoseconds() / 1e9 - time.time()) < 60 for b in beats)
        call.cancel()

    async def test_update_then_heartbeat_reports_the_new_sequence(
        self, agent: Agent, stub: Stub, scripted: ScriptedBackend
    ) -> None:
        """An update arrives live, and the next heartbeat reports its sequence."""
        call = stub.WatchMigrations(pb.WatchMigrationsRequest(heartbeat_interval=seconds(0.2)))
        await read_snapshot(call)
        scripted.emit(scripted_info(), Phase.PRECOPY)
        msgs = await read_until(call, lambda r: r.HasField("heartbeat"))
        updates = [m.migration for m in msgs if m.HasField("migration")]
        assert [m.domain_name for m in updates] == ["vm-1"]
        assert msgs[-1].heartbeat.sequence == updates[0].sequence
        call.cancel()

    async def test_snapshot_marker_sequence_is_the_snapshots_not_a_later_one(
        self, agent: Agent, stub: Stub, scripted: ScriptedBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Updates published while the snapshot is being sent come after snapshot_complete with
        sequences above its ``sequence`` ("the agent's sequence when the snapshot was taken"), so
        a client may drop anything at or below it."""
        infos = [scripted_info(f"vm-{i}") for i in range(50)]
        for mi in infos:
            scripted.emit(mi, Phase.PRECOPY, 1.0)
        subscribe = agent.hub.subscribe

        def subscribe_then_publish(flt: Any) -> Any:
            taken = subscribe(flt)

            # Runs at the servicer's first await, i.e. while it sends the snapshot.
            def publish() -> None:
                for mi in infos:
                    scripted.emit(mi, Phase.PRECOPY, 2.0)

            asyncio.get_running_loop().call_soon(publish)
            return taken

        monkeypatch.setattr(agent.hub, "subscribe", subscribe_then_publish)
        call = stub.WatchMigrations(pb.WatchMigrationsRequest(heartbeat_interval=seconds(0.2)))
        _, snapshot, marker = await read_snapshot(call)
        assert len(snapshot) == 50
        assert marker.sequence >= max(m.sequence for m in snapshot)
        msgs = await read_until(call, lambda r: r.HasField("heartbeat"))
        live = [m.migration for m in msgs if m.HasField("migration")]
        assert {m.domain_name for m in live} == {mi.domain_name for mi in infos}
        assert all(m.sequence > marker.sequence for m in live), (
            f"snapshot_complete.sequence {marker.sequence} is not below the live updates "
            f"{sorted(m.sequence for m in live)[:3]}..."
        )
        call.cancel()

    async def test_controls_on_a_finished_migration_fail_precondition(
        self, agent: Agent, stub: Stub, scripted: ScriptedBackend
    ) -> None:
        """Abort, force-complete and set-limits on a finished migration are FAILED_PRECONDITION
        with a message saying it already ended; the backend is not asked."""
        scripted.emit(scripted_info(), Phase.COMPLETED)
        reply = await stub.ListMigrations(pb.ListMigrationsRequest(include_finished=True))
        (done,) = reply.migrations
        for call in (
            stub.AbortMigration(pb.AbortMigrationRequest(id=done.id)),
            stub.ForceCompleteMigration(pb.ForceCompleteMigrationRequest(id=done.id)),
            stub.UpdateMigrationLimits(
                pb.UpdateMigrationLimitsRequest(id=done.id, max_downtime=seconds(1))
            ),
        ):
            message, _ = await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION)
            assert "already ended" in message and done.id in message
        assert scripted.aborted == []
        got = await stub.GetMigration(pb.GetMigrationRequest(id=done.id))
        assert got.migration.phase == pb.PHASE_COMPLETED

    async def test_backend_refusal_maps_to_not_found(
        self, agent: Agent, stub: Stub, scripted: ScriptedBackend
    ) -> None:
        """A backend saying the job is gone (MigrationGone) surfaces as NOT_FOUND with its text."""
        scripted.emit(scripted_info(), Phase.PRECOPY)
        (m,) = (await stub.ListMigrations(pb.ListMigrationsRequest())).migrations
        message, _ = await expect_error(
            stub.AbortMigration(pb.AbortMigrationRequest(id=m.id)), grpc.StatusCode.NOT_FOUND
        )
        assert "no migration running on scripted-host" in message
        assert scripted.aborted == [m.domain_uuid]


class TestErrors:
    @pytest.fixture
    def agent_backend(self, scripted: ScriptedBackend) -> ScriptedBackend:
        return scripted

    @pytest.mark.parametrize(
        ("make_call", "field", "hint"),
        [
            (lambda s: s.GetMigration(pb.GetMigrationRequest(id="nope")), "id", "ListMigrations"),
            (lambda s: s.GetMigration(pb.GetMigrationRequest()), "id", "id is empty"),
            (
                lambda s: s.AbortMigration(pb.AbortMigrationRequest(id="x.out.1")),
                "id",
                "ids look like",
            ),
            (
                lambda s: s.ListMigrations(pb.ListMigrationsRequest(domain_uuid="vm-1")),
                "domain_uuid",
                "is not a UUID",
            ),
            (
                lambda s: s.UpdateMigrationLimits(pb.UpdateMigrationLimitsRequest(id=UNKNOWN_ID)),
                "max_downtime",
                "set max_downtime, max_bandwidth, or both",
            ),
            (
                lambda s: s.UpdateMigrationLimits(
                    pb.UpdateMigrationLimitsRequest(id=UNKNOWN_ID, max_bandwidth=1_000_000)
                ),
                "max_bandwidth",
                "below 1 MiB/s",
            ),
            (
                lambda s: s.UpdateMigrationLimits(
                    pb.UpdateMigrationLimitsRequest(id=UNKNOWN_ID, max_downtime=seconds(0))
                ),
                "max_downtime",
                "1ms to 1h",
            ),
        ],
        ids=["bad-id", "empty-id", "bad-id-uuid", "bad-uuid", "no-limits", "low-bw", "zero-dt"],
    )
    async def test_unary_invalid_argument_names_the_field_and_the_fix(
        self, agent: Agent, stub: Stub, make_call: Callable[[Stub], Any], field: str, hint: str
    ) -> None:
        """A malformed request is INVALID_ARGUMENT whose message says what to fix, with a
        google.rpc.BadRequest naming the field."""
        message, status = await expect_error(make_call(stub), grpc.StatusCode.INVALID_ARGUMENT)
        assert hint in message
        assert bad_request_fields(status) == [field]

    @pytest.mark.parametrize(
        ("request_", "field", "hint"),
        [
            (pb.WatchMigrationsRequest(domain_uuid="not-a-uuid"), "domain_uuid", "is not a UUID"),
            (
                pb.WatchMigrationsRequest(heartbeat_interval=seconds(0.05)),
                "heartbeat_interval",
                "0.1s to 300s",
            ),
            (
                pb.WatchMigrationsRequest(heartbeat_interval=seconds(301)),
                "heartbeat_interval",
                "0.1s to 300s",
            ),
        ],
        ids=["bad-uuid", "heartbeat-low", "heartbeat-high"],
    )
    async def test_watch_invalid_argument_names_the_field_and_the_fix(
        self, agent: Agent, stub: Stub, request_: pb.WatchMigrationsRequest, field: str, hint: str
    ) -> None:
        """A malformed watch ends before any message with INVALID_ARGUMENT and a BadRequest."""
        call = stub.WatchMigrations(request_)
        message, status = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert hint in message
        assert bad_request_fields(status) == [field]
        assert agent.hub.subscriber_count == 0

    async def test_well_formed_unknown_id_is_not_found(self, agent: Agent, stub: Stub) -> None:
        """A syntactically valid id that names no migration is NOT_FOUND for every call."""
        for call in (
            stub.GetMigration(pb.GetMigrationRequest(id=UNKNOWN_ID)),
            stub.AbortMigration(pb.AbortMigrationRequest(id=UNKNOWN_ID)),
            stub.ForceCompleteMigration(pb.ForceCompleteMigrationRequest(id=UNKNOWN_ID)),
            stub.UpdateMigrationLimits(
                pb.UpdateMigrationLimitsRequest(id=UNKNOWN_ID, max_downtime=seconds(1))
            ),
        ):
            message, _ = await expect_error(call, grpc.StatusCode.NOT_FOUND)
            assert UNKNOWN_ID in message and "ListMigrations" in message


class TestControls:
    async def test_abort_cancels_and_the_stream_delivers_cancelled(
        self, agent: Agent, stub: Stub
    ) -> None:
        """AbortMigration on a running simulated migration ends it CANCELLED, seen on the stream."""
        target = await active(stub, "not-converging")
        call = stub.WatchMigrations(pb.WatchMigrationsRequest(domain_uuid=target.domain_uuid))
        await read_snapshot(call)
        reply = await stub.AbortMigration(pb.AbortMigrationRequest(id=target.id))
        assert reply.migration.id == target.id
        msgs = await read_until(call, lambda r: r.migration.phase in TERMINAL)
        final = msgs[-1].migration
        assert (final.id, final.phase) == (target.id, pb.PHASE_CANCELLED)
        assert not final.HasField("eta")
        got = await stub.GetMigration(pb.GetMigrationRequest(id=target.id))
        assert got.migration.phase == pb.PHASE_CANCELLED
        call.cancel()

    async def test_force_complete_by_postcopy_completes(self, agent: Agent, stub: Stub) -> None:
        """ForceCompleteMigration on a post-copy-enabled migration reports POST_COPY and
        completes."""
        target = await active(stub, "not-converging")
        assert target.postcopy_allowed
        call = stub.WatchMigrations(pb.WatchMigrationsRequest(domain_uuid=target.domain_uuid))
        await read_snapshot(call)
        reply = await stub.ForceCompleteMigration(pb.ForceCompleteMigrationRequest(id=target.id))
        assert reply.method == pb.FORCE_COMPLETE_METHOD_POST_COPY
        assert reply.migration.phase == pb.PHASE_POSTCOPY
        msgs = await read_until(call, lambda r: r.migration.phase in TERMINAL)
        assert msgs[-1].migration.phase == pb.PHASE_COMPLETED
        assert pb.PHASE_POSTCOPY in {m.migration.phase for m in msgs if m.HasField("migration")}
        call.cancel()

    async def test_force_complete_without_postcopy_pauses(self, agent: Agent, stub: Stub) -> None:
        """ForceCompleteMigration on a migration without post-copy pauses the guest; it
        completes."""
        # A converging run can reach its own switch-over between the list and the snapshot;
        # then the next simulated run is taken (the simulated host starts one every cycle).
        for _ in range(20):
            target = await active(stub, "converging")
            call = stub.WatchMigrations(pb.WatchMigrationsRequest(domain_uuid=target.domain_uuid))
            _, snapshot, _ = await read_snapshot(call)
            if snapshot[0].phase == pb.PHASE_PRECOPY:
                break
            call.cancel()
        else:
            raise AssertionError("no converging migration was still in pre-copy when watched")
        reply = await stub.ForceCompleteMigration(pb.ForceCompleteMigrationRequest(id=target.id))
        assert reply.method == pb.FORCE_COMPLETE_METHOD_PAUSE
        msgs = await read_until(call, lambda r: r.migration.phase in TERMINAL)
        assert msgs[-1].migration.phase == pb.PHASE_COMPLETED
        call.cancel()

    async def test_raising_max_downtime_lets_a_stuck_migration_complete(
        self, agent: Agent, stub: Stub
    ) -> None:
        """UpdateMigrationLimits with a max downtime that fits the hot set makes not-converging
        complete, and the new limit shows in the response."""
        target = await active(stub, "not-converging")
        call = stub.WatchMigrations(pb.WatchMigrationsRequest(domain_uuid=target.domain_uuid))
        await read_snapshot(call)
        reply = await stub.UpdateMigrationLimits(
            pb.UpdateMigrationLimitsRequest(id=target.id, max_downtime=seconds(15))
        )
        assert reply.migration.max_downtime.ToNanoseconds() == 15 * 10**9
        msgs = await read_until(call, lambda r: r.migration.phase in TERMINAL)
        assert msgs[-1].migration.phase == pb.PHASE_COMPLETED
        call.cancel()

    async def test_raising_bandwidth_is_applied(self, agent: Agent, stub: Stub) -> None:
        """UpdateMigrationLimits with only max_bandwidth changes the bandwidth and keeps
        downtime."""
        target = await active(stub, "not-converging")
        reply = await stub.UpdateMigrationLimits(
            pb.UpdateMigrationLimitsRequest(id=target.id, max_bandwidth=400 << 20)
        )
        assert reply.migration.max_bandwidth == 400 << 20
        assert reply.migration.max_downtime == target.max_downtime


class TestLifecycle:
    async def test_cancelled_stream_leaves_no_subscriber(self, agent: Agent, stub: Stub) -> None:
        """Cancelling a watch mid-stream unregisters it from the hub."""
        calls = [stub.WatchMigrations(pb.WatchMigrationsRequest()) for _ in range(3)]
        for call in calls:
            await read_snapshot(call)
        await read(calls[0])
        assert agent.hub.subscriber_count == 3
        for call in calls:
            call.cancel()
        await poll(lambda: agent.hub.subscriber_count == 0)

    async def test_closed_channel_leaves_no_subscriber(
        self, agent: Agent, agent_target: str
    ) -> None:
        """A client that goes away without cancelling (channel closed) is unregistered too."""
        chan = grpc.aio.insecure_channel(agent_target)
        call = pb_grpc.MigrationServiceStub(chan).WatchMigrations(pb.WatchMigrationsRequest())
        await read_snapshot(call)
        assert agent.hub.subscriber_count == 1
        await chan.close()
        await poll(lambda: agent.hub.subscriber_count == 0)

    async def test_shutdown_ends_open_watch_with_unavailable(
        self, agent: Agent, stub: Stub
    ) -> None:
        """agent.stop() ends an open watch with UNAVAILABLE saying to reconnect."""
        call = stub.WatchMigrations(pb.WatchMigrationsRequest())
        await read_snapshot(call)
        await agent.stop()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while True:
                msg = await read(call)
                assert msg.WhichOneof("event") in ("migration", "heartbeat", "agent_status")
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "reconnect" in (info.value.details() or "")

    async def test_watch_during_shutdown_is_unavailable_not_exhausted(
        self, agent: Agent, stub: Stub
    ) -> None:
        """A watch that arrives once shutdown has closed the hub (before the server stops
        taking calls) is told UNAVAILABLE "agent is shutting down, reconnect", never the
        overload code RESOURCE_EXHAUSTED."""
        agent.hub.close()  # what stop() does first, before draining the server
        message, _ = await expect_error(
            stub.WatchMigrations(pb.WatchMigrationsRequest()), grpc.StatusCode.UNAVAILABLE
        )
        assert message == "agent is shutting down, reconnect"


class TestSubscriberLimit:
    @pytest.fixture
    def agent_config(self, agent_config: AgentConfig) -> AgentConfig:
        return replace(agent_config, max_subscribers=1)

    async def test_subscriber_limit_is_resource_exhausted(self, agent: Agent, stub: Stub) -> None:
        """Past max_subscribers, a new watch fails RESOURCE_EXHAUSTED saying what to do."""
        first = stub.WatchMigrations(pb.WatchMigrationsRequest())
        await read_snapshot(first)
        message, _ = await expect_error(
            stub.WatchMigrations(pb.WatchMigrationsRequest()),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert "max_subscribers" in message
        first.cancel()


async def test_every_rpc_in_the_descriptor_has_a_handler(
    agent: Agent, channel: grpc.aio.Channel
) -> None:
    """Each method of migwatch.v1.MigrationService answers with something other than
    UNIMPLEMENTED."""
    service = pb.DESCRIPTOR.services_by_name["MigrationService"]
    names = {method.name for method in service.methods}
    assert names >= {
        "WatchMigrations", "ListMigrations", "GetMigration",
        "AbortMigration", "ForceCompleteMigration", "UpdateMigrationLimits",
    }  # fmt: skip
    for method in service.methods:
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        path = f"/{service.full_name}/{method.name}"
        code = grpc.StatusCode.OK
        try:
            if method.server_streaming:
                call = channel.unary_stream(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request_cls())
                first = await asyncio.wait_for(call.read(), WAIT_S)
                assert first is not grpc.aio.EOF
                call.cancel()
            else:
                await channel.unary_unary(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request_cls(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
        assert code is not grpc.StatusCode.UNIMPLEMENTED, method.name
    # And the probe itself can tell: an unknown method is UNIMPLEMENTED.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channel.unary_unary(f"/{service.full_name}/NoSuchMethod")(b"", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
