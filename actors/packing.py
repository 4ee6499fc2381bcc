"""How many automations share an automation actor: the layout policy of ``Placement``.

``automations_per_actor: N`` packs N to an actor, first fit. ``auto`` (the
default) gives each automation its own actor (the design card's layout:
isolation, and every core in use) while the fleet fits in the actors the
node holds (``marmot status``: capacity) or ``max_automation_actors``;
beyond that the layout turns *packed*: automations go into shared actors
of at least ``AUTO_PER_ACTOR``, or the fleet spread over ``SHARDS_PER_CORE``
actors per core when that is more (each shared actor unpacks every event
sent to it, so on a small node fewer, larger ones do less work: 10,000
automations on 2 cores ran 2,800 events/s in 20 actors, 4,200 in 4), and
once the actors budget is spent into the least loaded one, so creating one
more automation never fails for lack of processes. The automations that had
actors of their own are then moved into shared ones (``Placement.move``).
The layout stays packed until the daemon restarts; a restart lays out the
whole fleet at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Set
from typing import Literal

__all__ = ["AUTO_PER_ACTOR", "Layout", "SINGLE_PREFIX"]

# Automations to a shared actor once ``auto`` packs, at least.
AUTO_PER_ACTOR = 500
# Shared actors per core the fleet is spread over when that makes them larger.
SHARDS_PER_CORE = 2

SINGLE_PREFIX = "automation-"
_SHARD_PREFIX = "shard-"


class Layout:
    """Chooses the actor key of each new automation."""

    def __init__(self, per_actor: int | Literal["auto"], budget: int, cores: float = 1) -> None:
        """``budget``: most automation actors (the node's capacity for them, or
        ``max_automation_actors``); ``cores``: the node's CPUs."""
        self.auto = per_actor == "auto"
        self.per_actor = AUTO_PER_ACTOR if per_actor == "auto" else per_actor
        self.budget = max(budget, 1)
        self.cores = max(cores, 1)
        self.packed = per_actor != "auto" and per_actor > 1

    def plan(self, fleet: int) -> bool:
        """Lay out for ``fleet`` automations in all; returns whether this turned the
        layout packed (the automations in actors of their own are to be moved)."""
        turned = self.auto and not self.packed and fleet > self.budget
        if turned:
            self.packed = True
        if self.auto and self.packed:
            spread = -(-fleet // max(int(self.cores * SHARDS_PER_CORE), 1))
            self.per_actor = max(self.per_actor, spread)
        return turned

    def key_for(self, automation_id: str, actors: Mapping[str, Set[str]]) -> str:
        """The actor for a new automation, given the actors and whom they host."""
        if not self.packed:
            return f"{SINGLE_PREFIX}{automation_id}"
        shards = {k: hosted for k, hosted in actors.items() if k.startswith(_SHARD_PREFIX)}
        for key, hosted in shards.items():
            if len(hosted) < self.per_actor:
                return key
        if shards and self.auto and len(actors) >= self.budget:
            return min(shards, key=lambda k: len(shards[k]))
        free = next(i for i in itertools.count() if f"{_SHARD_PREFIX}{i}" not in actors)
        return f"{_SHARD_PREFIX}{free}"

    @staticmethod
    def alone(key: str) -> bool:
        """Whether the actor under ``key`` was made for one automation."""
        return key.startswith(SINGLE_PREFIX)

    def describe(self) -> dict[str, object]:
        """For ``marmot status``."""
        return {
            "mode": "auto" if self.auto else "fixed",
            "packed": self.packed,
            "per_shared_actor": self.per_actor,
            "actor_budget": self.budget,
        }
