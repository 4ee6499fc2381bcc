"""The console's routes under ``/ui/`` and the guard every page passes.

The guard finds (or starts) the browser's session, sends a logged-out one to
the login page when the server is bound beyond loopback, refuses a POST
without the session's CSRF token, turns a ``MarmotError`` into a page that
says what the CLI would, and sets headers that keep scripts to the
console's own files.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from marmot.engine.errors import MarmotError
from marmot.transport.console.automation_pages import AutomationPages
from marmot.transport.console.context import PREFIX, Call, Console, error_lines, form_of
from marmot.transport.console.live import LiveStreams
from marmot.transport.console.lookups import OrchestratorNames
from marmot.transport.console.resource_pages import ResourcePages
from marmot.transport.console.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Sessions

__all__ = ["console_routes", "is_loopback_host"]

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]

_STATUS = {
    "not_found": 404,
    "validation_failed": 422,
    "conflict": 409,
    "unauthorized": 403,
    "unavailable": 503,
    "limit_exceeded": 413,
}
# Scripts, styles and images from the console's own files only (no inline
# script can run, whatever an event smuggles into a page), no framing.
_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def is_loopback_host(host: str) -> bool:
    """Whether an HTTP bind address is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Guard:
    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, endpoint: Endpoint, *, is_public: bool = False) -> Endpoint:
        """``endpoint`` behind the session, login and CSRF checks."""

        async def guarded(request: Request) -> Response:
            started = time.perf_counter()
            sessions = self.console.sessions
            session, is_new = sessions.find_or_start(request.cookies.get(COOKIE))
            request.state.session = session
            response: Response
            if request.method == "POST" and not session.has_csrf(await _csrf_of(request)):
                response = self._refusal(
                    request,
                    "refused: this form's CSRF token is missing or stale; reload the page "
                    "and try again",
                )
            elif not session.is_logged_in and not is_public:
                target = quote(
                    request.url.path + ("?" + request.url.query if request.url.query else "")
                )
                response = RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
            else:
                try:
                    response = await endpoint(request)
                except MarmotError as exc:
                    response = self.console.render(
                        request,
                        "error.html",
                        status_code=_STATUS.get(exc.code, 500),
                        lines=error_lines(exc),
                        code=exc.code,
                    )
            session = request.state.session  # a login replaces it
            if is_new or session.id != request.cookies.get(COOKIE):
                response.set_cookie(
                    COOKIE, session.id, path=PREFIX, httponly=True, samesite="strict"
                )
            response.headers.update(_HEADERS)
            # How long the page took to make (bench/console.py reads it).
            spent_ms = (time.perf_counter() - started) * 1000
            response.headers["server-timing"] = f"app;dur={spent_ms:.1f}"
            return response

        return guarded

    def _refusal(self, request: Request, message: str) -> Response:
        return self.console.render(
            request, "error.html", status_code=403, lines=[message], code="csrf"
        )


async def _csrf_of(request: Request) -> str | None:
    given = request.headers.get(CSRF_HEADER)
    if given is not None:
        return given
    if request.headers.get("content-type", "").startswith(_FORM_TYPES):
        value = (await form_of(request)).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


class _Login:
    def __init__(self, console: Console) -> None:
        self.console = console

    @staticmethod
    def _next(value: str) -> str:
        # Only a console page: never a redirect to another site.
        return (
            value if value.startswith(PREFIX + "/") and not value.startswith("//") else PREFIX + "/"
        )

    async def page(self, request: Request) -> Response:
        if request.state.session.is_logged_in:
            return RedirectResponse(self._next(request.query_params.get("next", "")), 303)
        return self.console.render(
            request, "login.html", next=self._next(request.query_params.get("next", ""))
        )

    async def submit(self, request: Request) -> Response:
        form = await form_of(request)
        target = self._next(str(form.get("next", "")))
        fresh = self.console.sessions.log_in(request.state.session, str(form.get("token", "")))
        if fresh is None:
            log.warning("console login refused: wrong token", extra={"peer": str(request.client)})
            return self.console.render(
                request,
                "login.html",
                status_code=403,
                next=target,
                errors=["that token is not this daemon's console token"],
            )
        request.state.session = fresh
        return RedirectResponse(target, status_code=303)

    async def logout(self, request: Request) -> Response:
        self.console.sessions.log_out(request.state.session)
        return RedirectResponse(f"{PREFIX}/login", status_code=303)


async def _home(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/automations", status_code=307)


async def _root(request: Request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


def console_routes(
    call: Call,
    *,
    host: str,
    token: str | None,
    hooks_url: str | None = None,
    orchestrator: OrchestratorNames | None = None,
) -> tuple[Console, list[BaseRoute]] | None:
    """The console and its routes (``/`` and ``/ui/...``) for an HTTP server bound
    to ``host``. Beyond loopback a login with ``token`` is asked for; with no
    token there, no console (None): it would let anyone who reaches the port in."""
    is_local = is_loopback_host(host)
    if not is_local and token is None:
        log.warning(
            "the web console is off: http.host %s is reachable from other machines and "
            "neither http.console_token nor rpc.token is set",
            host,
            extra={"host": host},
        )
        return None
    sessions = Sessions(None if is_local else token)
    console = Console(call, sessions, hooks_url=hooks_url, orchestrator=orchestrator)
    guard = _Guard(console)
    login = _Login(console)
    pages: list[Route] = [
        *LiveStreams(console).routes(),
        *AutomationPages(console).routes(),
        *ResourcePages(console).routes(),
    ]
    guarded: list[BaseRoute] = [
        Route("/", guard(_home)),
        Route("/login", guard(login.page, is_public=True), methods=["GET"]),
        Route("/login", guard(login.submit, is_public=True), methods=["POST"]),
        Route("/logout", guard(login.logout), methods=["POST"]),
        *(
            Route(r.path, guard(r.endpoint), methods=sorted(r.methods or ()), name=r.name)
            for r in pages
        ),
        Mount("/static", StaticFiles(packages=[("marmot.transport.console", "static")])),
    ]
    return console, [Route("/", _root), Mount(PREFIX, routes=guarded)]
