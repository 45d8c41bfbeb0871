"""The migwatch.v1.MigrationService implementation: validation, then delegation.

Every refusal leaves through ``_abort``, which sends a google.rpc.Status with a
``BadRequest`` detail where a field was wrong, so clients written from the proto
alone get a status code and a message that says what to fix.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from migwatch.agent.core.convert import drain_to_pb, migration_to_pb, prediction_to_pb
from migwatch.agent.core.hub import Filter, Hub, HubClosed, SubscriberLimitReached
from migwatch.agent.core.monitor import Monitor
from migwatch.agent.errors import BackendUnavailable, ControlError, ControlRefused, MigrationGone
from migwatch.agent.estimate.drain import DrainEstimate, DrainOptions, NoBandwidth, estimate_drain
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.prediction import predict_migration
from migwatch.agent.model import MIB, DomainFacts, Migration
from migwatch.agent.serve.service import SERVICE_NAME
from migwatch.v1 import migwatch_pb2 as pb

_ID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\.(out|in)\.\d+$"
)
_ID_EXAMPLE = "a1823c35-4213-4f58-9463-51fe8ccabbf6.out.1795598854580"
_DEFAULT_HEARTBEAT_S = 5.0
#: Why a watch stream ends, or is refused, while the agent stops (UNAVAILABLE: clients retry).
SHUTTING_DOWN = "agent is shutting down, reconnect"
_MIN_HEARTBEAT_S, _MAX_HEARTBEAT_S = 0.1, 300.0
_MIN_DOWNTIME_S, _MAX_DOWNTIME_S = 0.001, 3600.0
_MIN_BANDWIDTH = MIB
_MAX_CONCURRENCY = 64  # far above nova's useful range; a typo like 1000 is refused
# The band's draws use one fixed seed: the same host state gives the same answer, so a
# re-call mid-drain changes only because the drain moved, never by sampling noise.
_EVACUATION_SEED = 20

_STATUS_BY_ERROR: list[tuple[type[ControlError], grpc.StatusCode]] = [
    (MigrationGone, grpc.StatusCode.NOT_FOUND),
    (ControlRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
]


class _FieldError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    field: str | None = None,
) -> NoReturn:
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message)
    if field is not None:
        detail = any_pb2.Any()
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
                ]
            )
        )
        status.details.append(detail)
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _check_id(value: str) -> str:
    if not value:
        raise _FieldError(
            "id", f"id is empty: pass a migration id from ListMigrations, like {_ID_EXAMPLE!r}"
        )
    if not _ID_PATTERN.match(value):
        raise _FieldError(
            "id",
            f"id {value!r} is not a migration id: ids look like {_ID_EXAMPLE!r} "
            "(domain UUID, direction, start in ms); take one from ListMigrations",
        )
    return value


def _check_filter(domain_uuid: str, domain_name: str, include_finished: bool) -> Filter:
    if domain_uuid:
        try:
            domain_uuid = str(uuid.UUID(domain_uuid))
        except ValueError:
            raise _FieldError(
                "domain_uuid",
                f"domain_uuid {domain_uuid!r} is not a UUID: give one like "
                "'a1823c35-4213-4f58-9463-51fe8ccabbf6', or leave it empty for all domains",
            ) from None
    return Filter(domain_uuid, domain_name, include_finished)


def _heartbeat_seconds(request: pb.WatchMigrationsRequest) -> float:
    if not request.HasField("heartbeat_interval"):
        return _DEFAULT_HEARTBEAT_S
    seconds = request.heartbeat_interval.ToNanoseconds() / 1e9
    if not _MIN_HEARTBEAT_S <= seconds <= _MAX_HEARTBEAT_S:
        raise _FieldError(
            "heartbeat_interval",
            f"heartbeat_interval {seconds:g}s is out of range: give {_MIN_HEARTBEAT_S:g}s "
            f"to {_MAX_HEARTBEAT_S:g}s, or leave it unset for {_DEFAULT_HEARTBEAT_S:g}s",
        )
    return seconds


def _max_downtime(
    request: pb.UpdateMigrationLimitsRequest
    | pb.EstimateMigrationRequest
    | pb.EstimateEvacuationRequest,
) -> float | None:
    """The request's max_downtime in seconds, None when unset; checked against 1 ms..1 h."""
    if not request.HasField("max_downtime"):
        return None
    seconds = request.max_downtime.ToNanoseconds() / 1e9
    if not _MIN_DOWNTIME_S <= seconds <= _MAX_DOWNTIME_S:
        raise _FieldError(
            "max_downtime", f"max_downtime {seconds:g}s is out of range: give 1ms to 1h"
        )
    return seconds


def _bandwidth(value: int, field: str) -> int:
    if value < _MIN_BANDWIDTH:
        raise _FieldError(
            field,
            f"{field} {value} B/s is below 1 MiB/s ({_MIN_BANDWIDTH} B/s); "
            "it is in bytes per second",
        )
    return value


def _drain_options(request: pb.EstimateEvacuationRequest) -> DrainOptions:
    """The request's drain options, checked; raises _FieldError saying what to fix."""
    concurrency = request.concurrency if request.HasField("concurrency") else 1
    if not 1 <= concurrency <= _MAX_CONCURRENCY:
        raise _FieldError(
            "concurrency",
            f"concurrency {concurrency} is out of range: give the number of migrations run at"
            f" a time, 1 to {_MAX_CONCURRENCY} (nova's max_concurrent_live_migrations), or"
            " leave it unset for 1",
        )
    names = [d.strip() for d in request.domains]
    if any(not d for d in names):
        raise _FieldError(
            "domains",
            "domains has an empty entry: give UUIDs or names, or leave domains empty for "
            "every guest on the host",
        )
    repeated = sorted({d for d in names if names.count(d) > 1})
    if repeated:
        raise _FieldError(
            "domains",
            f"domains names {', '.join(repeated)} more than once: give each guest once, in "
            "the order to start them",
        )
    return DrainOptions(
        concurrency=concurrency,
        bandwidth_bps=(
            _bandwidth(request.bandwidth, "bandwidth") if request.HasField("bandwidth") else None
        ),
        max_downtime_s=_max_downtime(request),
        auto_converge=request.auto_converge,
        post_copy=request.post_copy,
        link_bandwidth_bps=(
            _bandwidth(request.link_bandwidth, "link_bandwidth")
            if request.HasField("link_bandwidth")
            else None
        ),
        order_given=bool(names),
    )


def _estimate_drain(
    guests: list[DomainFacts],
    in_flight: list[Migration],
    options: DrainOptions,
    config_for: Callable[[int | None, float | None], EstimatorConfig],
    now: float,
) -> DrainEstimate:
    """``drain.estimate_drain`` with the servicer's seed; a guest without a bandwidth to
    predict with is the request's to fix."""
    try:
        return estimate_drain(
            guests, in_flight, options, config_for, now, random.Random(_EVACUATION_SEED)
        )
    except NoBandwidth as exc:
        raise _FieldError("bandwidth", str(exc)) from exc


class MigrationServicer:
    """Thin: checks requests, asks the monitor and hub, maps errors to statuses."""

    def __init__(self, monitor: Monitor, hub: Hub, clock_unix: Any) -> None:
        self._monitor = monitor
        self._hub = hub
        self._clock = clock_unix

    # -- streams -------------------------------------------------------------------
    async def WatchMigrations(
        self, request: pb.WatchMigrationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """Yields pre-serialized WatchMigrationsResponse bytes (see ``generic_handler``)."""
        await _well_formed(request, context)
        try:
            flt = _check_filter(request.domain_uuid, request.domain_name, request.include_finished)
            heartbeat_s = _heartbeat_seconds(request)
        except _FieldError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        try:
            snapshot, sub = self._hub.subscribe(flt)
            # Taken with the snapshot: updates published while it is being sent
            # come after the marker and must number above it.
            snapshot_sequence = self._hub.sequence
        except SubscriberLimitReached as exc:  # overload: retry later
            await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except HubClosed:  # shutdown: another agent (or this one restarted) will answer
            await _abort(context, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        # Unsubscribe in finally and let CancelledError propagate: swallowing it
        # in a grpc.aio streaming handler leaks the call (grpc#43360).
        try:
            for update in snapshot:
                yield update.payload
            yield pb.WatchMigrationsResponse(
                snapshot_complete=pb.SnapshotComplete(
                    migration_count=len(snapshot) - 1, sequence=snapshot_sequence
                )
            ).SerializeToString()
            while True:
                batch = await sub.next_batch(heartbeat_s)
                for update in batch:
                    yield update.payload
                if sub.overflowed:
                    await _abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "this stream fell too far behind and was closed; reconnect "
                        "with include_finished to re-sync",
                    )
                if sub.closed:
                    await _abort(context, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
                if not batch:
                    yield self._heartbeat()
        finally:
            self._hub.unsubscribe(sub)

    def _heartbeat(self) -> bytes:
        now = Timestamp()
        now.FromNanoseconds(round(self._clock() * 1e9))
        return pb.WatchMigrationsResponse(
            heartbeat=pb.Heartbeat(time=now, sequence=self._hub.sequence)
        ).SerializeToString()

    # -- unary ---------------------------------------------------------------------
    async def ListMigrations(
        self, request: pb.ListMigrationsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListMigrationsResponse:
        await _well_formed(request, context)
        try:
            flt = _check_filter(request.domain_uuid, request.domain_name, request.include_finished)
        except _FieldError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        return pb.ListMigrationsResponse(
            migrations=[migration_to_pb(m) for m in self._hub.matching(flt)],
            agent_status=self._hub.agent_status_pb(),
        )

    async def GetMigration(
        self, request: pb.GetMigrationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetMigrationResponse:
        await _well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        m = self._hub.get(migration_id)
        if m is None:
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no migration with id {migration_id!r} on {self._monitor.hub_host()} "
                "(finished ones are kept for the agent's retention); ListMigrations "
                "with include_finished shows the ids",
            )
        return pb.GetMigrationResponse(migration=migration_to_pb(m))

    async def AbortMigration(
        self, request: pb.AbortMigrationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.AbortMigrationResponse:
        await _well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        try:
            m = await self._monitor.abort(migration_id)
        except ControlError as exc:
            await self._control_failed(exc, context)
        return pb.AbortMigrationResponse(migration=migration_to_pb(m))

    async def ForceCompleteMigration(
        self,
        request: pb.ForceCompleteMigrationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ForceCompleteMigrationResponse:
        await _well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        try:
            m, by_postcopy = await self._monitor.force_complete(migration_id)
        except ControlError as exc:
            await self._control_failed(exc, context)
        return pb.ForceCompleteMigrationResponse(
            migration=migration_to_pb(m),
            method=(
                pb.FORCE_COMPLETE_METHOD_POST_COPY
                if by_postcopy
                else pb.FORCE_COMPLETE_METHOD_PAUSE
            ),
        )

    async def UpdateMigrationLimits(
        self,
        request: pb.UpdateMigrationLimitsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.UpdateMigrationLimitsResponse:
        await _well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        try:
            downtime_s = _max_downtime(request)
            bandwidth = (
                _bandwidth(request.max_bandwidth, "max_bandwidth")
                if request.HasField("max_bandwidth")
                else None
            )
        except _FieldError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        if downtime_s is None and bandwidth is None:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "nothing to change: set max_downtime, max_bandwidth, or both",
                "max_downtime",
            )
        try:
            m = await self._monitor.update_limits(migration_id, downtime_s, bandwidth)
        except ControlError as exc:
            await self._control_failed(exc, context)
        return pb.UpdateMigrationLimitsResponse(migration=migration_to_pb(m))

    async def EstimateMigration(
        self,
        request: pb.EstimateMigrationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.EstimateMigrationResponse:
        await _well_formed(request, context)
        domain = request.domain_uuid or request.domain_name
        if not domain or (request.domain_uuid and request.domain_name):
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "name the domain by domain_uuid or by domain_name (exactly one)",
                "domain_uuid",
            )
        # Arguments are checked before asking the hypervisor anything.
        try:
            downtime_s = _max_downtime(request)
            bandwidth = (
                _bandwidth(request.bandwidth, "bandwidth")
                if request.HasField("bandwidth")
                else None
            )
        except _FieldError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        try:
            facts = await self._monitor.describe(domain)
        except ControlError as exc:
            await self._control_failed(exc, context)
        limits = self._monitor.tracker.policy.apply(facts.limits)
        if bandwidth is not None:
            limits = replace(limits, max_bandwidth_bps=bandwidth)
        if downtime_s is not None:
            limits = replace(limits, max_downtime_s=downtime_s)
        if not limits.max_bandwidth_bps:
            await _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{facts.domain_name} has no migration bandwidth limit, so there is no rate "
                "to predict with: pass bandwidth (bytes per second)",
                "bandwidth",
            )
        disk = facts.disk_bytes if request.copy_storage else 0
        config = self._monitor.tracker.config_for(facts.resident_overhead_bytes)
        prediction = predict_migration(
            facts.memory_bytes,
            disk,
            facts.preflight,
            limits,
            config,
            resident_bytes=facts.resident_bytes,
            # The host's declared policy says auto-converge even when the request does not.
            auto_converge=request.auto_converge or limits.auto_converge,
        )
        return prediction_to_pb(facts, prediction, limits, disk, self._clock())

    async def EstimateEvacuation(
        self,
        request: pb.EstimateEvacuationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.EstimateEvacuationResponse:
        await _well_formed(request, context)
        try:
            options = _drain_options(request)  # checked before asking the hypervisor anything
            guests = await self._evacuation_guests(
                [d.strip() for d in request.domains], request.allow_departed
            )
            # Off the event loop: the band's draws take tens of ms on a host of 100 guests.
            drain = await asyncio.to_thread(
                _estimate_drain,
                guests,
                self._monitor.outgoing(),
                options,
                self._monitor.tracker.config_for,
                self._clock(),
            )
        except _FieldError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        except ControlError as exc:
            await self._control_failed(exc, context)
        return drain_to_pb(self._monitor.hub_host(), drain)

    async def _evacuation_guests(self, named: list[str], departed_ok: bool) -> list[DomainFacts]:
        """The guests to move; a named guest that is not here is the request's fault, unless
        the caller said named guests may have left."""
        try:
            guests = await self._monitor.guests(named, skip_departed=departed_ok)
        except MigrationGone as exc:
            raise _FieldError("domains", f"domains: {exc}") from exc
        if named and len({f.domain_uuid for f in guests}) < len(guests):
            raise _FieldError(
                "domains",
                "domains names the same guest twice (by UUID and by name): give each once",
            )
        return guests

    # -- helpers -------------------------------------------------------------------
    async def _valid_id(self, value: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        try:
            return _check_id(value)
        except _FieldError as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)

    async def _control_failed(
        self, exc: ControlError, context: grpc.aio.ServicerContext[Any, Any]
    ) -> NoReturn:
        for cls, code in _STATUS_BY_ERROR:
            if isinstance(exc, cls):
                await _abort(context, code, str(exc))
        await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))


@dataclass(frozen=True, slots=True)
class _Malformed:
    """What a request deserializer returns for bytes that are not its message, so the
    call can be refused with INVALID_ARGUMENT (grpc would answer UNKNOWN)."""

    message_type: str
    error: str


def _parser(cls: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return _Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return parse


async def _well_formed(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(request, _Malformed):
        await _abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {request.message_type} message ({request.error}); "
            "build it from proto/migwatch/v1/migwatch.proto",
        )


def _identity(payload: bytes) -> bytes:
    return payload


def generic_handler(servicer: MigrationServicer) -> grpc.GenericRpcHandler:
    """The service's handlers; WatchMigrations streams bytes serialized once by the hub."""
    handlers = {
        "WatchMigrations": grpc.unary_stream_rpc_method_handler(
            servicer.WatchMigrations,
            request_deserializer=_parser(pb.WatchMigrationsRequest),
            response_serializer=_identity,
        ),
        "ListMigrations": grpc.unary_unary_rpc_method_handler(
            servicer.ListMigrations,
            request_deserializer=_parser(pb.ListMigrationsRequest),
            response_serializer=pb.ListMigrationsResponse.SerializeToString,
        ),
        "GetMigration": grpc.unary_unary_rpc_method_handler(
            servicer.GetMigration,
            request_deserializer=_parser(pb.GetMigrationRequest),
            response_serializer=pb.GetMigrationResponse.SerializeToString,
        ),
        "AbortMigration": grpc.unary_unary_rpc_method_handler(
            servicer.AbortMigration,
            request_deserializer=_parser(pb.AbortMigrationRequest),
            response_serializer=pb.AbortMigrationResponse.SerializeToString,
        ),
        "ForceCompleteMigration": grpc.unary_unary_rpc_method_handler(
            servicer.ForceCompleteMigration,
            request_deserializer=_parser(pb.ForceCompleteMigrationRequest),
            response_serializer=pb.ForceCompleteMigrationResponse.SerializeToString,
        ),
        "EstimateMigration": grpc.unary_unary_rpc_method_handler(
            servicer.EstimateMigration,
            request_deserializer=_parser(pb.EstimateMigrationRequest),
            response_serializer=pb.EstimateMigrationResponse.SerializeToString,
        ),
        "EstimateEvacuation": grpc.unary_unary_rpc_method_handler(
            servicer.EstimateEvacuation,
            request_deserializer=_parser(pb.EstimateEvacuationRequest),
            response_serializer=pb.EstimateEvacuationResponse.SerializeToString,
        ),
        "UpdateMigrationLimits": grpc.unary_unary_rpc_method_handler(
            servicer.UpdateMigrationLimits,
            request_deserializer=_parser(pb.UpdateMigrationLimitsRequest),
            response_serializer=pb.UpdateMigrationLimitsResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
