"""``marmot emit`` and ``marmot events tail``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines, table
from marmot.documents import DocumentError, field_path, parse_event_line
from marmot.engine.models.events import RESOURCE_ID, RESOURCE_ROLE, Event
from marmot.problems import problems
from marmot.transport.event_ids import new_event_id


def register(commands: Any) -> None:
    """Add ``emit`` and ``events``."""
    common = client_options()
    emit = commands.add_parser(
        "emit",
        parents=[common],
        help="send events (acknowledged once durable)",
        description="Send one event from flags, or many from a JSON-lines file.",
    )
    emit.add_argument("--event", help="event name, e.g. prefect.flow-run.Failed")
    emit.add_argument("--resource", help="the resource's prefect.resource.id")
    emit.add_argument("--label", action="append", default=[], metavar="K=V", help="resource label")
    emit.add_argument(
        "--related", action="append", default=[], metavar="ROLE:ID", help="related resource"
    )
    emit.add_argument("--payload", help="payload as a JSON object")
    emit.add_argument("--occurred", help="RFC 3339 time (default now)")
    emit.add_argument(
        "-f", "--file", help="JSON-lines file, one event per line ('-': standard input)"
    )
    emit.add_argument("--json", action="store_true")
    emit.set_defaults(handler=run_emit)

    events = commands.add_parser("events", help="read the event log")
    sub = events.add_subparsers(dest="verb", metavar="VERB", required=True)
    tail = sub.add_parser("tail", parents=[common], help="show recent events, or follow new ones")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many recent events")
    tail.add_argument("--follow", action="store_true", help="keep printing new events")
    tail.add_argument("--event", action="append", default=[], help="only names matching (glob)")
    tail.add_argument("--json", action="store_true")
    tail.set_defaults(handler=run_tail)


def _from_flags(args: argparse.Namespace) -> dict[str, Any]:
    if not args.event or not args.resource:
        raise DocumentError("emit", None, "give --event and --resource, or -f FILE")
    resource = {RESOURCE_ID: args.resource}
    for item in args.label:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DocumentError("--label", None, f"expected K=V, got {item!r}")
        resource[key] = value
    related = []
    for item in args.related:
        role, sep, rid = item.partition(":")
        if not sep or not role or not rid:
            raise DocumentError("--related", None, f"expected ROLE:ID, got {item!r}")
        related.append({RESOURCE_ID: rid, RESOURCE_ROLE: role})
    payload: Any = {}
    if args.payload:
        try:
            payload = json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise DocumentError("--payload", None, f"not valid JSON: {exc.msg}") from exc
    return {
        "id": str(new_event_id()),
        "occurred": args.occurred or datetime.now(UTC).isoformat(),
        "event": args.event,
        "resource": resource,
        "related": related,
        "payload": payload,
    }


def _from_file(path: str) -> list[dict[str, Any]]:
    """Every event of a JSON-lines file ('-': standard input), each checked here: an
    event without ``id`` or ``occurred`` gets them (as Prefect's clients do), and
    every bad line is reported as ``file:line: field: reason``."""
    name = "<stdin>" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(path, None, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise DocumentError(name, None, f"not UTF-8 text ({exc.reason})") from exc
    now = datetime.now(UTC).isoformat()
    events: list[dict[str, Any]] = []
    error: DocumentError | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found: list[DocumentError] = []
        try:
            document = parse_event_line(line)
        except ValueError as exc:
            found.append(DocumentError(name, number, f"not a JSON object: {exc}"))
        else:
            document.setdefault("id", str(new_event_id()))
            document.setdefault("occurred", now)
            try:
                Event.model_validate(document)
            except ValidationError as exc:
                found += [
                    DocumentError(name, number, message, field_path(loc))
                    for loc, message in problems(exc, Event)
                ]
            else:
                events.append(document)
        for problem in found:
            if error is None:
                error = problem
            else:
                error.add(problem)
    if error is not None:
        raise error
    if not events:
        raise DocumentError(name, None, "no events in the file")
    return events


def run_emit(args: argparse.Namespace) -> int:
    events = _from_file(args.file) if args.file else [_from_flags(args)]
    with connect(args) as client:
        seqs = []
        for start in range(0, len(events), 1000):
            seqs += client.emit(events[start : start + 1000])
    if args.json:
        json_lines({"seq": s, "id": e.get("id")} for s, e in zip(seqs, events, strict=True))
    else:
        print(f"emitted {len(seqs)} event(s), log sequence {seqs[0]}..{seqs[-1]}")
    return 0


def _show(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        json_lines(rows)
        return
    table(
        "",
        ["seq", "occurred", "event", "resource"],
        ([r["seq"], r["occurred"], r["event"], r["resource"][RESOURCE_ID]] for r in rows),
    )


def _stream(rows: list[dict[str, Any]], as_json: bool) -> None:
    """New events while following: one line each, as they come (no box per batch)."""
    if as_json:
        json_lines(rows)
        return
    for r in rows:
        print(f"{r['seq']:>8}  {r['occurred']}  {r['event']}  {r['resource'][RESOURCE_ID]}")
    sys.stdout.flush()


def run_tail(args: argparse.Namespace) -> int:
    with connect(args) as client:
        rows = client.filter_events(names=args.event, limit=args.lines, by_arrival=True)
        rows.reverse()
        _show(rows, args.json)
        if not args.follow:
            return 0
        last = rows[-1]["seq"] if rows else 0
        while True:
            fresh = client.filter_events(names=args.event, after_seq=last, limit=500)
            if fresh:
                _stream(fresh, args.json)
                last = fresh[-1]["seq"]
            else:
                time.sleep(0.5)  # a terminal follow loop; the daemon is not polled per event
