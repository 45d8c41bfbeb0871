"""Entry point of the ``migwatch`` command.

gRPC's C core prints its own log lines to stderr (e.g. "Handshake failed") before
the CLI can turn the failure into its one-line message. It reads GRPC_VERBOSITY
only when grpc is first imported, so the default is set here, before anything
imports grpc; GRPC_VERBOSITY=ERROR in the environment brings them back.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from migwatch.client.cli import main as cli_main

    sys.exit(cli_main())
