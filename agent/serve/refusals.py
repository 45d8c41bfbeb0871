"""How the servicer refuses a call: the one translation of failures into gRPC statuses.

Every refusal leaves through ``abort``, which sends a google.rpc.Status with a
``BadRequest`` detail where a field was wrong, so clients written from the proto
alone get a status code and a message that says what to fix. The agent's errors map to
codes in ``STATUS_BY_ERROR`` (``control_failed``); bytes that are not the request's
message are marked ``Malformed`` by the deserializer (``parser``) and refused with
INVALID_ARGUMENT by ``well_formed``, where grpc alone would answer UNKNOWN.

Apart from the servicer so the RPCs read as validation then delegation, and the mapping
from errors to codes is in one short module (agent/errors.py draws the hierarchy).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from migwatch.agent.errors import BackendUnavailable, ControlError, ControlRefused, MigrationGone

STATUS_BY_ERROR: list[tuple[type[ControlError], grpc.StatusCode]] = [
    (MigrationGone, grpc.StatusCode.NOT_FOUND),
    (ControlRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (BackendUnavailable, grpc.StatusCode.UNAVAILABLE),
]


async def abort(
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


async def control_failed(
    exc: ControlError, context: grpc.aio.ServicerContext[Any, Any]
) -> NoReturn:
    """Refuse the call with the status ``STATUS_BY_ERROR`` gives ``exc``'s class."""
    for cls, code in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            await abort(context, code, str(exc))
    await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))


@dataclass(frozen=True, slots=True)
class Malformed:
    """What a request deserializer returns for bytes that are not its message, so the
    call can be refused with INVALID_ARGUMENT (grpc would answer UNKNOWN)."""

    message_type: str
    error: str


def parser(cls: Any) -> Callable[[bytes], Any]:
    """The request deserializer for message class ``cls``: ``Malformed`` instead of raising."""

    def parse(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Malformed(cls.DESCRIPTOR.full_name, str(exc))

    return parse


async def well_formed(request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(request, Malformed):
        await abort(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {request.message_type} message ({request.error}); "
            "build it from proto/migwatch/v1/migwatch.proto",
        )
