"""Requests to a Prefect server are sent again while it answers 429, 502 or 503.

A Prefect server on SQLite answers 503 while its database is busy; its own
client sends such requests again, and so does Marmot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from marmot.transport import prefect_api
from marmot.transport.prefect_automations import (
    pause_prefect_automation,
    read_prefect_automations,
)
from tests.transport.notify_servers import RecordingServer, serving

AUTOMATION_ID = "3b0e6a7c-5a53-4b6f-9d2a-1f1e1b1c1d1e"


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    yield from serving()


@pytest.fixture(autouse=True)
def short_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "_FIRST_PAUSE_S", 0.01)


async def _read(server: RecordingServer) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return await read_prefect_automations(http, server.url("/api"))


def test_a_busy_server_is_asked_again_until_it_answers(server: RecordingServer) -> None:
    server.reply("/api/automations/filter", 200, '[{"id": "a"}]')
    server.script("/api/automations/filter", 503, 502, 429)
    assert asyncio.run(_read(server)) == [{"id": "a"}]
    assert len(server.on("/api/automations/filter")) == 4


def test_a_server_busy_for_every_try_fails_with_its_status(server: RecordingServer) -> None:
    server.reply("/api/automations/filter", 503, "busy")
    with pytest.raises(httpx.HTTPStatusError, match="503"):
        asyncio.run(_read(server))
    assert len(server.on("/api/automations/filter")) == 4


def test_a_refusal_is_not_sent_again(server: RecordingServer) -> None:
    path = f"/api/automations/{AUTOMATION_ID}"
    server.reply(path, 404, "not found")

    async def pause() -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            await pause_prefect_automation(http, server.url("/api"), AUTOMATION_ID)

    with pytest.raises(httpx.HTTPStatusError, match="404"):
        asyncio.run(pause())
    assert [r.method for r in server.on(path)] == ["PATCH"]


def test_pausing_waits_out_a_busy_server(server: RecordingServer) -> None:
    path = f"/api/automations/{AUTOMATION_ID}"
    server.reply(path, 204)
    server.script(path, 503)

    async def pause() -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            await pause_prefect_automation(http, server.url("/api"), AUTOMATION_ID)

    asyncio.run(pause())
    assert [r.json() for r in server.on(path)] == [{"enabled": False}] * 2


def test_retry_after_is_honoured_within_a_cap() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    assert prefect_api._retry_after_s(answer("1.5")) == 1.5
    assert prefect_api._retry_after_s(answer("600")) == 5.0
    assert prefect_api._retry_after_s(answer("Wed, 21 Oct 2026 07:28:00 GMT")) is None
