"""The layout policy of automation actors (actors/packing.py): pure, no Ray."""

from __future__ import annotations

from marmot.actors.packing import AUTO_PER_ACTOR, Layout


def test_auto_gives_each_automation_its_own_actor_while_the_fleet_fits() -> None:
    layout = Layout("auto", budget=3)
    assert layout.plan(3) is False
    assert layout.key_for("a", {}) == "automation-a"
    assert layout.key_for("b", {"automation-a": {"a"}}) == "automation-b"
    assert layout.describe()["packed"] is False


def test_auto_packs_once_the_fleet_outgrows_the_budget_and_says_so_once() -> None:
    layout = Layout("auto", budget=3)
    assert layout.plan(4) is True  # the caller moves the automations alone in actors
    assert layout.plan(5) is False  # already packed
    assert layout.key_for("d", {"automation-a": {"a"}}) == "shard-0"
    full = {f"x{i}" for i in range(AUTO_PER_ACTOR)}
    assert layout.key_for("e", {"shard-0": full}) == "shard-1"
    assert layout.key_for("e", {"shard-0": full, "shard-1": {"y"}}) == "shard-1"


def test_auto_never_runs_more_actors_than_the_budget_it_fills_the_least_loaded() -> None:
    layout = Layout("auto", budget=2)
    layout.plan(300)
    full = {f"x{i}" for i in range(AUTO_PER_ACTOR)}
    fuller = full | {"extra"}
    assert layout.key_for("z", {"shard-0": fuller, "shard-1": full}) == "shard-1"
    # An actor of its own not yet moved counts against the budget too.
    assert layout.key_for("z", {"automation-a": {"a"}, "shard-0": full}) == "shard-0"


def test_a_fixed_number_packs_from_the_first_automation_first_fit() -> None:
    layout = Layout(3, budget=1)
    assert layout.plan(10) is False  # nothing to move: it was packed from the start
    assert layout.key_for("a", {}) == "shard-0"
    assert layout.key_for("d", {"shard-0": {"a", "b", "c"}}) == "shard-1"
    # Not bounded by the budget: the operator chose the size.
    assert layout.key_for("g", {"shard-0": {"a", "b", "c"}, "shard-1": {"d", "e", "f"}}) == (
        "shard-2"
    )


def test_one_per_actor_never_packs() -> None:
    layout = Layout(1, budget=1)
    assert layout.plan(1_000) is False
    assert layout.key_for("a", {"automation-b": {"b"}}) == "automation-a"


def test_auto_spreads_a_large_fleet_over_a_few_actors_per_core() -> None:
    layout = Layout("auto", budget=100, cores=2)
    layout.plan(10_000)
    assert layout.per_actor == 2_500  # 4 actors: 2 per core
    layout.plan(12_000)
    assert layout.per_actor == 3_000  # grows with the fleet, never shrinks
    layout.plan(500)
    assert layout.per_actor == 3_000
    small = Layout("auto", budget=100, cores=2)
    small.plan(101)
    assert small.per_actor == AUTO_PER_ACTOR
