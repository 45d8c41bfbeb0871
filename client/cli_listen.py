"""The ``migwatch listen`` subcommand: the agents' notifications from OpenStack's bus
(oslo.messaging), one line per event, ``--json``, or the live fleet table fed from the bus.

Apart from the gRPC commands because it never talks to an agent: it needs a transport URL
(``NOTIFY_ENV``) instead of ``--agent``, and the bus listener (``bus``) instead of a
``Fleet``.
"""

from __future__ import annotations

import argparse
import logging
import os

from rich.live import Live

from . import render
from .bus import watch_bus
from .cli_common import UsageError, print_json, print_line, redraw_live
from .notifications import format_bus_event, format_bus_event_jsonable

NOTIFY_ENV = "MIGWATCH_NOTIFY_URL"


async def cmd_listen(args: argparse.Namespace) -> int:
    if not args.notify_url:
        raise UsageError(f"listen needs --notify-url URL (or ${NOTIFY_ENV})")
    # A URL naming no driver is our one-line error, not stevedore's warning as well.
    logging.getLogger("stevedore").setLevel(logging.ERROR)
    if args.notify_config and not os.path.isfile(args.notify_config):
        raise UsageError(f"--notify-config {args.notify_config}: no such file")
    async with watch_bus(
        args.notify_url, args.notify_topic, pool=args.pool, config_file=args.notify_config
    ) as bus:
        if args.json:
            async for event, _ in bus:
                print_json(format_bus_event_jsonable(event))
        elif not args.fleet:
            async for event, _ in bus:
                print_line(format_bus_event(event))
        else:
            with Live(render.format_fleet(bus.snapshot()), auto_refresh=False) as live:
                await redraw_live(live, aiter(bus), bus.snapshot)
    return 0
