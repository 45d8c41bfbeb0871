"""The migwatch.v1.MigrationService implementation: validation, then delegation.

Each RPC checks its request (``validate``), asks the monitor or the hub, and refuses
through ``refusals`` (the one translation of errors into statuses, each with a message
that says what to fix). ``generic_handler`` registers the RPCs; WatchMigrations streams
the bytes the hub serialized once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from migwatch.agent.core.convert import drain_to_pb, migration_to_pb, prediction_to_pb
from migwatch.agent.core.hub import Hub, HubClosed, SubscriberLimitReached
from migwatch.agent.core.monitor import Monitor
from migwatch.agent.errors import ControlError, MigrationGone
from migwatch.agent.estimate.drain import DrainEstimate, DrainOptions, NoBandwidth, estimate_drain
from migwatch.agent.estimate.etaconfig import EstimatorConfig
from migwatch.agent.estimate.prediction import predict_migration
from migwatch.agent.model import DomainFacts, Migration
from migwatch.agent.serve.refusals import abort, control_failed, parser, well_formed
from migwatch.agent.serve.service import SERVICE_NAME
from migwatch.agent.serve.validate import (
    FieldError,
    check_bandwidth,
    check_filter,
    check_id,
    drain_options,
    heartbeat_seconds,
    max_downtime,
)
from migwatch.v1 import migwatch_pb2 as pb

#: Why a watch stream ends, or is refused, while the agent stops (UNAVAILABLE: clients retry).
SHUTTING_DOWN = "agent is shutting down, reconnect"
# The band's draws use one fixed seed: the same host state gives the same answer, so a
# re-call mid-drain changes only because the drain moved, never by sampling noise.
_EVACUATION_SEED = 20


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
        raise FieldError("bandwidth", str(exc)) from exc


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
        await well_formed(request, context)
        try:
            flt = check_filter(request.domain_uuid, request.domain_name, request.include_finished)
            heartbeat_s = heartbeat_seconds(request)
        except FieldError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        try:
            snapshot, sub = self._hub.subscribe(flt)
            # Taken with the snapshot: updates published while it is being sent
            # come after the marker and must number above it.
            snapshot_sequence = self._hub.sequence
        except SubscriberLimitReached as exc:  # overload: retry later
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except HubClosed:  # shutdown: another agent (or this one restarted) will answer
            await abort(context, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
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
                    await abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        "this stream fell too far behind and was closed; reconnect "
                        "with include_finished to re-sync",
                    )
                if sub.closed:
                    await abort(context, grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
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
        await well_formed(request, context)
        try:
            flt = check_filter(request.domain_uuid, request.domain_name, request.include_finished)
        except FieldError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        return pb.ListMigrationsResponse(
            migrations=[migration_to_pb(m) for m in self._hub.matching(flt)],
            agent_status=self._hub.agent_status_pb(),
        )

    async def GetMigration(
        self, request: pb.GetMigrationRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetMigrationResponse:
        await well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        m = self._hub.get(migration_id)
        if m is None:
            await abort(
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
        await well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        try:
            m = await self._monitor.abort(migration_id)
        except ControlError as exc:
            await control_failed(exc, context)
        return pb.AbortMigrationResponse(migration=migration_to_pb(m))

    async def ForceCompleteMigration(
        self,
        request: pb.ForceCompleteMigrationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.ForceCompleteMigrationResponse:
        await well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        try:
            m, by_postcopy = await self._monitor.force_complete(migration_id)
        except ControlError as exc:
            await control_failed(exc, context)
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
        await well_formed(request, context)
        migration_id = await self._valid_id(request.id, context)
        try:
            downtime_s = max_downtime(request)
            bandwidth = (
                check_bandwidth(request.max_bandwidth, "max_bandwidth")
                if request.HasField("max_bandwidth")
                else None
            )
        except FieldError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        if downtime_s is None and bandwidth is None:
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "nothing to change: set max_downtime, max_bandwidth, or both",
                "max_downtime",
            )
        try:
            m = await self._monitor.update_limits(migration_id, downtime_s, bandwidth)
        except ControlError as exc:
            await control_failed(exc, context)
        return pb.UpdateMigrationLimitsResponse(migration=migration_to_pb(m))

    async def EstimateMigration(
        self,
        request: pb.EstimateMigrationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.EstimateMigrationResponse:
        await well_formed(request, context)
        domain = request.domain_uuid or request.domain_name
        if not domain or (request.domain_uuid and request.domain_name):
            await abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "name the domain by domain_uuid or by domain_name (exactly one)",
                "domain_uuid",
            )
        # Arguments are checked before asking the hypervisor anything.
        try:
            downtime_s = max_downtime(request)
            bandwidth = (
                check_bandwidth(request.bandwidth, "bandwidth")
                if request.HasField("bandwidth")
                else None
            )
        except FieldError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        try:
            facts = await self._monitor.describe(domain)
        except ControlError as exc:
            await control_failed(exc, context)
        limits = self._monitor.tracker.policy.apply(facts.limits)
        if bandwidth is not None:
            limits = replace(limits, max_bandwidth_bps=bandwidth)
        if downtime_s is not None:
            limits = replace(limits, max_downtime_s=downtime_s)
        if not limits.max_bandwidth_bps:
            await abort(
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
            free_bytes=facts.free_bytes,
            # The host's declared policy says auto-converge even when the request does not.
            auto_converge=request.auto_converge or limits.auto_converge,
        )
        return prediction_to_pb(facts, prediction, limits, disk, self._clock())

    async def EstimateEvacuation(
        self,
        request: pb.EstimateEvacuationRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.EstimateEvacuationResponse:
        await well_formed(request, context)
        try:
            options = drain_options(request)  # checked before asking the hypervisor anything
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
        except FieldError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)
        except ControlError as exc:
            await control_failed(exc, context)
        return drain_to_pb(self._monitor.hub_host(), drain)

    async def _evacuation_guests(self, named: list[str], departed_ok: bool) -> list[DomainFacts]:
        """The guests to move; a named guest that is not here is the request's fault, unless
        the caller said named guests may have left."""
        try:
            guests = await self._monitor.guests(named, skip_departed=departed_ok)
        except MigrationGone as exc:
            raise FieldError("domains", f"domains: {exc}") from exc
        if named and len({f.domain_uuid for f in guests}) < len(guests):
            raise FieldError(
                "domains",
                "domains names the same guest twice (by UUID and by name): give each once",
            )
        return guests

    # -- helpers -------------------------------------------------------------------
    async def _valid_id(self, value: str, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        try:
            return check_id(value)
        except FieldError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), exc.field)


def _identity(payload: bytes) -> bytes:
    return payload


def generic_handler(servicer: MigrationServicer) -> grpc.GenericRpcHandler:
    """The service's handlers; WatchMigrations streams bytes serialized once by the hub."""
    handlers = {
        "WatchMigrations": grpc.unary_stream_rpc_method_handler(
            servicer.WatchMigrations,
            request_deserializer=parser(pb.WatchMigrationsRequest),
            response_serializer=_identity,
        ),
        "ListMigrations": grpc.unary_unary_rpc_method_handler(
            servicer.ListMigrations,
            request_deserializer=parser(pb.ListMigrationsRequest),
            response_serializer=pb.ListMigrationsResponse.SerializeToString,
        ),
        "GetMigration": grpc.unary_unary_rpc_method_handler(
            servicer.GetMigration,
            request_deserializer=parser(pb.GetMigrationRequest),
            response_serializer=pb.GetMigrationResponse.SerializeToString,
        ),
        "AbortMigration": grpc.unary_unary_rpc_method_handler(
            servicer.AbortMigration,
            request_deserializer=parser(pb.AbortMigrationRequest),
            response_serializer=pb.AbortMigrationResponse.SerializeToString,
        ),
        "ForceCompleteMigration": grpc.unary_unary_rpc_method_handler(
            servicer.ForceCompleteMigration,
            request_deserializer=parser(pb.ForceCompleteMigrationRequest),
            response_serializer=pb.ForceCompleteMigrationResponse.SerializeToString,
        ),
        "EstimateMigration": grpc.unary_unary_rpc_method_handler(
            servicer.EstimateMigration,
            request_deserializer=parser(pb.EstimateMigrationRequest),
            response_serializer=pb.EstimateMigrationResponse.SerializeToString,
        ),
        "EstimateEvacuation": grpc.unary_unary_rpc_method_handler(
            servicer.EstimateEvacuation,
            request_deserializer=parser(pb.EstimateEvacuationRequest),
            response_serializer=pb.EstimateEvacuationResponse.SerializeToString,
        ),
        "UpdateMigrationLimits": grpc.unary_unary_rpc_method_handler(
            servicer.UpdateMigrationLimits,
            request_deserializer=parser(pb.UpdateMigrationLimitsRequest),
            response_serializer=pb.UpdateMigrationLimitsResponse.SerializeToString,
        ),
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
