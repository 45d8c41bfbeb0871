"""The ``migwatch`` command: watch and steer live migrations across agents.

Thin: argument parsing, one ``Fleet``, ``print_*`` calls around ``render.format_*``.
User errors (bad arguments, unreachable agents, refused requests) print one line on
stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from . import render
from .auth import ENV_CONFIG, load_client_auth
from .bus import DEFAULT_TOPIC, watch_bus
from .drain import DrainTracker
from .errors import MigwatchError
from .fleet import Fleet
from .model import FleetSnapshot, Migration
from .notifications import format_bus_event, format_bus_event_jsonable
from .targets import DEFAULT_TARGET, ENV_VAR, resolve_targets
from .units import parse_bandwidth, parse_duration

PROG = "migwatch"
NOTIFY_ENV = "MIGWATCH_NOTIFY_URL"
_REFRESH_S = 0.25  # the live table redraws at most this often...
_TICK_S = 1.0  # ...and at least this often, so staleness shows without updates

EPILOG = f"""\
agents:
  --agent HOST:PORT (repeatable), else ${ENV_VAR} (comma-separated),
  else {DEFAULT_TARGET}. With several agents, an ID is looked up on all of them;
  a unique prefix of an ID (as 'list' shows it) is enough.

credentials (agents with TLS or roles; docs/SECURITY.md):
  --ca FILE, --cert FILE --key FILE, --token-file FILE (or --token, which 'ps'
  shows); else $MIGWATCH_CA, $MIGWATCH_CERT, $MIGWATCH_KEY, $MIGWATCH_TOKEN,
  $MIGWATCH_TOKEN_FILE; else ${ENV_CONFIG} or ~/.config/migwatch/client.toml with
  ca, cert, key, token_file, tls keys. Watching needs the viewer role; abort,
  force-complete and set-limits need operator.

examples:
  migwatch watch                                   live table, worst first
  migwatch --agent hv1:50051 --agent hv2:50051 watch --json | jq .
  {ENV_VAR}=hv1:50051,hv2:50051 migwatch list
  migwatch get 3f9c1a2b                            one migration in detail
  migwatch set-limits 3f9c1a2b --max-downtime 500ms --max-bandwidth 2GiB/s
  migwatch force-complete 3f9c1a2b                 post-copy, else pause the guest
  migwatch abort 3f9c1a2b                          the guest stays on the source
  migwatch --agent hv1:50051 evacuate-estimate --concurrency 2
                                                   how long until hv1 is empty
  migwatch --agent hv1:50051 drain-progress        k of n moved, ~T left, live

'watch' redraws as updates arrive; an agent silent for 3 heartbeats (default
5s each) is shown UNREACHABLE and its rows stale, and is retried with backoff.

--json prints one JSON object per line on every command. Errors are one line on
stderr and exit status 1.
"""


class UsageError(Exception):
    """A bad command line; ``str()`` is the one-line message."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise ``UsageError`` instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # On the top parser the options have real defaults; on subcommands they are
    # SUPPRESSed so `migwatch --json list` and `migwatch list --json` both work.
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--agent",
        action="append",
        metavar="HOST:PORT",
        default=None if top else default,
        help=f"an agent to talk to; repeatable (default: ${ENV_VAR} or {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else default,
        help="print one JSON object per line instead of tables",
    )
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        default="10s" if top else default,
        help="deadline of each request, e.g. 3s (default 10s)",
    )
    for flag, help_ in (
        ("--ca", "PEM CA of the agents' certificates: use TLS (default $MIGWATCH_CA)"),
        ("--cert", "PEM client certificate, for mutual TLS (default $MIGWATCH_CERT)"),
        ("--key", "PEM private key of --cert (default $MIGWATCH_KEY)"),
        ("--token-file", "file holding a bearer token (default $MIGWATCH_TOKEN_FILE)"),
    ):
        parser.add_argument(flag, metavar="FILE", default=None if top else default, help=help_)
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        default=None if top else default,
        help="bearer token (default $MIGWATCH_TOKEN); visible to 'ps': prefer --token-file",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=False if top else default,
        help="use TLS trusting the system's CA roots (implied by --ca, --cert, --key)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, subcommands included."""
    parser = _Parser(
        prog=PROG,
        description="Watch live migrations (progress, ETA, convergence) across migwatch agents, "
        "and abort, force or re-limit them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_: str, func: Callable[[argparse.Namespace], Awaitable[int]]) -> Any:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p, top=False)
        p.set_defaults(func=func)
        return p

    w = add("watch", "live table of active migrations across agents, worst first", _cmd_watch)
    w.add_argument("--domain", metavar="NAME|UUID", help="only this domain")
    w.add_argument(
        "--include-finished", action="store_true", help="also report migrations that had ended"
    )
    w.add_argument(
        "--heartbeat",
        metavar="DURATION",
        default="5s",
        help="heartbeat interval asked of agents; an agent silent for 3 of them is "
        "marked unreachable (default 5s)",
    )
    ls = add("list", "list migrations on every agent, worst first", _cmd_list)
    ls.add_argument("--domain", metavar="NAME|UUID", help="only this domain")
    ls.add_argument("--include-finished", action="store_true", help="also list ended migrations")
    g = add("get", "show one migration", _cmd_get)
    g.add_argument("id", help="migration id, or a unique prefix of one, as shown by 'list'")
    a = add("abort", "abort a migration; the guest keeps running on the source", _cmd_abort)
    a.add_argument("id", help="migration id or unique prefix (the source end's)")
    f = add(
        "force-complete",
        "finish a migration now: post-copy where allowed, else pause the guest",
        _cmd_force_complete,
    )
    f.add_argument("id", help="migration id or unique prefix (the source end's)")
    s = add("set-limits", "change a migration's max downtime and/or bandwidth", _cmd_set_limits)
    s.add_argument("id", help="migration id or unique prefix (the source end's)")
    s.add_argument("--max-downtime", metavar="DURATION", help="e.g. 500ms, 1.5s")
    s.add_argument("--max-bandwidth", metavar="RATE", help="e.g. 100MiB/s, 1GB/s, 10Gbit/s")
    e = add(
        "estimate",
        "predict a migration of a running domain before starting it: duration with a "
        "band, whether it converges, and what would make it",
        _cmd_estimate,
    )
    e.add_argument("domain", metavar="DOMAIN", help="domain name or UUID, on any of the agents")
    e.add_argument(
        "--bandwidth", metavar="RATE", help="e.g. 100MiB/s (default: the domain's limit)"
    )
    e.add_argument("--max-downtime", metavar="DURATION", help="e.g. 500ms (default: the domain's)")
    e.add_argument(
        "--copy-storage", action="store_true", help="also copy its disks (non-shared storage)"
    )
    e.add_argument(
        "--auto-converge",
        action="store_true",
        help="it would be started with auto-converge (QEMU throttles the guest until it "
        "converges): predict along QEMU's throttle ladder",
    )
    for name, help_, func in (
        (
            "evacuate-estimate",
            (
                "predict how long until one agent's host is empty: every running guest (or each "
                "--domain, in that order) migrated away, N at a time, with a band; names guests "
                "that would not converge, with their remedy"
            ),
            _cmd_evacuate_estimate,
        ),
        (
            "drain-progress",
            (
                "follow a drain of one agent's host: k of n guests moved, ~T left (re-planned "
                "from what is left every --interval); ends when the host is empty"
            ),
            _cmd_drain_progress,
        ),
    ):
        v = add(name, help_, func)
        v.add_argument(
            "--domain",
            dest="domains",
            action="append",
            metavar="NAME|UUID",
            help="only this guest; repeat for several, in the order to start them",
        )
        v.add_argument(
            "--concurrency",
            type=int,
            metavar="N",
            help="migrations at a time (nova's max_concurrent_live_migrations; default 1)",
        )
        v.add_argument(
            "--bandwidth",
            metavar="RATE",
            help="per migration, e.g. 1GiB/s (default: each guest's limit)",
        )
        v.add_argument(
            "--link-bandwidth",
            metavar="RATE",
            help="the migrations share one link of this capacity: each gets at most RATE / N",
        )
        v.add_argument(
            "--max-downtime", metavar="DURATION", help="e.g. 500ms (default: each guest's)"
        )
        v.add_argument(
            "--auto-converge",
            action="store_true",
            help="the migrations will be started with auto-converge",
        )
        v.add_argument(
            "--post-copy",
            action="store_true",
            help="post-copy allowed: a guest that would not converge is switched "
            "to post-copy (nova's live_migration_permit_post_copy) and planned so",
        )
        if name == "drain-progress":
            v.add_argument(
                "--interval",
                metavar="DURATION",
                default="5s",
                help="re-plan this often (default 5s)",
            )
    b = add(
        "listen",
        "print the agents' notifications from OpenStack's bus (oslo.messaging) as they "
        "arrive: one line per event, --json, or --fleet for the live table fed from the bus",
        _cmd_listen,
    )
    b.add_argument(
        "--notify-url",
        metavar="URL",
        default=os.environ.get(NOTIFY_ENV),
        help=f"oslo.messaging transport URL, e.g. rabbit://user:pass@rabbit:5672/ "
        f"(default ${NOTIFY_ENV})",
    )
    b.add_argument(
        "--notify-topic",
        metavar="TOPIC",
        default=DEFAULT_TOPIC,
        help=f"the agents' --notify-topic (default {DEFAULT_TOPIC})",
    )
    b.add_argument(
        "--pool",
        metavar="NAME",
        help="consume the named queue shared by every listener of that pool and kept by the "
        "broker while nobody listens (default: a private queue, deleted on exit)",
    )
    b.add_argument(
        "--fleet",
        action="store_true",
        help="show the live fleet table (as 'watch'), fed from the bus",
    )
    return parser


# -- helpers ---------------------------------------------------------------------


def _parsed(parse: Callable[[str], Any], text: str) -> Any:
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _fleet(args: argparse.Namespace, **kwargs: Any) -> Fleet:
    targets = _parsed(lambda _: resolve_targets(args.agent, os.environ), "")
    domain = getattr(args, "domain", None) or ""
    kwargs.setdefault("timeout_s", _parsed(parse_duration, args.timeout))
    auth = _parsed(
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
    kwargs["credentials"] = _parsed(lambda _: auth.credentials(), "")
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


# -- commands --------------------------------------------------------------------


async def _cmd_watch(args: argparse.Namespace) -> int:
    heartbeat = _parsed(parse_duration, args.heartbeat)
    fleet = _fleet(args, include_finished=args.include_finished, heartbeat_interval_s=heartbeat)
    if args.json:
        async with fleet.watch() as updates:
            async for update in updates:
                print_json(render.update_to_jsonable(update))
        return 0
    loop = asyncio.get_running_loop()
    # auto_refresh off: every redraw happens here, on the loop thread that owns the state.
    with Live(render.format_fleet(fleet.snapshot()), auto_refresh=False) as live:
        async with fleet.watch() as updates:
            stream = aiter(updates)
            drawn = 0.0
            while True:
                try:
                    async with asyncio.timeout(_TICK_S):
                        await anext(stream)
                except TimeoutError:
                    pass
                if loop.time() - drawn >= _REFRESH_S:
                    live.update(render.format_fleet(fleet.snapshot()), refresh=True)
                    drawn = loop.time()


async def _cmd_listen(args: argparse.Namespace) -> int:
    if not args.notify_url:
        raise UsageError(f"listen needs --notify-url URL (or ${NOTIFY_ENV})")
    # A URL naming no driver is our one-line error, not stevedore's warning as well.
    logging.getLogger("stevedore").setLevel(logging.ERROR)
    async with watch_bus(args.notify_url, args.notify_topic, pool=args.pool) as bus:
        if args.json:
            async for event, _ in bus:
                print_json(format_bus_event_jsonable(event))
        elif not args.fleet:
            async for event, _ in bus:
                print_line(format_bus_event(event))
        else:
            loop = asyncio.get_running_loop()
            with Live(render.format_fleet(bus.snapshot()), auto_refresh=False) as live:
                stream = aiter(bus)
                drawn = 0.0
                while True:
                    try:
                        async with asyncio.timeout(_TICK_S):
                            await anext(stream)
                    except TimeoutError:
                        pass
                    if loop.time() - drawn >= _REFRESH_S:
                        live.update(render.format_fleet(bus.snapshot()), refresh=True)
                        drawn = loop.time()
    return 0


async def _cmd_list(args: argparse.Namespace) -> int:
    fleet = _fleet(args, include_finished=args.include_finished)
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


async def _cmd_get(args: argparse.Namespace) -> int:
    agent, m = await _fleet(args).find(args.id)
    if args.json:
        print_json(render.migration_to_jsonable(m, agent))
    else:
        print_line(render.format_migration(m, agent))
    return 0


async def _control(
    args: argparse.Namespace, verb: str, act: Callable[[Any, str], Awaitable[Migration]]
) -> int:
    fleet = _fleet(args)
    agent, found = await fleet.find(args.id)
    async with fleet.client(agent) as client:
        m = await act(client, found.id)
    if args.json:
        print_json(render.migration_to_jsonable(m, agent))
    else:
        print_line(render.format_action_result(verb, m, agent))
    return 0


async def _cmd_abort(args: argparse.Namespace) -> int:
    return await _control(args, "abort requested for", lambda c, i: c.abort(i))


async def _cmd_set_limits(args: argparse.Namespace) -> int:
    if args.max_downtime is None and args.max_bandwidth is None:
        raise UsageError("set-limits needs --max-downtime and/or --max-bandwidth")
    downtime = None if args.max_downtime is None else _parsed(parse_duration, args.max_downtime)
    bandwidth = None if args.max_bandwidth is None else _parsed(parse_bandwidth, args.max_bandwidth)
    return await _control(
        args,
        "limits set for",
        lambda c, i: c.set_limits(i, max_downtime_s=downtime, max_bandwidth=bandwidth),
    )


async def _cmd_force_complete(args: argparse.Namespace) -> int:
    fleet = _fleet(args)
    agent, found = await fleet.find(args.id)
    async with fleet.client(agent) as client:
        m, method = await client.force_complete(found.id)
    if args.json:
        print_json({**render.migration_to_jsonable(m, agent), "method": render.enum_name(method)})
    else:
        print_line(render.format_action_result("forced", m, agent, method))
    return 0


async def _cmd_estimate(args: argparse.Namespace) -> int:
    downtime = None if args.max_downtime is None else _parsed(parse_duration, args.max_downtime)
    bandwidth = None if args.bandwidth is None else _parsed(parse_bandwidth, args.bandwidth)
    agent, est = await _fleet(args).estimate(
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
    fleet = _fleet(args)
    if len(fleet.targets) != 1:
        raise UsageError(
            f"{args.command} plans one host: give exactly one --agent (got {len(fleet.targets)})"
        )
    return fleet, fleet.targets[0]


def _evacuation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    def rate(text: str | None) -> int | None:
        return None if text is None else int(_parsed(parse_bandwidth, text))

    return {
        "concurrency": args.concurrency,
        "bandwidth": rate(args.bandwidth),
        "link_bandwidth": rate(args.link_bandwidth),
        "max_downtime_s": (
            None if args.max_downtime is None else _parsed(parse_duration, args.max_downtime)
        ),
        "auto_converge": args.auto_converge,
        "post_copy": args.post_copy,
    }


async def _cmd_evacuate_estimate(args: argparse.Namespace) -> int:
    fleet, agent = _one_agent(args)
    async with fleet.client(agent) as client:
        plan = await client.estimate_evacuation(args.domains or (), **_evacuation_kwargs(args))
    if args.json:
        print_json({"agent": agent, **render.to_jsonable(plan)})
    else:
        print_rich(render.format_evacuation(plan, agent))
    return 0


async def _cmd_drain_progress(args: argparse.Namespace) -> int:
    fleet, agent = _one_agent(args)
    interval = _parsed(parse_duration, args.interval)
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


# -- entry point -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 user error, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
        status: int = asyncio.run(args.func(args))
        return status
    except (UsageError, MigwatchError) as exc:
        print_error(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, a closed jq) went away: not an error. Point stdout at
        # devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
