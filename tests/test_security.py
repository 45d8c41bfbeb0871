"""TLS, mutual TLS, roles and bearer tokens: the pure decisions as tables, then real gRPC
on 127.0.0.1 (in-process agents, the client library, the CLI, grpcurl), then the agent
command line (plaintext on a non-loopback address, bad security files)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from migwatch.agent.config import AgentConfig, ConfigError, is_loopback, load_toml
from migwatch.agent.serve.auth import (
    CertificateFiles,
    Decision,
    Role,
    RoleRules,
    TokenFile,
    Verdict,
    cert_names,
    decide,
    find_token,
    parse_tokens,
    required_role,
    role_for_names,
)
from migwatch.client import (
    AgentClient,
    AgentUnavailable,
    AgentUpdate,
    Backoff,
    Fleet,
    Migration,
    MigrationUpdate,
    PermissionDenied,
    Unauthenticated,
    cli,
    client_credentials,
)
from migwatch.client import auth as client_auth
from migwatch.client.errors import error_from_rpc

if TYPE_CHECKING:
    from migwatch.agent.serve.server import Agent

    from tests.conftest import SpawnAgent

VIEWER_TOKEN = "v" * 8 + "0123456789abcdef0123"
OPERATOR_TOKEN = "o" * 8 + "0123456789abcdef0123"
TOKENS = f"""\
# migwatch tokens: TOKEN ROLE [NAME]
{VIEWER_TOKEN} viewer ci-bot

{OPERATOR_TOKEN}   operator   ops bot
"""
SERVICE = "/migwatch.v1.MigrationService/"


# -- a throwaway PKI -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, client certificates."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of a client whose CN is ``name``."""
        return self.dir / f"{name}.crt", self.dir / f"{name}.key"


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA; a server certificate for 127.0.0.1 and localhost; clients ops-alice,
    viewer-bob and carol (whom no role pattern below names)."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("migwatch test CA", ca_key, None)
    _write(d / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    server = _cert(
        "agent", server_key, (ca, ca_key), sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    _write(d / "server", server, server_key)
    for name in ("ops-alice", "viewer-bob", "carol"):
        key = ec.generate_private_key(ec.SECP256R1())
        dns: list[x509.GeneralName] = [x509.DNSName(f"{name}.example.org")]
        cert = _cert(name, key, (ca, ca_key), sans=dns, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        _write(d / name, cert, key)
    return Pki(d, d / "ca.crt", d / "server.crt", d / "server.key")


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    """A token file with a viewer token (ci-bot) and an operator token (ops bot)."""
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _no_client_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer's own MIGWATCH_* variables or client.toml leak into these tests."""
    for var in ("MIGWATCH_CA", "MIGWATCH_CERT", "MIGWATCH_KEY", "MIGWATCH_TOKEN",
                "MIGWATCH_TOKEN_FILE", "MIGWATCH_CONFIG", "MIGWATCH_AGENTS"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


# -- pure: methods, names, tokens, decisions -------------------------------------------------


@pytest.mark.parametrize(
    ("method", "role"),
    [
        (SERVICE + "WatchMigrations", Role.VIEWER),
        (SERVICE + "ListMigrations", Role.VIEWER),
        (SERVICE + "GetMigration", Role.VIEWER),
        (SERVICE + "EstimateMigration", Role.VIEWER),
        (SERVICE + "EstimateEvacuation", Role.VIEWER),
        (SERVICE + "AbortMigration", Role.OPERATOR),
        (SERVICE + "ForceCompleteMigration", Role.OPERATOR),
        (SERVICE + "UpdateMigrationLimits", Role.OPERATOR),
        (SERVICE + "SomeFutureMethod", Role.OPERATOR),
        ("/grpc.health.v1.Health/Check", None),
        ("/grpc.health.v1.Health/Watch", None),
        ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", None),
        ("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", None),
        ("/other.Service/Method", Role.OPERATOR),
    ],
)
def test_required_role_per_method(method: str, role: Role | None) -> None:
    """Reads need viewer, controls and unknown methods operator, health and reflection nothing."""
    assert required_role(method) == role


RULES = RoleRules(operators=("ops-*", "nova-conductor.example.org"), viewers=("viewer-*", "*.ro"))


@pytest.mark.parametrize(
    ("names", "role"),
    [
        (["ops-alice"], Role.OPERATOR),
        (["OPS-Alice"], Role.OPERATOR),
        (["viewer-bob"], Role.VIEWER),
        (["carol"], None),
        ([], None),
        (["carol", "nova-conductor.example.org"], Role.OPERATOR),
        (["viewer-ops", "ops-x"], Role.OPERATOR),
        (["dash.ro"], Role.VIEWER),
        (["dash.ro.evil"], None),
    ],
)
def test_role_for_names(names: list[str], role: Role | None) -> None:
    """Any name (CN or SAN DNS) may match; wildcards, any case; the highest role wins."""
    assert role_for_names(names, RULES) == role


def test_default_rules_make_every_certificate_a_viewer() -> None:
    """Without [roles], a certificate the CA signed is a viewer and nobody is an operator."""
    assert role_for_names(["anyone"], RoleRules()) is Role.VIEWER


def test_parse_tokens_reads_roles_names_and_comments() -> None:
    """Comment and blank lines are skipped; NAME defaults to the line; roles any case."""
    entries = parse_tokens(TOKENS + f"{'x' * 20} OPERATOR\n")
    assert [(e.role, e.name, e.line) for e in entries] == [
        (Role.VIEWER, "ci-bot", 2),
        (Role.OPERATOR, "ops bot", 4),
        (Role.OPERATOR, "line 5", 5),
    ]
    assert VIEWER_TOKEN not in repr(entries)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (f"{VIEWER_TOKEN}\n", "line 1: expected 'TOKEN ROLE [NAME]'"),
        (f"{VIEWER_TOKEN} admin\n", "role 'admin' is unknown"),
        ("short viewer\n", "shorter than 16"),
        (
            f"{VIEWER_TOKEN} viewer a\n{VIEWER_TOKEN} operator b\n",
            "line 2: the same token is on line 1",
        ),
    ],
)
def test_parse_tokens_errors_name_the_line_not_the_token(text: str, needle: str) -> None:
    """A malformed token file is refused with the line number, never echoing a token."""
    with pytest.raises(ValueError, match=r".*") as info:
        parse_tokens(text)
    assert needle in str(info.value)
    assert VIEWER_TOKEN not in str(info.value)


def test_find_token_matches_only_the_exact_token() -> None:
    """The presented token must match exactly; prefixes and extensions are unknown."""
    entries = parse_tokens(TOKENS)
    found = find_token(entries, OPERATOR_TOKEN)
    assert found is not None and found.name == "ops bot"
    for wrong in (OPERATOR_TOKEN[:-1], OPERATOR_TOKEN + "x", "", "nope"):
        assert find_token(entries, wrong) is None


def _decide(method: str, *, authz: tuple[str, ...] = (), names: tuple[str, ...] = (),
            tokens: bool = True, certs: bool = True) -> Decision:  # fmt: skip
    return decide(
        SERVICE + method,
        authorization=authz,
        cert_names=names,
        tokens=parse_tokens(TOKENS) if tokens else None,
        rules=RULES,
        client_certs=certs,
    )


@pytest.mark.parametrize(
    ("kwargs", "verdict", "needle"),
    [
        ({"method": "ListMigrations", "authz": (f"Bearer {VIEWER_TOKEN}",)}, Verdict.ALLOW, ""),
        ({"method": "ListMigrations", "authz": (f"bearer  {VIEWER_TOKEN} ",)}, Verdict.ALLOW, ""),
        ({"method": "AbortMigration", "authz": (f"Bearer {OPERATOR_TOKEN}",)}, Verdict.ALLOW, ""),
        (
            {"method": "AbortMigration", "authz": (f"Bearer {VIEWER_TOKEN}",)},
            Verdict.PERMISSION_DENIED,
            "AbortMigration needs the operator role; token 'ci-bot' has viewer",
        ),
        (
            {"method": "ListMigrations", "authz": ("Bearer wrong-token-0123456789",)},
            Verdict.UNAUTHENTICATED,
            "ListMigrations: the bearer token is not in this agent's token file",
        ),
        (
            {"method": "ListMigrations", "authz": (f"Basic {VIEWER_TOKEN}",)},
            Verdict.UNAUTHENTICATED,
            "must be 'Bearer <token>'",
        ),
        (
            {"method": "ListMigrations", "authz": (f"Bearer {VIEWER_TOKEN}",) * 2},
            Verdict.UNAUTHENTICATED,
            "not several",
        ),
        (
            {"method": "ListMigrations", "authz": (f"Bearer {VIEWER_TOKEN}",), "tokens": False},
            Verdict.UNAUTHENTICATED,
            "accepts no bearer tokens",
        ),
        (
            {"method": "WatchMigrations"},
            Verdict.UNAUTHENTICATED,
            (
                "WatchMigrations needs credentials: a bearer token "
                "('authorization: Bearer <token>' metadata) or a client certificate"
            ),
        ),
        (
            {"method": "WatchMigrations", "certs": False},
            Verdict.UNAUTHENTICATED,
            "needs credentials: a bearer token",
        ),
        ({"method": "WatchMigrations", "names": ("viewer-bob",)}, Verdict.ALLOW, ""),
        ({"method": "AbortMigration", "names": ("ops-alice", "x.example.org")}, Verdict.ALLOW, ""),
        (
            {"method": "UpdateMigrationLimits", "names": ("viewer-bob",)},
            Verdict.PERMISSION_DENIED,
            "UpdateMigrationLimits needs the operator role; certificate 'viewer-bob' has viewer",
        ),
        (
            {"method": "GetMigration", "names": ("carol",)},
            Verdict.PERMISSION_DENIED,
            "GetMigration needs the viewer role; certificate 'carol' has no role",
        ),
        (
            # A token decides even when a certificate would have more rights.
            {"method": "AbortMigration", "authz": (f"Bearer {VIEWER_TOKEN}",), "names": ("ops-a",)},
            Verdict.PERMISSION_DENIED,
            "token 'ci-bot' has viewer",
        ),
    ],
)
def test_decide(kwargs: dict[str, Any], verdict: Verdict, needle: str) -> None:
    """Tokens, then certificates, against the method's role; messages say what is missing."""
    decision = _decide(kwargs.pop("method"), **kwargs)
    assert decision.verdict is verdict, decision
    assert needle in decision.message
    assert VIEWER_TOKEN not in decision.message and OPERATOR_TOKEN not in decision.message


def test_open_methods_need_no_credentials() -> None:
    """Health and reflection are allowed with nothing at all."""
    decision = decide(
        "/grpc.health.v1.Health/Check", authorization=(), cert_names=(), tokens=None,
        rules=RULES, client_certs=True,
    )  # fmt: skip
    assert decision.verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    ("context", "names"),
    [
        (
            {
                "transport_security_type": [b"ssl"],
                "x509_common_name": [b"ops-alice"],
                "x509_subject_alternative_name": [b"ops-alice.example.org", b"10.0.0.1"],
                "peer_dns": [b"ops-alice.example.org", b"ops-alice"],
            },
            ["ops-alice", "ops-alice.example.org"],
        ),
        ({"transport_security_type": [b"ssl"]}, []),
        ({"transport_security_type": [b"insecure"], "x509_common_name": [b"x"]}, []),
        ({}, []),
    ],
)
def test_cert_names_from_auth_context(
    context: dict[str, Sequence[bytes]], names: list[str]
) -> None:
    """CN first, then SAN DNS names, deduplicated; nothing without TLS."""
    assert cert_names(context) == names


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("[::]", False),
        ("10.0.0.7", False),
        ("hv1.example.org", False),
        ("localhost.example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; anything else needs TLS or --insecure."""
    assert is_loopback(host) is loopback


def test_non_loopback_plaintext_is_refused_unless_insecure() -> None:
    """The config check refuses plaintext on 0.0.0.0 unless insecure or TLS is set."""
    with pytest.raises(ConfigError, match="not a loopback address and TLS is off"):
        AgentConfig(listen="0.0.0.0:50051").validate()
    AgentConfig(listen="0.0.0.0:50051", insecure=True).validate()
    AgentConfig(listen="0.0.0.0:50051", tls_cert="c", tls_key="k").validate()


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"tls_cert": "c"}, "both tls_cert and tls_key"),
        ({"tls_key": "k"}, "both tls_cert and tls_key"),
        ({"tls_client_ca": "ca"}, "needs the agent's own tls_cert"),
    ],
)
def test_incomplete_tls_settings_are_refused(settings: dict[str, Any], needle: str) -> None:
    """Half a TLS setup is a config error naming the missing setting."""
    with pytest.raises(ConfigError, match=needle):
        AgentConfig(**settings).validate()


def test_roles_table_in_toml(tmp_path: Path) -> None:
    """[roles] operators/viewers become the role patterns; other role names are errors."""
    path = tmp_path / "agent.toml"
    path.write_text('tls_cert = "c"\ntls_key = "k"\n[roles]\noperators = ["ops-*"]\nviewers = []\n')
    assert load_toml(path) == {"tls_cert": "c", "tls_key": "k", "operators": ("ops-*",),
                               "viewers": ()}  # fmt: skip
    path.write_text('[roles]\nadmins = ["x"]\n')
    with pytest.raises(ConfigError, match="unknown role 'admins'"):
        load_toml(path)
    path.write_text('operators = ["x"]\n')
    with pytest.raises(ConfigError, match="unknown setting 'operators'"):
        load_toml(path)


def test_token_file_is_reread_when_it_changes(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A changed token file is picked up at the next check; a broken change keeps the old tokens."""
    now = [0.0]
    tokens = TokenFile(str(token_file), check_s=1.0, clock=lambda: now[0])
    assert [e.name for e in tokens.entries()] == ["ci-bot", "ops bot"]
    token_file.write_text(f"{VIEWER_TOKEN} viewer renamed-bot\n")
    assert [e.name for e in tokens.entries()] == ["ci-bot", "ops bot"]  # not checked yet
    now[0] = 1.5
    assert [e.name for e in tokens.entries()] == ["renamed-bot"]
    token_file.write_text("garbage\n")
    now[0] = 3.0
    with caplog.at_level(logging.ERROR, logger="migwatch.agent.serve.auth"):
        assert [e.name for e in tokens.entries()] == ["renamed-bot"]
    assert "keeping the 1 tokens loaded before" in caplog.text


def test_world_readable_token_file_is_warned_about(
    token_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A token file others can read gets a warning at start."""
    token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="migwatch.agent.serve.auth"):
        TokenFile(str(token_file))
    assert "world-readable" in caplog.text


# -- pure: the client's settings and errors --------------------------------------------------


def test_client_settings_precedence(tmp_path: Path) -> None:
    """Arguments beat the environment, which beats the config file; paths are file-relative."""
    conf = tmp_path / "client.toml"
    (tmp_path / "tok").write_text("# mine\n" + OPERATOR_TOKEN + "\n")
    conf.write_text('ca = "ca.pem"\ncert = "me.crt"\nkey = "me.key"\ntoken_file = "tok"\n')
    env = {"MIGWATCH_CONFIG": str(conf)}
    auth_ = client_auth.load_client_auth(environ=env)
    assert (auth_.ca, auth_.cert, auth_.token) == (
        str(tmp_path / "ca.pem"),
        str(tmp_path / "me.crt"),
        OPERATOR_TOKEN,
    )
    assert auth_.uses_tls and OPERATOR_TOKEN not in repr(auth_)
    env |= {"MIGWATCH_CA": "/env/ca", "MIGWATCH_TOKEN": VIEWER_TOKEN}
    auth_ = client_auth.load_client_auth(environ=env)
    assert (auth_.ca, auth_.token) == ("/env/ca", VIEWER_TOKEN)
    auth_ = client_auth.load_client_auth(ca="/flag/ca", token="flag-token-0123456789", environ=env)
    assert (auth_.ca, auth_.token) == ("/flag/ca", "flag-token-0123456789")


@pytest.mark.parametrize(
    ("kwargs", "env", "toml", "needle"),
    [
        ({"token": "a b"}, {}, None, "without spaces"),
        ({"token": "x", "token_file": "f"}, {}, None, "not both"),
        ({"cert": "c"}, {}, None, "both cert and key"),
        ({"token_file": "/nonexistent/tok"}, {}, None, "cannot read the token file"),
        ({}, {"MIGWATCH_CONFIG": "/nonexistent/client.toml"}, None, "does not exist"),
        ({}, {}, "agent = 1\n", "unknown setting 'agent'"),
        ({}, {}, "tls = 'yes'\n", "tls must be true or false"),
        ({}, {}, "ca = [\n", "not valid TOML"),
    ],
)
def test_client_settings_errors_are_one_line(
    kwargs: dict[str, Any], env: dict[str, str], toml: str | None, needle: str, tmp_path: Path
) -> None:
    """Bad client settings raise ValueError with one line naming the problem."""
    if toml is not None:
        (tmp_path / "migwatch").mkdir()
        (tmp_path / "migwatch" / "client.toml").write_text(toml)
        env = {**env, "XDG_CONFIG_HOME": str(tmp_path)}
    with pytest.raises(ValueError, match=r".*") as info:
        client_auth.load_client_auth(**kwargs, environ=env)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_client_credentials_refuses_non_pem(tmp_path: Path) -> None:
    """A CA file that is not PEM is refused before any connection."""
    bad = tmp_path / "ca.der"
    bad.write_bytes(b"\x30\x82")
    with pytest.raises(ValueError, match="is not PEM"):
        client_credentials(ca=bad)


# How grpc 1.85 words a failed TLS handshake, up to OpenSSL's reason.
HANDSHAKE_FAILED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:5: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
)


class _FakeRpcError(grpc.aio.AioRpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@pytest.mark.parametrize(
    ("code", "details", "cls", "message"),
    [
        (
            grpc.StatusCode.UNAUTHENTICATED,
            "ListMigrations: the bearer token is not in this agent's token file",
            Unauthenticated,
            "h:1: not authenticated: ListMigrations: the bearer token is not in",
        ),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            "AbortMigration needs the operator role; token 'ci-bot' has viewer",
            PermissionDenied,
            "h:1: permission denied: AbortMigration needs the operator role",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            HANDSHAKE_FAILED + "error:1000007d:SSL routines:OPENSSL_internal:"
            "CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate: OK",
            AgentUnavailable,
            "not signed by the CA given",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            HANDSHAKE_FAILED + "error:100000f7:SSL routines:OPENSSL_internal:"
            "WRONG_VERSION_NUMBER: Invalid certificate verification context: OK",
            AgentUnavailable,
            "the agent serves plaintext, not TLS",
        ),
    ],
)
def test_client_error_mapping(
    code: grpc.StatusCode, details: str, cls: type[Exception], message: str
) -> None:
    """Auth refusals and TLS handshake failures become one clear line of the right class."""
    exc = error_from_rpc(_FakeRpcError(code, details), "h:1")
    assert type(exc) is cls and message in str(exc) and "\n" not in str(exc)


# -- real gRPC on 127.0.0.1 ----------------------------------------------------------------

pytest_asyncio_mark = pytest.mark.asyncio(loop_scope="function")


def agent_config(**security: Any) -> AgentConfig:
    """A simulated agent on a free port with one migration that never converges (abortable)."""
    return AgentConfig(
        listen="127.0.0.1:0",
        simulated_scenarios=("not-converging",),
        simulated_speed=20.0,
        sample_interval_s=0.05,
        grace_s=0.5,
        **security,
    )


def mtls_config(pki: Pki) -> AgentConfig:
    return agent_config(
        tls_cert=str(pki.server_cert),
        tls_key=str(pki.server_key),
        tls_client_ca=str(pki.ca),
        operators=("ops-*",),
        viewers=("viewer-*",),
    )


@asynccontextmanager
async def serving(config: AgentConfig) -> AsyncIterator[tuple[Agent, str]]:
    from migwatch.agent.serve.server import running_agent

    async with running_agent(config) as agent:
        yield agent, f"127.0.0.1:{agent.port}"


def creds(pki: Pki, who: str | None = None) -> grpc.ChannelCredentials:
    cert, key = pki.client(who) if who else (None, None)
    return client_credentials(ca=pki.ca, cert=cert, key=key)


async def active_migration(client: AgentClient) -> Migration:
    """The first active migration the agent lists (the simulator starts one at once)."""
    async with asyncio.timeout(5):
        while True:
            found = [m for m in await client.list() if not m.final]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


@pytest_asyncio_mark
async def test_tls_without_client_ca_serves_everyone_over_tls(pki: Pki) -> None:
    """TLS alone encrypts and authenticates the agent: any TLS client may read and control."""
    async with (
        serving(agent_config(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))) as (
            _,
            target,
        ),
        AgentClient(target, credentials=creds(pki)) as client,
    ):
        m = await active_migration(client)
        assert (await client.get(m.id)).id == m.id
        assert (await client.abort(m.id)).id == m.id


@pytest_asyncio_mark
async def test_plaintext_client_cannot_talk_to_a_tls_agent(pki: Pki) -> None:
    """A plaintext client gets a one-line 'cannot connect' hinting at TLS, not data."""
    async with (
        serving(agent_config(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))) as (
            _,
            target,
        ),
        AgentClient(target, timeout_s=3) as client,
    ):
        with pytest.raises(AgentUnavailable, match="cannot connect: .*TLS"):
            await client.list()


@pytest_asyncio_mark
async def test_mtls_without_client_certificate_fails(pki: Pki) -> None:
    """With a client CA, a TLS client without a certificate cannot even connect."""
    async with (
        serving(mtls_config(pki)) as (_, target),
        AgentClient(target, credentials=creds(pki), timeout_s=3) as client,
    ):
        with pytest.raises(AgentUnavailable, match="cannot connect"):
            await client.list()


@pytest_asyncio_mark
async def test_viewer_certificate_reads_but_cannot_abort(pki: Pki) -> None:
    """viewer-bob can watch, list and get; Abort is PERMISSION_DENIED naming the role needed."""
    async with (
        serving(mtls_config(pki)) as (agent, target),
        AgentClient(target, credentials=creds(pki, "viewer-bob")) as client,
    ):
        m = await active_migration(client)
        assert (await client.get(m.id)).id == m.id
        events = client.watch()
        first = [await anext(events), await anext(events)]
        await events.aclose()
        assert any(isinstance(e, Migration) for e in first)
        with pytest.raises(PermissionDenied) as info:
            await client.abort(m.id)
        assert not isinstance(info.value, Unauthenticated)
        assert info.value.code == "PERMISSION_DENIED"
        assert "AbortMigration needs the operator role; certificate 'viewer-bob' has viewer" in str(
            info.value
        )
        # The guarded stream's generator was closed: nothing is left subscribed.
        async with asyncio.timeout(3):
            while agent.hub.subscriber_count:
                await asyncio.sleep(0.02)


@pytest_asyncio_mark
async def test_operator_certificate_can_abort(pki: Pki) -> None:
    """ops-alice matches 'ops-*' and may abort."""
    async with (
        serving(mtls_config(pki)) as (_, target),
        AgentClient(target, credentials=creds(pki, "ops-alice")) as client,
    ):
        m = await active_migration(client)
        assert (await client.abort(m.id)).id == m.id


@pytest_asyncio_mark
async def test_certificate_without_role_is_denied_but_can_health_check(pki: Pki) -> None:
    """carol's certificate is valid but matches no pattern: reads are denied, health works."""
    async with (
        serving(mtls_config(pki)) as (_, target),
        AgentClient(target, credentials=creds(pki, "carol")) as client,
    ):
        with pytest.raises(PermissionDenied, match="certificate 'carol' has no role"):
            await client.list()
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with grpc.aio.secure_channel(target, creds(pki, "carol")) as chan:
            reply = await health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest_asyncio_mark
async def test_bearer_tokens(token_file: Path) -> None:
    """Missing or unknown token: UNAUTHENTICATED; viewer token on Abort: PERMISSION_DENIED;
    operator aborts."""
    async with serving(agent_config(token_file=str(token_file))) as (_, target):
        async with AgentClient(target) as anonymous:
            with pytest.raises(
                Unauthenticated, match="ListMigrations needs credentials: a bearer token"
            ):
                await anonymous.list()
        async with AgentClient(target, token="not-a-known-token-0123") as stranger:
            with pytest.raises(Unauthenticated, match="not in this agent's token file"):
                await stranger.list()
        async with AgentClient(target, token=VIEWER_TOKEN) as viewer:
            m = await active_migration(viewer)
            with pytest.raises(
                PermissionDenied,
                match="AbortMigration needs the operator role; token 'ci-bot' has viewer",
            ):
                await viewer.abort(m.id)
        async with AgentClient(target, token=OPERATOR_TOKEN) as operator:
            assert (await operator.abort(m.id)).id == m.id


@pytest_asyncio_mark
async def test_token_travels_on_the_fleet_watch_stream(token_file: Path) -> None:
    """A Fleet with a viewer token streams migrations; with a wrong one the agent shows why."""
    fast: dict[str, Any] = {
        "heartbeat_interval_s": 0.2,
        "backoff": Backoff(initial_s=0.05, maximum_s=0.2),
    }
    async with serving(agent_config(token_file=str(token_file))) as (_, target):
        fleet = Fleet([target], token=VIEWER_TOKEN, **fast)
        async with fleet.watch() as updates, asyncio.timeout(5):
            async for update in updates:
                if isinstance(update, MigrationUpdate):
                    break
        fleet = Fleet([target], token="not-a-known-token-0123", **fast)
        async with fleet.watch() as updates, asyncio.timeout(5):
            async for update in updates:
                if isinstance(update, AgentUpdate) and update.state.error:
                    assert "not authenticated" in update.state.error
                    break


@pytest_asyncio_mark
async def test_token_decides_over_a_certificate(pki: Pki, token_file: Path) -> None:
    """With mTLS and tokens, ops-alice's certificate plus a viewer token is a viewer."""
    config = dataclasses.replace(mtls_config(pki), token_file=str(token_file))
    async with (
        serving(config) as (_, target),
        AgentClient(target, credentials=creds(pki, "ops-alice"), token=VIEWER_TOKEN) as c,
    ):
        m = await active_migration(c)
        with pytest.raises(PermissionDenied, match="token 'ci-bot' has viewer"):
            await c.abort(m.id)


# -- health, reflection and grpcurl without credentials ---------------------------------------


def grpcurl_path() -> str:
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert found, "grpcurl is missing from the venv: pip install -e '.[dev]'"
    return found


async def grpcurl(*args: str) -> tuple[int, str]:
    """Run grpcurl without blocking the in-process agent's loop; (status, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        grpcurl_path(), *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode()


@pytest_asyncio_mark
async def test_health_and_reflection_need_no_token(token_file: Path) -> None:
    """grpcurl lists services and checks health with no token; a read without one is refused."""
    async with serving(agent_config(token_file=str(token_file))) as (_, target):
        code, out = await grpcurl("-plaintext", target, "list")
        assert code == 0 and "migwatch.v1.MigrationService" in out, out
        code, out = await grpcurl("-plaintext", target, "grpc.health.v1.Health/Check")
        assert code == 0 and "SERVING" in out, out
        method = "migwatch.v1.MigrationService/ListMigrations"
        code, out = await grpcurl("-plaintext", "-d", "{}", target, method)
        assert code != 0 and "Unauthenticated" in out, out
        bearer = ("-H", f"authorization: Bearer {VIEWER_TOKEN}")
        code, out = await grpcurl("-plaintext", *bearer, "-d", "{}", target, method)
        assert code == 0, out


@pytest_asyncio_mark
async def test_grpcurl_with_client_certificates(pki: Pki) -> None:
    """The docs' grpcurl -cacert/-cert/-key lines work; a viewer's abort says PermissionDenied."""
    async with serving(mtls_config(pki)) as (_, target):
        cert, key = pki.client("viewer-bob")
        tls = ("-cacert", str(pki.ca), "-cert", str(cert), "-key", str(key))
        code, out = await grpcurl(*tls, target, "list")
        assert code == 0 and "migwatch.v1.MigrationService" in out, out
        data = '{"id": "a1823c35-4213-4f58-9463-51fe8ccabbf6.out.1"}'
        code, out = await grpcurl(
            *tls, "-d", data, target, "migwatch.v1.MigrationService/AbortMigration"
        )
        assert code != 0 and "PermissionDenied" in out and "needs the operator role" in out, out


# -- the CLI -------------------------------------------------------------------------------


@pytest_asyncio_mark
async def test_cli_token_flag_env_and_wrong_token(
    token_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--token, --token-file and MIGWATCH_TOKEN work; a wrong token is one line and exit 1."""
    async with serving(agent_config(token_file=str(token_file))) as (_, target):
        base = ["--agent", target, "list", "--json"]
        assert await asyncio.to_thread(cli.main, ["--token", VIEWER_TOKEN, *base]) == 0
        mine = tmp_path / "my-token"
        mine.write_text(VIEWER_TOKEN + "\n")
        assert await asyncio.to_thread(cli.main, ["--token-file", str(mine), *base]) == 0
        monkeypatch.setenv("MIGWATCH_TOKEN", VIEWER_TOKEN)
        assert await asyncio.to_thread(cli.main, base) == 0
        assert capsys.readouterr().out
        monkeypatch.setenv("MIGWATCH_TOKEN", "not-a-known-token-0123")
        for argv in (base, ["--agent", target, "get", "x"]):
            assert await asyncio.to_thread(cli.main, argv) == 1
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "not authenticated" in err[0], err
            assert "not-a-known-token" not in err[0]


@pytest_asyncio_mark
async def test_cli_certificates_from_flags_and_config_file(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ca/--cert/--key and client.toml carry the certificate; a viewer's abort is one line."""
    async with serving(mtls_config(pki)) as (_, target):
        cert, key = pki.client("viewer-bob")
        flags = ["--agent", target, "--ca", str(pki.ca), "--cert", str(cert), "--key", str(key)]
        assert await asyncio.to_thread(cli.main, [*flags, "list", "--json"]) == 0
        capsys.readouterr()
        conf = tmp_path / "client.toml"
        conf.write_text(f'ca = "{pki.ca}"\ncert = "{cert}"\nkey = "{key}"\n')
        monkeypatch.setenv("MIGWATCH_CONFIG", str(conf))
        async with AgentClient(target, credentials=creds(pki, "viewer-bob")) as client:
            m = await active_migration(client)
        assert await asyncio.to_thread(cli.main, ["--agent", target, "abort", m.id]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            len(err) == 1 and "permission denied: AbortMigration needs the operator role" in err[0]
        )


# -- the agent's command line ----------------------------------------------------------------


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migwatch.agent", *args],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith("migwatch-agent: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_non_loopback_listen_without_tls_exits_1(unused_port: int) -> None:
    """--listen 0.0.0.0:PORT without TLS exits 1 with one line naming --insecure and --tls-cert."""
    result = run_agent("--listen", f"0.0.0.0:{unused_port}")
    assert_one_line_error(result, f"0.0.0.0:{unused_port}", "--insecure", "--tls-cert")


def test_insecure_serves_non_loopback_with_a_warning(
    spawn_agent: SpawnAgent, unused_port: int
) -> None:
    """With --insecure the agent serves plaintext on 0.0.0.0 and logs a warning saying so."""
    agent = spawn_agent(
        "--insecure", "--listen", f"0.0.0.0:{unused_port}", "--log-level", "warning",
        port=unused_port, listen_flag=False,
    )  # fmt: skip
    assert "WARNING" in agent.output() and "--insecure: serving plaintext" in agent.output()


@pytest.fixture
def bad_files(tmp_path: Path, pki: Pki) -> Iterator[dict[str, Path]]:
    """A key that does not match the server certificate, a non-PEM CA, a short token."""
    files = {
        "wrong_key": pki.client("carol")[1],
        "not_pem": tmp_path / "ca.der",
        "short_tokens": tmp_path / "tokens",
    }
    files["not_pem"].write_bytes(b"\x30\x82\x01")
    files["short_tokens"].write_text("abc viewer\n")
    yield files


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--tls-cert", "/nonexistent/agent.crt", "--tls-key", "k"], ["tls_cert", "/nonexistent"]),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{wrong_key}"],
            ["tls_key", "not a PEM certificate"],
        ),
        (["--tls-cert", "{cert}"], ["both tls_cert and tls_key"]),
        (
            ["--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-client-ca", "{not_pem}"],
            ["tls_client_ca"],
        ),
        (["--token-file", "{short_tokens}"], ["line 1", "shorter than 16"]),
        (["--token-file", "/nonexistent/tokens"], ["token_file", "/nonexistent/tokens"]),
    ],
)
def test_bad_security_files_are_one_line_errors(
    flags: list[str], needles: list[str], bad_files: dict[str, Path], pki: Pki, unused_port: int
) -> None:
    """Missing or malformed TLS and token files exit 1 with one line naming the file."""
    names = {"cert": pki.server_cert, "key": pki.server_key, **bad_files}
    argv = [f.format(**{k: str(v) for k, v in names.items()}) for f in flags]
    result = run_agent(*argv, "--listen", f"127.0.0.1:{unused_port}")
    assert "Traceback" not in result.stderr
    assert_one_line_error(result, *needles)


def test_tls_agent_subprocess_serves_tls(
    spawn_agent: SpawnAgent, pki: Pki, unused_port: int
) -> None:
    """The agent command with --tls-cert/--tls-key serves TLS on 127.0.0.1 (health over TLS)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    spawn_agent("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                "--log-level", "warning", port=unused_port, wait=False)  # fmt: skip
    target = f"127.0.0.1:{unused_port}"
    tls = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    with grpc.secure_channel(target, tls) as chan:
        grpc.channel_ready_future(chan).result(timeout=15)
        reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def _server_pair(d: Path, stem: str) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{stem} CA", ca_key, None)
    _write(d / f"{stem}-ca", ca, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = _cert("agent", key, (ca, ca_key), sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    _write(d / stem, cert, key)
    return d / f"{stem}-ca.crt", d / f"{stem}.crt", d / f"{stem}.key"


def test_certificate_files_are_taken_only_when_changed_and_valid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No change: nothing new. A half-written renewal (new key, old certificate) is logged and
    skipped; the complete pair is then taken."""
    _, old_cert, old_key = _server_pair(tmp_path, "old")
    _, new_cert, new_key = _server_pair(tmp_path, "new")
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    cert.write_bytes(old_cert.read_bytes())
    key.write_bytes(old_key.read_bytes())
    now = [0.0]
    files = CertificateFiles(str(cert), str(key), None, check_s=1.0, clock=lambda: now[0])
    now[0] = 5.0
    assert files.fetch() is None  # unchanged
    key.write_bytes(new_key.read_bytes())
    now[0] = 5.5
    assert files.fetch() is None  # changed, but looked at less than a second ago
    now[0] = 7.0
    with caplog.at_level(logging.ERROR, logger="migwatch.agent.serve.auth"):
        assert files.fetch() is None  # the key no longer fits the certificate
    assert "cannot be used" in caplog.text and "keeping the ones loaded before" in caplog.text
    cert.write_bytes(new_cert.read_bytes())
    now[0] = 9.0
    assert isinstance(files.fetch(), grpc.ServerCertificateConfiguration)
    now[0] = 11.0
    assert files.fetch() is None  # taken once


@pytest_asyncio_mark
async def test_a_renewed_server_certificate_is_served_without_restart(tmp_path: Path) -> None:
    """The agent's certificate files are replaced while it runs (a new CA, even): the next
    connection gets the new certificate, which a client trusting only the old CA rejects."""
    old_ca, old_cert, old_key = _server_pair(tmp_path, "old")
    new_ca, new_cert, new_key = _server_pair(tmp_path, "new")
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    cert.write_bytes(old_cert.read_bytes())
    key.write_bytes(old_key.read_bytes())
    async with serving(agent_config(tls_cert=str(cert), tls_key=str(key))) as (_, target):
        async with AgentClient(target, credentials=client_credentials(ca=old_ca)) as client:
            assert await client.list() is not None
        key.write_bytes(new_key.read_bytes())
        cert.write_bytes(new_cert.read_bytes())
        await asyncio.sleep(1.2)  # the files are looked at no more than once a second
        async with AgentClient(target, credentials=client_credentials(ca=new_ca)) as client:
            async with asyncio.timeout(10):
                while True:  # the first handshake after the change may still be the old one
                    try:
                        await client.list()
                        break
                    except AgentUnavailable:
                        await asyncio.sleep(0.2)
        async with AgentClient(
            target, credentials=client_credentials(ca=old_ca), timeout_s=3
        ) as client:
            with pytest.raises(AgentUnavailable, match="cannot connect"):
                await client.list()
