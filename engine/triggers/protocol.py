"""The contract between the evaluator and each trigger's state (bytewax's stateful logic).

An event or metric trigger is fed events (``on_event``) and time
(``advance``), says when it next needs time (``next_deadline``), and carries
its state across restarts (``snapshot`` / ``restore``). A composite trigger
only combines its children's firings, so it is ``Stateful`` alone. Times are
integer microseconds; the caller owns the clock.
"""

from __future__ import annotations

from typing import Any, Protocol

from marmot.engine.matching import TriggerMatcher
from marmot.engine.models.events import Event


class Stateful(Protocol):
    """State that survives a restart as plain, msgpack-able values."""

    def snapshot(self) -> Any:
        """The state as plain values."""
        ...

    def restore(self, data: Any) -> None:
        """Replace the state with one ``snapshot`` took (of the same trigger)."""
        ...

    def clear(self) -> None:
        """Forget the state, as when the automation changes (SEMANTICS §5)."""
        ...


class TriggerLogic(Stateful, Protocol):
    """An event or metric trigger: evaluated on events and over time."""

    matcher: TriggerMatcher

    def on_event(self, event: Event, occurred: int, now: int) -> None:
        """Evaluate one event it is interested in, which occurred at ``occurred``,
        processed at ``now``."""
        ...

    def advance(self, as_of: int, now: int) -> None:
        """Evaluate at ``as_of`` on the events clock (``now``: the processing clock)."""
        ...

    def sweep(self, as_of: int, now: int) -> None:
        """Forget what ended long enough before ``as_of`` (SEMANTICS §3.3's sweep)."""
        ...

    def next_deadline(self) -> int | None:
        """The earliest ``as_of`` at which ``advance`` would change anything: ``-1``
        for as soon as possible, None for not until another event arrives."""
        ...
