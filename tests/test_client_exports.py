"""The client's public surface is pinned: changing it is a deliberate act."""

from __future__ import annotations

from migwatch import client

EXPECTED = [
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


def test_all_is_pinned() -> None:
    """``migwatch.client.__all__`` is exactly the documented names."""
    assert sorted(client.__all__) == EXPECTED


def test_every_exported_name_resolves_from_the_client_package() -> None:
    """Each name in ``__all__`` exists and (type aliases aside) is defined inside
    migwatch.client."""
    aliases = {"Update"}  # a Union alias: its __module__ is "types"
    for name in set(client.__all__) - aliases:
        module = getattr(client, name).__module__
        assert module.startswith("migwatch.client"), (name, module)
    assert client.MigrationUpdate in client.Update.__args__


def test_errors_share_one_base() -> None:
    """Every exported exception is a MigwatchError, so one except clause catches them all."""
    errors = [getattr(client, n) for n in client.__all__ if n.endswith(("Error", "Unavailable"))]
    errors += [client.NotFound, client.InvalidArgument, client.FailedPrecondition]
    errors += [client.PermissionDenied, client.Unauthenticated]
    assert all(issubclass(e, client.MigwatchError) for e in errors)
