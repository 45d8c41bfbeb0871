"""``migwatch.v1`` messages <-> client records. Pure; the only place that reads protos.

Unset optional messages (Duration, Timestamp) become ``None``; enum values newer than
this client become the enum's ``UNKNOWN`` member instead of raising.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from migwatch.v1 import migwatch_pb2 as pb

from .model import (
    Action,
    AgentStatus,
    Convergence,
    Direction,
    EtaBasis,
    EvacuationEntry,
    EvacuationEstimate,
    ForceCompleteMethod,
    Heartbeat,
    HostState,
    Migration,
    MigrationEstimate,
    Phase,
    Recommendation,
    SnapshotComplete,
    Transfer,
    WatchEvent,
)

_E = TypeVar("_E", bound=enum.Enum)


def _enum(cls: type[_E], value: int) -> _E:
    try:
        return cls(value)
    except ValueError:
        return cls(0)  # every client enum has UNKNOWN = 0


def _seconds(
    msg: pb.Migration
    | pb.Recommendation
    | pb.EstimateMigrationResponse
    | pb.EvacuationEntry
    | pb.EstimateEvacuationResponse,
    field: str,
) -> float | None:
    if not msg.HasField(field):
        return None
    d: Duration = getattr(msg, field)
    return d.seconds + d.nanos / 1e9


def _instant(
    msg: pb.Migration | pb.Heartbeat | pb.EstimateMigrationResponse, field: str
) -> datetime | None:
    if not msg.HasField(field):
        return None
    ts: Timestamp = getattr(msg, field)
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=UTC)


def estimate_from_pb(r: pb.EstimateMigrationResponse) -> MigrationEstimate:
    return MigrationEstimate(
        domain_uuid=r.domain_uuid,
        domain_name=r.domain_name,
        duration_s=_seconds(r, "duration"),
        duration_low_s=_seconds(r, "duration_low"),
        duration_high_s=_seconds(r, "duration_high"),
        convergence=_enum(Convergence, r.convergence),
        reason=r.reason,
        recommendations=tuple(recommendation_from_pb(x) for x in r.recommendations),
        memory_bytes=r.memory_bytes,
        disk_bytes=r.disk_bytes,
        bandwidth=r.bandwidth,
        max_downtime_s=_seconds(r, "max_downtime"),
        dirty_rate_bytes_per_second=r.dirty_rate_bytes_per_second,
        hot_set_bytes=r.hot_set_bytes,
        measured_at=_instant(r, "measured_at"),
        measurement_age_s=_seconds(r, "measurement_age"),
        basis=_enum(EtaBasis, r.basis),
    )


def _evacuation_entry_from_pb(e: pb.EvacuationEntry) -> EvacuationEntry:
    return EvacuationEntry(
        domain_uuid=e.domain_uuid,
        domain_name=e.domain_name,
        in_flight=e.in_flight,
        planned=e.planned,
        order=e.order,
        start_offset_s=_seconds(e, "start_offset"),
        duration_s=_seconds(e, "duration"),
        duration_low_s=_seconds(e, "duration_low"),
        duration_high_s=_seconds(e, "duration_high"),
        convergence=_enum(Convergence, e.convergence),
        reason=e.reason,
        recommendations=tuple(recommendation_from_pb(x) for x in e.recommendations),
        basis=_enum(EtaBasis, e.basis),
        measurement_age_s=_seconds(e, "measurement_age"),
        bandwidth=e.bandwidth,
        post_copy_applied=e.post_copy_applied,
    )


def evacuation_from_pb(r: pb.EstimateEvacuationResponse) -> EvacuationEstimate:
    return EvacuationEstimate(
        host=r.host,
        total_s=_seconds(r, "total"),
        total_low_s=_seconds(r, "total_low"),
        total_high_s=_seconds(r, "total_high"),
        empties=r.empties,
        entries=tuple(_evacuation_entry_from_pb(e) for e in r.entries),
        order=tuple(r.order),
        blocking_domains=tuple(r.blocking_domains),
        unmeasured_domains=tuple(r.unmeasured_domains),
        oldest_measurement_age_s=_seconds(r, "oldest_measurement_age"),
        newest_measurement_age_s=_seconds(r, "newest_measurement_age"),
        concurrency=r.concurrency,
        link_bandwidth=r.link_bandwidth,
        order_given=r.order_given,
        band_method=r.band_method,
    )


def evacuation_request_pb(
    domains: Sequence[str] = (),
    *,
    concurrency: int | None = None,
    bandwidth: int | None = None,
    max_downtime_s: float | None = None,
    auto_converge: bool = False,
    post_copy: bool = False,
    link_bandwidth: int | None = None,
    allow_departed: bool = False,
    copy_storage: bool = False,
) -> pb.EstimateEvacuationRequest:
    req = pb.EstimateEvacuationRequest(
        allow_departed=allow_departed,
        copy_storage=copy_storage,
        domains=list(domains),
        auto_converge=auto_converge,
        post_copy=post_copy,
    )
    if concurrency is not None:
        req.concurrency = concurrency
    if bandwidth is not None:
        req.bandwidth = bandwidth
    if link_bandwidth is not None:
        req.link_bandwidth = link_bandwidth
    if max_downtime_s is not None:
        req.max_downtime.CopyFrom(duration_pb(max_downtime_s))
    return req


def estimate_request_pb(
    domain: str,
    bandwidth: int | None,
    max_downtime_s: float | None,
    copy_storage: bool,
    auto_converge: bool = False,
) -> pb.EstimateMigrationRequest:
    """Names the domain by UUID when it looks like one, else by name."""
    try:
        uuid.UUID(domain)
        req = pb.EstimateMigrationRequest(domain_uuid=domain)
    except ValueError:
        req = pb.EstimateMigrationRequest(domain_name=domain)
    req.copy_storage = copy_storage
    req.auto_converge = auto_converge
    if bandwidth is not None:
        req.bandwidth = bandwidth
    if max_downtime_s is not None:
        req.max_downtime.CopyFrom(duration_pb(max_downtime_s))
    return req


def duration_pb(seconds: float) -> Duration:
    """A Duration of ``seconds``, rounded to the nanosecond."""
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def transfer_from_pb(t: pb.Transfer) -> Transfer:
    return Transfer(
        total_bytes=t.total_bytes,
        processed_bytes=t.processed_bytes,
        remaining_bytes=t.remaining_bytes,
        bytes_per_second=t.bytes_per_second,
        fraction_done=t.fraction_done,
    )


def recommendation_from_pb(r: pb.Recommendation) -> Recommendation:
    return Recommendation(
        action=_enum(Action, r.action),
        summary=r.summary,
        max_downtime_s=_seconds(r, "max_downtime"),
        max_bandwidth=r.max_bandwidth or None,
        predicted_eta_s=_seconds(r, "predicted_eta"),
    )


def migration_from_pb(m: pb.Migration) -> Migration:
    """The client record for one ``migwatch.v1.Migration``."""
    return Migration(
        id=m.id,
        domain_uuid=m.domain_uuid,
        domain_name=m.domain_name,
        source_host=m.source_host,
        destination_host=m.destination_host,
        direction=_enum(Direction, m.direction),
        phase=_enum(Phase, m.phase),
        memory=transfer_from_pb(m.memory),
        disk=transfer_from_pb(m.disk),
        dirty_rate_bytes_per_second=m.dirty_rate_bytes_per_second,
        iteration=m.iteration,
        elapsed_s=_seconds(m, "elapsed"),
        eta_s=_seconds(m, "eta"),
        eta_low_s=_seconds(m, "eta_low"),
        eta_high_s=_seconds(m, "eta_high"),
        eta_basis=_enum(EtaBasis, m.eta_basis),
        convergence=_enum(Convergence, m.convergence),
        convergence_reason=m.convergence_reason,
        recommendations=tuple(recommendation_from_pb(r) for r in m.recommendations),
        expected_downtime_s=_seconds(m, "expected_downtime"),
        actual_downtime_s=_seconds(m, "actual_downtime"),
        max_downtime_s=_seconds(m, "max_downtime"),
        max_bandwidth=m.max_bandwidth or None,
        postcopy_allowed=m.postcopy_allowed,
        auto_converge_throttle_percent=m.auto_converge_throttle_percent,
        postcopy_requests=m.postcopy_requests,
        started_at=_instant(m, "started_at"),
        updated_at=_instant(m, "updated_at"),
        finished_at=_instant(m, "finished_at"),
        error_message=m.error_message,
        sequence=m.sequence,
        agent_host=m.agent_host,
        backend=m.backend,
    )


def agent_status_from_pb(s: pb.AgentStatus) -> AgentStatus:
    return AgentStatus(
        host=s.host,
        backend=s.backend,
        state=_enum(HostState, s.state),
        message=s.message,
        version=s.version,
    )


def force_complete_method_from_pb(value: int) -> ForceCompleteMethod:
    return _enum(ForceCompleteMethod, value)


def event_from_pb(r: pb.WatchMigrationsResponse) -> WatchEvent | None:
    """The event a watch response carries; ``None`` for an empty or unknown one."""
    which = r.WhichOneof("event")
    if which == "migration":
        return migration_from_pb(r.migration)
    if which == "snapshot_complete":
        return SnapshotComplete(
            migration_count=r.snapshot_complete.migration_count,
            sequence=r.snapshot_complete.sequence,
        )
    if which == "heartbeat":
        return Heartbeat(time=_instant(r.heartbeat, "time"), sequence=r.heartbeat.sequence)
    if which == "agent_status":
        return agent_status_from_pb(r.agent_status)
    return None


def limits_request_pb(
    migration_id: str, max_downtime_s: float | None, max_bandwidth: int | None
) -> pb.UpdateMigrationLimitsRequest:
    """An UpdateMigrationLimitsRequest; ``None`` leaves a limit unchanged."""
    req = pb.UpdateMigrationLimitsRequest(id=migration_id)
    if max_downtime_s is not None:
        req.max_downtime.CopyFrom(duration_pb(max_downtime_s))
    if max_bandwidth is not None:
        req.max_bandwidth = max_bandwidth
    return req
