"""``marmot admin checkpoint|backup|keys``: operations on a running daemon's data,
and CURVE key pairs for the daemon and its clients."""

from __future__ import annotations

import argparse
from typing import Any

from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines
from marmot.transport.curve import create_keys, read_keys


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

    keys = sub.add_parser(
        "keys",
        help="write a CURVE key pair (NAME.key to hand out, NAME.key_secret to keep): "
        "the daemon's for curve.secret_key_file, or a client's for curve.clients_dir",
    )
    keys.add_argument("--dir", default=".", help="folder to write to (default: here)")
    keys.add_argument("--name", default="marmot", help="file name stem (default: marmot)")
    keys.add_argument("--json", action="store_true")
    keys.set_defaults(handler=run_keys)


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


def run_keys(args: argparse.Namespace) -> int:
    public, secret = create_keys(args.dir, args.name)
    key = read_keys(public).public.decode("ascii")
    if args.json:
        json_lines([{"public_file": str(public), "secret_file": str(secret), "public_key": key}])
        return 0
    print(f"public key  {key}")
    print(f"wrote       {public} (hand it out) and {secret} (keep it; mode 600)")
    print(
        "daemon: curve.secret_key_file = the .key_secret file; clients: --server-key "
        "with the .key file or the key above. A client's pair: put its .key in "
        "curve.clients_dir and give it --client-key with its .key_secret file."
    )
    return 0
