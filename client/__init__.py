"""migwatch client library: watch live migrations across a fleet of migwatch agents.

::

    import asyncio
    from migwatch.client import Fleet, MigrationUpdate

    async def main() -> None:
        fleet = Fleet(["hv1:50051", "hv2:50051"])  # or MIGWATCH_AGENTS
        async with fleet.watch() as updates:
            async for update in updates:
                if isinstance(update, MigrationUpdate) and update.migration.final:
                    print(update.agent, update.migration.domain_name, update.migration.phase)
                worst = fleet.snapshot().migrations[:1]

    asyncio.run(main())

Blocking helpers for scripts live in ``migwatch.client.sync``.
"""

from .agent_client import AgentClient
from .backoff import Backoff
from .errors import (
    AgentError,
    AgentUnavailable,
    FailedPrecondition,
    InvalidArgument,
    MigwatchError,
    NotFound,
    PermissionDenied,
)
from .fleet import Fleet
from .model import (
    Action,
    AgentState,
    AgentStatus,
    AgentUpdate,
    Convergence,
    Direction,
    EtaBasis,
    FleetMigration,
    FleetSnapshot,
    ForceCompleteMethod,
    Heartbeat,
    HostState,
    Migration,
    MigrationUpdate,
    MigrationVanished,
    Phase,
    Recommendation,
    SnapshotComplete,
    Transfer,
    Update,
)

__all__ = [
    "Action",
    "AgentClient",
    "AgentError",
    "AgentState",
    "AgentStatus",
    "AgentUnavailable",
    "AgentUpdate",
    "Backoff",
    "Convergence",
    "Direction",
    "EtaBasis",
    "FailedPrecondition",
    "Fleet",
    "FleetMigration",
    "FleetSnapshot",
    "ForceCompleteMethod",
    "Heartbeat",
    "HostState",
    "InvalidArgument",
    "Migration",
    "MigrationUpdate",
    "MigrationVanished",
    "MigwatchError",
    "NotFound",
    "PermissionDenied",
    "Phase",
    "Recommendation",
    "SnapshotComplete",
    "Transfer",
    "Update",
]
