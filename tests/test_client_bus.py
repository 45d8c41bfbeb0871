"""The client's side of the bus: payload parsing, the bus-fed fleet, and `migwatch listen`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from migwatch.agent.config import AgentConfig
from migwatch.agent.model import (
    Action,
    Convergence,
    Direction,
    Limits,
    Migration,
    Phase,
    Recommendation,
    Transfer,
)
from migwatch.agent.notify import payload as pl
from migwatch.agent.serve.server import running_agent
from migwatch.client import AgentUpdate, MigrationUpdate
from migwatch.client import Convergence as CConvergence
from migwatch.client import Phase as CPhase
from migwatch.client.bus import watch_bus
from migwatch.client.notifications import (
    BusEvent,
    BusFleet,
    PayloadError,
    event_from_notification,
    format_bus_event,
    migration_from_payload,
)

from lab.bus import Broker

pytestmark = pytest.mark.usefixtures("collect_bus_garbage")

_M = Migration(
    id="u1.out.1",
    domain_uuid="u1",
    domain_name="vm1",
    source_host="hv1",
    destination_host="hv2",
    direction=Direction.OUTGOING,
    phase=Phase.PRECOPY,
    backend="libvirt",
    agent_host="hv1",
    memory=Transfer(8 << 30, 5 << 30, 3 << 30, 1 << 30, 0.6),
    disk=Transfer(20 << 30, 20 << 30, 0, 0, 1.0),
    iteration=3,
    eta_s=12.0,
    eta_low_s=9.0,
    eta_high_s=20.0,
    convergence=Convergence.SLOW,
    convergence_reason="dirty 400 MiB/s",
    recommendations=(
        Recommendation(
            Action.RAISE_MAX_DOWNTIME, "raise to 1 s", max_downtime_s=1.0, predicted_eta_s=5.0
        ),
    ),
    limits=Limits(max_downtime_s=0.5),
    started_at=1_800_000_000.0,
    sequence=7,
)


def _event(m: Migration, kind: str = "progress") -> BusEvent:
    return event_from_notification(
        "migwatch-agent:hv1",
        f"migwatch.migration.{kind}",
        pl.migration_payload(m),
        {"timestamp": "2027-01-01 10:00:00"},
    )


def test_the_agents_payload_reads_back_field_for_field() -> None:
    """What the agent publishes, the client reads: memory and disk apart, band, verdict,
    top remedy, limits, times."""
    c = migration_from_payload(pl.migration_payload(_M))
    assert (c.id, c.phase, c.iteration, c.sequence) == ("u1.out.1", CPhase.PRECOPY, 3, 7)
    assert (c.memory.remaining_bytes, c.disk.total_bytes) == (3 << 30, 20 << 30)
    assert (c.eta_s, c.eta_low_s, c.eta_high_s) == (12.0, 9.0, 20.0)
    assert c.convergence is CConvergence.SLOW and c.convergence_reason == "dirty 400 MiB/s"
    assert c.recommendations[0].max_downtime_s == 1.0 and c.max_downtime_s == 0.5
    assert c.started_at is not None and c.started_at.timestamp() == 1_800_000_000.0


def test_other_events_and_newer_majors_are_refused() -> None:
    """Another service's events and a payload of an unknown major version are PayloadErrors."""
    with pytest.raises(PayloadError):
        event_from_notification("nova-compute:hv1", "instance.create.end", {}, {})
    newer = {**pl.migration_payload(_M), "migwatch_object.version": "2.0"}
    with pytest.raises(PayloadError):
        event_from_notification("migwatch-agent:hv1", "migwatch.migration.start", newer, {})


def test_bus_fleet_emits_the_updates_a_grpc_stream_would() -> None:
    """Hosts appear with their first notification; a migration's states become
    MigrationUpdates, its end exactly once, and it lands among the finished."""
    fleet = BusFleet()
    first = fleet.apply(_event(_M, "start"), 1.0)
    assert isinstance(first[-1], MigrationUpdate)
    hosts = [u for u in first if isinstance(u, AgentUpdate)]
    assert hosts and hosts[-1].state.reachable and hosts[-1].state.synced
    done = replace(_M, phase=Phase.COMPLETED, actual_downtime_s=0.03, sequence=9)
    ends = fleet.apply(_event(done, "end"), 2.0) + fleet.apply(_event(done, "end"), 3.0)
    assert [u.migration.phase for u in ends if isinstance(u, MigrationUpdate)] == [CPhase.COMPLETED]
    snap = fleet.snapshot()
    assert not snap.migrations and [m.domain_name for m in snap.finished] == ["vm1"]
    assert "eta 12" in format_bus_event(_event(_M)) and "[9" in format_bus_event(_event(_M))


def _config(url: str, topic: str) -> AgentConfig:
    return AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("quick", "converging"),
        simulated_speed=5.0,
        sample_interval_s=0.1,
        grace_s=1.0,
        notify_url=url,
        notify_topic=topic,
        notify_interval_s=0.5,
    )


@pytest.mark.asyncio
async def test_watch_bus_follows_an_agent_into_the_fleet_view(bus_broker: Broker) -> None:
    """``watch_bus`` turns a publishing agent's notifications into the fleet view: its host
    reachable and its finished migrations completed."""
    topic = f"mwtest_fleet_{time.monotonic_ns()}"
    async with (
        watch_bus(bus_broker.url, topic) as bus,
        running_agent(_config(bus_broker.url, topic)),
    ):
        finals: list[MigrationUpdate] = []
        async with asyncio.timeout(20):
            async for _, updates in bus:
                finals += [
                    u for u in updates if isinstance(u, MigrationUpdate) and u.migration.final
                ]
                if len(finals) >= 2:
                    break
        snap = bus.snapshot()
    assert [a.target for a in snap.agents] == ["sim-host-a"] and snap.agents[0].reachable
    assert {m.phase for m in snap.finished} == {CPhase.COMPLETED}


@pytest.mark.asyncio
async def test_watch_bus_reads_a_durable_deployment_with_its_config_file(
    bus_broker: Broker, tmp_path: Path
) -> None:
    """``watch_bus(config_file=...)`` (``migwatch listen --notify-config``) declares its queue
    with the deployment's settings: durable, on the deployment's control exchange, where the
    agent publishes with the same file; without the file it would be refused by RabbitMQ."""
    suffix = time.monotonic_ns()
    topic = f"mwtest_durable_fleet_{suffix}"
    conf = tmp_path / "nova.conf"
    conf.write_text(
        f"[DEFAULT]\ncontrol_exchange = mwtest_durable_fleet_{suffix}\n\n"
        "[oslo_messaging_rabbit]\namqp_durable_queues = true\n"
    )
    async with (
        watch_bus(bus_broker.url, topic, config_file=str(conf)) as bus,
        running_agent(replace(_config(bus_broker.url, topic), notify_config=str(conf))),
    ):
        finals: list[MigrationUpdate] = []
        async with asyncio.timeout(20):
            async for _, updates in bus:
                finals += [
                    u for u in updates if isinstance(u, MigrationUpdate) and u.migration.final
                ]
                if finals:
                    break
    assert finals[0].migration.phase is CPhase.COMPLETED


@pytest.mark.asyncio
async def test_migwatch_listen_prints_json_events(bus_broker: Broker, tmp_path: Path) -> None:
    """`migwatch listen --json` prints each notification as one JSON object, and leaves no
    queue behind on the broker when it exits."""
    topic = f"mwtest_cli_{time.monotonic_ns()}"
    out = tmp_path / "listen.out"
    with out.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("migwatch")),
            "listen",
            "--json",
            "--notify-url",
            bus_broker.url,
            "--notify-topic",
            topic,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        await asyncio.sleep(3.0)  # its queue must exist before the agent publishes
        async with running_agent(_config(bus_broker.url, topic)):
            await asyncio.sleep(5.0)
    finally:
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await proc.wait()
    lines = [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{")]
    kinds = {x["event_type"] for x in lines}
    assert {
        "migwatch.migration.start",
        "migwatch.migration.progress",
        "migwatch.migration.end",
    } <= kinds, out.read_text()[-2000:]
    ends = [x["migration"] for x in lines if x["event_type"] == "migwatch.migration.end"]
    assert all(e["phase"] == "completed" and e["memory"]["total_bytes"] > 0 for e in ends)
    queues = await asyncio.to_thread(bus_broker.rabbitmqctl, "list_queues", "name")
    assert "migwatch-listen-" not in queues


def test_listen_help_teaches_the_bus_not_the_agents(capsys: pytest.CaptureFixture[str]) -> None:
    """`migwatch listen --help` offers the bus options and bus examples, not the agents'
    connection options it would ignore; `listen --agent` is a usage error that says so."""
    from migwatch.client import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["listen", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "--notify-url" in text and "--pool" in text and "migwatch listen --fleet" in text
    for flag in ("--agent", "--ca", "--token", "--tls", "--timeout"):
        assert flag not in text, flag
    assert cli.main(["listen", "--agent", "hv1:50051"]) == 1
    assert "unrecognized arguments: --agent" in capsys.readouterr().err
