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

import contextlib
import enum
import hashlib
import hmac
import inspect
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import grpc
from migwatch.agent.config import AgentConfig, ConfigError
from migwatch.agent.servicer import SERVICE_NAME

log = logging.getLogger(__name__)

# Services anyone may call: health checks (load balancers) and reflection (grpcurl).
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Methods without side effects: the viewer role may call them.
READ_METHODS = frozenset({"WatchMigrations", "ListMigrations", "GetMigration", "EstimateMigration"})
MIN_TOKEN_LENGTH = 16
TOKEN_HINT = "generate one with: openssl rand -hex 24"


class Role(enum.IntEnum):
    """What a caller may do; a higher role implies the lower ones."""

    VIEWER = 1  # WatchMigrations, ListMigrations, GetMigration, EstimateMigration
    OPERATOR = 2  # also AbortMigration, ForceCompleteMigration, UpdateMigrationLimits

    @property
    def label(self) -> str:
        return self.name.lower()


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
class TokenEntry:
    """One line of the token file. Only the token's SHA-256 is kept."""

    digest: bytes = field(repr=False)
    role: Role
    name: str
    line: int


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


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str) -> tuple[TokenEntry, ...]:
    """The entries of a token file: ``TOKEN ROLE [NAME]`` per line, ``#`` comment lines.

    Raises:
        ValueError: a line is malformed; the message names the line, never the token.
    """
    entries: list[TokenEntry] = []
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 2:
            raise ValueError(
                f"line {number}: expected 'TOKEN ROLE [NAME]', e.g. '<token> viewer ci-bot'"
            )
        token, role_word = parts[0], parts[1].lower()
        if role_word not in ("viewer", "operator"):
            raise ValueError(f"line {number}: role {parts[1]!r} is unknown: use viewer or operator")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"line {number}: the token is shorter than {MIN_TOKEN_LENGTH} characters; {TOKEN_HINT}"
            )
        key = digest(token)
        if key in seen:
            raise ValueError(f"line {number}: the same token is on line {seen[key]}")
        seen[key] = number
        name = parts[2].strip() if len(parts) > 2 else f"line {number}"
        entries.append(TokenEntry(key, Role[role_word.upper()], name, number))
    return tuple(entries)


def find_token(entries: Sequence[TokenEntry], presented: str) -> TokenEntry | None:
    """The entry for ``presented``, comparing digests in constant time, all of them."""
    wanted = digest(presented)
    found = None
    for entry in entries:
        if hmac.compare_digest(entry.digest, wanted):
            found = entry
    return found


def bearer_token(values: Sequence[str]) -> str:
    """The token of the ``authorization`` metadata values.

    Raises:
        ValueError: not exactly one ``Bearer <token>`` value.
    """
    if len(values) != 1:
        raise ValueError("send one 'authorization: Bearer <token>' header, not several")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ValueError("the authorization header must be 'Bearer <token>'")
    return token.strip()


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


def cert_names(auth_context: dict[str, Sequence[bytes]]) -> list[str]:
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


# -- files ---------------------------------------------------------------------------


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {setting} {path}: {exc.strerror}") from exc


class TokenFile:
    """The token file, re-read when it changes (looked at no more than every ``check_s``).

    A change that does not parse is logged and ignored: the tokens loaded before stay.
    """

    def __init__(
        self, path: str, *, check_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._check_s = check_s
        self._clock = clock
        self._signature = self._stat()
        try:
            self._entries = parse_tokens(_read(path, "token_file").decode(errors="replace"))
        except ValueError as exc:
            raise ConfigError(f"token file {path} {exc}") from exc
        self._checked = clock()
        if self._signature is not None and self._signature[3] & 0o004:
            log.warning("token file %s is world-readable; chmod 600 it", path)

    def _stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)

    def entries(self) -> tuple[TokenEntry, ...]:
        """The current tokens, after re-reading the file if it changed."""
        now = self._clock()
        if now - self._checked >= self._check_s:
            self._checked = now
            signature = self._stat()
            if signature != self._signature:
                self._signature = signature
                self._reload()
        return self._entries

    def _reload(self) -> None:
        try:
            entries = parse_tokens(Path(self.path).read_text(errors="replace"))
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            log.error(
                "token file %s: %s; keeping the %d tokens loaded before",
                self.path,
                reason,
                len(self._entries),
            )
            return
        self._entries = entries
        log.info("token file %s re-read: %d tokens", self.path, len(entries))


def server_credentials(config: AgentConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from ``tls_cert``/``tls_key`` (and ``tls_client_ca`` for mutual
    TLS); ``None`` for plaintext. The files are re-read when they change
    (``CertificateFiles``), so a renewed certificate needs no restart.

    Raises:
        ConfigError: a file is missing, unreadable, not PEM, or the key does not fit.
    """
    if not config.tls_cert:
        return None
    files = CertificateFiles(config.tls_cert, config.tls_key, config.tls_client_ca or None)
    return grpc.dynamic_ssl_server_credentials(
        files.initial, files.fetch, require_client_authentication=config.tls_client_ca != ""
    )


def _load_tls(cert_path: str, key_path: str, ca_path: str | None
              ) -> grpc.ServerCertificateConfiguration:
    """Read and check the PEM files; raises ConfigError naming the file at fault."""
    cert = _read(cert_path, "tls_cert")
    key = _read(key_path, "tls_key")
    ca = _read(ca_path, "tls_client_ca") if ca_path else None
    # Check with the stdlib now: gRPC would only fail at bind (or at a handshake), saying
    # little.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert_path, key_path, password=b"")
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls_cert {cert_path} and tls_key {key_path} are not a PEM "
            f"certificate and its unencrypted private key ({exc.reason or exc})"
        ) from exc
    if ca is not None:
        problem = "" if b"-----BEGIN CERTIFICATE-----" in ca else "no PEM certificate in it"
        if not problem:
            try:
                ctx.load_verify_locations(cafile=ca_path)
            except ssl.SSLError as exc:
                problem = str(exc.reason or exc)
        if problem:
            raise ConfigError(f"tls_client_ca {ca_path} is not a PEM CA certificate ({problem})")
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class CertificateFiles:
    """The agent's certificate, key and client CA, re-read when one of them changes.

    gRPC calls ``fetch`` before each new TLS handshake; it looks at the files' stat at most
    every ``check_s`` and returns a new configuration only when they changed and still form
    a valid certificate and key (a renewal tool that writes the certificate before the key
    is caught between the two: that half-written state is logged and skipped, and the pair
    is taken once both are in place). Connections already open keep their session.
    """

    def __init__(self, cert: str, key: str, ca: str | None, *, check_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._paths = (cert, key, ca)
        self._check_s = check_s
        self._clock = clock
        self._signature = self._stat()
        self.initial = _load_tls(cert, key, ca)
        self._checked = clock()

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        def one(path: str | None) -> tuple[int, int, int] | None:
            if path is None:
                return None
            try:
                st = os.stat(path)
            except OSError:
                return None
            return (st.st_ino, st.st_mtime_ns, st.st_size)

        return tuple(one(p) for p in self._paths)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration if the files changed; ``None`` keeps the current one."""
        try:
            now = self._clock()
            if now - self._checked < self._check_s:
                return None
            self._checked = now
            signature = self._stat()
            if signature == self._signature:
                return None
            cert, key, ca = self._paths
            try:
                config = _load_tls(cert, key, ca)
            except ConfigError as exc:
                log.error("TLS files changed but cannot be used: %s; keeping the ones loaded"
                          " before", exc)
                return None  # retried at the next change (or the second half of a renewal)
            self._signature = signature
            log.info("TLS certificate files re-read: %s", ", ".join(p for p in self._paths if p))
            return config
        except Exception:  # never let a reload break a handshake
            log.exception("re-reading the TLS files failed; keeping the ones loaded before")
            return None


# -- the interceptor -----------------------------------------------------------------

Check = Callable[[Any], Awaitable[None]]  # aborts the call (given its context) when refused

_CODES = {
    Verdict.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Verdict.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls whose caller lacks the method's role (see ``decide``).

    Decided before the handler runs when possible (open methods, calls with a token):
    then an allowed call runs the service's own handler, unwrapped. Certificate
    callers are decided inside a wrapper, where the peer certificate can be read.
    """

    def __init__(self, tokens: TokenFile | None, rules: RoleRules, client_certs: bool) -> None:
        self._tokens = tokens
        self._rules = rules
        self._client_certs = client_certs

    def _decide(self, method: str, authorization: Sequence[str], names: Sequence[str]) -> Decision:
        return decide(
            method,
            authorization=authorization,
            cert_names=names,
            tokens=None if self._tokens is None else self._tokens.entries(),
            rules=self._rules,
            client_certs=self._client_certs,
        )

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or required_role(method) is None:
            return handler
        authorization = [
            v if isinstance(v, str) else v.decode(errors="replace")
            for k, v in handler_call_details.invocation_metadata or ()
            if k == "authorization"
        ]
        if authorization or not self._client_certs:
            decision = self._decide(method, authorization, ())
            if decision.verdict is Verdict.ALLOW:
                _log_allowed(method, decision)
                return handler

            async def refuse(context: Any) -> None:
                await _abort(context, method, decision)

            return _guarded(handler, refuse)

        async def check_certificate(context: Any) -> None:
            names = cert_names(context.auth_context())
            decision = self._decide(method, (), names)
            if decision.verdict is Verdict.ALLOW:
                _log_allowed(method, decision)
            else:
                await _abort(context, method, decision)

        return _guarded(handler, check_certificate)


def _log_allowed(method: str, decision: Decision) -> None:
    if required_role(method) is Role.OPERATOR:
        log.info("%s by %s", method.rpartition("/")[2], decision.caller)


async def _abort(context: Any, method: str, decision: Decision) -> None:
    log.info("refused %s: %s", method, decision.message)
    await context.abort(_CODES[decision.verdict], decision.message)


def _guarded(handler: Any, check: Check) -> Any:
    """``handler`` with ``check(context)`` awaited before its behaviour runs.

    Serializers stay as they were (WatchMigrations streams pre-serialized bytes).
    """
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await check(context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.stream_unary is not None:
        inner = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await check(context)
            return await inner(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    streaming = handler.unary_stream or handler.stream_stream
    wrapped = _guarded_stream(streaming, check)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrapped, **kw)
    return grpc.stream_stream_rpc_method_handler(wrapped, **kw)


def _guarded_stream(inner: Any, check: Check) -> Any:
    """grpc.aio runs a streaming behaviour by its kind: a coroutine function writes with
    ``context.write``, an async generator function yields. The wrapper keeps the kind."""
    if not inspect.isasyncgenfunction(inner):

        async def writer(request: Any, context: Any) -> None:
            await check(context)
            await inner(request, context)

        return writer

    async def generator(request: Any, context: Any) -> Any:
        await check(context)
        # aclosing: the service's generator runs its finally (unsubscribe) when the
        # call ends, not whenever it is garbage-collected.
        async with contextlib.aclosing(inner(request, context)) as responses:
            async for response in responses:
                yield response

    return generator


# -- assembly ------------------------------------------------------------------------


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
