"""QMP replies -> the agent's records: the one place that knows QMP's key names. Pure.

``query-migrate`` is translated into libvirt's job-stats keys (``virDomainGetJobStats``),
the way libvirt itself fills them from the same reply (``qemuMonitorJSONGetMigrationStats``
and ``qemuDomainJobDataToParams``). So ``jobstats.parse_job_stats`` makes the
``JobSample``, the recorder writes the same trace format as for libvirt, and replay and
``bench-eta`` need nothing new. Field names: QEMU's ``qapi/migration.json`` (7.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from migwatch.agent.backends.jobstats import JobType
from migwatch.agent.model import Limits

#: ``MigrationStatus`` values of a migration still in progress on the source.
RUNNING = frozenset({
    "setup", "active", "cancelling", "pre-switchover", "device", "wait-unplug",
    "postcopy-active", "postcopy-paused", "postcopy-recover",
})  # fmt: skip
POSTCOPY = frozenset({"postcopy-active", "postcopy-paused", "postcopy-recover"})
#: The source guest is stopped for the final copy (``pause-before-switchover`` or device
#: state): the switch-over has begun.
SWITCHOVER = frozenset({"pre-switchover", "device"})
#: Run states (``query-status``) in which the guest does not run on this host.
STOPPED_RUNSTATES = frozenset({"paused", "finish-migrate", "postmigrate", "suspended"})

# QEMU's "no limit" for max-bandwidth is 0 or a value no link reaches (Proxmox passes
# large values); anything at or above this is reported as unlimited.
_UNLIMITED_BPS = 1 << 50


def _num(d: Mapping[str, object], key: str) -> int | None:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _section(reply: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = reply.get(key)
    return value if isinstance(value, Mapping) else {}


def status_of(reply: Mapping[str, object]) -> str:
    """The ``status`` of a ``query-migrate`` reply; "none" when there never was a migration."""
    status = reply.get("status")
    return status if isinstance(status, str) else "none"


def job_type(status: str) -> JobType:
    """The libvirt job type a ``MigrationStatus`` corresponds to."""
    if status in RUNNING:
        return JobType.UNBOUNDED
    return {
        "completed": JobType.COMPLETED,
        "failed": JobType.FAILED,
        "cancelled": JobType.CANCELLED,
    }.get(status, JobType.NONE)


def job_stats(reply: Mapping[str, object]) -> dict[str, object]:
    """A ``query-migrate`` reply as libvirt job stats (absent QMP fields stay absent).

    While running, ``downtime`` is QEMU's ``expected-downtime``; once completed it is the
    actual ``downtime``, as in libvirt's completed stats. ``time_elapsed`` is QEMU's
    ``total-time``: the job's own clock, from the migrate command on.
    """
    status = status_of(reply)
    kind = job_type(status)
    out: dict[str, object] = {"type": int(kind)}
    if kind is JobType.NONE:
        return out
    ram, disk = _section(reply, "ram"), _section(reply, "disk")

    def put(key: str, value: int | None) -> None:
        if value is not None:
            out[key] = value

    put("time_elapsed", _num(reply, "total-time"))
    put("setup_time", _num(reply, "setup-time"))
    if kind is JobType.COMPLETED:
        put("downtime", _num(reply, "downtime"))
    elif kind is JobType.UNBOUNDED:
        put("downtime", _num(reply, "expected-downtime"))
    put("memory_total", _num(ram, "total"))
    put("memory_processed", _num(ram, "transferred"))
    put("memory_remaining", _num(ram, "remaining"))
    mbps = ram.get("mbps")
    if isinstance(mbps, (int, float)) and not isinstance(mbps, bool):
        out["memory_bps"] = int(mbps * 1_000_000 / 8)  # QEMU says megabits per second
    put("memory_constant", _num(ram, "duplicate"))
    put("memory_normal", _num(ram, "normal"))
    put("memory_normal_bytes", _num(ram, "normal-bytes"))
    put("memory_dirty_rate", _num(ram, "dirty-pages-rate"))
    put("memory_page_size", _num(ram, "page-size"))
    put("memory_iteration", _num(ram, "dirty-sync-count"))
    put("memory_postcopy_requests", _num(ram, "postcopy-requests"))
    put("disk_total", _num(disk, "total"))
    put("disk_processed", _num(disk, "transferred"))
    put("disk_remaining", _num(disk, "remaining"))
    put("disk_bps", None if not disk else _num(disk, "mbps"))
    for key, part in (("data_total", "total"), ("data_processed", "transferred"),
                      ("data_remaining", "remaining")):  # fmt: skip
        a, b = _num(ram, part), _num(disk, part)
        if a is not None or b is not None:
            out[key] = (a or 0) + (b or 0)
    put("auto_converge_throttle", _num(reply, "cpu-throttle-percentage"))
    if isinstance(reply.get("error-desc"), str):
        out["errmsg"] = reply["error-desc"]
    return out


def capabilities_of(reply: object) -> dict[str, bool]:
    """``query-migrate-capabilities`` ([{capability, state}]) as a name -> on mapping."""
    out: dict[str, bool] = {}
    if isinstance(reply, list):
        for item in reply:
            if isinstance(item, Mapping) and isinstance(item.get("capability"), str):
                out[str(item["capability"])] = item.get("state") is True
    return out


def limits_of(params: Mapping[str, object], capabilities: Mapping[str, bool]) -> Limits:
    """The limits in force: ``query-migrate-parameters`` and the capabilities."""
    downtime_ms = _num(params, "downtime-limit")
    bandwidth = _num(params, "max-bandwidth")
    postcopy_bw = _num(params, "max-postcopy-bandwidth")
    defaults = Limits()
    return replace(
        defaults,
        max_downtime_s=downtime_ms / 1000 if downtime_ms else defaults.max_downtime_s,
        max_bandwidth_bps=bandwidth if bandwidth and 0 < bandwidth < _UNLIMITED_BPS else None,
        postcopy_allowed=bool(capabilities.get("postcopy-ram")),
        postcopy_bandwidth_bps=postcopy_bw
        if postcopy_bw and postcopy_bw < _UNLIMITED_BPS
        else None,
        auto_converge=bool(capabilities.get("auto-converge")),
    )


def dirty_rate_of(reply: Mapping[str, object], previous_start: int | None) -> float | None:
    """MiB/s of a ``query-dirty-rate`` reply, once a measurement newer than the one that
    started at ``previous_start`` is done; None while it is still measuring."""
    if reply.get("status") != "measured" or _num(reply, "start-time") == previous_start:
        return None
    rate = _num(reply, "dirty-rate")
    return None if rate is None else float(rate)


@dataclass(frozen=True, slots=True)
class Mirror:
    """The ``drive-mirror`` jobs copying a guest's local disks to a migration's destination
    (Proxmox's storage migration: mirrors into the destination's NBD export first, then
    ``migrate`` for the RAM while the mirrors keep the copies in sync)."""

    total: int  # bytes, the jobs' ``len`` summed
    copied: int  # bytes, their ``offset`` summed
    ready: bool  # every job has caught up: only the guest's new writes still flow
    error: str = ""  # a job ended with this error

    @property
    def remaining(self) -> int:
        return max(self.total - self.copied, 0)


def mirror_of(block_jobs: object, nodes: object) -> Mirror | None:
    """The migration's disk mirrors from ``query-block-jobs`` and ``query-named-block-nodes``.

    Only mirror jobs count, and only when the guest has an NBD node (the destination's
    export, ``nbd:<host>:<port>:exportname=...`` as Proxmox passes it): a mirror into a
    local file is a disk move, not a migration. None when there is no such mirror.
    """
    if not isinstance(block_jobs, list) or not _has_nbd_node(nodes):
        return None
    jobs = [j for j in block_jobs if isinstance(j, Mapping) and j.get("type") == "mirror"]
    if not jobs:
        return None
    errors = [str(j["error"]) for j in jobs if isinstance(j.get("error"), str) and j["error"]]
    return Mirror(
        total=sum(_num(j, "len") or 0 for j in jobs),
        copied=sum(_num(j, "offset") or 0 for j in jobs),
        ready=all(j.get("ready") is True for j in jobs),
        error="; ".join(errors),
    )


def _has_nbd_node(nodes: object) -> bool:
    if not isinstance(nodes, list):
        return False
    for node in nodes:
        if not isinstance(node, Mapping):
            continue
        file = node.get("file")
        if node.get("drv") == "nbd" or (isinstance(file, str) and file.startswith("nbd")):
            return True
    return False


def mirror_stats(elapsed_ms: int, mirror: Mirror) -> dict[str, object]:
    """Job stats for the storage phase, before ``migrate``: QEMU has no migration clock yet,
    so ``time_elapsed`` is the watcher's own, from the mirror's first sight."""
    return with_mirror(
        {"type": int(JobType.UNBOUNDED), "time_elapsed": max(elapsed_ms, 0)}, mirror, 0
    )


def with_mirror(
    stats: dict[str, object], mirror: Mirror | None, offset_ms: int
) -> dict[str, object]:
    """``stats`` with the mirror as its disk counters (unless QEMU's own block migration
    fills them) and ``offset_ms`` of storage phase added to the job clock, so the whole
    migration runs on one clock as libvirt's NBD migrations do."""
    out = dict(stats)
    elapsed = out.get("time_elapsed")
    if offset_ms and isinstance(elapsed, int):
        out["time_elapsed"] = elapsed + offset_ms
    if mirror is None or "disk_total" in out:
        return out
    out["disk_total"] = mirror.total
    out["disk_processed"] = mirror.copied
    out["disk_remaining"] = mirror.remaining
    for key, part in (("data_total", mirror.total), ("data_processed", mirror.copied),
                      ("data_remaining", mirror.remaining)):  # fmt: skip
        base = out.get(key)
        out[key] = (base if isinstance(base, int) else 0) + part
    return out


def disk_bytes(blocks: object) -> int:
    """Virtual size of the writable disks in a ``query-block`` reply (what a storage copy
    would mirror)."""
    total = 0
    if isinstance(blocks, list):
        for dev in blocks:
            inserted = dev.get("inserted") if isinstance(dev, dict) else None
            if isinstance(inserted, dict) and not inserted.get("ro"):
                image = inserted.get("image")
                if isinstance(image, dict) and isinstance(image.get("virtual-size"), int):
                    total += int(image["virtual-size"])
    return total


#: The balloon device Proxmox gives every guest (``qm`` ``balloon``), whose ``guest-stats``
#: QOM property it reads for the guest's memory (``qom-get``).
BALLOON_PATH = "/machine/peripheral/balloon0"


def free_memory_of(reply: Mapping[str, object]) -> int | None:
    """The guest's free memory in bytes from a balloon's ``guest-stats`` (``qom-get``), or
    None: no statistics yet (``last-update`` 0: the guest driver has not reported, or no
    polling interval is set) or a figure QEMU marks unknown (all ones)."""
    stats = reply.get("stats")
    if not isinstance(stats, Mapping) or not reply.get("last-update"):
        return None
    free = stats.get("stat-free-memory")
    if isinstance(free, int) and 0 < free < 1 << 63:
        return free
    return None
