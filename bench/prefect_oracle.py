"""Differential oracle: run Prefect's own server-side trigger engine on a scenario.

    .venv/bin/python bench/prefect_oracle.py run SCENARIO.json
    .venv/bin/python bench/prefect_oracle.py check DIR [DIR...]
    .venv/bin/python bench/prefect_oracle.py diff DIR [--jobs 2]
    .venv/bin/python bench/prefect_oracle.py minimize SCENARIO.json OUT.json

``run`` prints Prefect's firings for a scenario as JSON lines, in the format of
``shared/conformance/expected/*.jsonl``. ``check`` runs every scenario of the
given folders and compares with their ``expected/`` files, as
``shared/conformance/compare.py`` does. ``diff`` runs the oracle and Marmot's
replay (``marmot.engine.replay.replay_scenario``, in process) on every
scenario of a folder and prints those that differ, in at most 2 processes;
``minimize`` shrinks a differing scenario (automations, events, event fields)
while they still differ. To test another Marmot tree than the installed one,
put a tree holding its ``marmot`` package first on ``PYTHONPATH``.

Two orders that Prefect leaves to its random trigger ids (``reset_ids``)
are made the declared order: triggers get ascending ids in declared order,
so ``get_child_firings`` (which reads child firings back in index order)
orders a sequence's simultaneous child firings as declared (SEMANTICS §4, as
in the expected files), and ``find_interested_triggers`` is wrapped to return
one event's triggers sorted by id (Prefect iterates a set of ids), so the
children of a composite that fire on the same event fire in declared order.

How it works. Nothing of Prefect's trigger engine is re-implemented: the
scenario's automations are created through ``models.automations``, loaded by
``triggers.consumer`` (whose message handler receives the events, so the
duplicate check and causal ordering of ``ordering.memory`` apply), and ticks
call ``triggers.proactive_evaluation`` for every Proactive trigger, then
``triggers.periodic_evaluation`` (held-event sweep, lost followers, bucket
sweep), all against a throwaway SQLite database made by Prefect's own
migrations. Only these are replaced:

* the wall clock: ``prefect.types._datetime.now`` and the modules that import
  ``now`` by name return the simulated clock of ``conformance/README.md``,
  and the causal ordering's cache of processed events (a ``TTLCache`` timed
  by ``time.monotonic``) is timed by it too;
* ``triggers.find_interested_triggers``: the same triggers, in declared order
  (see below);
* ``triggers.act``, which would publish ``prefect.automation.triggered`` and
  the actions: it records the top-level firing instead;
* the automation lifecycle events (``emit_automation_*_event``) and the
  background tasks that ``consumer`` starts (periodic evaluation on the real
  clock, the Postgres listener): the harness runs the ticks itself.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import copy
import glob
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID

Row = dict[str, Any]

_TABLES = (
    "automation_bucket",
    "automation_held_event",
    "composite_trigger_child_firing",
    "automation_event_follower",
    "automation_related_resource",
    "automation",
)


# -- the simulated clock ------------------------------------------------------------


@dataclass
class SimClock:
    """The simulated wall clock that replaces ``prefect.types._datetime.now``."""

    now: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))


CLOCK = SimClock()


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """A UTC datetime as RFC 3339 with a ``Z`` (microseconds only when present)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


# -- setting Prefect up ---------------------------------------------------------------


@dataclass
class Prefect:
    """The Prefect modules the harness drives, imported once per process."""

    triggers: ModuleType
    automations: ModuleType
    schemas: ModuleType
    events: ModuleType
    ordering: ModuleType
    memory_messaging: ModuleType
    database: ModuleType
    firings: list[Row] = field(default_factory=list)


_PREFECT: Prefect | None = None


def _configure_environment(home: str) -> None:
    os.environ["PREFECT_HOME"] = home
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = (
        f"sqlite+aiosqlite:///{os.path.join(home, 'oracle.db')}"
    )
    os.environ["PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"] = "prefect.server.events.ordering.memory"
    os.environ["PREFECT_LOGGING_LEVEL"] = "CRITICAL"
    os.environ["PREFECT_LOGGING_SERVER_LEVEL"] = "CRITICAL"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)


def _sim_now(tz: Any = "UTC") -> datetime:
    import prefect.types._datetime as pdt

    return pdt.create_datetime_instance(CLOCK.now)


def load_prefect(home: str | None = None) -> Prefect:
    """Import Prefect against a throwaway database and patch clock and acting."""
    global _PREFECT
    if _PREFECT is not None:
        return _PREFECT
    if home is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        home = tempfile.mkdtemp(prefix="prefect-oracle-", dir=base)
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    _configure_environment(home)

    import prefect.server.database.orm_models as orm_models
    import prefect.server.events.models.automations as automations
    import prefect.server.events.models.composite_trigger_child_firing as child_firings
    import prefect.server.events.ordering.memory as ordering
    import prefect.server.events.schemas.automations as schemas
    import prefect.server.events.schemas.events as events
    import prefect.server.events.triggers as triggers
    import prefect.server.utilities.messaging.memory as memory_messaging
    import prefect.types._datetime as pdt
    from prefect.server import database

    for module in (pdt, orm_models, automations, child_firings):
        module.now = _sim_now  # type: ignore[attr-defined]

    # The causal ordering remembers processed events for 30 minutes in a TTLCache
    # timed by time.monotonic; time it by the simulated clock instead.
    ttl_cache = ordering.TTLCache

    def sim_ttl_cache(maxsize: int, ttl: float) -> Any:
        return ttl_cache(maxsize=maxsize, ttl=ttl, timer=lambda: CLOCK.now.timestamp())

    ordering.TTLCache = sim_ttl_cache  # type: ignore[misc, assignment]

    prefect = Prefect(
        triggers=triggers,
        automations=automations,
        schemas=schemas,
        events=events,
        ordering=ordering,
        memory_messaging=memory_messaging,
        database=database,
    )

    async def record_firing(firing: Any) -> None:
        if schemas.TriggerState.Triggered not in firing.trigger_states:
            return
        event = firing.triggering_event
        prefect.firings.append(
            {
                "automation": firing.trigger.automation.name,
                "event_id": str(event.id) if event else None,
                "fired_at": format_time(firing.triggered),
                "labels": dict(firing.triggering_labels),
                "state": "Triggered",
            }
        )

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    # One event's interested triggers come from a set of trigger ids, so Prefect
    # evaluates them in hash order; sort them by (ascending, declared-order) id.
    find_interested = triggers.find_interested_triggers

    def find_interested_in_order(event: Any) -> list[Any]:
        return sorted(find_interested(event), key=lambda trigger: trigger.id)

    triggers.find_interested_triggers = find_interested_in_order
    triggers.act = record_firing
    triggers.evaluate_periodically = nothing
    triggers.listen_for_automation_changes = nothing
    automations.emit_automation_created_event = nothing
    automations.emit_automation_updated_event = nothing
    automations.emit_automation_deleted_event = nothing

    for name in ("prefect", "prefect.server", "sqlalchemy", "aiosqlite"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    _PREFECT = prefect
    return prefect


# -- running a scenario ----------------------------------------------------------------


_LOOP: asyncio.AbstractEventLoop | None = None
_DB_READY = False


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None:
        _LOOP = asyncio.new_event_loop()
    return _LOOP


async def _prepare_database(prefect: Prefect) -> None:
    global _DB_READY
    import sqlalchemy as sa

    db = prefect.database.provide_database_interface()
    if not _DB_READY:
        await db.create_db()
        _DB_READY = True
    async with db.session_context(begin_transaction=True) as session:
        for table in _TABLES:
            await session.execute(sa.text(f"DELETE FROM {table}"))


async def _settle() -> None:
    """Let tasks scheduled by Prefect (the SQLite automation-change hook) finish."""
    current = asyncio.current_task()
    for _ in range(5):
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            return
        await asyncio.gather(*pending, return_exceptions=True)


async def _create_automations(prefect: Prefect, documents: list[Row]) -> None:
    db = prefect.database.provide_database_interface()
    schemas = prefect.schemas
    serial = 0
    for document in documents:
        create = schemas.AutomationCreate.model_validate(
            {k: v for k, v in document.items() if k != "id"}
        )
        # The API gives triggers random ids (``reset_ids``); ascending ids in
        # declared order make ties between simultaneous child firings of a
        # sequence resolve in declared order (``get_child_firings`` reads them
        # back in index order), as SEMANTICS §4 states.
        for trigger in create.trigger.all_triggers():
            serial += 1
            trigger.id = UUID(int=serial)
        values = create.model_dump()
        values.pop("owner_resource", None)
        async with db.session_context(begin_transaction=True) as session:
            await prefect.automations.create_automation(
                session=session, automation=schemas.Automation(**values)
            )
    await _settle()


def _arrival(event: Row) -> datetime:
    return parse_time(event.get("received") or event["occurred"])


class Ticker:
    """Runs the scenario's ticks: proactive evaluation, then periodic evaluation."""

    def __init__(self, prefect: Prefect, start: datetime, tick: float) -> None:
        if tick <= 0:
            raise ValueError("the oracle needs tick_seconds > 0")
        self.prefect = prefect
        self.start = start
        self.tick = timedelta(seconds=tick)
        self.k = 0

    def next_time(self) -> datetime:
        return self.start + self.k * self.tick

    async def run_until(self, limit: datetime) -> None:
        while self.next_time() <= limit:
            when = self.next_time()
            self.k += 1
            CLOCK.now = max(CLOCK.now, when)
            await self.run_tick()

    async def run_tick(self) -> None:
        triggers = self.prefect.triggers
        proactive = self.prefect.schemas.Posture.Proactive
        for trigger in list(triggers.triggers.values()):
            if trigger.posture == proactive:
                await triggers.proactive_evaluation(trigger, _sim_now())
        await triggers.periodic_evaluation(_sim_now())


async def run_scenario_async(prefect: Prefect, scenario: Row) -> list[Row]:
    """Prefect's firings for a scenario, sorted as in the expected files."""
    triggers = prefect.triggers
    prefect.firings.clear()
    start = parse_time(scenario["start"])
    until = parse_time(scenario["until"])
    CLOCK.now = start
    await triggers.reset()
    prefect.ordering.CausalOrdering.clear_all_scopes()
    await _prepare_database(prefect)
    await _create_automations(prefect, scenario["automations"])

    ticker = Ticker(prefect, start, float(scenario.get("tick_seconds", 1)))
    message_cls = prefect.memory_messaging.MemoryMessage
    async with triggers.consumer() as handler:
        for document in scenario["events"]:
            arrival = _arrival(document)
            await ticker.run_until(arrival)
            CLOCK.now = max(CLOCK.now, arrival)
            body = {k: v for k, v in document.items() if k != "received"}
            body["received"] = format_time(CLOCK.now)
            event = prefect.events.ReceivedEvent.model_validate(body)
            await handler(
                message_cls(
                    data=event.model_dump_json().encode(),
                    attributes={"id": str(event.id), "event": event.event},
                )
            )
        await ticker.run_until(until)
    await _settle()
    return sort_rows(prefect.firings)


def sort_rows(rows: list[Row]) -> list[Row]:
    return sorted(
        rows,
        key=lambda r: (
            parse_time(r["fired_at"]),
            r["automation"],
            json.dumps(r["labels"], sort_keys=True),
        ),
    )


def run_scenario(scenario: Row) -> list[Row]:
    """Run a scenario through Prefect (in this process's event loop)."""
    prefect = load_prefect()
    return _loop().run_until_complete(run_scenario_async(prefect, copy.deepcopy(scenario)))


def dump_rows(rows: list[Row]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


# -- comparison, as shared/conformance/compare.py ------------------------------------


def has_proactive(trigger: Row) -> bool:
    if trigger.get("type", "event") in ("compound", "sequence"):
        return any(has_proactive(t) for t in trigger.get("triggers", []))
    return bool(trigger.get("posture") == "Proactive")


def _key(row: Row) -> tuple[Any, ...]:
    return (
        row.get("automation"),
        row.get("state", "Triggered"),
        json.dumps(row.get("labels") or {}, sort_keys=True),
        row.get("event_id"),
    )


def compare(scenario: Row, expected: list[Row], ours: list[Row]) -> list[str]:
    """Problems between expected and actual firings (empty when they agree)."""
    expected = [r for r in expected if r.get("state", "Triggered") != "Resolved"]
    ours = [r for r in ours if r.get("state", "Triggered") != "Resolved"]
    tick = float(scenario.get("tick_seconds", 1))
    tolerance = {
        a["name"]: (tick if has_proactive(a["trigger"]) else 0.0) for a in scenario["automations"]
    }
    remaining = list(ours)
    problems = []
    for exp in expected:
        t = parse_time(exp["fired_at"]).timestamp()
        tol = tolerance.get(exp["automation"], 0.0) + 1e-6
        match = None
        for i, row in enumerate(remaining):
            if _key(row) == _key(exp) and abs(parse_time(row["fired_at"]).timestamp() - t) <= tol:
                match = i
                break
        if match is None:
            problems.append(f"missing {json.dumps(exp, sort_keys=True)}")
        else:
            remaining.pop(match)
    problems += [f"extra {json.dumps(row, sort_keys=True)}" for row in remaining]
    return problems


def load_jsonl(path: Path) -> list[Row]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- workers ----------------------------------------------------------------------


def _worker_init() -> None:
    load_prefect()


def _check_one(path: str) -> tuple[str, list[str], float]:
    began = time.monotonic()
    scenario = json.loads(Path(path).read_text())
    expected_path = Path(path).parent / "expected" / (Path(path).stem + ".jsonl")
    try:
        ours = run_scenario(scenario)
    except Exception as exc:  # report, keep going
        return path, [f"error: {_error(exc)}"], time.monotonic() - began
    return path, compare(scenario, load_jsonl(expected_path), ours), time.monotonic() - began


def _marmot_rows(scenario: Row) -> list[Row]:
    from marmot.engine.replay import Scenario, replay_scenario

    firings = replay_scenario(Scenario.model_validate(copy.deepcopy(scenario)))
    rows = [f.line() for f in firings]
    return [r for r in rows if r.get("state", "Triggered") == "Triggered"]


def _error(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def _diff_one(path: str) -> tuple[str, list[str], float]:
    began = time.monotonic()
    scenario = json.loads(Path(path).read_text())
    try:
        prefect_rows = run_scenario(scenario)
    except Exception as exc:
        return path, [f"oracle error: {_error(exc)}"], time.monotonic() - began
    try:
        marmot_rows = _marmot_rows(scenario)
    except Exception as exc:
        return path, [f"marmot error: {_error(exc)}"], time.monotonic() - began
    problems = [
        p.replace("missing ", "prefect-only ", 1).replace("extra ", "marmot-only ", 1)
        for p in compare(scenario, prefect_rows, marmot_rows)
    ]
    return path, problems, time.monotonic() - began


def differences(scenario: Row) -> list[str]:
    """Where Marmot's replay and Prefect's engine disagree on a scenario."""
    problems = compare(scenario, run_scenario(scenario), _marmot_rows(scenario))
    return [
        p.replace("missing ", "prefect-only ", 1).replace("extra ", "marmot-only ", 1)
        for p in problems
    ]


def _still_differs(scenario: Row) -> bool:
    try:
        return bool(differences(scenario))
    except Exception:
        return False


def _drop_chunks(scenario: Row, key: str) -> Row:
    """Greedy delta debugging: drop chunks of ``scenario[key]`` while it still differs."""
    items = scenario[key]
    size = max(1, len(items) // 2)
    while True:
        i = 0
        while i < len(items):
            trial = items[:i] + items[i + size :]
            if trial and _still_differs({**scenario, key: trial}):
                items = trial
            else:
                i += size
        if size == 1:
            break
        size = max(1, size // 2)
    return {**scenario, key: items}


def _simplify_events(scenario: Row) -> Row:
    """Drop optional event fields and related resources where that changes nothing."""
    for i in range(len(scenario["events"])):
        for change in ("related", "received", "follows", "payload"):
            event = scenario["events"][i]
            if change not in event or (change == "related" and not event["related"]):
                continue
            simpler = dict(event)
            if change in ("related", "payload"):
                simpler[change] = [] if change == "related" else {}
            else:
                del simpler[change]
            events = [*scenario["events"][:i], simpler, *scenario["events"][i + 1 :]]
            if _still_differs({**scenario, "events": events}):
                scenario = {**scenario, "events": events}
    return scenario


def minimize(scenario: Row) -> Row:
    """A smaller scenario on which Marmot and Prefect still disagree."""
    if not _still_differs(scenario):
        return scenario
    scenario = _drop_chunks(scenario, "automations")
    for index, automation in enumerate(scenario["automations"]):
        trigger = automation["trigger"]
        # A composite whose difference comes from one child: keep the child alone.
        for child in trigger.get("triggers", []):
            automations = list(scenario["automations"])
            automations[index] = {**automation, "trigger": child}
            if _still_differs({**scenario, "automations": automations}):
                scenario = {**scenario, "automations": automations}
                break
    scenario = _drop_chunks(scenario, "events")
    scenario = _simplify_events(scenario)
    # End the clock soon after the last difference.
    last = max(
        (
            parse_time(json.loads(p.split(" ", 1)[1])["fired_at"])
            for p in differences(scenario)
            if p.startswith(("prefect-only", "marmot-only"))
        ),
        default=None,
    )
    if last is not None:
        until = format_time(last + timedelta(seconds=2))
        if parse_time(until) < parse_time(scenario["until"]) and _still_differs(
            {**scenario, "until": until}
        ):
            scenario = {**scenario, "until": until}
    return scenario


def _map(
    fn: Callable[[str], tuple[str, list[str], float]], paths: list[str], jobs: int
) -> Iterator[tuple[str, list[str], float]]:
    if jobs <= 1 or len(paths) <= 1:
        _worker_init()
        yield from map(fn, paths)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(jobs, 2), initializer=_worker_init) as pool:
        yield from pool.imap(fn, paths, chunksize=4)


def scenario_paths(dirs: list[str], *, need_expected: bool) -> list[str]:
    paths = []
    for d in dirs:
        found = [d] if os.path.isfile(d) else sorted(glob.glob(os.path.join(d, "*.json")))
        for p in found:
            d = os.path.dirname(p)
            exp = os.path.join(d, "expected", os.path.basename(p)[:-5] + ".jsonl")
            if need_expected and not os.path.exists(exp):
                continue
            paths.append(p)
    return paths


# -- commands ---------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    scenario = json.loads(Path(args.scenario).read_text())
    sys.stdout.write(dump_rows(run_scenario(scenario)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    paths = scenario_paths(args.dirs, need_expected=True)
    passed = failed = 0
    for path, problems, seconds in _map(_check_one, paths, args.jobs):
        if problems:
            failed += 1
            print(
                f"FAIL {path}: {problems[0]}"
                + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
            )
            if args.verbose:
                for p in problems[1:]:
                    print(f"     {p}")
        else:
            passed += 1
            if args.verbose:
                print(f"ok   {path} ({seconds:.1f}s)")
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


def cmd_diff(args: argparse.Namespace) -> int:
    paths = scenario_paths([args.dir], need_expected=False)
    same = differ = 0
    for path, problems, _seconds in _map(_diff_one, paths, args.jobs):
        if problems:
            differ += 1
            print(f"DIFF {path}")
            for p in problems:
                print(f"     {p}")
        else:
            same += 1
        sys.stdout.flush()
    print(f"{same} same, {differ} differ")
    return 0 if differ == 0 else 1


def cmd_minimize(args: argparse.Namespace) -> int:
    _worker_init()
    scenario = json.loads(Path(args.scenario).read_text())
    smaller = minimize(scenario)
    smaller = {
        **smaller,
        "description": f"minimal reproducer of {Path(args.scenario).name}: "
        + smaller.get("description", ""),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(smaller, indent=1) + "\n")
    for problem in differences(smaller):
        print(problem)
    print("prefect:")
    sys.stdout.write(dump_rows(run_scenario(smaller)))
    print("marmot:")
    sys.stdout.write(dump_rows(_marmot_rows(smaller)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="print Prefect's firings for a scenario")
    run.add_argument("scenario")
    run.set_defaults(fn=cmd_run)
    check = sub.add_parser("check", help="compare the oracle with expected/ files")
    check.add_argument("dirs", nargs="+")
    check.add_argument("--jobs", type=int, default=2)
    check.add_argument("-v", "--verbose", action="store_true")
    check.set_defaults(fn=cmd_check)
    diff = sub.add_parser("diff", help="compare the oracle with marmot replay")
    diff.add_argument("dir")
    diff.add_argument("--jobs", type=int, default=2)
    diff.set_defaults(fn=cmd_diff)
    mini = sub.add_parser("minimize", help="shrink a differing scenario")
    mini.add_argument("scenario")
    mini.add_argument("out")
    mini.set_defaults(fn=cmd_minimize)
    args = parser.parse_args(argv)
    result: int = args.fn(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
