"""Client errors. ``translate_errors`` is the one place that maps gRPC failures to them.

::

    MigwatchError               anything the client raises on purpose; .target, .code
    ├── AgentUnavailable        UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
    │                           CANCELLED by the peer, or no message within the
    │                           liveness bound: retry later
    ├── NotFound                NOT_FOUND: no such migration (any more) on that agent
    ├── InvalidArgument         INVALID_ARGUMENT, OUT_OF_RANGE: fix the request
    ├── FailedPrecondition      FAILED_PRECONDITION: valid, but not in this state
    │                           (e.g. aborting a finished or an incoming migration)
    ├── PermissionDenied        PERMISSION_DENIED: the caller's role may not do this
    │   └── Unauthenticated     UNAUTHENTICATED: no credentials, or ones the agent rejects
    └── AgentError              any other status: a bug or an internal agent failure

``str(exc)`` is one line naming the agent, fit for a CLI. Our own cancellation is
never translated: it stays ``asyncio.CancelledError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc


class MigwatchError(Exception):
    """Base class: an expected failure talking to an agent."""

    def __init__(self, target: str, message: str, code: str = "") -> None:
        super().__init__(f"{target}: {message}" if target else message)
        self.target = target  # the "host:port" the call went to
        self.message = message
        self.code = code  # the gRPC status name, e.g. "NOT_FOUND"; "" when not from gRPC


class AgentUnavailable(MigwatchError):
    """The agent cannot be reached, or stopped answering."""


class NotFound(MigwatchError):
    """The agent has no migration with that id."""


class InvalidArgument(MigwatchError):
    """The agent rejected the request's arguments."""


class FailedPrecondition(MigwatchError):
    """The request is valid but the migration's state forbids it."""


class PermissionDenied(MigwatchError):
    """The caller is not allowed to do this, or not authenticated."""


class Unauthenticated(PermissionDenied):
    """The agent wants credentials (a token, a client certificate) it did not get."""


class AgentError(MigwatchError):
    """The agent failed in an unexpected way (INTERNAL, UNIMPLEMENTED, ...)."""


_BY_CODE: dict[grpc.StatusCode, type[MigwatchError]] = {
    grpc.StatusCode.UNAVAILABLE: AgentUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: AgentUnavailable,
    grpc.StatusCode.CANCELLED: AgentUnavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: AgentUnavailable,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}

_PREFIX = {
    grpc.StatusCode.PERMISSION_DENIED: "permission denied: ",
    grpc.StatusCode.UNAUTHENTICATED: "not authenticated: ",
}

# Connection failures gRPC reports in OpenSSL's words, and what they mean here.
_TLS_FAILURES = (
    ("WRONG_VERSION_NUMBER", "TLS handshake failed: the agent serves plaintext, not TLS"),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "TLS handshake failed: the agent's certificate is not signed by the CA given (--ca)",
    ),
    (
        "Hostname Verification Check failed",
        "TLS handshake failed: the agent's certificate does not name the address dialled",
    ),
    (
        "Socket closed",
        "the agent closed the connection (does it want TLS, or a client certificate?)",
    ),
)


def _connect_failure(message: str) -> str:
    for needle, meaning in _TLS_FAILURES:
        if needle in message:
            return f"cannot connect: {meaning}"
    # gRPC's "failed to connect to all addresses; last error: UNKNOWN: ipv4:...:
    # Failed to connect to remote host: Connection refused" -> the last clause.
    return f"cannot connect: {message.rsplit(': ', 1)[-1]}"


def error_from_rpc(exc: grpc.aio.AioRpcError, target: str) -> MigwatchError:
    """The client error for a failed call to ``target``."""
    code = exc.code()
    details = (exc.details() or "").strip().splitlines()
    message = details[0] if details else code.name.lower().replace("_", " ")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = f"no answer in time ({message})"
    elif "failed to connect" in message.lower():
        message = _connect_failure(message)
    message = _PREFIX.get(code, "") + message
    cls = _BY_CODE.get(code, AgentError)
    return cls(target, message, code.name)


@contextmanager
def translate_errors(target: str) -> Iterator[None]:
    """Re-raise ``AioRpcError`` from the block as the matching ``MigwatchError``."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise error_from_rpc(exc, target) from exc
