"""migwatch client library: watch live migrations across a fleet of migwatch agents.

::

    import asyncio
    from migwatch.client import AgentUpdate, Fleet, MigrationUpdate

    async def main() -> None:
        fleet = Fleet(["hv1:50051", "hv2:50051"])  # or $MIGWATCH_AGENTS
        async with fleet.watch() as updates:
            async for update in updates:
                match update:
                    case MigrationUpdate(agent=agent, migration=m) if m.final:
                        print(f"{m.domain_name} {m.phase.name.lower()} (from {agent})")
                    case AgentUpdate(agent=agent, state=s) if not s.reachable:
                        print(f"{agent} unreachable: {s.error}")
                for slow in fleet.snapshot().not_converging():
                    print("not converging:", slow.domain_name, slow.source_host, "→", slow.destination_host)

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
