"""Client credentials: TLS (the agents' CA, a client certificate) and a bearer token.

``client_credentials`` builds gRPC channel credentials from PEM files; ``load_client_auth``
gathers every setting the way the CLI does. Each setting comes from the first of:

1. an explicit argument (the CLI's ``--ca``, ``--cert``, ``--key``, ``--tls``,
   ``--token``, ``--token-file``);
2. the environment: ``MIGWATCH_CA``, ``MIGWATCH_CERT``, ``MIGWATCH_KEY``,
   ``MIGWATCH_TOKEN``, ``MIGWATCH_TOKEN_FILE``;
3. the client config file: ``$MIGWATCH_CONFIG``, else
   ``${XDG_CONFIG_HOME:-~/.config}/migwatch/client.toml`` if it exists::

       ca = "ca.crt"              # relative paths are relative to this file
       cert = "alice.crt"         # cert and key: mutual TLS
       key = "alice.key"
       token_file = "token"       # or: token = "..."
       tls = true                 # TLS with the system's CA roots when no ca is given

TLS is on when any of ca, cert, key or tls is set. Errors are ``ValueError`` with a
one-line message. Tokens are never part of a message or a ``repr``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ENV_CA = "MIGWATCH_CA"
ENV_CERT = "MIGWATCH_CERT"
ENV_KEY = "MIGWATCH_KEY"
ENV_TOKEN = "MIGWATCH_TOKEN"
ENV_TOKEN_FILE = "MIGWATCH_TOKEN_FILE"
ENV_CONFIG = "MIGWATCH_CONFIG"
CONFIG_KEYS = ("ca", "cert", "key", "tls", "token", "token_file")
_PATH_KEYS = ("ca", "cert", "key", "token_file")

PemSource = str | os.PathLike[str] | bytes


@dataclass(frozen=True, slots=True)
class ClientAuth:
    """Resolved client settings: PEM file paths ("" for none), TLS on or off, the token."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    tls: bool = False
    token: str = field(default="", repr=False)

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.ca or self.cert or self.key)

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials for these settings; ``None`` for plaintext."""
        if not self.uses_tls:
            return None
        return client_credentials(ca=self.ca or None, cert=self.cert or None, key=self.key or None)


def _pem(source: PemSource, what: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        try:
            data = Path(source).expanduser().read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the {what} {os.fspath(source)}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        where = "" if isinstance(source, bytes) else f" {os.fspath(source)}"
        raise ValueError(f"the {what}{where} is not PEM (no '-----BEGIN' line)")
    return data


def client_credentials(
    ca: PemSource | None = None, cert: PemSource | None = None, key: PemSource | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials for ``AgentClient`` and ``Fleet``.

    Args:
        ca: PEM file (path) or PEM bytes of the CA that signed the agents' certificates;
            ``None`` trusts the system's CA roots.
        cert, key: this client's certificate and private key, for agents that require
            client certificates (mutual TLS). Both or neither.

    Raises:
        ValueError: a file is unreadable or not PEM, or only one of cert and key is given.
    """
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both cert and key (--cert, --key)")
    return grpc.ssl_channel_credentials(
        root_certificates=None if ca is None else _pem(ca, "CA certificate"),
        private_key=None if key is None else _pem(key, "client key"),
        certificate_chain=None if cert is None else _pem(cert, "client certificate"),
    )


def check_token(token: str) -> str:
    """``token`` stripped, when it can travel as a header value.

    Raises:
        ValueError: empty, or it holds spaces or control characters.
    """
    token = token.strip()
    if not token:
        raise ValueError("the bearer token is empty")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the bearer token must be printable ASCII without spaces")
    return token


def read_token_file(path: str) -> str:
    """The token in ``path``: its first line that is neither empty nor a ``#`` comment."""
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the token file {path}: {exc.strerror}") from exc
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return check_token(line)
    raise ValueError(f"the token file {path} holds no token")


def config_path(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The client config file, and whether it was named explicitly (then it must exist)."""
    if environ.get(ENV_CONFIG):
        return Path(environ[ENV_CONFIG]).expanduser(), True
    base = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME", "~"), ".config")
    return Path(base).expanduser() / "migwatch" / "client.toml", False


def load_config(path: Path, required: bool) -> dict[str, Any]:
    """The settings of a client config file, paths made absolute; ``{}`` if it is
    optional and absent.

    Raises:
        ValueError: unreadable, not TOML, or an unknown key or wrong type.
    """
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise ValueError(f"client config {path} ({ENV_CONFIG}) does not exist") from None
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read client config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"client config {path} is not valid TOML: {exc}") from exc
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in CONFIG_KEYS:
            raise ValueError(
                f"client config {path}: unknown setting {key!r}; known: {', '.join(CONFIG_KEYS)}"
            )
        kind_ok = isinstance(value, bool) if name == "tls" else isinstance(value, str)
        if not kind_ok:
            kind = "true or false" if name == "tls" else "a string"
            raise ValueError(f"client config {path}: {key} must be {kind}")
        if name in _PATH_KEYS:
            value = str(path.parent / Path(value).expanduser())
        values[name] = value
    return values


def resolve(layers: list[Mapping[str, Any]]) -> ClientAuth:
    """Merge setting layers, first wins per setting; the token from the first layer that
    has ``token`` or ``token_file``.

    Raises:
        ValueError: a layer gives both token and token_file, or a token is unusable.
    """

    def first(name: str) -> Any:
        return next((layer[name] for layer in layers if layer.get(name)), None)

    token = ""
    for layer in layers:
        if layer.get("token") and layer.get("token_file"):
            raise ValueError("give a token or a token file, not both")
        if layer.get("token"):
            token = check_token(layer["token"])
            break
        if layer.get("token_file"):
            token = read_token_file(layer["token_file"])
            break
    return ClientAuth(
        ca=first("ca") or "",
        cert=first("cert") or "",
        key=first("key") or "",
        tls=bool(first("tls")),
        token=token,
    )


def load_client_auth(
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    tls: bool = False,
    token: str | None = None,
    token_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientAuth:
    """The client's TLS files and token: arguments, else environment, else config file.

    ::

        auth = load_client_auth()
        fleet = Fleet(credentials=auth.credentials(), token=auth.token or None)

    Raises:
        ValueError: a one-line message naming the bad setting or file.
    """
    env = os.environ if environ is None else environ
    explicit = {"ca": ca, "cert": cert, "key": key, "tls": tls, "token": token,
                "token_file": token_file}  # fmt: skip
    from_env = {
        "ca": env.get(ENV_CA),
        "cert": env.get(ENV_CERT),
        "key": env.get(ENV_KEY),
        "token": env.get(ENV_TOKEN),
        "token_file": env.get(ENV_TOKEN_FILE),
    }
    auth = resolve([explicit, from_env, load_config(*config_path(env))])
    if bool(auth.cert) != bool(auth.key):
        raise ValueError("a client certificate needs both cert and key (--cert, --key)")
    return auth
