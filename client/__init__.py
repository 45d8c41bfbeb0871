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
                    print("not converging:", slow.domain_name,
                          slow.source_host, "→", slow.destination_host)

    asyncio.run(main())

Agents with TLS and roles (docs/SECURITY.md): ``Fleet(..., credentials=client_credentials(
ca="ca.crt", cert="me.crt", key="me.key"), token=...)``, or settings from flags, the
environment and ``~/.config/migwatch/client.toml`` as the CLI reads them::

    auth = load_client_auth()
    fleet = Fleet(credentials=auth.credentials(), token=auth.token or None)

Blocking helpers for scripts live in ``migwatch.client.sync``.
"""

from .agent_client import AgentClient
from .auth import client_credentials, load_client_auth
from .backoff import Backoff
from .errors import (
    AgentError,
    AgentUnavailable,
    FailedPrecondition,
    InvalidArgument,
    MigwatchError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
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
    EvacuationEntry,
    EvacuationEstimate,
    FleetMigration,
    FleetSnapshot,
    ForceCompleteMethod,
    Heartbeat,
    HostState,
    Migration,
    MigrationEstimate,
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
    "EvacuationEntry",
    "EvacuationEstimate",
    "FailedPrecondition",
    "Fleet",
    "FleetMigration",
    "FleetSnapshot",
    "ForceCompleteMethod",
    "Heartbeat",
    "HostState",
    "InvalidArgument",
    "Migration",
    "MigrationEstimate",
    "MigrationUpdate",
    "MigrationVanished",
    "MigwatchError",
    "NotFound",
    "PermissionDenied",
    "Phase",
    "Recommendation",
    "SnapshotComplete",
    "Transfer",
    "Unauthenticated",
    "Update",
    "client_credentials",
    "load_client_auth",
]
