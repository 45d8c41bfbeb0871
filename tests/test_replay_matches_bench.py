"""A shared trace replayed through the real agent and client gives the benchmark's ETAs.

The agent runs in-process with the replay backend on 127.0.0.1:0; the client watches it over
real gRPC. Every record it serves for a running sample is matched, by ``elapsed``, to the
estimate ``bench.eta.estimates`` computes for the same sample with the agent's estimator
config and the trace's pre-flight (what the replay backend hands the tracker).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
from migwatch.agent.backends.trace import read_trace
from migwatch.agent.backends.tracefacts import preflight_of
from migwatch.agent.config import AgentConfig
from migwatch.agent.estimate.estimator import EstimatorConfig
from migwatch.agent.model import Estimate
from migwatch.agent.serve.server import running_agent
from migwatch.client import AgentClient, Migration

from bench.eta import agent_estimator_config, estimates

# Copies of the project's first ten recordings (bench/traces/shared/INDEX.md).
SHARED = Path(__file__).resolve().parents[1] / "bench" / "traces" / "shared"
OURS = Path(__file__).resolve().parents[1] / "bench" / "traces"
TOLERANCE_S = 0.001


def bench_view(path: Path, config: EstimatorConfig) -> dict[float, Estimate]:
    """The benchmark's estimate per job-clock elapsed time (ms-rounded) for one trace."""
    trace = read_trace(path)
    return {
        round(step.sample.elapsed_s, 3): e
        for step, e in estimates(trace, preflight_of(trace), config)
    }


async def served(target: str, timeout_s: float = 30.0) -> list[Migration]:
    """Every migration record the agent serves until the replayed migration is final."""
    seen: list[Migration] = []
    async with AgentClient(target) as client, asyncio.timeout(timeout_s):
        async for event in client.watch(include_finished=True):
            if isinstance(event, Migration):
                seen.append(event)
                if event.final:
                    return seen
    raise AssertionError("the watch stream ended before the migration did")


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE_S)


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(
    "path",
    [
        SHARED / "converge.jsonl",
        SHARED / "pf-easy1.jsonl",
        OURS / "mw4-a.jsonl",  # the agent's 1-16 s pre-flight ladder and resident memory
        OURS / "ac-close.jsonl",  # auto-converge: QEMU's throttle in the job stats
        OURS / "qmp-mid.jsonl",  # recorded by the QMP backend (bare QEMU, no libvirt)
    ],
    ids=lambda p: p.stem,
)
async def test_replayed_etas_equal_bench_etas(path: Path) -> None:
    """Each ETA (and band) the agent serves equals the benchmark's for the same sample."""
    config = AgentConfig(backend="replay", traces=(str(path),), speed=50, listen="127.0.0.1:0")
    async with running_agent(config) as agent:
        expected = bench_view(path, agent.tracker.config)
        records = await served(f"127.0.0.1:{agent.port}")
    running = [m for m in records if not m.final and m.elapsed_s is not None]
    compared = 0
    for m in running:
        assert m.elapsed_s is not None
        e = expected.get(round(m.elapsed_s, 3))
        assert e is not None, f"the agent served elapsed {m.elapsed_s} s, not a trace sample"
        got = (m.eta_s, m.eta_low_s, m.eta_high_s)
        want = (e.eta_s, e.eta_low_s, e.eta_high_s)
        assert all(same(g, w) for g, w in zip(got, want, strict=True)), (m.elapsed_s, got, want)
        compared += m.eta_s is not None
    # Enough of the migration was seen to mean something (the stream may conflate updates).
    assert compared >= 10
    assert records[-1].final and records[-1].eta_s == 0.0


def test_bench_feeds_the_agent_config() -> None:
    """The benchmark scores the estimator with the config a default agent runs with."""
    assert agent_estimator_config() == EstimatorConfig(budget_s=AgentConfig().slow_budget_s)
