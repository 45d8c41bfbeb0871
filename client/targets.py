"""Which agents to talk to: ``host:port`` targets from arguments or ``MIGWATCH_AGENTS``. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ENV_VAR = "MIGWATCH_AGENTS"
DEFAULT_TARGET = "127.0.0.1:50051"


def parse_target(text: str) -> str:
    """Validate one ``host:port`` (``[v6addr]:port`` for IPv6) and return it stripped.

    gRPC target URIs (``dns:///...``, ``unix:...``, ``ipv4:...``) pass through as given.

    Raises:
        ValueError: with a one-line message when ``text`` is not a usable target.
    """
    t = text.strip()
    if "://" in t or t.startswith(("unix:", "ipv4:", "ipv6:", "dns:")):
        return t
    host, sep, port = t.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"bad agent address {text!r}: write IPv6 hosts as [addr]:port")
    if not sep or not host:
        raise ValueError(f"bad agent address {text!r}: expected HOST:PORT, e.g. 10.0.0.7:50051")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad agent address {text!r}: port must be a number within 1..65535")
    return t


def resolve_targets(explicit: Iterable[str] | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The targets to use: ``explicit`` if any, else ``MIGWATCH_AGENTS``
    (comma-separated), else ``127.0.0.1:50051``. Duplicates are dropped, order kept.

    Raises:
        ValueError: a target is malformed.
    """
    items = [s for s in (explicit or ()) if s.strip()]
    if not items:
        items = [s for s in environ.get(ENV_VAR, "").split(",") if s.strip()]
    if not items:
        items = [DEFAULT_TARGET]
    return tuple(dict.fromkeys(parse_target(s) for s in items))
