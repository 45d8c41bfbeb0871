"""Prometheus metrics: what the collector exposes, and /metrics on a running agent."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from migwatch.agent.config import AgentConfig, ConfigError, build
from migwatch.agent.model import (
    MIB,
    Convergence,
    Direction,
    HostState,
    Migration,
    Phase,
    Transfer,
)
from migwatch.agent.serve.metrics import AgentView, MetricsServer
from migwatch.agent.serve.server import running_agent
from prometheus_client.parser import text_string_to_metric_families


def record(mid: str, phase: Phase, **kw: object) -> Migration:
    return Migration(
        id=mid,
        domain_uuid=f"uuid-{mid}",
        domain_name=f"vm-{mid}",
        source_host="hv1",
        destination_host="hv2",
        direction=Direction.OUTGOING,
        phase=phase,
        backend="libvirt",
        agent_host="hv1",
        **kw,  # type: ignore[arg-type]
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body: bytes = resp.read()
    return body.decode()


def test_active_migrations_have_series_and_finished_ones_are_counted() -> None:
    """A running migration's progress, rates, ETA band, verdict and throttle are exposed;
    an unknown ETA is absent, not zero; a finished migration only counts in
    migwatch_migrations."""
    running = record(
        "a",
        Phase.PRECOPY,
        iteration=4,
        elapsed_s=30.0,
        eta_s=12.0,
        eta_low_s=9.0,
        eta_high_s=20.0,
        convergence=Convergence.CONVERGING,
        dirty_rate_bps=20 * MIB,
        memory=Transfer(1024 * MIB, 800 * MIB, 224 * MIB, 100 * MIB, 0.78),
        disk=Transfer(512 * MIB, 512 * MIB, 0, 0, 1.0),
        auto_converge_throttle=40,
    )
    unknown = record("b", Phase.SETUP)
    done = record("c", Phase.COMPLETED, finished_at=1.0)
    view = AgentView(
        migrations=lambda: [running, unknown, done],
        subscribers=lambda: 3,
        published=lambda: 99,
        host_state=lambda: HostState.OK,
    )
    server = MetricsServer(view, "127.0.0.1", 0)
    try:
        got = samples(scrape(server.port))
    finally:
        server.close()
    a = (("direction", "outgoing"), ("domain", "vm-a"), ("id", "a"))
    assert (
        got[("migwatch_migration_remaining_bytes", tuple(sorted((*a, ("kind", "memory")))))]
        == 224 * MIB
    )
    assert (
        got[("migwatch_migration_total_bytes", tuple(sorted((*a, ("kind", "disk")))))] == 512 * MIB
    )
    assert got[("migwatch_migration_transfer_rate_bytes_per_second", a)] == 100 * MIB
    assert got[("migwatch_migration_dirty_rate_bytes_per_second", a)] == 20 * MIB
    assert got[("migwatch_migration_iteration", a)] == 4
    for bound, value in (("central", 12.0), ("low", 9.0), ("high", 20.0)):
        assert (
            got[("migwatch_migration_eta_seconds", tuple(sorted((*a, ("bound", bound)))))] == value
        )
    assert got[("migwatch_migration_auto_converge_throttle_ratio", a)] == pytest.approx(0.4)
    assert (
        got[
            (
                "migwatch_migration_phase",
                tuple(sorted((*a, ("migwatch_migration_phase", "precopy")))),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "migwatch_migration_convergence",
                tuple(sorted((*a, ("migwatch_migration_convergence", "converging")))),
            )
        ]
        == 1
    )
    assert (
        got[
            (
                "migwatch_migration_convergence",
                tuple(sorted((*a, ("migwatch_migration_convergence", "stalled")))),
            )
        ]
        == 0
    )
    info = [k for k in got if k[0] == "migwatch_migration_info" and ("id", "a") in k[1]]
    assert info and ("source_host", "hv1") in info[0][1]
    # No ETA for the one in setup; no per-migration series at all for the finished one.
    assert not any(k[0] == "migwatch_migration_eta_seconds" and ("id", "b") in k[1] for k in got)
    assert not any(("id", "c") in k[1] for k in got)
    assert got[("migwatch_migrations", (("phase", "completed"),))] == 1
    assert got[("migwatch_migrations", (("phase", "precopy"),))] == 1
    assert got[("migwatch_watch_streams", ())] == 3
    assert got[("migwatch_host_state", (("migwatch_host_state", "ok"),))] == 1


@pytest.mark.asyncio(loop_scope="function")
async def test_a_running_agent_serves_its_migrations_on_metrics() -> None:
    """--metrics-listen on a simulated agent: its migrations appear within a second, and the
    endpoint goes away with the agent."""
    config = AgentConfig(
        listen="127.0.0.1:0",
        metrics_listen="127.0.0.1:0",
        simulated_scenarios=("converging", "disk"),
        sample_interval_s=0.05,
    )
    async with running_agent(config) as agent:
        assert agent.metrics is not None
        port = agent.metrics.port
        async with asyncio.timeout(5):
            while True:
                got = samples(await asyncio.to_thread(scrape, port))
                names = {
                    dict(k[1]).get("domain")
                    for k in got
                    if k[0] == "migwatch_migration_remaining_bytes"
                }
                if {"sim-converging-1", "sim-disk-2"} <= names:
                    break
                await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port)


@pytest.mark.parametrize(
    ("listen", "needle"),
    [
        ("nope", "is not HOST:PORT"),
        ("0.0.0.0:9469", "not a loopback address and TLS is off"),
    ],
)
def test_bad_metrics_listen_is_a_config_error(listen: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        build({}, {"metrics_listen": listen})
    # Off loopback it is allowed with --insecure, as for the gRPC port.
    if "loopback" in needle:
        assert build({}, {"metrics_listen": listen, "insecure": True}).metrics_listen == listen
