"""The ``migwatch`` command line: the parser, its subcommands' options and the help text.

Apart from the handlers (``cli_watch``, ``cli_control``, ``cli_plan``, ``cli_listen``)
because it is the one place that says what the command accepts, and what ``--help`` shows;
each subcommand's parser names its handler (``func``), which ``cli.main`` runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from .auth import ENV_CONFIG
from .bus import DEFAULT_TOPIC
from .cli_common import PROG, UsageError
from .cli_control import cmd_abort, cmd_force_complete, cmd_set_limits
from .cli_listen import NOTIFY_ENV, cmd_listen
from .cli_plan import cmd_drain_progress, cmd_estimate, cmd_evacuate_estimate
from .cli_watch import cmd_get, cmd_list, cmd_watch
from .targets import DEFAULT_TARGET, ENV_VAR

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

LISTEN_EPILOG = f"""\
bus:
  --notify-url URL, else ${NOTIFY_ENV}: the oslo.messaging transport the agents publish
  to (their --notify-url); --notify-config FILE for the deployment's [oslo_messaging_*]
  settings (durable or quorum queues, TLS, control_exchange). No agent is contacted.

examples:
  migwatch listen --notify-url rabbit://user:pass@rabbit:5672/   one line per event
  migwatch listen --json | jq 'select(.event_type | endswith(".end"))'
  migwatch listen --fleet                          live table, as 'watch', from the bus
  migwatch listen --pool ops                       a queue kept while nobody listens
"""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors raise ``UsageError`` instead of printing usage and exiting 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser, *, top: bool, grpc: bool = True) -> None:
    # On the top parser the options have real defaults; on subcommands they are
    # SUPPRESSed so `migwatch --json list` and `migwatch list --json` both work.
    # ``grpc``: the subcommand talks to agents (not 'listen', which reads the bus).
    default: Any = argparse.SUPPRESS
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else default,
        help="print one JSON object per line instead of tables",
    )
    if not grpc:
        return
    parser.add_argument(
        "--agent",
        action="append",
        metavar="HOST:PORT",
        default=None if top else default,
        help=f"an agent to talk to; repeatable (default: ${ENV_VAR} or {DEFAULT_TARGET})",
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

    def add(
        name: str,
        help_: str,
        func: Callable[[argparse.Namespace], Awaitable[int]],
        *,
        grpc: bool = True,
        epilog: str = EPILOG,
    ) -> Any:
        p = sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(p, top=False, grpc=grpc)
        p.set_defaults(func=func)
        return p

    w = add("watch", "live table of active migrations across agents, worst first", cmd_watch)
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
    ls = add("list", "list migrations on every agent, worst first", cmd_list)
    ls.add_argument("--domain", metavar="NAME|UUID", help="only this domain")
    ls.add_argument("--include-finished", action="store_true", help="also list ended migrations")
    g = add("get", "show one migration", cmd_get)
    g.add_argument("id", help="migration id, or a unique prefix of one, as shown by 'list'")
    a = add("abort", "abort a migration; the guest keeps running on the source", cmd_abort)
    a.add_argument("id", help="migration id or unique prefix (the source end's)")
    f = add(
        "force-complete",
        "finish a migration now: post-copy where allowed, else pause the guest",
        cmd_force_complete,
    )
    f.add_argument("id", help="migration id or unique prefix (the source end's)")
    s = add("set-limits", "change a migration's max downtime and/or bandwidth", cmd_set_limits)
    s.add_argument("id", help="migration id or unique prefix (the source end's)")
    s.add_argument("--max-downtime", metavar="DURATION", help="e.g. 500ms, 1.5s")
    s.add_argument("--max-bandwidth", metavar="RATE", help="e.g. 100MiB/s, 1GB/s, 10Gbit/s")
    e = add(
        "estimate",
        "predict a migration of a running domain before starting it: duration with a "
        "band, whether it converges, and what would make it",
        cmd_estimate,
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
            cmd_evacuate_estimate,
        ),
        (
            "drain-progress",
            (
                "follow a drain of one agent's host: k of n guests moved, ~T left (re-planned "
                "from what is left every --interval); ends when the host is empty"
            ),
            cmd_drain_progress,
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
        v.add_argument(
            "--copy-storage",
            action="store_true",
            help="the migrations also copy the guests' disks, first (local storage: "
            "libvirt's non-shared disk, Proxmox's local disks)",
        )
        if name == "evacuate-estimate":
            v.add_argument(
                "--svg",
                metavar="FILE",
                help="also write the plan as a picture (a chart of each guest's migration "
                "over time, the total and its band) to FILE",
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
        cmd_listen,
        grpc=False,
        epilog=LISTEN_EPILOG,
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
        "--notify-config",
        metavar="FILE",
        default="",
        help="oslo.config file with the deployment's messaging settings (as the agents' "
        "--notify-config: durable or quorum queues, TLS, control_exchange)",
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
