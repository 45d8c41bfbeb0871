"""Agent records -> migwatch.v1 messages. Pure; the only place that builds protos."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from migwatch.agent.estimate.drain import DrainEntry, DrainEstimate
from migwatch.agent.model import (
    Action,
    Convergence,
    Direction,
    DomainFacts,
    EtaBasis,
    HostState,
    Limits,
    Migration,
    Phase,
    Prediction,
    Recommendation,
    Transfer,
)
from migwatch.v1 import migwatch_pb2 as pb

_PHASE = {
    Phase.SETUP: pb.PHASE_SETUP,
    Phase.DISK_MIRROR: pb.PHASE_DISK_MIRROR,
    Phase.PRECOPY: pb.PHASE_PRECOPY,
    Phase.POSTCOPY: pb.PHASE_POSTCOPY,
    Phase.PAUSED: pb.PHASE_PAUSED,
    Phase.COMPLETED: pb.PHASE_COMPLETED,
    Phase.FAILED: pb.PHASE_FAILED,
    Phase.CANCELLED: pb.PHASE_CANCELLED,
}
_DIRECTION = {
    Direction.OUTGOING: pb.DIRECTION_OUTGOING,
    Direction.INCOMING: pb.DIRECTION_INCOMING,
}
_CONVERGENCE = {
    Convergence.UNKNOWN: pb.CONVERGENCE_UNSPECIFIED,
    Convergence.CONVERGING: pb.CONVERGENCE_CONVERGING,
    Convergence.SLOW: pb.CONVERGENCE_SLOW,
    Convergence.STALLED: pb.CONVERGENCE_STALLED,
    Convergence.NOT_CONVERGING: pb.CONVERGENCE_NOT_CONVERGING,
}
_BASIS = {
    EtaBasis.UNKNOWN: pb.ETA_BASIS_UNSPECIFIED,
    EtaBasis.DEFAULT: pb.ETA_BASIS_DEFAULT,
    EtaBasis.PREFLIGHT: pb.ETA_BASIS_PREFLIGHT,
    EtaBasis.LIVE: pb.ETA_BASIS_LIVE,
}
_ACTION = {
    Action.RAISE_MAX_DOWNTIME: pb.RECOMMENDED_ACTION_RAISE_MAX_DOWNTIME,
    Action.RAISE_BANDWIDTH: pb.RECOMMENDED_ACTION_RAISE_BANDWIDTH,
    Action.POST_COPY: pb.RECOMMENDED_ACTION_POST_COPY,
    Action.PAUSE: pb.RECOMMENDED_ACTION_PAUSE,
    Action.ABORT: pb.RECOMMENDED_ACTION_ABORT,
}
_HOST_STATE = {HostState.OK: pb.HOST_STATE_OK, HostState.DEGRADED: pb.HOST_STATE_DEGRADED}


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(max(0.0, seconds) * 1e9))
    return d


def timestamp(unix_s: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(round(unix_s * 1e9))
    return t


def transfer_to_pb(t: Transfer) -> pb.Transfer:
    return pb.Transfer(
        total_bytes=max(0, t.total_bytes),
        processed_bytes=max(0, t.processed_bytes),
        remaining_bytes=max(0, t.remaining_bytes),
        bytes_per_second=max(0, t.bytes_per_second),
        fraction_done=t.fraction_done,
    )


def recommendation_to_pb(r: Recommendation) -> pb.Recommendation:
    msg = pb.Recommendation(action=_ACTION[r.action], summary=r.summary)
    if r.max_downtime_s is not None:
        msg.max_downtime.CopyFrom(duration(r.max_downtime_s))
    if r.max_bandwidth_bps is not None:
        msg.max_bandwidth = max(0, int(r.max_bandwidth_bps))
    if r.predicted_eta_s is not None:
        msg.predicted_eta.CopyFrom(duration(r.predicted_eta_s))
    return msg


def migration_to_pb(m: Migration) -> pb.Migration:
    msg = pb.Migration(
        id=m.id,
        domain_uuid=m.domain_uuid,
        domain_name=m.domain_name,
        source_host=m.source_host,
        destination_host=m.destination_host,
        direction=_DIRECTION[m.direction],
        phase=_PHASE[m.phase],
        memory=transfer_to_pb(m.memory),
        disk=transfer_to_pb(m.disk),
        dirty_rate_bytes_per_second=max(0, m.dirty_rate_bps),
        iteration=max(0, m.iteration),
        convergence=_CONVERGENCE[m.convergence],
        convergence_reason=m.convergence_reason,
        max_downtime=duration(m.limits.max_downtime_s),
        max_bandwidth=m.limits.max_bandwidth_bps or 0,
        error_message=m.error_message,
        sequence=m.sequence,
        agent_host=m.agent_host,
        backend=m.backend,
        recommendations=[recommendation_to_pb(r) for r in m.recommendations],
        eta_basis=_BASIS[m.eta_basis],
        postcopy_allowed=m.limits.postcopy_allowed,
        auto_converge_throttle_percent=m.auto_converge_throttle or 0,
        postcopy_requests=m.postcopy_requests,
    )
    # Unknown stays unset: a zero Duration would claim "done now".
    for name, seconds in (
        ("elapsed", m.elapsed_s),
        ("eta", m.eta_s),
        ("eta_low", m.eta_low_s),
        ("eta_high", m.eta_high_s),
        ("expected_downtime", m.expected_downtime_s),
        ("actual_downtime", m.actual_downtime_s),
    ):
        if seconds is not None:
            getattr(msg, name).CopyFrom(duration(seconds))
    for name, unix_s in (
        ("started_at", m.started_at),
        ("updated_at", m.updated_at),
        ("finished_at", m.finished_at),
    ):
        if unix_s is not None:
            getattr(msg, name).CopyFrom(timestamp(unix_s))
    return msg


def prediction_to_pb(
    facts: DomainFacts, prediction: Prediction, limits: Limits, disk_bytes: int, now: float
) -> pb.EstimateMigrationResponse:
    est = prediction.estimate
    msg = pb.EstimateMigrationResponse(
        domain_uuid=facts.domain_uuid,
        domain_name=facts.domain_name,
        convergence=_CONVERGENCE[est.convergence],
        reason=est.reason,
        recommendations=[recommendation_to_pb(r) for r in est.recommendations],
        memory_bytes=facts.memory_bytes,
        disk_bytes=disk_bytes,
        bandwidth=limits.max_bandwidth_bps or 0,
        max_downtime=duration(limits.max_downtime_s),
        dirty_rate_bytes_per_second=int(prediction.dirty_rate_bps or 0),
        hot_set_bytes=int(prediction.hot_set_bytes or 0),
        basis=_BASIS[est.basis],
    )
    for name, seconds in (
        ("duration", est.eta_s),
        ("duration_low", est.eta_low_s),
        ("duration_high", est.eta_high_s),
    ):
        if seconds is not None and seconds != float("inf"):
            getattr(msg, name).CopyFrom(duration(seconds))
    if facts.preflight is not None:
        msg.measured_at.CopyFrom(timestamp(facts.preflight.measured_at))
        msg.measurement_age.CopyFrom(duration(now - facts.preflight.measured_at))
    return msg


def _set_duration(msg: object, field: str, seconds: float | None) -> None:
    """Set a Duration field, leaving it unset for unknown or unbounded."""
    if seconds is not None and seconds != float("inf"):
        getattr(msg, field).CopyFrom(duration(seconds))


def _drain_entry_to_pb(e: DrainEntry) -> pb.EvacuationEntry:
    msg = pb.EvacuationEntry(
        domain_uuid=e.domain_uuid,
        domain_name=e.domain_name,
        in_flight=e.in_flight,
        planned=e.planned,
        convergence=_CONVERGENCE[e.convergence],
        reason=e.reason,
        recommendations=[recommendation_to_pb(r) for r in e.recommendations],
        basis=_BASIS[e.basis],
        bandwidth=e.bandwidth_bps,
        order=e.order,
        post_copy_applied=e.post_copy_applied,
    )
    _set_duration(msg, "start_offset", e.start_s)
    _set_duration(msg, "measurement_age", e.measurement_age_s)
    if e.duration is not None:
        _set_duration(msg, "duration", e.duration.central)
        _set_duration(msg, "duration_low", e.duration.low)
        _set_duration(msg, "duration_high", e.duration.high)
    return msg


def drain_to_pb(host: str, d: DrainEstimate) -> pb.EstimateEvacuationResponse:
    msg = pb.EstimateEvacuationResponse(
        host=host,
        empties=d.empties,
        entries=[_drain_entry_to_pb(e) for e in d.entries],
        order=d.order,
        blocking_domains=d.blocking,
        unmeasured_domains=d.unmeasured,
        concurrency=d.options.concurrency,
        link_bandwidth=d.options.link_bandwidth_bps or 0,
        order_given=d.options.order_given,
        band_method=d.band_method,
    )
    _set_duration(msg, "total", d.total.central)
    _set_duration(msg, "total_low", d.total.low)
    _set_duration(msg, "total_high", d.total.high)
    _set_duration(msg, "oldest_measurement_age", d.oldest_measurement_age_s)
    _set_duration(msg, "newest_measurement_age", d.newest_measurement_age_s)
    return msg


def agent_status_to_pb(
    host: str, backend: str, state: HostState, message: str, version: str
) -> pb.AgentStatus:
    return pb.AgentStatus(
        host=host, backend=backend, state=_HOST_STATE[state], message=message, version=version
    )


# -- migwatch.v1 -> agent records: the inverse, for the on-disk store ---------------
_PHASE_BACK = {v: k for k, v in _PHASE.items()}
_DIRECTION_BACK = {v: k for k, v in _DIRECTION.items()}
_CONVERGENCE_BACK = {v: k for k, v in _CONVERGENCE.items()}
_BASIS_BACK = {v: k for k, v in _BASIS.items()}
_ACTION_BACK = {v: k for k, v in _ACTION.items()}


def _seconds(msg: pb.Migration | pb.Recommendation, name: str) -> float | None:
    if not msg.HasField(name):
        return None
    value: Duration | Timestamp = getattr(msg, name)
    return value.ToNanoseconds() / 1e9


def _transfer_from_pb(t: pb.Transfer) -> Transfer:
    return Transfer(
        total_bytes=t.total_bytes,
        processed_bytes=t.processed_bytes,
        remaining_bytes=t.remaining_bytes,
        bytes_per_second=t.bytes_per_second,
        fraction_done=t.fraction_done,
    )


def migration_from_pb(msg: pb.Migration) -> Migration:
    """The record a message was built from (``migration_to_pb`` round-trips)."""
    return Migration(
        id=msg.id,
        domain_uuid=msg.domain_uuid,
        domain_name=msg.domain_name,
        source_host=msg.source_host,
        destination_host=msg.destination_host,
        direction=_DIRECTION_BACK[msg.direction],
        phase=_PHASE_BACK[msg.phase],
        backend=msg.backend,
        agent_host=msg.agent_host,
        memory=_transfer_from_pb(msg.memory),
        disk=_transfer_from_pb(msg.disk),
        dirty_rate_bps=msg.dirty_rate_bytes_per_second,
        iteration=msg.iteration,
        elapsed_s=_seconds(msg, "elapsed"),
        eta_s=_seconds(msg, "eta"),
        eta_low_s=_seconds(msg, "eta_low"),
        eta_high_s=_seconds(msg, "eta_high"),
        eta_basis=_BASIS_BACK[msg.eta_basis],
        convergence=_CONVERGENCE_BACK[msg.convergence],
        convergence_reason=msg.convergence_reason,
        recommendations=tuple(
            Recommendation(
                action=_ACTION_BACK[r.action],
                summary=r.summary,
                max_downtime_s=_seconds(r, "max_downtime"),
                max_bandwidth_bps=r.max_bandwidth or None,
                predicted_eta_s=_seconds(r, "predicted_eta"),
            )
            for r in msg.recommendations
        ),
        expected_downtime_s=_seconds(msg, "expected_downtime"),
        actual_downtime_s=_seconds(msg, "actual_downtime"),
        limits=Limits(
            max_downtime_s=_seconds(msg, "max_downtime") or 0.0,
            max_bandwidth_bps=msg.max_bandwidth or None,
            postcopy_allowed=msg.postcopy_allowed,
        ),
        started_at=_seconds(msg, "started_at"),
        updated_at=_seconds(msg, "updated_at"),
        finished_at=_seconds(msg, "finished_at"),
        error_message=msg.error_message,
        auto_converge_throttle=msg.auto_converge_throttle_percent or None,
        postcopy_requests=msg.postcopy_requests,
        sequence=msg.sequence,
    )
