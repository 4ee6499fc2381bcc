"""``marmot backtest``: run automation files over the daemon's own event log.

The daemon replays its logged events through the automations on ``marmot
replay``'s simulated clock, in a Ray task (its event loop is not slowed),
while this command shows the progress; it then prints the firings as a
timeline with counts per key, and with ``--compare NAME`` the differences
from what that live automation actually fired.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import TypeAdapter, ValidationError
from rich.markup import escape

from marmot.actors.clock import SYSTEM_CLOCK
from marmot.cli.connect import client_options, connect
from marmot.cli.output import json_lines, line, table
from marmot.cli.why import parse_duration
from marmot.documents import DocumentError, load_automations
from marmot.engine.errors import MarmotError
from marmot.engine.models.backtest import BacktestJob, BacktestReport
from marmot.engine.models.events import UtcDatetime
from marmot.transport.client import Client

__all__ = ["register"]

_TIME = TypeAdapter(UtcDatetime)
# How often the progress is read while the backtest runs.
_POLL_S = 0.2


def register(commands: Any) -> None:
    """Add the ``backtest`` command."""
    parser = commands.add_parser(
        "backtest",
        parents=[client_options()],
        help="run automation files over the daemon's own event log",
        description=(
            "Replay the daemon's logged events through automations (stored or not) on "
            "the simulated clock of `marmot replay`, and print the firings they would "
            "have made. Runs in the daemon, off its event loop."
        ),
    )
    parser.add_argument(
        "-f", "--file", dest="files", action="append", required=True,
        help="an automation YAML or JSON file (repeatable)",
    )  # fmt: skip
    parser.add_argument("--since", metavar="DURATION", help="events of the last DURATION (7d)")
    parser.add_argument("--until", metavar="TIME", help="up to TIME (RFC 3339; default now)")
    parser.add_argument(
        "--compare", metavar="NAME", help="line the firings up against this live automation's"
    )
    parser.add_argument("--json", action="store_true", help="the report as one JSON line")
    parser.set_defaults(handler=run)


def _until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return _TIME.validate_python(value)
    except ValidationError as exc:
        raise DocumentError("--until", None, f"not an RFC 3339 time: {value!r}") from exc


def _compared(client: Client, name: str | None) -> UUID | None:
    if name is None:
        return None
    try:
        return client.read_automation(UUID(name)).id
    except ValueError:
        return client.read_automation_by_name(name).id


def run(args: argparse.Namespace) -> int:
    automations = [a for path in args.files for a in load_automations(path)]
    since = SYSTEM_CLOCK.now() - parse_duration(args.since) if args.since else None
    until = _until(args.until)
    with connect(args) as client:
        compare = _compared(client, args.compare)
        job = client.start_backtest(automations, since, until, compare)
        job = _wait(client, job, show=not args.json)
    if job.state != "done" or job.report is None:
        raise MarmotError(f"the backtest failed: {job.error or 'no report'}")
    if args.json:
        json_lines([job.report.model_dump(mode="json")])
        return 0
    _print(job.report)
    return 0


def _wait(client: Client, job: BacktestJob, *, show: bool) -> BacktestJob:
    """Read the job until it ends, showing its progress on stderr."""
    while job.state == "running":
        time.sleep(_POLL_S)
        job = client.read_backtest(job.id)
        if show and job.events_total:
            sys.stderr.write(f"\r{job.events_done:,} / {job.events_total:,} events")
            sys.stderr.flush()
    if show and job.events_total is not None:
        sys.stderr.write(f"\r{job.events_done:,} / {job.events_total:,} events\n")
    return job


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(no for_each)"


def _print(report: BacktestReport) -> None:
    shown = len(report.firings)
    more = f" ({shown} shown)" if shown < report.firings_total else ""
    table(
        f"{report.firings_total} firing(s){more} from {report.events:,} event(s) "
        f"({report.events_per_s:,.0f} events/s)",
        ["fired_at", "automation", "state", "key", "event_id"],
        (
            [f.fired_at.isoformat(), f.automation, f.state, _labels(f.labels), f.event_id]
            for f in report.firings
        ),
    )
    if report.per_key:
        table(
            "firings per key",
            ["key", "firings"],
            ([_labels(k.labels), k.firings] for k in report.per_key),
        )
    comparison = report.comparison
    if comparison is None:
        return
    line(
        f"compared with [bold]{escape(comparison.automation)}[/]: {comparison.live_firings} live "
        f"firing(s), {comparison.matched} matched, {len(comparison.only_backtest)} only in the "
        f"backtest, {len(comparison.only_live)} only live"
    )
    rows = [
        ["backtest only", f.fired_at.isoformat(), _labels(f.labels), f.event_id]
        for f in comparison.only_backtest
    ]
    rows += [
        ["live only", f.fired_at.isoformat(), _labels(f.labels), f.event_id]
        for f in comparison.only_live
    ]
    if rows:
        table("differences", ["where", "fired_at", "key", "event_id"], rows)
