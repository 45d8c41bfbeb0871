"""Blocking wrappers for simple scripts: each call runs its own event loop.

Do not call these from async code (``asyncio.run`` refuses inside a running loop);
use ``AgentClient`` and ``Fleet`` there.

::

    from migwatch.client import sync
    for m in sync.list_migrations("hv1:50051"):
        print(m.domain_name, m.phase, m.eta_s)
    snap = sync.fleet_snapshot(["hv1:50051", "hv2:50051"])
    print([m.domain_name for m in snap.not_converging()])
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc

from .agent_client import AgentClient
from .fleet import Fleet
from .model import FleetSnapshot, Migration


def list_migrations(
    target: str,
    *,
    include_finished: bool = False,
    timeout_s: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> list[Migration]:
    """The migrations on one agent, active first. ``credentials`` and ``token`` as for
    ``AgentClient``.

    Raises:
        MigwatchError: the agent is unreachable or refused.
    """

    async def run() -> list[Migration]:
        async with AgentClient(
            target, timeout_s=timeout_s, credentials=credentials, token=token
        ) as client:
            return await client.list(include_finished=include_finished)

    return asyncio.run(run())


def get_migration(
    migration_id: str,
    targets: Sequence[str] | None = None,
    *,
    timeout_s: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> tuple[str, Migration]:
    """The agent target holding ``migration_id`` and the migration, asking every agent.

    ``targets`` default to ``MIGWATCH_AGENTS``, else ``127.0.0.1:50051``.

    Raises:
        NotFound: no reachable agent has it.
    """

    async def run() -> tuple[str, Migration]:
        fleet = Fleet(targets, timeout_s=timeout_s, credentials=credentials, token=token)
        return await fleet.find(migration_id)

    return asyncio.run(run())


def fleet_snapshot(
    targets: Sequence[str] | None = None,
    *,
    include_finished: bool = False,
    timeout_s: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> FleetSnapshot:
    """The joined fleet right now: one ``ListMigrations`` per agent, concurrently.

    Unreachable agents do not raise: see ``snapshot.unreachable()``.
    """

    async def run() -> FleetSnapshot:
        fleet = Fleet(
            targets,
            include_finished=include_finished,
            timeout_s=timeout_s,
            credentials=credentials,
            token=token,
        )
        return await fleet.fetch_snapshot()

    return asyncio.run(run())
