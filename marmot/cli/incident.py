"""``marmot incident ls|show|resolve``: incidents declared by ``declare-incident`` actions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines, table


def register(commands: Any) -> None:
    """Add the ``incident`` command group."""
    group = commands.add_parser("incident", help="incidents declared by automations")
    sub = group.add_subparsers(dest="verb", metavar="VERB", required=True)
    common = client_options()

    ls = sub.add_parser("ls", parents=[common], help="list incidents, newest first")
    ls.add_argument("--automation", help="only this automation's (id)")
    ls.add_argument("--status", choices=["open", "resolved"])
    ls.add_argument("-n", "--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=run_ls)

    for verb, text, handler in [
        ("show", "show one incident", run_show),
        ("resolve", "mark an incident resolved", run_resolve),
    ]:
        p = sub.add_parser(verb, parents=[common], help=text)
        p.add_argument("incident", help="incident id")
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=handler)


def run_ls(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.list_incidents(
            automation_id=args.automation, status=args.status, limit=args.limit
        )
    if args.json:
        json_lines(rows)
        return 0
    table(
        f"{len(rows)} incident(s)",
        ["id", "created", "severity", "status", "title"],
        ([r["id"], r["created"], r["severity"], r["status"], r["title"]] for r in rows),
    )
    return 0


def _print_one(incident: dict[str, Any], as_json: bool) -> None:
    print(json.dumps(incident, indent=None if as_json else 2, sort_keys=True))


def run_show(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _print_one(client.read_incident(args.incident), args.json)
    return 0


def run_resolve(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _print_one(client.resolve_incident(args.incident), args.json)
    return 0
