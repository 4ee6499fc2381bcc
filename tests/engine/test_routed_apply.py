"""``Evaluator.apply_routed``: an event routed to an automation (its interest tested
by the router) gives the same firings and state as ``apply_at``, which tests it."""

from __future__ import annotations

import random
from typing import Any

import pytest

from marmot.engine.interest import InterestIndex
from marmot.engine.timestamps import to_us
from tests.engine.factories import evaluator, event

NAMES = ["job.started", "job.failed", "job.done", "other.thing"]

TRIGGERS: list[dict[str, Any]] = [
    {"expect": ["job.failed"], "threshold": 2, "within": 60},
    {
        "posture": "Proactive",
        "after": ["job.started"],
        "expect": ["job.done"],
        "for_each": ["prefect.resource.id"],
        "within": 30,
    },
    {
        "expect": ["job.*"],
        "match": {"prefect.resource.id": "r.1"},
        "for_each": ["prefect.resource.id"],
        "threshold": 1,
    },
    {
        "type": "compound",
        "require": "all",
        "within": 120,
        "triggers": [
            {"expect": ["job.failed"], "threshold": 1},
            {"expect": ["job.started"], "match": {"prefect.resource.id": "r.2"}},
        ],
    },
]


@pytest.mark.parametrize("trigger", TRIGGERS, ids=["reactive", "proactive", "match", "compound"])
def test_a_routed_event_is_evaluated_as_apply_at_evaluates_it(trigger: dict[str, Any]) -> None:
    rng = random.Random(5)
    tested, routed = evaluator(trigger), evaluator(trigger)
    index: InterestIndex[str] = InterestIndex()
    index.set("a", routed.matchers)
    fired_tested, fired_routed = [], []
    for k in range(400):
        e = event(rng.choice(NAMES), k * 1.5, resource_id=f"r.{rng.randrange(3)}")
        occurred = to_us(e.occurred)
        fired_tested += tested.apply_at(e, occurred, occurred)
        if index.route(e):  # only what the router would send
            fired_routed += routed.apply_routed(e, occurred, occurred)
    assert fired_routed == fired_tested
    assert fired_tested, "the stream makes the trigger fire"
    assert routed.snapshot() == tested.snapshot()


def test_a_paused_automation_evaluates_nothing_routed_to_it() -> None:
    paused = evaluator(TRIGGERS[0], enabled=False)
    e = event("job.failed", 0)
    occurred = to_us(e.occurred)
    assert paused.apply_routed(e, occurred, occurred) == []
    assert paused.snapshot() == evaluator(TRIGGERS[0], enabled=False).snapshot()
