"""``marmot admin checkpoint|backup``: operations on a running daemon's data."""

from __future__ import annotations

import argparse
from typing import Any

from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines


def register(commands: Any) -> None:
    """Add the ``admin`` command group."""
    group = commands.add_parser("admin", help="operate on the daemon's data")
    sub = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = client_options()

    checkpoint = sub.add_parser(
        "checkpoint",
        parents=[common],
        help="checkpoint every automation now, trim the event log past its retention "
        "and fold the write-ahead log into the database",
    )
    checkpoint.add_argument("--json", action="store_true")
    checkpoint.set_defaults(handler=run_checkpoint)

    backup = sub.add_parser(
        "backup",
        parents=[common],
        help="copy the live database to a new file on the daemon's machine",
    )
    backup.add_argument("path", help="file to create (must not exist)")
    backup.add_argument("--json", action="store_true")
    backup.set_defaults(handler=run_backup)


def run_checkpoint(args: argparse.Namespace) -> int:
    with connect(args) as client:
        done = client.checkpoint()
    if args.json:
        json_lines([done])
    else:
        print(
            f"checkpointed {done['automations_checkpointed']} automation(s), trimmed "
            f"{done['events_trimmed']} event(s), copied {done['wal_pages_copied']} WAL page(s)"
        )
    return 0


def run_backup(args: argparse.Namespace) -> int:
    with connect(args) as client:
        done = client.backup(args.path)
    if args.json:
        json_lines([done])
    else:
        print(f"backed up to {done['path']} ({done['bytes']:,} bytes)")
    return 0
