"""The HTTP boundary for SaaS services that cannot run here: every request Apprise
sends through ``requests`` is recorded as it was addressed (method, URL, headers,
body), then really sent, over HTTP, to a :class:`RecordingServer` on 127.0.0.1 with
the same path and query, whose reply goes back to Apprise."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.transport.notify_servers import RecordingServer


@dataclass(frozen=True)
class Outgoing:
    """One request as the client addressed it, before it was redirected here."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


class Interceptor:
    """Redirects ``requests`` traffic to a local server, keeping what was sent."""

    def __init__(self, server: RecordingServer, *, to_path: str | None = None) -> None:
        self.server = server
        self.sent: list[Outgoing] = []
        self.to_path = to_path

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = requests.sessions.Session.send

        def send(session: requests.Session, prepared: Any, **kwargs: Any) -> Any:
            body = prepared.body or b""
            self.sent.append(
                Outgoing(
                    prepared.method,
                    prepared.url,
                    {k.lower(): v for k, v in prepared.headers.items()},
                    body.encode() if isinstance(body, str) else body,
                )
            )
            parts = urlsplit(prepared.url)
            path = self.to_path or parts.path + (f"?{parts.query}" if parts.query else "")
            prepared.url = self.server.url(path)
            return original(session, prepared, **kwargs)

        monkeypatch.setattr(requests.sessions.Session, "send", send)


def intercepting(
    server: RecordingServer, monkeypatch: pytest.MonkeyPatch, *, to_path: str | None = None
) -> Iterator[Interceptor]:
    """Install an :class:`Interceptor` for one test."""
    interceptor = Interceptor(server, to_path=to_path)
    interceptor.install(monkeypatch)
    yield interceptor
