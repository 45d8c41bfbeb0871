"""Notifications on a real RabbitMQ (lab/bus.py), read by oslo.messaging's own listener.

The agents run the simulated backend 5x faster than real time, so a few seconds hold
several complete migrations (quick ones, a converging one, one with a disk copy).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest
from migwatch.agent.config import AgentConfig
from migwatch.agent.notify.publisher import import_oslo_messaging
from migwatch.agent.serve.server import Agent, running_agent
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

from lab.bus import Broker, free_port
from tests.conftest import BusListener

pytestmark = pytest.mark.usefixtures("collect_bus_garbage")

INTERVAL_S = 0.5


def _config(url: str, topic: str, **kw: Any) -> AgentConfig:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "simulated_scenarios": ("quick", "converging", "disk", "quick"),
        "simulated_speed": 5.0,
        "sample_interval_s": 0.1,
        "grace_s": 1.0,
        "notify_url": url,
        "notify_topic": topic,
        "notify_interval_s": INTERVAL_S,
        **kw,
    }
    return AgentConfig(**values)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _finals(agent: Agent) -> dict[str, Any]:
    return {m.id: m for m in agent.hub.snapshot() if m.phase.terminal}


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


class _Watch:
    """A gRPC watch stream on the agent, counting live migration messages with their arrival."""

    def __init__(self, port: int) -> None:
        self.arrivals: list[float] = []
        self._port = port
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self._port}") as channel:
            stub = pb_grpc.MigrationServiceStub(channel)
            async for msg in stub.WatchMigrations(pb.WatchMigrationsRequest()):
                if msg.HasField("migration"):
                    self.arrivals.append(time.monotonic())

    def between(self, start: float, end: float) -> int:
        return sum(1 for t in self.arrivals if start <= t <= end)

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _check_every_end_arrived(agent: Agent, bus: BusListener) -> None:
    ends = {d["id"]: d for d in bus.of("migwatch.migration.end")}
    starts = {d["id"] for d in bus.of("migwatch.migration.start")}
    finals = _finals(agent)
    assert finals, "no migration finished during the test"
    assert set(finals) <= set(ends), f"ends missing: {sorted(set(finals) - set(ends))}"
    assert set(ends) <= starts, "an end without its start"
    counts = Counter(d["id"] for d in bus.of("migwatch.migration.end"))
    assert max(counts.values()) == 1, f"an end sent twice: {counts.most_common(1)}"
    for mid, m in finals.items():
        assert ends[mid]["outcome"] == m.phase.name.lower()


@pytest.mark.asyncio
async def test_listener_gets_start_rate_limited_progress_and_end_of_every_migration(
    bus_broker: Broker, bus_listener: BusListener
) -> None:
    """An oslo.messaging listener receives, for every migration, its start, progress at most
    once per interval (more only on a change of phase or verdict) with memory and disk apart,
    the ETA band and the verdict, and exactly one end with the outcome."""
    config = _config(bus_broker.url, bus_listener.topic, metrics_listen="127.0.0.1:0")
    async with running_agent(config) as agent:
        await asyncio.sleep(9.0)  # quick ones end in ~0.3 s, disk ~7.5 s, restarts after 2 s
        await _until(
            lambda: (
                set(_finals(agent)) <= {d["id"] for d in bus_listener.of("migwatch.migration.end")}
            ),
            10,
            "the ends",
        )
        assert agent.metrics is not None
        metrics = await asyncio.to_thread(_scrape, agent.metrics.port)
        _check_every_end_arrived(agent, bus_listener)

    events = bus_listener.snapshot()
    assert {p for _, p, _, _ in events} == {"migwatch-agent:sim-host-a"}
    host = bus_listener.of("migwatch.host.state")
    assert host and host[0]["state"] == "ok" and host[0]["backend"] == "simulated"
    payloads = [p for _, _, e, p in events if e.startswith("migwatch.migration.")]
    assert {p["migwatch_object.name"] for p in payloads} == {"MigrationPayload"}
    assert {p["migwatch_object.version"] for p in payloads} == {"1.0"}

    # Rate limit: between two progress events of one migration, at least the interval
    # (minus the broker's jitter), unless the phase or the verdict changed.
    by_id: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    for t, _, e, p in events:
        if e == "migwatch.migration.progress":
            by_id[p["migwatch_object.data"]["id"]].append((t, p["migwatch_object.data"]))
    assert by_id, "no progress at all"
    for series in by_id.values():
        for (t0, a), (t1, b) in itertools.pairwise(series):
            changed = (a["phase"], a["convergence"]) != (b["phase"], b["convergence"])
            assert changed or t1 - t0 >= INTERVAL_S * 0.6, (t1 - t0, a["phase"], b["phase"])
    # Far fewer than the samples: each migration was sampled at 10 Hz.
    assert len(payloads) < 0.5 * agent.hub.sequence

    progress = [d for series in by_id.values() for _, d in series]
    disk = [d for d in progress if d["disk"]["migwatch_object.data"]["total_bytes"] > 0]
    assert disk, "the disk scenario's progress shows its disk copy"
    assert all(d["memory"]["migwatch_object.name"] == "TransferPayload" for d in progress)
    banded = [d for d in progress if d["eta_s"] is not None]
    assert banded and all(d["eta_low_s"] <= d["eta_s"] <= d["eta_high_s"] for d in banded)
    assert {d["convergence"] for d in progress} & {"converging", "slow"}
    assert all(d["convergence_reason"] for d in progress if d["convergence"] != "unknown")
    ends = bus_listener.of("migwatch.migration.end")
    done = [d for d in ends if d["outcome"] == "completed"]
    assert done and all(d["actual_downtime_s"] is not None and d["duration_s"] > 0 for d in done)
    assert all(d["memory"]["migwatch_object.data"]["total_bytes"] > 0 for d in done)
    assert 'migwatch_notifications_sent_total{event="end"}' in metrics
    assert "migwatch_notification_bus_up 1.0" in metrics


@pytest.mark.asyncio
async def test_broker_killed_for_12_s_loses_no_end_and_streams_keep_flowing(
    bus_broker: Broker, bus_listener: BusListener, caplog: pytest.LogCaptureFixture
) -> None:
    """With the broker killed mid-run and restarted 12 s later, every migration that ended
    meanwhile still reaches the listener (once), the gRPC watch stream keeps delivering
    during the outage, and the agent logs the outage in one line."""
    caplog.set_level(logging.INFO, logger="migwatch.agent.notify.publisher")
    config = _config(bus_broker.url, bus_listener.topic)
    async with running_agent(config) as agent:
        watch = _Watch(agent.port)
        try:
            await _until(lambda: bus_listener.of("migwatch.migration.progress"), 10, "progress")
            bus_broker.kill()
            down_at = time.monotonic()
            before = set(_finals(agent))
            await asyncio.sleep(12.0)
            during = watch.between(down_at + 1, time.monotonic())
            ended_while_down = set(_finals(agent)) - before
            await asyncio.to_thread(bus_broker.restart)
            await _until(
                lambda: (
                    set(_finals(agent))
                    <= {d["id"] for d in bus_listener.of("migwatch.migration.end")}
                ),
                30,
                "the ends",
            )
        finally:
            await watch.close()
        _check_every_end_arrived(agent, bus_listener)
    assert ended_while_down, "no migration ended while the broker was down"
    assert during > 12 * 5, f"the watch stream stalled during the outage ({during} messages)"
    ours = [r for r in caplog.records if r.name == "migwatch.agent.notify.publisher"]
    outage_lines = [r for r in ours if "unreachable" in r.getMessage()]
    assert len(outage_lines) == 1, [r.getMessage() for r in outage_lines]
    assert any("is back after" in r.getMessage() for r in ours)


@pytest.mark.asyncio
async def test_frozen_broker_delays_notifications_but_never_the_agent(
    bus_broker: Broker, bus_listener: BusListener
) -> None:
    """A broker that stops answering (SIGSTOP) for 5 s holds back notifications only: the
    watch stream keeps its rate, and once the broker answers again every end arrives."""
    config = _config(bus_broker.url, bus_listener.topic)
    async with running_agent(config) as agent:
        watch = _Watch(agent.port)
        try:
            await _until(lambda: bus_listener.of("migwatch.migration.progress"), 10, "progress")
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            before = watch.between(t0 - 1.0, t0)
            bus_broker.pause()
            try:
                await asyncio.sleep(5.0)
                frozen = watch.between(t0 + 1.0, time.monotonic()) / 4.0
            finally:
                bus_broker.resume()
            await _until(
                lambda: (
                    set(_finals(agent))
                    <= {d["id"] for d in bus_listener.of("migwatch.migration.end")}
                ),
                30,
                "the ends",
            )
        finally:
            await watch.close()
        _check_every_end_arrived(agent, bus_listener)
    # Four migrations sampled at 10 Hz: ~40 messages/s when the loop is free.
    assert frozen >= 0.5 * before, (before, frozen)


@pytest.mark.asyncio
async def test_unreachable_bus_at_start_neither_delays_nor_blocks_the_agent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An agent whose broker is not there starts, serves and stops promptly, and says so in
    one line however many sends fail."""
    caplog.set_level(logging.INFO, logger="migwatch.agent.notify.publisher")
    url = f"rabbit://guest:secret@127.0.0.1:{free_port()}/"
    import_oslo_messaging()  # its first import (~1 s) is start-up cost with or without a broker
    began = time.monotonic()
    config = _config(url, "nowhere")
    async with running_agent(config) as agent:
        started = time.monotonic() - began
        watch = _Watch(agent.port)
        await asyncio.sleep(4.0)
        await watch.close()
        assert agent.bus is not None and agent.bus.outages == 1 and not agent.bus.up
        stopping = time.monotonic()
    assert started < 2.0
    assert time.monotonic() - stopping < config.grace_s + 3.0
    assert watch.between(0, time.monotonic()) > 40
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "migwatch.agent.notify.publisher" and "unreachable" in r.getMessage()
    ]
    assert len(lines) == 1 and "secret" not in lines[0] and "***" in lines[0]


@pytest.mark.asyncio
async def test_notify_config_publishes_with_the_deployments_durable_queues(
    bus_broker: Broker, tmp_path: Path
) -> None:
    """With --notify-config naming the deployment's messaging settings (durable queues, its
    own control exchange, as a nova.conf would), the agent declares the exchange and queue
    as the deployment's own consumers do, and an oslo.messaging listener with that same
    file receives every migration's start and end; without the durable setting RabbitMQ
    refuses the agent's declaration and nothing arrives."""
    suffix = time.monotonic_ns()
    exchange, topic = f"mwtest_durable_{suffix}", f"mwtest_durable_{suffix}"
    conf = tmp_path / "nova.conf"
    conf.write_text(
        f"[DEFAULT]\ncontrol_exchange = {exchange}\n\n"
        "[oslo_messaging_rabbit]\namqp_durable_queues = true\n"
    )
    listener = BusListener(bus_broker.url, topic, config_file=str(conf))
    try:
        # The same exchange without the durable setting: RabbitMQ refuses the declaration
        # (406 PRECONDITION_FAILED, inequivalent arg 'durable'), so nothing gets through.
        plain = tmp_path / "plain.conf"
        plain.write_text(f"[DEFAULT]\ncontrol_exchange = {exchange}\n")
        async with running_agent(_config(bus_broker.url, topic, notify_config=str(plain))) as a:
            await _until(lambda: bool(_finals(a)), 10, "a migration's end")
            await _until(lambda: a.bus is not None and a.bus.outages >= 1, 10, "the refusal")
            assert a.bus is not None and not a.bus.up
        assert not listener.of("migwatch.migration.end")
        config = _config(bus_broker.url, topic, notify_config=str(conf))
        async with running_agent(config) as agent:
            await _until(
                lambda: (
                    len(_finals(agent)) >= 2
                    and set(_finals(agent))
                    <= {d["id"] for d in listener.of("migwatch.migration.end")}
                ),
                20,
                "two migrations' ends through the durable exchange",
            )
            _check_every_end_arrived(agent, listener)
    finally:
        listener.close()
    exchanges = await asyncio.to_thread(bus_broker.rabbitmqctl, "list_exchanges", "name", "durable")
    queues = await asyncio.to_thread(bus_broker.rabbitmqctl, "list_queues", "name", "durable")
    assert f"{exchange}\ttrue" in exchanges, exchanges
    assert f"{topic}.info\ttrue" in queues, queues


def test_notify_config_must_name_a_file_and_needs_a_url(tmp_path: Path) -> None:
    """A --notify-config that is not a file, or one without --notify-url, is refused with a
    message saying what to give."""
    from migwatch.agent.config import ConfigError

    with pytest.raises(ConfigError, match="no such file"):
        _config("rabbit://127.0.0.1:5672/", "t", notify_config=str(tmp_path / "nope")).validate()
    conf = tmp_path / "nova.conf"
    conf.write_text("[oslo_messaging_rabbit]\n")
    with pytest.raises(ConfigError, match="notify_url"):
        _config("", "t", notify_config=str(conf)).validate()
