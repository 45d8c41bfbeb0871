"""``AgentClient``: the calls of one agent's MigrationService, in client records.

Create it inside a running event loop, preferably as ``async with AgentClient(t) as c``.
Failed calls raise ``migwatch.client.errors.MigwatchError`` subclasses. For agents
with TLS and roles pass ``credentials=client_credentials(ca=..., cert=..., key=...)``
and/or ``token=...`` (sent as ``authorization: Bearer`` metadata on every call).
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncGenerator, Sequence
from types import TracebackType
from typing import Any, Self

import grpc
from migwatch.v1 import migwatch_pb2 as pb
from migwatch.v1 import migwatch_pb2_grpc as pb_grpc

from . import convert
from .auth import check_token
from .errors import translate_errors
from .model import (
    AgentStatus,
    EvacuationEstimate,
    ForceCompleteMethod,
    Migration,
    MigrationEstimate,
    WatchEvent,
)
from .targets import parse_target

ChannelOption = tuple[str, Any]

# gRPC keepalive: a dead peer or a silent partition is noticed on an idle channel
# too (ping every 20 s, fail after 10 s without an ack). Agents are configured to
# accept pings this often, also without calls in flight.
KEEPALIVE_OPTIONS: tuple[ChannelOption, ...] = (
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
)


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[ChannelOption] = (),
) -> grpc.aio.Channel:
    """A channel to ``target`` with keepalive; TLS when ``credentials`` are given."""
    opts = [*KEEPALIVE_OPTIONS, *options]
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=opts)
    return grpc.aio.secure_channel(target, credentials, options=opts)


class AgentClient:
    """A client for one agent.

    Args:
        target: the agent's ``host:port``.
        credentials: ``client_credentials(...)`` (or any ``grpc.ssl_channel_credentials``)
            for TLS; plaintext if ``None``.
        token: a bearer token for agents with a token file; sent with every call.
        timeout_s: deadline of each unary call.
        options: extra gRPC channel options, appended to the keepalive ones.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
        options: Sequence[ChannelOption] = (),
    ) -> None:
        self.target = parse_target(target)
        self.timeout_s = timeout_s
        # Metadata rather than call credentials: those gRPC sends over TLS only, and
        # a token over plaintext is fine to a loopback agent.
        self._metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"Bearer {check_token(token)}"),) if token else None
        )
        self._channel = open_channel(self.target, credentials, options)
        self._stub = pb_grpc.MigrationServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def list_with_status(
        self, *, domain_uuid: str = "", domain_name: str = "", include_finished: bool = False
    ) -> tuple[builtins.list[Migration], AgentStatus | None]:
        """The matching migrations (active first) and the agent's status."""
        req = pb.ListMigrationsRequest(
            domain_uuid=domain_uuid, domain_name=domain_name, include_finished=include_finished
        )
        with translate_errors(self.target):
            resp = await self._stub.ListMigrations(
                req, timeout=self.timeout_s, metadata=self._metadata
            )
        status = (
            convert.agent_status_from_pb(resp.agent_status)
            if resp.HasField("agent_status")
            else None
        )
        return [convert.migration_from_pb(m) for m in resp.migrations], status

    async def list(
        self, *, domain_uuid: str = "", domain_name: str = "", include_finished: bool = False
    ) -> builtins.list[Migration]:
        """The matching migrations on this agent, active first."""
        migrations, _ = await self.list_with_status(
            domain_uuid=domain_uuid, domain_name=domain_name, include_finished=include_finished
        )
        return migrations

    async def get(self, migration_id: str) -> Migration:
        """One migration by id; raises ``NotFound`` when the agent has none."""
        with translate_errors(self.target):
            resp = await self._stub.GetMigration(
                pb.GetMigrationRequest(id=migration_id),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
        return convert.migration_from_pb(resp.migration)

    async def abort(self, migration_id: str) -> Migration:
        """Cancel an active outgoing migration; the guest stays on the source."""
        with translate_errors(self.target):
            resp = await self._stub.AbortMigration(
                pb.AbortMigrationRequest(id=migration_id),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
        return convert.migration_from_pb(resp.migration)

    async def force_complete(self, migration_id: str) -> tuple[Migration, ForceCompleteMethod]:
        """Switch to post-copy where allowed, else pause the guest so the copy finishes."""
        with translate_errors(self.target):
            resp = await self._stub.ForceCompleteMigration(
                pb.ForceCompleteMigrationRequest(id=migration_id),
                timeout=self.timeout_s,
                metadata=self._metadata,
            )
        method = convert.force_complete_method_from_pb(resp.method)
        return convert.migration_from_pb(resp.migration), method

    async def set_limits(
        self,
        migration_id: str,
        *,
        max_downtime_s: float | None = None,
        max_bandwidth: int | None = None,
    ) -> Migration:
        """Change max downtime (seconds) and/or max bandwidth (bytes/s); ``None`` keeps it.

        Raises:
            ValueError: neither limit given.
        """
        if max_downtime_s is None and max_bandwidth is None:
            raise ValueError("set_limits needs max_downtime_s and/or max_bandwidth")
        req = convert.limits_request_pb(migration_id, max_downtime_s, max_bandwidth)
        with translate_errors(self.target):
            resp = await self._stub.UpdateMigrationLimits(
                req, timeout=self.timeout_s, metadata=self._metadata
            )
        return convert.migration_from_pb(resp.migration)

    async def estimate(
        self,
        domain: str,
        *,
        bandwidth: int | None = None,
        max_downtime_s: float | None = None,
        copy_storage: bool = False,
        auto_converge: bool = False,
    ) -> MigrationEstimate:
        """Predict a migration of a running domain (UUID or name) before starting it.

        ``bandwidth`` (bytes/s) and ``max_downtime_s`` default to the domain's current
        settings; ``copy_storage`` adds a copy of its disks (non-shared storage);
        ``auto_converge``: it would be started with QEMU's auto-converge.
        """
        req = convert.estimate_request_pb(
            domain, bandwidth, max_downtime_s, copy_storage, auto_converge
        )
        with translate_errors(self.target):
            resp = await self._stub.EstimateMigration(
                req, timeout=self.timeout_s, metadata=self._metadata
            )
        return convert.estimate_from_pb(resp)

    async def estimate_evacuation(
        self,
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
    ) -> EvacuationEstimate:
        """How long until this agent's host is empty: every running guest (or ``domains``,
        started in that order) migrated away, ``concurrency`` at a time (default 1).

        ``bandwidth`` (bytes/s per migration) and ``max_downtime_s`` default to each
        guest's current settings; ``link_bandwidth``: the migrations share one link of that
        capacity; ``auto_converge`` / ``post_copy``: how they will be started;
        ``copy_storage``: they also copy the guests' disks, first. Calling it
        again mid-drain re-plans from what is left; ``allow_departed`` then takes a named
        guest that has left as moved instead of refusing it.
        """
        req = convert.evacuation_request_pb(
            domains,
            concurrency=concurrency,
            bandwidth=bandwidth,
            max_downtime_s=max_downtime_s,
            auto_converge=auto_converge,
            post_copy=post_copy,
            link_bandwidth=link_bandwidth,
            allow_departed=allow_departed,
            copy_storage=copy_storage,
        )
        with translate_errors(self.target):
            resp = await self._stub.EstimateEvacuation(
                req, timeout=self.timeout_s, metadata=self._metadata
            )
        return convert.evacuation_from_pb(resp)

    async def watch(
        self,
        *,
        domain_uuid: str = "",
        domain_name: str = "",
        include_finished: bool = False,
        heartbeat_interval_s: float | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """One watch stream, without reconnects: an ``AgentStatus``, the snapshot's
        migrations, ``SnapshotComplete``, then changes and heartbeats until the agent
        ends the stream (the iterator stops) or fails (``MigwatchError``).

        For reconnects, re-syncs and liveness use ``Fleet.watch``.
        """
        req = pb.WatchMigrationsRequest(
            domain_uuid=domain_uuid, domain_name=domain_name, include_finished=include_finished
        )
        if heartbeat_interval_s is not None:
            req.heartbeat_interval.CopyFrom(convert.duration_pb(heartbeat_interval_s))
        call = self._stub.WatchMigrations(req, metadata=self._metadata)
        try:
            while True:
                with translate_errors(self.target):
                    resp = await call.read()
                if resp is grpc.aio.EOF:
                    return
                event = convert.event_from_pb(resp)
                if event is not None:
                    yield event
        finally:
            call.cancel()
