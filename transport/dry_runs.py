"""``automations.test``: turn the request into an automation and events, then dry-run.

The automation is the stored one (by id) or a document from the request,
validated as ``automations.create`` would; events from the request are
validated as ``events.emit`` would (with the daemon's limits). A document
that is stored with the same trigger runs on the live state's copy; any
other runs on a fresh state.
"""

from __future__ import annotations

from pydantic import TypeAdapter

from marmot.actors.inspection import DryRunInput, Inspector
from marmot.actors.service import Service
from marmot.engine.clock import Clock
from marmot.engine.errors import NotFound
from marmot.engine.models.automations import Automation
from marmot.engine.models.events import Event, EventLimits
from marmot.engine.models.verdicts import TestReport
from marmot.engine.templates.checks import validated_automation
from marmot.transport import protocol as p

__all__ = ["dry_run"]

_EVENTS: TypeAdapter[dict[str, list[Event]]] = TypeAdapter(dict[str, list[Event]])


async def dry_run(
    service: Service, params: p.TestAutomation, limits: EventLimits, clock: Clock
) -> TestReport:
    """Evaluate the request's events on its automation; changes nothing."""
    inspector = Inspector(service, clock)
    automation, use_live = _automation(service, params)
    if params.events:
        context = {"limits": limits}
        events = _EVENTS.validate_python({"events": params.events}, context=context)["events"]
        inputs = [DryRunInput(event) for event in events]
    else:
        inputs = inspector.logged_events(params.event_ids, params.last, params.event_name)
    return await inspector.test(automation, inputs, use_live=use_live)


def _automation(service: Service, params: p.TestAutomation) -> tuple[Automation, bool]:
    if params.id is not None:
        return service.store.automations.read(params.id).automation, True
    assert params.automation is not None  # the params model requires one of them
    automation = validated_automation(params.automation)
    try:
        stored = service.store.automations.read(automation.id).automation
    except NotFound:
        return automation, False
    # The live state belongs to the stored trigger; another trigger starts empty.
    return automation, stored.trigger == automation.trigger and stored.enabled
