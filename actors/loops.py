"""Stopping automations that fire on their own events without end.

An automation whose trigger matches ``prefect.automation.*`` events can fire
on the events its own firings make (``automation.triggered``, the action
events), which make it fire again: thousands of times a second, forever.
``LoopGuard`` counts, per automation, the firings whose triggering event was
made by an automation; past ``limits.loop_firings`` of them within
``limits.loop_window_s`` the automation is looping, and the daemon pauses it
(with a ``marmot.automation.loop-stopped`` event saying why).
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from uuid import UUID

from marmot.engine.models.events import RESOURCE_ID, Event, trusted_event
from marmot.engine.triggers.firing import FIRING_NAMESPACE, Firing, name_uuid

__all__ = ["LOOP_STOPPED", "LoopGuard", "loop_stopped_event"]

LOOP_STOPPED = "marmot.automation.loop-stopped"
"""The event the daemon emits when it pauses a looping automation."""

_AUTOMATION_EVENTS = "prefect.automation."


def _made_by_automation(firing: Firing) -> bool:
    event = firing.triggering_event
    return event is not None and event.event.startswith(_AUTOMATION_EVENTS)


class LoopGuard:
    """Per automation, the recent firings caused by automation events (µs times)."""

    def __init__(self, max_firings: int, window_us: int) -> None:
        self.max_firings = max_firings
        self.window_us = window_us
        self._recent: dict[str, deque[int]] = {}

    def is_looping(self, firing: Firing, now_us: int) -> bool:
        """Record a firing; True when its automation has just gone past the limit."""
        if not _made_by_automation(firing):
            return False
        automation_id = str(firing.automation_id)
        recent = self._recent.setdefault(automation_id, deque())
        recent.append(now_us)
        while recent and recent[0] <= now_us - self.window_us:
            recent.popleft()
        if len(recent) > self.max_firings:
            del self._recent[automation_id]
            return True
        return False

    def forget(self, automation_id: str) -> None:
        """Drop what is counted for an automation (paused, changed or deleted)."""
        self._recent.pop(automation_id, None)


def loop_stopped_event(
    automation_id: UUID, name: str, firings: int, window_s: float, when: datetime
) -> Event:
    """``marmot.automation.loop-stopped`` for an automation the daemon paused at ``when``."""
    return trusted_event(
        name_uuid(FIRING_NAMESPACE, f"loop-stopped|{automation_id}|{when.isoformat()}"),
        when,
        LOOP_STOPPED,
        {RESOURCE_ID: f"prefect.automation.{automation_id}", "prefect.resource.name": name},
        [],
        {
            "reason": (
                f"more than {firings} firings within {window_s:g} s were caused by "
                "automation events: the automation fires on its own events"
            ),
            "firings": firings,
            "window_s": window_s,
        },
        None,
        None,
    )
