"""The QMP backend's pure core: query-migrate translation and the per-guest job watcher.

Replies are shaped as QEMU 7.2 sends them (recorded from the bare-QEMU lab).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from migwatch.agent.backends.jobstats import completed_job, parse_job_stats
from migwatch.agent.backends.protocol import Ending
from migwatch.agent.backends.qmp.jobs import (
    Mirror,
    capabilities_of,
    dirty_rate_of,
    job_stats,
    limits_of,
    mirror_of,
    with_mirror,
)
from migwatch.agent.backends.qmp.watcher import Guest, GuestWatcher, Poll
from migwatch.agent.backends.trace import read_trace
from migwatch.agent.backends.tracefacts import (
    memory_size_hint,
    preflight_of,
    resident_of,
    source_steps,
)
from migwatch.agent.estimate.estimator import EstimatorConfig, MigrationEstimator
from migwatch.agent.model import Convergence, Direction, Limits, Phase

MIB = 1 << 20
GUEST = Guest(
    vmid="101", uuid="4614f926-7e03-4c24-a948-56956726f5b9", name="vm101", memory_bytes=256 * MIB
)


def ram(it: int, transferred: int, remaining: int, **extra: Any) -> dict[str, Any]:
    return {
        "total": 256 * MIB + 528384,
        "transferred": transferred,
        "remaining": remaining,
        "duplicate": 100,
        "normal": transferred // 4096,
        "normal-bytes": transferred,
        "dirty-pages-rate": 4000,
        "mbps": 335.5,
        "dirty-sync-count": it,
        "page-size": 4096,
        "postcopy-requests": 0,
        **extra,
    }


def active(it: int, total_ms: int, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "total-time": total_ms,
        "expected-downtime": 120,
        "setup-time": 3,
        "ram": ram(it, it * 40 * MIB, 30 * MIB),
        **extra,
    }


COMPLETED = {
    "status": "completed",
    "total-time": 6021,
    "downtime": 10,
    "setup-time": 3,
    "ram": ram(3, 140 * MIB, 0),
}


def test_running_reply_becomes_libvirt_job_stats() -> None:
    """A running query-migrate maps onto libvirt's keys: total-time is the job's clock,
    expected-downtime the running downtime, mbps megabits, dirty-sync-count the pass."""
    stats = job_stats({**active(2, 4500), "cpu-throttle-percentage": 20})
    assert stats["type"] == 2 and stats["time_elapsed"] == 4500 and stats["downtime"] == 120
    assert stats["memory_bps"] == 41_937_500
    sample = parse_job_stats(stats)
    assert sample is not None
    assert (sample.iteration, sample.memory_processed, sample.memory_remaining) == (
        2,
        80 * MIB,
        30 * MIB,
    )
    assert sample.dirty_pages_per_s == 4000 and sample.expected_downtime_ms == 120
    assert sample.auto_converge_throttle == 20 and sample.elapsed_s == 4.5


def test_completed_reply_carries_the_actual_downtime() -> None:
    """A completed query-migrate is libvirt's completed stats: the actual downtime."""
    final = completed_job(job_stats(COMPLETED))
    assert final is not None
    assert final.downtime_s == 0.010 and final.elapsed_s == 6.021 and final.iterations == 3


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ({}, 0),
        ({"status": "none"}, 0),
        ({"status": "setup"}, 2),
        ({"status": "device"}, 2),
        ({"status": "postcopy-active"}, 2),
        ({"status": "failed"}, 4),
        ({"status": "cancelled"}, 5),
    ],
)
def test_status_maps_to_a_job_type(reply: dict[str, Any], kind: int) -> None:
    """Each MigrationStatus gives the libvirt job type the trace format records."""
    assert job_stats(reply)["type"] == kind


@pytest.mark.parametrize(
    ("params", "caps", "expected"),
    [
        ({"downtime-limit": 300, "max-bandwidth": 134217728}, [], Limits(0.3, 128 * MIB)),
        ({"downtime-limit": 1000, "max-bandwidth": 0}, [], Limits(1.0, None)),
        ({"downtime-limit": 300, "max-bandwidth": 1 << 62}, [], Limits(0.3, None)),
        (
            {"downtime-limit": 300, "max-bandwidth": 24 * MIB, "max-postcopy-bandwidth": 0},
            [
                {"capability": "postcopy-ram", "state": True},
                {"capability": "auto-converge", "state": True},
            ],
            Limits(0.3, 24 * MIB, postcopy_allowed=True, auto_converge=True),
        ),
    ],
)
def test_limits_from_parameters_and_capabilities(
    params: dict[str, Any], caps: list[dict[str, Any]], expected: Limits
) -> None:
    """Parameters give downtime and bandwidth (0 or huge: unlimited); the capabilities say
    whether post-copy and auto-converge are on."""
    assert limits_of(params, capabilities_of(caps)) == expected


def test_dirty_rate_waits_for_a_new_measurement() -> None:
    """query-dirty-rate counts only once measured, and only a measurement newer than the
    one before the start."""
    assert dirty_rate_of({"status": "measuring", "start-time": 9}, 5) is None
    assert dirty_rate_of({"status": "measured", "start-time": 5, "dirty-rate": 7}, 5) is None
    assert dirty_rate_of({"status": "measured", "start-time": 9, "dirty-rate": 7}, 5) == 7.0


def feed(w: GuestWatcher, steps: list[tuple[float, Any]]) -> list[tuple[Direction, Phase, str]]:
    """Feed (now, Poll | "gone" | (event, data)) steps; (direction, phase, error) out."""
    out = []
    for now, step in steps:
        if step == "gone":
            got = w.gone(now)
        elif isinstance(step, Poll):
            got = w.poll(now, step)
        else:
            got = w.event(now, *step)
        out += [(o.info.direction, o.phase, o.error_message) for o in got]
    return out


OUT, IN = Direction.OUTGOING, Direction.INCOMING
LIM = Limits(0.3, 40 * MIB)


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param([(0, Poll("running", {})), (1, Poll("running", COMPLETED))], [], id="idle"),
        pytest.param(
            [
                (0, Poll("running", {"status": "setup"}, LIM)),
                (1, Poll("running", active(1, 900), LIM)),
                (2, Poll("running", active(2, 1900), LIM)),
                (3, Poll("finish-migrate", active(3, 2900), LIM)),
                (4, Poll("postmigrate", COMPLETED, LIM)),
                (5, Poll("postmigrate", COMPLETED, LIM)),
            ],
            [
                (OUT, Phase.SETUP, ""),
                (OUT, Phase.PRECOPY, ""),
                (OUT, Phase.PRECOPY, ""),
                (OUT, Phase.PAUSED, ""),
                (OUT, Phase.COMPLETED, ""),
            ],
            id="outgoing-completes",
        ),
        pytest.param(
            [
                (0, Poll("running", active(1, 900))),
                (
                    1,
                    Poll(
                        "running", {"status": "failed", "error-desc": "Unable to write to socket"}
                    ),
                ),
            ],
            [(OUT, Phase.PRECOPY, ""), (OUT, Phase.FAILED, "Unable to write to socket")],
            id="outgoing-fails",
        ),
        pytest.param(
            [
                (0, Poll("running", active(1, 900))),
                (1, Poll("running", active(1, 1900, "cancelling"))),
                (2, Poll("running", {"status": "cancelled"})),
            ],
            [(OUT, Phase.PRECOPY, ""), (OUT, Phase.PRECOPY, ""), (OUT, Phase.CANCELLED, "")],
            id="outgoing-cancelled",
        ),
        pytest.param(
            [(0, Poll("running", active(2, 900))), (1, Poll("paused", active(2, 1900)))],
            [(OUT, Phase.PRECOPY, ""), (OUT, Phase.PAUSED, "")],
            id="paused-by-stop",
        ),
        pytest.param(
            [
                (0, Poll("running", active(2, 900))),
                (1, Poll("running", active(2, 1900, "postcopy-active"))),
                (2, Poll("postmigrate", COMPLETED)),
            ],
            [(OUT, Phase.PRECOPY, ""), (OUT, Phase.POSTCOPY, ""), (OUT, Phase.COMPLETED, "")],
            id="postcopy",
        ),
        pytest.param(
            [(0, Poll("running", active(2, 900))), (1, "gone")],
            [
                (OUT, Phase.PRECOPY, ""),
                (
                    OUT,
                    Phase.FAILED,
                    "the source QEMU exited before the switch-over: the migration did not complete",
                ),
            ],
            id="killed-before-switch-over",
        ),
        pytest.param(
            [
                (0, Poll("running", active(2, 900))),
                (1, Poll("running", active(3, 1000, "device"))),
                (2, "gone"),
            ],
            [(OUT, Phase.PRECOPY, ""), (OUT, Phase.PAUSED, ""), (OUT, Phase.COMPLETED, "")],
            id="stopped-after-switch-over",
        ),
        pytest.param(
            [(0, Poll("running", active(2, 900, "postcopy-active"))), (1, "gone")],
            [
                (OUT, Phase.POSTCOPY, ""),
                (
                    OUT,
                    Phase.FAILED,
                    "the source QEMU exited during post-copy: the migration did not complete",
                ),
            ],
            id="killed-in-postcopy",
        ),
        pytest.param(
            [
                (0, Poll("running", active(2, 900))),
                (1, ("STOP", {})),
                (2, ("MIGRATION_PASS", {"pass": 3})),
            ],
            [(OUT, Phase.PRECOPY, ""), (OUT, Phase.PAUSED, "")],
            id="stop-event",
        ),
        pytest.param(
            [
                (0, Poll("inmigrate", {})),
                (1, Poll("inmigrate", {"status": "active"})),
                (2, Poll("running", {"status": "completed"})),
                (3, Poll("running", {"status": "completed"})),
            ],
            [(IN, Phase.PRECOPY, ""), (IN, Phase.COMPLETED, "")],
            id="incoming-completes",
        ),
        pytest.param(
            [
                (0, Poll("inmigrate", {"status": "active"})),
                (1, Poll("paused", {"status": "completed"})),
            ],
            [(IN, Phase.PRECOPY, ""), (IN, Phase.COMPLETED, "")],
            id="incoming-with-S",
        ),
        pytest.param(
            [
                (0, Poll("inmigrate", {"status": "active"})),
                (1, Poll("running", {"status": "postcopy-active"})),
                (2, Poll("running", {"status": "completed"})),
            ],
            [(IN, Phase.PRECOPY, ""), (IN, Phase.POSTCOPY, ""), (IN, Phase.COMPLETED, "")],
            id="incoming-postcopy",
        ),
        pytest.param(
            [(0, Poll("inmigrate", {"status": "active"})), (1, "gone")],
            [
                (IN, Phase.PRECOPY, ""),
                (IN, Phase.FAILED, "the destination QEMU exited before the migration completed"),
            ],
            id="incoming-fails",
        ),
    ],
)
def test_watcher_sequences(
    steps: list[tuple[float, Any]], expected: list[tuple[Direction, Phase, str]]
) -> None:
    """Each sequence of QMP answers gives the phases libvirt's backend would report."""
    w = GuestWatcher(GUEST, "pve1")
    assert feed(w, steps) == expected
    assert w.role is None or not expected or not expected[-1][1].terminal


def test_outgoing_observation_carries_the_job() -> None:
    """An outgoing observation has the source host, the start derived from the job's own
    clock (a restarted agent finds the same id), the guest's RAM, the resident size read
    when the job was found, the limits and the sample; the final one the actual downtime."""
    w = GuestWatcher(GUEST, "pve1")
    (first,) = w.poll(1000.0, Poll("running", active(2, 4520), LIM, resident_bytes=200 * MIB))
    assert first.info.source_host == "pve1" and first.info.destination_host == ""
    assert first.info.started_at == 995.5 and first.info.memory_bytes == 256 * MIB
    assert first.info.resident_bytes == 200 * MIB
    assert first.limits == LIM and first.sample is not None and first.sample.iteration == 2
    (final,) = w.poll(1002.0, Poll("postmigrate", COMPLETED))
    assert final.phase is Phase.COMPLETED and final.actual_downtime_s == 0.010
    assert final.sample is not None and final.sample.memory_remaining == 0
    assert w.role is None


def test_incoming_observation_names_the_destination() -> None:
    """An incoming observation has the destination host and no job sample."""
    (obs,) = GuestWatcher(GUEST, "pve2").poll(50.0, Poll("inmigrate", {}))
    assert obs.info.direction is IN and obs.info.destination_host == "pve2"
    assert obs.sample is None and obs.info.domain_uuid == GUEST.uuid


def test_controls_are_reported_before_the_next_poll() -> None:
    """A control's effect (post-copy, new limits) is observed at once; none without a job."""
    w = GuestWatcher(GUEST, "pve1")
    assert w.controlled(0.0, phase=Phase.POSTCOPY) == []
    w.poll(1.0, Poll("running", active(2, 900), LIM))
    (obs,) = w.controlled(2.0, limits=replace(LIM, max_downtime_s=2.0))
    assert obs.limits.max_downtime_s == 2.0 and obs.phase is Phase.PRECOPY
    (obs,) = w.controlled(3.0, phase=Phase.POSTCOPY)
    assert obs.phase is Phase.POSTCOPY


def test_idle_only_when_running_without_a_job() -> None:
    """Pre-flight measurements may start only on a running guest with no migration."""
    w = GuestWatcher(GUEST, "pve1")
    w.poll(0.0, Poll("running", COMPLETED))
    assert w.idle
    w.poll(1.0, Poll("paused", {}))
    assert not w.idle
    w.poll(2.0, Poll("running", active(1, 100)))
    assert not w.idle


AC_TRACE = Path(__file__).resolve().parent.parent / "bench" / "traces" / "ac-close.jsonl"


def test_auto_converge_capability_known_before_the_throttle_changes_the_verdict() -> None:
    """ac-close (a real migration with auto-converge): libvirt cannot say auto-converge is
    on before QEMU throttles, so pass 3 is NOT_CONVERGING; with the capability read from QMP
    (Limits.auto_converge) the same samples are CONVERGING from pass 2, the reason says why."""
    trace = read_trace(AC_TRACE)

    def verdicts(auto_converge: bool) -> dict[int, Convergence]:
        est = MigrationEstimator(
            EstimatorConfig(),
            preflight_of(trace),
            memory_bytes=memory_size_hint(trace),
            resident_bytes=resident_of(trace),
        )
        out = {}
        for step in source_steps(trace):
            limits = replace(step.limits, auto_converge=auto_converge)
            e = est.observe(step.sample, limits, postcopy=step.postcopy)
            out[step.sample.iteration] = e.convergence
            if auto_converge and step.sample.iteration in (2, 3):
                assert "auto-converge is on" in e.reason, e.reason
        return out

    assert verdicts(False)[3] is Convergence.NOT_CONVERGING
    with_capability = verdicts(True)
    assert with_capability[2] is with_capability[3] is Convergence.CONVERGING


def test_a_dedicated_monitor_replaces_the_shared_one() -> None:
    """Where a VM has ``<vmid>.migwatch.qmp`` the agent uses it instead of ``<vmid>.qmp``;
    other VMs keep their shared socket; the vmid is the name before either suffix."""
    from migwatch.agent.backends.qmp.sockets import choose_sockets, vmid_of

    d = Path("/var/run/qemu-server")
    paths = {d / "100.qmp", d / "100.migwatch.qmp", d / "101.qmp"}
    assert choose_sockets(paths) == {d / "100.migwatch.qmp", d / "101.qmp"}
    assert vmid_of(d / "100.migwatch.qmp") == vmid_of(d / "100.qmp") == "100"


@pytest.mark.parametrize(
    ("polls", "direction", "expected"),
    [
        ([Poll("postmigrate", COMPLETED)], OUT, Ending(Phase.COMPLETED, actual_downtime_s=0.010)),
        ([Poll("running", {"status": "cancelled"})], OUT, Ending(Phase.CANCELLED)),
        (
            [Poll("running", {"status": "failed", "error-desc": "Unable to write"})],
            OUT,
            Ending(Phase.FAILED, "Unable to write"),
        ),
        ([Poll("running", active(2, 900))], OUT, None),
        ([Poll("running", {})], IN, Ending(Phase.COMPLETED)),
        ([Poll("inmigrate", {"status": "active"})], IN, None),
    ],
)
def test_outcome_of_a_migration_followed_by_the_previous_agent(
    polls: list[Poll], direction: Direction, expected: Ending | None
) -> None:
    """After a restart, the QMP answers say how a migration the previous agent followed
    ended (with QEMU's downtime and error), or that it still runs."""
    w = GuestWatcher(GUEST, "pve1")
    for i, poll in enumerate(polls):
        w.poll(float(i), poll)
    if w.role is not None:
        assert w.outcome(direction) is None
        return
    assert w.outcome(direction) == expected


# -- Proxmox storage migration: drive-mirror into the destination's NBD export first --------
NBD_NODES = [
    {"node-name": "#block512", "drv": "nbd", "file": "nbd://127.0.0.1:60123/drive-virtio0"},
    {"node-name": "drive-virtio0", "drv": "raw", "file": "/var/lib/vz/images/101/disk.raw"},
]
FILE_NODES = [{"node-name": "#block512", "drv": "raw", "file": "/var/lib/vz/other.raw"}]


def mirror_job(offset: int, length: int = 256 * MIB, **extra: Any) -> dict[str, Any]:
    """One ``query-block-jobs`` entry as QEMU 7.2 shows a drive-mirror (Proxmox's job id is
    the drive's id)."""
    ready = offset >= length
    return {
        "type": "mirror", "device": "drive-virtio0", "len": length, "offset": offset,
        "busy": not ready, "paused": False, "speed": 0, "io-status": "ok",
        "ready": ready, "status": "ready" if ready else "running", **extra,
    }  # fmt: skip


def mirrored(offset: int, **extra: Any) -> Mirror | None:
    return mirror_of([mirror_job(offset, **extra)], NBD_NODES)


def test_a_mirror_into_nbd_is_a_migrations_disk_copy_and_a_file_mirror_is_not() -> None:
    """Mirror jobs count only beside an NBD node (the destination's export); their len and
    offset are summed; other block jobs and disk moves into files are not migrations."""
    m = mirror_of(
        [mirror_job(64 * MIB), mirror_job(32 * MIB, 128 * MIB), {"type": "stream", "len": 9}],
        NBD_NODES,
    )
    assert m == Mirror(total=384 * MIB, copied=96 * MIB, ready=False)
    assert m.remaining == 288 * MIB
    assert mirror_of([mirror_job(64 * MIB)], FILE_NODES) is None
    assert mirror_of([], NBD_NODES) is None and mirror_of(None, NBD_NODES) is None
    failed = mirror_of([mirror_job(8 * MIB, error="Input/output error")], NBD_NODES)
    assert failed is not None and failed.error == "Input/output error"
    stats = with_mirror(
        job_stats(active(2, 4500)), mirror_of([mirror_job(256 * MIB)], NBD_NODES), 3000
    )
    assert stats["time_elapsed"] == 7500 and stats["disk_total"] == 256 * MIB
    assert stats["disk_remaining"] == 0 and stats["data_total"] == 256 * MIB + 256 * MIB + 528384


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        pytest.param(
            [
                (0, Poll("running", {"status": "cancelled"}, mirror=mirrored(0))),
                (1, Poll("running", {"status": "cancelled"}, mirror=mirrored(100 * MIB))),
                (3, Poll("running", {"status": "cancelled"}, mirror=mirrored(256 * MIB))),
                (4, Poll("running", active(1, 500), LIM, mirror=mirrored(256 * MIB))),
                (5, Poll("postmigrate", COMPLETED, LIM, mirror=mirrored(256 * MIB))),
                (6, Poll("postmigrate", COMPLETED, LIM, mirror=mirrored(256 * MIB))),
            ],
            [
                (OUT, Phase.DISK_MIRROR, ""),
                (OUT, Phase.DISK_MIRROR, ""),
                (OUT, Phase.DISK_MIRROR, ""),
                (OUT, Phase.PRECOPY, ""),
                (OUT, Phase.COMPLETED, ""),
            ],
            id="storage-then-memory-completes",
        ),
        pytest.param(
            [
                (0, Poll("running", {}, mirror=mirrored(10 * MIB))),
                (1, Poll("running", {}, mirror=None)),
            ],
            [
                (OUT, Phase.DISK_MIRROR, ""),
                (OUT, Phase.CANCELLED, "the disk mirrors stopped before the memory"),
            ],
            id="mirror-cancelled-before-migrate",
        ),
        pytest.param(
            [
                (0, Poll("running", {}, mirror=mirrored(10 * MIB))),
                (1, Poll("running", {}, mirror=mirrored(12 * MIB, error="No space left"))),
            ],
            [
                (OUT, Phase.DISK_MIRROR, ""),
                (OUT, Phase.FAILED, "disk mirror failed: No space left"),
            ],
            id="mirror-fails",
        ),
        pytest.param(
            [(0, Poll("running", {"status": "failed"}, mirror=mirrored(256 * MIB)))],
            [],
            id="ready-mirrors-of-a-failed-migration-are-not-a-new-one",
        ),
        pytest.param(
            [(0, Poll("running", {}, mirror=mirrored(10 * MIB))), (1, "gone")],
            [
                (OUT, Phase.DISK_MIRROR, ""),
                (
                    OUT,
                    Phase.FAILED,
                    "the source QEMU exited before the switch-over: the migration did not complete",
                ),
            ],
            id="killed-during-the-disk-copy",
        ),
    ],
)
def test_storage_migration_sequences(
    steps: list[tuple[float, Any]], expected: list[tuple[Direction, Phase, str]]
) -> None:
    """Proxmox's storage migration (mirrors first, then migrate) gives the phases libvirt's
    NBD migrations show: DISK_MIRROR, then PRECOPY, then the end."""
    assert feed(GuestWatcher(GUEST, "pve1"), steps) == expected


def test_storage_phase_and_memory_run_on_one_clock_with_the_mirror_as_disk() -> None:
    """The storage phase's samples run on the watcher's clock from the mirror's first sight;
    once migrate starts, QEMU's total-time continues it, and the mirror stays the disk
    counters, as the recorder writes them (``last_stats``)."""
    w = GuestWatcher(GUEST, "pve1")
    (first,) = w.poll(100.0, Poll("running", {}, mirror=mirrored(0)))
    assert first.info.started_at == 100.0 and first.phase is Phase.DISK_MIRROR
    (copy,) = w.poll(104.0, Poll("running", {}, mirror=mirrored(128 * MIB)))
    assert copy.sample is not None and copy.sample.elapsed_s == 4.0
    assert (copy.sample.disk_processed, copy.sample.disk_remaining) == (128 * MIB, 128 * MIB)
    assert w.last_stats["disk_total"] == 256 * MIB and w.last_stats["time_elapsed"] == 4000
    (mem,) = w.poll(110.0, Poll("running", active(1, 500), LIM, mirror=mirrored(256 * MIB)))
    assert mem.phase is Phase.PRECOPY and mem.sample is not None
    assert mem.sample.elapsed_s == 10.0 and mem.sample.disk_total == 256 * MIB
    (later,) = w.poll(111.0, Poll("running", active(1, 1500), LIM, mirror=mirrored(256 * MIB)))
    assert later.sample is not None and later.sample.elapsed_s == 11.0
    (final,) = w.poll(113.0, Poll("postmigrate", COMPLETED, LIM, mirror=mirrored(256 * MIB)))
    assert final.phase is Phase.COMPLETED and final.sample is not None
    assert final.sample.elapsed_s == 6021 / 1000 + 9.5 and final.sample.disk_total == 256 * MIB


def test_the_hosts_learned_overhead_rides_with_the_outgoing_migration() -> None:
    """The overhead the backend learned from earlier migrations (``Poll``) is in the new
    migration's record, for its estimator; an incoming migration carries none."""
    w = GuestWatcher(GUEST, "pve1")
    poll = Poll("running", active(1, 500), LIM, resident_bytes=200 * MIB,
                resident_overhead_bytes=150 * MIB)  # fmt: skip
    (first,) = w.poll(10.0, poll)
    assert first.info.resident_overhead_bytes == 150 * MIB
    (incoming,) = GuestWatcher(GUEST, "pve2").poll(10.0, replace(poll, runstate="inmigrate"))
    assert incoming.info.resident_overhead_bytes is None


def test_free_memory_of_a_balloon_reply() -> None:
    """`free_memory_of` reads `stat-free-memory` from a balloon's `guest-stats`, and gives
    None before the guest's driver has reported (`last-update` 0) or for QEMU's all-ones
    'unknown'."""
    from migwatch.agent.backends.qmp.jobs import free_memory_of

    unknown = (1 << 64) - 1
    reported = {"stats": {"stat-free-memory": 300 * 2**20}, "last-update": 1796614369}
    assert free_memory_of(reported) == 300 * 2**20
    assert free_memory_of({"stats": {"stat-free-memory": unknown}, "last-update": 0}) is None
    assert free_memory_of({"stats": {"stat-free-memory": unknown}, "last-update": 5}) is None
    assert free_memory_of({}) is None
