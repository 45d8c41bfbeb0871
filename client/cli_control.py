"""The ``migwatch`` subcommands that steer a running migration: ``abort``, ``force-complete``
and ``set-limits``.

Operator role, and each acts on the source end of one migration found by id: apart from the
read-only ones (``cli_watch``) because they change what they show.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from . import render
from .cli_common import UsageError, fleet_of, parsed, print_json, print_line
from .model import Migration
from .units import parse_bandwidth, parse_duration


async def _control(
    args: argparse.Namespace, verb: str, act: Callable[[Any, str], Awaitable[Migration]]
) -> int:
    fleet = fleet_of(args)
    agent, found = await fleet.find(args.id)
    async with fleet.client(agent) as client:
        m = await act(client, found.id)
    if args.json:
        print_json(render.migration_to_jsonable(m, agent))
    else:
        print_line(render.format_action_result(verb, m, agent))
    return 0


async def cmd_abort(args: argparse.Namespace) -> int:
    return await _control(args, "abort requested for", lambda c, i: c.abort(i))


async def cmd_set_limits(args: argparse.Namespace) -> int:
    if args.max_downtime is None and args.max_bandwidth is None:
        raise UsageError("set-limits needs --max-downtime and/or --max-bandwidth")
    downtime = None if args.max_downtime is None else parsed(parse_duration, args.max_downtime)
    bandwidth = None if args.max_bandwidth is None else parsed(parse_bandwidth, args.max_bandwidth)
    return await _control(
        args,
        "limits set for",
        lambda c, i: c.set_limits(i, max_downtime_s=downtime, max_bandwidth=bandwidth),
    )


async def cmd_force_complete(args: argparse.Namespace) -> int:
    fleet = fleet_of(args)
    agent, found = await fleet.find(args.id)
    async with fleet.client(agent) as client:
        m, method = await client.force_complete(found.id)
    if args.json:
        print_json({**render.migration_to_jsonable(m, agent), "method": render.enum_name(method)})
    else:
        print_line(render.format_action_result("forced", m, agent, method))
    return 0
