"""``marmot automation test|history|why``: why an automation fired, or did not.

``test`` dry-runs events (from a file or the log) against an automation and
prints a verdict per condition; ``history`` lists its firings with their
actions' outcomes; ``why`` tells what it did with one logged event at the
time and what became of the bucket the event went to.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.markup import escape

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.cli.connect import connect
from marmot.cli.output import json_lines, line, table
from marmot.documents import DocumentError, load_automations
from marmot.engine.models.automations import Automation
from marmot.transport.client import Client

__all__ = ["parse_duration", "register", "verdict_rows"]

_OK, _NO = "✓", "✗"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``test``, ``history`` and ``why`` to the ``automation`` group."""
    test = sub.add_parser(
        "test",
        parents=[common],
        help="dry-run events against an automation: a verdict per condition",
        description=(
            "Evaluate events against a copy of the automation's live state (or an "
            "empty state for a file that is not stored). Changes nothing, runs no action. "
            "Logged events (--event-id, --last) are evaluated as if they arrived again, "
            "after all the automation has seen; `automation why` tells what one did at "
            "the time."
        ),
    )
    test.add_argument("automation", help="automation id or name, or a YAML/JSON file")
    source = test.add_mutually_exclusive_group(required=True)
    source.add_argument("--event", metavar="FILE", help="a JSON event, a JSON list, or JSON lines")
    source.add_argument("--event-id", action="append", metavar="ID", help="a logged event")
    source.add_argument("--last", type=int, metavar="N", help="the last N logged events")
    test.add_argument("--event-name", metavar="GLOB", help="with --last: only events so named")
    test.add_argument("--json", action="store_true")
    test.set_defaults(handler=run_test)

    history = sub.add_parser(
        "history", parents=[common], help="an automation's firings and their actions' outcomes"
    )
    history.add_argument("automation", help="automation id or name")
    history.add_argument("--since", metavar="DURATION", help="only the last DURATION (30m, 7d)")
    history.add_argument("--limit", type=int, default=50, help="firings per page (50)")
    history.add_argument("--all", action="store_true", help="every page, not only the first")
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=run_history)

    why = sub.add_parser(
        "why", parents=[common], help="what an automation did with one logged event, and why"
    )
    why.add_argument("automation", help="automation id or name")
    why.add_argument("--event-id", required=True, metavar="ID", help="the logged event")
    why.add_argument("--json", action="store_true")
    why.set_defaults(handler=run_why)


def parse_duration(value: str) -> timedelta:
    """``30s``, ``15m``, ``6h``, ``7d``, ``2w`` as a ``timedelta``."""
    found = _DURATION.match(value.strip())
    if found is None:
        raise DocumentError("--since", None, f"not a duration like 30m, 6h or 7d: {value!r}")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def _resolve(client: Client, ref: str) -> Automation:
    try:
        return client.read_automation(UUID(ref))
    except ValueError:
        return client.read_automation_by_name(ref)


# -- test -----------------------------------------------------------------------------


def _target(client: Client, ref: str) -> UUID | Automation:
    """A stored automation's id, or the automation of a file (one per file)."""
    path = Path(ref)
    if path.suffix.lower() in (".yaml", ".yml", ".json") and path.is_file():
        automations = load_automations(path)
        if len(automations) != 1:
            raise DocumentError(ref, None, f"holds {len(automations)} automations; test one")
        return automations[0]
    return _resolve(client, ref).id


def _event_documents(path: str) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise DocumentError(path, None, exc.strerror or str(exc)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list) and all(isinstance(d, dict) for d in data):
        return data
    documents = []
    for number, row in enumerate(text.splitlines(), 1):
        if not row.strip():
            continue
        try:
            parsed = json.loads(row)
        except json.JSONDecodeError as exc:
            raise DocumentError(path, number, f"not valid JSON: {exc.msg}") from exc
        if not isinstance(parsed, dict):
            raise DocumentError(path, number, "an event is a JSON object")
        documents.append(parsed)
    if not documents:
        raise DocumentError(path, None, "no events in the file")
    return documents


def run_test(args: argparse.Namespace) -> int:
    if args.event_name and args.last is None:
        raise DocumentError("--event-name", None, "filters --last: give --last N too")
    with connect(args) as client:
        target = _target(client, args.automation)
        report = client.test_automation(
            target,
            events=_event_documents(args.event) if args.event else (),
            event_ids=args.event_id or (),
            last=args.last,
            event_name=args.event_name,
        )
    data = report.model_dump(mode="json")
    if args.json:
        json_lines([data])
        return 0
    state = "a copy of its live state" if data["state"] == "live" else "an empty state"
    name = escape(data["name"])
    line(f"[bold]{name}[/]: {len(data['events'])} event(s) on {state}; nothing changed")
    for verdict in data["events"]:
        table(_event_title(verdict), ["trigger", "condition", "detail", ""], verdict_rows(verdict))
    return 0


def _event_title(verdict: dict[str, Any]) -> str:
    seq = f" (seq {verdict['seq']})" if verdict.get("seq") is not None else ""
    head = f"{verdict['event']} {verdict['event_id']}{seq}"
    if verdict["fires"]:
        return f"{head}: FIRES ({len(verdict['firing_ids'])} firing(s))"
    return f"{head}: no firing: {verdict['summary']}"


def _patterns(checks: list[dict[str, Any]]) -> str:
    return (
        ", ".join(f"{c['pattern']} ({c['how']}) {_OK if c['ok'] else _NO}" for c in checks)
        or "(none)"
    )


def _bucket(state: dict[str, Any] | None) -> str:
    if state is None:
        return "none"
    deadline = f", fires at {state['deadline']} if short" if state.get("deadline") else ""
    return f"{state['count']} in {state['start']} .. {state['end']}{deadline}"


def verdict_rows(verdict: dict[str, Any]) -> list[list[str]]:
    """The rows ``marmot automation test`` prints for one event's verdict (as JSON)."""
    rows: list[list[str]] = []
    for leaf in verdict["triggers"]:
        path, name = leaf["path"], leaf["name"]
        rows.append(
            [
                path,
                "expect",
                f"{name['event']} vs {_patterns(name['expect'])}",
                _OK if name["expected"] else _NO,
            ]
        )
        if name["after"]:
            rows.append(
                [
                    path,
                    "after",
                    f"{name['event']} vs {_patterns(name['after'])}",
                    _OK if name["starts_after"] else _NO,
                ]
            )
        if not name["routed"]:
            rows.append([path, "verdict", leaf["reason"], _NO])
            continue
        for label in leaf["match"]:
            rows.append(
                [
                    path,
                    f"match {label['label']}",
                    f"{label['value']!r} vs {_patterns(label['patterns'])}",
                    _OK if label["ok"] else _NO,
                ]
            )
        for spec in leaf["match_related"]:
            matched = spec["matched_resource"]
            where = f"related[{matched}] matches" if matched is not None else "no related matches"
            labels = spec["resources"][matched] if matched is not None else _closest(spec)
            detail = "; ".join(
                f"{v['label']}={v['value']!r} vs {_patterns(v['patterns'])}" for v in labels
            )
            rows.append(
                [
                    path,
                    f"match_related[{spec['spec']}]",
                    f"{where}: {detail}",
                    _OK if spec["ok"] else _NO,
                ]
            )
        if leaf["outcome"] != "condition_failed":
            key = ", ".join(f"{k}={v}" for k, v in leaf["key"].items()) or "(no for_each)"
            rows.append([path, "for_each key", key, ""])
            rows.append(
                [
                    path,
                    "bucket",
                    f"before: {_bucket(leaf['before'])}; after: {_bucket(leaf['after'])}",
                    "",
                ]
            )
        good = leaf["outcome"] in ("fires", "counts", "opens_window", "held")
        rows.append([path, f"verdict: {leaf['outcome']}", leaf["reason"], _OK if good else _NO])
    for composite in verdict["composites"]:
        children = ", ".join(composite["fired_children"]) or "none"
        rows.append(
            [
                composite["path"],
                f"{composite['type']} (children fired: {children})",
                composite["reason"],
                _OK if composite["fires"] else "",
            ]
        )
    return rows


def _closest(spec: dict[str, Any]) -> list[dict[str, Any]]:
    # The related resource that matched the most labels: the likeliest intended one.
    resources: list[list[dict[str, Any]]] = spec["resources"]
    if not resources:
        return []
    return max(resources, key=lambda labels: sum(1 for v in labels if v["ok"]))


# -- history --------------------------------------------------------------------------


def run_history(args: argparse.Namespace) -> int:
    since_delta = parse_duration(args.since) if args.since else None
    pages = []
    with connect(args) as client:
        automation = _resolve(client, args.automation)
        since = SYSTEM_CLOCK.now() - since_delta if since_delta is not None else None
        cursor = None
        while True:
            page = client.automation_history(automation.id, since, args.limit, cursor)
            pages.append(page.model_dump(mode="json"))
            cursor = page.next
            if cursor is None or not args.all:
                break
    if args.json:
        json_lines(pages)
        return 0
    firings = [f for page in pages for f in page["firings"]]
    more = " (more: --all)" if pages[-1]["next"] else ""
    table(
        f"{automation.name}: {len(firings)} firing(s), newest first{more}",
        ["fired_at", "state", "key", "triggering event", "firing id", "actions"],
        (
            [
                f["fired_at"],
                f["state"],
                ", ".join(f"{k}={v}" for k, v in f["labels"].items()),
                f"{f['triggering_event'] or ''} {f['triggering_event_id'] or ''}".strip(),
                f["firing_id"] or "",
                "; ".join(_action(a) for a in f["actions"]) or "none recorded",
            ]
            for f in firings
        ),
    )
    incidents = pages[0]["incidents"]
    if incidents:
        table(
            "incidents",
            ["created", "id", "severity", "status", "title"],
            ([i["created"], i["id"], i["severity"], i["status"], i["title"]] for i in incidents),
        )
    return 0


def _action(action: dict[str, Any]) -> str:
    parts = [f"#{action['index']} {action['type'] or ''}".strip(), action["status"]]
    if action["attempts"]:
        parts.append(f"{action['attempts']} attempt(s)")
    if action["duration_s"] is not None:
        parts.append(f"{action['duration_s']:.3f} s")
    if action["detail"]:
        parts.append(action["detail"])
    return " ".join(parts[:1]) + ": " + ", ".join(parts[1:])


# -- why ------------------------------------------------------------------------------


def run_why(args: argparse.Namespace) -> int:
    try:
        event_id = UUID(args.event_id)
    except ValueError:
        raise DocumentError("--event-id", None, f"not an event id: {args.event_id!r}") from None
    with connect(args) as client:
        automation = _resolve(client, args.automation)
        report = client.why(automation.id, event_id)
    data = report.model_dump(mode="json")
    if args.json:
        json_lines([data])
        return 0
    line(
        f"[bold]{escape(data['name'])}[/] and event {data['event_id']} (seq {data['seq']}): "
        f"{data['status']}"
    )
    line(f"  {escape(data['summary'])}")
    if data["verdict"] is not None:
        table(
            _event_title(data["verdict"]),
            ["trigger", "condition", "detail", ""],
            verdict_rows(data["verdict"]),
        )
    for after in data["aftermath"]:
        key = ", ".join(f"{k}={v}" for k, v in after["key"].items())
        line(escape(f"  afterwards, {after['path']} [{key}]: {after['detail']}"))
    return 0
