"""A metric firing's reading (value and threshold) crosses the wire to the executors."""

from __future__ import annotations

from marmot.actors.wire import firing_from_wire, firing_to_wire
from tests.engine.test_rules_metric import SLOW, engine, finished, simulate


def test_the_reading_crosses_the_wire() -> None:
    (fired,) = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    assert fired.metric is not None
    assert firing_from_wire(firing_to_wire(fired)).metric == fired.metric


def test_a_row_without_a_reading_still_loads() -> None:
    # Rows written before the reading was carried have eleven fields.
    (fired,) = simulate(engine(SLOW), finished("a", 0, 100), until=5000)
    assert firing_from_wire(firing_to_wire(fired)[:11]).metric is None
