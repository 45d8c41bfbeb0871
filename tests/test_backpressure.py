"""Back-pressure over real gRPC: a slow subscriber stalls nobody and loses no final
state; a burst of thousands of new streams is accepted."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from migwatch.agent.config import AgentConfig
from migwatch.agent.serve.server import running_agent
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

pytestmark = pytest.mark.asyncio(loop_scope="function")

MIGRATIONS = 40


async def test_slow_subscriber_gets_conflated_states_and_every_final_without_stalling_others() -> (
    None
):
    """A stream that stops reading while 40 migrations run to completion later receives
    every final state (and fewer messages than were published, conflated), while a
    concurrent reader keeps receiving updates at the publish rate."""
    config = AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=(f"quick*{MIGRATIONS}",),
        simulated_speed=2.0,
        simulated_repeat=False,
        sample_interval_s=0.02,
        grace_s=0.2,
    )
    async with running_agent(config) as agent:
        target = f"127.0.0.1:{agent.port}"
        opts = [("grpc.use_local_subchannel_pool", 1)]
        # A small, fixed receive window, so the slow reader's backlog stays in the
        # agent (where it is conflated) instead of in HTTP/2 buffers.
        small = [*opts, ("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 8192)]
        async with (
            grpc.aio.insecure_channel(target, options=small) as slow_ch,
            grpc.aio.insecure_channel(target, options=opts) as fast_ch,
        ):
            slow = pb_grpc.MigrationServiceStub(slow_ch).WatchMigrations(
                pb.WatchMigrationsRequest()
            )
            fast_count = 0
            fast_finals: set[str] = set()

            async def fast_reader() -> None:
                nonlocal fast_count
                async for msg in pb_grpc.MigrationServiceStub(fast_ch).WatchMigrations(
                    pb.WatchMigrationsRequest()
                ):
                    if msg.HasField("migration"):
                        fast_count += 1
                        if msg.migration.phase >= pb.PHASE_COMPLETED:
                            fast_finals.add(msg.migration.id)

            fast = asyncio.create_task(fast_reader())
            await slow.read()  # the stream is open and subscribed
            seq0 = agent.hub.sequence
            deadline = time.monotonic() + 30
            while len(fast_finals) < MIGRATIONS and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the slow stream reads nothing meanwhile
            published = agent.hub.sequence - seq0
            assert len(fast_finals) == MIGRATIONS, "the fast reader was not stalled"
            assert fast_count >= 0.9 * published

            slow_finals: set[str] = set()
            slow_count = 0
            async with asyncio.timeout(20):
                while len(slow_finals) < MIGRATIONS:
                    msg = await slow.read()
                    assert msg is not grpc.aio.EOF
                    if msg.HasField("migration"):
                        slow_count += 1
                        if msg.migration.phase >= pb.PHASE_COMPLETED:
                            slow_finals.add(msg.migration.id)
            assert slow_finals == fast_finals
            assert slow_count < published, "a stalled reader gets conflated states"
            slow.cancel()
            fast.cancel()
            await asyncio.gather(fast, return_exceptions=True)


async def test_burst_of_5000_streams_is_accepted() -> None:
    """5,000 WatchMigrations calls opened at once all get their snapshot; none is
    CANCELLED by gRPC's pending-request backlog."""
    streams = 5000
    config = AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("quick",),
        max_subscribers=streams + 100,
        grace_s=0.2,
    )
    async with (
        running_agent(config) as agent,
        grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel,
    ):
        stub = pb_grpc.MigrationServiceStub(channel)
        errors: list[grpc.StatusCode] = []

        async def one() -> bool:
            call = stub.WatchMigrations(pb.WatchMigrationsRequest())
            try:
                async for msg in call:
                    if msg.HasField("snapshot_complete"):
                        return True
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code())
            finally:
                call.cancel()
            return False

        async with asyncio.timeout(120):
            done = await asyncio.gather(*(one() for _ in range(streams)))
        assert errors == [] and all(done)
