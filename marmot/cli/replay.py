"""``marmot replay``: run automations over events on a simulated clock (SEMANTICS §7)."""

from __future__ import annotations

import argparse
import gc
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from pydantic import TypeAdapter, ValidationError

from marmot.cli.output import json_lines, table
from marmot.documents import DocumentError, load_automations, read_events
from marmot.engine.models.events import Event, EventLimits, UtcDatetime
from marmot.engine.replay import (
    Replay,
    ReplayFiring,
    Scenario,
    default_until,
    replay_events,
    replay_scenario,
)
from marmot.transport.event_decoder import fast_document_events, fast_events

_TIME = TypeAdapter(UtcDatetime)
# A scenario document's top-level fields, each left as its JSON text.
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])


def register(commands: Any) -> None:
    """Add the ``replay`` subcommand."""
    parser = commands.add_parser(
        "replay",
        help="replay events through automations on a simulated clock",
        description=(
            "Replay a conformance scenario (SCENARIO.json), or backtest automation "
            "files against a JSON-lines event file. Prints one line per firing."
        ),
    )
    parser.add_argument("scenario", nargs="?", help="a scenario JSON file")
    parser.add_argument(
        "--automations", nargs="+", metavar="FILE", help="automation YAML/JSON files"
    )
    parser.add_argument("--events", metavar="FILE", help="events, one JSON object per line")
    parser.add_argument(
        "--tick",
        type=float,
        metavar="SECONDS",
        help="proactive evaluation every SECONDS (a scenario's own by default); "
        "0 = at each deadline, as the daemon does (the default for backtests)",
    )
    parser.add_argument("--start", metavar="TIME", help="backtest clock start (RFC 3339)")
    parser.add_argument("--until", metavar="TIME", help="run the clock up to TIME (RFC 3339)")
    parser.add_argument("--json", action="store_true", help="print JSON lines (backtests)")
    parser.add_argument(
        "--resolved",
        action="store_true",
        help="backtests: also report Resolved states, as the daemon does with "
        "resolved_states on (Marmot's extension)",
    )
    parser.set_defaults(handler=run)


def _time(value: str, flag: str) -> datetime:
    try:
        return _TIME.validate_python(value)
    except ValidationError as exc:
        raise DocumentError(flag, None, f"not an RFC 3339 time: {value!r}") from exc


def run(args: argparse.Namespace) -> int:
    """Replay a scenario, or backtest files; print the firings."""
    if args.tick is not None and args.tick < 0:
        raise DocumentError("--tick", None, "must be 0 or more seconds")
    if args.scenario:
        if args.resolved:
            raise DocumentError("--resolved", None, "is for backtests: scenarios are Prefect's")
        if args.automations or args.events:
            raise DocumentError("replay", None, "give a scenario or --automations/--events")
        json_lines(r.line() for r in _replay_scenario_file(Path(args.scenario), args.tick))
        return 0
    if not args.automations or not args.events:
        raise DocumentError("replay", None, "needs SCENARIO.json, or --automations and --events")
    automations = [a for path in args.automations for a in load_automations(path)]
    events = read_events(args.events)
    _keep_loaded()
    if not events:
        raise DocumentError(args.events, None, "no events in the file")
    start = (
        _time(args.start, "--start")
        if args.start
        else min(e.received or e.occurred for e in events)
    )
    until = _time(args.until, "--until") if args.until else default_until(automations, events)
    tick = 0.0 if args.tick is None else args.tick
    firings = Replay(automations, start=start, tick=tick, resolve=args.resolved).run(events, until)
    lines = [f.line() for f in firings]
    if args.json:
        json_lines(lines)
    else:
        resolved = sum(1 for row in lines if row["state"] == "Resolved")
        more = f", {resolved} resolved" if args.resolved else ""
        table(
            f"{len(lines) - resolved} firing(s){more} from {len(events)} event(s)",
            ["fired_at", "automation", "state", "labels", "event_id"],
            (
                [
                    row["fired_at"],
                    row["automation"],
                    row["state"],
                    _labels(row["labels"]),
                    row["event_id"],
                ]
                for row in lines
            ),
        )
    return 0


def _keep_loaded() -> None:
    """Exempt what was loaded (the events, the automations) from garbage collection:
    they live until the replay ends, and the cyclic collector scanning them again
    and again took ~20% of a replay of 100,000 events."""
    gc.freeze()


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items())


def _replay_scenario_file(path: Path, tick: float | None) -> list[ReplayFiring]:
    """Read a scenario file and replay it (with ``tick`` instead of its own, if given)."""
    collecting = gc.isenabled()
    gc.disable()  # what is loaded is kept: nothing for the collector to find
    try:
        raw = _read(path)
        plain = _plain_scenario(path, raw)
        loaded = _load_scenario(path, raw) if plain is None else None
    finally:
        if collecting:
            gc.enable()
    _keep_loaded()
    if plain is not None:
        return replay_events(*plain, tick=tick)
    assert loaded is not None
    scenario, validated = loaded
    return replay_scenario(scenario, tick=tick, validated=validated)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DocumentError(str(path), None, exc.strerror or str(exc)) from exc


def _load_scenario(path: Path, raw: bytes) -> tuple[Scenario, list[Event | None] | None]:
    """The scenario, and its events made the fast way where they are plainly valid."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise DocumentError(str(path), exc.lineno, f"not valid JSON: {exc.msg}") from exc
    scenario = _validated_scenario(path, data)
    # Read as the model reads a scenario's events (no edge limits); an event the
    # fast way leaves is validated by the model, with its messages.
    return scenario, fast_document_events(raw, EventLimits())


def _validated_scenario(path: Path, data: Any) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"])
        raise DocumentError(str(path), None, first["msg"], field) from exc


def _plain_scenario(path: Path, raw: bytes) -> tuple[Scenario, list[Event]] | None:
    """A scenario whose events are all plainly valid, read in one pass: the
    events array is decoded in bulk by the fast path, and only the rest of the
    document (a few automations) is parsed as JSON and validated by the model.

    None when anything is unusual (not JSON msgspec reads, no events array, an
    event the fast path leaves to the model): the caller then reads the file
    the general way, which reports every problem with its own messages."""
    try:
        fields = _FIELDS.decode(raw)
    except msgspec.DecodeError:
        return None
    events = fields.pop("events", None)
    array = b"" if events is None else bytes(events)
    if array[:1] != b"[":
        return None
    made = fast_events(array, True, limits=EventLimits(), max_batch=len(array), received=None)
    if made is None:
        return None
    header = {name: json.loads(bytes(value)) for name, value in fields.items()}
    # The events are made already: the model checks the rest of the document
    # (the scenario it makes holds no event documents).
    return _validated_scenario(path, {**header, "events": []}), made
