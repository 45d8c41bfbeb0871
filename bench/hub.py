"""Benchmark: fan-out cost of the update hub, and watch streams over real gRPC.

Method (printed with the figures):

1. *Hub, in process.* One hub, S subscribers that never read (the worst case
   for memory), M migrations each published U times. Reports the cost of one
   publish (serialize once + offer to S conflating buffers) and the pending
   entries per subscriber afterwards, which conflation bounds by M.
2. *Agent over gRPC on 127.0.0.1.* An agent process with the simulated
   backend (N migrations, sampled every 0.1 s) and W watch streams from this
   process, each on its own channel (both share the machine's 2 cores). Reports the
   updates the agent published, the messages the streams received, and the delay from a
   record's ``updated_at`` to its
   arrival (p50/p99), over a fixed window.
3. *Burst.* B watch streams opened at once over one channel; reports how many
   got their snapshot and how many failed (the default gRPC backlog would
   cancel bursts beyond ~1,000-3,000 pending calls).

Run: ``make bench-hub`` (or ``python -m bench.hub --quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time

import grpc
from migwatch.agent.config import AgentConfig
from migwatch.agent.core.hub import Filter, Hub
from migwatch.agent.model import Direction, Migration, Phase, Transfer
from migwatch.agent.serve.server import running_agent
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc


def _migration(i: int, step: int) -> Migration:
    return Migration(
        id=f"00000000-0000-0000-0000-{i:012d}.out.1",
        domain_uuid=f"00000000-0000-0000-0000-{i:012d}",
        domain_name=f"vm{i}",
        source_host="bench-a",
        destination_host="bench-b",
        direction=Direction.OUTGOING,
        phase=Phase.PRECOPY,
        backend="bench",
        agent_host="bench-a",
        memory=Transfer(1 << 30, step << 20, (1 << 30) - (step << 20), 100 << 20, step / 1024),
        iteration=1 + step // 100,
        elapsed_s=step * 0.5,
        eta_s=100.0 - step * 0.1,
        updated_at=time.time(),
    )


def bench_hub(subscribers: int, migrations: int, rounds: int) -> None:
    hub = Hub(lambda: "bench-a", "bench", "0", time.time)
    subs = [hub.subscribe(Filter())[1] for _ in range(subscribers)]
    began = time.perf_counter()
    for step in range(rounds):
        for i in range(migrations):
            hub.publish(_migration(i, step))
    elapsed = time.perf_counter() - began
    publishes = rounds * migrations
    pending = max(len(s._pending) for s in subs)
    print(
        f"hub: {subscribers} idle subscribers, {migrations} migrations x {rounds} updates: "
        f"{publishes / elapsed:,.0f} publishes/s, {elapsed / publishes * 1e6:.1f} us per publish "
        f"({elapsed / publishes / subscribers * 1e9:.0f} ns per subscriber); "
        f"max pending per subscriber {pending} (bound: {migrations})"
    )


async def bench_grpc(migrations: int, watchers: int, window_s: float) -> None:
    port = _free_port()
    target = f"127.0.0.1:{port}"
    # The agent runs in its own process, as on a hypervisor; the readers here.
    agent = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "migwatch.agent", "--listen", target),
        *("--scenario", f"converging*{migrations}", "--sample-interval", "0.1"),
        *("--log-level", "warning"),
    )
    try:
        await _wait_serving(target)
        delays: list[float] = []
        received = 0
        max_seq = 0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal received, max_seq
            async with grpc.aio.insecure_channel(
                target, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as channel:
                stub = pb_grpc.MigrationServiceStub(channel)
                call = stub.WatchMigrations(pb.WatchMigrationsRequest())
                live = False
                async for msg in call:
                    if stop.is_set():
                        call.cancel()
                        return
                    if msg.HasField("snapshot_complete"):
                        live = True
                    elif live and msg.HasField("migration"):
                        received += 1
                        max_seq = max(max_seq, msg.migration.sequence)
                        sent = msg.migration.updated_at.ToNanoseconds() / 1e9
                        delays.append(time.time() - sent)

        tasks = [asyncio.create_task(watch()) for _ in range(watchers)]
        await asyncio.sleep(2.0)
        seq0, received0, began = max_seq, received, time.perf_counter()
        delays.clear()
        await asyncio.sleep(window_s)
        elapsed = time.perf_counter() - began
        published = max_seq - seq0
        got = received - received0
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        agent.terminate()
        await agent.wait()
    delays.sort()
    p50 = statistics.median(delays) * 1000 if delays else float("nan")
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000 if delays else float("nan")
    print(
        f"grpc: agent process with {migrations} simulated migrations sampled at 10 Hz, "
        f"{watchers} watch streams from another process, {elapsed:.1f} s: agent published "
        f"{published / elapsed:,.0f} updates/s, streams received {got / elapsed:,.0f} msgs/s "
        f"({got / max(1, published * watchers):.0%} of published x streams; the rest conflated); "
        f"delay updated_at->received p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_serving(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.MigrationServiceStub(channel)
        for _ in range(100):
            try:
                await stub.ListMigrations(pb.ListMigrationsRequest(), timeout=1)
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"agent at {target} did not start")


async def bench_burst(streams: int) -> None:
    config = AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("quick",),
        max_subscribers=streams + 10,
        grace_s=0.5,
    )
    ok = 0
    errors: dict[str, int] = {}
    async with (
        running_agent(config) as agent,
        grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel,
    ):
        stub = pb_grpc.MigrationServiceStub(channel)

        async def one() -> None:
            nonlocal ok
            call = stub.WatchMigrations(pb.WatchMigrationsRequest())
            try:
                async for msg in call:
                    if msg.HasField("snapshot_complete"):
                        ok += 1
                        break
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            finally:
                call.cancel()

        began = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(streams)))
        elapsed = time.perf_counter() - began
    print(
        f"burst: {streams} watch streams opened at once on one channel: {ok} got their snapshot "
        f"in {elapsed:.1f} s, failures {errors or 'none'}"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    a = p.parse_args()
    print(__doc__.split("Run:")[0].strip())
    print()
    if a.quick:
        bench_hub(100, 50, 20)
        asyncio.run(bench_grpc(20, 10, 2.0))
        asyncio.run(bench_burst(200))
    else:
        bench_hub(1000, 200, 50)
        asyncio.run(bench_grpc(100, 10, 10.0))
        asyncio.run(bench_grpc(100, 100, 10.0))
        asyncio.run(bench_burst(5000))


if __name__ == "__main__":
    main()
