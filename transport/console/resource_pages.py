"""The console's other pages: the event feed and one event, incidents, webhooks,
blocks and the daemon's status. Each read and change is an RPC method called
in-process, as the CLI's commands call them over the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from marmot.engine.errors import MarmotError, NotFound, ValidationFailed
from marmot.transport.console.context import Console, error_lines, form_of
from marmot.transport.console.summaries import (
    DocumentError,
    automation_id_of,
    parse_document,
)

__all__ = ["ResourcePages", "event_row"]

# Events on the feed's first render (newer ones arrive live).
_FEED_ROWS = 100
# The new-webhook form's template: every call becomes one event.
_DEFAULT_TEMPLATE = (
    '{"event": "webhook.called", "resource": {"prefect.resource.id": "webhook.my-hook"}}'
)
# The automation events searched for the firings one event caused.
_CAUSED_SCAN = 1000


def _id(request: Request) -> str:
    try:
        return str(UUID(request.path_params["id"]))
    except ValueError:
        raise NotFound(f"no such id {request.path_params['id']!r}") from None


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    """One event as a row of the feed (the page's table and the live stream alike)."""
    resource = event.get("resource") or {}
    resource_id = str(resource.get("prefect.resource.id", ""))
    return {
        "seq": event.get("seq"),
        "id": str(event.get("id")),
        "occurred": str(event.get("occurred", "")),
        "event": str(event.get("event", "")),
        "resource": resource_id,
        "automation": automation_id_of(resource_id),
    }


def feed_filter(request: Request) -> dict[str, Any]:
    """The feed's filters from its query: a name pattern and a resource id."""
    params: dict[str, Any] = {}
    name = request.query_params.get("name", "").strip()
    if name:
        params["names"] = [name]
    resource = request.query_params.get("resource", "").strip()
    if resource:
        params["resource_id"] = resource
    return params


class ResourcePages:
    """Routes of ``/ui/events``, ``/ui/incidents``, ``/ui/webhooks``, ``/ui/blocks``
    and ``/ui/status``."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        return [
            Route("/events", self.events_page),
            Route("/events/{seq:int}", self.event_page),
            Route("/incidents", self.incidents_page),
            Route("/incidents/{id}/resolve", self.resolve_incident, methods=["POST"]),
            Route("/webhooks", self.webhooks_page, methods=["GET"]),
            Route("/webhooks", self.create_webhook, methods=["POST"]),
            Route("/webhooks/{id}/enable", self.enable_webhook, methods=["POST"]),
            Route("/webhooks/{id}/disable", self.disable_webhook, methods=["POST"]),
            Route("/webhooks/{id}/rotate", self.rotate_webhook, methods=["POST"]),
            Route("/webhooks/{id}/delete", self.delete_webhook, methods=["POST"]),
            Route("/blocks", self.blocks_page, methods=["GET"]),
            Route("/blocks", self.create_block, methods=["POST"]),
            Route("/blocks/{id}/delete", self.delete_block, methods=["POST"]),
            Route("/status", self.status_page),
            Route("/status.json", self.status_json),
        ]

    # -- events ------------------------------------------------------------------------

    async def events_page(self, request: Request) -> Response:
        """The feed: the newest events (by arrival), then live ones (``live.py``)."""
        params = {**feed_filter(request), "limit": _FEED_ROWS, "by_seq": True, "page": True}
        errors: list[str] = []
        rows: list[dict[str, Any]] = []
        try:
            found = await self.console.call("events.filter", params)
            rows = [event_row(e) for e in found["events"]]
        except ValidationFailed as exc:
            errors = error_lines(exc)
        return self.console.render(
            request,
            "events.html",
            rows=rows,
            errors=errors,
            name=request.query_params.get("name", ""),
            resource=request.query_params.get("resource", ""),
            last_seq=max((r["seq"] for r in rows), default=0),
        )

    async def event_page(self, request: Request) -> Response:
        """One event: its JSON, the automation it belongs to (``prefect.automation.*``)
        and the firings it caused."""
        seq = int(request.path_params["seq"])
        found = await self.console.call("events.filter", {"after_seq": max(seq - 1, 0), "limit": 1})
        if not found or found[0]["seq"] != seq:
            raise NotFound(f"no event {seq} in the log (it may have been trimmed)")
        event = found[0]
        row = event_row(event)
        # Firings this event triggered: automation.triggered events logged after it.
        later = await self.console.call(
            "events.filter",
            {
                "names": ["prefect.automation.triggered", "prefect.automation.resolved"],
                "after_seq": seq,
                "limit": _CAUSED_SCAN,
                "page": True,
            },
        )
        caused = [
            event_row(e)
            for e in later["events"]
            if str(((e.get("payload") or {}).get("triggering_event") or {}).get("id")) == row["id"]
        ]
        return self.console.render(request, "event.html", event=event, row=row, caused=caused)

    # -- incidents ---------------------------------------------------------------------

    async def incidents_page(self, request: Request) -> Response:
        status = request.query_params.get("status", "open")
        params: dict[str, Any] = {"limit": 500}
        if status in ("open", "resolved"):
            params["status"] = status
        incidents = await self.console.call("incidents.filter", params)
        return self.console.render(request, "incidents.html", incidents=incidents, status=status)

    async def resolve_incident(self, request: Request) -> Response:
        """``incidents.resolve``, then the open incidents."""
        await self.console.call("incidents.resolve", {"id": _id(request)})
        return self.console.back("/incidents")

    # -- webhooks ----------------------------------------------------------------------

    async def _webhooks(
        self, request: Request, errors: list[str] | None = None, form: dict[str, str] | None = None
    ) -> Response:
        webhooks = await self.console.call("webhooks.filter", {})
        return self.console.render(
            request,
            "webhooks.html",
            status_code=422 if errors else 200,
            webhooks=webhooks,
            errors=errors or [],
            form=form or {},
            default_template=_DEFAULT_TEMPLATE,
        )

    async def webhooks_page(self, request: Request) -> Response:
        return await self._webhooks(request)

    async def create_webhook(self, request: Request) -> Response:
        """``webhooks.create`` from the form (name, description, template)."""
        form = await form_of(request)
        values = {k: str(form.get(k, "")) for k in ("name", "description", "template")}
        try:
            await self.console.call("webhooks.create", {"webhook": values})
        except MarmotError as exc:
            return await self._webhooks(request, error_lines(exc), values)
        return self.console.back("/webhooks")

    async def enable_webhook(self, request: Request) -> Response:
        await self.console.call("webhooks.update", {"id": _id(request), "enabled": True})
        return self.console.back("/webhooks")

    async def disable_webhook(self, request: Request) -> Response:
        await self.console.call("webhooks.update", {"id": _id(request), "enabled": False})
        return self.console.back("/webhooks")

    async def rotate_webhook(self, request: Request) -> Response:
        """``webhooks.rotate``: a new slug, so a new URL; the old one stops working."""
        await self.console.call("webhooks.rotate", {"id": _id(request)})
        return self.console.back("/webhooks")

    async def delete_webhook(self, request: Request) -> Response:
        await self.console.call("webhooks.delete", {"id": _id(request)})
        return self.console.back("/webhooks")

    # -- blocks ------------------------------------------------------------------------

    async def _blocks(
        self,
        request: Request,
        errors: list[str] | None = None,
        text: str = "",
    ) -> Response:
        blocks = await self.console.call("blocks.filter", {})
        return self.console.render(
            request,
            "blocks.html",
            status_code=422 if errors else 200,
            blocks=blocks,
            errors=errors or [],
            text=text,
        )

    async def blocks_page(self, request: Request) -> Response:
        """Blocks, secrets masked as the RPC returns them."""
        return await self._blocks(request)

    async def create_block(self, request: Request) -> Response:
        """``blocks.create`` from a pasted YAML or JSON document."""
        form = await form_of(request)
        text = str(form.get("document", ""))
        try:
            await self.console.call("blocks.create", {"block": parse_document(text)})
        except DocumentError as exc:
            where = f" (line {exc.line})" if exc.line else ""
            return await self._blocks(request, [f"{exc}{where}"], text)
        except MarmotError as exc:
            return await self._blocks(request, error_lines(exc), text)
        return self.console.back("/blocks")

    async def delete_block(self, request: Request) -> Response:
        await self.console.call("blocks.delete", {"id": _id(request)})
        return self.console.back("/blocks")

    # -- status ------------------------------------------------------------------------

    async def _status(self) -> tuple[dict[str, Any], dict[str, Any]]:
        status, health = await asyncio.gather(
            self.console.call("status", {}), self.console.call("health", {})
        )
        return status, health

    async def status_page(self, request: Request) -> Response:
        """Events clock, queues, capacity, start-up progress and any other section
        ``status`` reports (an event bridge's state, for one)."""
        status, health = await self._status()
        return self.console.render(request, "status.html", status=status, health=health)

    async def status_json(self, request: Request) -> Response:
        status, health = await self._status()
        return JSONResponse({"status": status, "health": health})
