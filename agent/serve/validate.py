"""The checks of the RPCs' request fields: each returns the value to use or raises
``FieldError`` naming the field and saying what to give instead. Pure: no grpc, no clock.

Apart from the servicer because the rules (an id's shape, the ranges of heartbeat,
downtime, bandwidth and concurrency, the evacuation's list of guests) are the contract's,
not the RPCs' plumbing; the servicer turns a ``FieldError`` into INVALID_ARGUMENT with a
``BadRequest`` detail (``refusals.abort``).
"""

from __future__ import annotations

import re
import uuid

from migwatch.agent.core.hub import Filter
from migwatch.agent.estimate.drain import DrainOptions
from migwatch.agent.model import MIB
from migwatch.v1 import migwatch_pb2 as pb

_ID_PATTERN = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\.(out|in)\.\d+$"
)
_ID_EXAMPLE = "a1823c35-4213-4f58-9463-51fe8ccabbf6.out.1795598854580"
_DEFAULT_HEARTBEAT_S = 5.0
_MIN_HEARTBEAT_S, _MAX_HEARTBEAT_S = 0.1, 300.0
_MIN_DOWNTIME_S, _MAX_DOWNTIME_S = 0.001, 3600.0
_MIN_BANDWIDTH = MIB
_MAX_CONCURRENCY = 64  # far above nova's useful range; a typo like 1000 is refused


class FieldError(Exception):
    """A request field is wrong: ``field`` names it, the message says what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_id(value: str) -> str:
    if not value:
        raise FieldError(
            "id", f"id is empty: pass a migration id from ListMigrations, like {_ID_EXAMPLE!r}"
        )
    if not _ID_PATTERN.match(value):
        raise FieldError(
            "id",
            f"id {value!r} is not a migration id: ids look like {_ID_EXAMPLE!r} "
            "(domain UUID, direction, start in ms); take one from ListMigrations",
        )
    return value


def check_filter(domain_uuid: str, domain_name: str, include_finished: bool) -> Filter:
    if domain_uuid:
        try:
            domain_uuid = str(uuid.UUID(domain_uuid))
        except ValueError:
            raise FieldError(
                "domain_uuid",
                f"domain_uuid {domain_uuid!r} is not a UUID: give one like "
                "'a1823c35-4213-4f58-9463-51fe8ccabbf6', or leave it empty for all domains",
            ) from None
    return Filter(domain_uuid, domain_name, include_finished)


def heartbeat_seconds(request: pb.WatchMigrationsRequest) -> float:
    if not request.HasField("heartbeat_interval"):
        return _DEFAULT_HEARTBEAT_S
    seconds = request.heartbeat_interval.ToNanoseconds() / 1e9
    if not _MIN_HEARTBEAT_S <= seconds <= _MAX_HEARTBEAT_S:
        raise FieldError(
            "heartbeat_interval",
            f"heartbeat_interval {seconds:g}s is out of range: give {_MIN_HEARTBEAT_S:g}s "
            f"to {_MAX_HEARTBEAT_S:g}s, or leave it unset for {_DEFAULT_HEARTBEAT_S:g}s",
        )
    return seconds


def max_downtime(
    request: pb.UpdateMigrationLimitsRequest
    | pb.EstimateMigrationRequest
    | pb.EstimateEvacuationRequest,
) -> float | None:
    """The request's max_downtime in seconds, None when unset; checked against 1 ms..1 h."""
    if not request.HasField("max_downtime"):
        return None
    seconds = request.max_downtime.ToNanoseconds() / 1e9
    if not _MIN_DOWNTIME_S <= seconds <= _MAX_DOWNTIME_S:
        raise FieldError(
            "max_downtime", f"max_downtime {seconds:g}s is out of range: give 1ms to 1h"
        )
    return seconds


def check_bandwidth(value: int, field: str) -> int:
    if value < _MIN_BANDWIDTH:
        raise FieldError(
            field,
            f"{field} {value} B/s is below 1 MiB/s ({_MIN_BANDWIDTH} B/s); "
            "it is in bytes per second",
        )
    return value


def drain_options(request: pb.EstimateEvacuationRequest) -> DrainOptions:
    """The request's drain options, checked; raises FieldError saying what to fix."""
    concurrency = request.concurrency if request.HasField("concurrency") else 1
    if not 1 <= concurrency <= _MAX_CONCURRENCY:
        raise FieldError(
            "concurrency",
            f"concurrency {concurrency} is out of range: give the number of migrations run at"
            f" a time, 1 to {_MAX_CONCURRENCY} (nova's max_concurrent_live_migrations), or"
            " leave it unset for 1",
        )
    names = [d.strip() for d in request.domains]
    if any(not d for d in names):
        raise FieldError(
            "domains",
            "domains has an empty entry: give UUIDs or names, or leave domains empty for "
            "every guest on the host",
        )
    repeated = sorted({d for d in names if names.count(d) > 1})
    if repeated:
        raise FieldError(
            "domains",
            f"domains names {', '.join(repeated)} more than once: give each guest once, in "
            "the order to start them",
        )
    return DrainOptions(
        concurrency=concurrency,
        bandwidth_bps=(
            check_bandwidth(request.bandwidth, "bandwidth")
            if request.HasField("bandwidth")
            else None
        ),
        max_downtime_s=max_downtime(request),
        auto_converge=request.auto_converge,
        post_copy=request.post_copy,
        link_bandwidth_bps=(
            check_bandwidth(request.link_bandwidth, "link_bandwidth")
            if request.HasField("link_bandwidth")
            else None
        ),
        order_given=bool(names),
        copy_storage=request.copy_storage,
    )
