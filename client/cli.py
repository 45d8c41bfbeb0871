"""The ``migwatch`` command: watch and steer live migrations across agents.

Thin: argument parsing, one ``Fleet``, ``print_*`` calls around ``render.format_*``.
User errors (bad arguments, unreachable agents, refused requests) print one line on
stderr and exit with status 1.

This module is the entry point (``main``, and ``python -m migwatch.client.cli``); the
parser and help text are in ``cli_parser``, what the subcommands share in ``cli_common``,
and the subcommands in ``cli_watch`` (watch, list, get), ``cli_control`` (abort,
force-complete, set-limits), ``cli_plan`` (estimate, evacuate-estimate, drain-progress)
and ``cli_listen`` (listen).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from .cli_common import PROG, UsageError, print_error, print_json, print_line, print_rich
from .cli_listen import NOTIFY_ENV
from .cli_parser import EPILOG, build_parser
from .errors import MigwatchError

__all__ = [
    "EPILOG",
    "NOTIFY_ENV",
    "PROG",
    "UsageError",
    "build_parser",
    "main",
    "print_error",
    "print_json",
    "print_line",
    "print_rich",
]


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
        return _reader_gone()
    except BaseExceptionGroup as group:
        # `watch` prints from inside the fleet's TaskGroup, which wraps the error.
        _, rest = group.split(BrokenPipeError)
        if rest is not None:
            raise
        return _reader_gone()


def _reader_gone() -> int:
    """The reader (head, a closed jq) went away: not an error, status 0.

    Point stdout at devnull so the interpreter's final flush does not complain.
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
