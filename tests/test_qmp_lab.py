"""Real live migrations between two bare QEMU processes (no libvirt), watched over QMP.

Each "host" is a directory with Proxmox-style ``<vmid>.qmp`` sockets (lab/qemuhosts.py).
A QMP client that connects once per command (as Proxmox's ``qm`` and migration task do)
starts and polls each migration through the same sockets the agents poll, and records how
long each of its connections waited for the monitor. The source's agent runs in process;
the destination's too, except where a test starts one as ``migwatch-agent --backend qmp``.
These tests need qemu-system-x86_64 (``make lab`` installs it) and run unless
MIGWATCH_SKIP_LAB=1.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio

if os.environ.get("MIGWATCH_SKIP_LAB") == "1":
    pytest.skip(
        "MIGWATCH_SKIP_LAB=1: the bare-QEMU lab tests were NOT run", allow_module_level=True
    )

from migwatch.agent.backends.qmp.backend import QmpBackend
from migwatch.agent.backends.recorder import TraceRecorder
from migwatch.agent.backends.trace import read_trace
from migwatch.agent.backends.tracefacts import free_of
from migwatch.agent.config import AgentConfig
from migwatch.agent.serve.server import running_agent
from migwatch.client import (
    AgentClient,
    AgentUnavailable,
    Convergence,
    Direction,
    EtaBasis,
    Fleet,
    ForceCompleteMethod,
    Migration,
    MigrationUpdate,
    NotFound,
    Phase,
)

from lab.guest import GuestSpec
from lab.qemuhosts import QemuLab, Vm, dies_with_parent

pytestmark = pytest.mark.lab

MIB = 1 << 20
# A guest small enough to boot in ~3 s under TCG and to migrate in seconds.
SMALL = {"mem_mib": 256, "vcpus": 1, "report_s": 1}


@pytest.fixture
def qlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QemuLab]:
    """Two host directories; every QEMU started in them is killed afterwards."""
    lab = QemuLab(tmp_path_factory.mktemp("qemu-hosts"))
    try:
        yield lab
    finally:
        lab.stop()


class Watcher:
    """The fleet's merged stream of one guest, collected while a test runs."""

    def __init__(self, fleet: Fleet, domain_uuid: str) -> None:
        self.fleet = fleet
        self.domain_uuid = domain_uuid
        self.updates: list[MigrationUpdate] = []
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

    def ends(self, direction: Direction) -> list[Migration]:
        return [u.migration for u in self.updates if u.migration.direction is direction]

    def source(self) -> list[Migration]:
        return self.ends(Direction.OUTGOING)

    def final(self, direction: Direction) -> Migration | None:
        return next((m for m in self.ends(direction) if m.final), None)

    async def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [
                    (m.direction.name, m.phase.name, m.iteration, m.convergence.name)
                    for m in (u.migration for u in self.updates)
                ]
                raise AssertionError(f"timed out waiting for {what}; saw {seen[-12:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass


def _config() -> AgentConfig:
    return AgentConfig(listen="127.0.0.1:0", grace_s=0.5, sample_interval_s=0.25)


def _backend(lab: QemuLab, host: str) -> QmpBackend:
    """The agent's QMP backend for one host directory; the source records its traces."""
    recorder = TraceRecorder(lab.root / "traces") if host == "A" else None
    return QmpBackend(
        str(lab.hosts[host] / "*.qmp"),
        sample_interval_s=0.25,
        scan_interval_s=0.5,
        host_name=f"qmphost-{host}",
        preflight_interval_s=0,
        recorder=recorder,
    )


@pytest_asyncio.fixture(loop_scope="function")
async def agents(qlab: QemuLab) -> AsyncIterator[dict[str, str]]:
    """An in-process ``--backend qmp`` agent per host directory: host -> target."""
    async with AsyncExitStack() as stack:
        targets = {}
        for host in ("A", "B"):
            agent = await stack.enter_async_context(running_agent(_config(), _backend(qlab, host)))
            targets[host] = f"127.0.0.1:{agent.port}"
        yield targets


@pytest_asyncio.fixture(loop_scope="function")
async def watch() -> AsyncIterator[Callable[[str, list[str]], Watcher]]:
    tasks: list[asyncio.Task[None]] = []

    def start(domain_uuid: str, targets: list[str]) -> Watcher:
        w = Watcher(Fleet(targets, heartbeat_interval_s=1.0, include_finished=False), domain_uuid)
        tasks.append(asyncio.create_task(w.run()))
        return w

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _boot(lab: QemuLab, vmid: str, dedicated: bool = False, **guest: int) -> Vm:
    spec = GuestSpec(name=f"vm{vmid}", **{**SMALL, **guest})
    return await asyncio.to_thread(
        functools.partial(lab.boot, "A", vmid, spec, dedicated=dedicated)
    )


async def _runstate(lab: QemuLab, vm: Vm) -> str:
    return str((await lab.ctl(vm.qmp, "query-status"))["status"])


@pytest.mark.asyncio(loop_scope="function")
async def test_converging_migration_is_streamed_from_both_ends_while_another_client_polls(
    qlab: QemuLab,
    agents: dict[str, str],
    watch: Callable[[str, list[str]], Watcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A converging migration started and polled once a second by another per-command QMP
    client is streamed by the source's agent with rising passes, memory progress and
    COMPLETED with its downtime, and by the destination's as INCOMING until COMPLETED,
    joined into one record; the other client never waits a second for the monitor; the
    source's recorder writes the migration as a trace the replay backend reads, with the
    guest's free memory read from its balloon."""
    caplog.set_level(logging.INFO, logger="migwatch.agent.backends.learned")
    vm = await _boot(qlab, "101", fill_mib=128, ws_mib=32, rate=16)
    w = watch(vm.uuid, [agents["A"], agents["B"]])
    await asyncio.sleep(1.0)  # the fleet's streams are up before the job starts
    qlab.ctl.waits.clear()
    qlab.ctl.calls.clear()
    began = time.monotonic()
    dst = await qlab.start_migration(vm, "B", bandwidth_mib_s=40)
    outcome = await qlab.wait_migration(vm, 120)
    assert outcome.status == "completed", outcome
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )

    running = [m for m in w.source() if m.phase is Phase.PRECOPY]
    iterations = [m.iteration for m in running]
    assert len(set(iterations)) >= 2 and iterations == sorted(iterations), iterations
    processed = [m.memory.processed_bytes for m in running]
    assert processed == sorted(processed) and processed[-1] > processed[0]
    assert all(m.memory.total_bytes >= 256 * MIB for m in running)
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    assert final.actual_downtime_s is not None and 0 < final.actual_downtime_s < 2
    assert final.memory.processed_bytes >= 128 * MIB
    incoming = w.ends(Direction.INCOMING)
    assert incoming[0].phase is Phase.PRECOPY and not incoming[0].final
    assert incoming[-1].phase is Phase.COMPLETED
    record = w.updates[-1].record
    assert record.source is not None and record.destination is not None
    assert (record.source.agent_host, record.destination.agent_host) == ("qmphost-A", "qmphost-B")
    assert await _runstate(qlab, dst) == "running"
    wait = max(qlab.ctl.waits)
    poll_wait = max(w for _, command, w in qlab.ctl.calls if command == "query-migrate")
    assert wait < 1.0, f"the other client waited {wait:.3f} s for the monitor"
    (path,) = (qlab.root / "traces").glob("*.jsonl")
    trace = read_trace(path)  # the recorder's trace, in the libvirt lab's format
    assert trace.result is not None and trace.result.outcome == "completed"
    samples = [s.sample for s in trace.source_stats if s.sample is not None]
    assert len(samples) >= 4 and samples[-1].iteration == iterations[-1]
    # The guest's free memory, read from its balloon as Proxmox reads it, is in the trace.
    free = free_of(trace)
    assert free is not None and 0 < free < 256 * MIB - 128 * MIB, free
    # The source's backend learned this host's QEMU overhead from it, as libvirt's does.
    learned = re.findall(
        r"QEMU resident overhead from the migration of vm101: (\d+) MiB", caplog.text
    )
    assert learned and 32 <= int(learned[-1]) <= 256, learned
    print(
        f"\nconverging: {outcome.duration_s:.1f} s (migrate call to seen completed, "
        f"{time.monotonic() - began:.1f} s with the destination's start), passes "
        f"{iterations[0]}..{iterations[-1]}, downtime {final.actual_downtime_s * 1000:.0f} ms; "
        f"other client: {len(qlab.ctl.waits)} connections, longest wait {wait * 1000:.1f} ms, "
        f"{poll_wait * 1000:.1f} ms for its 1 s query-migrate polls of the source; QEMU overhead "
        f"learned {learned[-1]} MiB"
    )


@pytest.mark.asyncio(loop_scope="function")
async def test_storage_migration_reports_the_disk_mirror_first_then_memory(
    qlab: QemuLab, agents: dict[str, str], watch: Callable[[str, list[str]], Watcher]
) -> None:
    """Proxmox's migration with a local disk (drive-mirror into the destination's NBD export
    until ready, then migrate, then the mirror cancelled): the source's agent reports the
    disk copy first (DISK_MIRROR, memory counters zero, disk progress rising), then the
    memory passes with the mirror as disk counters, on one clock, then COMPLETED with the
    disk; the destination's reports INCOMING until COMPLETED."""
    vm = await _boot(qlab, "105", fill_mib=96, ws_mib=16, rate=2, disk_mib=160, disk_rate=1)
    w = watch(vm.uuid, [agents["A"], agents["B"]])
    await asyncio.sleep(1.0)
    dst = await qlab.start_migration(vm, "B", bandwidth_mib_s=20)
    outcome = await qlab.wait_migration(vm, 120)
    assert outcome.status == "completed", outcome
    await qlab.finish_storage(vm, dst)
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )
    src = w.source()
    mirror = [m for m in src if m.phase is Phase.DISK_MIRROR]
    memory = [m for m in src if m.phase is Phase.PRECOPY]
    assert len(mirror) >= 3, [m.phase for m in src]
    assert all(m.memory.total_bytes == 0 and m.disk.total_bytes >= 160 * MIB for m in mirror)
    assert mirror[-1].disk.processed_bytes > mirror[0].disk.processed_bytes
    assert memory and memory[0].memory.total_bytes >= 256 * MIB
    assert src.index(mirror[-1]) < src.index(memory[0]), "disk copy comes before memory"
    assert all(m.disk.total_bytes >= 160 * MIB for m in memory)
    elapsed = [m.elapsed_s for m in src if m.elapsed_s is not None]
    assert elapsed == sorted(elapsed), "one clock from the disk copy to the end"
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    assert final.disk.total_bytes >= 160 * MIB and final.memory.processed_bytes > 0
    incoming = w.ends(Direction.INCOMING)
    assert incoming[0].phase is Phase.PRECOPY and incoming[-1].phase is Phase.COMPLETED
    assert await _runstate(qlab, dst) == "running"
    disk_s = (mirror[-1].elapsed_s or 0) - (mirror[0].elapsed_s or 0)
    print(
        f"\nstorage migration: {len(mirror)} disk-copy updates over {disk_s:.1f} s, then "
        f"{len(memory)} memory updates; disk {final.disk.total_bytes / MIB:.0f} MiB copied, "
        f"job {final.elapsed_s:.1f} s"
    )


@pytest.mark.asyncio(loop_scope="function")
async def test_non_converging_migration_is_flagged_then_aborted_through_grpc(
    qlab: QemuLab, agents: dict[str, str], watch: Callable[[str, list[str]], Watcher]
) -> None:
    """A guest dirtying faster than the bandwidth leaves the 'converging' verdict; new limits
    through gRPC reach QEMU (migrate-set-parameters); an AbortMigration call cancels the real
    job (migrate_cancel): the source reports
    CANCELLED and keeps running, the destination QEMU exits and its end is FAILED."""
    vm = await _boot(qlab, "102", fill_mib=64, ws_mib=64, rate=64)
    w = watch(vm.uuid, [agents["A"], agents["B"]])
    await asyncio.sleep(1.0)
    await qlab.start_migration(vm, "B", bandwidth_mib_s=24)
    bad = (Convergence.NOT_CONVERGING, Convergence.STALLED, Convergence.SLOW)
    await w.wait_for(
        "a non-converging verdict", lambda: any(m.convergence in bad for m in w.source()), 60
    )
    flagged = next(m for m in w.source() if m.convergence in bad)
    assert flagged.convergence_reason
    async with AgentClient(agents["A"]) as client:
        limited = await client.set_limits(flagged.id, max_downtime_s=0.5, max_bandwidth=20 * MIB)
        params = await qlab.ctl(vm.qmp, "query-migrate-parameters")
        assert (params["downtime-limit"], params["max-bandwidth"]) == (500, 20 * MIB)
        assert limited.max_bandwidth == 20 * MIB
        after = await client.abort(flagged.id)
    assert after.id == flagged.id
    outcome = await qlab.wait_migration(vm, 30)
    assert outcome.status == "cancelled", outcome
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.CANCELLED
    dst_final = w.final(Direction.INCOMING)
    assert dst_final is not None and dst_final.phase is Phase.FAILED
    assert await _runstate(qlab, vm) == "running"
    print(
        f"\nnon-converging: flagged {flagged.convergence.name} at pass {flagged.iteration}, "
        f"{flagged.elapsed_s:.1f} s in: {flagged.convergence_reason}"
    )


@pytest.mark.asyncio(loop_scope="function")
async def test_postcopy_is_forced_through_grpc(
    qlab: QemuLab, agents: dict[str, str], watch: Callable[[str, list[str]], Watcher]
) -> None:
    """ForceCompleteMigration on a migration started with the post-copy capability (read
    from QMP) switches it to post-copy (migrate-start-postcopy); both ends report
    POSTCOPY or go straight to COMPLETED, and the guest runs on the destination."""
    vm = await _boot(qlab, "103", fill_mib=64, ws_mib=64, rate=64)
    w = watch(vm.uuid, [agents["A"], agents["B"]])
    await asyncio.sleep(1.0)
    dst = await qlab.start_migration(vm, "B", bandwidth_mib_s=24, postcopy=True)
    await w.wait_for("pass 2", lambda: any(m.iteration >= 2 for m in w.source()), 60)
    running = w.source()[-1]
    assert running.postcopy_allowed, "the capability was read from QMP"
    async with AgentClient(agents["A"]) as client:
        after, method = await client.force_complete(running.id)
    assert method is ForceCompleteMethod.POST_COPY
    assert after.phase is Phase.POSTCOPY
    outcome = await qlab.wait_migration(vm, 60)
    assert outcome.status == "completed", outcome
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    assert outcome.reply["ram"]["postcopy-bytes"] > 0, "QEMU really sent pages in post-copy"
    assert await _runstate(qlab, dst) == "running"
    print(
        f"\npost-copy: forced at pass {running.iteration}, {running.elapsed_s:.1f} s in; "
        f"completed {outcome.duration_s:.1f} s after the switch, "
        f"{outcome.reply['ram']['postcopy-bytes'] / MIB:.0f} MiB sent in post-copy"
    )


@pytest.mark.asyncio(loop_scope="function")
async def test_guest_killed_mid_migration_ends_failed_on_both_ends(
    qlab: QemuLab, agents: dict[str, str], watch: Callable[[str, list[str]], Watcher]
) -> None:
    """SIGKILL of the source QEMU mid-migration: the source agent finds its socket gone
    and reports FAILED; the destination QEMU exits (its stream broke) and its end is
    FAILED too."""
    vm = await _boot(qlab, "104", fill_mib=128, ws_mib=64, rate=32)
    w = watch(vm.uuid, [agents["A"], agents["B"]])
    await asyncio.sleep(1.0)
    await qlab.start_migration(vm, "B", bandwidth_mib_s=16)
    await w.wait_for(
        "memory progress and the destination's end",
        lambda: (
            bool(w.ends(Direction.INCOMING))
            and any(m.phase is Phase.PRECOPY and m.memory.processed_bytes > 0 for m in w.source())
        ),
        60,
    )
    await asyncio.to_thread(vm.kill)
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.FAILED
    assert "exited" in final.error_message
    dst_final = w.final(Direction.INCOMING)
    assert dst_final is not None and dst_final.phase is Phase.FAILED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_agent(log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m migwatch.agent ARGS``, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            dies_with_parent([sys.executable, "-m", "migwatch.agent", *args]),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.asyncio(loop_scope="function")
async def test_agent_started_mid_migration_picks_it_up(
    qlab: QemuLab, watch: Callable[[str, list[str]], Watcher], tmp_path: Path
) -> None:
    """``migwatch-agent --backend qmp --qmp-sockets GLOB`` started while a migration runs
    finds it at its first visit of the socket, with the job's own elapsed time, and
    follows it to COMPLETED."""
    vm = await _boot(qlab, "105", fill_mib=128, ws_mib=32, rate=8)
    await qlab.start_migration(vm, "B", bandwidth_mib_s=24)
    await asyncio.sleep(2.0)
    port = _free_port()
    proc = await asyncio.to_thread(
        _spawn_agent, tmp_path / "agent.log",
        "--backend", "qmp", "--qmp-sockets", str(qlab.hosts["A"] / "*.qmp"),
        "--listen", f"127.0.0.1:{port}", "--sample-interval", "0.25",
        "--preflight-interval", "0", "--host-name", "late-A",
    )  # fmt: skip
    try:
        w = watch(vm.uuid, [f"127.0.0.1:{port}"])
        outcome = await qlab.wait_migration(vm, 120)
        assert outcome.status == "completed", outcome
        await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 30)
        src = w.source()
        assert src[0].elapsed_s is not None and src[0].elapsed_s >= 2.0, "found mid-job"
        final = w.final(Direction.OUTGOING)
        assert final is not None and final.phase is Phase.COMPLETED
        assert final.agent_host == "late-A"
    finally:
        await asyncio.to_thread(_stop, proc)


@pytest.mark.asyncio(loop_scope="function")
async def test_a_dedicated_monitor_is_held_and_its_events_used(
    qlab: QemuLab, agents: dict[str, str], watch: Callable[[str, list[str]], Watcher]
) -> None:
    """A VM with its own monitor for the agent (``<vmid>.migwatch.qmp``) is watched through
    it alone (one source stream, Proxmox's socket untouched), the agent stays connected and
    records QEMU's MIGRATION events, and the migration is streamed to COMPLETED."""
    vm = await _boot(qlab, "106", dedicated=True, fill_mib=128, ws_mib=32, rate=16)
    w = watch(vm.uuid, [agents["A"], agents["B"]])
    await asyncio.sleep(1.0)
    await qlab.start_migration(vm, "B", bandwidth_mib_s=48)
    outcome = await qlab.wait_migration(vm, 120)
    assert outcome.status == "completed", outcome
    await w.wait_for(
        "both final states",
        lambda: bool(w.final(Direction.OUTGOING) and w.final(Direction.INCOMING)),
        30,
    )
    assert len({m.id for m in w.source()}) == 1, "one stream: the dedicated socket only"
    final = w.final(Direction.OUTGOING)
    assert final is not None and final.phase is Phase.COMPLETED
    (path,) = (qlab.root / "traces").glob("vm106-*.jsonl")
    events = {e.event for e in read_trace(path).events}
    assert "MIGRATION" in events, events
    print(f"\ndedicated monitor: events recorded {sorted(events)}")


@pytest.mark.asyncio(loop_scope="function")
async def test_estimate_uses_a_page_sampling_measurement_of_the_idle_guest(
    qlab: QemuLab,
) -> None:
    """The agent measures an idle guest's dirty rate with calc-dirty-rate (page sampling,
    its period ladder) and EstimateMigration predicts from it (basis PREFLIGHT), with the
    guest's RAM from QMP; the guest is listed as one an evacuation would move."""
    vm = await _boot(qlab, "107", fill_mib=128, ws_mib=64, rate=16)
    backend = QmpBackend(
        str(qlab.hosts["A"] / "*.qmp"),
        scan_interval_s=0.5,
        preflight_interval_s=600,
        preflight_periods=(1, 2),
    )
    async with (
        running_agent(_config(), backend) as agent,
        AgentClient(f"127.0.0.1:{agent.port}") as client,
    ):
        deadline = time.monotonic() + 30
        while True:
            try:
                est = await client.estimate("vm107", bandwidth=40 * MIB)
            except (AgentUnavailable, NotFound):
                # Not visited yet: the agent has just started (a loaded host may make
                # the first connection wait).
                assert time.monotonic() < deadline, "the guest was never found"
                await asyncio.sleep(0.5)
                continue
            if est.measured_at is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        # What an evacuation of this host would move: the one running guest.
        assert await backend.guests() == (vm.uuid,)
    assert est.basis is EtaBasis.PREFLIGHT, est
    assert est.memory_bytes == 256 * MIB and est.domain_uuid == vm.uuid
    rate = est.dirty_rate_bytes_per_second / MIB
    assert 6 <= rate <= 40, f"measured {rate:.1f} MiB/s for a 16 MiB/s writer"
    assert est.duration_s is not None and est.convergence is Convergence.CONVERGING
    print(f"\npre-flight: {rate:.1f} MiB/s measured (16 written), predicted {est.duration_s:.1f} s")


@pytest.mark.asyncio(loop_scope="function")
async def test_migration_that_ends_while_its_agent_is_down_still_reports_its_final(
    qlab: QemuLab, watch: Callable[[str, list[str]], Watcher], tmp_path: Path
) -> None:
    """kill -9 of the source's ``--backend qmp`` agent mid-migration; the migration
    completes while it is down; restarted with the same state directory, the agent reports
    the COMPLETED final (with QEMU's downtime) under the id the client was following."""
    vm = await _boot(qlab, "108", fill_mib=128, ws_mib=32, rate=8)
    port = _free_port()
    args = (
        "--backend", "qmp", "--qmp-sockets", str(qlab.hosts["A"] / "*.qmp"),
        "--listen", f"127.0.0.1:{port}", "--sample-interval", "0.25",
        "--preflight-interval", "0", "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    proc = await asyncio.to_thread(_spawn_agent, tmp_path / "agent1.log", *args)
    try:
        w = watch(vm.uuid, [f"127.0.0.1:{port}"])
        await asyncio.sleep(2.0)
        await qlab.start_migration(vm, "B", bandwidth_mib_s=20)
        await w.wait_for("progress", lambda: any(m.iteration >= 1 for m in w.source()), 60)
        before = w.source()[-1]
        proc.kill()
        await asyncio.to_thread(proc.wait)
        outcome = await qlab.wait_migration(vm, 120)
        assert outcome.status == "completed", outcome
        proc = await asyncio.to_thread(_spawn_agent, tmp_path / "agent2.log", *args)
        await w.wait_for("the final state", lambda: w.final(Direction.OUTGOING) is not None, 60)
        final = w.final(Direction.OUTGOING)
        assert final is not None and final.phase is Phase.COMPLETED
        assert final.id == before.id, "the same id"
        assert final.actual_downtime_s is not None and final.actual_downtime_s > 0
        assert len([m for m in w.source() if m.final]) == 1, "one final"
    finally:
        await asyncio.to_thread(_stop, proc)
