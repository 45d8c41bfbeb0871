"""Bearer tokens: the token file's format, its constant-time lookup, and re-reading it.

Only a token's SHA-256 is kept, and no token is ever logged or put in a message: only its
name. ``parse_tokens``, ``find_token`` and ``bearer_token`` are pure; ``TokenFile`` reads
the file and re-reads it when it changes.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from migwatch.agent.config import ConfigError
from migwatch.agent.serve.auth.roles import Role

log = logging.getLogger(__name__)

MIN_TOKEN_LENGTH = 16
TOKEN_HINT = "generate one with: openssl rand -hex 24"


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One line of the token file. Only the token's SHA-256 is kept."""

    digest: bytes = field(repr=False)
    role: Role
    name: str
    line: int


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
                f"line {number}: the token is shorter than {MIN_TOKEN_LENGTH} characters; "
                f"{TOKEN_HINT}"
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


def read_file(path: str, setting: str) -> bytes:
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
            self._entries = parse_tokens(read_file(path, "token_file").decode(errors="replace"))
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
