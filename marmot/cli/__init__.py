"""The ``marmot`` command line.

Exit codes (DESIGN.md): 0 success, 1 the operation failed, 2 bad usage or a
bad input file, 3 the daemon could not be reached; ``marmot status`` exits 4
while the daemon is still starting.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Sequence

from marmot import __version__
from marmot.actors.gc_thresholds import tune_gc
from marmot.cli.output import fail
from marmot.engine.errors import DaemonUnavailable, MarmotError, ValidationFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_STARTING = 4  # marmot status while the daemon starts

# The module that registers each command, in the order --help lists them. A run
# imports only its command's module: importing them all (the daemon's, the
# Prefect ones, ...) took a third of a second before `automation ls` could start.
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "status": "status",
    "automation": "automation",
    "block": "block",
    "emit": "events",
    "events": "events",
    "incident": "incident",
    "webhook": "webhook",
    "admin": "admin",
    "replay": "replay",
    "backtest": "backtest",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered, or (``command``, one of
    ``COMMANDS``) only the ones its module registers."""
    parser = argparse.ArgumentParser(
        prog="marmot",
        description="Marmot: Prefect automations as a standalone rules engine.",
        epilog="Run `marmot COMMAND --help` for a command's options. Listing and "
        "creating commands take --json (one JSON object per line). Exit codes: 0 ok, "
        "1 the daemon refused, 2 bad usage or input, 3 no daemon, 4 still starting.",
    )
    parser.add_argument("--version", action="version", version=f"marmot {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(f"marmot.cli.{name}").register(commands)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command a command line names (its first word that is not an option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    return _main(argv, own_process=False)


def _main(argv: Sequence[str] | None, *, own_process: bool) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command(argv))
    if own_process:
        # What the imports built (pydantic schemas above all) lives as long as
        # the command: out of the collector's way, and collections as rare as
        # the daemon's. A listing of 10,000 automations otherwise set off full
        # collections costing 0.2 s each. (Not for a caller's process: main.)
        gc.freeze()
        tune_gc()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_OK if args.command is None else EXIT_USAGE
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
    except BrokenPipeError:
        # The reader went away (`marmot events tail | head`): stop quietly, and keep
        # Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = EXIT_OK
    return code


def run() -> None:
    """Console-script entry point."""
    sys.exit(_main(None, own_process=True))
