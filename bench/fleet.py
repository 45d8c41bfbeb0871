"""Fleet-scale benchmark: one client over direct gRPC, the bus, and the hub's own cost.

Method (printed with the figures; everything on 127.0.0.1 of one machine, so the agents,
the broker and the client share its cores: the client's CPU is its own process's, the
latency includes the contention):

1. *One client following N agents directly.* N real agents (``Agent``: hub, servicer,
   grpc.aio server on 127.0.0.1:0, simulated backend sampling at 2 Hz), many per process
   (two agent processes); a share of the hosts (``--share``, default 10 %) runs one
   converging migration after another, the rest are idle (heartbeats only). One client
   process (this one) follows all of them with ``Fleet.watch()``, one channel per agent.
   After every agent is synced, over a window: the client's CPU (cores), its resident
   memory, the updates per second it applied, and the delay from a record's
   ``updated_at`` (the sample) to the client having applied it (p50/p99). The knee is
   the first N where the client needs more than 80 % of a core or the p99 delay exceeds
   one sample interval (0.5 s).
2. *1,000+ agents publishing to one RabbitMQ during a maintenance wave.* A private
   rabbitmq-server (lab/bus.py). Publisher processes run H hosts each: per host the
   agent's real ``BusPublisher`` (oslo.messaging Notifier in its own thread, own AMQP
   connection) fed by a hub into which a driver publishes two concurrent migrations at a
   time, each 20-40 s, sampled at 2 Hz. One consumer (this process: ``watch_bus`` into
   the bus-fed fleet state, oslo.messaging listener on a shared pool queue). Figures:
   messages/s through the broker (as the consumer received them), the broker's CPU, the
   consumer's CPU, the delay from the Notifier building the message (oslo's envelope
   timestamp) to the consumer applying it (p50/p99). Run twice: progress rate-limited to
   the default 10 s, and progress at every sample (0.5 s: what nova's per-sample progress
   did to RabbitMQ, bug 2091138).
3. *Hub fan-out vs bare gRPC.* In the same run and with the same readers: a real agent
   (hub + servicer) into whose hub M migrations are published at 2 Hz each, and a bare
   grpc.aio server with one queue per stream streaming the very same serialized bytes at
   the same times. W readers (one channel each) in this process. Each server runs in its
   own process; figures: messages delivered per server CPU-second, and delay p50/p99
   from ``updated_at`` to the reader, with hub/bare ratios.

Run: ``make bench-fleet`` (or ``python -m bench.fleet --quick``; ``--part 1|2|3``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
from migwatch.agent.config import AgentConfig
from migwatch.agent.core.convert import migration_to_pb
from migwatch.agent.model import Convergence, Direction, HostState, Migration, Phase, Transfer
from migwatch.v1 import migwatch_pb2 as pb

SAMPLE_S = 0.5  # 2 Hz, the agents' sampling
KNEE_CPU = 0.8  # cores
KNEE_P99_S = SAMPLE_S
PROBE = 99_999  # part 2's probe agent: hv99999


def _rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pid_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


# -- child processes -------------------------------------------------------------------
@asynccontextmanager
async def _child(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, Any]]:
    """``python -m bench.fleet --child ARGS``; yields it and the JSON of its first line.
    Stopped with SIGTERM (then SIGKILL) on the way out."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fleet",
        "--child",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(180):
            line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {args} exited with {await proc.wait()}")
        yield proc, json.loads(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(20):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _serve_forever(ready: dict[str, Any]) -> None:
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def child_agents(count: int, first: int, share: float) -> None:
    """``count`` agents in this process; every 1/share-th one keeps migrating."""
    from migwatch.agent.serve.server import Agent

    every = max(1, round(1 / share)) if share > 0 else 0
    agents = []
    for i in range(first, first + count):
        migrating = every and i % every == 0
        config = AgentConfig(
            listen="127.0.0.1:0",
            host_name=f"hv{i:05d}",
            sample_interval_s=SAMPLE_S,
            simulated_scenarios=("converging",) if migrating else (),
            grace_s=0.2,
            log_level="warning",
        )
        agent = Agent(config)
        await agent.start()
        agents.append(agent)
    try:
        await _serve_forever({"targets": [f"127.0.0.1:{a.port}" for a in agents]})
    finally:
        await asyncio.gather(*(a.stop() for a in agents))


def _record(
    i: int, host: str, progress: float, now: float, *, seq: int = 0, phase: Phase = Phase.PRECOPY
) -> Migration:
    total = 4 << 30
    done = int(total * min(1.0, progress))
    return Migration(
        id=f"{i:08x}-0000-0000-0000-000000000000.out.{seq}",
        domain_uuid=f"{i:08x}-0000-0000-0000-000000000000",
        domain_name=f"vm{i}",
        source_host=host,
        destination_host="elsewhere",
        direction=Direction.OUTGOING,
        phase=phase,
        backend="bench",
        agent_host=host,
        memory=Transfer(total, done, total - done, 100 << 20, min(1.0, progress)),
        iteration=1 + int(progress * 4),
        elapsed_s=progress * 30,
        eta_s=(1 - progress) * 30,
        eta_low_s=(1 - progress) * 25,
        eta_high_s=(1 - progress) * 40,
        convergence=Convergence.CONVERGING if progress > 0.3 else Convergence.UNKNOWN,
        started_at=now - progress * 30,
        updated_at=now,
        finished_at=now if phase.terminal else None,
        actual_downtime_s=0.03 if phase is Phase.COMPLETED else None,
    )


async def child_publishers(
    count: int, first: int, url: str, topic: str, interval_s: float, wave_s: float
) -> None:
    """``count`` hosts, each a hub + the agent's BusPublisher, in a maintenance wave."""
    from migwatch.agent.core.hub import Hub
    from migwatch.agent.notify.policy import HostReport
    from migwatch.agent.notify.publisher import BusConfig, BusPublisher

    hosts = [f"hv{i:05d}" for i in range(first, first + count)]

    def named(host: str) -> Callable[[], str]:
        return lambda: host

    def report(host: str) -> Callable[[], HostReport]:
        return lambda: HostReport(host, "bench", HostState.OK, "", "0")

    hubs = [Hub(named(h), "bench", "0", time.time) for h in hosts]
    pubs = [
        BusPublisher(BusConfig(url, topic, interval_s), hub, report(h))
        for h, hub in zip(hosts, hubs, strict=True)
    ]
    # Agents keep their AMQP connection for days: connect them (staggered, as agents
    # start at different times) before the wave, so the figures are the wave's.
    tasks = []
    for p in pubs:
        tasks.append(asyncio.create_task(p.run()))
        await asyncio.sleep(0.02)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(90):
            while not all(p.up for p in pubs):
                await asyncio.sleep(0.5)
    rng = random.Random(first)
    serial = first * 1000

    async def host(k: int) -> None:
        nonlocal serial
        slots = 2
        running: dict[int, tuple[float, float]] = {}  # id -> (start, duration)
        await asyncio.sleep(rng.uniform(0, 5))  # the wave rolls in
        end_at = time.monotonic() + wave_s
        while True:
            now = time.monotonic()
            while len(running) < slots and now < end_at:
                serial += 1
                running[serial] = (now, rng.uniform(20, 40))
            if not running:
                return
            for mid, (start, duration) in list(running.items()):
                progress = (now - start) / duration
                done = progress >= 1
                hubs[k].publish(
                    _record(
                        mid,
                        hosts[k],
                        progress,
                        time.time(),
                        seq=mid,
                        phase=Phase.COMPLETED if done else Phase.PRECOPY,
                    )
                )
                if done:
                    del running[mid]
            await asyncio.sleep(SAMPLE_S)

    drivers = [asyncio.create_task(host(k)) for k in range(count)]
    try:
        await _serve_forever({"hosts": count, "up": sum(p.up for p in pubs), "pid": os.getpid()})
    finally:
        for d in drivers:
            d.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*drivers, *tasks, return_exceptions=True)
        await asyncio.gather(*(p.close(1.0) for p in pubs))
        sent = sum(sum(p.policy.stats.sent.values()) for p in pubs)
        print(json.dumps({"sent": sent}), flush=True)


async def child_fanout(kind: str, migrations: int) -> None:
    """A hub-backed agent or a bare grpc.aio server, publishing ``migrations`` at 2 Hz."""
    records = [_record(i, "fan", 0.0, time.time()) for i in range(migrations)]
    offer: Callable[[Migration], None]
    server: Any = None
    if kind == "hub":
        from migwatch.agent.serve.server import Agent

        agent = Agent(
            AgentConfig(
                listen="127.0.0.1:0", simulated_scenarios=(), grace_s=0.2, log_level="warning"
            )
        )
        port = await agent.start()

        def hub_offer(m: Migration) -> None:
            agent.hub.publish(m)

        offer = hub_offer
    else:
        queues: set[asyncio.Queue[bytes]] = set()

        async def watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
            q: asyncio.Queue[bytes] = asyncio.Queue()
            queues.add(q)
            try:
                yield pb.WatchMigrationsResponse(
                    snapshot_complete=pb.SnapshotComplete()
                ).SerializeToString()
                while True:
                    yield await q.get()
            finally:
                queues.discard(q)

        def bare_offer(m: Migration) -> None:
            # What the hub does per publish: serialize once, hand the bytes to every stream.
            payload = pb.WatchMigrationsResponse(migration=migration_to_pb(m)).SerializeToString()
            for q in queues:
                q.put_nowait(payload)

        offer = bare_offer
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "migwatch.v1.MigrationService",
                    {
                        "WatchMigrations": grpc.unary_stream_rpc_method_handler(
                            watch, request_deserializer=lambda b: b, response_serializer=lambda b: b
                        )
                    },
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()

    async def drive() -> None:
        step = 0
        while True:
            step += 1
            for i, m in enumerate(records):
                offer(replace(m, updated_at=time.time(), iteration=step, sequence=0))
                if i % 50 == 49:
                    await asyncio.sleep(0)
            await asyncio.sleep(SAMPLE_S)

    driver = asyncio.create_task(drive())
    try:
        await _serve_forever({"port": port, "pid": os.getpid()})
    finally:
        driver.cancel()
        if kind == "hub":
            await agent.stop()
        else:
            await server.stop(0.2)


# -- part 1 ------------------------------------------------------------------------------
@dataclass
class FleetRow:
    n: int
    connect_s: float
    cpu: float
    rss_mib: float
    updates_s: float
    p50_ms: float
    p99_ms: float


async def part_grpc(sizes: list[int], share: float, window_s: float) -> list[FleetRow]:
    from migwatch.client import AgentUpdate, Fleet, MigrationUpdate

    rows = []
    for n in sizes:
        half = n // 2
        async with (
            _child("agents", str(half), "0", str(share)) as (_, a),
            _child("agents", str(n - half), str(half), str(share)) as (_, b),
        ):
            targets = a["targets"] + b["targets"]
            fleet = Fleet(targets, heartbeat_interval_s=5.0)
            began = time.monotonic()
            synced: set[str] = set()
            delays: list[float] = []
            applied = 0
            async with fleet.watch() as updates:
                stream = aiter(updates)
                async with asyncio.timeout(120):
                    while len(synced) < n:
                        u = await anext(stream)
                        if isinstance(u, AgentUpdate) and u.state.synced:
                            synced.add(u.agent)
                connect_s = time.monotonic() - began
                cpu0, t0 = time.process_time(), time.monotonic()
                deadline = t0 + window_s
                while (now := time.monotonic()) < deadline:
                    try:
                        async with asyncio.timeout(deadline - now):
                            u = await anext(stream)
                    except TimeoutError:
                        break
                    if isinstance(u, MigrationUpdate):
                        applied += 1
                        if u.migration.updated_at is not None:
                            delays.append(time.time() - u.migration.updated_at.timestamp())
                elapsed = time.monotonic() - t0
                cpu = (time.process_time() - cpu0) / elapsed
                rss = _rss_mib()
        row = FleetRow(
            n,
            connect_s,
            cpu,
            rss,
            applied / elapsed,
            _pct(delays, 0.5) * 1000,
            _pct(delays, 0.99) * 1000,
        )
        rows.append(row)
        print(
            f"  N={n:5}: all synced in {row.connect_s:5.1f} s; client {row.cpu:4.2f} cores, "
            f"{row.rss_mib:5.0f} MiB; {row.updates_s:6.0f} updates/s; delay p50 "
            f"{row.p50_ms:6.1f} ms, p99 {row.p99_ms:7.1f} ms",
            flush=True,
        )
    knee = next((r for r in rows if r.cpu > KNEE_CPU or r.p99_ms > KNEE_P99_S * 1000), None)
    if knee is None:
        print(
            f"  knee: not reached up to N={rows[-1].n} (client below {KNEE_CPU} cores and "
            f"p99 below {KNEE_P99_S * 1000:.0f} ms)"
        )
    else:
        print(f"  knee: N={knee.n} (client {knee.cpu:.2f} cores, p99 {knee.p99_ms:.0f} ms)")
    return rows


def fit_client_cost(rows: list[FleetRow]) -> tuple[float, float]:
    """Least squares of client cores = a * agents + b * updates/s (no intercept):
    (a, b) = cores per followed agent, cores per update/s."""
    sxx = sum(r.n * r.n for r in rows)
    syy = sum(r.updates_s * r.updates_s for r in rows)
    sxy = sum(r.n * r.updates_s for r in rows)
    sxc = sum(r.n * r.cpu for r in rows)
    syc = sum(r.updates_s * r.cpu for r in rows)
    det = sxx * syy - sxy * sxy
    return (sxc * syy - syc * sxy) / det, (syc * sxx - sxc * sxy) / det


def print_knee_model(rows: list[FleetRow]) -> None:
    a, b = fit_client_cost(rows)
    print(
        f"  client cost fitted over both series: {a * 1e6:.0f} micro-cores per followed agent "
        f"(heartbeats, keepalives), {b * 1e6:.0f} micro-cores per update/s "
        f"({b * 1e3:.2f} ms of CPU per update)"
    )
    for share in (0.1, 0.3, 1.0):
        per_agent = a + share * 2.0 * b  # a migrating host sends 2 updates/s
        print(
            f"  -> {KNEE_CPU} cores reached at N = {KNEE_CPU / per_agent:,.0f} agents with "
            f"{share:.0%} of hosts migrating"
        )


# -- part 2 ------------------------------------------------------------------------------
async def part_bus(hosts: int, procs: int, interval_s: float, window_s: float) -> None:
    from migwatch.client.bus import watch_bus

    from lab.bus import Broker

    broker = await asyncio.to_thread(Broker.start)
    try:
        topic = f"bench_{int(time.time())}"
        async with watch_bus(broker.url, topic, pool="bench") as bus:
            # Consume from the start (a backlog built while the publishers connect would
            # otherwise count as delay); only what arrives in the window is counted.
            seen: list[tuple[float, str, str, float]] = []  # (at, host, type, delay)

            async def consume() -> None:
                async for event, _ in bus:
                    sent_at = datetime.fromisoformat(event.timestamp + "+00:00").timestamp()
                    seen.append(
                        (time.monotonic(), event.host, event.event_type, time.time() - sent_at)
                    )

            consumer = asyncio.create_task(consume())
            per = hosts // procs
            # The probe: one more agent in a process of its own, as on a real host (the
            # others share 250 to a process and its GIL), publishing progress at every sample.
            specs: list[tuple[str, ...]] = [
                (
                    "publishers",
                    str(per),
                    str(k * per),
                    broker.url,
                    topic,
                    str(interval_s),
                    str(window_s),
                )
                for k in range(procs)
            ]
            specs.append(
                ("publishers", "1", str(PROBE), broker.url, topic, str(SAMPLE_S), str(window_s))
            )
            async with _children(specs) as ready:
                up = sum(r["up"] for r in ready) - 1
                pids = [r["pid"] for r in ready]
                pcpu0 = sum(_pid_cpu_s(pid) for pid in pids)
                cpu0, bcpu0, t0 = time.process_time(), broker.cpu_seconds(), time.monotonic()
                await asyncio.sleep(window_s)
                elapsed = time.monotonic() - t0
                cpu = (time.process_time() - cpu0) / elapsed
                bcpu = (broker.cpu_seconds() - bcpu0) / elapsed
                pcpu = (sum(_pid_cpu_s(pid) for pid in pids) - pcpu0) / elapsed
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            window = [x for x in seen if t0 <= x[0] <= t0 + elapsed]
            received = len(window)
            ends = sum(1 for x in window if x[2].endswith(".end"))
            delays = [x[3] for x in window]
            probe = [x[3] for x in window if x[1] == f"hv{PROBE:05d}"]
    finally:
        await asyncio.to_thread(broker.stop)
    print(
        f"  {hosts} publishers ({up} connected before the wave), progress every "
        f"{interval_s:g} s: broker {received / elapsed:6.0f}"
        f" msgs/s, broker CPU {bcpu:4.2f} cores, consumer CPU {cpu:4.2f} cores, publisher "
        f"processes {pcpu:4.2f} cores; delay "
        f"p50 {_pct(delays, 0.5) * 1000:7.1f} ms, p99 {_pct(delays, 0.99) * 1000:7.1f} ms "
        f"(the probe agent's p50 {_pct(probe, 0.5) * 1000:.1f} ms, p99 "
        f"{_pct(probe, 0.99) * 1000:.1f} ms over {len(probe)}); {ends} migration ends received",
        flush=True,
    )


@asynccontextmanager
async def _children(specs: list[tuple[str, ...]]) -> AsyncIterator[list[Any]]:
    """Several children at once (started in order); yields their ready lines."""
    if not specs:
        yield []
        return
    async with _child(*specs[0]) as (_, first), _children(specs[1:]) as rest:
        yield [first, *rest]


# -- part 3 ------------------------------------------------------------------------------
async def _read_fanout(
    port: int, pid: int, readers: int, window_s: float
) -> tuple[float, float, float, float]:
    """(messages delivered, server CPU seconds, p50 s, p99 s) over the window."""
    count = 0
    delays: list[float] = []
    measuring = False

    async def read() -> None:
        nonlocal count
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            call = channel.unary_stream(
                "/migwatch.v1.MigrationService/WatchMigrations",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=pb.WatchMigrationsResponse.FromString,
            )(pb.WatchMigrationsRequest())
            async for msg in call:
                if measuring and msg.HasField("migration"):
                    count += 1
                    delays.append(time.time() - msg.migration.updated_at.ToNanoseconds() / 1e9)

    tasks = [asyncio.create_task(read()) for _ in range(readers)]
    await asyncio.sleep(2.0)
    measuring, cpu0 = True, _pid_cpu_s(pid)
    await asyncio.sleep(window_s)
    measuring, cpu = False, _pid_cpu_s(pid) - cpu0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return count, cpu, _pct(delays, 0.5), _pct(delays, 0.99)


async def part_fanout(migrations: int, readers: int, window_s: float, rounds: int) -> None:
    results: dict[str, list[tuple[float, float, float, float]]] = {"hub": [], "bare": []}
    for _ in range(rounds):
        for kind in ("hub", "bare"):
            async with _child("fanout", kind, str(migrations)) as (_, info):
                results[kind].append(
                    await _read_fanout(info["port"], info["pid"], readers, window_s)
                )
    summary = {}
    for kind, rs in results.items():
        msgs = sum(r[0] for r in rs)
        cpu = sum(r[1] for r in rs)
        p50 = statistics.median(r[2] for r in rs)
        p99 = statistics.median(r[3] for r in rs)
        summary[kind] = (msgs / max(cpu, 1e-9), p50, p99, msgs / (window_s * rounds))
        print(
            f"  {kind:4}: {msgs / (window_s * rounds):7.0f} msgs/s delivered, "
            f"{summary[kind][0]:7.0f} msgs per server CPU-second; delay p50 "
            f"{p50 * 1000:6.1f} ms, p99 {p99 * 1000:6.1f} ms",
            flush=True,
        )
    h, b = summary["hub"], summary["bare"]
    print(
        f"  hub/bare: msgs per CPU-second {h[0] / b[0]:.2f}, delay p50 {h[1] / b[1]:.2f}, "
        f"p99 {h[2] / b[2]:.2f}"
    )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        kind, args = sys.argv[2], sys.argv[3:]
        if kind == "agents":
            asyncio.run(child_agents(int(args[0]), int(args[1]), float(args[2])))
        elif kind == "publishers":
            asyncio.run(
                child_publishers(
                    int(args[0]), int(args[1]), args[2], args[3], float(args[4]), float(args[5])
                )
            )
        else:
            asyncio.run(child_fanout(args[0], int(args[1])))
        return
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument(
        "--part",
        choices=("1", "2", "3"),
        action="append",
        help="run only these parts (repeatable; default all)",
    )
    p.add_argument(
        "--sizes",
        default="100,250,500,1000,2000",
        help="part 1: numbers of agents (default 100,250,500,1000,2000)",
    )
    p.add_argument(
        "--share", type=float, default=0.1, help="part 1: share of hosts migrating (default 0.1)"
    )
    p.add_argument("--publishers", type=int, default=1000, help="part 2: hosts (default 1000)")
    a = p.parse_args()
    parts = a.part or ["1", "2", "3"]
    print(__doc__.split("Run:")[0].strip())
    print()
    if "1" in parts:
        sizes = [20, 50] if a.quick else [int(s) for s in a.sizes.split(",")]
        window = 4.0 if a.quick else 10.0
        print(f"1a. one client, N agents over gRPC, {a.share:.0%} migrating, sampled at 2 Hz:")
        rows = asyncio.run(part_grpc(sizes, a.share, window))
        wave = sizes if a.quick else [s for s in sizes if s >= 250]
        print("1b. the same during a maintenance wave: every host migrating:")
        rows += asyncio.run(part_grpc(wave, 1.0, window))
        print_knee_model(rows)
    if "2" in parts:
        hosts = 40 if a.quick else a.publishers
        window = 10.0 if a.quick else 40.0
        print(
            f"2. {hosts} agents publishing to one RabbitMQ, maintenance wave "
            "(2 concurrent 20-40 s migrations per host, sampled at 2 Hz):"
        )
        for interval in (10.0, SAMPLE_S):
            asyncio.run(part_bus(hosts, 2 if a.quick else 4, interval, window))
    if "3" in parts:
        loads = [(20, 10)] if a.quick else [(20, 50), (100, 50)]
        for m, w in loads:  # readers keep up with the first; the second saturates them
            print(
                f"3. hub vs bare grpc.aio: {m} migrations at 2 Hz, {w} readers "
                f"({m * 2 * w:,} msgs/s offered):"
            )
            asyncio.run(part_fanout(m, w, 3.0 if a.quick else 8.0, 1 if a.quick else 2))


if __name__ == "__main__":
    main()
