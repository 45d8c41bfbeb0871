"""Fuzzed requests over every RPC's fields, and malformed bytes: the agent answers each
with a fitting status, never crashes, and keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from migwatch.v1 import migwatch_pb2 as pb

if TYPE_CHECKING:
    from tests.conftest import SpawnAgent

SERVICE = "/migwatch.v1.MigrationService/"
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a valid watch stream runs until our deadline
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

texts = st.one_of(
    st.text(max_size=80),
    st.uuids().map(str),
    st.builds(
        lambda u, d, ms: f"{u}.{d}.{ms}",
        st.uuids(),
        st.sampled_from(["out", "in", "x"]),
        st.integers(-1, 2**63),
    ),
)
durations = st.builds(
    lambda s, n: Duration(seconds=s, nanos=n),
    st.integers(-315_576_000_000, 315_576_000_000),
    st.integers(-999_999_999, 999_999_999),
)
uint64 = st.integers(0, 2**64 - 1)
uint32 = st.integers(0, 2**32 - 1)


def _maybe(msg: object, field: str, value: object | None) -> None:
    if value is None:
        return
    if isinstance(value, Duration):
        getattr(msg, field).CopyFrom(value)
    else:
        setattr(msg, field, value)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, bool]:
    """(method, serialized request, is it a stream) for any RPC with any field values."""
    kind = draw(st.sampled_from([
        "WatchMigrations", "ListMigrations", "GetMigration", "AbortMigration",
        "ForceCompleteMigration", "UpdateMigrationLimits", "EstimateMigration",
        "EstimateEvacuation",
    ]))  # fmt: skip
    msg: object
    if kind in ("WatchMigrations", "ListMigrations"):
        msg = getattr(pb, f"{kind}Request")(
            domain_uuid=draw(texts), domain_name=draw(texts), include_finished=draw(st.booleans())
        )
        if kind == "WatchMigrations":
            _maybe(msg, "heartbeat_interval", draw(st.none() | durations))
    elif kind == "UpdateMigrationLimits":
        msg = pb.UpdateMigrationLimitsRequest(id=draw(texts))
        _maybe(msg, "max_downtime", draw(st.none() | durations))
        _maybe(msg, "max_bandwidth", draw(st.none() | uint64))
    elif kind == "EstimateMigration":
        msg = pb.EstimateMigrationRequest(
            domain_uuid=draw(st.just("") | texts),
            domain_name=draw(st.sampled_from(["", "sim-converging", "sim-disk"]) | texts),
            copy_storage=draw(st.booleans()),
        )
        _maybe(msg, "bandwidth", draw(st.none() | uint64))
        _maybe(msg, "max_downtime", draw(st.none() | durations))
    elif kind == "EstimateEvacuation":
        msg = pb.EstimateEvacuationRequest(
            domains=draw(
                st.lists(st.sampled_from(["sim-converging", "sim-disk"]) | texts, max_size=3)
            ),
            auto_converge=draw(st.booleans()),
            post_copy=draw(st.booleans()),
            allow_departed=draw(st.booleans()),
        )
        for name, values in (
            ("concurrency", uint32),
            ("bandwidth", uint64),
            ("link_bandwidth", uint64),
        ):
            _maybe(msg, name, draw(st.none() | values))
        _maybe(msg, "max_downtime", draw(st.none() | durations))
    else:
        msg = getattr(pb, f"{kind}Request")(id=draw(texts))
    return kind, msg.SerializeToString(), kind == "WatchMigrations"  # type: ignore[attr-defined]


def _call(channel: grpc.Channel, method: str, payload: bytes, stream: bool) -> grpc.StatusCode:
    raw: Callable[[bytes], bytes] = lambda b: b
    try:
        if stream:
            stream_call = channel.unary_stream(
                SERVICE + method, request_serializer=raw, response_deserializer=raw
            )
            call = stream_call(payload, timeout=0.3)
            for _ in call:
                pass
        else:
            channel.unary_unary(SERVICE + method, request_serializer=raw,
                                response_deserializer=raw)(payload, timeout=5)  # fmt: skip
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


@pytest.fixture
def target(spawn_agent: SpawnAgent) -> str:
    return spawn_agent("--scenario", "converging", "--scenario", "not-converging").target


def test_fuzzed_fields_get_a_fitting_status(target: str) -> None:
    """Any values in any request's fields give OK, INVALID_ARGUMENT, NOT_FOUND or
    FAILED_PRECONDITION, never INTERNAL/UNKNOWN, and the agent keeps serving."""
    with grpc.insecure_channel(target) as channel:

        @FUZZ
        @given(requests())
        def check(request: tuple[str, bytes, bool]) -> None:
            method, payload, stream = request
            assert _call(channel, method, payload, stream) in EXPECTED, request

        check()
        assert _call(channel, "ListMigrations", b"", False) is grpc.StatusCode.OK


def test_malformed_bytes_are_invalid_argument(target: str) -> None:
    """Bytes that are not the request message get INVALID_ARGUMENT (or parse as some
    valid message); the agent keeps serving."""
    methods = [
        "WatchMigrations",
        "ListMigrations",
        "GetMigration",
        "AbortMigration",
        "ForceCompleteMigration",
        "UpdateMigrationLimits",
        "EstimateMigration",
        "EstimateEvacuation",
    ]
    with grpc.insecure_channel(target) as channel:
        for method in methods:
            code = _call(channel, method, b"\xff\xff\xff\xff", method == "WatchMigrations")
            assert code is grpc.StatusCode.INVALID_ARGUMENT, method

        @FUZZ
        @given(st.sampled_from(methods), st.binary(max_size=64))
        def check(method: str, payload: bytes) -> None:
            assert _call(channel, method, payload, method == "WatchMigrations") in EXPECTED

        check()
        assert _call(channel, "ListMigrations", b"", False) is grpc.StatusCode.OK
