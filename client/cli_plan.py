"""The ``migwatch`` subcommands that predict: ``estimate`` (one migration before it starts),
``evacuate-estimate`` (how long until a host is empty) and ``drain-progress`` (a drain
followed live, re-planned from what is left).

Apart from the watching and steering commands because they ask the agent's planner rather
than follow running jobs, and the two host-level ones share their options and the
one-agent rule.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.text import Text

from . import render
from .cli_common import UsageError, fleet_of, parsed, print_json, print_line, print_rich
from .drain import DrainTracker
from .fleet import Fleet
from .plan_svg import plan_svg
from .units import parse_bandwidth, parse_duration


async def cmd_estimate(args: argparse.Namespace) -> int:
    downtime = None if args.max_downtime is None else parsed(parse_duration, args.max_downtime)
    bandwidth = None if args.bandwidth is None else parsed(parse_bandwidth, args.bandwidth)
    agent, est = await fleet_of(args).estimate(
        args.domain,
        bandwidth=bandwidth,
        max_downtime_s=downtime,
        copy_storage=args.copy_storage,
        auto_converge=args.auto_converge,
    )
    if args.json:
        print_json({"agent": agent, **render.to_jsonable(est)})
    else:
        print_line(render.format_estimate(est, agent))
    return 0


def _one_agent(args: argparse.Namespace) -> tuple[Fleet, str]:
    fleet = fleet_of(args)
    if len(fleet.targets) != 1:
        raise UsageError(
            f"{args.command} plans one host: give exactly one --agent (got {len(fleet.targets)})"
        )
    return fleet, fleet.targets[0]


def _evacuation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    def rate(text: str | None) -> int | None:
        return None if text is None else int(parsed(parse_bandwidth, text))

    return {
        "concurrency": args.concurrency,
        "bandwidth": rate(args.bandwidth),
        "link_bandwidth": rate(args.link_bandwidth),
        "max_downtime_s": (
            None if args.max_downtime is None else parsed(parse_duration, args.max_downtime)
        ),
        "auto_converge": args.auto_converge,
        "post_copy": args.post_copy,
        "copy_storage": args.copy_storage,
    }


async def cmd_evacuate_estimate(args: argparse.Namespace) -> int:
    fleet, agent = _one_agent(args)
    async with fleet.client(agent) as client:
        plan = await client.estimate_evacuation(args.domains or (), **_evacuation_kwargs(args))
    if args.svg:
        try:
            Path(args.svg).write_text(plan_svg(plan, agent))
        except OSError as exc:
            raise UsageError(f"--svg {args.svg}: cannot write it: {exc.strerror}") from exc
    if args.json:
        print_json({"agent": agent, **render.to_jsonable(plan)})
    else:
        print_rich(render.format_evacuation(plan, agent))
    return 0


async def cmd_drain_progress(args: argparse.Namespace) -> int:
    fleet, agent = _one_agent(args)
    interval = parsed(parse_duration, args.interval)
    kwargs = _evacuation_kwargs(args)
    tracker = DrainTracker()
    live = None if args.json else Live(auto_refresh=False)
    departed_ok = False  # the first plan refuses a mistyped --domain
    async with fleet.client(agent) as client:
        with live or contextlib.nullcontext():
            while True:
                plan = await client.estimate_evacuation(
                    args.domains or (), allow_departed=departed_ok, **kwargs
                )
                departed_ok = True  # from now on a named guest that is gone has moved
                progress = tracker.apply(plan)
                if live is None:
                    print_json({"agent": agent, **render.to_jsonable(progress)})
                else:
                    line = Text(render.format_drain_progress(progress), style="bold")
                    live.update(Group(line, render.format_evacuation(plan, agent)), refresh=True)
                if progress.empty:
                    return 0
                await asyncio.sleep(interval)
