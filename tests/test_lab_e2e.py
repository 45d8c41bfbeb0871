"""Real live migrations between two real libvirt daemons, watched by real agents.

Each test boots a small TCG guest on lab host A, starts a migration to B, and
watches it through a fleet client subscribed to one agent per host (the agents
are subprocesses running ``--backend libvirt``). ``make test`` brings the lab
up first (``make lab``). These tests run unless MIGWATCH_SKIP_LAB=1, and then
they are reported as skipped with that reason; a missing lab is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import pytest_asyncio

if os.environ.get("MIGWATCH_SKIP_LAB") == "1":
    pytest.skip(
        "MIGWATCH_SKIP_LAB=1: the real-libvirt lab tests were NOT run", allow_module_level=True
    )

from migwatch.client import (
    AgentClient,
    AgentUpdate,
    Convergence,
    Direction,
    EtaBasis,
    Fleet,
    ForceCompleteMethod,
    HostState,
    Migration,
    MigrationEstimate,
    MigrationUpdate,
    Phase,
)

from lab.labctl import Lab

pytestmark = pytest.mark.lab

MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    """``migwatch-agent --backend libvirt`` for one lab host, as a subprocess."""

    def __init__(self, host: str, log_dir: Path, *extra: str, port: int | None = None) -> None:
        self.host = host
        self.extra = extra
        self.port = port or _free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.log = log_dir / f"agent-{host}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "migwatch.agent",
                "--backend",
                "libvirt",
                "--libvirt-uri",
                Lab.uri(self.host),
                "--listen",
                self.target,
                "--sample-interval",
                "0.25",
                "--log-level",
                "debug",
                *self.extra,
            ],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent for {self.host} exited: {self.log.read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"agent for {self.host} did not listen: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what survives is what the store wrote."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()


_GUESTS = (
    "conv",
    "hot",
    "disky",
    "pc",
    "late",
    "rs",
    "pf-calm",
    "pf-hot",
    "k9",
    "gone",
    "k9b",
    "ac",
)  # one name per test, ours alone


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab()
    lab.up()
    yield lab


@pytest.fixture(scope="module")
def agents(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, AgentProcess]]:
    log_dir = tmp_path_factory.mktemp("agents")
    procs = {h: AgentProcess(h, log_dir) for h in ("A", "B")}
    for p in procs.values():
        p.start()
    yield procs
    for p in procs.values():
        p.stop()


@pytest.fixture
def fresh(lab: Lab) -> Iterator[Lab]:
    """Every test starts and ends with none of our guests on either host; others'
    guests are left alone (the lab is one per machine)."""
    for name in _GUESTS:
        lab.destroy(name)
    yield lab
    for name in _GUESTS:
        lab.destroy(name)


class Watcher:
    """Collects the fleet's merged stream for one domain while a test runs."""

    def __init__(self, fleet: Fleet, domain_uuid: str) -> None:
        self.fleet = fleet
        self.domain_uuid = domain_uuid
        self.updates: list[MigrationUpdate] = []
        self.host_states: list[tuple[str, HostState | None, bool]] = []  # (agent, state, reachable)
        self._changed = asyncio.Event()

    async def run(self) -> None:
        async with self.fleet.watch() as stream:
            async for update in stream:
                if (
                    isinstance(update, MigrationUpdate)
                    and update.migration.domain_uuid == self.domain_uuid
                ):
                    self.updates.append(update)
                    self._changed.set()
                elif isinstance(update, AgentUpdate):
                    status = update.state.status
                    self.host_states.append(
                        (update.agent, status.state if status else None, update.state.reachable)
                    )
                    self._changed.set()

    def ends(self, direction: Direction) -> list[Migration]:
        return [u.migration for u in self.updates if u.migration.direction is direction]

    def source(self) -> list[Migration]:
        return self.ends(Direction.OUTGOING)

    async def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [
                    (m.direction.name, m.phase.name, m.iteration)
                    for m in (u.migration for u in self.updates)
                ]
                raise AssertionError(f"timed out waiting for {what}; saw {seen[-12:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    def final(self, direction: Direction) -> Migration | None:
        return next((m for m in self.ends(direction) if m.final), None)


@pytest_asyncio.fixture(loop_scope="function")
async def watch(agents: dict[str, AgentProcess]) -> AsyncIterator[Callable[..., Watcher]]:
    tasks: list[asyncio.Task[None]] = []

    def start(domain_uuid: str, targets: list[str] | None = None) -> Watcher:
        fleet = Fleet(
            targets or [agents["A"].target, agents["B"].target],
            heartbeat_interval_s=1.0,
            include_finished=False,
        )
        watcher = Watcher(fleet, domain_uuid)
        tasks.append(asyncio.create_task(watcher.run()))
        return watcher

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _boot(lab: Lab, name: str, **guest: int) -> str:
    return await asyncio.to_thread(lab.boot_guest, name, **guest)


@pytest.mark.asyncio(loop_scope="function")
async def test_converging_migration_is_followed_to_completion_from_both_ends(
    fresh: Lab, watch: Callable[..., Watcher]
) -> None:
    """A converging migration shows memory progress over >= 3 passes, completes with its
    actual downtime, and the destination's view of it is joined to the same record."""
    uuid = await _boot(fresh, "conv", mem_mib=512, fill_mib=384, ws_mib=64, rate=16)
    w = watch(uuid)
    await asyncio.sleep(1.0)  # the fleet's streams are up before the job starts
    handle = fresh.start_migration("conv", bandwidth_mib_s=40)
    outcome = await asyncio.to_thread(handle.wait, 180)
    assert outcome.outcome == "completed", outcome
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )

    src = w.source()
    running = [m for m in src if m.phase is Phase.PRECOPY]
    iterations = sorted({m.iteration for m in running})
    assert len(iterations) >= 3 and iterations == sorted(iterations), iterations
    processed = [m.memory.processed_bytes for m in running]
    assert processed == sorted(processed) and processed[-1] > processed[0]
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    assert final.actual_downtime_s is not None and 0 < final.actual_downtime_s < 2
    assert final.memory.processed_bytes >= final.memory.total_bytes  # re-sent pages count
    dst_final = w.final(Direction.INCOMING)
    assert dst_final is not None and dst_final.phase is Phase.COMPLETED
    record = w.updates[-1].record
    assert record.source is not None and record.destination is not None
    assert record.source.agent_host == "labhost-A" and record.destination.agent_host == "labhost-B"
    assert await asyncio.to_thread(fresh.domain_running_on, "B", "conv")


@pytest.mark.asyncio(loop_scope="function")
async def test_non_converging_migration_is_flagged_then_aborted_through_grpc(
    fresh: Lab, watch: Callable[..., Watcher], agents: dict[str, AgentProcess]
) -> None:
    """A guest dirtying faster than the bandwidth leaves the 'converging' verdict; an
    AbortMigration call ends the real job, the client sees CANCELLED and the guest still
    runs on the source."""
    uuid = await _boot(fresh, "hot", mem_mib=384, fill_mib=256, ws_mib=192, rate=120)
    w = watch(uuid)
    await asyncio.sleep(1.0)
    handle = fresh.start_migration("hot", bandwidth_mib_s=50)
    bad = (Convergence.NOT_CONVERGING, Convergence.STALLED, Convergence.SLOW)
    await w.wait_for(
        "a non-converging verdict", lambda: any(m.convergence in bad for m in w.source()), 90
    )
    flagged = next(m for m in w.source() if m.convergence in bad)
    assert flagged.convergence_reason, "the verdict carries its reason"
    async with AgentClient(agents["A"].target) as client:
        after = await client.abort(flagged.id)
    assert after.id == flagged.id
    outcome = await asyncio.to_thread(handle.wait, 60)
    assert outcome.outcome == "aborted", outcome
    await w.wait_for(
        "the CANCELLED final state", lambda: w.final(Direction.OUTGOING) is not None, 30
    )
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.CANCELLED
    assert await asyncio.to_thread(fresh.domain_running_on, "A", "hot")


@pytest.mark.asyncio(loop_scope="function")
async def test_auto_converge_migration_is_not_called_stuck_once_qemu_throttles(
    fresh: Lab, watch: Callable[..., Watcher]
) -> None:
    """A guest dirtying four times faster than the link, migrated with auto-converge: QEMU
    throttles it (libvirt's auto_converge_throttle), and from the first sample that shows a
    throttle the verdict is CONVERGING with the throttle in its reason and no remedy
    proposed; the throttle only rises; the migration completes by itself."""
    uuid = await _boot(fresh, "ac", mem_mib=384, fill_mib=200, ws_mib=64, rate=120)
    w = watch(uuid)
    await asyncio.sleep(1.0)
    handle = fresh.start_migration("ac", bandwidth_mib_s=30, auto_converge=True)
    outcome = await asyncio.to_thread(handle.wait, 240)
    assert outcome.outcome == "completed", outcome
    await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)
    throttled = [
        m for m in w.source() if m.phase is Phase.PRECOPY and m.auto_converge_throttle_percent > 0
    ]
    assert throttled, "libvirt reported QEMU's throttle"
    steps = [m.auto_converge_throttle_percent for m in throttled]
    assert steps == sorted(steps) and steps[0] == 20, steps
    for m in throttled:
        assert m.convergence is Convergence.CONVERGING, (m.iteration, m.convergence_reason)
        assert "auto-converge throttles the guest's CPU" in m.convergence_reason
        assert not m.recommendations
        assert m.eta_s is not None
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    print(f"auto-converge: throttle {steps[0]} -> {steps[-1]} %, done in {final.elapsed_s:.1f} s")


@pytest.mark.asyncio(loop_scope="function")
async def test_storage_migration_reports_disk_copy_first_then_memory(
    fresh: Lab, watch: Callable[..., Watcher]
) -> None:
    """With non-shared storage the disk mirror's progress is reported apart from memory,
    disk first (memory counters still zero), then the memory passes."""
    uuid = await _boot(
        fresh, "disky", mem_mib=384, fill_mib=192, ws_mib=32, rate=4, disk_mib=256, disk_rate=1
    )
    w = watch(uuid)
    await asyncio.sleep(1.0)
    # 30 MiB/s: the disk copy lasts ~9 s, so a loaded host's agent (TCG guests on 2 cores)
    # still sees it well before the switch-over.
    handle = fresh.start_migration("disky", bandwidth_mib_s=30, storage=True)
    outcome = await asyncio.to_thread(handle.wait, 180)
    assert outcome.outcome == "completed", outcome
    await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)

    src = w.source()
    mirror = [m for m in src if m.phase is Phase.DISK_MIRROR]
    memory = [m for m in src if m.phase is Phase.PRECOPY]
    assert mirror, [m.phase for m in src]
    assert all(m.memory.total_bytes == 0 and m.disk.total_bytes > 0 for m in mirror)
    assert mirror[-1].disk.processed_bytes > mirror[0].disk.processed_bytes
    assert memory and memory[0].memory.total_bytes > 0
    assert src.index(mirror[-1]) < src.index(memory[0]), "disk copy comes before memory"
    assert all(m.disk.remaining_bytes == 0 for m in memory)
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED and final.disk.total_bytes > 0


@pytest.mark.asyncio(loop_scope="function")
async def test_force_complete_switches_a_postcopy_migration_over(
    fresh: Lab, watch: Callable[..., Watcher], agents: dict[str, AgentProcess]
) -> None:
    """ForceCompleteMigration on a post-copy-enabled migration that cannot converge
    switches it to post-copy and it completes on the destination."""
    uuid = await _boot(fresh, "pc", mem_mib=384, fill_mib=256, ws_mib=192, rate=120)
    w = watch(uuid)
    await asyncio.sleep(1.0)
    handle = fresh.start_migration("pc", bandwidth_mib_s=50, postcopy=True)
    await w.wait_for("pre-copy progress", lambda: any(m.iteration >= 2 for m in w.source()), 60)
    running = w.source()[-1]
    async with AgentClient(agents["A"].target) as client:
        after, method = await client.force_complete(running.id)
    assert method is ForceCompleteMethod.POST_COPY
    assert after.phase is Phase.POSTCOPY
    outcome = await asyncio.to_thread(handle.wait, 120)
    assert outcome.outcome == "completed", outcome
    await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    assert await asyncio.to_thread(fresh.domain_running_on, "B", "pc")


@pytest.mark.asyncio(loop_scope="function")
async def test_agent_started_after_the_migration_began_picks_it_up(
    fresh: Lab, watch: Callable[..., Watcher], tmp_path: Path
) -> None:
    """An agent started while a migration is already running finds it by scanning and
    follows it to completion."""
    uuid = await _boot(fresh, "late", mem_mib=512, fill_mib=384, ws_mib=32, rate=4)
    handle = fresh.start_migration("late", bandwidth_mib_s=30)
    await asyncio.sleep(2.5)
    assert not handle.done()
    late = AgentProcess("A", tmp_path)
    await asyncio.to_thread(late.start)
    try:
        w = watch(uuid, [late.target])
        outcome = await asyncio.to_thread(handle.wait, 180)
        assert outcome.outcome == "completed", outcome
        await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)
        src = w.source()
        assert src[0].elapsed_s is not None and src[0].elapsed_s >= 2.0, "found mid-job"
        final = w.final(Direction.OUTGOING)
        assert final is not None and final.phase is Phase.COMPLETED
    finally:
        await asyncio.to_thread(late.stop)


@pytest.mark.asyncio(loop_scope="function")
async def test_libvirtd_restart_during_a_migration_is_survived(
    fresh: Lab, watch: Callable[..., Watcher], agents: dict[str, AgentProcess]
) -> None:
    """When the source's libvirtd restarts mid-migration the agent reports its host
    DEGRADED, reconnects, reports the migration's outcome as libvirt left it, and then
    follows the next migration to completion."""
    uuid = await _boot(fresh, "rs", mem_mib=384, fill_mib=256, ws_mib=32, rate=4)
    w = watch(uuid)
    await asyncio.sleep(1.0)
    handle = fresh.start_migration("rs", bandwidth_mib_s=20)
    await w.wait_for("memory progress", lambda: any(m.iteration >= 1 for m in w.source()), 60)
    await asyncio.to_thread(fresh.restart_daemon, "A")
    target = agents["A"].target
    await w.wait_for(
        "host A degraded", lambda: (target, HostState.DEGRADED, True) in w.host_states, 30
    )
    degraded_at = w.host_states.index((target, HostState.DEGRADED, True))
    await w.wait_for(
        "host A back", lambda: (target, HostState.OK, True) in w.host_states[degraded_at:], 60
    )
    outcome = await asyncio.to_thread(handle.wait, 120)
    await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 60)
    final = w.final(Direction.OUTGOING)
    assert final is not None
    on_b = await asyncio.to_thread(fresh.domain_running_on, "B", "rs")
    # Whatever libvirt did with the job on restart, the agent tells the same story.
    assert (final.phase is Phase.COMPLETED) == on_b, (final.phase, outcome)
    if not on_b:
        assert await asyncio.to_thread(fresh.domain_running_on, "A", "rs")
        again = fresh.start_migration("rs", bandwidth_mib_s=60)
        assert (await asyncio.to_thread(again.wait, 120)).outcome == "completed"
        await w.wait_for(
            "the next migration's COMPLETED",
            lambda: any(m.phase is Phase.COMPLETED for m in w.source()),
            60,
        )


async def _measured_estimate(
    client: AgentClient, name: str, bandwidth: int, timeout: float = 60
) -> MigrationEstimate:
    """The agent's estimate once its background dirty-rate measurement of ``name`` exists."""
    deadline = time.monotonic() + timeout
    while True:
        est = await client.estimate(name, bandwidth=bandwidth)
        if est.measured_at is not None or time.monotonic() > deadline:
            return est
        await asyncio.sleep(1.0)


@pytest.mark.asyncio(loop_scope="function")
async def test_estimate_before_migrating_then_compare(
    fresh: Lab, watch: Callable[..., Watcher], agents: dict[str, AgentProcess]
) -> None:
    """The agent measures idle guests' dirty rates in the background; EstimateMigration
    (and ``migwatch estimate``) then predicts a calm guest's migration, which is run and
    compared, and flags a guest that dirties faster than the bandwidth as not converging."""
    calm_uuid = await _boot(fresh, "pf-calm", mem_mib=512, fill_mib=384, ws_mib=64, rate=8)
    await _boot(fresh, "pf-hot", mem_mib=384, fill_mib=256, ws_mib=256, rate=120)
    async with AgentClient(agents["A"].target) as client:
        calm = await _measured_estimate(client, "pf-calm", 40 * MIB, timeout=90)
        hot40 = await _measured_estimate(client, "pf-hot", 40 * MIB, timeout=90)
    assert calm.basis is EtaBasis.PREFLIGHT and calm.measurement_age_s is not None
    assert calm.dirty_rate_bytes_per_second > 0 and calm.memory_bytes == 512 * MIB
    assert calm.convergence is not Convergence.NOT_CONVERGING
    assert calm.duration_s is not None and calm.duration_low_s is not None
    # The band's upper edge may be open: one pre-flight ladder of a just-booted TCG guest on a
    # loaded host can read 30 MiB/s over 1 s and 3-8 MiB/s over longer periods (seen in CI),
    # and rate + 2 sigma then reaches the bandwidth. Open is honest; an edge below the centre
    # is not.
    assert calm.duration_high_s is None or calm.duration_high_s >= calm.duration_s
    assert hot40.basis is EtaBasis.PREFLIGHT
    assert hot40.convergence is Convergence.NOT_CONVERGING, hot40.reason
    assert hot40.recommendations

    code = await asyncio.to_thread(
        _cli_json, agents["A"].target, "estimate", "pf-calm", "--bandwidth", "40MiB/s"
    )
    assert code["convergence"] in ("converging", "slow") and code["basis"] == "preflight"

    w = watch(calm_uuid)
    await asyncio.sleep(1.0)
    handle = fresh.start_migration("pf-calm", bandwidth_mib_s=40)
    assert (await asyncio.to_thread(handle.wait, 180)).outcome == "completed"
    await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED and final.elapsed_s is not None
    error = abs(calm.duration_s - final.elapsed_s) / final.elapsed_s
    print(
        f"pre-flight estimate {calm.duration_s:.1f} s "
        f"({calm.duration_low_s:.1f}-{calm.duration_high_s or float('inf'):.1f}), "
        f"true {final.elapsed_s:.1f} s, "
        f"error {error:.0%}"
    )
    # One migration cannot score a band's coverage (bench-eta does, over many); it can
    # catch a prediction that is off by a factor.
    assert 0.5 * final.elapsed_s < calm.duration_s < 2.0 * final.elapsed_s
    # The completed migration taught the agent this host's QEMU overhead in rss (TCG:
    # ~175 MiB on every lab guest measured apart), for the next estimates.
    learned = re.findall(
        r"QEMU resident overhead from the migration of pf-calm: (\d+) MiB",
        agents["A"].log.read_text(),
    )
    assert learned and 120 <= int(learned[-1]) <= 230, learned
    print(f"QEMU resident overhead learned from it: {learned[-1]} MiB")
    # The lab's guests have the balloon driver and a statistics period, as a cloud's do:
    # the agent read the guest's free memory with rss when it found the job (less than the
    # 512 MiB of RAM, of which the dirtier filled 384 MiB).
    found = re.findall(
        r"outgoing migration of pf-calm .* resident (\d+) MiB, guest free (\d+) MiB",
        agents["A"].log.read_text(),
    )
    assert found, "no free-memory figure in the agent's log"
    resident, free = (int(v) for v in found[-1])
    assert 0 < free < 512 - 256 and resident > 384, found


def _cli_json(target: str, *argv: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "migwatch.client.cli", "--agent", target, *argv, "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    data: dict[str, object] = json.loads(out.stdout)
    return data


@pytest.mark.asyncio(loop_scope="function")
async def test_agent_killed_mid_migration_picks_it_up_again_after_restart(
    fresh: Lab, watch: Callable[..., Watcher], tmp_path: Path
) -> None:
    """kill -9 of the source's agent mid-migration, then a restart with the same state
    directory: the client keeps following the same migration id and gets its final state."""
    uuid = await _boot(fresh, "k9", mem_mib=512, fill_mib=384, ws_mib=32, rate=4)
    state = tmp_path / "state"
    agent = AgentProcess("A", tmp_path, "--state-dir", str(state))
    await asyncio.to_thread(agent.start)
    try:
        w = watch(uuid, [agent.target])
        await asyncio.sleep(1.0)
        handle = fresh.start_migration("k9", bandwidth_mib_s=20)
        await w.wait_for("progress", lambda: any(m.iteration >= 1 for m in w.source()), 60)
        before = w.source()[-1]
        await asyncio.to_thread(agent.kill)
        await asyncio.sleep(1.0)
        assert not handle.done(), "the migration outlived the agent"
        await asyncio.to_thread(agent.start)  # same port, same state directory
        outcome = await asyncio.to_thread(handle.wait, 180)
        assert outcome.outcome == "completed", outcome
        await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 60)
        final = w.final(Direction.OUTGOING)
        assert final is not None and final.phase is Phase.COMPLETED
        assert final.id == before.id, "picked up under the same id"
        assert final.actual_downtime_s is not None
        finals = [m for m in w.source() if m.final]
        assert len(finals) == 1, "one final, no duplicate"
    finally:
        await asyncio.to_thread(agent.stop)


@pytest.mark.asyncio(loop_scope="function")
async def test_domain_destroyed_mid_migration_is_reported_failed(
    fresh: Lab, watch: Callable[..., Watcher], agents: dict[str, AgentProcess]
) -> None:
    """A guest destroyed on the source mid-migration ends as FAILED with a reason; the
    agent keeps serving."""
    uuid = await _boot(fresh, "gone", mem_mib=384, fill_mib=256, ws_mib=32, rate=4)
    w = watch(uuid)
    await asyncio.sleep(1.0)
    handle = fresh.start_migration("gone", bandwidth_mib_s=20)
    await w.wait_for("progress", lambda: any(m.iteration >= 1 for m in w.source()), 60)
    await asyncio.to_thread(fresh.destroy, "gone")
    outcome = await asyncio.to_thread(handle.wait, 60)
    assert outcome.outcome != "completed", outcome
    await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.FAILED, final
    assert "stopped on the source" in final.error_message
    async with AgentClient(agents["A"].target) as client:
        assert isinstance(await client.list(include_finished=True), list)


@pytest.mark.asyncio(loop_scope="function")
async def test_migration_that_ends_while_its_agent_is_down_still_reports_its_final(
    fresh: Lab, watch: Callable[..., Watcher], tmp_path: Path
) -> None:
    """kill -9 of the source's agent, the migration completes while it is down, then the
    agent restarts: the client gets the COMPLETED final under the id it was following."""
    uuid = await _boot(fresh, "k9b", mem_mib=384, fill_mib=256, ws_mib=32, rate=4)
    agent = AgentProcess("A", tmp_path, "--state-dir", str(tmp_path / "state"))
    await asyncio.to_thread(agent.start)
    try:
        w = watch(uuid, [agent.target])
        await asyncio.sleep(1.0)
        handle = fresh.start_migration("k9b", bandwidth_mib_s=40)
        await w.wait_for("progress", lambda: any(m.iteration >= 1 for m in w.source()), 60)
        followed = w.source()[-1].id
        await asyncio.to_thread(agent.kill)
        assert (await asyncio.to_thread(handle.wait, 120)).outcome == "completed"
        await asyncio.to_thread(agent.start)
        await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 60)
        final = w.final(Direction.OUTGOING)
        assert final is not None and final.id == followed
        assert final.phase is Phase.COMPLETED, final
    finally:
        await asyncio.to_thread(agent.stop)
