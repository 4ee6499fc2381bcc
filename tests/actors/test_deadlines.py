"""The daemon's record of the deadlines it has sent to the timer."""

from __future__ import annotations

from marmot.actors.deadlines import DeadlineLedger


def test_only_changes_are_sent_and_deadlines_are_counted() -> None:
    ledger = DeadlineLedger()
    assert ledger.changed({"a": 10, "b": None}) == {"a": 10, "b": None}
    assert ledger.timed == 1
    assert ledger.changed({"a": 10, "b": None}) == {}  # nothing new
    assert ledger.changed({"a": 20, "b": 5}) == {"a": 20, "b": 5}
    assert ledger.timed == 2
    assert sorted(ledger.pending()) == [("a", 20), ("b", 5)]
    assert ledger.changed({"a": None}) == {"a": None}
    assert ledger.timed == 1
    assert ledger.changed({"b": None, "c": None}) == {"b": None, "c": None}
    assert ledger.timed == 0
    assert list(ledger.pending()) == []
