"""How Marmot reaches a Prefect server: its URLs, how it logs in, and its event query.

A self-hosted server behind ``PREFECT_SERVER_API_AUTH_STRING`` takes HTTP basic
auth and, on its sockets, the auth string as the ``auth`` message's token;
Prefect Cloud takes the API key as a bearer token and as that token. The
event query is ``POST /events/filter`` and the ``next_page`` links it returns.
"""

from __future__ import annotations

import asyncio
import base64
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from marmot.config import PrefectConfig

__all__ = [
    "EVENT_PAGE_SIZE",
    "PrefectAuth",
    "events_out_url",
    "page_events",
    "request",
    "retry_after_s",
    "time_filter",
]

# The most events one POST /events/filter page may hold (Prefect's
# INTERACTIVE_PAGE_SIZE; the server refuses more).
EVENT_PAGE_SIZE = 50
# Statuses a Prefect server answers for a moment's trouble (its SQLite busy is
# a 503): the request is sent again, as Prefect's own client does.
RETRIED_STATUSES = frozenset({429, 502, 503})
# Sends of one request at most, the first pause between them (doubled each
# time), and the longest pause a Retry-After header may ask for.
_TRIES = 4
_FIRST_PAUSE_S = 0.25
_LONGEST_PAUSE_S = 5.0


@dataclass(frozen=True, slots=True)
class PrefectAuth:
    """The credentials of one Prefect server: headers for HTTP and the socket's token."""

    api_key: str | None = None
    auth_string: str | None = None

    @classmethod
    def of(cls, config: PrefectConfig) -> PrefectAuth:
        """The credentials a ``prefect:`` config section gives."""
        return cls(
            api_key=config.api_key.get_secret_value() if config.api_key else None,
            auth_string=config.auth_string.get_secret_value() if config.auth_string else None,
        )

    def headers(self) -> dict[str, str]:
        """``Authorization`` for HTTP requests and the socket's upgrade request (basic
        auth proxies refuse the upgrade itself without it)."""
        if self.api_key:
            return {"Authorization": f"Bearer {self.api_key}"}
        if self.auth_string:
            encoded = base64.b64encode(self.auth_string.encode()).decode()
            return {"Authorization": f"Basic {encoded}"}
        return {}

    @property
    def token(self) -> str | None:
        """The token of the socket's ``auth`` message (None when the server wants none)."""
        return self.api_key or self.auth_string


async def request(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Send one request, sent again (up to 4 times in all, 0.25 s apart and doubling,
    or as Retry-After asks, at most 5 s) while the server answers 429, 502 or 503.
    Raises ``httpx.HTTPError``: ``HTTPStatusError`` for a refusal or for the last
    retried status."""
    pause = _FIRST_PAUSE_S
    for attempt in range(1, _TRIES + 1):
        response = await http.request(method, url, **kwargs)
        if response.status_code not in RETRIED_STATUSES or attempt == _TRIES:
            break
        await asyncio.sleep(_retry_after_s(response) or pause)
        pause *= 2
    response.raise_for_status()
    return response


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; the HTTP-date form is not used by Prefect and is ignored."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _retry_after_s(response: httpx.Response) -> float | None:
    """Seconds a Retry-After header asks to wait (capped), None without a usable one."""
    seconds = retry_after_s(response)
    return None if seconds is None else min(seconds, _LONGEST_PAUSE_S)


def events_out_url(api_url: str) -> str:
    """The event stream's websocket URL of an API URL (``http`` becomes ``ws``)."""
    base = api_url.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base.removeprefix("https://")
    elif base.startswith("http://"):
        base = "ws://" + base.removeprefix("http://")
    return base + "/events/out"


def time_filter(base: dict[str, Any] | None, since: datetime, until: datetime) -> dict[str, Any]:
    """The user's EventFilter JSON with ``occurred`` set to ``since``..``until``."""
    filter_json = dict(base or {})
    filter_json["occurred"] = {"since": since.isoformat(), "until": until.isoformat()}
    return filter_json


async def page_events(
    http: httpx.AsyncClient,
    api_url: str,
    filter_json: dict[str, Any],
    *,
    page_size: int = EVENT_PAGE_SIZE,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every page of ``POST /events/filter`` for ``filter_json`` (oldest first), then
    each ``next_page``; yields each page's events as JSON. Raises ``httpx.HTTPError``
    (a refusal as ``HTTPStatusError``)."""
    body = {"filter": {**filter_json, "order": "ASC"}, "limit": page_size}
    response = await request(http, "POST", api_url.rstrip("/") + "/events/filter", json=body)
    while True:
        page = response.json()
        events: list[dict[str, Any]] = page.get("events") or []
        if events:
            yield events
        next_page = page.get("next_page")
        if not next_page:
            return
        response = await request(http, "GET", str(next_page))
