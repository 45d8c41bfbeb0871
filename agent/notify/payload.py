"""The notifications' payloads: versioned objects in the style of nova's.

Nova's versioned notifications (``nova/notifications/objects``) carry each payload as an
oslo.versionedobjects primitive: ``{"nova_object.name", "nova_object.namespace",
"nova_object.version", "nova_object.data"}``, nested objects likewise. We use the same
shape under our own namespace prefix ``migwatch_object.`` (as ironic uses
``ironic_object.``), without depending on oslo.versionedobjects: the dicts are built here,
in one place, from the agent's records. Pure: no I/O, no clock.

Versioning rule (nova's): adding a field is a minor bump (1.0 -> 1.1; consumers ignore
fields they do not know); renaming or removing one, or changing its meaning, is a major
bump. docs/NOTIFICATIONS.md lists every field; ``migwatch.client.notifications`` parses
them on the consumer side.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from migwatch.agent.model import HostState, Migration, Recommendation, Transfer

NAMESPACE = "migwatch"
PREFIX = "migwatch_object."
# Versions of the objects below; see the module docstring for when they change.
MIGRATION_VERSION = "1.0"
TRANSFER_VERSION = "1.0"
REMEDY_VERSION = "1.0"
HOST_VERSION = "1.0"

# event_type of each notification, as nova's "<object>.<action>[.<phase>]".
EVENT_START = "migwatch.migration.start"
EVENT_PROGRESS = "migwatch.migration.progress"
EVENT_END = "migwatch.migration.end"
EVENT_HOST = "migwatch.host.state"


def versioned(name: str, version: str, data: dict[str, Any]) -> dict[str, Any]:
    """One versioned object primitive."""
    return {
        PREFIX + "name": name,
        PREFIX + "namespace": NAMESPACE,
        PREFIX + "version": version,
        PREFIX + "data": data,
    }


def _instant(unix_s: float | None) -> str | None:
    # ISO 8601 in UTC, as oslo's timestamps; None stays null (not known).
    if unix_s is None:
        return None
    return datetime.fromtimestamp(unix_s, UTC).isoformat()


def transfer_payload(t: Transfer) -> dict[str, Any]:
    return versioned(
        "TransferPayload",
        TRANSFER_VERSION,
        {
            "total_bytes": t.total_bytes,
            "processed_bytes": t.processed_bytes,
            "remaining_bytes": t.remaining_bytes,
            "bytes_per_second": t.bytes_per_second,
            "fraction_done": t.fraction_done,
        },
    )


def remedy_payload(r: Recommendation) -> dict[str, Any]:
    return versioned(
        "RemedyPayload",
        REMEDY_VERSION,
        {
            "action": r.action.name.lower(),
            "summary": r.summary,
            "max_downtime_s": r.max_downtime_s,
            "max_bandwidth_bytes_per_second": r.max_bandwidth_bps,
            "predicted_eta_s": r.predicted_eta_s,
        },
    )


def migration_payload(m: Migration) -> dict[str, Any]:
    """The payload of start, progress and end: the migration as the agent sees it.

    ``outcome`` and ``duration_s`` are null until the migration ends; ``top_remedy`` is
    the first recommendation (the one the agent ranks best), or null.
    """
    ended = m.phase.terminal
    duration = None
    if ended and m.started_at is not None and m.finished_at is not None:
        duration = max(0.0, m.finished_at - m.started_at)
    elif ended:
        duration = m.elapsed_s
    return versioned(
        "MigrationPayload",
        MIGRATION_VERSION,
        {
            "id": m.id,
            "domain_uuid": m.domain_uuid,
            "domain_name": m.domain_name,
            "source_host": m.source_host,
            "destination_host": m.destination_host,
            "direction": m.direction.name.lower(),
            "agent_host": m.agent_host,
            "backend": m.backend,
            "phase": m.phase.name.lower(),
            "memory": transfer_payload(m.memory),
            "disk": transfer_payload(m.disk),
            "dirty_rate_bytes_per_second": m.dirty_rate_bps,
            "iteration": m.iteration,
            "elapsed_s": m.elapsed_s,
            "eta_s": m.eta_s,
            "eta_low_s": m.eta_low_s,
            "eta_high_s": m.eta_high_s,
            "eta_basis": m.eta_basis.name.lower(),
            "convergence": m.convergence.name.lower(),
            "convergence_reason": m.convergence_reason,
            "top_remedy": remedy_payload(m.recommendations[0]) if m.recommendations else None,
            "expected_downtime_s": m.expected_downtime_s,
            "actual_downtime_s": m.actual_downtime_s,
            "max_downtime_s": m.limits.max_downtime_s,
            "max_bandwidth_bytes_per_second": m.limits.max_bandwidth_bps,
            "postcopy_allowed": m.limits.postcopy_allowed,
            "auto_converge_throttle_percent": m.auto_converge_throttle or 0,
            "postcopy_requests": m.postcopy_requests,
            "started_at": _instant(m.started_at),
            "updated_at": _instant(m.updated_at),
            "finished_at": _instant(m.finished_at),
            "outcome": m.phase.name.lower() if ended else None,
            "duration_s": duration,
            "error_message": m.error_message,
            "sequence": m.sequence,
        },
    )


def host_payload(
    host: str, backend: str, state: HostState, message: str, version: str
) -> dict[str, Any]:
    """The payload of ``migwatch.host.state``: the agent's link to its hypervisor."""
    return versioned(
        "HostStatePayload",
        HOST_VERSION,
        {
            "host": host,
            "backend": backend,
            "state": state.name.lower(),
            "message": message,
            "agent_version": version,
        },
    )
