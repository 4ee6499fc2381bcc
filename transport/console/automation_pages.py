"""The console's automation pages: the list, one automation's details and live
state, the form that creates and edits, and the changes (pause, resume,
duplicate, delete). Every read and change is an RPC method called in-process.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from marmot.engine.errors import MarmotError, NotFound
from marmot.transport.console.context import Console, body_of, error_lines, form_of
from marmot.transport.console.lookups import Picks
from marmot.transport.console.starters import STARTERS, starter_document
from marmot.transport.console.summaries import (
    DocumentError,
    parse_document,
    trigger_summary,
    verdict_lines,
)
from marmot.transport.event_ids import new_event_id
from marmot.transport.protocol import METHODS

__all__ = ["AutomationPages", "PAGE_SIZE"]

# Automations per page of the list.
PAGE_SIZE = 50
# Ids one state request may ask about (a page's worth and some).
_MAX_STATE_IDS = 200
# Firings counted per automation for "in the last 24 h" (more shows as 1000+).
_MAX_COUNTED = 1000
# Firings on the detail page.
_HISTORY_FIRINGS = 50
# Bookkeeping an automation's view carries that its document does not.
_BOOKKEEPING = ("created", "updated", "version")


def _uuid(request: Request) -> str:
    try:
        return str(UUID(request.path_params["id"]))
    except ValueError:
        raise NotFound(f"no automation with id {request.path_params['id']!r}") from None


def _document_of(view: dict[str, Any]) -> dict[str, Any]:
    """An automation as ``automation inspect`` prints it (the client's model, dumped)."""
    model = METHODS["automations.read"].load(view)
    document: dict[str, Any] = model.model_dump(mode="json")
    return document


def _editable(document: dict[str, Any]) -> str:
    return yaml.safe_dump(
        {k: v for k, v in document.items() if k not in _BOOKKEEPING},
        sort_keys=False,
        allow_unicode=True,
    )


class AutomationPages:
    """Routes of ``/ui/automations...``."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        """The routes, most specific first."""
        return [
            Route("/automations", self.list_page),
            Route("/automations/state", self.state),
            Route("/automations/new", self.new_page, methods=["GET"]),
            Route("/automations/new", self.create, methods=["POST"]),
            Route("/automations/test", self.test, methods=["POST"]),
            Route("/automations/{id}", self.detail_page),
            Route("/automations/{id}/edit", self.edit_page, methods=["GET"]),
            Route("/automations/{id}/edit", self.save, methods=["POST"]),
            Route("/automations/{id}/pause", self.pause, methods=["POST"]),
            Route("/automations/{id}/resume", self.resume, methods=["POST"]),
            Route("/automations/{id}/duplicate", self.duplicate, methods=["POST"]),
            Route("/automations/{id}/delete", self.delete, methods=["POST"]),
        ]

    # -- the list ------------------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        """A page of automations, filtered by name prefix and state."""
        query = request.query_params
        prefix = query.get("q", "").strip()
        state = query.get("state", "all")
        try:
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            page = 1
        params: dict[str, Any] = {"limit": PAGE_SIZE + 1, "offset": (page - 1) * PAGE_SIZE}
        if prefix:
            params["name_prefix"] = prefix
        if state in ("enabled", "paused"):
            params["enabled"] = state == "enabled"
        found = await self.console.call("automations.filter", params)
        rows = [
            {
                "id": a["id"],
                "name": a["name"],
                "enabled": a["enabled"],
                "summary": trigger_summary(a["trigger"]),
                "actions": ", ".join(x["type"] for x in a.get("actions") or []),
                "tags": a.get("tags") or [],
            }
            for a in found[:PAGE_SIZE]
        ]
        return self.console.render(
            request,
            "automations.html",
            rows=rows,
            q=prefix,
            state=state,
            page=page,
            has_next=len(found) > PAGE_SIZE,
        )

    async def state(self, request: Request) -> Response:
        """The live columns of the listed automations (JSON): last fired, next
        deadline, open buckets and firings in the last 24 h, by id."""
        ids = [str(UUID(i)) for i in request.query_params.getlist("id")[:_MAX_STATE_IDS]]
        since = (datetime.now(UTC) - timedelta(hours=24)).isoformat()
        states = await asyncio.gather(*(self._state_of(i, since) for i in ids))
        return JSONResponse(dict(zip(ids, states, strict=True)))

    async def _state_of(self, automation_id: str, since: str) -> dict[str, Any]:
        call = self.console.call
        resource = f"prefect.automation.{automation_id}"
        try:
            explained, recent = await asyncio.gather(
                call("automations.explain", {"id": automation_id, "limit": 1}),
                call(
                    "events.filter",
                    {
                        "names": ["prefect.automation.triggered"],
                        "resource_id": resource,
                        "since": since,
                        "limit": _MAX_COUNTED,
                        "page": True,
                    },
                ),
            )
        except MarmotError as exc:
            return {"error": str(exc)}
        events = recent["events"]
        last = events[0]["occurred"] if events else None
        if last is None:
            older = await call(
                "events.filter",
                {"names": ["prefect.automation.triggered"], "resource_id": resource, "limit": 1},
            )
            last = older[0]["occurred"] if older else None
        count = f"{len(events)}+" if recent.get("next") else str(len(events))
        return {
            "last_fired": self.console.env.filters["when"](last) if last else "never",
            "next_deadline": self.console.env.filters["when"](explained["next_deadline"])
            if explained["next_deadline"]
            else "—",
            "open_buckets": explained["open_buckets"],
            "firings_24h": count,
        }

    # -- one automation -------------------------------------------------------------------

    async def detail(self, automation_id: str) -> dict[str, Any]:
        """Everything the detail page shows of one automation: the document, its
        explain state, its recent firings with each action's outcome
        (``automations.history``) and its incidents."""
        call = self.console.call
        view, explained, incidents, history = await asyncio.gather(
            call("automations.read", {"id": automation_id}),
            call("automations.explain", {"id": automation_id, "limit": 100}),
            call("incidents.filter", {"automation_id": automation_id, "limit": 100}),
            call("automations.history", {"id": automation_id, "limit": _HISTORY_FIRINGS}),
        )
        matched: dict[str, dict[str, Any]] = {}
        for firing in history["firings"]:
            event_id = firing.get("triggering_event_id")
            if event_id and event_id not in matched:
                matched[event_id] = {
                    "id": event_id,
                    "event": firing.get("triggering_event"),
                    "fired_at": firing["fired_at"],
                    "labels": firing["labels"],
                }
        return {
            "automation": view,
            "document": _document_of(view),
            "summary": trigger_summary(view["trigger"]),
            "explained": explained,
            "incidents": incidents,
            "firings": history["firings"],
            "more_firings": history.get("next") is not None,
            "matched": list(matched.values()),
        }

    async def detail_page(self, request: Request) -> Response:
        """One automation: definition, live state, firings, matched events, incidents."""
        values = await self.detail(_uuid(request))
        return self.console.render(request, "automation.html", **values)

    # -- the form ----------------------------------------------------------------------

    def _form(
        self,
        request: Request,
        text: str,
        *,
        automation: dict[str, Any] | None = None,
        errors: list[str] | None = None,
        line: int | None = None,
        blocks: list[dict[str, Any]] | None = None,
        picks: Picks | None = None,
    ) -> Response:
        return self.console.render(
            request,
            "automation_form.html",
            status_code=422 if errors else 200,
            text=text,
            automation=automation,
            errors=errors or [],
            line=line,
            starters=STARTERS,
            blocks=blocks or [],
            picks=picks,
        )

    async def _choices(self) -> dict[str, Any]:
        """The form's pick lists: Marmot's blocks, and the orchestrator's deployments,
        work pools and queues when one is configured."""
        orchestrator = self.console.orchestrator
        if orchestrator is None:
            return {"blocks": await self.console.call("blocks.filter", {})}
        blocks, picks = await asyncio.gather(
            self.console.call("blocks.filter", {}), orchestrator.picks()
        )
        return {"blocks": blocks, "picks": picks}

    async def new_page(self, request: Request) -> Response:
        """The form, filled with a template (the first one unless ``template`` names one)."""
        key = request.query_params.get("template", STARTERS[0].key)
        document = starter_document(key) or STARTERS[0].document
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return self._form(request, text, **await self._choices())

    async def edit_page(self, request: Request) -> Response:
        """The form, filled with the automation's document."""
        view = await self.console.call("automations.read", {"id": _uuid(request)})
        return self._form(
            request,
            _editable(_document_of(view)),
            automation=view,
            **await self._choices(),
        )

    async def _submit(
        self, request: Request, method: str, automation: dict[str, Any] | None
    ) -> Response:
        form = await form_of(request)
        text = str(form.get("document", ""))
        try:
            document = parse_document(text)
            params: dict[str, Any] = {"automation": document}
            if automation is not None:
                params["id"] = automation["id"]
            saved = await self.console.call(method, params)
        except DocumentError as exc:
            return self._form(
                request,
                text,
                automation=automation,
                errors=[str(exc)],
                line=exc.line,
                **await self._choices(),
            )
        except MarmotError as exc:
            return self._form(
                request,
                text,
                automation=automation,
                errors=error_lines(exc),
                **await self._choices(),
            )
        return self.console.back(f"/automations/{saved['id']}")

    async def create(self, request: Request) -> Response:
        """Create the automation of the form (``automations.create``)."""
        return await self._submit(request, "automations.create", None)

    async def save(self, request: Request) -> Response:
        """Update the automation from the form (``automations.update``)."""
        view = await self.console.call("automations.read", {"id": _uuid(request)})
        return await self._submit(request, "automations.update", view)

    async def test(self, request: Request) -> Response:
        """The "test with an event" box: per condition, whether the event would
        match and fire (``automations.test``, a dry run that changes nothing), as
        JSON lines. An event without ``id`` or ``occurred`` gets a new id and now."""
        try:
            body = json.loads(await body_of(request) or b"{}")
            if not isinstance(body, dict):
                raise DocumentError("the request must be a JSON object")
            automation = parse_document(str(body.get("automation", "")))
            event = parse_document(str(body.get("event", "")))
            event.setdefault("id", str(new_event_id()))
            event.setdefault("occurred", datetime.now(UTC).isoformat())
            report = await self.console.call(
                "automations.test", {"automation": automation, "events": [event]}
            )
        except (DocumentError, ValueError) as exc:
            where = f" (line {exc.line})" if isinstance(exc, DocumentError) and exc.line else ""
            return JSONResponse({"ok": False, "lines": [f"error: {exc}{where}"]}, status_code=422)
        except MarmotError as exc:
            lines = error_lines(exc)
            return JSONResponse(
                {"ok": False, "lines": [f"error: {lines[0]}", *lines[1:]]}, status_code=422
            )
        return JSONResponse({"ok": True, "lines": verdict_lines(report)})

    # -- changes -----------------------------------------------------------------------

    async def _change(self, request: Request, method: str) -> Response:
        automation_id = _uuid(request)
        await self.console.call(method, {"id": automation_id})
        form = await form_of(request)
        target = str(form.get("next", ""))
        if target.startswith("/automations"):
            path, _, query = target.partition("?")
            response = self.console.back(path)
            if query:
                response.headers["location"] += "?" + query
            return response
        return self.console.back(f"/automations/{automation_id}")

    async def pause(self, request: Request) -> Response:
        """Pause (``automations.pause``), then back to where the button was."""
        return await self._change(request, "automations.pause")

    async def resume(self, request: Request) -> Response:
        """Resume (``automations.resume``), then back to where the button was."""
        return await self._change(request, "automations.resume")

    async def delete(self, request: Request) -> Response:
        """Delete (``automations.delete``), then the list."""
        await self.console.call("automations.delete", {"id": _uuid(request)})
        return self.console.back("/automations")

    async def duplicate(self, request: Request) -> Response:
        """A copy under a free name "<name> (copy)", opened in the form."""
        view = await self.console.call("automations.read", {"id": _uuid(request)})
        document = {k: v for k, v in _document_of(view).items() if k not in (*_BOOKKEEPING, "id")}
        base = f"{document['name']} (copy)"
        for attempt in range(1, 100):
            document["name"] = base if attempt == 1 else f"{base[:-1]} {attempt})"
            try:
                await self.console.call("automations.read_by_name", {"name": document["name"]})
            except NotFound:
                break
        created = await self.console.call("automations.create", {"automation": document})
        return self.console.back(f"/automations/{created['id']}/edit")
