"""Random trigger scenarios for differential testing against Prefect.

    .venv/bin/python bench/scenario_gen.py SEED N OUTDIR

Writes ``OUTDIR/gen-SEED-I.json`` for I in 0..N-1, in the format of
``shared/conformance/*.json`` (no expected files: ``prefect_oracle.py``
produces them). Each scenario is drawn from its own generator seeded by
``SEED-I``, so one can be regenerated alone. Families, in rough proportion:

* ``random`` (50 %): like the shared ``random-*``/``composite-*`` ones:
  1-4 automations, event triggers (Reactive/Proactive with after, expect,
  for_each, match, match_related, threshold, within) and compound
  (any/all/N) or sequence triggers, sometimes nested; events over a few
  minutes with out-of-order occurred times, late ``received`` times,
  duplicates and ``follows``;
* ``sweep`` (20 %): SEMANTICS §3.3, the inclusive 60 s sweep: immediate
  triggers, within-0 ``after`` triggers and short windows whose keys see
  events about 60 s apart, some arriving late right at the boundary;
* ``held`` (27 %): SEMANTICS §3.4, Proactive triggers with ``after``
  (often the same event in ``after`` and ``expect``, heartbeat style) whose
  expected events arrive before the ``after`` event that opens their window,
  are duplicated, or race a late heartbeat (the same-event reset);
* ``followers`` (8 %): SEMANTICS §6 causal ordering: followers that arrive
  before their leaders, chains, leaders that never arrive (half of these
  scenarios run past the 15-minute lookback) and redelivered events.
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

Row = dict[str, Any]

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

NAMES = [
    "prefect.flow-run.Running",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Pending",
    "animal.ran",
    "animal.walked",
    "prefect.work-queue.not-ready",
    "heartbeat",
]
NAME_PATTERNS = [*NAMES, "animal.*", "prefect.flow-run.*"]

RESOURCES: list[Row] = [
    {
        "prefect.resource.id": "prefect.flow-run.0",
        "prefect.resource.name": "run-0",
        "env": "prod",
        "team": "a",
    },
    {
        "prefect.resource.id": "prefect.flow-run.1",
        "prefect.resource.name": "run-1",
        "env": "dev",
        "team": "b",
    },
    {"prefect.resource.id": "prefect.flow-run.2", "prefect.resource.name": "run-2", "env": "prod"},
    {
        "prefect.resource.id": "prefect.flow-run.3",
        "prefect.resource.name": "run-3",
        "env": "dev",
        "team": "b",
    },
    {
        "prefect.resource.id": "prefect.flow-run.4",
        "prefect.resource.name": "run-4",
        "env": "prod",
        "team": "a",
    },
]
RESOURCE_WEIGHTS = [50, 23, 13, 9, 5]

FLOWS: list[Row] = [
    {
        "prefect.resource.id": "prefect.flow.0",
        "prefect.resource.role": "flow",
        "prefect.resource.name": "flow-0",
    },
    {
        "prefect.resource.id": "prefect.flow.1",
        "prefect.resource.role": "flow",
        "prefect.resource.name": "flow-1",
    },
]
DEPLOYMENTS: list[Row] = [
    {"prefect.resource.id": f"prefect.deployment.{i}", "prefect.resource.role": "deployment"}
    for i in range(3)
]
TAG: Row = {"prefect.resource.id": "prefect.tag.nightly", "prefect.resource.role": "tag"}

MATCHES: list[Row] = [
    {},
    {},
    {"env": "prod"},
    {"team": ["a", "b"]},
    {"team": "a"},
    {"env": "!dev"},
    {"env": ["!prod", "!dev"]},
    {"prefect.resource.id": ["prefect.flow-run.1", "prefect.flow-run.2"]},
    {"prefect.resource.name": "run-?"},
    {"prefect.resource.id": "prefect.flow-run.*"},
]
MATCH_RELATED: list[Row | list[Row] | None] = [
    {},
    {},
    {},
    {"prefect.resource.role": "deployment", "prefect.resource.id": "prefect.deployment.0"},
    {"prefect.resource.id": "prefect.deployment.*"},
    {"prefect.resource.name": "flow-1"},
    [{"prefect.resource.role": "flow"}, {"prefect.resource.role": "tag"}],
    {"prefect.resource.role": "flow"},
    None,
]
FOR_EACH: list[list[str] | None] = [
    [],
    [],
    ["related:flow:prefect.resource.id"],
    ["env"],
    ["prefect.resource.id"],
    ["prefect.resource.id", "env"],
    ["related:deployment:prefect.resource.id"],
    None,
]
GAPS = [0, 1, 1, 1, 2, 3, 5, 8, 13, 21]


def arrival(event: Row) -> str:
    """When an event arrives: its ``received`` time if it has one, else ``occurred``."""
    return str(event.get("received") or event["occurred"])


def ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Gen:
    """One scenario's random choices."""

    def __init__(self, seed: str) -> None:
        self.rng = random.Random(seed)
        self.serial = 0

    def uuid(self) -> str:
        return str(UUID(int=self.rng.getrandbits(128), version=4))

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- triggers ----------------------------------------------------------------

    def expect(self) -> list[str]:
        r = self.rng.random()
        if r < 0.08:
            return []
        if r < 0.8:
            return [self.rng.choice(NAME_PATTERNS)]
        return self.rng.sample(NAME_PATTERNS, 2)

    def event_trigger(self, *, nested: bool = False) -> Row:
        rng = self.rng
        posture = "Proactive" if self.chance(0.12 if nested else 0.3) else "Reactive"
        trigger: Row = {
            "type": "event",
            "match": rng.choice(MATCHES),
            "match_related": rng.choice(MATCH_RELATED),
            "expect": self.expect(),
            "for_each": rng.choice(FOR_EACH),
            "posture": posture,
            "threshold": rng.choice([1, 1, 1, 2, 2, 3, 4]),
            "within": rng.choice([0, 0, 5, 10, 10, 15, 20, 30, 30, 60]),
        }
        if self.chance(0.25):
            if trigger["expect"] and self.chance(0.3):
                trigger["after"] = [rng.choice(trigger["expect"])]
            else:
                trigger["after"] = [rng.choice(NAME_PATTERNS)]
        for key in ("match_related", "for_each"):
            if trigger[key] is None:  # left out, as in the shared scenarios
                del trigger[key]
        if posture == "Proactive":
            if trigger["within"] < 10:
                trigger["within"] = rng.choice([10, 15, 20, 30, 60])
            trigger["threshold"] = rng.choice([1, 1, 2, 3])
        return trigger

    def composite(self, depth: int = 0) -> Row:
        rng = self.rng
        n = rng.choice([2, 2, 3])
        children: list[Row] = []
        for _ in range(n):
            if depth == 0 and self.chance(0.12):
                children.append(self.composite(depth + 1))
            else:
                children.append(self.event_trigger(nested=True))
        within = rng.choice([None, 30, 60, 60, 120])
        if self.chance(0.35):
            return {"type": "sequence", "triggers": children, "within": within}
        require: Any = rng.choice(["any", "all", "all", *range(1, n + 1)])
        return {"type": "compound", "require": require, "triggers": children, "within": within}

    def automation(self, index: int, trigger: Row) -> Row:
        return {"name": f"auto-{index}", "trigger": trigger, "actions": [{"type": "do-nothing"}]}

    # -- events ------------------------------------------------------------------

    def related(self) -> list[Row]:
        rng = self.rng
        related: list[Row] = []
        if self.chance(0.85):
            related.append(dict(rng.choice(FLOWS)))
        if self.chance(0.6):
            related.append(dict(rng.choices(DEPLOYMENTS, weights=[60, 25, 15])[0]))
        if self.chance(0.3):
            related.append(dict(TAG))
        return related

    def event(self, name: str, occurred: datetime, resource: Row | None = None) -> Row:
        self.serial += 1
        return {
            "id": self.uuid(),
            "occurred": ts(occurred),
            "event": name,
            "resource": dict(resource or self.rng.choices(RESOURCES, weights=RESOURCE_WEIGHTS)[0]),
            "related": self.related(),
            "payload": {"n": self.serial - 1},
        }

    def disorder(self, events: list[Row], *, late: float, delayed: float) -> list[Row]:
        """Make some events occur earlier than the clock (late) or arrive later."""
        for event in events:
            occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00"))
            if self.chance(late):
                occurred -= timedelta(seconds=self.rng.randint(1, 30))
                event["occurred"] = ts(occurred)
            elif self.chance(delayed):
                event["received"] = ts(occurred + timedelta(seconds=self.rng.randint(1, 20)))
        return events

    def duplicates_and_follows(self, events: list[Row], *, dup: float, follow: float) -> list[Row]:
        """Resend some events later; make some follow an earlier or a missing event."""
        out: list[Row] = []
        for i, event in enumerate(events):
            if self.chance(follow):
                r = self.rng.random()
                if r < 0.6 and i + 1 < len(events):
                    # The leader comes after its follower in arrival order.
                    event["follows"] = events[min(len(events) - 1, i + self.rng.randint(1, 3))][
                        "id"
                    ]
                elif r < 0.9 and i > 0:
                    event["follows"] = events[self.rng.randrange(i)]["id"]
                else:
                    event["follows"] = self.uuid()  # never arrives
            out.append(event)
            if self.chance(dup):
                copy = dict(event)
                if self.chance(0.5):
                    occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00"))
                    copy["received"] = ts(occurred + timedelta(seconds=self.rng.randint(0, 30)))
                out.append(copy)
        return out

    def until(self, events: list[Row], extra: tuple[int, int] = (30, 130)) -> datetime:
        last = max(datetime.fromisoformat(arrival(e).replace("Z", "+00:00")) for e in events)
        return max(last, START) + timedelta(seconds=self.rng.randint(*extra))


# -- families -------------------------------------------------------------------


def random_family(g: Gen) -> tuple[list[Row], list[Row]]:
    rng = g.rng
    automations = []
    for i in range(rng.choice([1, 2, 2, 3, 4])):
        trigger = g.composite() if g.chance(0.35) else g.event_trigger()
        automations.append(g.automation(i, trigger))
    t = START + timedelta(seconds=rng.randint(0, 10))
    events = []
    for _ in range(rng.randint(10, 60)):
        t += timedelta(seconds=rng.choice(GAPS))
        events.append(g.event(rng.choice(NAMES), t))
    events = g.disorder(events, late=0.15, delayed=0.08)
    events = g.duplicates_and_follows(events, dup=0.03, follow=0.04)
    return automations, events


def sweep_family(g: Gen) -> tuple[list[Row], list[Row]]:
    """Keys that see events about 60 s after their bucket ended (SEMANTICS §3.3)."""
    rng = g.rng
    names = rng.sample(NAMES, 3)
    automations: list[Row] = []
    kinds = rng.sample(["immediate", "after0", "window", "proactive"], rng.choice([1, 2, 3]))
    for i, kind in enumerate(kinds):
        trigger: Row = {
            "type": "event",
            "match": rng.choice([{}, {}, {"env": "prod"}, {"team": ["a", "b"]}]),
            "expect": [names[0]] if kind != "after0" else [names[1]],
            "for_each": rng.choice([["prefect.resource.id"], ["prefect.resource.id"], [], ["env"]]),
            "posture": "Reactive",
            "threshold": rng.choice([1, 2, 2, 3]),
            "within": 0,
        }
        if kind == "after0":
            trigger["after"] = [names[0]]
            trigger["threshold"] = 1
        elif kind == "window":
            trigger["within"] = rng.choice([5, 10, 20])
        elif kind == "proactive":
            trigger["posture"] = "Proactive"
            trigger["within"] = rng.choice([10, 20, 30])
            trigger["threshold"] = rng.choice([1, 2])
        automations.append(g.automation(i, trigger))
    events: list[Row] = []
    t0 = START + timedelta(seconds=rng.randint(1, 15))
    for resource in rng.sample(RESOURCES, rng.randint(1, 4)):
        first = t0 + timedelta(seconds=rng.randint(0, 20))
        events.append(g.event(names[0], first, resource))
        for _ in range(rng.randint(1, 4)):
            delta = rng.choice([55, 58, 59, 60, 60, 60, 61, 62, 65, 69, 70, 71, 5, 10, 30])
            name = rng.choice([names[0], names[0], names[1], names[1], names[2]])
            occurred = first + timedelta(seconds=delta)
            event = g.event(name, occurred, resource)
            if g.chance(0.35):
                # Occurred before the boundary but processed right at it (late delivery).
                event["occurred"] = ts(first + timedelta(seconds=rng.randint(0, 12)))
                event["received"] = ts(occurred)
            events.append(event)
    # A little noise from other resources and names.
    t = t0
    for _ in range(rng.randint(0, 10)):
        t += timedelta(seconds=rng.choice(GAPS))
        events.append(g.event(rng.choice(NAMES), t))
    events.sort(key=arrival)
    events = g.duplicates_and_follows(events, dup=0.05, follow=0.0)
    return automations, events


def held_family(g: Gen) -> tuple[list[Row], list[Row]]:
    """Proactive triggers with `after` whose expected events race it (SEMANTICS §3.4)."""
    rng = g.rng
    start_name, stop_name, other = rng.sample(NAMES, 3)
    automations: list[Row] = []
    for i in range(rng.choice([1, 2, 2, 3])):
        same = g.chance(0.5)
        expect = [start_name, stop_name] if same else [stop_name]
        if g.chance(0.15):
            expect.append(other)
        trigger: Row = {
            "type": "event",
            "match": rng.choice([{}, {}, {"env": "prod"}, {"team": ["a", "b"]}]),
            "after": [start_name],
            "expect": expect,
            "for_each": rng.choice([["prefect.resource.id"], ["prefect.resource.id"], [], ["env"]]),
            "posture": "Proactive",
            "threshold": rng.choice([1, 1, 2, 3]),
            "within": rng.choice([10, 15, 20, 30, 30, 45]),
        }
        if g.chance(0.2):
            composite = rng.choice(["compound", "sequence"])
            sibling = g.event_trigger(nested=True)
            children = [trigger, sibling] if g.chance(0.5) else [sibling, trigger]
            wrapped: Row = {
                "type": composite,
                "triggers": children,
                "within": rng.choice([None, 60]),
            }
            if composite == "compound":
                wrapped["require"] = rng.choice(["any", "all"])
            automations.append(g.automation(i, wrapped))
        else:
            automations.append(g.automation(i, trigger))
    events: list[Row] = []
    t = START + timedelta(seconds=rng.randint(1, 10))
    for resource in rng.sample(RESOURCES, rng.randint(1, 4)):
        t_res = t + timedelta(seconds=rng.randint(0, 15))
        for _ in range(rng.randint(1, 5)):
            started = t_res
            events.append(g.event(start_name, started, resource))
            for _ in range(rng.randint(0, 3)):
                r = rng.random()
                name = stop_name if r < 0.5 else (start_name if r < 0.85 else other)
                occurred = started + timedelta(seconds=rng.randint(-5, 40))
                event = g.event(name, occurred, resource)
                if g.chance(0.3):
                    event["received"] = ts(occurred + timedelta(seconds=rng.randint(1, 15)))
                events.append(event)
            t_res = started + timedelta(seconds=rng.choice([5, 10, 15, 20, 25, 30, 40, 50]))
    # Some `after` events arrive after the expected events they precede.
    for event in events:
        if event["event"] == start_name and "received" not in event and g.chance(0.3):
            occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00"))
            event["received"] = ts(occurred + timedelta(seconds=rng.randint(1, 25)))
    events.sort(key=lambda e: (arrival(e), rng.random()))
    events = g.duplicates_and_follows(events, dup=0.08, follow=0.02)
    return automations, events


def followers_family(g: Gen) -> tuple[list[Row], list[Row]]:
    """Causal ordering: followers before leaders, chains, lost leaders, redeliveries."""
    rng = g.rng
    automations = [g.automation(i, g.event_trigger()) for i in range(rng.choice([1, 2, 3]))]
    t = START + timedelta(seconds=rng.randint(0, 10))
    events: list[Row] = []
    for _ in range(rng.randint(6, 25)):
        t += timedelta(seconds=rng.choice(GAPS))
        events.append(g.event(rng.choice(NAMES), t))
    for i in range(len(events)):
        if g.chance(0.3):
            r = rng.random()
            if r < 0.5 and i + 1 < len(events):
                events[i]["follows"] = events[rng.randint(i + 1, len(events) - 1)]["id"]
            elif r < 0.7 and i > 0:
                events[i]["follows"] = events[rng.randrange(i)]["id"]
            else:
                events[i]["follows"] = g.uuid()  # never arrives: evaluated after 15 min
    out: list[Row] = []
    for event in events:
        out.append(event)
        if g.chance(0.15):
            copy = dict(event)
            occurred = datetime.fromisoformat(event["occurred"].replace("Z", "+00:00"))
            copy["received"] = ts(occurred + timedelta(seconds=rng.choice([0, 1, 5, 40, 90])))
            out.append(copy)
    out.sort(key=arrival)
    return automations, out


FAMILIES = [(random_family, 45), (sweep_family, 20), (held_family, 27), (followers_family, 8)]


def scenario(seed: int, index: int) -> Row:
    g = Gen(f"{seed}-{index}")
    family = g.rng.choices([f for f, _ in FAMILIES], weights=[w for _, w in FAMILIES])[0]
    automations, events = family(g)
    name = f"gen-{seed}-{index}"
    lost = family is followers_family and g.chance(0.5)
    extra = (905, 1000) if lost else (30, 130)  # past the 15-minute lookback
    return {
        "name": name,
        "description": f"generated ({family.__name__}), seed {seed}, index {index}",
        "tick_seconds": 1,
        "start": ts(START),
        "until": ts(g.until(events, extra)),
        "automations": automations,
        "events": events,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    seed, n, outdir = int(argv[0]), int(argv[1]), Path(argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        doc = scenario(seed, i)
        (outdir / f"{doc['name']}.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
