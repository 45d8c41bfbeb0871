"""Who may call what: TLS credentials, two roles, and the interceptor that enforces them.

Roles: a *viewer* may watch, list and get; an *operator* may also abort, force-complete
and change limits. Health and reflection are open to everyone, so load balancers and
grpcurl discovery need no credentials.

A caller proves who it is with a bearer token (``authorization: Bearer <token>``
metadata, checked against the token file) or, failing that, with its verified client
certificate, whose subject CN and SAN DNS names are mapped to a role by the patterns of
``[roles]`` in the agent config. When a call carries a token, the token decides.

Pure core, testable without gRPC: ``required_role``, ``role_for_names``,
``parse_tokens``, ``find_token``, ``decide``. At the edges: ``TokenFile`` (reads and
re-reads the file), ``server_credentials`` (reads and checks the PEM files) and
``AuthInterceptor`` (reads metadata and the peer certificate, aborts refused calls).
No token is ever logged or put in a message: only its name.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from migwatch.agent.config import AgentConfig
from migwatch.agent.serve.auth.decisions import (
    OPEN_SERVICES,
    READ_METHODS,
    Caller,
    Decision,
    RoleRules,
    Verdict,
    cert_names,
    decide,
    required_role,
    role_for_names,
)
from migwatch.agent.serve.auth.interceptor import AuthInterceptor
from migwatch.agent.serve.auth.roles import Role
from migwatch.agent.serve.auth.tls import CertificateFiles, server_credentials
from migwatch.agent.serve.auth.tokens import (
    MIN_TOKEN_LENGTH,
    TOKEN_HINT,
    TokenEntry,
    TokenFile,
    bearer_token,
    digest,
    find_token,
    parse_tokens,
)

__all__ = [
    "MIN_TOKEN_LENGTH",
    "OPEN_SERVICES",
    "READ_METHODS",
    "TOKEN_HINT",
    "AuthInterceptor",
    "Caller",
    "CertificateFiles",
    "Decision",
    "Role",
    "RoleRules",
    "Security",
    "TokenEntry",
    "TokenFile",
    "Verdict",
    "bearer_token",
    "cert_names",
    "decide",
    "digest",
    "find_token",
    "load_security",
    "parse_tokens",
    "required_role",
    "role_for_names",
    "server_credentials",
]


@dataclass(frozen=True, slots=True)
class Security:
    """What ``Agent`` needs: port credentials, interceptors, and a line for the log."""

    credentials: grpc.ServerCredentials | None
    interceptors: tuple[AuthInterceptor, ...]
    summary: str


def load_security(config: AgentConfig) -> Security:
    """Read the TLS and token files the config names.

    Raises:
        ConfigError: a file is missing or malformed.
    """
    credentials = server_credentials(config)
    tokens = TokenFile(config.token_file) if config.token_file else None
    client_certs = bool(config.tls_client_ca)
    parts = ["TLS" if credentials else "plaintext"]
    if client_certs:
        parts.append("client certificates required")
    if tokens is not None:
        parts.append(f"bearer tokens: {len(tokens.entries())}")
    if not client_certs and tokens is None:
        parts.append("no authentication")
        return Security(credentials, (), ", ".join(parts))
    rules = RoleRules(operators=config.operators, viewers=config.viewers)
    return Security(credentials, (AuthInterceptor(tokens, rules, client_certs),), ", ".join(parts))
