"""What every ``migwatch`` subcommand shares: the user-error type, turning the common options
into a ``Fleet``, and the thin ``print_*`` around ``render.format_*``.

Apart from the parser (``cli_parser``) and the handlers (``cli_watch``, ``cli_control``,
``cli_plan``, ``cli_listen``) so that each of those imports it and none imports another:
the parser names the handlers, the handlers need only this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.live import Live

from . import render
from .auth import load_client_auth
from .fleet import Fleet
from .model import FleetSnapshot
from .targets import resolve_targets
from .units import parse_duration

PROG = "migwatch"
REFRESH_S = 0.25  # the live table redraws at most this often...
TICK_S = 1.0  # ...and at least this often, so staleness shows without updates


async def redraw_live(
    live: Live, stream: AsyncIterator[object], snapshot: Callable[[], FleetSnapshot]
) -> None:
    """Redraw the fleet table in ``live`` from ``snapshot()`` as ``stream`` delivers, at most
    every ``REFRESH_S`` and at least every ``TICK_S``; until cancelled (Ctrl-C). ``live``
    has auto_refresh off: every redraw happens here, on the loop thread that owns the state.
    ``watch`` (gRPC) and ``listen --fleet`` (the bus) draw the same table this way."""
    loop = asyncio.get_running_loop()
    drawn = 0.0
    while True:
        try:
            async with asyncio.timeout(TICK_S):
                await anext(stream)
        except TimeoutError:
            pass
        if loop.time() - drawn >= REFRESH_S:
            live.update(render.format_fleet(snapshot()), refresh=True)
            drawn = loop.time()


class UsageError(Exception):
    """A bad command line; ``str()`` is the one-line message."""


def parsed(parse: Callable[[str], Any], text: str) -> Any:
    """``parse(text)``, a ``ValueError`` turned into the user's one-line ``UsageError``."""
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def fleet_of(args: argparse.Namespace, **kwargs: Any) -> Fleet:
    """The ``Fleet`` the common options name (agents, deadline, credentials, --domain)."""
    targets = parsed(lambda _: resolve_targets(args.agent, os.environ), "")
    domain = getattr(args, "domain", None) or ""
    kwargs.setdefault("timeout_s", parsed(parse_duration, args.timeout))
    auth = parsed(
        lambda _: load_client_auth(
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            tls=args.tls,
            token=args.token,
            token_file=args.token_file,
        ),
        "",
    )
    kwargs["credentials"] = parsed(lambda _: auth.credentials(), "")
    kwargs["token"] = auth.token or None
    if domain:
        kwargs["domain_uuid" if _is_uuid(domain) else "domain_name"] = domain
    return Fleet(targets, **kwargs)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def print_line(text: str, out: TextIO | None = None) -> None:
    """One line of output, flushed (pipes into jq see it at once)."""
    print(text, file=out or sys.stdout, flush=True)


def print_json(value: Any) -> None:
    print_line(render.format_json(value))


def print_rich(renderable: RenderableType) -> None:
    Console(soft_wrap=False).print(renderable)


def print_error(message: str) -> None:
    print_line(f"{PROG}: {message}", sys.stderr)
