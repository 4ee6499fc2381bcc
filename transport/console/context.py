"""What every console page needs: the way into the API, the templates, the
sessions and the signal that the server is stopping.

Pages call ``Console.call(method, params)``, which runs the RPC handler of
that name in-process (``RpcServer.call``): the console has no rules of its
own, and a failure is the ``MarmotError`` the CLI would print.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

import yaml
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from marmot.engine.errors import LimitExceeded, MarmotError
from marmot.transport.console.lookups import OrchestratorNames
from marmot.transport.console.sessions import CSRF_FIELD, Session, Sessions

__all__ = ["PREFIX", "Call", "Console", "error_lines", "form_of"]

# Where the console is served.
PREFIX = "/ui"
# The largest form or JSON body read (an automation document is well under it).
MAX_BODY_BYTES = 2 * 1024 * 1024

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


def error_lines(error: MarmotError) -> list[str]:
    """A failure as the CLI says it (its message), then one line per field path
    of a validation error (``trigger.within: ...``), as the RPC returns them."""
    lines = [str(error)]
    details = error.details
    if isinstance(details, list):
        for item in details:
            if isinstance(item, Mapping) and "loc" in item:
                where = ".".join(str(p) for p in item.get("loc") or []) or "(document)"
                lines.append(f"{where}: {item.get('msg', '')}")
    return lines


async def body_of(request: Request) -> bytes:
    """The request's body, refused (``LimitExceeded``) past ``MAX_BODY_BYTES``; read
    once and kept for the guard and the page."""
    kept: bytes | None = getattr(request.state, "body", None)
    if kept is not None:
        return kept
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise LimitExceeded(f"the request is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    request.state.body = b"".join(chunks)
    return request.state.body  # type: ignore[no-any-return]


async def form_of(request: Request) -> dict[str, str]:
    """A URL-encoded form's fields (the console's forms send nothing else); the
    first value of a repeated field."""
    text = (await body_of(request)).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def _when(value: Any) -> str:
    """An RFC 3339 time as ``YYYY-MM-DD HH:MM:SS`` UTC (the full value is in a title)."""
    if not value:
        return "—"
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return stamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _as_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


def _as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


class Console:
    """The console's shared parts (one per HTTP server)."""

    def __init__(
        self,
        call: Call,
        sessions: Sessions,
        *,
        hooks_url: str | None = None,
        orchestrator: OrchestratorNames | None = None,
    ) -> None:
        self.call = call
        self.sessions = sessions
        self.hooks_url = hooks_url
        self.orchestrator = orchestrator
        self.stopping = asyncio.Event()
        # Autoescaping on for every template: names, labels and payloads come
        # from users and from events, which anyone who can send one controls.
        # (A separate environment from the sandboxed one of engine/templates.)
        self.env = Environment(
            loader=PackageLoader("marmot.transport.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = _when
        self.env.filters["as_yaml"] = _as_yaml
        self.env.filters["as_json"] = _as_json
        self.env.globals["prefix"] = PREFIX
        self.env.globals["csrf_field"] = CSRF_FIELD

    def stop(self) -> None:
        """End the live streams (the server is stopping)."""
        self.stopping.set()

    def render(
        self,
        request: Request,
        template: str,
        status_code: int = 200,
        **values: Any,
    ) -> HTMLResponse:
        """A page: ``template`` with ``values``, the session's CSRF token and the
        current section of the navigation."""
        session: Session = request.state.session
        page = self.env.get_template(template).render(
            csrf=session.csrf,
            needs_login=self.sessions.needs_login,
            path=request.url.path,
            **values,
        )
        return HTMLResponse(page, status_code=status_code)

    @staticmethod
    def back(path: str, **query: str) -> Response:
        """After a change: see the page ``path`` (303, so a reload does not post again)."""
        target = PREFIX + path
        if query:
            target += "?" + urlencode(query)
        return RedirectResponse(target, status_code=303)
