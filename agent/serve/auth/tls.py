"""TLS: the agent's certificate, key and client CA, checked at start and re-read on renewal."""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable

import grpc
from migwatch.agent.config import AgentConfig, ConfigError
from migwatch.agent.serve.auth.tokens import read_file

log = logging.getLogger(__name__)


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


def _load_tls(
    cert_path: str, key_path: str, ca_path: str | None
) -> grpc.ServerCertificateConfiguration:
    """Read and check the PEM files; raises ConfigError naming the file at fault."""
    cert = read_file(cert_path, "tls_cert")
    key = read_file(key_path, "tls_key")
    ca = read_file(ca_path, "tls_client_ca") if ca_path else None
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

    def __init__(
        self,
        cert: str,
        key: str,
        ca: str | None,
        *,
        check_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
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
                log.error(
                    "TLS files changed but cannot be used: %s; keeping the ones loaded before", exc
                )
                return None  # retried at the next change (or the second half of a renewal)
            self._signature = signature
            log.info("TLS certificate files re-read: %s", ", ".join(p for p in self._paths if p))
            return config
        except Exception:  # never let a reload break a handshake
            log.exception("re-reading the TLS files failed; keeping the ones loaded before")
            return None
