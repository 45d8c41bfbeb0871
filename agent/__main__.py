"""``migwatch-agent``: serve live-migration progress for this hypervisor over gRPC."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from migwatch.agent.config import BACKENDS, AgentConfig, ConfigError, build, load_toml

log = logging.getLogger("migwatch.agent")

_EPILOG = """\
examples:
  migwatch-agent                                  simulated migrations on 127.0.0.1:50051
  migwatch-agent --backend libvirt --listen 0.0.0.0:50051 \\
      --tls-cert agent.crt --tls-key agent.key --tls-client-ca clients-ca.crt --operator 'ops-*'
  migwatch-agent --backend qmp                    Proxmox VE: every /var/run/qemu-server/*.qmp
  migwatch-agent --backend replay --trace run.jsonl --speed 4
  migwatch-agent --config /etc/migwatch/agent.toml

then:
  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext -d '{}' 127.0.0.1:50051 migwatch.v1.MigrationService/WatchMigrations
  migwatch watch --agent 127.0.0.1:50051

A non-loopback --listen needs TLS (--tls-cert, --tls-key) or --insecure; see
docs/SECURITY.md for roles, token files and grpcurl with certificates.
Flags override the config file, which overrides the defaults. SIGINT or SIGTERM
stops the agent cleanly (streams end with UNAVAILABLE); a second one exits at once.
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit status 1, like every other user error."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(
        prog="migwatch-agent",
        description="Watch the live migrations on this hypervisor and stream their "
        "progress, ETA and convergence verdict over gRPC (migwatch.v1).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    p.add_argument(
        "--backend", choices=BACKENDS, help="where migrations come from (default simulated)"
    )
    p.add_argument(
        "--listen", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:50051)"
    )
    p.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="default info"
    )
    p.add_argument("--host-name", help="host name to report (default: the backend's)")
    g = p.add_argument_group("libvirt backend")
    g.add_argument(
        "--libvirt-uri",
        metavar="URI",
        help="default qemu:///system; qemu+tcp:// and qemu+ssh:// work",
    )
    g.add_argument(
        "--sample-interval",
        dest="sample_interval_s",
        type=float,
        metavar="S",
        help="seconds between job-stats samples of each migration (default 0.5)",
    )
    g.add_argument(
        "--preflight-interval",
        dest="preflight_interval_s",
        type=float,
        metavar="S",
        help="measure each idle guest's dirty rate about every S seconds, for "
        "EstimateMigration and the first pass's ETA (default 120; 0: off)",
    )
    g.add_argument(
        "--preflight-periods",
        dest="preflight_periods_s",
        type=_periods,
        metavar="S,S,...",
        help="page-sampling periods of one measurement, whole seconds 1-60 "
        "(default 1,2,4,8,16: short ones give the rate, long ones the hot set)",
    )
    g.add_argument(
        "--scan-interval",
        dest="scan_interval_s",
        type=float,
        metavar="S",
        help="look for new migration jobs every S seconds (default 1; an iteration event"
        " also triggers a scan)",
    )
    g.add_argument(
        "--migration-policy",
        type=_words,
        metavar="auto-converge,post-copy",
        help="what the control plane permits for migrations from this host (nova's"
        " live_migration_permit_auto_converge / _post_copy): a guest auto-converge will"
        " throttle is then not called NOT_CONVERGING before QEMU throttles it",
    )
    g.add_argument(
        "--preflight-concurrency",
        type=int,
        metavar="N",
        help="measure at most N guests at a time (default 4)",
    )
    g.add_argument(
        "--record-dir", metavar="DIR", help="record each migration as a trace file in DIR"
    )
    g = p.add_argument_group("qmp backend (QEMU without libvirt: Proxmox VE)")
    g.add_argument(
        "--qmp-sockets",
        metavar="GLOB",
        help="one guest per QMP socket matching GLOB, its id the file name "
        "(default /var/run/qemu-server/*.qmp); the libvirt backend's sampling, "
        "pre-flight and --record-dir flags apply too",
    )
    g = p.add_argument_group("replay backend")
    g.add_argument(
        "--trace",
        dest="traces",
        action="append",
        metavar="FILE",
        help="a recorded trace to replay (repeatable)",
    )
    g.add_argument("--speed", type=float, metavar="N", help="replay N times faster (default 1)")
    g = p.add_argument_group("simulated backend")
    g.add_argument(
        "--scenario",
        dest="simulated_scenarios",
        action="append",
        metavar="NAME[*N]",
        help="converging, slow, not-converging, disk, quick; repeatable (default: the first four)",
    )
    g.add_argument(
        "--sim-speed",
        dest="simulated_speed",
        type=float,
        metavar="N",
        help="run simulated time N times faster (default 1)",
    )
    g.add_argument(
        "--sim-drain",
        dest="simulated_drain",
        type=int,
        metavar="N",
        help="the simulated host drains its idle guests N at a time, for "
        "'migwatch drain-progress' to follow (default 0: it does not)",
    )
    g = p.add_argument_group("serving")
    g.add_argument(
        "--retention",
        dest="retention_s",
        type=float,
        metavar="S",
        help="keep finished migrations this many seconds (default 86400)",
    )
    g.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep finished migrations in DIR/finals.sqlite3, and what the libvirt backend "
        "learned about its host in DIR/learned.json, across restarts (default: in memory "
        "only)",
    )
    g.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics there: each active migration's progress, "
        "ETA and verdict (default: off; over TLS with --tls-cert)",
    )
    g.add_argument(
        "--max-subscribers", type=int, metavar="N", help="watch streams at most (default 10000)"
    )
    g.add_argument(
        "--slow-budget",
        dest="slow_budget_s",
        type=float,
        metavar="S",
        help="a migration expected to take longer than this is 'slow' (default 600)",
    )
    g.add_argument(
        "--migration-overhead",
        dest="migration_overhead_s",
        type=float,
        metavar="S",
        help="seconds each migration takes beyond its job's clock (source teardown until the "
        "migrate call returns), added to every guest of an evacuation plan (default 1.6)",
    )
    g = p.add_argument_group("notifications on OpenStack's bus (docs/NOTIFICATIONS.md)")
    g.add_argument(
        "--notify-url",
        metavar="URL",
        help="publish start, progress and end of each migration with oslo.messaging, "
        "e.g. rabbit://user:pass@rabbit-host:5672/ (default: off; needs 'migwatch[notify]')",
    )
    g.add_argument(
        "--notify-topic",
        metavar="TOPIC",
        help="notification topic (default migwatch_notifications)",
    )
    g.add_argument(
        "--notify-interval",
        dest="notify_interval_s",
        type=float,
        metavar="S",
        help="progress of a migration at most every S seconds, and at once on a change of "
        "phase or verdict (default 10)",
    )
    g.add_argument(
        "--notify-config",
        metavar="FILE",
        help="oslo.config file with your deployment's messaging settings, e.g. a copy of "
        "nova.conf ([oslo_messaging_rabbit] amqp_durable_queues, rabbit_quorum_queue, ssl; "
        "[DEFAULT] control_exchange): RabbitMQ refuses a publisher whose queue settings "
        "differ from the existing ones (default: oslo.messaging's defaults)",
    )
    g = p.add_argument_group("security (docs/SECURITY.md)")
    g.add_argument("--tls-cert", metavar="FILE", help="PEM server certificate (chain); serve TLS")
    g.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    g.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="PEM CA: require client certificates it signed (mutual TLS)",
    )
    g.add_argument(
        "--token-file",
        metavar="FILE",
        help="bearer tokens, 'TOKEN ROLE [NAME]' per line (re-read when it changes)",
    )
    g.add_argument(
        "--operator",
        dest="operators",
        action="append",
        metavar="PATTERN",
        help="client-certificate names (CN or SAN DNS, wildcards) with the operator "
        "role; repeatable (default: none)",
    )
    g.add_argument(
        "--viewer",
        dest="viewers",
        action="append",
        metavar="PATTERN",
        help="... with the viewer role; repeatable (default: '*', any certificate)",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow plaintext on a non-loopback --listen (logs a warning)",
    )
    return p.parse_args(argv)


def _periods(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of whole seconds, e.g. 1,2,4,8,16"
        ) from None


def _words(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def load_config(args: argparse.Namespace) -> AgentConfig:
    file_values: dict[str, Any] = load_toml(args.config) if args.config else {}
    overrides = {k: v for k, v in vars(args).items() if k != "config"}
    for key in (
        "traces",
        "simulated_scenarios",
        "operators",
        "viewers",
        "preflight_periods_s",
        "migration_policy",
    ):
        if overrides.get(key) is not None:
            overrides[key] = tuple(overrides[key])
    return build(file_values, overrides)


async def amain(config: AgentConfig) -> int:
    from migwatch.agent.serve.server import Agent

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            sys.exit(1)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    agent = Agent(config)
    await agent.start()
    crashed = asyncio.create_task(agent.wait_for_backend())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait((crashed, stopped), return_when=asyncio.FIRST_COMPLETED)
    for task in (crashed, stopped):
        task.cancel()
    await agent.stop()
    return 1 if crashed.done() and not crashed.cancelled() and not stop.is_set() else 0


def main(argv: list[str] | None = None) -> None:
    # gRPC's C core writes its own errors to stderr (e.g. a second line for an
    # address it cannot bind); ours say the same in one line. GRPC_VERBOSITY=ERROR
    # brings them back for debugging.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    args = parse_args(argv)
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"migwatch-agent: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Their debug output is per fd event: unreadable next to ours.
    # oslo.messaging logs every failed publish with a traceback; the bus publisher logs
    # one line per outage instead.
    logging.getLogger("oslo_messaging").setLevel(
        logging.DEBUG if config.log_level == "debug" else logging.CRITICAL
    )
    # Their start-up chatter ("Loading backend", a driver not found): ours says it in one line.
    for chatty in ("oslo_service", "stevedore"):
        logging.getLogger(chatty).setLevel(max(logging.ERROR, logging.getLogger().level))
    for noisy in ("virEventAsyncIOImpl", "grpc._cython.cygrpc", "asyncio", "qemu.qmp"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))
    # qemu.qmp logs a monitor we gave up waiting for (another client held it) as an ERROR;
    # the QMP backend gets the same as an exception and logs it at the level it deserves.
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    try:
        code = asyncio.run(amain(config))
    except ConfigError as exc:
        print(f"migwatch-agent: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
