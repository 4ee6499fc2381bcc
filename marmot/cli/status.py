"""``marmot status [--wait [SECONDS]]``: the daemon's state, start-up progress and capacity.

A daemon answers while it starts (opening its store, starting Ray,
recovering automations): ``status`` then shows how far it has got and exits
with ``EXIT_STARTING``, so scripts can tell "starting" from "serving" (0)
and "unreachable" (3).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from marmot.actors.startup import StartupPhase
from marmot.cli import EXIT_OK, EXIT_STARTING
from marmot.cli.connect import client_options, connect
from marmot.cli.output import fail, json_lines, line, table
from marmot.engine.errors import DaemonUnavailable
from marmot.transport.client import Client

DEFAULT_WAIT_S = 300.0
SERVING = "serving"


def register(commands: Any) -> None:
    """Add ``status``."""
    status = commands.add_parser(
        "status",
        parents=[client_options()],
        help="show the daemon's state and capacity",
        description="Show the daemon's state: while it starts, the phase and how many "
        "automations are recovered; once it serves, counts, queues and how many more "
        "automations the node can take.",
        epilog="exit codes: 0 serving, 4 still starting, 3 the daemon could not be reached",
    )
    status.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
    status.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help="first wait until the daemon serves, at most SECONDS "
        f"(default {DEFAULT_WAIT_S:g}); exits 4 if it is still starting then, "
        "3 if it never answered",
    )
    status.set_defaults(handler=run_status)


def run_status(args: argparse.Namespace) -> int:
    """Print the daemon's status; returns 0 when it serves, ``EXIT_STARTING`` while it starts."""
    with connect(args, probe=args.wait is None) as client:
        if args.wait is not None:
            _wait(client, args.wait)
        status = client.status()
    is_serving = status.get("state", SERVING) == SERVING
    if args.json:
        json_lines([status])
    elif is_serving:
        _print_serving(status)
    else:
        line(starting_line(status))
    return EXIT_OK if is_serving else EXIT_STARTING


def _wait(client: Client, timeout_s: float) -> None:
    """Wait until the daemon serves, with its progress on a transient stderr line; past
    ``timeout_s`` say so, unless it never answered (``DaemonUnavailable``: exit 3)."""
    console = Console(stderr=True, highlight=False)
    with console.status("waiting for the daemon") as spinner:

        def progress(health: dict[str, Any]) -> None:
            spinner.update(starting_line(health))

        try:
            client.wait_ready(timeout_s, on_progress=progress)
        except DaemonUnavailable as exc:
            if exc.details is None:
                raise
            fail(f"the daemon is still starting after {timeout_s:g} s")


def starting_line(status: dict[str, Any]) -> str:
    """``starting — recovering automations 12/40 (8 s)``, in rich markup."""
    phase = str(status.get("phase"))
    try:
        label = StartupPhase(phase).label
    except ValueError:  # a phase of a newer daemon
        label = escape(phase)
    counts = ""
    if phase == StartupPhase.RECOVERING_AUTOMATIONS:
        counts = f" {status.get('automations_recovered')}/{status.get('automations_total')}"
    elapsed = float(status.get("elapsed_s") or 0.0)
    return f"[bold yellow]starting[/] — {label}{counts} ({elapsed:.0f} s)"


def _print_serving(status: dict[str, Any]) -> None:
    capacity = status.pop("capacity", {})
    rows = [[k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in status.items()]
    rows += [[f"capacity.{k}", v] for k, v in capacity.items()]
    table("marmot status", ["key", "value"], rows)
