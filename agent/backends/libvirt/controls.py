"""The operator's controls as blocking libvirt calls on one domain (run in a worker thread).

Each takes the domain object; ``backend.LibvirtBackend`` looks it up, runs the call off the
event loop and turns a libvirtError into the agent's errors (``connection.map_control_error``).
"""

from __future__ import annotations

from typing import Any

import libvirt
from migwatch.agent.backends.libvirt.connection import OPERATION_INVALID, code
from migwatch.agent.model import MIB


def abort(dom: Any) -> None:
    """Cancel the outgoing job. The source sends no event for it (NOTES.md)."""
    dom.abortJob()


def force_complete(dom: Any) -> bool:
    """Start post-copy, or pause the guest when the migration was not started with
    VIR_MIGRATE_POSTCOPY; True if by post-copy."""
    try:
        dom.migrateStartPostCopy(0)
        return True
    except libvirt.libvirtError as exc:
        if code(exc) != OPERATION_INVALID or "post-copy" not in (exc.get_error_message() or ""):
            raise
    # Not started with VIR_MIGRATE_POSTCOPY: pause the guest, so it stops dirtying memory
    # and the copy finishes.
    dom.suspend()
    return False


def whole_mib_s(max_bandwidth_bps: int | None) -> int | None:
    """libvirt takes whole MiB/s: rounded up, so the limit set is never below the one asked."""
    return None if max_bandwidth_bps is None else -(-max_bandwidth_bps // MIB)


def set_limits(dom: Any, max_downtime_s: float | None, mib_s: int | None) -> None:
    """Apply the limits that are not ``None``."""
    if max_downtime_s is not None:
        dom.migrateSetMaxDowntime(max(1, round(max_downtime_s * 1000)), 0)
    if mib_s is not None:
        dom.migrateSetMaxSpeed(mib_s, 0)
