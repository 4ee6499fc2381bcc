"""Automations moved between a Prefect server and Marmot: read, compared, paused, written.

``read_prefect_automations`` pages ``POST /automations/filter``; ``plan_import``
says, for each, what importing it into Marmot does (created, updated,
unchanged, or refused with the reason and the field), keeping its id, name,
trigger, actions and ``owner_resource``; ``pause_prefect_automation`` disables
one on the server. ``prefect_document`` writes a Marmot automation in
Prefect's schema (``prefect automation create --from-file`` loads it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import httpx
from pydantic import ValidationError

from marmot.engine.models.automations import Automation
from marmot.problems import problems
from marmot.transport.prefect_api import request

__all__ = [
    "ImportOutcome",
    "ImportStep",
    "pause_prefect_automation",
    "plan_import",
    "prefect_document",
    "read_prefect_automations",
    "selected",
]

# Automations asked for per page of POST /automations/filter.
_PAGE = 200
# What a Prefect automation carries that is not its definition.
_SERVER_FIELDS = ("created", "updated", "created_by", "updated_by")


class ImportOutcome(enum.StrEnum):
    """What importing one automation does."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ImportStep:
    """One automation of the server and what importing it does.

    ``automation`` is what Marmot is to hold (None when refused); ``field`` and
    ``reason`` say why it was refused.
    """

    id: str
    name: str
    outcome: ImportOutcome
    automation: Automation | None = None
    field: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The step as the CLI's ``--json`` prints it."""
        row: dict[str, Any] = {"id": self.id, "name": self.name, "outcome": self.outcome.value}
        if self.outcome is ImportOutcome.REFUSED:
            row.update(field=self.field, reason=self.reason)
        return row


async def read_prefect_automations(http: httpx.AsyncClient, api_url: str) -> list[dict[str, Any]]:
    """Every automation on the server, as its JSON (``POST /automations/filter``, paged).
    Raises ``httpx.HTTPError``."""
    found: list[dict[str, Any]] = []
    url = api_url.rstrip("/") + "/automations/filter"
    while True:
        response = await request(http, "POST", url, json={"limit": _PAGE, "offset": len(found)})
        page: list[dict[str, Any]] = response.json()
        found += page
        if len(page) < _PAGE:
            return found


async def pause_prefect_automation(
    http: httpx.AsyncClient, api_url: str, automation_id: str
) -> None:
    """Disable one automation on the server. Raises ``httpx.HTTPError``."""
    url = f"{api_url.rstrip('/')}/automations/{automation_id}"
    await request(http, "PATCH", url, json={"enabled": False})


def selected(
    documents: Iterable[Mapping[str, Any]], globs: Sequence[str]
) -> list[Mapping[str, Any]]:
    """The automations whose name matches one of ``globs`` (all when there are none)."""
    if not globs:
        return list(documents)
    return [d for d in documents if any(fnmatchcase(str(d.get("name", "")), g) for g in globs)]


def plan_import(
    documents: Iterable[Mapping[str, Any]],
    existing: Iterable[Automation],
    *,
    adopt_by_name: bool = False,
) -> list[ImportStep]:
    """What importing each Prefect automation into Marmot does, given Marmot's
    automations ``existing``.

    An automation keeps its id: one Marmot has under that id is updated when
    its definition differs, and left alone otherwise. Marmot's ``enabled``
    stays as it is on an update (a source paused by ``--pause-source`` must
    not pause its copy); a new copy is enabled as its source was. An
    automation that does not validate is refused; so is one whose name Marmot
    holds under another id, unless ``adopt_by_name``: then that automation is
    updated in place, under its id (``prefect deploy`` recreates a deployment's
    triggers under new ids and the same names).
    """
    by_id = {a.id: a for a in existing}
    by_name = {a.name: a for a in by_id.values()}
    steps: list[ImportStep] = []
    for document in documents:
        ident, name = str(document.get("id", "")), str(document.get("name", ""))
        body = {k: v for k, v in document.items() if k not in _SERVER_FIELDS}
        try:
            automation = Automation.model_validate(body)
        except ValidationError as exc:
            loc, reason = problems(exc, Automation)[0]
            field = ".".join(str(part) for part in loc) or None
            steps.append(ImportStep(ident, name, ImportOutcome.REFUSED, field=field, reason=reason))
            continue
        current = by_id.get(automation.id)
        holder = by_name.get(automation.name)
        if holder is not None and holder.id != automation.id and adopt_by_name:
            automation = automation.model_copy(update={"id": holder.id})
            current = holder
        elif holder is not None and holder.id != automation.id:
            reason = f"Marmot has an automation of this name with another id ({holder.id})"
            steps.append(
                ImportStep(ident, name, ImportOutcome.REFUSED, field="name", reason=reason)
            )
            continue
        if current is None:
            steps.append(ImportStep(ident, name, ImportOutcome.CREATED, automation))
            continue
        automation = automation.model_copy(update={"enabled": current.enabled})
        outcome = (
            ImportOutcome.UNCHANGED
            if _definition(automation) == _definition(current)
            else ImportOutcome.UPDATED
        )
        steps.append(ImportStep(ident, name, outcome, automation))
    return steps


def _definition(automation: Automation) -> dict[str, Any]:
    """The automation's document alone (a stored view's bookkeeping left out)."""
    return automation.model_dump(mode="json", include=set(Automation.model_fields))


def prefect_document(automation: Automation) -> dict[str, Any]:
    """The automation in Prefect's schema (the JSON ``AutomationCore`` validates, with
    the id kept so it comes back into Marmot as the same automation)."""
    return _definition(automation)
