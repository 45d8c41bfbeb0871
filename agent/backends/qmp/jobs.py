"""QMP replies -> the agent's records: the one place that knows QMP's key names. Pure.

``query-migrate`` is translated into libvirt's job-stats keys (``virDomainGetJobStats``),
the way libvirt itself fills them from the same reply (``qemuMonitorJSONGetMigrationStats``
and ``qemuDomainJobDataToParams``). So ``jobstats.parse_job_stats`` makes the
``JobSample``, the recorder writes the same trace format as for libvirt, and replay and
``bench-eta`` need nothing new. Field names: QEMU's ``qapi/migration.json`` (7.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

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
