"""The agents' bus notifications -> client records, and the fleet fed from them. Pure.

The agent publishes with oslo.messaging (docs/NOTIFICATIONS.md): ``event_type``
``migwatch.migration.{start,progress,end}`` with a ``MigrationPayload`` and
``migwatch.host.state`` with a ``HostStatePayload``, each a versioned object
(``migwatch_object.{name,namespace,version,data}``). This module is the one place that
reads those payloads; it does not import the agent (the payload is the contract).

``BusFleet`` feeds them into the same ``FleetState`` the gRPC streams feed, so the fleet
view and its ``Update``s are the same whichever way the states arrive. A host is known
from its first notification: the bus has no snapshot, so a host is "synced" at once and
a migration first heard of mid-way simply appears.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from .merge import FleetState
from .model import (
    Action,
    AgentStatus,
    Convergence,
    Direction,
    EtaBasis,
    FleetSnapshot,
    HostState,
    Migration,
    Phase,
    Recommendation,
    SnapshotComplete,
    Transfer,
    Update,
)
from .render import to_jsonable
from .units import format_bytes, format_duration

PREFIX = "migwatch_object."
MIGRATION_EVENTS = (
    "migwatch.migration.start",
    "migwatch.migration.progress",
    "migwatch.migration.end",
)
HOST_EVENT = "migwatch.host.state"
# Major versions this client reads; a newer minor only adds fields, which are ignored.
_MAJOR = "1"

_E = TypeVar("_E", bound=enum.Enum)


@dataclass(frozen=True, slots=True)
class BusEvent:
    """One notification as a consumer received it."""

    event_type: str  # e.g. migwatch.migration.progress
    publisher_id: str  # migwatch-agent:<host>
    host: str  # the publishing agent's host
    timestamp: str  # oslo's, as sent
    item: Migration | AgentStatus  # what it says


class PayloadError(ValueError):
    """A notification this client cannot read (not ours, or a newer major version)."""


def _data(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    if payload.get(PREFIX + "name") != name:
        raise PayloadError(f"expected a {name}, got {payload.get(PREFIX + 'name')!r}")
    version = str(payload.get(PREFIX + "version", ""))
    if version.split(".")[0] != _MAJOR:
        raise PayloadError(f"{name} version {version} is not {_MAJOR}.x")
    data = payload.get(PREFIX + "data")
    if not isinstance(data, Mapping):
        raise PayloadError(f"{name} without data")
    return data


def _enum(cls: type[_E], name: Any) -> _E:
    try:
        return cls[str(name).upper()]
    except KeyError:
        return cls(0)  # every client enum has UNKNOWN = 0: a newer value than we know


def _instant(text: Any) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) and text else None


def _transfer(payload: Mapping[str, Any]) -> Transfer:
    d = _data(payload, "TransferPayload")
    return Transfer(
        total_bytes=int(d.get("total_bytes", 0)),
        processed_bytes=int(d.get("processed_bytes", 0)),
        remaining_bytes=int(d.get("remaining_bytes", 0)),
        bytes_per_second=int(d.get("bytes_per_second", 0)),
        fraction_done=float(d.get("fraction_done", 0.0)),
    )


def _remedy(payload: Mapping[str, Any] | None) -> tuple[Recommendation, ...]:
    if not payload:
        return ()
    d = _data(payload, "RemedyPayload")
    return (
        Recommendation(
            action=_enum(Action, d.get("action")),
            summary=str(d.get("summary", "")),
            max_downtime_s=d.get("max_downtime_s"),
            max_bandwidth=d.get("max_bandwidth_bytes_per_second"),
            predicted_eta_s=d.get("predicted_eta_s"),
        ),
    )


def migration_from_payload(payload: Mapping[str, Any]) -> Migration:
    """A ``MigrationPayload`` as a client ``Migration`` (the top remedy only)."""
    d = _data(payload, "MigrationPayload")
    return Migration(
        id=str(d["id"]),
        domain_uuid=str(d.get("domain_uuid", "")),
        domain_name=str(d.get("domain_name", "")),
        source_host=str(d.get("source_host", "")),
        destination_host=str(d.get("destination_host", "")),
        direction=_enum(Direction, d.get("direction")),
        phase=_enum(Phase, d.get("phase")),
        memory=_transfer(d["memory"]),
        disk=_transfer(d["disk"]),
        dirty_rate_bytes_per_second=int(d.get("dirty_rate_bytes_per_second", 0)),
        iteration=int(d.get("iteration", 0)),
        elapsed_s=d.get("elapsed_s"),
        eta_s=d.get("eta_s"),
        eta_low_s=d.get("eta_low_s"),
        eta_high_s=d.get("eta_high_s"),
        eta_basis=_enum(EtaBasis, d.get("eta_basis")),
        convergence=_enum(Convergence, d.get("convergence")),
        convergence_reason=str(d.get("convergence_reason", "")),
        recommendations=_remedy(d.get("top_remedy")),
        expected_downtime_s=d.get("expected_downtime_s"),
        actual_downtime_s=d.get("actual_downtime_s"),
        max_downtime_s=d.get("max_downtime_s"),
        max_bandwidth=d.get("max_bandwidth_bytes_per_second"),
        postcopy_allowed=bool(d.get("postcopy_allowed", False)),
        auto_converge_throttle_percent=int(d.get("auto_converge_throttle_percent", 0)),
        postcopy_requests=int(d.get("postcopy_requests", 0)),
        started_at=_instant(d.get("started_at")),
        updated_at=_instant(d.get("updated_at")),
        finished_at=_instant(d.get("finished_at")),
        error_message=str(d.get("error_message", "")),
        sequence=int(d.get("sequence", 0)),
        agent_host=str(d.get("agent_host", "")),
        backend=str(d.get("backend", "")),
    )


def agent_status_from_payload(payload: Mapping[str, Any]) -> AgentStatus:
    d = _data(payload, "HostStatePayload")
    return AgentStatus(
        host=str(d.get("host", "")),
        backend=str(d.get("backend", "")),
        state=_enum(HostState, d.get("state")),
        message=str(d.get("message", "")),
        version=str(d.get("agent_version", "")),
    )


def event_from_notification(
    publisher_id: str, event_type: str, payload: Any, metadata: Mapping[str, Any]
) -> BusEvent:
    """One notification, as an oslo.messaging endpoint receives it; ``PayloadError`` when it
    is not one of ours."""
    if not isinstance(payload, Mapping):
        raise PayloadError(f"{event_type}: payload is not an object")
    if event_type in MIGRATION_EVENTS:
        item: Migration | AgentStatus = migration_from_payload(payload)
    elif event_type == HOST_EVENT:
        item = agent_status_from_payload(payload)
    else:
        raise PayloadError(f"not a migwatch event: {event_type!r}")
    host = publisher_id.partition(":")[2] or publisher_id
    return BusEvent(event_type, publisher_id, host, str(metadata.get("timestamp", "")), item)


class BusFleet:
    """The fleet state fed from bus notifications: the ``FleetState`` of the gRPC path,
    with one "agent" per publishing host."""

    def __init__(self, *, finished_keep: int = 100) -> None:
        self.state = FleetState((), include_finished=True, finished_keep=finished_keep)
        self._hosts: set[str] = set()

    def apply(self, event: BusEvent, now: float) -> list[Update]:
        """The updates this notification produces (as a gRPC stream's would)."""
        out: list[Update] = []
        if event.host not in self._hosts:
            self._hosts.add(event.host)
            self.state.add_agent(event.host)
            self.state.connecting(event.host)
            out += self.state.apply(event.host, SnapshotComplete(0, 0), now)
        return out + self.state.apply(event.host, event.item, now)

    def snapshot(self) -> FleetSnapshot:
        return self.state.snapshot()


def format_bus_event(event: BusEvent) -> str:
    """One line per notification: host, event, domain, phase, memory and disk, ETA with
    its band, verdict (and reason)."""
    kind = event.event_type.rpartition(".")[2]
    item = event.item
    if isinstance(item, AgentStatus):
        detail = item.state.name.lower() + (f": {item.message}" if item.message else "")
        return f"{event.timestamp[11:19]:8}  {event.host:<16} {'host':<8} {detail}"
    m = item
    parts = [
        f"{event.timestamp[11:19]:8}",
        f"{event.host:<16}",
        f"{kind:<8}",
        f"{m.domain_name or m.domain_uuid:<20}",
        f"{m.phase.name.lower():<11}",
        f"mem {m.memory.fraction_done:4.0%} of {format_bytes(m.memory.total_bytes)}",
    ]
    if m.disk.total_bytes:
        parts.append(f"disk {m.disk.fraction_done:4.0%} of {format_bytes(m.disk.total_bytes)}")
    if m.final:
        if m.actual_downtime_s is not None:
            parts.append(f"downtime {format_duration(m.actual_downtime_s)}")
        if m.elapsed_s is not None:
            parts.append(f"took {format_duration(m.elapsed_s)}")
        if m.error_message:
            parts.append(m.error_message)
        return "  ".join(parts)
    if m.eta_s is not None:
        band = ""
        if m.eta_low_s is not None and m.eta_high_s is not None:
            band = f" [{format_duration(m.eta_low_s)}-{format_duration(m.eta_high_s)}]"
        parts.append(f"eta {format_duration(m.eta_s)}{band}")
    parts.append(m.convergence.name.lower())
    if m.convergence_reason:
        parts.append(f"({m.convergence_reason})")
    if m.recommendations:
        parts.append(f"-> {m.recommendations[0].action.name.lower()}")
    return "  ".join(parts)


def format_bus_event_jsonable(event: BusEvent) -> dict[str, Any]:
    """A notification as JSON data: its envelope fields and the record it carries."""
    key = "migration" if isinstance(event.item, Migration) else "agent_status"
    return {
        "event_type": event.event_type,
        "publisher_id": event.publisher_id,
        "host": event.host,
        "timestamp": event.timestamp,
        key: to_jsonable(event.item),
    }
