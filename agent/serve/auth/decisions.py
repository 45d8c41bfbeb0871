"""Who may call what, decided without gRPC or files: pure.

Roles: a *viewer* may watch, list, get and estimate; an *operator* may also abort,
force-complete and change limits. Health and reflection are open to everyone, so load
balancers and grpcurl discovery need no credentials. ``decide`` takes what a call carries
(its ``authorization`` metadata and verified certificate names) and returns a ``Decision``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from migwatch.agent.serve.auth.roles import Role
from migwatch.agent.serve.auth.tokens import TokenEntry, bearer_token, find_token
from migwatch.agent.serve.service import SERVICE_NAME

# Services anyone may call: health checks (load balancers) and reflection (grpcurl).
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Methods without side effects: the viewer role may call them.
READ_METHODS = frozenset(
    {"WatchMigrations", "ListMigrations", "GetMigration", "EstimateMigration", "EstimateEvacuation"}
)


class Verdict(enum.Enum):
    """The outcome of one authorization decision."""

    ALLOW = 1  # go ahead
    UNAUTHENTICATED = 2  # no credentials, or credentials that prove nothing
    PERMISSION_DENIED = 3  # a known caller without the role the method needs


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated identity: how it was proven, its name, and its role (if any)."""

    kind: str  # "token" or "certificate"
    name: str
    role: Role | None

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r}"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    message: str = ""  # why not; names the method, the role needed and the caller
    caller: Caller | None = None


@dataclass(frozen=True, slots=True)
class RoleRules:
    """Certificate names to roles: shell-style patterns, matched case-insensitively."""

    operators: tuple[str, ...] = ()
    viewers: tuple[str, ...] = ("*",)


# -- pure decisions ------------------------------------------------------------------


def required_role(method: str) -> Role | None:
    """The role ``/package.Service/Method`` needs; ``None`` when it is open to anyone.

    Methods of our service that are not reads need the operator role, new ones
    included: an RPC added without updating this table fails closed.
    """
    service, _, name = method.lstrip("/").partition("/")
    if service in OPEN_SERVICES:
        return None
    if service == SERVICE_NAME and name in READ_METHODS:
        return Role.VIEWER
    return Role.OPERATOR


def role_for_names(names: Sequence[str], rules: RoleRules) -> Role | None:
    """The highest role any of a certificate's names (CN, SAN DNS names) matches."""
    lowered = [n.lower() for n in names]
    for role, patterns in ((Role.OPERATOR, rules.operators), (Role.VIEWER, rules.viewers)):
        if any(fnmatchcase(n, p.lower()) for p in patterns for n in lowered):
            return role
    return None


def decide(
    method: str,
    *,
    authorization: Sequence[str],
    cert_names: Sequence[str],
    tokens: Sequence[TokenEntry] | None,
    rules: RoleRules,
    client_certs: bool,
) -> Decision:
    """May this call go ahead?

    Args:
        method: ``/package.Service/Method``.
        authorization: the call's ``authorization`` metadata values (usually none or one).
        cert_names: the verified client certificate's CN and SAN DNS names, CN first.
        tokens: the token file's entries; ``None`` when the agent has no token file.
        rules: certificate name patterns per role.
        client_certs: the agent verifies client certificates (for the hint when missing).
    """
    need = required_role(method)
    if need is None:
        return Decision(Verdict.ALLOW)
    short = method.rpartition("/")[2]
    caller: Caller | None = None
    if authorization:
        try:
            token = bearer_token(authorization)
        except ValueError as exc:
            return Decision(Verdict.UNAUTHENTICATED, f"{short}: {exc}")
        if tokens is None:
            return Decision(
                Verdict.UNAUTHENTICATED,
                f"{short}: this agent accepts no bearer tokens (it has no token file); "
                "authenticate with a client certificate",
            )
        entry = find_token(tokens, token)
        if entry is None:
            return Decision(
                Verdict.UNAUTHENTICATED,
                f"{short}: the bearer token is not in this agent's token file",
            )
        caller = Caller("token", entry.name, entry.role)
    elif cert_names:
        caller = Caller("certificate", cert_names[0], role_for_names(cert_names, rules))
    else:
        ways = []
        if tokens is not None:
            ways.append("a bearer token ('authorization: Bearer <token>' metadata)")
        if client_certs:
            ways.append("a client certificate")
        return Decision(
            Verdict.UNAUTHENTICATED,
            f"{short} needs credentials: {' or '.join(ways) or 'none work'}",
        )
    if caller.role is None:
        return Decision(
            Verdict.PERMISSION_DENIED,
            f"{short} needs the {need.label} role; {caller} has no role "
            "(the agent's [roles] patterns match none of its names)",
            caller,
        )
    if caller.role < need:
        return Decision(
            Verdict.PERMISSION_DENIED,
            f"{short} needs the {need.label} role; {caller} has {caller.role.label}",
            caller,
        )
    return Decision(Verdict.ALLOW, caller=caller)


def cert_names(auth_context: Mapping[str, Sequence[bytes]]) -> list[str]:
    """A verified peer certificate's CN then SAN DNS names, from ``context.auth_context()``."""
    if b"ssl" not in auth_context.get("transport_security_type", ()):
        return []
    names: list[str] = []
    for key in ("x509_common_name", "peer_dns"):
        for value in auth_context.get(key, ()):
            name = value.decode(errors="replace")
            if name and name not in names:
                names.append(name)
    return names
