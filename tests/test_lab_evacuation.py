"""Real evacuations of a lab host, predicted first by EstimateEvacuation.

Three TCG guests with different dirtier workloads boot on lab host A. The agent of A
measures their dirty rates in the background; once every guest has a measurement taken
wholly after the last boot (not one overlapping a neighbour's boot or its own fill), the
evacuation is predicted, then A is emptied one guest at a time (A -> B) and the prediction
compared with the true total and each guest's true duration. The guests are then booted
afresh on A (a drain empties a host whose guests have been running there, not ones that
have just arrived, whose QEMU is not yet warm) and A is emptied two at a time the same way.
About 5 minutes of lab time (boots ~60 s twice, measurements ~30 s twice, the two
evacuations ~75 s).

Runs with the other lab tests (``make test``); MIGWATCH_SKIP_LAB=1 skips it loudly.
The figures printed (``-s``) go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator

import pytest

if os.environ.get("MIGWATCH_SKIP_LAB") == "1":
    pytest.skip(
        "MIGWATCH_SKIP_LAB=1: the real-libvirt lab tests were NOT run", allow_module_level=True
    )

from migwatch.client import AgentClient, EvacuationEstimate, Phase

from lab.labctl import Lab
from lab.migrate import MigrationSpec
from tests.test_lab_e2e import AgentProcess

pytestmark = pytest.mark.lab

MIB = 1 << 20
BANDWIDTH_MIB_S = 40  # per migration, as nova's live_migration_bandwidth would set it
# Three workloads: calm, middling, busy (MiB/s written over a hot set of ws MiB).
GUESTS: dict[str, dict[str, int]] = {
    "ev-calm": {"mem_mib": 384, "fill_mib": 256, "ws_mib": 32, "rate": 4},
    "ev-mid": {"mem_mib": 512, "fill_mib": 384, "ws_mib": 64, "rate": 12},
    "ev-busy": {"mem_mib": 512, "fill_mib": 320, "ws_mib": 128, "rate": 24},  # 384 MiB: OOM
}
# Pre-flight ladders long enough to see a 128 MiB hot set saturate at 24 MiB/s (8 s),
# re-measured often so a measurement after the boots comes soon.
PERIODS_S = (1, 2, 4, 8)
LADDER_MARGIN_S = 10
AGENT_FLAGS = (
    "--preflight-interval", "5", "--preflight-periods", ",".join(map(str, PERIODS_S))
)  # fmt: skip


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    lab.up()
    for name in GUESTS:
        lab.destroy(name)
    yield lab
    for name in GUESTS:
        lab.destroy(name)


@pytest.fixture(scope="module")
def agents(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AgentProcess]]:
    log_dir = tmp_path_factory.mktemp("evac-agents")
    procs = {h: AgentProcess(h, log_dir, *AGENT_FLAGS) for h in ("A", "B")}
    for p in procs.values():
        p.start()
    yield procs
    for p in procs.values():
        p.stop()


async def _boot_all(lab: Lab) -> float:
    """The three guests running on A, each booted once its dirtier has filled its memory
    (from B too, after the first evacuation). Returns the wall time the last boot ended."""
    for name in GUESTS:
        lab.destroy(name)
    for name, spec in GUESTS.items():
        await asyncio.to_thread(lab.boot_guest, name, **spec)
    return time.time()


async def _measured_plan(
    target: str, concurrency: int, since: float, timeout: float = 120
) -> EvacuationEstimate:
    """The evacuation plan of our guests once every one of them has a dirty-rate
    measurement whose whole ladder ran after ``since`` (wall time). The agent only says when
    a ladder ended, and its steps start a little apart (each measurement is started and
    queried through libvirt, slower on a loaded host): the margin keeps a ladder whose first
    step overlapped the last boot out (its 1 s reading once said 92 MiB/s of a 24 MiB/s guest)."""
    ladder_s = sum(PERIODS_S) + LADDER_MARGIN_S
    deadline = time.monotonic() + timeout
    async with AgentClient(target) as client:
        while True:
            asked = time.time()
            plan = await client.estimate_evacuation(
                sorted(GUESTS), concurrency=concurrency, bandwidth=BANDWIDTH_MIB_S * MIB
            )
            fresh = all(
                e.measurement_age_s is not None and asked - e.measurement_age_s >= since + ladder_s
                for e in plan.entries
            )
            if (fresh and not plan.unmeasured_domains) or time.monotonic() > deadline:
                return plan
            await asyncio.sleep(2.0)


async def _job_times(target: str) -> dict[str, float]:
    """Each guest's latest completed outgoing job's own clock (time_elapsed), per the agent."""
    async with AgentClient(target) as client:
        migrations = await client.list(include_finished=True)
    return {
        m.domain_name: m.elapsed_s
        for m in sorted(migrations, key=lambda m: m.started_at.timestamp() if m.started_at else 0.0)
        if m.domain_name in GUESTS and m.elapsed_s is not None and m.phase is Phase.COMPLETED
    }


async def _evacuate(
    lab: Lab, order: tuple[str, ...], concurrency: int, src: str, dst: str, agent: str
) -> tuple[float, dict[str, float], EvacuationEstimate | None]:
    """Migrate ``order`` from src to dst, ``concurrency`` at a time, each started as soon as a
    slot frees (as nova does). Returns the true total, each guest's true duration (from the
    migrate call to its return), and a re-plan taken while the first migration ran."""
    queue = list(order)
    durations: dict[str, float] = {}
    midway: list[EvacuationEstimate] = []

    async def worker() -> None:
        while queue:
            name = queue.pop(0)
            spec = MigrationSpec(name=name, bandwidth_mib_s=BANDWIDTH_MIB_S, src=src, dst=dst)
            handle = lab.start(spec)
            outcome = await asyncio.to_thread(handle.wait, 180)
            assert outcome.outcome == "completed", (name, outcome)
            durations[name] = outcome.duration_s

    async def replan() -> None:
        await asyncio.sleep(3.0)  # the first migration is past its setup
        async with AgentClient(agent) as client:
            midway.append(
                await client.estimate_evacuation(
                    sorted(GUESTS), concurrency=concurrency, bandwidth=BANDWIDTH_MIB_S * MIB
                )
            )

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)), replan())
    return time.monotonic() - start, durations, (midway[0] if midway else None)


def _report(
    label: str,
    plan: EvacuationEstimate,
    total: float,
    durations: dict[str, float],
    jobs: dict[str, float],
) -> str:
    """Predicted vs true, total and per guest; ``job`` is the job's own clock, so call - job
    is the per-migration cost outside it (teardown) that the plan adds to every guest."""
    assert plan.total_s is not None
    lines = [
        (
            f"{label}: predicted {plan.total_s:.1f} s ({plan.total_low_s:.1f}-"
            f"{plan.total_high_s:.1f}), true {total:.1f} s,"
            f" error {(plan.total_s - total) / total:+.0%}"
        )
    ]
    for e in plan.entries:
        true = durations.get(e.domain_name)
        if e.duration_s is not None and true:
            job = jobs.get(e.domain_name)
            lines.append(
                f"  {e.domain_name:8} predicted {e.duration_s:5.1f} s ({e.duration_low_s:.1f}-"
                f"{e.duration_high_s:.1f}), true {true:5.1f} s,"
                f" error {(e.duration_s - true) / true:+.0%}"
                + (f" (job {job:.1f} s, call - job {true - job:.1f} s)" if job else "")
            )
    return "\n".join(lines)


@pytest.mark.asyncio(loop_scope="function")
async def test_evacuation_prediction_against_real_evacuations(
    lab: Lab, agents: dict[str, AgentProcess]
) -> None:
    """A is emptied one at a time, then (its guests booted afresh) two at a time, each
    predicted before its first migration: both true totals fall inside the predicted band,
    and two at a time is predicted (and is) quicker."""
    target = agents["A"].target
    booted = await _boot_all(lab)
    plan1 = await _measured_plan(target, concurrency=1, since=booted)
    plan1_two = await _measured_plan(target, concurrency=2, since=booted)
    assert not plan1.unmeasured_domains, "A's agent never measured the guests' dirty rates"
    assert plan1.empties and len(plan1.entries) == 3, [
        (e.domain_name, e.convergence, e.reason) for e in plan1.entries
    ]
    assert plan1.total_s is not None and plan1_two.total_s is not None
    assert plan1_two.total_s < plan1.total_s
    async with AgentClient(target) as client:  # every guest libvirt lists on A
        whole = await client.estimate_evacuation(bandwidth=BANDWIDTH_MIB_S * MIB)
    assert set(GUESTS) <= {e.domain_name for e in whole.entries}, whole

    total1, per1, mid1 = await _evacuate(lab, plan1.order, 1, "A", "B", target)
    assert mid1 is not None and any(e.in_flight for e in mid1.entries), mid1
    report1 = _report("one at a time (A -> B)", plan1, total1, per1, await _job_times(target))
    print(report1)
    # A learned its teardown after each job from the three (plan 2 leans on it).
    learned = re.findall(
        r"teardown after the job of (\S+): ([\d.]+) s", agents["A"].log.read_text()
    )
    assert {n for n, _ in learned} >= set(GUESTS), "A's agent learned no teardown from its jobs"
    print(
        "teardown learned on A (job end -> source stopped):",
        ", ".join(f"{n} {t} s" for n, t in learned),
    )

    booted = await _boot_all(lab)
    plan2 = await _measured_plan(target, concurrency=2, since=booted)
    assert not plan2.unmeasured_domains, "A's agent never measured the guests' dirty rates"
    total2, per2, _ = await _evacuate(lab, plan2.order, 2, "A", "B", target)
    report2 = _report("two at a time (A -> B)", plan2, total2, per2, await _job_times(target))
    print(report2)

    for plan, total, report in ((plan1, total1, report1), (plan2, total2, report2)):
        assert plan.total_low_s is not None and plan.total_high_s is not None
        assert plan.total_low_s <= total <= plan.total_high_s, report
    assert total2 < total1
    # One guest cannot score a band (bench-eta does, over many); it can catch a factor.
    for plan, per in ((plan1, per1), (plan2, per2)):
        for e in plan.entries:
            assert e.duration_s is not None
            assert 0.5 * per[e.domain_name] < e.duration_s < 2.0 * per[e.domain_name], e
