"""EstimateMigration: the pre-flight prediction, over gRPC, through the client and CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from migwatch.agent.config import AgentConfig
from migwatch.agent.estimate.estimator import EstimatorConfig
from migwatch.agent.estimate.prediction import predict_migration
from migwatch.agent.model import MIB, Limits, Preflight
from migwatch.agent.model import Convergence as AgentConvergence
from migwatch.agent.model import EtaBasis as AgentBasis
from migwatch.agent.serve.server import running_agent
from migwatch.client import AgentClient, Convergence, EtaBasis, InvalidArgument, NotFound, cli
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

# Copies of the project's first ten recordings (bench/traces/shared/INDEX.md).
SHARED = Path(__file__).resolve().parents[1] / "bench" / "traces" / "shared"

ASYNC = pytest.mark.asyncio(loop_scope="function")


def test_prediction_without_a_measurement_says_it_assumed_the_dirty_rate() -> None:
    """With no pre-flight measurement the prediction is DEFAULT-based and its band is wide."""
    p = predict_migration(1024 * MIB, 0, None, Limits(0.3, 100 * MIB))
    assert p.estimate.basis is AgentBasis.DEFAULT and p.dirty_rate_bps is None
    est = p.estimate
    assert est.eta_s is not None and est.eta_low_s is not None and est.eta_high_s is not None
    assert est.eta_low_s <= est.eta_s <= est.eta_high_s
    assert est.eta_high_s - est.eta_low_s > 0.2 * est.eta_s


def test_prediction_flags_a_guest_dirtying_faster_than_the_link() -> None:
    """A measured dirty rate above the bandwidth predicts non-convergence with remedies."""
    flat = Preflight(measured_at=0.0, rates={1.0: 150.0, 2.0: 150.0, 4.0: 148.0})
    p = predict_migration(2048 * MIB, 0, flat, Limits(0.3, 100 * MIB), EstimatorConfig())
    assert p.estimate.convergence is AgentConvergence.NOT_CONVERGING
    assert p.estimate.recommendations
    calm = Preflight(measured_at=0.0, rates={1.0: 10.0, 2.0: 10.0, 4.0: 10.0})
    q = predict_migration(2048 * MIB, 0, calm, Limits(0.3, 100 * MIB))
    assert q.estimate.convergence is not AgentConvergence.NOT_CONVERGING
    assert q.estimate.eta_s is not None and 20 < q.estimate.eta_s < 60


def test_one_burst_reading_opens_the_band_but_keeps_the_central_prediction() -> None:
    """A calm guest's ladder with one 1 s burst (seen in CI on a loaded host: the lab's pf-calm,
    8 MiB/s over 64 MiB, completed in 13 s) keeps a converging central estimate within 2x of the
    truth; the burst's doubt may open the band's upper edge, never put it below the centre."""
    burst = Preflight(measured_at=0.0, rates={1.0: 30.0, 2.0: 13.0, 4.0: 8.0, 8.0: 7.0, 16.0: 3.0})
    est = predict_migration(512 * MIB, 0, burst, Limits(0.3, 40 * MIB)).estimate
    assert est.convergence is not AgentConvergence.NOT_CONVERGING
    assert est.eta_s is not None and 6.5 < est.eta_s < 26.0
    assert est.eta_low_s is not None and est.eta_low_s <= est.eta_s
    assert est.eta_high_s is None or est.eta_high_s >= est.eta_s


@ASYNC
async def test_estimate_of_simulated_guests_through_the_client() -> None:
    """The client gets a pre-flight-based prediction for a converging guest and a
    NOT_CONVERGING verdict with a bandwidth remedy for a hot one; unknown domains are
    NOT_FOUND and a domain without a bandwidth limit asks for one."""
    config = AgentConfig(listen="127.0.0.1:0", simulated_scenarios=("quick",), grace_s=0.2)
    async with running_agent(config) as agent, AgentClient(f"127.0.0.1:{agent.port}") as client:
        calm = await client.estimate("sim-converging")
        assert calm.basis is EtaBasis.PREFLIGHT and calm.convergence is Convergence.CONVERGING
        assert calm.duration_s is not None and calm.measurement_age_s is not None
        assert calm.memory_bytes == 2048 * MIB and calm.bandwidth == 120 * MIB
        faster = await client.estimate("sim-converging", bandwidth=240 * MIB)
        assert faster.duration_s is not None and faster.duration_s < calm.duration_s
        hot = await client.estimate("sim-not-converging")
        assert hot.convergence is Convergence.NOT_CONVERGING and hot.duration_s is None
        assert any(r.max_bandwidth for r in hot.recommendations)
        # Started with auto-converge, QEMU would throttle it until it converges.
        throttled = await client.estimate("sim-not-converging", auto_converge=True)
        assert throttled.convergence is not Convergence.NOT_CONVERGING, throttled.reason
        assert throttled.duration_s is not None and "auto-converge" in throttled.reason
        disk = await client.estimate("sim-disk", copy_storage=True)
        assert disk.disk_bytes == 2048 * MIB
        with pytest.raises(NotFound, match="sim-converging"):
            await client.estimate("no-such-guest")
        with pytest.raises(InvalidArgument, match="below 1 MiB/s"):
            await client.estimate("sim-converging", bandwidth=1000)


@ASYNC
async def test_declared_auto_converge_applies_to_predictions() -> None:
    """On a host declaring --migration-policy auto-converge, a hot guest is predicted along
    QEMU's throttle ladder without the request asking for it."""
    config = AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("quick",),
        grace_s=0.2,
        migration_policy=("auto-converge",),
    )
    async with running_agent(config) as agent, AgentClient(f"127.0.0.1:{agent.port}") as client:
        hot = await client.estimate("sim-not-converging")
        assert hot.convergence is not Convergence.NOT_CONVERGING, hot.reason
        assert hot.duration_s is not None and "auto-converge" in hot.reason


@ASYNC
async def test_estimate_request_naming_no_domain_is_invalid() -> None:
    """A request with neither domain_uuid nor domain_name is INVALID_ARGUMENT saying so."""
    config = AgentConfig(listen="127.0.0.1:0", simulated_scenarios=("quick",), grace_s=0.2)
    async with (
        running_agent(config) as agent,
        grpc.aio.insecure_channel(f"127.0.0.1:{agent.port}") as channel,
    ):
        stub = pb_grpc.MigrationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.EstimateMigration(pb.EstimateMigrationRequest())
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "domain_uuid or by domain_name" in (err.value.details() or "")


@ASYNC
async def test_replayed_trace_estimate_uses_its_preflight_lines() -> None:
    """A replayed pf- trace's domain is predicted from its recorded dirtyrate lines."""
    trace = SHARED / "pf-easy1.jsonl"
    config = AgentConfig(
        listen="127.0.0.1:0", backend="replay", traces=(str(trace),), speed=1.0, grace_s=0.2
    )
    async with running_agent(config) as agent, AgentClient(f"127.0.0.1:{agent.port}") as client:
        for _ in range(100):  # the replay announces the domain with its first sample
            listed = await client.list(include_finished=True)
            if listed:
                break
            await asyncio.sleep(0.05)
        est = await client.estimate(listed[0].domain_uuid)
    assert est.basis is EtaBasis.PREFLIGHT and est.dirty_rate_bytes_per_second > 0
    assert est.duration_s is not None and 5 < est.duration_s < 30  # true job: 11.2 s


@ASYNC
async def test_cli_estimate_prints_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    """``migwatch estimate`` prints the prediction, and one JSON object with --json."""
    config = AgentConfig(listen="127.0.0.1:0", simulated_scenarios=("quick",), grace_s=0.2)
    async with running_agent(config) as agent:
        target = f"127.0.0.1:{agent.port}"
        code = await asyncio.to_thread(cli.main, ["--agent", target, "estimate", "sim-slow"])
        text = capsys.readouterr().out
        assert code == 0 and "predicted" in text and "[preflight]" in text
        code = await asyncio.to_thread(
            cli.main, ["--agent", target, "estimate", "sim-converging", "--json"]
        )
        data = json.loads(capsys.readouterr().out)
        assert code == 0 and data["agent"] == target and data["convergence"] == "converging"
        code = await asyncio.to_thread(cli.main, ["--agent", target, "estimate", "ghost"])
        assert code == 1 and "ghost" in capsys.readouterr().err
