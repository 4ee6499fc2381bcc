"""events.filter and events.emit over real ZeroMQ sockets and a real event log: pages
bounded by bytes, cursors, name filters of any length, the edge's checks.

The handlers run over a real ``Store``; ``Service`` (Ray) is left out: the
events handlers use only its store and config.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from marmot.actors.store import Store
from marmot.config import MarmotConfig
from marmot.engine.errors import LimitExceeded, ValidationFailed
from marmot.engine.models.events import Event, EventLimits
from marmot.transport.api import Api
from marmot.transport.client import AsyncClient, Client
from marmot.transport.codec import pack_rpc
from marmot.transport.rpc import RpcServer
from marmot.transport.rpc_clients import RpcClient

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PAGE_BYTES = 128 * 1024
MAX_REPLY_BYTES = 1024 * 1024
EVENTS = 2000  # ~1.2 KB each on the wire: ~2.4 MB in all


class EventsServer:
    """The events.* handlers of ``Api`` over a real store, served in a thread."""

    def __init__(self, store: Store) -> None:
        config = MarmotConfig.model_validate(
            {"rpc": {"page_bytes": PAGE_BYTES, "max_reply_bytes": MAX_REPLY_BYTES}}
        )
        # events.* only: no Ray (runtime) or task group behind them.
        service: Any = SimpleNamespace(store=store, config=config, runtime=None, tasks=None)
        handlers = Api(service, EventLimits()).handlers()
        events = {k: v for k, v in handlers.items() if k.startswith("events.")}
        self.server = RpcServer(
            "tcp://127.0.0.1:*", events, max_reply_bytes=config.rpc.max_reply_bytes
        )
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.start())
        self._ready.set()
        self.loop.run_until_complete(self.server.serve())
        self.loop.close()

    def __enter__(self) -> EventsServer:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self._thread.join(5)

    @property
    def url(self) -> str:
        return self.server.bound_endpoint


def event(i: int, name: str | None = None, **fields: Any) -> Event:
    return Event.model_validate(
        {
            "occurred": T0 + timedelta(seconds=i // 3),  # three events a second: ties
            "event": name or f"app.{i % 7}.done",
            "resource": {"prefect.resource.id": f"r.{i % 5}"},
            "payload": {"text": "p" * 1000, "i": i},
            **fields,
        }
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "marmot.db") as opened:
        opened.events.append([event(i) for i in range(EVENTS)])
        yield opened


@pytest.fixture
def served(store: Store) -> Iterator[EventsServer]:
    with EventsServer(store) as running:
        yield running


def seqs(rows: list[dict[str, Any]]) -> list[int]:
    return [int(row["seq"]) for row in rows]


# ---------------------------------------------------------------- pages


def test_every_page_is_within_its_byte_budget_and_the_cursors_chain(
    store: Store, served: EventsServer
) -> None:
    with RpcClient(served.url, timeout_s=10) as rpc:
        pages: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 10_000, "page": True}
        while True:
            page = rpc.call("events.filter", params)
            pages.append(page)
            assert len(pack_rpc(page)) <= PAGE_BYTES
            if page["next"] is None:
                break
            params = {"limit": 10_000, "cursor": page["next"]}

    whole = store.events.filter(limit=10_000)
    assert len(pages) > 10
    assert [s for page in pages for s in seqs(page["events"])] == [s for s, _ in whole]


@pytest.mark.parametrize("is_async", [False, True])
def test_the_clients_read_a_large_limit_page_by_page(
    store: Store, served: EventsServer, is_async: bool
) -> None:
    def query(**filters: Any) -> list[dict[str, Any]]:
        if is_async:

            async def read() -> list[dict[str, Any]]:
                async with AsyncClient(served.url, timeout_s=10) as client:
                    return await client.filter_events(**filters)

            return asyncio.run(read())
        with Client(served.url, timeout_s=10) as client:
            return client.filter_events(**filters)

    requests_before = served.server.stats.requests
    everything = query(limit=10_000)
    assert seqs(everything) == [s for s, _ in store.events.filter(limit=10_000)]
    assert served.server.stats.requests - requests_before > 10  # it took pages
    assert everything[0]["payload"]["i"] == EVENTS - 1  # newest first, whole events

    oldest = query(limit=1500, by_arrival=True, names=["app.3.*", "app.4.done"])
    expected = store.events.filter(
        limit=1500, by_seq=True, names=["app.3.*", "app.4.done"], descending=True
    )
    assert seqs(oldest) == [s for s, _ in expected]

    assert len(query(limit=5)) == 5


def test_a_list_over_the_page_bytes_is_refused_but_a_page_is_not(served: EventsServer) -> None:
    with RpcClient(served.url, timeout_s=10) as rpc:
        with pytest.raises(LimitExceeded) as refused:
            rpc.call("events.filter", {"limit": 10_000})
        assert "page" in refused.value.message
        assert len(rpc.call("events.filter", {"limit": 100})) == 100  # the list form
        page = rpc.call("events.filter", {"limit": 10_000, "page": True})
        assert page["events"] and page["next"] is not None


def test_after_seq_reads_on_by_arrival_with_every_filter(
    store: Store, served: EventsServer
) -> None:
    with Client(served.url, timeout_s=10) as client:
        rows = client.filter_events(names=["app.2.*"], after_seq=100, limit=10_000)

    assert rows
    assert seqs(rows) == sorted(seqs(rows))
    assert all(row["event"] == "app.2.done" and row["seq"] > 100 for row in rows)
    expected = [s for s, e in store.events.read_after(100, limit=10_000) if e.event == "app.2.done"]
    assert seqs(rows) == expected


@pytest.mark.parametrize(
    "cursor", ["99999999999999999999.1", "1.99999999999999999999", "x.1", "1", "-1.5"]
)
def test_a_cursor_events_filter_never_gave_is_refused(served: EventsServer, cursor: str) -> None:
    with RpcClient(served.url, timeout_s=10) as rpc, pytest.raises(ValidationFailed) as refused:
        rpc.call("events.filter", {"cursor": cursor})
    assert refused.value.details[0]["loc"] == ["cursor"]


# ---------------------------------------------------------------- names


def test_a_thousand_glob_names_are_served(store: Store, served: EventsServer) -> None:
    names = [f"app.{i}.*" for i in range(1000)]
    with RpcClient(served.url, timeout_s=30) as rpc:
        rows = rpc.call("events.filter", {"names": names, "limit": 50})
        with pytest.raises(ValidationFailed):
            rpc.call("events.filter", {"names": [*names, "one.more"]})

    assert seqs(rows) == [s for s, _ in store.events.filter(limit=50)]


# ---------------------------------------------------------------- emit


def test_an_event_off_the_calendar_is_refused_with_its_field_path(served: EventsServer) -> None:
    far = {
        "occurred": "9999-12-31T00:00:00Z",
        "event": "far.future",
        "resource": {"prefect.resource.id": "r"},
    }
    with RpcClient(served.url, timeout_s=10) as rpc, pytest.raises(ValidationFailed) as refused:
        rpc.call("events.emit", {"events": [far]})

    [detail] = refused.value.details
    assert detail["loc"] == ["events", 0, "occurred"]
    assert detail["type"] == "less_than"
    assert refused.value.message.startswith("1 validation error: events.0.occurred: ")
    assert "9000-01-01T00:00:00Z" in refused.value.message
