"""The ``marmot`` command line.

Exit codes (DESIGN.md): 0 success, 1 the operation failed, 2 bad usage or a
bad input file, 3 the daemon could not be reached; ``marmot status`` exits 4
while the daemon is still starting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from marmot.cli import admin, automation, block, events, incident, serve, status, webhook
from marmot.cli import replay as replay_command
from marmot.cli.output import fail
from marmot.engine.errors import DaemonUnavailable, MarmotError, ValidationFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_STARTING = status.EXIT_STARTING


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="marmot",
        description="Marmot: Prefect automations as a standalone rules engine.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(commands)
    status.register(commands)
    automation.register(commands)
    block.register(commands)
    events.register(commands)
    incident.register(commands)
    webhook.register(commands)
    admin.register(commands)
    replay_command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ValidationFailed as exc:
        fail(str(exc))
        code = EXIT_USAGE
    except DaemonUnavailable as exc:
        fail(str(exc))
        code = EXIT_UNREACHABLE
    except MarmotError as exc:
        fail(str(exc))
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
