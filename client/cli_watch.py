"""The ``migwatch`` subcommands that look at migrations: ``watch`` (the live table), ``list``
and ``get``.

Read-only, viewer role: apart from the controls (``cli_control``) that change a migration
and the planners (``cli_plan``) that predict one.
"""

from __future__ import annotations

import argparse

from rich.live import Live

from . import render
from .cli_common import (
    fleet_of,
    parsed,
    print_error,
    print_json,
    print_line,
    print_rich,
    redraw_live,
)
from .model import FleetSnapshot
from .units import parse_duration


async def cmd_watch(args: argparse.Namespace) -> int:
    heartbeat = parsed(parse_duration, args.heartbeat)
    fleet = fleet_of(args, include_finished=args.include_finished, heartbeat_interval_s=heartbeat)
    if args.json:
        async with fleet.watch() as updates:
            async for update in updates:
                print_json(render.update_to_jsonable(update))
        return 0
    with Live(render.format_fleet(fleet.snapshot()), auto_refresh=False) as live:
        async with fleet.watch() as updates:
            await redraw_live(live, aiter(updates), fleet.snapshot)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    fleet = fleet_of(args, include_finished=args.include_finished)
    snap = await fleet.fetch_snapshot()
    if len(snap.unreachable()) == len(snap.agents):
        return _report_unreachable(snap)  # nothing to show but the error
    if args.json:
        for fm in snap.migrations + snap.finished:
            for agent, end in (
                (fm.source_agent, fm.source),
                (fm.destination_agent, fm.destination),
            ):
                if end is not None and agent is not None:
                    print_json(render.migration_to_jsonable(end, agent))
    else:
        print_rich(render.format_agents(snap.agents))
        if snap.migrations:
            print_rich(render.format_fleet_table(snap.migrations, show_ids=True))
        if snap.finished:
            print_rich(render.format_fleet_table(snap.finished, show_ids=True, title="finished"))
        if not snap.migrations and not snap.finished:
            print_line("no migrations")
    return _report_unreachable(snap)


def _report_unreachable(snap: FleetSnapshot) -> int:
    down = snap.unreachable()
    if down:
        # "TARGET: why", e.g. "cannot connect: ..." or "not authenticated: ...".
        print_error("; ".join(f"{a.target}: {a.error}" for a in down))
        return 1
    return 0


async def cmd_get(args: argparse.Namespace) -> int:
    agent, m = await fleet_of(args).find(args.id)
    if args.json:
        print_json(render.migration_to_jsonable(m, agent))
    else:
        print_line(render.format_migration(m, agent))
    return 0
